package broker

// Cluster mode: the registry's topics come from the cluster's metadata (internal/cluster),
// and each partition this broker holds a replica of is one replica of the partition's own
// Raft group (partition.OpenReplicated) over the broker's shared Raft transport
// (internal/raftnet, on the one cmux port).
//
// One goroutine (clusterMode.run) brings the local replicas in line with the applied
// metadata, on every applied change and every SyncInterval:
//
//   - a topic in the metadata gets a directory <data-dir>/topics/<name>/ holding topic.json
//     (its id: a directory left from a deleted topic of the same name is removed first);
//   - a partition assigned to this broker is opened. It bootstraps its Raft group with the
//     assignment's replicas only when the assignment is the topic's first (epoch 1), the
//     replica has no state yet, and this broker's data dir is older than the topic: a replica
//     added later, or one whose data dir was wiped, starts empty and waits to be added by the
//     group's leader (it then refuses to vote until it is a voter, see partition's vote guard);
//   - a partition no longer assigned here is closed and deleted once the group's
//     configuration no longer holds this broker, or RemoveDelay after the assignment
//     changed (a removed server is not told that it was removed);
//   - on every group this broker leads, the Raft configuration is moved towards the
//     assignment, one change at a time: servers of brokers that are gone (failed, left, or
//     with a new incarnation) are removed first; missing replicas are added as non-voters
//     and promoted once caught up (their log within CatchUpLag entries of the leader's,
//     from raftnet's record of AppendEntries responses); replicas moved elsewhere are removed
//     last, once every assigned replica votes, the leader handing its leadership over first
//     if it is the one to go; last, leadership goes to the preferred replica (the
//     assignment's first) once it votes and is caught up, so leaders spread as placed.
//
// Topics deleted from the metadata are closed and their files removed.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/hashicorp/raft"

	"github.com/runnel-io/runnel/internal/cluster"
	"github.com/runnel-io/runnel/internal/raftnet"
	"github.com/runnel-io/runnel/internal/vfs"
	"github.com/runnel-io/runnel/partition"
	"github.com/runnel-io/runnel/topic"
)

// ClusterOptions start a clustered Registry's replica management (Registry.StartCluster).
type ClusterOptions struct {
	// Cluster is this broker's membership and metadata replica (started).
	Cluster *cluster.Cluster
	// Network is the broker's Raft transport; each partition group gets Network.Transport of
	// "<topic id>/<partition>".
	Network *raftnet.Network
	// Raft is the base configuration of the partitions' Raft groups (timeouts); nil:
	// partition.DefaultRaftConfig.
	Raft *raft.Config
	// SyncInterval is how often the replicas are compared with the metadata besides on every
	// applied change (default 2s); it also paces Raft membership changes.
	SyncInterval time.Duration
	// RemoveDelay is how long a replica no longer assigned here is kept when this broker
	// cannot tell that its group has removed it (default 30s).
	RemoveDelay time.Duration
	// CatchUpLag is how many log entries a new replica may trail the leader by to be
	// promoted to voter (default 1024).
	CatchUpLag uint64
}

// clusterMode is a clustered Registry's link to the metadata.
type clusterMode struct {
	r      *Registry
	cl     *cluster.Cluster
	net    *raftnet.Network
	raft   *raft.Config
	self   int32
	selfID raft.ServerID
	bornAt time.Time // when this broker's data dir (its incarnation) was created
	opts   ClusterOptions

	done chan struct{}
	wg   sync.WaitGroup

	mu       sync.Mutex
	brokers  map[int32]cluster.Broker // under mu: the latest read of the metadata
	excluded map[string]time.Time     // under mu: replica key -> when it was first seen unassigned
	synced   uint64                   // under mu: the metadata index the last full sync read
	// strayChecked: the topic directories the metadata does not hold were removed once (only
	// the sync goroutine reads it). Later deletions remove their own directories.
	strayChecked bool
	syncCond     *sync.Cond
}

// replicaDirTopicFile is topic.json in cluster mode: which topic (by id) a directory holds.
type replicaDirTopicFile struct {
	Name string `json:"name"`
	ID   string `json:"id"`
}

// StartCluster puts the registry (opened with RegistryOptions.Clustered) under the
// cluster's metadata and starts the goroutine that keeps its replicas in line with it.
func (r *Registry) StartCluster(opts ClusterOptions) error {
	if !r.clustered {
		return errors.New("broker: registry: StartCluster on a registry not opened as clustered")
	}
	if opts.Cluster == nil || opts.Network == nil {
		return errors.New("broker: registry: StartCluster needs a Cluster and a Network")
	}
	if opts.SyncInterval <= 0 {
		opts.SyncInterval = 2 * time.Second
	}
	if opts.RemoveDelay <= 0 {
		opts.RemoveDelay = 30 * time.Second
	}
	if opts.CatchUpLag == 0 {
		opts.CatchUpLag = 1024
	}
	st, err := os.Stat(filepath.Join(r.dataDir, cluster.IncarnationFile))
	if err != nil {
		return fmt.Errorf("broker: registry: %w", err)
	}
	m := &clusterMode{
		r: r, cl: opts.Cluster, net: opts.Network, raft: opts.Raft, self: r.nodeID,
		selfID: cluster.RaftServerID(r.nodeID, opts.Cluster.Incarnation()), bornAt: st.ModTime(),
		opts: opts, done: make(chan struct{}), brokers: map[int32]cluster.Broker{}, excluded: map[string]time.Time{},
	}
	m.syncCond = sync.NewCond(&m.mu)
	r.mu.Lock()
	if r.closed || r.cm != nil {
		r.mu.Unlock()
		return errors.New("broker: registry: closed, or already started")
	}
	r.cm = m
	r.mu.Unlock()
	w := m.cl.Watch()
	m.wg.Add(1)
	go func() {
		defer m.wg.Done()
		defer w.Close()
		m.run(w)
	}()
	return nil
}

func (m *clusterMode) stop() {
	close(m.done)
	m.mu.Lock()
	m.syncCond.Broadcast()
	m.mu.Unlock()
	m.wg.Wait()
}

func (m *clusterMode) run(w *cluster.Watcher) {
	// Metadata rebuilt after a machine crash shows the cluster as it was at a snapshot until
	// the log after it is replayed: acting on it would remove topics created since.
	select {
	case <-m.cl.CaughtUp():
	case <-m.done:
		return
	}
	tick := time.NewTicker(m.opts.SyncInterval)
	defer tick.Stop()
	for {
		if err := m.sync(); err != nil {
			m.r.log.Warn().Err(err).Msg("bringing replicas in line with the metadata")
		}
		if !m.waitForChange(w, tick.C) {
			return
		}
	}
}

// waitForChange waits until the replicas may need a sync: a change that can move them, or
// the tick. It returns false once the mode stops. Committed offsets come at the members'
// rate and move no replica, so they only count as read (waitSynced sees them).
func (m *clusterMode) waitForChange(w *cluster.Watcher, tick <-chan time.Time) bool {
	for {
		select {
		case <-m.done:
			return false
		case <-tick:
			return true
		case <-w.C():
			changes := w.Changes()
			if slices.ContainsFunc(changes, func(c cluster.Change) bool { return c.Kind.AffectsPlacement() }) {
				return true
			}
			if len(changes) > 0 {
				m.markSynced(changes[len(changes)-1].Index)
			}
		}
	}
}

// markSynced records that the replicas match the metadata at index, with no sync: the
// changes up to it (offsets) move no replica.
func (m *clusterMode) markSynced(index uint64) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if index > m.synced {
		m.synced = index
		m.syncCond.Broadcast()
	}
}

// waitSynced waits until a sync has read the metadata at index or later (a topic created
// through this broker is then open here), or ctx ends.
func (m *clusterMode) waitSynced(ctx context.Context, index uint64) {
	stop := context.AfterFunc(ctx, func() {
		m.mu.Lock()
		m.syncCond.Broadcast()
		m.mu.Unlock()
	})
	defer stop()
	m.mu.Lock()
	defer m.mu.Unlock()
	for m.synced < index && ctx.Err() == nil {
		select {
		case <-m.done:
			return
		default:
		}
		m.syncCond.Wait()
	}
}

func replicaKey(topicID string, p int32) string { return topicID + "/" + strconv.Itoa(int(p)) }

// sync brings topics and replicas in line with the applied metadata.
func (m *clusterMode) sync() error {
	index := m.cl.AppliedIndex()
	topics, err := m.cl.Topics()
	if err != nil {
		return err
	}
	list, err := m.cl.Brokers()
	if err != nil {
		return err
	}
	brokers := make(map[int32]cluster.Broker, len(list))
	for _, b := range list {
		brokers[b.ID] = b
	}
	m.mu.Lock()
	m.brokers = brokers
	m.mu.Unlock()

	want := make(map[string]cluster.TopicInfo, len(topics))
	for _, t := range topics {
		want[t.Name] = t
	}
	// Topics gone from the metadata (or deleted and created again: another id).
	r := m.r
	var gone []*topicState
	r.mu.Lock()
	for name, ts := range r.topics {
		if t, ok := want[name]; !ok || t.ID != ts.info.ID {
			gone = append(gone, ts)
			delete(r.topics, name)
			delete(r.byKey, topic.CollisionKey(name))
		}
	}
	r.mu.Unlock()
	var errs []error
	for _, ts := range gone {
		m.removeTopic(ts)
	}
	if !m.strayChecked {
		if err := m.removeStrayDirs(want); err != nil {
			errs = append(errs, err)
		} else {
			m.strayChecked = true
		}
	}
	for _, t := range topics {
		if err := m.syncTopic(t, brokers); err != nil {
			errs = append(errs, fmt.Errorf("topic %q: %w", t.Name, err))
		}
	}
	m.mu.Lock()
	if index > m.synced {
		m.synced = index
	}
	m.syncCond.Broadcast()
	m.mu.Unlock()
	return errors.Join(errs...)
}

func (m *clusterMode) removeTopic(ts *topicState) {
	for _, p := range ts.parts {
		if p != nil {
			if err := p.Delete(); err != nil {
				m.r.log.Warn().Err(err).Str("topic", ts.info.Name).Msg("deleting a replica of a deleted topic")
			}
		}
	}
	dir := filepath.Join(m.r.dir, ts.info.Name)
	if err := removeTopicDir(dir, ts.info.ID); err != nil {
		m.r.log.Warn().Err(err).Str("dir", dir).Msg("removing a deleted topic's directory")
	}
	m.r.log.Info().Str("topic", ts.info.Name).Str("topic_id", ts.info.ID).Msg("topic removed (deleted from the metadata)")
}

// removeTopicDir removes a topic directory if it holds topic id (any id if id is "").
func removeTopicDir(dir, id string) error {
	if id != "" {
		if got, err := readReplicaDirID(dir); err == nil && got != id {
			return nil // another incarnation of the name took the directory
		}
	}
	if err := os.RemoveAll(dir); err != nil {
		return err
	}
	return vfs.OS.SyncDir(filepath.Dir(dir))
}

// removeStrayDirs removes topic directories the metadata does not know (a topic deleted
// while this broker was down).
func (m *clusterMode) removeStrayDirs(want map[string]cluster.TopicInfo) error {
	names, err := topicDirNames(m.r.dir)
	if err != nil {
		return err
	}
	for _, name := range names {
		m.r.mu.Lock()
		_, open := m.r.topics[name]
		m.r.mu.Unlock()
		if _, ok := want[name]; ok || open {
			continue
		}
		dir := filepath.Join(m.r.dir, name)
		m.r.log.Info().Str("dir", dir).Msg("removing the directory of a topic the metadata does not hold")
		if err := removeTopicDir(dir, ""); err != nil {
			return err
		}
	}
	return nil
}

func readReplicaDirID(dir string) (string, error) {
	b, err := os.ReadFile(filepath.Join(dir, topicFileName))
	if err != nil {
		return "", err
	}
	var f replicaDirTopicFile
	if err := json.Unmarshal(b, &f); err != nil {
		return "", err
	}
	return f.ID, nil
}

// prepareTopicDir makes sure dir belongs to topic t (removing what another topic of the
// same name left) and records t's id in it.
func prepareTopicDir(dir string, t cluster.TopicInfo) error {
	id, err := readReplicaDirID(dir)
	switch {
	case err == nil && id == t.ID:
		return nil
	case err == nil, !errors.Is(err, fs.ErrNotExist):
		if err := removeTopicDir(dir, ""); err != nil {
			return err
		}
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	if err := vfs.OS.SyncDir(filepath.Dir(dir)); err != nil {
		return err
	}
	b, err := json.Marshal(replicaDirTopicFile{Name: t.Name, ID: t.ID})
	if err != nil {
		return err
	}
	return vfs.WriteFileAtomic(vfs.OS, filepath.Join(dir, topicFileName), append(b, '\n'))
}

func (m *clusterMode) syncTopic(t cluster.TopicInfo, brokers map[int32]cluster.Broker) error {
	r := m.r
	asg, err := m.cl.Assignment(t.Name)
	if err != nil {
		return err
	}
	cfg, err := topic.ParseConfig(t.Configs)
	if err != nil {
		return err
	}
	info := TopicInfo{
		Name: t.Name, ID: t.ID, Partitions: t.Partitions, ReplicationFactor: t.ReplicationFactor,
		CreatedAt: t.CreatedAt, Config: cfg, Overrides: topic.CanonicalOverrides(cfg, keysOf(t.Configs)),
	}
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		return ErrRegistryClosed
	}
	ts, ok := r.topics[t.Name]
	if !ok {
		ts = &topicState{info: info, parts: make([]*partition.Partition, t.Partitions)}
		r.topics[t.Name] = ts
		r.byKey[topic.CollisionKey(t.Name)] = t.Name
	}
	cfgChanged := ok && !maps.Equal(ts.info.Overrides, info.Overrides)
	ts.info = info
	ts.assign = asg
	parts := slices.Clone(ts.parts)
	r.mu.Unlock()

	if cfgChanged {
		for _, p := range parts {
			if p == nil {
				continue
			}
			var re *partition.ReopenError
			if err := p.UpdateConfig(cfg); err != nil && !errors.As(err, &re) {
				r.log.Warn().Err(err).Str("topic", t.Name).Msg("applying a topic config change")
			}
		}
	}
	dir := filepath.Join(r.dir, t.Name)
	var (
		errs  []error
		errMu sync.Mutex
		opens sync.WaitGroup
		slots = make(chan struct{}, openParallelism)
	)
	addErr := func(err error) {
		errMu.Lock()
		errs = append(errs, err)
		errMu.Unlock()
	}
	for _, a := range asg {
		key := replicaKey(t.ID, a.Partition)
		local := slices.Contains(a.Replicas, m.self)
		cur := parts[a.Partition]
		switch {
		case local && cur == nil:
			m.mu.Lock()
			delete(m.excluded, key)
			m.mu.Unlock()
			if err := prepareTopicDir(dir, t); err != nil {
				errs = append(errs, err)
				continue
			}
			// Opening a replica is a few fsyncs: a new topic's replicas open in parallel.
			slots <- struct{}{}
			opens.Add(1)
			go func() {
				defer func() { <-slots; opens.Done() }()
				p, err := m.openReplica(t, cfg, a, brokers)
				if err != nil {
					addErr(err)
					return
				}
				r.mu.Lock()
				if r.closed || r.topics[t.Name] != ts {
					r.mu.Unlock()
					_ = p.Close()
					return
				}
				ts.parts[a.Partition] = p
				r.mu.Unlock()
			}()
		case !local && cur != nil:
			if m.replicaRemovable(key, cur) {
				r.mu.Lock()
				if ts.parts[a.Partition] == cur {
					ts.parts[a.Partition] = nil
				}
				r.mu.Unlock()
				if err := cur.Delete(); err != nil {
					addErr(err)
				}
				m.mu.Lock()
				delete(m.excluded, key)
				m.mu.Unlock()
				r.log.Info().Str("topic", t.Name).Int32("partition", a.Partition).Msg("replica removed (assigned elsewhere)")
			}
		case cur != nil && cur.IsLeader():
			if err := m.reconcileGroup(cur, a, brokers); err != nil {
				r.log.Debug().Err(err).Str("topic", t.Name).Int32("partition", a.Partition).Msg("replica set change")
			}
		}
	}
	opens.Wait()
	return errors.Join(errs...)
}

// openReplica opens this broker's replica of partition a of topic t.
func (m *clusterMode) openReplica(t cluster.TopicInfo, cfg topic.Config, a cluster.PartitionAssignment, brokers map[int32]cluster.Broker) (*partition.Partition, error) {
	dir := filepath.Join(m.r.dir, t.Name, strconv.Itoa(int(a.Partition)))
	_, statErr := os.Stat(dir)
	fresh := errors.Is(statErr, fs.ErrNotExist)
	var boot []raft.Server
	if fresh && a.Epoch == 1 && !m.bornAt.After(t.CreatedAt) {
		for _, id := range a.Replicas {
			b, ok := brokers[id]
			if !ok {
				return nil, fmt.Errorf("partition %d: replica broker %d is not in the metadata", a.Partition, id)
			}
			boot = append(boot, raft.Server{Suffrage: raft.Voter, ID: cluster.RaftServerID(id, b.Incarnation), Address: raft.ServerAddress(b.RaftAddr)})
		}
	}
	tr, err := m.net.Transport(replicaKey(t.ID, a.Partition))
	if err != nil {
		return nil, err
	}
	o := m.r.popts
	o.Topic, o.Partition, o.Logger = t.Name, a.Partition, m.r.log
	p, err := partition.OpenReplicated(dir, cfg, o, partition.Replication{
		ID: m.selfID, Transport: tr, Bootstrap: boot, Raft: m.raft, GuardVotes: true,
	})
	if err != nil {
		if c, ok := tr.(raft.WithClose); ok {
			_ = c.Close()
		}
		return nil, fmt.Errorf("%w: %w", ErrStorage, err)
	}
	m.r.log.Info().Str("topic", t.Name).Int32("partition", a.Partition).Bool("bootstrap", len(boot) > 0).
		Ints32("replicas", a.Replicas).Msg("replica opened")
	// A new group does not wait for Raft's (long) heartbeat timeout to elect its first
	// leader: its preferred replica (the assignment's first) starts an election at once.
	// A reopened group does not do this: its election would be a forced one (a TimeoutNow,
	// which skips the pre-vote), and a replica that restarted and has not heard from its
	// leader yet (the leader backs off from a replica that was down) would depose a live
	// leader. A reopened group without a leader (the whole cluster restarted) elects one
	// after Raft's own timeout, with a pre-vote.
	if len(boot) > 0 {
		// The others follow newGroupElectionWait apart in assignment order, each only while
		// the group has no leader: the first candidate fails when a replica it asks has not
		// opened the group yet (a topic of hundreds of partitions opens them for seconds),
		// and a candidate that failed waits out Raft's election timeout.
		rank := slices.Index(a.Replicas, m.self)
		startIfLeaderless := func() {
			if id, _ := p.Leader(); id == "" && !p.IsLeader() {
				if tr, ok := p.Transport().(*raftnet.Transport); ok {
					tr.StartElection()
				}
			}
		}
		if rank == 0 {
			startIfLeaderless()
		}
		for i := 1; i <= electionRetries; i++ {
			time.AfterFunc(time.Duration(i*len(a.Replicas)+rank)*newGroupElectionWait, startIfLeaderless)
		}
	}
	if len(boot) == 0 {
		// A reopened group forces an election only when no replica it can ask has heard from a
		// leader recently (the whole cluster restarted): a forced election skips the pre-vote,
		// and a replica that restarted while its group had a leader would depose it.
		rank := max(slices.Index(a.Replicas, m.self), 0)
		group := replicaKey(t.ID, a.Partition)
		for i := 0; i < electionRetries; i++ {
			wait := reopenElectionWait + time.Duration(i*len(a.Replicas)+rank)*newGroupElectionWait
			time.AfterFunc(wait, func() { m.electIfNoLeaderAnywhere(p, group) })
		}
	}
	return p, nil
}

// reopenElectionWait is how long a reopened group waits for its leader's first message
// before it asks its peers whether they have one (electIfNoLeaderAnywhere).
const reopenElectionWait = 3 * time.Second

// electIfNoLeaderAnywhere forces an election in a reopened group without a leader if none of
// the other voters' brokers heard from a leader (or acted as one) in the last seconds.
func (m *clusterMode) electIfNoLeaderAnywhere(p *partition.Partition, group string) {
	if id, _ := p.Leader(); id != "" || p.IsLeader() {
		return
	}
	f := p.Raft().GetConfiguration()
	if f.Error() != nil {
		return
	}
	voter, voters, answered := false, 0, 0
	for _, s := range f.Configuration().Servers {
		if s.Suffrage != raft.Voter {
			continue
		}
		voters++
		if s.ID == m.selfID {
			voter = true
			continue
		}
		active, err := m.net.GroupActive(s.Address, group)
		if err != nil {
			continue // down or unreachable: it leads nothing we would depose
		}
		if active {
			return // a leader lives; it will reach this replica
		}
		answered++
	}
	if !voter || answered+1 <= voters/2 {
		return // no majority answers: a forced election could not win, only raise the term
	}
	if id, _ := p.Leader(); id != "" || p.IsLeader() {
		return
	}
	m.r.log.Info().Str("topic", p.Topic()).Int32("partition", p.Number()).Msg("no replica has a leader: starting an election")
	if tr, ok := p.Transport().(*raftnet.Transport); ok {
		tr.StartElection()
	}
}

// replicaRemovable reports whether an unassigned replica may go: its group's configuration
// no longer holds this broker, or RemoveDelay has passed since it was first seen unassigned.
func (m *clusterMode) replicaRemovable(key string, p *partition.Partition) bool {
	m.mu.Lock()
	since, ok := m.excluded[key]
	if !ok {
		since = time.Now()
		m.excluded[key] = since
	}
	m.mu.Unlock()
	if time.Since(since) >= m.opts.RemoveDelay {
		return true
	}
	f := p.Raft().GetConfiguration()
	if f.Error() != nil {
		return false
	}
	for _, s := range f.Configuration().Servers {
		if s.ID == m.selfID {
			return false
		}
	}
	return true
}

// reconcileGroup makes one change that moves the Raft configuration of a group this broker
// leads towards its assignment (see the file comment for the order).
func (m *clusterMode) reconcileGroup(p *partition.Partition, a cluster.PartitionAssignment, brokers map[int32]cluster.Broker) error {
	rf := p.Raft()
	f := rf.GetConfiguration()
	if err := f.Error(); err != nil {
		return err
	}
	conf := f.Configuration()
	prev := f.Index()
	want := make(map[raft.ServerID]raft.ServerAddress, len(a.Replicas))
	for _, id := range a.Replicas {
		b, ok := brokers[id]
		if !ok {
			return fmt.Errorf("replica broker %d is not in the metadata", id)
		}
		want[cluster.RaftServerID(id, b.Incarnation)] = raft.ServerAddress(b.RaftAddr)
	}
	const timeout = 5 * time.Second
	// 1. Servers of brokers that are gone, or came back as another incarnation.
	for _, s := range conf.Servers {
		if _, ok := want[s.ID]; ok || s.ID == m.selfID {
			continue
		}
		bid, inc, ok := cluster.ParseRaftServerID(s.ID)
		b, known := brokers[bid]
		if !ok || !known || b.Incarnation != inc || b.State != cluster.BrokerAlive {
			m.r.log.Info().Str("topic", p.Topic()).Int32("partition", p.Number()).Str("server", string(s.ID)).Msg("removing a lost replica from the group")
			return rf.RemoveServer(s.ID, prev, timeout).Error()
		}
	}
	have := make(map[raft.ServerID]raft.Server, len(conf.Servers))
	for _, s := range conf.Servers {
		have[s.ID] = s
	}
	// 2. Missing replicas join as non-voters; 3. caught-up non-voters are promoted.
	allVote := true
	for _, id := range slices.Sorted(maps.Keys(want)) {
		addr := want[id]
		s, ok := have[id]
		switch {
		case !ok:
			m.r.log.Info().Str("topic", p.Topic()).Int32("partition", p.Number()).Str("server", string(id)).Msg("adding a replica to the group (non-voter until caught up)")
			return rf.AddNonvoter(id, addr, prev, timeout).Error()
		case s.Suffrage != raft.Voter:
			allVote = false
			if m.caughtUp(p, addr) {
				m.r.log.Info().Str("topic", p.Topic()).Int32("partition", p.Number()).Str("server", string(id)).Msg("promoting a caught-up replica to voter")
				return rf.AddVoter(id, addr, prev, timeout).Error()
			}
		}
	}
	if !allVote {
		return nil
	}
	// 4. Replicas moved elsewhere, once every assigned one votes.
	for _, s := range conf.Servers {
		if _, ok := want[s.ID]; ok {
			continue
		}
		if s.ID == m.selfID {
			m.r.log.Info().Str("topic", p.Topic()).Int32("partition", p.Number()).Msg("handing leadership over: this replica moves elsewhere")
			return rf.LeadershipTransfer().Error()
		}
		m.r.log.Info().Str("topic", p.Topic()).Int32("partition", p.Number()).Str("server", string(s.ID)).Msg("removing a moved replica from the group")
		return rf.RemoveServer(s.ID, prev, timeout).Error()
	}
	// 5. Leadership goes to the preferred replica (the assignment's first), so that leaders
	// spread over the brokers as placement intended, once it is alive and caught up.
	pref := a.Replicas[0]
	if pref == m.self {
		return nil
	}
	b := brokers[pref]
	prefID := cluster.RaftServerID(pref, b.Incarnation)
	if b.State != cluster.BrokerAlive || have[prefID].Suffrage != raft.Voter || !m.caughtUp(p, want[prefID]) {
		return nil
	}
	if tr, ok := p.Transport().(*raftnet.Transport); !ok || !tr.Reachable(want[prefID]) {
		// Serf may not have seen it fail yet: a transfer to it would hold this group's writes
		// while Raft tries to catch it up (raftnet waits for an unreachable follower).
		return nil
	}
	m.r.log.Debug().Str("topic", p.Topic()).Int32("partition", p.Number()).Int32("to", pref).Msg("handing leadership to the preferred replica")
	return rf.LeadershipTransferToServer(prefID, want[prefID]).Error()
}

// caughtUp reports whether the follower at addr is within CatchUpLag entries of this leader's
// log, by the last AppendEntries response it sent, and sent it recently (within
// progressFresh: an idle group's followers answer one every commit timeout, so a follower
// that stopped answering, a broker killed, drops out).
func (m *clusterMode) caughtUp(p *partition.Partition, addr raft.ServerAddress) bool {
	tr, ok := p.Transport().(*raftnet.Transport)
	if !ok {
		return false
	}
	got, at, ok := tr.Progress(addr)
	if !ok || time.Since(at) > m.progressFresh() {
		return false
	}
	last := p.Raft().LastIndex()
	return got+m.opts.CatchUpLag >= last
}

// progressFresh is how old a follower's last acknowledged append may be for it to count as
// caught up: three commit timeouts (an idle group's leader sends each follower an append
// every one to two), and at least 3 s.
func (m *clusterMode) progressFresh() time.Duration {
	c := m.raft
	if c == nil {
		c = partition.DefaultRaftConfig()
	}
	return max(3*c.CommitTimeout, 3*time.Second)
}

// inSync returns the replicas of a partition this broker leads that are caught up (itself
// included); nil when it does not lead it.
func (m *clusterMode) inSync(p *partition.Partition) []int32 {
	if p == nil || !p.IsLeader() {
		return nil
	}
	f := p.Raft().GetConfiguration()
	if f.Error() != nil {
		return nil
	}
	var out []int32
	for _, s := range f.Configuration().Servers {
		id, _, ok := cluster.ParseRaftServerID(s.ID)
		if !ok {
			continue
		}
		if s.ID == m.selfID || (s.Suffrage == raft.Voter && m.caughtUp(p, s.Address)) {
			out = append(out, id)
		}
	}
	slices.Sort(out)
	return out
}

// leaderOf returns the leader of a partition as this broker knows it: the Raft leader of its
// own replica, else the preferred leader of the assignment (the client is redirected from
// there if it moved). ok is false while no leader is known.
func (m *clusterMode) leaderOf(p *partition.Partition, a cluster.PartitionAssignment) (id int32, addr string, ok bool) {
	m.mu.Lock()
	brokers := m.brokers
	m.mu.Unlock()
	if p != nil {
		sid, _ := p.Leader()
		if sid == "" {
			return -1, "", false
		}
		id, _, ok = cluster.ParseRaftServerID(raft.ServerID(sid))
		if !ok {
			return -1, "", false
		}
		b, known := brokers[id]
		return id, b.Addr, known
	}
	if len(a.Replicas) == 0 {
		return -1, "", false
	}
	id = a.Replicas[0]
	b, known := brokers[id]
	if !known || b.State != cluster.BrokerAlive {
		return -1, "", false
	}
	return id, b.Addr, true
}

// openParallelism is how many replicas of a topic open at once.
const openParallelism = 16

// newGroupElectionWait spaces the forced elections of a new group's replicas (see
// openReplica).
const newGroupElectionWait = time.Second

// electionRetryEvery and electionRetries: PeerDown's elections are tried again while the
// group has no leader (a forced election that fails is otherwise retried only after Raft's
// election timeout, 20 to 40 s).
const (
	electionRetryEvery = 2 * time.Second
	electionRetries    = 3
)

// electionStagger spaces the elections that the followers of a group whose leader's broker
// went down start: the first in rank order at once, the next one this much later if the
// group still has no leader (two candidates at once would split the vote).
const electionStagger = 300 * time.Millisecond

// PeerDown starts elections in the groups whose leader is the broker at addr (see ledBy), which
// internal/raftnet found down (raftnet.Config.PeerDown), instead of waiting for Raft's
// heartbeat timeout. Of a group's remaining voters, the one with the lowest server id starts
// at once, the others electionStagger apart, each only if the group still has no other leader.
func (r *Registry) PeerDown(addr raft.ServerAddress) {
	r.mu.Lock()
	cm := r.cm
	var parts []*partition.Partition
	for _, ts := range r.topics {
		for _, p := range ts.parts {
			if p != nil && p.Replicated() {
				parts = append(parts, p)
			}
		}
	}
	r.mu.Unlock()
	if cm == nil {
		return
	}
	for _, p := range parts {
		if !ledBy(p, addr) {
			continue
		}
		rank, ok := electionRank(p, cm.selfID, addr)
		if !ok {
			continue
		}
		start := func(retry bool) {
			_, leader := p.Leader()
			if (leader != "" && raft.ServerAddress(leader) != addr) || p.IsLeader() {
				return // a leader was elected meanwhile
			}
			tr, ok := p.Transport().(*raftnet.Transport)
			if !ok {
				return
			}
			if !majorityReachable(p, tr, addr) {
				return
			}
			if retry {
				// The broker reported down may be back and still lead (a cut that healed
				// between the attempts: this replica hears its next heartbeat seconds later).
				// Its replica says whether it led, or heard a leader, in the last seconds; an
				// election would only depose that leader. Asked with a fresh dial: the probes'
				// down state, and the dial backoff behind it, lag a heal by up to a second or
				// more, and a retry that trusted them stood in that window
				// (TestClusterHealedCutStartsNoElection failed so in CI). A broker still cut off
				// costs the retry about a probe timeout; the first attempts, which make the
				// fast failover, do not ask.
				if active, err := cm.net.GroupActiveNow(addr, tr.Group()); err == nil && active {
					return
				}
			}
			tr.StartElection()
		}
		if rank == 0 {
			start(false)
		} else {
			time.AfterFunc(time.Duration(rank)*electionStagger, func() { start(false) })
		}
		// If that election fails (a candidate whose log is behind is refused, and waits out
		// Raft's long election timeout), the next attempts come from the others, in turn.
		for i := 1; i <= electionRetries; i++ {
			time.AfterFunc(time.Duration(i)*electionRetryEvery+time.Duration(rank)*electionStagger, func() { start(true) })
		}
	}
}

// ledBy reports whether the group of replica p was led by the broker at addr as far as this
// replica knows: Raft names addr as its leader, or Raft knows no leader (and p does not lead)
// and the last leader the transport saw append here is addr.
//
// The second case is the one that matters after a cut-off leader: Raft forgets its leader as
// soon as it hears a vote request for a newer term (any state change clears it), and the
// other follower's probe may report the broker down first (probes run every 250 ms on each
// broker, unsynchronised). If that follower stood first and was refused (its log is
// shorter: an acks=all write is committed by the leader and one follower, so the other may
// lack the last entries), this replica, the one that holds them, no longer named addr as
// leader when its own report came, skipped the group, and the refused candidate waited out
// Raft's election timeout (20 to 40 s) with no other election to join: no leader anywhere
// for ~20 s (TestClusterIsolatedLeaderFastFailoverLagging in internal/node).
func ledBy(p *partition.Partition, addr raft.ServerAddress) bool {
	if p.IsLeader() {
		return false
	}
	if _, leader := p.Leader(); leader != "" {
		return raft.ServerAddress(leader) == addr
	}
	tr, ok := p.Transport().(*raftnet.Transport)
	return ok && tr.LastLeader() == addr
}

// electionRank is self's place among the group's voters other than the one at down, by
// server id; ok is false if self does not vote.
func electionRank(p *partition.Partition, self raft.ServerID, down raft.ServerAddress) (int, bool) {
	f := p.Raft().GetConfiguration()
	if f.Error() != nil {
		return 0, false
	}
	var ids []raft.ServerID
	voter := false
	for _, s := range f.Configuration().Servers {
		if s.Suffrage != raft.Voter || s.Address == down {
			continue
		}
		ids = append(ids, s.ID)
		voter = voter || s.ID == self
	}
	if !voter {
		return 0, false
	}
	slices.Sort(ids)
	return slices.Index(ids, self), true
}

// majorityReachable reports whether this replica reaches a majority of its group's voters
// (itself included; the broker at down counts only if it answers after all). A forced
// election skips Raft's pre-vote, so a replica cut off from the others must not start one: it
// would raise the group's term where it cannot win, and its answers after the network heals
// would depose the leader the others elected (raftnet.Network.Reachable).
func majorityReachable(p *partition.Partition, tr *raftnet.Transport, down raft.ServerAddress) bool {
	f := p.Raft().GetConfiguration()
	if f.Error() != nil {
		return false
	}
	voters, reached := 0, 0
	for _, s := range f.Configuration().Servers {
		if s.Suffrage != raft.Voter {
			continue
		}
		voters++
		if s.Address != down && tr.Reachable(s.Address) {
			reached++
		}
	}
	return reached > voters/2
}
