package commitlog

import (
	"fmt"
	"time"

	"github.com/runnel-io/runnel/internal/recordbatch"
)

// ReadOptions bound a read.
type ReadOptions struct {
	// MaxBytes is the byte budget (default 1 MiB). Whole batches are returned; the batch holding
	// the requested offset comes first even when it alone exceeds the budget.
	MaxBytes int
	// MaxOffset, if positive, is an exclusive upper bound: no batch starting at or after it is
	// returned (a replicated partition passes its high watermark).
	MaxOffset int64
	// Buf, if it has capacity, receives the batches (the result aliases it).
	Buf []byte
}

// ReadResult holds whole record batches, concatenated as Kafka's fetch carries them.
type ReadResult struct {
	// Batches holds the batches; each is self-delimiting (its length field).
	Batches []byte
	// NextOffset is the offset to read from next: after the last returned batch, or the
	// requested offset when nothing was returned.
	NextOffset int64
}

const defaultReadBytes = 1 << 20

// testHookReadChoseSegment, set by tests only, runs between a read choosing its segment and
// locking it: the window in which retention or truncation may remove the segment.
var testHookReadChoseSegment func()

// Read returns whole batches starting with the one that holds offset. Reading at the log end
// returns nothing; before the log start or past the end it is an *OffsetRangeError
// (ErrOffsetOutOfRange). Reads run concurrently with appends and each other; they never take the
// writer lock. Unless SkipReadVerification is set, every returned batch's CRC32C is checked, and
// a mismatch is ErrCorrupt.
func (l *Log) Read(offset int64, opts ReadOptions) (ReadResult, error) {
	if l.closed.Load() {
		return ReadResult{}, ErrClosed
	}
	maxBytes := opts.MaxBytes
	if maxBytes <= 0 {
		maxBytes = defaultReadBytes
	}
	for {
		end := l.end.Load()
		segs := l.segments()
		start := segs[0].baseOffset()
		if offset < start || offset > end {
			return ReadResult{}, &OffsetRangeError{Offset: offset, Start: start, End: end}
		}
		limit := end
		if opts.MaxOffset > 0 && opts.MaxOffset < limit {
			limit = opts.MaxOffset
		}
		if offset >= limit {
			return ReadResult{Batches: opts.Buf[:0], NextOffset: offset}, nil
		}
		seg := segmentForOffset(segs, offset)
		if testHookReadChoseSegment != nil {
			testHookReadChoseSegment()
		}
		res, retry, err := l.readSegment(seg, offset, limit, maxBytes, opts.Buf)
		if retry {
			if l.closed.Load() {
				return ReadResult{}, ErrClosed
			}
			continue // the segment was removed under us (retention, truncation): look again
		}
		return res, err
	}
}

func (l *Log) readSegment(seg *segment, offset, limit int64, maxBytes int, out []byte) (ReadResult, bool, error) {
	seg.mu.RLock()
	defer seg.mu.RUnlock()
	if seg.closed {
		return ReadResult{}, true, nil
	}
	pos, _, _, err := seg.indexStart(uint64(offset), false)
	if err != nil {
		return ReadResult{}, false, err
	}
	size := seg.size.Load()
	sc := newFrameScanner(seg, pos, size, false, maxBytes+2*l.opts.IndexIntervalBytes)
	defer sc.release()
	out = out[:0]
	next := offset
	verify := !l.opts.SkipReadVerification
	for sc.next() {
		if sc.h.typ != EntryBatch {
			continue
		}
		data := sc.frame[sc.h.dataStart():]
		first, after := batchBaseOffset(data), batchNextOffset(data)
		if after <= offset {
			continue
		}
		if first >= limit || (len(out) > 0 && len(out)+len(data) > maxBytes) {
			break
		}
		if verify {
			if err := checkBatchCRC(data); err != nil {
				return ReadResult{}, false, corruptf(seg.path, sc.at, "batch at offset %d: %v", first, err)
			}
		}
		out = append(out, data...)
		next = after
		if len(out) >= maxBytes {
			break
		}
	}
	if sc.err != nil {
		return ReadResult{}, false, fmt.Errorf("commitlog: read %s: %w", seg.path, sc.err)
	}
	if sc.bad != "" {
		return ReadResult{}, false, corruptf(seg.path, sc.pos, "%s", sc.bad)
	}
	return ReadResult{Batches: out, NextOffset: next}, false, nil
}

// Entry returns the entry with a Raft index (its Data and Extensions are copies). An index
// outside [FirstIndex, LastIndex] is ErrIndexNotFound.
func (l *Log) Entry(index uint64) (Entry, error) {
	if l.closed.Load() {
		return Entry{}, ErrClosed
	}
	for {
		segs := l.segments()
		if index < segs[0].baseIndex() || index > l.lastIdx.Load() {
			return Entry{}, fmt.Errorf("%w: %d not in [%d, %d]", ErrIndexNotFound, index, segs[0].baseIndex(), l.lastIdx.Load())
		}
		seg := segmentForIndex(segs, index)
		e, retry, err := l.entryFrom(seg, index)
		if retry {
			if l.closed.Load() {
				return Entry{}, ErrClosed
			}
			continue
		}
		return e, err
	}
}

func (l *Log) entryFrom(seg *segment, index uint64) (Entry, bool, error) {
	seg.mu.RLock()
	defer seg.mu.RUnlock()
	if seg.closed {
		return Entry{}, true, nil
	}
	pos, _, _, err := seg.indexStart(index, true)
	if err != nil {
		return Entry{}, false, err
	}
	sc := newFrameScanner(seg, pos, seg.size.Load(), false, 2*l.opts.IndexIntervalBytes+4096)
	defer sc.release()
	for sc.next() {
		if sc.h.index < index {
			continue
		}
		if sc.h.index > index {
			break
		}
		h := &sc.h
		e := Entry{Index: h.index, Term: h.term, Type: h.typ}
		if h.appendedAt != 0 {
			e.AppendedAt = time.Unix(0, h.appendedAt)
		}
		if h.extLen > 0 {
			e.Extensions = append([]byte(nil), sc.frame[frameHeaderSize:h.dataStart()]...)
		}
		e.Data = append([]byte(nil), sc.frame[h.dataStart():]...)
		return e, false, nil
	}
	if sc.err != nil {
		return Entry{}, false, sc.err
	}
	if sc.bad != "" {
		return Entry{}, false, corruptf(seg.path, sc.pos, "%s", sc.bad)
	}
	return Entry{}, false, fmt.Errorf("%w: %d (segment %s does not hold it)", ErrIndexNotFound, index, seg.path)
}

// OffsetForTime returns the first offset whose record timestamp (unix ms) is at or after ts. If
// no record is that recent, found is false and offset is the log end.
func (l *Log) OffsetForTime(ts int64) (offset int64, found bool, err error) {
	if l.closed.Load() {
		return 0, false, ErrClosed
	}
	for {
		end := l.end.Load()
		segs := l.segments()
		var seg *segment
		for _, s := range segs {
			if s.maxTs.Load() >= ts {
				seg = s
				break
			}
		}
		if seg == nil {
			return end, false, nil
		}
		off, ok, retry, err := l.offsetForTimeIn(seg, ts)
		if retry {
			if l.closed.Load() {
				return 0, false, ErrClosed
			}
			continue
		}
		if err != nil || ok {
			return off, ok, err
		}
		return end, false, nil
	}
}

func (l *Log) offsetForTimeIn(seg *segment, ts int64) (int64, bool, bool, error) {
	seg.mu.RLock()
	defer seg.mu.RUnlock()
	if seg.closed {
		return 0, false, true, nil
	}
	// The last time entry below ts: every batch up to the one it names has max timestamp < ts.
	startOff := seg.baseOffset()
	if ts > noTimestamp {
		target := uint64(ts-1) ^ (1 << 63)
		v := seg.tidx.view()
		i, err := v.searchLast(target, keyTime)
		if err != nil {
			return 0, false, false, err
		}
		if i >= 0 {
			var buf [timeEntrySize]byte
			b, err := v.entry(i, buf[:])
			if err != nil {
				return 0, false, false, err
			}
			startOff = seg.baseOffset() + int64(decodeTimeEntry(b).relOffset)
		}
	}
	pos, _, _, err := seg.indexStart(uint64(startOff), false)
	if err != nil {
		return 0, false, false, err
	}
	sc := newFrameScanner(seg, pos, seg.size.Load(), false, 64<<10)
	defer sc.release()
	for sc.next() {
		if sc.h.typ != EntryBatch {
			continue
		}
		data := sc.frame[sc.h.dataStart():]
		if batchMaxTimestamp(data) < ts {
			continue
		}
		found := int64(-1)
		err := recordbatch.ForEachRecord(data, func(r *recordbatch.Record) error {
			if r.Timestamp >= ts {
				found = r.Offset
				return errStopIteration
			}
			return nil
		})
		if err != nil && err != errStopIteration {
			return 0, false, false, corruptf(seg.path, sc.at, "decode batch: %v", err)
		}
		if found >= 0 {
			return found, true, false, nil
		}
		// A batch whose max timestamp claims ts but no record has it (LogAppendTime): its base.
		return batchBaseOffset(data), true, false, nil
	}
	if sc.err != nil {
		return 0, false, false, sc.err
	}
	if sc.bad != "" {
		return 0, false, false, corruptf(seg.path, sc.pos, "%s", sc.bad)
	}
	return 0, false, false, nil
}
