package commitlog

import (
	"errors"
	"fmt"

	"github.com/runnel-io/runnel/internal/vfs"
)

// Reservation. Under SyncNone and SyncInterval an append costs about what its pwrite costs, and
// on ext4 a buffered write past the blocks a file has allocated is a delayed allocation: every
// 4 KiB block it dirties is reserved against the free space one by one (ext4_da_write_begin,
// ext4_da_reserve_space), and the blocks are allocated at writeback. Writing into blocks
// fallocate has already reserved (unwritten extents) skips that. On the session-10 machine a
// pwrite of one 100 x 1 KiB frame took 24.2-25.1 us into a plain file and 21.6-22.0 us into one
// reserved 4 MiB at a time ahead of its end (three runs of a probe whose source and output are in
// docs/bench-probes-2026-11-26-s10.txt; BenchmarkRawWrite's direct-100KiB and reserved-100KiB
// patterns measure the same in the tree): about a tenth of an unsynced append. Redpanda reserves its
// segments the same way (segment_fallocation_step, 32 MiB).
//
// So the active segment's blocks are reserved ReserveBytes at a time, with FALLOC_FL_KEEP_SIZE
// (the file's size, which readers and recovery go by, does not change), once less than half of
// that is left ahead of its end: by the append that finds too little left, after its frames,
// under the writer lock. The reserved blocks read as zeros and lie past the end of the file, so
// nothing reads them; they are given back when the segment is sealed and at Close, by
// truncating the file to its own size (ext4 frees the blocks past the end then;
// TestReservedBlocksGivenBack checks it). A crash can leave up to ReserveBytes reserved past the
// end of the active segment until it is sealed after more reservations, or deleted.
//
// Not under SyncGroup and SyncAlways: there preallocation writes zeros ahead instead
// (preallocate.go), because an fdatasync after a write into unwritten extents must also commit
// their conversion to the journal.
//
// A failure to reserve (a full disk) is not the log's: appends go on without reservations until
// the next segment. A filesystem without fallocate turns them off for the log.

// reserveLocked reserves the active segment's blocks ahead of its end when less than half of
// ReserveBytes is left. The caller holds l.mu.
func (l *Log) reserveLocked() {
	seg := l.active()
	if !l.needsReserve(seg) {
		return
	}
	a, ok := seg.log.(vfs.Allocator)
	if !ok {
		l.noReserve.Store(true)
		return
	}
	from := max(seg.reserved.Load(), seg.size.Load())
	to := min(from+l.opts.ReserveBytes, l.opts.SegmentBytes)
	if to <= from {
		return
	}
	if err := a.Allocate(from, to-from); err != nil {
		if errors.Is(err, errors.ErrUnsupported) {
			l.noReserve.Store(true)
			l.logger.Info().Err(err).Str("segment", seg.path).Msg("this filesystem cannot reserve blocks ahead; appending without")
			return
		}
		l.noReserveSeg.Store(seg)
		l.logger.Warn().Err(err).Str("segment", seg.path).Msg("reserving blocks ahead failed; appending without until the next segment")
		return
	}
	seg.reserved.Store(to)
}

// needsReserve reports whether the active segment should reserve more blocks ahead.
func (l *Log) needsReserve(seg *segment) bool {
	if !l.reserves() || l.noReserve.Load() || l.noReserveSeg.Load() == seg {
		return false
	}
	size := seg.size.Load()
	return seg.reserved.Load()-size < l.opts.ReserveBytes/2 && size < l.opts.SegmentBytes
}

func (l *Log) reserves() bool {
	return l.opts.ReserveBytes > 0 && (l.opts.Sync == SyncNone || l.opts.Sync == SyncInterval)
}

// releaseReserved gives back the blocks reserved past the segment's end. The caller holds l.mu.
func (seg *segment) releaseReserved() error {
	if seg.reserved.Load() <= seg.size.Load() {
		seg.reserved.Store(0)
		return nil
	}
	if err := seg.log.Truncate(seg.size.Load()); err != nil {
		return fmt.Errorf("give back the blocks reserved past the end of %s: %w", seg.path, err)
	}
	seg.reserved.Store(0)
	return nil
}
