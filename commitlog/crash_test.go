package commitlog

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"syscall"
	"testing"

	"github.com/runnel-io/runnel/internal/vfs"
)

// crashWorkload appends batches one call at a time (some calls carry two), rolling segments,
// with a truncation and a retention pass in the middle. It returns the batches in log order
// as attempted and how many of them were acknowledged; it stops at the first error.
func crashWorkload(t *testing.T, l *Log) (attempted [][]byte, acked int) {
	for i := 0; i < 40; i++ {
		batches := [][]byte{makeBatch(t, 1+i%4, 150, fmt.Sprint(i), int64(i))}
		if i%5 == 0 {
			batches = append(batches, makeBatch(t, 2, 40, fmt.Sprint(i, "b"), int64(i)))
		}
		attempted = append(attempted, batches...)
		if _, err := l.Append(batches...); err != nil {
			return attempted, acked
		}
		acked = len(attempted)
		if i == 25 {
			// Drop the last two batches; the model drops them too.
			cut := batchBaseOffset(attempted[len(attempted)-2])
			if err := l.Truncate(cut); err != nil {
				// A failed truncation may or may not have happened: what was attempted stays
				// the model (a survivor must be a prefix of it), and the kept part was acked.
				return attempted, len(attempted) - 2
			}
			attempted = attempted[:len(attempted)-2]
			acked = len(attempted)
		}
		if i == 32 {
			// Retention: drop the oldest whole segments below a third of the log.
			if _, err := l.DeleteSegmentsBefore(l.EndOffset() / 3); err != nil {
				return attempted, acked
			}
		}
	}
	return attempted, acked
}

func crashOptions(dir string, fs vfs.FS, policy SyncPolicy) Options {
	o := testOptions(dir)
	o.FS = fs
	o.Sync = policy
	o.SegmentBytes = 4096
	o.IndexIntervalBytes = 300
	return o
}

// TestCrashAtEveryWritePoint crashes the filesystem at every mutating operation of a workload
// (dropping unsynced bytes, or keeping a torn prefix of them as data, zeros or garbage), then
// reopens: every acknowledged batch is there under a durable policy, nothing but a prefix of
// what was attempted is there, and offsets continue.
func TestCrashAtEveryWritePoint(t *testing.T) {
	policies := []SyncPolicy{SyncGroup, SyncAlways, SyncNone}
	if testing.Short() {
		policies = policies[:1]
	}
	for _, policy := range policies {
		t.Run(policy.String(), func(t *testing.T) {
			// Count the operations of a run without a crash.
			dir := t.TempDir()
			cfs := vfs.NewCrashFS(vfs.NoSync(vfs.OS))
			l := openLog(t, dir, crashOptions(dir, cfs, policy))
			crashWorkload(t, l)
			if l.StartOffset() == 0 || len(l.Segments()) < 3 {
				t.Fatalf("the workload should roll segments and delete some: start %d, %d segments", l.StartOffset(), len(l.Segments()))
			}
			l.Close()
			total := int(cfs.Ops())
			rng := rand.New(rand.NewPCG(9, uint64(policy)))
			// Every write point under the default policy; every fifth (a different fifth per
			// policy) under the others, to keep the suite fast.
			stride := 1
			if policy != SyncGroup {
				stride = 5
			}
			for k := 1 + int(policy)%stride; k <= total; k += stride {
				fill := []vfs.Fill{vfs.FillData, vfs.FillZeros, vfs.FillGarbage}[k%3]
				keep := k%2 == 0
				crashAt(t, policy, k, keep, fill, rng.Uint64())
			}
		})
	}
}

func crashAt(t *testing.T, policy SyncPolicy, k int, keep bool, fill vfs.Fill, seed uint64) {
	t.Helper()
	dir := t.TempDir()
	cfs := vfs.NewCrashFS(vfs.NoSync(vfs.OS))
	rng := rand.New(rand.NewPCG(seed, 1))
	opts := vfs.CrashOptions{Fill: fill, Seed: seed}
	if keep {
		opts.KeepUnsynced = func(path string, durable, current int64) int64 { return rng.Int64N(current - durable + 1) }
	}
	crashed := false
	cfs.SetOnOp(func(op vfs.Op) error {
		if int(op.Seq) == k && !crashed {
			crashed = true
			if err := cfs.Crash(opts); err != nil {
				t.Errorf("crash: %v", err)
			}
		}
		return nil
	})
	o := crashOptions(dir, cfs, policy)
	var attempted [][]byte
	acked := 0
	if l, err := Open(dir, o); err == nil {
		attempted, acked = crashWorkload(t, l)
		l.Close()
	}
	if !crashed {
		return // the run had fewer operations (timing of group commits)
	}
	cfs.SetOnOp(nil)
	if err := cfs.Revive(); err != nil {
		t.Fatal(err)
	}
	l, err := Open(dir, o)
	if err != nil {
		t.Fatalf("crash at op %d (keep %v fill %d): reopen: %v", k, keep, fill, err)
	}
	defer l.Close()
	got := readAll(t, l)
	// Retention may have removed a prefix: the survivors start at the log start offset.
	first := 0
	for first < len(attempted) && batchBaseOffset(attempted[first]) < l.StartOffset() {
		first++
	}
	if len(got) > 0 && (first == len(attempted) || batchBaseOffset(attempted[first]) != l.StartOffset()) {
		t.Fatalf("crash at op %d: the log starts at %d, not at a batch that was appended", k, l.StartOffset())
	}
	if first+len(got) > len(attempted) {
		t.Fatalf("crash at op %d: %d batches from %d, only %d attempted", k, len(got), first, len(attempted))
	}
	for i := range got {
		if string(got[i]) != string(attempted[first+i]) {
			t.Fatalf("crash at op %d: batch %d is not what was appended there", k, first+i)
		}
	}
	if policy != SyncNone && first+len(got) < acked {
		t.Fatalf("crash at op %d (keep %v fill %d): batches up to %d survive, %d were acknowledged", k, keep, fill, first+len(got), acked)
	}
	next := l.EndOffset()
	offs, err := l.Append(makeBatch(t, 1, 1, "after", 0))
	if err != nil || offs[0] != next {
		t.Fatalf("crash at op %d: append after recovery: %v %v", k, offs, err)
	}
}

// A failed fsync fails the log: the append that waited on it gets ErrFailed, so do later
// appends, and a reopen recovers every acknowledged batch.
func TestFsyncEIOFailsTheLog(t *testing.T) {
	for _, policy := range []SyncPolicy{SyncGroup, SyncAlways} {
		t.Run(policy.String(), func(t *testing.T) {
			dir := t.TempDir()
			cfs := vfs.NewCrashFS(vfs.NoSync(vfs.OS))
			o := crashOptions(dir, cfs, policy)
			o.SegmentBytes = 1 << 20
			l := openLog(t, dir, o)
			var acked [][]byte
			for i := 0; i < 5; i++ {
				b := makeBatch(t, 2, 10, "ok", 0)
				if _, err := l.Append(b); err != nil {
					t.Fatal(err)
				}
				acked = append(acked, b)
			}
			cfs.Inject(vfs.Fault{Kind: vfs.OpSync, Times: 1, DropUnsynced: true})
			_, err := l.Append(makeBatch(t, 1, 10, "lost", 0))
			if !errors.Is(err, ErrFailed) || !errors.Is(err, syscall.EIO) {
				t.Fatalf("append over a failed fsync: %v", err)
			}
			if _, err := l.Append(makeBatch(t, 1, 10, "after", 0)); !errors.Is(err, ErrFailed) {
				t.Fatalf("append after a failed fsync: %v", err)
			}
			l.Close()
			cfs.Crash(vfs.CrashOptions{})
			cfs.Revive()
			l = openLog(t, dir, o)
			defer l.Close()
			got := readAll(t, l)
			equalBatches(t, got, acked)
			if offs, err := l.Append(makeBatch(t, 1, 1, "new", 0)); err != nil || offs[0] != 10 {
				t.Fatalf("append after reopen: %v %v", offs, err)
			}
		})
	}
}

// A full disk refuses the append with ENOSPC, leaves nothing of it behind, and the log goes on
// once space is back. (Without preallocation: TestDiskFullPreallocated has it.)
func TestDiskFull(t *testing.T) {
	dir := t.TempDir()
	cfs := vfs.NewCrashFS(vfs.NoSync(vfs.OS))
	o := crashOptions(dir, cfs, SyncGroup)
	o.SegmentBytes = 1 << 20
	o.PreallocateBytes = -1
	l := openLog(t, dir, o)
	defer l.Close()
	first := makeBatch(t, 3, 100, "a", 0)
	if _, err := l.Append(first); err != nil {
		t.Fatal(err)
	}
	size := l.Size()
	cfs.SetSpaceBudget(100)
	if _, err := l.Append(makeBatch(t, 3, 100, "b", 0)); !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("append on a full disk: %v", err)
	}
	if l.Size() != size || l.EndOffset() != 3 {
		t.Fatalf("a failed append changed the log: size %d->%d", size, l.Size())
	}
	cfs.SetSpaceBudget(-1)
	second := makeBatch(t, 2, 100, "c", 0)
	if offs, err := l.Append(second); err != nil || offs[0] != 3 {
		t.Fatalf("append after space is back: %v %v", offs, err)
	}
	equalBatches(t, readAll(t, l), [][]byte{first, second})
	l.Close()
	l = openLog(t, dir, o)
	equalBatches(t, readAll(t, l), [][]byte{first, second})
}
