package vfs

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

func TestOSFileBasics(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "f")
	f, err := OS.OpenFile(p, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if f.Name() != p {
		t.Fatalf("Name = %q, want %q", f.Name(), p)
	}
	if n, err := f.WriteAt([]byte("hello world"), 0); err != nil || n != 11 {
		t.Fatalf("WriteAt = %d, %v", n, err)
	}
	if n, err := f.WriteAt([]byte("W"), 6); err != nil || n != 1 {
		t.Fatalf("WriteAt = %d, %v", n, err)
	}
	if err := f.Sync(); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 11)
	if _, err := f.ReadAt(buf, 0); err != nil || string(buf) != "hello World" {
		t.Fatalf("ReadAt = %q, %v", buf, err)
	}
	if sz, err := f.Size(); err != nil || sz != 11 {
		t.Fatalf("Size = %d, %v", sz, err)
	}
	if err := f.Truncate(5); err != nil {
		t.Fatal(err)
	}
	if sz, _ := f.Size(); sz != 5 {
		t.Fatalf("Size after Truncate = %d", sz)
	}
	if err := f.Truncate(4096); err != nil {
		t.Fatal(err)
	}
	// Fd is a real descriptor, usable for mmap.
	fd := f.Fd()
	if fd == ^uintptr(0) {
		t.Fatal("Fd = ^0")
	}
	m, err := unix.Mmap(int(fd), 0, 4096, unix.PROT_READ, unix.MAP_SHARED)
	if err != nil {
		t.Fatal(err)
	}
	if string(m[:5]) != "hello" || m[100] != 0 {
		t.Fatalf("mmap = %q", m[:5])
	}
	unix.Munmap(m)
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	// Sync of a closed file keeps an os error.
	if err := f.Sync(); err == nil {
		t.Fatal("Sync after Close succeeded")
	}
	if st, err := OS.Stat(p); err != nil || st.Size() != 4096 {
		t.Fatalf("Stat = %v, %v", st, err)
	}
}

func TestOSFSNamespace(t *testing.T) {
	dir := t.TempDir()
	sub := filepath.Join(dir, "a", "b")
	if err := OS.MkdirAll(sub, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, n := range []string{"c", "a", "b"} {
		f, err := OS.OpenFile(filepath.Join(sub, n), os.O_RDWR|os.O_CREATE, 0o644)
		if err != nil {
			t.Fatal(err)
		}
		f.WriteAt([]byte(n), 0)
		f.Close()
	}
	names, err := OS.ReadDir(sub)
	if err != nil || !slices.Equal(names, []string{"a", "b", "c"}) {
		t.Fatalf("ReadDir = %v, %v", names, err)
	}
	if err := OS.SyncDir(sub); err != nil {
		t.Fatal(err)
	}
	// Rename replaces the target.
	if err := OS.Rename(filepath.Join(sub, "a"), filepath.Join(sub, "c")); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(filepath.Join(sub, "c")); string(b) != "a" {
		t.Fatalf("c = %q after rename", b)
	}
	if err := OS.Remove(filepath.Join(sub, "b")); err != nil {
		t.Fatal(err)
	}
	names, _ = OS.ReadDir(sub)
	if !slices.Equal(names, []string{"c"}) {
		t.Fatalf("ReadDir = %v", names)
	}
	if err := OS.Remove(sub); !errors.Is(err, syscall.ENOTEMPTY) && !errors.Is(err, syscall.EEXIST) {
		t.Fatalf("Remove non-empty dir: %v", err)
	}
	if err := OS.RemoveAll(filepath.Join(dir, "a")); err != nil {
		t.Fatal(err)
	}
	if _, err := OS.Stat(sub); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("Stat removed: %v", err)
	}
}

func TestOSErrorsKeepTheirTypes(t *testing.T) {
	dir := t.TempDir()
	missing := filepath.Join(dir, "missing")
	f, err := OS.OpenFile(missing, os.O_RDONLY, 0)
	if f != nil {
		t.Fatalf("OpenFile returned a non-nil File %#v with error %v", f, err)
	}
	var pe *os.PathError
	if !errors.As(err, &pe) || !errors.Is(err, fs.ErrNotExist) || !errors.Is(err, syscall.ENOENT) {
		t.Fatalf("OpenFile missing: %#v", err)
	}
	if err := OS.SyncDir(missing); !errors.Is(err, syscall.ENOENT) {
		t.Fatalf("SyncDir missing: %v", err)
	}
	if _, err := OS.ReadDir(missing); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("ReadDir missing: %v", err)
	}
	if err := OS.Rename(missing, missing+"2"); !errors.Is(err, syscall.ENOENT) {
		t.Fatalf("Rename missing: %v", err)
	}
	if err := OS.Remove(missing); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("Remove missing: %v", err)
	}
	if _, err := OS.OpenFile(missing, os.O_RDWR|os.O_CREATE, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := OS.OpenFile(missing, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o644); !errors.Is(err, fs.ErrExist) {
		t.Fatalf("O_EXCL: %v", err)
	}
}

func TestWriteAtv(t *testing.T) {
	dir := t.TempDir()
	for _, fs := range []FS{OS, NoSync(OS), NewCrashFS(OS)} {
		f, err := fs.OpenFile(filepath.Join(dir, fmt.Sprintf("v%T", fs)), os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o644)
		if err != nil {
			t.Fatal(err)
		}
		// More buffers than IOV_MAX, of uneven sizes, written after a prefix.
		var bufs [][]byte
		var want []byte
		for i := 0; i < 2500; i++ {
			b := bytes.Repeat([]byte{byte(i)}, 1+i%7)
			bufs = append(bufs, b)
			want = append(want, b...)
		}
		if _, err := f.WriteAt([]byte("head"), 0); err != nil {
			t.Fatal(err)
		}
		n, err := WriteAtv(f, bufs, 4)
		if err != nil || n != len(want) {
			t.Fatalf("%T: WriteAtv = %d, %v; want %d", fs, n, err, len(want))
		}
		got := make([]byte, 4+len(want))
		if _, err := f.ReadAt(got, 0); err != nil {
			t.Fatal(err)
		}
		if string(got[:4]) != "head" || !bytes.Equal(got[4:], want) {
			t.Fatalf("%T: content differs", fs)
		}
		f.Close()
	}
}
