package broker

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/runnel-io/runnel/internal/recordbatch"
	"github.com/runnel-io/runnel/partition"
	runnelv1 "github.com/runnel-io/runnel/proto/runnel/v1"
	"github.com/runnel-io/runnel/topic"
)

// maxProduceWait bounds how long Produce waits for acknowledgement (produce.proto).
const maxProduceWait = 30 * time.Second

// produceParallelism bounds the acknowledgements one Produce call awaits at once (their
// fsyncs overlap).
const produceParallelism = 16

// streamInFlight bounds the requests of one ProduceStream the broker works on at once; past
// it the broker stops reading the stream, and gRPC flow control holds the client back.
const streamInFlight = 256

type produceService struct {
	runnelv1.UnimplementedProduceServiceServer
	s      *Services
	sticky *topic.StickyPartitioner // keyless records of the decoded form
}

// Produce appends one request's batches or records. A call is handled in two steps: start
// checks the request and writes every entry's batches in request order (so a partition's
// appends keep the order of the calls that made them), then finish waits for each entry's
// acknowledgement. On this single node ACKS_ALL waits until the batches are durable (fsynced);
// ACKS_LEADER and ACKS_NONE answer once they are written, before the fsync, ACKS_NONE without
// offsets and reporting only failures of validation.
func (p *produceService) Produce(ctx context.Context, req *runnelv1.ProduceRequest) (*runnelv1.ProduceResponse, error) {
	ctx, cancel := context.WithTimeout(ctx, maxProduceWait)
	defer cancel()
	call, err := p.start(ctx, req)
	if err != nil {
		return nil, err
	}
	return call.finish(), nil
}

// ProduceStream serves pipelined produce: requests are started (checked and written) in the
// order they arrive, so a partition's batches land in stream order, and each is answered once
// its appends are acknowledged, by a goroutine of its own, so that a slow acknowledgement does
// not hold back the requests behind it. At most streamInFlight requests are under way.
func (p *produceService) ProduceStream(stream runnelv1.ProduceService_ProduceStreamServer) error {
	ctx := stream.Context()
	var (
		wg      sync.WaitGroup
		sendMu  sync.Mutex
		sendErr error
		slots   = make(chan struct{}, streamInFlight)
	)
	defer wg.Wait()
	send := func(resp *runnelv1.ProduceStreamResponse) {
		sendMu.Lock()
		defer sendMu.Unlock()
		if sendErr == nil {
			sendErr = stream.Send(resp)
		}
	}
	// Recv runs on its own goroutine so that a stopping broker ends an idle stream (a producer
	// with nothing in flight would otherwise hold up the graceful stop). Returning from the
	// handler ends the stream, which unblocks that Recv.
	type received struct {
		req *runnelv1.ProduceStreamRequest
		err error
	}
	recvd := make(chan received)
	go func() {
		for {
			req, err := stream.Recv()
			select {
			case recvd <- received{req, err}:
			case <-ctx.Done():
				return
			}
			if err != nil {
				return
			}
		}
	}()
	for {
		var r received
		select {
		case r = <-recvd:
		case <-p.s.stopCtx.Done():
			return callError(where{partition: -1, offset: -1}, ErrRegistryClosed)
		}
		req, err := r.req, r.err
		if errors.Is(err, io.EOF) {
			wg.Wait()
			sendMu.Lock()
			defer sendMu.Unlock()
			return sendErr
		}
		if err != nil {
			return err // the client went away or cancelled: nothing more can be answered
		}
		if err := p.s.stopCtx.Err(); err != nil {
			return callError(where{partition: -1, offset: -1}, ErrRegistryClosed)
		}
		select {
		case slots <- struct{}{}:
		case <-ctx.Done():
			return status.FromContextError(ctx.Err()).Err()
		}
		id := req.GetCorrelationId()
		if req.GetRequest() == nil {
			<-slots
			send(&runnelv1.ProduceStreamResponse{CorrelationId: id,
				Error: invalidRequest("request", "produce stream: correlation id %d: request is required", id).proto()})
			continue
		}
		wctx, cancel := context.WithTimeout(ctx, maxProduceWait)
		call, err := p.start(wctx, req.GetRequest())
		if err != nil {
			cancel()
			<-slots
			send(&runnelv1.ProduceStreamResponse{CorrelationId: id, Error: protoError(err)})
			continue
		}
		wg.Go(func() {
			defer func() { cancel(); <-slots }()
			send(&runnelv1.ProduceStreamResponse{CorrelationId: id, Response: call.finish()})
		})
	}
}

// protoError turns an error of a whole call into the API's Error message.
func protoError(err error) *runnelv1.Error {
	var ae *apiError
	if errors.As(err, &ae) {
		return ae.proto()
	}
	st := status.Convert(err)
	return &runnelv1.Error{Code: int32(st.Code()), Message: st.Message()}
}

// produceCall is one Produce request under way: its entries are written (or failed) and their
// acknowledgements are awaited by finish.
type produceCall struct {
	acks  runnelv1.Acks
	out   *runnelv1.ProduceResponse
	waits []pendingAck
}

// pendingAck is one written append awaiting acknowledgement: wait blocks until it is
// durable, then done records the outcome in the response.
type pendingAck struct {
	wait func() error
	done func(err error)
}

// start checks a request as a whole, then writes each entry in order. Errors of the whole
// call are returned; errors of an entry go into its result.
func (p *produceService) start(ctx context.Context, req *runnelv1.ProduceRequest) (*produceCall, error) {
	if err := p.s.stopCtx.Err(); err != nil {
		return nil, callError(where{partition: -1, offset: -1}, ErrRegistryClosed)
	}
	switch {
	case len(req.GetPartitions()) > 0 && len(req.GetTopics()) > 0:
		return nil, invalidRequest("topics", "produce: use either partitions (batches) or topics (records), not both")
	case len(req.GetPartitions()) == 0 && len(req.GetTopics()) == 0:
		return nil, invalidRequest("partitions", "produce: empty request, no partitions and no topics")
	}
	acks := req.GetAcks()
	if acks < runnelv1.Acks_ACKS_ALL || acks > runnelv1.Acks_ACKS_NONE {
		return nil, invalidRequest("acks", "produce: unknown acks %d", acks)
	}
	call := &produceCall{acks: acks, out: &runnelv1.ProduceResponse{}}
	if len(req.GetTopics()) > 0 {
		for i, e := range req.GetTopics() {
			if len(e.GetRecords()) == 0 {
				return nil, invalidRequest(fmt.Sprintf("topics[%d].records", i), "produce: topics[%d] (%q): no records", i, e.GetTopic())
			}
		}
		for i, e := range req.GetTopics() {
			call.out.Topics = append(call.out.Topics, p.startRecords(ctx, call, i, e))
		}
		return call, nil
	}
	type tp struct {
		topic string
		part  int32
	}
	seen := make(map[tp]int, len(req.GetPartitions()))
	for i, e := range req.GetPartitions() {
		k := tp{e.GetTopic(), e.GetPartition()}
		if j, dup := seen[k]; dup {
			return nil, invalidRequest(fmt.Sprintf("partitions[%d]", i),
				"produce: topic %q partition %d appears twice (partitions[%d] and partitions[%d])", k.topic, k.part, j, i)
		}
		seen[k] = i
	}
	call.out.Partitions = make([]*runnelv1.ProducePartitionResult, len(req.GetPartitions()))
	for i, e := range req.GetPartitions() {
		call.out.Partitions[i] = p.startBatches(ctx, call, i, e)
	}
	return call, nil
}

// startBatches writes one ProducePartition entry and returns its result, to be completed by
// finish.
func (p *produceService) startBatches(ctx context.Context, call *produceCall, i int, e *runnelv1.ProducePartition) *runnelv1.ProducePartitionResult {
	res := &runnelv1.ProducePartitionResult{Topic: e.GetTopic(), Partition: e.GetPartition(), BaseOffset: -1}
	w := at(e.GetTopic(), e.GetPartition()).withField(fmt.Sprintf("partitions[%d].batches", i))
	if e.GetTopic() == "" {
		res.Error = invalidRequest(fmt.Sprintf("partitions[%d].topic", i), "produce: partitions[%d]: topic is required", i).proto()
		return res
	}
	if len(e.GetBatches()) == 0 {
		res.Error = invalidRequest(w.field, "%sproduce: no record batch", w.prefix()).proto()
		return res
	}
	batches, err := splitBatches(e.GetBatches())
	if err != nil {
		res.Error = apiErrorOf(w, err).proto()
		return res
	}
	p.startAppend(ctx, call, w, e.GetTopic(), e.GetPartition(), batches, func(base int64, err *runnelv1.Error) {
		res.Error = err
		if err == nil && call.acks != runnelv1.Acks_ACKS_NONE {
			res.BaseOffset = base
			res.LogAppendTime = timestamppb.Now()
		}
	})
	return res
}

// startAppend starts one partition's append and registers its acknowledgement; report gets the
// first batch's base offset, or the entry's error (nil for a failure acks=none hides).
func (p *produceService) startAppend(ctx context.Context, call *produceCall, w where, topicName string, part int32, batches [][]byte, report func(base int64, err *runnelv1.Error)) {
	fail := func(err error) {
		if !p.s.reg.Exists(topicName) && !errors.Is(err, ErrUnknownTopic) && !errors.Is(err, topic.ErrInvalidName) {
			err = fmt.Errorf("topic %q: %w (deleted during the produce)", topicName, ErrUnknownTopic)
		}
		ae := apiErrorOf(w, err)
		if call.acks == runnelv1.Acks_ACKS_NONE && !isValidationCode(ae.code) {
			// Fire and forget: failures past validation are logged, reported to nobody.
			p.s.reg.log.Warn().Err(err).Str("topic", topicName).Int32("partition", part).Msg("acks=none produce failed")
			report(-1, nil)
			return
		}
		report(-1, ae.proto())
	}
	pt, err := p.s.reg.LeaderPartition(topicName, part)
	if err != nil {
		fail(err)
		return
	}
	records, size := countBatches(batches)
	pend, err := pt.AppendAsync(ctx, batches)
	if err != nil {
		fail(err)
		return
	}
	p.s.metrics.appended(topicName, records, size)
	early := pend.Offsets() // known before the acknowledgement on a single node
	if call.acks == runnelv1.Acks_ACKS_NONE || (call.acks == runnelv1.Acks_ACKS_LEADER && early != nil) {
		// ACKS_LEADER and ACKS_NONE answer once the batches are written, before the fsync
		// (produce.proto). The append still becomes durable, and visible to consumers, when
		// Wait returns: someone must wait, to raise the high watermark over it. (A replicated
		// partition knows offsets only at the commit: there ACKS_LEADER waits like ACKS_ALL.)
		go func() {
			if _, err := pend.Wait(); err != nil {
				p.s.reg.log.Warn().Err(err).Str("topic", topicName).Int32("partition", part).Str("acks", call.acks.String()).Msg("produce failed after it was answered")
			}
		}()
		base := int64(-1)
		if early != nil {
			base = early[0]
		}
		report(base, nil)
		return
	}
	var base int64
	call.waits = append(call.waits, pendingAck{
		wait: func() error {
			offs, err := waitPending(ctx, pt, pend)
			if err == nil {
				base = offs[0]
			}
			return err
		},
		done: func(err error) {
			if err != nil {
				fail(err)
				return
			}
			report(base, nil)
		},
	})
}

// waitPending waits for an append's acknowledgement. On a replicated partition the wait is
// for a Raft commit, which a leader that lost its quorum (or its disk) may hold for a long
// time: the call's end (the client gone, the server stopping) ends the wait, the append
// going on without a listener (the batches belong to the request message, which the
// goroutine keeps alive). A single node's wait is bounded by its fsync.
func waitPending(ctx context.Context, pt *partition.Partition, pend *partition.Pending) ([]int64, error) {
	if !pt.Replicated() {
		return pend.Wait()
	}
	type result struct {
		offs []int64
		err  error
	}
	ch := make(chan result, 1)
	go func() {
		offs, err := pend.Wait()
		ch <- result{offs, err}
	}()
	select {
	case r := <-ch:
		return r.offs, r.err
	case <-ctx.Done():
		return nil, fmt.Errorf("produce: %w (the batch may still be committed)", ctx.Err())
	}
}

// finish waits for the call's appends to be acknowledged and returns the response.
func (c *produceCall) finish() *runnelv1.ProduceResponse {
	if len(c.waits) == 1 {
		c.waits[0].done(c.waits[0].wait())
		return c.out
	}
	var wg sync.WaitGroup
	sem := make(chan struct{}, produceParallelism)
	for _, pa := range c.waits {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			pa.done(pa.wait())
		})
	}
	wg.Wait()
	return c.out
}

// isValidationCode reports codes that mean the request entry was refused before the append.
func isValidationCode(c codes.Code) bool {
	return c == codes.InvalidArgument || c == codes.NotFound || c == codes.ResourceExhausted
}

// splitBatches splits concatenated RecordBatch v2 bytes into batches (without validating
// them: the partition does). Trailing bytes that are not a whole batch are an error.
func splitBatches(b []byte) ([][]byte, error) {
	var out [][]byte
	for len(b) > 0 {
		batch, rest, err := recordbatch.Next(b, len(b))
		if err != nil {
			return nil, fmt.Errorf("batch %d: %w", len(out), err)
		}
		out = append(out, batch)
		b = rest
	}
	return out, nil
}
