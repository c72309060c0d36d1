package vfs

import (
	"errors"
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// datasync fdatasyncs f, retrying on EINTR. The error is the bare errno.
func datasync(f *os.File) error {
	rc, err := f.SyscallConn()
	if err != nil {
		return err
	}
	var serr error
	if err := rc.Control(func(fd uintptr) {
		for {
			serr = unix.Fdatasync(int(fd))
			if serr != unix.EINTR {
				return
			}
		}
	}); err != nil {
		return err
	}
	return serr
}

// allocate reserves [off, off+n) of f with fallocate(2), FALLOC_FL_KEEP_SIZE, retrying on EINTR.
// A filesystem without fallocate gives EOPNOTSUPP, returned wrapped in errors.ErrUnsupported.
func allocate(f *os.File, off, n int64) error {
	rc, err := f.SyscallConn()
	if err != nil {
		return err
	}
	var aerr error
	if err := rc.Control(func(fd uintptr) {
		for {
			aerr = unix.Fallocate(int(fd), unix.FALLOC_FL_KEEP_SIZE, off, n)
			if aerr != unix.EINTR {
				return
			}
		}
	}); err != nil {
		return err
	}
	if aerr == unix.EOPNOTSUPP {
		return fmt.Errorf("%w: %w", errors.ErrUnsupported, aerr)
	}
	return aerr
}

// pwritev writes bufs at off with pwritev(2), IOV_MAX buffers per call, resuming after short
// writes. It returns the bytes written.
func pwritev(f *os.File, bufs [][]byte, off int64) (int, error) {
	rc, err := f.SyscallConn()
	if err != nil {
		return 0, err
	}
	total := 0
	var werr error
	if err := rc.Control(func(fd uintptr) {
		for len(bufs) > 0 {
			batch := bufs
			if len(batch) > 1024 {
				batch = batch[:1024]
			}
			n, err := unix.Pwritev(int(fd), batch, off)
			if err == unix.EINTR {
				continue
			}
			if n > 0 {
				total += n
				off += int64(n)
			}
			if err != nil {
				werr = &os.PathError{Op: "pwritev", Path: f.Name(), Err: err}
				return
			}
			if n == 0 {
				werr = &os.PathError{Op: "pwritev", Path: f.Name(), Err: unix.EIO}
				return
			}
			// Drop what was written, keeping a partial buffer's tail.
			for n > 0 && len(bufs) > 0 {
				if n >= len(bufs[0]) {
					n -= len(bufs[0])
					bufs = bufs[1:]
				} else {
					bufs[0] = bufs[0][n:]
					n = 0
				}
			}
		}
	}); err != nil {
		return total, err
	}
	return total, werr
}
