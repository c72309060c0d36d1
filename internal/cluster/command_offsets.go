package cluster

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
)

// The offset-commit batch in binary (cmdCommitOffsetsBin): the coordinator proposes one
// per batch of commits, thousands a second, and every replica decodes it; JSON was a tenth
// of a 3-broker cluster's CPU per commit (BenchmarkGroupCommitsCluster's profile, session 6).
// The other commands are rare and stay JSON.
//
//	payload := at_ms (8 bytes BE) | uvarint group count | group...
//	group   := string name | uvarint offset count | offset...
//	offset  := string topic | string topic_id | uvarint partition | uvarint offset | string metadata
//	string  := uvarint length | bytes
//
// The payload's length is the frame's (checked before decoding); every count and length is
// checked against the bytes left before anything is allocated, and the decoded batch is
// validated like the JSON one.

// minOffsetBytes is the smallest encoding of one offset (empty strings, small numbers); a
// count is refused if the bytes left cannot hold that many.
const minOffsetBytes = 5

func appendString(b []byte, s string) []byte {
	b = binary.AppendUvarint(b, uint64(len(s)))
	return append(b, s...)
}

// encodeOffsetsBatch encodes c as a payload.
func encodeOffsetsBatch(c *commitOffsetsBatchCmd) []byte {
	n := 8 + binary.MaxVarintLen64
	for _, g := range c.Groups {
		n += len(g.Group) + 2*binary.MaxVarintLen64
		for _, o := range g.Offsets {
			n += len(o.Topic) + len(o.TopicID) + len(o.Metadata) + 5*binary.MaxVarintLen64
		}
	}
	b := make([]byte, 8, n)
	binary.BigEndian.PutUint64(b, uint64(c.AtMS))
	b = binary.AppendUvarint(b, uint64(len(c.Groups)))
	for _, g := range c.Groups {
		b = appendString(b, g.Group)
		b = binary.AppendUvarint(b, uint64(len(g.Offsets)))
		for _, o := range g.Offsets {
			b = appendString(b, o.Topic)
			b = appendString(b, o.TopicID)
			b = binary.AppendUvarint(b, uint64(uint32(o.Partition)))
			b = binary.AppendUvarint(b, uint64(o.Offset))
			b = appendString(b, o.Metadata)
		}
	}
	return b
}

// payloadReader reads the binary payload; the first error sticks.
type payloadReader struct {
	b   []byte
	err error
}

func (r *payloadReader) fail(format string, args ...any) {
	if r.err == nil {
		r.err = fmt.Errorf(format, args...)
	}
}

func (r *payloadReader) uvarint(what string) uint64 {
	if r.err != nil {
		return 0
	}
	v, n := binary.Uvarint(r.b)
	if n <= 0 {
		r.fail("%s: bad varint", what)
		return 0
	}
	r.b = r.b[n:]
	return v
}

// count reads a count of items of at least minBytes each.
func (r *payloadReader) count(what string, minBytes int) int {
	v := r.uvarint(what)
	if r.err == nil && v > uint64(len(r.b)/minBytes) {
		r.fail("%s: %d, more than the %d bytes left can hold", what, v, len(r.b))
		return 0
	}
	return int(v)
}

func (r *payloadReader) string(what string) string {
	n := r.uvarint(what)
	if r.err != nil {
		return ""
	}
	if n > uint64(len(r.b)) {
		r.fail("%s: length %d, %d bytes left", what, n, len(r.b))
		return ""
	}
	s := string(r.b[:n])
	r.b = r.b[n:]
	return s
}

// decodeOffsetsBatch decodes a payload (not yet validated).
func decodeOffsetsBatch(b []byte) (*commitOffsetsBatchCmd, error) {
	if len(b) < 8 {
		return nil, errors.New("shorter than its timestamp")
	}
	c := &commitOffsetsBatchCmd{AtMS: int64(binary.BigEndian.Uint64(b))}
	r := &payloadReader{b: b[8:]}
	ng := r.count("group count", 2)
	if ng > 0 {
		c.Groups = make([]groupOffsetCommit, 0, ng)
	}
	for range ng {
		g := groupOffsetCommit{Group: r.string("group")}
		no := r.count("offset count", minOffsetBytes)
		if no > 0 {
			g.Offsets = make([]offsetCommit, 0, no)
		}
		for range no {
			o := offsetCommit{Topic: r.string("topic"), TopicID: r.string("topic id")}
			p := r.uvarint("partition")
			if p > 1<<31-1 {
				r.fail("partition %d", p)
			}
			off := r.uvarint("offset")
			if off > 1<<63-1 {
				r.fail("offset %d", off)
			}
			o.Partition, o.Offset = int32(p), int64(off)
			o.Metadata = r.string("metadata")
			if r.err != nil {
				return nil, r.err
			}
			g.Offsets = append(g.Offsets, o)
		}
		if r.err != nil {
			return nil, r.err
		}
		c.Groups = append(c.Groups, g)
	}
	if r.err != nil {
		return nil, r.err
	}
	if len(r.b) > 0 {
		return nil, fmt.Errorf("%d bytes of trailing data", len(r.b))
	}
	return c, nil
}

// A committed offset as stored under groups/<group>/ (offsetRecord): JSON before session 6,
// binary since (offsetRecordV1 then the payload below); readers take both, telling them by
// the first byte (JSON's is '{').
//
//	record := 0x01 | uvarint offset | varint at_ms | string topic_id | string metadata
const offsetRecordV1 = 0x01

func encodeOffsetRecord(r offsetRecord) []byte {
	b := make([]byte, 1, 1+3*binary.MaxVarintLen64+len(r.TopicID)+len(r.Metadata))
	b[0] = offsetRecordV1
	b = binary.AppendUvarint(b, uint64(r.Offset))
	b = binary.AppendVarint(b, r.AtMS)
	b = appendString(b, r.TopicID)
	return appendString(b, r.Metadata)
}

func decodeOffsetRecord(v []byte) (offsetRecord, error) {
	var r offsetRecord
	if len(v) > 0 && v[0] == '{' {
		err := json.Unmarshal(v, &r)
		return r, err
	}
	if len(v) == 0 || v[0] != offsetRecordV1 {
		return r, errors.New("offset record: unknown format")
	}
	p := &payloadReader{b: v[1:]}
	off := p.uvarint("offset")
	if off > 1<<63-1 {
		p.fail("offset %d", off)
	}
	r.Offset = int64(off)
	if p.err == nil {
		at, n := binary.Varint(p.b)
		if n <= 0 {
			p.fail("at_ms: bad varint")
		} else {
			r.AtMS, p.b = at, p.b[n:]
		}
	}
	r.TopicID = p.string("topic id")
	r.Metadata = p.string("metadata")
	if p.err == nil && len(p.b) > 0 {
		p.fail("%d bytes of trailing data", len(p.b))
	}
	if p.err != nil {
		return offsetRecord{}, fmt.Errorf("offset record: %w", p.err)
	}
	return r, nil
}
