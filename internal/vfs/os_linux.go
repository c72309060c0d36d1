package vfs

import (
	"errors"
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// datasync fdatasyncs f, retrying on EINTR. The error is the bare errno.
func datasync(f *os.File) error { return onFd(f, unix.Fdatasync) }

// allocate reserves [off, off+n) of f with fallocate(2), FALLOC_FL_KEEP_SIZE, retrying on EINTR.
// A filesystem without fallocate gives EOPNOTSUPP, returned wrapped in errors.ErrUnsupported.
func allocate(f *os.File, off, n int64) error {
	err := onFd(f, func(fd int) error { return unix.Fallocate(fd, unix.FALLOC_FL_KEEP_SIZE, off, n) })
	if err == unix.EOPNOTSUPP {
		return fmt.Errorf("%w: %w", errors.ErrUnsupported, err)
	}
	return err
}

// onFd runs op on f's descriptor, again while it fails with EINTR, and returns its error.
func onFd(f *os.File, op func(fd int) error) error {
	rc, err := f.SyscallConn()
	if err != nil {
		return err
	}
	var oerr error
	if err := rc.Control(func(fd uintptr) {
		for {
			if oerr = op(int(fd)); oerr != unix.EINTR {
				return
			}
		}
	}); err != nil {
		return err
	}
	return oerr
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
