package broker

import (
	"context"
	"errors"
	"fmt"
	"time"
	"unicode/utf8"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/runnel-io/runnel/commitlog"
	"github.com/runnel-io/runnel/internal/recordbatch"
	"github.com/runnel-io/runnel/partition"
	runnelv1 "github.com/runnel-io/runnel/proto/runnel/v1"
)

// Fetch limits (fetch.proto).
const (
	maxFetchBytes = 64 << 20
	maxFetchWait  = 30 * time.Second
	// deadlineMargin is how long before the call's deadline a waiting Fetch answers, so that
	// its (possibly empty) answer reaches the client in time. At most a tenth of the time left.
	deadlineMargin = 50 * time.Millisecond
)

type fetchService struct {
	runnelv1.UnimplementedFetchServiceServer
	s *Services
}

// Fetch reads one partition from an offset, waiting at the end of the log (long poll) per
// min_bytes and max_wait. RECORD_FORMAT_BATCHES returns the stored bytes; DECODED and TEXT
// decode them on the broker (max_records is then exact).
func (f *fetchService) Fetch(ctx context.Context, req *runnelv1.FetchRequest) (*runnelv1.FetchResponse, error) {
	w := at(req.GetTopic(), req.GetPartition()).withOffset(req.GetOffset())
	if err := f.s.stopCtx.Err(); err != nil {
		return nil, callError(w, ErrRegistryClosed)
	}
	if err := checkRead("fetch", w, req.GetTopic(), req.GetFormat(), req.GetMaxBytes(), int64(req.GetMaxRecords())); err != nil {
		return nil, err
	}
	if mb := req.GetMinBytes(); mb < 0 {
		return nil, invalidRequestLimit("min_bytes", 0, "%sfetch: min_bytes %d is negative", w.prefix(), mb)
	}
	wait := partition.DefaultFetchMaxWait
	if mw := req.GetMaxWait(); mw != nil {
		if err := mw.CheckValid(); err != nil {
			return nil, invalidRequest("max_wait", "%sfetch: max_wait: %v", w.prefix(), err)
		}
		wait = mw.AsDuration()
		if wait < 0 || wait > maxFetchWait {
			return nil, invalidRequestLimit("max_wait", int64(maxFetchWait/time.Millisecond),
				"%sfetch: max_wait %v out of range [0s, %v]", w.prefix(), wait, maxFetchWait)
		}
	}
	if dl, ok := ctx.Deadline(); ok {
		left := time.Until(dl)
		left -= min(deadlineMargin, left/10)
		wait = max(min(wait, left), 0)
	}

	part, err := f.s.reg.readPartition(req.GetTopic(), req.GetPartition(), req.GetAllowFollower())
	if err != nil {
		return nil, callError(w, err)
	}
	fctx, cancel := context.WithCancel(ctx)
	defer cancel()
	defer context.AfterFunc(f.s.stopCtx, cancel)()
	f.s.fetching.Add(1)
	res, err := part.Fetch(fctx, req.GetOffset(), partition.FetchOptions{
		MaxBytes: int(req.GetMaxBytes()), MinBytes: int(req.GetMinBytes()), MaxWait: wait,
	})
	f.s.fetching.Add(-1)
	if err != nil {
		return nil, callError(w, f.readError(ctx, req.GetTopic(), "fetch", err))
	}
	if req.GetFormat() != runnelv1.RecordFormat_RECORD_FORMAT_BATCHES {
		recs, next, err := decodeRecords(res.Batches, req.GetOffset(), int64(req.GetMaxRecords()),
			req.GetFormat() == runnelv1.RecordFormat_RECORD_FORMAT_TEXT, res.NextOffset)
		if err != nil {
			return nil, callError(w, err)
		}
		f.s.metrics.fetched(req.GetTopic(), int64(len(recs)), len(res.Batches))
		return &runnelv1.FetchResponse{
			HighWatermark: res.HighWatermark, LogStartOffset: res.LogStartOffset, NextOffset: next, Records: recs,
		}, nil
	}
	batches, next := res.Batches, res.NextOffset
	if mr := req.GetMaxRecords(); mr > 0 && len(batches) > 0 {
		batches, next = limitRecords(batches, req.GetOffset(), int64(mr), next)
	}
	f.s.metrics.fetched(req.GetTopic(), next-req.GetOffset(), len(batches))
	return &runnelv1.FetchResponse{
		HighWatermark: res.HighWatermark, LogStartOffset: res.LogStartOffset, NextOffset: next, Batches: batches,
	}, nil
}

// checkRead checks what Fetch and Subscribe share: a topic, a known format, max_bytes within
// [0, maxFetchBytes], max_records not negative.
func checkRead(call string, w where, topicName string, format runnelv1.RecordFormat, maxBytes int32, maxRecords int64) error {
	if topicName == "" {
		return invalidRequest("topic", "%s: topic is required", call)
	}
	switch format {
	case runnelv1.RecordFormat_RECORD_FORMAT_BATCHES, runnelv1.RecordFormat_RECORD_FORMAT_DECODED, runnelv1.RecordFormat_RECORD_FORMAT_TEXT:
	default:
		return invalidRequest("format", "%s: unknown format %d", call, format)
	}
	if maxBytes < 0 || maxBytes > maxFetchBytes {
		return invalidRequestLimit("max_bytes", maxFetchBytes, "%s%s: max_bytes %d out of range [0, %d]", w.prefix(), call, maxBytes, maxFetchBytes)
	}
	if maxRecords < 0 {
		return invalidRequestLimit("max_records", 0, "%s%s: max_records %d is negative", w.prefix(), call, maxRecords)
	}
	return nil
}

// readError explains a partition read that failed: the broker stopping (while the caller's
// own context is live) is SHUTTING_DOWN, and a partition closed because its topic was
// deleted meanwhile is UNKNOWN_TOPIC.
func (f *fetchService) readError(ctx context.Context, topicName, call string, err error) error {
	switch {
	case f.s.stopCtx.Err() != nil && ctx.Err() == nil:
		return fmt.Errorf("%w: %w", ErrRegistryClosed, err)
	case errors.Is(err, partition.ErrClosed) && !f.s.reg.Exists(topicName):
		return fmt.Errorf("topic %q: %w (deleted during the %s)", topicName, ErrUnknownTopic, call)
	}
	return err
}

// limitRecords keeps the leading whole batches of b up to the one that brings the count of
// records at or after offset to limit, and returns them with the offset after the last one
// (next if b cannot be parsed, which cannot happen for stored batches).
func limitRecords(b []byte, offset, limit, next int64) ([]byte, int64) {
	n, count := 0, int64(0)
	for n < len(b) && count < limit {
		size, err := recordbatch.Size(b[n:], len(b)-n)
		if err != nil {
			return b, next
		}
		h, err := recordbatch.ParseHeader(b[n:])
		if err != nil {
			return b, next
		}
		count += h.NextOffset() - max(h.BaseOffset, offset)
		n += size
		next = h.NextOffset()
	}
	return b[:n], next
}

// decodeRecords decodes stored batches into records from offset on, at most limit of them (0:
// no limit), keys and values as text where valid UTF-8 if text is set. It returns the offset
// after the last record returned (next when every record was returned). A batch that fails
// to decode is corrupt data.
func decodeRecords(b []byte, offset, limit int64, text bool, next int64) ([]*runnelv1.Record, int64, error) {
	var out []*runnelv1.Record
	for len(b) > 0 {
		one, rest, err := recordbatch.Next(b, len(b))
		if err != nil {
			return nil, 0, fmt.Errorf("%w: stored batch after offset %d: %w", commitlog.ErrCorrupt, offset, err)
		}
		h, err := recordbatch.ParseHeader(one)
		if err != nil {
			return nil, 0, fmt.Errorf("%w: stored batch after offset %d: %w", commitlog.ErrCorrupt, offset, err)
		}
		recs, err := recordbatch.Records(one)
		if err != nil {
			return nil, 0, fmt.Errorf("%w: stored batch at offset %d: %w", commitlog.ErrCorrupt, h.BaseOffset, err)
		}
		tsType := runnelv1.TimestampType_TIMESTAMP_TYPE_CREATE_TIME
		if h.TimestampType() == recordbatch.LogAppendTime {
			tsType = runnelv1.TimestampType_TIMESTAMP_TYPE_LOG_APPEND_TIME
		}
		for i := range recs {
			r := &recs[i]
			if r.Offset < offset {
				continue
			}
			if limit > 0 && int64(len(out)) >= limit {
				return out, r.Offset, nil
			}
			out = append(out, toProtoRecord(r, tsType, text))
		}
		b = rest
	}
	return out, next, nil
}

func toProtoRecord(r *recordbatch.Record, tsType runnelv1.TimestampType, text bool) *runnelv1.Record {
	pr := &runnelv1.Record{Offset: r.Offset, Timestamp: timestamppb.New(time.UnixMilli(r.Timestamp)), TimestampType: tsType}
	switch {
	case r.Key == nil:
	case text && utf8.Valid(r.Key):
		pr.KeyData = &runnelv1.Record_KeyText{KeyText: string(r.Key)}
	default:
		pr.KeyData = &runnelv1.Record_Key{Key: r.Key}
	}
	switch {
	case r.Value == nil:
	case text && utf8.Valid(r.Value):
		pr.ValueData = &runnelv1.Record_ValueText{ValueText: string(r.Value)}
	default:
		pr.ValueData = &runnelv1.Record_Value{Value: r.Value}
	}
	for _, h := range r.Headers {
		ph := &runnelv1.RecordHeader{Key: h.Key}
		switch {
		case h.Value == nil:
		case text && utf8.Valid(h.Value):
			ph.ValueData = &runnelv1.RecordHeader_ValueText{ValueText: string(h.Value)}
		default:
			ph.ValueData = &runnelv1.RecordHeader_Value{Value: h.Value}
		}
		pr.Headers = append(pr.Headers, ph)
	}
	return pr
}

// ListOffsets answers earliest, latest and timestamp queries, each partition independently.
func (f *fetchService) ListOffsets(_ context.Context, req *runnelv1.ListOffsetsRequest) (*runnelv1.ListOffsetsResponse, error) {
	if len(req.GetQueries()) == 0 {
		return nil, invalidRequest("queries", "list offsets: no queries")
	}
	for i, q := range req.GetQueries() {
		switch q.GetPosition().GetPosition().(type) {
		case *runnelv1.Position_Earliest, *runnelv1.Position_Latest, *runnelv1.Position_Timestamp:
		case *runnelv1.Position_Offset:
			return nil, invalidRequest(fmt.Sprintf("queries[%d].position", i), "list offsets: queries[%d]: a position of kind offset is not a lookup", i)
		default:
			return nil, invalidRequest(fmt.Sprintf("queries[%d].position", i), "list offsets: queries[%d]: position is required", i)
		}
		if q.GetTopic() == "" {
			return nil, invalidRequest(fmt.Sprintf("queries[%d].topic", i), "list offsets: queries[%d]: topic is required", i)
		}
	}
	out := &runnelv1.ListOffsetsResponse{}
	for _, q := range req.GetQueries() {
		nums := q.GetPartitions()
		if len(nums) == 0 {
			parts, err := f.s.reg.Partitions(q.GetTopic())
			if err != nil {
				out.Offsets = append(out.Offsets, &runnelv1.ListedOffset{
					Topic: q.GetTopic(), Partition: -1, Offset: -1, Error: apiErrorOf(at(q.GetTopic(), -1), err).proto(),
				})
				continue
			}
			for i := range parts {
				nums = append(nums, int32(i))
			}
		}
		for _, n := range nums {
			out.Offsets = append(out.Offsets, f.listOne(q, n))
		}
	}
	return out, nil
}

func (f *fetchService) listOne(q *runnelv1.OffsetQuery, n int32) *runnelv1.ListedOffset {
	lo := &runnelv1.ListedOffset{Topic: q.GetTopic(), Partition: n, Offset: -1}
	w := at(q.GetTopic(), n)
	part, err := f.s.reg.ReadPartition(q.GetTopic(), n)
	if err != nil {
		lo.Error = apiErrorOf(w, err).proto()
		return lo
	}
	switch pos := q.GetPosition().GetPosition().(type) {
	case *runnelv1.Position_Earliest:
		lo.Offset = part.Earliest()
	case *runnelv1.Position_Latest:
		lo.Offset = part.Latest()
	case *runnelv1.Position_Timestamp:
		off, ts, found, err := part.OffsetForTime(pos.Timestamp.AsTime().UnixMilli())
		if err != nil {
			lo.Error = apiErrorOf(w, err).proto()
			return lo
		}
		lo.Offset = off
		if found {
			lo.Timestamp = timestamppb.New(time.UnixMilli(ts))
		}
	}
	return lo
}
