package raftnet

import (
	"net"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/raft"
)

func listen(t *testing.T) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return ln
}

// TestCoalescedHeartbeats: a group's first heartbeat goes out as an RPC; after that the
// follower's handler keeps receiving the group's heartbeat in the per-broker beats frames, and
// Raft's heartbeats are answered with the follower's latest answer; when Raft stops
// heartbeating the beats stop; when the follower is gone the answers go stale and heartbeats
// fail as RPCs.
func TestCoalescedHeartbeats(t *testing.T) {
	cfg := Config{Timeout: 500 * time.Millisecond, BeatInterval: 20 * time.Millisecond, BeatFresh: 200 * time.Millisecond, BeatExpiry: time.Second, ProbeInterval: -1}
	a, b, lnB, ta, tb := groupPair(t, cfg)
	var calls atomic.Int64
	tb.SetHeartbeatHandler(func(rpc raft.RPC) {
		calls.Add(1)
		req := rpc.Command.(*raft.AppendEntriesRequest)
		rpc.Respond(&raft.AppendEntriesResponse{Term: req.Term + 90, Success: true}, nil)
	})
	hb := &raft.AppendEntriesRequest{RPCHeader: raft.RPCHeader{ProtocolVersion: raft.ProtocolVersionMax, Addr: []byte(a.Addr()), ID: []byte("a")}, Term: 9}
	var resp raft.AppendEntriesResponse
	if err := ta.AppendEntries("b", b.Addr(), hb, &resp); err != nil || resp.Term != 99 || !resp.Success {
		t.Fatalf("first heartbeat: %v %+v", err, resp)
	}
	if calls.Load() < 1 {
		t.Fatal("the first heartbeat did not reach the handler")
	}
	// The beats carry it on without further calls.
	waitFor(t, 2*time.Second, "beats", func() bool { return calls.Load() >= 5 })
	before := b.Stats().FramesIn
	for range 50 {
		resp = raft.AppendEntriesResponse{}
		if err := ta.AppendEntries("b", b.Addr(), hb, &resp); err != nil || resp.Term != 99 || !resp.Success {
			t.Fatalf("coalesced heartbeat: %v %+v", err, resp)
		}
	}
	if got := b.Stats().FramesIn - before; got > 10 {
		t.Fatalf("50 heartbeats sent %d frames: not coalesced", got)
	}
	// A new term is not answered with the old term's answer.
	hb2 := *hb
	hb2.Term = 10
	resp = raft.AppendEntriesResponse{}
	if err := ta.AppendEntries("b", b.Addr(), &hb2, &resp); err != nil || resp.Term != 100 {
		t.Fatalf("heartbeat of a new term: %v %+v", err, resp)
	}
	// Raft stops heartbeating (leadership lost): the beats stop after BeatExpiry.
	time.Sleep(cfg.BeatExpiry + 100*time.Millisecond)
	n := calls.Load()
	time.Sleep(200 * time.Millisecond)
	if calls.Load() != n {
		t.Fatal("beats go on for a group whose Raft stopped heartbeating")
	}
	// The follower goes away: its answer goes stale, and the heartbeat fails.
	if err := ta.AppendEntries("b", b.Addr(), &hb2, &resp); err != nil {
		t.Fatal(err)
	}
	_ = b.Close()
	_ = lnB.Close()
	time.Sleep(cfg.BeatFresh + 100*time.Millisecond)
	if err := ta.AppendEntries("b", b.Addr(), &hb2, &resp); err == nil {
		t.Fatalf("heartbeat to a closed broker answered %+v", resp)
	}
}

// TestProbeReportsPeerDown: a broker that leads a group here is probed; when it goes away it
// is reported down once.
func TestProbeReportsPeerDown(t *testing.T) {
	down := make(chan raft.ServerAddress, 4)
	a := newNetWith(t, listen(t), Config{Timeout: time.Second, BeatInterval: -1, ProbeInterval: 20 * time.Millisecond,
		ProbeTimeout: 200 * time.Millisecond, PeerDown: func(addr raft.ServerAddress) { down <- addr }})
	lnB := listen(t)
	b := newNetWith(t, lnB, Config{Timeout: time.Second, BeatInterval: -1, ProbeInterval: -1})
	ta, err := a.Transport("g")
	if err != nil {
		t.Fatal(err)
	}
	serve(t, ta, nil)
	tb, err := b.Transport("g")
	if err != nil {
		t.Fatal(err)
	}
	// b leads g: it sends a an AppendEntries, so a learns who to probe.
	var resp raft.AppendEntriesResponse
	req := &raft.AppendEntriesRequest{RPCHeader: raft.RPCHeader{ProtocolVersion: raft.ProtocolVersionMax, Addr: []byte(b.Addr())}, Term: 1, PrevLogEntry: 1}
	if err := tb.AppendEntries("a", a.Addr(), req, &resp); err != nil {
		t.Fatal(err)
	}
	time.Sleep(200 * time.Millisecond)
	select {
	case addr := <-down:
		t.Fatalf("%s reported down while it answers", addr)
	default:
	}
	_ = b.Close()
	_ = lnB.Close()
	select {
	case addr := <-down:
		if addr != b.Addr() {
			t.Fatalf("reported %s, want %s", addr, b.Addr())
		}
	case <-time.After(2 * time.Second):
		t.Fatal("a closed broker was not reported down")
	}
	time.Sleep(200 * time.Millisecond)
	if len(down) != 0 {
		t.Fatal("reported down more than once")
	}
}

// TestGroupActive: a group that just received an AppendEntries reports a live leader; one
// that received nothing, or does not exist, does not.
func TestGroupActive(t *testing.T) {
	a := newNet(t, time.Second)
	b := newNet(t, time.Second)
	ta, err := a.Transport("g")
	if err != nil {
		t.Fatal(err)
	}
	serve(t, ta, nil)
	if _, err := b.Transport("quiet"); err != nil {
		t.Fatal(err)
	}
	for _, g := range []string{"g", "quiet", "missing"} {
		if active, err := b.GroupActive(a.Addr(), g); err != nil || active {
			t.Fatalf("%s before any append: active %v, err %v", g, active, err)
		}
	}
	tb, err := b.Transport("g")
	if err != nil {
		t.Fatal(err)
	}
	var resp raft.AppendEntriesResponse
	req := &raft.AppendEntriesRequest{RPCHeader: raft.RPCHeader{ProtocolVersion: raft.ProtocolVersionMax, Addr: []byte(b.Addr())}, Term: 1, PrevLogEntry: 1}
	if err := tb.AppendEntries("a", a.Addr(), req, &resp); err != nil {
		t.Fatal(err)
	}
	if active, err := b.GroupActive(a.Addr(), "g"); err != nil || !active {
		t.Fatalf("after an append: active %v, err %v", active, err)
	}
	if active, err := a.GroupActive(b.Addr(), "g"); err != nil || !active {
		t.Fatalf("the sender (a leader) after an append: active %v, err %v", active, err)
	}
}

// TestGroupActiveNowDialsWithinBackoff: after a failed dial, GroupActive fails at once with the
// remembered error until the backoff has passed, even once the broker is back; GroupActiveNow
// dials and gets the answer (what a forced-election retry after a healed cut needs).
func TestGroupActiveNowDialsWithinBackoff(t *testing.T) {
	a := newNet(t, time.Second)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := raft.ServerAddress(ln.Addr().String())
	_ = ln.Close() // nothing listens there yet: dials are refused
	if _, err := a.GroupActive(addr, "g"); err == nil {
		t.Fatal("asked a broker that is not there")
	}
	// Hold the backoff of that failure open, as a run of failed dials during a cut does.
	a.mu.Lock()
	p := a.peers[peerKey{addr, laneCtrl}]
	a.mu.Unlock()
	p.mu.Lock()
	p.retryAt = time.Now().Add(time.Hour)
	p.mu.Unlock()

	ln, err = net.Listen("tcp", string(addr)) // the broker is back
	if err != nil {
		t.Skipf("cannot listen on %s again: %v", addr, err)
	}
	b := newNetOn(t, ln, time.Second)
	if _, err := b.Transport("g"); err != nil {
		t.Fatal(err)
	}
	if _, err := a.GroupActive(addr, "g"); err == nil {
		t.Fatal("GroupActive dialed within the backoff")
	}
	if active, err := a.GroupActiveNow(addr, "g"); err != nil || active {
		t.Fatalf("GroupActiveNow: active %v, err %v; want an answer (not active)", active, err)
	}
}
