package client

import (
	"context"
	"time"

	"google.golang.org/grpc/codes"

	runnelv1 "github.com/runnel-io/runnel/proto/runnel/v1"
)

// The producer's transport: one ProduceStream per client. run is the only goroutine that
// opens the stream and calls Send, so requests of a partition go out in the order they were
// taken from its queue, and the broker appends them in that order. recv matches responses to
// in-flight batches by correlation id. When the stream breaks, every batch in flight on it is
// put back at the front of its partition's queue and sent again on a new stream, after the
// retry backoff.

// unaryTimeout bounds a unary Produce call (the broker waits at most 30s for acks).
const unaryTimeout = 35 * time.Second

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

// sendReady sends what the partitions' in-flight limits allow.
func (p *producer) sendReady() {
	p.mu.Lock()
	if p.stopping {
		p.mu.Unlock()
		return
	}
	now := time.Now()
	if !p.up {
		if now.Before(p.backoffUntil) {
			p.expireLocked(now)
			p.mu.Unlock()
			time.AfterFunc(p.backoffUntil.Sub(now), p.notify)
			return
		}
		if !p.hasWorkLocked() {
			p.mu.Unlock()
			return
		}
		p.mu.Unlock()
		p.openStream()
		p.mu.Lock()
		if !p.up {
			p.expireLocked(time.Now())
			p.mu.Unlock()
			return
		}
	}
	var out []outgoing
	var retryAt time.Time
	limit := p.maxInFlight()
	for _, ps := range p.parts {
		if p.o.linger <= 0 && len(ps.queue) == 0 && ps.inflight < p.eagerInFlight() {
			p.sealLocked(ps)
		}
		for len(ps.queue) > 0 && ps.inflight < limit {
			b := ps.queue[0]
			if now.Before(b.notBefore) {
				if retryAt.IsZero() || b.notBefore.Before(retryAt) {
					retryAt = b.notBefore
				}
				break
			}
			ps.queue[0] = nil
			ps.queue = ps.queue[1:]
			if now.After(b.deadline) {
				p.settleLocked(b, expiredErr(b))
				continue
			}
			p.nextCorr++
			b.corr, b.gen = p.nextCorr, p.gen
			p.inflight[b.corr] = b
			ps.inflight++
			out = append(out, outgoing{b, &runnelv1.ProduceStreamRequest{
				CorrelationId: b.corr,
				Request: &runnelv1.ProduceRequest{
					Acks:       runnelv1.Acks(p.o.acks),
					Partitions: []*runnelv1.ProducePartition{{Topic: b.tp.topic, Partition: b.tp.partition, Batches: b.data}},
				},
			}})
		}
	}
	st, unary, gen, cancel := p.stream, p.unary, p.gen, p.streamCancel
	p.mu.Unlock()
	if !retryAt.IsZero() {
		time.AfterFunc(time.Until(retryAt), p.notify)
	}
	for _, o := range out {
		if unary {
			p.wg.Add(1)
			go p.sendUnary(gen, o)
			continue
		}
		if err := st.Send(o.req); err != nil {
			// Recv reports why; it re-queues everything in flight on this stream.
			cancel()
			return
		}
	}
}

func (p *producer) hasWorkLocked() bool {
	for _, ps := range p.parts {
		if len(ps.queue) > 0 {
			return true
		}
	}
	return false
}

// openStream opens a new ProduceStream (or enters unary mode) and starts its receiver.
func (p *producer) openStream() {
	p.mu.Lock()
	unary := p.unary
	p.mu.Unlock()
	if unary {
		p.mu.Lock()
		p.up = true
		p.mu.Unlock()
		return
	}
	ctx, cancel := context.WithCancel(context.Background())
	st, err := p.c.produce.ProduceStream(ctx)
	p.mu.Lock()
	defer p.mu.Unlock()
	if err != nil || p.stopping {
		cancel()
		if err != nil {
			p.o.logf("runnel: opening produce stream: %v", err)
		}
		p.backoffUntil = time.Now().Add(p.o.retryBackoff)
		time.AfterFunc(p.o.retryBackoff, p.notify)
		return
	}
	p.gen++
	p.stream, p.streamCancel, p.up = st, cancel, true
	p.wg.Add(1)
	go p.recv(p.gen, st)
}

// recv reads a stream's responses until it ends.
func (p *producer) recv(gen uint64, st runnelv1.ProduceService_ProduceStreamClient) {
	defer p.wg.Done()
	for {
		resp, err := st.Recv()
		if err != nil {
			p.broken(gen, fromRPC(err))
			return
		}
		var perr error
		if resp.GetError() != nil {
			perr = fromPB(resp.GetError())
		}
		p.handle(gen, resp.GetCorrelationId(), resp.GetResponse(), perr)
	}
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

// broken handles the end of stream gen: every batch in flight on it goes back to its queue.
func (p *producer) broken(gen uint64, err error) {
	p.mu.Lock()
	if gen != p.gen || p.stopping {
		p.mu.Unlock()
		return
	}
	p.up = false
	p.streamCancel()
	p.stream = nil
	backoff := p.o.retryBackoff
	if e, ok := err.(*Error); ok && e.Code == codes.Unimplemented {
		p.o.logf("runnel: the broker has no ProduceStream: falling back to unary Produce, one request per partition at a time")
		p.unary = true
		backoff = 0
	} else {
		p.o.logf("runnel: produce stream broken: %v", err)
	}
	p.backoffUntil = time.Now().Add(backoff)
	for corr, b := range p.inflight {
		if b.gen != gen {
			continue
		}
		delete(p.inflight, corr)
		if ps := p.parts[b.tp]; ps != nil {
			ps.inflight--
		}
		p.requeueLocked(b, err, 0)
	}
	p.mu.Unlock()
	if backoff > 0 {
		time.AfterFunc(backoff, p.notify)
	} else {
		p.notify()
	}
}

// sendUnary sends one request with a unary Produce (the fallback for brokers without
// ProduceStream).
func (p *producer) sendUnary(gen uint64, o outgoing) {
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
	resp, err := p.c.produce.Produce(ctx, o.req.GetRequest())
	p.handle(gen, o.b.corr, resp, fromRPC(err))
}
