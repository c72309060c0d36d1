package vfs

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
)

// TempSuffix is the suffix of the temporary file WriteFileDurable renames into place; a file
// with it found at startup is what an interrupted write left behind.
const TempSuffix = ".tmp"

// WriteFileDurable writes a small file on the real filesystem atomically and durably: the
// data goes to path+TempSuffix, which is fsynced, renamed over path, and the directory is
// fsynced. After a crash, path holds the old contents or the new, never a mix.
func WriteFileDurable(path string, data []byte) error {
	tmp := path + TempSuffix
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return err
	}
	_, werr := f.Write(data)
	serr := f.Sync()
	cerr := f.Close()
	if err := errors.Join(werr, serr, cerr); err != nil {
		_ = os.Remove(tmp)
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		_ = os.Remove(tmp)
		return err
	}
	return SyncDir(filepath.Dir(path))
}

// SyncDir fsyncs a directory of the real filesystem, making the creation, renaming and
// removal of its entries durable.
func SyncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	serr := d.Sync()
	cerr := d.Close()
	if err := errors.Join(serr, cerr); err != nil {
		return fmt.Errorf("sync dir %s: %w", dir, err)
	}
	return nil
}
