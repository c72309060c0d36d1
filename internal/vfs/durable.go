package vfs

import (
	"os"
	"path/filepath"
)

// TempSuffix is the suffix of the temporary file WriteFileAtomic renames into place; a file
// with it found at startup is what an interrupted write left behind.
const TempSuffix = ".tmp"

// WriteFileAtomic writes a small file through fs atomically and durably: the data goes to
// path+TempSuffix, which is fsynced, renamed over path, and the directory is fsynced. After a
// crash, path holds the old contents or the new, never a mix. A nil fs means OS.
func WriteFileAtomic(fs FS, path string, data []byte) error {
	if fs == nil {
		fs = OS
	}
	tmp := path + TempSuffix
	f, err := fs.OpenFile(tmp, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return err
	}
	if _, err := f.WriteAt(data, 0); err != nil {
		f.Close()
		_ = fs.Remove(tmp)
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		_ = fs.Remove(tmp)
		return err
	}
	if err := f.Close(); err != nil {
		_ = fs.Remove(tmp)
		return err
	}
	if err := fs.Rename(tmp, path); err != nil {
		_ = fs.Remove(tmp)
		return err
	}
	return fs.SyncDir(filepath.Dir(path))
}
