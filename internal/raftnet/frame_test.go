package raftnet

import (
	"bytes"
	"encoding/binary"
	"errors"
	"reflect"
	"testing"

	"github.com/hashicorp/raft"
)

func TestFrameRoundTrip(t *testing.T) {
	reqs := map[byte]any{
		kindAppendEntries: &raft.AppendEntriesRequest{
			RPCHeader: raft.RPCHeader{ProtocolVersion: 3, ID: []byte("b1"), Addr: []byte("127.0.0.1:1")},
			Term:      7, PrevLogEntry: 10, PrevLogTerm: 6, LeaderCommitIndex: 9,
			Entries: []*raft.Log{{Index: 11, Term: 7, Type: raft.LogCommand, Data: []byte("hello")}},
		},
		kindRequestVote:     &raft.RequestVoteRequest{RPCHeader: raft.RPCHeader{ID: []byte("b2")}, Term: 3, LastLogIndex: 5, LastLogTerm: 2, LeadershipTransfer: true},
		kindRequestPreVote:  &raft.RequestPreVoteRequest{Term: 4, LastLogIndex: 8, LastLogTerm: 3},
		kindTimeoutNow:      &raft.TimeoutNowRequest{RPCHeader: raft.RPCHeader{ID: []byte("x")}},
		kindInstallSnapshot: &raft.InstallSnapshotRequest{SnapshotVersion: 1, Term: 2, LastLogIndex: 100, Size: 12345, Configuration: []byte{1, 2}},
	}
	for kind, req := range reqs {
		payload, err := encodeMsgCopy(req)
		if err != nil {
			t.Fatal(err)
		}
		b := appendFrame(nil, kind, 42, "topic-a/3", payload)
		f, err := decodeFrame(b, DefaultMaxFrame)
		if err != nil {
			t.Fatalf("kind %d: %v", kind, err)
		}
		if f.kind != kind || f.id != 42 || f.group != "topic-a/3" || !bytes.Equal(f.payload, payload) {
			t.Fatalf("kind %d: got %+v", kind, f)
		}
		got, err := newRequest(kind)
		if err != nil {
			t.Fatal(err)
		}
		if err := decodeMsg(f.payload, got); err != nil {
			t.Fatal(err)
		}
		if ae, ok := got.(*raft.AppendEntriesRequest); ok {
			// The codec decodes time.Time into the local zone; compare the rest.
			for _, e := range ae.Entries {
				e.AppendedAt = req.(*raft.AppendEntriesRequest).Entries[0].AppendedAt
			}
		}
		if !reflect.DeepEqual(got, req) {
			t.Fatalf("kind %d: decoded %#v, want %#v", kind, got, req)
		}
	}
}

func TestFrameLimits(t *testing.T) {
	big := binary.BigEndian.AppendUint32(nil, 1<<30)
	if _, err := decodeFrame(append(big, make([]byte, 64)...), 1<<20); !errors.Is(err, errFrameTooLarge) {
		t.Fatalf("oversized frame: %v", err)
	}
	if _, err := decodeFrame([]byte{0, 0, 0, 3, 1, 2, 3}, 1<<20); !errors.Is(err, errFrameShort) {
		t.Fatalf("short frame: %v", err)
	}
	// A group-name length beyond the frame.
	b := appendFrame(nil, kindRequestVote, 1, "g", nil)
	binary.BigEndian.PutUint16(b[13:], 500)
	if _, err := decodeFrame(b, 1<<20); !errors.Is(err, errFrameShort) {
		t.Fatalf("group beyond frame: %v", err)
	}
	// A 2 MiB length prefix with only a few bytes behind it: an error.
	lie := binary.BigEndian.AppendUint32(nil, 2<<20)
	if _, err := decodeFrame(append(lie, make([]byte, 100)...), 4<<20); err == nil {
		t.Fatal("truncated large frame decoded")
	}
}

// TestEncodeFrame: a frame encoded in place (payload straight after the header) equals one
// assembled from a separately encoded payload, whether the size hint was enough or not.
func TestEncodeFrame(t *testing.T) {
	req := &raft.AppendEntriesRequest{Term: 2, Entries: []*raft.Log{{Index: 1, Data: make([]byte, 5000)}, {Index: 2, Data: []byte("y")}}}
	payload, err := encodeMsgCopy(req)
	if err != nil {
		t.Fatal(err)
	}
	want := appendFrame(nil, kindAppendEntries, 7, "grp", payload)
	for _, hint := range []int{0, 100, sizeHint(req), 1 << 20} {
		got, err := encodeFrame(kindAppendEntries, 7, "grp", req, hint)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, want) {
			t.Fatalf("hint %d: frames differ (%d vs %d bytes)", hint, len(got), len(want))
		}
	}
	// Large frames are read into a buffer handed over with the frame.
	big := appendFrame(nil, kindAppendEntries, 1, "g", make([]byte, 3<<20))
	f, err := decodeFrame(big, DefaultMaxFrame)
	if err != nil || !f.owned || len(f.payload) != 3<<20 {
		t.Fatalf("large frame: %v owned=%v len=%d", err, f.owned, len(f.payload))
	}
}

func FuzzDecodeFrame(f *testing.F) {
	payload, _ := encodeMsgCopy(&raft.AppendEntriesRequest{Term: 1, Entries: []*raft.Log{{Index: 1, Data: []byte("x")}}})
	f.Add(appendFrame(nil, kindAppendEntries, 1, "g", payload))
	payload, _ = encodeMsgCopy(&raft.RequestVoteRequest{Term: 2})
	f.Add(appendFrame(nil, kindRequestVote, 9, "group-with-longer-name", payload))
	f.Add(appendFrame(nil, kindSnapshotChunk, 3, "g", []byte("data")))
	payload, _ = encodeMsgCopy(&raft.AppendEntriesRequest{Term: 3, RPCHeader: raft.RPCHeader{Addr: []byte("a:1")}})
	f.Add(appendFrame(nil, kindHeartbeat, 4, "g", payload))
	f.Add(appendFrame(nil, kindError, 3, "", []byte("no such group")))
	f.Add([]byte{0, 0, 0, 0})
	f.Add([]byte{0xff, 0xff, 0xff, 0xff, 1})
	f.Fuzz(func(t *testing.T, b []byte) {
		fr, err := decodeFrame(b, 1<<20)
		if err != nil {
			return
		}
		// Re-encoding gives back the bytes the frame was read from.
		re := appendFrame(nil, fr.kind, fr.id, fr.group, fr.payload)
		if !bytes.Equal(re, b[:len(re)]) {
			t.Fatalf("re-encoded %x, read from %x", re, b)
		}
		if req, err := newRequest(fr.kind); err == nil {
			_ = decodeMsg(fr.payload, req) // must not panic or allocate without bound
		}
	})
}
