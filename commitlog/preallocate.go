package commitlog

import (
	"fmt"
	"io"

	"github.com/runnel-io/runnel/internal/vfs"
)

// Preallocation. Under SyncGroup and SyncAlways every append waits for an fdatasync, and on ext4
// an fdatasync that follows an append past the end of the file also commits the journal: the
// file's new size and the blocks allocated for it. Overwriting blocks that are already
// allocated and written, in a file whose size does not change, needs only the data write and
// the disk's cache flush. On the session-9 disk (BenchmarkRawFsyncOverwrite, two runs, in
// docs/benchmarks.md) a write+fdatasync loop had a p50 of 0.27 and 0.46 ms appending 1 KiB and
// 0.17 and 0.28 ms overwriting a file written and synced beforehand; 16 KiB 0.30 and 0.50
// against 0.26 and 0.28; 100 KiB 0.59 and 0.59 against 0.38 and 0.36 (fallocate, whose
// unwritten extents are converted by a journal commit, helped only the 1 KiB writes).
//
// So the active segment is extended with zeros PreallocateBytes at a time, ahead of its end,
// once less than half of that is left: written by the append that finds too little left,
// after its own frames and under the writer lock (so no other append can be writing where they
// go), and made durable by the fsync that append then waits for. That append and its fsync are
// the slower for it; the following fsyncs cover overwrites only.
//
// The zeros are written to the disk too, once, before the data overwrites them: up to twice the
// bytes written. That pays where an fsync carries little data, and the journal commit is most
// of its cost, and costs disk bandwidth where fsyncs carry a lot (an RF=3 produce flood of 1 KiB
// records wrote 1.47-1.83 bytes per byte with preallocation, 1.02 without; session 9). So the log
// preallocates only while the group-commit fsyncs carry under preallocMaxSyncBytes on average
// (a moving average of the bytes each one covered, weight 1/8).
//
// Invariants: the zeros lie in [size, zeroed) of the active segment only. The file is cut back
// to its size when the segment is sealed (before its final sync) and at Close (before the
// clean-shutdown marker), so a trusted segment never ends in zeros. After a crash the active
// segment is scanned (it is never trusted) and its zero tail ends the scan like a torn tail:
// a frame header of zeros is invalid (a length of 0 is shorter than a header), and the file is
// cut there. Suffix truncation and a failed append cut the file, and with it the zeros.

// preallocateLocked extends the active segment with zeros when less than half of
// PreallocateBytes is left ahead of its end. The caller holds l.mu. A failure (a full disk) is
// not the log's: the zeros written are cut off again and preallocation stops until the next
// segment.
func (l *Log) preallocateLocked() {
	seg := l.active()
	if !l.needsZeros(seg) {
		return
	}
	size := seg.size.Load()
	from := max(seg.zeroed.Load(), size)
	to := min(from+l.opts.PreallocateBytes, l.opts.SegmentBytes)
	if to <= from {
		return
	}
	if err := writeZeros(seg.log, from, to); err != nil {
		l.noPrealloc.Store(seg)
		if terr := seg.log.Truncate(from); terr != nil {
			l.fail(fmt.Errorf("preallocate %s: %w; and cutting it back failed: %w", seg.path, err, terr))
			return
		}
		l.logger.Warn().Err(err).Str("segment", seg.path).Msg("preallocation failed; appending without it until the next segment")
		return
	}
	seg.zeroed.Store(to)
}

// needsZeros reports, without the writer lock, whether the active segment should be extended.
func (l *Log) needsZeros(seg *segment) bool {
	if !l.preallocates() || l.noPrealloc.Load() == seg || l.syncBytes.Load() >= preallocMaxSyncBytes {
		return false
	}
	ahead := seg.zeroed.Load() - seg.size.Load()
	return ahead < l.opts.PreallocateBytes/2 && seg.size.Load() < l.opts.SegmentBytes
}

func (l *Log) preallocates() bool {
	return l.opts.PreallocateBytes > 0 && (l.opts.Sync == SyncGroup || l.opts.Sync == SyncAlways)
}

// preallocMaxSyncBytes: preallocation stops while fsyncs carry this much on average. On the
// session-9 disk the journal commit preallocation saves was worth about as much as writing
// 100 KiB more (BenchmarkRawFsyncOverwrite: 0.1-0.2 ms; dd with O_DSYNC: ~1.3 us per KiB).
const preallocMaxSyncBytes = 64 << 10

// noteSyncSize records, as an fsync of seg starts, how many bytes it covers (those written
// since the previous one started), for the moving average preallocation follows.
func (l *Log) noteSyncSize(seg *segment) {
	size := seg.size.Load()
	prevSeg, prev := l.syncSeg.Swap(seg), l.syncAt.Swap(size)
	if prevSeg != seg || size < prev {
		return // a new segment, or a truncation: no sample
	}
	avg := l.syncBytes.Load()
	l.syncBytes.Store(avg + (size-prev-avg)/8)
}

// zeroChunk is written repeatedly to fill a preallocated range.
var zeroChunk = make([]byte, 256<<10)

// writeZeros fills [from, to) of f with zeros.
func writeZeros(f vfs.File, from, to int64) error {
	for off := from; off < to; {
		n := min(int64(len(zeroChunk)), to-off)
		if _, err := f.WriteAt(zeroChunk[:n], off); err != nil {
			return fmt.Errorf("write zeros to %s at %d: %w", f.Name(), off, err)
		}
		off += n
	}
	return nil
}

// trimZeros cuts the zeros written ahead of the segment's end off its file. The caller holds
// l.mu and syncs the file afterwards.
func (seg *segment) trimZeros() error {
	if seg.zeroed.Load() <= seg.size.Load() {
		seg.zeroed.Store(0)
		return nil
	}
	if err := seg.log.Truncate(seg.size.Load()); err != nil {
		return fmt.Errorf("cut preallocated zeros off %s: %w", seg.path, err)
	}
	seg.zeroed.Store(0)
	return nil
}

// isZeros reports whether the file holds only zero bytes in [from, to) (a preallocated tail
// left by a crash). It reads at most maxZeroCheck bytes; a longer range is not called zeros.
func isZeros(f io.ReaderAt, from, to int64) bool {
	if to-from > maxZeroCheck || to <= from {
		return false
	}
	buf := make([]byte, min(to-from, 1<<20))
	for off := from; off < to; {
		n := min(int64(len(buf)), to-off)
		if k, err := f.ReadAt(buf[:n], off); int64(k) != n && err != nil {
			return false
		}
		for _, b := range buf[:n] {
			if b != 0 {
				return false
			}
		}
		off += n
	}
	return true
}

// maxZeroCheck bounds the zero tail recovery tells apart from a torn one (only for its log
// message: both are cut).
const maxZeroCheck = 64 << 20
