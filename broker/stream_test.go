package broker

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/types/known/emptypb"
	"google.golang.org/protobuf/types/known/timestamppb"

	runnelv1 "github.com/runnel-io/runnel/proto/runnel/v1"
	"github.com/runnel-io/runnel/topic"
)

// TestProduceStreamPipelined sends many requests without waiting, to two partitions, with a
// bad request and an unknown partition among them: every request is answered once, by its
// correlation id; each partition's batches land in stream order; the bad ones fail alone.
func TestProduceStreamPipelined(t *testing.T) {
	b := startBroker(t, t.TempDir())
	b.createTopic("s", 2, nil)
	stream, err := b.produce.ProduceStream(ctxT(t))
	if err != nil {
		t.Fatal(err)
	}
	const n = 300
	for i := 1; i <= n; i++ {
		req := &runnelv1.ProduceRequest{Partitions: []*runnelv1.ProducePartition{
			{Topic: "s", Partition: int32(i % 2), Batches: batch(t, int64(i), fmt.Sprint(i))},
		}}
		switch i {
		case 7:
			req = &runnelv1.ProduceRequest{} // refused as a whole
		case 8:
			req.Partitions[0].Partition = 9 // unknown partition
		}
		if err := stream.Send(&runnelv1.ProduceStreamRequest{CorrelationId: uint64(i), Request: req}); err != nil {
			t.Fatal(err)
		}
	}
	if err := stream.CloseSend(); err != nil {
		t.Fatal(err)
	}
	got := map[uint64]*runnelv1.ProduceStreamResponse{}
	for {
		resp, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if got[resp.GetCorrelationId()] != nil {
			t.Fatalf("correlation id %d answered twice", resp.GetCorrelationId())
		}
		got[resp.GetCorrelationId()] = resp
	}
	if len(got) != n {
		t.Fatalf("%d answers, want %d", len(got), n)
	}
	wantStatus(t, partErr(got[7].GetError()), codes.InvalidArgument, runnelv1.ErrorReason_ERROR_REASON_INVALID_REQUEST)
	wantStatus(t, partErr(got[8].GetResponse().GetPartitions()[0].GetError()), codes.NotFound, runnelv1.ErrorReason_ERROR_REASON_UNKNOWN_PARTITION)
	next := [2]int64{}
	for i := 1; i <= n; i++ {
		if i == 7 || i == 8 {
			continue
		}
		r := got[uint64(i)].GetResponse().GetPartitions()[0]
		if r.GetError() != nil {
			t.Fatalf("request %d: %v", i, partErr(r.GetError()))
		}
		// Stream order is append order: offsets rise by one per request of a partition.
		if p := i % 2; r.GetBaseOffset() != next[p] {
			t.Fatalf("request %d: base offset %d, want %d", i, r.GetBaseOffset(), next[p])
		} else {
			next[p]++
		}
	}
	// The values read back in offset order are the requests in stream order.
	for p := int32(0); p < 2; p++ {
		f, err := b.fetch.Fetch(ctxT(t), &runnelv1.FetchRequest{Topic: "s", Partition: p, Format: runnelv1.RecordFormat_RECORD_FORMAT_TEXT, MaxBytes: 1 << 20})
		if err != nil {
			t.Fatal(err)
		}
		prev := 0
		for _, r := range f.GetRecords() {
			var v int
			fmt.Sscan(r.GetValueText(), &v)
			if v <= prev || v%2 != int(p) {
				t.Fatalf("partition %d: value %d after %d", p, v, prev)
			}
			prev = v
		}
		if int64(len(f.GetRecords())) != next[p] {
			t.Fatalf("partition %d: %d records, want %d", p, len(f.GetRecords()), next[p])
		}
	}
}

// TestProduceStreamNilRequest: a message without a request gets an error answer; the stream
// goes on.
func TestProduceStreamNilRequest(t *testing.T) {
	b := startBroker(t, t.TempDir())
	b.createTopic("s", 1, nil)
	stream, err := b.produce.ProduceStream(ctxT(t))
	if err != nil {
		t.Fatal(err)
	}
	if err := stream.Send(&runnelv1.ProduceStreamRequest{CorrelationId: 1}); err != nil {
		t.Fatal(err)
	}
	resp, err := stream.Recv()
	if err != nil {
		t.Fatal(err)
	}
	wantStatus(t, partErr(resp.GetError()), codes.InvalidArgument, runnelv1.ErrorReason_ERROR_REASON_INVALID_REQUEST)
	if err := stream.Send(&runnelv1.ProduceStreamRequest{CorrelationId: 2, Request: &runnelv1.ProduceRequest{
		Partitions: []*runnelv1.ProducePartition{{Topic: "s", Batches: batch(t, 1, "x")}}}}); err != nil {
		t.Fatal(err)
	}
	if resp, err = stream.Recv(); err != nil || resp.GetCorrelationId() != 2 || resp.GetResponse().GetPartitions()[0].GetError() != nil {
		t.Fatalf("second answer %v %v", resp, err)
	}
}

// TestProduceRecordsForm: the decoded-records form places keyed records as Kafka does, an
// explicit partition overrides, keyless records stick together, and bad entries fail whole.
func TestProduceRecordsForm(t *testing.T) {
	b := startBroker(t, t.TempDir())
	b.createTopic("r", 4, map[string]string{"max.message.bytes": "1000"})
	ts := time.UnixMilli(1_700_000_000_123)
	recs := []*runnelv1.Record{
		{KeyData: &runnelv1.Record_KeyText{KeyText: "alice"}, ValueData: &runnelv1.Record_ValueText{ValueText: "a1"},
			Timestamp: timestamppb.New(ts), Headers: []*runnelv1.RecordHeader{{Key: "h", ValueData: &runnelv1.RecordHeader_ValueText{ValueText: "v"}}}},
		{KeyData: &runnelv1.Record_Key{Key: []byte("bob")}, ValueData: &runnelv1.Record_Value{Value: []byte("b1")}},
		{KeyData: &runnelv1.Record_KeyText{KeyText: "alice"}, ValueData: &runnelv1.Record_ValueText{ValueText: "a2"}},
		{ValueData: &runnelv1.Record_ValueText{ValueText: "nokey1"}},
		{ValueData: &runnelv1.Record_ValueText{ValueText: "nokey2"}},
	}
	resp, err := b.produce.Produce(ctxT(t), &runnelv1.ProduceRequest{Topics: []*runnelv1.ProduceRecords{{Topic: "r", Records: recs}}})
	if err != nil {
		t.Fatal(err)
	}
	res := resp.GetTopics()[0].GetRecords()
	if len(res) != len(recs) {
		t.Fatalf("%d results", len(res))
	}
	for i, r := range res {
		if r.GetError() != nil {
			t.Fatalf("record %d: %v", i, partErr(r.GetError()))
		}
	}
	alice := int32(topic.KeyPartition([]byte("alice"), 4))
	if res[0].GetPartition() != alice || res[2].GetPartition() != alice || res[1].GetPartition() != int32(topic.KeyPartition([]byte("bob"), 4)) {
		t.Fatalf("keyed placement %v", res)
	}
	if res[2].GetOffset() != res[0].GetOffset()+1 {
		t.Fatalf("alice's records at %d and %d, want consecutive", res[0].GetOffset(), res[2].GetOffset())
	}
	if res[3].GetPartition() != res[4].GetPartition() {
		t.Fatalf("keyless records on partitions %d and %d, want one (sticky)", res[3].GetPartition(), res[4].GetPartition())
	}
	f, err := b.fetch.Fetch(ctxT(t), &runnelv1.FetchRequest{Topic: "r", Partition: alice, Offset: res[0].GetOffset(), Format: runnelv1.RecordFormat_RECORD_FORMAT_TEXT})
	if err != nil {
		t.Fatal(err)
	}
	got := f.GetRecords()
	if len(got) < 2 || got[0].GetValueText() != "a1" || got[0].GetKeyText() != "alice" || !got[0].GetTimestamp().AsTime().Equal(ts) ||
		len(got[0].GetHeaders()) != 1 || got[0].GetHeaders()[0].GetValueText() != "v" || got[1].GetValueText() != "a2" {
		t.Fatalf("read back %v", got)
	}

	// An explicit partition, and errors: unknown topic, partition out of range, too large,
	// negative timestamp, no records.
	p2 := int32(2)
	resp, err = b.produce.Produce(ctxT(t), &runnelv1.ProduceRequest{Topics: []*runnelv1.ProduceRecords{
		{Topic: "r", Partition: &p2, Records: recs[:2]},
		{Topic: "nope", Records: recs[:1]},
		{Topic: "r", Partition: new(int32(4)), Records: recs[:1]},
		{Topic: "r", Records: []*runnelv1.Record{{ValueData: &runnelv1.Record_Value{Value: bytes.Repeat([]byte("x"), 2000)}}}},
		{Topic: "r", Records: []*runnelv1.Record{{Timestamp: timestamppb.New(time.UnixMilli(-5))}}},
	}})
	if err != nil {
		t.Fatal(err)
	}
	tr := resp.GetTopics()
	if r := tr[0].GetRecords(); r[0].GetPartition() != 2 || r[1].GetPartition() != 2 || r[0].GetError() != nil || r[1].GetOffset() != r[0].GetOffset()+1 {
		t.Fatalf("explicit partition: %v", r)
	}
	wantStatus(t, partErr(tr[1].GetRecords()[0].GetError()), codes.NotFound, runnelv1.ErrorReason_ERROR_REASON_UNKNOWN_TOPIC)
	wantStatus(t, partErr(tr[2].GetRecords()[0].GetError()), codes.NotFound, runnelv1.ErrorReason_ERROR_REASON_UNKNOWN_PARTITION)
	wantStatus(t, partErr(tr[3].GetRecords()[0].GetError()), codes.ResourceExhausted, runnelv1.ErrorReason_ERROR_REASON_RECORD_TOO_LARGE)
	wantStatus(t, partErr(tr[4].GetRecords()[0].GetError()), codes.InvalidArgument, runnelv1.ErrorReason_ERROR_REASON_INVALID_RECORD)

	_, err = b.produce.Produce(ctxT(t), &runnelv1.ProduceRequest{Topics: []*runnelv1.ProduceRecords{{Topic: "r"}}})
	wantStatus(t, err, codes.InvalidArgument, runnelv1.ErrorReason_ERROR_REASON_INVALID_REQUEST)
}

// TestSubscribe follows a partition: the records there, an empty wait at the end, new records
// as they come; stop_at_end and max_records end it with OK; out-of-range starts fail.
func TestSubscribe(t *testing.T) {
	b := startBroker(t, t.TempDir())
	b.createTopic("f", 1, nil)
	b.produceOK("f", 0, runnelv1.Acks_ACKS_ALL, batch(t, 1000, "a", "b", "c"))
	b.produceOK("f", 0, runnelv1.Acks_ACKS_ALL, batch(t, 2000, "d"))

	// From offset 1, text: records b, c, d, then a new one produced while it waits.
	ctx := ctxT(t)
	sub, err := b.fetch.Subscribe(ctx, &runnelv1.SubscribeRequest{Topic: "f", Start: &runnelv1.Position{Position: &runnelv1.Position_Offset{Offset: 1}}, Format: runnelv1.RecordFormat_RECORD_FORMAT_TEXT})
	if err != nil {
		t.Fatal(err)
	}
	var vals []string
	for len(vals) < 3 {
		m, err := sub.Recv()
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range m.GetRecords() {
			vals = append(vals, r.GetValueText())
		}
	}
	if fmt.Sprint(vals) != "[b c d]" {
		t.Fatalf("got %v", vals)
	}
	b.produceOK("f", 0, runnelv1.Acks_ACKS_ALL, batch(t, 3000, "e"))
	m, err := sub.Recv()
	if err != nil || len(m.GetRecords()) != 1 || m.GetRecords()[0].GetValueText() != "e" || m.GetNextOffset() != 5 || m.GetHighWatermark() != 5 {
		t.Fatalf("after waiting: %v %v", m, err)
	}

	// Latest, batches: the first answer comes at once, empty, naming the start.
	latest, err := b.fetch.Subscribe(ctxT(t), &runnelv1.SubscribeRequest{Topic: "f", Start: &runnelv1.Position{Position: &runnelv1.Position_Latest{Latest: &emptypb.Empty{}}}})
	if err != nil {
		t.Fatal(err)
	}
	if m, err := latest.Recv(); err != nil || len(m.GetBatches()) != 0 || m.GetNextOffset() != 5 {
		t.Fatalf("latest: %v %v", m, err)
	}

	// stop_at_end from earliest: everything, then OK.
	all, err := b.fetch.Subscribe(ctxT(t), &runnelv1.SubscribeRequest{Topic: "f", StopAtEnd: true})
	if err != nil {
		t.Fatal(err)
	}
	var n int
	for {
		m, err := all.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		recs, err := decodeAll(m.GetBatches())
		if err != nil {
			t.Fatal(err)
		}
		n += len(recs)
	}
	if n != 5 {
		t.Fatalf("stop_at_end read %d records, want 5", n)
	}

	// max_records 2 of the decoded form: exactly two, then OK.
	two, err := b.fetch.Subscribe(ctxT(t), &runnelv1.SubscribeRequest{Topic: "f", MaxRecords: 2, Format: runnelv1.RecordFormat_RECORD_FORMAT_DECODED})
	if err != nil {
		t.Fatal(err)
	}
	n = 0
	for {
		m, err := two.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		n += len(m.GetRecords())
	}
	if n != 2 {
		t.Fatalf("max_records 2 gave %d", n)
	}

	// By time: the first record at or after 2000 is d (offset 3).
	byTime, err := b.fetch.Subscribe(ctxT(t), &runnelv1.SubscribeRequest{Topic: "f", StopAtEnd: true, Format: runnelv1.RecordFormat_RECORD_FORMAT_TEXT,
		Start: &runnelv1.Position{Position: &runnelv1.Position_Timestamp{Timestamp: timestamppb.New(time.UnixMilli(2000))}}})
	if err != nil {
		t.Fatal(err)
	}
	if m, err := byTime.Recv(); err != nil || m.GetRecords()[0].GetValueText() != "d" {
		t.Fatalf("by time: %v %v", m, err)
	}

	// Errors: out of range, unknown topic, unknown partition, bad format, bad max_bytes.
	for _, c := range []struct {
		req    *runnelv1.SubscribeRequest
		code   codes.Code
		reason runnelv1.ErrorReason
	}{
		{&runnelv1.SubscribeRequest{Topic: "f", Start: &runnelv1.Position{Position: &runnelv1.Position_Offset{Offset: 99}}}, codes.OutOfRange, runnelv1.ErrorReason_ERROR_REASON_OFFSET_OUT_OF_RANGE},
		{&runnelv1.SubscribeRequest{Topic: "nope"}, codes.NotFound, runnelv1.ErrorReason_ERROR_REASON_UNKNOWN_TOPIC},
		{&runnelv1.SubscribeRequest{Topic: "f", Partition: 3}, codes.NotFound, runnelv1.ErrorReason_ERROR_REASON_UNKNOWN_PARTITION},
		{&runnelv1.SubscribeRequest{Topic: "f", Format: 9}, codes.InvalidArgument, runnelv1.ErrorReason_ERROR_REASON_INVALID_REQUEST},
		{&runnelv1.SubscribeRequest{Topic: "f", MaxBytes: -1}, codes.InvalidArgument, runnelv1.ErrorReason_ERROR_REASON_INVALID_REQUEST},
		{&runnelv1.SubscribeRequest{Topic: "bad name"}, codes.InvalidArgument, runnelv1.ErrorReason_ERROR_REASON_INVALID_TOPIC_NAME},
	} {
		s, err := b.fetch.Subscribe(ctxT(t), c.req)
		if err == nil {
			_, err = s.Recv()
		}
		wantStatus(t, err, c.code, c.reason)
	}
}

// TestSubscribeEndsOnDelete: a stream waiting at the end of a topic that is deleted ends with
// UNKNOWN_TOPIC rather than hanging.
func TestSubscribeEndsOnDelete(t *testing.T) {
	b := startBroker(t, t.TempDir())
	b.createTopic("d", 1, nil)
	sub, err := b.fetch.Subscribe(ctxT(t), &runnelv1.SubscribeRequest{Topic: "d"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := sub.Recv(); err != nil { // the first, empty answer
		t.Fatal(err)
	}
	if _, err := b.admin.DeleteTopic(ctxT(t), &runnelv1.DeleteTopicRequest{Name: "d"}); err != nil {
		t.Fatal(err)
	}
	_, err = sub.Recv()
	wantStatus(t, err, codes.NotFound, runnelv1.ErrorReason_ERROR_REASON_UNKNOWN_TOPIC)
}

// TestProduceStreamIdleDoesNotBlockStop: an open stream with nothing in flight ends with
// SHUTTING_DOWN when the broker stops, so the graceful stop does not wait for it.
func TestProduceStreamIdleDoesNotBlockStop(t *testing.T) {
	b := startBroker(t, t.TempDir())
	b.createTopic("s", 1, nil)
	stream, err := b.produce.ProduceStream(ctxT(t))
	if err != nil {
		t.Fatal(err)
	}
	if err := stream.Send(&runnelv1.ProduceStreamRequest{CorrelationId: 1, Request: &runnelv1.ProduceRequest{
		Partitions: []*runnelv1.ProducePartition{{Topic: "s", Batches: batch(t, 1, "x")}}}}); err != nil {
		t.Fatal(err)
	}
	if _, err := stream.Recv(); err != nil {
		t.Fatal(err)
	}
	b.svc.Stop()
	_, err = stream.Recv()
	wantStatus(t, err, codes.Unavailable, runnelv1.ErrorReason_ERROR_REASON_SHUTTING_DOWN)
}
