package recordbatch

import (
	"fmt"
	"testing"
)

func BenchmarkValidate(b *testing.B) {
	for _, c := range []struct {
		n, size int
		name    string
	}{{100, 100, "100B"}, {100, 1024, "1KiB"}} {
		batch := build(b, BuilderOptions{}, sizedRecords(c.n, c.size))
		b.Run(fmt.Sprintf("records=%d/size=%s", c.n, c.name), func(b *testing.B) {
			b.SetBytes(int64(len(batch)))
			b.ReportAllocs()
			for b.Loop() {
				if _, err := Validate(batch, len(batch)); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
	// Compressed batches: header and CRC only.
	batch := build(b, BuilderOptions{Compression: CompressionZstd}, sizedRecords(100, 1024))
	b.Run("records=100/size=1KiB/zstd", func(b *testing.B) {
		b.SetBytes(int64(len(batch)))
		b.ReportAllocs()
		for b.Loop() {
			if _, err := Validate(batch, len(batch)); err != nil {
				b.Fatal(err)
			}
		}
	})
}

func BenchmarkBuild(b *testing.B) {
	recs := sizedRecords(100, 100)
	for _, codec := range allCodecs {
		b.Run("records=100/size=100B/"+codec.String(), func(b *testing.B) {
			bl := NewBuilder(BuilderOptions{Compression: codec})
			b.SetBytes(int64(bl.EstimatedSize()))
			b.ReportAllocs()
			n := 0
			for b.Loop() {
				bl.Reset()
				for _, r := range recs {
					bl.Add(r)
				}
				out, err := bl.Build()
				if err != nil {
					b.Fatal(err)
				}
				n = len(out)
			}
			b.SetBytes(int64(n))
		})
	}
	b.Run("records=100/size=100B/none/AppendTo", func(b *testing.B) {
		bl := NewBuilder(BuilderOptions{})
		var dst []byte
		b.ReportAllocs()
		for b.Loop() {
			bl.Reset()
			for _, r := range recs {
				bl.Add(r)
			}
			var err error
			if dst, err = bl.AppendTo(dst[:0]); err != nil {
				b.Fatal(err)
			}
		}
		b.SetBytes(int64(len(dst)))
	})
}

func BenchmarkDecode(b *testing.B) {
	recs := sizedRecords(100, 100)
	for _, codec := range allCodecs {
		batch := build(b, BuilderOptions{Compression: codec}, recs)
		b.Run("ForEachRecord/records=100/size=100B/"+codec.String(), func(b *testing.B) {
			b.SetBytes(int64(len(batch)))
			b.ReportAllocs()
			for b.Loop() {
				if err := ForEachRecord(batch, func(*Record) error { return nil }); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run("Records/records=100/size=100B/"+codec.String(), func(b *testing.B) {
			b.SetBytes(int64(len(batch)))
			b.ReportAllocs()
			for b.Loop() {
				if _, err := Records(batch); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
