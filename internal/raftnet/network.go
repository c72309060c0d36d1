package raftnet

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/raft"
	"github.com/rs/zerolog"
	"github.com/soheilhy/cmux"
)

// Defaults of Config.
const (
	DefaultTimeout         = 10 * time.Second
	DefaultMaxRPCsInFlight = 2
	DefaultLinger          = 10 * time.Millisecond
	minBackoff             = 10 * time.Millisecond
	maxBackoff             = time.Second
	inboxLen               = 64
)

// Match is a cmux.Matcher for Raft connections: those whose first byte is Marker.
func Match(r io.Reader) bool {
	var b [1]byte
	n, _ := io.ReadFull(r, b[:])
	return n == 1 && b[0] == Marker
}

// Listen registers Match on m and returns the listener of Raft connections, for Config.Listener.
// Call it from the broker's Config.Mux.
func Listen(m cmux.CMux) net.Listener { return m.Match(Match) }

// Config configures a Network.
type Config struct {
	// Advertise is this broker's address (host:port of its one port), the LocalAddr of every
	// group's transport and the address peers dial.
	Advertise raft.ServerAddress
	// Listener yields inbound Raft connections, still starting with Marker (cmux replays the
	// bytes it sniffed). Nil for a Network that only dials. The caller closes it, after
	// Network.Close (see Close).
	Listener net.Listener
	// Dial opens a connection to a peer broker (default: net.Dialer). The Network writes the
	// Marker and the rest of the preamble itself.
	Dial func(ctx context.Context, addr string) (net.Conn, error)
	// Logger gets connection-level events at debug level and unexpected errors at warn.
	Logger zerolog.Logger
	// Timeout bounds dialing, each RPC's wait for its response, and each write (default 10s,
	// NetworkTransport's usual value). An InstallSnapshot gets Timeout per 256 KiB of snapshot.
	Timeout time.Duration
	// MaxFrame caps the length of a frame read (default DefaultMaxFrame).
	MaxFrame int
	// MaxRPCsInFlight is the depth of an AppendEntries pipeline (default 2, as NetworkTransport:
	// see its MaxRPCsInFlight for why more rarely helps). 1 disables pipelining (raft then sends
	// AppendEntries synchronously).
	MaxRPCsInFlight int
	// Linger is how long a connection may hold lazy frames (heartbeats, AppendEntries without
	// entries, and their responses) so that other groups' frames share the write. Any other
	// frame (entries, votes, their responses) is written at once, with whatever is held.
	// Default DefaultLinger; negative: never hold (write as soon as the writer is free).
	Linger time.Duration
	// PeerDown, if set, is called (on its own goroutine) when a broker leading groups this
	// broker follows stops answering probes (liveness.go); again only after it answered.
	PeerDown func(addr raft.ServerAddress)
	// ProbeInterval is how often those brokers are pinged (default DefaultProbeInterval;
	// negative: never); ProbeTimeout how long a ping may take (default DefaultProbeTimeout).
	ProbeInterval time.Duration
	ProbeTimeout  time.Duration
	// BeatInterval is how often the coalesced heartbeats go to each broker (beats.go; default
	// DefaultBeatInterval; negative: every heartbeat is its own RPC). BeatFresh is how old a
	// follower's answer may be to stand for a heartbeat's (default DefaultBeatFresh).
	// BeatExpiry is how long a group's heartbeat is carried on after Raft last asked to send
	// one (default DefaultBeatExpiry): longer than the groups' heartbeat interval, at most
	// HeartbeatTimeout/5.
	BeatInterval time.Duration
	BeatFresh    time.Duration
	BeatExpiry   time.Duration
	// ReplicationPatience is how long an AppendEntries that is not a heartbeat keeps trying a
	// follower it cannot reach before it fails (patience.go; default
	// DefaultReplicationPatience; negative: fail at once).
	ReplicationPatience time.Duration
}

// Network is one broker's Raft networking: the multiplexed connections to every peer broker and
// the inbound connections from them, shared by every Raft group on the broker.
type Network struct {
	cfg         Config
	log         zerolog.Logger
	timeout     time.Duration
	maxFrame    int
	maxInFlight int
	linger      time.Duration
	stats       stats

	probeInterval, probeTimeout time.Duration
	live                        liveness
	beatInterval, beatFresh     time.Duration
	beatExpiry                  time.Duration
	beats                       beats
	patience                    time.Duration

	mu     sync.RWMutex
	closed bool
	groups map[string]*Transport
	peers  map[peerKey]*peer
	conns  map[io.Closer]struct{}
	wg     sync.WaitGroup
	done   chan struct{}
}

// stats counts frames and the appends answered without a round trip.
type stats struct {
	framesIn   atomic.Int64
	flushes    atomic.Int64
	beatsLocal atomic.Int64
	idleLocal  atomic.Int64
	idleSent   atomic.Int64
}

// Stats are counters of a Network since New.
type Stats struct {
	FramesIn int64 // frames read from every connection
	Flushes  int64 // buffered writes flushed on multiplexed connections (about one write each)
	// HeartbeatsLocal: Raft heartbeats answered from the coalesced beats (beats.go).
	HeartbeatsLocal int64
	// IdleAppendsLocal and IdleAppendsSent: AppendEntries without entries (not heartbeats)
	// answered from the follower's last answer (idle.go), and sent.
	IdleAppendsLocal, IdleAppendsSent int64
}

// Stats returns the Network's counters.
func (n *Network) Stats() Stats {
	return Stats{FramesIn: n.stats.framesIn.Load(), Flushes: n.stats.flushes.Load(), HeartbeatsLocal: n.stats.beatsLocal.Load(),
		IdleAppendsLocal: n.stats.idleLocal.Load(), IdleAppendsSent: n.stats.idleSent.Load()}
}

// New returns a Network and starts serving cfg.Listener if set.
func New(cfg Config) (*Network, error) {
	if cfg.Advertise == "" {
		return nil, errors.New("raftnet: Config.Advertise is required")
	}
	if cfg.Dial == nil {
		var d net.Dialer
		cfg.Dial = func(ctx context.Context, addr string) (net.Conn, error) { return d.DialContext(ctx, "tcp", addr) }
	}
	n := &Network{
		cfg:         cfg,
		log:         cfg.Logger,
		timeout:     cfg.Timeout,
		maxFrame:    cfg.MaxFrame,
		maxInFlight: cfg.MaxRPCsInFlight,
		groups:      make(map[string]*Transport),
		peers:       make(map[peerKey]*peer),
		conns:       make(map[io.Closer]struct{}),
		done:        make(chan struct{}),
	}
	if n.timeout <= 0 {
		n.timeout = DefaultTimeout
	}
	if n.maxFrame <= 0 {
		n.maxFrame = DefaultMaxFrame
	}
	switch {
	case cfg.Linger == 0:
		n.linger = DefaultLinger
	case cfg.Linger > 0:
		n.linger = cfg.Linger
	}
	if n.maxInFlight == 0 {
		n.maxInFlight = DefaultMaxRPCsInFlight
	}
	n.patience = cfg.ReplicationPatience
	if n.patience == 0 {
		n.patience = DefaultReplicationPatience
	}
	n.live = liveness{down: map[raft.ServerAddress]bool{}, probing: map[raft.ServerAddress]bool{}}
	n.probeInterval, n.probeTimeout = cfg.ProbeInterval, cfg.ProbeTimeout
	if n.probeInterval == 0 {
		n.probeInterval = DefaultProbeInterval
	}
	if n.probeTimeout <= 0 {
		n.probeTimeout = DefaultProbeTimeout
	}
	if cfg.Listener != nil {
		go n.acceptLoop() // not in wg: it ends when the Listener's owner closes it
	}
	if n.probeInterval > 0 {
		n.goTracked(n.probeLoop)
	}
	n.beats = beats{m: map[beatKey]*beat{}}
	n.beatInterval, n.beatFresh, n.beatExpiry = cfg.BeatInterval, cfg.BeatFresh, cfg.BeatExpiry
	if n.beatExpiry <= 0 {
		n.beatExpiry = DefaultBeatExpiry
	}
	if n.beatInterval == 0 {
		n.beatInterval = DefaultBeatInterval
	}
	if n.beatFresh <= 0 {
		n.beatFresh = DefaultBeatFresh
	}
	if n.beatInterval > 0 {
		n.goTracked(n.beatLoop)
	}
	return n, nil
}

// Addr returns Config.Advertise.
func (n *Network) Addr() raft.ServerAddress { return n.cfg.Advertise }

// Transport creates the transport of one Raft group. Its LocalAddr is the broker's address;
// peers are addressed by their brokers' addresses, and requests reach the group of the same name
// there. Close the transport (raft does, on Shutdown) before creating the group again.
func (n *Network) Transport(group string) (raft.Transport, error) {
	return n.transport(group)
}

func (n *Network) transport(group string) (*Transport, error) {
	if len(group) > MaxGroupLen {
		return nil, errGroupTooLong
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.closed {
		return nil, raft.ErrTransportShutdown
	}
	if _, ok := n.groups[group]; ok {
		return nil, fmt.Errorf("raftnet: group %q already has a transport", group)
	}
	t := &Transport{
		n:         n,
		group:     group,
		consumeCh: make(chan raft.RPC),
		inbox:     make(chan *inbound, inboxLen),
		closed:    make(chan struct{}),
		aborted:   make(chan struct{}),
	}
	n.groups[group] = t
	n.wg.Add(1)
	go func() { defer n.wg.Done(); t.dispatch() }()
	return t, nil
}

func (n *Network) group(name string) *Transport {
	n.mu.RLock()
	defer n.mu.RUnlock()
	return n.groups[name]
}

func (n *Network) removeGroup(t *Transport) {
	n.mu.Lock()
	if n.groups[t.group] == t {
		delete(n.groups, t.group)
	}
	n.mu.Unlock()
}

// goTracked runs f in a goroutine that Close waits for, unless the network is closed.
func (n *Network) goTracked(f func()) bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.closed {
		return false
	}
	n.wg.Add(1)
	go func() { defer n.wg.Done(); f() }()
	return true
}

// track registers c for Close to close, and adds goroutines to the wait group; false if the
// network is closed.
func (n *Network) track(c io.Closer, goroutines int) bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.closed {
		return false
	}
	n.conns[c] = struct{}{}
	n.wg.Add(goroutines)
	return true
}

func (n *Network) untrack(c io.Closer) {
	n.mu.Lock()
	delete(n.conns, c)
	n.mu.Unlock()
}

// Close closes every connection and every group's transport, and waits for the Network's
// goroutines, except the one accepting from Config.Listener: Close leaves the Listener open,
// since closing a cmux listener closes the broker's whole port (the listener's owner closes it,
// which ends that goroutine). Connections accepted after Close are closed at once. Outstanding
// RPCs fail.
func (n *Network) Close() error {
	n.mu.Lock()
	if n.closed {
		n.mu.Unlock()
		return nil
	}
	n.closed = true
	close(n.done)
	conns := make([]io.Closer, 0, len(n.conns))
	for c := range n.conns {
		conns = append(conns, c)
	}
	groups := make([]*Transport, 0, len(n.groups))
	for _, t := range n.groups {
		groups = append(groups, t)
	}
	n.mu.Unlock()
	for _, c := range conns {
		_ = c.Close()
	}
	for _, t := range groups {
		_ = t.Close()
	}
	n.wg.Wait()
	return nil
}

func (n *Network) acceptLoop() {
	var delay time.Duration
	for {
		nc, err := n.cfg.Listener.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) || errors.Is(err, cmux.ErrListenerClosed) || errors.Is(err, cmux.ErrServerClosed) {
				n.log.Debug().Err(err).Msg("raft listener closed")
				return
			}
			delay = min(max(2*delay, 5*time.Millisecond), time.Second)
			n.log.Warn().Err(err).Msg("raft accept failed")
			time.Sleep(delay)
			continue
		}
		delay = 0
		if !n.goTracked(func() { n.serveConn(nc) }) {
			_ = nc.Close() // closed Network: keep accepting, so that cmux does not queue them
		}
	}
}

// serveConn reads an inbound connection's preamble and serves it.
func (n *Network) serveConn(nc net.Conn) {
	br := bufio.NewReaderSize(nc, 64<<10)
	_ = nc.SetReadDeadline(time.Now().Add(n.timeout))
	var pre [3]byte
	if _, err := io.ReadFull(br, pre[:]); err != nil {
		n.log.Debug().Err(err).Str("remote", nc.RemoteAddr().String()).Msg("raft preamble not read")
		_ = nc.Close()
		return
	}
	_ = nc.SetReadDeadline(time.Time{})
	if pre[0] != Marker || pre[1] != protocolVersion {
		n.log.Warn().Hex("preamble", pre[:]).Str("remote", nc.RemoteAddr().String()).Msg("raft connection with an unknown preamble")
		_ = nc.Close()
		return
	}
	switch pre[2] {
	case connMux:
		c := newConn(n, nc, br, nil)
		if !c.start() {
			_ = nc.Close()
		}
	case connSnapshot:
		if !n.track(nc, 0) {
			_ = nc.Close()
			return
		}
		defer n.untrack(nc)
		defer nc.Close()
		n.serveSnapshot(nc, br)
	default:
		n.log.Warn().Uint8("type", pre[2]).Msg("raft connection of an unknown type")
		_ = nc.Close()
	}
}

// dialRaw dials addr, within timeout, and writes the preamble of a connection of type typ.
func (n *Network) dialRaw(addr raft.ServerAddress, typ byte, timeout time.Duration) (net.Conn, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	go func() {
		select {
		case <-n.done:
			cancel()
		case <-ctx.Done():
		}
	}()
	nc, err := n.cfg.Dial(ctx, string(addr))
	if err != nil {
		return nil, err
	}
	_ = nc.SetWriteDeadline(time.Now().Add(n.timeout))
	if _, err := nc.Write([]byte{Marker, protocolVersion, typ}); err != nil {
		_ = nc.Close()
		return nil, err
	}
	_ = nc.SetWriteDeadline(time.Time{})
	return nc, nil
}

// Lanes: every peer broker gets two multiplexed connections, so that heartbeats, votes and
// empty AppendEntries never queue behind megabytes of entries in a TCP stream (in the sender's
// socket buffer or the receiver's).
const (
	laneCtrl = 0 // heartbeats, votes, TimeoutNow, AppendEntries without entries
	laneBulk = 1 // AppendEntries with entries (and pipelined requests behind them)
)

type peerKey struct {
	addr raft.ServerAddress
	lane int
}

// peer is the outbound side towards one broker on one lane: its multiplexed connection,
// dialed on demand.
type peer struct {
	n    *Network
	addr raft.ServerAddress

	mu      sync.Mutex
	conn    *conn
	dialing chan struct{}
	lastErr error
	retryAt time.Time
	backoff time.Duration
}

// drop forgets a failed connection. One that failed soon after it was dialed (a peer that
// accepts and closes, as a closed Network behind a live port does) counts as a failed dial for
// the backoff.
func (p *peer) drop(c *conn, err error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.conn == c {
		p.conn = nil
	}
	if time.Since(c.dialed) >= time.Second {
		p.backoff = 0
		return
	}
	p.backoff = min(max(2*p.backoff, minBackoff), maxBackoff)
	p.lastErr = fmt.Errorf("raftnet: connection to %s: %w", p.addr, err)
	p.retryAt = time.Now().Add(p.backoff)
}

// getConn returns the connection to addr, dialing it if needed. After a failed dial (or a
// connection that failed within a second), calls fail at once with its error until a backoff
// (10ms doubling to 1s) has passed.
func (n *Network) getConn(addr raft.ServerAddress, lane int, cancel <-chan struct{}) (*conn, error) {
	return n.conn(addr, lane, cancel, false)
}

// getConnNow is getConn for a question that needs today's answer: it dials even within a
// backoff (whose remembered failure may predate a healed cut), and within ProbeTimeout.
func (n *Network) getConnNow(addr raft.ServerAddress, lane int, cancel <-chan struct{}) (*conn, error) {
	return n.conn(addr, lane, cancel, true)
}

func (n *Network) conn(addr raft.ServerAddress, lane int, cancel <-chan struct{}, now bool) (*conn, error) {
	n.mu.Lock()
	if n.closed {
		n.mu.Unlock()
		return nil, raft.ErrTransportShutdown
	}
	key := peerKey{addr, lane}
	p := n.peers[key]
	if p == nil {
		p = &peer{n: n, addr: addr}
		n.peers[key] = p
	}
	n.mu.Unlock()
	for {
		p.mu.Lock()
		if c := p.conn; c != nil {
			select {
			case <-c.closed:
				p.conn = nil // failed before it was installed
			default:
				p.mu.Unlock()
				return c, nil
			}
		}
		if p.dialing != nil {
			ch := p.dialing
			p.mu.Unlock()
			select {
			case <-ch:
				continue
			case <-cancel:
				return nil, raft.ErrTransportShutdown
			case <-n.done:
				return nil, raft.ErrTransportShutdown
			}
		}
		if !now && time.Now().Before(p.retryAt) {
			err := p.lastErr
			p.mu.Unlock()
			return nil, err
		}
		ch := make(chan struct{})
		p.dialing = ch
		p.mu.Unlock()

		var c *conn
		timeout := n.timeout
		if now {
			timeout = n.probeTimeout
		}
		nc, err := n.dialRaw(addr, connMux, timeout)
		if err == nil {
			c = newConn(n, nc, bufio.NewReaderSize(nc, 64<<10), p)
			if !c.start() {
				_ = nc.Close()
				c, err = nil, raft.ErrTransportShutdown
			}
		}
		p.mu.Lock()
		p.dialing = nil
		close(ch)
		if err != nil {
			p.backoff = min(max(2*p.backoff, minBackoff), maxBackoff)
			p.lastErr = fmt.Errorf("raftnet: dial %s: %w", addr, err)
			p.retryAt = time.Now().Add(p.backoff)
			err = p.lastErr
		} else {
			p.conn = c
		}
		p.mu.Unlock()
		if err != nil {
			n.log.Debug().Err(err).Msg("raft dial failed")
			return nil, err
		}
		n.log.Debug().Str("peer", string(addr)).Msg("raft connection dialed")
		return c, nil
	}
}
