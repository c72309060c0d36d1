// The metadata Raft group: starting it, guarding votes, and the control loop by which the
// metadata leader turns Serf's view of the brokers into committed changes.

package cluster

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/runnel-io/runnel/internal/voteguard"
	"github.com/runnel-io/runnel/topic"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
	"github.com/rs/zerolog"
)

// Start starts the metadata Raft group and Serf, bootstraps a new cluster if this broker's
// Raft state is new and no seed is given, and joins the seeds otherwise (if none answers,
// it keeps trying in the background: brokers started together need not be started in
// order; Joined reports success). After an error, Close releases what was started.
func (c *Cluster) Start() error {
	if !c.started.CompareAndSwap(false, true) {
		return errors.New("cluster: already started")
	}
	rc := raft.DefaultConfig()
	// An idle group sends each follower an empty AppendEntries every CommitTimeout (50 ms by
	// default: most of an idle broker's CPU); 250 ms delays a follower's view of a single
	// change by at most that, and still contacts followers well within the heartbeat timeout.
	rc.CommitTimeout = 250 * time.Millisecond
	// Proposals queue while the leader writes the previous ones instead of each waiting for
	// the leader loop: offset commits are pipelined (several batches in flight).
	rc.BatchApplyCh = true
	rc.LocalID = c.localID
	rc.Logger = newHCLogger(c.log, "raft")
	if c.cfg.TuneRaft != nil {
		c.cfg.TuneRaft(rc)
	}
	// The state file persists: Raft restores a snapshot at start only when the file is new
	// or behind the snapshot (fsm.holdsState says why). It still takes its indexes and
	// configuration from the snapshot and replays the log after it; Apply skips what the
	// file already holds.
	restore, err := c.restoreAtStart()
	if err != nil {
		return err
	}
	rc.NoSnapshotRestoreOnStart = !restore
	hasState, err := raft.HasExistingState(c.store, c.store, c.snaps)
	if err != nil {
		return fmt.Errorf("cluster: %w", err)
	}
	c.guard = voteguard.New(c.cfg.Transport, c.isVoter)
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		c.guard.Run(c.done)
	}()
	r, err := raft.NewRaft(rc, c.fsm, c.store, c.store, c.snaps, c.guard.ForRaft())
	if err != nil {
		return fmt.Errorf("cluster: start raft: %w", err)
	}
	c.raft.Store(r)
	c.trackCatchUp(r)
	if !hasState && len(c.cfg.Join) == 0 {
		c.log.Info().Str("server_id", string(c.localID)).Msg("bootstrapping a new cluster")
		err := r.BootstrapCluster(raft.Configuration{Servers: []raft.Server{{
			Suffrage: raft.Voter, ID: c.localID, Address: c.cfg.Transport.LocalAddr(),
		}}}).Error()
		if err != nil && !errors.Is(err, raft.ErrCantBootstrap) {
			return fmt.Errorf("cluster: bootstrap: %w", err)
		}
	}
	c.ml, err = NewMembership(MembershipConfig{
		BrokerID: c.cfg.BrokerID, Addr: c.cfg.Advertise, RaftAddr: string(c.cfg.Transport.LocalAddr()),
		Incarnation: c.incarnation, Bind: c.cfg.SerfBind, Advertise: c.cfg.SerfAdvertise,
		Logger: c.cfg.Logger, Tune: c.cfg.TuneSerf,
	})
	if err != nil {
		return err
	}
	if err := c.ml.Join(c.cfg.Join); err != nil {
		// The seeds may not be up yet (brokers started together): the control loop
		// retries until one answers.
		c.log.Warn().Err(err).Msg("joining the cluster; retrying")
	} else {
		c.joined.Store(true)
	}
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		c.loop()
	}()
	return nil
}

// Leave leaves the cluster for good: leadership passes to another voter, then Serf
// announces the departure and the metadata leader removes this broker from the Raft
// configuration and moves its replicas. Close it afterwards.
func (c *Cluster) Leave() error {
	if r := c.raft.Load(); r != nil && r.State() == raft.Leader {
		if err := r.LeadershipTransfer().Error(); err != nil {
			c.log.Warn().Err(err).Msg("leadership transfer before leaving failed")
		}
	}
	if c.ml == nil {
		return nil
	}
	return c.ml.Leave()
}

// Close stops Serf (without leaving: the others see a failure, as for a crash) and Raft,
// waits for every goroutine, and closes the stores. It is idempotent.
func (c *Cluster) Close() error {
	c.closeOnce.Do(func() {
		var errs []error
		if c.ml != nil {
			errs = append(errs, c.ml.Close())
		}
		if r := c.raft.Load(); r != nil {
			if a, ok := c.cfg.Transport.(interface{ Abort() }); ok {
				a.Abort() // replication waiting for an unreachable broker (raftnet) ends now
			}
			errs = append(errs, r.Shutdown().Error())
		}
		close(c.done)
		c.wg.Wait()
		errs = append(errs, c.store.Close(), c.fsm.close())
		c.closeErr = errors.Join(errs...)
	})
	return c.closeErr
}

// isVoter reports whether this broker is a voter in the latest Raft configuration it holds.
func (c *Cluster) isVoter() bool { return voteguard.IsVoter(c.raft.Load(), c.localID) }

// loop is the control loop. On every broker it reports, while this broker is a non-voter,
// how far it has applied the metadata (a Serf tag the leader reads before promoting it). On
// the metadata leader it reconciles after every Serf event, every applied change and every
// ReconcileInterval.
func (c *Cluster) loop() {
	tick := time.NewTicker(c.cfg.ReconcileInterval)
	defer tick.Stop()
	r := c.raft.Load()
	var lead *leaderState
	for {
		select {
		case <-c.done:
			return
		case <-tick.C:
		case <-c.kick:
		case <-r.LeaderCh():
		case ev := <-c.ml.Events():
			c.log.Debug().Str("event", string(ev.Type)).Int32("member", ev.Member.ID).
				Str("status", string(ev.Member.Status)).Msg("serf event")
		}
		c.retryJoin()
		c.reportApplied()
		if r.State() != raft.Leader {
			lead = nil
			continue
		}
		if lead == nil {
			// A new term: apply everything the previous leader committed before acting.
			if err := r.Barrier(c.cfg.ApplyTimeout).Error(); err != nil {
				c.log.Warn().Err(err).Msg("barrier after winning the metadata election")
				continue
			}
			lead = &leaderState{addedAt: map[raft.ServerID]uint64{}}
			c.log.Info().Msg("metadata leader")
		}
		c.decideMu.Lock()
		err := c.reconcile(lead)
		c.decideMu.Unlock()
		if err != nil {
			c.log.Warn().Err(err).Msg("reconcile")
		}
	}
}

// retryJoin joins the seeds if Start could not, at most once per ReconcileInterval.
func (c *Cluster) retryJoin() {
	if len(c.cfg.Join) == 0 || c.joined.Load() || time.Since(c.lastJoin) < c.cfg.ReconcileInterval {
		return
	}
	c.lastJoin = time.Now()
	if err := c.ml.Join(c.cfg.Join); err != nil {
		c.log.Debug().Err(err).Msg("joining the cluster; retrying")
		return
	}
	c.log.Info().Strs("seeds", c.cfg.Join).Msg("joined the cluster")
	c.joined.Store(true)
}

// reportApplied gossips this broker's applied index while it is a non-voter. The tag is
// left in place once it votes: it is only read for non-voters, and a stale value is always
// below the index at which the leader would add this broker again.
func (c *Cluster) reportApplied() {
	r := c.raft.Load()
	f := r.GetConfiguration()
	if f.Error() != nil {
		return
	}
	for _, s := range f.Configuration().Servers {
		if s.ID == c.localID && s.Suffrage == raft.Nonvoter {
			c.ml.SetApplied(r.AppliedIndex())
		}
	}
}

// leaderState is what the leader remembers between reconciliations (its term only).
type leaderState struct {
	// addedAt is the Raft index at which a non-voter was added (or first seen by this
	// leader): it is promoted once it reports having applied that far.
	addedAt map[raft.ServerID]uint64
}

// reconcile brings the metadata in line with Serf (broker records), the Raft configuration
// in line with the metadata (voters, non-voters, removals), and the assignments in line
// with the brokers (replicas of lost brokers moved; under-replicated partitions filled).
func (c *Cluster) reconcile(lead *leaderState) error {
	ctx := context.Background()
	now := time.Now()
	// 0. The cluster's id: generated by its first leader (the founding broker), or by the
	// first leader that finds none (a cluster founded before the id existed).
	if c.fsm.clusterID() == "" {
		if err := c.propose(ctx, cmdSetClusterID, setClusterIDCmd{ID: topic.NewID()}); err != nil {
			return err
		}
	}
	members := map[int32]Member{}
	for _, m := range c.ml.Members() {
		members[m.ID] = m
	}
	recs, err := c.fsm.brokers()
	if err != nil {
		return err
	}
	// 1. Broker records from Serf.
	for _, id := range slices.Sorted(maps.Keys(members)) {
		m := members[id]
		state := BrokerAlive
		switch m.Status {
		case MemberFailed:
			state = BrokerFailed
		case MemberLeft:
			state = BrokerLeft
		}
		old, known := recs[id]
		if known && old.Incarnation != m.Incarnation && state != BrokerAlive {
			continue // Serf's news of a new incarnation that is not alive: nothing to record yet
		}
		rec := brokerRecord{ID: id, Addr: m.Addr, RaftAddr: m.RaftAddr, Incarnation: m.Incarnation,
			State: state, SinceMS: now.UnixMilli()}
		if known && old.Incarnation == m.Incarnation {
			rec.Voter = old.Voter
			if old.State == state {
				rec.SinceMS = old.SinceMS
			}
		}
		if known && rec == old {
			continue
		}
		if known && old.Incarnation != m.Incarnation {
			c.log.Warn().Int32("member", id).Str("old_incarnation", old.Incarnation).Str("incarnation", m.Incarnation).
				Msg("broker is back with a new data dir: it rejoins as a new Raft server, a non-voter until caught up")
		}
		if err := c.propose(ctx, cmdUpsertBroker, upsertBrokerCmd{Broker: rec}); err != nil {
			return err
		}
	}
	if recs, err = c.fsm.brokers(); err != nil {
		return err
	}
	if err := c.reconcileRaft(lead, recs, members, now); err != nil {
		return err
	}
	if recs, err = c.fsm.brokers(); err != nil {
		return err
	}
	return c.reconcileReplicas(ctx, recs, now)
}

// lost reports whether a broker's replicas should move elsewhere.
func (c *Cluster) lost(r brokerRecord, now time.Time) bool {
	return r.State == BrokerLeft ||
		(r.State == BrokerFailed && now.Sub(time.UnixMilli(r.SinceMS)) >= c.cfg.FailedTimeout)
}

func (c *Cluster) reconcileRaft(lead *leaderState, recs map[int32]brokerRecord, members map[int32]Member, now time.Time) error {
	r := c.raft.Load()
	to := c.cfg.ApplyTimeout
	servers, err := raftServers(r)
	if err != nil {
		return err
	}
	// Remove stale identities (a wiped data dir), brokers that left, and brokers failed
	// too long (they come back as non-voters).
	for _, s := range servers {
		if s.ID == c.localID {
			continue
		}
		id, inc, ok := parseServerID(s.ID)
		rec, known := recs[id]
		if !ok || !known {
			continue
		}
		why := ""
		switch {
		case inc != rec.Incarnation:
			why = "its data dir was replaced"
		case rec.State == BrokerLeft:
			why = "it left"
		case c.lost(rec, now):
			why = "failed for longer than the failed timeout"
		}
		if why == "" {
			continue
		}
		c.log.Info().Str("server_id", string(s.ID)).Str("why", why).Msg("removing from the metadata raft group")
		if err := r.RemoveServer(s.ID, 0, to).Error(); err != nil {
			return fmt.Errorf("remove server %s: %w", s.ID, err)
		}
		delete(lead.addedAt, s.ID)
	}
	if servers, err = raftServers(r); err != nil {
		return err
	}
	inConfig := map[raft.ServerID]raft.Server{}
	voters := 0
	for _, s := range servers {
		inConfig[s.ID] = s
		if s.Suffrage == raft.Voter {
			voters++
		}
	}
	// Add alive brokers as non-voters.
	for _, id := range slices.Sorted(maps.Keys(recs)) {
		rec := recs[id]
		m, ok := members[id]
		if rec.State != BrokerAlive || !ok || m.Incarnation != rec.Incarnation || m.Status != MemberAlive || rec.RaftAddr == "" {
			continue
		}
		sid := serverID(id, rec.Incarnation)
		if _, ok := inConfig[sid]; ok {
			continue
		}
		c.log.Info().Str("server_id", string(sid)).Str("addr", rec.RaftAddr).Msg("adding to the metadata raft group as a non-voter")
		f := r.AddNonvoter(sid, raft.ServerAddress(rec.RaftAddr), 0, to)
		if err := f.Error(); err != nil {
			return fmt.Errorf("add non-voter %s: %w", sid, err)
		}
		lead.addedAt[sid] = f.Index()
		inConfig[sid] = raft.Server{ID: sid, Suffrage: raft.Nonvoter, Address: raft.ServerAddress(rec.RaftAddr)}
	}
	// Promote caught-up non-voters while there are fewer voters than wanted.
	ids := slices.Sorted(maps.Keys(inConfig))
	for _, sid := range ids {
		s := inConfig[sid]
		if voters >= c.cfg.Voters {
			break
		}
		if s.Suffrage != raft.Nonvoter {
			continue
		}
		id, _, ok := parseServerID(sid)
		m, alive := members[id]
		if !ok || !alive || m.Status != MemberAlive || serverID(id, m.Incarnation) != sid {
			continue
		}
		need, ok := lead.addedAt[sid]
		if !ok {
			lead.addedAt[sid] = r.LastIndex()
			continue
		}
		if m.Applied < need {
			continue
		}
		c.log.Info().Str("server_id", string(sid)).Uint64("applied", m.Applied).Msg("promoting to voter: caught up")
		if err := r.AddVoter(sid, s.Address, 0, to).Error(); err != nil {
			return fmt.Errorf("promote %s: %w", sid, err)
		}
		voters++
	}
	// Record who votes.
	if servers, err = raftServers(r); err != nil {
		return err
	}
	for _, id := range slices.Sorted(maps.Keys(recs)) {
		rec := recs[id]
		want := false
		for _, s := range servers {
			if s.ID == serverID(id, rec.Incarnation) && s.Suffrage == raft.Voter {
				want = true
			}
		}
		if rec.Voter == want {
			continue
		}
		rec.Voter = want
		if err := c.propose(context.Background(), cmdUpsertBroker, upsertBrokerCmd{Broker: rec}); err != nil {
			return err
		}
	}
	return nil
}

func raftServers(r *raft.Raft) ([]raft.Server, error) {
	f := r.GetConfiguration()
	if err := f.Error(); err != nil {
		return nil, err
	}
	s := slices.Clone(f.Configuration().Servers)
	sort.Slice(s, func(i, j int) bool { return s[i].ID < s[j].ID })
	return s, nil
}

// reconcileReplicas moves the replicas of lost brokers and fills under-replicated
// partitions from the alive brokers (Repair), one command per topic.
func (c *Cluster) reconcileReplicas(ctx context.Context, recs map[int32]brokerRecord, now time.Time) error {
	all, topics, err := c.fsm.allAssignments()
	if err != nil {
		return err
	}
	lost := map[int32]bool{}
	for id, rec := range recs {
		if c.lost(rec, now) {
			lost[id] = true
		}
	}
	alive := aliveBrokers(recs)
	load := LoadOf(all)
	for _, name := range slices.Sorted(maps.Keys(all)) {
		t := topics[name]
		changed := Repair(all[name], int(t.ReplicationFactor), lost, alive, load)
		if len(changed) == 0 {
			continue
		}
		cmd := setAssignmentsCmd{Topic: name, TopicID: t.ID}
		for _, p := range slices.Sorted(maps.Keys(changed)) {
			cmd.Changes = append(cmd.Changes, assignmentDelta{Partition: p, Replicas: changed[p]})
		}
		c.log.Info().Str("topic", name).Int("partitions", len(cmd.Changes)).Msg("reassigning replicas")
		if err := c.propose(ctx, cmdSetAssignments, cmd); err != nil {
			return err
		}
	}
	return nil
}

// newHCLogger adapts zerolog for hashicorp/raft (warnings and errors only). The library's
// logger is named in its own field: l already has a component, and a second one would
// repeat the key in the JSON line.
func newHCLogger(l zerolog.Logger, name string) hclog.Logger {
	return hclog.New(&hclog.LoggerOptions{
		Name:   name,
		Level:  hclog.Warn,
		Output: hcWriter{l.With().Str("hclog", name).Logger()},
	})
}

type hcWriter struct{ log zerolog.Logger }

func (w hcWriter) Write(p []byte) (int, error) {
	s := strings.TrimRight(string(p), "\n")
	switch {
	case strings.Contains(s, "[ERROR]"):
		w.log.Error().Msg(s)
	default:
		w.log.Warn().Msg(s)
	}
	return len(p), nil
}

// trackCatchUp closes caughtUp once the state machine holds what it held before the start.
// After a rebuild that was at most the last index in the log when Raft started (only
// logged entries are applied), and at least every entry applied before the crash, all of
// them committed. The log may end with entries that never commit (a new leader replaces
// them), so the wait also ends at the commit index learned from a leader since the start:
// a leader commits only past its whole log, and a follower learns a commit index only once
// its log matches the leader's up to it, so that index, too, covers every entry applied
// before the crash. Raft hands the state machine only commands and configurations (no
// no-ops, no barriers), and its own applied index counts entries handed over, not applied:
// so once Raft has handed over the goal, the wait is for the state file to hold the last
// command or configuration at or below it.
func (c *Cluster) trackCatchUp(r *raft.Raft) {
	if !c.fsm.rebuilt {
		close(c.caughtUp)
		return
	}
	target := r.LastIndex()
	c.log.Warn().Str("state", c.fsm.path).Str("why", c.fsm.rebuildWhy).Uint64("replay_to", target).
		Msg("metadata rebuilt from the newest snapshot and the log; replicas wait until the replay is done")
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		tick := time.NewTicker(10 * time.Millisecond)
		defer tick.Stop()
		for {
			goal := target
			if ci := r.CommitIndex(); ci > 0 {
				goal = min(goal, ci)
			}
			if r.AppliedIndex() >= goal {
				if applied := c.fsm.appliedIndex(); applied >= c.lastStateEntry(goal) {
					if err := c.fsm.rebuildDone(); err != nil {
						// The next start rebuilds again: slower, not wrong.
						c.log.Warn().Err(err).Msg("recording that the rebuilt metadata has caught up")
					}
					c.log.Info().Uint64("applied", applied).Msg("the rebuilt metadata has caught up")
					close(c.caughtUp)
					return
				}
			}
			select {
			case <-c.done:
				return
			case <-tick.C:
			}
		}
	}()
}

// lastStateEntry is the index of the last command or configuration at or below index in
// the log (what the state machine records as applied), or 0 when the log no longer holds
// it (compacted into a snapshot, which the state then holds).
func (c *Cluster) lastStateEntry(index uint64) uint64 {
	for i := index; i > 0; i-- {
		var l raft.Log
		if err := c.store.GetLog(i, &l); err != nil {
			return 0
		}
		if l.Type == raft.LogCommand || l.Type == raft.LogConfiguration {
			return i
		}
	}
	return 0
}

// restoreAtStart reports whether Raft should restore the newest snapshot when it starts:
// when the state file holds nothing, or less than that snapshot (fsm.holdsState).
func (c *Cluster) restoreAtStart() (bool, error) {
	if !c.fsm.holdsState {
		return true, nil
	}
	list, err := c.snaps.List()
	if err != nil {
		return false, fmt.Errorf("cluster: list snapshots: %w", err)
	}
	if len(list) == 0 {
		return false, nil
	}
	_, rc, err := c.snaps.Open(list[0].ID)
	if err != nil {
		// Raft would fall back to an older snapshot, or fail; let it restore and decide.
		c.log.Warn().Err(err).Str("snapshot", list[0].ID).Msg("cannot read the newest metadata snapshot; restoring at start")
		return true, nil
	}
	defer rc.Close()
	ahead, err := c.fsm.aheadOfSnapshot(rc)
	if err != nil {
		c.log.Warn().Err(err).Str("snapshot", list[0].ID).Msg("cannot compare the metadata state with the newest snapshot; restoring at start")
		return true, nil
	}
	if !ahead {
		c.log.Warn().Str("snapshot", list[0].ID).Msg("the metadata state is behind the newest snapshot (a restore was cut short); restoring it")
	}
	return !ahead, nil
}
