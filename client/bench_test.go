package client_test

import (
	"fmt"
	"testing"

	"github.com/runnel-io/runnel/client"
)

// BenchmarkProduce measures the asynchronous producer against an in-process broker with
// acks all (fsync per acknowledged batch), keyless records, one partition.
func BenchmarkProduce(b *testing.B) {
	for _, size := range []int{100, 1024} {
		b.Run(fmt.Sprintf("%dB", size), func(b *testing.B) {
			cl, _ := newClient(b, client.WithAcks(client.AcksAll))
			createTopic(b, cl, "bench", 1, nil)
			ctx := ctxT(b)
			value := make([]byte, size)
			var failed error
			cb := func(_ *client.Record, err error) {
				if err != nil && failed == nil {
					failed = err // callbacks run one at a time
				}
			}
			b.SetBytes(int64(size))
			b.ResetTimer()
			for range b.N {
				cl.Produce(ctx, &client.Record{Topic: "bench", Value: value}, cb)
			}
			if err := cl.Flush(ctx); err != nil {
				b.Fatal(err)
			}
			b.StopTimer()
			if failed != nil {
				b.Fatal(failed)
			}
		})
	}
}
