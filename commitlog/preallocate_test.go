package commitlog

import (
	"errors"
	"math/rand/v2"
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/runnel-io/runnel/internal/vfs"
)

// fileSize returns the size of the segment's log file on disk.
func fileSize(t *testing.T, s *segment) int64 {
	t.Helper()
	fi, err := os.Stat(s.path)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Size()
}

// checkZeroTail checks that the log's files hold nothing but its segments and, in the active
// segment only, zeros past the end. clean says whether the log was just reopened after a clean
// close or a crash (no zeros anywhere yet).
func checkZeroTail(t *testing.T, l *Log, reopened bool) {
	t.Helper()
	segs := l.segments()
	for i, s := range segs {
		size, fsize := s.size.Load(), fileSize(t, s)
		if i < len(segs)-1 || reopened {
			if fsize != size {
				t.Fatalf("segment %d of %d (reopened %v): file of %d bytes, log %d", i+1, len(segs), reopened, fsize, size)
			}
			continue
		}
		if fsize < size {
			t.Fatalf("active segment: file of %d bytes, log %d", fsize, size)
		}
		b, err := os.ReadFile(s.path)
		if err != nil {
			t.Fatal(err)
		}
		for j, c := range b[size:] {
			if c != 0 {
				t.Fatalf("byte %d past the log's end is %#x, want 0", size+int64(j), c)
			}
		}
	}
}

// Under SyncGroup the active segment is written with zeros ahead of its end; sealing and Close
// cut them off, so a clean reopen trusts files that end with their last frame. SyncNone and a
// negative PreallocateBytes write none.
func TestPreallocateZerosAhead(t *testing.T) {
	for _, c := range []struct {
		name   string
		policy SyncPolicy
		bytes  int64
		want   bool
	}{
		{"group", SyncGroup, 8 << 10, true},
		{"always", SyncAlways, 8 << 10, true},
		{"none", SyncNone, 8 << 10, false},
		{"off", SyncGroup, -1, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			o := testOptions(dir)
			o.Sync, o.SegmentBytes, o.PreallocateBytes = c.policy, 64<<10, c.bytes
			l := openLog(t, dir, o)
			var want [][]byte
			for i := range 200 {
				b := makeBatch(t, 2, 400, "p", int64(i))
				if _, err := l.Append(b); err != nil {
					t.Fatal(err)
				}
				want = append(want, b)
				act := l.active()
				ahead := fileSize(t, act) - act.size.Load()
				// Extended by c.bytes once less than half of it is left.
				if c.want && (ahead < c.bytes/2 && fileSize(t, act) < o.SegmentBytes || ahead >= c.bytes*3/2) {
					t.Fatalf("append %d: %d bytes of zeros ahead, want %d to %d", i, ahead, c.bytes/2, c.bytes*3/2)
				}
				if !c.want && ahead != 0 {
					t.Fatalf("append %d: %d bytes ahead of the log's end, want none", i, ahead)
				}
				checkZeroTail(t, l, false)
			}
			if len(l.Segments()) < 3 {
				t.Fatalf("%d segments: the test wants rolls", len(l.Segments()))
			}
			if err := l.Close(); err != nil {
				t.Fatal(err)
			}
			l = openLog(t, dir, o)
			defer l.Close()
			checkZeroTail(t, l, true)
			equalBatches(t, readAll(t, l), want)
		})
	}
}

// A crash leaves the zeros written ahead (they were synced); recovery cuts them as the end of
// the log, every acknowledged batch is there, and appends go on from there. Random appends,
// suffix truncations, clean reopens and crashes against a model of the log.
func TestPreallocatedLogAgainstModel(t *testing.T) {
	for seed := uint64(1); seed <= 4; seed++ {
		rng := rand.New(rand.NewPCG(seed, 9))
		dir := t.TempDir()
		cfs := vfs.NewCrashFS(vfs.NoSync(vfs.OS))
		o := crashOptions(dir, cfs, SyncGroup)
		o.SegmentBytes = 32 << 10
		o.PreallocateBytes = int64(1+rng.IntN(8)) << 10
		l := openLog(t, dir, o)
		var want [][]byte
		var offs []int64
		for step := range 400 {
			switch r := rng.IntN(100); {
			case r < 80:
				b := makeBatch(t, 1+rng.IntN(4), 1+rng.IntN(600), "m", int64(step))
				got, err := l.Append(b)
				if err != nil {
					t.Fatalf("seed %d step %d: append: %v", seed, step, err)
				}
				want, offs = append(want, b), append(offs, got[0])
			case r < 88 && len(want) > 0:
				k := rng.IntN(len(want))
				if err := l.Truncate(offs[k]); err != nil {
					t.Fatalf("seed %d step %d: truncate at %d: %v", seed, step, offs[k], err)
				}
				want, offs = want[:k], offs[:k]
			case r < 94:
				if err := l.Close(); err != nil {
					t.Fatal(err)
				}
				l = openLog(t, dir, o)
				checkZeroTail(t, l, true)
			default:
				cfs.Crash(vfs.CrashOptions{})
				l.Close()
				cfs.Revive()
				l = openLog(t, dir, o)
				checkZeroTail(t, l, true)
			}
			checkZeroTail(t, l, false)
			equalBatches(t, readAll(t, l), want)
		}
		l.Close()
	}
}

// A preallocation that fails for space is cut back, the append that asked for it still
// succeeds, and the log goes on without preallocation until its next segment.
func TestDiskFullPreallocated(t *testing.T) {
	t.Run("preallocation fails", func(t *testing.T) {
		dir := t.TempDir()
		cfs := vfs.NewCrashFS(vfs.NoSync(vfs.OS))
		o := crashOptions(dir, cfs, SyncGroup)
		o.SegmentBytes, o.PreallocateBytes = 1<<20, 64<<10
		l := openLog(t, dir, o)
		cfs.SetSpaceBudget(2000) // the first batch, not the zeros
		first := makeBatch(t, 3, 100, "a", 0)
		if _, err := l.Append(first); err != nil {
			t.Fatalf("append whose preallocation fails: %v", err)
		}
		checkZeroTail(t, l, true) // cut back: no zeros
		// The budget is spent (a cut gives nothing back): the next append needs space.
		if _, err := l.Append(makeBatch(t, 3, 100, "b", 0)); !errors.Is(err, syscall.ENOSPC) {
			t.Fatalf("append on a full disk: %v", err)
		}
		cfs.SetSpaceBudget(-1)
		second := makeBatch(t, 2, 100, "c", 0)
		if offs, err := l.Append(second); err != nil || offs[0] != 3 {
			t.Fatalf("append after space is back: %v %v", offs, err)
		}
		checkZeroTail(t, l, true) // no preallocation until the next segment
		l.Close()
		l = openLog(t, dir, o)
		defer l.Close()
		equalBatches(t, readAll(t, l), [][]byte{first, second})
		if _, err := os.Stat(filepath.Join(dir, cleanMarkerName)); !errors.Is(err, os.ErrNotExist) {
			t.Fatalf("clean-shutdown marker left after reopen: %v", err)
		}
	})
}

// Preallocation follows what the fsyncs carry: it stops while they carry
// preallocMaxSyncBytes or more on average (the zeros would cost more disk bandwidth than the
// journal commit they save) and resumes when they carry little again.
func TestPreallocationFollowsSyncSize(t *testing.T) {
	dir := t.TempDir()
	o := testOptions(dir)
	o.Sync, o.SegmentBytes, o.PreallocateBytes = SyncGroup, 32<<20, 64<<10
	l := openLog(t, dir, o)
	defer l.Close()
	ahead := func() int64 {
		act := l.active()
		return fileSize(t, act) - act.size.Load()
	}
	big := makeBatch(t, 100, 1024, "big", 0) // ~100 KiB per append, so per fsync
	for range 40 {
		if _, err := l.Append(big); err != nil {
			t.Fatal(err)
		}
	}
	if got := ahead(); got != 0 {
		t.Fatalf("after 40 appends of 100 KiB: %d bytes of zeros ahead, want none (fsyncs average %d bytes)", got, l.syncBytes.Load())
	}
	small := makeBatch(t, 1, 100, "small", 0)
	for range 40 {
		if _, err := l.Append(small); err != nil {
			t.Fatal(err)
		}
	}
	if got := ahead(); got < o.PreallocateBytes/2 {
		t.Fatalf("after 40 small appends: %d bytes of zeros ahead, want at least %d (fsyncs average %d bytes)", got, o.PreallocateBytes/2, l.syncBytes.Load())
	}
	checkZeroTail(t, l, false)
}
