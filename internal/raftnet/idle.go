package raftnet

// Idle appends answered on the leader's side.
//
// An idle group's leader sends each follower an AppendEntries without entries every
// CommitTimeout (randomized up to twice that), to carry the commit index. Once the follower
// has acknowledged one, every later one until something changes is the same request (same
// term, previous entry and commit index) and would get the same answer: its log still ends at
// that entry, nothing else appends to it during the leader's term, and the commit index it
// carries is the one the follower already has. raftnet answers such a repeat locally with the
// follower's last answer, as it answers heartbeats (beats.go), and on the same condition: the
// follower answered this group's coalesced heartbeat, in this term, with success, less than
// BeatFresh ago. The round trip, both sides' decoding, and the follower's Raft loop are saved;
// the first append after any change (new entries, a new commit index, a new term) still goes
// out, and when the follower stops answering beats the repeats go out and fail as before.
//
// A follower's recorded answer is dropped when entries are sent to it (its log changes) and
// when a connection to its broker fails (conn.go): a follower that restarted holds the same
// log but has lost the commit index it had learned (Raft keeps it in memory), and must get the
// next append for real to learn it again. (Without that, a follower restarted within
// BeatFresh would not learn it until the next write.)
//
// What is left of an idle group's commit timeout is a local wake-up per follower on the
// leader's side (docs/benchmarks.md has what that saved).

import (
	"time"

	"github.com/hashicorp/raft"
)

// idleAck is the follower's last answer to an idle AppendEntries of this group.
type idleAck struct {
	term, prevIndex, prevTerm, commit uint64
	resp                              raft.AppendEntriesResponse
}

// isIdleAppend reports whether req is an AppendEntries without entries that is not a
// heartbeat (it carries the previous entry and the commit index).
func isIdleAppend(req *raft.AppendEntriesRequest) bool {
	return len(req.Entries) == 0 && !isHeartbeat(req)
}

// answerIdle answers an idle append from the follower's last answer to the same request, if
// the follower's coalesced heartbeat answers show it alive in this term.
func (t *Transport) answerIdle(target raft.ServerAddress, args *raft.AppendEntriesRequest, resp *raft.AppendEntriesResponse) bool {
	n := t.n
	if n.beatInterval <= 0 || t.plainHeartbeats.Load() || !isIdleAppend(args) {
		return false
	}
	v, ok := t.idle.Load(target)
	if !ok {
		return false
	}
	a := v.(idleAck)
	if a.term != args.Term || a.prevIndex != args.PrevLogEntry || a.prevTerm != args.PrevLogTerm || a.commit != args.LeaderCommitIndex {
		return false
	}
	n.beats.mu.Lock()
	b := n.beats.m[beatKey{target, t.group}]
	fresh := b != nil && b.answered && b.term == args.Term && b.ansTerm == args.Term && b.ansOK &&
		time.Since(b.ansAt) <= n.beatFresh
	n.beats.mu.Unlock()
	if !fresh {
		return false
	}
	*resp = a.resp
	t.noteProgress(target, args, resp)
	n.stats.idleLocal.Add(1)
	return true
}

// noteIdle records the follower's answer to an idle append that went out.
func (t *Transport) noteIdle(target raft.ServerAddress, args *raft.AppendEntriesRequest, resp *raft.AppendEntriesResponse) {
	if !isIdleAppend(args) {
		return
	}
	t.n.stats.idleSent.Add(1)
	if !resp.Success || resp.Term != args.Term {
		t.idle.Delete(target)
		return
	}
	t.idle.Store(target, idleAck{term: args.Term, prevIndex: args.PrevLogEntry, prevTerm: args.PrevLogTerm,
		commit: args.LeaderCommitIndex, resp: *resp})
}

// forgetIdleAcks drops every group's recorded answers of the broker at addr.
func (n *Network) forgetIdleAcks(addr raft.ServerAddress) {
	n.mu.RLock()
	defer n.mu.RUnlock()
	for _, t := range n.groups {
		t.idle.Delete(addr)
	}
}
