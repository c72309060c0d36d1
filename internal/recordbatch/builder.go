package recordbatch

import (
	"errors"
	"math"
	"slices"
)

// BuilderOptions configures a Builder.
type BuilderOptions struct {
	// Compression is the codec for the records (CompressionNone..Zstd).
	Compression Compression
	// CompressionLevel is passed to the codec (gzip 1-9, lz4 levels,
	// zstd levels as in the zstd CLI); 0 means the codec's default.
	// Ignored for none and snappy; an invalid level falls back to the
	// default.
	CompressionLevel int

	// Idempotent must be set for ProducerID, ProducerEpoch and
	// BaseSequence to be written. Without it the batch carries -1/-1/-1,
	// as a non-idempotent producer's batches do (note that 0 is a valid
	// producer id, so the zero values cannot mean "none").
	Idempotent    bool
	ProducerID    int64
	ProducerEpoch int16
	BaseSequence  int32

	// Transactional sets the transactional attribute bit; it requires
	// Idempotent.
	Transactional bool
	// Control sets the control attribute bit (transaction markers, written
	// by brokers, never by clients).
	Control bool
}

// Builder accumulates records and encodes them into one batch. It is not
// safe for concurrent use. Reset (or ResetWith) makes it reusable without
// reallocating its buffers.
//
// The batch's baseOffset is 0 (the broker assigns offsets with
// SetBaseOffset), partitionLeaderEpoch is -1, the timestamp type is
// CreateTime, baseTimestamp is the first record's timestamp and
// maxTimestamp the largest record timestamp; record i gets offsetDelta i.
type Builder struct {
	opts    BuilderOptions
	recs    []byte // encoded records, uncompressed
	comp    []byte // scratch for the compressed records
	n       int    // records added
	baseTS  int64
	maxTS   int64
	tooLong bool // a record did not fit in a varint length
}

// NewBuilder returns an empty Builder.
func NewBuilder(opts BuilderOptions) *Builder {
	return &Builder{opts: opts}
}

// Reset empties the builder, keeping its options and buffers.
func (b *Builder) Reset() {
	b.recs = b.recs[:0]
	b.n = 0
	b.baseTS, b.maxTS = 0, 0
	b.tooLong = false
}

// ResetWith empties the builder and replaces its options (an idempotent
// producer's next BaseSequence, say), keeping its buffers.
func (b *Builder) ResetWith(opts BuilderOptions) {
	b.Reset()
	b.opts = opts
}

// Len returns the number of records added since the last Reset.
func (b *Builder) Len() int { return b.n }

// EstimatedSize returns the size of the batch Build would return without
// compression: HeaderSize plus the encoded records. With compression it is
// an upper estimate (barring incompressible data, which codecs grow by a
// fraction of a percent).
func (b *Builder) EstimatedSize() int { return HeaderSize + len(b.recs) }

// nullableSize is the encoded size of a nullable byte string.
func nullableSize(v []byte) int {
	if v == nil {
		return 1
	}
	return sizeVarint(int32(len(v))) + len(v)
}

func appendNullable(dst, v []byte) []byte {
	if v == nil {
		return append(dst, 1) // zigzag(-1)
	}
	dst = appendVarint(dst, int32(len(v)))
	return append(dst, v...)
}

// Add appends a record. r.Timestamp is unix milliseconds; r.Offset is
// ignored. Add copies what it needs: r may be reused once it returns.
func (b *Builder) Add(r Record) {
	if b.n == 0 {
		b.baseTS, b.maxTS = r.Timestamp, r.Timestamp
	} else if r.Timestamp > b.maxTS {
		b.maxTS = r.Timestamp
	}
	tsDelta := r.Timestamp - b.baseTS
	offDelta := int32(b.n)

	body := 1 + sizeVarlong(tsDelta) + sizeVarint(offDelta) +
		nullableSize(r.Key) + nullableSize(r.Value) + sizeVarint(int32(len(r.Headers)))
	for i := range r.Headers {
		h := &r.Headers[i]
		body += sizeVarint(int32(len(h.Key))) + len(h.Key) + nullableSize(h.Value)
	}
	if body > math.MaxInt32 || len(r.Key) > math.MaxInt32 || len(r.Value) > math.MaxInt32 {
		b.tooLong = true
		return
	}
	b.recs = slices.Grow(b.recs, sizeVarint(int32(body))+body)
	p := b.recs
	p = appendVarint(p, int32(body))
	p = append(p, byte(r.Attributes))
	p = appendVarlong(p, tsDelta)
	p = appendVarint(p, offDelta)
	p = appendNullable(p, r.Key)
	p = appendNullable(p, r.Value)
	p = appendVarint(p, int32(len(r.Headers)))
	for i := range r.Headers {
		h := &r.Headers[i]
		p = appendVarint(p, int32(len(h.Key)))
		p = append(p, h.Key...)
		p = appendNullable(p, h.Value)
	}
	b.recs = p
	b.n++
}

// Build returns the finished batch in a newly allocated slice that the
// caller owns; the builder keeps its records (call Reset to start the next
// batch). It fails if no record was added, the batch would exceed the
// int32 batchLength, or Transactional is set without Idempotent.
func (b *Builder) Build() ([]byte, error) {
	if err := b.check(); err != nil {
		return nil, err
	}
	payload, err := b.payload()
	if err != nil {
		return nil, err
	}
	return b.appendBatch(make([]byte, 0, HeaderSize+len(payload)), payload)
}

// AppendTo is Build appending the batch to dst instead of allocating; with
// enough capacity in dst an uncompressed build allocates nothing.
func (b *Builder) AppendTo(dst []byte) ([]byte, error) {
	if err := b.check(); err != nil {
		return dst, err
	}
	payload, err := b.payload()
	if err != nil {
		return dst, err
	}
	return b.appendBatch(dst, payload)
}

func (b *Builder) check() error {
	switch {
	case b.n == 0:
		return errors.New("recordbatch: Build with no records")
	case b.tooLong:
		return errors.New("recordbatch: a record exceeds 2 GiB")
	case b.opts.Transactional && !b.opts.Idempotent:
		return errors.New("recordbatch: Transactional requires Idempotent")
	case b.n > math.MaxInt32:
		return errors.New("recordbatch: too many records")
	case !b.opts.Compression.Valid():
		return errors.New("recordbatch: unknown compression codec")
	}
	return nil
}

// payload returns the records region, compressed if configured.
func (b *Builder) payload() ([]byte, error) {
	if b.opts.Compression == CompressionNone {
		return b.recs, nil
	}
	comp, err := compress(b.comp[:0], b.opts.Compression, b.opts.CompressionLevel, b.recs)
	if err != nil {
		return nil, err
	}
	b.comp = comp
	return comp, nil
}

func (b *Builder) appendBatch(dst, payload []byte) ([]byte, error) {
	total := HeaderSize + len(payload)
	if int64(total)-LogOverhead > math.MaxInt32 {
		return dst, errors.New("recordbatch: batch exceeds 2 GiB")
	}
	at := len(dst)
	dst = slices.Grow(dst, total)
	dst = dst[:at+total]
	out := dst[at:]

	attrs := uint16(b.opts.Compression)
	if b.opts.Transactional {
		attrs |= AttrTransactional
	}
	if b.opts.Control {
		attrs |= AttrControl
	}
	pid, epoch, seq := int64(-1), int16(-1), int32(-1)
	if b.opts.Idempotent {
		pid, epoch, seq = b.opts.ProducerID, b.opts.ProducerEpoch, b.opts.BaseSequence
	}
	be.PutUint64(out[OffBaseOffset:], 0)
	be.PutUint32(out[OffBatchLength:], uint32(total-LogOverhead))
	be.PutUint32(out[OffLeaderEpoch:], math.MaxUint32) // -1
	out[OffMagic] = Magic
	be.PutUint16(out[OffAttributes:], attrs)
	be.PutUint32(out[OffLastOffsetDelta:], uint32(b.n-1))
	be.PutUint64(out[OffBaseTimestamp:], uint64(b.baseTS))
	be.PutUint64(out[OffMaxTimestamp:], uint64(b.maxTS))
	be.PutUint64(out[OffProducerID:], uint64(pid))
	be.PutUint16(out[OffProducerEpoch:], uint16(epoch))
	be.PutUint32(out[OffBaseSequence:], uint32(seq))
	be.PutUint32(out[OffRecordCount:], uint32(b.n))
	copy(out[HeaderSize:], payload)
	be.PutUint32(out[OffCRC:], ComputeCRC(out))
	return dst, nil
}
