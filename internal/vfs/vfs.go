// Package vfs is the filesystem seam of Runnel's storage: the commitlog (and later the partition
// and metadata stores) reach the disk only through FS, so tests can crash a log (drop every byte
// not yet synced), fail an fsync with EIO, or fill the disk.
//
// The seam is deliberately small: what an append-only segmented log needs, and no more.
//
// OS is the real filesystem. CrashFS (crashfs.go) wraps it for tests: it remembers, per file,
// what has been made durable by File.Sync (and, for directory entries, by SyncDir), and Crash
// rolls every file back to that state, optionally keeping a torn prefix of the unsynced bytes.
// ErrorFS-style injection (fsync EIO, ENOSPC on write) lives in CrashFS too, through Inject.
package vfs

import (
	"io"
	"os"
)

// File is an open file. Implementations are safe for concurrent ReadAt calls and for ReadAt
// concurrent with WriteAt of a disjoint range, as *os.File is.
type File interface {
	io.ReaderAt
	io.WriterAt
	io.Closer
	// Sync makes the file's data durable (fdatasync where the platform has it).
	Sync() error
	// Truncate changes the file's size.
	Truncate(size int64) error
	// Size returns the file's current size.
	Size() (int64, error)
	// Fd returns the descriptor, for mmap. Files of an FS that cannot be mapped return
	// ^uintptr(0); callers then fall back to ReadAt.
	Fd() uintptr
	// Name returns the path the file was opened with.
	Name() string
}

// FS is a filesystem.
type FS interface {
	// OpenFile opens or creates a file, as os.OpenFile does.
	OpenFile(name string, flag int, perm os.FileMode) (File, error)
	// Remove removes a file or empty directory.
	Remove(name string) error
	// RemoveAll removes a tree.
	RemoveAll(name string) error
	// Rename renames a file, replacing the target atomically.
	Rename(oldname, newname string) error
	// MkdirAll creates a directory and its parents.
	MkdirAll(name string, perm os.FileMode) error
	// ReadDir lists a directory's entry names, sorted.
	ReadDir(name string) ([]string, error)
	// Stat reports a file's size and whether it exists (os.ErrNotExist otherwise).
	Stat(name string) (os.FileInfo, error)
	// SyncDir makes the directory's entries (creations, removals, renames) durable.
	SyncDir(name string) error
}

// VectorWriterAt is implemented by Files that can write several buffers at an offset in one
// system call (pwritev), sparing the caller a copy into one buffer.
type VectorWriterAt interface {
	WriteAtv(bufs [][]byte, off int64) (int, error)
}

// Allocator is implemented by Files that can reserve disk blocks past their end without changing
// their size (fallocate with FALLOC_FL_KEEP_SIZE on Linux). A later truncation to the file's own
// size gives the reserved blocks back on ext4 (see commitlog's reserve.go).
type Allocator interface {
	// Allocate reserves the blocks of [off, off+n). Where the filesystem or platform cannot, the
	// error wraps errors.ErrUnsupported.
	Allocate(off, n int64) error
}

// WriteAtv writes bufs back to back at off: in one call when f is a VectorWriterAt, else
// through one contiguous copy and WriteAt. It may modify bufs.
func WriteAtv(f File, bufs [][]byte, off int64) (int, error) {
	if v, ok := f.(VectorWriterAt); ok {
		return v.WriteAtv(bufs, off)
	}
	if len(bufs) == 1 {
		return f.WriteAt(bufs[0], off)
	}
	n := 0
	for _, b := range bufs {
		n += len(b)
	}
	buf := make([]byte, 0, n)
	for _, b := range bufs {
		buf = append(buf, b...)
	}
	return f.WriteAt(buf, off)
}
