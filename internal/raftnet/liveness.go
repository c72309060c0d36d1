package raftnet

// Peer liveness: fast failover without frequent heartbeats.
//
// hashicorp/raft detects a dead leader only when its heartbeats stop for HeartbeatTimeout
// (randomized up to twice that), and sends a heartbeat per follower per group every tenth of
// it: a timeout short enough for a fast failover costs every idle group ten heartbeats a second
// per follower. raftnet instead watches the brokers themselves: every ProbeInterval it pings
// (one small frame on the control connection) each broker that leads a group this broker
// follows. When a ping fails (the connection is refused or broken, or no answer within
// ProbeTimeout) the broker is reported down once, through Config.PeerDown, and the caller
// starts elections in the groups it led (Transport.StartElection) without waiting for Raft's
// timeout. The groups can then keep long heartbeat timeouts: they are only the fallback.
// A false report costs an election, never safety.

import (
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/raft"
)

// Defaults of the probe. The interval trades idle cost for failover time: on three idle
// brokers with 500 partitions x RF 3, 100 ms cost about 5 points of a core more than 250 ms
// (measured, not analysed further), and 250 ms moved the median
// failover after kill -9 from about 90 to about 160 ms (docs/benchmarks.md).
const (
	DefaultProbeInterval = 250 * time.Millisecond
	DefaultProbeTimeout  = time.Second
)

// leadersRefresh is how often the set of brokers to probe is recomputed (a broker that just
// became a leader here is probed from then on).
const leadersRefresh = 300 * time.Millisecond

// kindPing is a liveness probe: no group, no payload; answered with an empty kindResponse.
const kindPing byte = 8

type liveness struct {
	mu      sync.Mutex
	down    map[raft.ServerAddress]bool // peers reported down (until a probe succeeds or they send)
	probing map[raft.ServerAddress]bool
	// downs counts the entries of down, so that the append path checks it without the lock.
	downs atomic.Int32
	reach map[raft.ServerAddress]*reachCheck // Reachable's last ping per broker
}

// peerAlive forgets that a peer was down: it sent something. A peer stays "down" only while
// nothing shows otherwise, or its next failure would not be reported (a broker restarted and
// leading again, then killed again before a probe of it succeeded).
func (n *Network) peerAlive(addr raft.ServerAddress) {
	if n.live.downs.Load() == 0 {
		return
	}
	n.live.mu.Lock()
	if n.live.down[addr] {
		delete(n.live.down, addr)
		n.live.downs.Add(-1)
	}
	n.live.mu.Unlock()
}

// noteLeader records the leader of a group as seen in an AppendEntries it sent here.
func (t *Transport) noteLeader(req *raft.AppendEntriesRequest) {
	addr := req.RPCHeader.Addr
	if len(addr) == 0 {
		//lint:ignore SA1019 raft still fills the deprecated field
		addr = req.Leader
	}
	if len(addr) == 0 {
		return
	}
	if cur, _ := t.leader.Load().(raft.ServerAddress); string(cur) != string(addr) {
		t.leader.Store(raft.ServerAddress(addr))
	}
	t.n.peerAlive(raft.ServerAddress(addr))
	t.active.Store(time.Now().UnixNano())
}

// LastLeader returns the address of the group's leader as last seen in an AppendEntries (or
// coalesced heartbeat) it sent here; "" if none came yet. Unlike Raft's own notion of the
// leader, it is not cleared when the replica hears a vote request or becomes a candidate:
// Registry.PeerDown needs it to find the groups a broker led once another replica's forced
// election has already made this one forget that leader.
func (t *Transport) LastLeader() raft.ServerAddress {
	addr, _ := t.leader.Load().(raft.ServerAddress)
	return addr
}

// StartElection makes this replica a candidate at once, as a leadership transfer does (a
// TimeoutNow handed to Raft): for a follower whose leader's broker is down. Voters grant the
// vote even while they still believe in the old leader (the request is marked as a transfer),
// and Raft's log comparison keeps it safe. Call it only on a follower that votes.
func (t *Transport) StartElection() {
	respCh := make(chan raft.RPCResponse, 1)
	in := &inbound{
		kind:   kindTimeoutNow,
		respCh: respCh,
		rpc: raft.RPC{
			Command:  &raft.TimeoutNowRequest{RPCHeader: raft.RPCHeader{ProtocolVersion: raft.ProtocolVersionMax}},
			RespChan: respCh,
		},
		reply: func(raft.RPCResponse) {},
	}
	select {
	case t.inbox <- in:
	case <-t.closed:
	default: // a full inbox: Raft is busy with this group's requests; its timeout remains
	}
}

// probeLoop pings the leaders of the groups this broker follows, until Close.
func (n *Network) probeLoop() {
	tick := time.NewTicker(n.probeInterval)
	defer tick.Stop()
	var (
		leaders   []raft.ServerAddress
		refreshed time.Time
	)
	for {
		select {
		case <-n.done:
			return
		case <-tick.C:
		}
		if time.Since(refreshed) >= leadersRefresh {
			// Walking every group is the costly part with hundreds of them; leaders change
			// rarely, and a new one is probed within leadersRefresh.
			leaders, refreshed = n.leadersToProbe(), time.Now()
		}
		for _, addr := range leaders {
			n.live.mu.Lock()
			busy := n.live.probing[addr]
			n.live.probing[addr] = true
			n.live.mu.Unlock()
			if busy {
				continue
			}
			if !n.goTracked(func() { n.probe(addr) }) {
				return
			}
		}
	}
}

// leadersToProbe returns the other brokers that lead groups here.
func (n *Network) leadersToProbe() []raft.ServerAddress {
	n.mu.RLock()
	defer n.mu.RUnlock()
	seen := make(map[raft.ServerAddress]bool)
	var out []raft.ServerAddress
	for _, t := range n.groups {
		addr, _ := t.leader.Load().(raft.ServerAddress)
		if addr == "" || addr == n.cfg.Advertise || seen[addr] {
			continue
		}
		seen[addr] = true
		out = append(out, addr)
	}
	return out
}

// probe pings addr once and reports a change of its state.
func (n *Network) probe(addr raft.ServerAddress) {
	err := n.ping(addr)
	n.live.mu.Lock()
	delete(n.live.probing, addr)
	wasDown := n.live.down[addr]
	switch {
	case err == nil && wasDown:
		delete(n.live.down, addr)
		n.live.downs.Add(-1)
	case err != nil && !wasDown:
		n.live.down[addr] = true
		n.live.downs.Add(1)
	}
	n.live.mu.Unlock()
	if err != nil && !wasDown {
		n.log.Info().Err(err).Str("peer", string(addr)).Msg("peer broker down: starting elections in the groups it led")
		if n.cfg.PeerDown != nil {
			n.cfg.PeerDown(addr)
		}
	}
}

func (n *Network) ping(addr raft.ServerAddress) error {
	c, err := n.getConn(addr, laneCtrl, n.done)
	if err != nil {
		return err
	}
	id, cl, err := c.requestRaw(kindPing, "", nil, true, false)
	if err != nil {
		return err
	}
	r := c.wait(id, cl, n.probeTimeout, n.done, nil)
	if r.err != nil {
		return r.err
	}
	return nil
}

// kindActive asks whether a group has a live leader as the peer sees it (payload of the
// answer: one byte, 1 if so).
const kindActive byte = 10

// activeWithin is how recently a group must have heard from its leader (or acted as one) for
// GroupActive to say it has a live leader: beats arrive every BeatInterval.
const activeWithin = 5 * time.Second

func (n *Network) activeByte(group string) byte {
	t := n.group(group)
	if t == nil || time.Since(time.Unix(0, t.active.Load())) > activeWithin {
		return 0
	}
	return 1
}

// GroupActive asks the broker at addr whether its replica of group heard from a leader, or
// acted as one, within the last few seconds: whether forcing an election could depose a live
// leader. A broker that cannot be asked is an error; one whose last dial failed moments ago is
// not asked again until the dial backoff has passed (see GroupActiveNow).
func (n *Network) GroupActive(addr raft.ServerAddress, group string) (bool, error) {
	return n.groupActive(addr, group, false)
}

// GroupActiveNow is GroupActive for a broker that may have come back moments ago (a cut that
// healed): it dials even within the backoff of failed dials, taking at most ProbeTimeout to
// dial and as long again for the answer.
func (n *Network) GroupActiveNow(addr raft.ServerAddress, group string) (bool, error) {
	return n.groupActive(addr, group, true)
}

func (n *Network) groupActive(addr raft.ServerAddress, group string, now bool) (bool, error) {
	dial := n.getConn
	if now {
		dial = n.getConnNow
	}
	c, err := dial(addr, laneCtrl, n.done)
	if err != nil {
		return false, err
	}
	id, cl, err := c.requestRaw(kindActive, group, nil, true, false)
	if err != nil {
		return false, err
	}
	r := c.wait(id, cl, n.probeTimeout, n.done, nil)
	if r.err != nil {
		return false, r.err
	}
	if r.kind != kindResponse || len(r.payload) != 1 {
		return false, fmt.Errorf("raftnet: bad answer to an activity query of group %q", group)
	}
	return r.payload[0] == 1, nil
}

// reachableFresh is how long a Reachable answer is reused: a broker's death starts elections
// in every group it led at once, and they ask about the same few brokers.
const reachableFresh = 500 * time.Millisecond

type reachCheck struct {
	done chan struct{}
	ok   bool
	at   time.Time
}

// Reachable reports whether the broker at addr answers a ping (within ProbeTimeout). A
// replica checks that it can reach a majority of its group before a forced election
// (Transport.StartElection skips Raft's pre-vote): a broker cut off from the others would
// otherwise raise its term in every group whose leader it lost, and once the network healed
// its answers would depose those groups' leaders, leaving them leaderless for an election
// timeout.
func (n *Network) Reachable(addr raft.ServerAddress) bool {
	if addr == n.cfg.Advertise {
		return true
	}
	n.live.mu.Lock()
	if n.live.reach == nil {
		n.live.reach = map[raft.ServerAddress]*reachCheck{}
	}
	rc := n.live.reach[addr]
	if rc != nil {
		select {
		case <-rc.done:
			if time.Since(rc.at) > reachableFresh {
				rc = nil // stale: ping again
			}
		default: // a ping under way: share it
		}
	}
	if rc == nil {
		rc = &reachCheck{done: make(chan struct{})}
		n.live.reach[addr] = rc
		n.live.mu.Unlock()
		rc.ok = n.ping(addr) == nil
		rc.at = time.Now()
		close(rc.done)
		return rc.ok
	}
	n.live.mu.Unlock()
	<-rc.done
	return rc.ok
}

// Reachable reports whether the broker at addr answers a ping (Network.Reachable).
func (t *Transport) Reachable(addr raft.ServerAddress) bool { return t.n.Reachable(addr) }
