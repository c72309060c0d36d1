package vfs

import (
	"errors"
	"os"
)

// NoSync wraps an FS so that File.Sync and SyncDir do nothing (SyncDir still checks that the
// directory exists). It is for tests: under a CrashFS, whose model of durability does not depend
// on the real fsyncs, and for suites that sync a lot and test something else. Never use it for
// data that matters.
func NoSync(base FS) FS { return noSyncFS{base} }

type noSyncFS struct{ FS }

type noSyncFile struct{ File }

func (noSyncFile) Sync() error { return nil }

func (f noSyncFile) WriteAtv(bufs [][]byte, off int64) (int, error) {
	return WriteAtv(f.File, bufs, off)
}

func (f noSyncFile) Allocate(off, n int64) error {
	if a, ok := f.File.(Allocator); ok {
		return a.Allocate(off, n)
	}
	return errors.ErrUnsupported
}

func (n noSyncFS) OpenFile(name string, flag int, perm os.FileMode) (File, error) {
	f, err := n.FS.OpenFile(name, flag, perm)
	if err != nil {
		return nil, err
	}
	return noSyncFile{f}, nil
}

func (n noSyncFS) SyncDir(name string) error {
	_, err := n.FS.Stat(name)
	return err
}
