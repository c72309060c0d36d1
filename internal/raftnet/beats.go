package raftnet

// Coalesced heartbeats: one frame per broker pair carries every group's heartbeat.
//
// hashicorp/raft's leader sends each follower of each group a heartbeat every
// HeartbeatTimeout/10 (randomized up to twice that). With hundreds of groups per broker pair
// that is hundreds of frames, msgpack encodings, and their responses, per interval, for
// nothing but "still here". raftnet takes them over:
//
//   - On the leader, a heartbeat Raft hands to Transport.AppendEntries is not sent. Its
//     (group, term, leader) is recorded for its target broker, and Raft gets the answer the
//     follower gave to the last beat of that group, if it is fresh (less than BeatFresh old).
//     Otherwise (the first heartbeat of a group, a stale answer) the heartbeat goes out as a
//     normal RPC, so Raft never takes an old answer for a live one.
//   - Every BeatInterval, one kindBeats request per target broker carries the recorded
//     heartbeats of every group that still records them (a group whose Raft stopped calling,
//     because it lost leadership or closed, drops out after Config.BeatExpiry).
//   - The follower hands each to its group's Raft heartbeat handler (the same fast path as a
//     real heartbeat: term checks, last-contact update) and answers one frame with every
//     group's (term, success), which becomes the leader side's fresh answers.
//
// Raft's safety never rests on heartbeats: commits need real AppendEntries. A fresh answer
// keeps the leader's lease, as a real heartbeat answer would; when the follower stops
// answering, the answers go stale after BeatFresh and the heartbeats fail as RPCs do.

import (
	"encoding/binary"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/hashicorp/raft"
)

// Defaults of the coalesced heartbeats.
const (
	DefaultBeatInterval = time.Second
	DefaultBeatFresh    = 3 * time.Second
	// DefaultBeatExpiry is how long a group's recorded heartbeat is sent on without Raft
	// recording it again (Raft heartbeats at least every 2 x HeartbeatTimeout/10: 4 s with the
	// partitions' 20 s).
	DefaultBeatExpiry = 6 * time.Second
)

// kindBeats carries coalesced heartbeats (request) and their answers (response payload).
const kindBeats byte = 9

type beatKey struct {
	target raft.ServerAddress
	group  string
}

// beat is one group's heartbeat towards one target, and the target's last answer.
type beat struct {
	term       uint64
	addr, id   []byte // the leader's RPC header
	recordedAt time.Time

	answered bool
	ansTerm  uint64
	ansOK    bool
	ansAt    time.Time
}

type beats struct {
	mu sync.Mutex
	m  map[beatKey]*beat
}

// coalescedHeartbeat answers a Raft heartbeat from the recorded answers, or reports that it must be
// sent as an RPC.
func (t *Transport) coalescedHeartbeat(target raft.ServerAddress, args *raft.AppendEntriesRequest, resp *raft.AppendEntriesResponse) bool {
	n := t.n
	if n.beatInterval <= 0 {
		return false
	}
	now := time.Now()
	k := beatKey{target, t.group}
	n.beats.mu.Lock()
	defer n.beats.mu.Unlock()
	b := n.beats.m[k]
	if b == nil {
		b = &beat{}
		n.beats.m[k] = b
	}
	if b.term != args.Term {
		b.answered = false // an answer about another term says nothing of this one
	}
	b.term, b.addr, b.id, b.recordedAt = args.Term, args.RPCHeader.Addr, args.RPCHeader.ID, now
	if !b.answered || now.Sub(b.ansAt) > n.beatFresh {
		return false
	}
	*resp = raft.AppendEntriesResponse{
		RPCHeader: raft.RPCHeader{ProtocolVersion: args.ProtocolVersion},
		Term:      b.ansTerm, Success: b.ansOK,
	}
	n.stats.beatsLocal.Add(1)
	return true
}

// beatLoop sends the recorded heartbeats, one request per target, every BeatInterval.
func (n *Network) beatLoop() {
	tick := time.NewTicker(n.beatInterval)
	defer tick.Stop()
	for {
		select {
		case <-n.done:
			return
		case <-tick.C:
		}
		for target, entries := range n.collectBeats() {
			if !n.goTracked(func() { n.sendBeats(target, entries) }) {
				return
			}
		}
	}
}

type beatEntry struct {
	group    string
	term     uint64
	addr, id []byte
}

// collectBeats returns, per target, the heartbeats to send now, dropping expired ones.
func (n *Network) collectBeats() map[raft.ServerAddress][]beatEntry {
	now := time.Now()
	out := map[raft.ServerAddress][]beatEntry{}
	n.beats.mu.Lock()
	defer n.beats.mu.Unlock()
	for k, b := range n.beats.m {
		if now.Sub(b.recordedAt) > n.beatExpiry || n.group(k.group) == nil {
			delete(n.beats.m, k)
			continue
		}
		out[k.target] = append(out[k.target], beatEntry{group: k.group, term: b.term, addr: b.addr, id: b.id})
	}
	return out
}

func (n *Network) sendBeats(target raft.ServerAddress, entries []beatEntry) {
	c, err := n.getConn(target, laneCtrl, n.done)
	if err != nil {
		return
	}
	id, cl, err := c.requestRaw(kindBeats, "", encodeBeats(entries), true, false)
	if err != nil {
		return
	}
	r := c.wait(id, cl, n.timeout, n.done, nil)
	if r.err != nil || r.kind != kindResponse {
		return
	}
	answers, err := decodeBeatAnswers(r.payload, len(entries))
	if err != nil {
		n.log.Warn().Err(err).Str("peer", string(target)).Msg("bad heartbeat answers")
		return
	}
	now := time.Now()
	n.beats.mu.Lock()
	defer n.beats.mu.Unlock()
	for i, e := range entries {
		b := n.beats.m[beatKey{target, e.group}]
		if b == nil || b.term != e.term {
			continue
		}
		b.answered, b.ansTerm, b.ansOK, b.ansAt = true, answers[i].term, answers[i].ok, now
	}
}

// handleBeats answers a kindBeats request on the follower: each group's Raft takes its
// heartbeat on the fast path.
func (n *Network) handleBeats(c *conn, f frame) error {
	entries, err := decodeBeats(f.payload)
	if err != nil {
		return err
	}
	answers := make([]beatAnswer, len(entries))
	for i, e := range entries {
		t := n.group(e.group)
		if t == nil {
			continue // no such group here: not answered (term 0, false)
		}
		fn := t.heartbeat.Load()
		if fn == nil {
			continue
		}
		req := &raft.AppendEntriesRequest{
			RPCHeader: raft.RPCHeader{ProtocolVersion: raft.ProtocolVersionMax, ID: e.id, Addr: e.addr},
			Term:      e.term,
		}
		t.noteLeader(req)
		respCh := make(chan raft.RPCResponse, 1)
		(*fn)(raft.RPC{Command: req, RespChan: respCh})
		select {
		case r := <-respCh:
			if resp, ok := r.Response.(*raft.AppendEntriesResponse); ok && r.Error == nil {
				answers[i] = beatAnswer{term: resp.Term, ok: resp.Success}
			}
		default: // Raft shutting down: no answer
		}
	}
	c.send(appendFrame(nil, kindResponse, f.id, "", encodeBeatAnswers(answers)), false)
	return nil
}

// Beat encodings: uvarint count, then per entry uvarint-length-prefixed group, uvarint term,
// length-prefixed leader address and id. Answers: uvarint count, then per entry uvarint term
// and one byte (1: success).

func encodeBeats(entries []beatEntry) []byte {
	b := binary.AppendUvarint(nil, uint64(len(entries)))
	for _, e := range entries {
		b = binary.AppendUvarint(b, uint64(len(e.group)))
		b = append(b, e.group...)
		b = binary.AppendUvarint(b, e.term)
		b = binary.AppendUvarint(b, uint64(len(e.addr)))
		b = append(b, e.addr...)
		b = binary.AppendUvarint(b, uint64(len(e.id)))
		b = append(b, e.id...)
	}
	return b
}

var errBadBeats = errors.New("raftnet: malformed heartbeats frame")

// beatReader reads the fields of the beat encodings, failing on anything short or oversized.
type beatReader struct {
	b   []byte
	err error
}

func (r *beatReader) uvarint() uint64 {
	if r.err != nil {
		return 0
	}
	v, n := binary.Uvarint(r.b)
	if n <= 0 {
		r.err = errBadBeats
		return 0
	}
	r.b = r.b[n:]
	return v
}

func (r *beatReader) bytes(max int) []byte {
	l := r.uvarint()
	if r.err != nil {
		return nil
	}
	if l > uint64(max) || l > uint64(len(r.b)) {
		r.err = errBadBeats
		return nil
	}
	out := append([]byte(nil), r.b[:l]...)
	r.b = r.b[l:]
	return out
}

func decodeBeats(p []byte) ([]beatEntry, error) {
	r := &beatReader{b: p}
	count := r.uvarint()
	if r.err != nil || count > uint64(len(p)) { // every entry takes at least a byte
		return nil, errBadBeats
	}
	out := make([]beatEntry, 0, count)
	for range count {
		e := beatEntry{group: string(r.bytes(MaxGroupLen))}
		e.term = r.uvarint()
		e.addr = r.bytes(1024)
		e.id = r.bytes(1024)
		if r.err != nil {
			return nil, r.err
		}
		out = append(out, e)
	}
	if len(r.b) != 0 {
		return nil, fmt.Errorf("%w: %d trailing bytes", errBadBeats, len(r.b))
	}
	return out, nil
}

type beatAnswer struct {
	term uint64
	ok   bool
}

func encodeBeatAnswers(answers []beatAnswer) []byte {
	b := binary.AppendUvarint(nil, uint64(len(answers)))
	for _, a := range answers {
		b = binary.AppendUvarint(b, a.term)
		ok := byte(0)
		if a.ok {
			ok = 1
		}
		b = append(b, ok)
	}
	return b
}

func decodeBeatAnswers(p []byte, want int) ([]beatAnswer, error) {
	r := &beatReader{b: p}
	count := r.uvarint()
	if r.err != nil || count != uint64(want) {
		return nil, fmt.Errorf("%w: %d answers for %d heartbeats", errBadBeats, count, want)
	}
	out := make([]beatAnswer, count)
	for i := range out {
		out[i].term = r.uvarint()
		if r.err != nil || len(r.b) == 0 {
			return nil, errBadBeats
		}
		out[i].ok = r.b[0] == 1
		r.b = r.b[1:]
	}
	if len(r.b) != 0 {
		return nil, errBadBeats
	}
	return out, nil
}
