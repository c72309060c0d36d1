package broker

import (
	"context"
	"fmt"
	"sync"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/runnel-io/runnel/internal/recordbatch"
	runnelv1 "github.com/runnel-io/runnel/proto/runnel/v1"
)

// maxProduceWait bounds how long Produce waits for acknowledgement (produce.proto).
const maxProduceWait = 30 * time.Second

// produceParallelism bounds the partitions one Produce call appends to at once.
const produceParallelism = 16

type produceService struct {
	runnelv1.UnimplementedProduceServiceServer
	s *Services
}

// Produce appends the batch form (ProducePartition). On this single node, ACKS_ALL and
// ACKS_LEADER both return once the batches are durable (the commitlog's default sync policy);
// ACKS_NONE also appends before answering but reports base offsets -1 and, as documented,
// only validation failures. The decoded-records form is not implemented yet.
func (p *produceService) Produce(ctx context.Context, req *runnelv1.ProduceRequest) (*runnelv1.ProduceResponse, error) {
	if err := p.s.stopCtx.Err(); err != nil {
		return nil, callError(where{partition: -1, offset: -1}, ErrRegistryClosed)
	}
	switch {
	case len(req.GetPartitions()) > 0 && len(req.GetTopics()) > 0:
		return nil, invalidRequest("topics", "produce: use either partitions (batches) or topics (records), not both")
	case len(req.GetTopics()) > 0:
		return nil, unimplemented("produce: the decoded-records form (topics/ProduceRecords) is not implemented yet; send RecordBatch v2 bytes in partitions")
	case len(req.GetPartitions()) == 0:
		return nil, invalidRequest("partitions", "produce: empty request, no partitions")
	}
	acks := req.GetAcks()
	if acks < runnelv1.Acks_ACKS_ALL || acks > runnelv1.Acks_ACKS_NONE {
		return nil, invalidRequest("acks", "produce: unknown acks %d", acks)
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
	ctx, cancel := context.WithTimeout(ctx, maxProduceWait)
	defer cancel()

	out := &runnelv1.ProduceResponse{Partitions: make([]*runnelv1.ProducePartitionResult, len(req.GetPartitions()))}
	if len(req.GetPartitions()) == 1 {
		out.Partitions[0] = p.produceOne(ctx, acks, 0, req.GetPartitions()[0])
		return out, nil
	}
	// Partitions append concurrently (their fsyncs overlap), at most produceParallelism at once.
	var wg sync.WaitGroup
	sem := make(chan struct{}, produceParallelism)
	for i, e := range req.GetPartitions() {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			out.Partitions[i] = p.produceOne(ctx, acks, i, e)
		})
	}
	wg.Wait()
	return out, nil
}

func (p *produceService) produceOne(ctx context.Context, acks runnelv1.Acks, i int, e *runnelv1.ProducePartition) *runnelv1.ProducePartitionResult {
	res := &runnelv1.ProducePartitionResult{Topic: e.GetTopic(), Partition: e.GetPartition(), BaseOffset: -1}
	w := at(e.GetTopic(), e.GetPartition()).withField(fmt.Sprintf("partitions[%d].batches", i))
	fail := func(err error) *runnelv1.ProducePartitionResult {
		res.Error = apiErrorOf(w, err).proto()
		return res
	}
	if e.GetTopic() == "" {
		res.Error = invalidRequest(fmt.Sprintf("partitions[%d].topic", i), "produce: partitions[%d]: topic is required", i).proto()
		return res
	}
	part, err := p.s.reg.Partition(e.GetTopic(), e.GetPartition())
	if err != nil {
		return fail(err)
	}
	if len(e.GetBatches()) == 0 {
		res.Error = invalidRequest(w.field, "%sproduce: no record batch", w.prefix()).proto()
		return res
	}
	batches, err := splitBatches(e.GetBatches())
	if err != nil {
		return fail(fmt.Errorf("%w", err))
	}
	offsets, err := part.Append(ctx, batches)
	if err != nil {
		if !p.s.reg.Exists(e.GetTopic()) {
			err = fmt.Errorf("topic %q: %w (deleted during the produce)", e.GetTopic(), ErrUnknownTopic)
		}
		ae := apiErrorOf(w, err)
		if acks == runnelv1.Acks_ACKS_NONE && !isValidationCode(ae.code) {
			// Fire and forget: failures past validation are logged, reported to nobody.
			p.s.reg.log.Warn().Err(err).Str("topic", e.GetTopic()).Int32("partition", e.GetPartition()).Msg("acks=none produce failed")
			return res
		}
		res.Error = ae.proto()
		return res
	}
	if acks == runnelv1.Acks_ACKS_NONE {
		return res
	}
	res.BaseOffset = offsets[0]
	res.LogAppendTime = timestamppb.Now()
	return res
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
