package node

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/hashicorp/raft"
	"github.com/hashicorp/serf/serf"
	"github.com/rs/zerolog"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/runnel-io/runnel/commitlog"
	"github.com/runnel-io/runnel/internal/recordbatch"
	runnelv1 "github.com/runnel-io/runnel/proto/runnel/v1"
)

func fastRaft(c *raft.Config) {
	c.HeartbeatTimeout = 300 * time.Millisecond
	c.ElectionTimeout = 300 * time.Millisecond
	c.LeaderLeaseTimeout = 150 * time.Millisecond
	c.CommitTimeout = 20 * time.Millisecond
}

func fastSerf(c *serf.Config) {
	ml := c.MemberlistConfig
	ml.ProbeInterval = 200 * time.Millisecond
	ml.ProbeTimeout = 100 * time.Millisecond
	ml.SuspicionMult = 2
	ml.GossipInterval = 10 * time.Millisecond
	ml.PushPullInterval = 500 * time.Millisecond
	ml.TCPTimeout = time.Second
	ml.DeadNodeReclaimTime = time.Millisecond
	c.ReapInterval = 100 * time.Millisecond
	c.ReconnectInterval = 100 * time.Millisecond
	c.ReconnectTimeout = time.Second
	c.TombstoneTimeout = time.Second
}

// testCluster is brokers of one cluster in this process, over loopback.
type testCluster struct {
	t     *testing.T
	dirs  map[int32]string
	addrs map[int32]string // a broker's port, kept across restarts
	nodes map[int32]*Node
	seed  string // the first broker's Serf address
	// failedTimeout for the brokers started (default 1 minute: no reassignment in a test
	// that does not ask for it).
	failedTimeout time.Duration
}

func newTestCluster(t *testing.T) *testCluster {
	return &testCluster{t: t, dirs: map[int32]string{}, addrs: map[int32]string{}, nodes: map[int32]*Node{}, failedTimeout: time.Minute}
}

func (c *testCluster) start(id int32) *Node {
	c.t.Helper()
	dir, ok := c.dirs[id]
	if !ok {
		dir = c.t.TempDir()
		c.dirs[id] = dir
	}
	addr := c.addrs[id]
	if addr == "" {
		addr = "127.0.0.1:0"
	}
	pr := partitionRaftForTests()
	cc := &ClusterConfig{
		SerfAddr: "127.0.0.1:0", Voters: 3, FailedTimeout: c.failedTimeout, PartitionRaft: pr,
		ReplicaRemoveDelay: 2 * time.Second, SyncInterval: 200 * time.Millisecond,
		TuneMetaRaft: fastRaft, TuneSerf: fastSerf,
	}
	if c.seed != "" {
		cc.Join = []string{c.seed}
		for oid, n := range c.nodes {
			if oid != id && n != nil {
				cc.Join = []string{n.SerfAddr()}
				break
			}
		}
	}
	var n *Node
	var err error
	for attempt := 0; ; attempt++ {
		n, err = Start(Config{DataDir: dir, Addr: addr, NodeID: id, Logger: zerolog.Nop(), Version: "test", Cluster: cc})
		if err == nil || attempt == 20 || c.addrs[id] == "" {
			break
		}
		time.Sleep(100 * time.Millisecond) // the port of a stopped broker may linger a moment
	}
	if err != nil {
		c.t.Fatalf("start broker %d: %v", id, err)
	}
	c.nodes[id] = n
	c.addrs[id] = n.Addr()
	if c.seed == "" {
		c.seed = n.SerfAddr()
	}
	c.t.Cleanup(func() { c.stop(id) })
	return n
}

func partitionRaftForTests() *raft.Config {
	rc := raft.DefaultConfig()
	fastRaft(rc)
	return rc
}

func (c *testCluster) stop(id int32) {
	n := c.nodes[id]
	if n == nil {
		return
	}
	c.nodes[id] = nil
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := n.Stop(ctx); err != nil {
		c.t.Logf("stop broker %d: %v", id, err)
	}
}

// conn dials a broker's port.
func (c *testCluster) conn(addr string) *grpc.ClientConn {
	c.t.Helper()
	cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		c.t.Fatal(err)
	}
	c.t.Cleanup(func() { _ = cc.Close() })
	return cc
}

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t *testing.T, d time.Duration, what string, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(d)
	var err error
	for time.Now().Before(deadline) {
		if err = cond(); err == nil {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("%s: not within %v: %v", what, d, err)
}

// startThree starts brokers 1, 2 and 3 and waits until the metadata has all three alive and
// voting.
func (c *testCluster) startThree() {
	c.t.Helper()
	for id := int32(1); id <= 3; id++ {
		c.start(id)
	}
	c.waitBrokers(3)
}

func (c *testCluster) waitBrokers(n int) {
	c.t.Helper()
	waitFor(c.t, 20*time.Second, "brokers alive", func() error {
		for _, nd := range c.nodes {
			if nd == nil {
				continue
			}
			list, err := nd.Cluster().Brokers()
			if err != nil {
				return err
			}
			alive := 0
			for _, b := range list {
				if b.State == "alive" {
					alive++
				}
			}
			if alive < n {
				return fmt.Errorf("broker %d sees %d alive", nd.ID(), alive)
			}
		}
		return nil
	})
}

// admin returns an AdminService client on any running broker.
func (c *testCluster) any() *Node {
	for _, n := range c.nodes {
		if n != nil {
			return n
		}
	}
	c.t.Fatal("no broker running")
	return nil
}

// createTopic creates a topic on the metadata leader (following NOT_METADATA_LEADER).
func (c *testCluster) createTopic(name string, parts, rf int32) {
	c.t.Helper()
	waitFor(c.t, 20*time.Second, "create topic", func() error {
		addr := c.any().Addr()
		for range 3 {
			_, err := runnelv1.NewAdminServiceClient(c.conn(addr)).CreateTopic(context.Background(),
				&runnelv1.CreateTopicRequest{Name: name, Partitions: parts, ReplicationFactor: rf})
			if err == nil {
				return nil
			}
			if info := errorInfo(err); info != nil && info.GetLeaderAddress() != "" {
				addr = info.GetLeaderAddress()
				continue
			}
			return err
		}
		return errors.New("redirected too often")
	})
}

func errorInfo(err error) *runnelv1.ErrorInfo {
	st, ok := status.FromError(err)
	if !ok {
		return nil
	}
	for _, d := range st.Details() {
		if info, ok := d.(*runnelv1.ErrorInfo); ok {
			return info
		}
	}
	return nil
}

// leaderOf returns the broker leading a partition (by its replicas' own view).
func (c *testCluster) leaderOf(topicName string, p int32) *Node {
	for _, n := range c.nodes {
		if n == nil {
			continue
		}
		pt, err := n.Registry().Partition(topicName, p)
		if err == nil && pt.IsLeader() {
			return n
		}
	}
	return nil
}

func (c *testCluster) waitLeader(topicName string, p int32) *Node {
	c.t.Helper()
	var l *Node
	waitFor(c.t, 20*time.Second, "partition leader", func() error {
		if l = c.leaderOf(topicName, p); l == nil {
			return errors.New("no leader")
		}
		return nil
	})
	return l
}

func testBatch(t *testing.T, i int) []byte {
	t.Helper()
	b := recordbatch.NewBuilder(recordbatch.BuilderOptions{})
	b.Add(recordbatch.Record{Value: []byte(fmt.Sprintf("record-%d", i)), Timestamp: time.Now().UnixMilli()})
	out, err := b.Build()
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// produce sends one batch with acks=all to addr; it returns the base offset or the error.
func (c *testCluster) produce(addr, topicName string, p int32, batch []byte) (int64, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	resp, err := runnelv1.NewProduceServiceClient(c.conn(addr)).Produce(ctx, &runnelv1.ProduceRequest{
		Acks:       runnelv1.Acks_ACKS_ALL,
		Partitions: []*runnelv1.ProducePartition{{Topic: topicName, Partition: p, Batches: batch}},
	})
	if err != nil {
		return -1, err
	}
	r := resp.GetPartitions()[0]
	if e := r.GetError(); e != nil {
		st, _ := status.New(codes.Code(e.GetCode()), e.GetMessage()).WithDetails(e.GetInfo())
		return -1, st.Err()
	}
	return r.GetBaseOffset(), nil
}

// TestClusterReplicatesAndFailsOver: three brokers in one process; an RF=3 topic; records
// produced with acks=all to the leader (a follower answers NOT_LEADER naming it); the leader's
// broker stopped; a new leader within a few election timeouts; after the old leader returns,
// every acknowledged record is at the same offset, byte for byte, on every replica.
func TestClusterReplicatesAndFailsOver(t *testing.T) {
	c := newTestCluster(t)
	c.startThree()
	c.createTopic("orders", 1, 3)
	leader := c.waitLeader("orders", 0)

	// A follower refuses with the leader's address.
	for _, n := range c.nodes {
		if n == leader {
			continue
		}
		_, err := c.produce(n.Addr(), "orders", 0, testBatch(t, -1))
		info := errorInfo(err)
		if status.Code(err) != codes.Unavailable || info.GetReason() != runnelv1.ErrorReason_ERROR_REASON_NOT_LEADER || info.GetLeaderAddress() != leader.Addr() {
			t.Fatalf("produce to follower %d: %v (info %v), want NOT_LEADER naming %s", n.ID(), err, info, leader.Addr())
		}
		break
	}

	acked := map[int64][]byte{}
	produceSome := func(from, to int) {
		for i := from; i < to; i++ {
			b := testBatch(t, i)
			var off int64
			waitFor(t, 15*time.Second, "produce", func() error {
				l := c.leaderOf("orders", 0)
				if l == nil {
					return errors.New("no leader")
				}
				var err error
				off, err = c.produce(l.Addr(), "orders", 0, b)
				return err
			})
			if _, dup := acked[off]; dup {
				t.Fatalf("offset %d acknowledged twice", off)
			}
			acked[off] = b
		}
	}
	produceSome(0, 50)

	old := leader.ID()
	start := time.Now()
	c.stop(old)
	nl := c.waitLeader("orders", 0)
	t.Logf("new leader broker %d after %v", nl.ID(), time.Since(start))
	produceSome(50, 100)

	c.start(old)
	waitFor(t, 20*time.Second, "replicas agree", func() error {
		return c.sameOnEveryReplica("orders", 0, acked)
	})
}

// sameOnEveryReplica checks that every running replica holds each acknowledged batch at its
// offset, the same bytes everywhere.
func (c *testCluster) sameOnEveryReplica(topicName string, p int32, acked map[int64][]byte) error {
	for _, n := range c.nodes {
		if n == nil {
			continue
		}
		pt, err := n.Registry().Partition(topicName, p)
		if err != nil {
			return fmt.Errorf("broker %d: %w", n.ID(), err)
		}
		for off, want := range acked {
			res, err := pt.Log().Read(off, commitlog.ReadOptions{MaxBytes: 1 << 20})
			if err != nil {
				return fmt.Errorf("broker %d offset %d: %w", n.ID(), off, err)
			}
			got := res.Batches
			if len(got) < len(want) || !bytes.Equal(stripBase(got[:len(want)]), stripBase(want)) {
				return fmt.Errorf("broker %d offset %d: bytes differ", n.ID(), off)
			}
		}
	}
	return nil
}

// stripBase zeroes a batch's base offset (the log sets it; the producer sent 0).
func stripBase(b []byte) []byte {
	out := append([]byte(nil), b...)
	for i := range 8 {
		out[i] = 0
	}
	return out
}
