package broker

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/emptypb"
	"google.golang.org/protobuf/types/known/timestamppb"

	runnelv1 "github.com/runnel-io/runnel/proto/runnel/v1"
)

// Committed offsets are checked against the log end: a group may commit any offset up to
// its partition's high watermark (the log end as consumers see it; committing it is the
// usual "everything consumed" position), and a commit beyond it is refused with OUT_OF_RANGE
// (OFFSET_OUT_OF_RANGE) naming the group, topic, partition, offset and log end. Offsets
// below the log start are not refused (a consumer may commit an offset retention has
// already passed).
//
// The check must be cheap (every commit passes through it) and work where the coordinator,
// in a cluster the metadata leader, holds no replica of the partition. Log ends only grow
// (a topic deleted and created again has a new id), so the highest log end seen per (topic
// id, partition) is a lower bound of the current one that never goes stale: a commit at or
// below it passes without I/O. A commit above it refreshes the log end:
//
//   - from the local replica, if this broker holds one: its high watermark (the applied end)
//     is a lower bound of the log end, whatever its role. The commit passes if it is at or
//     below it; it is refused if the replica is the leader serving reads (on a single node
//     always), which knows the log end.
//   - else by ListOffsets(latest) at the partition's leader as this broker knows it (following
//     one NOT_LEADER redirect or two). Concurrent refreshes of one partition share one call; a
//     commit that joined a call started before it arrived and still finds itself beyond the
//     answer asks once more (a produce acknowledged before the commit was sent may postdate
//     the shared call's answer).
//
// The commit is refused only if it is still beyond the refreshed end. A leader that cannot
// be asked fails the commit with UNAVAILABLE (LEADER_NOT_AVAILABLE), which clients retry,
// rather than accepting an offset nobody checked. A deposed leader that does not know it yet
// answers with its own, possibly shorter, end, as it would a Fetch or a ListOffsets.
//
// ResetOffsets reads a partition's bounds the same way (a local replica serving reads, else
// the leader), clamps its offsets into them, and passes them through the same check.

// logEndKey is a partition of one incarnation of a topic.
type logEndKey struct {
	topicID   string
	partition int32
}

// logEndCall is one refresh of a partition's log end, shared by the commits that wait on it.
type logEndCall struct {
	done    chan struct{}
	end     int64
	err     error
	waiters int // under logEnds.mu: the commits that started or joined it
}

// logEnds is the cache of log ends and the connections used to refresh them (offsetService
// holds one). Its zero value is ready.
type logEnds struct {
	mu       sync.RWMutex
	known    map[logEndKey]int64       // highest log end seen
	inflight map[logEndKey]*logEndCall // refreshes under way
	conns    map[string]*grpc.ClientConn
	closed   bool // the services stopped: no new connection
	pruneAt  int  // len(known) at which entries of deleted topics are dropped

	// latest, if set, replaces the ListOffsets call of a refresh (tests).
	latest func(ctx context.Context, topicName string, p int32) (int64, error)
}

const (
	// logEndRefreshTimeout bounds one refresh (every hop of it) of a remote log end.
	logEndRefreshTimeout = 5 * time.Second
	// logEndMaxHops bounds the NOT_LEADER redirects a refresh follows.
	logEndMaxHops = 3
)

// cached returns the cached log end of k (0 if none: every log end is at least 0).
func (e *logEnds) cached(k logEndKey) int64 {
	e.mu.RLock()
	defer e.mu.RUnlock()
	return e.known[k]
}

// raiseLogEnd records that k's log end is at least end.
func (o *offsetService) raiseLogEnd(k logEndKey, end int64) {
	e := &o.ends
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.known == nil {
		e.known = map[logEndKey]int64{}
	}
	cur, ok := e.known[k]
	if ok && cur >= end {
		return
	}
	e.known[k] = end
	if ok || len(e.known) < max(e.pruneAt, 4096) {
		return
	}
	// A new key over the bound: drop the entries of topics that no longer exist.
	live := map[string]bool{}
	for _, t := range o.s.reg.List() {
		live[t.ID] = true
	}
	for key := range e.known {
		if !live[key.topicID] && key != k {
			delete(e.known, key)
		}
	}
	e.pruneAt = 2 * len(e.known)
}

// checkLogEnds refuses the commit if one of its items is beyond its partition's log end.
// field names the request field of item i for the error (nil: none).
func (o *offsetService) checkLogEnds(ctx context.Context, group string, items []commitItem, field func(i int) string) error {
	var slow []int
	for i, it := range items {
		if it.entry.Offset > o.ends.cached(logEndKey{topicID: it.entry.TopicID, partition: it.key.partition}) {
			slow = append(slow, i)
		}
	}
	if len(slow) == 0 {
		return nil
	}
	errs := make([]error, len(slow))
	check := func(j int) {
		i := slow[j]
		f := ""
		if field != nil {
			f = field(i)
		}
		errs[j] = o.checkLogEnd(ctx, group, items[i], f)
	}
	if len(slow) == 1 {
		check(0)
	} else {
		var wg sync.WaitGroup
		for j := range slow {
			wg.Add(1)
			go func() {
				defer wg.Done()
				check(j)
			}()
		}
		wg.Wait()
	}
	// The first failure in request order.
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	return nil
}

// checkLogEnd checks one item whose offset is above the cached log end.
func (o *offsetService) checkLogEnd(ctx context.Context, group string, it commitItem, field string) error {
	k := logEndKey{topicID: it.entry.TopicID, partition: it.key.partition}
	off := it.entry.Offset
	w := at(it.key.topic, it.key.partition)
	part, err := o.s.reg.Partition(it.key.topic, it.key.partition)
	var nl *NotLeaderError
	switch {
	case err == nil:
		hw := part.HighWatermark()
		o.raiseLogEnd(k, hw)
		if off <= hw {
			return nil
		}
		if o.s.reg.Cluster() == nil || part.ServesReads() {
			return beyondLogEnd(group, it, hw, field)
		}
		// A follower's end may be behind the leader's: ask the leader.
	case errors.As(err, &nl):
		// No replica here.
	default:
		return groupError(group, apiErrorOf(w, err))
	}
	end, err := o.refreshLogEnd(ctx, k, it.key.topic, it.key.partition, off)
	if err != nil {
		return groupError(group, err)
	}
	if off > end {
		return beyondLogEnd(group, it, end, field)
	}
	return nil
}

// beyondLogEnd is the error for a commit beyond the log end.
func beyondLogEnd(group string, it commitItem, end int64, field string) error {
	w := at(it.key.topic, it.key.partition).withOffset(it.entry.Offset)
	info := w.info()
	info.Group, info.Field = group, field
	info.HighWatermark = proto.Int64(end)
	return newAPIError(codes.OutOfRange, runnelv1.ErrorReason_ERROR_REASON_OFFSET_OUT_OF_RANGE,
		fmt.Sprintf("%sgroup %q: cannot commit offset %d: it is beyond the log end %d (commit at most the log end, the offset of the next record)",
			w.prefix(), group, it.entry.Offset, end), info)
}

// refreshLogEnd returns the partition's log end as its leader reports it, sharing the call
// with concurrent refreshes of the partition; it asks again once if the shared call started
// before this one and its answer is below off.
func (o *offsetService) refreshLogEnd(ctx context.Context, k logEndKey, topicName string, p int32, off int64) (int64, error) {
	e := &o.ends
	for again := false; ; again = true {
		e.mu.Lock()
		c := e.inflight[k]
		started := c == nil
		if started {
			if e.inflight == nil {
				e.inflight = map[logEndKey]*logEndCall{}
			}
			c = &logEndCall{done: make(chan struct{})}
			e.inflight[k] = c
			go o.runRefresh(k, topicName, p, c)
		}
		c.waiters++
		e.mu.Unlock()
		select {
		case <-c.done:
		case <-ctx.Done():
			return 0, ctx.Err()
		}
		if c.err != nil || started || again || off <= c.end {
			return c.end, ownError(c.err)
		}
	}
}

// ownError returns a copy of an error shared by the waiters of a refresh, which each
// complete (groupError sets the group in its ErrorInfo).
func ownError(err error) error {
	var ae *apiError
	if !errors.As(err, &ae) {
		return err
	}
	return &apiError{code: ae.code, msg: ae.msg, info: proto.Clone(ae.info).(*runnelv1.ErrorInfo)}
}

func (o *offsetService) runRefresh(k logEndKey, topicName string, p int32, c *logEndCall) {
	ctx, cancel := context.WithTimeout(o.s.stopCtx, logEndRefreshTimeout)
	defer cancel()
	if o.ends.latest != nil {
		c.end, c.err = o.ends.latest(ctx, topicName, p)
	} else {
		c.end, c.err = o.remoteListOffset(ctx, topicName, p, &runnelv1.Position{Position: &runnelv1.Position_Latest{Latest: &emptypb.Empty{}}})
	}
	if c.err == nil {
		o.raiseLogEnd(k, c.end)
	}
	e := &o.ends
	e.mu.Lock()
	delete(e.inflight, k)
	e.mu.Unlock()
	close(c.done)
}

// remoteListOffset asks the partition's leader, as this broker knows it, for an offset by
// ListOffsets, following NOT_LEADER redirects. Every failure to get an answer is UNAVAILABLE
// (LEADER_NOT_AVAILABLE): retriable.
func (o *offsetService) remoteListOffset(ctx context.Context, topicName string, p int32, pos *runnelv1.Position) (int64, error) {
	w := at(topicName, p)
	unavailable := func(format string, args ...any) error {
		return newAPIError(codes.Unavailable, runnelv1.ErrorReason_ERROR_REASON_LEADER_NOT_AVAILABLE,
			w.prefix()+fmt.Sprintf(format, args...)+": retry shortly", w.info())
	}
	id, addr, ok := o.s.reg.partitionLeader(topicName, p)
	if !ok {
		return 0, unavailable("no leader is known to check the offset against the log end")
	}
	for hop := 0; ; hop++ {
		conn, err := o.peerConn(addr)
		if err != nil {
			return 0, unavailable("cannot reach the leader, broker %d at %s: %v", id, addr, err)
		}
		resp, err := runnelv1.NewFetchServiceClient(conn).ListOffsets(ctx, &runnelv1.ListOffsetsRequest{
			Queries: []*runnelv1.OffsetQuery{{Topic: topicName, Partitions: []int32{p}, Position: pos}},
		})
		if err != nil {
			return 0, unavailable("asking the leader, broker %d at %s, for the log end: %v", id, addr, err)
		}
		if len(resp.GetOffsets()) != 1 {
			return 0, unavailable("the leader, broker %d at %s, answered %d offsets for one partition", id, addr, len(resp.GetOffsets()))
		}
		lo := resp.GetOffsets()[0]
		perr := lo.GetError()
		if perr == nil {
			return lo.GetOffset(), nil
		}
		info := perr.GetInfo()
		if info.GetReason() == runnelv1.ErrorReason_ERROR_REASON_NOT_LEADER && info.GetLeaderAddress() != "" &&
			info.GetLeaderAddress() != addr && hop+1 < logEndMaxHops {
			id, addr = info.GetLeaderId(), info.GetLeaderAddress()
			continue
		}
		return 0, unavailable("the leader, broker %d at %s, could not tell the log end: %s", id, addr, perr.GetMessage())
	}
}

// peerConn returns a connection to another broker, opened on first use and closed when the
// services stop.
func (o *offsetService) peerConn(addr string) (*grpc.ClientConn, error) {
	e := &o.ends
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.closed || o.s.stopCtx.Err() != nil {
		return nil, errors.New("the broker is shutting down")
	}
	if c := e.conns[addr]; c != nil {
		return c, nil
	}
	c, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return nil, err
	}
	if e.conns == nil {
		e.conns = map[string]*grpc.ClientConn{}
		context.AfterFunc(o.s.stopCtx, o.closePeerConns)
	}
	e.conns[addr] = c
	return c, nil
}

func (o *offsetService) closePeerConns() {
	e := &o.ends
	e.mu.Lock()
	defer e.mu.Unlock()
	e.closed = true
	for addr, c := range e.conns {
		_ = c.Close()
		delete(e.conns, addr)
	}
}

// partitionLeader returns the leader of a partition as this broker knows it (see
// clusterMode.leaderOf); on a single node, none (ok false).
func (r *Registry) partitionLeader(name string, p int32) (id int32, addr string, ok bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	ts, found := r.topics[name]
	if !found || r.cm == nil || p < 0 || int(p) >= len(ts.assign) || int(p) >= len(ts.parts) {
		return -1, "", false
	}
	return r.cm.leaderOf(ts.parts[p], ts.assign[p])
}

// partitionOffsets is what ResetOffsets reads of a partition: its log start and end, and
// the offset for a time. *partition.Partition is one (a local replica that serves reads).
type partitionOffsets interface {
	Earliest() int64
	HighWatermark() int64
	OffsetForTime(ts int64) (offset, timestamp int64, found bool, err error)
}

// remoteOffsets is a partition's offsets as its leader, on another broker, tells them.
type remoteOffsets struct {
	o         *offsetService
	ctx       context.Context
	topicName string
	p         int32
	lo, hi    int64
}

func (r *remoteOffsets) Earliest() int64      { return r.lo }
func (r *remoteOffsets) HighWatermark() int64 { return r.hi }

func (r *remoteOffsets) OffsetForTime(ts int64) (int64, int64, bool, error) {
	off, err := r.o.remoteListOffset(r.ctx, r.topicName, r.p,
		&runnelv1.Position{Position: &runnelv1.Position_Timestamp{Timestamp: timestamppb.New(time.UnixMilli(ts))}})
	return off, -1, false, err
}

// resetOffsets returns where ResetOffsets reads a partition's offsets: the local replica if
// it serves reads (on a single node, always), else the partition's leader by ListOffsets (in
// a cluster the coordinator may hold no replica, or a follower's, whose end may be behind).
// The log end read is recorded for the check of the reset's offsets.
func (o *offsetService) resetOffsets(ctx context.Context, info TopicInfo, p int32) (partitionOffsets, error) {
	k := logEndKey{topicID: info.ID, partition: p}
	part, err := o.s.reg.Partition(info.Name, p)
	var nl *NotLeaderError
	switch {
	case err == nil && (o.s.reg.Cluster() == nil || part.ServesReads()):
		o.raiseLogEnd(k, part.HighWatermark())
		return part, nil
	case err != nil && !errors.As(err, &nl):
		return nil, err
	}
	lo, err := o.remoteListOffset(ctx, info.Name, p, &runnelv1.Position{Position: &runnelv1.Position_Earliest{Earliest: &emptypb.Empty{}}})
	if err != nil {
		return nil, err
	}
	hi, err := o.remoteListOffset(ctx, info.Name, p, &runnelv1.Position{Position: &runnelv1.Position_Latest{Latest: &emptypb.Empty{}}})
	if err != nil {
		return nil, err
	}
	o.raiseLogEnd(k, hi)
	return &remoteOffsets{o: o, ctx: ctx, topicName: info.Name, p: p, lo: lo, hi: hi}, nil
}
