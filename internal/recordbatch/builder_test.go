package recordbatch

import (
	"bytes"
	"fmt"
	"testing"
)

// TestDetachEqualsBuild: Detach returns the bytes Build does, for every codec, and the
// builder goes on building correct batches after it.
func TestDetachEqualsBuild(t *testing.T) {
	for _, c := range []Compression{CompressionNone, CompressionGzip, CompressionSnappy, CompressionLZ4, CompressionZstd} {
		a, b := NewBuilder(BuilderOptions{Compression: c}), NewBuilder(BuilderOptions{Compression: c})
		for round := range 3 {
			for i := range 50 + round*300 {
				r := Record{Timestamp: int64(1000 + i), Key: []byte(fmt.Sprint("k", i)), Value: bytes.Repeat([]byte{byte(i)}, i%700),
					Headers: []RecordHeader{{Key: "h", Value: []byte{byte(round)}}}}
				a.Add(r)
				b.Add(r)
			}
			want, err := a.Build()
			if err != nil {
				t.Fatal(err)
			}
			a.Reset()
			got, err := b.Detach(1024)
			if err != nil {
				t.Fatal(err)
			}
			if c == CompressionNone && !bytes.Equal(got, want) {
				t.Fatalf("codec %v round %d: Detach differs from Build", c, round)
			}
			if _, err := Validate(got, len(got)); err != nil {
				t.Fatalf("codec %v round %d: %v", c, round, err)
			}
			recs, err := Records(got)
			if err != nil || len(recs) != 50+round*300 {
				t.Fatalf("codec %v round %d: %d records, %v", c, round, len(recs), err)
			}
		}
	}
	if _, err := NewBuilder(BuilderOptions{}).Detach(0); err == nil {
		t.Fatal("Detach of an empty builder succeeded")
	}
}
