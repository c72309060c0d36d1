// The metadata state machine: the metadata Raft group's committed commands applied to a
// bbolt file in the data directory.

package cluster

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/hashicorp/raft"
	bolt "go.etcd.io/bbolt"

	"github.com/runnel-io/runnel/internal/vfs"
	"github.com/runnel-io/runnel/topic"
)

// Limits the metadata enforces.
const (
	// MaxPartitions is the most partitions a topic may have (as broker.MaxPartitions).
	MaxPartitions = 10000
	// MaxReplicationFactor is the largest replication factor.
	MaxReplicationFactor = 16
	// MaxGroupNameBytes is the longest consumer group name, in bytes.
	MaxGroupNameBytes = 255
	// MaxOffsetMetadataBytes is the most metadata a committed offset may carry.
	MaxOffsetMetadataBytes = 4096
)

// Errors of metadata commands. A command that the state machine rejects is rejected the same
// way on every replica; the proposer gets the error back from Raft.
var (
	ErrTopicExists  = errors.New("cluster: topic already exists")
	ErrUnknownTopic = errors.New("cluster: unknown topic")
	ErrUnknownGroup = errors.New("cluster: unknown group")
	ErrStaleTopic   = errors.New("cluster: topic was deleted and created again")
	// ErrConcurrentChange rejects a conditional change whose condition no longer holds.
	ErrConcurrentChange = errors.New("cluster: changed concurrently; retry")
)

// bbolt layout of meta.db:
//
//	meta/applied                      uint64 BE: the last Raft index applied
//	brokers/<id: int32 BE>            JSON brokerRecord
//	topics/<name>                     JSON topicRecord
//	partitions/<topic>/<p: int32 BE>  JSON partitionRecord (nested bucket per topic)
//	groups/<group>/<topic>\x00<p BE>  offsetRecord, binary or JSON (decodeOffsetRecord; nested bucket per group)
//
// Beside it: state.db.boot (the boot id of the process writing it unsynced: fsm_boot.go),
// state.db.rebuild (a rebuild after a machine crash not caught up yet: fsm_boot.go),
// state.db.restore (a restore in progress) and state.db.snapshot-* (a snapshot's copy until
// Raft has persisted it); openFSM removes leftovers of the last two.
var (
	bucketMeta       = []byte("meta")
	bucketBrokers    = []byte("brokers")
	bucketTopics     = []byte("topics")
	bucketPartitions = []byte("partitions")
	bucketGroups     = []byte("groups")
	keyApplied       = []byte("applied")
	keyClusterID     = []byte("cluster_id")
	allBuckets       = [][]byte{bucketMeta, bucketBrokers, bucketTopics, bucketPartitions, bucketGroups}
)

// BrokerState is what the metadata leader last committed about a broker's membership.
type BrokerState string

// Broker states.
const (
	BrokerAlive  BrokerState = "alive"
	BrokerFailed BrokerState = "failed" // Serf lost it; its replicas move after Config.FailedTimeout
	BrokerLeft   BrokerState = "left"   // it left gracefully; its replicas move at once
)

type brokerRecord struct {
	ID          int32       `json:"id"`
	Addr        string      `json:"addr"`
	RaftAddr    string      `json:"raft_addr"`
	Incarnation string      `json:"incarnation"`
	State       BrokerState `json:"state"`
	SinceMS     int64       `json:"since_ms"`
	Voter       bool        `json:"voter"`
}

type topicRecord struct {
	Name              string            `json:"name"`
	ID                string            `json:"id"`
	Configs           map[string]string `json:"configs,omitempty"`
	Partitions        int32             `json:"partitions"`
	ReplicationFactor int32             `json:"replication_factor"`
	CreatedAtMS       int64             `json:"created_at_ms"`
}

type partitionRecord struct {
	Replicas []int32 `json:"replicas"`
	Epoch    uint64  `json:"epoch"`
}

type offsetRecord struct {
	TopicID  string `json:"topic_id,omitempty"`
	Offset   int64  `json:"offset"`
	Metadata string `json:"metadata,omitempty"`
	AtMS     int64  `json:"at_ms"`
}

// ChangeKind says what an applied command changed.
type ChangeKind int

// Change kinds.
const (
	ChangeBroker       ChangeKind = iota + 1 // Broker's record changed (or was removed)
	ChangeTopicCreated                       // Topic was created, with its assignments
	ChangeTopicDeleted                       // Topic was deleted
	ChangeTopicAltered                       // Topic's config changed
	ChangeAssignment                         // Partitions of Topic have new replica lists
	ChangeOffsets                            // Group committed offsets
	ChangeGroupDeleted                       // Group was deleted
	ChangeRestored                           // the whole state was replaced by a snapshot: re-read everything
)

// AffectsPlacement reports whether a change of this kind can change brokers, topics or
// replica assignments: what the leader reconciles and the brokers' replicas follow. Group
// offsets and deletions do not, and they come at the rate members commit, so waking the
// reconcile and the replica sync for them would cost a full read of the metadata per
// commit batch.
func (k ChangeKind) AffectsPlacement() bool { return k != ChangeOffsets && k != ChangeGroupDeleted }

func (k ChangeKind) String() string {
	return [...]string{"?", "broker", "topic-created", "topic-deleted", "topic-altered", "assignment", "offsets", "group-deleted", "restored"}[max(0, min(int(k), 8))]
}

// Change is one applied change, delivered to watchers on every broker.
type Change struct {
	Index      uint64 // the Raft index that made it
	Kind       ChangeKind
	Broker     int32   // ChangeBroker
	Topic      string  // topic changes
	TopicID    string  // topic changes
	Partitions []int32 // ChangeAssignment; all partitions for ChangeTopicCreated
	Group      string  // group changes
}

// fsm is the metadata state machine. Raft calls Apply/ApplyBatch, Snapshot and Restore from
// its FSM goroutine, one at a time; readers call the query methods from any goroutine.
//
// Concurrency: mu guards db, which Restore swaps (write lock); everything else reads and
// writes through bbolt's own transactions under the read lock. notify is called on the FSM
// goroutine after each committed bbolt transaction and must not block.
type fsm struct {
	path   string
	notify func([]Change)
	// holdsState: the file was there when opened, with entries applied. It is then normally
	// at or ahead of every snapshot (a snapshot is a copy of it, and each apply batch is
	// written before the next; a file a machine crash may have torn is not kept), and Raft
	// must not restore the newest snapshot over it on start: that would show the metadata as
	// it was at the snapshot until the log after it is replayed, and a broker acting on it
	// meanwhile would remove the directories of topics created since.
	// The exception, a snapshot installed from the leader whose restore a crash cut short,
	// is found by aheadOfSnapshot.
	holdsState bool
	// lazy: apply batches are not synced (fsm_boot.go says why that is safe); false when the
	// boot id cannot be read, and every batch is synced as before.
	lazy bool
	// rebuilt: the file was removed at open, untrusted after a machine crash (fsm_boot.go);
	// the metadata comes back from the newest snapshot and the log.
	rebuilt bool
	// rebuildWhy says why (for the log).
	rebuildWhy string

	mu sync.RWMutex
	db *bolt.DB // under mu
}

// openFSM opens (creating it if needed) the state file.
func openFSM(path string, notify func([]Change)) (*fsm, error) {
	if notify == nil {
		notify = func([]Change) {}
	}
	// Leftovers of a snapshot or a restore cut short by a crash, or of a check.
	_ = os.Remove(path + ".restore")
	_ = os.Remove(path + ".check")
	if old, err := filepath.Glob(path + ".snapshot-*"); err == nil {
		for _, o := range old {
			_ = os.Remove(o)
		}
	}
	current, bootErr := bootID()
	trusted, marker, err := checkBootMarker(path, current)
	if err != nil {
		return nil, err
	}
	f := &fsm{path: path, notify: notify, lazy: bootErr == nil}
	_, err = os.Stat(rebuildMarkerPath(path))
	unfinished := err == nil // a rebuild that did not catch up before the process ended
	if !trusted || unfinished {
		if err := writeMarker(rebuildMarkerPath(path), marker); err != nil {
			return nil, err
		}
		if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("cluster: remove untrusted %s: %w", path, err)
		}
		f.rebuilt = true
		f.rebuildWhy = fmt.Sprintf("the state file was written by boot %q, which ended without closing it (a machine crash); this is boot %q", marker, current)
		if trusted {
			f.rebuildWhy = "a rebuild of the state file did not catch up before the process ended"
		}
	}
	switch {
	case f.lazy:
		// Durable before the first unsynced write (which may be openStateDB's own).
		if err := writeBootMarker(path, current); err != nil {
			return nil, err
		}
	case marker != "":
		if err := removeBootMarker(path); err != nil {
			return nil, fmt.Errorf("cluster: %w", err)
		}
	}
	_, statErr := os.Stat(path)
	if f.db, err = openStateDB(path, f.lazy); err != nil {
		return nil, err
	}
	f.holdsState = statErr == nil && f.appliedIndex() > 0
	return f, nil
}

// aheadOfSnapshot reports whether the state file holds at least what the snapshot in r
// (a copy of a state file, as Snapshot writes and Restore reads) holds: its applied index
// is at or past the snapshot's. It is false when a crash cut short the restore of a
// snapshot installed from the leader (Raft persists the snapshot, then calls Restore): the
// file is then older than the snapshot, and Raft must restore it at start.
func (f *fsm) aheadOfSnapshot(r io.Reader) (bool, error) {
	tmp := f.path + ".check"
	defer os.Remove(tmp)
	if err := writeSynced(tmp, r); err != nil {
		return false, err
	}
	db, err := bolt.Open(tmp, 0o600, &bolt.Options{Timeout: time.Second, ReadOnly: true})
	if err != nil {
		return false, err
	}
	defer db.Close()
	var snap uint64
	err = db.View(func(tx *bolt.Tx) error {
		if tx.Bucket(bucketMeta) != nil {
			snap = appliedIndex(tx)
		}
		return nil
	})
	return err == nil && f.appliedIndex() >= snap, err
}

// openStateDB opens a state file; noSync leaves its transactions unsynced (lazy).
func openStateDB(path string, noSync bool) (*bolt.DB, error) {
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: time.Second, NoSync: noSync})
	if err != nil {
		return nil, fmt.Errorf("cluster: open %s: %w", path, err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		for _, b := range allBuckets {
			if _, err := tx.CreateBucketIfNotExists(b); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("cluster: init %s: %w", path, err)
	}
	return db, nil
}

// rebuildDone records that a rebuild has caught up: the file is trusted again from here
// (on this boot, or after a clean close).
func (f *fsm) rebuildDone() error { return removeMarker(rebuildMarkerPath(f.path)) }

// close closes the state file; a lazily written one is synced first and its boot marker
// removed, so that the next open trusts it whatever the boot.
func (f *fsm) close() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if !f.lazy {
		return f.db.Close()
	}
	serr := f.db.Sync()
	if err := errors.Join(serr, f.db.Close()); err != nil {
		return fmt.Errorf("cluster: close %s: %w", f.path, err)
	}
	if err := removeBootMarker(f.path); err != nil {
		return fmt.Errorf("cluster: close %s: %w", f.path, err)
	}
	return nil
}

// Apply implements raft.FSM.
func (f *fsm) Apply(l *raft.Log) any { return f.ApplyBatch([]*raft.Log{l})[0] }

// ApplyBatch implements raft.BatchingFSM: the batch is one bbolt transaction (unsynced when
// lazy: fsm_boot.go).
// Each entry's response is nil or the error that rejected it. An entry at or below the
// applied index kept in the file is skipped (the file is ahead of Raft's replay after a
// restart). A storage error panics: the state machine cannot go on without its state.
func (f *fsm) ApplyBatch(logs []*raft.Log) []any {
	out := make([]any, len(logs))
	var changes []Change
	f.mu.RLock()
	err := f.db.Update(func(tx *bolt.Tx) error {
		applied := appliedIndex(tx)
		last := applied
		for i, l := range logs {
			if l.Index <= applied {
				continue
			}
			last = l.Index
			if l.Type != raft.LogCommand {
				continue
			}
			ch, err := applyCommand(tx, l.Index, l.Data)
			var rej *rejection
			if errors.As(err, &rej) {
				out[i] = rej.err
				continue
			}
			if err != nil {
				return err
			}
			changes = append(changes, ch...)
		}
		if last == applied {
			return nil
		}
		var b [8]byte
		binary.BigEndian.PutUint64(b[:], last)
		return tx.Bucket(bucketMeta).Put(keyApplied, b[:])
	})
	f.mu.RUnlock()
	if err != nil {
		panic(fmt.Sprintf("cluster: metadata state %s: %v", f.path, err))
	}
	if len(changes) > 0 {
		f.notify(changes)
	}
	return out
}

func appliedIndex(tx *bolt.Tx) uint64 {
	v := tx.Bucket(bucketMeta).Get(keyApplied)
	if len(v) != 8 {
		return 0
	}
	return binary.BigEndian.Uint64(v)
}

// applyCommand applies one command in tx. It returns the changes, or a rejection (the
// command is refused and tx untouched), or a storage error.
func applyCommand(tx *bolt.Tx, index uint64, data []byte) ([]Change, error) {
	t, c, err := decodeCommand(data)
	if err != nil {
		return nil, reject(err)
	}
	switch t {
	case cmdUpsertBroker:
		return applyUpsertBroker(tx, index, c.(*upsertBrokerCmd))
	case cmdRemoveBroker:
		c := c.(*removeBrokerCmd)
		k := brokerKey(c.ID)
		if tx.Bucket(bucketBrokers).Get(k) == nil {
			return nil, nil
		}
		return []Change{{Index: index, Kind: ChangeBroker, Broker: c.ID}}, tx.Bucket(bucketBrokers).Delete(k)
	case cmdCreateTopic:
		return applyCreateTopic(tx, index, c.(*createTopicCmd))
	case cmdDeleteTopic:
		return applyDeleteTopic(tx, index, c.(*deleteTopicCmd))
	case cmdAlterTopic:
		c := c.(*alterTopicCmd)
		rec, ok, err := getTopic(tx, c.Name)
		if err != nil || !ok {
			return nil, orReject(err, unknownTopic(c.Name))
		}
		if c.ID != "" && c.ID != rec.ID {
			return nil, reject(fmt.Errorf("topic %q: %w", c.Name, ErrStaleTopic))
		}
		if c.Conditional && !maps.Equal(rec.Configs, c.IfConfigs) {
			return nil, reject(fmt.Errorf("topic %q: %w", c.Name, ErrConcurrentChange))
		}
		rec.Configs = c.Configs
		if len(rec.Configs) == 0 {
			rec.Configs = nil
		}
		return []Change{{Index: index, Kind: ChangeTopicAltered, Topic: c.Name, TopicID: rec.ID}}, putJSON(tx.Bucket(bucketTopics), []byte(c.Name), rec)
	case cmdSetAssignments:
		return applySetAssignments(tx, index, c.(*setAssignmentsCmd))
	case cmdCommitOffsets:
		c := c.(*commitOffsetsCmd)
		if err := applyGroupCommit(tx, c.Group, c.Offsets, c.AtMS); err != nil {
			return nil, err
		}
		return []Change{{Index: index, Kind: ChangeOffsets, Group: c.Group}}, nil
	case cmdCommitOffsetsBatch, cmdCommitOffsetsBin:
		c := c.(*commitOffsetsBatchCmd)
		var changes []Change
		for i, g := range c.Groups {
			if err := applyGroupCommit(tx, g.Group, g.Offsets, c.AtMS); err != nil {
				return nil, err
			}
			if !slices.ContainsFunc(c.Groups[:i], func(p groupOffsetCommit) bool { return p.Group == g.Group }) {
				changes = append(changes, Change{Index: index, Kind: ChangeOffsets, Group: g.Group})
			}
		}
		return changes, nil
	case cmdSetClusterID:
		// The first id committed stays: a second (a leader that proposed one before it
		// applied its predecessor's) is dropped, the same way on every replica.
		if len(tx.Bucket(bucketMeta).Get(keyClusterID)) > 0 {
			return nil, nil
		}
		return nil, tx.Bucket(bucketMeta).Put(keyClusterID, []byte(c.(*setClusterIDCmd).ID))
	case cmdDeleteGroup:
		c := c.(*deleteGroupCmd)
		if tx.Bucket(bucketGroups).Bucket([]byte(c.Group)) == nil {
			return nil, reject(fmt.Errorf("group %q: %w", c.Group, ErrUnknownGroup))
		}
		return []Change{{Index: index, Kind: ChangeGroupDeleted, Group: c.Group}}, tx.Bucket(bucketGroups).DeleteBucket([]byte(c.Group))
	}
	return nil, reject(fmt.Errorf("%w: no handler for %s", ErrBadCommand, t))
}

// applyGroupCommit stores one group's committed offsets.
func applyGroupCommit(tx *bolt.Tx, group string, offsets []offsetCommit, atMS int64) error {
	b, err := tx.Bucket(bucketGroups).CreateBucketIfNotExists([]byte(group))
	if err != nil {
		return err
	}
	for _, o := range offsets {
		rec := offsetRecord{TopicID: o.TopicID, Offset: o.Offset, Metadata: o.Metadata, AtMS: atMS}
		if err := b.Put(offsetKey(o.Topic, o.Partition), encodeOffsetRecord(rec)); err != nil {
			return err
		}
	}
	return nil
}

// rejection is a command refused by the state machine (the same way on every replica); the
// state is unchanged. Every other error from applyCommand is a storage error.
type rejection struct{ err error }

func (r *rejection) Error() string { return r.err.Error() }

func reject(err error) error { return &rejection{err: err} }

// orReject returns err if set (a storage error), else the rejection rej.
func orReject(err, rej error) error {
	if err != nil {
		return err
	}
	return reject(rej)
}

func unknownTopic(name string) error { return fmt.Errorf("topic %q: %w", name, ErrUnknownTopic) }

func applyUpsertBroker(tx *bolt.Tx, index uint64, c *upsertBrokerCmd) ([]Change, error) {
	b := tx.Bucket(bucketBrokers)
	k := brokerKey(c.Broker.ID)
	if v := b.Get(k); v != nil {
		var old brokerRecord
		if err := json.Unmarshal(v, &old); err == nil && old == c.Broker {
			return nil, nil // no change: no watcher wake-up
		}
	}
	return []Change{{Index: index, Kind: ChangeBroker, Broker: c.Broker.ID}}, putJSON(b, k, c.Broker)
}

func applyCreateTopic(tx *bolt.Tx, index uint64, c *createTopicCmd) ([]Change, error) {
	t := c.Topic
	topics := tx.Bucket(bucketTopics)
	if topics.Get([]byte(t.Name)) != nil {
		return nil, reject(fmt.Errorf("topic %q: %w", t.Name, ErrTopicExists))
	}
	key := topic.CollisionKey(t.Name)
	var clash string
	err := topics.ForEach(func(k, _ []byte) error {
		if clash == "" && topic.CollisionKey(string(k)) == key {
			clash = string(k)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	if clash != "" {
		return nil, reject(fmt.Errorf("topic %q: %w: it collides with topic %q (names that differ only by '.' and '_' are not allowed together)", t.Name, ErrTopicExists, clash))
	}
	if err := putJSON(topics, []byte(t.Name), t); err != nil {
		return nil, err
	}
	pb, err := tx.Bucket(bucketPartitions).CreateBucketIfNotExists([]byte(t.Name))
	if err != nil {
		return nil, err
	}
	parts := make([]int32, len(c.Replicas))
	for p, reps := range c.Replicas {
		parts[p] = int32(p)
		if err := putJSON(pb, partitionKey(int32(p)), partitionRecord{Replicas: reps, Epoch: 1}); err != nil {
			return nil, err
		}
	}
	return []Change{{Index: index, Kind: ChangeTopicCreated, Topic: t.Name, TopicID: t.ID, Partitions: parts}}, nil
}

func applyDeleteTopic(tx *bolt.Tx, index uint64, c *deleteTopicCmd) ([]Change, error) {
	rec, ok, err := getTopic(tx, c.Name)
	if err != nil || !ok {
		return nil, orReject(err, unknownTopic(c.Name))
	}
	if c.ID != "" && c.ID != rec.ID {
		return nil, reject(fmt.Errorf("topic %q: %w", c.Name, ErrStaleTopic))
	}
	if err := tx.Bucket(bucketTopics).Delete([]byte(c.Name)); err != nil {
		return nil, err
	}
	if tx.Bucket(bucketPartitions).Bucket([]byte(c.Name)) != nil {
		if err := tx.Bucket(bucketPartitions).DeleteBucket([]byte(c.Name)); err != nil {
			return nil, err
		}
	}
	// Committed offsets stay: they name the topic id, and a topic created again under the
	// same name has another id, so they read as stale (as in the single-node store).
	return []Change{{Index: index, Kind: ChangeTopicDeleted, Topic: c.Name, TopicID: rec.ID}}, nil
}

func applySetAssignments(tx *bolt.Tx, index uint64, c *setAssignmentsCmd) ([]Change, error) {
	rec, ok, err := getTopic(tx, c.Topic)
	if err != nil || !ok {
		return nil, orReject(err, unknownTopic(c.Topic))
	}
	if c.TopicID != "" && c.TopicID != rec.ID {
		return nil, reject(fmt.Errorf("topic %q: %w", c.Topic, ErrStaleTopic))
	}
	pb := tx.Bucket(bucketPartitions).Bucket([]byte(c.Topic))
	for _, ch := range c.Changes {
		if ch.Partition >= rec.Partitions {
			return nil, reject(fmt.Errorf("topic %q: partition %d of %d", c.Topic, ch.Partition, rec.Partitions))
		}
	}
	var parts []int32
	for _, ch := range c.Changes {
		var pr partitionRecord
		if err := getJSON(pb, partitionKey(ch.Partition), &pr); err != nil {
			return nil, err
		}
		if slices.Equal(pr.Replicas, ch.Replicas) {
			continue
		}
		pr.Replicas = ch.Replicas
		pr.Epoch++
		if err := putJSON(pb, partitionKey(ch.Partition), pr); err != nil {
			return nil, err
		}
		parts = append(parts, ch.Partition)
	}
	if len(parts) == 0 {
		return nil, nil
	}
	return []Change{{Index: index, Kind: ChangeAssignment, Topic: c.Topic, TopicID: rec.ID, Partitions: parts}}, nil
}

func getTopic(tx *bolt.Tx, name string) (topicRecord, bool, error) {
	var rec topicRecord
	v := tx.Bucket(bucketTopics).Get([]byte(name))
	if v == nil {
		return rec, false, nil
	}
	if err := json.Unmarshal(v, &rec); err != nil {
		return rec, false, fmt.Errorf("topic %q: %w", name, err)
	}
	return rec, true, nil
}

func brokerKey(id int32) []byte {
	var b [4]byte
	binary.BigEndian.PutUint32(b[:], uint32(id))
	return b[:]
}

func partitionKey(p int32) []byte { return brokerKey(p) }

func offsetKey(topicName string, p int32) []byte {
	return append(append([]byte(topicName), 0), partitionKey(p)...)
}

func putJSON(b *bolt.Bucket, k []byte, v any) error {
	data, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return b.Put(k, data)
}

func getJSON(b *bolt.Bucket, k []byte, v any) error {
	if b == nil {
		return errors.New("missing bucket")
	}
	data := b.Get(k)
	if data == nil {
		return fmt.Errorf("missing key %x", k)
	}
	return json.Unmarshal(data, v)
}

// Snapshot implements raft.FSM. It copies the state (tx.WriteTo, one read transaction) to
// a temporary file beside the state file, which Persist streams and Release removes. The
// copy is taken at once rather than holding the read transaction until Persist: Raft may
// Restore (on the FSM goroutine, closing the database, which waits for every read
// transaction) while its snapshot goroutine holds a snapshot it has not persisted yet and
// itself waits for Raft's main loop, which waits for the restore: a deadlock. The state is
// small (metadata), so the copy is cheap.
func (f *fsm) Snapshot() (raft.FSMSnapshot, error) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	tmp, err := os.CreateTemp(filepath.Dir(f.path), filepath.Base(f.path)+".snapshot-*")
	if err != nil {
		return nil, fmt.Errorf("cluster: snapshot: %w", err)
	}
	err = f.db.View(func(tx *bolt.Tx) error {
		_, err := tx.WriteTo(tmp)
		return err
	})
	if err == nil {
		_, err = tmp.Seek(0, io.SeekStart)
	}
	if err != nil {
		_ = tmp.Close()
		_ = os.Remove(tmp.Name())
		return nil, fmt.Errorf("cluster: snapshot: %w", err)
	}
	return &fsmSnapshot{file: tmp}, nil
}

type fsmSnapshot struct{ file *os.File }

// Persist streams the copy of the state to the sink.
func (s *fsmSnapshot) Persist(sink raft.SnapshotSink) error {
	if _, err := io.Copy(sink, s.file); err != nil {
		_ = sink.Cancel()
		return fmt.Errorf("cluster: snapshot: %w", err)
	}
	return sink.Close()
}

// Release removes the copy.
func (s *fsmSnapshot) Release() {
	_ = s.file.Close()
	_ = os.Remove(s.file.Name())
}

// Restore implements raft.FSM: the stream is a whole bbolt file, which replaces the state
// file once it has been written, synced and opened successfully.
func (f *fsm) Restore(rc io.ReadCloser) error {
	defer rc.Close()
	tmp := f.path + ".restore"
	if err := writeSynced(tmp, rc); err != nil {
		_ = os.Remove(tmp)
		return fmt.Errorf("cluster: restore: %w", err)
	}
	check, err := openStateDB(tmp, false) // validates the file and adds any missing bucket
	if err != nil {
		_ = os.Remove(tmp)
		return fmt.Errorf("cluster: restore: %w", err)
	}
	var index uint64
	_ = check.View(func(tx *bolt.Tx) error { index = appliedIndex(tx); return nil })
	if err := check.Close(); err != nil {
		_ = os.Remove(tmp)
		return fmt.Errorf("cluster: restore: %w", err)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.db.Close(); err != nil {
		return fmt.Errorf("cluster: restore: %w", err)
	}
	if err := os.Rename(tmp, f.path); err != nil {
		return fmt.Errorf("cluster: restore: %w", err)
	}
	if err := vfs.OS.SyncDir(filepath.Dir(f.path)); err != nil {
		return fmt.Errorf("cluster: restore: %w", err)
	}
	db, err := openStateDB(f.path, f.lazy)
	if err != nil {
		return fmt.Errorf("cluster: restore: %w", err)
	}
	f.db = db
	f.notify([]Change{{Index: index, Kind: ChangeRestored}})
	return nil
}

func writeSynced(path string, r io.Reader) error {
	fh, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	_, werr := io.Copy(fh, r)
	serr := fh.Sync()
	cerr := fh.Close()
	return errors.Join(werr, serr, cerr)
}

// Reads.

func (f *fsm) view(fn func(tx *bolt.Tx) error) error {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return f.db.View(fn)
}

func (f *fsm) appliedIndex() uint64 {
	var i uint64
	_ = f.view(func(tx *bolt.Tx) error { i = appliedIndex(tx); return nil })
	return i
}

// clusterID returns the cluster's id, "" until set-cluster-id is applied.
func (f *fsm) clusterID() string {
	var id string
	_ = f.view(func(tx *bolt.Tx) error { id = string(tx.Bucket(bucketMeta).Get(keyClusterID)); return nil })
	return id
}

func (f *fsm) brokers() (map[int32]brokerRecord, error) {
	out := map[int32]brokerRecord{}
	err := f.view(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketBrokers).ForEach(func(k, v []byte) error {
			var r brokerRecord
			if err := json.Unmarshal(v, &r); err != nil {
				return fmt.Errorf("broker %x: %w", k, err)
			}
			out[r.ID] = r
			return nil
		})
	})
	return out, err
}

func (f *fsm) topics() ([]topicRecord, error) {
	var out []topicRecord
	err := f.view(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketTopics).ForEach(func(k, v []byte) error {
			var r topicRecord
			if err := json.Unmarshal(v, &r); err != nil {
				return fmt.Errorf("topic %q: %w", k, err)
			}
			out = append(out, r)
			return nil
		})
	})
	return out, err
}

func (f *fsm) topic(name string) (topicRecord, bool, error) {
	var rec topicRecord
	var ok bool
	err := f.view(func(tx *bolt.Tx) error {
		var err error
		rec, ok, err = getTopic(tx, name)
		return err
	})
	return rec, ok, err
}

// assignment returns a topic's partitions, in partition order.
func (f *fsm) assignment(name string) ([]partitionRecord, bool, error) {
	var out []partitionRecord
	var ok bool
	err := f.view(func(tx *bolt.Tx) error {
		pb := tx.Bucket(bucketPartitions).Bucket([]byte(name))
		if pb == nil {
			return nil
		}
		ok = true
		return pb.ForEach(func(_, v []byte) error {
			var r partitionRecord
			if err := json.Unmarshal(v, &r); err != nil {
				return err
			}
			out = append(out, r)
			return nil
		})
	})
	return out, ok, err
}

// allAssignments returns every topic's replica lists.
func (f *fsm) allAssignments() (map[string][][]int32, map[string]topicRecord, error) {
	out := map[string][][]int32{}
	recs := map[string]topicRecord{}
	err := f.view(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketTopics).ForEach(func(k, v []byte) error {
			var r topicRecord
			if err := json.Unmarshal(v, &r); err != nil {
				return err
			}
			recs[r.Name] = r
			pb := tx.Bucket(bucketPartitions).Bucket(k)
			if pb == nil {
				return nil
			}
			var parts [][]int32
			err := pb.ForEach(func(_, v []byte) error {
				var pr partitionRecord
				if err := json.Unmarshal(v, &pr); err != nil {
					return err
				}
				parts = append(parts, pr.Replicas)
				return nil
			})
			out[r.Name] = parts
			return err
		})
	})
	return out, recs, err
}

func (f *fsm) offsets(group string) ([]CommittedOffset, bool, error) {
	var out []CommittedOffset
	var ok bool
	err := f.view(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketGroups).Bucket([]byte(group))
		if b == nil {
			return nil
		}
		ok = true
		return b.ForEach(func(k, v []byte) error {
			if len(k) < 5 || k[len(k)-5] != 0 {
				return fmt.Errorf("group %q: bad key %x", group, k)
			}
			r, err := decodeOffsetRecord(v)
			if err != nil {
				return fmt.Errorf("group %q: %w", group, err)
			}
			out = append(out, CommittedOffset{
				Topic: string(k[:len(k)-5]), Partition: int32(binary.BigEndian.Uint32(k[len(k)-4:])),
				TopicID: r.TopicID, Offset: r.Offset, Metadata: r.Metadata, CommittedAt: time.UnixMilli(r.AtMS).UTC(),
			})
			return nil
		})
	})
	return out, ok, err
}

// serverID is a broker's Raft server id: its broker id and the incarnation of its data
// directory, so that a broker whose data was wiped is a different Raft server.
func serverID(id int32, incarnation string) raft.ServerID {
	return raft.ServerID(strconv.Itoa(int(id)) + "/" + incarnation)
}

// parseServerID is the inverse of serverID.
func parseServerID(s raft.ServerID) (int32, string, bool) {
	str := string(s)
	for i := 0; i < len(str); i++ {
		if str[i] == '/' {
			n, err := strconv.ParseInt(str[:i], 10, 32)
			if err != nil || n < 0 {
				return 0, "", false
			}
			return int32(n), str[i+1:], true
		}
	}
	return 0, "", false
}
