package raftnet

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"slices"
	"sync"

	"github.com/hashicorp/go-msgpack/v2/codec"
	"github.com/hashicorp/raft"
)

// Marker is the first byte of every Raft connection, so that cmux can route it (see Match). It is
// below 0x20: no HTTP/1 method or HTTP/2 preface starts with it.
const Marker byte = 0x1e

// protocolVersion is the second byte of every connection.
const protocolVersion byte = 1

// Connection types, the third byte of every connection.
const (
	connMux      byte = 1 // long-lived, multiplexed requests of every group; responses on the same connection
	connSnapshot byte = 2 // one InstallSnapshot request, its chunks, one response, then closed
)

// Frame kinds.
const (
	kindAppendEntries   byte = 1
	kindRequestVote     byte = 2
	kindInstallSnapshot byte = 3
	kindTimeoutNow      byte = 4
	kindRequestPreVote  byte = 5
	kindSnapshotChunk   byte = 6 // raw snapshot bytes following kindInstallSnapshot; empty = end
	kindHeartbeat       byte = 7 // an AppendEntries that is raft's heartbeat: decoded on arrival
	kindResponse        byte = 0x80
	kindError           byte = 0x81 // payload: UTF-8 error text
)

const (
	// frameHeaderLen is the fixed part after the length prefix: kind, request id, group-name length.
	frameHeaderLen = 1 + 8 + 2
	// MaxGroupLen caps a group name.
	MaxGroupLen = 1024
	// DefaultMaxFrame caps a frame's length (AppendEntries carrying several large batches).
	DefaultMaxFrame = 128 << 20
	// snapshotChunk is the size of the data chunks of an InstallSnapshot stream.
	snapshotChunk = 64 << 10
)

var (
	errFrameTooLarge = errors.New("raftnet: frame too large")
	errFrameShort    = errors.New("raftnet: frame shorter than its header")
	errGroupTooLong  = errors.New("raftnet: group name too long")
)

// frame is one decoded frame. payload aliases the reader's buffer until the next read, unless
// owned is set (a large frame read into a buffer of its own, which the reader forgets).
type frame struct {
	kind    byte
	id      uint64
	group   string
	payload []byte
	owned   bool
}

// appendFrame appends the encoding of a frame to dst.
func appendFrame(dst []byte, kind byte, id uint64, group string, payload []byte) []byte {
	n := frameHeaderLen + len(group) + len(payload)
	dst = binary.BigEndian.AppendUint32(dst, uint32(n))
	dst = append(dst, kind)
	dst = binary.BigEndian.AppendUint64(dst, id)
	dst = binary.BigEndian.AppendUint16(dst, uint16(len(group)))
	dst = append(dst, group...)
	return append(dst, payload...)
}

// frameReader reads frames from a connection, reusing one buffer.
type frameReader struct {
	r        *bufio.Reader
	max      int
	buf      []byte
	lastName string // interned group name: consecutive frames of a group share one string
}

// next reads one frame. The payload is valid until the next call. Lengths are checked against
// the caps before anything is allocated.
func (fr *frameReader) next() (frame, error) {
	var hdr [4]byte
	if _, err := io.ReadFull(fr.r, hdr[:]); err != nil {
		return frame{}, err
	}
	n := binary.BigEndian.Uint32(hdr[:])
	if uint64(n) > uint64(fr.max) {
		return frame{}, fmt.Errorf("%w: %d bytes (max %d)", errFrameTooLarge, n, fr.max)
	}
	if n < frameHeaderLen {
		return frame{}, errFrameShort
	}
	if int(n) <= 1<<20 {
		if cap(fr.buf) < int(n) {
			fr.buf = make([]byte, 0, max(int(n), 4096))
		}
		b := fr.buf[:n]
		if _, err := io.ReadFull(fr.r, b); err != nil {
			return frame{}, noEOF(err)
		}
		return fr.parse(b)
	}
	// A large frame gets a buffer of its own, handed over with the frame (no copy). Up to
	// 16 MiB it is allocated at once; beyond, it grows as the bytes arrive, so that a lying
	// length prefix costs at most about what was actually sent.
	b := make([]byte, 0, min(int(n), 16<<20))
	for len(b) < int(n) {
		step := min(int(n)-len(b), max(cap(b)-len(b), len(b)))
		b = slices.Grow(b, step)
		if _, err := io.ReadFull(fr.r, b[len(b):len(b)+step]); err != nil {
			return frame{}, noEOF(err)
		}
		b = b[:len(b)+step]
	}
	f, err := fr.parse(b)
	f.owned = true
	return f, err
}

func noEOF(err error) error {
	if err == io.EOF {
		return io.ErrUnexpectedEOF
	}
	return err
}

func (fr *frameReader) parse(b []byte) (frame, error) {
	f := frame{kind: b[0], id: binary.BigEndian.Uint64(b[1:9])}
	gl := int(binary.BigEndian.Uint16(b[9:11]))
	if gl > MaxGroupLen {
		return frame{}, errGroupTooLong
	}
	if frameHeaderLen+gl > len(b) {
		return frame{}, errFrameShort
	}
	name := b[frameHeaderLen : frameHeaderLen+gl]
	if string(name) != fr.lastName {
		fr.lastName = string(name)
	}
	f.group = fr.lastName
	f.payload = b[frameHeaderLen+gl:]
	return f, nil
}

// decodeFrame decodes one frame from the start of b (exported to tests and the fuzzer through
// the same code path as connections use).
func decodeFrame(b []byte, maxFrame int) (frame, error) {
	fr := frameReader{r: bufio.NewReaderSize(bytesReader(b), 16), max: maxFrame}
	return fr.next()
}

type bytesReaderT struct{ b []byte }

func bytesReader(b []byte) *bytesReaderT { return &bytesReaderT{b} }

func (r *bytesReaderT) Read(p []byte) (int, error) {
	if len(r.b) == 0 {
		return 0, io.EOF
	}
	n := copy(p, r.b)
	r.b = r.b[n:]
	return n, nil
}

// msgpackHandle matches NetworkTransport's encoding (TimeNotBuiltin: raft's default format).
var msgpackHandle = func() *codec.MsgpackHandle {
	h := &codec.MsgpackHandle{}
	h.TimeNotBuiltin = true
	return h
}()

// encoder is a pooled msgpack encoder and its output buffer (codecs are costly to create).
type encoder struct {
	enc *codec.Encoder
	buf []byte
}

var encoders = sync.Pool{New: func() any {
	e := &encoder{buf: make([]byte, 0, 1024)}
	e.enc = codec.NewEncoderBytes(&e.buf, msgpackHandle)
	return e
}}

var decoders = sync.Pool{New: func() any { return codec.NewDecoderBytes(nil, msgpackHandle) }}

// encodeMsg encodes v; the result is valid until release is called.
func encodeMsg(v any) (payload []byte, release func(), err error) {
	e := encoders.Get().(*encoder)
	out := e.buf[:0]
	e.enc.ResetBytes(&out)
	if err := e.enc.Encode(v); err != nil {
		encoders.Put(e)
		return nil, nil, err
	}
	return out, func() {
		if cap(out) <= 64<<10 {
			e.buf = out[:0]
		}
		encoders.Put(e)
	}, nil
}

// encodeFrame encodes a frame whose payload is msgpack of v, straight into the frame's buffer
// when sizeHint (the payload's expected size) is enough.
func encodeFrame(kind byte, id uint64, group string, v any, sizeHint int) ([]byte, error) {
	hl := 4 + frameHeaderLen + len(group)
	buf := appendFrame(make([]byte, 0, hl+sizeHint), kind, id, group, nil)
	e := encoders.Get().(*encoder)
	defer encoders.Put(e)
	out := buf[hl:hl]
	e.enc.ResetBytes(&out)
	err := e.enc.Encode(v)
	keep := e.buf[:0]
	e.enc.ResetBytes(&keep) // drop the reference to buf
	if err != nil {
		return nil, err
	}
	if len(out) > 0 && (cap(buf) < hl+len(out) || &buf[:hl+1][hl] != &out[0]) {
		buf = append(buf, out...) // the hint was short: the encoder moved to a buffer of its own
	} else {
		buf = buf[:hl+len(out)]
	}
	binary.BigEndian.PutUint32(buf, uint32(len(buf)-4))
	return buf, nil
}

// sizeHint estimates the encoded size of a request or response.
func sizeHint(v any) int {
	if ae, ok := v.(*raft.AppendEntriesRequest); ok {
		n := 256
		for _, e := range ae.Entries {
			n += 64 + len(e.Data) + len(e.Extensions)
		}
		return n
	}
	return 256
}

// encodeMsgCopy encodes v into a new slice.
func encodeMsgCopy(v any) ([]byte, error) {
	b, release, err := encodeMsg(v)
	if err != nil {
		return nil, err
	}
	defer release()
	return append([]byte(nil), b...), nil
}

func decodeMsg(b []byte, v any) error {
	d := decoders.Get().(*codec.Decoder)
	d.ResetBytes(b)
	err := d.Decode(v)
	d.ResetBytes([]byte{}) // drop the reference to b
	decoders.Put(d)
	return err
}

// newRequest returns a zero request struct for a request kind.
func newRequest(kind byte) (any, error) {
	switch kind {
	case kindAppendEntries, kindHeartbeat:
		return &raft.AppendEntriesRequest{}, nil
	case kindRequestVote:
		return &raft.RequestVoteRequest{}, nil
	case kindInstallSnapshot:
		return &raft.InstallSnapshotRequest{}, nil
	case kindTimeoutNow:
		return &raft.TimeoutNowRequest{}, nil
	case kindRequestPreVote:
		return &raft.RequestPreVoteRequest{}, nil
	}
	return nil, fmt.Errorf("raftnet: unknown request kind %d", kind)
}

// isHeartbeat reports whether req is raft's heartbeat (the same test as NetworkTransport).
func isHeartbeat(req *raft.AppendEntriesRequest) bool {
	leaderAddr := req.RPCHeader.Addr
	if len(leaderAddr) == 0 {
		//lint:ignore SA1019 raft still fills the deprecated field; NetworkTransport reads it too
		leaderAddr = req.Leader
	}
	return req.Term != 0 && leaderAddr != nil && req.PrevLogEntry == 0 && req.PrevLogTerm == 0 &&
		len(req.Entries) == 0 && req.LeaderCommitIndex == 0
}
