package broker

import (
	"context"
	"fmt"
	"time"

	"github.com/runnel-io/runnel/internal/recordbatch"
	runnelv1 "github.com/runnel-io/runnel/proto/runnel/v1"
)

// startRecords handles one entry of Produce's decoded-records form (ProduceRecords): it picks
// each record's partition (the entry's, else Kafka's default partitioner: murmur2 of the key,
// sticky for keyless records), builds one uncompressed batch per partition with the records in
// request order, and starts each partition's append. Every record's result shares its
// partition's fate.
func (p *produceService) startRecords(ctx context.Context, call *produceCall, i int, e *runnelv1.ProduceRecords) *runnelv1.ProduceRecordsResult {
	res := &runnelv1.ProduceRecordsResult{Topic: e.GetTopic(), Records: make([]*runnelv1.ProduceRecordResult, len(e.GetRecords()))}
	field := fmt.Sprintf("topics[%d]", i)
	failAll := func(part int32, err error) *runnelv1.ProduceRecordsResult {
		pe := apiErrorOf(at(e.GetTopic(), part).withField(field), err).proto()
		for j := range res.Records {
			res.Records[j] = &runnelv1.ProduceRecordResult{Partition: part, Offset: -1, Error: pe}
		}
		return res
	}
	if e.GetTopic() == "" {
		return failAll(-1, invalidRequest(field+".topic", "produce: topics[%d]: topic is required", i))
	}
	info, err := p.s.reg.Lookup(e.GetTopic())
	if err != nil {
		return failAll(-1, err)
	}
	n := int(info.Partitions)
	if e.Partition != nil && (e.GetPartition() < 0 || int(e.GetPartition()) >= n) {
		return failAll(e.GetPartition(), fmt.Errorf("topic %q partition %d: %w (the topic has %d)", e.GetTopic(), e.GetPartition(), ErrUnknownPartition, n))
	}

	// Convert and place every record first: a bad record refuses the whole entry.
	now := time.Now().UnixMilli()
	recs := make([]recordbatch.Record, len(e.GetRecords()))
	parts := make([]int32, len(recs))
	var order []int32 // partitions in order of first use
	byPart := make(map[int32][]int)
	for j, r := range e.GetRecords() {
		rf := fmt.Sprintf("%s.records[%d]", field, j)
		if err := fromProtoRecord(&recs[j], r, now); err != nil {
			return failAll(-1, invalidRecord(rf, "produce: %s: %v", rf, err))
		}
		switch {
		case e.Partition != nil:
			parts[j] = e.GetPartition()
		default:
			parts[j] = int32(p.sticky.Partition(e.GetTopic(), recs[j].Key, n))
		}
		if _, ok := byPart[parts[j]]; !ok {
			order = append(order, parts[j])
		}
		byPart[parts[j]] = append(byPart[parts[j]], j)
	}
	for _, part := range order {
		idx := byPart[part]
		b := recordbatch.NewBuilder(recordbatch.BuilderOptions{})
		for _, j := range idx {
			b.Add(recs[j])
		}
		batch, err := b.Build()
		w := at(e.GetTopic(), part).withField(field)
		report := func(base int64, pe *runnelv1.Error) {
			for k, j := range idx {
				rr := &runnelv1.ProduceRecordResult{Partition: part, Offset: -1, Error: pe}
				if pe == nil && base >= 0 && call.acks != runnelv1.Acks_ACKS_NONE {
					rr.Offset = base + int64(k)
				}
				res.Records[j] = rr
			}
		}
		if err != nil {
			report(-1, invalidRecord(field+".records", "%sproduce: %v", w.prefix(), err).proto())
			continue
		}
		if e.Partition == nil {
			// The batch for the sticky partition is complete: the next keyless records move on.
			p.sticky.OnNewBatch(e.GetTopic(), int(part))
		}
		p.startAppend(ctx, call, w, e.GetTopic(), part, [][]byte{batch}, report)
	}
	return res
}

// fromProtoRecord converts an API record for the batch builder; an unset timestamp is now.
func fromProtoRecord(dst *recordbatch.Record, r *runnelv1.Record, now int64) error {
	dst.Timestamp = now
	if ts := r.GetTimestamp(); ts != nil {
		if err := ts.CheckValid(); err != nil {
			return fmt.Errorf("timestamp: %v", err)
		}
		ms := ts.AsTime().UnixMilli()
		if ms < 0 {
			return fmt.Errorf("timestamp %s is before the Unix epoch", ts.AsTime().Format(time.RFC3339Nano))
		}
		dst.Timestamp = ms
	}
	switch k := r.GetKeyData().(type) {
	case *runnelv1.Record_Key:
		dst.Key = k.Key
		if dst.Key == nil {
			dst.Key = []byte{}
		}
	case *runnelv1.Record_KeyText:
		dst.Key = []byte(k.KeyText)
	}
	switch v := r.GetValueData().(type) {
	case *runnelv1.Record_Value:
		dst.Value = v.Value
		if dst.Value == nil {
			dst.Value = []byte{}
		}
	case *runnelv1.Record_ValueText:
		dst.Value = []byte(v.ValueText)
	}
	for _, h := range r.GetHeaders() {
		rh := recordbatch.RecordHeader{Key: h.GetKey()}
		switch hv := h.GetValueData().(type) {
		case *runnelv1.RecordHeader_Value:
			rh.Value = hv.Value
			if rh.Value == nil {
				rh.Value = []byte{}
			}
		case *runnelv1.RecordHeader_ValueText:
			rh.Value = []byte(hv.ValueText)
		}
		dst.Headers = append(dst.Headers, rh)
	}
	return nil
}
