package commitlog

import (
	"encoding/binary"
	"fmt"
	"os"
	"sort"
	"sync"
	"sync/atomic"

	"github.com/tysonmote/gommap"

	"github.com/runnel-io/runnel/internal/vfs"
)

// A sparse index file: fixed-size entries appended with WriteAt (the file grows by exactly the
// entries written: it is never pre-grown, so a crash cannot leave zero padding that reads as
// entries) and read through a read-only shared mapping that is reserved once at the largest size
// the segment can need. Pages past the file's end are never touched: readers look only at
// published entries, and truncation (which shrinks the file) happens under the segment's
// exclusive lock.
//
// The newest entries are kept in memory (the tail) and written to the file a batch at a time:
// one index entry is added per IndexIntervalBytes of log, so with 100 KiB batches every append
// added one, and its pwrite cost an append 2.4-4.7 us of ~32 on session 9's machine (1 KiB x
// 100 unsynced, with IndexIntervalBytes at 4 KiB and at 1 GiB; with this tail,
// BenchmarkAppend went from 31.3-33.1 to 28.9-31.4 us: docs/benchmarks.md). Readers see the
// file's entries and the tail; the tail is written out when it holds tailFlushEntries, and
// before the segment is sealed, truncated or closed cleanly. A crash loses the tail with the rest of what was not
// synced: the active segment's index is rebuilt by recovery's scan anyway, and a sealed
// segment's index is complete (written and synced at sealing).
type index struct {
	f         vfs.File
	mm        gommap.MMap // nil when the FS cannot map; reads then use ReadAt
	entrySize int
	capacity  int          // entries the mapping can hold; the segment rolls before it is full
	n         atomic.Int64 // entries in the file, visible to readers

	mu   sync.Mutex // guards tail against readers taking a view
	tail []byte     // published entries after the file's n, not yet written to the file

	// Owned by the Log's writer lock: wbuf holds the tail (its first pub bytes) and then the
	// entries staged by the current append; flushed says wbuf was written to the file by the
	// current append.
	wbuf    []byte
	pub     int
	flushed bool
}

// tailFlushEntries is how many entries the in-memory tail holds before it is written out.
const tailFlushEntries = 64

const (
	offsetEntrySize = 12 // relIndex u32 | relOffset u32 | position u32
	timeEntrySize   = 12 // timestamp i64 | relOffset u32
)

func openIndex(fs vfs.FS, path string, entrySize, capacity int, create bool) (*index, error) {
	flag := os.O_RDWR
	if create {
		flag |= os.O_CREATE | os.O_TRUNC
	}
	f, err := fs.OpenFile(path, flag, 0o644)
	if err != nil {
		return nil, err
	}
	x := &index{f: f, entrySize: entrySize, capacity: capacity}
	size, err := f.Size()
	if err != nil {
		f.Close()
		return nil, err
	}
	if fd := f.Fd(); fd != ^uintptr(0) {
		length := int64(capacity * entrySize)
		if pg := int64(os.Getpagesize()); length%pg != 0 {
			length += pg - length%pg
		}
		mm, err := gommap.MapRegion(fd, 0, length, gommap.PROT_READ, gommap.MAP_SHARED)
		if err != nil {
			f.Close()
			return nil, fmt.Errorf("mmap %s: %w", path, err)
		}
		x.mm = mm
	}
	// A torn trailing partial entry is dropped by the caller's validation (n rounds down).
	n := size / int64(entrySize)
	if n > int64(capacity) {
		n = int64(capacity)
	}
	x.n.Store(n)
	return x, nil
}

// len returns the number of entries in the file. Readers use view, which adds the tail.
func (x *index) len() int { return int(x.n.Load()) }

// count returns the entries visible to readers: the file's and the tail's. Writer only.
func (x *index) count() int { return x.len() + x.pub/x.entrySize }

// entry returns entry i (< len) into buf, which must hold entrySize bytes.
func (x *index) entry(i int, buf []byte) ([]byte, error) {
	off := i * x.entrySize
	if x.mm != nil {
		return x.mm[off : off+x.entrySize], nil
	}
	if _, err := x.f.ReadAt(buf[:x.entrySize], int64(off)); err != nil {
		return nil, err
	}
	return buf[:x.entrySize], nil
}

// write stages encoded entries (a multiple of entrySize) after the tail, without publishing
// them. When the tail and the staged entries reach tailFlushEntries they are written to the
// file (still unpublished); an error is that write's.
func (x *index) write(entries []byte) error {
	if len(entries) == 0 {
		return nil
	}
	x.wbuf = append(x.wbuf, entries...)
	if len(x.wbuf) < tailFlushEntries*x.entrySize {
		return nil
	}
	if _, err := x.f.WriteAt(x.wbuf, x.n.Load()*int64(x.entrySize)); err != nil {
		return err
	}
	x.flushed = true
	return nil
}

// unstage drops the entries staged since the last publish (a failed append).
func (x *index) unstage() {
	x.wbuf = x.wbuf[:x.pub]
	x.flushed = false
}

// publish makes the staged entries visible to readers: in the file if write wrote them out,
// else in the tail.
func (x *index) publish() {
	x.mu.Lock()
	defer x.mu.Unlock()
	if x.flushed {
		x.n.Add(int64(len(x.wbuf) / x.entrySize))
		// A new array: readers may still hold views of the old one.
		x.tail, x.wbuf, x.pub, x.flushed = nil, make([]byte, 0, tailFlushEntries*x.entrySize), 0, false
		return
	}
	x.tail, x.pub = x.wbuf, len(x.wbuf)
}

// flush writes the tail to the file (before sealing, truncating or a clean close). Writer only.
func (x *index) flush() error {
	if len(x.wbuf) == 0 {
		return nil
	}
	if _, err := x.f.WriteAt(x.wbuf, x.n.Load()*int64(x.entrySize)); err != nil {
		return err
	}
	x.flushed = true
	x.publish()
	return nil
}

// indexView is what a reader sees of an index at one moment: the file's first n entries and
// the tail after them.
type indexView struct {
	x    *index
	n    int
	tail []byte
}

// view takes a consistent view for a reader (who holds the segment's lifecycle lock).
func (x *index) view() indexView {
	x.mu.Lock()
	defer x.mu.Unlock()
	return indexView{x: x, n: x.len(), tail: x.tail}
}

func (v indexView) len() int { return v.n + len(v.tail)/v.x.entrySize }

// entry returns entry i (< len) into buf, which must hold entrySize bytes.
func (v indexView) entry(i int, buf []byte) ([]byte, error) {
	if i < v.n {
		return v.x.entry(i, buf)
	}
	off := (i - v.n) * v.x.entrySize
	return v.tail[off : off+v.x.entrySize], nil
}

// searchLast returns the last entry i with key(i) <= target, or -1 (see index.searchLast).
func (v indexView) searchLast(target uint64, key func(b []byte) uint64) (int, error) {
	return searchEntries(v.len(), target, key, v.entry)
}

// truncate keeps the first n entries of the file. The caller holds the segment's exclusive
// lock and the writer lock, and flushed the tail first.
func (x *index) truncate(n int) error {
	x.n.Store(int64(n))
	return x.f.Truncate(int64(n * x.entrySize))
}

func (x *index) close() error {
	var err error
	if x.mm != nil {
		err = x.mm.UnsafeUnmap()
		x.mm = nil
	}
	if cerr := x.f.Close(); err == nil {
		err = cerr
	}
	return err
}

// offsetEntry is one entry of the offset index: a frame's position, Raft index and offset (the
// batch's base offset, or for other entry types the next offset at that point), all relative to
// the segment's bases.
type offsetEntry struct {
	relIndex, relOffset, pos uint32
}

func appendOffsetEntry(dst []byte, e offsetEntry) []byte {
	dst = binary.BigEndian.AppendUint32(dst, e.relIndex)
	dst = binary.BigEndian.AppendUint32(dst, e.relOffset)
	return binary.BigEndian.AppendUint32(dst, e.pos)
}

func decodeOffsetEntry(b []byte) offsetEntry {
	return offsetEntry{
		relIndex:  binary.BigEndian.Uint32(b[0:]),
		relOffset: binary.BigEndian.Uint32(b[4:]),
		pos:       binary.BigEndian.Uint32(b[8:]),
	}
}

// timeEntry: the largest batch max-timestamp seen in the segment so far, and the base offset
// (relative) of the batch that set it.
type timeEntry struct {
	ts        int64
	relOffset uint32
}

func appendTimeEntry(dst []byte, e timeEntry) []byte {
	dst = binary.BigEndian.AppendUint64(dst, uint64(e.ts))
	return binary.BigEndian.AppendUint32(dst, e.relOffset)
}

func decodeTimeEntry(b []byte) timeEntry {
	return timeEntry{ts: int64(binary.BigEndian.Uint64(b[0:])), relOffset: binary.BigEndian.Uint32(b[8:])}
}

// searchLast returns the last entry i in [0, n) with key(i) <= target, or -1. Keys are
// non-decreasing in i.
func (x *index) searchLast(n int, target uint64, key func(b []byte) uint64) (int, error) {
	return searchEntries(n, target, key, x.entry)
}

func searchEntries(n int, target uint64, key func(b []byte) uint64, entry func(int, []byte) ([]byte, error)) (int, error) {
	var buf [16]byte
	var ioErr error
	i := sort.Search(n, func(i int) bool {
		b, err := entry(i, buf[:])
		if err != nil {
			ioErr = err
			return true
		}
		return key(b) > target
	})
	return i - 1, ioErr
}

func keyRelIndex(b []byte) uint64  { return uint64(binary.BigEndian.Uint32(b[0:])) }
func keyRelOffset(b []byte) uint64 { return uint64(binary.BigEndian.Uint32(b[4:])) }

// keyTime orders time entries; timestamps may be negative, so flip the sign bit.
func keyTime(b []byte) uint64 { return binary.BigEndian.Uint64(b[0:]) ^ (1 << 63) }
