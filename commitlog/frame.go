package commitlog

import (
	"encoding/binary"
	"fmt"
	"time"

	"github.com/runnel-io/runnel/internal/crc32c"
	"github.com/runnel-io/runnel/internal/recordbatch"
)

// The on-disk layout is drawn in doc.go; this file encodes and decodes it. Big-endian throughout.

// Segment file header.
const (
	segmentMagic      = "RUNNELSG"
	segmentVersion    = 1
	segmentHeaderSize = 40
)

// Frame header.
const (
	frameHeaderSize = 36
	frameLenSize    = 4         // the length field itself
	maxExtensions   = 1<<16 - 1 // extLen is a u16
	frameFixed      = frameHeaderSize - frameLenSize
	batchCRCPrefix  = recordbatch.OffAttributes // batch bytes outside the batch's own CRC, covered by the frame CRC
)

// EntryType is the kind of an entry. The values equal hashicorp/raft's LogType, so a Raft
// LogStore adapter converts by a cast. Only EntryBatch carries records and offsets; every other
// type is stored and returned as opaque data.
type EntryType uint8

const (
	EntryBatch         EntryType = 0 // raft.LogCommand: Data is one Kafka RecordBatch v2
	EntryNoop          EntryType = 1 // raft.LogNoop
	EntryBarrier       EntryType = 4 // raft.LogBarrier
	EntryConfiguration EntryType = 5 // raft.LogConfiguration
)

// Entry is one entry of the log: a Raft log entry whose command data is a record batch.
type Entry struct {
	Index      uint64 // Raft index: contiguous, the first entry of a new log is 1
	Term       uint64 // Raft term (0 in a log that is not replicated)
	Type       EntryType
	Data       []byte // for EntryBatch: the batch, with its base offset set by the log
	Extensions []byte // raft.Log.Extensions, at most 65535 bytes
	AppendedAt time.Time
}

// frameHeader is a decoded frame header.
type frameHeader struct {
	length     uint32 // bytes after the length field
	crc        uint32
	index      uint64
	term       uint64
	typ        EntryType
	extLen     uint16
	appendedAt int64
}

func (h *frameHeader) size() int64    { return int64(h.length) + frameLenSize }
func (h *frameHeader) dataLen() int   { return int(h.length) - frameFixed - int(h.extLen) }
func (h *frameHeader) dataStart() int { return frameHeaderSize + int(h.extLen) }

func frameSize(e *Entry) int { return frameHeaderSize + len(e.Extensions) + len(e.Data) }

// appendFrame appends e's whole frame to dst.
func appendFrame(dst []byte, e *Entry) []byte {
	return append(appendFrameHeader(dst, e), e.Data...)
}

// appendFrameHeader appends e's frame header and extensions (the data follows them on disk,
// written from e.Data directly when it is large), with the frame CRC computed as frameCRC does.
func appendFrameHeader(dst []byte, e *Entry) []byte {
	start := len(dst)
	var hdr [frameHeaderSize]byte
	binary.BigEndian.PutUint32(hdr[0:], uint32(frameFixed+len(e.Extensions)+len(e.Data)))
	binary.BigEndian.PutUint64(hdr[8:], e.Index)
	binary.BigEndian.PutUint64(hdr[16:], e.Term)
	hdr[24] = byte(e.Type)
	hdr[25] = 0 // flags, reserved
	binary.BigEndian.PutUint16(hdr[26:], uint16(len(e.Extensions)))
	var at int64
	if !e.AppendedAt.IsZero() {
		at = e.AppendedAt.UnixNano()
	}
	binary.BigEndian.PutUint64(hdr[28:], uint64(at))
	dst = append(dst, hdr[:]...)
	dst = append(dst, e.Extensions...)
	crc := crc32c.Update(0, dst[start+8:])
	if e.Type == EntryBatch {
		crc = crc32c.Update(crc, e.Data[:batchCRCPrefix])
	} else {
		crc = crc32c.Update(crc, e.Data)
	}
	binary.BigEndian.PutUint32(dst[start+4:], crc)
	return dst
}

// frameCRC computes the frame checksum over the header fields after the CRC, the extensions and,
// for a batch, the first bytes that its own CRC does not cover (base offset, length, leader
// epoch, magic, and the batch CRC itself, which covers the rest); for other types the whole data.
func frameCRC(frame []byte) uint32 {
	typ := EntryType(frame[24])
	extLen := int(binary.BigEndian.Uint16(frame[26:]))
	covered := frameHeaderSize + extLen
	if typ == EntryBatch {
		covered += batchCRCPrefix
	} else {
		covered = len(frame)
	}
	if covered > len(frame) {
		covered = len(frame)
	}
	return crc32c.Checksum(frame[8:covered])
}

// parseFrameHeader decodes a frame header and checks its lengths against maxData. It does not
// check the CRC (that needs the data prefix too; see checkFrame).
func parseFrameHeader(b []byte, maxData int) (frameHeader, string) {
	var h frameHeader
	if len(b) < frameHeaderSize {
		return h, "short frame header"
	}
	h.length = binary.BigEndian.Uint32(b[0:])
	h.crc = binary.BigEndian.Uint32(b[4:])
	h.index = binary.BigEndian.Uint64(b[8:])
	h.term = binary.BigEndian.Uint64(b[16:])
	h.typ = EntryType(b[24])
	if b[25] != 0 {
		return h, "nonzero frame flags"
	}
	h.extLen = binary.BigEndian.Uint16(b[26:])
	h.appendedAt = int64(binary.BigEndian.Uint64(b[28:]))
	if int64(h.length) < frameFixed+int64(h.extLen) {
		return h, "frame length shorter than its header"
	}
	if h.dataLen() > maxData {
		return h, "frame data longer than the maximum"
	}
	if h.typ == EntryBatch && h.dataLen() < recordbatch.HeaderSize {
		return h, "batch frame shorter than a batch header"
	}
	return h, ""
}

// checkFrame verifies a whole frame held in b (len(b) == h.size()): the frame CRC, and for a
// batch its own CRC32C and structure when full is set. It returns a reason or "".
func checkFrame(h *frameHeader, b []byte, full bool, maxData int) string {
	if frameCRC(b) != h.crc {
		return "frame checksum mismatch"
	}
	if h.typ != EntryBatch || !full {
		return ""
	}
	if _, err := recordbatch.Validate(b[h.dataStart():], maxData); err != nil {
		return err.Error()
	}
	return ""
}

// batchNextOffset returns the offset after the batch in data.
func batchNextOffset(data []byte) int64 {
	base := int64(binary.BigEndian.Uint64(data[recordbatch.OffBaseOffset:]))
	delta := int32(binary.BigEndian.Uint32(data[recordbatch.OffLastOffsetDelta:]))
	return base + int64(delta) + 1
}

// batchRecordSpan returns how many offsets the batch takes (lastOffsetDelta+1).
func batchRecordSpan(data []byte) int32 {
	return int32(binary.BigEndian.Uint32(data[recordbatch.OffLastOffsetDelta:])) + 1
}

func batchBaseOffset(data []byte) int64 {
	return int64(binary.BigEndian.Uint64(data[recordbatch.OffBaseOffset:]))
}

func batchMaxTimestamp(data []byte) int64 {
	return int64(binary.BigEndian.Uint64(data[recordbatch.OffMaxTimestamp:]))
}

// segmentHeader is the first 40 bytes of a segment's log file.
type segmentHeader struct {
	baseIndex  uint64
	baseOffset int64
	createdAt  int64 // unix ms
}

func (h segmentHeader) encode() []byte {
	b := make([]byte, segmentHeaderSize)
	copy(b, segmentMagic)
	binary.BigEndian.PutUint16(b[8:], segmentVersion)
	binary.BigEndian.PutUint64(b[16:], h.baseIndex)
	binary.BigEndian.PutUint64(b[24:], uint64(h.baseOffset))
	binary.BigEndian.PutUint64(b[32:], uint64(h.createdAt))
	binary.BigEndian.PutUint32(b[12:], crc32c.Checksum(b[16:]))
	return b
}

func decodeSegmentHeader(b []byte) (segmentHeader, string) {
	var h segmentHeader
	if len(b) < segmentHeaderSize {
		return h, "short segment header"
	}
	if string(b[:8]) != segmentMagic {
		return h, "bad segment magic"
	}
	if v := binary.BigEndian.Uint16(b[8:]); v != segmentVersion {
		return h, "unknown segment version"
	}
	if binary.BigEndian.Uint32(b[12:]) != crc32c.Checksum(b[16:segmentHeaderSize]) {
		return h, "segment header checksum mismatch"
	}
	h.baseIndex = binary.BigEndian.Uint64(b[16:])
	h.baseOffset = int64(binary.BigEndian.Uint64(b[24:]))
	h.createdAt = int64(binary.BigEndian.Uint64(b[32:]))
	return h, ""
}

// checkBatchCRC verifies a batch's own CRC32C (over the bytes after its CRC field).
func checkBatchCRC(data []byte) error {
	want := binary.BigEndian.Uint32(data[recordbatch.OffCRC:])
	if got := recordbatch.ComputeCRC(data); got != want {
		return fmt.Errorf("batch crc 0x%08x, computed 0x%08x", want, got)
	}
	return nil
}
