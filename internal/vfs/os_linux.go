package vfs

import (
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
