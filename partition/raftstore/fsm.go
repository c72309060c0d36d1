package raftstore

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"

	"github.com/hashicorp/raft"

	"github.com/runnel-io/runnel/commitlog"
	"github.com/runnel-io/runnel/internal/recordbatch"
	"github.com/runnel-io/runnel/internal/vfs"
)

// ApplyResult is what FSM.Apply returns for a command (raft.ApplyFuture.Response): where the
// batch landed.
type ApplyResult struct {
	Index      uint64 // Raft index of the entry
	BaseOffset int64  // offset of the batch's first record
	NextOffset int64  // offset after its last record: the high watermark once applied
}

// FSM is a partition's raft.FSM over its commitlog. The log already holds every entry (it is
// the LogStore), so applying a command only advances the applied index and the high watermark
// (the offset after the applied batch). Snapshots are a manifest plus hard links (see
// SnapshotStore); Restore adopts a snapshot's segment files as the log.
type FSM struct {
	logs  *LogStore
	snaps *SnapshotStore

	// mu serialises Restore (which replaces the log's segments) with a snapshot's Persist
	// (which links them).
	mu sync.Mutex

	applied atomic.Uint64
	hwm     atomic.Int64

	notifyMu sync.Mutex
	notify   chan struct{}
	onAdv    func(hwm int64)
}

// NewFSM returns the FSM for a partition whose LogStore and SnapshotStore are given. onAdvance,
// if not nil, is called (on raft's FSM goroutine: it must not block) whenever the high watermark
// advances.
func NewFSM(logs *LogStore, snaps *SnapshotStore, onAdvance func(hwm int64)) *FSM {
	f := &FSM{logs: logs, snaps: snaps, notify: make(chan struct{}), onAdv: onAdvance}
	f.hwm.Store(logs.Log().StartOffset())
	return f
}

// HighWatermark returns the offset below which every record is committed and applied: reads
// pass it as commitlog.ReadOptions.MaxOffset.
func (f *FSM) HighWatermark() int64 { return f.hwm.Load() }

// AppliedIndex returns the Raft index of the last applied command (or restored snapshot).
func (f *FSM) AppliedIndex() uint64 { return f.applied.Load() }

// Changed returns a channel closed at the next advance of the high watermark (for a fetch
// long-poll: read HighWatermark, take Changed, re-check, then wait).
func (f *FSM) Changed() <-chan struct{} {
	f.notifyMu.Lock()
	defer f.notifyMu.Unlock()
	return f.notify
}

func (f *FSM) advance(index uint64, hwm int64) {
	f.applied.Store(index)
	if hwm == f.hwm.Load() {
		return
	}
	f.hwm.Store(hwm)
	f.notifyMu.Lock()
	close(f.notify)
	f.notify = make(chan struct{})
	f.notifyMu.Unlock()
	if f.onAdv != nil {
		f.onAdv(hwm)
	}
}

// Apply applies a committed command: its Data is the batch as the log stored it, with its base
// offset set. It returns an ApplyResult (or an error for a malformed entry).
func (f *FSM) Apply(l *raft.Log) interface{} {
	if l.Type != raft.LogCommand {
		return nil
	}
	h, err := recordbatch.ParseHeader(l.Data)
	if err != nil {
		return fmt.Errorf("raftstore: apply %d: %w", l.Index, err)
	}
	res := ApplyResult{Index: l.Index, BaseOffset: h.BaseOffset, NextOffset: h.NextOffset()}
	f.advance(l.Index, res.NextOffset)
	return res
}

// Snapshot returns a snapshot whose Persist writes the manifest and links the segments up to
// the index raft snapshots at (the sink's). It costs nothing here.
func (f *FSM) Snapshot() (raft.FSMSnapshot, error) { return &fsmSnapshot{f: f}, nil }

type fsmSnapshot struct{ f *FSM }

// Persist needs this package's Sink: the snapshot is the log's segments, linked, not a stream.
func (s *fsmSnapshot) Persist(sink raft.SnapshotSink) error {
	k, ok := sink.(*Sink)
	if !ok {
		return errors.New("raftstore: the FSM's snapshots need raftstore.SnapshotStore")
	}
	f := s.f
	f.mu.Lock()
	defer f.mu.Unlock()
	meta := k.Meta()
	log := f.logs.Log()
	e, err := log.Entry(meta.Index)
	if err != nil {
		return err
	}
	if e.Term != meta.Term {
		return fmt.Errorf("raftstore: snapshot at %d term %d, the log holds term %d", meta.Index, meta.Term, e.Term)
	}
	infos, err := log.SnapshotSegments(meta.Index)
	if err != nil {
		return err
	}
	m := &Manifest{Index: meta.Index, Term: meta.Term, HighWatermark: infos[len(infos)-1].NextOffset}
	paths := make([]string, len(infos))
	for i, in := range infos {
		m.Segments = append(m.Segments, SegmentRef{
			BaseIndex: in.BaseIndex, LastIndex: in.LastIndex, BaseOffset: in.BaseOffset,
			NextOffset: in.NextOffset, Bytes: in.Bytes,
		})
		paths[i] = in.Path
	}
	return k.LinkSegments(m, paths)
}

func (s *fsmSnapshot) Release() {}

// Restore makes the log what the snapshot holds. If the log already holds the snapshot's index
// with the same term (a restart, or this node's own snapshot), nothing changes but the applied
// position. Otherwise the snapshot's segment files (in the local SnapshotStore, where raft
// wrote them) replace the log's, hard-linked; a stream of another store's snapshot is first
// written into a staging directory. Raft's cached last index is not re-read: the LogStore
// serves term-0 placeholders above the new end (see LogStore).
func (f *FSM) Restore(rc io.ReadCloser) error {
	m, err := ReadManifest(rc)
	if err != nil {
		return err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	log := f.logs.Log()
	if e, err := log.Entry(m.Index); err == nil && e.Term == m.Term {
		f.advance(m.Index, m.HighWatermark)
		return nil
	}
	local, paths, err := f.snaps.Files(m.ID)
	if err == nil && local.Index == m.Index && local.Term == m.Term {
		m = local // every segment the snapshot holds (Open may have streamed fewer)
	} else {
		// Not one of ours (raft.Restore of a user's stream): stage it.
		staging, err := os.MkdirTemp(f.snaps.Dir(), "restore-*"+tmpSuffix)
		if err != nil {
			return err
		}
		defer os.RemoveAll(staging)
		if paths, err = stageSegments(staging, m, rc); err != nil {
			return err
		}
	}
	err = log.Restore(commitlog.RestoreOptions{
		Files: paths, LastIndex: m.Index, LastTerm: m.Term, Link: os.Link,
		LastBytes: m.Segments[len(m.Segments)-1].Bytes,
	})
	if err != nil {
		return err
	}
	f.advance(m.Index, m.HighWatermark)
	return nil
}

// stageSegments writes the segment bytes of a stream into dir and syncs them.
func stageSegments(dir string, m *Manifest, r io.Reader) ([]string, error) {
	paths := make([]string, len(m.Segments))
	for i, seg := range m.Segments {
		paths[i] = filepath.Join(dir, seg.fileName())
		out, err := os.Create(paths[i])
		if err != nil {
			return nil, err
		}
		_, err = io.CopyN(out, r, seg.Bytes)
		if err == nil {
			err = out.Sync()
		}
		if cerr := out.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return nil, fmt.Errorf("raftstore: stage snapshot segment %d: %w", i, err)
		}
	}
	return paths, vfs.OS.SyncDir(dir)
}

var _ raft.FSM = (*FSM)(nil)
