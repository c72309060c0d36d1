package cluster

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net"
	"os"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/raft"
	"github.com/hashicorp/serf/serf"
	"github.com/rs/zerolog"
)

// testNet is a set of in-process brokers: Raft over InmemTransport (all connected), Serf on
// loopback.
type testNet struct {
	t     *testing.T
	mu    sync.Mutex
	trans map[raft.ServerAddress]*raft.InmemTransport
	nodes map[int32]*testNode
	opts  func(*Config)
}

type testNode struct {
	stopped sync.Once
	id      int32
	dir     string
	serf    string // the Serf address it bound (reused on restart)
	trans   *raft.InmemTransport
	c       *Cluster
}

func newTestNet(t *testing.T, opts func(*Config)) *testNet {
	n := &testNet{t: t, trans: map[raft.ServerAddress]*raft.InmemTransport{}, nodes: map[int32]*testNode{}, opts: opts}
	return n
}

func testLogger(t *testing.T) zerolog.Logger {
	if os.Getenv("CLUSTER_TEST_LOG") == "" {
		return zerolog.Nop()
	}
	return zerolog.New(zerolog.NewConsoleWriter()).Level(zerolog.InfoLevel).With().Timestamp().Logger()
}

// fastRaft and fastSerf: the package's test timings (testing.go), with this package's own
// variations: a longer lease and faster appends, no reaping of failed members (tests look
// at them), and a quick leave.
func fastRaft(c *raft.Config) {
	FastRaftForTests(c)
	c.LeaderLeaseTimeout = 200 * time.Millisecond
	c.CommitTimeout = 5 * time.Millisecond
}

func fastSerf(c *serf.Config) {
	FastSerfForTests(c)
	c.ReapInterval = time.Second
	c.ReconnectInterval = 200 * time.Millisecond
	c.LeavePropagateDelay = 100 * time.Millisecond
	c.BroadcastTimeout = time.Second
	def := serf.DefaultConfig() // failed members are not reaped during a test
	c.ReconnectTimeout, c.TombstoneTimeout = def.ReconnectTimeout, def.TombstoneTimeout
}

// start starts broker id with dir (a new temp dir if ""), joining the given Serf addresses.
func (n *testNet) start(id int32, dir, serfBind string, join ...string) *testNode {
	n.t.Helper()
	if dir == "" {
		dir = n.t.TempDir()
	}
	if serfBind == "" {
		serfBind = "127.0.0.1:0"
	}
	addr := raft.ServerAddress(fmt.Sprintf("broker-%d", id))
	_, tr := raft.NewInmemTransport(addr)
	n.mu.Lock()
	for a, other := range n.trans {
		if a == addr {
			continue
		}
		tr.Connect(a, other)
		other.Connect(addr, tr)
	}
	n.trans[addr] = tr
	n.mu.Unlock()
	cfg := DefaultConfig()
	cfg.DataDir, cfg.BrokerID, cfg.Advertise, cfg.SerfBind, cfg.Join = dir, id, fmt.Sprintf("grpc-%d:9092", id), serfBind, join
	cfg.Transport = tr
	cfg.ReconcileInterval = 100 * time.Millisecond
	cfg.ApplyTimeout = 5 * time.Second
	cfg.Logger = testLogger(n.t).With().Int32("node", id).Logger()
	cfg.TuneRaft, cfg.TuneSerf = fastRaft, fastSerf
	if n.opts != nil {
		n.opts(&cfg)
	}
	c, err := New(cfg)
	if err != nil {
		n.t.Fatal(err)
	}
	if err := c.Start(); err != nil {
		_ = c.Close()
		n.t.Fatal(err)
	}
	nd := &testNode{id: id, dir: dir, serf: c.SerfAddr(), trans: tr, c: c}
	n.mu.Lock()
	n.nodes[id] = nd
	n.mu.Unlock()
	// Cleanups run last-in first-out: this one before the removal of a temp dir made
	// above, so nothing writes into a directory being removed.
	n.t.Cleanup(func() { n.stop(nd) })
	return nd
}

// stop closes a broker (no leave: a crash as the others see it) and cuts its transport.
func (n *testNet) stop(nd *testNode) {
	nd.stopped.Do(func() { n.stopOnce(nd) })
}

func (n *testNet) stopOnce(nd *testNode) {
	if err := nd.c.Close(); err != nil {
		n.t.Logf("close broker %d: %v", nd.id, err)
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.nodes[nd.id] == nd {
		delete(n.nodes, nd.id)
	}
	if n.trans[nd.trans.LocalAddr()] == nd.trans {
		delete(n.trans, nd.trans.LocalAddr())
	}
	for _, other := range n.trans {
		other.Disconnect(nd.trans.LocalAddr())
	}
	_ = nd.trans.Close()
}

// waitFor polls cond until it holds or the timeout passes.
func waitFor(t *testing.T, timeout time.Duration, what string, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s: %v", timeout, what, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (n *testNet) leader(t *testing.T) *testNode {
	t.Helper()
	var l *testNode
	waitFor(t, 10*time.Second, "a metadata leader", func() error {
		n.mu.Lock()
		defer n.mu.Unlock()
		for _, nd := range n.nodes {
			if nd.c.IsLeader() {
				l = nd
				return nil
			}
		}
		return errors.New("none")
	})
	return l
}

// onLeader runs fn on the current metadata leader, again on the next one if leadership
// moves under it (a loaded machine may see an election).
func (n *testNet) onLeader(t *testing.T, fn func(l *testNode) error) {
	t.Helper()
	var err error
	for range 5 {
		if err = fn(n.leader(t)); !errors.Is(err, ErrNotLeader) {
			break
		}
	}
	if err != nil {
		t.Fatal(err)
	}
}

func brokerSummary(c *Cluster) string {
	bs, err := c.Brokers()
	if err != nil {
		return err.Error()
	}
	s := ""
	for _, b := range bs {
		s += fmt.Sprintf("%d:%s:voter=%v ", b.ID, b.State, b.Voter)
	}
	return s
}

// waitBrokers waits until every node's metadata shows exactly want (id:state:voter=...).
func (n *testNet) waitBrokers(t *testing.T, want string) {
	t.Helper()
	waitFor(t, 20*time.Second, "brokers "+want, func() error {
		n.mu.Lock()
		defer n.mu.Unlock()
		for _, nd := range n.nodes {
			if got := brokerSummary(nd.c); got != want {
				return fmt.Errorf("broker %d sees %q", nd.id, got)
			}
		}
		return nil
	})
}

func (n *testNet) startThree(t *testing.T) (a, b, c *testNode) {
	a = n.start(1, "", "")
	n.leader(t)
	b = n.start(2, "", "", a.serf)
	c = n.start(3, "", "", a.serf)
	n.waitBrokers(t, "1:alive:voter=true 2:alive:voter=true 3:alive:voter=true ")
	return a, b, c
}

func assignmentString(c *Cluster, topicName string) string {
	as, err := c.Assignment(topicName)
	if err != nil {
		return err.Error()
	}
	return fmt.Sprint(as)
}

// waitSameAssignment waits until every node has the same assignment of topicName as want.
func (n *testNet) waitSameAssignment(t *testing.T, topicName, want string) {
	t.Helper()
	waitFor(t, 10*time.Second, "assignment of "+topicName+" everywhere", func() error {
		n.mu.Lock()
		defer n.mu.Unlock()
		for _, nd := range n.nodes {
			if got := assignmentString(nd.c, topicName); got != want {
				return fmt.Errorf("broker %d: %s, want %s", nd.id, got, want)
			}
		}
		return nil
	})
}

func TestClusterBootstrapReplicateFailover(t *testing.T) {
	n := newTestNet(t, func(c *Config) { c.FailedTimeout = time.Hour })
	a, b, c := n.startThree(t)
	l := n.leader(t) // broker 1, the one that bootstrapped, unless an election moved it
	f := b
	if l == b {
		f = c
	}
	if id, addr, ok := f.c.Leader(); !ok || id != l.id || addr != fmt.Sprintf("grpc-%d:9092", l.id) {
		t.Errorf("Leader() on %d = %d %q %v, want %d", f.id, id, addr, ok, l.id)
	}
	w := c.c.Watch()
	defer w.Close()

	// A follower refuses with the leader's address.
	ctx := context.Background()
	_, _, err := f.c.CreateTopic(ctx, TopicSpec{Name: "orders", Partitions: 6, ReplicationFactor: 3})
	var nle *NotLeaderError
	if !errors.As(err, &nle) || nle.LeaderID != l.id || nle.LeaderAddr != fmt.Sprintf("grpc-%d:9092", l.id) || !errors.Is(err, ErrNotLeader) {
		t.Fatalf("CreateTopic on a follower: %v", err)
	}
	// Bad input is refused before Raft.
	if _, _, err := l.c.CreateTopic(ctx, TopicSpec{Name: "x", Partitions: 1, ReplicationFactor: 4}); !errors.Is(err, ErrNotEnoughBrokers) {
		t.Errorf("RF 4 on 3 brokers: %v", err)
	}
	if _, _, err := l.c.CreateTopic(ctx, TopicSpec{Name: "..", Partitions: 1, ReplicationFactor: 1}); err == nil {
		t.Error("bad name accepted")
	}

	var info TopicInfo
	var asg []PartitionAssignment
	n.onLeader(t, func(l *testNode) (err error) {
		info, asg, err = l.c.CreateTopic(ctx, TopicSpec{Name: "orders", Partitions: 6, ReplicationFactor: 3, Configs: map[string]string{"retention.ms": "60000"}})
		return err
	})
	if info.ID == "" || info.Configs["retention.ms"] != "60000" {
		t.Errorf("created %+v", info)
	}
	if _, _, err := n.leader(t).c.CreateTopic(ctx, TopicSpec{Name: "orders", Partitions: 1, ReplicationFactor: 1}); !errors.Is(err, ErrTopicExists) {
		t.Errorf("second create: %v", err)
	}
	n.waitSameAssignment(t, "orders", fmt.Sprint(asg))
	_, leads := counts(func() [][]int32 {
		var out [][]int32
		for _, p := range asg {
			out = append(out, p.Replicas)
		}
		return out
	}())
	if fmt.Sprint(leads) != "map[1:2 2:2 3:2]" {
		t.Errorf("preferred leaders %v, want 2 each", leads)
	}
	waitFor(t, 5*time.Second, "the watcher to see the topic", func() error {
		select {
		case <-w.C():
		case <-time.After(time.Second):
		}
		for _, ch := range w.Changes() {
			if ch.Kind == ChangeTopicCreated && ch.Topic == "orders" && len(ch.Partitions) == 6 {
				return nil
			}
		}
		return errors.New("no topic-created change yet")
	})
	n.onLeader(t, func(l *testNode) error {
		_, err := l.c.AlterTopic(ctx, "orders", map[string]string{"retention.ms": "1000"}, nil)
		return err
	})
	n.onLeader(t, func(l *testNode) error {
		return l.c.CommitOffsets(ctx, "billing", []OffsetCommit{{Topic: "orders", TopicID: info.ID, Partition: 2, Offset: 17}})
	})
	waitFor(t, 5*time.Second, "alter and offsets on broker 3", func() error {
		ti, err := c.c.Topic("orders")
		if err != nil || ti.Configs["retention.ms"] != "1000" {
			return fmt.Errorf("topic %+v %v", ti, err)
		}
		offs, err := c.c.FetchOffsets("billing")
		if err != nil || len(offs) != 1 || offs[0].Offset != 17 {
			return fmt.Errorf("offsets %+v %v", offs, err)
		}
		return nil
	})

	// Kill the metadata leader: another leads, and the state survives.
	old := n.leader(t)
	n.stop(old)
	l = n.leader(t)
	if l == old {
		t.Fatal("the stopped broker still leads")
	}
	if got := assignmentString(l.c, "orders"); got != fmt.Sprint(asg) {
		t.Errorf("after failover: %s, want %v", got, asg)
	}
	states := map[int32]string{1: "alive:voter=true", 2: "alive:voter=true", 3: "alive:voter=true"}
	states[old.id] = "failed:voter=true"
	n.waitBrokers(t, summary(states))
	n.onLeader(t, func(l *testNode) error {
		_, _, err := l.c.CreateTopic(ctx, TopicSpec{Name: "payments", Partitions: 2, ReplicationFactor: 2})
		return err
	})
	l = n.leader(t)
	as, err := l.c.Assignment("payments")
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range as {
		if slices.Contains(p.Replicas, old.id) {
			t.Errorf("payments placed a replica on the failed broker %d: %+v", old.id, as)
		}
	}
	n.onLeader(t, func(l *testNode) error { return l.c.DeleteTopic(ctx, "payments") })
	if _, err := n.leader(t).c.Topic("payments"); !errors.Is(err, ErrUnknownTopic) {
		t.Errorf("after delete: %v", err)
	}

	// The old leader comes back with its data: it rejoins as the voter it was.
	again := n.start(old.id, old.dir, old.serf, l.serf)
	n.waitBrokers(t, "1:alive:voter=true 2:alive:voter=true 3:alive:voter=true ")
	n.waitSameAssignment(t, "orders", fmt.Sprint(asg))
	if again.c.Incarnation() != old.c.Incarnation() {
		t.Error("incarnation changed across a restart")
	}
	_ = a
}

// summary renders broker states as brokerSummary does.
func summary(states map[int32]string) string {
	s := ""
	for _, id := range slices.Sorted(maps.Keys(states)) {
		s += fmt.Sprintf("%d:%s ", id, states[id])
	}
	return s
}

func TestClusterFourthBrokerRebalanceLeave(t *testing.T) {
	n := newTestNet(t, func(c *Config) { c.FailedTimeout = time.Hour })
	_, b, _ := n.startThree(t)
	ctx := context.Background()
	n.onLeader(t, func(l *testNode) error {
		_, _, err := l.c.CreateTopic(ctx, TopicSpec{Name: "events", Partitions: 6, ReplicationFactor: 2})
		return err
	})
	// A fourth broker joins as a non-voter (3 voters already).
	d := n.start(4, "", "", b.serf)
	n.waitBrokers(t, "1:alive:voter=true 2:alive:voter=true 3:alive:voter=true 4:alive:voter=false ")
	cfg := n.leader(t).c.raft.Load().GetConfiguration().Configuration()
	for _, s := range cfg.Servers {
		if s.ID == d.c.localID && s.Suffrage != raft.Nonvoter {
			t.Errorf("broker 4 is %v in the raft configuration, want a non-voter", s.Suffrage)
		}
	}
	// A rebalance moves replicas onto it...
	var moves []Move
	n.onLeader(t, func(l *testNode) (err error) {
		moves, err = l.c.Rebalance(ctx)
		return err
	})
	if len(moves) == 0 {
		t.Fatal("rebalance moved nothing")
	}
	for _, m := range moves {
		if m.To != 4 {
			t.Errorf("move %+v not onto broker 4", m)
		}
	}
	// ... and it takes new work.
	var asg []PartitionAssignment
	n.onLeader(t, func(l *testNode) (err error) {
		_, asg, err = l.c.CreateTopic(ctx, TopicSpec{Name: "fresh", Partitions: 4, ReplicationFactor: 1})
		return err
	})
	on4 := 0
	for _, p := range asg {
		if p.Replicas[0] == 4 {
			on4++
		}
	}
	if on4 < 1 {
		t.Errorf("broker 4 got %d of 4 new partitions: %v", on4, asg)
	}
	all, _, _ := n.leader(t).c.fsm.allAssignments()
	reps, _ := counts(append(slices.Clone(all["events"]), all["fresh"]...))
	if spread(reps, []int32{1, 2, 3, 4}) > 1 {
		t.Errorf("after rebalance: %v", reps)
	}

	// Broker 2 leaves: its replicas move, it leaves the Raft group, and the non-voter 4
	// becomes a voter in its place.
	if err := b.c.Leave(); err != nil {
		t.Fatal(err)
	}
	n.stop(b)
	n.waitBrokers(t, "1:alive:voter=true 2:left:voter=false 3:alive:voter=true 4:alive:voter=true ")
	waitFor(t, 10*time.Second, "broker 2's replicas reassigned", func() error {
		for _, name := range []string{"events", "fresh"} {
			as, err := n.leader(t).c.Assignment(name)
			if err != nil {
				return err
			}
			rf := map[string]int{"events": 2, "fresh": 1}[name]
			for _, p := range as {
				if slices.Contains(p.Replicas, 2) || len(p.Replicas) != rf {
					return fmt.Errorf("%s: %+v", name, as)
				}
			}
		}
		return nil
	})
	l := n.leader(t)
	for _, s := range l.c.raft.Load().GetConfiguration().Configuration().Servers {
		if id, _, _ := parseServerID(s.ID); id == 2 {
			t.Errorf("broker 2 still in the raft configuration: %+v", s)
		}
	}
}

// TestClusterJoinBeforeSeedIsUp: a broker started before its seed keeps trying to join.
func TestClusterJoinBeforeSeedIsUp(t *testing.T) {
	n := newTestNet(t, nil)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	seed := l.Addr().String()
	_ = l.Close()
	b := n.start(2, "", "", seed)
	if b.c.Joined() {
		t.Fatal("joined a seed that is not up")
	}
	n.start(1, "", seed)
	n.waitBrokers(t, "1:alive:voter=true 2:alive:voter=true ")
	if !b.c.Joined() {
		t.Error("Joined() false after joining")
	}
}

func TestClusterWipedBrokerRejoinsAsNonVoter(t *testing.T) {
	n := newTestNet(t, func(c *Config) { c.FailedTimeout = time.Hour })
	a, _, c := n.startThree(t)
	ctx := context.Background()
	var asg []PartitionAssignment
	n.onLeader(t, func(l *testNode) (err error) {
		_, asg, err = l.c.CreateTopic(ctx, TopicSpec{Name: "orders", Partitions: 3, ReplicationFactor: 3})
		return err
	})
	oldID := c.c.localID
	n.stop(c)
	if err := os.RemoveAll(c.dir); err != nil {
		t.Fatal(err)
	}
	// Watch the leader's configuration: the new identity never votes while the old one is
	// still there.
	stop := make(chan struct{})
	violations := make(chan string, 1)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-stop:
				return
			case <-time.After(5 * time.Millisecond):
			}
			f := a.c.raft.Load().GetConfiguration()
			if f.Error() != nil {
				continue
			}
			hasOld, newVoter := false, false
			for _, s := range f.Configuration().Servers {
				id, _, _ := parseServerID(s.ID)
				hasOld = hasOld || s.ID == oldID
				newVoter = newVoter || (id == 3 && s.ID != oldID && s.Suffrage == raft.Voter)
			}
			if hasOld && newVoter {
				select {
				case violations <- fmt.Sprint(f.Configuration().Servers):
				default:
				}
			}
		}
	}()
	c2 := n.start(3, c.dir, c.serf, a.serf)
	if c2.c.Incarnation() == c.c.Incarnation() {
		t.Fatal("a wiped data dir kept its incarnation")
	}
	// It is re-added under its new identity, first as a non-voter, then promoted once it has
	// caught up; the old identity is gone.
	waitFor(t, 20*time.Second, "broker 3 re-added as a voter under its new incarnation", func() error {
		n.mu.Lock()
		defer n.mu.Unlock()
		for _, nd := range n.nodes {
			bs, err := nd.c.Brokers()
			if err != nil || len(bs) != 3 {
				return fmt.Errorf("broker %d: %v %v", nd.id, bs, err)
			}
			if b := bs[2]; b.Incarnation != c2.c.Incarnation() || b.State != BrokerAlive || !b.Voter {
				return fmt.Errorf("broker %d sees %+v", nd.id, b)
			}
		}
		return nil
	})
	n.waitBrokers(t, "1:alive:voter=true 2:alive:voter=true 3:alive:voter=true ")
	close(stop)
	wg.Wait()
	select {
	case v := <-violations:
		t.Errorf("the new identity voted while the old one was in the configuration: %s", v)
	default:
	}
	for _, s := range n.leader(t).c.raft.Load().GetConfiguration().Configuration().Servers {
		if s.ID == oldID {
			t.Errorf("old identity %s still in the configuration", oldID)
		}
	}
	// It has the metadata.
	n.waitSameAssignment(t, "orders", fmt.Sprint(asg))
}

func TestLoadOrCreateIdentity(t *testing.T) {
	dir := t.TempDir()
	if _, err := LoadOrCreateBrokerID(dir, -1); err == nil {
		t.Error("no id, none requested: no error")
	}
	id, err := LoadOrCreateBrokerID(dir, 7)
	if err != nil || id != 7 {
		t.Fatal(id, err)
	}
	if id, err := LoadOrCreateBrokerID(dir, -1); err != nil || id != 7 {
		t.Error(id, err)
	}
	if _, err := LoadOrCreateBrokerID(dir, 8); err == nil {
		t.Error("another id accepted for the same data dir")
	}
	inc, created, err := LoadOrCreateIncarnation(dir)
	if err != nil || !created || inc == "" {
		t.Fatal(inc, created, err)
	}
	inc2, created, err := LoadOrCreateIncarnation(dir)
	if err != nil || created || inc2 != inc {
		t.Error(inc2, created, err)
	}
	if sid := serverID(7, inc); true {
		if id, got, ok := parseServerID(sid); !ok || id != 7 || got != inc {
			t.Errorf("parseServerID(%s) = %d %s %v", sid, id, got, ok)
		}
	}
}

// TestClusterFailedBrokerAndSnapshots: with 5 voters wanted, a fourth broker joins as a
// voter once caught up, over a Raft snapshot (the log is compacted to a few entries, so it
// gets the bbolt file streamed). A broker failed for longer than FailedTimeout is removed
// from the Raft group and its replicas move.
func TestClusterFailedBrokerAndSnapshots(t *testing.T) {
	n := newTestNet(t, func(c *Config) {
		c.FailedTimeout = 500 * time.Millisecond
		c.Voters = 5
		c.TuneRaft = func(rc *raft.Config) {
			fastRaft(rc)
			rc.SnapshotThreshold = 4
			rc.SnapshotInterval = 50 * time.Millisecond
			rc.TrailingLogs = 1
		}
	})
	_, _, c := n.startThree(t)
	ctx := context.Background()
	for i := range 10 {
		n.onLeader(t, func(l *testNode) error {
			_, _, err := l.c.CreateTopic(ctx, TopicSpec{Name: fmt.Sprintf("t%d", i), Partitions: 2, ReplicationFactor: 2})
			return err
		})
	}
	// Once the leader's log no longer starts at 1, a new broker can only catch up from a
	// snapshot (InstallSnapshot: Persist on the leader, Restore on the new broker).
	waitFor(t, 10*time.Second, "the leader's log compacted after a snapshot", func() error {
		first, err := n.leader(t).c.store.FirstIndex()
		if err != nil || first <= 1 {
			return fmt.Errorf("first index %d (%v)", first, err)
		}
		return nil
	})
	d := n.start(4, "", "", c.serf)
	n.waitBrokers(t, "1:alive:voter=true 2:alive:voter=true 3:alive:voter=true 4:alive:voter=true ")
	want, _ := n.leader(t).c.Topics()
	got, _ := d.c.Topics()
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("broker 4 topics %v, want %v", got, want)
	}
	for _, ti := range want {
		n.waitSameAssignment(t, ti.Name, assignmentString(n.leader(t).c, ti.Name))
	}

	// Broker 3 fails (no leave): recorded failed, then after FailedTimeout removed from the
	// Raft group, its replicas moved to keep RF 2.
	n.stop(c)
	n.waitBrokers(t, "1:alive:voter=true 2:alive:voter=true 3:failed:voter=false 4:alive:voter=true ")
	l := n.leader(t)
	waitFor(t, 10*time.Second, "broker 3's replicas moved", func() error {
		for _, ti := range want {
			as, err := l.c.Assignment(ti.Name)
			if err != nil {
				return err
			}
			for _, p := range as {
				if slices.Contains(p.Replicas, 3) || len(p.Replicas) != 2 {
					return fmt.Errorf("%s: %+v", ti.Name, as)
				}
			}
		}
		return nil
	})
}

// TestClusterLeaderLeaves: the metadata leader leaves gracefully: leadership moves first,
// the new leader removes it from the Raft group and promotes the non-voter in its place.
func TestClusterLeaderLeaves(t *testing.T) {
	n := newTestNet(t, func(c *Config) { c.FailedTimeout = time.Hour })
	a, _, _ := n.startThree(t)
	n.start(4, "", "", a.serf)
	n.waitBrokers(t, "1:alive:voter=true 2:alive:voter=true 3:alive:voter=true 4:alive:voter=false ")
	old := n.leader(t)
	if err := old.c.Leave(); err != nil {
		t.Fatal(err)
	}
	n.stop(old)
	states := map[int32]string{1: "alive:voter=true", 2: "alive:voter=true", 3: "alive:voter=true", 4: "alive:voter=true"}
	states[old.id] = "left:voter=false"
	n.waitBrokers(t, summary(states))
	for _, s := range n.leader(t).c.raft.Load().GetConfiguration().Configuration().Servers {
		if id, _, _ := parseServerID(s.ID); id == old.id {
			t.Errorf("broker %d still in the raft configuration: %+v", old.id, s)
		}
	}
}

func TestConfigValidate(t *testing.T) {
	_, tr := raft.NewInmemTransport("x")
	good := DefaultConfig()
	good.DataDir, good.Advertise, good.SerfBind, good.Transport = t.TempDir(), "a:1", "127.0.0.1:0", tr
	if err := good.Validate(); err != nil {
		t.Fatal(err)
	}
	for name, mut := range map[string]func(*Config){
		"no dir":       func(c *Config) { c.DataDir = "" },
		"negative id":  func(c *Config) { c.BrokerID = -1 },
		"no advertise": func(c *Config) { c.Advertise = "" },
		"no serf":      func(c *Config) { c.SerfBind = "" },
		"no transport": func(c *Config) { c.Transport = nil },
		"4 voters":     func(c *Config) { c.Voters = 4 },
		"bad timeout":  func(c *Config) { c.ApplyTimeout = -1 },
	} {
		c := good
		mut(&c)
		if err := c.Validate(); err == nil {
			t.Errorf("%s: no error", name)
		}
		if _, err := New(c); err == nil {
			t.Errorf("%s: New accepted it", name)
		}
	}
}
