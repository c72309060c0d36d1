package raftnet

import (
	"bufio"
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/raft"
)

var (
	// ErrTimeout is returned by an RPC whose response did not arrive within Config.Timeout.
	ErrTimeout = errors.New("raftnet: rpc timed out")
	// errConnClosed fails the outstanding requests of a connection that was closed locally.
	errConnClosed = errors.New("raftnet: connection closed")
)

// RemoteError is an error returned by the peer: raft's own error for the RPC, or the peer's
// refusal (for example, the group does not exist there yet).
type RemoteError struct{ Msg string }

func (e *RemoteError) Error() string { return e.Msg }

// result is what a request gets back: a response or error frame's payload (copied), or a local
// error.
type result struct {
	kind    byte
	payload []byte
	err     error
}

type call struct {
	ch    chan result // buffered 1; written at most once, by whoever removes the call from pending
	start time.Time
}

// conn is one multiplexed connection: outbound (we send requests, read responses) or inbound
// (we read requests, send responses). One writer goroutine coalesces every queued frame into as
// few writes as possible; high-priority frames (heartbeats, votes, responses) go before queued
// bulk frames (AppendEntries with entries).
type conn struct {
	n        *Network
	nc       net.Conn
	br       *bufio.Reader
	peer     *peer // outbound only
	dialed   time.Time
	inbound  bool
	lastRecv atomic.Int64 // unix nanos of the last frame read

	mu        sync.Mutex
	high, low [][]byte
	urgent    bool // an urgent frame is queued: flush without lingering
	writing   bool // a goroutine is in drain: it alone uses bw, and it writes all that is queued
	bw        *bufio.Writer
	batch     [][]byte // drain's scratch, used by whoever is writing
	err       error
	pending   map[uint64]*call
	nextID    atomic.Uint64

	wake   chan struct{}
	closed chan struct{}
}

func newConn(n *Network, nc net.Conn, br *bufio.Reader, p *peer) *conn {
	c := &conn{
		n:       n,
		nc:      nc,
		br:      br,
		peer:    p,
		inbound: p == nil,
		pending: make(map[uint64]*call),
		wake:    make(chan struct{}, 1),
		closed:  make(chan struct{}),
	}
	c.bw = bufio.NewWriterSize(nc, 64<<10)
	c.dialed = time.Now()
	c.lastRecv.Store(c.dialed.UnixNano())
	return c
}

// start runs the reader and writer; false if the network is closed.
func (c *conn) start() bool {
	if !c.n.track(c, 2) {
		return false
	}
	go func() { defer c.n.wg.Done(); c.writeLoop() }()
	go func() { defer c.n.wg.Done(); c.readLoop() }()
	return true
}

// enqueueLocked queues a frame; c.mu is held. It reports whether the writer needs a wakeup:
// for the first frame queued, which starts the linger, and for an urgent frame, which ends it.
// Later lazy frames join the pending write without waking anyone.
func (c *conn) enqueueLocked(f []byte, high, lazy bool) bool {
	wasEmpty := len(c.high) == 0 && len(c.low) == 0
	if high {
		c.high = append(c.high, f)
	} else {
		c.low = append(c.low, f)
	}
	if !lazy && !c.urgent {
		c.urgent = true
		return true
	}
	return wasEmpty
}

func (c *conn) signal() {
	select {
	case c.wake <- struct{}{}:
	default:
	}
}

// send queues a response frame (inbound connections). Dropped if the connection failed.
func (c *conn) send(f []byte, lazy bool) {
	c.mu.Lock()
	if c.err != nil {
		c.mu.Unlock()
		return
	}
	c.enqueueAndWrite(f, true, lazy)
}

// enqueueAndWrite queues a frame (c.mu held; released here). An urgent frame is written at once
// by the calling goroutine if no one is writing (no hop through the writer goroutine); otherwise
// the writer goroutine is woken as enqueueLocked says.
func (c *conn) enqueueAndWrite(f []byte, high, lazy bool) {
	wake := c.enqueueLocked(f, high, lazy)
	if (!lazy || c.n.linger <= 0) && !c.writing {
		c.writing = true
		c.mu.Unlock()
		c.drain()
		return
	}
	c.mu.Unlock()
	if wake {
		c.signal()
	}
}

// request encodes a request, queues it and registers its call.
func (c *conn) request(kind byte, group string, v any, high, lazy bool) (uint64, *call, error) {
	id := c.nextID.Add(1)
	f, err := encodeFrame(kind, id, group, v, sizeHint(v))
	if err != nil {
		return 0, nil, err
	}
	return c.enqueueRequest(id, f, high, lazy)
}

// requestRaw queues a request with a payload already encoded.
func (c *conn) requestRaw(kind byte, group string, payload []byte, high, lazy bool) (uint64, *call, error) {
	id := c.nextID.Add(1)
	return c.enqueueRequest(id, appendFrame(nil, kind, id, group, payload), high, lazy)
}

func (c *conn) enqueueRequest(id uint64, f []byte, high, lazy bool) (uint64, *call, error) {
	if len(f)-4 > c.n.maxFrame {
		// The peer would drop the connection (and every group's requests on it) over it.
		return 0, nil, fmt.Errorf("%w: a request of %d bytes (max %d)", errFrameTooLarge, len(f)-4, c.n.maxFrame)
	}
	cl := &call{ch: make(chan result, 1), start: time.Now()}
	c.mu.Lock()
	if c.err != nil {
		err := c.err
		c.mu.Unlock()
		return 0, nil, err
	}
	c.pending[id] = cl
	c.enqueueAndWrite(f, high, lazy)
	return id, cl, nil
}

// forget removes a call that its caller gave up on.
func (c *conn) forget(id uint64) {
	c.mu.Lock()
	delete(c.pending, id)
	c.mu.Unlock()
}

// wait waits for a call's result, at most timeout, or until one of the cancel channels closes.
func (c *conn) wait(id uint64, cl *call, timeout time.Duration, cancel1, cancel2 <-chan struct{}) result {
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case r := <-cl.ch:
		return r
	case <-t.C:
		c.forget(id)
		// Nothing at all arrived on the connection since the request was sent: the peer or the
		// path is dead (no FIN or RST seen). Drop it so the next request redials.
		if c.lastRecv.Load() < cl.start.UnixNano() {
			c.fail(fmt.Errorf("raftnet: nothing received from %s for %v", c.nc.RemoteAddr(), timeout))
		}
		return result{err: ErrTimeout}
	case <-cancel1:
		c.forget(id)
		return result{err: raft.ErrTransportShutdown}
	case <-cancel2:
		c.forget(id)
		return result{err: raft.ErrTransportShutdown}
	}
}

// fail closes the connection and fails every outstanding request with err. Idempotent.
func (c *conn) fail(err error) {
	c.mu.Lock()
	if c.err != nil {
		c.mu.Unlock()
		return
	}
	c.err = err
	pending := c.pending
	c.pending = nil
	c.high, c.low = nil, nil
	c.mu.Unlock()
	close(c.closed)
	_ = c.nc.Close()
	for _, cl := range pending {
		cl.ch <- result{err: err}
	}
	if c.peer != nil {
		c.peer.drop(c, err)
		// The broker at the other end may be restarting: its Raft lost the commit index it
		// learned, so repeats of an idle append must reach it again (idle.go).
		c.n.forgetIdleAcks(c.peer.addr)
	}
	c.n.untrack(c)
	c.n.log.Debug().Err(err).Str("remote", c.nc.RemoteAddr().String()).Bool("inbound", c.inbound).Msg("raft connection closed")
}

const lowBatchBytes = 256 << 10

// writeLoop writes what callers left queued: lazy frames after the linger, and frames queued
// while another goroutine was writing.
func (c *conn) writeLoop() {
	var linger *time.Timer
	if c.n.linger > 0 {
		linger = time.NewTimer(time.Hour)
		linger.Stop()
		defer linger.Stop()
	}
	for {
		select {
		case <-c.wake:
		case <-c.closed:
			return
		}
		c.mu.Lock()
		empty := len(c.high) == 0 && len(c.low) == 0
		c.mu.Unlock()
		if empty {
			continue // a stale wakeup: what it announced went out with an earlier write
		}
		if linger != nil {
			// Only lazy frames queued (heartbeats, empty AppendEntries, their responses): hold
			// them a little so that other groups' join the same write.
			linger.Reset(c.n.linger)
		hold:
			for {
				c.mu.Lock()
				urgent := c.urgent
				c.mu.Unlock()
				if urgent {
					break
				}
				select {
				case <-c.wake:
				case <-linger.C:
					break hold
				case <-c.closed:
					return
				}
			}
			linger.Stop()
		}
		if c.acquire() && !c.drain() {
			return
		}
	}
}

// acquire makes the caller the writer if frames are queued and no one is writing.
func (c *conn) acquire() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.writing || c.err != nil || (len(c.high) == 0 && len(c.low) == 0) {
		return false
	}
	c.writing = true
	return true
}

// drain writes everything queued, high priority first, as few writes as the buffer allows, and
// flushes; it stops being the writer only once the queue is empty and flushed. The caller has
// set c.writing. False if the connection failed.
func (c *conn) drain() bool {
	for {
		batch := c.batch[:0]
		c.mu.Lock()
		if c.err != nil {
			c.mu.Unlock()
			return false
		}
		if len(c.high) > 0 {
			batch = append(batch, c.high...)
			clear(c.high)
			c.high = c.high[:0]
		} else if len(c.low) > 0 {
			// A bounded slice of bulk frames, so that heartbeats queued meanwhile go next.
			size, i := 0, 0
			for i < len(c.low) && (i == 0 || size+len(c.low[i]) <= lowBatchBytes) {
				size += len(c.low[i])
				i++
			}
			batch = append(batch, c.low[:i]...)
			clear(c.low[:i])
			c.low = c.low[i:]
			if len(c.low) == 0 {
				c.low = nil
			}
		}
		if len(c.high) == 0 && len(c.low) == 0 {
			c.urgent = false // everything queued is about to be written
		}
		if len(batch) == 0 && c.bw.Buffered() == 0 {
			c.writing = false
			c.mu.Unlock()
			return true
		}
		c.mu.Unlock()
		_ = c.nc.SetWriteDeadline(time.Now().Add(c.n.timeout))
		if len(batch) == 0 {
			c.n.stats.flushes.Add(1)
			if err := c.bw.Flush(); err != nil {
				c.fail(err)
				return false
			}
			continue
		}
		for _, f := range batch {
			if _, err := c.bw.Write(f); err != nil {
				c.fail(err)
				return false
			}
		}
		clear(batch)
		c.batch = batch
	}
}

func (c *conn) readLoop() {
	fr := frameReader{r: c.br, max: c.n.maxFrame}
	for {
		f, err := fr.next()
		if err != nil {
			c.fail(err)
			return
		}
		c.lastRecv.Store(time.Now().UnixNano())
		c.n.stats.framesIn.Add(1)
		if c.inbound {
			if err := c.n.handleRequest(c, f); err != nil {
				c.fail(err)
				return
			}
			continue
		}
		if f.kind != kindResponse && f.kind != kindError {
			c.fail(fmt.Errorf("raftnet: unexpected frame kind %d on an outbound connection", f.kind))
			return
		}
		c.mu.Lock()
		cl := c.pending[f.id]
		delete(c.pending, f.id)
		c.mu.Unlock()
		if cl != nil {
			cl.ch <- result{kind: f.kind, payload: append([]byte(nil), f.payload...)}
		}
	}
}

// Close closes the connection, failing its outstanding requests.
func (c *conn) Close() error {
	c.fail(errConnClosed)
	return nil
}
