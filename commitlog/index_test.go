package commitlog

import (
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/runnel-io/runnel/internal/vfs"
)

// The index search against a linear scan, over random monotone entries with ties, written in
// random chunks (so some are in the file and some in the in-memory tail), through a reader's
// view, and again from the file alone once the tail is flushed.
func TestIndexSearchMatchesLinearScan(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for round := 0; round < 50; round++ {
		dir := t.TempDir()
		n := rng.IntN(300)
		x, err := openIndex(vfs.OS, filepath.Join(dir, "x.index"), offsetEntrySize, n+1, true)
		if err != nil {
			t.Fatal(err)
		}
		var entries []offsetEntry
		var e offsetEntry
		for i := 0; i < n; {
			var chunk []byte
			for k := 1 + rng.IntN(20); k > 0 && i < n; k-- {
				e.relIndex += 1 + uint32(rng.IntN(3))
				e.relOffset += uint32(rng.IntN(3)) // ties allowed (entries without offsets)
				e.pos += 1 + uint32(rng.IntN(100))
				entries = append(entries, e)
				chunk = appendOffsetEntry(chunk, e)
				i++
			}
			if err := x.write(chunk); err != nil {
				t.Fatal(err)
			}
			x.publish()
		}
		if x.len()+len(x.view().tail)/offsetEntrySize != n || x.count() != n {
			t.Fatalf("round %d: %d entries in the file and %d in the tail, want %d", round, x.len(), len(x.view().tail)/offsetEntrySize, n)
		}
		if n >= tailFlushEntries && x.len() == 0 {
			t.Fatalf("round %d: %d entries and none written to the file", round, n)
		}
		flushed := false
		searchLast := func(target uint64, key func([]byte) uint64) (int, error) {
			if flushed {
				return x.searchLast(x.len(), target, key)
			}
			return x.view().searchLast(target, key)
		}
		for q := 0; q < 200; q++ {
			if q == 100 {
				if err := x.flush(); err != nil {
					t.Fatal(err)
				}
				if x.len() != n || len(x.view().tail) != 0 {
					t.Fatalf("round %d: after flush %d entries in the file, %d bytes in the tail", round, x.len(), len(x.view().tail))
				}
				flushed = true
			}
			target := uint64(rng.IntN(int(e.relOffset) + 10))
			got, err := searchLast(target, keyRelOffset)
			if err != nil {
				t.Fatal(err)
			}
			want := -1
			for i, en := range entries {
				if uint64(en.relOffset) <= target {
					want = i
				}
			}
			if got != want {
				t.Fatalf("round %d: search(%d) = %d, linear scan %d", round, target, got, want)
			}
			ti := uint64(rng.IntN(int(e.relIndex) + 10))
			got, _ = searchLast(ti, keyRelIndex)
			want = -1
			for i, en := range entries {
				if uint64(en.relIndex) <= ti {
					want = i
				}
			}
			if got != want {
				t.Fatalf("round %d: index search(%d) = %d, linear scan %d", round, ti, got, want)
			}
		}
		x.close()
	}
}

// Reads by offset and by Raft index against a model of the log, across interval sizes.
func TestReadMatchesModel(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	for _, interval := range []int{1, 100, 4096} {
		dir := t.TempDir()
		o := testOptions(dir)
		o.IndexIntervalBytes = interval
		l := openLog(t, dir, o)
		type batchAt struct {
			first, after int64
			data         []byte
			index        uint64
		}
		var model []batchAt
		index := uint64(0)
		for i := 0; i < 400; i++ {
			index++
			if rng.IntN(5) == 0 {
				if err := l.AppendEntries([]Entry{{Index: index, Term: 1, Type: EntryNoop}}); err != nil {
					t.Fatal(err)
				}
				continue
			}
			b := makeBatch(t, 1+rng.IntN(20), rng.IntN(300), "m", int64(i))
			if err := l.AppendEntries([]Entry{{Index: index, Term: 1, Type: EntryBatch, Data: b}}); err != nil {
				t.Fatal(err)
			}
			model = append(model, batchAt{batchBaseOffset(b), batchNextOffset(b), b, index})
		}
		check := func() {
			for q := 0; q < 300; q++ {
				off := rng.Int64N(l.EndOffset())
				res, err := l.Read(off, ReadOptions{MaxBytes: 1})
				if err != nil {
					t.Fatal(err)
				}
				got := splitBatches(t, res.Batches)
				var want batchAt
				for _, m := range model {
					if m.first <= off && off < m.after {
						want = m
					}
				}
				if len(got) != 1 || string(got[0]) != string(want.data) || res.NextOffset != want.after {
					t.Fatalf("interval %d: read(%d) got %d batches next %d, want batch [%d,%d)", interval, off, len(got), res.NextOffset, want.first, want.after)
				}
				m := model[rng.IntN(len(model))]
				e, err := l.Entry(m.index)
				if err != nil || string(e.Data) != string(m.data) {
					t.Fatalf("entry %d: %v", m.index, err)
				}
			}
		}
		check()
		l.Close()
		l = openLog(t, dir, o)
		check()
		l.Close()
	}
}

// The active segment's newest index entries live in memory, where reads find them, and reach
// the file 64 at a time, when the segment is sealed, and at Close.
func TestIndexTailWrittenAtSealAndClose(t *testing.T) {
	dir := t.TempDir()
	o := testOptions(dir)
	o.IndexIntervalBytes = 1 // an entry per batch
	o.SegmentBytes = 64 << 10
	l := openLog(t, dir, o)
	indexSize := func(s *segment) int64 {
		t.Helper()
		fi, err := os.Stat(strings.TrimSuffix(s.path, ".log") + ".index")
		if err != nil {
			t.Fatal(err)
		}
		return fi.Size()
	}
	var want [][]byte
	for i := range 10 {
		b := makeBatch(t, 1, 100, "x", int64(i))
		if _, err := l.Append(b); err != nil {
			t.Fatal(err)
		}
		want = append(want, b)
	}
	act := l.active()
	if got := indexSize(act); got != 0 {
		t.Fatalf("index file of %d bytes after 10 appends, want 0 (in memory)", got)
	}
	if v := act.idx.view(); v.len() != 9 { // the first batch, at the segment's start, needs none
		t.Fatalf("readers see %d index entries, want 9", v.len())
	}
	for off := range int64(10) {
		res, err := l.Read(off, ReadOptions{MaxBytes: 1})
		if err != nil || len(splitBatches(t, res.Batches)) != 1 {
			t.Fatalf("read %d: %v", off, err)
		}
	}
	for i := 10; len(l.Segments()) < 3; i++ {
		b := makeBatch(t, 1, 100, "x", int64(i))
		if _, err := l.Append(b); err != nil {
			t.Fatal(err)
		}
		want = append(want, b)
		if n := act.idx.len(); act == l.active() && (n%tailFlushEntries != 0 || n > act.idx.count()) {
			t.Fatalf("%d entries in the file, %d in all: the file takes them %d at a time", n, act.idx.count(), tailFlushEntries)
		}
	}
	segs := l.segments()
	for _, s := range segs[:len(segs)-1] {
		if got, n := indexSize(s), s.idx.len(); got != int64(n*offsetEntrySize) || n == 0 || len(s.idx.view().tail) != 0 {
			t.Fatalf("sealed segment: index file of %d bytes, %d entries, %d bytes in memory", got, n, len(s.idx.view().tail))
		}
	}
	for i := range 5 { // entries for the active segment's in-memory tail
		b := makeBatch(t, 1, 100, "y", int64(i))
		if _, err := l.Append(b); err != nil {
			t.Fatal(err)
		}
		want = append(want, b)
	}
	last := segs[len(segs)-1]
	n := last.idx.count()
	if n == 0 || n == last.idx.len() {
		t.Fatalf("active segment: %d index entries, %d of them in the file: the test wants some in memory", n, last.idx.len())
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if got := indexSize(last); got != int64(n*offsetEntrySize) {
		t.Fatalf("after Close the active segment's index file has %d bytes, want %d", got, n*offsetEntrySize)
	}
	l = openLog(t, dir, o)
	defer l.Close()
	equalBatches(t, readAll(t, l), want)
}
