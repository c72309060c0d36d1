// The Cluster: the API the broker calls, and its configuration.

package cluster

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/runnel-io/runnel/internal/voteguard"

	"github.com/hashicorp/raft"
	raftboltdb "github.com/hashicorp/raft-boltdb/v2"
	"github.com/hashicorp/serf/serf"
	"github.com/rs/zerolog"

	"github.com/runnel-io/runnel/topic"
)

// Defaults of Config.
const (
	DefaultVoters            = 3
	DefaultFailedTimeout     = 30 * time.Second
	DefaultReconcileInterval = time.Second
	DefaultApplyTimeout      = 10 * time.Second
)

// Files and directories under Config.DataDir/meta.
const (
	metaDirName   = "meta"
	raftFileName  = "raft.db"  // raft-boltdb: the metadata Raft log and stable store
	stateFileName = "state.db" // the state machine (fsm.go)
	snapDirName   = "snapshots"
)

// Errors of the API.
var (
	// ErrNotLeader is wrapped by NotLeaderError: a change was asked of a broker that is not
	// the metadata leader.
	ErrNotLeader = errors.New("cluster: not the metadata leader")
	// ErrClosed is returned after Close.
	ErrClosed = errors.New("cluster: closed")
	// ErrInvalidPartitions is returned for a partition count out of 1..MaxPartitions.
	ErrInvalidPartitions = errors.New("cluster: invalid partition count")
)

// NotLeaderError says who the metadata leader is, if known. Changes are not forwarded: the
// broker answers its client with the leader's address (UNAVAILABLE, as for a partition), and
// the client retries there.
type NotLeaderError struct {
	LeaderID   int32  // -1 if unknown
	LeaderAddr string // its advertised gRPC address, "" if unknown
}

func (e *NotLeaderError) Error() string {
	if e.LeaderAddr == "" {
		return ErrNotLeader.Error() + " (no leader known)"
	}
	return fmt.Sprintf("%s: the leader is broker %d at %s", ErrNotLeader, e.LeaderID, e.LeaderAddr)
}

// Unwrap returns ErrNotLeader.
func (e *NotLeaderError) Unwrap() error { return ErrNotLeader }

// Config configures a Cluster.
type Config struct {
	// DataDir is the broker's data directory; the metadata lives under DataDir/meta.
	DataDir string
	// BrokerID is this broker's id (see LoadOrCreateBrokerID).
	BrokerID int32
	// Advertise is the gRPC address other brokers and clients dial.
	Advertise string
	// SerfBind is the Serf gossip address (host:port; port 0 picks a free port).
	SerfBind string
	// SerfAdvertise is the Serf address others dial, if not SerfBind's.
	SerfAdvertise string
	// Join lists Serf addresses of running brokers. Empty: this broker bootstraps a new
	// cluster if its metadata is new.
	Join []string
	// Transport carries the metadata group's Raft RPCs (owned by the caller, which closes it
	// after Close). Its LocalAddr is gossiped as this broker's Raft address.
	Transport raft.Transport
	// Voters is how many brokers vote in the metadata group (1, 3, 5 or 7; default 3);
	// the others replicate it as non-voters.
	Voters int
	// FailedTimeout is how long a broker may be failed before the leader removes it from
	// the Raft configuration and moves its replicas (default 30s). A broker that left is
	// handled at once.
	FailedTimeout time.Duration
	// ReconcileInterval is how often the leader compares Serf, Raft and the metadata
	// (it also does so on every Serf event). Default 1s.
	ReconcileInterval time.Duration
	// ApplyTimeout bounds a proposal (default 10s; a context deadline may shorten it).
	ApplyTimeout time.Duration
	// Logger receives the cluster's events (default: none).
	Logger zerolog.Logger
	// TuneRaft and TuneSerf, if set, adjust the Raft and Serf configurations (tests shorten
	// their timeouts).
	TuneRaft func(*raft.Config)
	TuneSerf func(*serf.Config)
}

// DefaultConfig returns a Config with the defaults set.
func DefaultConfig() Config {
	return Config{
		Voters: DefaultVoters, FailedTimeout: DefaultFailedTimeout,
		ReconcileInterval: DefaultReconcileInterval, ApplyTimeout: DefaultApplyTimeout,
		Logger: zerolog.Nop(),
	}
}

func (c *Config) setDefaults() {
	if c.Voters == 0 {
		c.Voters = DefaultVoters
	}
	if c.FailedTimeout == 0 {
		c.FailedTimeout = DefaultFailedTimeout
	}
	if c.ReconcileInterval == 0 {
		c.ReconcileInterval = DefaultReconcileInterval
	}
	if c.ApplyTimeout == 0 {
		c.ApplyTimeout = DefaultApplyTimeout
	}
}

// Validate checks the config (after defaults).
func (c Config) Validate() error {
	var errs []error
	if c.DataDir == "" {
		errs = append(errs, errors.New("empty data dir"))
	}
	if c.BrokerID < 0 {
		errs = append(errs, fmt.Errorf("broker id %d is negative", c.BrokerID))
	}
	if c.Advertise == "" {
		errs = append(errs, errors.New("empty advertise address"))
	}
	if c.SerfBind == "" {
		errs = append(errs, errors.New("empty serf bind address"))
	}
	if c.Transport == nil {
		errs = append(errs, errors.New("no raft transport"))
	}
	switch c.Voters {
	case 1, 3, 5, 7:
	default:
		errs = append(errs, fmt.Errorf("voters %d: want 1, 3, 5 or 7", c.Voters))
	}
	if c.FailedTimeout < 0 || c.ReconcileInterval <= 0 || c.ApplyTimeout <= 0 {
		errs = append(errs, errors.New("negative or zero timeout"))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("cluster: config: %w", err)
	}
	return nil
}

// Broker is a broker as the metadata records it.
type Broker struct {
	ID          int32
	Addr        string // advertised gRPC address
	RaftAddr    string
	Incarnation string
	State       BrokerState
	Since       time.Time // when it entered State (the leader's clock)
	Voter       bool      // votes in the metadata Raft group
}

// TopicSpec is a topic to create.
type TopicSpec struct {
	Name              string
	Partitions        int32 // 1..MaxPartitions
	ReplicationFactor int32 // 1..alive brokers
	Configs           map[string]string
}

// TopicInfo is a topic as the metadata records it.
type TopicInfo struct {
	Name              string
	ID                string
	Partitions        int32
	ReplicationFactor int32
	// Configs are the keys the topic overrides, with canonical values (topic.ParseConfig
	// gives the effective config).
	Configs   map[string]string
	CreatedAt time.Time
}

// PartitionAssignment is a partition's replicas, preferred leader first. Epoch starts at 1
// and grows with every change of the replica list.
type PartitionAssignment struct {
	Partition int32
	Replicas  []int32
	Epoch     uint64
}

// OffsetCommit is one committed offset to store.
type OffsetCommit struct {
	Topic     string
	TopicID   string
	Partition int32
	Offset    int64
	Metadata  string
}

// CommittedOffset is one stored committed offset.
type CommittedOffset struct {
	Topic       string
	TopicID     string
	Partition   int32
	Offset      int64
	Metadata    string
	CommittedAt time.Time
}

// Cluster is this broker's membership in the cluster and its replica of the metadata.
//
// Goroutines (all tracked by wg and stopped by Close): Raft's own; Serf's own and
// Membership's translator; the vote guard's RPC filter; and the control loop (Cluster.loop
// in meta.go), which on the metadata leader turns Serf's view into committed changes.
//
// Lock order: decideMu, then fsm.mu (inside the fsm's methods); watchMu, then a Watcher's
// mu. publish (watchMu) runs on Raft's FSM goroutine and takes no other lock.
type Cluster struct {
	cfg         Config
	log         zerolog.Logger
	incarnation string
	localID     raft.ServerID

	fsm   *fsm
	store *raftboltdb.BoltStore
	snaps *raft.FileSnapshotStore
	guard *voteguard.Guard
	raft  atomic.Pointer[raft.Raft]
	ml    *Membership

	// decideMu serializes the leader's read-decide-propose sequences (CreateTopic,
	// AlterTopic, Rebalance, the control loop's reconcile), so that no decision is made on
	// state another one is about to change.
	decideMu sync.Mutex

	watchMu  sync.Mutex
	watchers map[*Watcher]struct{} // under watchMu

	joined   atomic.Bool // Serf has joined a seed (or there is none)
	lastJoin time.Time   // the last join attempt; control loop only

	kick      chan struct{} // wakes the control loop (cap 1)
	caughtUp  chan struct{} // closed once the state holds what it held before the restart
	done      chan struct{}
	wg        sync.WaitGroup
	started   atomic.Bool
	closeOnce sync.Once
	closeErr  error
}

// New opens the metadata stores in cfg.DataDir. Start starts Raft and Serf.
func New(cfg Config) (*Cluster, error) {
	cfg.setDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	inc, _, err := LoadOrCreateIncarnation(cfg.DataDir)
	if err != nil {
		return nil, err
	}
	dir := filepath.Join(cfg.DataDir, metaDirName)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("cluster: %w", err)
	}
	c := &Cluster{
		cfg:         cfg,
		log:         cfg.Logger.With().Str("component", "cluster").Int32("broker", cfg.BrokerID).Logger(),
		incarnation: inc,
		localID:     serverID(cfg.BrokerID, inc),
		watchers:    map[*Watcher]struct{}{},
		kick:        make(chan struct{}, 1),
		caughtUp:    make(chan struct{}),
		done:        make(chan struct{}),
	}
	if c.fsm, err = openFSM(filepath.Join(dir, stateFileName), c.publish); err != nil {
		return nil, err
	}
	if c.store, err = raftboltdb.New(raftboltdb.Options{Path: filepath.Join(dir, raftFileName)}); err != nil {
		_ = c.fsm.close()
		return nil, fmt.Errorf("cluster: open raft store: %w", err)
	}
	if c.snaps, err = raft.NewFileSnapshotStoreWithLogger(filepath.Join(dir, snapDirName), 2, newHCLogger(c.log, "snapshots")); err != nil {
		_ = c.store.Close()
		_ = c.fsm.close()
		return nil, fmt.Errorf("cluster: open snapshot store: %w", err)
	}
	return c, nil
}

// Incarnation returns this broker's data directory incarnation.
func (c *Cluster) Incarnation() string { return c.incarnation }

// Joined reports whether Serf has reached one of the seeds (true without seeds).
func (c *Cluster) Joined() bool { return len(c.cfg.Join) == 0 || c.joined.Load() }

// RaftServerID returns the metadata Raft server id of a broker: "<id>/<incarnation>". The
// partitions' Raft groups can use the same ids, so that a replica whose data dir was wiped
// is a new server there too.
func RaftServerID(brokerID int32, incarnation string) raft.ServerID {
	return serverID(brokerID, incarnation)
}

// ParseRaftServerID is the inverse of RaftServerID.
func ParseRaftServerID(id raft.ServerID) (brokerID int32, incarnation string, ok bool) {
	return parseServerID(id)
}

// SerfAddr returns the address this broker gossips on (valid after Start).
func (c *Cluster) SerfAddr() string { return c.ml.Addr() }

// Brokers returns every broker the metadata knows, by id.
func (c *Cluster) Brokers() ([]Broker, error) {
	recs, err := c.fsm.brokers()
	if err != nil {
		return nil, err
	}
	out := make([]Broker, 0, len(recs))
	for _, r := range recs {
		out = append(out, brokerOf(r))
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out, nil
}

func brokerOf(r brokerRecord) Broker {
	return Broker{ID: r.ID, Addr: r.Addr, RaftAddr: r.RaftAddr, Incarnation: r.Incarnation,
		State: r.State, Since: time.UnixMilli(r.SinceMS).UTC(), Voter: r.Voter}
}

func topicInfoOf(r topicRecord) TopicInfo {
	return TopicInfo{Name: r.Name, ID: r.ID, Partitions: r.Partitions, ReplicationFactor: r.ReplicationFactor,
		Configs: maps.Clone(r.Configs), CreatedAt: time.UnixMilli(r.CreatedAtMS).UTC()}
}

// Topics returns every topic, by name.
func (c *Cluster) Topics() ([]TopicInfo, error) {
	recs, err := c.fsm.topics()
	if err != nil {
		return nil, err
	}
	out := make([]TopicInfo, len(recs))
	for i, r := range recs {
		out[i] = topicInfoOf(r)
	}
	return out, nil // bbolt iterates keys in order: sorted by name
}

// Topic returns one topic.
func (c *Cluster) Topic(name string) (TopicInfo, error) {
	rec, ok, err := c.fsm.topic(name)
	if err != nil {
		return TopicInfo{}, err
	}
	if !ok {
		return TopicInfo{}, unknownTopic(name)
	}
	return topicInfoOf(rec), nil
}

// Assignment returns a topic's partitions' replica lists, in partition order.
func (c *Cluster) Assignment(name string) ([]PartitionAssignment, error) {
	parts, ok, err := c.fsm.assignment(name)
	if err != nil {
		return nil, err
	}
	if !ok {
		return nil, unknownTopic(name)
	}
	out := make([]PartitionAssignment, len(parts))
	for i, p := range parts {
		out[i] = PartitionAssignment{Partition: int32(i), Replicas: p.Replicas, Epoch: p.Epoch}
	}
	return out, nil
}

// FetchOffsets returns a group's committed offsets, by topic and partition.
func (c *Cluster) FetchOffsets(group string) ([]CommittedOffset, error) {
	out, ok, err := c.fsm.offsets(group)
	if err != nil {
		return nil, err
	}
	if !ok {
		return nil, fmt.Errorf("group %q: %w", group, ErrUnknownGroup)
	}
	return out, nil
}

// ClusterID returns the cluster's id, kept in the metadata: generated by the first metadata
// leader (the founding broker) and the same on every broker once applied; "" before.
func (c *Cluster) ClusterID() string { return c.fsm.clusterID() }

// AppliedIndex returns the last metadata Raft index this broker has applied.
func (c *Cluster) AppliedIndex() uint64 { return c.fsm.appliedIndex() }

// CaughtUp is closed once this broker's metadata holds at least what it held before it
// started: at once, unless the state file was rebuilt after a machine crash (fsm_boot.go),
// in which case the newest snapshot was restored and the log after it must be replayed
// first. Until then the metadata may show the cluster as it was at the snapshot, and a
// broker must not act on it (removing the directories of topics created since).
func (c *Cluster) CaughtUp() <-chan struct{} { return c.caughtUp }

// Leader returns the metadata leader's broker id and advertised address; ok is false while
// no leader is known.
func (c *Cluster) Leader() (id int32, addr string, ok bool) {
	r := c.raft.Load()
	if r == nil {
		return -1, "", false
	}
	_, sid := r.LeaderWithID()
	id, _, ok = parseServerID(sid)
	if !ok {
		return -1, "", false
	}
	if recs, err := c.fsm.brokers(); err == nil {
		addr = recs[id].Addr
	}
	return id, addr, true
}

// IsLeader reports whether this broker is the metadata leader.
func (c *Cluster) IsLeader() bool {
	r := c.raft.Load()
	return r != nil && r.State() == raft.Leader
}

func (c *Cluster) notLeader() error {
	id, addr, ok := c.Leader()
	if !ok {
		id = -1
	}
	return &NotLeaderError{LeaderID: id, LeaderAddr: addr}
}

// beginDecision takes decideMu and makes sure this broker leads and has applied everything
// committed before it became leader (a Barrier), so that a decision reads current state.
// On success the caller must call c.decideMu.Unlock.
func (c *Cluster) beginDecision(ctx context.Context) error {
	r := c.raft.Load()
	if r == nil {
		return ErrClosed
	}
	if r.State() != raft.Leader {
		return c.notLeader()
	}
	c.decideMu.Lock()
	timeout := c.cfg.ApplyTimeout
	if dl, ok := ctx.Deadline(); ok {
		timeout = min(timeout, time.Until(dl))
	}
	if err := r.Barrier(timeout).Error(); err != nil {
		c.decideMu.Unlock()
		if errors.Is(err, raft.ErrNotLeader) || errors.Is(err, raft.ErrLeadershipLost) {
			return c.notLeader()
		}
		return fmt.Errorf("cluster: barrier: %w", err)
	}
	return nil
}

// propose commits a command through the metadata Raft group and returns the state
// machine's answer. Only the leader proposes; others get a NotLeaderError. A proposal
// whose leader lost leadership before it committed may or may not have been applied.
func (c *Cluster) propose(ctx context.Context, t commandType, payload any) error {
	wait, err := c.proposeAsync(ctx, t, payload)
	if err != nil {
		return err
	}
	return wait()
}

// proposeAsync hands a command to Raft and returns a function that waits for its outcome.
// Commands proposed one after the other from one goroutine enter the log in that order
// (Raft takes them from one channel), so a caller can pipeline ordered proposals.
func (c *Cluster) proposeAsync(ctx context.Context, t commandType, payload any) (func() error, error) {
	select {
	case <-c.done:
		return nil, ErrClosed
	default:
	}
	r := c.raft.Load()
	if r == nil {
		return nil, ErrClosed
	}
	if r.State() != raft.Leader {
		return nil, c.notLeader()
	}
	data, err := encodeCommand(t, payload)
	if err != nil {
		return nil, err
	}
	timeout := c.cfg.ApplyTimeout
	if dl, ok := ctx.Deadline(); ok {
		timeout = min(timeout, time.Until(dl))
		if timeout <= 0 {
			return nil, ctx.Err()
		}
	}
	f := r.Apply(data, timeout)
	return func() error {
		if err := f.Error(); err != nil {
			switch {
			case errors.Is(err, raft.ErrNotLeader):
				return c.notLeader()
			case errors.Is(err, raft.ErrRaftShutdown):
				return ErrClosed
			case errors.Is(err, raft.ErrLeadershipLost):
				return fmt.Errorf("cluster: %s: %w (it may or may not have been committed): %w", t, err, c.notLeader())
			}
			return fmt.Errorf("cluster: %s: %w", t, err)
		}
		if err, ok := f.Response().(error); ok && err != nil {
			return err
		}
		return nil
	}, nil
}

// aliveBrokers returns the ids of the brokers recorded alive.
func aliveBrokers(recs map[int32]brokerRecord) []int32 {
	var out []int32
	for id, r := range recs {
		if r.State == BrokerAlive {
			out = append(out, id)
		}
	}
	slices.Sort(out)
	return out
}

// CreateTopic creates a topic (on the metadata leader), placing its replicas on the alive
// brokers (Assign, counting the replicas they hold already), and returns it with its
// assignment once committed.
func (c *Cluster) CreateTopic(ctx context.Context, spec TopicSpec) (TopicInfo, []PartitionAssignment, error) {
	if err := topic.ValidateName(spec.Name); err != nil {
		return TopicInfo{}, nil, err
	}
	if spec.Partitions < 1 || spec.Partitions > MaxPartitions {
		return TopicInfo{}, nil, fmt.Errorf("topic %q: %w: %d, want 1..%d", spec.Name, ErrInvalidPartitions, spec.Partitions, MaxPartitions)
	}
	cfg, err := topic.ParseConfig(spec.Configs)
	if err != nil {
		return TopicInfo{}, nil, fmt.Errorf("topic %q: %w", spec.Name, err)
	}
	if err := cfg.CheckReplicationFactor(int(spec.ReplicationFactor)); err != nil {
		return TopicInfo{}, nil, fmt.Errorf("topic %q: %w", spec.Name, err)
	}
	if spec.ReplicationFactor > MaxReplicationFactor {
		return TopicInfo{}, nil, fmt.Errorf("topic %q: replication factor %d, over the limit of %d", spec.Name, spec.ReplicationFactor, MaxReplicationFactor)
	}
	if err := c.beginDecision(ctx); err != nil {
		return TopicInfo{}, nil, err
	}
	defer c.decideMu.Unlock()
	recs, err := c.fsm.brokers()
	if err != nil {
		return TopicInfo{}, nil, err
	}
	all, _, err := c.fsm.allAssignments()
	if err != nil {
		return TopicInfo{}, nil, err
	}
	reps, err := Assign(aliveBrokers(recs), LoadOf(all), int(spec.Partitions), int(spec.ReplicationFactor))
	if err != nil {
		return TopicInfo{}, nil, fmt.Errorf("topic %q: %w", spec.Name, err)
	}
	rec := topicRecord{
		Name: spec.Name, ID: topic.NewID(), Partitions: spec.Partitions, ReplicationFactor: spec.ReplicationFactor,
		Configs: topic.CanonicalOverrides(cfg, slices.Collect(maps.Keys(spec.Configs))), CreatedAtMS: time.Now().UnixMilli(),
	}
	if err := c.propose(ctx, cmdCreateTopic, createTopicCmd{Topic: rec, Replicas: reps}); err != nil {
		return TopicInfo{}, nil, err
	}
	out := make([]PartitionAssignment, len(reps))
	for i, r := range reps {
		out[i] = PartitionAssignment{Partition: int32(i), Replicas: r, Epoch: 1}
	}
	return topicInfoOf(rec), out, nil
}

// DeleteTopic deletes a topic (on the metadata leader).
func (c *Cluster) DeleteTopic(ctx context.Context, name string) error {
	if err := topic.ValidateName(name); err != nil {
		return err
	}
	return c.propose(ctx, cmdDeleteTopic, deleteTopicCmd{Name: name})
}

// AlterTopic changes a topic's config (on the metadata leader): set adds or changes
// overrides, del removes them (back to the default). It returns the topic as altered.
func (c *Cluster) AlterTopic(ctx context.Context, name string, set map[string]string, del []string) (TopicInfo, error) {
	if err := c.beginDecision(ctx); err != nil {
		return TopicInfo{}, err
	}
	defer c.decideMu.Unlock()
	rec, ok, err := c.fsm.topic(name)
	if err != nil {
		return TopicInfo{}, err
	}
	if !ok {
		return TopicInfo{}, unknownTopic(name)
	}
	old, err := topic.ParseConfig(rec.Configs)
	if err != nil {
		return TopicInfo{}, fmt.Errorf("topic %q: stored config: %w", name, err)
	}
	cfg, err := old.Apply(set, del)
	if err != nil {
		return TopicInfo{}, fmt.Errorf("topic %q: %w", name, err)
	}
	if err := cfg.CheckReplicationFactor(int(rec.ReplicationFactor)); err != nil {
		return TopicInfo{}, fmt.Errorf("topic %q: %w", name, err)
	}
	keys := map[string]bool{}
	for k := range rec.Configs {
		keys[k] = true
	}
	for k := range set {
		keys[k] = true
	}
	for _, k := range del {
		delete(keys, k)
	}
	prev := rec.Configs
	rec.Configs = topic.CanonicalOverrides(cfg, slices.Collect(maps.Keys(keys)))
	cmd := alterTopicCmd{Name: name, ID: rec.ID, Configs: rec.Configs, IfConfigs: prev, Conditional: true}
	if err := c.propose(ctx, cmdAlterTopic, cmd); err != nil {
		return TopicInfo{}, err
	}
	return topicInfoOf(rec), nil
}

// CommitOffsets stores a group's committed offsets (on the metadata leader). Validation of
// the group name and the topics is the caller's (the broker's offset service).
func (c *Cluster) CommitOffsets(ctx context.Context, group string, offsets []OffsetCommit) error {
	cmd := commitOffsetsCmd{Group: group, AtMS: time.Now().UnixMilli()}
	for _, o := range offsets {
		cmd.Offsets = append(cmd.Offsets, offsetCommit(o))
	}
	if err := cmd.validate(); err != nil {
		return fmt.Errorf("cluster: commit offsets: %w", err)
	}
	return c.propose(ctx, cmdCommitOffsets, cmd)
}

// GroupCommit is one group's offsets in a batch of commits.
type GroupCommit struct {
	Group   string
	Offsets []OffsetCommit
}

// Validate checks a group's commit as the metadata state machine will (ProposeCommits
// refuses a batch holding one that fails).
func (g GroupCommit) Validate() error {
	one := commitOffsetsCmd{Group: g.Group}
	for _, o := range g.Offsets {
		one.Offsets = append(one.Offsets, offsetCommit(o))
	}
	if err := one.validate(); err != nil {
		return fmt.Errorf("cluster: commit offsets of group %q: %w", g.Group, err)
	}
	return nil
}

// ProposeCommits hands several groups' commits to Raft as one entry (on the metadata leader)
// and returns a function that waits until it is applied. Batches proposed one after the other
// from one goroutine are applied in that order, so a coordinator can have several batches in
// flight and still apply each group's commits in the order it admitted them. A batch is
// applied whole or not at all: each group is validated here first.
func (c *Cluster) ProposeCommits(ctx context.Context, groups []GroupCommit) (wait func() error, err error) {
	cmd := commitOffsetsBatchCmd{AtMS: time.Now().UnixMilli()}
	for _, g := range groups {
		gc := groupOffsetCommit{Group: g.Group}
		for _, o := range g.Offsets {
			gc.Offsets = append(gc.Offsets, offsetCommit(o))
		}
		cmd.Groups = append(cmd.Groups, gc)
	}
	if err := cmd.validate(); err != nil {
		return nil, fmt.Errorf("cluster: commit offsets: %w", err)
	}
	return c.proposeAsync(ctx, cmdCommitOffsetsBin, &cmd)
}

// DeleteGroup deletes a group and its committed offsets (on the metadata leader).
func (c *Cluster) DeleteGroup(ctx context.Context, group string) error {
	return c.propose(ctx, cmdDeleteGroup, deleteGroupCmd{Group: group})
}

// Rebalance (on the metadata leader) moves replicas from the fullest alive brokers onto the
// emptiest until replica counts differ by at most one, and evens out preferred leaders
// (PlanRebalance). It returns the replica moves committed.
func (c *Cluster) Rebalance(ctx context.Context) ([]Move, error) {
	if err := c.beginDecision(ctx); err != nil {
		return nil, err
	}
	defer c.decideMu.Unlock()
	recs, err := c.fsm.brokers()
	if err != nil {
		return nil, err
	}
	all, topics, err := c.fsm.allAssignments()
	if err != nil {
		return nil, err
	}
	moves, changed := PlanRebalance(all, aliveBrokers(recs))
	names := slices.Sorted(maps.Keys(changed))
	for _, name := range names {
		cmd := setAssignmentsCmd{Topic: name, TopicID: topics[name].ID}
		for _, p := range slices.Sorted(maps.Keys(changed[name])) {
			cmd.Changes = append(cmd.Changes, assignmentDelta{Partition: p, Replicas: changed[name][p]})
		}
		if err := c.propose(ctx, cmdSetAssignments, cmd); err != nil {
			return nil, err
		}
	}
	return moves, nil
}

// Watcher receives the changes applied to this broker's metadata replica, in order.
type Watcher struct {
	c       *Cluster
	ch      chan struct{}
	mu      sync.Mutex
	pending []Change // under mu
}

// maxPendingChanges caps a watcher's queue; beyond it the queue collapses to one
// ChangeRestored (re-read everything).
const maxPendingChanges = 4096

// Watch returns a watcher of applied changes. The broker reads C, then Changes, and brings
// its local replicas in line (creating or removing them). Close it when done.
func (c *Cluster) Watch() *Watcher {
	w := &Watcher{c: c, ch: make(chan struct{}, 1)}
	c.watchMu.Lock()
	c.watchers[w] = struct{}{}
	c.watchMu.Unlock()
	return w
}

// C is signalled when changes are pending.
func (w *Watcher) C() <-chan struct{} { return w.ch }

// Changes returns and clears the pending changes.
func (w *Watcher) Changes() []Change {
	w.mu.Lock()
	defer w.mu.Unlock()
	out := w.pending
	w.pending = nil
	return out
}

// Close stops the watcher.
func (w *Watcher) Close() {
	w.c.watchMu.Lock()
	delete(w.c.watchers, w)
	w.c.watchMu.Unlock()
}

// publish hands applied changes to the watchers (on the FSM goroutine: never blocks).
func (c *Cluster) publish(changes []Change) {
	c.watchMu.Lock()
	defer c.watchMu.Unlock()
	for w := range c.watchers {
		w.mu.Lock()
		w.pending = append(w.pending, changes...)
		if len(w.pending) > maxPendingChanges {
			w.pending = []Change{{Index: changes[len(changes)-1].Index, Kind: ChangeRestored}}
		}
		w.mu.Unlock()
		select {
		case w.ch <- struct{}{}:
		default:
		}
	}
	// A change of brokers or assignments may call for the leader to act.
	if slices.ContainsFunc(changes, func(ch Change) bool { return ch.Kind.AffectsPlacement() }) {
		select {
		case c.kick <- struct{}{}:
		default:
		}
	}
}
