package voteguard

import (
	"sync"
	"testing"

	"github.com/hashicorp/raft"
)

// TestVoteGuard: a broker that is not a voter in its own configuration (a wiped data dir
// answering at its old address) refuses votes and pre-votes; other RPCs pass.
func TestVoteGuard(t *testing.T) {
	_, cand := raft.NewInmemTransport("cand")
	_, target := raft.NewInmemTransport("target")
	cand.Connect("target", target)
	voter := false
	var mu sync.Mutex
	g := New(target, func() bool { mu.Lock(); defer mu.Unlock(); return voter })
	done := make(chan struct{})
	defer close(done)
	go g.Run(done)
	tr := g.ForRaft()
	if _, ok := tr.(raft.WithPreVote); !ok {
		t.Fatal("guard hides pre-vote support")
	}
	var resp raft.RequestVoteResponse
	err := cand.RequestVote("target/x", "target", &raft.RequestVoteRequest{Term: 5, LastLogIndex: 10, LastLogTerm: 4}, &resp)
	if err == nil || resp.Granted {
		t.Fatalf("vote from a non-voter: err %v granted %v", err, resp.Granted)
	}
	var presp raft.RequestPreVoteResponse
	if err := cand.RequestPreVote("target/x", "target", &raft.RequestPreVoteRequest{Term: 5}, &presp); err == nil || presp.Granted {
		t.Fatalf("pre-vote from a non-voter: err %v", err)
	}
	// Once a voter, the request reaches Raft (here: the test answering).
	mu.Lock()
	voter = true
	mu.Unlock()
	go func() {
		rpc := <-tr.Consumer()
		rpc.Respond(&raft.RequestVoteResponse{Term: 5, Granted: true}, nil)
	}()
	if err := cand.RequestVote("target/x", "target", &raft.RequestVoteRequest{Term: 5}, &resp); err != nil || !resp.Granted {
		t.Fatalf("vote from a voter: %v %v", err, resp.Granted)
	}
}
