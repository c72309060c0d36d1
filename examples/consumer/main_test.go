package main

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/runnel-io/runnel/client"
	"github.com/runnel-io/runnel/internal/brokertest"
)

// setup starts a broker with topic "demo" (3 partitions) holding n records, value "v<i>" and
// key "k<i%5>", and returns a client of it and the lines the consumer should print.
func setup(t *testing.T, ctx context.Context, n int) (*client.Client, map[string]bool) {
	t.Helper()
	b := brokertest.Start(t)
	cl, err := client.New(ctx, client.WithBrokers(b.Addr()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cl.Close() })
	if err := cl.CreateTopic(ctx, "demo", 3, 1, nil); err != nil {
		t.Fatal(err)
	}
	recs := make([]*client.Record, n)
	for i := range recs {
		recs[i] = &client.Record{Topic: "demo", Key: fmt.Appendf(nil, "k%d", i%5), Value: fmt.Appendf(nil, "v%d", i)}
	}
	if err := cl.ProduceSync(ctx, recs...); err != nil {
		t.Fatal(err)
	}
	want := map[string]bool{}
	for _, r := range recs {
		want[fmt.Sprintf("partition=%d offset=%d key=%s value=%s", r.Partition, r.Offset, r.Key, r.Value)] = true
	}
	return cl, want
}

func TestConsumerPrintsWhatWasProduced(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cl, want := setup(t, ctx, 40)
	var out strings.Builder
	if err := run(ctx, cl, &out, options{Topic: "demo", Count: 40}); err != nil {
		t.Fatal(err)
	}
	got := strings.Split(strings.TrimSpace(out.String()), "\n")
	if len(got) != 40 {
		t.Fatalf("printed %d lines, want 40:\n%s", len(got), out.String())
	}
	for _, l := range got {
		if !want[l] {
			t.Errorf("unexpected line %q", l)
		}
		delete(want, l)
	}
	if len(want) != 0 {
		t.Errorf("not printed: %v", want)
	}
}

func TestConsumerGroupResumes(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cl, want := setup(t, ctx, 30)
	var out strings.Builder
	for _, n := range []int{7, 13, 10} { // three runs of the same group share the records out
		before := out.Len()
		if err := run(ctx, cl, &out, options{Topic: "demo", Group: "printer", Count: n}); err != nil {
			t.Fatal(err)
		}
		if got := strings.Count(out.String()[before:], "\n"); got != n {
			t.Fatalf("run printed %d lines, want %d", got, n)
		}
	}
	for _, l := range strings.Split(strings.TrimSpace(out.String()), "\n") {
		if !want[l] {
			t.Errorf("unexpected or repeated line %q", l)
		}
		delete(want, l)
	}
	if len(want) != 0 {
		t.Errorf("not printed: %v", want)
	}
}

// cancelAfter is an io.Writer that cancels a context once n lines were written: a stand-in
// for Ctrl-C.
type cancelAfter struct {
	mu     sync.Mutex
	b      strings.Builder
	n      int
	cancel context.CancelFunc
}

func (w *cancelAfter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.b.Write(p)
	if strings.Count(w.b.String(), "\n") >= w.n {
		w.cancel()
	}
	return len(p), nil
}

func TestConsumerStopsOnCancel(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cl, want := setup(t, ctx, 20)
	runCtx, interrupt := context.WithCancel(ctx)
	w := &cancelAfter{n: 20, cancel: interrupt}
	// Count 0: only the cancellation ends it, and it is a clean exit.
	if err := run(runCtx, cl, w, options{Topic: "demo", Group: "g"}); err != nil {
		t.Fatal(err)
	}
	if got := strings.Count(w.b.String(), "\n"); got != len(want) {
		t.Fatalf("printed %d lines, want %d", got, len(want))
	}
	// Everything printed was committed.
	cos, err := cl.FetchCommitted(ctx, "g")
	if err != nil {
		t.Fatal(err)
	}
	var sum int64
	for _, co := range cos {
		sum += co.Offset
	}
	if sum != 20 {
		t.Errorf("committed %+v, want offsets summing to 20", cos)
	}
}
