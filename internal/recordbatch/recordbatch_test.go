package recordbatch

import (
	"bytes"
	"errors"
	"fmt"
	"math"
	"runtime"
	"strings"
	"testing"
)

func TestRoundTrip(t *testing.T) {
	sets := map[string][]Record{
		"mixed":  mixedRecords(),
		"single": {{Timestamp: 42, Value: []byte("only")}},
		"many":   sizedRecords(500, 100),
		"big":    sizedRecords(3, 200<<10), // spans several snappy/lz4 blocks
	}
	for _, codec := range allCodecs {
		for name, recs := range sets {
			t.Run(codec.String()+"/"+name, func(t *testing.T) {
				b := build(t, BuilderOptions{Compression: codec}, recs)
				h, err := Validate(b, len(b))
				if err != nil {
					t.Fatalf("Validate: %v", err)
				}
				if h.Compression() != codec || h.NumRecords != int32(len(recs)) || h.LastOffsetDelta != int32(len(recs)-1) {
					t.Fatalf("header %+v", h)
				}
				if h.Size() != len(b) || h.BaseOffset != 0 || h.NextOffset() != int64(len(recs)) || h.LastOffset() != int64(len(recs)-1) {
					t.Fatalf("header sizes/offsets %+v", h)
				}
				if h.PartitionLeaderEpoch != -1 || h.ProducerID != -1 || h.ProducerEpoch != -1 || h.BaseSequence != -1 {
					t.Fatalf("producer defaults %+v", h)
				}
				if h.IsControl() || h.IsTransactional() || h.TimestampType() != CreateTime || h.Magic != Magic {
					t.Fatalf("attributes %+v", h)
				}
				maxTS := recs[0].Timestamp
				for _, r := range recs {
					maxTS = max(maxTS, r.Timestamp)
				}
				if h.BaseTimestamp != recs[0].Timestamp || h.MaxTimestamp != maxTS {
					t.Fatalf("timestamps base %d max %d, want %d %d", h.BaseTimestamp, h.MaxTimestamp, recs[0].Timestamp, maxTS)
				}
				ph, err := ParseHeader(b)
				if err != nil || ph != h {
					t.Fatalf("ParseHeader %+v %v, want %+v", ph, err, h)
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

				// Offsets and epoch are outside the CRC.
				SetBaseOffset(b, 1000)
				SetPartitionLeaderEpoch(b, 7)
				h, err = Validate(b, len(b))
				if err != nil || h.BaseOffset != 1000 || h.PartitionLeaderEpoch != 7 || h.NextOffset() != 1000+int64(len(recs)) {
					t.Fatalf("after Set*: %+v %v", h, err)
				}
				got, err = Records(b)
				if err != nil {
					t.Fatal(err)
				}
				sameRecords(t, got, recs, 1000)
			})
		}
	}
}

func TestBuilderOptions(t *testing.T) {
	recs := mixedRecords()
	b := build(t, BuilderOptions{Compression: CompressionZstd, CompressionLevel: 9, Idempotent: true,
		ProducerID: 0, ProducerEpoch: 3, BaseSequence: 77, Transactional: true}, recs)
	h, err := Validate(b, len(b))
	if err != nil {
		t.Fatal(err)
	}
	if h.ProducerID != 0 || h.ProducerEpoch != 3 || h.BaseSequence != 77 || !h.IsTransactional() || h.IsControl() {
		t.Fatalf("%+v", h)
	}

	// Control batches are valid.
	b = build(t, BuilderOptions{Control: true, Idempotent: true, ProducerID: 5, Transactional: true},
		[]Record{{Key: []byte{0, 0, 0, 1}, Value: []byte{0, 0, 0, 0, 0, 1}}})
	if h, err := Validate(b, len(b)); err != nil || !h.IsControl() {
		t.Fatalf("control: %+v %v", h, err)
	}

	for _, codec := range allCodecs {
		for _, level := range []int{-100, 1, 3, 9, 12, 1000} {
			b := build(t, BuilderOptions{Compression: codec, CompressionLevel: level}, recs)
			if _, err := Validate(b, len(b)); err != nil {
				t.Fatalf("%v level %d: %v", codec, level, err)
			}
			got, err := Records(b)
			if err != nil {
				t.Fatalf("%v level %d: %v", codec, level, err)
			}
			sameRecords(t, got, recs, 0)
		}
	}

	bad := []BuilderOptions{{Transactional: true}, {Compression: 6}}
	for _, o := range bad {
		bl := NewBuilder(o)
		bl.Add(recs[0])
		if _, err := bl.Build(); err == nil {
			t.Errorf("%+v: Build succeeded", o)
		}
	}
	if _, err := NewBuilder(BuilderOptions{}).Build(); err == nil {
		t.Error("empty Build succeeded")
	}
}

func TestBuilderReuse(t *testing.T) {
	bl := NewBuilder(BuilderOptions{})
	for round := 0; round < 3; round++ {
		bl.Reset()
		recs := sizedRecords(10+round, 50)
		for _, r := range recs {
			bl.Add(r)
		}
		if bl.Len() != len(recs) {
			t.Fatalf("Len %d", bl.Len())
		}
		b, err := bl.Build()
		if err != nil {
			t.Fatal(err)
		}
		if bl.EstimatedSize() != len(b) {
			t.Fatalf("EstimatedSize %d, built %d", bl.EstimatedSize(), len(b))
		}
		got, err := Records(b)
		if err != nil {
			t.Fatal(err)
		}
		sameRecords(t, got, recs, 0)
	}
	// ResetWith changes options.
	bl.ResetWith(BuilderOptions{Compression: CompressionGzip, Idempotent: true, ProducerID: 9, BaseSequence: 100})
	bl.Add(Record{Value: []byte("x")})
	b, _ := bl.Build()
	h, err := Validate(b, len(b))
	if err != nil || h.Compression() != CompressionGzip || h.ProducerID != 9 || h.BaseSequence != 100 {
		t.Fatalf("%+v %v", h, err)
	}
	// Build leaves the records in place; a second Build is identical.
	b2, _ := bl.Build()
	if !bytes.Equal(b, b2) {
		t.Fatal("second Build differs")
	}
	// AppendTo into a buffer with room allocates nothing when uncompressed.
	bl.ResetWith(BuilderOptions{})
	recs := sizedRecords(100, 100)
	dst := make([]byte, 0, 64<<10)
	allocs := testing.AllocsPerRun(20, func() {
		bl.Reset()
		for _, r := range recs {
			bl.Add(r)
		}
		var err error
		if dst, err = bl.AppendTo(dst[:0]); err != nil {
			t.Fatal(err)
		}
	})
	if allocs != 0 {
		t.Errorf("Reset+Add+AppendTo allocs %v, want 0", allocs)
	}
	if _, err := Validate(dst, len(dst)); err != nil {
		t.Fatal(err)
	}
	// AppendTo appends after existing content.
	pre := []byte("prefix")
	out, err := bl.AppendTo(pre)
	if err != nil || !bytes.HasPrefix(out, pre) {
		t.Fatal(err)
	}
	if _, err := Validate(out[len(pre):], math.MaxInt32); err != nil {
		t.Fatal(err)
	}
}

func TestSetMaxTimestamp(t *testing.T) {
	for _, codec := range allCodecs {
		recs := mixedRecords()
		b := build(t, BuilderOptions{Compression: codec}, recs)
		SetMaxTimestamp(b, LogAppendTime, 123456)
		h, err := Validate(b, len(b))
		if err != nil {
			t.Fatal(err)
		}
		if h.TimestampType() != LogAppendTime || h.MaxTimestamp != 123456 || h.Compression() != codec {
			t.Fatalf("%+v", h)
		}
		got, err := Records(b)
		if err != nil {
			t.Fatal(err)
		}
		for i, r := range got {
			if r.Timestamp != 123456 {
				t.Fatalf("record %d timestamp %d", i, r.Timestamp)
			}
		}
		SetMaxTimestamp(b, CreateTime, 5)
		if h, err = Validate(b, len(b)); err != nil || h.TimestampType() != CreateTime || h.MaxTimestamp != 5 {
			t.Fatalf("%+v %v", h, err)
		}
		got, _ = Records(b)
		if got[1].Timestamp != recs[1].Timestamp {
			t.Fatal("CreateTime timestamps not restored")
		}
	}
}

func TestTruncatedEveryLength(t *testing.T) {
	for _, codec := range allCodecs {
		b := build(t, BuilderOptions{Compression: codec}, mixedRecords())
		for n := 0; n < len(b); n++ {
			p := append([]byte{}, b[:n]...) // exact-capacity copy so the race detector / bounds catch overreads
			_, err := Validate(p, math.MaxInt32)
			wantKind(t, err, ErrTruncated)
			_, err = Records(p)
			wantKind(t, err, ErrTruncated)
			err = ForEachRecord(p, func(*Record) error { t.Fatal("fn called"); return nil })
			wantKind(t, err, ErrTruncated)
			if n < HeaderSize {
				_, err = ParseHeader(p)
				wantKind(t, err, ErrTruncated)
			}
			if n < LogOverhead {
				_, err = Size(p, math.MaxInt32)
				wantKind(t, err, ErrTruncated)
			} else if s, err := Size(p, math.MaxInt32); err != nil || s != len(b) {
				t.Fatalf("Size of prefix %d: %d %v", n, s, err)
			}
			if _, _, err := Next(p, math.MaxInt32); !errors.Is(err, ErrTruncated) {
				t.Fatalf("Next: %v", err)
			}
		}
	}
}

func TestOversize(t *testing.T) {
	// A 12 byte prefix claiming a 2 GiB batch.
	hdr := make([]byte, 12)
	be.PutUint32(hdr[OffBatchLength:], math.MaxInt32)
	_, err := Size(hdr, 1<<20)
	wantKind(t, err, ErrTooLarge)
	want := "recordbatch: batch too large: batch size 2147483659 exceeds max 1048576"
	if err.Error() != want {
		t.Fatalf("message %q, want %q", err, want)
	}
	_, err = Validate(hdr, 1<<20)
	wantKind(t, err, ErrTooLarge)

	// Nothing proportional to the claimed size is allocated: at most the
	// one small error value.
	allocs := testing.AllocsPerRun(100, func() { _, _ = Size(hdr, 1<<20) })
	if allocs > 1 {
		t.Errorf("Size allocs %v", allocs)
	}
	allocs = testing.AllocsPerRun(100, func() { _, _ = Validate(hdr, 1<<20) })
	if allocs > 1 {
		t.Errorf("Validate allocs %v", allocs)
	}
	var ms0, ms1 runtime.MemStats
	runtime.ReadMemStats(&ms0)
	for i := 0; i < 1000; i++ {
		_, _ = Validate(hdr, 1<<20)
		_, _ = Records(hdr)
	}
	runtime.ReadMemStats(&ms1)
	if d := ms1.TotalAlloc - ms0.TotalAlloc; d > 1<<20 {
		t.Errorf("1000 oversize rejections allocated %d bytes", d)
	}

	// A valid batch over a tiny max.
	b := build(t, BuilderOptions{}, mixedRecords())
	_, err = Validate(b, len(b)-1)
	wantKind(t, err, ErrTooLarge)
	if _, err := Validate(b, len(b)); err != nil {
		t.Fatal(err)
	}

	// Negative and too-small length fields.
	for _, l := range []int32{-1, math.MinInt32, 0, 48} {
		p := append([]byte{}, b...)
		be.PutUint32(p[OffBatchLength:], uint32(l))
		_, err := Size(p, math.MaxInt32)
		wantKind(t, err, ErrBadLength)
		_, err = Validate(p, math.MaxInt32)
		wantKind(t, err, ErrBadLength)
	}
	// Trailing bytes after the batch.
	p := append(append([]byte{}, b...), 0)
	_, err = Validate(p, math.MaxInt32)
	wantKind(t, err, ErrBadLength)
}

func TestBadMagic(t *testing.T) {
	b := build(t, BuilderOptions{}, mixedRecords())
	for _, m := range []byte{0, 1, 3, 0xff} {
		p := append([]byte{}, b...)
		p[OffMagic] = m
		_, err := Validate(p, len(p))
		wantKind(t, err, ErrBadMagic)
		_, err = Records(p)
		wantKind(t, err, ErrBadMagic)
	}
}

func TestCRCMessage(t *testing.T) {
	b := build(t, BuilderOptions{}, mixedRecords())
	b[len(b)-1] ^= 1
	_, err := Validate(b, len(b))
	wantKind(t, err, ErrBadCRC)
	var e *Error
	if !errors.As(err, &e) || e.Kind != ErrBadCRC || e.Record != -1 {
		t.Fatalf("%#v", err)
	}
	want := fmt.Sprintf("recordbatch: crc mismatch: header %#x computed %#x", be.Uint32(b[OffCRC:]), ComputeCRC(b))
	if err.Error() != want {
		t.Fatalf("%q, want %q", err, want)
	}
}

// TestFlipEveryByte flips each bit of each byte of valid batches: only
// flips in baseOffset and partitionLeaderEpoch may still validate.
func TestFlipEveryByte(t *testing.T) {
	for _, codec := range allCodecs {
		b := build(t, BuilderOptions{Compression: codec}, mixedRecords()[:5])
		for i := 0; i < len(b); i++ {
			for bit := 0; bit < 8; bit++ {
				p := append([]byte{}, b...)
				p[i] ^= 1 << bit
				_, err := Validate(p, len(p))
				_, rerr := Records(p)
				ferr := ForEachRecord(p, func(*Record) error { return nil })
				switch {
				case i < OffBatchLength || (i >= OffLeaderEpoch && i < OffMagic):
					if err != nil || rerr != nil || ferr != nil {
						t.Fatalf("%v: flip byte %d bit %d outside CRC: %v / %v / %v", codec, i, bit, err, rerr, ferr)
					}
				case i < OffLeaderEpoch: // batchLength
					for _, e := range []error{err, rerr, ferr} {
						if !errors.Is(e, ErrTruncated) && !errors.Is(e, ErrBadLength) && !errors.Is(e, ErrTooLarge) {
							t.Fatalf("%v: flip length byte %d bit %d: %v", codec, i, bit, e)
						}
					}
				case i == OffMagic:
					wantKind(t, err, ErrBadMagic)
					wantKind(t, rerr, ErrBadMagic)
				default:
					wantKind(t, err, ErrBadCRC)
					wantKind(t, rerr, ErrBadCRC)
					wantKind(t, ferr, ErrBadCRC)
				}
			}
		}
	}
}

// TestCorruptWithFixedCRC mutates bytes after the header and repairs the
// CRC, so the record checks (or the codec) must catch what they can; it
// must never panic, and anything that validates must decode.
func TestCorruptWithFixedCRC(t *testing.T) {
	for _, codec := range allCodecs {
		b := build(t, BuilderOptions{Compression: codec}, mixedRecords()[:5])
		for i := OffAttributes; i < len(b); i++ {
			for _, x := range []byte{1, 0x80, 0xff} {
				p := append([]byte{}, b...)
				p[i] ^= x
				fixCRC(p)
				checkConsistent(t, p, Decoder{MaxDecompressed: 1 << 20})
			}
		}
	}
}

// checkConsistent asserts the cross-function properties for any input.
func checkConsistent(t testing.TB, p []byte, d Decoder) {
	t.Helper()
	h, verr := Validate(p, math.MaxInt32)
	recs, rerr := d.Records(p)
	n := 0
	ferr := d.ForEachRecord(p, func(r *Record) error { n++; return nil })
	for _, e := range []error{verr, rerr, ferr} {
		if e != nil && !errors.Is(e, ErrInvalid) {
			t.Fatalf("error not ErrInvalid: %v", e)
		}
	}
	if (rerr == nil) != (ferr == nil) {
		t.Fatalf("Records %v but ForEachRecord %v", rerr, ferr)
	}
	if rerr == nil {
		hh, _ := ParseHeader(p)
		if len(recs) != int(hh.NumRecords) || n != len(recs) {
			t.Fatalf("decoded %d/%d records, header says %d", len(recs), n, hh.NumRecords)
		}
	}
	// Validate's specialized walker and the decoders' readRecord agree: an
	// uncompressed batch that decodes with sequential offsets and a
	// consistent count validates.
	if hh, err := ParseHeader(p); err == nil && rerr == nil && hh.Compression() == CompressionNone &&
		hh.NumRecords >= 1 && hh.LastOffsetDelta == hh.NumRecords-1 {
		sequential := true
		for i, r := range recs {
			sequential = sequential && r.Offset == hh.BaseOffset+int64(i)
		}
		if sequential && verr != nil {
			t.Fatalf("Records ok but Validate: %v", verr)
		}
	}
	if verr == nil {
		if h.Compression() == CompressionNone && rerr != nil {
			t.Fatalf("Validate ok but Records: %v", rerr)
		}
		if rerr == nil && h.Compression() == CompressionNone {
			for i, r := range recs {
				if r.Offset != h.BaseOffset+int64(i) {
					t.Fatalf("valid batch record %d offset %d", i, r.Offset)
				}
			}
		}
	}
}

func TestRecordCount(t *testing.T) {
	recs := mixedRecords()
	for _, codec := range allCodecs {
		b := build(t, BuilderOptions{Compression: codec}, recs)
		n := int32(len(recs))
		cases := []struct {
			count, lod int32
			kind       error
			uncompOnly bool
		}{
			{0, -1, ErrBadRecordCount, false},
			{-3, -4, ErrBadRecordCount, false},
			{n, n, ErrBadOffsetDelta, false},
			{n, n - 2, ErrBadOffsetDelta, false},
			{n + 1, n, ErrBadRecordCount, true},     // batch runs out of records
			{n - 1, n - 2, ErrBadRecordCount, true}, // bytes left after the last record
			{math.MaxInt32, math.MaxInt32 - 1, ErrBadRecordCount, true},
		}
		for _, c := range cases {
			p := append([]byte{}, b...)
			be.PutUint32(p[OffRecordCount:], uint32(c.count))
			be.PutUint32(p[OffLastOffsetDelta:], uint32(c.lod))
			fixCRC(p)
			_, err := Validate(p, len(p))
			if codec != CompressionNone && c.uncompOnly {
				if err != nil {
					t.Fatalf("%v count %d: compressed batches are checked up to the header: %v", codec, c.count, err)
				}
			} else {
				wantKind(t, err, c.kind)
			}
			// The decoders are lenient on lastOffsetDelta, strict on count.
			_, err = Records(p)
			if c.count == n {
				if err != nil {
					t.Fatalf("%v: Records with lastOffsetDelta %d: %v", codec, c.lod, err)
				}
			} else {
				wantKind(t, err, ErrBadRecordCount)
			}
		}
	}
}

func TestOffsetDeltaOrder(t *testing.T) {
	var recs []byte
	for _, d := range []int32{0, 2, 1} {
		recs = append(recs, rawRecordBytes(d, []byte("k"), []byte("v"))...)
	}
	b := rawBatch(CompressionNone, 3, 2, recs)
	_, err := Validate(b, len(b))
	wantKind(t, err, ErrBadOffsetDelta)
	var e *Error
	if !errors.As(err, &e) || e.Record != 1 || !strings.Contains(err.Error(), "record 1: offsetDelta 2, want 1") {
		t.Fatalf("%v", err)
	}
	// Decoders accept (compacted logs have gaps) and report the real offsets.
	SetBaseOffset(b, 10)
	got, err := Records(b)
	if err != nil {
		t.Fatal(err)
	}
	if got[0].Offset != 10 || got[1].Offset != 12 || got[2].Offset != 11 {
		t.Fatalf("offsets %d %d %d", got[0].Offset, got[1].Offset, got[2].Offset)
	}
	// Negative delta.
	b = rawBatch(CompressionNone, 1, 0, rawRecordBytes(-1, nil, nil))
	_, err = Validate(b, len(b))
	wantKind(t, err, ErrBadOffsetDelta)
}

func TestMalformedRecords(t *testing.T) {
	good := rawRecordBytes(0, []byte("key"), []byte("value"))
	mk := func(body []byte) []byte { return append(appendVarint(nil, int32(len(body))), body...) }
	body := func(parts ...[]byte) []byte { return bytes.Join(parts, nil) }
	vi := func(v int32) []byte { return appendVarint(nil, v) }
	cases := map[string][]byte{
		"length too big":       append(appendVarint(nil, int32(len(good))), good[1:]...),
		"length too small":     append(vi(4), 0, 0, 0, 0, 0, 0, 0, 0),
		"length negative":      append(appendVarint(nil, -5), good[1:]...),
		"length overlong":      {0xff, 0xff, 0xff, 0xff, 0xff, 0x01, 0, 0, 0, 0, 0, 0},
		"length 5th byte bits": append([]byte{0x80, 0x80, 0x80, 0x80, 0x10}, good[1:]...),
		"key length < -1":      mk(body([]byte{0}, vi(0), vi(0), vi(-2), vi(-1), vi(0))),
		"key past end":         mk(body([]byte{0}, vi(0), vi(0), vi(10), []byte("ab"), vi(-1), vi(0))),
		"value past end":       mk(body([]byte{0}, vi(0), vi(0), vi(-1), vi(10), []byte("ab"), vi(0))),
		"value length < -1":    mk(body([]byte{0}, vi(0), vi(0), vi(-1), vi(-7), vi(0))),
		"headers negative":     mk(body([]byte{0}, vi(0), vi(0), vi(-1), vi(-1), vi(-1))),
		"headers too many":     mk(body([]byte{0}, vi(0), vi(0), vi(-1), vi(-1), vi(5), vi(0), vi(0))),
		"header key null":      mk(body([]byte{0}, vi(0), vi(0), vi(-1), vi(-1), vi(1), vi(-1), vi(-1))),
		"header value < -1":    mk(body([]byte{0}, vi(0), vi(0), vi(-1), vi(-1), vi(1), vi(1), []byte("k"), vi(-2))),
		"header value past":    mk(body([]byte{0}, vi(0), vi(0), vi(-1), vi(-1), vi(1), vi(1), []byte("k"), vi(9), []byte("v"))),
		"trailing in record":   mk(body([]byte{0}, vi(0), vi(0), vi(-1), vi(-1), vi(0), []byte{0, 0})),
		"bad ts varlong":       mk(body([]byte{0}, bytes.Repeat([]byte{0xff}, 10), vi(0), vi(-1), vi(-1), vi(0))),
		"bad offset varint":    mk(body([]byte{0}, vi(0), []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}, vi(-1), vi(-1), vi(0))),
	}
	for name, rec := range cases {
		t.Run(name, func(t *testing.T) {
			b := rawBatch(CompressionNone, 1, 0, rec)
			_, err := Validate(b, len(b))
			wantKind(t, err, ErrMalformedRecord)
			_, err = Records(b)
			wantKind(t, err, ErrMalformedRecord)
			// The same payload inside a compressed batch fails at decode.
			z, _ := compress(nil, CompressionZstd, 0, rec)
			b = rawBatch(CompressionZstd, 1, 0, z)
			if _, err := Validate(b, len(b)); err != nil {
				t.Fatal(err)
			}
			_, err = Records(b)
			wantKind(t, err, ErrMalformedRecord)
		})
	}
	// The hand-made good record passes.
	b := rawBatch(CompressionNone, 1, 0, good)
	if _, err := Validate(b, len(b)); err != nil {
		t.Fatal(err)
	}
	// Non-minimal varints are accepted, as Kafka does: key length 3 as 0x86 0x00.
	rec := mk(body([]byte{0}, vi(0), vi(0), []byte{0x86, 0x00}, []byte("abc"), vi(-1), vi(0)))
	b = rawBatch(CompressionNone, 1, 0, rec)
	if _, err := Validate(b, len(b)); err != nil {
		t.Fatal(err)
	}
}

func TestCompactedBatches(t *testing.T) {
	// A count of 0 (an empty batch kept by the cleaner for producer state)
	// decodes to nothing but does not validate as a produce.
	b := rawBatch(CompressionNone, 0, 4, nil)
	_, err := Validate(b, len(b))
	wantKind(t, err, ErrBadRecordCount)
	got, err := Records(b)
	if err != nil || len(got) != 0 {
		t.Fatalf("%v %v", got, err)
	}
}

func TestDecompressionBomb(t *testing.T) {
	recs := []Record{{Value: make([]byte, 4<<20)}} // 4 MiB of zeros
	for _, codec := range allCodecs[1:] {
		b := build(t, BuilderOptions{Compression: codec}, recs)
		if _, err := Validate(b, len(b)); err != nil {
			t.Fatal(err)
		}
		d := Decoder{MaxDecompressed: 256 << 10}
		var ms0, ms1 runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&ms0)
		_, err := d.Records(b)
		wantKind(t, err, ErrTooLarge)
		err = d.ForEachRecord(b, func(*Record) error { return nil })
		wantKind(t, err, ErrTooLarge)
		runtime.ReadMemStats(&ms1)
		if alloc := ms1.TotalAlloc - ms0.TotalAlloc; alloc > 3<<20 {
			t.Errorf("%v: rejecting a %d byte bomb allocated %d bytes with a 256 KiB cap", codec, len(b), alloc)
		}
		// A cap exactly at the size succeeds.
		d.MaxDecompressed = len(build(t, BuilderOptions{}, recs)) - HeaderSize
		if got, err := d.Records(b); err != nil || len(got[0].Value) != 4<<20 {
			t.Fatalf("%v at the cap: %v", codec, err)
		}
		d.MaxDecompressed--
		_, err = d.Records(b)
		wantKind(t, err, ErrTooLarge)
	}
}

func TestSnappyRawAndXerial(t *testing.T) {
	recs := mixedRecords()
	plain := build(t, BuilderOptions{}, recs)
	payload := plain[HeaderSize:]
	xer, _ := compress(nil, CompressionSnappy, 0, payload)
	if !bytes.HasPrefix(xer, xerialHeader) {
		t.Fatal("builder does not write xerial framing")
	}
	raw := s2EncodeSnappy(payload)
	for name, p := range map[string][]byte{"xerial": xer, "raw": raw} {
		b := rawBatch(CompressionSnappy, int32(len(recs)), int32(len(recs)-1), p)
		be.PutUint64(b[OffBaseTimestamp:], uint64(recs[0].Timestamp))
		fixCRC(b)
		got, err := Records(b)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		sameRecords(t, got, recs, 0)
	}
	// Corrupt xerial framing.
	for _, cut := range []int{len(xerialHeader) + 2, len(xer) - 1} {
		b := rawBatch(CompressionSnappy, int32(len(recs)), int32(len(recs)-1), xer[:cut])
		_, err := Records(b)
		wantKind(t, err, ErrBadCompression)
	}
}

func TestUnknownCodec(t *testing.T) {
	for _, c := range []uint16{5, 6, 7} {
		b := rawBatch(Compression(c), 1, 0, rawRecordBytes(0, nil, nil))
		_, err := Validate(b, len(b))
		wantKind(t, err, ErrBadCompression)
		_, err = Records(b)
		wantKind(t, err, ErrBadCompression)
	}
	// Garbage payloads for each codec.
	for _, codec := range allCodecs[1:] {
		b := rawBatch(codec, 1, 0, []byte("definitely not compressed data"))
		if _, err := Validate(b, len(b)); err != nil {
			t.Fatal(err)
		}
		_, err := Records(b)
		wantKind(t, err, ErrInvalid)
	}
}

func TestNext(t *testing.T) {
	var all []byte
	var want [][]byte
	for i, codec := range allCodecs {
		b := build(t, BuilderOptions{Compression: codec}, sizedRecords(i+1, 10))
		want = append(want, b)
		all = append(all, b...)
	}
	rest := all
	for i := 0; len(rest) > 0; i++ {
		var b []byte
		var err error
		b, rest, err = Next(rest, math.MaxInt32)
		if err != nil || !bytes.Equal(b, want[i]) {
			t.Fatalf("batch %d: %v", i, err)
		}
		if _, err := Validate(b, len(b)); err != nil {
			t.Fatal(err)
		}
	}
}

func TestForEachRecordStops(t *testing.T) {
	stop := errors.New("stop")
	for _, codec := range allCodecs {
		b := build(t, BuilderOptions{Compression: codec}, mixedRecords())
		n := 0
		err := ForEachRecord(b, func(r *Record) error {
			n++
			if n == 2 {
				return stop
			}
			return nil
		})
		if err != stop || n != 2 {
			t.Fatalf("%v: %v after %d", codec, err, n)
		}
	}
}

func TestNoAllocs(t *testing.T) {
	recs := sizedRecords(100, 100)
	recs[3].Headers = []RecordHeader{{Key: "a", Value: []byte("b")}, {Key: "c"}}
	plain := build(t, BuilderOptions{}, recs)
	zstdB := build(t, BuilderOptions{Compression: CompressionZstd}, recs)
	for name, b := range map[string][]byte{"none": plain, "zstd": zstdB} {
		if a := testing.AllocsPerRun(100, func() {
			if _, err := Validate(b, len(b)); err != nil {
				t.Fatal(err)
			}
		}); a != 0 {
			t.Errorf("Validate %s: %v allocs", name, a)
		}
	}
	var sum int
	fn := func(r *Record) error { sum += len(r.Value) + len(r.Headers); return nil }
	if raceEnabled {
		t.Log("ForEachRecord allocations not asserted under -race (sync.Pool drops items); make test runs this without -race too")
		return
	}
	if a := testing.AllocsPerRun(100, func() {
		if err := ForEachRecord(plain, fn); err != nil {
			t.Fatal(err)
		}
	}); a != 0 {
		t.Errorf("ForEachRecord uncompressed: %v allocs", a)
	}
	a := testing.AllocsPerRun(100, func() {
		if err := ForEachRecord(zstdB, fn); err != nil {
			t.Fatal(err)
		}
	})
	t.Logf("ForEachRecord zstd: %v allocs", a)
}

func TestErrorsIs(t *testing.T) {
	for _, k := range []error{ErrTruncated, ErrTooLarge, ErrBadLength, ErrBadMagic, ErrBadCRC,
		ErrBadRecordCount, ErrBadOffsetDelta, ErrMalformedRecord, ErrBadCompression} {
		if !errors.Is(k, ErrInvalid) {
			t.Errorf("%v is not ErrInvalid", k)
		}
		e := newErr(k, "x %d", 1)
		if !errors.Is(e, k) || !errors.Is(e, ErrInvalid) || errors.Is(e, errors.New("other")) {
			t.Errorf("%v", e)
		}
		for _, other := range []error{ErrTruncated, ErrBadCRC} {
			if other != k && errors.Is(e, other) {
				t.Errorf("%v is %v", e, other)
			}
		}
	}
	if errors.Is(ErrInvalid, ErrBadCRC) {
		t.Error("ErrInvalid is ErrBadCRC")
	}
}

func TestVarints(t *testing.T) {
	for _, v := range []int32{0, 1, -1, 63, -64, 64, -65, 8191, 1 << 20, math.MaxInt32, math.MinInt32} {
		b := appendVarint(nil, v)
		if len(b) != sizeVarint(v) {
			t.Fatalf("size %d", v)
		}
		got, p := readVarint(b, 0)
		if got != v || p != len(b) {
			t.Fatalf("varint %d -> %x -> %d, %d", v, b, got, p)
		}
	}
	for _, v := range []int64{0, 1, -1, math.MaxInt64, math.MinInt64, 1 << 40, -(1 << 40)} {
		b := appendVarlong(nil, v)
		if len(b) != sizeVarlong(v) {
			t.Fatalf("size %d", v)
		}
		got, p := readVarlong(b, 0)
		if got != v || p != len(b) {
			t.Fatalf("varlong %d -> %x -> %d, %d", v, b, got, p)
		}
	}
	for _, bad := range [][]byte{{}, {0x80}, {0xff, 0xff, 0xff, 0xff, 0x1f}, {0xff, 0xff, 0xff, 0xff, 0xff, 0}} {
		if _, p := readVarint(bad, 0); p >= 0 {
			t.Errorf("varint %x accepted", bad)
		}
	}
	if _, p := readVarlong(append(bytes.Repeat([]byte{0xff}, 9), 2), 0); p >= 0 {
		t.Error("overflowing varlong accepted")
	}
}
