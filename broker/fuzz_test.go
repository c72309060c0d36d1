package broker

import (
	"bytes"
	"context"
	"slices"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/runnel-io/runnel/internal/recordbatch"
	runnelv1 "github.com/runnel-io/runnel/proto/runnel/v1"
	"github.com/runnel-io/runnel/topic"
)

// FuzzProduce sends arbitrary batch bytes, topic names and partition numbers through the real
// gRPC path of an in-process broker. The broker must never fail internally (a panic would come
// back as INTERNAL through the recovery interceptor), and a batch it accepts must come back
// from Fetch byte for byte at the offset it was given (apart from the base offset it set).
func FuzzProduce(f *testing.F) {
	f.Add(batch(f, 1, "a", "b"), "events", int32(0))
	f.Add(batch(f, 2, "x"), "events", int32(1))
	f.Add([]byte{}, "events", int32(0))
	f.Add([]byte("not a batch at all"), "events", int32(0))
	f.Add(batch(f, 3, "y"), "no.such.topic", int32(0))
	f.Add(batch(f, 4, "z"), "bad name", int32(-1))
	f.Add(batch(f, 5, "w"), "events", int32(99))
	b := startBroker(f, f.TempDir()) // one broker per fuzz process, stopped by f's cleanup
	b.createTopic("events", 2, nil)
	f.Fuzz(func(t *testing.T, data []byte, topicName string, part int32) {
		if !utf8.ValidString(topicName) {
			// A proto3 string must be UTF-8: the client refuses to marshal it (found by this
			// fuzzer: "grpc: error while marshaling: string field contains invalid UTF-8").
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		resp, err := b.produce.Produce(ctx, &runnelv1.ProduceRequest{Partitions: []*runnelv1.ProducePartition{
			{Topic: topicName, Partition: part, Batches: data},
		}})
		if err != nil {
			if c := status.Code(err); c == codes.Internal || c == codes.Unknown {
				t.Fatalf("produce failed internally: %v", err)
			}
			return
		}
		r := resp.GetPartitions()[0]
		if e := r.GetError(); e != nil {
			if c := codes.Code(e.GetCode()); c == codes.Internal || c == codes.Unknown {
				t.Fatalf("partition failed internally: %v", e.GetMessage())
			}
			return
		}
		got, err := b.fetch.Fetch(ctx, &runnelv1.FetchRequest{Topic: topicName, Partition: part, Offset: r.GetBaseOffset()})
		if err != nil {
			t.Fatalf("fetch of an accepted batch: %v", err)
		}
		fetched := got.GetBatches()
		if len(fetched) < len(data) || string(withBase(fetched[:len(data)], 0)) != string(withBase(data, 0)) {
			t.Fatalf("fetched bytes differ from the produced batch")
		}
	})
}

// wantAPIError checks that err is a status error the broker made on purpose: its code is one
// of codes, and it carries an ErrorInfo whose reason is one of reasons (any reason if none
// are given). DEADLINE_EXCEEDED and CANCELED are the fuzz target's own short deadlines, made
// by the client: they carry no ErrorInfo and are accepted when allowed in codes.
func wantAPIError(t *testing.T, what string, err error, allowed []codes.Code, reasons ...runnelv1.ErrorReason) {
	t.Helper()
	st, ok := status.FromError(err)
	if !ok {
		t.Fatalf("%s: not a status error: %v", what, err)
	}
	if !slices.Contains(allowed, st.Code()) {
		t.Fatalf("%s: code %v, want one of %v: %v", what, st.Code(), allowed, err)
	}
	if st.Code() == codes.DeadlineExceeded || st.Code() == codes.Canceled {
		return
	}
	for _, d := range st.Details() {
		if info, ok := d.(*runnelv1.ErrorInfo); ok {
			if info.GetReason() == runnelv1.ErrorReason_ERROR_REASON_UNSPECIFIED ||
				len(reasons) > 0 && !slices.Contains(reasons, info.GetReason()) {
				t.Fatalf("%s: code %v with reason %v, want one of %v: %v", what, st.Code(), info.GetReason(), reasons, err)
			}
			return
		}
	}
	t.Fatalf("%s: no ErrorInfo in %v", what, err)
}

// FuzzFetch sends arbitrary Fetch requests (topic, partition, offset, byte limits, max_wait,
// format, max_records) to a broker holding a few known batches. A refusal must carry the
// proper code and reason, never INTERNAL or UNAVAILABLE (the broker is healthy); an answer must
// be consistent (offsets within the log, batches byte-exact as produced, records in order and
// within max_records). Long polls are cut short by a 25ms call deadline.
func FuzzFetch(f *testing.F) {
	b := startBroker(f, f.TempDir())
	b.createTopic("events", 2, nil)
	// events/0 holds batches of 1, 3 and 2 records (offsets 0, 1..3, 4..5); events/1 is empty.
	stored := map[int64][]byte{} // base offset -> the batch as stored
	for i, vals := range [][]string{{"a"}, {"b", "c", "d"}, {"e", "f"}} {
		bt := batch(f, int64(i+1)*1000, vals...)
		off := b.produceOK("events", 0, runnelv1.Acks_ACKS_ALL, bt)
		stored[off] = withBase(bt, off)
	}
	const hw = 6
	batches := runnelv1.RecordFormat_RECORD_FORMAT_BATCHES
	decoded, text := runnelv1.RecordFormat_RECORD_FORMAT_DECODED, runnelv1.RecordFormat_RECORD_FORMAT_TEXT
	// topic, partition, offset, max_bytes, min_bytes, has max_wait, its seconds and nanos, format, max_records
	f.Add("events", int32(0), int64(0), int32(0), int32(0), true, int64(0), int32(0), int32(batches), int32(0))
	f.Add("events", int32(0), int64(2), int32(1), int32(0), true, int64(0), int32(0), int32(batches), int32(1))
	f.Add("events", int32(0), int64(2), int32(0), int32(0), true, int64(0), int32(0), int32(decoded), int32(2))
	f.Add("events", int32(0), int64(3), int32(0), int32(0), false, int64(0), int32(0), int32(text), int32(0))
	f.Add("events", int32(0), int64(hw), int32(0), int32(1), true, int64(0), int32(1e6), int32(batches), int32(0))
	f.Add("events", int32(0), int64(hw+1), int32(0), int32(0), true, int64(0), int32(0), int32(batches), int32(0))
	f.Add("events", int32(0), int64(-1), int32(0), int32(0), true, int64(0), int32(0), int32(batches), int32(0))
	f.Add("events", int32(1), int64(0), int32(0), int32(1<<20), true, int64(30), int32(0), int32(batches), int32(0))
	f.Add("events", int32(2), int64(0), int32(0), int32(0), true, int64(0), int32(0), int32(batches), int32(0))
	f.Add("events", int32(-1), int64(0), int32(0), int32(0), true, int64(0), int32(0), int32(batches), int32(0))
	f.Add("no.such.topic", int32(0), int64(0), int32(0), int32(0), true, int64(0), int32(0), int32(batches), int32(0))
	f.Add("", int32(0), int64(0), int32(0), int32(0), true, int64(0), int32(0), int32(batches), int32(0))
	f.Add("bad name", int32(0), int64(0), int32(0), int32(0), true, int64(0), int32(0), int32(batches), int32(0))
	f.Add("events", int32(0), int64(0), int32(-1), int32(-1), true, int64(-1), int32(-5), int32(99), int32(-1))
	f.Add("events", int32(0), int64(0), int32(64<<20+1), int32(0), true, int64(31), int32(0), int32(batches), int32(0))
	f.Add("events", int32(0), int64(0), int32(0), int32(0), true, int64(1), int32(-1), int32(decoded), int32(0))
	f.Add("events", int32(0), int64(0), int32(0), int32(0), true, int64(315576000001), int32(0), int32(batches), int32(0))
	f.Fuzz(func(t *testing.T, topicName string, part int32, offset int64, maxBytes, minBytes int32,
		hasWait bool, waitSec int64, waitNanos int32, format, maxRecords int32) {
		if !utf8.ValidString(topicName) {
			return // the client cannot marshal it (see FuzzProduce)
		}
		req := &runnelv1.FetchRequest{
			Topic: topicName, Partition: part, Offset: offset, MaxBytes: maxBytes, MinBytes: minBytes,
			Format: runnelv1.RecordFormat(format), MaxRecords: maxRecords,
		}
		if hasWait {
			req.MaxWait = &durationpb.Duration{Seconds: waitSec, Nanos: waitNanos}
		}
		ctx, cancel := context.WithTimeout(context.Background(), 25*time.Millisecond)
		defer cancel()
		resp, err := b.fetch.Fetch(ctx, req)
		if err != nil {
			wantAPIError(t, "fetch", err,
				[]codes.Code{codes.InvalidArgument, codes.NotFound, codes.OutOfRange, codes.DeadlineExceeded, codes.Canceled},
				runnelv1.ErrorReason_ERROR_REASON_INVALID_REQUEST, runnelv1.ErrorReason_ERROR_REASON_INVALID_TOPIC_NAME,
				runnelv1.ErrorReason_ERROR_REASON_UNKNOWN_TOPIC, runnelv1.ErrorReason_ERROR_REASON_UNKNOWN_PARTITION,
				runnelv1.ErrorReason_ERROR_REASON_OFFSET_OUT_OF_RANGE)
			if status.Code(err) == codes.OutOfRange && topicName == "events" && part == 0 && offset >= 0 && offset <= hw {
				t.Fatalf("offset %d is in [0, %d], yet: %v", offset, hw, err)
			}
			return
		}
		if topicName != "events" || part < 0 || part > 1 {
			t.Fatalf("fetch of %q/%d succeeded", topicName, part)
		}
		end := int64(hw)
		if part == 1 {
			end = 0
		}
		if resp.GetHighWatermark() != end || resp.GetLogStartOffset() != 0 {
			t.Fatalf("high watermark %d, log start %d; want %d, 0", resp.GetHighWatermark(), resp.GetLogStartOffset(), end)
		}
		if offset < 0 || offset > end {
			t.Fatalf("offset %d outside [0, %d] answered", offset, end)
		}
		next := resp.GetNextOffset()
		if next < offset || next > end {
			t.Fatalf("next offset %d outside [%d, %d]", next, offset, end)
		}
		got := resp.GetBatches()
		if len(got) > 0 && runnelv1.RecordFormat(format) != batches {
			t.Fatalf("batches in format %v", runnelv1.RecordFormat(format))
		}
		// Batches: whole stored batches, the first containing offset, ending at next.
		pos := offset
		for base := offset; len(got) > 0; {
			for stored[base] == nil && base > 0 {
				base--
			}
			want := stored[base]
			if want == nil || len(got) < len(want) || !bytes.Equal(got[:len(want)], want) {
				t.Fatalf("fetched batches differ from the stored ones at offset %d", base)
			}
			h, err := recordbatch.ParseHeader(want)
			if err != nil {
				t.Fatal(err)
			}
			got, base, pos = got[len(want):], h.NextOffset(), h.NextOffset()
		}
		if runnelv1.RecordFormat(format) == batches && len(resp.GetBatches()) > 0 && next != pos {
			t.Fatalf("next offset %d, but the batches end at %d", next, pos)
		}
		recs := resp.GetRecords()
		if maxRecords > 0 && len(recs) > int(maxRecords) {
			t.Fatalf("%d records, max_records %d", len(recs), maxRecords)
		}
		for i, r := range recs {
			if r.GetOffset() < offset || r.GetOffset() >= end || i > 0 && r.GetOffset() != recs[i-1].GetOffset()+1 {
				t.Fatalf("record %d at offset %d (fetch from %d, end %d)", i, r.GetOffset(), offset, end)
			}
		}
		if len(recs) > 0 && next != recs[len(recs)-1].GetOffset()+1 {
			t.Fatalf("next offset %d after records up to %d", next, recs[len(recs)-1].GetOffset())
		}
	})
}

// configsOf parses "key=value" lines into a config map (nil if there are none).
func configsOf(s string) map[string]string {
	var m map[string]string
	for line := range strings.SplitSeq(s, "\n") {
		if line == "" {
			continue
		}
		if m == nil {
			m = map[string]string{}
		}
		k, v, _ := strings.Cut(line, "=")
		m[k] = v
	}
	return m
}

// fuzzCreatePartitionsCap bounds the partitions FuzzCreateTopic really creates: a larger
// valid count is sent with validate_only, so that an iteration stays fast.
const fuzzCreatePartitionsCap = 8

// FuzzCreateTopic creates topics with arbitrary names, partition counts, replication factors
// and configs (lines of key=value). Each either is created, and then describable as created
// (and is deleted again), or is refused with INVALID_ARGUMENT, FAILED_PRECONDITION or
// ALREADY_EXISTS and the matching reason. Never INTERNAL or UNAVAILABLE; the broker keeps
// answering.
func FuzzCreateTopic(f *testing.F) {
	b := startBroker(f, f.TempDir())
	b.createTopic("existing", 1, nil)
	f.Add("t1", int32(1), int32(1), "", false)
	f.Add("t2", int32(0), int32(0), "retention.ms=86400000\nsegment.bytes=4096", false)
	f.Add("t3", int32(3), int32(1), "cleanup.policy=delete\nmax.message.bytes=1024", false)
	f.Add("t4", int32(2), int32(1), "min.insync.replicas=2", false)
	f.Add("t5", int32(1), int32(3), "", false)
	f.Add("t6", int32(1), int32(-1), "", false)
	f.Add("t7", int32(-1), int32(1), "", false)
	f.Add("t8", int32(10001), int32(1), "", false)
	f.Add("t9", int32(10000), int32(1), "", true)
	f.Add("t10", int32(1), int32(1), "no.such.key=1", false)
	f.Add("t11", int32(1), int32(1), "segment.bytes=1", false)
	f.Add("t12", int32(1), int32(1), "retention.ms=-2\nsegment.ms=abc", false)
	f.Add("t13", int32(1), int32(1), "log.retention.hours=1\n=", false)
	f.Add("existing", int32(1), int32(1), "", false)
	f.Add("existin_g", int32(1), int32(1), "", false)
	f.Add("exist.ing", int32(1), int32(1), "", true)
	f.Add("", int32(1), int32(1), "", false)
	f.Add(".", int32(1), int32(1), "", false)
	f.Add("..", int32(1), int32(1), "", false)
	f.Add("a/b", int32(1), int32(1), "", false)
	f.Add("x y", int32(1), int32(1), "", false)
	f.Add(strings.Repeat("n", 249), int32(1), int32(1), "", false)
	f.Add(strings.Repeat("n", 250), int32(1), int32(1), "", false)
	f.Add("topics", int32(1), int32(1), "", false)
	f.Add("offsets.db", int32(1), int32(1), "", false)
	f.Fuzz(func(t *testing.T, name string, partitions, rf int32, configs string, validateOnly bool) {
		if !utf8.ValidString(name) || !utf8.ValidString(configs) {
			return // the client cannot marshal it (see FuzzProduce)
		}
		if partitions > fuzzCreatePartitionsCap {
			validateOnly = true
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		req := &runnelv1.CreateTopicRequest{
			Name: name, Partitions: partitions, ReplicationFactor: rf, Configs: configsOf(configs), ValidateOnly: validateOnly,
		}
		resp, err := b.admin.CreateTopic(ctx, req)
		if err != nil {
			wantAPIError(t, "create topic", err,
				[]codes.Code{codes.InvalidArgument, codes.FailedPrecondition, codes.AlreadyExists},
				runnelv1.ErrorReason_ERROR_REASON_INVALID_REQUEST, runnelv1.ErrorReason_ERROR_REASON_INVALID_TOPIC_NAME,
				runnelv1.ErrorReason_ERROR_REASON_INVALID_PARTITIONS, runnelv1.ErrorReason_ERROR_REASON_INVALID_REPLICATION_FACTOR,
				runnelv1.ErrorReason_ERROR_REASON_INVALID_CONFIG, runnelv1.ErrorReason_ERROR_REASON_TOPIC_ALREADY_EXISTS)
			if c := status.Code(err); c == codes.AlreadyExists && name != "existing" && !b.reg.Exists(name) &&
				topic.CollisionKey(name) != topic.CollisionKey("existing") {
				t.Fatalf("%q: %v, but no such topic", name, err)
			}
		} else {
			wantParts := max(partitions, 1)
			if got := resp.GetTopic(); got.GetName() != name || got.GetPartitionCount() != wantParts || got.GetReplicationFactor() != max(rf, 1) {
				t.Fatalf("created %v, asked for %q with %d partitions, replication factor %d", got, name, partitions, rf)
			}
			if validateOnly {
				if b.reg.Exists(name) {
					t.Fatalf("validate_only created %q", name)
				}
			} else {
				d, err := b.admin.DescribeTopic(ctx, &runnelv1.DescribeTopicRequest{Name: name})
				if err != nil {
					t.Fatalf("describe created topic %q: %v", name, err)
				}
				if d.GetTopic().GetTopicId() != resp.GetTopic().GetTopicId() || len(d.GetPartitions()) != int(wantParts) {
					t.Fatalf("described %v with %d partitions, created %v", d.GetTopic(), len(d.GetPartitions()), resp.GetTopic())
				}
				for k, v := range req.GetConfigs() {
					if !slices.ContainsFunc(d.GetConfigs(), func(e *runnelv1.ConfigEntry) bool {
						return e.GetName() == k && e.GetSource() == runnelv1.ConfigSource_CONFIG_SOURCE_TOPIC
					}) {
						t.Fatalf("config %q=%q accepted but not described as the topic's: %v", k, v, d.GetConfigs())
					}
				}
				if _, err := b.admin.DeleteTopic(ctx, &runnelv1.DeleteTopicRequest{Name: name}); err != nil {
					t.Fatalf("delete created topic %q: %v", name, err)
				}
			}
		}
		if _, err := b.admin.DescribeTopic(ctx, &runnelv1.DescribeTopicRequest{Name: "existing"}); err != nil {
			t.Fatalf("broker no longer serving: %v", err)
		}
	})
}

// FuzzCommitOffsets commits arbitrary group names, topics, partitions, offsets and metadata
// (a second entry, if second is set, for the same group). A commit is either refused with the
// proper code and reason, or reads back exactly from FetchOffsets.
func FuzzCommitOffsets(f *testing.F) {
	b := startBroker(f, f.TempDir())
	b.createTopic("events", 2, nil)
	f.Add("g", "events", int32(0), int64(0), "", false, int32(1), int64(5))
	f.Add("g", "events", int32(1), int64(1<<62), "meta", true, int32(1), int64(5))
	f.Add("g", "events", int32(0), int64(3), "", true, int32(0), int64(4))
	f.Add("g", "events", int32(2), int64(0), "", false, int32(0), int64(0))
	f.Add("g", "events", int32(-1), int64(0), "", false, int32(0), int64(0))
	f.Add("g", "events", int32(0), int64(-1), "", false, int32(0), int64(0))
	f.Add("g", "no.such.topic", int32(0), int64(0), "", false, int32(0), int64(0))
	f.Add("g", "", int32(0), int64(0), "", false, int32(0), int64(0))
	f.Add("g", "bad name", int32(0), int64(0), "", false, int32(0), int64(0))
	f.Add("", "events", int32(0), int64(0), "", false, int32(0), int64(0))
	f.Add("g\x00", "events", int32(0), int64(0), "", false, int32(0), int64(0))
	f.Add("grüße 👋", "events", int32(0), int64(0), "ünïcode", false, int32(0), int64(0))
	f.Add(strings.Repeat("g", 255), "events", int32(0), int64(0), "", false, int32(0), int64(0))
	f.Add(strings.Repeat("g", 256), "events", int32(0), int64(0), "", false, int32(0), int64(0))
	f.Add("g", "events", int32(0), int64(0), strings.Repeat("m", 4096), false, int32(0), int64(0))
	f.Add("g", "events", int32(0), int64(0), strings.Repeat("m", 4097), false, int32(0), int64(0))
	f.Fuzz(func(t *testing.T, group, topicName string, part int32, offset int64, metadata string, second bool, part2 int32, offset2 int64) {
		if !utf8.ValidString(group) || !utf8.ValidString(topicName) || !utf8.ValidString(metadata) {
			return // the client cannot marshal it (see FuzzProduce)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		cs := []*runnelv1.OffsetCommit{oc(topicName, part, offset, metadata)}
		if second {
			cs = append(cs, oc(topicName, part2, offset2, ""))
		}
		_, err := b.offsets().CommitOffsets(ctx, &runnelv1.CommitOffsetsRequest{Group: group, Offsets: cs})
		if err != nil {
			wantAPIError(t, "commit", err, []codes.Code{codes.InvalidArgument, codes.NotFound, codes.OutOfRange},
				runnelv1.ErrorReason_ERROR_REASON_INVALID_REQUEST, runnelv1.ErrorReason_ERROR_REASON_INVALID_GROUP_NAME,
				runnelv1.ErrorReason_ERROR_REASON_INVALID_TOPIC_NAME, runnelv1.ErrorReason_ERROR_REASON_UNKNOWN_TOPIC,
				runnelv1.ErrorReason_ERROR_REASON_UNKNOWN_PARTITION, runnelv1.ErrorReason_ERROR_REASON_OFFSET_OUT_OF_RANGE)
			return
		}
		for _, c := range cs {
			// events holds no record: its log end is 0, beyond which commits are refused.
			if c.GetOffset() < 0 || c.GetOffset() > 0 || c.GetTopic() != "events" || c.GetPartition() < 0 || c.GetPartition() > 1 {
				t.Fatalf("commit of %v accepted", c)
			}
		}
		resp, err := b.offsets().FetchOffsets(ctx, &runnelv1.FetchOffsetsRequest{Group: group})
		if err != nil {
			t.Fatalf("fetch offsets of group %q after a commit: %v", group, err)
		}
		for _, c := range cs {
			var found *runnelv1.CommittedOffset
			for _, o := range resp.GetOffsets() {
				if o.GetTopic() == c.GetTopic() && o.GetPartition() == c.GetPartition() {
					found = o
				}
			}
			if found == nil || found.GetOffset() != c.GetOffset() || found.GetMetadata() != c.GetMetadata() {
				t.Fatalf("committed %v, fetched %v", c, found)
			}
		}
		if _, err := b.offsets().DescribeGroup(ctx, &runnelv1.DescribeGroupRequest{Group: group}); err != nil {
			t.Fatalf("describe group %q after a commit: %v", group, err)
		}
	})
}
