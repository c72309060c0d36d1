package commitlog

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/runnel-io/runnel/internal/recordbatch"
	"github.com/runnel-io/runnel/internal/vfs"
)

// gateWriteFS counts the writes to segment files, holds one in place through gate, and fails
// the first write after failNext is set (a held write excepted) with EIO. Its files are not
// VectorWriterAts, so a vectored write is one WriteAt.
type gateWriteFS struct {
	vfs.FS
	gate     opGate
	writes   atomic.Int64
	failNext atomic.Bool
}

type gateWriteFile struct {
	vfs.File
	fs   *gateWriteFS
	name string
}

func (f gateWriteFile) WriteAt(p []byte, off int64) (int, error) {
	if !strings.HasSuffix(f.name, ".log") {
		return f.File.WriteAt(p, off)
	}
	f.fs.writes.Add(1)
	if !f.fs.gate.pass() && f.fs.failNext.Swap(false) {
		return 0, fmt.Errorf("write %s: %w", f.name, syscall.EIO)
	}
	return f.File.WriteAt(p, off)
}

func (s *gateWriteFS) OpenFile(name string, flag int, perm os.FileMode) (vfs.File, error) {
	f, err := s.FS.OpenFile(name, flag, perm)
	if err != nil {
		return nil, err
	}
	return gateWriteFile{f, s, name}, nil
}

// waitQueued waits until n calls wait in the combining queue.
func waitQueued(t *testing.T, l *Log, n int) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(time.Millisecond) {
		l.comb.mu.Lock()
		q := len(l.comb.queue)
		l.comb.mu.Unlock()
		if q == n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d calls queued, want %d", q, n)
		}
	}
}

// Calls that arrive while another call writes are written together, with one write, each
// getting its own offsets, and each readable once its call returned.
func TestAppendCombinesConcurrentCalls(t *testing.T) {
	for _, policy := range []SyncPolicy{SyncNone, SyncGroup} {
		t.Run(policy.String(), func(t *testing.T) {
			dir := t.TempDir()
			o := testOptions(dir)
			o.Sync = policy
			o.SegmentBytes = 1 << 20
			o.PreallocateBytes = -1 // it counts the log's writes; preallocation adds its own
			fs := &gateWriteFS{FS: vfs.NoSync(vfs.OS)}
			o.FS = fs
			l := openLog(t, dir, o)
			defer l.Close()

			release := holdAppend(t, l, &fs.gate, makeBatch(t, 1, 20, "first", 0))
			defer release()
			const queued = 8
			type result struct {
				tag  string
				offs []int64
				err  error
			}
			results := make(chan result, queued)
			for i := range queued {
				tag := fmt.Sprintf("q%d", i)
				go func() {
					// Two records per batch: offsets must step by the records, not the calls.
					offs, err := l.Append(makeBatch(t, 2, 20, tag, 0))
					results <- result{tag, offs, err}
				}()
			}
			waitQueued(t, l, queued)
			before := fs.writes.Load()
			offs, err := release()
			if err != nil || len(offs) != 1 || offs[0] != 0 {
				t.Fatalf("first append: offsets %v, %v", offs, err)
			}
			seen := map[int64]string{}
			for range queued {
				r := <-results
				if r.err != nil {
					t.Fatalf("%s: %v", r.tag, r.err)
				}
				if len(r.offs) != 1 {
					t.Fatalf("%s: offsets %v", r.tag, r.offs)
				}
				o := r.offs[0]
				if o < 1 || o > 2*queued-1 || (o-1)%2 != 0 || seen[o] != "" {
					t.Fatalf("%s got offset %d (others: %v)", r.tag, o, seen)
				}
				seen[o] = r.tag
				res, err := l.Read(o, ReadOptions{MaxBytes: 1})
				if err != nil {
					t.Fatal(err)
				}
				if got := splitBatches(t, res.Batches); len(got) != 1 || !bytes.Contains(got[0], []byte(r.tag+"-1-")) {
					t.Fatalf("offset %d does not hold %s's batch", o, r.tag)
				}
			}
			if n := fs.writes.Load() - before; n != 1 {
				t.Errorf("%d writes for %d queued calls, want 1", n, queued)
			}
			if got := l.EndOffset(); got != 1+2*queued {
				t.Errorf("end offset %d, want %d", got, 1+2*queued)
			}
			if got := l.LastIndex(); got != 1+queued {
				t.Errorf("last index %d, want %d", got, 1+queued)
			}
			if policy == SyncGroup && l.DurableIndex() != 1+queued {
				t.Errorf("durable index %d after every append returned, want %d", l.DurableIndex(), 1+queued)
			}
		})
	}
}

// A combined write that fails fails every call in it, publishes none of them, and leaves the
// log usable.
func TestAppendCombinedWriteFailure(t *testing.T) {
	dir := t.TempDir()
	o := testOptions(dir)
	fs := &gateWriteFS{FS: vfs.NoSync(vfs.OS)}
	o.FS = fs
	l := openLog(t, dir, o)
	defer l.Close()

	first := makeBatch(t, 1, 20, "first", 0)
	release := holdAppend(t, l, &fs.gate, first)
	defer release()
	const queued = 3
	errs := make(chan error, queued)
	for i := range queued {
		go func() {
			_, err := l.Append(makeBatch(t, 1, 20, fmt.Sprintf("lost%d", i), 0))
			errs <- err
		}()
	}
	waitQueued(t, l, queued)
	fs.failNext.Store(true)
	if _, err := release(); err != nil {
		t.Fatalf("first append: %v", err)
	}
	for range queued {
		if err := <-errs; !errors.Is(err, syscall.EIO) {
			t.Fatalf("a call of the failed write returned %v, want EIO", err)
		}
	}
	after := makeBatch(t, 1, 20, "after", 0)
	offs, err := l.Append(after)
	if err != nil || offs[0] != 1 {
		t.Fatalf("append after the failed write: offsets %v, %v (want 1: the log stays usable)", offs, err)
	}
	got := readAll(t, l)
	if len(got) != 2 || baseOf(t, got[0]) != 0 || baseOf(t, got[1]) != 1 ||
		!bytes.Contains(got[1], []byte("after-0-")) {
		t.Fatalf("log holds %d batches after the failure, want first and after", len(got))
	}
}

// Many appenders at once, with handoffs of the combiner role: every call gets distinct,
// contiguous offsets and its own batch is at them.
func TestAppendCombiningUnderLoad(t *testing.T) {
	dir := t.TempDir()
	o := testOptions(dir)
	o.SegmentBytes = 64 << 10 // rolls inside combined writes
	l := openLog(t, dir, o)
	defer l.Close()
	const appenders, each = 32, 50
	var wg sync.WaitGroup
	var mu sync.Mutex
	owner := map[int64]string{}
	for a := range appenders {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range each {
				tag := fmt.Sprintf("a%d.%d", a, i)
				offs, err := appendMaybeAsync(l, i%2 == 0, makeBatch(t, 1+i%3, 30, tag, 0))
				if err != nil {
					t.Error(err)
					return
				}
				mu.Lock()
				owner[offs[0]] = tag
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	batches := readAll(t, l)
	if len(batches) != appenders*each {
		t.Fatalf("%d batches, want %d", len(batches), appenders*each)
	}
	next := int64(0)
	for _, b := range batches {
		h, err := recordbatch.ParseHeader(b)
		if err != nil {
			t.Fatal(err)
		}
		base := h.BaseOffset
		if base != next {
			t.Fatalf("batch at %d, want %d", base, next)
		}
		if !bytes.Contains(b, []byte(owner[base]+"-0-")) {
			t.Fatalf("offset %d does not hold %s's batch", base, owner[base])
		}
		next = h.NextOffset()
	}
}

func appendMaybeAsync(l *Log, async bool, batch []byte) ([]int64, error) {
	if !async {
		return l.Append(batch)
	}
	offs, wait, err := l.AppendAsync(batch)
	if err != nil {
		return nil, err
	}
	return offs, wait()
}

func baseOf(t *testing.T, b []byte) int64 {
	t.Helper()
	h, err := recordbatch.ParseHeader(b)
	if err != nil {
		t.Fatal(err)
	}
	return h.BaseOffset
}

// Concurrent appenders under group commit, their calls combined, and the filesystem crashed at
// points spread over the run (dropping unsynced bytes, or keeping a torn prefix of them): after
// recovery every acknowledged batch is at the offset its call returned, every batch in the log
// is one that was appended, and offsets continue.
func TestCrashWithConcurrentAppenders(t *testing.T) {
	const appenders, each = 8, 25
	run := func(t *testing.T, dir string, cfs *vfs.CrashFS) (acked map[int64]string) {
		l, err := Open(dir, crashOptions(dir, cfs, SyncGroup))
		if err != nil {
			return nil // the crash hit Open itself
		}
		defer l.Close()
		var mu sync.Mutex
		acked = map[int64]string{}
		var wg sync.WaitGroup
		for a := range appenders {
			wg.Go(func() {
				for i := range each {
					tag := fmt.Sprintf("c%d.%d", a, i)
					offs, err := l.Append(makeBatch(t, 1, 40, tag, 0))
					if err != nil {
						return
					}
					mu.Lock()
					acked[offs[0]] = tag
					mu.Unlock()
				}
			})
		}
		wg.Wait()
		return acked
	}
	// Count a run's operations without a crash.
	cfs := vfs.NewCrashFS(vfs.NoSync(vfs.OS))
	if got := len(run(t, t.TempDir(), cfs)); got != appenders*each {
		t.Fatalf("%d appends acknowledged without a crash, want %d", got, appenders*each)
	}
	total := int(cfs.Ops())
	points := 40
	if testing.Short() {
		points = 10
	}
	rng := rand.New(rand.NewPCG(17, 3))
	crashes := 0
	for p := range points {
		k := 1 + p*total/points + rng.IntN(max(1, total/points))
		dir := t.TempDir()
		cfs := vfs.NewCrashFS(vfs.NoSync(vfs.OS))
		opts := vfs.CrashOptions{Fill: []vfs.Fill{vfs.FillData, vfs.FillZeros, vfs.FillGarbage}[p%3], Seed: uint64(p)}
		if p%2 == 0 {
			keep := rand.New(rand.NewPCG(uint64(p), 5))
			opts.KeepUnsynced = func(path string, durable, current int64) int64 { return keep.Int64N(current - durable + 1) }
		}
		var crashed atomic.Bool
		cfs.SetOnOp(func(op vfs.Op) error {
			if int(op.Seq) == k && crashed.CompareAndSwap(false, true) {
				if err := cfs.Crash(opts); err != nil {
					t.Errorf("crash: %v", err)
				}
			}
			return nil
		})
		acked := run(t, dir, cfs)
		if !crashed.Load() {
			continue // this run had fewer operations (how the calls were combined)
		}
		crashes++
		cfs.SetOnOp(nil)
		if err := cfs.Revive(); err != nil {
			t.Fatal(err)
		}
		l, err := Open(dir, crashOptions(dir, cfs, SyncGroup))
		if err != nil {
			t.Fatalf("crash at op %d: reopen: %v", k, err)
		}
		held := map[int64]string{}
		next := int64(0)
		for _, b := range readAll(t, l) {
			h, err := recordbatch.ParseHeader(b)
			if err != nil {
				t.Fatal(err)
			}
			if h.BaseOffset != next {
				t.Fatalf("crash at op %d: batch at %d, want %d", k, h.BaseOffset, next)
			}
			recs, err := recordbatch.Records(b)
			if err != nil || len(recs) != 1 {
				t.Fatalf("crash at op %d: batch at %d: %d records, %v", k, h.BaseOffset, len(recs), err)
			}
			held[h.BaseOffset] = string(recs[0].Key)
			next = h.NextOffset()
		}
		if testing.Verbose() {
			t.Logf("crash at op %d of %d: %d acknowledged, %d in the log", k, total, len(acked), len(held))
		}
		for off, tag := range acked {
			if held[off] != tag {
				t.Fatalf("crash at op %d: acknowledged %s at %d, the log holds %q there", k, tag, off, held[off])
			}
		}
		if offs, err := l.Append(makeBatch(t, 1, 1, "after", 0)); err != nil || offs[0] != next {
			t.Fatalf("crash at op %d: append after recovery: %v %v (want offset %d)", k, offs, err, next)
		}
		l.Close()
	}
	if crashes < points/2 {
		t.Fatalf("only %d of %d runs reached their crash point", crashes, points)
	}
}
