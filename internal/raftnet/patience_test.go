package raftnet

import (
	"net"
	"testing"
	"time"

	"github.com/hashicorp/raft"
)

// TestAppendWaitsForUnreachableFollower: an AppendEntries (not a heartbeat) to a follower that
// cannot be reached keeps trying and succeeds once the follower is back; it fails only after
// the patience; Abort ends a wait at once; votes still fail at once.
func TestAppendWaitsForUnreachableFollower(t *testing.T) {
	const patience = time.Second
	cfg := Config{Timeout: 2 * time.Second, BeatInterval: -1, ProbeInterval: -1, ReplicationPatience: patience}
	_, b, lnB, ta, tb := groupPair(t, cfg)
	serve(t, tb, nil)
	entries := func() *raft.AppendEntriesRequest {
		return &raft.AppendEntriesRequest{Term: 2, PrevLogEntry: 4, PrevLogTerm: 1, Entries: []*raft.Log{{Index: 5, Term: 2, Data: []byte("x")}}}
	}
	var resp raft.AppendEntriesResponse
	if err := ta.AppendEntries("b", b.Addr(), entries(), &resp); err != nil || !resp.Success {
		t.Fatalf("append to a live follower: %v %+v", err, resp)
	}

	// The follower's broker goes away and comes back on the same address 300 ms later.
	_ = b.Close()
	_ = lnB.Close()
	addr := b.Addr()
	type result struct {
		err  error
		resp raft.AppendEntriesResponse
		took time.Duration
	}
	appendAsync := func() <-chan result {
		out := make(chan result, 1)
		go func() {
			start := time.Now()
			var r raft.AppendEntriesResponse
			err := ta.AppendEntries("b", addr, entries(), &r)
			out <- result{err, r, time.Since(start)}
		}()
		return out
	}
	pending := appendAsync()
	start := time.Now()
	if err := ta.RequestVote("b", addr, &raft.RequestVoteRequest{Term: 3}, new(raft.RequestVoteResponse)); err == nil {
		t.Fatal("a vote request to a closed broker succeeded")
	} else if d := time.Since(start); d > patience/2 {
		t.Fatalf("a vote request to a closed broker took %v to fail: votes must not wait", d)
	}
	time.Sleep(300 * time.Millisecond)
	select {
	case r := <-pending:
		t.Fatalf("append to an unreachable follower returned after %v: %v", r.took, r.err)
	default:
	}
	lnB2, err := net.Listen("tcp", string(addr))
	if err != nil {
		t.Fatalf("relisten on %s: %v", addr, err)
	}
	b2 := newNetWith(t, lnB2, cfg)
	tb2, err := b2.Transport("g")
	if err != nil {
		t.Fatal(err)
	}
	serve(t, tb2, nil)
	r := <-pending
	if r.err != nil || !r.resp.Success || r.resp.LastLog != 5 {
		t.Fatalf("append while the follower came back: %v %+v after %v", r.err, r.resp, r.took)
	}
	if r.took > patience {
		t.Fatalf("append succeeded only after %v", r.took)
	}

	// Gone for good: the append fails after the patience, not before.
	_ = b2.Close()
	_ = lnB2.Close()
	r = <-appendAsync()
	if r.err == nil {
		t.Fatal("append to a closed broker succeeded")
	}
	if r.took < patience-100*time.Millisecond || r.took > patience+time.Second {
		t.Fatalf("append to a closed broker failed after %v, want about %v", r.took, patience)
	}

	// Abort (the group's Raft is shutting down) ends a wait at once, and later appends do not wait.
	pending = appendAsync()
	time.Sleep(100 * time.Millisecond)
	ta.(*Transport).Abort()
	r = <-pending
	if r.err == nil || r.took > patience/2 {
		t.Fatalf("append after Abort: %v after %v", r.err, r.took)
	}
	r = <-appendAsync()
	if r.err == nil || r.took > patience/2 {
		t.Fatalf("append after Abort: %v after %v", r.err, r.took)
	}
}
