//go:build !linux

package commitlog

import (
	"errors"

	"github.com/runnel-io/runnel/internal/vfs"
)

func preallocateFile(vfs.File, int64) error { return errors.New("fallocate is Linux only") }
