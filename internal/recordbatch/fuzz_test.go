package recordbatch

import (
	"bytes"
	"encoding/binary"
	"errors"
	"math"
	"runtime/metrics"
	"testing"
)

// fuzzMaxDecompressed is the decompression cap used by the fuzz targets.
const fuzzMaxDecompressed = 1 << 20

// seedBatches returns valid batches of every codec plus a few odd shapes.
func seedBatches(t testing.TB) [][]byte {
	var out [][]byte
	for _, codec := range allCodecs {
		out = append(out,
			build(t, BuilderOptions{Compression: codec}, mixedRecords()),
			build(t, BuilderOptions{Compression: codec}, sizedRecords(3, 20)),
			build(t, BuilderOptions{Compression: codec, Idempotent: true, ProducerID: 1, Transactional: true},
				[]Record{{Timestamp: 1, Key: []byte("k"), Headers: []RecordHeader{{Key: "h", Value: nil}}}}),
		)
	}
	out = append(out,
		rawBatch(CompressionNone, 0, 0, nil),
		rawBatch(CompressionNone, 3, 2, bytes.Join([][]byte{
			rawRecordBytes(0, nil, nil), rawRecordBytes(2, []byte("a"), nil), rawRecordBytes(1, nil, []byte("b"))}, nil)),
	)
	// A zstd bomb: 2 MiB of zeros.
	out = append(out, build(t, BuilderOptions{Compression: CompressionZstd}, []Record{{Value: make([]byte, 2<<20)}}))
	return out
}

// FuzzDecodeBatch feeds arbitrary bytes to Validate, Records and
// ForEachRecord. With fix set, the length field and CRC are repaired first
// so that mutations reach the record and codec parsers. Properties: no
// panic; every error is ErrInvalid; if Validate accepts an uncompressed
// batch, Records and ForEachRecord decode exactly NumRecords records with
// offsets BaseOffset+i; whenever Records succeeds it yields NumRecords
// records; memory stays bounded by the decompression cap.
func FuzzDecodeBatch(f *testing.F) {
	for _, b := range seedBatches(f) {
		f.Add(b, false)
		f.Add(b, true)
		// Mutations: truncated, a flipped byte in the records, a bad count.
		f.Add(b[:len(b)/2], false)
		f.Add(b[:len(b)-1], true)
		m := append([]byte{}, b...)
		m[len(m)-3] ^= 0x40
		f.Add(m, false)
		f.Add(m, true)
		m = append([]byte{}, b...)
		binary.BigEndian.PutUint32(m[OffRecordCount:], 1000)
		f.Add(m, true)
	}
	f.Add([]byte{}, false)
	f.Add(make([]byte, 12), false)
	f.Fuzz(func(t *testing.T, data []byte, fix bool) {
		if fix && len(data) >= HeaderSize {
			binary.BigEndian.PutUint32(data[OffBatchLength:], uint32(len(data)-LogOverhead))
			data[OffMagic] = Magic
			fixCRC(data)
		}
		before := heapAllocBytes()
		checkConsistent(t, data, Decoder{MaxDecompressed: fuzzMaxDecompressed})
		after := heapAllocBytes()
		// Records and ForEachRecord each decompress at most once into at
		// most cap+1 bytes (doubling growth may leave ~2x of garbage), and
		// hold at most one Record per 7 input bytes. Codec state (zstd
		// decoder windows, lz4 block buffers) is pooled, but a pool may be
		// refilled. The bound is generous but far below what an unbounded
		// decoder would allocate for the seed bomb.
		bound := uint64(8*fuzzMaxDecompressed + 64*len(data) + 16<<20)
		if got := after - before; got > bound {
			t.Fatalf("allocated %d bytes for a %d byte input (bound %d)", got, len(data), bound)
		}
	})
}

// heapAllocBytes returns the cumulative bytes allocated on the heap. Unlike
// runtime.ReadMemStats it does not stop the world, which keeps the fuzz
// targets fast.
func heapAllocBytes() uint64 {
	s := []metrics.Sample{{Name: "/gc/heap/allocs:bytes"}}
	metrics.Read(s)
	return s[0].Value.Uint64()
}

// fuzzReader derives values from fuzz input; it yields zeros once
// exhausted.
type fuzzReader struct{ b []byte }

func (r *fuzzReader) byte() byte {
	if len(r.b) == 0 {
		return 0
	}
	c := r.b[0]
	r.b = r.b[1:]
	return c
}

func (r *fuzzReader) int64() int64 {
	var x uint64
	for i := 0; i < 8; i++ {
		x = x<<8 | uint64(r.byte())
	}
	return int64(x)
}

func (r *fuzzReader) bytes(n int) []byte {
	n = min(n, len(r.b))
	out := append([]byte{}, r.b[:n]...) // never nil
	r.b = r.b[n:]
	return out
}

// nullable returns nil, empty or a short slice, chosen by the input.
func (r *fuzzReader) nullable() []byte {
	switch c := r.byte(); {
	case c < 40:
		return nil
	case c < 60:
		return []byte{}
	case c > 250:
		return bytes.Repeat([]byte{r.byte()}, int(r.byte())*16) // up to 4 KiB
	default:
		return r.bytes(int(c) % 70)
	}
}

// FuzzBuilder builds a batch from records derived from the input with the
// codec it picks, then checks that it validates and decodes to the same
// records, and that kmsg-compatible framing holds (offset deltas, counts).
func FuzzBuilder(f *testing.F) {
	f.Add([]byte{0, 3, 100, 1, 2, 3, 4, 5, 6, 7, 8, 70, 'k', 'e', 'y', 30, 0})
	f.Add([]byte{1, 200, 10, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 251, 7, 9, 251, 1, 200, 3})
	f.Add(bytes.Repeat([]byte{2, 77, 99, 0x80}, 40))
	f.Add(bytes.Repeat([]byte{3, 12, 251, 255}, 30))
	f.Add(bytes.Repeat([]byte{4, 5, 6, 7, 8, 9, 10}, 50))
	f.Add([]byte("the quick brown fox jumps over the lazy dog, again and again and again"))
	f.Fuzz(func(t *testing.T, data []byte) {
		r := &fuzzReader{b: data}
		codec := Compression(r.byte() % 5)
		n := int(r.byte())%50 + 1
		level := []int{0, 0, 0, 1, 3, -1, 9, 100}[r.byte()%8] // best-compression levels are slow; a few suffice
		opts := BuilderOptions{Compression: codec, CompressionLevel: level}
		if r.byte()&1 == 1 {
			opts.Idempotent, opts.ProducerID, opts.ProducerEpoch, opts.BaseSequence = true, r.int64(), int16(r.byte()), int32(r.byte())
		}
		var recs []Record
		ts := r.int64()
		for i := 0; i < n; i++ {
			switch r.byte() % 4 {
			case 0: // same timestamp
			case 1:
				ts += int64(r.byte())
			case 2:
				ts -= int64(r.byte()) << 8
			case 3:
				ts = r.int64()
			}
			rec := Record{Timestamp: ts, Key: r.nullable(), Value: r.nullable(), Attributes: int8(r.byte() & 1)}
			for h := int(r.byte() % 4); h > 0; h-- {
				rec.Headers = append(rec.Headers, RecordHeader{Key: string(r.bytes(int(r.byte() % 10))), Value: r.nullable()})
			}
			recs = append(recs, rec)
		}
		bl := NewBuilder(opts)
		for _, rec := range recs {
			bl.Add(rec)
		}
		b, err := bl.Build()
		if err != nil {
			t.Fatal(err)
		}
		h, err := Validate(b, math.MaxInt32)
		if err != nil {
			t.Fatalf("Validate: %v", err)
		}
		maxTS := recs[0].Timestamp
		for _, rec := range recs {
			maxTS = max(maxTS, rec.Timestamp)
		}
		if h.NumRecords != int32(n) || h.Compression() != codec || h.BaseTimestamp != recs[0].Timestamp || h.MaxTimestamp != maxTS {
			t.Fatalf("header %+v", h)
		}
		if opts.Idempotent && (h.ProducerID != opts.ProducerID || h.ProducerEpoch != opts.ProducerEpoch || h.BaseSequence != opts.BaseSequence) {
			t.Fatalf("producer fields %+v", h)
		}
		got, err := Records(b)
		if err != nil {
			t.Fatalf("Records: %v", err)
		}
		sameRecords(t, got, recs, 0)
		got, err = forEachCollect(t, Decoder{}, b)
		if err != nil {
			t.Fatalf("ForEachRecord: %v", err)
		}
		sameRecords(t, got, recs, 0)
		if codec == CompressionNone && bl.EstimatedSize() != len(b) {
			t.Fatalf("EstimatedSize %d, got %d", bl.EstimatedSize(), len(b))
		}
		// Any corruption inside the CRC is caught.
		if len(data) > 0 {
			i := OffAttributes + int(data[0])*7919%(len(b)-OffAttributes)
			b[i] ^= 0x20
			if _, err := Validate(b, math.MaxInt32); !errors.Is(err, ErrBadCRC) {
				t.Fatalf("flipped byte %d: %v", i, err)
			}
		}
	})
}
