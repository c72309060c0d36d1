package cluster

import (
	"encoding/json"
	"errors"
	"reflect"
	"testing"
)

// TestOffsetsBatchBinary: the binary batch decodes to what was encoded, the same command the
// JSON type carries, and a frame cut anywhere or given a byte too many is refused.
func TestOffsetsBatchBinary(t *testing.T) {
	cmd := commitOffsetsBatchCmd{AtMS: 1_795_000_000_123, Groups: []groupOffsetCommit{
		{Group: "billing", Offsets: []offsetCommit{
			{Topic: "orders", TopicID: "5f0c", Partition: 0, Offset: 0},
			{Topic: "orders", TopicID: "5f0c", Partition: 11, Offset: 1 << 40, Metadata: "node-3"},
		}},
		{Group: "audit"},
	}}
	frame := mustEncode(t, cmdCommitOffsetsBin, cmd)
	ct, v, err := decodeCommand(frame)
	if err != nil || ct != cmdCommitOffsetsBin {
		t.Fatal(ct, err)
	}
	if got := v.(*commitOffsetsBatchCmd); !reflect.DeepEqual(*got, cmd) {
		t.Fatalf("decoded %+v, want %+v", *got, cmd)
	}
	_, viaJSON, err := decodeCommand(mustEncode(t, cmdCommitOffsetsBatch, cmd))
	if err != nil || !reflect.DeepEqual(viaJSON, v) {
		t.Fatalf("the JSON type decodes to %+v (%v), the binary to %+v", viaJSON, err, v)
	}
	for n := commandHeaderSize; n < len(frame); n++ {
		cut := append([]byte(nil), frame[:n]...)
		cut[2], cut[3], cut[4], cut[5] = 0, 0, byte((n-commandHeaderSize)>>8), byte(n-commandHeaderSize)
		if _, _, err := decodeCommand(cut); !errors.Is(err, ErrBadCommand) {
			t.Fatalf("payload cut to %d bytes: %v", n-commandHeaderSize, err)
		}
	}
	long := append(append([]byte(nil), frame...), 0)
	long[5]++
	if _, _, err := decodeCommand(long); !errors.Is(err, ErrBadCommand) {
		t.Fatalf("a trailing byte: %v", err)
	}
	// Counts beyond what the bytes left can hold are refused before allocating.
	huge := mustEncode(t, cmdCommitOffsetsBin, commitOffsetsBatchCmd{AtMS: 1, Groups: []groupOffsetCommit{{Group: "g"}}})
	huge[commandHeaderSize+8] = 0x7f // 127 groups in a few bytes
	if _, _, err := decodeCommand(huge); !errors.Is(err, ErrBadCommand) {
		t.Fatalf("an oversized count: %v", err)
	}
	// Invalid contents are refused like the JSON command's.
	bad := mustEncode(t, cmdCommitOffsetsBin, commitOffsetsBatchCmd{AtMS: 1, Groups: []groupOffsetCommit{{Group: "g", Offsets: []offsetCommit{{Topic: "..", Offset: 1}}}}})
	if _, _, err := decodeCommand(bad); !errors.Is(err, ErrBadCommand) {
		t.Fatalf("a bad topic name: %v", err)
	}
}

// TestOffsetRecordFormats: a record written in binary reads back, and a record written as
// JSON (a state file from before the binary format) still reads.
func TestOffsetRecordFormats(t *testing.T) {
	rec := offsetRecord{TopicID: "5f0c", Offset: 42, Metadata: "m", AtMS: 1_795_000_000_123}
	got, err := decodeOffsetRecord(encodeOffsetRecord(rec))
	if err != nil || got != rec {
		t.Fatalf("binary: %+v %v", got, err)
	}
	old, _ := json.Marshal(rec)
	if got, err := decodeOffsetRecord(old); err != nil || got != rec {
		t.Fatalf("JSON: %+v %v", got, err)
	}
	for _, v := range [][]byte{nil, {2}, encodeOffsetRecord(rec)[:3], append(encodeOffsetRecord(rec), 0)} {
		if _, err := decodeOffsetRecord(v); err == nil {
			t.Errorf("%x: accepted", v)
		}
	}
}

// FuzzDecodeOffsetRecord: the record decoder never panics, and what it accepts in binary
// re-encodes to the same bytes.
func FuzzDecodeOffsetRecord(f *testing.F) {
	f.Add(encodeOffsetRecord(offsetRecord{TopicID: "t", Offset: 7, Metadata: "m", AtMS: 9}))
	f.Add([]byte(`{"offset":3,"at_ms":1}`))
	f.Fuzz(func(t *testing.T, v []byte) {
		r, err := decodeOffsetRecord(v)
		if err != nil || len(v) == 0 || v[0] != offsetRecordV1 {
			return
		}
		if again := encodeOffsetRecord(r); string(again) != string(v) {
			// Varints have one shortest form; a longer one decodes the same but is not
			// what the encoder writes: check it decodes equal instead.
			if r2, err := decodeOffsetRecord(again); err != nil || r2 != r {
				t.Fatalf("%x -> %+v -> %x -> %+v %v", v, r, again, r2, err)
			}
		}
	})
}
