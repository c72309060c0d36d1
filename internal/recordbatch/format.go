package recordbatch

import (
	"encoding/binary"

	"github.com/runnel-io/runnel/internal/crc32c"
)

// Sizes and the version this package speaks.
const (
	// HeaderSize is the size of the fixed batch header, up to and including
	// the records count; the records start here.
	HeaderSize = 61
	// LogOverhead is the number of bytes not counted by batchLength: the
	// baseOffset and batchLength fields themselves. A batch's total size is
	// batchLength + LogOverhead.
	LogOverhead = 12
	// Magic is the only magic byte (message format version) supported.
	Magic = 2
	// MinRecordSize is the smallest possible encoded record: a one byte
	// length varint and a six byte body (attributes, timestampDelta,
	// offsetDelta, keyLength, valueLength, headers count).
	MinRecordSize = 7
)

// Byte offsets of the header fields (big-endian).
const (
	OffBaseOffset      = 0  // int64
	OffBatchLength     = 8  // int32, bytes after this field (total - 12)
	OffLeaderEpoch     = 12 // int32 partitionLeaderEpoch, outside the CRC
	OffMagic           = 16 // int8
	OffCRC             = 17 // uint32, CRC32C of bytes [OffAttributes:end]
	OffAttributes      = 21 // int16
	OffLastOffsetDelta = 23 // int32
	OffBaseTimestamp   = 27 // int64
	OffMaxTimestamp    = 35 // int64
	OffProducerID      = 43 // int64
	OffProducerEpoch   = 51 // int16
	OffBaseSequence    = 53 // int32
	OffRecordCount     = 57 // int32
	OffRecords         = 61 // first record (== HeaderSize)
)

// Attribute bits of the batch header's attributes field.
const (
	AttrCompressionMask = 0x07 // bits 0-2: the Compression codec
	AttrTimestampType   = 0x08 // bit 3: 0 CreateTime, 1 LogAppendTime
	AttrTransactional   = 0x10 // bit 4: batch belongs to a transaction
	AttrControl         = 0x20 // bit 5: batch holds control records
	// AttrDeleteHorizon (bit 6, KIP-534) is set by the log cleaner on
	// compacted batches whose baseTimestamp holds the delete horizon. This
	// package passes it through untouched.
	AttrDeleteHorizon = 0x40
)

// Compression is a batch compression codec (attributes bits 0-2).
type Compression int8

// The codecs Kafka defines. Values 5-7 are invalid.
const (
	CompressionNone   Compression = 0
	CompressionGzip   Compression = 1
	CompressionSnappy Compression = 2
	CompressionLZ4    Compression = 3
	CompressionZstd   Compression = 4
)

// String returns the Kafka name of the codec ("none", "gzip", ...).
func (c Compression) String() string {
	switch c {
	case CompressionNone:
		return "none"
	case CompressionGzip:
		return "gzip"
	case CompressionSnappy:
		return "snappy"
	case CompressionLZ4:
		return "lz4"
	case CompressionZstd:
		return "zstd"
	}
	return "unknown"
}

// Valid reports whether c is one of the five defined codecs.
func (c Compression) Valid() bool { return c >= CompressionNone && c <= CompressionZstd }

// TimestampType is the batch timestamp type (attributes bit 3).
type TimestampType int8

const (
	// CreateTime: record timestamps are baseTimestamp + timestampDelta, as
	// set by the producer.
	CreateTime TimestampType = 0
	// LogAppendTime: the broker's append time, stored in maxTimestamp,
	// is the timestamp of every record.
	LogAppendTime TimestampType = 1
)

// String returns "CreateTime" or "LogAppendTime".
func (t TimestampType) String() string {
	if t == LogAppendTime {
		return "LogAppendTime"
	}
	return "CreateTime"
}

// Header is the decoded fixed part of a batch.
type Header struct {
	BaseOffset           int64
	BatchLength          int32
	PartitionLeaderEpoch int32
	Magic                int8
	CRC                  uint32
	Attributes           int16
	LastOffsetDelta      int32
	BaseTimestamp        int64
	MaxTimestamp         int64
	ProducerID           int64
	ProducerEpoch        int16
	BaseSequence         int32
	NumRecords           int32
}

// Compression returns the codec from attributes bits 0-2 (possibly an
// invalid value 5-7; see Compression.Valid).
func (h Header) Compression() Compression { return Compression(h.Attributes & AttrCompressionMask) }

// IsControl reports whether the batch holds control records (transaction
// markers).
func (h Header) IsControl() bool { return h.Attributes&AttrControl != 0 }

// IsTransactional reports whether the batch is part of a transaction.
func (h Header) IsTransactional() bool { return h.Attributes&AttrTransactional != 0 }

// TimestampType returns CreateTime or LogAppendTime.
func (h Header) TimestampType() TimestampType {
	if h.Attributes&AttrTimestampType != 0 {
		return LogAppendTime
	}
	return CreateTime
}

// Size is the total size of the batch in bytes: BatchLength + 12.
func (h Header) Size() int { return int(h.BatchLength) + LogOverhead }

// LastOffset is the offset of the batch's last record: BaseOffset +
// LastOffsetDelta.
func (h Header) LastOffset() int64 { return h.BaseOffset + int64(h.LastOffsetDelta) }

// NextOffset is the offset following the batch: BaseOffset +
// LastOffsetDelta + 1.
func (h Header) NextOffset() int64 { return h.BaseOffset + int64(h.LastOffsetDelta) + 1 }

var be = binary.BigEndian

// ParseHeader decodes the fixed header at the start of b. It needs at least
// HeaderSize bytes (else ErrTruncated) and checks nothing else: not the
// magic, the length, nor the CRC. Use Validate for that.
func ParseHeader(b []byte) (Header, error) {
	if len(b) < HeaderSize {
		return Header{}, newErr(ErrTruncated, "header needs %d bytes, have %d", HeaderSize, int64(len(b)))
	}
	return parseHeader(b), nil
}

// parseHeader decodes the header; len(b) >= HeaderSize.
func parseHeader(b []byte) Header {
	_ = b[HeaderSize-1]
	return Header{
		BaseOffset:           int64(be.Uint64(b[OffBaseOffset:])),
		BatchLength:          int32(be.Uint32(b[OffBatchLength:])),
		PartitionLeaderEpoch: int32(be.Uint32(b[OffLeaderEpoch:])),
		Magic:                int8(b[OffMagic]),
		CRC:                  be.Uint32(b[OffCRC:]),
		Attributes:           int16(be.Uint16(b[OffAttributes:])),
		LastOffsetDelta:      int32(be.Uint32(b[OffLastOffsetDelta:])),
		BaseTimestamp:        int64(be.Uint64(b[OffBaseTimestamp:])),
		MaxTimestamp:         int64(be.Uint64(b[OffMaxTimestamp:])),
		ProducerID:           int64(be.Uint64(b[OffProducerID:])),
		ProducerEpoch:        int16(be.Uint16(b[OffProducerEpoch:])),
		BaseSequence:         int32(be.Uint32(b[OffBaseSequence:])),
		NumRecords:           int32(be.Uint32(b[OffRecordCount:])),
	}
}

// Size returns the total size of the batch starting at b[0], read from its
// batchLength field; b may hold more (following batches) or less (a partial
// read) than that. It needs at least 12 bytes (else ErrTruncated) and
// refuses a length field below a header's size (ErrBadLength) or a total
// above max (ErrTooLarge) before the caller allocates or reads anything
// for it. It does not look past byte 12.
func Size(b []byte, max int) (int, error) {
	if len(b) < LogOverhead {
		return 0, newErr(ErrTruncated, "batch length field needs %d bytes, have %d", LogOverhead, int64(len(b)))
	}
	l := int64(int32(be.Uint32(b[OffBatchLength:])))
	if l < HeaderSize-LogOverhead {
		return 0, newErr(ErrBadLength, "batchLength %d below minimum %d", l, HeaderSize-LogOverhead)
	}
	total := l + LogOverhead
	if total > int64(max) {
		return 0, newErr(ErrTooLarge, "batch size %d exceeds max %d", total, int64(max))
	}
	return int(total), nil
}

// Next splits the first batch off b, as when walking a produce request's
// records field, a fetch response or a log segment: batch is b[:Size],
// rest what follows. It returns ErrTruncated when b holds less than the
// whole first batch, and the errors of Size. It does not validate batch.
func Next(b []byte, max int) (batch, rest []byte, err error) {
	n, err := Size(b, max)
	if err != nil {
		return nil, b, err
	}
	if n > len(b) {
		return nil, b, newErr(ErrTruncated, "batch size %d, have %d bytes", int64(n), int64(len(b)))
	}
	return b[:n:n], b[n:], nil
}

// SetBaseOffset overwrites the baseOffset field. It lies outside the CRC,
// so the batch stays valid. b must hold at least 8 bytes.
func SetBaseOffset(b []byte, off int64) { be.PutUint64(b[OffBaseOffset:], uint64(off)) }

// SetPartitionLeaderEpoch overwrites the partitionLeaderEpoch field. It lies
// outside the CRC, so the batch stays valid. b must hold at least 16 bytes.
func SetPartitionLeaderEpoch(b []byte, e int32) { be.PutUint32(b[OffLeaderEpoch:], uint32(e)) }

// SetMaxTimestamp sets the timestamp type bit and the maxTimestamp field and
// recomputes the CRC, as Kafka's broker does on append (with LogAppendTime
// and the broker's clock, or with CreateTime and the largest record
// timestamp). b must be a whole batch (len(b) >= HeaderSize); the CRC pass
// makes this O(len(b)).
func SetMaxTimestamp(b []byte, typ TimestampType, ts int64) {
	attrs := be.Uint16(b[OffAttributes:]) &^ AttrTimestampType
	if typ == LogAppendTime {
		attrs |= AttrTimestampType
	}
	be.PutUint16(b[OffAttributes:], attrs)
	be.PutUint64(b[OffMaxTimestamp:], uint64(ts))
	be.PutUint32(b[OffCRC:], ComputeCRC(b))
}

// ComputeCRC returns the CRC32C (Castagnoli) of b[OffAttributes:], the
// value the crc field of the batch b should hold. len(b) must be at least
// OffAttributes.
func ComputeCRC(b []byte) uint32 { return crc32c.Checksum(b[OffAttributes:]) }
