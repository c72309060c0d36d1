package client_test

import (
	"context"
	"fmt"
	"net"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/runnel-io/runnel/client"
)

// dialLog is a WithDialer that records the addresses the client connects to.
type dialLog struct {
	mu    sync.Mutex
	addrs []string
}

func (d *dialLog) dial(ctx context.Context, addr string) (net.Conn, error) {
	d.mu.Lock()
	d.addrs = append(d.addrs, addr)
	d.mu.Unlock()
	var nd net.Dialer
	return nd.DialContext(ctx, "tcp", addr)
}

func (d *dialLog) dialed() []string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return slices.Clone(d.addrs)
}

// TestFollowerReads: against three brokers and an RF=3 topic, a consumer of a client seeded
// with the partition's leader and WithFollowerReads reads every record from a follower (it
// connects to a follower's address; a client without the option connects to nothing but the
// leader); when that follower's broker stops, the consumer resubscribes to the leader and
// reads on, in order, without a gap.
func TestFollowerReads(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a cluster")
	}
	nodes, stop := startCluster(t)
	ctx := ctxT(t)
	admin := clientOf(t, nodes[1], client.WithRetryBackoff(50*time.Millisecond))
	for {
		err := admin.CreateTopic(ctx, "fr", 1, 3, nil)
		if err == nil {
			break
		}
		if ctx.Err() != nil {
			t.Fatal(err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	produce := func(cl *client.Client, from, to int) {
		var recs []*client.Record
		for i := from; i < to; i++ {
			recs = append(recs, &client.Record{Topic: "fr", Value: fmt.Appendf(nil, "%d", i)})
		}
		if err := cl.ProduceSync(ctx, recs...); err != nil {
			t.Fatal(err)
		}
	}
	produce(admin, 0, 100)
	ti, err := admin.DescribeTopic(ctx, "fr")
	if err != nil {
		t.Fatal(err)
	}
	p0 := ti.Partitions[0]
	if p0.Leader < 0 || len(p0.Replicas) != 3 {
		t.Fatalf("partition 0: leader %d, replicas %v", p0.Leader, p0.Replicas)
	}
	leaderAddr := nodes[p0.Leader].Addr()
	followers := map[string]int32{}
	for _, id := range p0.Replicas {
		if id != p0.Leader {
			followers[nodes[id].Addr()] = id
		}
	}

	// check reads n records in order from the consumer, from value from on.
	check := func(k *client.Consumer, from, n int) {
		t.Helper()
		next := from
		for next < from+n {
			recs, err := k.Poll(ctx)
			if err != nil {
				t.Fatalf("poll at record %d: %v", next, err)
			}
			for _, r := range recs {
				if want := fmt.Sprint(next); string(r.Value) != want {
					t.Fatalf("record %q at offset %d, want %q", r.Value, r.Offset, want)
				}
				next++
			}
		}
	}

	// Without the option: only the leader.
	var plain dialLog
	cl := clientOf(t, nodes[p0.Leader], client.WithDialer(plain.dial))
	k := cl.NewConsumer()
	if err := k.Assign("fr", 0, client.Earliest()); err != nil {
		t.Fatal(err)
	}
	check(k, 0, 100)
	k.Close()
	for _, a := range plain.dialed() {
		if a != leaderAddr {
			t.Fatalf("a client without follower reads connected to %s (the leader is %s)", a, leaderAddr)
		}
	}

	// With it: a follower.
	var fr dialLog
	cl = clientOf(t, nodes[p0.Leader], client.WithDialer(fr.dial), client.WithFollowerReads(true),
		client.WithRetryBackoff(50*time.Millisecond), client.WithLogger(tLogger{t}))
	k = cl.NewConsumer()
	defer k.Close()
	if err := k.Assign("fr", 0, client.Earliest()); err != nil {
		t.Fatal(err)
	}
	check(k, 0, 100)
	var used string
	for _, a := range fr.dialed() {
		if _, ok := followers[a]; ok {
			used = a
		}
	}
	if used == "" {
		t.Fatalf("the consumer with follower reads connected to %v only; the followers are %v", fr.dialed(), followers)
	}
	// New records come through the follower's stream too.
	produce(admin, 100, 150)
	check(k, 100, 50)

	// The follower's broker stops: the consumer goes on from the leader.
	t.Logf("stopping broker %d, the follower read", followers[used])
	stop(followers[used])
	if followers[used] == 1 {
		admin = clientOf(t, nodes[p0.Leader], client.WithRetryBackoff(50*time.Millisecond))
	}
	produce(admin, 150, 200)
	check(k, 150, 50)
}

// TestFollowerReadsSingleNode: with no follower to read from (one broker), WithFollowerReads
// reads from the leader, positions Latest and AtTime included.
func TestFollowerReadsSingleNode(t *testing.T) {
	cl, _ := newClient(t, client.WithFollowerReads(true))
	createTopic(t, cl, "one", 1, nil)
	ctx := ctxT(t)
	for i := range 10 {
		if err := cl.ProduceSync(ctx, &client.Record{Topic: "one", Value: fmt.Appendf(nil, "%d", i)}); err != nil {
			t.Fatal(err)
		}
	}
	recs := consumeN(t, cl, "one", []int32{0}, client.Earliest(), 10)
	if string(recs[9].Value) != "9" {
		t.Fatalf("last record %q", recs[9].Value)
	}
	k := cl.NewConsumer()
	defer k.Close()
	if err := k.Assign("one", 0, client.Latest()); err != nil {
		t.Fatal(err)
	}
	// The consumer resolves Latest in the background: produce until a record comes; the
	// first must be one produced after Assign.
	for i := 0; ; i++ {
		v := fmt.Sprint("after-", i)
		if err := cl.ProduceSync(ctx, &client.Record{Topic: "one", Value: []byte(v)}); err != nil {
			t.Fatal(err)
		}
		pctx, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
		got, err := k.Poll(pctx)
		cancel()
		if err != nil && ctx.Err() == nil && pctx.Err() != nil {
			continue
		}
		if err != nil || len(got) == 0 || got[0].Offset < 10 || !strings.HasPrefix(string(got[0].Value), "after-") {
			t.Fatalf("from Latest: %v %v", got, err)
		}
		return
	}
}
