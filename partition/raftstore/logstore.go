package raftstore

import (
	"errors"
	"fmt"
	"sync"
	"sync/atomic"

	"github.com/hashicorp/raft"

	"github.com/runnel-io/runnel/commitlog"
)

// LogStore is a partition's commitlog as hashicorp/raft's LogStore (see the package doc).
// It does not implement raft.MonotonicLogStore, and must not be wrapped in raft.LogCache: the FSM
// replaces the log under it when it installs a snapshot.
type LogStore struct {
	log *commitlog.Log

	mu sync.Mutex
	// believed is the last index raft believes the store holds: raft caches its last index and
	// does not re-read it after a snapshot install (nor after a truncation whose append then
	// failed). GetLog serves term-0 placeholders for (log.LastIndex(), believed], so that raft
	// sees a conflict there and truncates (raft-log.md, trap 3).
	believed uint64

	placeholders atomic.Int64 // placeholder entries served (for tests and metrics)
}

// NewLogStore adapts l. l must be opened before raft is created and outlive it.
func NewLogStore(l *commitlog.Log) *LogStore {
	return &LogStore{log: l, believed: l.LastIndex()}
}

// Log returns the underlying commitlog.
func (s *LogStore) Log() *commitlog.Log { return s.log }

// FirstIndex returns the first index held, or 0 when the log holds no entry (raft's contract).
func (s *LogStore) FirstIndex() (uint64, error) {
	first, last := s.log.FirstIndex(), s.log.LastIndex()
	if last < first {
		return 0, nil
	}
	return first, nil
}

// LastIndex returns the last index held (0 when the log holds nothing).
func (s *LogStore) LastIndex() (uint64, error) {
	return s.log.LastIndex(), nil
}

// GetLog fills out with the entry at index. An index the log does not hold is exactly
// raft.ErrLogNotFound (the leader sends a snapshot only on that error), except a placeholder
// above the log's end that raft still believes in (see believed).
func (s *LogStore) GetLog(index uint64, out *raft.Log) error {
	e, err := s.log.Entry(index)
	if err != nil {
		if !errors.Is(err, commitlog.ErrIndexNotFound) {
			return err
		}
		s.mu.Lock()
		believed := s.believed
		s.mu.Unlock()
		if index > s.log.LastIndex() && index <= believed {
			*out = raft.Log{Index: index, Term: 0, Type: raft.LogNoop}
			s.placeholders.Add(1)
			return nil
		}
		return raft.ErrLogNotFound
	}
	*out = raft.Log{
		Index:      e.Index,
		Term:       e.Term,
		Type:       raft.LogType(e.Type),
		Data:       e.Data,
		Extensions: e.Extensions,
		AppendedAt: e.AppendedAt,
	}
	return nil
}

// StoreLog stores one entry.
func (s *LogStore) StoreLog(l *raft.Log) error { return s.StoreLogs([]*raft.Log{l}) }

// StoreLogs appends entries; they are durable when it returns (under the log's default sync
// policy). A command's Data must be one RecordBatch: the log writes its base offset into Data in
// place (raft hands the leader's own Log structs to StoreLogs, the FSM and replication, so the
// offset travels with them).
func (s *LogStore) StoreLogs(logs []*raft.Log) error {
	if len(logs) == 0 {
		return nil
	}
	entries := make([]commitlog.Entry, len(logs))
	for i, l := range logs {
		switch l.Type {
		case raft.LogCommand, raft.LogNoop, raft.LogBarrier, raft.LogConfiguration:
		default:
			return fmt.Errorf("raftstore: entry %d: unsupported log type %v", l.Index, l.Type)
		}
		entries[i] = commitlog.Entry{
			Index: l.Index, Term: l.Term, Type: commitlog.EntryType(l.Type),
			Data: l.Data, Extensions: l.Extensions, AppendedAt: l.AppendedAt,
		}
	}
	if err := s.log.AppendEntries(entries); err != nil {
		return err
	}
	s.mu.Lock()
	s.believed = logs[len(logs)-1].Index
	s.mu.Unlock()
	return nil
}

// DeleteRange removes [min, max]. Raft calls it for a conflict (a suffix: max is its cached last
// index) and for compaction after a snapshot (a prefix). A range that starts at or before the
// first index is a compaction and is ignored: prefix deletion belongs to retention (a
// conflict never starts at the first entry, which is committed). Anything else truncates the
// log from min.
func (s *LogStore) DeleteRange(min, max uint64) error {
	if min <= s.log.FirstIndex() {
		return nil
	}
	if err := s.log.TruncateFrom(min); err != nil {
		return err
	}
	s.mu.Lock()
	if s.believed >= min {
		s.believed = min - 1
	}
	s.mu.Unlock()
	return nil
}

var _ raft.LogStore = (*LogStore)(nil)
