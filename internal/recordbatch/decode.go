package recordbatch

import (
	"math"
	"sync"
	"unsafe"
)

// Record is one decoded record, or one to add to a Builder.
type Record struct {
	// Offset is BaseOffset + offsetDelta when decoded; the Builder ignores
	// it (offsetDelta is the record's index in the batch).
	Offset int64
	// Timestamp in unix milliseconds: baseTimestamp + timestampDelta for
	// CreateTime batches, maxTimestamp for LogAppendTime batches.
	Timestamp int64
	// Key and Value; nil encodes and decodes as null (length -1), an empty
	// non-nil slice as length 0.
	Key, Value []byte
	// Headers in order; a header Value may be nil (null).
	Headers []RecordHeader
	// Attributes is the record attributes byte, unused by Kafka (0).
	Attributes int8
}

// RecordHeader is one record header. Kafka does not allow a null key.
type RecordHeader struct {
	Key   string
	Value []byte
}

// Decoder decodes batches. The zero value is ready and bounds decompressed
// payloads at DefaultMaxDecompressed; the package functions Records and
// ForEachRecord use a zero Decoder.
type Decoder struct {
	// MaxDecompressed bounds the decompressed size of a compressed
	// batch's records; larger payloads fail with ErrTooLarge, and no
	// buffer beyond the bound (plus one byte) is allocated. <= 0 means
	// DefaultMaxDecompressed; values above math.MaxInt32 are clamped.
	MaxDecompressed int
}

func (d Decoder) limit() int {
	switch {
	case d.MaxDecompressed <= 0:
		return DefaultMaxDecompressed
	case int64(d.MaxDecompressed) > math.MaxInt32:
		return math.MaxInt32
	}
	return d.MaxDecompressed
}

// Records decodes every record of the batch b with a zero Decoder.
func Records(b []byte) ([]Record, error) { return Decoder{}.Records(b) }

// ForEachRecord calls fn for every record of the batch b with a zero
// Decoder.
func ForEachRecord(b []byte, fn func(r *Record) error) error {
	return Decoder{}.ForEachRecord(b, fn)
}

// decodeSetup checks the batch and returns its header, the records region
// (decompressed into buf if needed) and where the first record starts.
func (d Decoder) decodeSetup(b []byte, buf []byte) (h Header, data []byte, start int, err error) {
	if h, err = checkBatch(b, math.MaxInt); err != nil {
		return h, nil, 0, err
	}
	if h.NumRecords < 0 {
		return h, nil, 0, newErr(ErrBadRecordCount, "records count %d", int64(h.NumRecords))
	}
	if c := h.Compression(); c != CompressionNone {
		data, err = decompress(buf, c, b[HeaderSize:], d.limit())
		return h, data, 0, err
	}
	return h, b, HeaderSize, nil
}

// Records decodes every record of the batch b. It checks what Validate
// checks up to the CRC, then decodes exactly NumRecords records, which
// must fill the (decompressed) records region exactly; each record's
// framing is checked as in Validate. Unlike Validate it accepts what a
// compacted log holds: a records count of 0, gaps in offsetDelta, and a
// lastOffsetDelta beyond the last record.
//
// Keys, values and header values alias b for uncompressed batches (copy
// them before reusing b) and a fresh buffer owned by the records for
// compressed ones. Header keys are copied into strings.
func (d Decoder) Records(b []byte) ([]Record, error) {
	h, data, p, err := d.decodeSetup(b, nil)
	if err != nil {
		return nil, err
	}
	n := min(int(h.NumRecords), (len(data)-p)/MinRecordSize)
	recs := make([]Record, 0, n)
	var hdrs []RecordHeader // shared backing store for all records' headers
	var raw rawRecord
	err = walkRecords(&h, data, p, &raw, func(raw *rawRecord, i int) error {
		recs = append(recs, Record{})
		r := &recs[len(recs)-1]
		fillRecord(r, &h, data, raw)
		if raw.numHeaders > 0 {
			if hdrs == nil {
				hdrs = make([]RecordHeader, 0, max(raw.numHeaders, 8))
			}
			at := len(hdrs)
			q := raw.hdrOff
			for j := 0; j < raw.numHeaders; j++ {
				var k, v []byte
				k, v, q = nextHeader(data, q)
				hdrs = append(hdrs, RecordHeader{Key: string(k), Value: v})
			}
			r.Headers = hdrs[at:len(hdrs):len(hdrs)]
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return recs, nil
}

// decompBufs holds ForEachRecord's decompression buffers.
var decompBufs = sync.Pool{New: func() any { return new([]byte) }}

// iterState is ForEachRecord's reusable record and headers buffer, pooled
// so that handing &r to fn costs no allocation.
type iterState struct {
	raw  rawRecord
	r    Record
	hdrs []RecordHeader
}

var iterStates = sync.Pool{New: func() any { return new(iterState) }}

// ForEachRecord calls fn for each record of the batch b, in order, with
// the same checks as Records, stopping at and returning the first error fn
// returns (unwrapped). Records are checked as they are reached, so fn may
// have seen the records before a malformed one when ForEachRecord returns
// its error; use Records, or Validate first, for all-or-nothing. It does
// not allocate for uncompressed batches; compressed ones are decompressed
// into a pooled buffer.
//
// r, and everything it refers to, is only valid until fn returns: r is
// reused, r.Headers is reused, keys and values alias b or the pooled
// buffer, and header keys are strings that alias that memory too (no
// copy). Copy what you keep (bytes.Clone, strings.Clone), and never keep a
// header key (say, as a map key) without cloning it.
func (d Decoder) ForEachRecord(b []byte, fn func(r *Record) error) error {
	var bufp *[]byte
	var buf []byte
	if len(b) >= HeaderSize && b[OffAttributes+1]&AttrCompressionMask != 0 {
		bufp = decompBufs.Get().(*[]byte)
		buf = *bufp
	}
	h, data, p, err := d.decodeSetup(b, buf)
	if bufp != nil {
		if err == nil && cap(data) <= 4<<20 { // do not pin huge buffers
			*bufp = data[:0]
		}
		defer decompBufs.Put(bufp)
	}
	if err != nil {
		return err
	}
	st := iterStates.Get().(*iterState)
	err = walkRecords(&h, data, p, &st.raw, func(raw *rawRecord, i int) error {
		st.r = Record{}
		fillRecord(&st.r, &h, data, raw)
		if raw.numHeaders > 0 {
			hs := st.hdrs[:0]
			q := raw.hdrOff
			for j := 0; j < raw.numHeaders; j++ {
				var k, v []byte
				k, v, q = nextHeader(data, q)
				hs = append(hs, RecordHeader{Key: unsafe.String(unsafe.SliceData(k), len(k)), Value: v})
			}
			st.hdrs = hs
			st.r.Headers = hs
		}
		return fn(&st.r)
	})
	// Drop references into b and the decompression buffer before pooling.
	clear(st.hdrs[:cap(st.hdrs)])
	st.hdrs = st.hdrs[:0]
	st.r = Record{}
	iterStates.Put(st)
	return err
}

// walkRecords parses count records of data starting at p, calling visit
// for each (stopping at its first error), and checks that they end
// exactly at len(data).
// raw is caller-provided scratch (visit receives it), so that callers can
// keep it off the heap.
func walkRecords(h *Header, data []byte, p int, raw *rawRecord, visit func(raw *rawRecord, i int) error) error {
	count := int(h.NumRecords)
	for i := 0; i < count; i++ {
		if p == len(data) {
			return newErr(ErrBadRecordCount, "records count %d, batch holds %d records", int64(count), int64(i))
		}
		if err := readRecord(data, p, i, raw); err != nil {
			return err
		}
		if err := visit(raw, i); err != nil {
			return err
		}
		p = raw.end
	}
	if p != len(data) {
		return newErr(ErrBadRecordCount, "records count %d, but %d bytes follow the last record", int64(count), int64(len(data)-p))
	}
	return nil
}

// fillRecord sets r's scalar fields, key and value from raw.
func fillRecord(r *Record, h *Header, data []byte, raw *rawRecord) {
	r.Offset = h.BaseOffset + int64(raw.offDelta)
	if h.Attributes&AttrTimestampType != 0 {
		r.Timestamp = h.MaxTimestamp
	} else {
		r.Timestamp = h.BaseTimestamp + raw.tsDelta
	}
	r.Attributes = raw.attrs
	if raw.keyLen >= 0 {
		r.Key = data[raw.keyOff : raw.keyOff+raw.keyLen : raw.keyOff+raw.keyLen]
	}
	if raw.valLen >= 0 {
		r.Value = data[raw.valOff : raw.valOff+raw.valLen : raw.valOff+raw.valLen]
	}
}

// nextHeader decodes the header at data[q:], which readRecord has already
// checked, and returns its key, value (nil if null) and the next position.
func nextHeader(data []byte, q int) (k, v []byte, next int) {
	kl, q := readVarint(data, q)
	k = data[q : q+int(kl) : q+int(kl)]
	q += int(kl)
	vl, q := readVarint(data, q)
	if vl >= 0 {
		v = data[q : q+int(vl) : q+int(vl)]
		q += int(vl)
	}
	return k, v, q
}
