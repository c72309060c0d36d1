package commitlog

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/runnel-io/runnel/internal/recordbatch"
	"github.com/runnel-io/runnel/internal/vfs"
)

func TestAppendReadReopen(t *testing.T) {
	for _, policy := range []SyncPolicy{SyncGroup, SyncAlways, SyncInterval, SyncNone} {
		t.Run(policy.String(), func(t *testing.T) {
			dir := t.TempDir()
			o := testOptions(dir)
			o.Sync = policy
			o.SegmentBytes = 16 << 10
			o.FS = vfs.OS // the real fsyncs, under every policy
			l := openLog(t, dir, o)
			var want [][]byte
			var next int64
			for i := 0; i < 200; i++ {
				b := makeBatch(t, 1+i%7, 100, "a", int64(1000+i))
				offs, err := l.Append(b)
				if err != nil {
					t.Fatal(err)
				}
				if offs[0] != next {
					t.Fatalf("batch %d at offset %d, want %d", i, offs[0], next)
				}
				next += int64(1 + i%7)
				want = append(want, b)
			}
			if l.EndOffset() != next {
				t.Fatalf("end %d, want %d", l.EndOffset(), next)
			}
			if len(l.Segments()) < 3 {
				t.Fatalf("expected several segments, got %d", len(l.Segments()))
			}
			equalBatches(t, readAll(t, l), want)
			if err := l.Close(); err != nil {
				t.Fatal(err)
			}
			l = openLog(t, dir, o)
			defer l.Close()
			if l.EndOffset() != next || l.LastIndex() != 200 {
				t.Fatalf("after reopen end %d last index %d", l.EndOffset(), l.LastIndex())
			}
			equalBatches(t, readAll(t, l), want)
			offs, err := l.Append(makeBatch(t, 1, 10, "b", 5000))
			if err != nil || offs[0] != next {
				t.Fatalf("append after reopen: %v %v", offs, err)
			}
		})
	}
}

func TestSegmentFilesNamedByBaseOffset(t *testing.T) {
	dir := t.TempDir()
	l := openLog(t, dir, testOptions(dir))
	defer l.Close()
	for i := 0; i < 100; i++ {
		if _, err := l.Append(makeBatch(t, 10, 100, "x", 0)); err != nil {
			t.Fatal(err)
		}
	}
	for _, s := range l.Segments() {
		for _, ext := range []string{".log", ".index", ".timeindex"} {
			name := filepath.Join(dir, sprintf20(s.BaseOffset)+ext)
			if _, err := os.Stat(name); err != nil {
				t.Fatalf("segment file: %v", err)
			}
		}
	}
}

func sprintf20(n int64) string {
	s := []byte("00000000000000000000")
	for i := len(s) - 1; n > 0; i-- {
		s[i] = byte('0' + n%10)
		n /= 10
	}
	return string(s)
}

func TestReadBudgetAndBounds(t *testing.T) {
	dir := t.TempDir()
	l := openLog(t, dir, testOptions(dir))
	defer l.Close()
	big := makeBatch(t, 10, 1000, "big", 0) // ~10 KB
	small := makeBatch(t, 1, 10, "small", 0)
	if _, err := l.Append(big, small, small); err != nil {
		t.Fatal(err)
	}
	// The batch holding the offset comes first even when it alone exceeds the budget.
	res, err := l.Read(5, ReadOptions{MaxBytes: 100})
	if err != nil {
		t.Fatal(err)
	}
	got := splitBatches(t, res.Batches)
	if len(got) != 1 || len(got[0]) != len(big) || res.NextOffset != 10 {
		t.Fatalf("got %d batches next %d", len(got), res.NextOffset)
	}
	// A budget that fits two batches returns two.
	res, err = l.Read(10, ReadOptions{MaxBytes: 2 * len(small)})
	if err != nil || len(splitBatches(t, res.Batches)) != 2 || res.NextOffset != 12 {
		t.Fatalf("read two: %v next %d", err, res.NextOffset)
	}
	// MaxOffset bounds the read.
	res, err = l.Read(0, ReadOptions{MaxOffset: 11})
	if err != nil || len(splitBatches(t, res.Batches)) != 2 || res.NextOffset != 11 {
		t.Fatalf("bounded read: %v next %d", err, res.NextOffset)
	}
	// At the end: nothing, no error.
	res, err = l.Read(12, ReadOptions{})
	if err != nil || len(res.Batches) != 0 || res.NextOffset != 12 {
		t.Fatalf("read at end: %v %d", err, len(res.Batches))
	}
	for _, off := range []int64{-1, 13, 1 << 40} {
		_, err := l.Read(off, ReadOptions{})
		var re *OffsetRangeError
		if !errors.Is(err, ErrOffsetOutOfRange) || !errors.As(err, &re) || re.Start != 0 || re.End != 12 {
			t.Fatalf("read at %d: %v", off, err)
		}
	}
}

func TestInvalidBatchReachesNothing(t *testing.T) {
	dir := t.TempDir()
	l := openLog(t, dir, testOptions(dir))
	defer l.Close()
	good := makeBatch(t, 3, 10, "g", 0)
	if _, err := l.Append(good); err != nil {
		t.Fatal(err)
	}
	size := l.Size()
	badCRC := append([]byte(nil), good...)
	badCRC[len(badCRC)-1] ^= 1
	badMagic := append([]byte(nil), good...)
	badMagic[recordbatch.OffMagic] = 1
	truncated := good[:len(good)-3]
	cases := map[string][]byte{"crc": badCRC, "magic": badMagic, "truncated": truncated, "empty": {}, "short": good[:20]}
	for name, bad := range cases {
		_, err := l.Append(makeBatch(t, 1, 1, "ok", 0), bad)
		if !errors.Is(err, ErrInvalidBatch) {
			t.Fatalf("%s: got %v, want ErrInvalidBatch", name, err)
		}
		if l.Size() != size || l.EndOffset() != 3 {
			t.Fatalf("%s: log changed: size %d->%d", name, size, l.Size())
		}
	}
	o := testOptions(dir)
	o.MaxBatchBytes = 1024
	dir2 := t.TempDir()
	l2 := openLog(t, dir2, o)
	defer l2.Close()
	if _, err := l2.Append(makeBatch(t, 5, 1000, "huge", 0)); !errors.Is(err, ErrInvalidBatch) {
		t.Fatalf("oversized: %v", err)
	}
	equalBatches(t, readAll(t, l), [][]byte{good})
}

func TestOffsetForTime(t *testing.T) {
	dir := t.TempDir()
	l := openLog(t, dir, testOptions(dir))
	defer l.Close()
	// 300 batches of 5 records; batch i has timestamps 10*i .. 10*i+4.
	for i := 0; i < 300; i++ {
		if _, err := l.Append(makeBatch(t, 5, 50, "t", int64(10*i))); err != nil {
			t.Fatal(err)
		}
	}
	check := func(ts, want int64, wantFound bool) {
		t.Helper()
		off, found, err := l.OffsetForTime(ts)
		if err != nil || off != want || found != wantFound {
			t.Fatalf("OffsetForTime(%d) = %d %v %v, want %d %v", ts, off, found, err, want, wantFound)
		}
	}
	check(-100, 0, true)
	check(0, 0, true)
	check(3, 3, true)
	check(5, 5, true) // between batches: the next batch's first record
	check(10*150+2, 150*5+2, true)
	check(10*299+4, 299*5+4, true)
	check(10*299+5, 1500, false)
	l.Close()
	l = openLog(t, dir, testOptions(dir))
	check(10*150+2, 150*5+2, true)
	check(10*299+5, 1500, false)
}

func TestAppendEntriesRaft(t *testing.T) {
	dir := t.TempDir()
	l := openLog(t, dir, testOptions(dir))
	entries := []Entry{
		{Index: 1, Term: 1, Type: EntryConfiguration, Data: []byte("config")},
		{Index: 2, Term: 1, Type: EntryNoop},
		{Index: 3, Term: 1, Type: EntryBatch, Data: makeBatch(t, 4, 10, "r", 0), Extensions: []byte("ext")},
		{Index: 4, Term: 2, Type: EntryNoop},
		{Index: 5, Term: 2, Type: EntryBatch, Data: makeBatch(t, 2, 10, "r", 0)},
	}
	if err := l.AppendEntries(entries); err != nil {
		t.Fatal(err)
	}
	if l.EndOffset() != 6 || l.LastIndex() != 5 || l.LastTerm() != 2 {
		t.Fatalf("end %d last %d term %d", l.EndOffset(), l.LastIndex(), l.LastTerm())
	}
	check := func() {
		for _, want := range entries {
			got, err := l.Entry(want.Index)
			if err != nil {
				t.Fatal(err)
			}
			if got.Index != want.Index || got.Term != want.Term || got.Type != want.Type ||
				string(got.Data) != string(want.Data) || string(got.Extensions) != string(want.Extensions) {
				t.Fatalf("entry %d: got %+v", want.Index, got)
			}
		}
		if _, err := l.Entry(6); !errors.Is(err, ErrIndexNotFound) {
			t.Fatalf("entry 6: %v", err)
		}
		if _, err := l.Entry(0); !errors.Is(err, ErrIndexNotFound) {
			t.Fatalf("entry 0: %v", err)
		}
	}
	check()
	// Gaps, repeats and lower terms are refused.
	for _, bad := range [][]Entry{
		{{Index: 7, Term: 2, Type: EntryNoop}},
		{{Index: 5, Term: 2, Type: EntryNoop}},
		{{Index: 6, Term: 1, Type: EntryNoop}},
		{{Index: 6, Term: 2, Type: EntryBatch, Data: []byte("not a batch")}},
	} {
		if err := l.AppendEntries(bad); err == nil {
			t.Fatalf("accepted %+v", bad)
		}
	}
	l.Close()
	l = openLog(t, dir, testOptions(dir))
	defer l.Close()
	check()
	if l.LastTerm() != 2 {
		t.Fatalf("term after reopen %d", l.LastTerm())
	}
	// Truncate the conflict suffix by Raft index; offsets follow.
	if err := l.TruncateFrom(4); err != nil {
		t.Fatal(err)
	}
	if l.LastIndex() != 3 || l.EndOffset() != 4 || l.LastTerm() != 1 {
		t.Fatalf("after truncate: last %d end %d term %d", l.LastIndex(), l.EndOffset(), l.LastTerm())
	}
	if err := l.AppendEntries([]Entry{{Index: 4, Term: 3, Type: EntryBatch, Data: makeBatch(t, 1, 1, "n", 0)}}); err != nil {
		t.Fatal(err)
	}
	if l.EndOffset() != 5 {
		t.Fatalf("end %d", l.EndOffset())
	}
}

func TestTruncate(t *testing.T) {
	dir := t.TempDir()
	o := testOptions(dir)
	l := openLog(t, dir, o)
	var want [][]byte
	for i := 0; i < 300; i++ {
		b := makeBatch(t, 3, 100, "t", int64(i))
		if _, err := l.Append(b); err != nil {
			t.Fatal(err)
		}
		want = append(want, b)
	}
	if err := l.Truncate(301); !errors.Is(err, ErrNotBatchBoundary) {
		t.Fatalf("inside a batch: %v", err)
	}
	if err := l.Truncate(1 << 20); !errors.Is(err, ErrOffsetOutOfRange) {
		t.Fatalf("past the end: %v", err)
	}
	before := len(l.Segments())
	if err := l.Truncate(150); err != nil {
		t.Fatal(err)
	}
	if l.EndOffset() != 150 || l.LastIndex() != 50 || len(l.Segments()) >= before {
		t.Fatalf("end %d last %d segments %d->%d", l.EndOffset(), l.LastIndex(), before, len(l.Segments()))
	}
	equalBatches(t, readAll(t, l), want[:50])
	// Appends continue from the cut; reopen sees the same.
	b := makeBatch(t, 2, 10, "new", 0)
	if offs, err := l.Append(b); err != nil || offs[0] != 150 {
		t.Fatalf("append after truncate: %v %v", offs, err)
	}
	want = append(want[:50], b)
	l.Close()
	l = openLog(t, dir, o)
	defer l.Close()
	equalBatches(t, readAll(t, l), want)
	if err := l.Truncate(0); err != nil {
		t.Fatal(err)
	}
	if l.EndOffset() != 0 || l.LastIndex() != 0 || len(readAll(t, l)) != 0 {
		t.Fatalf("truncate to 0: end %d", l.EndOffset())
	}
}

func TestDeleteSegmentsAndRetention(t *testing.T) {
	dir := t.TempDir()
	clock := &fakeClock{t: time.UnixMilli(1_000_000)}
	o := testOptions(dir)
	o.Now = clock.now
	o.RetentionBytes = 200 << 10
	o.RetentionCheckInterval = time.Hour
	l := openLog(t, dir, o)
	defer l.Close()
	for i := 0; i < 1000; i++ {
		ts := clock.t.UnixMilli()
		if _, err := l.Append(makeBatch(t, 4, 100, "r", ts)); err != nil {
			t.Fatal(err)
		}
		clock.advance(time.Second)
	}
	size := l.Size()
	n, err := l.ApplyRetention()
	if err != nil || n == 0 {
		t.Fatalf("retention by bytes deleted %d: %v", n, err)
	}
	if l.Size() < o.RetentionBytes || l.Size() >= size {
		t.Fatalf("size %d -> %d with retention %d", size, l.Size(), o.RetentionBytes)
	}
	start := l.StartOffset()
	if _, err := l.Read(start-1, ReadOptions{}); !errors.Is(err, ErrOffsetOutOfRange) {
		t.Fatalf("read before start: %v", err)
	}
	if _, err := l.Read(start, ReadOptions{}); err != nil {
		t.Fatal(err)
	}
	// By age: every sealed segment older than 10 s goes; the active one stays.
	l.opts.RetentionBytes = -1
	l.opts.RetentionAge = 10 * time.Second
	clock.advance(time.Hour)
	if _, err := l.ApplyRetention(); err != nil {
		t.Fatal(err)
	}
	if len(l.Segments()) != 1 {
		t.Fatalf("age retention left %d segments", len(l.Segments()))
	}
	// A guard holds retention back.
	if _, err := l.DeleteSegmentsBefore(l.EndOffset()); err != nil {
		t.Fatal(err)
	}
	if len(l.Segments()) != 1 || l.EndOffset() != 4000 {
		t.Fatalf("active segment deleted: %d segments end %d", len(l.Segments()), l.EndOffset())
	}
}

func TestRetentionGuard(t *testing.T) {
	dir := t.TempDir()
	o := testOptions(dir)
	o.RetentionBytes = 1
	o.RetentionCheckInterval = time.Hour
	guard := uint64(0)
	o.RetentionGuard = func() uint64 { return guard }
	l := openLog(t, dir, o)
	defer l.Close()
	for i := 0; i < 200; i++ {
		if _, err := l.Append(makeBatch(t, 4, 100, "r", 0)); err != nil {
			t.Fatal(err)
		}
	}
	if n, _ := l.ApplyRetention(); n != 0 {
		t.Fatalf("deleted %d segments past the guard", n)
	}
	segs := l.Segments()
	guard = segs[1].LastIndex
	if n, _ := l.ApplyRetention(); n != 2 {
		t.Logf("segments %+v", segs[:3])
		t.Fatalf("deleted %d segments, want 2", n)
	}
}

func TestSegmentAgeRoll(t *testing.T) {
	dir := t.TempDir()
	clock := &fakeClock{t: time.UnixMilli(1_000_000)}
	o := testOptions(dir)
	o.Now = clock.now
	o.SegmentAge = time.Minute
	l := openLog(t, dir, o)
	defer l.Close()
	for i := 0; i < 3; i++ {
		if _, err := l.Append(makeBatch(t, 1, 10, "a", 0)); err != nil {
			t.Fatal(err)
		}
		clock.advance(2 * time.Minute)
	}
	if n := len(l.Segments()); n != 3 {
		t.Fatalf("%d segments, want 3 (one per minute)", n)
	}
}

func TestStrayFiles(t *testing.T) {
	dir := t.TempDir()
	l := openLog(t, dir, testOptions(dir))
	if _, err := l.Append(makeBatch(t, 1, 10, "a", 0)); err != nil {
		t.Fatal(err)
	}
	l.Close()
	// Foreign files are ignored.
	os.WriteFile(filepath.Join(dir, "README"), []byte("hi"), 0o644)
	os.Mkdir(filepath.Join(dir, "lost+found"), 0o755)
	os.WriteFile(filepath.Join(dir, "recovery-point.tmp"), []byte("half"), 0o644)
	l = openLog(t, dir, testOptions(dir))
	if l.EndOffset() != 1 {
		t.Fatalf("end %d", l.EndOffset())
	}
	l.Close()
	if _, err := os.Stat(filepath.Join(dir, "recovery-point.tmp")); !os.IsNotExist(err) {
		t.Fatalf("leftover tmp file kept: %v", err)
	}
	// A file that looks like a segment but is not named like one is refused, not parsed as 0.
	for _, name := range []string{"abc.log", "12.log", "000000000000000000001.index"} {
		p := filepath.Join(dir, name)
		os.WriteFile(p, []byte("x"), 0o644)
		if _, err := Open(dir, testOptions(dir)); !errors.Is(err, ErrCorrupt) {
			t.Fatalf("%s: %v", name, err)
		}
		os.Remove(p)
	}
	// An orphan index is removed; a segment with a wrong header is corrupt.
	orphan := filepath.Join(dir, sprintf20(777)+".index")
	os.WriteFile(orphan, make([]byte, 24), 0o644)
	l = openLog(t, dir, testOptions(dir))
	l.Close()
	if _, err := os.Stat(orphan); !os.IsNotExist(err) {
		t.Fatal("orphan index kept")
	}
	bogus := filepath.Join(dir, sprintf20(5)+".log")
	os.WriteFile(bogus, []byte("this is not a segment header at all, not even close"), 0o644)
	if _, err := Open(dir, testOptions(dir)); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("bogus segment: %v", err)
	}
}

func TestBadOptions(t *testing.T) {
	for _, o := range []Options{
		{SegmentBytes: 10},
		{SegmentBytes: MaxSegmentBytes + 1},
		{IndexIntervalBytes: -1},
		{MaxBatchBytes: 10},
		{MaxBatchBytes: 2 << 30},
		{Sync: SyncPolicy(9)},
	} {
		if _, err := Open(t.TempDir(), o); !errors.Is(err, ErrBadOptions) {
			t.Fatalf("%+v: %v", o, err)
		}
	}
	if _, err := ParseSyncPolicy("sometimes"); !errors.Is(err, ErrBadOptions) {
		t.Fatal(err)
	}
}

func TestClosedLog(t *testing.T) {
	dir := t.TempDir()
	l := openLog(t, dir, testOptions(dir))
	fillLogN(t, l, 3)
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if err := l.Close(); err != nil {
		t.Fatalf("second close: %v", err)
	}
	if _, err := l.Read(0, ReadOptions{}); !errors.Is(err, ErrClosed) {
		t.Fatalf("read: %v", err)
	}
	if _, err := l.Entry(1); !errors.Is(err, ErrClosed) {
		t.Fatalf("entry: %v", err)
	}
	if _, err := l.Append(makeBatch(t, 1, 1, "x", 0)); !errors.Is(err, ErrClosed) {
		t.Fatalf("append: %v", err)
	}
	if err := l.Sync(); !errors.Is(err, ErrClosed) {
		t.Fatalf("sync: %v", err)
	}
}

func fillLogN(t *testing.T, l *Log, n int) {
	t.Helper()
	for i := 0; i < n; i++ {
		if _, err := l.Append(makeBatch(t, 2, 10, "n", 0)); err != nil {
			t.Fatal(err)
		}
	}
}

// One slice passed twice in a call (small, and large enough to be written from the caller's
// memory) gets two offsets, and both frames on disk carry their own.
func TestAppendSameSliceTwice(t *testing.T) {
	for _, size := range []int{10, 200} {
		dir := t.TempDir()
		l := openLog(t, dir, testOptions(dir))
		b := makeBatch(t, 20, size, "twice", 0)
		offs, err := l.Append(b, b)
		if err != nil || offs[0] != 0 || offs[1] != 20 {
			t.Fatalf("size %d: offsets %v, %v", size, offs, err)
		}
		l.Close()
		l = openLog(t, dir, testOptions(dir))
		got := readAll(t, l)
		if len(got) != 2 || batchBaseOffset(got[0]) != 0 || batchBaseOffset(got[1]) != 20 {
			t.Fatalf("size %d: read back %d batches", size, len(got))
		}
		l.Close()
	}
}
