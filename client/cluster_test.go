package client_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/raft"
	"github.com/rs/zerolog"

	"github.com/runnel-io/runnel/client"
	"github.com/runnel-io/runnel/internal/cluster"
	"github.com/runnel-io/runnel/internal/node"
)

// A real cluster: three brokers in this process (internal/node), with short Raft and Serf
// timeouts.

// Short Raft and Serf timeouts for the metadata group and gossip (the partitions keep the
// broker's defaults unless a test says otherwise).
var (
	fastRaft = cluster.FastRaftForTests
	fastSerf = cluster.FastSerfForTests
)

// startCluster starts brokers 1 to 3, stopped at cleanup (or by stop).
func startCluster(t *testing.T) (nodes map[int32]*node.Node, stop func(id int32)) {
	t.Helper()
	nodes = map[int32]*node.Node{}
	var mu sync.Mutex
	stop = func(id int32) {
		mu.Lock()
		n := nodes[id]
		delete(nodes, id)
		mu.Unlock()
		if n == nil {
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := n.Stop(ctx); err != nil {
			t.Logf("stop broker %d: %v", id, err)
		}
	}
	var seed string
	for id := int32(1); id <= 3; id++ {
		pr := raft.DefaultConfig()
		fastRaft(pr)
		cc := &node.ClusterConfig{SerfAddr: "127.0.0.1:0", Voters: 3, FailedTimeout: time.Minute, PartitionRaft: pr,
			ReplicaRemoveDelay: 2 * time.Second, SyncInterval: 200 * time.Millisecond, TuneMetaRaft: fastRaft, TuneSerf: fastSerf}
		if seed != "" {
			cc.Join = []string{seed}
		}
		n, err := node.Start(node.Config{DataDir: t.TempDir(), Addr: "127.0.0.1:0", NodeID: id, Logger: zerolog.Nop(), Version: "test", Cluster: cc})
		if err != nil {
			t.Fatalf("start broker %d: %v", id, err)
		}
		if seed == "" {
			seed = n.SerfAddr()
		}
		nodes[id] = n
		t.Cleanup(func() { stop(id) })
	}
	return nodes, stop
}

// TestClusterFailover: a client seeded with one broker of three creates an RF=3 topic,
// produces to it and follows it with a consumer; the leader of partition 0 stops; the producer
// and the consumer carry on at the new leader, and every record acknowledged is read (duplicates
// are allowed: a batch whose answer was lost is sent again), each partition in order.
func TestClusterFailover(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a cluster")
	}
	nodes, stop := startCluster(t)
	ctx := ctxT(t)
	cl := clientOf(t, nodes[3], client.WithRetryBackoff(50*time.Millisecond), client.WithLogger(tLogger{t}))
	// The cluster forms in the background: the first CreateTopic may find no metadata leader
	// yet, or fewer than 3 brokers.
	for {
		err := cl.CreateTopic(ctx, "fo", 2, 3, nil)
		if err == nil {
			break
		}
		if ctx.Err() != nil {
			t.Fatal(err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	const n = 400
	var (
		mu    sync.Mutex
		acked = map[string]bool{}
		errs  []error
	)
	produce := func(from, to int) {
		for i := from; i < to; i++ {
			r := &client.Record{Topic: "fo", Partition: int32(i % 2), ManualPartition: true, Value: fmt.Appendf(nil, "%d", i)}
			cl.Produce(ctx, r, func(r *client.Record, err error) {
				mu.Lock()
				defer mu.Unlock()
				if err != nil {
					errs = append(errs, err)
				} else {
					acked[string(r.Value)] = true
				}
			})
		}
		if err := cl.Flush(ctx); err != nil {
			t.Fatal(err)
		}
	}
	k := cl.NewConsumer()
	defer k.Close()
	for p := range int32(2) {
		if err := k.Assign("fo", p, client.Earliest()); err != nil {
			t.Fatal(err)
		}
	}
	produce(0, n)

	ti, err := cl.DescribeTopic(ctx, "fo")
	if err != nil {
		t.Fatal(err)
	}
	victim := ti.Partitions[0].Leader
	t.Logf("stopping broker %d, leader of fo/0", victim)
	stop(victim)
	produce(n, 2*n)
	mu.Lock()
	if len(errs) > 0 || len(acked) != 2*n {
		t.Fatalf("%d acknowledged, errors: %v", len(acked), errs)
	}
	mu.Unlock()

	seen := map[string]bool{}
	last := map[int32]int{0: -1, 1: -1}
	for len(seen) < 2*n {
		recs, err := k.Poll(ctx)
		if err != nil {
			t.Fatalf("poll after %d records: %v", len(seen), err)
		}
		for _, r := range recs {
			var i int
			fmt.Sscan(string(r.Value), &i)
			if !seen[string(r.Value)] && i < last[r.Partition] {
				t.Fatalf("partition %d: record %d after %d", r.Partition, i, last[r.Partition])
			}
			last[r.Partition] = max(last[r.Partition], i)
			seen[string(r.Value)] = true
		}
	}
}
