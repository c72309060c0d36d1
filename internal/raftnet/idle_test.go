package raftnet

import (
	"net"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/raft"
)

// TestIdleAppendsAnsweredLocally: an idle AppendEntries goes out until the follower has
// acknowledged it; its repeats are then answered on the leader's side (plain and pipelined)
// while the follower answers the group's coalesced heartbeats; any change (commit index, term)
// goes out; when the follower is gone the repeats go out and fail.
func TestIdleAppendsAnsweredLocally(t *testing.T) {
	cfg := Config{Timeout: 500 * time.Millisecond, BeatInterval: 20 * time.Millisecond, BeatFresh: 200 * time.Millisecond, ProbeInterval: -1, MaxRPCsInFlight: 4,
		ReplicationPatience: -1} // the last append must fail at once
	a, b, lnB, ta, tb := groupPair(t, cfg)
	// follow answers a follower's appends (counting them) and heartbeats with success.
	follow := func(tr raft.Transport, appends *atomic.Int64) {
		serveCounting(t, tr, nil, appends)
		tr.(*Transport).SetHeartbeatHandler(func(rpc raft.RPC) {
			req := rpc.Command.(*raft.AppendEntriesRequest)
			rpc.Respond(&raft.AppendEntriesResponse{Term: req.Term, Success: true}, nil)
		})
	}
	var appends atomic.Int64
	follow(tb, &appends)
	hdr := raft.RPCHeader{ProtocolVersion: raft.ProtocolVersionMax, Addr: []byte(a.Addr()), ID: []byte("a")}
	// The heartbeat that starts the group's beats.
	var resp raft.AppendEntriesResponse
	if err := ta.AppendEntries("b", b.Addr(), &raft.AppendEntriesRequest{RPCHeader: hdr, Term: 3}, &resp); err != nil || !resp.Success {
		t.Fatalf("heartbeat: %v %+v", err, resp)
	}
	idle := &raft.AppendEntriesRequest{RPCHeader: hdr, Term: 3, PrevLogEntry: 7, PrevLogTerm: 3, LeaderCommitIndex: 7}
	send := func(req *raft.AppendEntriesRequest) (raft.AppendEntriesResponse, error) {
		var resp raft.AppendEntriesResponse
		err := ta.AppendEntries("b", b.Addr(), req, &resp)
		return resp, err
	}
	if r, err := send(idle); err != nil || !r.Success || r.LastLog != 7 {
		t.Fatalf("first idle append: %v %+v", err, r)
	}
	if appends.Load() != 1 {
		t.Fatalf("first idle append reached the follower %d times", appends.Load())
	}
	waitFor(t, 2*time.Second, "a fresh beat answer", func() bool {
		_, _ = send(idle)
		return appends.Load() == 1
	})
	for range 20 {
		if r, err := send(idle); err != nil || !r.Success || r.LastLog != 7 || r.Term != 3 {
			t.Fatalf("repeat: %v %+v", err, r)
		}
	}
	// Pipelined repeats, too.
	p, err := ta.AppendEntriesPipeline("b", b.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	for range 5 {
		var r raft.AppendEntriesResponse
		f, err := p.AppendEntries(idle, &r)
		if err != nil {
			t.Fatal(err)
		}
		if got := <-p.Consumer(); got != f || f.Error() != nil || !r.Success || r.LastLog != 7 {
			t.Fatalf("pipelined repeat: %v %+v", f.Error(), r)
		}
	}
	if n := appends.Load(); n != 1 {
		t.Fatalf("repeats reached the follower: %d appends", n)
	}
	if _, at, ok := ta.(*Transport).Progress(b.Addr()); !ok || time.Since(at) > time.Second {
		t.Fatal("a local answer does not count as the follower's progress")
	}
	// A new commit index goes out, and then its repeats are local.
	changed := *idle
	changed.LeaderCommitIndex = 8
	changed.PrevLogEntry = 8
	for range 3 {
		if r, err := send(&changed); err != nil || r.LastLog != 8 {
			t.Fatalf("changed append: %v %+v", err, r)
		}
	}
	if n := appends.Load(); n != 2 {
		t.Fatalf("after a change: %d appends, want 2", n)
	}
	// Entries always go out (pipelined, followed by a repeat that must wait for them).
	withEntries := changed
	withEntries.Entries = []*raft.Log{{Index: 9, Term: 3, Type: raft.LogCommand, Data: []byte("x")}}
	var r1, r2 raft.AppendEntriesResponse
	f1, err := p.AppendEntries(&withEntries, &r1)
	if err != nil {
		t.Fatal(err)
	}
	f2, err := p.AppendEntries(&changed, &r2)
	if err != nil {
		t.Fatal(err)
	}
	if got := <-p.Consumer(); got != f1 || f1.Error() != nil || r1.LastLog != 9 {
		t.Fatalf("first future out of order or failed: %v %+v", f1.Error(), r1)
	}
	if got := <-p.Consumer(); got != f2 || f2.Error() != nil {
		t.Fatalf("second future: %v", f2.Error())
	}
	if n := appends.Load(); n != 4 {
		t.Fatalf("an append sent while another was in flight was answered locally: %d appends, want 4", n)
	}
	// The follower's broker restarts at once, on the same address (its Raft has lost the commit
	// index it learned): the broken connection drops its recorded answers, so the next repeat
	// reaches it although the new process answers beats at once.
	_ = b.Close()
	_ = lnB.Close()
	lnB2, err := net.Listen("tcp", string(b.Addr()))
	if err != nil {
		t.Fatalf("relisten on %s: %v", b.Addr(), err)
	}
	b2 := newNetWith(t, lnB2, cfg)
	tb2, err := b2.Transport("g")
	if err != nil {
		t.Fatal(err)
	}
	var appends2 atomic.Int64
	follow(tb2, &appends2)
	waitFor(t, 2*time.Second, "the restarted follower gets the repeat", func() bool {
		_, _ = send(&changed)
		return appends2.Load() >= 1
	})
	// The follower goes away for good: repeats go out (and fail) once its beat answers are stale.
	_ = b2.Close()
	_ = lnB2.Close()
	time.Sleep(cfg.BeatFresh + 100*time.Millisecond)
	if r, err := send(&changed); err == nil {
		t.Fatalf("idle append to a closed broker answered %+v", r)
	}
}
