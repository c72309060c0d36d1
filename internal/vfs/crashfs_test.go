package vfs

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

// newCrash returns a CrashFS over OS and a fresh real directory.
func newCrash(t *testing.T) (*CrashFS, string) {
	t.Helper()
	return NewCrashFS(OS), t.TempDir()
}

// create creates a file, syncing its directory if dirSync.
func create(t *testing.T, c *CrashFS, p string, dirSync bool) File {
	t.Helper()
	f, err := c.OpenFile(p, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	if dirSync {
		if err := c.SyncDir(filepath.Dir(p)); err != nil {
			t.Fatal(err)
		}
	}
	return f
}

func write(t *testing.T, f File, off int64, s string) {
	t.Helper()
	if n, err := f.WriteAt([]byte(s), off); err != nil || n != len(s) {
		t.Fatalf("WriteAt(%q, %d) = %d, %v", s, off, n, err)
	}
}

func syncf(t *testing.T, f File) {
	t.Helper()
	if err := f.Sync(); err != nil {
		t.Fatal(err)
	}
}

func crash(t *testing.T, c *CrashFS, opts CrashOptions) {
	t.Helper()
	if err := c.Crash(opts); err != nil {
		t.Fatal(err)
	}
	if err := c.Revive(); err != nil {
		t.Fatal(err)
	}
}

// content returns the real file's content, or "<absent>".
func content(t *testing.T, p string) string {
	t.Helper()
	b, err := os.ReadFile(p)
	if errors.Is(err, fs.ErrNotExist) {
		return "<absent>"
	}
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func wantContent(t *testing.T, p, want string) {
	t.Helper()
	if got := content(t, p); got != want {
		t.Fatalf("%s = %q, want %q", filepath.Base(p), got, want)
	}
}

// realNames lists dir on disk, hidden files included.
func realNames(t *testing.T, dir string) []string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	return names
}

func TestCrashUnsyncedAppendVanishes(t *testing.T) {
	c, dir := newCrash(t)
	p := filepath.Join(dir, "log")
	f := create(t, c, p, true)
	write(t, f, 0, "hello")
	syncf(t, f)
	write(t, f, 5, " world")
	wantContent(t, p, "hello world") // reads see the current state
	crash(t, c, CrashOptions{})
	wantContent(t, p, "hello")
}

func TestCrashSyncedBytesStay(t *testing.T) {
	c, dir := newCrash(t)
	p := filepath.Join(dir, "log")
	f := create(t, c, p, true)
	write(t, f, 0, "abc")
	syncf(t, f)
	write(t, f, 3, "def")
	syncf(t, f)
	crash(t, c, CrashOptions{})
	wantContent(t, p, "abcdef")

	// A file never synced but durably created is empty.
	q := filepath.Join(dir, "empty")
	g := create(t, c, q, true)
	write(t, g, 0, "data")
	crash(t, c, CrashOptions{})
	wantContent(t, q, "")
}

func TestCrashCreatedFileWithoutDirSyncVanishes(t *testing.T) {
	c, dir := newCrash(t)
	q := filepath.Join(dir, "kept")
	g := create(t, c, q, true)
	write(t, g, 0, "x")
	syncf(t, g)
	p := filepath.Join(dir, "seg")
	f := create(t, c, p, false)
	write(t, f, 0, "synced data")
	syncf(t, f) // the data is durable, but not the directory entry
	crash(t, c, CrashOptions{})
	wantContent(t, p, "<absent>")
	wantContent(t, q, "x")
	if names := realNames(t, dir); !slices.Equal(names, []string{"kept"}) {
		t.Fatalf("dir = %v", names)
	}
}

func TestCrashUndoesTruncate(t *testing.T) {
	c, dir := newCrash(t)
	p := filepath.Join(dir, "log")
	f := create(t, c, p, true)
	write(t, f, 0, "0123456789")
	syncf(t, f)
	if err := f.Truncate(4); err != nil {
		t.Fatal(err)
	}
	write(t, f, 4, "XY") // regrow over the cut region
	wantContent(t, p, "0123XY")
	crash(t, c, CrashOptions{})
	wantContent(t, p, "0123456789")

	// A synced truncation is durable.
	f = create(t, c, p, false)
	if err := f.Truncate(3); err != nil {
		t.Fatal(err)
	}
	syncf(t, f)
	crash(t, c, CrashOptions{})
	wantContent(t, p, "012")

	// O_TRUNC is a truncation too.
	f, err := c.OpenFile(p, os.O_RDWR|os.O_TRUNC, 0)
	if err != nil {
		t.Fatal(err)
	}
	wantContent(t, p, "")
	f.Close()
	crash(t, c, CrashOptions{})
	wantContent(t, p, "012")
}

func TestCrashUndoesOverwrite(t *testing.T) {
	c, dir := newCrash(t)
	p := filepath.Join(dir, "idx")
	f := create(t, c, p, true)
	write(t, f, 0, "aaaaaaaa")
	syncf(t, f)
	write(t, f, 2, "bb")
	write(t, f, 3, "ccccccc") // overlaps the first overwrite and appends
	write(t, f, 0, "d")
	wantContent(t, p, "dabccccccc")
	crash(t, c, CrashOptions{})
	wantContent(t, p, "aaaaaaaa")

	f = create(t, c, p, false)
	write(t, f, 2, "bb")
	syncf(t, f)
	write(t, f, 4, "ee")
	crash(t, c, CrashOptions{})
	wantContent(t, p, "aabbaaaa")
}

func TestCrashTornPrefix(t *testing.T) {
	for _, fill := range []Fill{FillData, FillZeros, FillGarbage} {
		t.Run(fmt.Sprint(fill), func(t *testing.T) {
			c, dir := newCrash(t)
			p := filepath.Join(dir, "log")
			f := create(t, c, p, true)
			write(t, f, 0, "durable|")
			syncf(t, f)
			write(t, f, 8, "unsynced tail")
			var calls []string
			keep := func(path string, durable, current int64) int64 {
				calls = append(calls, fmt.Sprintf("%s %d %d", filepath.Base(path), durable, current))
				return 4
			}
			crash(t, c, CrashOptions{KeepUnsynced: keep, Fill: fill, Seed: 1})
			if !slices.Equal(calls, []string{"log 8 21"}) {
				t.Fatalf("KeepUnsynced calls = %v", calls)
			}
			got := content(t, p)
			if len(got) != 12 || got[:8] != "durable|" {
				t.Fatalf("content = %q", got)
			}
			switch fill {
			case FillData:
				if got[8:] != "unsy" {
					t.Fatalf("kept = %q", got[8:])
				}
			case FillZeros:
				if got[8:] != "\x00\x00\x00\x00" {
					t.Fatalf("kept = %q", got[8:])
				}
			case FillGarbage:
				if got[8:] == "unsy" || got[8:] == "\x00\x00\x00\x00" {
					t.Fatalf("kept = %q, want garbage", got[8:])
				}
			}
		})
	}
	// The kept length is clamped to the unsynced tail.
	c, dir := newCrash(t)
	p := filepath.Join(dir, "log")
	f := create(t, c, p, true)
	write(t, f, 0, "abc")
	crash(t, c, CrashOptions{KeepUnsynced: func(string, int64, int64) int64 { return 1 << 40 }})
	wantContent(t, p, "abc")
	f = create(t, c, p, false)
	write(t, f, 3, "def")
	crash(t, c, CrashOptions{KeepUnsynced: func(string, int64, int64) int64 { return -5 }})
	wantContent(t, p, "abc")
}

func TestCrashSyncEIO(t *testing.T) {
	c, dir := newCrash(t)
	p := filepath.Join(dir, "log")
	f := create(t, c, p, true)
	// Fail the 2nd sync of the file.
	c.Inject(Fault{Kind: OpSync, Path: p, After: 1, Times: 1})
	write(t, f, 0, "one")
	syncf(t, f)
	write(t, f, 3, "two")
	err := f.Sync()
	if !errors.Is(err, syscall.EIO) {
		t.Fatalf("2nd Sync = %v, want EIO", err)
	}
	var pe *os.PathError
	if !errors.As(err, &pe) || pe.Op != "sync" {
		t.Fatalf("error %#v is not a sync *os.PathError", err)
	}
	crash(t, c, CrashOptions{}) // the failed sync made nothing durable
	wantContent(t, p, "one")

	// Without DropUnsynced, a retried sync succeeds and makes the data durable.
	f = create(t, c, p, false)
	c.Inject(Fault{Kind: OpSync, Times: 1})
	write(t, f, 3, "two")
	if err := f.Sync(); !errors.Is(err, syscall.EIO) {
		t.Fatalf("Sync = %v", err)
	}
	syncf(t, f)
	crash(t, c, CrashOptions{})
	wantContent(t, p, "onetwo")

	// Every sync fails, with a chosen error.
	f = create(t, c, p, false)
	c.Inject(Fault{Kind: OpSync, Err: syscall.EROFS})
	for range 3 {
		if err := f.Sync(); !errors.Is(err, syscall.EROFS) {
			t.Fatalf("Sync = %v", err)
		}
	}
	c.ClearFaults()
	syncf(t, f)
}

func TestCrashSyncEIODropsUnsynced(t *testing.T) {
	c, dir := newCrash(t)
	p := filepath.Join(dir, "log")
	f := create(t, c, p, true)
	write(t, f, 0, "AAAA")
	syncf(t, f)
	write(t, f, 0, "B")    // overwrite of durable data
	write(t, f, 4, "CCCC") // unsynced tail
	c.Inject(Fault{Kind: OpSync, Times: 1, DropUnsynced: true})
	if err := f.Sync(); !errors.Is(err, syscall.EIO) {
		t.Fatalf("Sync = %v", err)
	}
	wantContent(t, p, "BAAACCCC") // still readable, as in the page cache
	write(t, f, 8, "DD")          // written after the failure: will be synced
	write(t, f, 6, "E")           // rewrites part of the lost tail
	syncf(t, f)                   // succeeds, but the lost pages are not written
	crash(t, c, CrashOptions{})
	wantContent(t, p, "AAAA\x00\x00E\x00DD")
}

func TestCrashENOSPC(t *testing.T) {
	c, dir := newCrash(t)
	p := filepath.Join(dir, "log")
	f := create(t, c, p, true)
	c.SetSpaceBudget(10)
	write(t, f, 0, "123456")
	n, err := f.WriteAt([]byte("abcdefgh"), 6)
	if n != 4 || !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("WriteAt = %d, %v; want 4, ENOSPC", n, err)
	}
	wantContent(t, p, "123456abcd")
	if n, err := f.WriteAt([]byte("x"), 10); n != 0 || !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("WriteAt on a full disk = %d, %v", n, err)
	}
	// Overwrites need no space; a write straddling the end writes the overwrite part.
	write(t, f, 0, "OVER")
	if n, err := f.WriteAt([]byte("yyyy"), 8); n != 2 || !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("straddling WriteAt = %d, %v", n, err)
	}
	wantContent(t, p, "OVER56abyy")
	c.SetSpaceBudget(-1)
	write(t, f, 10, "more")
	// An ENOSPC fault fails a write outright.
	c.Inject(Fault{Kind: OpWrite, Err: syscall.ENOSPC, Times: 1})
	if n, err := f.WriteAt([]byte("z"), 0); n != 0 || !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("faulted WriteAt = %d, %v", n, err)
	}
	wantContent(t, p, "OVER56abyymore")
}

func TestCrashOnOpSeesOpsInOrder(t *testing.T) {
	c, dir := newCrash(t)
	var ops []string
	failSeq := int64(-1)
	c.SetOnOp(func(op Op) error {
		ops = append(ops, fmt.Sprintf("%d %s %s %s %d %d", op.Seq, op.Kind, filepath.Base(op.Path), filepath.Base(op.NewPath), op.Off, op.Len))
		if op.Seq == failSeq {
			return syscall.EIO
		}
		return nil
	})
	p, q := filepath.Join(dir, "a"), filepath.Join(dir, "b")
	f := create(t, c, p, true)
	write(t, f, 0, "hello")
	syncf(t, f)
	if err := f.Truncate(2); err != nil {
		t.Fatal(err)
	}
	if err := c.Rename(p, q); err != nil {
		t.Fatal(err)
	}
	write(t, f, 2, "!") // after the rename, the file's path is b
	if err := c.MkdirAll(filepath.Join(dir, "d"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := c.Remove(q); err != nil {
		t.Fatal(err)
	}
	// Read-only operations are not ops.
	c.ReadDir(dir)
	c.Stat(dir)
	g, _ := c.OpenFile(filepath.Join(dir, "d"), os.O_RDONLY, 0)
	g.Close()
	want := []string{
		"1 create a . 0 0",
		"2 syncdir " + filepath.Base(dir) + " . 0 0",
		"3 write a . 0 5",
		"4 sync a . 0 0",
		"5 truncate a . 2 0",
		"6 rename a b 0 0",
		"7 write b . 2 1",
		"8 mkdirall d . 0 0",
		"9 remove b . 0 0",
	}
	if !slices.Equal(ops, want) {
		t.Fatalf("ops:\n%q\nwant:\n%q", ops, want)
	}
	if c.Ops() != 9 {
		t.Fatalf("Ops = %d", c.Ops())
	}

	// A failed op returns the callback's error and has no effect.
	r := filepath.Join(dir, "r")
	h := create(t, c, r, true)
	write(t, h, 0, "abc")
	failSeq = c.Ops() + 1
	if n, err := h.WriteAt([]byte("XYZ"), 0); n != 0 || !errors.Is(err, syscall.EIO) {
		t.Fatalf("failed WriteAt = %d, %v", n, err)
	}
	wantContent(t, r, "abc")
	failSeq = c.Ops() + 1
	if err := c.Rename(r, p); !errors.Is(err, syscall.EIO) {
		t.Fatalf("failed Rename = %v", err)
	}
	wantContent(t, r, "abc")
	failSeq = c.Ops() + 1
	if err := h.Sync(); !errors.Is(err, syscall.EIO) {
		t.Fatalf("failed Sync = %v", err)
	}
	crash(t, c, CrashOptions{})
	wantContent(t, r, "")
}

// TestCrashAtEveryWritePoint crashes a small log workload before each of its mutating
// operations in turn, from inside the OnOp callback, and checks that exactly what was
// acknowledged by a successful sync survives.
func TestCrashAtEveryWritePoint(t *testing.T) {
	type acked struct {
		created bool   // directory synced after creation
		log     []byte // log content as of its last successful sync
		idx     uint64 // index header as of its last successful sync
	}
	workload := func(fsys FS, dir string, a *acked) error {
		log, err := fsys.OpenFile(filepath.Join(dir, "log"), os.O_RDWR|os.O_CREATE, 0o644)
		if err != nil {
			return err
		}
		defer log.Close()
		idx, err := fsys.OpenFile(filepath.Join(dir, "idx"), os.O_RDWR|os.O_CREATE, 0o644)
		if err != nil {
			return err
		}
		defer idx.Close()
		if err := fsys.SyncDir(dir); err != nil {
			return err
		}
		a.created = true
		var cur []byte
		for i := range 10 {
			rec := fmt.Appendf(nil, "record-%d;", i)
			if _, err := log.WriteAt(rec, int64(len(cur))); err != nil {
				return err
			}
			cur = append(cur, rec...)
			if err := log.Sync(); err != nil {
				return err
			}
			a.log = slices.Clone(cur)
			if _, err := idx.WriteAt(binary.BigEndian.AppendUint64(nil, uint64(i+1)), 0); err != nil {
				return err
			}
			if err := idx.Sync(); err != nil {
				return err
			}
			a.idx = uint64(i + 1)
		}
		return nil
	}
	// Count the ops.
	c := NewCrashFS(fastOS)
	var a acked
	if err := workload(c, t.TempDir(), &a); err != nil {
		t.Fatal(err)
	}
	total := c.Ops()
	if total != 3+4*10 {
		t.Fatalf("workload has %d ops", total)
	}
	for k := int64(1); k <= total+1; k++ {
		dir := t.TempDir()
		c := NewCrashFS(fastOS)
		c.SetOnOp(func(op Op) error {
			if op.Seq == k {
				if err := c.Crash(CrashOptions{}); err != nil {
					t.Error(err)
				}
			}
			return nil
		})
		var a acked
		err := workload(c, dir, &a)
		if k <= total && !errors.Is(err, ErrCrashed) {
			t.Fatalf("crash at op %d: workload error %v", k, err)
		}
		if k > total {
			if err != nil {
				t.Fatal(err)
			}
			c.Crash(CrashOptions{})
		}
		if err := c.Revive(); err != nil {
			t.Fatal(err)
		}
		if !a.created {
			if names := realNames(t, dir); len(names) != 0 {
				t.Fatalf("crash at op %d: dir = %v", k, names)
			}
			continue
		}
		wantContent(t, filepath.Join(dir, "log"), string(a.log))
		var idx []byte
		if a.idx > 0 {
			idx = binary.BigEndian.AppendUint64(nil, a.idx)
		}
		wantContent(t, filepath.Join(dir, "idx"), string(idx))
		// The new owner can go on.
		f, err := c.OpenFile(filepath.Join(dir, "log"), os.O_RDWR, 0)
		if err != nil {
			t.Fatal(err)
		}
		write(t, f, int64(len(a.log)), "next")
		syncf(t, f)
		f.Close()
	}
}

func TestCrashFailsEverythingUntilRevive(t *testing.T) {
	c, dir := newCrash(t)
	p := filepath.Join(dir, "f")
	f := create(t, c, p, true)
	write(t, f, 0, "abc")
	syncf(t, f)
	if err := c.Revive(); err == nil {
		t.Fatal("Revive without Crash succeeded")
	}
	if err := c.Crash(CrashOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := c.Crash(CrashOptions{}); err != nil { // idempotent
		t.Fatal(err)
	}
	check := func(what string, err error) {
		t.Helper()
		if !errors.Is(err, ErrCrashed) {
			t.Fatalf("%s after crash: %v", what, err)
		}
	}
	_, err := f.WriteAt([]byte("x"), 0)
	check("WriteAt", err)
	check("Sync", f.Sync())
	check("Truncate", f.Truncate(0))
	_, err = f.ReadAt(make([]byte, 1), 0)
	check("ReadAt", err)
	_, err = f.Size()
	check("Size", err)
	_, err = c.OpenFile(p, os.O_RDWR|os.O_CREATE, 0o644)
	check("OpenFile create", err)
	_, err = c.OpenFile(p, os.O_RDONLY, 0)
	check("OpenFile", err)
	check("Remove", c.Remove(p))
	check("RemoveAll", c.RemoveAll(p))
	check("Rename", c.Rename(p, p+"2"))
	check("MkdirAll", c.MkdirAll(filepath.Join(dir, "d"), 0o755))
	check("SyncDir", c.SyncDir(dir))
	_, err = c.ReadDir(dir)
	check("ReadDir", err)
	_, err = c.Stat(p)
	check("Stat", err)
	if err := f.Close(); err != nil {
		t.Fatalf("Close after crash: %v", err)
	}
	if err := c.Revive(); err != nil {
		t.Fatal(err)
	}
	// Old handles stay dead; new ones work; tracking restarted from the disk.
	_, err = f.WriteAt([]byte("x"), 0)
	check("old WriteAt after Revive", err)
	g, err := c.OpenFile(p, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	write(t, g, 3, "def")
	crash(t, c, CrashOptions{})
	wantContent(t, p, "abc")
}

func TestCrashRemoveAndRename(t *testing.T) {
	c, dir := newCrash(t)
	a, b, x := filepath.Join(dir, "a"), filepath.Join(dir, "b"), filepath.Join(dir, "x")
	fa := create(t, c, a, false)
	write(t, fa, 0, "A")
	syncf(t, fa)
	fb := create(t, c, b, true)
	write(t, fb, 0, "B")
	syncf(t, fb)

	// A removal not made durable is undone, with the durable content.
	if err := c.Remove(a); err != nil {
		t.Fatal(err)
	}
	write(t, fa, 1, "more") // the open file can still be written (and is not synced)
	if names, _ := c.ReadDir(dir); !slices.Equal(names, []string{"b"}) {
		t.Fatalf("ReadDir = %v", names)
	}
	if _, err := c.Stat(a); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("Stat removed: %v", err)
	}
	crash(t, c, CrashOptions{})
	wantContent(t, a, "A")
	if names := realNames(t, dir); !slices.Equal(names, []string{"a", "b"}) {
		t.Fatalf("dir = %v", names)
	}

	// A durable removal.
	if err := c.Remove(a); err != nil {
		t.Fatal(err)
	}
	if err := c.SyncDir(dir); err != nil {
		t.Fatal(err)
	}
	if names := realNames(t, dir); !slices.Equal(names, []string{"b"}) {
		t.Fatalf("dir after durable remove = %v", names)
	}
	crash(t, c, CrashOptions{})
	wantContent(t, a, "<absent>")

	// A rename replacing a durable target is undone.
	fx := create(t, c, x, true)
	write(t, fx, 0, "X")
	syncf(t, fx)
	if err := c.Rename(x, b); err != nil {
		t.Fatal(err)
	}
	wantContent(t, b, "X")
	write(t, fx, 1, "Y")
	syncf(t, fx) // data follows the file, whatever its name
	crash(t, c, CrashOptions{})
	wantContent(t, b, "B")
	wantContent(t, x, "XY")

	// A rename made durable by SyncDir.
	if err := c.Rename(x, b); err != nil {
		t.Fatal(err)
	}
	if err := c.SyncDir(dir); err != nil {
		t.Fatal(err)
	}
	crash(t, c, CrashOptions{})
	wantContent(t, b, "XY")
	wantContent(t, x, "<absent>")

	// Swap two files through a third name, then crash: both come back.
	p, q, tmp := filepath.Join(dir, "p"), filepath.Join(dir, "q"), filepath.Join(dir, "tmp")
	fp := create(t, c, p, false)
	write(t, fp, 0, "P")
	syncf(t, fp)
	fq := create(t, c, q, true)
	write(t, fq, 0, "Q")
	syncf(t, fq)
	for _, r := range [][2]string{{p, tmp}, {q, p}, {tmp, q}} {
		if err := c.Rename(r[0], r[1]); err != nil {
			t.Fatal(err)
		}
	}
	wantContent(t, p, "Q")
	crash(t, c, CrashOptions{})
	wantContent(t, p, "P")
	wantContent(t, q, "Q")
	wantContent(t, tmp, "<absent>")

	// A new file renamed over a durable one, then the durable one re-created... then crash.
	fn := create(t, c, tmp, false)
	write(t, fn, 0, "N")
	syncf(t, fn)
	if err := c.Rename(tmp, p); err != nil {
		t.Fatal(err)
	}
	crash(t, c, CrashOptions{})
	wantContent(t, p, "P")
	wantContent(t, tmp, "<absent>")
	if names := realNames(t, dir); !slices.Equal(names, []string{"b", "p", "q"}) {
		t.Fatalf("dir = %v", names)
	}
}

func TestCrashDirectories(t *testing.T) {
	c, dir := newCrash(t)
	sub := filepath.Join(dir, "part-0")
	if err := c.MkdirAll(sub, 0o755); err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(sub, "seg")
	f := create(t, c, p, true)
	write(t, f, 0, "data")
	syncf(t, f)
	// Directory rename: durable at once, the files follow.
	moved := filepath.Join(dir, "part-0.deleted")
	if err := c.Rename(sub, moved); err != nil {
		t.Fatal(err)
	}
	write(t, f, 4, "+")
	syncf(t, f)
	crash(t, c, CrashOptions{})
	wantContent(t, filepath.Join(moved, "seg"), "data+")
	// Removing a file then its (now empty) directory makes both removals durable.
	if err := c.Remove(filepath.Join(moved, "seg")); err != nil {
		t.Fatal(err)
	}
	if err := c.Remove(moved); err != nil {
		t.Fatal(err)
	}
	crash(t, c, CrashOptions{})
	if _, err := os.Stat(moved); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("removed dir: %v", err)
	}
	// RemoveAll is durable at once.
	if err := c.MkdirAll(sub, 0o755); err != nil {
		t.Fatal(err)
	}
	f = create(t, c, p, true)
	write(t, f, 0, "x")
	if err := c.RemoveAll(sub); err != nil {
		t.Fatal(err)
	}
	crash(t, c, CrashOptions{})
	if names := realNames(t, dir); len(names) != 0 {
		t.Fatalf("dir = %v", names)
	}
}

// TestCrashKeepsOldMappingsValid checks that a crash does not shrink a file in place under an
// mmap of the old owner (which would SIGBUS).
func TestCrashKeepsOldMappingsValid(t *testing.T) {
	c, dir := newCrash(t)
	p := filepath.Join(dir, "seg")
	f := create(t, c, p, true)
	page := bytes.Repeat([]byte{'a'}, 4096)
	write(t, f, 0, string(page))
	syncf(t, f)
	write(t, f, 4096, string(bytes.Repeat([]byte{'b'}, 4096)))
	m, err := unix.Mmap(int(f.Fd()), 0, 8192, unix.PROT_READ, unix.MAP_SHARED)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Munmap(m)
	crash(t, c, CrashOptions{})
	if m[8191] != 'b' { // would fault if the file had been truncated in place
		t.Fatalf("old mapping = %q", m[8191])
	}
	if got := content(t, p); got != string(page) {
		t.Fatalf("len = %d", len(got))
	}
}

func TestCrashPreexistingFilesAreDurable(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "old")
	if err := os.WriteFile(p, []byte("before"), 0o644); err != nil {
		t.Fatal(err)
	}
	c := NewCrashFS(nil)
	f, err := c.OpenFile(p, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	write(t, f, 0, "AFTER!!")
	if err := c.Remove(p); err != nil {
		t.Fatal(err)
	}
	crash(t, c, CrashOptions{})
	wantContent(t, p, "before")
}

// TestCrashConcurrent runs writers, syncers and readers on several files while the FS
// crashes under them; run it with -race.
func TestCrashConcurrent(t *testing.T) {
	c, dir := NewCrashFS(fastOS), t.TempDir()
	const (
		writers  = 4
		recSize  = 256
		maxRecs  = 400
		regionSz = recSize * maxRecs
	)
	shared := create(t, c, filepath.Join(dir, "shared"), false)
	own := make([]File, writers)
	for i := range own {
		own[i] = create(t, c, filepath.Join(dir, fmt.Sprintf("own-%d", i)), false)
	}
	if err := c.SyncDir(dir); err != nil {
		t.Fatal(err)
	}
	rec := func(w, i int) []byte {
		b := bytes.Repeat([]byte{byte('a' + w)}, recSize)
		binary.BigEndian.PutUint32(b, uint32(i))
		return b
	}
	var (
		wg         sync.WaitGroup
		writes     atomic.Int64
		ackedOwn   [writers]int64 // bytes of own file acknowledged by a sync
		ackedShare [writers]int64 // bytes of the shared region acknowledged by a sync
	)
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range maxRecs {
				r := rec(w, i)
				if _, err := own[w].WriteAt(r, int64(i*recSize)); err != nil {
					if !errors.Is(err, ErrCrashed) {
						t.Error(err)
					}
					return
				}
				if _, err := shared.WriteAt(r, int64(w*regionSz+i*recSize)); err != nil {
					if !errors.Is(err, ErrCrashed) {
						t.Error(err)
					}
					return
				}
				writes.Add(1)
				if i%3 == 2 {
					if err := own[w].Sync(); err != nil {
						return
					}
					ackedOwn[w] = int64((i + 1) * recSize)
					if err := shared.Sync(); err != nil {
						return
					}
					ackedShare[w] = int64((i + 1) * recSize)
				}
				buf := make([]byte, recSize)
				if _, err := own[w].ReadAt(buf, int64(i*recSize)); err != nil {
					if !errors.Is(err, ErrCrashed) {
						t.Error(err)
					}
					return
				}
			}
		}()
	}
	wg.Add(1)
	go func() { // namespace churn
		defer wg.Done()
		for i := 0; ; i++ {
			p := filepath.Join(dir, fmt.Sprintf("tmp-%d", i))
			f, err := c.OpenFile(p, os.O_RDWR|os.O_CREATE, 0o644)
			if err != nil {
				return
			}
			f.WriteAt([]byte("tmp"), 0)
			f.Close()
			if err := c.SyncDir(dir); err != nil {
				return
			}
			if err := c.Remove(p); err != nil {
				return
			}
			if _, err := c.ReadDir(dir); err != nil {
				return
			}
		}
	}()
	for writes.Load() < writers*maxRecs/2 {
		runtimeGosched()
	}
	if err := c.Crash(CrashOptions{}); err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	if err := c.Revive(); err != nil {
		t.Fatal(err)
	}
	sharedData, err := os.ReadFile(filepath.Join(dir, "shared"))
	if err != nil {
		t.Fatal(err)
	}
	for w := range writers {
		got, err := os.ReadFile(filepath.Join(dir, fmt.Sprintf("own-%d", w)))
		if err != nil {
			t.Fatal(err)
		}
		if int64(len(got)) != ackedOwn[w] {
			t.Fatalf("own-%d: %d bytes, acked %d", w, len(got), ackedOwn[w])
		}
		for i := 0; i*recSize < len(got); i++ {
			if !bytes.Equal(got[i*recSize:(i+1)*recSize], rec(w, i)) {
				t.Fatalf("own-%d: record %d corrupt", w, i)
			}
			// Acked shared records are durable; others are there or zero.
			off := w*regionSz + i*recSize
			if int64(i*recSize) < ackedShare[w] {
				if off+recSize > len(sharedData) || !bytes.Equal(sharedData[off:off+recSize], rec(w, i)) {
					t.Fatalf("shared: writer %d record %d lost", w, i)
				}
			}
		}
		for i := range maxRecs {
			off := w*regionSz + i*recSize
			if off >= len(sharedData) {
				break
			}
			chunk := sharedData[off:min(off+recSize, len(sharedData))]
			if !bytes.Equal(chunk, rec(w, i)[:len(chunk)]) && !bytes.Equal(chunk, make([]byte, len(chunk))) {
				t.Fatalf("shared: writer %d record %d is garbage", w, i)
			}
		}
	}
	for _, n := range realNames(t, dir) {
		if n != "shared" && !slices.Contains([]string{"own-0", "own-1", "own-2", "own-3"}, n) && !bytes.HasPrefix([]byte(n), []byte("tmp-")) {
			t.Fatalf("unexpected file %s", n)
		}
	}
}
