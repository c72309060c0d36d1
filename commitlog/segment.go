package commitlog

import (
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"

	"github.com/runnel-io/runnel/internal/vfs"
)

// A segment is one log file and its two sparse indexes, named by the segment's base offset.
//
// Locking: mu is the segment's lifecycle lock. Readers hold it shared while they touch the
// segment's files or mapped index (never the Log's writer lock), so reads run concurrently with
// appends. Truncation and close hold it exclusively. Appends do not take it: they write only past
// the published size and publish with atomics (size first, then index counts, then the Log's end),
// so a reader that sees an index entry or an end offset also sees the bytes behind it.
type segment struct {
	fs      vfs.FS
	path    string // the .log file
	hdr     segmentHeader
	maxData int

	log  vfs.File
	idx  *index // offset index
	tidx *index // time index

	mu     sync.RWMutex
	closed bool // under mu

	size    atomic.Int64 // readable bytes, header included
	nextOff atomic.Int64 // offset after the last batch
	lastIdx atomic.Uint64
	maxTs   atomic.Int64 // largest batch max-timestamp, math.MinInt64 when none
	// zeroed is the end of the zeros written ahead of size (preallocate.go); at or below size:
	// none. Written under the Log's writer lock.
	zeroed atomic.Int64
	// reserved is the end of the blocks reserved ahead of size (reserve.go); at or below size:
	// none. Written under the Log's writer lock.
	reserved atomic.Int64

	w segmentWriter // owned by the Log's writer lock
}

// segmentWriter is the append-side state of a segment, owned by Log.mu.
type segmentWriter struct {
	writerState
	saved       writerState // restored when an append fails
	idxBuf      []byte      // pending offset index entries of the current append
	tidxBuf     []byte
	pendingIdx  int
	pendingTidx int
}

type writerState struct {
	lastTerm    uint64
	lastIdxPos  int64  // position of the last offset index entry (or the header end)
	maxTs       int64  // largest batch max-timestamp written
	maxTsRelOff uint32 // relative base offset of the batch holding maxTs
	lastTimeTs  int64  // timestamp of the last time index entry written
}

func segmentPaths(dir string, baseOffset int64) (log, idx, tidx string) {
	name := fmt.Sprintf("%020d", baseOffset)
	return filepath.Join(dir, name+".log"), filepath.Join(dir, name+".index"), filepath.Join(dir, name+".timeindex")
}

func indexCapacity(o *Options) int {
	span := o.SegmentBytes + int64(frameHeaderSize+maxExtensions+o.MaxBatchBytes)
	per := int64(o.IndexIntervalBytes)
	if per < frameHeaderSize {
		per = frameHeaderSize
	}
	return int(span/per) + 4
}

// createSegment creates a new, empty segment and fsyncs its directory.
func createSegment(o *Options, dir string, hdr segmentHeader) (*segment, error) {
	logPath, idxPath, tidxPath := segmentPaths(dir, hdr.baseOffset)
	f, err := o.FS.OpenFile(logPath, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return nil, err
	}
	// The header is made durable before anything can be appended behind it, so recovery never
	// meets a torn header in front of frames (only a file cut short during its creation).
	if _, err := f.WriteAt(hdr.encode(), 0); err != nil {
		f.Close()
		o.FS.Remove(logPath)
		return nil, fmt.Errorf("write segment header %s: %w", logPath, err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		o.FS.Remove(logPath)
		return nil, fmt.Errorf("sync segment header %s: %w", logPath, err)
	}
	s, err := newSegment(o, logPath, f, hdr, true, idxPath, tidxPath)
	if err != nil {
		o.FS.Remove(logPath)
		return nil, err
	}
	s.size.Store(segmentHeaderSize)
	s.nextOff.Store(hdr.baseOffset)
	s.lastIdx.Store(hdr.baseIndex - 1)
	s.w.lastIdxPos = segmentHeaderSize
	if err := o.FS.SyncDir(dir); err != nil {
		s.close()
		return nil, fmt.Errorf("sync dir %s: %w", dir, err)
	}
	return s, nil
}

func newSegment(o *Options, logPath string, f vfs.File, hdr segmentHeader, create bool, idxPath, tidxPath string) (*segment, error) {
	capacity := indexCapacity(o)
	idx, err := openIndex(o.FS, idxPath, offsetEntrySize, capacity, create)
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("open index: %w", err)
	}
	tidx, err := openIndex(o.FS, tidxPath, timeEntrySize, capacity, create)
	if err != nil {
		idx.close()
		f.Close()
		return nil, fmt.Errorf("open time index: %w", err)
	}
	s := &segment{fs: o.FS, path: logPath, hdr: hdr, maxData: o.MaxBatchBytes, log: f, idx: idx, tidx: tidx}
	s.maxTs.Store(math.MinInt64)
	s.w.lastTimeTs = math.MinInt64
	s.w.maxTs = math.MinInt64
	s.w.lastIdxPos = segmentHeaderSize
	return s, nil
}

// openSegmentFiles opens an existing segment's files and checks its header. The caller recovers
// or validates the indexes and sets the published state.
func openSegmentFiles(o *Options, dir string, baseOffset int64) (*segment, int64, error) {
	logPath, idxPath, tidxPath := segmentPaths(dir, baseOffset)
	f, err := o.FS.OpenFile(logPath, os.O_RDWR, 0)
	if err != nil {
		return nil, 0, err
	}
	size, err := f.Size()
	if err != nil {
		f.Close()
		return nil, 0, err
	}
	var hb [segmentHeaderSize]byte
	if size < segmentHeaderSize {
		f.Close()
		return nil, size, corruptf(logPath, 0, "file of %d bytes is shorter than a segment header", size)
	}
	if _, err := f.ReadAt(hb[:], 0); err != nil {
		f.Close()
		return nil, size, err
	}
	hdr, reason := decodeSegmentHeader(hb[:])
	if reason == "" && hdr.baseOffset != baseOffset {
		reason = fmt.Sprintf("header base offset %d does not match the file name", hdr.baseOffset)
	}
	if reason == "" && hdr.baseIndex == 0 {
		reason = "header base index 0"
	}
	if reason != "" {
		f.Close()
		return nil, size, corruptf(logPath, 0, "%s", reason)
	}
	for _, p := range []string{idxPath, tidxPath} {
		if _, err := o.FS.Stat(p); errors.Is(err, os.ErrNotExist) {
			// A lost index is rebuilt; create it empty.
			nf, err := o.FS.OpenFile(p, os.O_RDWR|os.O_CREATE, 0o644)
			if err != nil {
				f.Close()
				return nil, size, err
			}
			nf.Close()
		}
	}
	s, err := newSegment(o, logPath, f, hdr, false, idxPath, tidxPath)
	if err != nil {
		return nil, size, err
	}
	return s, size, nil
}

func (s *segment) baseOffset() int64 { return s.hdr.baseOffset }
func (s *segment) baseIndex() uint64 { return s.hdr.baseIndex }

// close releases the files. It waits for readers.
func (s *segment) close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil
	}
	s.closed = true
	return errors.Join(s.idx.close(), s.tidx.close(), s.log.Close())
}

// remove closes the segment and deletes its files (the caller syncs the directory).
func (s *segment) remove() error {
	err := s.close()
	logPath, idxPath, tidxPath := segmentPaths(filepath.Dir(s.path), s.hdr.baseOffset)
	for _, p := range []string{idxPath, tidxPath, logPath} {
		if rerr := s.fs.Remove(p); rerr != nil && !errors.Is(rerr, os.ErrNotExist) {
			err = errors.Join(err, rerr)
		}
	}
	return err
}

// sync makes the log file durable. Indexes are derived data: recovery checks or rebuilds them,
// so they are synced only when a segment is sealed.
func (s *segment) sync() error { return s.log.Sync() }

// flushIndexes writes both indexes' in-memory tails to their files. The caller holds the
// writer lock.
func (s *segment) flushIndexes() error {
	if err := s.idx.flush(); err != nil {
		return fmt.Errorf("write index of %s: %w", s.path, err)
	}
	if err := s.tidx.flush(); err != nil {
		return fmt.Errorf("write time index of %s: %w", s.path, err)
	}
	return nil
}

// syncAll syncs the log file and both indexes (sealing).
func (s *segment) syncAll() error {
	return errors.Join(s.sync(), s.idx.f.Sync(), s.tidx.f.Sync())
}

// frameScanner walks frames from a position to an end, reading in large chunks.
type frameScanner struct {
	s      *segment
	pos    int64 // position of the next frame
	end    int64
	full   bool // verify batch CRC and structure, not just the frame CRC
	buf    []byte
	bufPos int64 // file position of buf[0]
	bufLen int
	h      frameHeader
	frame  []byte // the current frame; valid until the next call to next
	at     int64  // the current frame's position
	bad    string // why the walk stopped at an invalid frame ("" at a clean end)
	err    error  // an I/O error
	chunk  int
	pooled *[]byte
}

// newFrameScanner starts a walk at pos, reading up to chunk bytes at a time into a pooled
// buffer. The caller must call release when done with the frames.
func newFrameScanner(s *segment, pos, end int64, full bool, chunk int) *frameScanner {
	bp := scanBufPool.Get().(*[]byte)
	return &frameScanner{s: s, pos: pos, end: end, full: full, buf: (*bp)[:0], chunk: chunk, pooled: bp}
}

// release returns the buffer to the pool (unless it grew huge).
func (sc *frameScanner) release() {
	if sc.pooled != nil && cap(sc.buf) <= 8<<20 {
		*sc.pooled = sc.buf[:0]
		scanBufPool.Put(sc.pooled)
	}
	sc.pooled, sc.buf = nil, nil
}

var scanBufPool = sync.Pool{New: func() any { b := make([]byte, 0, 64<<10); return &b }}

// next advances to the next valid frame, or returns false at the end, at an invalid frame (bad)
// or on an I/O error (err).
func (sc *frameScanner) next() bool {
	if sc.pos >= sc.end || sc.bad != "" || sc.err != nil {
		return false
	}
	if !sc.fill(frameHeaderSize) {
		return false
	}
	h, reason := parseFrameHeader(sc.view(frameHeaderSize), sc.s.maxData)
	if reason != "" {
		sc.bad = reason
		return false
	}
	n := h.size()
	if !sc.fill(int(n)) {
		return false
	}
	frame := sc.view(int(n))
	if r := checkFrame(&h, frame, sc.full, sc.s.maxData); r != "" {
		sc.bad = r
		return false
	}
	sc.h, sc.frame, sc.at = h, frame, sc.pos
	sc.pos += n
	return true
}

func (sc *frameScanner) view(n int) []byte {
	off := int(sc.pos - sc.bufPos)
	return sc.buf[off : off+n]
}

// fill ensures n bytes from sc.pos are buffered.
func (sc *frameScanner) fill(n int) bool {
	if sc.pos >= sc.bufPos && sc.pos+int64(n) <= sc.bufPos+int64(sc.bufLen) {
		return true
	}
	if sc.pos+int64(n) > sc.end {
		sc.bad = fmt.Sprintf("frame of %d bytes at %d runs past the end at %d", n, sc.pos, sc.end)
		return false
	}
	want := n
	if want < sc.chunk {
		want = sc.chunk
	}
	if rest := sc.end - sc.pos; int64(want) > rest {
		want = int(rest)
	}
	if cap(sc.buf) < want {
		sc.buf = make([]byte, want)
	}
	sc.buf = sc.buf[:want]
	k, err := sc.s.log.ReadAt(sc.buf, sc.pos)
	if k < n {
		if err == nil || err == io.EOF {
			sc.bad = fmt.Sprintf("file ends inside the frame at %d", sc.pos)
		} else {
			sc.err = err
		}
		return false
	}
	sc.bufPos, sc.bufLen = sc.pos, k
	return true
}

// frameOffset returns, for the current frame, its first offset and the offset after it.
func (sc *frameScanner) frameOffsets(next int64) (first, after int64) {
	if sc.h.typ != EntryBatch {
		return next, next
	}
	data := sc.frame[sc.h.dataStart():]
	return batchBaseOffset(data), batchNextOffset(data)
}

// indexStart returns the position and Raft index/offset to start a scan from for a target key,
// using the offset index. byIndex selects the key: Raft index, or offset.
func (s *segment) indexStart(target uint64, byIndex bool) (pos int64, index uint64, offset int64, err error) {
	key := keyRelOffset
	base := uint64(s.hdr.baseOffset)
	if byIndex {
		key = keyRelIndex
		base = s.hdr.baseIndex
	}
	pos, index, offset = segmentHeaderSize, s.hdr.baseIndex, s.hdr.baseOffset
	if target < base {
		return pos, index, offset, nil
	}
	rel := target - base
	if rel > math.MaxUint32 {
		rel = math.MaxUint32
	}
	v := s.idx.view()
	i, err := v.searchLast(rel, key)
	if err != nil || i < 0 {
		return pos, index, offset, err
	}
	var buf [offsetEntrySize]byte
	b, err := v.entry(i, buf[:])
	if err != nil {
		return pos, index, offset, err
	}
	e := decodeOffsetEntry(b)
	return int64(e.pos), s.hdr.baseIndex + uint64(e.relIndex), s.hdr.baseOffset + int64(e.relOffset), nil
}
