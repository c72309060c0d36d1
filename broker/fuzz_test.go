package broker

import (
	"context"
	"testing"
	"time"
	"unicode/utf8"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	runnelv1 "github.com/runnel-io/runnel/proto/runnel/v1"
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
