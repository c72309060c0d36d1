package raftstore

import (
	"bytes"
	"fmt"
	"io"
	"math"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"

	"github.com/runnel-io/runnel/commitlog"
	"github.com/runnel-io/runnel/internal/recordbatch"
	"github.com/runnel-io/runnel/internal/vfs"
)

// makeBatch builds a batch of n records tagged tag.
func makeBatch(t testing.TB, n int, tag string) []byte {
	t.Helper()
	b := recordbatch.NewBuilder(recordbatch.BuilderOptions{})
	for i := 0; i < n; i++ {
		v := bytes.Repeat([]byte{'v'}, 100)
		copy(v, fmt.Sprintf("%s-%d", tag, i))
		b.Add(recordbatch.Record{Timestamp: time.Now().UnixMilli(), Key: []byte(tag), Value: v})
	}
	out, err := b.Build()
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func logOptions(snaps *SnapshotStore) commitlog.Options {
	o := commitlog.DefaultOptions()
	o.SegmentBytes = 4 << 10
	o.IndexIntervalBytes = 512
	o.Sync = commitlog.SyncNone // durability is commitlog's to test; real fsyncs only slow this suite
	o.FS = vfs.NoSync(vfs.OS)
	o.RetentionGuard = snaps.LatestIndex
	return o
}

// node is one replica: its stores, FSM, transport and raft.
type node struct {
	id    raft.ServerID
	dir   string
	addr  raft.ServerAddress
	trans *raft.InmemTransport
	log   *commitlog.Log
	logs  *LogStore
	snaps *SnapshotStore
	fsm   *FSM
	r     *raft.Raft

	stopOnce sync.Once
}

type cluster struct {
	t     *testing.T
	mu    sync.Mutex
	nodes map[raft.ServerID]*node
}

func newCluster(t *testing.T) *cluster {
	c := &cluster{t: t, nodes: map[raft.ServerID]*node{}}
	t.Cleanup(func() {
		for _, n := range c.all() {
			n.stop()
		}
	})
	return c
}

func (c *cluster) all() []*node {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []*node
	for _, n := range c.nodes {
		out = append(out, n)
	}
	return out
}

func raftConfig(id raft.ServerID) *raft.Config {
	conf := raft.DefaultConfig()
	conf.LocalID = id
	// Short enough for quick elections, long enough that the race detector's slowdown does not
	// cost a leader its lease under load.
	conf.HeartbeatTimeout = 400 * time.Millisecond
	conf.ElectionTimeout = 400 * time.Millisecond
	conf.LeaderLeaseTimeout = 400 * time.Millisecond
	conf.CommitTimeout = 5 * time.Millisecond
	conf.TrailingLogs = math.MaxUint64
	conf.SnapshotThreshold = math.MaxUint64 // snapshots are taken by the tests
	conf.SnapshotInterval = time.Hour
	conf.Logger = hclog.NewNullLogger()
	return conf
}

// start opens (or reopens) a node in dir and connects its transport to every running node.
func (c *cluster) start(id raft.ServerID, dir string) *node {
	t := c.t
	t.Helper()
	n := &node{id: id, dir: dir}
	var err error
	if n.snaps, err = NewSnapshotStore(filepath.Join(dir, "snapshots"), 2); err != nil {
		t.Fatal(err)
	}
	if n.log, err = commitlog.Open(filepath.Join(dir, "log"), logOptions(n.snaps)); err != nil {
		t.Fatal(err)
	}
	n.snaps.SetLogFirstIndex(n.log.FirstIndex)
	n.logs = NewLogStore(n.log)
	stable, err := OpenStableStore(nil, dir)
	if err != nil {
		t.Fatal(err)
	}
	n.fsm = NewFSM(n.logs, n.snaps, nil)
	n.addr, n.trans = raft.NewInmemTransport(raft.ServerAddress(id))
	if n.r, err = raft.NewRaft(raftConfig(id), n.fsm, n.logs, stable, n.snaps, n.trans); err != nil {
		t.Fatal(err)
	}
	c.mu.Lock()
	for _, o := range c.nodes {
		n.trans.Connect(o.addr, o.trans)
		o.trans.Connect(n.addr, n.trans)
	}
	c.nodes[id] = n
	c.mu.Unlock()
	// Stop this node before its directory goes: a directory made by t.TempDir after
	// newCluster is removed before newCluster's cleanup runs (cleanups run last in, first out),
	// and a node still running then panics saving its term into a directory that is gone.
	t.Cleanup(n.stop)
	return n
}

// stop shuts raft down and closes the log (a clean restart can follow). Idempotent.
func (n *node) stop() {
	n.stopOnce.Do(func() {
		n.r.Shutdown().Error()
		n.trans.Close()
		n.log.Close()
	})
}

// remove forgets a node (disconnecting every transport from it) and stops it.
func (c *cluster) remove(n *node) {
	c.mu.Lock()
	delete(c.nodes, n.id)
	for _, o := range c.nodes {
		o.trans.Disconnect(n.addr)
	}
	c.mu.Unlock()
	n.stop()
}

// partition cuts n off from every other node, both ways; heal reconnects.
func (c *cluster) partition(n *node) {
	for _, o := range c.all() {
		if o != n {
			n.trans.Disconnect(o.addr)
			o.trans.Disconnect(n.addr)
		}
	}
}

func (c *cluster) heal(n *node) {
	for _, o := range c.all() {
		if o != n {
			n.trans.Connect(o.addr, o.trans)
			o.trans.Connect(n.addr, n.trans)
		}
	}
}

// bootstrap starts count voters n1..n<count> and waits for a leader.
func (c *cluster) bootstrap(count int) []*node {
	var nodes []*node
	var conf raft.Configuration
	for i := 1; i <= count; i++ {
		id := raft.ServerID(fmt.Sprintf("n%d", i))
		n := c.start(id, c.t.TempDir())
		nodes = append(nodes, n)
		conf.Servers = append(conf.Servers, raft.Server{ID: id, Address: n.addr, Suffrage: raft.Voter})
	}
	if err := nodes[0].r.BootstrapCluster(conf).Error(); err != nil {
		c.t.Fatal(err)
	}
	c.leader()
	return nodes
}

// waitFor polls cond until it holds or 20 s pass.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// leader waits for a single leader among the running nodes and returns it.
func (c *cluster) leader(among ...*node) *node {
	c.t.Helper()
	if len(among) == 0 {
		among = c.all()
	}
	var l *node
	waitFor(c.t, "a leader", func() bool {
		l = nil
		for _, n := range among {
			if n.r.State() == raft.Leader {
				if l != nil {
					return false
				}
				l = n
			}
		}
		return l != nil
	})
	return l
}

// apply applies a batch through n and returns where it landed.
func apply(t *testing.T, n *node, batch []byte) (ApplyResult, error) {
	t.Helper()
	f := n.r.Apply(batch, 5*time.Second)
	if err := f.Error(); err != nil {
		return ApplyResult{}, err
	}
	switch r := f.Response().(type) {
	case ApplyResult:
		return r, nil
	case error:
		return ApplyResult{}, r
	default:
		return ApplyResult{}, fmt.Errorf("response %T", r)
	}
}

// mustApply applies count batches through the current leader, retrying one whose leader
// changed (it may then be in the log twice: these tests compare replicas, not contents).
func (c *cluster) mustApply(count int, tag string) []ApplyResult {
	t := c.t
	t.Helper()
	var out []ApplyResult
	for i := 0; i < count; i++ {
		for attempt := 0; ; attempt++ {
			res, err := apply(t, c.leader(), makeBatch(t, 1+i%4, fmt.Sprint(tag, i)))
			if err == nil {
				out = append(out, res)
				break
			}
			if attempt == 20 {
				t.Fatalf("apply %s%d: %v", tag, i, err)
			}
		}
	}
	return out
}

// converged waits until every node's log ends at the same index as the leader's and every node
// has applied it, then checks that the logs hold identical entries over the range they share
// and identical record batches (offsets included).
func (c *cluster) converged(nodes ...*node) {
	t := c.t
	t.Helper()
	if len(nodes) == 0 {
		nodes = c.all()
	}
	waitFor(t, "logs to converge", func() bool {
		last := nodes[0].log.LastIndex()
		for _, n := range nodes {
			// raft's AppliedIndex moves when entries are handed to the FSM goroutine, before
			// the FSM has applied them: wait for the FSM's own high watermark to reach the end.
			if n.log.LastIndex() != last || n.r.AppliedIndex() < last || n.r.CommitIndex() < last ||
				n.fsm.HighWatermark() != n.log.EndOffset() {
				return false
			}
		}
		return true
	})
	a := nodes[0]
	for _, b := range nodes[1:] {
		from := max(a.log.FirstIndex(), b.log.FirstIndex())
		sameEntries(t, a, b, from, a.log.LastIndex())
		if a.fsm.HighWatermark() != b.fsm.HighWatermark() || a.log.EndOffset() != b.log.EndOffset() {
			t.Fatalf("%s: hwm %d end %d; %s: hwm %d end %d", a.id, a.fsm.HighWatermark(), a.log.EndOffset(),
				b.id, b.fsm.HighWatermark(), b.log.EndOffset())
		}
	}
}

func sameEntries(t *testing.T, a, b *node, from, to uint64) {
	t.Helper()
	for i := from; i <= to; i++ {
		x, err := a.log.Entry(i)
		if err != nil {
			t.Fatalf("%s entry %d: %v", a.id, i, err)
		}
		y, err := b.log.Entry(i)
		if err != nil {
			t.Fatalf("%s entry %d: %v", b.id, i, err)
		}
		if x.Term != y.Term || x.Type != y.Type || !bytes.Equal(x.Data, y.Data) || !bytes.Equal(x.Extensions, y.Extensions) ||
			!x.AppendedAt.Equal(y.AppendedAt) {
			t.Fatalf("entry %d differs between %s (term %d type %d) and %s (term %d type %d)", i, a.id, x.Term, x.Type, b.id, y.Term, y.Type)
		}
	}
}

// batchAt reads the batch at offset from n's log, up to its high watermark.
func batchAt(t *testing.T, n *node, offset int64) []byte {
	t.Helper()
	res, err := n.log.Read(offset, commitlog.ReadOptions{MaxBytes: 1, MaxOffset: n.fsm.HighWatermark()})
	if err != nil {
		t.Fatalf("%s: read at %d: %v", n.id, offset, err)
	}
	batch, _, err := recordbatch.Next(res.Batches, 1<<20)
	if err != nil {
		t.Fatalf("%s: batch at %d: %v", n.id, offset, err)
	}
	return batch
}

// readStream reads a whole snapshot stream.
func readStream(t *testing.T, rc io.ReadCloser) []byte {
	t.Helper()
	b, err := io.ReadAll(rc)
	if err != nil {
		t.Fatal(err)
	}
	if err := rc.Close(); err != nil {
		t.Fatal(err)
	}
	return b
}
