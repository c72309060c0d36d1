package raftnet

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/raft"
	"github.com/rs/zerolog"
)

// newNet returns a Network serving a fresh loopback listener, closed at the test's end.
func newNet(t testing.TB, timeout time.Duration) *Network {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return newNetOn(t, ln, timeout)
}

// newNetOn returns a Network serving ln. Its heartbeats are plain RPCs and it probes no one
// (the tests of beats.go and liveness.go turn them on with newNetWith).
func newNetOn(t testing.TB, ln net.Listener, timeout time.Duration) *Network {
	t.Helper()
	return newNetWith(t, ln, Config{Timeout: timeout, BeatInterval: -1, ProbeInterval: -1})
}

func newNetWith(t testing.TB, ln net.Listener, cfg Config) *Network {
	t.Helper()
	cfg.Advertise, cfg.Listener, cfg.Logger = raft.ServerAddress(ln.Addr().String()), ln, zerolog.Nop()
	n, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = n.Close()
		_ = ln.Close()
	})
	return n
}

// waitFor polls cond until it holds or the timeout passes.
func waitFor(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// fsm counts applied commands; its snapshot is the count plus a blob (to make snapshots span
// several chunks).
type fsm struct {
	mu       sync.Mutex
	applied  uint64
	blob     int
	restored int
}

func (f *fsm) Apply(l *raft.Log) any {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.applied++
	return f.applied
}

func (f *fsm) count() uint64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.applied
}

func (f *fsm) restores() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.restored
}

func (f *fsm) Snapshot() (raft.FSMSnapshot, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return &fsmSnap{applied: f.applied, blob: f.blob}, nil
}

func (f *fsm) Restore(rc io.ReadCloser) error {
	defer rc.Close()
	b, err := io.ReadAll(rc)
	if err != nil {
		return err
	}
	if len(b) < 8 {
		return fmt.Errorf("snapshot of %d bytes", len(b))
	}
	for i, c := range b[8:] {
		if c != byte(i) {
			return fmt.Errorf("snapshot byte %d is %d", i, c)
		}
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.applied = binary.BigEndian.Uint64(b)
	f.restored++
	return nil
}

type fsmSnap struct {
	applied uint64
	blob    int
}

func (s *fsmSnap) Persist(sink raft.SnapshotSink) error {
	b := binary.BigEndian.AppendUint64(nil, s.applied)
	for i := range s.blob {
		b = append(b, byte(i))
	}
	if _, err := io.Copy(sink, bytes.NewReader(b)); err != nil {
		_ = sink.Cancel()
		return err
	}
	return sink.Close()
}

func (s *fsmSnap) Release() {}

func testRaftConfig(id raft.ServerID) *raft.Config {
	c := raft.DefaultConfig()
	c.LocalID = id
	c.HeartbeatTimeout = 300 * time.Millisecond
	c.ElectionTimeout = 300 * time.Millisecond
	c.LeaderLeaseTimeout = 150 * time.Millisecond
	c.CommitTimeout = 20 * time.Millisecond
	c.LogOutput = io.Discard
	if os.Getenv("RAFTNET_DEBUG") != "" {
		c.LogOutput = os.Stderr
		c.LogLevel = "WARN"
	}
	return c
}

type node struct {
	r   *raft.Raft
	fsm *fsm
}

// startNode starts group's raft on broker i of nets; bootstrap with every broker as a voter
// when boot is set.
func startNode(t testing.TB, nets []*Network, i int, group string, conf *raft.Config, boot bool, blob int) *node {
	t.Helper()
	trans, err := nets[i].Transport(group)
	if err != nil {
		t.Fatal(err)
	}
	f := &fsm{blob: blob}
	store := raft.NewInmemStore()
	r, err := raft.NewRaft(conf, f, store, store, raft.NewInmemSnapshotStore(), trans)
	if err != nil {
		t.Fatal(err)
	}
	if boot {
		var cfg raft.Configuration
		for j, n := range nets {
			cfg.Servers = append(cfg.Servers, raft.Server{Suffrage: raft.Voter, ID: brokerID(j), Address: n.Addr()})
		}
		if err := r.BootstrapCluster(cfg).Error(); err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(func() {
		trans.(*Transport).Abort() // as the broker does: replication waiting for a closed peer ends now
		_ = r.Shutdown().Error()
	})
	return &node{r: r, fsm: f}
}

func brokerID(i int) raft.ServerID { return raft.ServerID(fmt.Sprintf("b%d", i)) }

// groupPair starts two Networks with cfg (b on lnB, which a test may close to take b away) and
// returns the transports of group "g" on each.
func groupPair(t *testing.T, cfg Config) (a, b *Network, lnB net.Listener, ta, tb raft.Transport) {
	t.Helper()
	a = newNetWith(t, listen(t), cfg)
	lnB = listen(t)
	b = newNetWith(t, lnB, cfg)
	var err error
	if ta, err = a.Transport("g"); err != nil {
		t.Fatal(err)
	}
	if tb, err = b.Transport("g"); err != nil {
		t.Fatal(err)
	}
	return a, b, lnB, ta, tb
}
