package wirecodec

import (
	"bytes"
	"math/rand/v2"
	"testing"
	"unsafe"

	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	runnelv1 "github.com/runnel-io/runnel/proto/runnel/v1"
)

// roundTrip checks that the codec's encoding decodes, with the standard decoder and its own,
// to the message it encoded, and that the standard encoding decodes with its own decoder.
func roundTrip(t *testing.T, m, fresh func() proto.Message) {
	t.Helper()
	in := m()
	data, err := Codec.Marshal(in)
	if err != nil {
		t.Fatal(err)
	}
	wire := data.Materialize()
	std := fresh()
	if err := proto.Unmarshal(wire, std); err != nil {
		t.Fatal(err)
	}
	if !proto.Equal(in, std) {
		t.Fatalf("standard decoding of the codec's encoding differs:\n%v\n%v", in, std)
	}
	// The codec's decoder, on the encoding split into small buffers (as gRPC hands them over).
	var split mem.BufferSlice
	for rest := wire; len(rest) > 0; {
		n := min(len(rest), 1+rand.IntN(20000))
		split = append(split, mem.SliceBuffer(bytes.Clone(rest[:n])))
		rest = rest[n:]
	}
	own := fresh()
	if err := Codec.Unmarshal(split, own); err != nil {
		t.Fatal(err)
	}
	if !proto.Equal(in, own) {
		t.Fatal("the codec's decoding differs")
	}
	stdWire, _ := proto.Marshal(in)
	own2 := fresh()
	if err := Codec.Unmarshal(mem.BufferSlice{mem.SliceBuffer(stdWire)}, own2); err != nil || !proto.Equal(in, own2) {
		t.Fatalf("decoding the standard encoding: %v", err)
	}
}

func TestRoundTrips(t *testing.T) {
	for _, size := range []int{0, 10, aliasThreshold - 1, aliasThreshold, 1 << 20} {
		b := make([]byte, size)
		for i := range b {
			b[i] = byte(i * 7)
		}
		roundTrip(t, func() proto.Message {
			return &runnelv1.SubscribeResponse{HighWatermark: 99, LogStartOffset: 3, NextOffset: 42, Batches: b}
		}, func() proto.Message { return &runnelv1.SubscribeResponse{} })
		roundTrip(t, func() proto.Message {
			return &runnelv1.FetchResponse{HighWatermark: 1 << 40, NextOffset: 7, Batches: b}
		}, func() proto.Message { return &runnelv1.FetchResponse{} })
		roundTrip(t, func() proto.Message {
			return &runnelv1.ProduceStreamRequest{CorrelationId: 1<<63 + 5, Request: &runnelv1.ProduceRequest{
				Acks: runnelv1.Acks_ACKS_LEADER, Partitions: []*runnelv1.ProducePartition{{Topic: "orders", Partition: 11, Batches: b}}}}
		}, func() proto.Message { return &runnelv1.ProduceStreamRequest{} })
		roundTrip(t, func() proto.Message {
			return &runnelv1.ProduceRequest{Partitions: []*runnelv1.ProducePartition{{Topic: "t", Batches: b}}}
		}, func() proto.Message { return &runnelv1.ProduceRequest{} })
		// Shapes the shortcuts do not take: two partitions; records.
		roundTrip(t, func() proto.Message {
			return &runnelv1.ProduceRequest{Partitions: []*runnelv1.ProducePartition{{Topic: "t", Batches: b}, {Topic: "u", Partition: 1, Batches: b}}}
		}, func() proto.Message { return &runnelv1.ProduceRequest{} })
	}
	roundTrip(t, func() proto.Message {
		return &runnelv1.ProduceStreamRequest{CorrelationId: 2}
	}, func() proto.Message { return &runnelv1.ProduceStreamRequest{} })
}

// TestMarshalDoesNotCopyBatches: the batch bytes are handed to gRPC as they are.
func TestMarshalDoesNotCopyBatches(t *testing.T) {
	b := make([]byte, 1<<20)
	data, err := Codec.Marshal(&runnelv1.SubscribeResponse{Batches: b})
	if err != nil {
		t.Fatal(err)
	}
	if got := data[len(data)-1].ReadOnlyData(); &got[0] != &b[0] {
		t.Fatal("batches were copied")
	}
}

// FuzzUnmarshal: arbitrary bytes decode (or fail) the same way as the standard decoder.
func FuzzUnmarshal(f *testing.F) {
	seed, _ := proto.Marshal(&runnelv1.ProduceStreamRequest{CorrelationId: 1, Request: &runnelv1.ProduceRequest{Partitions: []*runnelv1.ProducePartition{{Topic: "t", Batches: []byte("x")}}}})
	f.Add(seed)
	f.Add(protowire.AppendBytes(protowire.AppendTag(nil, 2, protowire.BytesType), seed)) // a ProduceRequest
	f.Fuzz(func(t *testing.T, b []byte) {
		decodesLikeStandard(t, padPastThreshold(b),
			func() proto.Message { return &runnelv1.ProduceStreamRequest{} },
			func() proto.Message { return &runnelv1.ProduceRequest{} })
	})
}

// TestUnmarshalAliasesBatches: a large FetchResponse or SubscribeResponse's batches point
// into the decoded buffer instead of being copied out of it.
func TestUnmarshalAliasesBatches(t *testing.T) {
	b := bytes.Repeat([]byte{7}, 1<<20)
	fetch, sub := &runnelv1.FetchResponse{}, &runnelv1.SubscribeResponse{}
	for _, c := range []struct {
		in, out proto.Message
		field   *[]byte
	}{
		{&runnelv1.FetchResponse{NextOffset: 5, Batches: b}, fetch, &fetch.Batches},
		{&runnelv1.SubscribeResponse{NextOffset: 5, Batches: b}, sub, &sub.Batches},
	} {
		wire, err := proto.Marshal(c.in)
		if err != nil {
			t.Fatal(err)
		}
		if err := unmarshalAliased(wire, c.out, 4, c.field); err != nil || !proto.Equal(c.in, c.out) {
			t.Fatalf("%T decoded wrongly: %v", c.in, err)
		}
		if !within(*c.field, wire) {
			t.Fatalf("%T: batches copied, not aliased", c.in)
		}
	}
}

// within reports whether x lies inside buf's memory.
func within(x, buf []byte) bool {
	return len(x) > 0 && uintptr(unsafe.Pointer(&x[0])) >= uintptr(unsafe.Pointer(&buf[0])) &&
		uintptr(unsafe.Pointer(&x[len(x)-1])) <= uintptr(unsafe.Pointer(&buf[len(buf)-1]))
}

// padPastThreshold sometimes (by b's first bit) appends a bytes field of an unknown number
// that takes b past aliasThreshold, so that fuzzing reaches the aliasing decoders.
func padPastThreshold(b []byte) []byte {
	if len(b) == 0 || b[0]&1 == 0 {
		return b
	}
	pad := protowire.AppendTag(nil, 99, protowire.BytesType)
	pad = protowire.AppendBytes(pad, make([]byte, aliasThreshold))
	return append(bytes.Clone(b), pad...)
}

// decodesLikeStandard checks that b decodes (or fails) through the codec as through the
// standard decoder, into each message fresh returns.
func decodesLikeStandard(t *testing.T, b []byte, fresh ...func() proto.Message) {
	t.Helper()
	for _, f := range fresh {
		want, got := f(), f()
		wantErr := proto.Unmarshal(b, want)
		gotErr := Codec.Unmarshal(mem.BufferSlice{mem.SliceBuffer(b)}, got)
		if (wantErr == nil) != (gotErr == nil) || (wantErr == nil && !proto.Equal(want, got)) {
			t.Fatalf("standard: %v %v; codec: %v %v", want, wantErr, got, gotErr)
		}
	}
}

// FuzzUnmarshalResponses: arbitrary bytes decode (or fail) as FetchResponse and
// SubscribeResponse the same way as with the standard decoder, on the aliasing path too.
func FuzzUnmarshalResponses(f *testing.F) {
	seed, _ := proto.Marshal(&runnelv1.FetchResponse{HighWatermark: 3, NextOffset: 2, Batches: []byte("xyz")})
	f.Add(seed)
	f.Fuzz(func(t *testing.T, b []byte) {
		decodesLikeStandard(t, padPastThreshold(b),
			func() proto.Message { return &runnelv1.FetchResponse{} },
			func() proto.Message { return &runnelv1.SubscribeResponse{} })
	})
}

// TestUnmarshalAliasesProduceBatches: a large produce request's batches, every partition's,
// point into the decoded buffer.
func TestUnmarshalAliasesProduceBatches(t *testing.T) {
	b1, b2 := bytes.Repeat([]byte{1}, 300<<10), bytes.Repeat([]byte{2}, 200<<10)
	req := &runnelv1.ProduceRequest{Acks: runnelv1.Acks_ACKS_LEADER, Partitions: []*runnelv1.ProducePartition{
		{Topic: "a", Partition: 1, Batches: b1}, {Topic: "b", Partition: 2, Batches: b2}}}
	inner, err := proto.Marshal(req)
	if err != nil {
		t.Fatal(err)
	}
	wire, err := proto.Marshal(&runnelv1.ProduceStreamRequest{CorrelationId: 9, Request: req})
	if err != nil {
		t.Fatal(err)
	}
	var r runnelv1.ProduceRequest
	if err := unmarshalProduceRequest(inner, &r); err != nil || !proto.Equal(&r, req) {
		t.Fatalf("ProduceRequest: %v", err)
	}
	var s runnelv1.ProduceStreamRequest
	if err := unmarshalProduceStreamRequest(wire, &s); err != nil || s.GetCorrelationId() != 9 || !proto.Equal(s.GetRequest(), req) {
		t.Fatalf("ProduceStreamRequest: %v", err)
	}
	for i, p := range r.GetPartitions() {
		if !within(p.GetBatches(), inner) || !within(s.GetRequest().GetPartitions()[i].GetBatches(), wire) {
			t.Fatalf("partition %d: batches copied, not aliased", i)
		}
	}
}
