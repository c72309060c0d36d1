package recordbatch

import (
	"bytes"
	"encoding/binary"
	"hash/crc32"
	"testing"

	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// Cross-checks against franz-go: kmsg encodes and decodes the batch and
// record framing, kgo's default compressor/decompressor the codecs.

// kmsgBatch encodes recs the way franz-go does: kmsg records, compressed
// by kgo's default compressor (raw snappy, lz4 frames with its default
// block size), in a kmsg.RecordBatch whose Length and CRC we fill in.
func kmsgBatch(t *testing.T, codec Compression, recs []Record, baseOffset int64) []byte {
	t.Helper()
	var raw []byte
	maxTS := recs[0].Timestamp
	for i, r := range recs {
		maxTS = max(maxTS, r.Timestamp)
		kr := kmsg.Record{
			Attributes:       r.Attributes,
			TimestampDelta64: r.Timestamp - recs[0].Timestamp,
			OffsetDelta:      int32(i),
			Key:              r.Key,
			Value:            r.Value,
		}
		for _, h := range r.Headers {
			kr.Headers = append(kr.Headers, kmsg.Header{Key: h.Key, Value: h.Value})
		}
		body := kr.AppendTo(nil)[1:] // Length 0 encodes as one byte
		kr.Length = int32(len(body))
		raw = kr.AppendTo(raw)
	}
	payload := raw
	if codec != CompressionNone {
		var cc kgo.CompressionCodec
		switch codec {
		case CompressionGzip:
			cc = kgo.GzipCompression()
		case CompressionSnappy:
			cc = kgo.SnappyCompression()
		case CompressionLZ4:
			cc = kgo.Lz4Compression()
		case CompressionZstd:
			cc = kgo.ZstdCompression()
		}
		c, err := kgo.DefaultCompressor(cc)
		if err != nil {
			t.Fatal(err)
		}
		out, used := c.Compress(new(bytes.Buffer), raw)
		if int(used) != int(codec) {
			t.Fatalf("kgo compressed with %v", used)
		}
		payload = append([]byte{}, out...)
	}
	rb := kmsg.RecordBatch{
		FirstOffset:          baseOffset,
		Length:               int32(HeaderSize - LogOverhead + len(payload)),
		PartitionLeaderEpoch: 3,
		Magic:                2,
		Attributes:           int16(codec),
		LastOffsetDelta:      int32(len(recs) - 1),
		FirstTimestamp:       recs[0].Timestamp,
		MaxTimestamp:         maxTS,
		ProducerID:           1234,
		ProducerEpoch:        2,
		FirstSequence:        40,
		NumRecords:           int32(len(recs)),
		Records:              payload,
	}
	b := rb.AppendTo(nil)
	rb.CRC = int32(crc32.Checksum(b[21:], crc32.MakeTable(crc32.Castagnoli)))
	return rb.AppendTo(nil)
}

func TestKmsgToOurs(t *testing.T) {
	for _, codec := range allCodecs {
		for _, recs := range [][]Record{mixedRecords(), sizedRecords(300, 100), sizedRecords(2, 300<<10)} {
			b := kmsgBatch(t, codec, recs, 5000)
			h, err := Validate(b, len(b))
			if err != nil {
				t.Fatalf("%v: Validate: %v", codec, err)
			}
			if h.BaseOffset != 5000 || h.PartitionLeaderEpoch != 3 || h.ProducerID != 1234 || h.ProducerEpoch != 2 ||
				h.BaseSequence != 40 || h.NumRecords != int32(len(recs)) || h.Compression() != codec {
				t.Fatalf("%v: header %+v", codec, h)
			}
			got, err := Records(b)
			if err != nil {
				t.Fatalf("%v: Records: %v", codec, err)
			}
			sameRecords(t, got, recs, 5000)
			got, err = forEachCollect(t, Decoder{}, b)
			if err != nil {
				t.Fatalf("%v: ForEachRecord: %v", codec, err)
			}
			sameRecords(t, got, recs, 5000)

			// Byte-identical framing: our builder's uncompressed records
			// region equals kmsg's.
			ours := build(t, BuilderOptions{}, recs)
			kb := kmsgBatch(t, CompressionNone, recs, 0)
			if !bytes.Equal(ours[HeaderSize:], kb[HeaderSize:]) {
				t.Fatalf("records region differs from kmsg's")
			}
		}
	}
}

func TestOursToKmsg(t *testing.T) {
	dec := kgo.DefaultDecompressor()
	for _, codec := range allCodecs {
		for _, recs := range [][]Record{mixedRecords(), sizedRecords(300, 100), sizedRecords(2, 300<<10)} {
			opts := BuilderOptions{Compression: codec, Idempotent: true, ProducerID: 99, ProducerEpoch: 4, BaseSequence: 1000, Transactional: true}
			b := build(t, opts, recs)
			SetBaseOffset(b, 77)
			var rb kmsg.RecordBatch
			if err := rb.ReadFrom(b); err != nil {
				t.Fatalf("%v: kmsg ReadFrom: %v", codec, err)
			}
			if rb.FirstOffset != 77 || int(rb.Length) != len(b)-12 || rb.Magic != 2 || rb.PartitionLeaderEpoch != -1 ||
				rb.Attributes != int16(codec)|AttrTransactional || rb.LastOffsetDelta != int32(len(recs)-1) ||
				rb.FirstTimestamp != recs[0].Timestamp || rb.ProducerID != 99 || rb.ProducerEpoch != 4 ||
				rb.FirstSequence != 1000 || rb.NumRecords != int32(len(recs)) {
				t.Fatalf("%v: kmsg batch %+v", codec, rb)
			}
			if uint32(rb.CRC) != crc32.Checksum(b[21:], crc32.MakeTable(crc32.Castagnoli)) {
				t.Fatal("crc")
			}
			raw, err := dec.Decompress(rb.Records, kgo.CompressionCodecType(codec))
			if err != nil {
				t.Fatalf("%v: kgo Decompress: %v", codec, err)
			}
			var got []Record
			for i := 0; len(raw) > 0; i++ {
				l, n := binary.Varint(raw) // zigzag, as Kafka's varint
				if n <= 0 {
					t.Fatalf("record %d length", i)
				}
				var kr kmsg.Record
				if err := kr.ReadFrom(raw[:n+int(l)]); err != nil {
					t.Fatalf("%v: record %d: %v", codec, i, err)
				}
				raw = raw[n+int(l):]
				r := Record{Offset: rb.FirstOffset + int64(kr.OffsetDelta), Timestamp: rb.FirstTimestamp + kr.TimestampDelta64,
					Key: kr.Key, Value: kr.Value, Attributes: kr.Attributes}
				for _, h := range kr.Headers {
					r.Headers = append(r.Headers, RecordHeader{Key: h.Key, Value: h.Value})
				}
				got = append(got, r)
			}
			sameRecords(t, got, recs, 77)
		}
	}
}
