package raftnet

import (
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/raft"
)

// Transport is one Raft group's transport on a Network. It implements raft.Transport,
// raft.WithPreVote and raft.WithClose.
type Transport struct {
	n         *Network
	group     string
	consumeCh chan raft.RPC
	inbox     chan *inbound
	heartbeat atomic.Pointer[func(raft.RPC)]
	closeOnce sync.Once
	closed    chan struct{}
	abortOnce sync.Once
	aborted   chan struct{} // Abort (patience.go)

	// progress is, per target address, the last log index a successful AppendEntries
	// response reported (raft.AppendEntriesResponse.LastLog): on a leader, how far each
	// follower's log has caught up. hashicorp/raft keeps its own match indexes private.
	progress sync.Map // raft.ServerAddress -> progress
	// sentTerm is the highest term of an AppendEntries sent from here (as a leader).
	sentTerm atomic.Uint64

	// idle is, per target address, the follower's last answer to an idle AppendEntries
	// (idle.go): repeats of it are answered here.
	idle sync.Map // raft.ServerAddress -> idleAck

	// plainHeartbeats: this group's heartbeats are RPCs, not coalesced (DisableCoalescing).
	plainHeartbeats atomic.Bool

	// leader is the address of the group's leader as last seen in an AppendEntries it sent
	// here (raft.ServerAddress); liveness.go probes it.
	leader atomic.Value

	// active is when this group last heard from its leader or acted as one (unix nanos):
	// an AppendEntries or heartbeat received, or one Raft asked to send (liveness.go,
	// GroupActive).
	active atomic.Int64
}

var (
	_ raft.Transport   = (*Transport)(nil)
	_ raft.WithPreVote = (*Transport)(nil)
	_ raft.WithClose   = (*Transport)(nil)
)

// inbound is a request for this group read from a connection, waiting for raft.
type inbound struct {
	kind   byte
	raw    []byte // the encoded request, when rpc.Command is still to be decoded
	lazy   bool   // set when decoded: an AppendEntries without entries (its response is lazy)
	rpc    raft.RPC
	respCh chan raft.RPCResponse
	reply  func(raft.RPCResponse)
}

// decode sets rpc.Command from raw.
func (in *inbound) decode() error {
	if in.raw == nil {
		return nil
	}
	req, err := newRequest(in.kind)
	if err != nil {
		return err
	}
	if err := decodeMsg(in.raw, req); err != nil {
		return fmt.Errorf("raftnet: decoding %T: %w", req, err)
	}
	in.raw = nil
	if ae, ok := req.(*raft.AppendEntriesRequest); ok {
		in.lazy = len(ae.Entries) == 0
	}
	in.rpc.Command = req
	return nil
}

// DisableCoalescing makes this group's heartbeats plain RPCs (beats.go coalesces them into a
// frame per broker every BeatInterval, which a group whose heartbeat timeout is not well
// above BeatInterval cannot wait for). Call it before the group's Raft starts.
func (t *Transport) DisableCoalescing() { t.plainHeartbeats.Store(true) }

// Group returns the group's name.
func (t *Transport) Group() string { return t.group }

// Consumer implements raft.Transport.
func (t *Transport) Consumer() <-chan raft.RPC { return t.consumeCh }

// LocalAddr implements raft.Transport: the broker's address.
func (t *Transport) LocalAddr() raft.ServerAddress { return t.n.cfg.Advertise }

// SetHeartbeatHandler implements raft.Transport. Heartbeats are handed to cb on the
// connection's reader, not queued behind the group's other requests.
func (t *Transport) SetHeartbeatHandler(cb func(rpc raft.RPC)) {
	if cb == nil {
		t.heartbeat.Store(nil)
		return
	}
	t.heartbeat.Store(&cb)
}

// EncodePeer implements raft.Transport.
func (t *Transport) EncodePeer(_ raft.ServerID, addr raft.ServerAddress) []byte { return []byte(addr) }

// DecodePeer implements raft.Transport.
func (t *Transport) DecodePeer(b []byte) raft.ServerAddress { return raft.ServerAddress(b) }

// Close implements raft.WithClose: the group stops receiving (peers get "unknown group") and
// its outstanding RPCs fail. The Network and the other groups are unaffected.
func (t *Transport) Close() error {
	t.closeOnce.Do(func() {
		t.n.removeGroup(t)
		close(t.closed)
	})
	return nil
}

// AppendEntries implements raft.Transport.
func (t *Transport) AppendEntries(_ raft.ServerID, target raft.ServerAddress, args *raft.AppendEntriesRequest, resp *raft.AppendEntriesResponse) error {
	t.active.Store(time.Now().UnixNano())
	t.noteSentTerm(args.Term)
	if isHeartbeat(args) && !t.plainHeartbeats.Load() && t.coalescedHeartbeat(target, args, resp) {
		return nil // answered from the coalesced heartbeats (beats.go)
	}
	if t.answerIdle(target, args, resp) {
		return nil // a repeat of an idle append the follower acknowledged (idle.go)
	}
	if len(args.Entries) > 0 {
		t.idle.Delete(target) // the follower's log changes: no repeat of before is current
	}
	lane := laneCtrl
	if len(args.Entries) > 0 {
		lane = laneBulk
	}
	var err error
	if isHeartbeat(args) {
		err = t.rpc(target, lane, appendKind(args), args, resp, true, true)
	} else {
		err = t.appendPatiently(target, lane, args, resp) // patience.go
	}
	if err == nil {
		t.noteProgress(target, args, resp)
		t.noteIdle(target, args, resp)
	} else {
		t.idle.Delete(target)
	}
	return err
}

// noteProgress records a follower's last log index from a successful AppendEntries response.
func (t *Transport) noteProgress(target raft.ServerAddress, args *raft.AppendEntriesRequest, resp *raft.AppendEntriesResponse) {
	if resp.Success {
		t.progress.Store(target, progress{index: resp.LastLog, at: time.Now(), term: args.Term})
	}
}

type progress struct {
	index uint64
	at    time.Time
	term  uint64 // of the leader that sent the request answered
}

// noteSentTerm records the term of an AppendEntries Raft asks to send: this replica leads in
// it (Progress ignores what followers answered to an earlier leadership).
func (t *Transport) noteSentTerm(term uint64) {
	for {
		cur := t.sentTerm.Load()
		if term <= cur || t.sentTerm.CompareAndSwap(cur, term) {
			return
		}
	}
}

// Progress returns the last log index the peer at addr reported in a successful
// AppendEntries response to this transport (on a group's leader: how far that follower has
// replicated), when it did, and whether it reported any in the latest term this replica sent
// appends in (answers to an earlier leadership of this replica do not count). (An idle
// group's followers answer an AppendEntries every commit timeout; heartbeats do not count.)
func (t *Transport) Progress(addr raft.ServerAddress) (index uint64, at time.Time, ok bool) {
	v, ok := t.progress.Load(addr)
	if !ok {
		return 0, time.Time{}, false
	}
	pr := v.(progress)
	if pr.term < t.sentTerm.Load() {
		// An answer to this replica's earlier leadership: the follower's log may have
		// changed since under other leaders (a leader cut off and back kept a stale suffix).
		return 0, time.Time{}, false
	}
	return pr.index, pr.at, true
}

// appendKind is the frame kind of an AppendEntries: heartbeats have their own, so that the
// receiver can take them on its fast path without decoding anything else on arrival.
func appendKind(args *raft.AppendEntriesRequest) byte {
	if isHeartbeat(args) {
		return kindHeartbeat
	}
	return kindAppendEntries
}

// RequestVote implements raft.Transport.
func (t *Transport) RequestVote(_ raft.ServerID, target raft.ServerAddress, args *raft.RequestVoteRequest, resp *raft.RequestVoteResponse) error {
	return t.rpc(target, laneCtrl, kindRequestVote, args, resp, true, false)
}

// RequestPreVote implements raft.WithPreVote.
func (t *Transport) RequestPreVote(_ raft.ServerID, target raft.ServerAddress, args *raft.RequestPreVoteRequest, resp *raft.RequestPreVoteResponse) error {
	return t.rpc(target, laneCtrl, kindRequestPreVote, args, resp, true, false)
}

// TimeoutNow implements raft.Transport.
func (t *Transport) TimeoutNow(_ raft.ServerID, target raft.ServerAddress, args *raft.TimeoutNowRequest, resp *raft.TimeoutNowResponse) error {
	return t.rpc(target, laneCtrl, kindTimeoutNow, args, resp, true, false)
}

// rpc sends a request and waits for its response. high: ahead of queued bulk frames; lazy: may
// wait up to Config.Linger to share a write.
func (t *Transport) rpc(target raft.ServerAddress, lane int, kind byte, args, resp any, high, lazy bool) error {
	select {
	case <-t.closed:
		return raft.ErrTransportShutdown
	default:
	}
	c, err := t.n.getConn(target, lane, t.closed)
	if err != nil {
		return err
	}
	id, cl, err := c.request(kind, t.group, args, high, lazy)
	if err != nil {
		return err
	}
	return decodeResult(c.wait(id, cl, t.n.timeout, t.closed, nil), resp)
}

func decodeResult(r result, resp any) error {
	if r.err != nil {
		return r.err
	}
	if r.kind == kindError {
		return &RemoteError{Msg: string(r.payload)}
	}
	if err := decodeMsg(r.payload, resp); err != nil {
		return fmt.Errorf("raftnet: decoding response: %w", err)
	}
	return nil
}

// dispatch hands queued requests to raft one at a time, in arrival order, and routes raft's
// responses back.
func (t *Transport) dispatch() {
	for {
		var in *inbound
		select {
		case in = <-t.inbox:
		case <-t.closed:
			return
		}
		if err := in.decode(); err != nil {
			in.reply(raft.RPCResponse{Error: err})
			continue
		}
		if ae, ok := in.rpc.Command.(*raft.AppendEntriesRequest); ok {
			t.noteLeader(ae)
		}
		select {
		case t.consumeCh <- in.rpc:
		case <-t.closed:
			in.reply(raft.RPCResponse{Error: raft.ErrTransportShutdown})
			return
		}
		select {
		case resp := <-in.respCh:
			in.reply(resp)
		case <-t.closed:
			in.reply(raft.RPCResponse{Error: raft.ErrTransportShutdown})
			return
		}
	}
}

// handleRequest handles a frame read from an inbound multiplexed connection. An error closes
// the connection (protocol violation). Only heartbeats are decoded here; other requests are
// copied and decoded by their group's goroutine, so that decoding a group's large AppendEntries
// does not hold up the other groups' frames on the connection.
func (n *Network) handleRequest(c *conn, f frame) error {
	if f.kind == kindInstallSnapshot || f.kind == kindSnapshotChunk {
		return fmt.Errorf("raftnet: frame kind %d on a multiplexed connection", f.kind)
	}
	if f.kind == kindPing {
		c.send(appendFrame(nil, kindResponse, f.id, "", nil), false)
		return nil
	}
	if f.kind == kindBeats {
		return n.handleBeats(c, f)
	}
	if f.kind == kindActive {
		c.send(appendFrame(nil, kindResponse, f.id, "", []byte{n.activeByte(f.group)}), false)
		return nil
	}
	if _, err := newRequest(f.kind); err != nil {
		return err
	}
	id, group := f.id, f.group
	t := n.group(group)
	if t == nil && f.kind != kindHeartbeat {
		// A group being created here (a new partition's replicas open one by one, its first
		// candidate may ask before this broker has opened its replica): hold the request a
		// moment rather than fail the election.
		if !f.owned {
			f.payload, f.owned = append([]byte(nil), f.payload...), true
		}
		n.goTracked(func() {
			deadline := time.Now().Add(unknownGroupWait)
			for n.group(group) == nil && time.Now().Before(deadline) {
				select {
				case <-n.done:
					return
				case <-c.closed:
					return
				case <-time.After(10 * time.Millisecond):
				}
			}
			if n.group(group) == nil {
				c.send(errorFrame(id, group, fmt.Sprintf("raftnet: no raft group %q on %s", group, n.cfg.Advertise)), false)
				return
			}
			if err := n.handleRequest(c, f); err != nil {
				c.fail(err)
			}
		})
		return nil
	}
	if t == nil {
		c.send(errorFrame(id, group, fmt.Sprintf("raftnet: no raft group %q on %s", group, n.cfg.Advertise)), false)
		return nil
	}
	respCh := make(chan raft.RPCResponse, 1)
	in := &inbound{
		kind:   f.kind,
		respCh: respCh,
		rpc:    raft.RPC{RespChan: respCh},
	}
	if f.kind == kindHeartbeat {
		req := new(raft.AppendEntriesRequest)
		if err := decodeMsg(f.payload, req); err != nil {
			c.send(errorFrame(id, group, fmt.Sprintf("raftnet: decoding request of group %q: %v", group, err)), false)
			return nil
		}
		in.rpc.Command = req
		in.lazy = len(req.Entries) == 0
		t.noteLeader(req)
		in.reply = func(r raft.RPCResponse) { c.send(responseFrame(id, group, r), in.lazy) }
		if fn := t.heartbeat.Load(); fn != nil && isHeartbeat(req) {
			(*fn)(in.rpc)
			select {
			case r := <-respCh:
				in.reply(r)
			default:
				n.goTracked(func() {
					select {
					case r := <-respCh:
						in.reply(r)
					case <-t.closed:
					case <-c.closed:
					}
				})
			}
			return nil
		}
	} else {
		in.raw = f.payload
		if !f.owned {
			in.raw = append([]byte(nil), f.payload...)
		}
		in.reply = func(r raft.RPCResponse) { c.send(responseFrame(id, group, r), in.lazy) } // lazy: set by decode
	}
	select {
	case t.inbox <- in:
	default:
		// Never block the connection's reader on one group (a raft that stopped consuming, a
		// slow disk): refuse, and raft retries.
		in.reply(raft.RPCResponse{Error: fmt.Errorf("raftnet: group %q on %s has %d requests queued", group, n.cfg.Advertise, inboxLen)})
	}
	return nil
}

// unknownGroupWait is how long a request for a group not (yet) open here is held.
const unknownGroupWait = time.Second

func errorFrame(id uint64, group, msg string) []byte {
	return appendFrame(nil, kindError, id, group, []byte(msg))
}

func responseFrame(id uint64, group string, r raft.RPCResponse) []byte {
	if r.Error != nil {
		return errorFrame(id, group, r.Error.Error())
	}
	f, err := encodeFrame(kindResponse, id, group, r.Response, 128)
	if err != nil {
		return errorFrame(id, group, "raftnet: encoding response: "+err.Error())
	}
	return f
}

// AppendEntriesPipeline implements raft.Transport: up to Config.MaxRPCsInFlight AppendEntries
// in flight, completed in the order sent. Requests with entries go on the bulk connection, and so
// do empty ones while any of those are in flight (so that they arrive in order); an empty one
// with nothing in flight (an idle group's commit-index update) goes on the control connection,
// where it is coalesced with other groups' heartbeats.
func (t *Transport) AppendEntriesPipeline(_ raft.ServerID, target raft.ServerAddress) (raft.AppendPipeline, error) {
	if t.n.maxInFlight < 2 {
		return nil, raft.ErrPipelineReplicationNotSupported
	}
	p := &pipeline{
		t:        t,
		target:   target,
		inflight: make(chan *appendFuture, t.n.maxInFlight-1),
		done:     make(chan raft.AppendFuture, t.n.maxInFlight),
		closed:   make(chan struct{}),
	}
	if !t.n.goTracked(p.receive) {
		return nil, raft.ErrTransportShutdown
	}
	return p, nil
}

type pipeline struct {
	t         *Transport
	target    raft.ServerAddress
	bulk      atomic.Int64 // requests in flight on the bulk connection
	sent      atomic.Int64 // requests sent and not yet completed
	inflight  chan *appendFuture
	done      chan raft.AppendFuture
	closeOnce sync.Once
	closed    chan struct{}
}

type appendFuture struct {
	start time.Time
	args  *raft.AppendEntriesRequest
	resp  *raft.AppendEntriesResponse
	id    uint64
	call  *call
	conn  *conn
	lane  int
	err   error
	ready chan struct{}
}

func (f *appendFuture) Error() error {
	<-f.ready
	return f.err
}
func (f *appendFuture) Start() time.Time                    { return f.start }
func (f *appendFuture) Request() *raft.AppendEntriesRequest { return f.args }
func (f *appendFuture) Response() *raft.AppendEntriesResponse {
	return f.resp
}

// AppendEntries sends a request; it blocks while MaxRPCsInFlight requests are outstanding.
func (p *pipeline) AppendEntries(args *raft.AppendEntriesRequest, resp *raft.AppendEntriesResponse) (raft.AppendFuture, error) {
	p.t.noteSentTerm(args.Term)
	select {
	case <-p.closed:
		return nil, raft.ErrPipelineShutdown
	case <-p.t.closed:
		return nil, raft.ErrTransportShutdown
	default:
	}
	if p.sent.Load() == 0 && p.t.answerIdle(p.target, args, resp) {
		// A repeat of an idle append the follower acknowledged (idle.go); only with nothing
		// in flight, so that futures still complete in the order sent.
		f := &appendFuture{start: time.Now(), args: args, resp: resp, ready: make(chan struct{})}
		close(f.ready)
		select {
		case p.done <- f:
			return f, nil
		case <-p.closed:
			return nil, raft.ErrPipelineShutdown
		case <-p.t.closed:
			return nil, raft.ErrTransportShutdown
		}
	}
	if len(args.Entries) > 0 {
		p.t.idle.Delete(p.target) // the follower's log changes: no repeat of before is current
	}
	lane := laneCtrl
	if len(args.Entries) > 0 || p.bulk.Load() > 0 {
		lane = laneBulk
	}
	c, err := p.t.n.getConn(p.target, lane, p.t.closed)
	if err != nil {
		return nil, err
	}
	id, cl, err := c.request(appendKind(args), p.t.group, args, isHeartbeat(args), len(args.Entries) == 0)
	if err != nil {
		return nil, err
	}
	if lane == laneBulk {
		p.bulk.Add(1)
	}
	p.sent.Add(1)
	f := &appendFuture{start: time.Now(), args: args, resp: resp, id: id, call: cl, conn: c, lane: lane, ready: make(chan struct{})}
	select {
	case p.inflight <- f:
		return f, nil
	case <-p.closed:
		c.forget(id)
		p.sent.Add(-1)
		return nil, raft.ErrPipelineShutdown
	case <-p.t.closed:
		c.forget(id)
		p.sent.Add(-1)
		return nil, raft.ErrTransportShutdown
	}
}

// receive completes the futures in the order they were sent.
func (p *pipeline) receive() {
	for {
		select {
		case f := <-p.inflight:
			r := f.conn.wait(f.id, f.call, p.t.n.timeout, p.closed, p.t.closed)
			f.err = decodeResult(r, f.resp)
			if f.err == nil {
				p.t.noteProgress(p.target, f.args, f.resp)
				p.t.noteIdle(p.target, f.args, f.resp)
			} else {
				p.t.idle.Delete(p.target)
			}
			if f.lane == laneBulk {
				p.bulk.Add(-1)
			}
			close(f.ready)
			select {
			case p.done <- f:
				p.sent.Add(-1) // only now may a local answer follow it (AppendEntries)
			case <-p.closed:
				p.drain()
				return
			case <-p.t.closed:
				p.drain()
				return
			}
		case <-p.closed:
			p.drain()
			return
		case <-p.t.closed:
			p.drain()
			return
		}
	}
}

func (p *pipeline) drain() {
	for {
		select {
		case f := <-p.inflight:
			f.conn.forget(f.id)
			f.err = raft.ErrPipelineShutdown
			close(f.ready)
		default:
			return
		}
	}
}

// Consumer implements raft.AppendPipeline.
func (p *pipeline) Consumer() <-chan raft.AppendFuture { return p.done }

// Close implements raft.AppendPipeline. The connection stays: other groups use it.
func (p *pipeline) Close() error {
	p.closeOnce.Do(func() { close(p.closed) })
	return nil
}
