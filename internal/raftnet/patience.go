package raftnet

import (
	"errors"
	"time"

	"github.com/hashicorp/raft"
)

// Replication to an unreachable follower.
//
// hashicorp/raft backs off a follower's replication after every failed AppendEntries (10 ms,
// doubling per failure up to 10.24 s after 12) and only a successful one resets it; after a
// failure it also waits for the next entry or its commit timeout (5 to 10 s on a partition)
// before trying again. A transport that fails at once while a follower is cut off (a dial
// error, then fast failures during the dial backoff) drives that backoff to 10 s within
// seconds, and the follower, once back, waited up to about 20 s before the leader repaired its
// log (a cut-off old leader kept its uncommitted suffix that long after the network healed:
// TestClusterPartitionedLeader, CI).
//
// So an AppendEntries that is not a heartbeat, sent outside a pipeline, does not fail at once
// when the follower cannot be reached: it is sent again as soon as a connection can be made,
// for up to Config.ReplicationPatience, and fails only then. Raft counts one failure per
// patience instead of one per attempt, and a follower that comes back within it is answered
// within a poll interval. Only this goroutine of Raft's (the follower's replication) waits;
// heartbeats, votes and the other followers do not. Resending an AppendEntries is safe: a
// follower takes entries it already has as a duplicate.

// DefaultReplicationPatience is Config.ReplicationPatience's default.
const DefaultReplicationPatience = 5 * time.Second

// patiencePoll is how often a waiting AppendEntries tries the follower again (a dial happens
// only once the connection's backoff allows it, at most every second).
const patiencePoll = 50 * time.Millisecond

// unreachable reports whether err means the follower could not be reached (no connection, or
// it broke), as opposed to an answer, a timeout or a shutdown.
func unreachable(err error) bool {
	var remote *RemoteError
	return err != nil && !errors.As(err, &remote) && !errors.Is(err, raft.ErrTransportShutdown) &&
		!errors.Is(err, ErrTimeout) && !errors.Is(err, errFrameTooLarge)
}

// Abort makes the group's AppendEntries calls that wait for an unreachable follower fail now,
// and later ones fail without waiting. Call it just before the group's Raft shuts down: Raft's
// shutdown waits for its replication goroutines.
func (t *Transport) Abort() {
	t.abortOnce.Do(func() { close(t.aborted) })
}

// appendPatiently sends an AppendEntries (not a heartbeat) and, while the follower is
// unreachable, sends it again until it gets through or the patience is spent.
func (t *Transport) appendPatiently(target raft.ServerAddress, lane int, args *raft.AppendEntriesRequest, resp *raft.AppendEntriesResponse) error {
	err := t.rpc(target, lane, appendKind(args), args, resp, false, len(args.Entries) == 0)
	if !unreachable(err) || t.n.patience <= 0 {
		return err
	}
	deadline := time.Now().Add(t.n.patience)
	for unreachable(err) && time.Now().Before(deadline) {
		tm := time.NewTimer(min(patiencePoll, time.Until(deadline)))
		select {
		case <-tm.C:
		case <-t.aborted:
			tm.Stop()
			return err
		case <-t.closed:
			tm.Stop()
			return raft.ErrTransportShutdown
		case <-t.n.done:
			tm.Stop()
			return raft.ErrTransportShutdown
		}
		*resp = raft.AppendEntriesResponse{}
		err = t.rpc(target, lane, appendKind(args), args, resp, false, len(args.Entries) == 0)
	}
	return err
}
