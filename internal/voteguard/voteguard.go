// Package voteguard keeps a Raft server that is not a voter in its own configuration from
// voting.
//
// hashicorp/raft grants a vote from any server with an empty log and no configuration, so a
// broker whose data dir was wiped, answering at its old address, would otherwise vote in
// place of the server it was (whose vote candidates still count), and could elect a leader
// missing committed entries. The guard wraps the group's transport and refuses vote and
// pre-vote requests while the server is not a voter in the latest configuration it holds.
// Refusing a vote is always safe; a server that was just made a voter learns it from the
// leader's next append.
package voteguard

import (
	"errors"

	"github.com/hashicorp/raft"
)

// ErrNotVoter answers a vote request to a server that is not a voter.
var ErrNotVoter = errors.New("raft: not a voter in its own configuration: refusing to vote")

// Guard wraps a raft.Transport; give Raft Guard.ForRaft() and run Guard.Run.
type Guard struct {
	raft.Transport
	ch      chan raft.RPC
	isVoter func() bool
}

// withPreVote is a Guard over a transport that supports pre-vote.
type withPreVote struct{ *Guard }

func (g withPreVote) RequestPreVote(id raft.ServerID, target raft.ServerAddress, args *raft.RequestPreVoteRequest, resp *raft.RequestPreVoteResponse) error {
	return g.Transport.(raft.WithPreVote).RequestPreVote(id, target, args, resp)
}

// New wraps t; isVoter reports whether the server is a voter in its latest configuration.
func New(t raft.Transport, isVoter func() bool) *Guard {
	return &Guard{Transport: t, ch: make(chan raft.RPC), isVoter: isVoter}
}

// ForRaft returns the guard as the transport Raft is given (keeping pre-vote support if
// the wrapped transport has it).
func (g *Guard) ForRaft() raft.Transport {
	if _, ok := g.Transport.(raft.WithPreVote); ok {
		return withPreVote{g}
	}
	return g
}

// Unwrap returns the wrapped transport.
func (g *Guard) Unwrap() raft.Transport { return g.Transport }

// Consumer implements raft.Transport.
func (g *Guard) Consumer() <-chan raft.RPC { return g.ch }

// Run passes RPCs from the wrapped transport to Raft, answering vote and pre-vote requests
// itself while the server is not a voter, until done is closed.
func (g *Guard) Run(done <-chan struct{}) {
	in := g.Transport.Consumer()
	for {
		select {
		case <-done:
			return
		case rpc := <-in:
			switch rpc.Command.(type) {
			case *raft.RequestVoteRequest, *raft.RequestPreVoteRequest:
				if !g.isVoter() {
					rpc.Respond(nil, ErrNotVoter)
					continue
				}
			}
			select {
			case g.ch <- rpc:
			case <-done:
				return
			}
		}
	}
}

// IsVoter reports whether id is a voter in the latest configuration r holds (false if r is
// nil or its configuration cannot be read).
func IsVoter(r *raft.Raft, id raft.ServerID) bool {
	if r == nil {
		return false
	}
	f := r.GetConfiguration()
	if f.Error() != nil {
		return false
	}
	for _, s := range f.Configuration().Servers {
		if s.ID == id {
			return s.Suffrage == raft.Voter
		}
	}
	return false
}
