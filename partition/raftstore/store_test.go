package raftstore

import (
	"bytes"
	"io"
	"path/filepath"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/runnel-io/runnel/commitlog"
)

func openTestLog(t *testing.T) (*commitlog.Log, *SnapshotStore) {
	t.Helper()
	dir := t.TempDir()
	snaps, err := NewSnapshotStore(filepath.Join(dir, "snapshots"), 2)
	if err != nil {
		t.Fatal(err)
	}
	l, err := commitlog.Open(filepath.Join(dir, "log"), logOptions(snaps))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	return l, snaps
}

func raftLogs(t *testing.T, from, to, term uint64) []*raft.Log {
	var out []*raft.Log
	for i := from; i <= to; i++ {
		l := &raft.Log{Index: i, Term: term, Type: raft.LogCommand, Data: makeBatch(t, 2, "x"), AppendedAt: time.Now()}
		switch i % 5 {
		case 0:
			l.Type, l.Data = raft.LogNoop, nil
		case 3:
			l.Type, l.Data = raft.LogConfiguration, []byte("conf")
			l.Extensions = []byte("ext")
		}
		out = append(out, l)
	}
	return out
}

// TestLogStoreContract checks raft's LogStore contract: what StoreLogs stored GetLog returns,
// FirstIndex/LastIndex, exactly raft.ErrLogNotFound for an absent index, and DeleteRange as a
// conflict truncation (suffix) or an ignored compaction (prefix).
func TestLogStoreContract(t *testing.T) {
	l, _ := openTestLog(t)
	s := NewLogStore(l)
	if first, _ := s.FirstIndex(); first != 0 {
		t.Fatalf("empty store: first index %d, want 0", first)
	}
	if last, _ := s.LastIndex(); last != 0 {
		t.Fatalf("empty store: last index %d", last)
	}
	var out raft.Log
	if err := s.GetLog(1, &out); err != raft.ErrLogNotFound {
		t.Fatalf("GetLog on an empty store: %v, want raft.ErrLogNotFound itself", err)
	}
	if err := s.StoreLog(raftLogs(t, 1, 1, 1)[0]); err != nil {
		t.Fatal(err)
	}
	want := raftLogs(t, 2, 60, 2)
	if err := s.StoreLogs(want); err != nil {
		t.Fatal(err)
	}
	if first, _ := s.FirstIndex(); first != 1 {
		t.Fatalf("first index %d", first)
	}
	if last, _ := s.LastIndex(); last != 60 {
		t.Fatalf("last index %d", last)
	}
	var offset int64
	for _, w := range want {
		if err := s.GetLog(w.Index, &out); err != nil {
			t.Fatal(err)
		}
		if out.Index != w.Index || out.Term != w.Term || out.Type != w.Type || !bytes.Equal(out.Data, w.Data) ||
			!bytes.Equal(out.Extensions, w.Extensions) || !out.AppendedAt.Equal(w.AppendedAt) {
			t.Fatalf("entry %d: got %+v want %+v", w.Index, out, w)
		}
		if w.Type == raft.LogCommand {
			if got := int64(binaryBaseOffset(w.Data)); got < offset {
				t.Fatalf("entry %d: base offset %d written in place, want at least %d", w.Index, got, offset)
			}
			offset = int64(binaryBaseOffset(w.Data)) + 2
		}
	}
	if err := s.GetLog(61, &out); err != raft.ErrLogNotFound {
		t.Fatalf("GetLog past the end: %v", err)
	}
	// A compaction (from the first index) is ignored.
	if err := s.DeleteRange(1, 40); err != nil {
		t.Fatal(err)
	}
	if first, _ := s.FirstIndex(); first != 1 {
		t.Fatalf("compaction deleted a prefix: first %d", first)
	}
	// A conflict truncates the suffix.
	if err := s.DeleteRange(50, 60); err != nil {
		t.Fatal(err)
	}
	if last, _ := s.LastIndex(); last != 49 {
		t.Fatalf("after DeleteRange(50, 60): last %d", last)
	}
	if err := s.GetLog(50, &out); err != raft.ErrLogNotFound {
		t.Fatalf("GetLog of a deleted entry: %v", err)
	}
	if err := s.StoreLogs(raftLogs(t, 50, 55, 3)); err != nil {
		t.Fatal(err)
	}
	// Retention removed a prefix: below it is ErrLogNotFound (the leader's cue for a snapshot).
	if _, err := l.DeleteSegmentsThrough(30); err != nil {
		t.Fatal(err)
	}
	first, _ := s.FirstIndex()
	if first <= 1 {
		t.Fatalf("no segment deleted (first %d)", first)
	}
	if err := s.GetLog(first-1, &out); err != raft.ErrLogNotFound {
		t.Fatalf("GetLog below the first index: %v", err)
	}

	// The log shrinks under raft (a snapshot install): indexes raft still believes in are term-0
	// placeholders until raft deletes them as a conflict.
	if err := l.TruncateFrom(53); err != nil {
		t.Fatal(err)
	}
	if err := s.GetLog(54, &out); err != nil || out.Term != 0 || out.Index != 54 {
		t.Fatalf("placeholder: %+v %v", out, err)
	}
	if err := s.GetLog(56, &out); err != raft.ErrLogNotFound {
		t.Fatalf("past the believed end: %v", err)
	}
	if err := s.DeleteRange(53, 55); err != nil {
		t.Fatal(err)
	}
	if err := s.GetLog(54, &out); err != raft.ErrLogNotFound {
		t.Fatalf("placeholder after the conflict: %v", err)
	}
	if err := s.StoreLogs(raftLogs(t, 53, 53, 4)); err != nil {
		t.Fatal(err)
	}
}

func binaryBaseOffset(b []byte) uint64 {
	return uint64(b[0])<<56 | uint64(b[1])<<48 | uint64(b[2])<<40 | uint64(b[3])<<32 |
		uint64(b[4])<<24 | uint64(b[5])<<16 | uint64(b[6])<<8 | uint64(b[7])
}

func TestStableStore(t *testing.T) {
	dir := t.TempDir()
	s, err := OpenStableStore(nil, dir)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Get([]byte("LastVoteCand")); err == nil || err.Error() != "not found" {
		t.Fatalf("missing key: %v, raft wants the message \"not found\"", err)
	}
	if v, err := s.GetUint64([]byte("CurrentTerm")); v != 0 || err != nil {
		t.Fatalf("missing uint64: %d %v", v, err)
	}
	if err := s.SetUint64([]byte("CurrentTerm"), 7); err != nil {
		t.Fatal(err)
	}
	if err := s.Set([]byte("LastVoteCand"), []byte("n2")); err != nil {
		t.Fatal(err)
	}
	s, err = OpenStableStore(nil, dir)
	if err != nil {
		t.Fatal(err)
	}
	if v, _ := s.GetUint64([]byte("CurrentTerm")); v != 7 {
		t.Fatalf("term after reopen %d", v)
	}
	if v, _ := s.Get([]byte("LastVoteCand")); string(v) != "n2" {
		t.Fatalf("vote after reopen %q", v)
	}
}

// TestSnapshotStoreStream: a snapshot taken from a log links its segments; Open streams
// manifest and bytes with meta.Size exact; another store receives the stream into a sink;
// Close is idempotent; the retained count holds.
func TestSnapshotStoreStream(t *testing.T) {
	l, snaps := openTestLog(t)
	s := NewLogStore(l)
	if err := s.StoreLogs(raftLogs(t, 1, 80, 1)); err != nil {
		t.Fatal(err)
	}
	fsm := NewFSM(s, snaps, nil)
	take := func(index uint64) string {
		sink, err := snaps.Create(1, index, 1, raft.Configuration{}, 0, nil)
		if err != nil {
			t.Fatal(err)
		}
		snap, _ := fsm.Snapshot()
		if err := snap.Persist(sink); err != nil {
			t.Fatal(err)
		}
		if err := sink.Close(); err != nil {
			t.Fatal(err)
		}
		if err := sink.Close(); err != nil {
			t.Fatalf("second Close: %v", err)
		}
		return sink.ID()
	}
	take(30)
	take(50)
	id := take(70)
	metas, err := snaps.List()
	if err != nil {
		t.Fatal(err)
	}
	if len(metas) != 2 || metas[0].ID != id || snaps.LatestIndex() != 70 {
		t.Fatalf("list: %d snapshots, latest %d", len(metas), snaps.LatestIndex())
	}
	meta, rc, err := snaps.Open(id)
	if err != nil {
		t.Fatal(err)
	}
	stream := readStream(t, rc)
	if int64(len(stream)) != meta.Size {
		t.Fatalf("streamed %d bytes, meta.Size %d", len(stream), meta.Size)
	}
	m, err := ReadManifest(bytes.NewReader(stream))
	if err != nil {
		t.Fatal(err)
	}
	infos, _ := l.SnapshotSegments(70)
	if m.Index != 70 || len(m.Segments) != len(infos) || m.HighWatermark != infos[len(infos)-1].NextOffset {
		t.Fatalf("manifest %+v", m)
	}

	// A follower's store receives it, in small writes.
	_, other := openTestLog(t)
	sink, err := other.Create(1, meta.Index, meta.Term, meta.Configuration, meta.ConfigurationIndex, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.CopyBuffer(sink, bytes.NewReader(stream), make([]byte, 777)); err != nil {
		t.Fatal(err)
	}
	if err := sink.Close(); err != nil {
		t.Fatal(err)
	}
	meta2, rc2, err := other.Open(sink.ID())
	if err != nil {
		t.Fatal(err)
	}
	stream2 := readStream(t, rc2)
	if int64(len(stream2)) != meta2.Size {
		t.Fatalf("received snapshot streams %d bytes, meta.Size %d", len(stream2), meta2.Size)
	}
	m2, _ := ReadManifest(bytes.NewReader(stream2))
	h1, _ := encodeManifest(m)
	h2, _ := encodeManifest(m2)
	if !bytes.Equal(stream[len(h1):], stream2[len(h2):]) {
		t.Fatal("the received snapshot's segment bytes differ")
	}

	// A short stream is refused at Close, and leaves nothing behind.
	sink, _ = other.Create(1, meta.Index, meta.Term, meta.Configuration, meta.ConfigurationIndex, nil)
	sink.Write(stream[:len(stream)-10])
	if err := sink.Close(); err == nil {
		t.Fatal("a short snapshot stream was accepted")
	}
	if metas, _ := other.List(); len(metas) != 1 {
		t.Fatalf("%d snapshots after a failed one", len(metas))
	}
	// A stream for another index is refused.
	sink, _ = other.Create(1, 5, 1, raft.Configuration{}, 0, nil)
	if _, err := sink.Write(stream); err == nil {
		t.Fatal("a stream for another index was accepted")
	}
	sink.Cancel()
	if err := sink.Cancel(); err != nil {
		t.Fatal(err)
	}

	// Restore onto a log that already holds index 70 with the same term changes nothing.
	_, rc, _ = snaps.Open(id)
	if err := fsm.Restore(rc); err != nil {
		t.Fatal(err)
	}
	rc.Close()
	if l.LastIndex() != 80 || fsm.HighWatermark() != m.HighWatermark || fsm.AppliedIndex() != 70 {
		t.Fatalf("after an idempotent restore: last %d hwm %d applied %d", l.LastIndex(), fsm.HighWatermark(), fsm.AppliedIndex())
	}

	// Restore onto a longer log that differs at 70 adopts the snapshot's files, and the indexes
	// raft still believes in above 70 are term-0 placeholders.
	l2, _ := openTestLog(t)
	s2 := NewLogStore(l2)
	if err := s2.StoreLogs(raftLogs(t, 1, 90, 2)); err != nil {
		t.Fatal(err)
	}
	fsm2 := NewFSM(s2, snaps, nil)
	_, rc, _ = snaps.Open(id)
	if err := fsm2.Restore(rc); err != nil {
		t.Fatal(err)
	}
	rc.Close()
	if l2.LastIndex() != 70 || l2.FirstIndex() != l.FirstIndex() || fsm2.HighWatermark() != m.HighWatermark || l2.EndOffset() != m.HighWatermark {
		t.Fatalf("after restore: [%d, %d] hwm %d end %d", l2.FirstIndex(), l2.LastIndex(), fsm2.HighWatermark(), l2.EndOffset())
	}
	var out raft.Log
	if err := s2.GetLog(85, &out); err != nil || out.Term != 0 {
		t.Fatalf("placeholder above the restored end: %+v %v", out, err)
	}
	for i := l.FirstIndex(); i <= 70; i++ {
		var a, b raft.Log
		if err := s.GetLog(i, &a); err != nil {
			t.Fatal(err)
		}
		if err := s2.GetLog(i, &b); err != nil {
			t.Fatal(err)
		}
		if a.Term != b.Term || !bytes.Equal(a.Data, b.Data) {
			t.Fatalf("entry %d differs after restore", i)
		}
	}
	// A stream that is not one of the local store's snapshots is staged, then adopted.
	l3, snaps3 := openTestLog(t)
	fsm3 := NewFSM(NewLogStore(l3), snaps3, nil)
	if err := fsm3.Restore(io.NopCloser(bytes.NewReader(stream))); err != nil {
		t.Fatal(err)
	}
	if l3.LastIndex() != 70 || l3.EndOffset() != m.HighWatermark || fsm3.HighWatermark() != m.HighWatermark {
		t.Fatalf("staged restore: last %d end %d", l3.LastIndex(), l3.EndOffset())
	}

	// The adopted log continues where the snapshot ends.
	if err := s2.DeleteRange(71, 90); err != nil {
		t.Fatal(err)
	}
	if err := s2.StoreLogs(raftLogs(t, 71, 75, 3)); err != nil {
		t.Fatal(err)
	}
}

// TestSnapshotSkipsSegmentsDeletedMeanwhile: a segment that retention deleted between the
// log listing it and the snapshot linking it (oldest first) is left out, not a failure.
func TestSnapshotSkipsSegmentsDeletedMeanwhile(t *testing.T) {
	l, snaps := openTestLog(t)
	s := NewLogStore(l)
	if err := s.StoreLogs(raftLogs(t, 1, 80, 1)); err != nil {
		t.Fatal(err)
	}
	infos, err := l.SnapshotSegments(70)
	if err != nil {
		t.Fatal(err)
	}
	if len(infos) < 3 {
		t.Fatalf("%d segments", len(infos))
	}
	m := &Manifest{Index: 70, Term: 1, HighWatermark: infos[len(infos)-1].NextOffset}
	var paths []string
	for _, in := range infos {
		m.Segments = append(m.Segments, SegmentRef{BaseIndex: in.BaseIndex, LastIndex: in.LastIndex,
			BaseOffset: in.BaseOffset, NextOffset: in.NextOffset, Bytes: in.Bytes})
		paths = append(paths, in.Path)
	}
	if _, err := l.DeleteSegmentsThrough(infos[1].LastIndex); err != nil {
		t.Fatal(err)
	}
	sink, _ := snaps.Create(1, 70, 1, raft.Configuration{}, 0, nil)
	if err := sink.(*Sink).LinkSegments(m, paths); err != nil {
		t.Fatal(err)
	}
	if err := sink.Close(); err != nil {
		t.Fatal(err)
	}
	got, files, err := snaps.Files(sink.ID())
	if err != nil {
		t.Fatal(err)
	}
	if len(files) != len(infos)-2 || got.Segments[0].BaseIndex != l.FirstIndex() {
		t.Fatalf("snapshot holds %d segments from %d; the log %d from %d", len(files), got.Segments[0].BaseIndex, len(infos)-2, l.FirstIndex())
	}
}
