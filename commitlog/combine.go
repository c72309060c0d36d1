package commitlog

import (
	"runtime"
	"sync"
)

// Write combining. Concurrent Append calls do not each take the writer lock and write their
// own frames: they join a queue, and one of them (the combiner) writes every queued call's
// batches with one vectored write, assigns their offsets, publishes them, and wakes the
// others. Each call still returns only once its batches are written and published (readers
// see them, a process crash keeps them), as before; what changes is the number of system
// calls and lock handoffs when calls overlap. Under group commit that is what bounds the
// cycle between two fsyncs: the appenders an fsync wakes append again before the next one
// starts, and with a fast fsync (~0.1 ms) their sixteen 1 KiB pwrites, one after another on
// the writer lock, took about half as long as the fsync itself (BenchmarkAppendConcurrent's
// gap-us, from an fsync's end to the next one's start: 53-58 us before, 41-44 us with this).
//
// Calls queue only if they run while a write is in progress, and a Go processor stays with its
// thread through a short system call: the appenders an fsync wakes are runnable together on
// one or two processors, but each ran and wrote alone while the others waited behind its
// pwrite. On a VM whose system calls are slow (session 9: 4-5 us for a 1 KiB append) sixteen
// of them landed 5-10 us apart, 145 us after the fsync for the last (gap-us 128-149; the
// landing times from a probe whose source is in docs/bench-probes-2026-11-26-s9.txt). So a
// call that finds the queue empty, while combined writes have carried more than 1.5 calls on
// average lately, yields its processor once (runtime.Gosched) before writing: the runnable
// appenders queue behind it, and one write carries them all (gap-us ~40, 15.7-16.0 appends
// per fsync of 16). A lone appender never yields (a yield cost it 1-4 us per append).
//
// A lone appender finds the queue empty and becomes the combiner of just its own call: one
// uncontended mutex more than before. A combiner writes its own call first and then at most
// maxCombineRounds batches of others' before it hands the role to the oldest queued call, so
// no caller writes for others without end.
type combiner struct {
	mu    sync.Mutex
	busy  bool         // a combiner is running
	queue []*appendReq // calls waiting to be written, in arrival order
	spare []*appendReq // the previous queue's array, reused
	// callsPerWrite is a moving average of how many calls a combined write carried, in
	// units of callsPerWriteOne.
	callsPerWrite int
}

// callsPerWriteOne is one call per write in combiner.callsPerWrite's fixed point.
const callsPerWriteOne = 16

// maxCombineRounds bounds how many rounds of others' calls one combiner writes.
const maxCombineRounds = 4

// appendReq is one Append or AppendAsync call in the combining queue. batches are validated.
type appendReq struct {
	batches [][]byte
	offsets []int64
	last    uint64 // Raft index of the call's last entry, once written
	err     error
	written bool
	// wake tells a queued call that it was written (false) or that it is now the combiner
	// (true). Nil for the call that found no combiner running.
	wake chan bool
}

var (
	wakePool = sync.Pool{New: func() any { return make(chan bool, 1) }}
	reqPool  = sync.Pool{New: func() any { return new(appendReq) }}
)

// combineAppend writes req's batches, by itself or by joining a running combiner, and returns
// once they are written (or failed: req.err).
func (l *Log) combineAppend(req *appendReq) {
	c := &l.comb
	c.mu.Lock()
	c.queue = append(c.queue, req)
	if c.busy {
		req.wake = wakePool.Get().(chan bool)
		c.mu.Unlock()
		lead := <-req.wake
		wakePool.Put(req.wake)
		req.wake = nil
		if !lead {
			return
		}
		c.mu.Lock()
	}
	c.busy = true
	if len(c.queue) == 1 && c.callsPerWrite > 3*callsPerWriteOne/2 {
		// Calls have been overlapping: let the goroutines runnable on this processor (appenders
		// an fsync just woke) queue first (see the type's doc).
		c.mu.Unlock()
		runtime.Gosched()
		c.mu.Lock()
	}
	for rounds := 0; len(c.queue) > 0; rounds++ {
		if rounds > maxCombineRounds && req.written {
			next := c.queue[0] // it stays queued: it writes itself first
			c.mu.Unlock()
			next.wake <- true
			return
		}
		batch := c.queue
		c.queue, c.spare = c.spare[:0], nil
		// A moving average (weight 1/8), so that the stragglers of a burst, written alone,
		// do not turn yielding off for the next burst.
		c.callsPerWrite += (len(batch)*callsPerWriteOne - c.callsPerWrite) / 8
		c.mu.Unlock()
		l.writeRequests(batch)
		for _, r := range batch {
			if r != req {
				r.wake <- false
			}
		}
		clear(batch)
		c.mu.Lock()
		c.spare = batch[:0]
	}
	c.busy = false
	c.mu.Unlock()
}

// writeRequests writes the batches of several calls as one append: contiguous offsets and
// Raft indexes in call order, one vectored write per segment. A failure fails every call of
// the group (nothing of them is published unless the log itself failed).
func (l *Log) writeRequests(reqs []*appendReq) {
	l.mu.Lock()
	entries := l.entries[:0]
	next := l.lastIdx.Load() + 1
	at := l.now()
	off := l.end.Load()
	for _, r := range reqs {
		for i, b := range r.batches {
			entries = append(entries, Entry{Index: next, Term: l.lastTermW, Type: EntryBatch, Data: b, AppendedAt: at})
			next++
			// Offsets are assigned contiguously from the end.
			r.offsets[i] = off
			off += int64(batchRecordSpan(b))
		}
		r.last = next - 1
	}
	_, err := l.appendLocked(entries)
	clear(entries) // drop references to the callers' buffers
	l.entries = entries[:0]
	l.mu.Unlock()
	for _, r := range reqs {
		r.err, r.written = err, true
		if err == nil {
			l.kickGatherer()
		}
	}
}
