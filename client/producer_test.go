package client_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/runnel-io/runnel/client"
	"github.com/runnel-io/runnel/topic"
)

func TestProduceSyncRoundTrip(t *testing.T) {
	cl, _ := newClient(t)
	createTopic(t, cl, "orders", 3, nil)
	ts := time.UnixMilli(1_700_000_000_123)
	var recs []*client.Record
	for i := range 20 {
		recs = append(recs, &client.Record{
			Topic: "orders", Key: fmt.Appendf(nil, "key-%d", i), Value: fmt.Appendf(nil, "value-%d", i),
			Headers: []client.Header{{Key: "h", Value: []byte("v")}, {Key: "null"}}, Timestamp: ts,
		})
	}
	recs = append(recs, &client.Record{Topic: "orders", Value: []byte("keyless")})
	if err := cl.ProduceSync(ctxT(t), recs...); err != nil {
		t.Fatal(err)
	}
	byPos := map[[2]int64]*client.Record{}
	for _, r := range recs {
		if r.Offset < 0 {
			t.Fatalf("record %q has no offset", r.Value)
		}
		byPos[[2]int64{int64(r.Partition), r.Offset}] = r
	}
	got := consumeN(t, cl, "orders", []int32{0, 1, 2}, client.Earliest(), len(recs))
	for _, g := range got {
		w := byPos[[2]int64{int64(g.Partition), g.Offset}]
		if w == nil {
			t.Fatalf("unexpected record %d/%d", g.Partition, g.Offset)
		}
		if !bytes.Equal(g.Key, w.Key) || !bytes.Equal(g.Value, w.Value) || len(g.Headers) != len(w.Headers) {
			t.Fatalf("got %+v, want %+v", g, w)
		}
		for i := range g.Headers {
			if g.Headers[i].Key != w.Headers[i].Key || !bytes.Equal(g.Headers[i].Value, w.Headers[i].Value) ||
				(g.Headers[i].Value == nil) != (w.Headers[i].Value == nil) {
				t.Fatalf("header %d: got %+v, want %+v", i, g.Headers[i], w.Headers[i])
			}
		}
		if w.Key != nil && !g.Timestamp.Equal(ts) {
			t.Fatalf("timestamp %v, want %v", g.Timestamp, ts)
		}
		if w.Key == nil && (g.Key != nil || g.Timestamp.IsZero()) {
			t.Fatalf("keyless record: key %q, timestamp %v", g.Key, g.Timestamp)
		}
	}
}

func TestProduceAsyncKeyedPartitions(t *testing.T) {
	cl, _ := newClient(t)
	const n = 6
	createTopic(t, cl, "keyed", n, nil)
	ctx := ctxT(t)
	var (
		mu   sync.Mutex
		errs []error
		done int
	)
	const count = 500
	for i := range count {
		key := fmt.Appendf(nil, "k%d", i%37)
		cl.Produce(ctx, &client.Record{Topic: "keyed", Key: key, Value: []byte("v")}, func(r *client.Record, err error) {
			mu.Lock()
			defer mu.Unlock()
			done++
			if err != nil {
				errs = append(errs, err)
				return
			}
			if want := int32(topic.KeyPartition(r.Key, n)); r.Partition != want {
				errs = append(errs, fmt.Errorf("key %q on partition %d, want %d", r.Key, r.Partition, want))
			}
		})
	}
	if err := cl.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	if done != count || len(errs) > 0 {
		t.Fatalf("%d callbacks of %d, errors: %v", done, count, errors.Join(errs...))
	}
	// And on the broker side: every record of a key is on the key's partition.
	ti, err := cl.DescribeTopic(ctx, "keyed")
	if err != nil {
		t.Fatal(err)
	}
	var total int64
	for _, p := range ti.Partitions {
		total += p.HighWatermark
	}
	if total != count {
		t.Fatalf("high watermarks sum to %d, want %d", total, count)
	}
	for _, r := range consumeN(t, cl, "keyed", []int32{0, 1, 2, 3, 4, 5}, client.Earliest(), count) {
		if want := int32(topic.KeyPartition(r.Key, n)); r.Partition != want {
			t.Fatalf("consumed key %q from partition %d, want %d", r.Key, r.Partition, want)
		}
	}
}

func TestFlushWaitsForEverything(t *testing.T) {
	cl, _ := newClient(t, client.WithLinger(time.Hour)) // only Flush sends
	createTopic(t, cl, "f", 2, nil)
	ctx := ctxT(t)
	var mu sync.Mutex
	acked := 0
	for range 100 {
		cl.Produce(ctx, &client.Record{Topic: "f", Value: []byte("x")}, func(_ *client.Record, err error) {
			if err != nil {
				t.Error(err)
			}
			mu.Lock()
			acked++
			mu.Unlock()
		})
	}
	if err := cl.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	if acked != 100 {
		t.Fatalf("%d acknowledged after Flush, want 100", acked)
	}
}

func TestBackPressure(t *testing.T) {
	// A linger of an hour and a batch size above the buffer: nothing is sent until Flush, so
	// the buffer fills deterministically.
	cl, _ := newClient(t, client.WithMaxBufferedBytes(1000), client.WithLinger(time.Hour), client.WithBatchBytes(1<<20))
	createTopic(t, cl, "bp", 1, nil)
	ctx := ctxT(t)
	val := make([]byte, 200)
	results := make(chan error, 100)
	cb := func(_ *client.Record, err error) { results <- err }
	produced := 0
	// Fill the buffer: records of ~240 bytes, so the 5th must block.
	for range 4 {
		cl.Produce(ctx, &client.Record{Topic: "bp", Value: val}, cb)
		produced++
	}
	// A blocked Produce gives up when its context ends.
	cctx, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	var blockedErr error
	cl.Produce(cctx, &client.Record{Topic: "bp", Value: val}, func(_ *client.Record, err error) { blockedErr = err })
	cancel()
	if !errors.Is(blockedErr, context.DeadlineExceeded) {
		t.Fatalf("blocked Produce: %v, want a deadline error", blockedErr)
	}
	// A blocked Produce resumes once the buffer drains.
	unblocked := make(chan struct{})
	go func() {
		cl.Produce(ctx, &client.Record{Topic: "bp", Value: val}, cb)
		close(unblocked)
	}()
	select {
	case <-unblocked:
		t.Fatal("Produce did not block with a full buffer")
	case <-time.After(50 * time.Millisecond):
	}
	produced++
	if err := cl.Flush(ctx); err != nil { // sends the first four, freeing the buffer
		t.Fatal(err)
	}
	<-unblocked
	if err := cl.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	for range produced {
		if err := <-results; err != nil {
			t.Fatal(err)
		}
	}
}

func TestRecordTooLarge(t *testing.T) {
	cl, _ := newClient(t)
	createTopic(t, cl, "small", 1, map[string]string{"max.message.bytes": "1024"})
	ctx := ctxT(t)
	type result struct {
		r   *client.Record
		err error
	}
	results := make(chan result, 10)
	cb := func(r *client.Record, err error) { results <- result{r, err} }
	cl.Produce(ctx, &client.Record{Topic: "small", Value: []byte("before")}, cb)
	cl.Produce(ctx, &client.Record{Topic: "small", Value: make([]byte, 2000)}, cb)
	cl.Produce(ctx, &client.Record{Topic: "small", Value: []byte("after")}, cb)
	if err := cl.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	for range 3 {
		res := <-results
		if len(res.r.Value) == 2000 {
			var e *client.Error
			if !errors.As(res.err, &e) || e.Code != codes.ResourceExhausted || e.Reason != "RECORD_TOO_LARGE" || e.IsRetriable() {
				t.Fatalf("large record: %v, want RECORD_TOO_LARGE", res.err)
			}
			if e.Topic != "small" || e.Partition != 0 {
				t.Fatalf("error names %s/%d", e.Topic, e.Partition)
			}
		} else if res.err != nil {
			t.Fatalf("record %q: %v", res.r.Value, res.err)
		}
	}
}

func TestUnknownTopic(t *testing.T) {
	cl, _ := newClient(t)
	err := cl.ProduceSync(ctxT(t), &client.Record{Topic: "nope", Value: []byte("x")})
	var e *client.Error
	if !errors.As(err, &e) || e.Code != codes.NotFound || e.Reason != "UNKNOWN_TOPIC" {
		t.Fatalf("got %v, want UNKNOWN_TOPIC", err)
	}
	// Created afterwards, the topic works: the failed lookup was not cached.
	createTopic(t, cl, "nope", 1, nil)
	if err := cl.ProduceSync(ctxT(t), &client.Record{Topic: "nope", Value: []byte("x")}); err != nil {
		t.Fatal(err)
	}
	// A manual partition that does not exist.
	err = cl.ProduceSync(ctxT(t), &client.Record{Topic: "nope", Partition: 3, ManualPartition: true, Value: []byte("x")})
	if !errors.As(err, &e) || e.Reason != "UNKNOWN_PARTITION" {
		t.Fatalf("got %v, want UNKNOWN_PARTITION", err)
	}
}

// TestOrderOnePartition: 10k records to one partition through the async producer, with
// several requests in flight, come back in the order they were produced.
func TestOrderOnePartition(t *testing.T) {
	cl, _ := newClient(t, client.WithBatchBytes(4096), client.WithLinger(time.Millisecond))
	createTopic(t, cl, "ordered", 1, nil)
	ctx := ctxT(t)
	const n = 10000
	var firstErr error
	var mu sync.Mutex
	for i := range n {
		cl.Produce(ctx, &client.Record{Topic: "ordered", Value: fmt.Appendf(nil, "%08d", i)}, func(_ *client.Record, err error) {
			if err != nil {
				mu.Lock()
				firstErr = cmp(firstErr, err)
				mu.Unlock()
			}
		})
	}
	if err := cl.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if firstErr != nil {
		t.Fatal(firstErr)
	}
	for i, r := range consumeN(t, cl, "ordered", []int32{0}, client.Earliest(), n) {
		if want := fmt.Sprintf("%08d", i); string(r.Value) != want || r.Offset != int64(i) {
			t.Fatalf("offset %d: value %q, want %q at offset %d", r.Offset, r.Value, want, i)
		}
	}
}

func cmp(a, b error) error {
	if a != nil {
		return a
	}
	return b
}

// TestBrokerRestartMidProduce: the producer rides out a broker restart; every record it
// acknowledged is in the log afterwards (duplicates allowed).
func TestBrokerRestartMidProduce(t *testing.T) {
	cl, b := newClient(t, client.WithRetryBackoff(20*time.Millisecond), client.WithMaxInFlight(1), client.WithLogger(tLogger{t}))
	createTopic(t, cl, "restart", 2, nil)
	ctx := ctxT(t)
	var (
		mu    sync.Mutex
		acked = map[string]bool{}
		errs  []error
	)
	cb := func(r *client.Record, err error) {
		mu.Lock()
		defer mu.Unlock()
		if err != nil {
			errs = append(errs, err)
			return
		}
		acked[string(r.Value)] = true
	}
	const n = 5000
	// Restart the broker while records are being produced and acknowledged.
	restarted := make(chan struct{})
	go func() {
		defer close(restarted)
		for {
			mu.Lock()
			k := len(acked)
			mu.Unlock()
			if k >= n/4 {
				break
			}
			time.Sleep(time.Millisecond)
		}
		b.Restart()
	}()
	for i := range n {
		cl.Produce(ctx, &client.Record{Topic: "restart", Value: fmt.Appendf(nil, "%d", i)}, cb)
		if i%100 == 0 {
			time.Sleep(time.Millisecond) // spread the records over the restart
		}
	}
	<-restarted
	if err := cl.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(errs) > 0 {
		t.Fatalf("%d records failed, e.g. %v", len(errs), errs[0])
	}
	ti, err := cl.DescribeTopic(ctx, "restart")
	if err != nil {
		t.Fatal(err)
	}
	total := 0
	for _, p := range ti.Partitions {
		total += int(p.HighWatermark)
	}
	seen := map[string]bool{}
	for _, r := range consumeN(t, cl, "restart", []int32{0, 1}, client.Earliest(), total) {
		seen[string(r.Value)] = true
	}
	for v := range acked {
		if !seen[v] {
			t.Fatalf("acknowledged record %q is not in the log", v)
		}
	}
	if len(acked) != n {
		t.Fatalf("%d of %d acknowledged", len(acked), n)
	}
}

func TestProduceAfterClose(t *testing.T) {
	cl, _ := newClient(t)
	createTopic(t, cl, "c", 1, nil)
	if err := cl.Close(); err != nil {
		t.Fatal(err)
	}
	if err := cl.ProduceSync(ctxT(t), &client.Record{Topic: "c"}); !errors.Is(err, client.ErrClosed) {
		t.Fatalf("got %v, want ErrClosed", err)
	}
}

func TestCompression(t *testing.T) {
	for _, c := range []client.Compression{client.CompressionGzip, client.CompressionSnappy, client.CompressionLZ4, client.CompressionZstd} {
		t.Run(c.String(), func(t *testing.T) {
			cl, _ := newClient(t, client.WithCompression(c))
			createTopic(t, cl, "z", 1, nil)
			var recs []*client.Record
			for i := range 50 {
				recs = append(recs, &client.Record{Topic: "z", Value: bytes.Repeat(fmt.Appendf(nil, "%d", i), 100)})
			}
			if err := cl.ProduceSync(ctxT(t), recs...); err != nil {
				t.Fatal(err)
			}
			for i, r := range consumeN(t, cl, "z", []int32{0}, client.Earliest(), 50) {
				if !bytes.Equal(r.Value, recs[i].Value) {
					t.Fatalf("record %d differs", i)
				}
			}
		})
	}
}

func TestDeliveryTimeout(t *testing.T) {
	b := brokertestStart(t)
	px := newProxy(t, b.Addr())
	cl := clientOf(t, px, client.WithDeliveryTimeout(300*time.Millisecond), client.WithRetryBackoff(20*time.Millisecond), viaProxy(px))
	createTopic(t, cl, "dt", 1, nil)
	if err := cl.ProduceSync(ctxT(t), &client.Record{Topic: "dt", Value: []byte("warm")}); err != nil {
		t.Fatal(err)
	}
	px.Close() // the broker becomes unreachable
	err := cl.ProduceSync(ctxT(t), &client.Record{Topic: "dt", Value: []byte("lost")})
	if err == nil || !client.IsRetriable(err) {
		t.Fatalf("got %v, want a retriable error after the delivery timeout", err)
	}
	t.Log(err)
}

func TestAcksNoneAndLeader(t *testing.T) {
	for _, acks := range []client.Acks{client.AcksNone, client.AcksLeader} {
		cl, _ := newClient(t, client.WithAcks(acks), client.WithLinger(0))
		createTopic(t, cl, "a", 1, nil)
		r := &client.Record{Topic: "a", Value: []byte("x")}
		r2 := &client.Record{Topic: "a", Value: []byte("y")}
		if err := cl.ProduceSync(ctxT(t), r, r2); err != nil {
			t.Fatal(err)
		}
		want := int64(1)
		if acks == client.AcksNone {
			want = -1
		}
		if r2.Offset != want {
			t.Fatalf("acks %d: offset %d, want %d", acks, r2.Offset, want)
		}
		if got := consumeN(t, cl, "a", []int32{0}, client.Earliest(), 2); string(got[1].Value) != "y" {
			t.Fatalf("acks %d: read back %q", acks, got[1].Value)
		}
	}
}

// TestSlowRecordsAreNotHeldBehindSlowRequests: records produced slowly (here 1 ms apart) are
// each sent at once even while earlier requests are slow to come back (responses held by the
// proxy, as a broker's stalled fsync would hold them), instead of waiting behind the two small
// requests a partition may otherwise have in flight.
func TestSlowRecordsAreNotHeldBehindSlowRequests(t *testing.T) {
	b := brokertestStart(t)
	px := newProxy(t, b.Addr())
	cl := clientOf(t, px, client.WithLinger(0), client.WithLogger(tLogger{t}), viaProxy(px))
	direct := clientOf(t, b)
	createTopic(t, direct, "slow", 1, nil)
	if err := cl.ProduceSync(ctxT(t), &client.Record{Topic: "slow", Value: []byte("first")}); err != nil {
		t.Fatal(err)
	}
	release := px.HoldResponses()
	defer release()
	const n = 8
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := range n {
		wg.Add(1)
		cl.Produce(ctxT(t), &client.Record{Topic: "slow", Value: fmt.Appendf(nil, "r%d", i)}, func(_ *client.Record, err error) {
			errs <- err
			wg.Done()
		})
		time.Sleep(time.Millisecond)
	}
	// Every record reaches the broker although no response came back.
	deadline := time.Now().Add(5 * time.Second)
	for {
		end, err := direct.ListOffsets(ctxT(t), "slow", client.Latest(), 0)
		if err != nil {
			t.Fatal(err)
		}
		if end[0] == 1+n {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("log end %d with responses held, want %d: records waited in the client", end[0], 1+n)
		}
		time.Sleep(5 * time.Millisecond)
	}
	release()
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
}

// TestStreamBreakResends: connections cut while records are in flight; the producer opens a
// new stream, sends the unacknowledged requests again, and every acknowledged record is in
// the log in the end.
func TestStreamBreakResends(t *testing.T) {
	b := brokertestStart(t)
	px := newProxy(t, b.Addr())
	cl := clientOf(t, px, client.WithRetryBackoff(10*time.Millisecond), client.WithBatchBytes(2048), client.WithLogger(tLogger{t}), viaProxy(px))
	createTopic(t, cl, "sb", 1, nil)
	ctx := ctxT(t)
	var (
		mu    sync.Mutex
		acked int
		errs  []error
	)
	const n = 3000
	cb := func(r *client.Record, err error) {
		mu.Lock()
		defer mu.Unlock()
		if err != nil {
			errs = append(errs, err)
		} else {
			acked++
		}
	}
	for i := range n {
		cl.Produce(ctx, &client.Record{Topic: "sb", Value: fmt.Appendf(nil, "%d", i)}, cb)
		if i%1000 == 500 {
			px.Break()
		}
	}
	if err := cl.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	if acked != n || len(errs) > 0 {
		t.Fatalf("%d acknowledged, errors %v", acked, errors.Join(errs...))
	}
	direct := clientOf(t, b)
	ti, err := direct.DescribeTopic(ctx, "sb")
	if err != nil {
		t.Fatal(err)
	}
	hw := int(ti.Partitions[0].HighWatermark)
	seen := map[string]bool{}
	for _, r := range consumeN(t, direct, "sb", []int32{0}, client.Earliest(), hw) {
		seen[string(r.Value)] = true
	}
	if len(seen) != n {
		t.Fatalf("%d distinct records in the log (%d with duplicates), want %d", len(seen), hw, n)
	}
}

// TestCallbacksInOffsetOrder: the broker may answer a partition's pipelined requests out of
// order (it answers each when its fsync is done, from goroutines of its own); the callbacks of
// a partition still come in offset order.
func TestCallbacksInOffsetOrder(t *testing.T) {
	cl, _ := newClient(t, client.WithBatchBytes(512), client.WithMaxInFlight(8))
	createTopic(t, cl, "order-cb", 1, nil)
	var (
		mu   sync.Mutex
		offs []int64
	)
	for i := range 3000 {
		cl.Produce(ctxT(t), &client.Record{Topic: "order-cb", Value: []byte(fmt.Sprint(i))}, func(r *client.Record, err error) {
			if err != nil {
				t.Error(err)
				return
			}
			mu.Lock()
			offs = append(offs, r.Offset)
			mu.Unlock()
		})
	}
	if err := cl.Flush(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	if len(offs) != 3000 {
		t.Fatalf("%d callbacks", len(offs))
	}
	for i, o := range offs {
		if o != int64(i) {
			t.Fatalf("callback %d has offset %d (want %d): callbacks out of offset order", i, o, i)
		}
	}
}

// A produce stream ended by the producer's own cancellation (after a failed send) is a broken
// connection to retry, not a cancellation: the error a delivery timeout wraps stays retriable.
func TestStreamEndedByOwnCancelIsRetriable(t *testing.T) {
	for _, err := range []error{
		status.Error(codes.Canceled, context.Canceled.Error()),
		context.Canceled,
		status.Error(codes.Unavailable, "connection reset"),
	} {
		got := client.StreamEndErr("127.0.0.1:1", err)
		if !client.IsRetriable(got) {
			t.Fatalf("%v: %v, want a retriable error", err, got)
		}
	}
	if got := client.StreamEndErr("127.0.0.1:1", status.Error(codes.InvalidArgument, "bad")); client.IsRetriable(got) {
		t.Fatalf("an INVALID_ARGUMENT end became retriable: %v", got)
	}
}
