package commitlog

import (
	"syscall"

	"github.com/runnel-io/runnel/internal/vfs"
)

// preallocateFile allocates n bytes for f with fallocate (unwritten extents on ext4).
func preallocateFile(f vfs.File, n int64) error {
	return syscall.Fallocate(int(f.Fd()), 0, 0, n)
}
