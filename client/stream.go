package client

import (
	"context"
	"errors"
	"fmt"
	"time"

	"google.golang.org/grpc/codes"

	runnelv1 "github.com/runnel-io/runnel/proto/runnel/v1"
)

// The producer's transport: one ProduceStream per broker (a link), carrying the requests of
// every partition that broker leads. run is the only goroutine that calls Send, so requests of
// a partition go out in the order they were taken from its queue, and the broker appends them
// in that order. Each stream has a recv goroutine that matches responses to in-flight batches
// by correlation id. When a stream breaks, every batch in flight on it is put back at the front
// of its partition's queue and sent again once the partition's leader is known afresh, after
// the retry backoff.

// unaryTimeout bounds a unary Produce call (the broker waits at most 30s for acks).
const unaryTimeout = 35 * time.Second

// link is the producer's stream to one broker.
type link struct {
	addr         string
	stream       runnelv1.ProduceService_ProduceStreamClient
	cancel       context.CancelFunc
	gen          uint64 // of the current stream; unique among the producer's streams
	up           bool   // stream (or unary mode) usable
	opening      bool
	unary        bool      // the broker has no ProduceStream: unary Produce, one request per partition at a time
	backoffUntil time.Time // before reopening a broken stream
}

func (p *producer) run() {
	defer p.wg.Done()
	for {
		select {
		case <-p.wake:
		case <-p.stop:
			return
		}
		p.sendReady()
	}
}

type outgoing struct {
	b   *batch
	req *runnelv1.ProduceStreamRequest
}

// sendReady sends what the partitions' leaders and in-flight limits allow.
func (p *producer) sendReady() {
	p.mu.Lock()
	if p.stopping {
		p.mu.Unlock()
		return
	}
	now := time.Now()
	out := map[*link][]outgoing{}
	var retryAt time.Time
	later := func(t time.Time) {
		if retryAt.IsZero() || t.Before(retryAt) {
			retryAt = t
		}
	}
	for _, ps := range p.parts {
		if p.o.linger <= 0 && len(ps.queue) == 0 && ps.inflight < p.eagerInFlight(ps) {
			p.sealLocked(ps)
		}
		if ps.draining {
			// A batch failed and is to be sent again: the batches sent after it come back
			// first, so that the partition goes out again in order.
			if ps.inflight > 0 {
				p.expireQueueLocked(ps, now)
				continue
			}
			ps.draining = false
		}
		for len(ps.queue) > 0 {
			b := ps.queue[0]
			if now.After(b.deadline) {
				p.popLocked(ps)
				p.settleLocked(b, expiredErr(b))
				continue
			}
			if now.Before(b.notBefore) {
				later(b.notBefore)
				break
			}
			addr, err := p.routeLocked(b)
			if err != nil {
				p.popLocked(ps)
				p.settleLocked(b, err)
				continue
			}
			if addr == "" { // a metadata lookup is under way; it wakes us
				p.expireQueueLocked(ps, now)
				break
			}
			l := p.linkLocked(addr)
			if !l.up {
				switch {
				case l.opening:
				case now.Before(l.backoffUntil):
					later(l.backoffUntil)
				default:
					l.opening = true
					p.wg.Add(1)
					go p.openStream(l)
				}
				p.expireQueueLocked(ps, now)
				break
			}
			ps.slots = p.limit(l)
			if ps.inflight >= ps.slots {
				break
			}
			p.popLocked(ps)
			p.nextCorr++
			b.corr, b.gen, b.addr = p.nextCorr, l.gen, addr
			p.inflight[b.corr] = b
			ps.inflight++
			out[l] = append(out[l], outgoing{b, &runnelv1.ProduceStreamRequest{
				CorrelationId: b.corr,
				Request: &runnelv1.ProduceRequest{
					Acks:       runnelv1.Acks(p.o.acks),
					Partitions: []*runnelv1.ProducePartition{{Topic: b.tp.topic, Partition: b.tp.partition, Batches: b.data}},
				},
			}})
		}
	}
	type send struct {
		l      *link
		st     runnelv1.ProduceService_ProduceStreamClient
		unary  bool
		gen    uint64
		cancel context.CancelFunc
		out    []outgoing
	}
	sends := make([]send, 0, len(out))
	for l, o := range out {
		sends = append(sends, send{l, l.stream, l.unary, l.gen, l.cancel, o})
	}
	p.mu.Unlock()
	if !retryAt.IsZero() {
		time.AfterFunc(time.Until(retryAt), p.notify)
	}
	for _, s := range sends {
		for _, o := range s.out {
			if s.unary {
				p.wg.Add(1)
				go p.sendUnary(s.l, s.gen, o)
				continue
			}
			if err := s.st.Send(o.req); err != nil {
				// Recv reports why; it re-queues everything in flight on this stream.
				s.cancel()
				break
			}
		}
	}
}

// popLocked takes the first batch off ps's queue.
func (p *producer) popLocked(ps *partState) {
	ps.queue[0] = nil
	ps.queue = ps.queue[1:]
}

// routeLocked returns the address of b's partition's leader, "" while it is being looked up,
// or the error that ends b: the metadata says its topic does not exist (b's own error, an
// UNKNOWN_TOPIC from the leader, if it has one), or its partition still does not exist after
// the retries a new topic gets.
func (p *producer) routeLocked(b *batch) (string, error) {
	r := p.c.router.peek(b.tp.topic, b.tp.partition)
	switch {
	case r.err != nil:
		p.c.meta.invalidate(b.tp.topic)
		if b.lastErr != nil && (hasReason(b.lastErr, runnelv1.ErrorReason_ERROR_REASON_UNKNOWN_TOPIC) || hasReason(b.lastErr, runnelv1.ErrorReason_ERROR_REASON_UNKNOWN_PARTITION)) {
			return "", b.lastErr
		}
		return "", r.err
	case r.missing:
		if b.unknownTries >= unknownRetries {
			p.c.meta.invalidate(b.tp.topic)
			if b.lastErr != nil {
				return "", b.lastErr
			}
			return "", &Error{Code: codes.NotFound, Reason: reasonName(runnelv1.ErrorReason_ERROR_REASON_UNKNOWN_PARTITION), Topic: b.tp.topic, Partition: b.tp.partition,
				Message: fmt.Sprintf("topic %q partition %d: unknown partition", b.tp.topic, b.tp.partition)}
		}
		b.unknownTries++
		p.c.router.invalidate(b.tp.topic)
		return "", nil
	}
	return r.addr, nil
}

// linkLocked returns the link to addr, creating it (down) if needed.
func (p *producer) linkLocked(addr string) *link {
	l := p.links[addr]
	if l == nil {
		l = &link{addr: addr}
		p.links[addr] = l
	}
	return l
}

func (p *producer) limit(l *link) int {
	if l.unary {
		return 1 // concurrent unary calls do not keep a partition's order
	}
	return p.o.maxInFlight
}

// expireQueueLocked fails ps's queued batches whose delivery timeout has passed.
func (p *producer) expireQueueLocked(ps *partState, now time.Time) {
	q := ps.queue[:0]
	for _, b := range ps.queue {
		if now.After(b.deadline) {
			p.settleLocked(b, expiredErr(b))
		} else {
			q = append(q, b)
		}
	}
	clear(ps.queue[len(q):])
	ps.queue = q
}

// openStream opens a new ProduceStream to l's broker (or enters unary mode) and starts its
// receiver.
func (p *producer) openStream(l *link) {
	defer p.wg.Done()
	defer p.notify()
	p.mu.Lock()
	unary := l.unary
	p.mu.Unlock()
	if unary {
		p.mu.Lock()
		p.nextGen++
		l.gen, l.up, l.opening = p.nextGen, true, false
		p.mu.Unlock()
		return
	}
	var st runnelv1.ProduceService_ProduceStreamClient
	ctx, cancel := context.WithCancel(context.Background())
	bc, err := p.c.conn(l.addr)
	if err == nil {
		go func() { // the stream's context ends with the producer, if not before
			select {
			case <-p.stop:
				cancel()
			case <-ctx.Done():
			}
		}()
		st, err = bc.produce.ProduceStream(ctx)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	l.opening = false
	if err != nil || p.stopping {
		cancel()
		if err != nil {
			err = fromRPC(err)
			p.o.logf("runnel: opening produce stream to %s: %v", l.addr, err)
			p.failedLinkLocked(l, err)
		}
		return
	}
	p.nextGen++
	l.gen, l.stream, l.cancel, l.up = p.nextGen, st, cancel, true
	p.wg.Add(1)
	go p.recv(l, l.gen, st)
}

// failedLinkLocked backs l off, and makes the batches queued for its broker wait for fresh
// metadata: if the broker is gone, its partitions have new leaders elsewhere.
func (p *producer) failedLinkLocked(l *link, err error) {
	l.backoffUntil = time.Now().Add(p.o.retryBackoff)
	time.AfterFunc(p.o.retryBackoff, p.notify)
	if unreachable(err) {
		p.c.router.invalidateAddr(l.addr)
	}
}

// recv reads a stream's responses until it ends.
func (p *producer) recv(l *link, gen uint64, st runnelv1.ProduceService_ProduceStreamClient) {
	defer p.wg.Done()
	for {
		resp, err := st.Recv()
		if err != nil {
			p.broken(l, gen, streamEndErr(l.addr, err))
			return
		}
		var perr error
		if resp.GetError() != nil {
			perr = fromPB(resp.GetError())
		}
		p.handle(gen, resp.GetCorrelationId(), resp.GetResponse(), perr)
	}
}

// streamEndErr is why a produce stream to addr ended, as its in-flight batches carry it into a
// retry or, past their delivery timeout, into the error their records get. Only the producer
// cancels a stream's context: as it stops (broken ignores those ends), or after a Send failed,
// which means the connection broke. Recv then reports the cancellation, which is not retriable;
// the broken connection is, and a delivery timeout that followed it must say so
// (TestDeliveryTimeout failed once in CI with "delivery timeout ...: Canceled").
func streamEndErr(addr string, err error) error {
	err = fromRPC(err)
	var e *Error
	if errors.Is(err, context.Canceled) || errors.As(err, &e) && e.Code == codes.Canceled {
		return &Error{Code: codes.Unavailable, Partition: -1, Message: "produce stream to " + addr + " ended after a failed send"}
	}
	return err
}

// handle applies the response (or whole-request error) to the in-flight batch corr.
func (p *producer) handle(gen, corr uint64, resp *runnelv1.ProduceResponse, err error) {
	p.mu.Lock()
	b := p.inflight[corr]
	if b == nil || b.gen != gen {
		p.mu.Unlock()
		return
	}
	delete(p.inflight, corr)
	base := int64(-1)
	if err == nil {
		var res *runnelv1.ProducePartitionResult
		for _, r := range resp.GetPartitions() {
			if r.GetTopic() == b.tp.topic && r.GetPartition() == b.tp.partition {
				res = r
			}
		}
		if res == nil {
			err = &Error{Code: codes.Internal, Topic: b.tp.topic, Partition: b.tp.partition, Message: "the broker's response has no result for the partition"}
		} else {
			err = fromPB(res.GetError())
			base = res.GetBaseOffset()
		}
	}
	p.completeLocked(b, base, err)
	p.mu.Unlock()
	p.notify()
}

// broken handles the end of l's stream gen: every batch in flight on it goes back to its queue.
func (p *producer) broken(l *link, gen uint64, err error) {
	p.mu.Lock()
	if gen != l.gen || p.stopping {
		p.mu.Unlock()
		return
	}
	l.up = false
	l.cancel()
	l.stream = nil
	if e, ok := err.(*Error); ok && e.Code == codes.Unimplemented {
		p.o.logf("runnel: broker %s has no ProduceStream: falling back to unary Produce, one request per partition at a time", l.addr)
		l.unary = true
	} else {
		p.o.logf("runnel: produce stream to %s broken: %v", l.addr, err)
		p.failedLinkLocked(l, err)
	}
	for corr, b := range p.inflight {
		if b.gen != gen {
			continue
		}
		delete(p.inflight, corr)
		if ps := p.parts[b.tp]; ps != nil {
			ps.inflight--
			ps.draining = true
		}
		p.requeueLocked(b, err, 0)
	}
	p.mu.Unlock()
	p.notify()
}

// sendUnary sends one request with a unary Produce (the fallback for brokers without
// ProduceStream).
func (p *producer) sendUnary(l *link, gen uint64, o outgoing) {
	defer p.wg.Done()
	ctx, cancel := context.WithTimeout(context.Background(), unaryTimeout)
	defer cancel()
	go func() {
		select {
		case <-p.stop:
			cancel()
		case <-ctx.Done():
		}
	}()
	bc, err := p.c.conn(l.addr)
	var resp *runnelv1.ProduceResponse
	if err == nil {
		resp, err = bc.produce.Produce(ctx, o.req.GetRequest())
		err = fromRPC(err)
	}
	if err != nil && unreachable(err) {
		p.mu.Lock()
		p.failedLinkLocked(l, err)
		p.mu.Unlock()
	}
	p.handle(gen, o.b.corr, resp, err)
}
