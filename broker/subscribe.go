package broker

import (
	"context"

	"github.com/runnel-io/runnel/partition"
	runnelv1 "github.com/runnel-io/runnel/proto/runnel/v1"
)

// subscribeWait is how long one step of a Subscribe stream waits at the end of the log before
// looking again (to notice a cancelled stream or a stopping broker it needs no wake-up: those
// cancel the wait). It only bounds a single long poll; the stream itself waits indefinitely.
const subscribeWait = maxFetchWait

// Subscribe follows one partition from a start position (fetch.proto): committed records in
// order, then new ones as they are committed. Each step is a partition long poll, so a stream
// at the end of the log costs a parked goroutine, never a spinning one. Sending blocks when
// the client does not read (gRPC flow control), so a slow consumer is never read ahead of.
func (f *fetchService) Subscribe(req *runnelv1.SubscribeRequest, stream runnelv1.FetchService_SubscribeServer) error {
	w := at(req.GetTopic(), req.GetPartition())
	if err := f.s.stopCtx.Err(); err != nil {
		return callError(w, ErrRegistryClosed)
	}
	if err := checkRead("subscribe", w, req.GetTopic(), req.GetFormat(), req.GetMaxBytes(), req.GetMaxRecords()); err != nil {
		return err
	}
	part, err := f.s.reg.readPartition(req.GetTopic(), req.GetPartition(), req.GetAllowFollower())
	if err != nil {
		return callError(w, err)
	}
	start, err := resolveStart(part, req.GetStart())
	if err != nil {
		return callError(w, err)
	}

	ctx, cancel := context.WithCancel(stream.Context())
	defer cancel()
	defer context.AfterFunc(f.s.stopCtx, cancel)()
	format := req.GetFormat()
	left := req.GetMaxRecords() // 0: no limit
	next, first := start, true
	for {
		wait := subscribeWait
		if req.GetStopAtEnd() || first {
			wait = 0 // the first answer comes at once, even if empty
		}
		res, err := part.Fetch(ctx, next, partition.FetchOptions{MaxBytes: int(req.GetMaxBytes()), MaxWait: wait})
		if err != nil {
			return callError(w.withOffset(next), f.readError(stream.Context(), req.GetTopic(), "subscription", err))
		}
		if len(res.Batches) == 0 && !first {
			if req.GetStopAtEnd() {
				return nil
			}
			continue // the long poll ended empty: wait again
		}
		first = false
		resp := &runnelv1.SubscribeResponse{HighWatermark: res.HighWatermark, LogStartOffset: res.LogStartOffset, NextOffset: res.NextOffset}
		count := int64(0)
		if format == runnelv1.RecordFormat_RECORD_FORMAT_BATCHES {
			batches, nextOff := res.Batches, res.NextOffset
			if left > 0 && len(batches) > 0 {
				batches, nextOff = limitRecords(batches, next, left, nextOff)
			}
			count = nextOff - next
			resp.Batches, resp.NextOffset = batches, nextOff
		} else if len(res.Batches) > 0 {
			recs, nextOff, err := decodeRecords(res.Batches, next, left, format == runnelv1.RecordFormat_RECORD_FORMAT_TEXT, res.NextOffset)
			if err != nil {
				return callError(w.withOffset(next), err)
			}
			count = int64(len(recs))
			resp.Records, resp.NextOffset = recs, nextOff
		}
		if err := stream.Send(resp); err != nil {
			return err
		}
		f.s.metrics.fetched(req.GetTopic(), count, len(res.Batches))
		next = resp.NextOffset
		if left > 0 {
			if count >= left {
				return nil
			}
			left -= count
		}
		if req.GetStopAtEnd() && next >= res.HighWatermark {
			return nil
		}
	}
}

// resolveStart turns a start position into an offset (unset: earliest). An explicit offset
// must lie in [log start offset, high watermark].
func resolveStart(part *partition.Partition, pos *runnelv1.Position) (int64, error) {
	switch p := pos.GetPosition().(type) {
	case nil, *runnelv1.Position_Earliest:
		return part.Earliest(), nil
	case *runnelv1.Position_Latest:
		return part.Latest(), nil
	case *runnelv1.Position_Offset:
		return p.Offset, nil // checked by the first Fetch, which reports the range
	case *runnelv1.Position_Timestamp:
		if err := p.Timestamp.CheckValid(); err != nil {
			return 0, invalidRequest("start.timestamp", "subscribe: start timestamp: %v", err)
		}
		off, _, _, err := part.OffsetForTime(p.Timestamp.AsTime().UnixMilli())
		return off, err
	}
	return 0, invalidRequest("start", "subscribe: unknown start position")
}
