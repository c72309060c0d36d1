package broker

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"sort"
	"strings"
	"time"

	bolt "go.etcd.io/bbolt"
	bolterrors "go.etcd.io/bbolt/errors"
)

// Files and buckets of the offset store.
const (
	offsetsFileName = "offsets.db"
	// offsetsOpenTimeout bounds the wait for bbolt's file lock: a second process on the same
	// data directory gets an error instead of hanging.
	offsetsOpenTimeout = time.Second
)

var (
	bucketGroups = []byte("groups") // group name -> bucket of offsets and lastKey
	lastKey      = []byte("last")   // in a group bucket: its latest commit or reset time (unix ns, big endian)
	offsetPrefix = "o/"             // in a group bucket: "o/" + topic + "\x00" + partition (big endian) -> offsetEntry
)

// offsetEntry is one committed offset as stored (JSON).
type offsetEntry struct {
	// TopicID is the id of the topic the commit was made for. A topic deleted and created again
	// under the same name gets a new id: the old commits are then stale, never shown, and
	// purged by the group's next commit or reset.
	TopicID    string `json:"topic_id"`
	Offset     int64  `json:"offset"`
	Metadata   string `json:"metadata,omitempty"`
	CommitTime int64  `json:"commit_time"` // unix ns
}

// offsetKey identifies a partition in the store.
type offsetKey struct {
	topic     string
	partition int32
}

func (k offsetKey) less(o offsetKey) bool {
	if k.topic != o.topic {
		return k.topic < o.topic
	}
	return k.partition < o.partition
}

func (k offsetKey) bytes() []byte {
	b := make([]byte, 0, len(offsetPrefix)+len(k.topic)+5)
	b = append(b, offsetPrefix...)
	b = append(b, k.topic...)
	b = append(b, 0)
	return binary.BigEndian.AppendUint32(b, uint32(k.partition))
}

func parseOffsetKey(b []byte) (offsetKey, bool) {
	s := string(b)
	if !strings.HasPrefix(s, offsetPrefix) || len(s) < len(offsetPrefix)+5 {
		return offsetKey{}, false
	}
	s = s[len(offsetPrefix):]
	if s[len(s)-5] != 0 {
		return offsetKey{}, false
	}
	return offsetKey{topic: s[:len(s)-5], partition: int32(binary.BigEndian.Uint32([]byte(s[len(s)-4:])))}, true
}

// offsetStore keeps committed offsets in bbolt at <data-dir>/offsets.db:
// groups -> group -> (topic, partition) -> offsetEntry. Every write is one bbolt
// transaction, fsynced before it returns (durable before it is acknowledged).
type offsetStore struct {
	db *bolt.DB
}

func openOffsetStore(dataDir string) (*offsetStore, error) {
	path := filepath.Join(dataDir, offsetsFileName)
	db, err := bolt.Open(path, 0o644, &bolt.Options{Timeout: offsetsOpenTimeout})
	if err != nil {
		if errors.Is(err, bolterrors.ErrTimeout) {
			return nil, fmt.Errorf("broker: offsets: %s is locked by another process (is another runneld using this data dir?): %w", path, err)
		}
		return nil, fmt.Errorf("broker: offsets: open %s: %w", path, err)
	}
	if err := db.Update(func(tx *bolt.Tx) error {
		_, err := tx.CreateBucketIfNotExists(bucketGroups)
		return err
	}); err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("broker: offsets: %s: %w", path, err)
	}
	return &offsetStore{db: db}, nil
}

func (s *offsetStore) close() error { return s.db.Close() }

// storeErr wraps a bbolt failure in the registry's sentinels so apiErrorOf maps it.
func storeErr(err error) error {
	if err == nil {
		return nil
	}
	var ae *apiError
	if errors.As(err, &ae) {
		return err
	}
	if errors.Is(err, bolterrors.ErrDatabaseNotOpen) {
		return fmt.Errorf("offsets: %w", ErrRegistryClosed)
	}
	return fmt.Errorf("offsets: %w: %w", ErrStorage, err)
}

// view runs fn in a read transaction.
func (s *offsetStore) view(fn func(tx *bolt.Tx) error) error { return storeErr(s.db.View(fn)) }

// update runs fn in a write transaction, committed (and fsynced) when fn returns nil.
func (s *offsetStore) update(fn func(tx *bolt.Tx) error) error { return storeErr(s.db.Update(fn)) }

// group returns a group's bucket, nil if the group does not exist.
func groupBucket(tx *bolt.Tx, group string) *bolt.Bucket {
	return tx.Bucket(bucketGroups).Bucket([]byte(group))
}

// groupEntries returns a group's offsets, sorted by topic and partition.
func groupEntries(b *bolt.Bucket) ([]offsetKey, map[offsetKey]offsetEntry, error) {
	m := make(map[offsetKey]offsetEntry)
	var keys []offsetKey
	err := b.ForEach(func(k, v []byte) error {
		key, ok := parseOffsetKey(k)
		if !ok || v == nil {
			return nil
		}
		var e offsetEntry
		if err := json.Unmarshal(v, &e); err != nil {
			return fmt.Errorf("group entry %q: %w", k, err)
		}
		keys = append(keys, key)
		m[key] = e
		return nil
	})
	sort.Slice(keys, func(i, j int) bool { return keys[i].less(keys[j]) })
	return keys, m, err
}

func putEntry(b *bolt.Bucket, k offsetKey, e offsetEntry) error {
	v, err := json.Marshal(e)
	if err != nil {
		return err
	}
	return b.Put(k.bytes(), v)
}

func lastCommit(b *bolt.Bucket) time.Time {
	v := b.Get(lastKey)
	if len(v) != 8 {
		return time.Time{}
	}
	return time.Unix(0, int64(binary.BigEndian.Uint64(v)))
}

func setLastCommit(b *bolt.Bucket, t time.Time) error {
	return b.Put(lastKey, binary.BigEndian.AppendUint64(nil, uint64(t.UnixNano())))
}

// purgeStale deletes a group's entries for which live reports false (topics deleted, or
// deleted and created again).
func purgeStale(b *bolt.Bucket, live func(offsetKey, offsetEntry) bool) error {
	keys, m, err := groupEntries(b)
	if err != nil {
		return err
	}
	for _, k := range keys {
		if !live(k, m[k]) {
			if err := b.Delete(k.bytes()); err != nil {
				return err
			}
		}
	}
	return nil
}
