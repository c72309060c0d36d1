package commitlog

import (
	"errors"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"

	"github.com/runnel-io/runnel/internal/recordbatch"
)

// fillLog appends n batches and returns them; it leaves the log open.
func fillLog(t *testing.T, l *Log, n int) [][]byte {
	t.Helper()
	var out [][]byte
	for i := 0; i < n; i++ {
		b := makeBatch(t, 1+i%5, 80, "f", int64(i))
		if _, err := l.Append(b); err != nil {
			t.Fatal(err)
		}
		out = append(out, b)
	}
	return out
}

// crashOpen abandons the log as a crash would: no clean-shutdown marker, nothing else synced.
// (The files keep whatever reached the page cache; the CrashFS tests drop unsynced bytes.)
func abandon(t *testing.T, l *Log) {
	abandonLog(l)
}

func lastSegmentPath(t *testing.T, l *Log) string {
	segs := l.Segments()
	return segs[len(segs)-1].Path
}

func TestTornTailIsTruncated(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 6))
	for round := 0; round < 30; round++ {
		dir := t.TempDir()
		o := testOptions(dir)
		l := openLog(t, dir, o)
		want := fillLog(t, l, 150)
		path := lastSegmentPath(t, l)
		abandon(t, l)
		fi, _ := os.Stat(path)
		// Cut at a random byte past the header, and sometimes append garbage.
		cut := segmentHeaderSize + rng.Int64N(fi.Size()-segmentHeaderSize)
		if err := os.Truncate(path, cut); err != nil {
			t.Fatal(err)
		}
		if rng.IntN(2) == 0 {
			f, _ := os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0)
			junk := make([]byte, 1+rng.IntN(500))
			for i := range junk {
				junk[i] = byte(rng.IntN(256))
			}
			f.Write(junk)
			f.Close()
		}
		l = openLog(t, dir, o)
		got := readAll(t, l)
		if len(got) > len(want) {
			t.Fatalf("round %d: %d batches after a cut, more than written", round, len(got))
		}
		equalBatches(t, got, want[:len(got)])
		// The cut point is exact: only whole batches before it survive, and offsets continue.
		if fi2, _ := os.Stat(path); fi2.Size() > cut {
			t.Fatalf("round %d: segment is %d bytes, longer than the cut at %d", round, fi2.Size(), cut)
		}
		next := l.EndOffset()
		offs, err := l.Append(makeBatch(t, 1, 1, "after", 0))
		if err != nil || offs[0] != next {
			t.Fatalf("append after recovery: %v %v", offs, err)
		}
		l.Close()
	}
}

// A flipped byte in a sealed segment is ErrCorrupt, at open or on the read that meets it, and is
// never read as data or as the end of the log.
func TestBitFlipInSealedSegment(t *testing.T) {
	for name, at := range map[string]func(size int) int{
		"records":           func(size int) int { return size / 2 },   // inside a batch: the batch CRC
		"last frame header": func(size int) int { return size - 200 }, // walked at open
	} {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			o := testOptions(dir)
			l := openLog(t, dir, o)
			fillLog(t, l, 300)
			segs := l.Segments()
			if len(segs) < 3 {
				t.Fatal("want sealed segments")
			}
			sealed := segs[0]
			l.Close()
			data, _ := os.ReadFile(sealed.Path)
			data[at(len(data))] ^= 0x40
			os.WriteFile(sealed.Path, data, 0o644)
			l, err := Open(dir, o)
			if err != nil {
				if !errors.Is(err, ErrCorrupt) {
					t.Fatalf("open: %v", err)
				}
				return
			}
			defer l.Close()
			for off := sealed.BaseOffset; off < sealed.NextOffset; {
				res, err := l.Read(off, ReadOptions{MaxBytes: 1})
				if errors.Is(err, ErrCorrupt) {
					return
				}
				if err != nil {
					t.Fatalf("read %d: %v", off, err)
				}
				off = res.NextOffset
			}
			t.Fatal("a flipped byte in a sealed segment was read as data")
		})
	}
}

func TestIndexFaultsAreRepaired(t *testing.T) {
	faults := map[string]func(path string){
		"deleted":   func(p string) { os.Remove(p) },
		"truncated": func(p string) { fi, _ := os.Stat(p); os.Truncate(p, fi.Size()/2) },
		"torn":      func(p string) { fi, _ := os.Stat(p); os.Truncate(p, fi.Size()-5) },
		"longer": func(p string) {
			f, _ := os.OpenFile(p, os.O_WRONLY|os.O_APPEND, 0)
			f.Write([]byte{0xff, 0xff, 0xff, 0xf0, 0, 0, 0, 1, 0xff, 0xff, 0xff, 0xf0})
			f.Close()
		},
		"zeroed": func(p string) { fi, _ := os.Stat(p); os.WriteFile(p, make([]byte, fi.Size()), 0o644) },
	}
	for name, fault := range faults {
		for _, ext := range []string{".index", ".timeindex"} {
			for _, clean := range []bool{true, false} {
				t.Run(name+ext, func(t *testing.T) {
					dir := t.TempDir()
					o := testOptions(dir)
					l := openLog(t, dir, o)
					want := fillLog(t, l, 300)
					segs := l.Segments()
					if clean {
						l.Close()
					} else {
						abandon(t, l)
					}
					for _, s := range segs {
						fault(s.Path[:len(s.Path)-len(".log")] + ext)
					}
					l = openLog(t, dir, o)
					defer l.Close()
					equalBatches(t, readAll(t, l), want)
					off, found, err := l.OffsetForTime(150)
					if err != nil || !found || off != offsetOfBatch(want, 150) {
						t.Fatalf("time lookup after repair: %d %v %v", off, found, err)
					}
				})
			}
		}
	}
}

// offsetOfBatch returns, by a linear scan of the records, the first offset whose timestamp is
// at or after ts.
func offsetOfBatch(batches [][]byte, ts int64) int64 {
	for _, b := range batches {
		recs, err := recordbatch.Records(b)
		if err != nil {
			panic(err)
		}
		for _, r := range recs {
			if r.Timestamp >= ts {
				return r.Offset
			}
		}
	}
	return -1
}

func TestCrashAfterCleanRestartIsNotClean(t *testing.T) {
	dir := t.TempDir()
	o := testOptions(dir)
	l := openLog(t, dir, o)
	fillLog(t, l, 10)
	l.Close()
	if _, err := os.Stat(filepath.Join(dir, cleanMarkerName)); err != nil {
		t.Fatal("no clean-shutdown marker after Close")
	}
	l = openLog(t, dir, o)
	if _, err := os.Stat(filepath.Join(dir, cleanMarkerName)); !os.IsNotExist(err) {
		t.Fatal("marker still present while the log is open")
	}
	want := readAll(t, l)
	path := lastSegmentPath(t, l)
	abandon(t, l)
	// A torn tail after the crash is truncated (scanned), not trusted.
	f, _ := os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0)
	f.Write([]byte("garbage after a crash"))
	f.Close()
	l = openLog(t, dir, o)
	defer l.Close()
	equalBatches(t, readAll(t, l), want)
}

func TestTornSegmentHeaderAtCreation(t *testing.T) {
	dir := t.TempDir()
	o := testOptions(dir)
	l := openLog(t, dir, o)
	want := fillLog(t, l, 100)
	end := l.EndOffset()
	idx := l.LastIndex()
	abandon(t, l)
	// A segment created just before the crash, its header only half written.
	p := filepath.Join(dir, sprintf20(end)+".log")
	os.WriteFile(p, []byte("RUNNEL"), 0o644)
	l = openLog(t, dir, o)
	defer l.Close()
	equalBatches(t, readAll(t, l), want)
	if l.LastIndex() != idx {
		t.Fatalf("last index %d want %d", l.LastIndex(), idx)
	}
}
