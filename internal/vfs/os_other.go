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
