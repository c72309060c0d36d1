package commitlog

import (
	"encoding/binary"
	"fmt"
	"os"
	"sort"
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
type index struct {
	f         vfs.File
	mm        gommap.MMap // nil when the FS cannot map; reads then use ReadAt
	entrySize int
	capacity  int          // entries the mapping can hold; the segment rolls before it is full
	n         atomic.Int64 // published entries
}

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

// len returns the published entry count.
func (x *index) len() int { return int(x.n.Load()) }

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

// write appends encoded entries (a multiple of entrySize) without publishing them.
func (x *index) write(entries []byte) error {
	if len(entries) == 0 {
		return nil
	}
	_, err := x.f.WriteAt(entries, x.n.Load()*int64(x.entrySize))
	return err
}

// publish makes k written entries visible to readers.
func (x *index) publish(k int) { x.n.Add(int64(k)) }

// truncate keeps the first n entries. The caller holds the segment's exclusive lock.
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
	var buf [16]byte
	var ioErr error
	i := sort.Search(n, func(i int) bool {
		b, err := x.entry(i, buf[:])
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
