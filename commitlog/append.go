package commitlog

import (
	"fmt"
	"math"
	"time"
	"unsafe"

	"github.com/runnel-io/runnel/internal/recordbatch"
	"github.com/runnel-io/runnel/internal/vfs"
)

// Append validates the batches, assigns their base offsets (writing each into the first 8 bytes
// of the caller's batch: Append owns the slices until it returns), writes them as entries with
// the next Raft indexes and the log's last term, and returns their base offsets once they are as
// durable as the sync policy promises. If any batch is malformed, Append returns an error that
// wraps ErrInvalidBatch and names the batch, and nothing of the call reaches the disk.
func (l *Log) Append(batches ...[]byte) ([]int64, error) {
	offsets, last, err := l.appendBatches(batches)
	if err != nil || len(offsets) == 0 {
		return offsets, err
	}
	return offsets, l.waitPolicy(last)
}

// AppendAsync is Append split in two, for pipelining: it writes the batches (in the order of
// AppendAsync calls, like Append) and returns their base offsets at once, with a wait function
// that returns once they are as durable as the sync policy promises. Nothing may be reported
// to a producer as durable before wait returns nil. The caller's slices are free once
// AppendAsync returns; wait may be called from any goroutine, more than once.
func (l *Log) AppendAsync(batches ...[]byte) (offsets []int64, wait func() error, err error) {
	offsets, last, err := l.appendBatches(batches)
	if err != nil {
		return nil, nil, err
	}
	if len(offsets) == 0 {
		return offsets, func() error { return nil }, nil
	}
	return offsets, func() error { return l.waitPolicy(last) }, nil
}

// appendBatches validates and writes batches, returning their base offsets and the Raft index
// of the last entry written.
func (l *Log) appendBatches(batches [][]byte) ([]int64, uint64, error) {
	if len(batches) == 0 {
		return nil, 0, nil
	}
	for i, b := range batches {
		if _, err := recordbatch.Validate(b, l.opts.MaxBatchBytes); err != nil {
			return nil, 0, fmt.Errorf("%w: batch %d of %d: %w", ErrInvalidBatch, i, len(batches), err)
		}
	}
	offsets := make([]int64, len(batches))
	req := reqPool.Get().(*appendReq)
	// Copied: the request is queued where other goroutines read it, so the caller's
	// (variadic) slice would otherwise escape to the heap on every call.
	req.batches = append(req.batches[:0], unalias(batches)...)
	req.offsets = offsets
	l.combineAppend(req)
	last, err := req.last, req.err
	clear(req.batches) // drop references to the caller's buffers
	*req = appendReq{batches: req.batches[:0]}
	reqPool.Put(req)
	if err != nil {
		return nil, 0, err
	}
	return offsets, last, nil
}

// AppendEntries appends Raft entries. The first must have index LastIndex()+1 and the rest must
// follow contiguously, with terms that never decrease. EntryBatch entries are validated as
// Append's batches are, and their base offsets are assigned (written into Data, so no two
// entries of a call may share Data memory). It returns once the entries are as durable as the
// sync policy promises.
func (l *Log) AppendEntries(entries []Entry) error {
	for i := range entries {
		e := &entries[i]
		if len(e.Extensions) > maxExtensions {
			return fmt.Errorf("%w: entry %d: %d bytes of extensions, at most %d", ErrInvalidEntry, e.Index, len(e.Extensions), maxExtensions)
		}
		if len(e.Data) > l.opts.MaxBatchBytes {
			return fmt.Errorf("%w: entry %d: %d bytes of data, at most %d", ErrInvalidEntry, e.Index, len(e.Data), l.opts.MaxBatchBytes)
		}
		if e.Type == EntryBatch {
			if _, err := recordbatch.Validate(e.Data, l.opts.MaxBatchBytes); err != nil {
				return fmt.Errorf("%w: entry %d: %w", ErrInvalidBatch, e.Index, err)
			}
		}
	}
	if len(entries) == 0 {
		return nil
	}
	l.mu.Lock()
	want, term := l.lastIdx.Load()+1, l.lastTermW
	for i := range entries {
		e := &entries[i]
		if e.Index != want+uint64(i) {
			l.mu.Unlock()
			return fmt.Errorf("%w: entry %d of the call has index %d, want %d", ErrInvalidEntry, i, e.Index, want+uint64(i))
		}
		if e.Term < term {
			l.mu.Unlock()
			return fmt.Errorf("%w: entry %d has term %d below the previous term %d", ErrInvalidEntry, e.Index, e.Term, term)
		}
		term = e.Term
	}
	last, err := l.appendLocked(entries)
	l.mu.Unlock()
	l.kickGatherer()
	if err != nil {
		return err
	}
	return l.waitPolicy(last)
}

// unalias copies any batch that is the same memory as an earlier one in the call (a caller
// passing one slice twice): each gets its own base offset written into it, and a large batch is
// written from the caller's memory after all of them are assigned.
func unalias(batches [][]byte) [][]byte {
	copied := false
	for i := 1; i < len(batches); i++ {
		for j := 0; j < i; j++ {
			if unsafe.SliceData(batches[i]) == unsafe.SliceData(batches[j]) {
				if !copied {
					batches = append([][]byte(nil), batches...)
					copied = true
				}
				batches[i] = append([]byte(nil), batches[i]...)
				break
			}
		}
	}
	return batches
}

// appendLocked writes validated entries, rolling segments as needed, and publishes them. It
// returns the last index written. If the first write fails, the segment is cut back and the log
// stays usable; a failure after some entries were published fails the log.
func (l *Log) appendLocked(entries []Entry) (uint64, error) {
	if err := l.failure(); err != nil {
		return 0, err
	}
	if l.closed.Load() {
		return 0, ErrClosed
	}
	published := false
	for i := 0; i < len(entries); {
		seg := l.active()
		if l.shouldRoll(seg, frameSize(&entries[i])) {
			var err error
			if seg, err = l.rollLocked(); err != nil {
				return 0, l.fail(err)
			}
		}
		n, err := l.writeChunkLocked(seg, entries[i:])
		if err != nil {
			if published {
				return 0, l.fail(err)
			}
			return 0, err
		}
		published = true
		i += n
	}
	l.preallocateLocked()
	l.reserveLocked()
	return l.lastIdx.Load(), nil
}

// shouldRoll: a segment that holds at least one batch rolls when the next frame would take it
// past SegmentBytes, or once it is older than SegmentAge. (A segment without a batch never rolls,
// so no two segments share a base offset.)
func (l *Log) shouldRoll(seg *segment, next int) bool {
	if seg.nextOff.Load() == seg.baseOffset() {
		return false
	}
	if seg.size.Load()+int64(next) > l.opts.SegmentBytes {
		return true
	}
	return l.now().Sub(time.UnixMilli(seg.hdr.createdAt)) >= l.opts.SegmentAge
}

// writeChunkLocked writes as many entries as fit in seg with one write, then their index
// entries, and publishes them. It returns how many entries it wrote.
func (l *Log) writeChunkLocked(seg *segment, entries []Entry) (int, error) {
	start := seg.size.Load()
	pos := start
	nextOff := seg.nextOff.Load()
	hasBatch := nextOff > seg.baseOffset()
	// Small frames are copied into one buffer; a large batch is written from the caller's slice
	// (pwritev), sparing a copy of the bulk of the data. cuts marks where each goes.
	buf := l.wbuf[:0]
	cuts := l.cuts[:0]
	w := &seg.w
	w.beginAppend()
	n := 0
	for n < len(entries) {
		e := &entries[n]
		fs := int64(frameSize(e))
		if n > 0 && hasBatch && pos+fs > l.opts.SegmentBytes {
			break
		}
		first, after, maxTs := nextOff, nextOff, noTimestamp
		if e.Type == EntryBatch {
			recordbatch.SetBaseOffset(e.Data, nextOff)
			after = batchNextOffset(e.Data)
			maxTs = batchMaxTimestamp(e.Data)
			hasBatch = true
		}
		if len(e.Data) >= vectorWriteMin {
			buf = appendFrameHeader(buf, e)
			cuts = append(cuts, writeCut{at: len(buf), data: e.Data})
		} else {
			buf = appendFrame(buf, e)
		}
		w.track(seg, l.opts.IndexIntervalBytes, pos, e.Index, first, maxTs)
		w.lastTerm = e.Term
		pos += fs
		nextOff = after
		n++
	}
	l.wbuf, l.cuts = buf, cuts
	if err := l.writeFrames(seg, buf, cuts, start); err != nil {
		return 0, l.undoChunk(seg, start, fmt.Errorf("write %s at %d: %w", seg.path, start, err))
	}
	if err := w.writeIndexes(seg); err != nil {
		return 0, l.undoChunk(seg, start, fmt.Errorf("write index of %s: %w", seg.path, err))
	}
	if cap(l.wbuf) > 16<<20 {
		l.wbuf = nil // do not pin a huge buffer after one large append
	}
	last := entries[n-1].Index
	seg.size.Store(pos)
	w.publish(seg)
	seg.nextOff.Store(nextOff)
	seg.lastIdx.Store(last)
	l.lastTermW = w.lastTerm
	l.lastTerm.Store(w.lastTerm)
	l.end.Store(nextOff)
	l.lastIdx.Store(last)
	l.unsynced += pos - start
	return n, nil
}

// vectorWriteMin is the data size from which a frame's data is written from the caller's
// slice instead of being copied into the frame buffer.
const vectorWriteMin = 4096

// writeCut is a large frame's data, to be written after buf[:at].
type writeCut struct {
	at   int
	data []byte
}

// writeFrames writes buf with the large data slices spliced in at their cuts, in one call.
func (l *Log) writeFrames(seg *segment, buf []byte, cuts []writeCut, off int64) error {
	if len(cuts) == 0 {
		_, err := seg.log.WriteAt(buf, off)
		return err
	}
	iov := l.iov[:0]
	prev := 0
	for _, c := range cuts {
		if c.at > prev {
			iov = append(iov, buf[prev:c.at])
		}
		iov = append(iov, c.data)
		prev = c.at
	}
	if prev < len(buf) {
		iov = append(iov, buf[prev:])
	}
	_, err := vfs.WriteAtv(seg.log, iov, off)
	for i := range iov {
		iov[i] = nil // drop references to the caller's batches
	}
	l.iov = iov[:0]
	for i := range l.cuts {
		l.cuts[i].data = nil
	}
	return err
}

// undoChunk cuts a failed chunk's bytes back off the segment. If that fails too, the log fails.
func (l *Log) undoChunk(seg *segment, start int64, cause error) error {
	seg.w.abortAppend(seg)
	if err := seg.log.Truncate(start); err != nil {
		return l.fail(fmt.Errorf("%w; and cutting it back failed: %w", cause, err))
	}
	seg.zeroed.Store(0)   // the cut took the preallocated zeros too
	seg.reserved.Store(0) // and, on ext4, the reserved blocks
	if err := seg.idx.f.Truncate(int64(seg.idx.len() * offsetEntrySize)); err != nil {
		return l.fail(fmt.Errorf("%w; and cutting the index back failed: %w", cause, err))
	}
	if err := seg.tidx.f.Truncate(int64(seg.tidx.len() * timeEntrySize)); err != nil {
		return l.fail(fmt.Errorf("%w; and cutting the time index back failed: %w", cause, err))
	}
	return cause
}

// beginAppend starts collecting index entries for one chunk.
func (w *segmentWriter) beginAppend() {
	w.idxBuf, w.tidxBuf = w.idxBuf[:0], w.tidxBuf[:0]
	w.pendingIdx, w.pendingTidx = 0, 0
	w.saved = w.writerState
}

func (w *segmentWriter) abortAppend(seg *segment) {
	seg.idx.unstage()
	seg.tidx.unstage()
	w.idxBuf, w.tidxBuf = w.idxBuf[:0], w.tidxBuf[:0]
	w.pendingIdx, w.pendingTidx = 0, 0
	w.writerState = w.saved
}

// track notes a frame written at pos: it adds an offset index entry once IndexIntervalBytes were
// written since the previous one, and a time index entry there when the segment's largest
// timestamp grew. offset is the batch's base offset (or the next offset for other entries).
func (w *segmentWriter) track(seg *segment, interval int, pos int64, index uint64, offset int64, maxTs int64) {
	if maxTs > w.maxTs {
		w.maxTs = maxTs
		w.maxTsRelOff = uint32(offset - seg.baseOffset())
	}
	if pos-w.lastIdxPos < int64(interval) {
		return
	}
	if seg.idx.count()+w.pendingIdx >= seg.idx.capacity-1 {
		// Only a segment of nothing but non-batch entries (which never rolls) can get here: a
		// sparser index is still a correct one.
		return
	}
	w.idxBuf = appendOffsetEntry(w.idxBuf, offsetEntry{
		relIndex:  uint32(index - seg.baseIndex()),
		relOffset: uint32(offset - seg.baseOffset()),
		pos:       uint32(pos),
	})
	w.pendingIdx++
	w.lastIdxPos = pos
	if w.maxTs > w.lastTimeTs {
		w.addTimeEntry()
	}
}

func (w *segmentWriter) addTimeEntry() {
	w.tidxBuf = appendTimeEntry(w.tidxBuf, timeEntry{ts: w.maxTs, relOffset: w.maxTsRelOff})
	w.pendingTidx++
	w.lastTimeTs = w.maxTs
}

func (w *segmentWriter) writeIndexes(seg *segment) error {
	if err := seg.idx.write(w.idxBuf); err != nil {
		return err
	}
	return seg.tidx.write(w.tidxBuf)
}

// publish makes the chunk's index entries and timestamp visible (after the segment size).
func (w *segmentWriter) publish(seg *segment) {
	seg.idx.publish()
	seg.tidx.publish()
	seg.maxTs.Store(w.maxTs)
	w.idxBuf, w.tidxBuf = w.idxBuf[:0], w.tidxBuf[:0]
	w.pendingIdx, w.pendingTidx = 0, 0
}

// rollLocked seals the active segment and starts a new one at the log end. Under SyncGroup and
// SyncAlways the sealed segment is synced here (group-commit waiters rely on every sealed
// segment being durable); otherwise the background flusher syncs it.
func (l *Log) rollLocked() (*segment, error) {
	old := l.active()
	if err := l.sealLocked(old); err != nil {
		return nil, err
	}
	if err := old.releaseReserved(); err != nil {
		return nil, err
	}
	durablePolicy := l.opts.Sync == SyncGroup || l.opts.Sync == SyncAlways
	if durablePolicy {
		if err := old.trimZeros(); err != nil {
			return nil, err
		}
		if err := old.syncAll(); err != nil {
			return nil, fmt.Errorf("sync sealed segment %s: %w", old.path, err)
		}
	}
	seg, err := createSegment(&l.opts, l.dir, segmentHeader{
		baseIndex:  l.lastIdx.Load() + 1,
		baseOffset: l.end.Load(),
		createdAt:  l.nowMs(),
	})
	if err != nil {
		return nil, fmt.Errorf("create segment: %w", err)
	}
	seg.w.lastTerm = old.w.lastTerm
	segs := append(append([]*segment(nil), l.segments()...), seg)
	l.publishSegments(segs)
	if durablePolicy {
		if err := l.writeRecoveryPoint(seg.baseOffset()); err != nil {
			return nil, err
		}
	} else {
		l.sealed = append(l.sealed, old)
		l.kickFlusher()
	}
	l.logger.Debug().Int64("base_offset", seg.baseOffset()).Uint64("base_index", seg.baseIndex()).Msg("rolled segment")
	return seg, nil
}

// sealLocked adds the final time index entry, so a sealed segment's largest timestamp is in its
// time index, and writes both indexes' in-memory tails to their files.
func (l *Log) sealLocked(seg *segment) error {
	w := &seg.w
	if w.maxTs > w.lastTimeTs {
		w.beginAppend()
		w.addTimeEntry()
		if err := seg.tidx.write(w.tidxBuf); err != nil {
			w.abortAppend(seg)
			return fmt.Errorf("seal %s: %w", seg.path, err)
		}
		w.publish(seg)
	}
	if err := seg.flushIndexes(); err != nil {
		return fmt.Errorf("seal %s: %w", seg.path, err)
	}
	return nil
}

// waitPolicy waits as the sync policy says after an append that ended at index last.
func (l *Log) waitPolicy(last uint64) error {
	switch l.opts.Sync {
	case SyncGroup:
		return l.waitDurable(last)
	case SyncAlways:
		l.mu.Lock()
		defer l.mu.Unlock()
		if err := l.failure(); err != nil {
			return err
		}
		if l.DurableIndex() >= last {
			return nil
		}
		target := l.lastIdx.Load()
		l.noteSyncSize(l.active())
		if err := l.active().sync(); err != nil {
			return l.fail(err)
		}
		l.markDurable(target)
		return nil
	case SyncInterval:
		l.mu.Lock()
		big := l.unsynced >= l.opts.SyncEveryBytes
		l.mu.Unlock()
		if big {
			l.kickFlusher()
		}
	}
	return nil
}

func (l *Log) markDurable(index uint64) {
	l.gc.mu.Lock()
	if index > l.gc.durable {
		l.gc.durable = index
	}
	l.gc.broadcast()
	l.gc.mu.Unlock()
}

// waitDurable returns once every entry up to index is on stable storage, performing the fsync
// itself if no running one will cover it (group commit). One fsync runs at a time, unless it
// runs slow: an append that lands after a running fsync took its target, once that fsync has
// taken twice as long as fsyncs usually do, starts a second one instead of waiting for the
// first to end and then for its own. An fdatasync makes durable everything written before it
// started, so whichever ends first with the higher target covers the earlier entries too.
// On this disk a slow fsync does not hold up one started after it (BenchmarkRawFsyncPaced:
// overlapping fsyncs cut an open loop's p99), while overlapping every fsync would cut what
// each covers under concurrent appenders (4.4-4.8 appends per fsync of 16 instead of 11-12).
func (l *Log) waitDurable(index uint64) error {
	g := &l.gc
	g.mu.Lock()
	for g.durable < index {
		if g.err != nil {
			err := g.err
			g.mu.Unlock()
			return err
		}
		if g.syncing || (g.running > 0 && (g.covering >= index || g.running >= maxGroupSyncs ||
			time.Since(g.started) < 2*g.typical)) {
			changed := g.changed
			g.mu.Unlock()
			<-changed
			if g.durableSeen.Load() >= index {
				return nil
			}
			g.mu.Lock()
			continue
		}
		first := g.running == 0
		g.running++
		var target uint64
		if first {
			g.covering = math.MaxUint64
			g.mu.Unlock()
			l.gatherAppends()
			// Load the target before the segment: entries up to target are in this segment or
			// in a sealed one, and sealed segments were synced when they were sealed.
			target = l.lastIdx.Load()
			g.mu.Lock()
			g.covering = target
			g.started = time.Now()
		} else {
			target = l.lastIdx.Load()
			g.covering = max(g.covering, target)
			g.hedgeStarted = time.Now()
		}
		g.mu.Unlock()
		landed := l.landed.Load()
		seg := l.active()
		l.noteSyncSize(seg)
		began := time.Now()
		err := seg.sync()
		took := time.Since(began)
		l.groupSyncs.Add(1)
		if l.onGroupSync != nil {
			l.onGroupSync(took)
		}
		if err != nil {
			err = l.fail(fmt.Errorf("fsync %s: %w", seg.path, err))
		}
		g.mu.Lock()
		g.running--
		if g.typical == 0 {
			g.typical = took
		}
		g.typical += (took - g.typical) / 8
		if first && g.running > 0 {
			g.started = g.hedgeStarted // the second is now the oldest running
		}
		if err == nil && target > g.durable {
			if first {
				g.lastCovered, g.landedMark, g.lastSyncTook = landed-g.landedMark, landed, took
			}
			g.durable = target
		}
		g.broadcast()
	}
	g.mu.Unlock()
	return nil
}

// maxGroupSyncs bounds the group-commit fsyncs in flight at once (see waitDurable).
const maxGroupSyncs = 2

// gatherAppends lets appends that are on their way join the fsync about to start. Without it,
// appenders woken by one fsync append again while the next is already running, and concurrent
// appenders settle into two groups that take turns, each fsync covering half of them. So when
// the previous fsync covered several appends, the next waits until as many have landed since
// it started, sleeping (appends wake it as they land, so no processor is spun) as long as
// entries keep arriving within groupCommitStep of each other, and at most the previous
// fsync's duration: a bounded latency cost that only concurrency pays. A lone appender never
// waits, nor do appends that come too far apart for two to arrive within that time.
//
// It counts appends, not entries: a partition's Raft log has one appender (Raft's StoreLogs,
// several entries per call, then waiting for the fsync), and counting entries made every
// fsync after a multi-entry one wait for appends that could not come.
func (l *Log) gatherAppends() {
	g := &l.gc
	g.mu.Lock()
	covered, mark, took := g.lastCovered, g.landedMark, g.lastSyncTook
	g.mu.Unlock()
	if covered <= 1 {
		return
	}
	limit := took
	if limit > groupCommitMaxDelay {
		limit = groupCommitMaxDelay
	}
	if 2*time.Duration(l.arrivalGap.Load()) > limit {
		// Appends come too far apart for two to land within the wait: it would most likely
		// end with the next one, after the limit, since Go's timers do not wake an idle
		// process sooner than about a millisecond (a 20-300 us timer fires after about
		// 1.08 ms here: BenchmarkSleepLateness in cmd/runnel). At 5,000 paced appends/s
		// (200 us apart, fsync ~0.15 ms) such waits made each fsync cover 1.4-1.6 appends
		// instead of 1.0 and the median latency 0.27-0.31 ms instead of 0.18-0.20
		// (BenchmarkAppendPaced).
		return
	}
	l.gathering.Store(true)
	defer l.gathering.Store(false)
	start := time.Now()
	last := l.landed.Load()
	timer := time.NewTimer(groupCommitStep)
	defer timer.Stop()
	for last-mark < covered {
		wait := limit - time.Since(start)
		if wait <= 0 {
			return
		}
		timer.Reset(min(wait, groupCommitStep))
		select {
		case <-l.gatherKick:
		case <-timer.C:
			if l.landed.Load() == last {
				return // nothing arrived for a whole step
			}
		}
		last = l.landed.Load()
	}
}

// kickGatherer records that an append landed (for the arrival gap gatherAppends estimates)
// and wakes a gathering fsync leader.
func (l *Log) kickGatherer() {
	l.landed.Add(1)
	now := time.Now().UnixNano()
	if prev := l.lastArrival.Swap(now); prev != 0 {
		// A moving average of the gaps between appends, weight 1/8: a burst (appenders
		// woken by one fsync) and the pause after it average out. Concurrent appends may
		// lose a sample; it is an estimate.
		gap := now - prev
		avg := l.arrivalGap.Load()
		l.arrivalGap.Store(avg + (gap-avg)/8)
	}
	if l.gathering.Load() {
		select {
		case l.gatherKick <- struct{}{}:
		default:
		}
	}
}

// groupCommitMaxDelay bounds how long an fsync waits for appends to join it, and
// groupCommitStep how long it waits for the next one.
const (
	groupCommitMaxDelay = 500 * time.Microsecond
	groupCommitStep     = 100 * time.Microsecond
)

// syncSealed syncs the segments sealed under SyncInterval/SyncNone that the flusher has not yet
// synced, and advances the recovery point.
func (l *Log) syncSealed() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if err := l.failure(); err != nil {
		return err
	}
	if len(l.sealed) == 0 {
		return nil
	}
	for _, s := range l.sealed {
		if err := s.syncAll(); err != nil {
			return l.fail(fmt.Errorf("fsync %s: %w", s.path, err))
		}
	}
	l.sealed = nil
	return l.writeRecoveryPoint(l.active().baseOffset())
}

func (l *Log) kickFlusher() {
	select {
	case l.flushKick <- struct{}{}:
	default:
	}
}

// flushLoop is the background flusher of SyncInterval and SyncNone: it syncs sealed segments and,
// under SyncInterval, the active one every SyncEvery or when SyncEveryBytes are unsynced.
func (l *Log) flushLoop() {
	var tick <-chan time.Time
	if l.opts.Sync == SyncInterval {
		t := time.NewTicker(l.opts.SyncEvery)
		defer t.Stop()
		tick = t.C
	}
	for {
		select {
		case <-l.done:
			return
		case <-tick:
		case <-l.flushKick:
		}
		if err := l.syncSealed(); err != nil {
			continue // the log has failed; appends report it
		}
		if l.opts.Sync == SyncInterval {
			l.mu.Lock()
			pending := l.unsynced
			l.unsynced = 0
			l.mu.Unlock()
			if pending > 0 {
				if err := l.waitDurable(l.lastIdx.Load()); err != nil {
					continue
				}
			}
		}
	}
}
