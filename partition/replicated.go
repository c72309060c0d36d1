package partition

import (
	"context"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/runnel-io/runnel/internal/voteguard"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"

	"github.com/runnel-io/runnel/partition/raftstore"
	"github.com/runnel-io/runnel/topic"
)

// Replication makes a partition one replica of a Raft group (OpenReplicated).
type Replication struct {
	// ID is this broker's Raft server id in the group.
	ID raft.ServerID
	// Transport carries the group's Raft traffic (internal/raftnet, or raft's in-memory
	// transport in tests).
	Transport raft.Transport
	// Bootstrap is the group's initial replica set (this broker included), used only when the
	// partition has no Raft state yet. Every replica of a new partition bootstraps with the
	// same set (hashicorp/raft allows that); a replica added later to an existing group gets
	// none and waits to be added by the leader.
	Bootstrap []raft.Server
	// Raft is the base configuration (timeouts); nil means DefaultRaftConfig. LocalID, Logger,
	// TrailingLogs and the snapshot thresholds are set by OpenReplicated.
	Raft *raft.Config
	// ApplyTimeout bounds how long a proposal waits to enter the leader's queue (default 10s).
	ApplyTimeout time.Duration
	// GuardVotes refuses vote requests while this replica is not a voter in the latest
	// configuration it holds (internal/voteguard): a replica whose data was wiped, or one
	// added late and not yet caught up, must not vote in place of the server it replaces.
	GuardVotes bool
}

// DefaultRaftConfig returns the Raft timeouts partitions use. They are long, because an idle
// group's cost is set by them (a heartbeat per follower every HeartbeatTimeout/10, an empty
// AppendEntries per follower every CommitTimeout; raft-log.md measured the defaults filling
// this machine with 500 idle groups; with these, a follower of an idle group learns the
// commit index up to CommitTimeout late, which only its own high watermark shows, and a
// follower that was unreachable is retried that late when no write comes to trigger it,
// hence a shorter CommitTimeout than heartbeat timeout), and
// failover does not wait for them: the broker's Raft
// transport probes the brokers that lead groups here and, when one is down, the followers
// start an election at once (internal/raftnet liveness.go, broker.Registry.PeerDown). The
// timeouts remain the fallback for what a probe cannot see (a leader whose group stalls while
// its broker answers). The lease (how long a leader cut off from its followers keeps acting as
// leader; it cannot commit meanwhile) is half the heartbeat timeout: Raft heartbeats every
// 2 to 4 s, and the lease must outlast two of them. (40 s, tried, made no difference to the
// idle cost: docs/benchmarks.md.)
func DefaultRaftConfig() *raft.Config {
	c := raft.DefaultConfig()
	c.HeartbeatTimeout = 20 * time.Second
	c.ElectionTimeout = 20 * time.Second
	c.LeaderLeaseTimeout = 10 * time.Second
	c.CommitTimeout = 5 * time.Second
	return c
}

// ErrNotLeader: this replica is not its partition's leader; produce to the leader
// (*NotLeaderError names it, if known).
var ErrNotLeader = errors.New("partition: not the leader")

// NotLeaderError is ErrNotLeader with the leader this replica knows of ("" if none).
type NotLeaderError struct {
	Topic     string
	Partition int32
	LeaderID  string
	Leader    string // its address
	// Indeterminate: the proposal may still commit (leadership was lost after it was sent).
	Indeterminate bool
}

func (e *NotLeaderError) Error() string {
	s := fmt.Sprintf("partition: topic %q partition %d: not the leader", e.Topic, e.Partition)
	if e.Leader != "" {
		s += fmt.Sprintf(" (the leader is %s at %s)", e.LeaderID, e.Leader)
	} else {
		s += " (no leader known: an election is under way)"
	}
	if e.Indeterminate {
		s += "; leadership was lost after the batch was proposed: it may or may not be committed"
	}
	return s
}

func (e *NotLeaderError) Unwrap() error { return ErrNotLeader }

// replication is a replicated partition's Raft machinery.
type replication struct {
	raft    *raft.Raft
	fsm     *raftstore.FSM
	logs    *raftstore.LogStore
	snaps   *raftstore.SnapshotStore
	stable  *raftstore.StableStore
	timeout time.Duration
	trans   raft.Transport // the group's transport as given (Raft may hold a vote guard over it)
	// caughtUp is set while this replica leads and has applied everything committed before
	// its term (a Barrier returned): until then its high watermark may be behind what earlier
	// leaders acknowledged, and reads must wait.
	caughtUp atomic.Bool
}

// OpenReplicated opens (or creates) one replica of a partition replicated by its own Raft
// group: the commitlog under dir/log is the group's Raft log (partition/raftstore), Raft's
// term and vote live in dir/raft, its snapshots (manifests and hard links, no copies) in
// dir/snapshots. The high watermark is the committed, applied end of the log; Append
// proposes to the group and is refused with a *NotLeaderError on a follower.
func OpenReplicated(dir string, cfg topic.Config, opts Options, rep Replication) (*Partition, error) {
	name := fmt.Sprintf("topic %q partition %d", opts.Topic, opts.Partition)
	if rep.ID == "" || rep.Transport == nil {
		return nil, fmt.Errorf("partition: %s: replication needs an ID and a Transport", name)
	}
	snaps, err := raftstore.NewSnapshotStore(filepath.Join(dir, "snapshots"), 2)
	if err != nil {
		return nil, fmt.Errorf("partition: %s: snapshots: %w", name, err)
	}
	// Retention may delete only what the latest local snapshot covers (raft-log.md trap 4).
	opts.Log.RetentionGuard = snaps.LatestIndex
	raftDir := filepath.Join(dir, "raft")
	if err := os.MkdirAll(raftDir, 0o755); err != nil {
		return nil, fmt.Errorf("partition: %s: %w", name, err)
	}
	p, err := Open(filepath.Join(dir, "log"), cfg, opts)
	if err != nil {
		return nil, err
	}
	p.dir = dir // Delete removes the whole replica
	fail := func(err error) (*Partition, error) {
		_ = p.log.Close()
		return nil, fmt.Errorf("partition: %s: %w", name, err)
	}
	snaps.SetLogFirstIndex(p.log.FirstIndex)
	logs := raftstore.NewLogStore(p.log)
	stable, err := raftstore.OpenStableStore(opts.Log.FS, raftDir)
	if err != nil {
		return fail(fmt.Errorf("raft state: %w", err))
	}
	// The high watermark is what the group committed: from the log start until the FSM
	// (re)applies, not the recovered log end.
	p.hw.Store(p.log.StartOffset())
	fsm := raftstore.NewFSM(logs, snaps, p.advance)

	conf := DefaultRaftConfig()
	if rep.Raft != nil {
		c := *rep.Raft
		conf = &c
	}
	conf.LocalID = rep.ID
	conf.TrailingLogs = math.MaxUint64 // raft never asks for a prefix deletion: retention does
	conf.Logger = hclog.New(&hclog.LoggerOptions{
		Name: fmt.Sprintf("raft %s/%d", opts.Topic, opts.Partition), Level: hclog.Warn, Output: p.logger,
	})
	hasState, err := raft.HasExistingState(logs, stable, snaps)
	if err != nil {
		return fail(err)
	}
	if !hasState && len(rep.Bootstrap) > 0 {
		if err := raft.BootstrapCluster(conf, logs, stable, snaps, rep.Transport, raft.Configuration{Servers: rep.Bootstrap}); err != nil {
			return fail(fmt.Errorf("bootstrap: %w", err))
		}
	}
	trans := rep.Transport
	var (
		raftRef atomic.Pointer[raft.Raft]
		guard   *voteguard.Guard
	)
	if rep.GuardVotes {
		guard = voteguard.New(trans, func() bool { return voteguard.IsVoter(raftRef.Load(), rep.ID) })
		trans = guard.ForRaft()
	}
	r, err := raft.NewRaft(conf, fsm, logs, stable, snaps, trans)
	if err != nil {
		return fail(fmt.Errorf("raft: %w", err))
	}
	raftRef.Store(r)
	if guard != nil {
		go guard.Run(p.done) // Close closes done before it shuts Raft down
	}
	p.rep = &replication{raft: r, fsm: fsm, logs: logs, snaps: snaps, stable: stable, trans: rep.Transport}
	go p.watchLeadership()
	timeout := rep.ApplyTimeout
	if timeout <= 0 {
		timeout = 10 * time.Second
	}
	p.rep.timeout = timeout
	return p, nil
}

// propose hands the batches to the partition's Raft group, in order; the Pending's Wait
// returns their base offsets once the group has committed and applied them.
func (p *Partition) propose(ctx context.Context, batches [][]byte) (*Pending, error) {
	r := p.rep.raft
	if r.State() != raft.Leader {
		return nil, p.notLeader(false)
	}
	timeout := p.rep.timeout
	if dl, ok := ctx.Deadline(); ok {
		timeout = min(timeout, time.Until(dl))
	}
	futs := make([]raft.ApplyFuture, len(batches))
	for i, b := range batches {
		futs[i] = r.Apply(b, timeout)
	}
	var (
		once    sync.Once
		offsets []int64
		werr    error
	)
	wait := func() ([]int64, error) {
		once.Do(func() {
			out := make([]int64, len(futs))
			for i, f := range futs {
				if err := f.Error(); err != nil {
					werr = p.applyErr(i, err)
					return
				}
				res, ok := f.Response().(raftstore.ApplyResult)
				if !ok {
					werr = p.errorf("append: batch %d: unexpected apply result %T", i, f.Response())
					return
				}
				out[i] = res.BaseOffset
			}
			offsets = out
		})
		return offsets, werr
	}
	return &Pending{wait: wait}, nil
}

// applyErr maps a failed proposal's error.
func (p *Partition) applyErr(i int, err error) error {
	switch {
	case errors.Is(err, raft.ErrNotLeader):
		return p.notLeader(false) // refused before it was appended
	case errors.Is(err, raft.ErrLeadershipLost), errors.Is(err, raft.ErrLeadershipTransferInProgress):
		return p.notLeader(true)
	case errors.Is(err, raft.ErrRaftShutdown):
		return p.closedErr("append")
	case errors.Is(err, raft.ErrEnqueueTimeout):
		return p.errorf("append: batch %d: %w", i, context.DeadlineExceeded)
	}
	return p.wrap(fmt.Sprintf("append: batch %d", i), err)
}

func (p *Partition) notLeader(indeterminate bool) error {
	addr, id := p.rep.raft.LeaderWithID()
	return &NotLeaderError{Topic: p.opts.Topic, Partition: p.opts.Partition, LeaderID: string(id), Leader: string(addr), Indeterminate: indeterminate}
}

// Replicated reports whether the partition is a replica of a Raft group.
func (p *Partition) Replicated() bool { return p.rep != nil }

// IsLeader reports whether this replica leads its group (always true without replication).
func (p *Partition) IsLeader() bool { return p.rep == nil || p.rep.raft.State() == raft.Leader }

// Leader returns the group's leader as this replica knows it: its server id and address
// (empty without replication, or during an election).
func (p *Partition) Leader() (id, addr string) {
	if p.rep == nil {
		return "", ""
	}
	a, i := p.rep.raft.LeaderWithID()
	return string(i), string(a)
}

// ServesReads reports whether reads may be served here: always without replication; on a
// replica, while it leads and has applied everything committed before its term (a new
// leader's high watermark starts at what it had applied as a follower).
func (p *Partition) ServesReads() bool {
	return p.rep == nil || (p.rep.raft.State() == raft.Leader && p.rep.caughtUp.Load())
}

// ServesFollowerReads reports whether a read that allows a follower (FetchRequest and
// SubscribeRequest.allow_follower) may be served here: always. Every replica bounds its reads
// by its high watermark, and on any replica, leader or not, that is the end of the entries its
// FSM applied. hashicorp/raft applies an entry only once the replica knows it committed: a
// follower learns the leader's commit index from AppendEntries (LeaderCommitIndex), takes
// min(that, its own last index) as its commit index, and hands its FSM only entries at or
// below it, read from its own log. So a replica's bound is committed (never a record a
// leader change could take back: Raft never truncates a committed entry) and never past its
// own log end (Fetch also clamps to it). The bound is applied, not raft's commit_index stat,
// because it is already an offset (the FSM maps the applied entry to the offset after its
// batch), it is what the FSM's apply wakes long polls on, and it is never ahead of the log
// this replica can read. What a follower may lack is recency: it learns of a commit with the
// leader's next append (up to CommitTimeout later when the partition is idle), serves
// nothing of its log above its bound (OFFSET_OUT_OF_RANGE above it), and a replica cut off
// from its leader keeps serving what it had. A new leader (ServesReads false until its
// Barrier) serves such reads the same way.
func (p *Partition) ServesFollowerReads() bool { return true }

// watchLeadership keeps caughtUp: on becoming leader it waits for a Barrier (everything
// committed before is applied), and clears it when leadership is lost.
func (p *Partition) watchLeadership() {
	r := p.rep.raft
	for {
		select {
		case <-p.done:
			return
		case leader := <-r.LeaderCh():
			p.rep.caughtUp.Store(false)
			for leader && r.State() == raft.Leader {
				if err := r.Barrier(10 * time.Second).Error(); err == nil {
					p.rep.caughtUp.Store(r.State() == raft.Leader)
					break
				}
				select {
				case <-p.done:
					return
				case leader = <-r.LeaderCh():
					p.rep.caughtUp.Store(false)
				case <-time.After(50 * time.Millisecond):
				}
			}
		}
	}
}

// Transport returns the group's Raft transport as given to OpenReplicated; nil without
// replication.
func (p *Partition) Transport() raft.Transport {
	if p.rep == nil {
		return nil
	}
	return p.rep.trans
}

// Raft returns the partition's Raft group (membership changes, snapshots, stats); nil
// without replication.
func (p *Partition) Raft() *raft.Raft {
	if p.rep == nil {
		return nil
	}
	return p.rep.raft
}

// shutdownRaft stops the Raft group, before the log closes under it.
func (p *Partition) shutdownRaft() error {
	if p.rep == nil {
		return nil
	}
	if a, ok := p.rep.trans.(interface{ Abort() }); ok {
		a.Abort() // replication waiting for an unreachable broker (raftnet) ends now
	}
	err := p.rep.raft.Shutdown().Error()
	if c, ok := p.rep.trans.(raft.WithClose); ok {
		// Raft closes the transport it was given; under a vote guard that is not this one.
		err = errors.Join(err, c.Close())
	}
	return err
}
