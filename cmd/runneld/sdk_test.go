package main

import (
	"context"
	"fmt"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/runnel-io/runnel/client"
)

// TestSDKAgainstKilledBinary drives the real runneld with the Go SDK: records acknowledged
// (acks=all) before a kill -9 are all there, at the offsets the producer was told, after the
// restart; so is the group's committed offset; and both survive a clean stop too.
func TestSDKAgainstKilledBinary(t *testing.T) {
	bin := buildBinary(t)
	dir := t.TempDir()
	p := start(t, bin, dir)
	ctx, cancel := context.WithTimeout(context.Background(), 2*testTimeout)
	defer cancel()

	// A short delivery timeout: after the kill, Close fails what is left instead of retrying
	// (the restarted broker listens on another port).
	cl, err := client.New(ctx, client.WithBrokers(p.addr), client.WithDeliveryTimeout(10*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	if err := cl.CreateTopic(ctx, "k", 2, 1, nil); err != nil {
		t.Fatal(err)
	}
	tp0 := client.TopicPartition{Topic: "k", Partition: 0}
	if err := cl.CommitOffsets(ctx, "g", map[client.TopicPartition]int64{tp0: 0}, "m"); err != nil {
		t.Fatal(err)
	}

	type at struct {
		part int32
		off  int64
	}
	var (
		mu     sync.Mutex
		acked  = map[at]string{}
		killed = make(chan struct{})
		once   sync.Once
	)
	const total, killAfter = 20000, 1000
	for i := range total {
		v := fmt.Sprintf("v%d", i)
		cl.Produce(ctx, &client.Record{Topic: "k", Key: []byte(fmt.Sprint(i % 7)), Value: []byte(v)}, func(r *client.Record, err error) {
			if err != nil {
				return // indeterminate after the kill
			}
			mu.Lock()
			acked[at{r.Partition, r.Offset}] = v
			n := len(acked)
			mu.Unlock()
			if n >= killAfter {
				once.Do(func() {
					if err := p.cmd.Process.Signal(syscall.SIGKILL); err != nil {
						t.Error(err)
					}
					close(killed)
				})
			}
		})
		if i == total/2 {
			waitKilled(t, ctx, killed) // keep records in flight when the kill lands
		}
	}
	waitKilled(t, ctx, killed)
	_ = p.wait(t)
	_ = cl.Close() // fails what it cannot deliver: the broker is gone
	mu.Lock()
	n := len(acked)
	mu.Unlock()
	if n < killAfter {
		t.Fatalf("only %d records acknowledged", n)
	}

	check := func(p *proc, what string) {
		t.Helper()
		cl, err := client.New(ctx, client.WithBrokers(p.addr))
		if err != nil {
			t.Fatal(err)
		}
		defer cl.Close()
		ends, err := cl.ListOffsets(ctx, "k", client.Latest())
		if err != nil {
			t.Fatal(err)
		}
		k := cl.NewConsumer()
		defer k.Close()
		var want int64
		for part, end := range ends {
			want += end
			if err := k.Assign("k", part, client.Earliest()); err != nil {
				t.Fatal(err)
			}
		}
		got := map[at]string{}
		for int64(len(got)) < want {
			recs, err := k.Poll(ctx)
			if err != nil {
				t.Fatalf("%s: poll: %v", what, err)
			}
			for _, r := range recs {
				got[at{r.Partition, r.Offset}] = string(r.Value)
			}
		}
		mu.Lock()
		defer mu.Unlock()
		for a, v := range acked {
			if got[a] != v {
				t.Fatalf("%s: acknowledged %q at %d/%d, found %q", what, v, a.part, a.off, got[a])
			}
		}
		cos, err := cl.FetchCommitted(ctx, "g")
		if err != nil || len(cos) != 1 || cos[0].Offset != 0 || cos[0].Metadata != "m" {
			t.Fatalf("%s: committed offsets %+v, %v", what, cos, err)
		}
		t.Logf("%s: %d acknowledged records found among %d", what, len(acked), want)
	}
	p = start(t, bin, dir)
	check(p, "after kill -9")
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := p.wait(t); err != nil {
		t.Fatalf("clean stop: %v", err)
	}
	check(start(t, bin, dir), "after a clean stop")
}

func waitKilled(t *testing.T, ctx context.Context, killed <-chan struct{}) {
	t.Helper()
	select {
	case <-killed:
	case <-ctx.Done():
		t.Fatal("the broker was never killed: too few records acknowledged")
	}
}
