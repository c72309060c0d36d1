package recordbatch

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand/v2"
	"testing"

	"github.com/klauspost/compress/s2"
)

var allCodecs = []Compression{CompressionNone, CompressionGzip, CompressionSnappy, CompressionLZ4, CompressionZstd}

// mixedRecords returns records exercising every field shape: keys, null
// and empty keys and values, headers with null and empty values, and
// timestamps that go backwards and negative.
func mixedRecords() []Record {
	return []Record{
		{Timestamp: 1_700_000_000_000, Key: []byte("k0"), Value: []byte("value zero")},
		{Timestamp: 1_700_000_000_005, Key: nil, Value: []byte("null key")},
		{Timestamp: 1_699_999_999_000, Key: []byte("k2"), Value: nil}, // earlier than base, null value (tombstone)
		{Timestamp: 1_700_000_000_010, Key: []byte{}, Value: []byte{}},
		{Timestamp: 1_700_000_000_010, Key: []byte("k4"), Value: bytes.Repeat([]byte("x"), 300),
			Headers: []RecordHeader{{Key: "trace", Value: []byte("abc")}, {Key: "null", Value: nil}, {Key: "", Value: []byte{}}}},
		{Timestamp: -5, Key: []byte("neg"), Value: []byte("negative timestamp"), Attributes: 0},
		{Timestamp: 1_700_000_100_000, Key: bytes.Repeat([]byte{0xff}, 200), Value: bytes.Repeat([]byte{0}, 5000),
			Headers: []RecordHeader{{Key: "h", Value: bytes.Repeat([]byte{1}, 130)}}},
	}
}

// sizedRecords returns n records with values of size bytes.
func sizedRecords(n, size int) []Record {
	rng := rand.New(rand.NewPCG(1, 2))
	recs := make([]Record, n)
	for i := range recs {
		v := make([]byte, size)
		for j := range v {
			v[j] = byte('a' + rng.IntN(8)) // compressible-ish
		}
		recs[i] = Record{Timestamp: 1_700_000_000_000 + int64(i), Key: fmt.Appendf(nil, "key-%d", i), Value: v}
	}
	return recs
}

func build(t testing.TB, opts BuilderOptions, recs []Record) []byte {
	t.Helper()
	b := NewBuilder(opts)
	for _, r := range recs {
		b.Add(r)
	}
	out, err := b.Build()
	if err != nil {
		t.Fatalf("Build: %v", err)
	}
	return out
}

// sameRecords compares decoded records with the input, expecting Offset
// baseOffset+i. Nil and empty slices must match exactly.
func sameRecords(t testing.TB, got, want []Record, baseOffset int64) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("got %d records, want %d", len(got), len(want))
	}
	for i := range want {
		g, w := got[i], want[i]
		if g.Offset != baseOffset+int64(i) {
			t.Errorf("record %d: offset %d, want %d", i, g.Offset, baseOffset+int64(i))
		}
		if g.Timestamp != w.Timestamp {
			t.Errorf("record %d: timestamp %d, want %d", i, g.Timestamp, w.Timestamp)
		}
		if g.Attributes != w.Attributes {
			t.Errorf("record %d: attributes %d, want %d", i, g.Attributes, w.Attributes)
		}
		if !sameNullable(g.Key, w.Key) {
			t.Errorf("record %d: key %q (nil=%v), want %q (nil=%v)", i, g.Key, g.Key == nil, w.Key, w.Key == nil)
		}
		if !sameNullable(g.Value, w.Value) {
			t.Errorf("record %d: value len %d (nil=%v), want len %d (nil=%v)", i, len(g.Value), g.Value == nil, len(w.Value), w.Value == nil)
		}
		if len(g.Headers) != len(w.Headers) {
			t.Fatalf("record %d: %d headers, want %d", i, len(g.Headers), len(w.Headers))
		}
		for j := range w.Headers {
			if g.Headers[j].Key != w.Headers[j].Key || !sameNullable(g.Headers[j].Value, w.Headers[j].Value) {
				t.Errorf("record %d header %d: %q=%q, want %q=%q", i, j, g.Headers[j].Key, g.Headers[j].Value, w.Headers[j].Key, w.Headers[j].Value)
			}
		}
	}
}

func sameNullable(a, b []byte) bool { return (a == nil) == (b == nil) && bytes.Equal(a, b) }

// cloneRecord deep-copies r (ForEachRecord's records are only valid during
// the callback).
func cloneRecord(r *Record) Record {
	c := *r
	c.Key = cloneNullable(r.Key)
	c.Value = cloneNullable(r.Value)
	c.Headers = nil
	for _, h := range r.Headers {
		c.Headers = append(c.Headers, RecordHeader{Key: string([]byte(h.Key)), Value: cloneNullable(h.Value)})
	}
	return c
}

func cloneNullable(b []byte) []byte {
	if b == nil {
		return nil
	}
	return append([]byte{}, b...)
}

func forEachCollect(t testing.TB, d Decoder, b []byte) ([]Record, error) {
	t.Helper()
	var out []Record
	err := d.ForEachRecord(b, func(r *Record) error {
		out = append(out, cloneRecord(r))
		return nil
	})
	return out, err
}

// fixCRC recomputes the CRC of a (mutated) batch.
func fixCRC(b []byte) { be.PutUint32(b[OffCRC:], ComputeCRC(b)) }

// wantKind fails unless err wraps both kind and ErrInvalid.
func wantKind(t testing.TB, err, kind error) {
	t.Helper()
	if err == nil {
		t.Fatalf("got nil error, want %v", kind)
	}
	if !errors.Is(err, kind) || !errors.Is(err, ErrInvalid) {
		t.Fatalf("got %v, want errors.Is %v and ErrInvalid", err, kind)
	}
}

// rawBatch assembles a batch around hand-encoded records with correct
// length and CRC; count and lastOffsetDelta are written as given.
func rawBatch(codec Compression, count, lastOffsetDelta int32, records []byte) []byte {
	b := make([]byte, HeaderSize, HeaderSize+len(records))
	be.PutUint32(b[OffBatchLength:], uint32(HeaderSize-LogOverhead+len(records)))
	be.PutUint32(b[OffLeaderEpoch:], 0xffffffff)
	b[OffMagic] = Magic
	be.PutUint16(b[OffAttributes:], uint16(codec))
	be.PutUint32(b[OffLastOffsetDelta:], uint32(lastOffsetDelta))
	be.PutUint64(b[OffBaseTimestamp:], 1000)
	be.PutUint64(b[OffMaxTimestamp:], 1000)
	be.PutUint64(b[OffProducerID:], 0xffffffffffffffff)
	be.PutUint16(b[OffProducerEpoch:], 0xffff)
	be.PutUint32(b[OffBaseSequence:], 0xffffffff)
	be.PutUint32(b[OffRecordCount:], uint32(count))
	b = append(b, records...)
	fixCRC(b)
	return b
}

// rawRecordBytes hand-encodes one record with the given offsetDelta.
func rawRecordBytes(offDelta int32, key, value []byte) []byte {
	var body []byte
	body = append(body, 0)              // attributes
	body = appendVarlong(body, 0)       // timestampDelta
	body = appendVarint(body, offDelta) // offsetDelta
	body = appendNullable(body, key)
	body = appendNullable(body, value)
	body = appendVarint(body, 0) // headers
	return append(appendVarint(nil, int32(len(body))), body...)
}

// s2EncodeSnappy encodes one raw (unframed) snappy block.
func s2EncodeSnappy(b []byte) []byte { return s2.EncodeSnappy(nil, b) }
