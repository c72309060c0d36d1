package raftstore

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/raft"

	"github.com/runnel-io/runnel/internal/vfs"
)

// Snapshot stream: streamMagic, u32 manifest length, the manifest (JSON), then the bytes of every
// segment in manifest order, exactly Segments[i].Bytes each. meta.Size is the total.
const (
	streamMagic  = "RNLSNAP1"
	headerSize   = len(streamMagic) + 4
	maxManifest  = 64 << 20
	metaFileName = "meta.json"
	tmpSuffix    = ".tmp"
)

// Manifest describes a snapshot: the applied position and the segments that hold the log up to
// it. It is what a snapshot writes (a few hundred bytes); the segments are hard links.
type Manifest struct {
	// ID is the snapshot's ID in the store that streams it (each store's Open sets its own).
	ID    string `json:"id"`
	Index uint64 `json:"index"`
	Term  uint64 `json:"term"`
	// HighWatermark is the offset after the entry Index: every record below it is committed.
	HighWatermark      int64              `json:"high_watermark"`
	Configuration      raft.Configuration `json:"configuration"`
	ConfigurationIndex uint64             `json:"configuration_index"`
	// Segments hold the entries [Segments[0].BaseIndex, Index]; the last is cut after Index.
	Segments []SegmentRef `json:"segments"`
}

// SegmentRef is one segment file of a snapshot: the first Bytes bytes of the file named by
// BaseOffset (%020d.log).
type SegmentRef struct {
	BaseIndex  uint64 `json:"base_index"`
	LastIndex  uint64 `json:"last_index"`
	BaseOffset int64  `json:"base_offset"`
	NextOffset int64  `json:"next_offset"`
	Bytes      int64  `json:"bytes"`
}

func (r SegmentRef) fileName() string { return fmt.Sprintf("%020d.log", r.BaseOffset) }

// storedMeta is meta.json: raft's meta (Size included) and the manifest as streamed.
type storedMeta struct {
	raft.SnapshotMeta
	Manifest Manifest `json:"manifest"`
}

func encodeManifest(m *Manifest) ([]byte, error) {
	j, err := json.Marshal(m)
	if err != nil {
		return nil, err
	}
	b := make([]byte, 0, headerSize+len(j))
	b = append(b, streamMagic...)
	b = binary.BigEndian.AppendUint32(b, uint32(len(j)))
	return append(b, j...), nil
}

func (m *Manifest) streamSize() (int64, error) {
	h, err := encodeManifest(m)
	if err != nil {
		return 0, err
	}
	n := int64(len(h))
	for _, s := range m.Segments {
		n += s.Bytes
	}
	return n, nil
}

// ReadManifest reads the manifest at the start of a snapshot stream, leaving r at the first
// segment byte.
func ReadManifest(r io.Reader) (*Manifest, error) {
	var h [headerSize]byte
	if _, err := io.ReadFull(r, h[:]); err != nil {
		return nil, fmt.Errorf("raftstore: snapshot header: %w", err)
	}
	return parseManifest(h[:], r)
}

func parseManifest(h []byte, r io.Reader) (*Manifest, error) {
	if string(h[:len(streamMagic)]) != streamMagic {
		return nil, errors.New("raftstore: not a partition snapshot stream")
	}
	n := binary.BigEndian.Uint32(h[len(streamMagic):])
	if n > maxManifest {
		return nil, fmt.Errorf("raftstore: snapshot manifest of %d bytes", n)
	}
	j := make([]byte, n)
	if _, err := io.ReadFull(r, j); err != nil {
		return nil, fmt.Errorf("raftstore: snapshot manifest: %w", err)
	}
	var m Manifest
	if err := json.Unmarshal(j, &m); err != nil {
		return nil, fmt.Errorf("raftstore: snapshot manifest: %w", err)
	}
	if err := m.check(); err != nil {
		return nil, err
	}
	return &m, nil
}

// check validates the manifest's shape (names and sizes come from the network).
func (m *Manifest) check() error {
	if len(m.Segments) == 0 {
		return errors.New("raftstore: snapshot manifest without segments")
	}
	for i, s := range m.Segments {
		if s.Bytes < 0 || s.BaseOffset < 0 || s.BaseIndex == 0 || s.LastIndex+1 < s.BaseIndex {
			return fmt.Errorf("raftstore: snapshot manifest: bad segment %d", i)
		}
		if i > 0 && (s.BaseIndex != m.Segments[i-1].LastIndex+1 || s.BaseOffset != m.Segments[i-1].NextOffset) {
			return fmt.Errorf("raftstore: snapshot manifest: segment %d does not follow the previous", i)
		}
	}
	if last := m.Segments[len(m.Segments)-1]; last.LastIndex != m.Index || last.NextOffset != m.HighWatermark {
		return errors.New("raftstore: snapshot manifest: the last segment does not end at the snapshot")
	}
	return nil
}

// SnapshotStore is raft.SnapshotStore for a partition: a snapshot is a directory holding
// meta.json and hard links to the segment files that hold the log up to the snapshot index
// (written as received on a follower). It copies no segment data when a snapshot is taken.
//
// Layout: <dir>/<id>/meta.json and <dir>/<id>/%020d.log; <dir>/<id>.tmp while being written.
type SnapshotStore struct {
	dir    string
	retain int

	mu     sync.Mutex // serialises Close (publish and reap) and List
	latest atomic.Uint64
	// logFirst, if set, is the log's first index: Open leaves out segments the log has
	// deleted since (retention), so a follower receives the retained log, not what the snapshot
	// still pins.
	logFirst atomic.Pointer[func() uint64]
}

// SetLogFirstIndex tells the store where the log now starts (commitlog.Log.FirstIndex): Open
// then streams only the snapshot's segments that end at or after it (always the last one).
// Without it a snapshot streams every segment it links, including ones retention deleted since.
func (s *SnapshotStore) SetLogFirstIndex(fn func() uint64) { s.logFirst.Store(&fn) }

// NewSnapshotStore opens (or creates) the store in dir, keeping the retain newest snapshots
// (at least 1). Leftover temporary directories are removed.
func NewSnapshotStore(dir string, retain int) (*SnapshotStore, error) {
	if retain < 1 {
		retain = 1
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	s := &SnapshotStore{dir: dir, retain: retain}
	names, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	for _, e := range names {
		if strings.HasSuffix(e.Name(), tmpSuffix) {
			if err := os.RemoveAll(filepath.Join(dir, e.Name())); err != nil {
				return nil, err
			}
		}
	}
	metas, err := s.List()
	if err != nil {
		return nil, err
	}
	if len(metas) > 0 {
		s.latest.Store(metas[0].Index)
	}
	return s, nil
}

// Dir returns the store's directory.
func (s *SnapshotStore) Dir() string { return s.dir }

// LatestIndex returns the index of the newest complete snapshot (0 if none): a replicated
// partition's commitlog RetentionGuard (raft-log.md, trap 4).
func (s *SnapshotStore) LatestIndex() uint64 { return s.latest.Load() }

var snapshotSeq atomic.Uint64

func snapshotID(term, index uint64) string {
	return fmt.Sprintf("%d-%d-%d-%d", term, index, time.Now().UnixMilli(), snapshotSeq.Add(1))
}

// Create starts a snapshot. The sink accepts either a whole snapshot stream (a follower
// receiving one through InstallSnapshot) or, from this package's FSM, the manifest alone with
// the segments hard-linked.
func (s *SnapshotStore) Create(version raft.SnapshotVersion, index, term uint64, configuration raft.Configuration,
	configurationIndex uint64, _ raft.Transport) (raft.SnapshotSink, error) {
	if version != 1 {
		return nil, fmt.Errorf("raftstore: unsupported snapshot version %d", version)
	}
	id := snapshotID(term, index)
	tmp := filepath.Join(s.dir, id+tmpSuffix)
	if err := os.MkdirAll(tmp, 0o755); err != nil {
		return nil, err
	}
	return &Sink{
		store: s, dir: tmp,
		meta: raft.SnapshotMeta{
			Version: version, ID: id, Index: index, Term: term,
			Configuration: configuration, ConfigurationIndex: configurationIndex,
		},
	}, nil
}

// List returns the complete snapshots, newest first.
func (s *SnapshotStore) List() ([]*raft.SnapshotMeta, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	stored, err := s.listLocked()
	if err != nil {
		return nil, err
	}
	out := make([]*raft.SnapshotMeta, len(stored))
	for i := range stored {
		m := stored[i].SnapshotMeta
		out[i] = &m
	}
	return out, nil
}

func (s *SnapshotStore) listLocked() ([]storedMeta, error) {
	entries, err := os.ReadDir(s.dir)
	if err != nil {
		return nil, err
	}
	var out []storedMeta
	for _, e := range entries {
		if !e.IsDir() || strings.HasSuffix(e.Name(), tmpSuffix) {
			continue
		}
		m, err := s.readMeta(e.Name())
		if err != nil {
			continue // not a complete snapshot
		}
		out = append(out, *m)
	}
	sort.Slice(out, func(i, j int) bool {
		a, b := out[i], out[j]
		if a.Term != b.Term {
			return a.Term > b.Term
		}
		if a.Index != b.Index {
			return a.Index > b.Index
		}
		return a.ID > b.ID
	})
	return out, nil
}

func (s *SnapshotStore) readMeta(id string) (*storedMeta, error) {
	if strings.ContainsAny(id, `/\`) || id == "" || id == "." || id == ".." {
		return nil, fmt.Errorf("raftstore: bad snapshot id %q", id)
	}
	b, err := os.ReadFile(filepath.Join(s.dir, id, metaFileName))
	if err != nil {
		return nil, err
	}
	var m storedMeta
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, fmt.Errorf("raftstore: snapshot %s: %w", id, err)
	}
	if m.ID != id || m.Manifest.ID != id {
		return nil, fmt.Errorf("raftstore: snapshot %s: meta names %s", id, m.ID)
	}
	return &m, nil
}

// Open returns a snapshot's meta and its stream: the manifest, then the segment bytes, read
// lazily from the linked files; meta.Size is exactly the bytes the stream yields.
func (s *SnapshotStore) Open(id string) (*raft.SnapshotMeta, io.ReadCloser, error) {
	m, err := s.readMeta(id)
	if err != nil {
		return nil, nil, err
	}
	man := m.Manifest
	if fn := s.logFirst.Load(); fn != nil {
		first := (*fn)()
		k := 0
		for k < len(man.Segments)-1 && man.Segments[k].LastIndex < first {
			k++
		}
		man.Segments = man.Segments[k:]
	}
	head, err := encodeManifest(&man)
	if err != nil {
		return nil, nil, err
	}
	meta := m.SnapshotMeta
	if meta.Size, err = man.streamSize(); err != nil {
		return nil, nil, err
	}
	// Open every file now: a reaped snapshot's files stay readable while it is streamed.
	r := &snapshotReader{head: bytes.NewReader(head), segs: man.Segments}
	for _, seg := range man.Segments {
		f, err := os.Open(filepath.Join(s.dir, id, seg.fileName()))
		if err != nil {
			r.Close()
			return nil, nil, err
		}
		r.files = append(r.files, f)
	}
	return &meta, r, nil
}

// Files returns a local snapshot's manifest and the paths of its segment files, oldest first,
// after checking that each holds at least the bytes the manifest names.
func (s *SnapshotStore) Files(id string) (*Manifest, []string, error) {
	m, err := s.readMeta(id)
	if err != nil {
		return nil, nil, err
	}
	paths := make([]string, len(m.Manifest.Segments))
	for i, seg := range m.Manifest.Segments {
		paths[i] = filepath.Join(s.dir, id, seg.fileName())
		fi, err := os.Stat(paths[i])
		if err != nil {
			return nil, nil, err
		}
		if fi.Size() < seg.Bytes {
			return nil, nil, fmt.Errorf("raftstore: snapshot %s: %s holds %d bytes, want %d", id, paths[i], fi.Size(), seg.Bytes)
		}
	}
	return &m.Manifest, paths, nil
}

// reap removes all but the retain newest snapshots. Their hard links go; segment files the log
// still holds stay.
func (s *SnapshotStore) reapLocked() error {
	stored, err := s.listLocked()
	if err != nil {
		return err
	}
	var errs []error
	for i := s.retain; i < len(stored); i++ {
		errs = append(errs, os.RemoveAll(filepath.Join(s.dir, stored[i].ID)))
	}
	if len(stored) > 0 {
		s.latest.Store(stored[0].Index)
	}
	return errors.Join(errs...)
}

// snapshotReader streams the manifest, then each segment's first Bytes bytes.
type snapshotReader struct {
	head  *bytes.Reader
	segs  []SegmentRef
	files []*os.File // one per segment, opened by Open
	cur   int
	pos   int64 // read position in files[cur]
	mu    sync.Mutex
	done  bool
}

func (r *snapshotReader) Read(p []byte) (int, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.done {
		return 0, os.ErrClosed
	}
	if r.head.Len() > 0 {
		return r.head.Read(p)
	}
	for r.cur < len(r.segs) && r.pos == r.segs[r.cur].Bytes {
		r.cur, r.pos = r.cur+1, 0
	}
	if r.cur == len(r.segs) {
		return 0, io.EOF
	}
	if left := r.segs[r.cur].Bytes - r.pos; int64(len(p)) > left {
		p = p[:left]
	}
	n, err := r.files[r.cur].ReadAt(p, r.pos)
	r.pos += int64(n)
	if err == io.EOF {
		if n < len(p) {
			return n, io.ErrUnexpectedEOF // the file is shorter than the manifest says
		}
		err = nil
	}
	return n, err
}

// Close releases the files. It is idempotent.
func (r *snapshotReader) Close() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.done = true
	var errs []error
	for _, f := range r.files {
		errs = append(errs, f.Close())
	}
	r.files = nil
	return errors.Join(errs...)
}

// Sink is the SnapshotStore's raft.SnapshotSink. It parses what is written into it: the
// manifest, then the segment bytes, each into its file. The FSM instead hands it the manifest
// and hard-links the log's segments (LinkSegments). Close publishes the snapshot; Close and
// Cancel are idempotent.
type Sink struct {
	store *SnapshotStore
	dir   string // the temporary directory
	meta  raft.SnapshotMeta

	mu       sync.Mutex
	head     []byte // header and manifest bytes received so far
	manifest *Manifest
	seg      int // the segment being received
	cur      *os.File
	left     int64
	files    []*os.File // written files, synced at Close
	linked   bool
	closed   bool
	err      error
}

// ID returns the snapshot's ID.
func (k *Sink) ID() string { return k.meta.ID }

// Meta returns the raft meta the sink was created with (Index, Term, Configuration).
func (k *Sink) Meta() raft.SnapshotMeta { return k.meta }

// Write receives a snapshot stream.
func (k *Sink) Write(p []byte) (int, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.closed {
		return 0, errors.New("raftstore: write to a closed snapshot sink")
	}
	if k.err != nil {
		return 0, k.err
	}
	n, err := k.write(p)
	if err != nil {
		k.err = err
	}
	return n, err
}

func (k *Sink) write(p []byte) (int, error) {
	total := len(p)
	for k.manifest == nil && len(p) > 0 {
		if k.linked {
			return 0, errors.New("raftstore: snapshot sink already has its segments")
		}
		need := headerSize
		if len(k.head) >= headerSize {
			n := binary.BigEndian.Uint32(k.head[len(streamMagic):])
			if string(k.head[:len(streamMagic)]) != streamMagic || n > maxManifest {
				return 0, errors.New("raftstore: not a partition snapshot stream")
			}
			need = headerSize + int(n)
		}
		take := min(need-len(k.head), len(p))
		k.head = append(k.head, p[:take]...)
		p = p[take:]
		if len(k.head) == need && need > headerSize {
			m, err := parseManifest(k.head[:headerSize], bytes.NewReader(k.head[headerSize:]))
			if err != nil {
				return 0, err
			}
			if m.Index != k.meta.Index || m.Term != k.meta.Term {
				return 0, fmt.Errorf("raftstore: snapshot stream is at index %d term %d, the sink at %d term %d", m.Index, m.Term, k.meta.Index, k.meta.Term)
			}
			k.manifest = m
			k.seg = -1
		}
	}
	for len(p) > 0 {
		for k.cur == nil || k.left == 0 {
			k.seg++
			if k.seg >= len(k.manifest.Segments) {
				return total - len(p), errors.New("raftstore: snapshot stream longer than its manifest")
			}
			ref := k.manifest.Segments[k.seg]
			f, err := os.OpenFile(filepath.Join(k.dir, ref.fileName()), os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o644)
			if err != nil {
				return total - len(p), err
			}
			k.files = append(k.files, f)
			k.cur, k.left = f, ref.Bytes
		}
		take := min(int64(len(p)), k.left)
		if _, err := k.cur.Write(p[:take]); err != nil {
			return total - len(p), err
		}
		k.left -= take
		p = p[take:]
	}
	return total, nil
}

// LinkSegments gives the sink its manifest and hard-links the segment files (paths, in
// manifest order) instead of receiving a stream. Used by the FSM's snapshot.
func (k *Sink) LinkSegments(m *Manifest, paths []string) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.closed || k.manifest != nil || len(k.head) > 0 {
		return errors.New("raftstore: snapshot sink already written")
	}
	if err := m.check(); err != nil {
		return err
	}
	if len(paths) != len(m.Segments) {
		return errors.New("raftstore: one path per segment")
	}
	first := 0
	for i, p := range paths {
		err := os.Link(p, filepath.Join(k.dir, m.Segments[i].fileName()))
		if errors.Is(err, os.ErrNotExist) && i < len(paths)-1 {
			// Retention deleted it (and, oldest first, every one before it) since the log
			// listed them: the snapshot starts after it.
			for j := first; j < i; j++ {
				os.Remove(filepath.Join(k.dir, m.Segments[j].fileName()))
			}
			first = i + 1
			continue
		}
		if err != nil {
			return err
		}
	}
	trimmed := *m
	trimmed.Segments = m.Segments[first:]
	k.manifest, k.linked = &trimmed, true
	return nil
}

// Close completes the snapshot: it checks that every segment byte arrived, syncs the files,
// writes meta.json, renames the directory into place, syncs the store directory, and removes
// snapshots beyond the retained number. Idempotent (raft may call it twice).
func (k *Sink) Close() error {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.closed {
		return nil
	}
	k.closed = true
	published, err := k.finish()
	for _, f := range k.files {
		f.Close()
	}
	if err != nil && !published {
		os.RemoveAll(k.dir)
	}
	return err
}

func (k *Sink) finish() (published bool, err error) {
	if k.err != nil {
		return false, k.err
	}
	if k.manifest == nil {
		return false, errors.New("raftstore: snapshot sink closed without a manifest")
	}
	if !k.linked && (k.seg != len(k.manifest.Segments)-1 || k.left != 0) {
		return false, errors.New("raftstore: snapshot stream shorter than its manifest")
	}
	for _, f := range k.files {
		if err := f.Sync(); err != nil {
			return false, err
		}
	}
	m := *k.manifest
	m.ID = k.meta.ID
	m.Configuration, m.ConfigurationIndex = k.meta.Configuration, k.meta.ConfigurationIndex
	size, err := m.streamSize()
	if err != nil {
		return false, err
	}
	meta := k.meta
	meta.Size = size
	b, err := json.Marshal(storedMeta{SnapshotMeta: meta, Manifest: m})
	if err != nil {
		return false, err
	}
	if err := writeFileSync(filepath.Join(k.dir, metaFileName), b); err != nil {
		return false, err
	}
	if err := vfs.OS.SyncDir(k.dir); err != nil {
		return false, err
	}
	s := k.store
	s.mu.Lock()
	defer s.mu.Unlock()
	final := filepath.Join(s.dir, k.meta.ID)
	if err := os.Rename(k.dir, final); err != nil {
		return false, err
	}
	k.dir = final
	if err := vfs.OS.SyncDir(s.dir); err != nil {
		return true, err
	}
	return true, s.reapLocked()
}

// Cancel abandons the snapshot. Idempotent.
func (k *Sink) Cancel() error {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.closed {
		return nil
	}
	k.closed = true
	for _, f := range k.files {
		f.Close()
	}
	return os.RemoveAll(k.dir)
}

func writeFileSync(path string, b []byte) error {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return err
	}
	if _, err := f.Write(b); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

var _ raft.SnapshotStore = (*SnapshotStore)(nil)
