package commitlog

import (
	"errors"
	"fmt"
)

// TruncateFrom removes every entry with a Raft index at or after index (a Raft log conflict).
// Truncating past the last index is a no-op; an index below FirstIndex is ErrIndexNotFound.
// The cut is durable when TruncateFrom returns.
func (l *Log) TruncateFrom(index uint64) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if err := l.writable(); err != nil {
		return err
	}
	if index > l.lastIdx.Load() {
		return nil
	}
	segs := l.segments()
	if index < segs[0].baseIndex() {
		return fmt.Errorf("%w: cannot truncate from %d, the log starts at %d", ErrIndexNotFound, index, segs[0].baseIndex())
	}
	seg := segmentForIndex(segs, index)
	pos, _, _, err := seg.indexStart(index, true)
	if err != nil {
		return err
	}
	return l.truncateLocked(seg, pos, func(h *frameHeader, _, _ int64) (bool, error) {
		return h.index >= index, nil
	})
}

// Truncate removes the batch whose base offset is offset and everything after it (entries of
// other types before that batch stay). offset must be a batch's base offset or the log end (a
// no-op); an offset inside a batch is ErrNotBatchBoundary. The cut is durable when Truncate
// returns.
func (l *Log) Truncate(offset int64) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if err := l.writable(); err != nil {
		return err
	}
	end := l.end.Load()
	segs := l.segments()
	if offset < segs[0].baseOffset() || offset > end {
		return &OffsetRangeError{Offset: offset, Start: segs[0].baseOffset(), End: end}
	}
	if offset == end {
		return nil
	}
	seg := segmentForOffset(segs, offset)
	pos, _, _, err := seg.indexStart(uint64(offset), false)
	if err != nil {
		return err
	}
	return l.truncateLocked(seg, pos, func(h *frameHeader, first, after int64) (bool, error) {
		if h.typ != EntryBatch || after <= offset {
			return false, nil
		}
		if first != offset {
			return false, fmt.Errorf("%w: offset %d is inside the batch [%d, %d)", ErrNotBatchBoundary, offset, first, after)
		}
		return true, nil
	})
}

func (l *Log) writable() error {
	if l.closed.Load() {
		return ErrClosed
	}
	return l.failure()
}

// truncateLocked cuts seg at the first frame at or after pos for which cut returns true, drops
// every later segment, and makes the cut durable.
func (l *Log) truncateLocked(seg *segment, pos int64, cut func(h *frameHeader, first, after int64) (bool, error)) error {
	// Below, indexes are cut and read as files: the active segment's in-memory tails go first.
	if err := l.active().flushIndexes(); err != nil {
		return err
	}
	// Find the cut. Frames are read without the segment lock: mu (held) excludes every writer.
	cutPos := int64(-1)
	sc := newFrameScanner(seg, pos, seg.size.Load(), false, 64<<10)
	defer sc.release()
	for sc.next() {
		var first, after int64
		if sc.h.typ == EntryBatch {
			data := sc.frame[sc.h.dataStart():]
			first, after = batchBaseOffset(data), batchNextOffset(data)
		}
		ok, err := cut(&sc.h, first, after)
		if err != nil {
			return err
		}
		if ok {
			cutPos = sc.at
			break
		}
	}
	if sc.err != nil {
		return sc.err
	}
	if sc.bad != "" {
		return corruptf(seg.path, sc.pos, "%s", sc.bad)
	}
	if cutPos < 0 {
		return fmt.Errorf("%w: no cut point found in %s", ErrCorrupt, seg.path)
	}

	// Keep group-commit syncs off the segments while they change.
	g := &l.gc
	g.takeToken()
	defer func() {
		g.mu.Lock()
		g.syncing = false
		if last := l.lastIdx.Load(); g.durable > last {
			g.durable = last
		}
		g.broadcast()
		g.mu.Unlock()
	}()

	// Unpublish the later segments, then remove them (each waits for its readers).
	segs := l.segments()
	keep := 0
	for i, s := range segs {
		if s == seg {
			keep = i + 1
		}
	}
	later := segs[keep:]
	l.publishSegments(append([]*segment(nil), segs[:keep]...))
	var errs []error
	for i := len(later) - 1; i >= 0; i-- {
		errs = append(errs, later[i].remove())
	}
	l.sealed = nil // the kept ones are synced below
	if err := errors.Join(errs...); err != nil {
		return l.fail(fmt.Errorf("truncate: remove segments: %w", err))
	}
	if err := l.cutSegment(seg, cutPos); err != nil {
		return l.fail(fmt.Errorf("truncate %s: %w", seg.path, err))
	}
	for _, s := range l.segments() {
		if err := s.syncAll(); err != nil {
			return l.fail(err)
		}
	}
	if err := l.opts.FS.SyncDir(l.dir); err != nil {
		return l.fail(err)
	}
	l.end.Store(seg.nextOff.Load())
	l.lastIdx.Store(seg.lastIdx.Load())
	l.lastTermW = seg.w.lastTerm
	l.lastTerm.Store(seg.w.lastTerm)
	// The cut segment is active again: a crash from here on must scan it.
	l.recPoint = -1
	return l.writeRecoveryPoint(seg.baseOffset())
}

// cutSegment truncates seg's files at pos and recomputes its writer state from what remains.
func (l *Log) cutSegment(seg *segment, pos int64) error {
	seg.mu.Lock()
	defer seg.mu.Unlock()
	// Index entries at or after pos go.
	n, err := seg.idx.searchLast(seg.idx.len(), uint64(pos)-1, func(b []byte) uint64 { return uint64(decodeOffsetEntry(b).pos) })
	if err != nil {
		return err
	}
	if err := seg.idx.truncate(n + 1); err != nil {
		return err
	}
	// Time entries name batches by offset; rebuilt from the remaining frames below.
	if err := seg.tidx.truncate(0); err != nil {
		return err
	}
	if err := seg.log.Truncate(pos); err != nil {
		return err
	}
	seg.size.Store(pos)
	seg.zeroed.Store(0)   // cut with the rest
	seg.reserved.Store(0) // given back by the cut, on ext4
	// Recompute the writer state (term, timestamps, time index) by walking the kept frames.
	prevTerm := uint64(0)
	segs := l.segments()
	for i, s := range segs {
		if s == seg && i > 0 {
			prevTerm = segs[i-1].w.lastTerm
		}
	}
	seg.w = segmentWriter{}
	seg.w.lastIdxPos = segmentHeaderSize
	seg.w.maxTs, seg.w.lastTimeTs, seg.w.lastTerm = noTimestamp, noTimestamp, prevTerm
	seg.maxTs.Store(noTimestamp)
	w := &seg.w
	w.beginAppend()
	sc := newFrameScanner(seg, segmentHeaderSize, pos, false, 1<<20)
	defer sc.release()
	next, last := seg.baseOffset(), seg.baseIndex()-1
	for sc.next() {
		first, after := sc.frameOffsets(next)
		maxTs := noTimestamp
		if sc.h.typ == EntryBatch {
			maxTs = batchMaxTimestamp(sc.frame[sc.h.dataStart():])
		}
		if maxTs > w.maxTs {
			w.maxTs, w.maxTsRelOff = maxTs, uint32(first-seg.baseOffset())
		}
		if n >= 0 {
			// Re-add time entries at the index points that remain.
			if w.maxTs > w.lastTimeTs && isIndexed(seg, sc.at, n+1) {
				w.addTimeEntry()
			}
		}
		w.lastTerm = sc.h.term
		next, last = after, sc.h.index
	}
	if sc.err != nil {
		return sc.err
	}
	if sc.bad != "" {
		return corruptf(seg.path, sc.pos, "%s", sc.bad)
	}
	lastPos := int64(segmentHeaderSize)
	if n >= 0 {
		var buf [offsetEntrySize]byte
		b, err := seg.idx.entry(n, buf[:])
		if err != nil {
			return err
		}
		lastPos = int64(decodeOffsetEntry(b).pos)
	}
	w.lastIdxPos = lastPos
	w.idxBuf = w.idxBuf[:0]
	w.pendingIdx = 0
	if err := seg.tidx.write(w.tidxBuf); err != nil {
		return err
	}
	w.publish(seg)
	seg.nextOff.Store(next)
	seg.lastIdx.Store(last)
	return nil
}

// isIndexed reports whether an offset index entry among the first n points at pos.
func isIndexed(seg *segment, pos int64, n int) bool {
	i, err := seg.idx.searchLast(n, uint64(pos), func(b []byte) uint64 { return uint64(decodeOffsetEntry(b).pos) })
	if err != nil || i < 0 {
		return false
	}
	var buf [offsetEntrySize]byte
	b, err := seg.idx.entry(i, buf[:])
	return err == nil && int64(decodeOffsetEntry(b).pos) == pos
}
