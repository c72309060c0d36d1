package commitlog

import (
	"errors"
	"fmt"
	"os"
	"sync/atomic"
	"syscall"
	"testing"

	"github.com/runnel-io/runnel/internal/vfs"
)

// allocatedBytes is the disk space a file's blocks take (st_blocks), and its size.
func allocatedBytes(t *testing.T, path string) (alloc, size int64) {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		t.Skip("no st_blocks on this platform")
	}
	return st.Blocks * 512, fi.Size()
}

// blocksFor is the most a file of size bytes should take without reserved blocks: its 4 KiB
// blocks and one more, for an extent tree block (st_blocks counts it once a file has more than
// the four extents its inode holds, as a file written between reservations can).
func blocksFor(size int64) int64 { return (size+4095)/4096*4096 + 4096 }

// TestReservedBlocksGivenBack: under SyncNone the active segment holds blocks reserved ahead of
// its end while its size stays the log's; a sealed segment, and the active one after Close,
// hold none past their end. Under SyncGroup nothing is reserved.
func TestReservedBlocksGivenBack(t *testing.T) {
	const reserve = 256 << 10
	for _, c := range []struct {
		policy SyncPolicy
		want   bool
	}{{SyncNone, true}, {SyncInterval, true}, {SyncGroup, false}} {
		t.Run(c.policy.String(), func(t *testing.T) {
			dir := t.TempDir()
			o := testOptions(dir)
			o.FS = vfs.OS
			o.Sync, o.SegmentBytes, o.ReserveBytes, o.PreallocateBytes = c.policy, 1<<20, reserve, -1
			l := openLog(t, dir, o)
			b := makeBatch(t, 10, 1000, "r", 0)
			if _, err := l.Append(b); err != nil {
				t.Fatal(err)
			}
			act := l.active()
			alloc, size := allocatedBytes(t, act.path)
			if size != act.size.Load() {
				t.Fatalf("file size %d, log size %d: reserving must not change the size", size, act.size.Load())
			}
			if c.want && l.noReserve.Load() {
				t.Skipf("the filesystem of %s cannot fallocate: nothing to check", dir)
			}
			if got := alloc - size; c.want && got < reserve/2 || !c.want && got >= 64<<10 {
				t.Fatalf("%d bytes allocated past the end (reserved up to %d), want reserved %v", got, act.reserved.Load(), c.want)
			}
			first := act
			for l.active() == first {
				if _, err := l.Append(b); err != nil {
					t.Fatal(err)
				}
			}
			if alloc, size := allocatedBytes(t, first.path); alloc > blocksFor(size) {
				t.Fatalf("sealed segment: %d bytes allocated for %d", alloc, size)
			}
			act = l.active()
			if err := l.Close(); err != nil {
				t.Fatal(err)
			}
			if alloc, size := allocatedBytes(t, act.path); alloc > blocksFor(size) {
				t.Fatalf("active segment after Close: %d bytes allocated for %d", alloc, size)
			}
			l = openLog(t, dir, o)
			defer l.Close()
			if n := len(readAll(t, l)); n == 0 {
				t.Fatal("no batches after reopening")
			}
		})
	}
}

// TestReserveFailureIsNotTheLogs: a failed reservation fails no append and is not retried on
// that segment; the next segment reserves again. A filesystem that cannot reserve at all turns
// reservations off for the log.
func TestReserveFailureIsNotTheLogs(t *testing.T) {
	for _, c := range []struct {
		name     string
		err      error
		retryNew bool // whether the next segment reserves again
	}{
		{"disk full", syscall.ENOSPC, true},
		{"unsupported", fmt.Errorf("%w: %w", errors.ErrUnsupported, syscall.EOPNOTSUPP), false},
	} {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			cfs := vfs.NewCrashFS(vfs.NoSync(vfs.OS))
			o := crashOptions(dir, cfs, SyncNone)
			o.SegmentBytes, o.ReserveBytes = 64<<10, 16<<10
			var allocs atomic.Int64
			cfs.SetOnOp(func(op vfs.Op) error {
				if op.Kind == vfs.OpAllocate {
					allocs.Add(1)
				}
				return nil
			})
			l := openLog(t, dir, o)
			cfs.Inject(vfs.Fault{Kind: vfs.OpAllocate, Times: 1, Err: c.err})
			var want [][]byte
			appendOne := func(i int) {
				b := makeBatch(t, 2, 500, "f", int64(i))
				if _, err := l.Append(b); err != nil {
					t.Fatalf("append %d: %v", i, err)
				}
				want = append(want, b)
			}
			appendOne(0)
			if allocs.Load() != 1 {
				t.Fatalf("%d allocations after the first append, want 1 (the failed one)", allocs.Load())
			}
			first := l.active()
			for i := 1; l.active() == first; i++ {
				if got := allocs.Load(); got != 1 {
					t.Fatalf("%d allocations before append %d on the first segment, want only the failed one", got, i)
				}
				appendOne(i) // the last one rolls, and then reserves on the new segment or not
			}
			if got := allocs.Load(); c.retryNew != (got == 2) || !c.retryNew && got != 1 {
				t.Fatalf("%d allocations after the roll; want the new segment to reserve: %v", got, c.retryNew)
			}
			if err := l.Close(); err != nil {
				t.Fatal(err)
			}
			l = openLog(t, dir, o)
			defer l.Close()
			equalBatches(t, readAll(t, l), want)
		})
	}
}

// A disk without room for a reservation still takes an append that fits.
func TestReserveOnAFullDisk(t *testing.T) {
	dir := t.TempDir()
	cfs := vfs.NewCrashFS(vfs.NoSync(vfs.OS))
	o := crashOptions(dir, cfs, SyncNone)
	o.SegmentBytes, o.ReserveBytes = 1<<20, 256<<10
	l := openLog(t, dir, o)
	defer l.Close()
	cfs.SetSpaceBudget(8 << 10)
	b := makeBatch(t, 3, 500, "s", 0)
	if _, err := l.Append(b); err != nil {
		t.Fatalf("append that fits on a disk too full to reserve: %v", err)
	}
	if l.noReserveSeg.Load() != l.active() || l.active().reserved.Load() != 0 {
		t.Fatal("the failed reservation was not noted")
	}
	equalBatches(t, readAll(t, l), [][]byte{b})
}
