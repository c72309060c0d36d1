package vfs

import (
	"os"
)

// OS is the real filesystem.
//
// Errors are those of package os (*os.PathError, *os.LinkError wrapping a syscall.Errno), so
// callers can test them with errors.Is(err, syscall.ENOSPC), errors.Is(err, fs.ErrNotExist) and
// so on.
var OS FS = osFS{}

// osFS implements FS on the real filesystem.
type osFS struct{}

// OpenFile opens name with os.OpenFile.
func (osFS) OpenFile(name string, flag int, perm os.FileMode) (File, error) {
	f, err := os.OpenFile(name, flag, perm)
	if err != nil {
		return nil, err
	}
	return &osFile{f: f}, nil
}

// Remove removes a file or an empty directory.
func (osFS) Remove(name string) error { return os.Remove(name) }

// RemoveAll removes name and everything under it.
func (osFS) RemoveAll(name string) error { return os.RemoveAll(name) }

// Rename renames oldname to newname, replacing newname atomically if it exists.
func (osFS) Rename(oldname, newname string) error { return os.Rename(oldname, newname) }

// MkdirAll creates a directory and its missing parents.
func (osFS) MkdirAll(name string, perm os.FileMode) error { return os.MkdirAll(name, perm) }

// ReadDir returns the names of the directory's entries, sorted.
func (osFS) ReadDir(name string) ([]string, error) {
	ents, err := os.ReadDir(name) // sorted by name
	if err != nil {
		return nil, err
	}
	names := make([]string, len(ents))
	for i, e := range ents {
		names[i] = e.Name()
	}
	return names, nil
}

// Stat is os.Stat.
func (osFS) Stat(name string) (os.FileInfo, error) { return os.Stat(name) }

// SyncDir opens the directory and fsyncs it, making its entries durable.
func (osFS) SyncDir(name string) error {
	d, err := os.Open(name)
	if err != nil {
		return err
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	return err
}

// osFile is a File backed by an *os.File.
type osFile struct {
	f *os.File
}

func (f *osFile) ReadAt(p []byte, off int64) (int, error)  { return f.f.ReadAt(p, off) }
func (f *osFile) WriteAt(p []byte, off int64) (int, error) { return f.f.WriteAt(p, off) }

// WriteAtv writes bufs back to back at off with pwritev(2) (VectorWriterAt).
func (f *osFile) WriteAtv(bufs [][]byte, off int64) (int, error) { return pwritev(f.f, bufs, off) }
func (f *osFile) Close() error                                   { return f.f.Close() }
func (f *osFile) Truncate(size int64) error                      { return f.f.Truncate(size) }
func (f *osFile) Fd() uintptr                                    { return f.f.Fd() }
func (f *osFile) Name() string                                   { return f.f.Name() }

// Allocate reserves [off, off+n) without changing the size (Allocator).
func (f *osFile) Allocate(off, n int64) error {
	if err := allocate(f.f, off, n); err != nil {
		return &os.PathError{Op: "fallocate", Path: f.f.Name(), Err: err}
	}
	return nil
}

// Sync makes the file's data durable: fdatasync on Linux (the size is part of what fdatasync
// flushes; timestamps are not), fsync elsewhere.
func (f *osFile) Sync() error {
	if err := datasync(f.f); err != nil {
		return &os.PathError{Op: "sync", Path: f.f.Name(), Err: err}
	}
	return nil
}

// Size returns the file's current size, from fstat.
func (f *osFile) Size() (int64, error) {
	st, err := f.f.Stat()
	if err != nil {
		return 0, err
	}
	return st.Size(), nil
}
