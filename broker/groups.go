package broker

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	bolt "go.etcd.io/bbolt"
	"google.golang.org/grpc/codes"

	"github.com/runnel-io/runnel/consumergroup"
	"github.com/runnel-io/runnel/internal/cluster"
	runnelv1 "github.com/runnel-io/runnel/proto/runnel/v1"
	"github.com/runnel-io/runnel/topic"
)

// Group coordinator defaults and limits.
const (
	// DefaultSessionTimeout is a member's session timeout when its heartbeat names none.
	DefaultSessionTimeout = 10 * time.Second
	// DefaultRebalanceTimeout is the time a member has to give up partitions.
	DefaultRebalanceTimeout = 30 * time.Second
	// DefaultHeartbeatInterval is the heartbeat interval members are given (at most a third
	// of their session timeout). Members learn of a new assignment by heartbeating, so it
	// bounds how long a partition released by one member waits for the next.
	DefaultHeartbeatInterval = 500 * time.Millisecond
	// MaxGroupTimeout bounds the session and rebalance timeouts a member may ask for.
	MaxGroupTimeout = 5 * time.Minute
	// groupTickInterval is how often the coordinator expires members.
	groupTickInterval = 50 * time.Millisecond
)

// barrierGroup is a group name no client can use (validateGroup refuses control
// characters): deleting it through the metadata Raft group is refused, but only once every
// entry before it is applied, which makes a new metadata leader's reads current.
const barrierGroup = "\x00barrier"

// groupCoordinator is the coordinator of every consumer group this broker serves: on a
// single node all of them, in a cluster all of them while this broker is the metadata
// leader (the groups' offsets are committed through the metadata Raft group, so the
// coordinator sits where commits are decided). Membership lives in memory: a coordinator
// that moves (a new metadata leader, a restart) starts empty and members rejoin
// (UNKNOWN_MEMBER_ID), keeping their member ids.
//
// One mutex serializes everything: heartbeats, leaves, the commit fence and the tick that
// expires members. Commits are fenced and queued under it (commitBatcher), so a commit
// admitted before a rebalance is ordered before anything the rebalance lets others do.
type groupCoordinator struct {
	s   *Services
	now func() time.Time

	mu     sync.Mutex
	groups map[string]*consumergroup.Group // under mu
	purged map[string]string               // under mu: group -> topicsVersion of its last purge (local store)
	// leading: the barrier ran since this broker last became metadata leader (cluster
	// mode); reset by the tick when it is no longer leader.
	leading bool

	batch *commitBatcher

	stopOnce sync.Once
	done     chan struct{}
	wg       sync.WaitGroup
}

func newGroupCoordinator(s *Services) *groupCoordinator {
	c := &groupCoordinator{s: s, now: time.Now, groups: map[string]*consumergroup.Group{}, purged: map[string]string{}, done: make(chan struct{})}
	c.batch = newCommitBatcher(c.writeCommits, c.proposeCommits, func() bool { return s.reg.Cluster() != nil })
	c.wg.Add(1)
	go c.tickLoop()
	return c
}

func (c *groupCoordinator) stop() {
	c.stopOnce.Do(func() { close(c.done) })
	c.wg.Wait()
}

func (c *groupCoordinator) tickLoop() {
	defer c.wg.Done()
	t := time.NewTicker(groupTickInterval)
	defer t.Stop()
	for {
		select {
		case <-c.done:
			return
		case <-t.C:
		}
		c.tick()
	}
}

// tick expires members, follows partition counts, forgets empty groups, and in cluster
// mode drops every group when this broker stops leading the metadata.
func (c *groupCoordinator) tick() {
	cl := c.s.reg.Cluster()
	c.mu.Lock()
	defer c.mu.Unlock()
	if cl != nil && !cl.IsLeader() {
		c.leading = false
		clear(c.groups)
		return
	}
	now := c.now()
	for name, g := range c.groups {
		c.refreshTopics(g, nil)
		g.Tick(now)
		if g.Members() == 0 {
			delete(c.groups, name)
		}
	}
}

// refreshTopics tells g the partition counts of the topics its members subscribe to, and
// of extra.
func (c *groupCoordinator) refreshTopics(g *consumergroup.Group, extra []string) {
	for _, t := range append(g.Subscribed(), extra...) {
		n := int32(0)
		if info, err := c.s.reg.Lookup(t); err == nil {
			n = info.Partitions
		}
		g.SetTopicPartitions(t, n)
	}
}

// ready checks that this broker coordinates groups: always on a single node; in a cluster
// only the metadata leader does, after a barrier (so that it reads every offset committed
// under earlier leaders).
func (c *groupCoordinator) ready(ctx context.Context) error {
	cl := c.s.reg.Cluster()
	if cl == nil {
		return nil
	}
	if !cl.IsLeader() {
		return metaNotLeader(cl)
	}
	c.mu.Lock()
	ok := c.leading
	c.mu.Unlock()
	if ok {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, clusterCallTimeout)
	defer cancel()
	if err := cl.DeleteGroup(ctx, barrierGroup); err != nil && !errors.Is(err, cluster.ErrUnknownGroup) {
		return err
	}
	c.mu.Lock()
	c.leading = cl.IsLeader()
	c.mu.Unlock()
	return nil
}

func metaNotLeader(cl *cluster.Cluster) error {
	id, addr, ok := cl.Leader()
	if !ok {
		id, addr = -1, ""
	}
	return &cluster.NotLeaderError{LeaderID: id, LeaderAddr: addr}
}

// memberError maps the state machine's errors to the API's.
func memberError(group string, err error) error {
	var (
		code   codes.Code
		reason runnelv1.ErrorReason
		msg    string
	)
	switch {
	case errors.Is(err, consumergroup.ErrUnknownMemberID):
		code, reason, msg = codes.NotFound, runnelv1.ErrorReason_ERROR_REASON_UNKNOWN_MEMBER_ID, "unknown member id (rejoin with member epoch 0)"
	case errors.Is(err, consumergroup.ErrFencedMemberEpoch):
		code, reason, msg = codes.FailedPrecondition, runnelv1.ErrorReason_ERROR_REASON_FENCED_MEMBER_EPOCH, "fenced member epoch (rejoin with member epoch 0)"
	case errors.Is(err, consumergroup.ErrStaleMemberEpoch):
		code, reason, msg = codes.FailedPrecondition, runnelv1.ErrorReason_ERROR_REASON_STALE_MEMBER_EPOCH, "stale member epoch: nothing committed"
	default:
		code, reason, msg = codes.InvalidArgument, runnelv1.ErrorReason_ERROR_REASON_INVALID_REQUEST, err.Error()
	}
	return newAPIError(code, reason, fmt.Sprintf("group %q: %s", group, msg), &runnelv1.ErrorInfo{Group: group})
}

func groupNotEmpty(group, what string, members int) error {
	return newAPIError(codes.FailedPrecondition, runnelv1.ErrorReason_ERROR_REASON_GROUP_NOT_EMPTY,
		fmt.Sprintf("group %q: %s: the group has %d member(s)", group, what, members), &runnelv1.ErrorInfo{Group: group})
}

func newMemberID() string {
	var b [12]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

func durationMS(ms int32, def time.Duration) time.Duration {
	if ms <= 0 {
		return def
	}
	return time.Duration(ms) * time.Millisecond
}

func tpsProto(tps []consumergroup.TopicPartition) []*runnelv1.TopicPartitions {
	var out []*runnelv1.TopicPartitions
	for _, tp := range tps {
		if n := len(out); n > 0 && out[n-1].Topic == tp.Topic {
			out[n-1].Partitions = append(out[n-1].Partitions, tp.Partition)
			continue
		}
		out = append(out, &runnelv1.TopicPartitions{Topic: tp.Topic, Partitions: []int32{tp.Partition}})
	}
	return out
}

func (c *groupCoordinator) heartbeat(ctx context.Context, req *runnelv1.HeartbeatRequest) (*runnelv1.HeartbeatResponse, error) {
	group := req.GetGroup()
	if err := validateGroup(group); err != nil {
		return nil, err
	}
	for i, t := range req.GetSubscribedTopics() {
		if err := topic.ValidateName(t); err != nil {
			return nil, groupError(group, apiErrorOf(at(t, -1).withField(fmt.Sprintf("subscribed_topics[%d]", i)), err))
		}
	}
	for _, f := range []struct {
		name string
		ms   int32
	}{{"session_timeout_ms", req.GetSessionTimeoutMs()}, {"rebalance_timeout_ms", req.GetRebalanceTimeoutMs()}} {
		if f.ms < 0 || time.Duration(f.ms)*time.Millisecond > MaxGroupTimeout {
			return nil, groupError(group, invalidRequestLimit(f.name, MaxGroupTimeout.Milliseconds(),
				"group %q: %s %d out of range [0, %d]", group, f.name, f.ms, MaxGroupTimeout.Milliseconds()))
		}
	}
	if req.GetMemberEpoch() == 0 && len(req.GetSubscribedTopics()) == 0 {
		return nil, groupError(group, invalidRequest("subscribed_topics", "group %q: a member joins with at least one topic", group))
	}
	if err := c.ready(ctx); err != nil {
		return nil, groupError(group, err)
	}
	hr := consumergroup.HeartbeatRequest{
		MemberID: req.GetMemberId(), InstanceID: req.GetInstanceId(), MemberEpoch: req.GetMemberEpoch(),
		SessionTimeout:   durationMS(req.GetSessionTimeoutMs(), DefaultSessionTimeout),
		RebalanceTimeout: durationMS(req.GetRebalanceTimeoutMs(), DefaultRebalanceTimeout),
	}
	if len(req.GetSubscribedTopics()) > 0 {
		hr.Subscriptions = req.GetSubscribedTopics()
	}
	for _, o := range req.GetOwned() {
		for _, p := range o.GetPartitions() {
			hr.Owned = append(hr.Owned, consumergroup.TopicPartition{Topic: o.GetTopic(), Partition: p})
		}
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	g := c.groups[group]
	if g == nil {
		if hr.MemberEpoch != 0 {
			return nil, memberError(group, consumergroup.ErrUnknownMemberID)
		}
		g = consumergroup.NewGroup(consumergroup.Config{
			SessionTimeout: DefaultSessionTimeout, RebalanceTimeout: DefaultRebalanceTimeout, HeartbeatInterval: DefaultHeartbeatInterval,
		})
		c.groups[group] = g
	}
	if hr.MemberEpoch == 0 && hr.MemberID == "" {
		hr.MemberID = newMemberID()
	}
	c.refreshTopics(g, hr.Subscriptions)
	resp := g.Heartbeat(c.now(), hr)
	if g.Members() == 0 {
		delete(c.groups, group)
	}
	if resp.Error != nil {
		return nil, memberError(group, resp.Error)
	}
	interval := min(resp.HeartbeatInterval, hr.SessionTimeout/3)
	return &runnelv1.HeartbeatResponse{
		MemberId: resp.MemberID, MemberEpoch: resp.MemberEpoch, HeartbeatIntervalMs: int32(interval.Milliseconds()),
		Assignment: tpsProto(resp.Assignment), GroupEpoch: g.Epoch(),
	}, nil
}

func (c *groupCoordinator) leave(ctx context.Context, req *runnelv1.LeaveGroupRequest) (*runnelv1.LeaveGroupResponse, error) {
	group := req.GetGroup()
	if err := validateGroup(group); err != nil {
		return nil, err
	}
	if req.GetMemberId() == "" && req.GetInstanceId() == "" {
		return nil, groupError(group, invalidRequest("member_id", "group %q: leave: no member id or instance id", group))
	}
	if err := c.ready(ctx); err != nil {
		return nil, groupError(group, err)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	g := c.groups[group]
	if g == nil {
		return nil, memberError(group, consumergroup.ErrUnknownMemberID)
	}
	err := g.Leave(c.now(), consumergroup.LeaveRequest{MemberID: req.GetMemberId(), InstanceID: req.GetInstanceId(), Permanent: req.GetPermanent()})
	if g.Members() == 0 {
		delete(c.groups, group)
	}
	if err != nil {
		return nil, memberError(group, err)
	}
	return &runnelv1.LeaveGroupResponse{}, nil
}

// members returns how many members group has (0 if the coordinator does not know it).
func (c *groupCoordinator) members(group string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	if g := c.groups[group]; g != nil {
		return g.Members()
	}
	return 0
}

// names returns the groups that have members.
func (c *groupCoordinator) names() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make([]string, 0, len(c.groups))
	for name := range c.groups {
		out = append(out, name)
	}
	return out
}

// describe returns group's description, ok false if it has no members.
func (c *groupCoordinator) describe(group string) (consumergroup.Description, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	g := c.groups[group]
	if g == nil {
		return consumergroup.Description{State: consumergroup.StateEmpty}, false
	}
	return g.Describe(), true
}

// commit fences a commit (a member's at its current epoch; none from outside the group
// while it has members) and queues it; it returns once the batch holding it is durable.
func (c *groupCoordinator) commit(ctx context.Context, req *commitReq, memberID string, epoch int32) error {
	c.mu.Lock()
	g := c.groups[req.group]
	switch {
	case memberID != "" && g == nil:
		c.mu.Unlock()
		return memberError(req.group, consumergroup.ErrUnknownMemberID)
	case memberID != "":
		if err := g.CommitAllowed(memberID, epoch); err != nil {
			c.mu.Unlock()
			return memberError(req.group, err)
		}
	case g != nil && g.Members() > 0:
		n := g.Members()
		c.mu.Unlock()
		return groupNotEmpty(req.group, "commit without a member id", n)
	}
	c.batch.enqueue(req)
	c.mu.Unlock()
	select {
	case <-req.done:
		return req.err
	case <-ctx.Done():
		// The commit may still be written.
		return ctx.Err()
	}
}

// groupService is GroupService over the coordinator.
type groupService struct {
	runnelv1.UnimplementedGroupServiceServer
	s *Services
}

func (g *groupService) Heartbeat(ctx context.Context, req *runnelv1.HeartbeatRequest) (*runnelv1.HeartbeatResponse, error) {
	return g.s.groups.heartbeat(ctx, req)
}

func (g *groupService) LeaveGroup(ctx context.Context, req *runnelv1.LeaveGroupRequest) (*runnelv1.LeaveGroupResponse, error) {
	return g.s.groups.leave(ctx, req)
}

// commitItem is one offset of a commit.
type commitItem struct {
	key   offsetKey
	entry offsetEntry
}

// commitReq is one CommitOffsets (or executed ResetOffsets) waiting in the batcher.
type commitReq struct {
	group string
	items []commitItem
	at    time.Time
	err   error
	done  chan struct{}
}

func newCommitReq(group string, items []commitItem, at time.Time) *commitReq {
	return &commitReq{group: group, items: items, at: at, done: make(chan struct{})}
}

// commitBatcher writes queued commits a batch at a time: while a batch is being written the
// next accumulates, so many members committing at once cost one write per batch instead of
// one each.
//
// On a single node there is one batch in flight, holding every group (one bbolt
// transaction). In a cluster a batch (every group queued) is one metadata Raft entry, and up
// to maxCommitBatchesInFlight are in flight: one goroutine at a time hands a batch to Raft,
// which keeps entries in the order they were handed over, so each group's commits are
// applied in the order they were admitted even when batches overlap. Overlapping batches
// spare a member whose commit arrives while a batch is in flight part of the wait for it,
// at the price of more, smaller entries (see maxCommitBatchesInFlight).
type commitBatcher struct {
	write     func([]*commitReq)              // single node: write a batch, setting each request's err
	propose   func([]*commitReq) func() error // cluster: hand a batch to Raft; the result waits for it
	clustered func() bool

	mu          sync.Mutex
	queue       []*commitReq
	writing     bool // single node: a batch is being written
	proposing   bool // cluster: a batch is being handed to Raft
	inFlight    int  // cluster: batches handed to Raft and not yet applied
	outstanding map[*commitReq]struct{}
}

// maxCommitBatchesInFlight bounds the metadata entries of offset commits not yet applied.
// It was 2 while every applied entry cost two fsyncs of the state file (a batch's round was
// long, and overlapping rounds paid); with the state file written lazily
// (internal/cluster/fsm_boot.go) one is faster: each batch in flight is its own Raft log
// append, two fdatasyncs of raft-boltdb on every broker, and a second batch halves the
// commits each of them carries. BenchmarkGroupCommitsCluster, builds alternated: 3 brokers
// 17.5-19.1k commits/s with 2, 23.1-24.1k with 1 (docs/benchmarks.md).
const maxCommitBatchesInFlight = 1

func newCommitBatcher(write func([]*commitReq), propose func([]*commitReq) func() error, clustered func() bool) *commitBatcher {
	return &commitBatcher{write: write, propose: propose, clustered: clustered, outstanding: map[*commitReq]struct{}{}}
}

func (b *commitBatcher) enqueue(r *commitReq) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.queue = append(b.queue, r)
	b.outstanding[r] = struct{}{}
	b.startLocked()
}

// startLocked starts the flush that may run.
func (b *commitBatcher) startLocked() {
	if len(b.queue) == 0 {
		return
	}
	batch := b.queue
	if !b.clustered() {
		if b.writing {
			return
		}
		b.queue, b.writing = nil, true
		go func() {
			b.write(batch)
			b.finish(batch, func() { b.writing = false })
		}()
		return
	}
	if b.proposing || b.inFlight >= maxCommitBatchesInFlight {
		return
	}
	b.queue, b.proposing = nil, true
	b.inFlight++
	go func() {
		wait := b.propose(batch)
		b.mu.Lock()
		b.proposing = false
		b.startLocked()
		b.mu.Unlock()
		_ = wait() // each request carries its error
		b.finish(batch, func() { b.inFlight-- })
	}()
}

// finish completes a batch's requests and starts what was waiting for it.
func (b *commitBatcher) finish(batch []*commitReq, release func()) {
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, r := range batch {
		delete(b.outstanding, r)
		close(r.done)
	}
	release()
	b.startLocked()
}

// wait returns once every commit queued before the call is written (or failed), so that a
// read after it sees them.
func (b *commitBatcher) wait() {
	b.mu.Lock()
	pending := make([]*commitReq, 0, len(b.outstanding))
	for r := range b.outstanding {
		pending = append(pending, r)
	}
	b.mu.Unlock()
	for _, r := range pending {
		<-r.done
	}
}

// writeCommits writes a batch on a single node, in one transaction of the local store.
func (c *groupCoordinator) writeCommits(batch []*commitReq) {
	o := &c.s.offsets
	if err := o.ready(""); err != nil {
		for _, r := range batch {
			r.err = groupError(r.group, err)
		}
		return
	}
	topics := o.topicsNow()
	live, version := liveFunc(topics), topicsVersion(topics)
	var purged []string
	err := o.store.update(func(tx *bolt.Tx) error {
		seen := map[string]bool{}
		for _, r := range batch {
			b, err := tx.Bucket(bucketGroups).CreateBucketIfNotExists([]byte(r.group))
			if err != nil {
				return err
			}
			// Stale entries (of deleted topics) are purged by a group's first commit after
			// the topics changed, not by every commit (reading the group costs).
			if !seen[r.group] && c.purgedAt(r.group) != version {
				if err := purgeStale(b, live); err != nil {
					return err
				}
				purged = append(purged, r.group)
			}
			seen[r.group] = true
			for _, it := range r.items {
				if err := putEntry(b, it.key, it.entry); err != nil {
					return err
				}
			}
			if err := setLastCommit(b, r.at); err != nil {
				return err
			}
		}
		return nil
	})
	for _, r := range batch {
		if err != nil {
			r.err = groupError(r.group, err)
		}
	}
	if err == nil {
		c.mu.Lock()
		for _, g := range purged {
			c.purged[g] = version
		}
		c.mu.Unlock()
	}
}

func (c *groupCoordinator) purgedAt(group string) string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.purged[group]
}

// topicsVersion identifies a set of topics: it changes when one is created, deleted or grows.
func topicsVersion(topics map[string]TopicInfo) string {
	names := make([]string, 0, len(topics))
	for n := range topics {
		names = append(names, n)
	}
	slices.Sort(names)
	var sb strings.Builder
	for _, n := range names {
		fmt.Fprintf(&sb, "%s/%s/%d;", n, topics[n].ID, topics[n].Partitions)
	}
	return sb.String()
}

// proposeCommits hands a batch to the metadata Raft group as one entry (in a cluster) and
// returns the wait for its outcome, which sets each request's err.
func (c *groupCoordinator) proposeCommits(batch []*commitReq) func() error {
	fail := func(err error) func() error {
		for _, r := range batch {
			if r.err == nil {
				r.err = groupError(r.group, err)
			}
		}
		return func() error { return err }
	}
	cl := c.s.reg.Cluster()
	if cl == nil {
		return fail(ErrRegistryClosed)
	}
	// One list of offsets per group, the groups in admission order; within a group, later
	// commits of a partition win, as they would one after the other.
	type groupBatch struct {
		idx  map[offsetKey]int
		offs []cluster.OffsetCommit
	}
	byGroup := map[string]*groupBatch{}
	var order []string
	for _, r := range batch {
		g, ok := byGroup[r.group]
		if !ok {
			g = &groupBatch{idx: map[offsetKey]int{}}
			byGroup[r.group] = g
			order = append(order, r.group)
		}
		for _, it := range r.items {
			oc := cluster.OffsetCommit{Topic: it.key.topic, TopicID: it.entry.TopicID, Partition: it.key.partition,
				Offset: it.entry.Offset, Metadata: it.entry.Metadata}
			if i, ok := g.idx[it.key]; ok {
				g.offs[i] = oc
				continue
			}
			g.idx[it.key] = len(g.offs)
			g.offs = append(g.offs, oc)
		}
	}
	// A group the state machine would refuse fails alone, not the batch it shares.
	groups := make([]cluster.GroupCommit, 0, len(order))
	refused := map[string]error{}
	for _, name := range order {
		gc := cluster.GroupCommit{Group: name, Offsets: byGroup[name].offs}
		if err := gc.Validate(); err != nil {
			refused[name] = err
			continue
		}
		groups = append(groups, gc)
	}
	for _, r := range batch {
		if err := refused[r.group]; err != nil {
			r.err = groupError(r.group, err)
		}
	}
	if len(groups) == 0 {
		return func() error { return nil } // each request carries its error
	}
	ctx, cancel := context.WithTimeout(context.Background(), clusterCallTimeout)
	wait, err := cl.ProposeCommits(ctx, groups)
	if err != nil {
		cancel()
		return fail(err)
	}
	return func() error {
		defer cancel()
		err := wait()
		if err != nil {
			for _, r := range batch {
				if refused[r.group] == nil {
					r.err = groupError(r.group, err)
				}
			}
		}
		return err
	}
}

// sortedKeys returns m's keys sorted by topic and partition.
func sortedKeys[V any](m map[offsetKey]V) []offsetKey {
	out := make([]offsetKey, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	slices.SortFunc(out, func(a, b offsetKey) int {
		if a.less(b) {
			return -1
		}
		if b.less(a) {
			return 1
		}
		return 0
	})
	return out
}
