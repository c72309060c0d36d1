package client

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"sync"
	"time"

	"google.golang.org/grpc/codes"

	runnelv1 "github.com/runnel-io/runnel/proto/runnel/v1"
)

// router knows the cluster's brokers and which broker leads each partition of the topics the
// client uses, from GetMetadata. A topic's entry is looked up on first use, again when an error
// says it is wrong (invalidate, NOT_LEADER without a leader named, a broker unreachable) and
// when older than the metadata max age. A NOT_LEADER naming the leader updates the partition
// at once (setLeader). Against a broker without GetMetadata (legacy), everything goes to the
// bootstrap broker, as before clustering.
type router struct {
	c *Client

	mu         sync.Mutex
	closed     bool
	boot       string           // the broker that answered last: tried first by callAny
	brokers    map[int32]string // id -> address
	metaLeader int32            // -1: unknown
	legacy     bool
	topics     map[string]*route
	listeners  []func() // called after every refresh (the producer's notify)
}

// route is one topic's routing entry.
type route struct {
	err        error    // the topic's error in the metadata (UNKNOWN_TOPIC, ...), or nil
	leaders    []leader // by partition number
	fetched    time.Time
	invalid    bool          // must be looked up again before use
	refreshing chan struct{} // non-nil while a lookup is under way; closed when it ends
	lastTry    time.Time     // when the last lookup started (async lookups are one per backoff)
	scheduled  bool          // an async lookup is scheduled for lastTry + backoff
}

type leader struct {
	id       int32
	addr     string
	replicas []int32 // the brokers holding a replica, the leader included (follower reads)
}

func newRouter(c *Client, boot string) *router {
	return &router{c: c, boot: boot, brokers: map[int32]string{}, metaLeader: -1, topics: map[string]*route{}}
}

func (r *router) bootstrap() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.boot
}

func (r *router) setBootstrap(addr string) {
	r.mu.Lock()
	r.boot = addr
	r.mu.Unlock()
}

// brokerAddrs returns the known brokers' addresses, by id.
func (r *router) brokerAddrs() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	ids := make([]int32, 0, len(r.brokers))
	for id := range r.brokers {
		ids = append(ids, id)
	}
	sort.Slice(ids, func(i, j int) bool { return ids[i] < ids[j] })
	out := make([]string, 0, len(ids))
	for _, id := range ids {
		out = append(out, r.brokers[id])
	}
	return out
}

func (r *router) setBrokers(bs []*runnelv1.Broker, metaLeader int32) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(bs) > 0 {
		r.brokers = map[int32]string{}
		for _, b := range bs {
			if b.GetAddress() != "" && (b.GetState() == runnelv1.BrokerState_BROKER_STATE_ALIVE || b.GetState() == runnelv1.BrokerState_BROKER_STATE_UNSPECIFIED) {
				r.brokers[b.GetId()] = b.GetAddress()
			}
		}
	}
	r.metaLeader = metaLeader
}

// metadataLeaderAddr returns the metadata leader's address, or "" if unknown.
func (r *router) metadataLeaderAddr() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.metaLeader < 0 || r.legacy {
		return ""
	}
	return r.brokers[r.metaLeader]
}

func (r *router) setMetadataLeader(id int32, addr string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.metaLeader = id
	if id >= 0 && addr != "" {
		r.brokers[id] = addr
	}
}

func (r *router) isLegacy() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.legacy
}

// onRefresh registers f, called (outside the lock) after every lookup, successful or not.
func (r *router) onRefresh(f func()) {
	r.mu.Lock()
	r.listeners = append(r.listeners, f)
	r.mu.Unlock()
}

// close stops async lookups from starting; the caller waits for those under way (c.bg).
func (r *router) close() {
	r.mu.Lock()
	r.closed = true
	r.mu.Unlock()
}

// refresh looks topic up (once for concurrent callers) with GetMetadata on any broker.
func (r *router) refresh(ctx context.Context, name string) error {
	r.mu.Lock()
	rt := r.topics[name]
	if rt == nil {
		rt = &route{invalid: true}
		r.topics[name] = rt
	}
	if ch := rt.refreshing; ch != nil {
		r.mu.Unlock()
		select {
		case <-ch:
			return nil // the caller looks at the outcome
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	ch := r.beginLocked(rt)
	r.mu.Unlock()
	return r.lookup(ctx, name, rt, ch)
}

// beginLocked marks a lookup of rt under way.
func (r *router) beginLocked(rt *route) chan struct{} {
	ch := make(chan struct{})
	rt.refreshing = ch
	rt.lastTry = time.Now()
	return ch
}

// lookup does the lookup beginLocked started.
func (r *router) lookup(ctx context.Context, name string, rt *route, ch chan struct{}) error {
	var resp *runnelv1.GetMetadataResponse
	var answered string
	err := r.c.callAny(ctx, func(ctx context.Context, bc *brokerConn) error {
		answered = bc.addr
		var err error
		resp, err = bc.admin.GetMetadata(ctx, &runnelv1.GetMetadataRequest{Topics: []string{name}})
		return fromRPC(err)
	})
	if err == nil {
		for _, tm := range resp.GetTopics() {
			if tm.GetName() == name && tm.GetError().GetInfo().GetReason() == runnelv1.ErrorReason_ERROR_REASON_UNKNOWN_TOPIC {
				// A broker may learn of a topic a moment after CreateTopic returned: the
				// metadata leader has the last word.
				var lresp *runnelv1.GetMetadataResponse
				notAsked := errors.New("not asked")
				if r.c.askMetadataLeader(ctx, answered, notAsked, func(ctx context.Context, bc *brokerConn) error {
					var err error
					lresp, err = bc.admin.GetMetadata(ctx, &runnelv1.GetMetadataRequest{Topics: []string{name}})
					return fromRPC(err)
				}) == nil {
					resp = lresp
				}
			}
		}
	}
	var e *Error
	legacy := err != nil && errors.As(err, &e) && e.Code == codes.Unimplemented
	if err == nil {
		r.setBrokers(resp.GetBrokers(), resp.GetMetadataLeaderId())
	}

	r.mu.Lock()
	switch {
	case legacy:
		if !r.legacy {
			r.c.opts.logf("runnel: the broker has no GetMetadata: sending everything to %s", r.boot)
		}
		r.legacy = true
		err = nil
		rt.fetched, rt.invalid = time.Now(), false
	case err == nil:
		for _, tm := range resp.GetTopics() {
			if tm.GetName() != name {
				continue
			}
			rt.err = fromPB(tm.GetError())
			rt.leaders = nil
			for _, pm := range tm.GetPartitions() {
				p := int(pm.GetPartition())
				if p < 0 || p > 1<<20 {
					continue
				}
				for len(rt.leaders) <= p {
					rt.leaders = append(rt.leaders, leader{id: -1})
				}
				rt.leaders[p] = leader{id: pm.GetLeaderId(), addr: pm.GetLeaderAddress(), replicas: pm.GetReplicas()}
			}
		}
		rt.fetched, rt.invalid = time.Now(), false
	}
	rt.refreshing = nil
	close(ch)
	ls := r.listeners
	r.mu.Unlock()
	for _, f := range ls {
		f()
	}
	return err
}

// refreshAsyncLocked starts a lookup of topic in the background, unless one is under way; at
// most one per retry backoff (a later one is scheduled).
func (r *router) refreshAsyncLocked(name string, rt *route) {
	if rt.refreshing != nil || rt.scheduled || r.closed {
		return
	}
	wait := time.Until(rt.lastTry.Add(r.c.opts.retryBackoff))
	if wait > 0 {
		rt.scheduled = true
		time.AfterFunc(wait, func() {
			r.mu.Lock()
			defer r.mu.Unlock()
			rt.scheduled = false
			if r.topics[name] == rt && r.needsLookupLocked(rt) {
				r.refreshAsyncLocked(name, rt)
			}
		})
		return
	}
	ch := r.beginLocked(rt)
	r.c.bg.Add(1)
	go func() {
		defer r.c.bg.Done()
		ctx, cancel := context.WithTimeout(r.c.bgCtx, r.c.opts.dialTimeout)
		defer cancel()
		if err := r.lookup(ctx, name, rt, ch); err != nil {
			r.c.opts.logf("runnel: metadata of %q: %v", name, err)
		}
	}()
}

// needsLookupLocked reports whether rt is to be looked up again: it is invalid, too old, or a
// partition has no leader.
func (r *router) needsLookupLocked(rt *route) bool {
	if rt.invalid || r.c.opts.metadataMaxAge > 0 && time.Since(rt.fetched) > r.c.opts.metadataMaxAge {
		return true
	}
	for _, l := range rt.leaders {
		if l.id < 0 || l.addr == "" {
			return true
		}
	}
	return false
}

// invalidate makes the next use of topic look it up again, and starts that lookup.
func (r *router) invalidate(name string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	rt := r.topics[name]
	if rt == nil {
		return
	}
	rt.invalid = true
	r.refreshAsyncLocked(name, rt)
}

// invalidateAddr invalidates every topic with a partition led by addr (a broker that went away).
func (r *router) invalidateAddr(addr string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for name, rt := range r.topics {
		for _, l := range rt.leaders {
			if l.addr == addr {
				rt.invalid = true
				r.refreshAsyncLocked(name, rt)
				break
			}
		}
	}
}

// setLeader records the leader a NOT_LEADER error named.
func (r *router) setLeader(name string, partition int32, id int32, addr string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	rt := r.topics[name]
	if rt == nil || partition < 0 || int(partition) >= len(rt.leaders) {
		return
	}
	rt.leaders[partition] = leader{id: id, addr: addr}
	if id >= 0 && addr != "" {
		r.brokers[id] = addr
	}
}

// peekResult is what peek knows of a partition's leader without waiting.
type peekResult struct {
	addr string // the leader's address, if known
	err  error  // the metadata says the topic does not exist (or another error of the topic)
	// missing: the topic exists in the metadata, but not with this partition.
	missing bool
}

// peek returns what the router knows of partition's leader without waiting: an address, an
// error of the topic, or nothing yet, in which case a lookup is under way (listeners are
// called when it ends).
func (r *router) peek(name string, partition int32) peekResult {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.legacy {
		return peekResult{addr: r.boot}
	}
	rt := r.topics[name]
	if rt == nil {
		rt = &route{invalid: true}
		r.topics[name] = rt
	}
	if rt.invalid {
		r.refreshAsyncLocked(name, rt)
		return peekResult{}
	}
	if r.c.opts.metadataMaxAge > 0 && time.Since(rt.fetched) > r.c.opts.metadataMaxAge {
		r.refreshAsyncLocked(name, rt) // old: looked up again, used meanwhile
	}
	if rt.err != nil {
		return peekResult{err: rt.err}
	}
	if partition < 0 || int(partition) >= len(rt.leaders) {
		return peekResult{missing: true}
	}
	l := rt.leaders[partition]
	if l.id < 0 || l.addr == "" {
		r.refreshAsyncLocked(name, rt) // an election: ask again after the backoff
		return peekResult{}
	}
	return peekResult{addr: l.addr}
}

// leader returns partition's leader address, looking the topic up if needed. Errors:
// the topic's error in the metadata; UNKNOWN_PARTITION; LEADER_NOT_AVAILABLE (retriable) while
// the partition has no leader; a failed lookup.
func (r *router) leader(ctx context.Context, name string, partition int32) (string, error) {
	for i := 0; ; i++ {
		r.mu.Lock()
		legacy, rt := r.legacy, r.topics[name]
		if !legacy && (rt == nil || rt.invalid) && i == 0 {
			r.mu.Unlock()
			if err := r.refresh(ctx, name); err != nil {
				return "", err
			}
			continue
		}
		res := r.peekLocked(name, partition)
		r.mu.Unlock()
		if res.peekResult.err != nil {
			return "", res.peekResult.err
		}
		return res.addr, res.errOut
	}
}

// follower returns the address of a replica of partition other than its leader, for a read
// that allows a follower (WithFollowerReads): the pick-th (modulo) of the partition's
// followers whose broker address is known, in the metadata's replica order. ok is false when
// there is none (a single replica, a legacy broker, no metadata yet, an unknown partition):
// read from the leader then. During an election (no leader known) every replica qualifies.
func (r *router) follower(ctx context.Context, name string, partition int32, pick int) (addr string, ok bool) {
	_, _ = r.leader(ctx, name, partition) // looks the topic up if needed; its error is the caller's to meet
	r.mu.Lock()
	defer r.mu.Unlock()
	rt := r.topics[name]
	if r.legacy || rt == nil || rt.invalid || rt.err != nil || partition < 0 || int(partition) >= len(rt.leaders) {
		return "", false
	}
	l := rt.leaders[partition]
	var addrs []string
	for _, id := range l.replicas {
		if a := r.brokers[id]; id != l.id && a != "" && a != l.addr {
			addrs = append(addrs, a)
		}
	}
	if len(addrs) == 0 {
		return "", false
	}
	return addrs[((pick%len(addrs))+len(addrs))%len(addrs)], true
}

type peekOut struct {
	peekResult
	errOut error
}

// peekLocked is peek for leader: no entry or no leader are errors.
func (r *router) peekLocked(name string, partition int32) peekOut {
	if r.legacy {
		return peekOut{peekResult: peekResult{addr: r.boot}}
	}
	rt := r.topics[name]
	if rt == nil || rt.invalid {
		return peekOut{errOut: &Error{Code: codes.Unavailable, Reason: reasonName(runnelv1.ErrorReason_ERROR_REASON_LEADER_NOT_AVAILABLE),
			Topic: name, Partition: partition, Message: fmt.Sprintf("topic %q partition %d: no metadata", name, partition)}}
	}
	if r.c.opts.metadataMaxAge > 0 && time.Since(rt.fetched) > r.c.opts.metadataMaxAge {
		r.refreshAsyncLocked(name, rt)
	}
	if rt.err != nil {
		return peekOut{peekResult: peekResult{err: rt.err}}
	}
	if partition < 0 || int(partition) >= len(rt.leaders) {
		return peekOut{errOut: &Error{Code: codes.NotFound, Reason: reasonName(runnelv1.ErrorReason_ERROR_REASON_UNKNOWN_PARTITION),
			Topic: name, Partition: partition, Message: fmt.Sprintf("topic %q has %d partitions: no partition %d", name, len(rt.leaders), partition)}}
	}
	l := rt.leaders[partition]
	if l.id < 0 || l.addr == "" {
		return peekOut{errOut: &Error{Code: codes.Unavailable, Reason: reasonName(runnelv1.ErrorReason_ERROR_REASON_LEADER_NOT_AVAILABLE),
			Topic: name, Partition: partition, Message: fmt.Sprintf("topic %q partition %d has no leader", name, partition)}}
	}
	return peekOut{peekResult: peekResult{addr: l.addr}}
}

// partitions returns topic's partition count from the metadata (looking it up if needed), or
// -1 against a legacy broker.
func (r *router) partitions(ctx context.Context, name string) (int, error) {
	r.mu.Lock()
	rt := r.topics[name]
	need := !r.legacy && (rt == nil || rt.invalid)
	r.mu.Unlock()
	if need {
		if err := r.refresh(ctx, name); err != nil {
			return 0, err
		}
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.legacy {
		return -1, nil
	}
	rt = r.topics[name]
	if rt == nil || rt.invalid {
		return 0, &Error{Code: codes.Unavailable, Topic: name, Partition: -1, Message: fmt.Sprintf("topic %q: no metadata", name)}
	}
	if rt.err != nil {
		return 0, rt.err
	}
	return len(rt.leaders), nil
}

// exists reports whether the metadata, looked up again now, has topic with partition: an
// UNKNOWN_TOPIC or UNKNOWN_PARTITION from a broker right after the topic was created is then
// worth a retry. Always false against a legacy broker, which has no other answer to give.
func (r *router) exists(ctx context.Context, name string, partition int32) bool {
	r.invalidateNoRefresh(name)
	if err := r.refresh(ctx, name); err != nil {
		return false
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	rt := r.topics[name]
	return !r.legacy && rt != nil && !rt.invalid && rt.err == nil && partition >= 0 && int(partition) < len(rt.leaders)
}

func (r *router) invalidateNoRefresh(name string) {
	r.mu.Lock()
	if rt := r.topics[name]; rt != nil {
		rt.invalid = true
	}
	r.mu.Unlock()
}
