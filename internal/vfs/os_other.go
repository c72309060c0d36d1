//go:build !linux

package vfs

import (
	"errors"
	"os"
)

// datasync fsyncs f (no fdatasync outside Linux). The error is unwrapped to the bare errno
// where possible, to match the Linux implementation.
func datasync(f *os.File) error {
	err := f.Sync()
	var pe *os.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}

// allocate: no fallocate outside Linux here.
func allocate(*os.File, int64, int64) error { return errors.ErrUnsupported }

// pwritev writes bufs one after another (no pwritev outside Linux here).
func pwritev(f *os.File, bufs [][]byte, off int64) (int, error) {
	total := 0
	for _, b := range bufs {
		n, err := f.WriteAt(b, off)
		total += n
		off += int64(n)
		if err != nil {
			return total, err
		}
	}
	return total, nil
}
