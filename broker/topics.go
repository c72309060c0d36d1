package broker

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/rs/zerolog"

	"github.com/runnel-io/runnel/internal/cluster"
	"github.com/runnel-io/runnel/internal/vfs"
	"github.com/runnel-io/runnel/partition"
	"github.com/runnel-io/runnel/topic"
)

// Limits and defaults of topic creation.
const (
	// MaxPartitions is the most partitions a topic may have.
	MaxPartitions = 10000
	// DefaultPartitions is the partition count of a CreateTopic that leaves it 0.
	DefaultPartitions = 1
	// DefaultReplicationFactor is the replication factor of a CreateTopic that leaves it 0.
	DefaultReplicationFactor = 1
)

// Files under the data directory.
const (
	topicsDirName  = "topics"
	topicFileName  = "topic.json"
	clusterIDFile  = "cluster_id"
	tempFileSuffix = vfs.TempSuffix
)

// RegistryOptions configure a Registry.
type RegistryOptions struct {
	// DataDir is the broker's data directory; topics live under DataDir/topics.
	DataDir string
	// NodeID is this broker's id (--node-id): every partition's leader and only replica.
	NodeID int32
	// Logger receives the registry's and the partitions' events.
	Logger zerolog.Logger
	// Partition is the base of every partition's options (sync policy, filesystem, clock);
	// Topic, Partition and Logger are set per partition. Zero: partition.DefaultOptions().
	Partition *partition.Options
	// Clustered opens the registry for cluster mode: it loads nothing from disk and holds no
	// topic until StartCluster puts it under the cluster's metadata (replicas.go).
	Clustered bool
}

// TopicInfo is what the registry knows of a topic.
type TopicInfo struct {
	Name              string
	ID                string
	Partitions        int32
	ReplicationFactor int32
	CreatedAt         time.Time
	// Config is the effective config; Overrides the keys the topic sets itself (canonical
	// values), the others being defaults.
	Config    topic.Config
	Overrides map[string]string
}

// topicFile is topic.json: a topic's durable description.
type topicFile struct {
	Name              string            `json:"name"`
	ID                string            `json:"id"`
	Partitions        int32             `json:"partitions"`
	ReplicationFactor int32             `json:"replication_factor"`
	CreatedAt         time.Time         `json:"created_at"`
	Configs           map[string]string `json:"configs,omitempty"`
}

type topicState struct {
	info  TopicInfo
	parts []*partition.Partition // in cluster mode, nil where this broker holds no replica
	// assign is each partition's replica set (cluster mode only).
	assign []cluster.PartitionAssignment
}

// Registry owns this broker's topics: their durable descriptions under
// <data-dir>/topics/<topic>/topic.json and their open partitions under
// <data-dir>/topics/<topic>/<partition>/.
//
// Concurrency: one mutex, mu, guards the topic maps and closed. Metadata changes (create,
// delete, alter configs) hold it across their file I/O, so they are serialized with each
// other and with lookups; they are rare. Produce and Fetch only hold it to look a partition
// up (Partition) and then work on the *partition.Partition, which is safe for concurrent use,
// without it. A partition looked up just before its topic is deleted fails with
// partition.ErrClosed; callers check Exists to report UNKNOWN_TOPIC instead. The registry
// starts no goroutines (the commitlogs underneath run their own, stopped by Close).
//
// Durability: topic.json is written to a temporary file, fsynced, renamed into place, and the
// directory fsynced. A topic exists exactly when its topic.json does: creation writes it
// last, deletion removes it first, and Open removes any topic directory without one (a
// creation or deletion cut short by a crash).
type Registry struct {
	dir       string // DataDir/topics
	dataDir   string
	nodeID    int32
	clusterID string
	log       zerolog.Logger
	popts     partition.Options
	clustered bool

	mu     sync.Mutex
	cm     *clusterMode           // under mu: cluster mode, once started
	topics map[string]*topicState // by name; under mu
	byKey  map[string]string      // topic.CollisionKey(name) -> name; under mu
	closed bool                   // under mu
}

// OpenRegistry opens (creating it if needed) the data directory and every topic in it.
func OpenRegistry(opts RegistryOptions) (*Registry, error) {
	if opts.DataDir == "" {
		return nil, errors.New("broker: registry: empty data dir")
	}
	popts := partition.DefaultOptions()
	if opts.Partition != nil {
		popts = *opts.Partition
	}
	r := &Registry{
		dataDir:   opts.DataDir,
		dir:       filepath.Join(opts.DataDir, topicsDirName),
		nodeID:    opts.NodeID,
		log:       opts.Logger.With().Str("component", "topics").Logger(),
		popts:     popts,
		clustered: opts.Clustered,
		topics:    make(map[string]*topicState),
		byKey:     make(map[string]string),
	}
	if err := os.MkdirAll(r.dir, 0o755); err != nil {
		return nil, fmt.Errorf("broker: registry: %w", err)
	}
	if err := vfs.OS.SyncDir(opts.DataDir); err != nil {
		return nil, fmt.Errorf("broker: registry: %w", err)
	}
	if r.clustered {
		return r, nil
	}
	id, err := r.loadClusterID()
	if err != nil {
		return nil, err
	}
	r.clusterID = id
	if err := r.load(); err != nil {
		r.closeAll()
		return nil, err
	}
	return r, nil
}

// ClusterID returns the cluster id: on a single node, created with the data directory; in
// cluster mode, the id the metadata holds (generated once, when the cluster is founded), the
// same on every broker, or "" until this broker has applied it.
func (r *Registry) ClusterID() string {
	if !r.clustered {
		return r.clusterID
	}
	cl := r.Cluster()
	if cl == nil {
		return ""
	}
	// internal/cluster holds the id in its metadata state once it has the set-cluster-id
	// command (issue #4); until then cluster mode reports "" as before.
	if m, ok := any(cl).(interface{ ClusterID() string }); ok {
		return m.ClusterID()
	}
	return ""
}

// NodeID returns this broker's id.
func (r *Registry) NodeID() int32 { return r.nodeID }

func (r *Registry) loadClusterID() (string, error) {
	path := filepath.Join(r.dataDir, clusterIDFile)
	b, err := os.ReadFile(path)
	if err == nil {
		id := strings.TrimSpace(string(b))
		if id == "" {
			return "", fmt.Errorf("broker: registry: %s is empty", path)
		}
		return id, nil
	}
	if !errors.Is(err, fs.ErrNotExist) {
		return "", fmt.Errorf("broker: registry: %w", err)
	}
	id := topic.NewID()
	if err := vfs.WriteFileAtomic(vfs.OS, path, []byte(id+"\n")); err != nil {
		return "", fmt.Errorf("broker: registry: %w", err)
	}
	return id, nil
}

// load opens every topic under r.dir.
func (r *Registry) load() error {
	entries, err := os.ReadDir(r.dir)
	if err != nil {
		return fmt.Errorf("broker: registry: %w", err)
	}
	for _, e := range entries {
		name := e.Name()
		path := filepath.Join(r.dir, name)
		if !e.IsDir() {
			if strings.HasSuffix(name, tempFileSuffix) {
				_ = os.Remove(path)
				continue
			}
			r.log.Warn().Str("path", path).Msg("ignoring unexpected file in the topics directory")
			continue
		}
		if err := topic.ValidateName(name); err != nil {
			// Not a directory the registry made: leave it alone.
			r.log.Warn().Str("dir", path).Msg("ignoring directory in the topics directory: not a valid topic name")
			continue
		}
		_ = os.Remove(filepath.Join(path, topicFileName+tempFileSuffix)) // an interrupted rewrite
		b, err := os.ReadFile(filepath.Join(path, topicFileName))
		if errors.Is(err, fs.ErrNotExist) {
			// A creation or deletion cut short: the topic never existed, or no longer does.
			r.log.Warn().Str("dir", path).Msg("removing topic directory without topic.json (interrupted create or delete)")
			if err := os.RemoveAll(path); err != nil {
				return fmt.Errorf("broker: registry: remove %s: %w", path, err)
			}
			if err := vfs.OS.SyncDir(r.dir); err != nil {
				return fmt.Errorf("broker: registry: %w", err)
			}
			continue
		}
		if err != nil {
			return fmt.Errorf("broker: registry: %w", err)
		}
		var tf topicFile
		if err := json.Unmarshal(b, &tf); err != nil {
			return fmt.Errorf("broker: registry: %s: %w", filepath.Join(path, topicFileName), err)
		}
		if tf.Name != name {
			return fmt.Errorf("broker: registry: %s names topic %q", filepath.Join(path, topicFileName), tf.Name)
		}
		if tf.Partitions < 1 || tf.Partitions > MaxPartitions {
			return fmt.Errorf("broker: registry: topic %q: bad partition count %d in topic.json", name, tf.Partitions)
		}
		cfg, err := topic.ParseConfig(tf.Configs)
		if err != nil {
			return fmt.Errorf("broker: registry: topic %q: %w", name, err)
		}
		ts := &topicState{info: TopicInfo{
			Name: name, ID: tf.ID, Partitions: tf.Partitions, ReplicationFactor: tf.ReplicationFactor,
			CreatedAt: tf.CreatedAt, Config: cfg, Overrides: topic.CanonicalOverrides(cfg, keysOf(tf.Configs)),
		}}
		if ts.parts, err = r.openPartitions(name, tf.Partitions, cfg); err != nil {
			return err
		}
		r.topics[name] = ts
		r.byKey[topic.CollisionKey(name)] = name
		r.log.Debug().Str("topic", name).Int32("partitions", tf.Partitions).Msg("topic loaded")
	}
	r.log.Info().Int("topics", len(r.topics)).Str("dir", r.dir).Msg("topics loaded")
	return nil
}

func (r *Registry) openPartitions(name string, n int32, cfg topic.Config) ([]*partition.Partition, error) {
	parts := make([]*partition.Partition, 0, n)
	for i := range n {
		o := r.popts
		o.Topic, o.Partition, o.Logger = name, i, r.log
		p, err := partition.Open(filepath.Join(r.dir, name, strconv.Itoa(int(i))), cfg, o)
		if err != nil {
			for _, q := range parts {
				_ = q.Close()
			}
			return nil, fmt.Errorf("broker: registry: %w: %w", ErrStorage, err)
		}
		parts = append(parts, p)
	}
	return parts, nil
}

// CreateRequest is a topic to create (CreateTopicRequest with defaults unresolved).
type CreateRequest struct {
	Name              string
	Partitions        int32 // 0: DefaultPartitions
	ReplicationFactor int32 // 0: DefaultReplicationFactor
	Configs           map[string]string
	ValidateOnly      bool
}

// Create checks and creates a topic, returning it as created (with ValidateOnly, as it would
// be, with an empty ID).
func (r *Registry) Create(req CreateRequest) (TopicInfo, error) {
	if err := topic.ValidateName(req.Name); err != nil {
		return TopicInfo{}, err
	}
	n := req.Partitions
	if n == 0 {
		n = DefaultPartitions
	}
	if n < 1 || n > MaxPartitions {
		return TopicInfo{}, fmt.Errorf("topic %q: %w: %d, want 1..%d", req.Name, ErrInvalidPartitions, req.Partitions, MaxPartitions)
	}
	cfg, err := topic.ParseConfig(req.Configs)
	if err != nil {
		return TopicInfo{}, fmt.Errorf("topic %q: %w", req.Name, err)
	}
	rf := req.ReplicationFactor
	if rf == 0 {
		rf = DefaultReplicationFactor
	}
	if err := cfg.CheckReplicationFactor(int(rf)); err != nil {
		return TopicInfo{}, fmt.Errorf("topic %q: %w", req.Name, err)
	}
	if r.clustered {
		return r.createClustered(req, n, rf, cfg)
	}
	if rf > 1 {
		return TopicInfo{}, fmt.Errorf("topic %q: %w: replication factor %d, but this cluster has 1 broker (a single node; replication comes with clustering)",
			req.Name, ErrReplicationFactorTooLarge, rf)
	}
	info := TopicInfo{
		Name: req.Name, Partitions: n, ReplicationFactor: rf, Config: cfg,
		Overrides: topic.CanonicalOverrides(cfg, keysOf(req.Configs)),
	}

	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return TopicInfo{}, fmt.Errorf("topic %q: %w", req.Name, ErrRegistryClosed)
	}
	if _, ok := r.topics[req.Name]; ok {
		return TopicInfo{}, fmt.Errorf("topic %q: %w", req.Name, ErrTopicExists)
	}
	if other, ok := r.byKey[topic.CollisionKey(req.Name)]; ok {
		return TopicInfo{}, fmt.Errorf("topic %q: %w: it collides with topic %q (names that differ only by '.' and '_' are not allowed together)",
			req.Name, ErrTopicExists, other)
	}
	if req.ValidateOnly {
		return info, nil
	}
	info.ID = topic.NewID()
	info.CreatedAt = time.Now().UTC().Truncate(time.Millisecond)

	dir := filepath.Join(r.dir, req.Name)
	if err := os.Mkdir(dir, 0o755); err != nil {
		return TopicInfo{}, fmt.Errorf("topic %q: %w: %w", req.Name, ErrStorage, err)
	}
	fail := func(err error) (TopicInfo, error) {
		_ = os.RemoveAll(dir)
		return TopicInfo{}, fmt.Errorf("topic %q: %w: %w", req.Name, ErrStorage, err)
	}
	if err := vfs.OS.SyncDir(r.dir); err != nil {
		return fail(err)
	}
	parts, err := r.openPartitions(req.Name, n, cfg)
	if err != nil {
		return fail(err)
	}
	if err := vfs.OS.SyncDir(dir); err != nil {
		closeParts(parts)
		return fail(err)
	}
	if err := writeTopicFile(dir, info); err != nil {
		closeParts(parts)
		return fail(err)
	}
	r.topics[req.Name] = &topicState{info: info, parts: parts}
	r.byKey[topic.CollisionKey(req.Name)] = req.Name
	r.log.Info().Str("topic", req.Name).Str("topic_id", info.ID).Int32("partitions", n).Msg("topic created")
	return cloneInfo(info), nil
}

// Delete deletes a topic: it closes its partitions (failing their waiting fetches) and
// removes its files.
func (r *Registry) Delete(name string) error {
	if err := topic.ValidateName(name); err != nil {
		return err
	}
	if r.clustered {
		return r.deleteClustered(name)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return fmt.Errorf("topic %q: %w", name, ErrRegistryClosed)
	}
	ts, ok := r.topics[name]
	if !ok {
		return fmt.Errorf("topic %q: %w", name, ErrUnknownTopic)
	}
	dir := filepath.Join(r.dir, name)
	// topic.json first: once it is gone (durably) the topic is gone, whatever happens next.
	if err := os.Remove(filepath.Join(dir, topicFileName)); err != nil {
		return fmt.Errorf("topic %q: %w: %w", name, ErrStorage, err)
	}
	delete(r.topics, name)
	delete(r.byKey, topic.CollisionKey(name))
	var errs []error
	if err := vfs.OS.SyncDir(dir); err != nil {
		errs = append(errs, err)
	}
	for _, p := range ts.parts {
		if err := p.Delete(); err != nil {
			errs = append(errs, err)
		}
	}
	if err := os.RemoveAll(dir); err != nil {
		errs = append(errs, err)
	}
	if err := vfs.OS.SyncDir(r.dir); err != nil {
		errs = append(errs, err)
	}
	r.log.Info().Str("topic", name).Msg("topic deleted")
	if len(errs) > 0 {
		// The topic is deleted; leftover files are removed at the next start.
		r.log.Error().Err(errors.Join(errs...)).Str("topic", name).Msg("topic deleted, but removing its files failed")
	}
	return nil
}

// List returns every topic, sorted by name.
func (r *Registry) List() []TopicInfo {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]TopicInfo, 0, len(r.topics))
	for _, ts := range r.topics {
		out = append(out, cloneInfo(ts.info))
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// Lookup returns a topic's info.
func (r *Registry) Lookup(name string) (TopicInfo, error) {
	if err := topic.ValidateName(name); err != nil {
		return TopicInfo{}, err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return TopicInfo{}, fmt.Errorf("topic %q: %w", name, ErrRegistryClosed)
	}
	ts, ok := r.topics[name]
	if !ok {
		return TopicInfo{}, fmt.Errorf("topic %q: %w", name, ErrUnknownTopic)
	}
	return cloneInfo(ts.info), nil
}

// Exists reports whether the topic exists now.
func (r *Registry) Exists(name string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	_, ok := r.topics[name]
	return ok
}

// Partition returns an open partition. The caller uses it without the registry's lock; see
// the type's doc for a concurrent delete.
func (r *Registry) Partition(name string, p int32) (*partition.Partition, error) {
	if err := topic.ValidateName(name); err != nil {
		return nil, err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return nil, fmt.Errorf("topic %q partition %d: %w", name, p, ErrRegistryClosed)
	}
	ts, ok := r.topics[name]
	if !ok {
		return nil, fmt.Errorf("topic %q: %w", name, ErrUnknownTopic)
	}
	if p < 0 || int(p) >= len(ts.parts) {
		return nil, fmt.Errorf("topic %q partition %d: %w (the topic has %d partitions)", name, p, ErrUnknownPartition, len(ts.parts))
	}
	if ts.parts[p] == nil {
		return nil, r.notHereLocked(ts, p)
	}
	return ts.parts[p], nil
}

// LeaderPartition is Partition for produce: in cluster mode it fails with NOT_LEADER
// (naming the leader this broker knows of) unless this broker's replica leads.
func (r *Registry) LeaderPartition(name string, p int32) (*partition.Partition, error) {
	return r.servingPartition(name, p, (*partition.Partition).IsLeader)
}

// ReadPartition is Partition for reads: as LeaderPartition, and a new leader answers
// LEADER_NOT_AVAILABLE until it has applied everything committed before its term (its high
// watermark may be behind until then).
func (r *Registry) ReadPartition(name string, p int32) (*partition.Partition, error) {
	return r.servingPartition(name, p, (*partition.Partition).ServesReads)
}

// FollowerReadPartition is ReadPartition for a read that allows a follower
// (allow_follower): any replica on this broker serves, leader or not, up to what it knows is
// committed (partition.Partition.ServesFollowerReads); a broker without a replica of the
// partition answers NOT_LEADER naming the leader, as ReadPartition does.
func (r *Registry) FollowerReadPartition(name string, p int32) (*partition.Partition, error) {
	return r.servingPartition(name, p, (*partition.Partition).ServesFollowerReads)
}

// readPartition is ReadPartition, or FollowerReadPartition when the request allows a follower.
func (r *Registry) readPartition(name string, p int32, allowFollower bool) (*partition.Partition, error) {
	if allowFollower {
		return r.FollowerReadPartition(name, p)
	}
	return r.ReadPartition(name, p)
}

func (r *Registry) servingPartition(name string, p int32, serves func(*partition.Partition) bool) (*partition.Partition, error) {
	pt, err := r.Partition(name, p)
	if err != nil || serves(pt) {
		return pt, err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	ts, ok := r.topics[name]
	if !ok || int(p) >= len(ts.parts) {
		return nil, fmt.Errorf("topic %q: %w", name, ErrUnknownTopic)
	}
	return nil, r.notHereLocked(ts, p)
}

// Partitions returns every partition of a topic, by number.
func (r *Registry) Partitions(name string) ([]*partition.Partition, error) {
	if err := topic.ValidateName(name); err != nil {
		return nil, err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return nil, fmt.Errorf("topic %q: %w", name, ErrRegistryClosed)
	}
	ts, ok := r.topics[name]
	if !ok {
		return nil, fmt.Errorf("topic %q: %w", name, ErrUnknownTopic)
	}
	return append([]*partition.Partition(nil), ts.parts...), nil
}

// AlterConfigs sets and deletes (resets) configs of a topic, all or none, persists them and
// applies them to the open partitions. It returns the topic as altered (with validateOnly, as
// it would be) and the keys that take effect only when the partitions are reopened (the next
// broker start): the commitlog cannot change segment and retention settings while open.
func (r *Registry) AlterConfigs(name string, set map[string]string, del []string, validateOnly bool) (TopicInfo, []string, error) {
	if err := topic.ValidateName(name); err != nil {
		return TopicInfo{}, nil, err
	}
	if r.clustered && !validateOnly {
		// The metadata leader checks and decides; the sync goroutine applies the change here.
		return r.alterClustered(name, set, del)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return TopicInfo{}, nil, fmt.Errorf("topic %q: %w", name, ErrRegistryClosed)
	}
	ts, ok := r.topics[name]
	if !ok {
		return TopicInfo{}, nil, fmt.Errorf("topic %q: %w", name, ErrUnknownTopic)
	}
	cfg, err := ts.info.Config.Apply(set, del)
	if err != nil {
		return TopicInfo{}, nil, fmt.Errorf("topic %q: %w", name, err)
	}
	if err := cfg.CheckReplicationFactor(int(ts.info.ReplicationFactor)); err != nil {
		return TopicInfo{}, nil, fmt.Errorf("topic %q: %w", name, err)
	}
	keys := keysOf(ts.info.Overrides)
	for k := range set {
		keys = append(keys, k)
	}
	keys = without(keys, del)
	info := cloneInfo(ts.info)
	info.Config = cfg
	info.Overrides = topic.CanonicalOverrides(cfg, keys)
	if validateOnly {
		return info, nil, nil
	}
	if err := writeTopicFile(filepath.Join(r.dir, name), info); err != nil {
		return TopicInfo{}, nil, fmt.Errorf("topic %q: %w: %w", name, ErrStorage, err)
	}
	ts.info = info
	restart := map[string]bool{}
	for _, p := range ts.parts {
		var re *partition.ReopenError
		if err := p.UpdateConfig(cfg); errors.As(err, &re) {
			for _, k := range re.Keys {
				restart[k] = true
			}
		} else if err != nil {
			return TopicInfo{}, nil, fmt.Errorf("topic %q: %w", name, err)
		}
	}
	restartKeys := keysOf(restart)
	sort.Strings(restartKeys)
	ev := r.log.Info().Str("topic", name).Interface("set", set).Strs("deleted", del)
	if len(restartKeys) > 0 {
		ev = ev.Strs("effective_after_restart", restartKeys)
	}
	ev.Msg("topic configs altered")
	return cloneInfo(info), restartKeys, nil
}

// Close closes every partition (syncing them). Later calls to the registry fail with
// ErrRegistryClosed. Close is idempotent.
func (r *Registry) Close() error {
	r.mu.Lock()
	cm := r.cm
	r.mu.Unlock()
	if cm != nil {
		cm.stop() // its goroutine takes mu
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return nil
	}
	r.closed = true
	return r.closeAllLocked()
}

func (r *Registry) closeAll() {
	r.mu.Lock()
	defer r.mu.Unlock()
	_ = r.closeAllLocked()
}

func (r *Registry) closeAllLocked() error {
	var errs []error
	for _, ts := range r.topics {
		for _, p := range ts.parts {
			if p == nil {
				continue
			}
			if err := p.Close(); err != nil {
				errs = append(errs, err)
			}
		}
	}
	return errors.Join(errs...)
}

func closeParts(parts []*partition.Partition) {
	for _, p := range parts {
		_ = p.Close()
	}
}

func writeTopicFile(dir string, info TopicInfo) error {
	b, err := json.MarshalIndent(topicFile{
		Name: info.Name, ID: info.ID, Partitions: info.Partitions,
		ReplicationFactor: info.ReplicationFactor, CreatedAt: info.CreatedAt, Configs: info.Overrides,
	}, "", "  ")
	if err != nil {
		return err
	}
	return vfs.WriteFileAtomic(vfs.OS, filepath.Join(dir, topicFileName), append(b, '\n'))
}

func keysOf[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	return out
}

func without(keys, remove []string) []string {
	out := keys[:0]
	for _, k := range keys {
		drop := false
		for _, d := range remove {
			drop = drop || k == d
		}
		if !drop {
			out = append(out, k)
		}
	}
	return out
}

func cloneInfo(info TopicInfo) TopicInfo {
	if info.Overrides != nil {
		m := make(map[string]string, len(info.Overrides))
		for k, v := range info.Overrides {
			m[k] = v
		}
		info.Overrides = m
	}
	return info
}

// TopicDirs returns the names of the topic directories under dataDir (<data-dir>/topics/
// entries that are directories with a valid topic name), none if there is no such folder.
func TopicDirs(dataDir string) ([]string, error) {
	return topicDirNames(filepath.Join(dataDir, topicsDirName))
}

// topicDirNames returns the entries of dir that are directories with a valid topic name.
func topicDirNames(dir string) ([]string, error) {
	entries, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var out []string
	for _, e := range entries {
		if e.IsDir() && topic.ValidateName(e.Name()) == nil {
			out = append(out, e.Name())
		}
	}
	return out, nil
}
