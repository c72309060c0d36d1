package client

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"time"

	"google.golang.org/grpc/codes"

	"github.com/runnel-io/runnel/internal/recordbatch"
	runnelv1 "github.com/runnel-io/runnel/proto/runnel/v1"
	"github.com/runnel-io/runnel/topic"
)

// Produce sends r asynchronously: it adds r to its partition's batch, which is sent when it
// reaches the batch size or the linger passes, and calls cb (if not nil) exactly once with r
// and nil once r is acknowledged (r.Offset and r.Partition are then set), or with the final
// error. Callbacks run one at a time on a goroutine of the client, in the order the outcomes
// arrive (a partition's in offset order); a slow callback delays the others, not the sends.
//
// Produce blocks while it looks up the topic's partitions (once per topic and
// WithMetadataMaxAge) and while the buffer is full (WithMaxBufferedBytes); if ctx ends first,
// or the topic does not exist, or the client is closed, cb is called at once, before Produce
// returns, with the error. The producer keeps r (and its Key, Value and Headers) until cb is
// called: do not modify it.
func (c *Client) Produce(ctx context.Context, r *Record, cb func(*Record, error)) {
	if cb == nil {
		cb = func(*Record, error) {}
	}
	p := c.producer()
	if p == nil {
		cb(r, ErrClosed)
		return
	}
	p.produce(ctx, r, cb)
}

// ProduceSync produces records and waits until every one is acknowledged or has failed. On
// success each record's Offset and Partition are set. The error joins the distinct errors of
// the records that failed (or is ctx's error if it ended first; records still buffered then
// go on being sent).
func (c *Client) ProduceSync(ctx context.Context, records ...*Record) error {
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		errs []error
		seen = map[string]bool{}
	)
	wg.Add(len(records))
	cb := func(_ *Record, err error) {
		if err != nil {
			mu.Lock()
			if !seen[err.Error()] {
				seen[err.Error()] = true
				errs = append(errs, err)
			}
			mu.Unlock()
		}
		wg.Done()
	}
	for _, r := range records {
		c.Produce(ctx, r, cb)
	}
	if p := c.producer(); p != nil {
		p.sealAll() // no need to wait for the linger
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-ctx.Done():
		return ctx.Err()
	}
	return errors.Join(errs...)
}

// Flush sends every buffered record without waiting for the linger and waits until each has
// been acknowledged or has failed and its callback has returned, or ctx ends.
func (c *Client) Flush(ctx context.Context) error {
	p := c.producer()
	if p == nil {
		return ErrClosed
	}
	return p.flush(ctx)
}

type tp struct {
	topic     string
	partition int32
}

// pending is a record awaiting its outcome.
type pending struct {
	r  *Record
	cb func(*Record, error)
}

// batch is a sealed batch: sent, or waiting to be (again).
type batch struct {
	tp        tp
	data      []byte
	recs      []pending
	size      int64     // bytes counted against the buffer
	seq       uint64    // order within the partition, for re-queueing
	deadline  time.Time // the delivery timeout of its first record
	notBefore time.Time // retry backoff
	lastErr   error
	corr      uint64 // correlation id while in flight
	gen       uint64 // the stream generation it was sent on
	addr      string // the broker it was last sent to
	// redirects counts the NOT_LEADER errors naming a leader: the first is retried at once.
	redirects int
	// unknownTries counts the UNKNOWN_TOPIC and UNKNOWN_PARTITION errors (and lookups without
	// the partition) retried because the metadata had the partition: a new topic's partitions
	// appear on their brokers a moment after CreateTopic returns.
	unknownTries int
}

// unknownRetries bounds the retries of a batch refused as UNKNOWN_TOPIC or UNKNOWN_PARTITION
// while the metadata has the partition (each after the retry backoff and a metadata lookup).
const unknownRetries = 10

// partState is one partition's producer state.
type partState struct {
	tp       tp
	maxBatch int
	b        *recordbatch.Builder
	open     []pending // the records in b
	openSize int64
	deadline time.Time // of open's first record
	lingerID uint64    // invalidates the linger timer of an earlier open batch
	queue    []*batch  // sealed, not in flight, in seq order
	inflight int
	// slots is the partition's in-flight limit on the broker it was last sent to (1 on a
	// broker without ProduceStream).
	slots int
	// draining: a batch failed and was re-queued; nothing more is sent until the batches in
	// flight come back, so that the partition is sent again in order.
	draining bool
	nextSeq  uint64
	// lastRecord is when the partition's last record was produced, and avgGap a moving
	// average (weight 1/8) of the time between its records (see eagerInFlight).
	lastRecord time.Time
	avgGap     time.Duration
	// settled is the seq of the next batch whose outcome may be delivered; held keeps the
	// outcomes that arrived before an earlier batch's (the broker may answer a partition's
	// pipelined requests out of order), so callbacks keep the partition's order.
	settled uint64
	held    map[uint64]cbBatch
}

// cbBatch is a batch with its outcome, held until its turn.
type cbBatch struct {
	b   *batch
	err error
}

type cbItem struct {
	p   pending
	err error
}

// producer is the Client's asynchronous producer. One goroutine (run) owns the send side of
// the ProduceStreams, one per broker; one per stream (recv) reads its responses; one
// (callbacks) calls the callbacks. Everything else is guarded by mu.
type producer struct {
	c    *Client
	o    *options
	part topic.Partitioner
	wake chan struct{}
	stop chan struct{}
	wg   sync.WaitGroup

	mu          sync.Mutex
	cbCond      *sync.Cond
	parts       map[tp]*partState
	buffered    int64
	spaceCh     chan struct{} // closed (and replaced) when buffer space is freed
	outstanding int           // records whose callback has not returned yet
	progressCh  chan struct{} // closed (and replaced) when outstanding drops
	closed      bool          // no new records
	stopping    bool          // the goroutines are to exit
	cbq         []cbItem

	// Transport, guarded by mu; only run sends.
	links    map[string]*link // by broker address
	nextGen  uint64
	inflight map[uint64]*batch
	nextCorr uint64
}

func newProducer(c *Client) *producer {
	p := &producer{
		c:          c,
		o:          &c.opts,
		part:       topic.NewStickyPartitioner(rand.IntN),
		wake:       make(chan struct{}, 1),
		stop:       make(chan struct{}),
		parts:      map[tp]*partState{},
		spaceCh:    make(chan struct{}),
		progressCh: make(chan struct{}),
		inflight:   map[uint64]*batch{},
		links:      map[string]*link{},
	}
	p.cbCond = sync.NewCond(&p.mu)
	c.router.onRefresh(p.notify)
	p.wg.Add(2)
	go p.run()
	go p.callbacks()
	return p
}

func (p *producer) notify() {
	select {
	case p.wake <- struct{}{}:
	default:
	}
}

func (p *producer) produce(ctx context.Context, r *Record, cb func(*Record, error)) {
	meta, err := p.c.meta.get(ctx, r.Topic)
	if err != nil {
		cb(r, err)
		return
	}
	part := r.Partition
	if r.ManualPartition {
		if part < 0 || int(part) >= meta.partitions {
			cb(r, &Error{Code: codes.NotFound, Reason: reasonName(runnelv1.ErrorReason_ERROR_REASON_UNKNOWN_PARTITION),
				Topic: r.Topic, Partition: part, Message: fmt.Sprintf("topic %q has %d partitions: no partition %d", r.Topic, meta.partitions, part)})
			return
		}
	} else {
		part = int32(p.part.Partition(r.Topic, r.Key, meta.partitions))
	}
	est := r.encodedSize()
	size := int64(est)

	p.mu.Lock()
	waited := false // for buffer space: the record's delay says nothing of the producer's rate
	for !p.closed && p.buffered > 0 && p.buffered+size > p.o.maxBufferedBytes {
		waited = true
		ch := p.spaceCh
		p.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			cb(r, fmt.Errorf("runnel: waiting for buffer space: %w", ctx.Err()))
			return
		}
		p.mu.Lock()
	}
	if p.closed {
		p.mu.Unlock()
		cb(r, ErrClosed)
		return
	}
	now := time.Now()
	if r.Timestamp.IsZero() {
		r.Timestamp = now
	}
	r.Partition = part
	k := tp{r.Topic, part}
	ps := p.parts[k]
	if ps == nil {
		ps = &partState{tp: k, b: recordbatch.NewBuilder(recordbatch.BuilderOptions{Compression: p.o.compression}), slots: p.o.maxInFlight}
		p.parts[k] = ps
	}
	ps.maxBatch = min(p.o.batchBytes, meta.maxBatch)
	sealed := false
	// Keep batches within max.message.bytes: a record that would overflow the open batch
	// starts a new one, so a record too large on its own fails alone (RECORD_TOO_LARGE).
	if len(ps.open) > 0 && ps.b.EstimatedSize()+est > ps.maxBatch {
		p.sealLocked(ps)
		sealed = true
	}
	var hdrs [4]recordbatch.RecordHeader
	ps.b.Add(r.toBatch(hdrs[:0]))
	gap := min(now.Sub(ps.lastRecord), 10*time.Millisecond)
	if waited {
		gap = 0
	}
	ps.lastRecord = now
	ps.avgGap += (gap - ps.avgGap) / 8
	if len(ps.open) == 0 {
		ps.deadline = now.Add(p.o.deliveryTimeout)
		if p.o.linger > 0 {
			ps.lingerID++
			id := ps.lingerID
			time.AfterFunc(p.o.linger, func() { p.lingerExpired(ps, id) })
		}
	}
	ps.open = append(ps.open, pending{r, cb})
	ps.openSize += size
	p.buffered += size
	p.outstanding++
	if ps.b.EstimatedSize() >= ps.maxBatch || (p.o.linger <= 0 && len(ps.queue) == 0 && ps.inflight < p.eagerInFlight(ps)) {
		p.sealLocked(ps)
		sealed = true
	}
	p.mu.Unlock()
	if sealed {
		p.notify()
	}
}

func (p *producer) lingerExpired(ps *partState, id uint64) {
	p.mu.Lock()
	fire := ps.lingerID == id && len(ps.open) > 0
	if fire {
		p.sealLocked(ps)
	}
	p.mu.Unlock()
	if fire {
		p.notify()
	}
}

// sealLocked turns ps's open records into a batch queued for sending.
func (p *producer) sealLocked(ps *partState) {
	if len(ps.open) == 0 {
		return
	}
	ps.lingerID++
	data, err := ps.b.Build()
	ps.b.Reset()
	p.part.OnNewBatch(ps.tp.topic, int(ps.tp.partition))
	b := &batch{tp: ps.tp, data: data, recs: ps.open, size: ps.openSize, seq: ps.nextSeq, deadline: ps.deadline}
	ps.nextSeq++
	ps.open, ps.openSize = nil, 0
	if err != nil {
		p.settleLocked(b, fmt.Errorf("runnel: building batch for %s/%d: %w", ps.tp.topic, ps.tp.partition, err))
		return
	}
	ps.queue = append(ps.queue, b)
}

// sealAll seals every open batch, so that it is sent without waiting for the linger.
func (p *producer) sealAll() {
	p.mu.Lock()
	for _, ps := range p.parts {
		p.sealLocked(ps)
	}
	p.mu.Unlock()
	p.notify()
}

// flush seals and waits until nothing is outstanding. It seals again after every completion,
// because records produced meanwhile (a Produce that was waiting for buffer space) would
// otherwise wait for their linger.
func (p *producer) flush(ctx context.Context) error {
	for {
		p.sealAll()
		p.mu.Lock()
		if p.outstanding == 0 {
			p.mu.Unlock()
			return nil
		}
		ch := p.progressCh
		p.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// eagerInFlight is how many requests a partition may have in flight for a batch that is not
// full to be sent at once (linger 0). Past it, records gather until a batch fills or a request
// completes: the remaining slots (up to WithMaxInFlight) carry full batches, so a fast
// producer of small records sends large batches, not many tiny ones, while a lone record is
// still sent at once.
//
// Unless records come slowly: while the partition's records arrive eagerGap apart or more
// (a moving average; time spent waiting for buffer space does not count), the open batch is
// sent at once, up to the whole limit. At such rates there is nothing to batch, and a record
// held behind two requests in flight (say, while the broker's fsync stalls) would reach the
// broker only after they came back, and then wait for a disk flush of its own; sent, it is
// written while the slow flush runs and made durable by the next one (or by the second one
// the broker's log starts beside a slow one). Measured on a disk with long fsync stalls:
// sending at once always took the p99 at 5,000 records/s (200 us apart) from 1.78-2.07 ms to
// 1.33-1.60 but doubled the median at 100,000 records/s, where batching is what counts
// (docs/benchmarks.md, session 8). The gap keeps the first without the second; taken from the
// last record alone instead of an average, any pause of a fast producer (a GC, a descheduled
// thread) split its batches, and a producer of 100-byte records lost 8-20% of its throughput.
func (p *producer) eagerInFlight(ps *partState) int {
	if ps.avgGap >= eagerGap {
		return ps.slots
	}
	return min(ps.slots, eagerSlots)
}

// eagerGap: see eagerInFlight.
const eagerGap = 100 * time.Microsecond

// eagerSlots: see eagerInFlight.
const eagerSlots = 2

// settleLocked gives b its final outcome once every earlier batch of its partition has had
// theirs, so that a partition's callbacks run in offset order.
func (p *producer) settleLocked(b *batch, err error) {
	ps := p.parts[b.tp]
	if ps == nil || b.seq < ps.settled {
		p.finishLocked(b, err)
		return
	}
	if b.seq != ps.settled {
		if ps.held == nil {
			ps.held = map[uint64]cbBatch{}
		}
		ps.held[b.seq] = cbBatch{b, err}
		return
	}
	p.finishLocked(b, err)
	ps.settled++
	for {
		h, ok := ps.held[ps.settled]
		if !ok {
			return
		}
		delete(ps.held, ps.settled)
		p.finishLocked(h.b, h.err)
		ps.settled++
	}
}

// finishLocked gives b's records their final outcome: frees their buffer space and queues
// their callbacks.
func (p *producer) finishLocked(b *batch, err error) {
	p.buffered -= b.size
	close(p.spaceCh)
	p.spaceCh = make(chan struct{})
	for _, pr := range b.recs {
		p.cbq = append(p.cbq, cbItem{pr, err})
	}
	p.cbCond.Signal()
}

// requeueLocked puts b back in its partition's queue, in sequence order, to be sent again.
func (p *producer) requeueLocked(b *batch, err error, backoff time.Duration) {
	ps := p.parts[b.tp]
	b.lastErr = err
	b.notBefore = time.Now().Add(backoff)
	i := len(ps.queue)
	for i > 0 && ps.queue[i-1].seq > b.seq {
		i--
	}
	ps.queue = append(ps.queue, nil)
	copy(ps.queue[i+1:], ps.queue[i:])
	ps.queue[i] = b
	if backoff > 0 {
		time.AfterFunc(backoff, p.notify)
	}
}

// expiredErr is the error of a batch whose delivery timeout passed.
func expiredErr(b *batch) error {
	if b.lastErr != nil {
		return fmt.Errorf("runnel: delivery timeout for %s/%d: %w", b.tp.topic, b.tp.partition, b.lastErr)
	}
	return &Error{Code: codes.DeadlineExceeded, Topic: b.tp.topic, Partition: b.tp.partition,
		Message: fmt.Sprintf("delivery timeout for %s/%d", b.tp.topic, b.tp.partition)}
}

// completeLocked handles the outcome of an in-flight batch: success, a retry (at the leader a
// NOT_LEADER named, or after the backoff, with fresh metadata where the error calls for it), or
// failure.
func (p *producer) completeLocked(b *batch, base int64, err error) {
	ps := p.parts[b.tp]
	if ps != nil {
		ps.inflight--
	}
	if err == nil {
		for i, pr := range b.recs {
			if base < 0 {
				pr.r.Offset = -1
			} else {
				pr.r.Offset = base + int64(i)
			}
		}
		p.settleLocked(b, nil)
		return
	}
	now := time.Now()
	var e *Error
	errors.As(err, &e)
	reason := ""
	if e != nil {
		reason = e.Reason
	}
	backoff := p.o.retryBackoff
	switch {
	case p.stopping:
	case reason == reasonName(runnelv1.ErrorReason_ERROR_REASON_NOT_LEADER) && e.Info.GetLeaderAddress() != "" && e.Info.GetLeaderAddress() != b.addr:
		// The broker named the leader: go there, at once the first time.
		p.c.router.setLeader(b.tp.topic, b.tp.partition, e.Info.GetLeaderId(), e.Info.GetLeaderAddress())
		if b.redirects == 0 {
			backoff = 0
		}
		b.redirects++
	case reason == reasonName(runnelv1.ErrorReason_ERROR_REASON_NOT_LEADER),
		reason == reasonName(runnelv1.ErrorReason_ERROR_REASON_LEADER_NOT_AVAILABLE),
		reason == reasonName(runnelv1.ErrorReason_ERROR_REASON_STORAGE_ERROR),
		reason == reasonName(runnelv1.ErrorReason_ERROR_REASON_SHUTTING_DOWN),
		unreachable(err):
		// The leader is elsewhere, or about to be: send where fresh metadata says.
		p.c.router.invalidate(b.tp.topic)
	case reason == reasonName(runnelv1.ErrorReason_ERROR_REASON_UNKNOWN_TOPIC),
		reason == reasonName(runnelv1.ErrorReason_ERROR_REASON_UNKNOWN_PARTITION):
		// Retried while the metadata has the partition (a topic just created): routeLocked
		// fails the batch if fresh metadata does not have it.
		if b.unknownTries >= unknownRetries || p.c.router.isLegacy() {
			p.c.meta.invalidate(b.tp.topic)
			p.settleLocked(b, err)
			return
		}
		b.unknownTries++
		p.c.router.invalidate(b.tp.topic)
		err = e // routeLocked fails the batch with it
	default:
		if !IsRetriable(err) {
			p.settleLocked(b, err)
			return
		}
	}
	if p.stopping || !now.Add(backoff).Before(b.deadline) {
		p.settleLocked(b, err)
		return
	}
	p.o.logf("runnel: retrying %s/%d: %v", b.tp.topic, b.tp.partition, err)
	p.requeueLocked(b, err, backoff)
	if ps != nil && ps.inflight > 0 {
		ps.draining = true
	}
}

// callbacks runs the callbacks, in order, outside mu.
func (p *producer) callbacks() {
	defer p.wg.Done()
	p.mu.Lock()
	for {
		for len(p.cbq) == 0 && !p.stopping {
			p.cbCond.Wait()
		}
		if len(p.cbq) == 0 {
			p.mu.Unlock()
			return
		}
		q := p.cbq
		p.cbq = nil
		p.mu.Unlock()
		for _, it := range q {
			it.p.cb(it.p.r, it.err)
		}
		p.mu.Lock()
		p.outstanding -= len(q)
		close(p.progressCh)
		p.progressCh = make(chan struct{})
	}
}

// close stops taking records, flushes what is buffered within the delivery timeout, fails what
// is left with ErrClosed and stops the goroutines.
func (p *producer) close() error {
	p.mu.Lock()
	p.closed = true
	close(p.spaceCh) // wake Produce calls waiting for space: they fail with ErrClosed
	p.spaceCh = make(chan struct{})
	p.mu.Unlock()

	ctx, cancel := context.WithTimeout(context.Background(), p.o.deliveryTimeout)
	err := p.flush(ctx)
	cancel()

	p.mu.Lock()
	p.stopping = true
	for _, ps := range p.parts {
		p.sealLocked(ps)
		for _, b := range ps.queue {
			p.settleLocked(b, ErrClosed)
		}
		ps.queue = nil
	}
	for corr, b := range p.inflight {
		delete(p.inflight, corr)
		p.settleLocked(b, ErrClosed)
	}
	for _, l := range p.links {
		if l.cancel != nil {
			l.cancel()
		}
	}
	p.cbCond.Broadcast()
	p.mu.Unlock()
	close(p.stop)
	p.wg.Wait()
	if err != nil {
		return fmt.Errorf("runnel: close: records not acknowledged: %w", err)
	}
	return nil
}
