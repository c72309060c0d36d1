package commitlog

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
)

// seedSegment returns the bytes of a small valid log's segment, its index and its time index.
func seedSegment(f *testing.F) (log, idx, tidx []byte) {
	dir := f.TempDir()
	o := testOptions(dir)
	o.IndexIntervalBytes = 64
	l, err := Open(dir, o)
	if err != nil {
		f.Fatal(err)
	}
	for i := 0; i < 6; i++ {
		if _, err := l.Append(makeBatch(f, 1+i, 20, "s", int64(i))); err != nil {
			f.Fatal(err)
		}
	}
	if err := l.AppendEntries([]Entry{{Index: 7, Term: 1, Type: EntryNoop, Extensions: []byte("x")}}); err != nil {
		f.Fatal(err)
	}
	path := l.Segments()[0].Path
	l.Close()
	log, _ = os.ReadFile(path)
	idx, _ = os.ReadFile(path[:len(path)-4] + ".index")
	tidx, _ = os.ReadFile(path[:len(path)-4] + ".timeindex")
	return
}

// FuzzRecover: a segment whose bytes after a valid prefix are arbitrary, with arbitrary index
// files, opened after a crash (no clean marker) or as trusted (clean marker). Open never panics;
// it either refuses with an error or yields a log whose every read succeeds or reports
// ErrCorrupt, that accepts appends and that reopens to the same end.
func FuzzRecover(f *testing.F) {
	log, idx, tidx := seedSegment(f)
	f.Add(log, idx, tidx, uint16(len(log)), false)
	f.Add(log, idx, tidx, uint16(len(log)/2), false)
	f.Add(log, idx, tidx, uint16(len(log)), true)
	f.Add(log[:100], []byte{}, []byte{}, uint16(60), false)
	f.Add([]byte("garbage"), []byte("x"), []byte("y"), uint16(0), false)
	f.Add(append(append([]byte{}, log...), 0, 0, 0, 0, 0, 0), make([]byte, 24), make([]byte, 24), uint16(len(log)), false)
	f.Fuzz(func(t *testing.T, data, idxData, tidxData []byte, keep uint16, clean bool) {
		dir := t.TempDir()
		k := int(keep)
		if k > len(log) {
			k = len(log)
		}
		seg := append(append([]byte{}, log[:k]...), data...)
		base := filepath.Join(dir, "00000000000000000000")
		os.WriteFile(base+".log", seg, 0o644)
		os.WriteFile(base+".index", idxData, 0o644)
		os.WriteFile(base+".timeindex", tidxData, 0o644)
		if clean {
			os.WriteFile(filepath.Join(dir, cleanMarkerName), []byte("clean\n"), 0o644)
		}
		o := testOptions(dir)
		o.IndexIntervalBytes = 64
		l, err := Open(dir, o)
		if err != nil {
			return // refused: fine, as long as it did not panic
		}
		end := l.EndOffset()
		for off := l.StartOffset(); off < end; {
			res, err := l.Read(off, ReadOptions{MaxBytes: 1})
			if err != nil {
				if !errors.Is(err, ErrCorrupt) {
					t.Fatalf("read %d: %v", off, err)
				}
				break
			}
			if res.NextOffset <= off {
				t.Fatalf("read at %d did not advance", off)
			}
			off = res.NextOffset
		}
		for i := l.FirstIndex(); i <= l.LastIndex(); i++ {
			if _, err := l.Entry(i); err != nil && !errors.Is(err, ErrCorrupt) {
				t.Fatalf("entry %d: %v", i, err)
			}
		}
		if _, err := l.Append(makeBatch(t, 2, 5, "new", 1)); err != nil {
			t.Fatalf("append after recovery: %v", err)
		}
		end = l.EndOffset()
		if err := l.Close(); err != nil {
			t.Fatal(err)
		}
		l, err = Open(dir, o)
		if err != nil {
			t.Fatalf("reopen after a clean close: %v", err)
		}
		if l.EndOffset() != end {
			t.Fatalf("reopen end %d, want %d", l.EndOffset(), end)
		}
		l.Close()
	})
}
