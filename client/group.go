package client

import (
	"context"
	"errors"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	runnelv1 "github.com/runnel-io/runnel/proto/runnel/v1"
)

// GroupOption configures a GroupConsumer.
type GroupOption func(*groupOptions)

type groupOptions struct {
	instanceID       string
	sessionTimeout   time.Duration
	rebalanceTimeout time.Duration
	autoCommit       time.Duration
	start            Position
	metadata         string
	maxBytes         int32
	onAssigned       func(ctx context.Context, tps []TopicPartition)
	onRevoked        func(ctx context.Context, tps []TopicPartition)
}

// WithInstanceID makes the member static: a restart with the same instance id within the
// session timeout takes its place and partitions back without a rebalance. Close then leaves
// only temporarily. Default: a dynamic member.
func WithInstanceID(id string) GroupOption { return func(o *groupOptions) { o.instanceID = id } }

// WithSessionTimeout sets how long the member may go without a heartbeat before the
// coordinator removes it and gives its partitions to the others. Default 10 s; the member
// heartbeats at least three times per session timeout.
func WithSessionTimeout(d time.Duration) GroupOption {
	return func(o *groupOptions) { o.sessionTimeout = d }
}

// WithRebalanceTimeout sets how long the member has to give up partitions once asked (its
// handler must finish the record in hand). Default 30 s.
func WithRebalanceTimeout(d time.Duration) GroupOption {
	return func(o *groupOptions) { o.rebalanceTimeout = d }
}

// WithGroupAutoCommit sets how often Run commits what the handler has finished. Default 5 s;
// 0 or less: only on revocation, Commit and Close; a tiny d (time.Nanosecond) commits after
// every batch of records handled.
func WithGroupAutoCommit(d time.Duration) GroupOption {
	return func(o *groupOptions) { o.autoCommit = d }
}

// WithGroupStart sets where a partition the group has no committed offset for is read from.
// Default Earliest.
func WithGroupStart(p Position) GroupOption { return func(o *groupOptions) { o.start = p } }

// WithGroupCommitMetadata sets the metadata string committed with every offset.
func WithGroupCommitMetadata(s string) GroupOption { return func(o *groupOptions) { o.metadata = s } }

// WithGroupFetchMaxBytes is WithFetchMaxBytes for the group consumer's partitions.
func WithGroupFetchMaxBytes(n int32) GroupOption { return func(o *groupOptions) { o.maxBytes = n } }

// OnAssigned sets a callback called (from Run, or from the heartbeat goroutine while Run is not
// running) with the partitions given to the member, before their records are handled.
func OnAssigned(f func(ctx context.Context, tps []TopicPartition)) GroupOption {
	return func(o *groupOptions) { o.onAssigned = f }
}

// OnRevoked sets a callback called with the partitions the member gives up, after the handler
// finished with them and before their progress is committed (also when they are lost: the
// member was removed from the group; nothing can be committed then).
func OnRevoked(f func(ctx context.Context, tps []TopicPartition)) GroupOption {
	return func(o *groupOptions) { o.onRevoked = f }
}

// GroupConsumer is a member of a consumer group: the group coordinator (a broker) assigns it
// a share of the partitions of the topics it subscribes to, and moves partitions between
// members as they join, leave or die. Run hands the records of the partitions it owns to a
// handler; what the handler finished is committed (fenced by the member's epoch) on an
// interval, when partitions are revoked, on Commit and on Close: delivery is at least once.
type GroupConsumer struct {
	c      *Client
	group  string
	topics []string
	o      groupOptions
	k      *Consumer

	ctx    context.Context // ends on Close (or when the inner consumer closes)
	cancel context.CancelFunc
	wg     sync.WaitGroup
	hbWake chan struct{} // wakes the heartbeat loop (cap 1)

	runMu   sync.Mutex   // held while partitions are reconciled (by Run, or the heartbeat loop)
	pending atomic.Bool  // the assignment changed: Run must reconcile before the next record
	closing atomic.Bool  // Close was called: Run returns
	running atomic.Int32 // Run calls in progress

	mu         sync.Mutex
	memberID   string
	epoch      int32
	target     map[TopicPartition]bool // the latest assignment received
	owned      map[TopicPartition]bool // the partitions being read
	lost       bool                    // removed from the group: give up everything, commit nothing
	left       bool                    // left the group: commit nothing more
	interval   time.Duration
	wakeRun    context.CancelFunc // ends Run's current wait for records
	lastCommit time.Time
}

// NewGroupConsumer joins group as a member subscribing to topics and returns at once; the
// member's partitions arrive with the heartbeats. Call Run to handle records, and Close to
// commit and leave (Client.Close closes it too).
func (c *Client) NewGroupConsumer(group string, topics []string, opts ...GroupOption) (*GroupConsumer, error) {
	if group == "" || len(topics) == 0 {
		return nil, errors.New("runnel: NewGroupConsumer needs a group and at least one topic")
	}
	o := groupOptions{sessionTimeout: 10 * time.Second, rebalanceTimeout: 30 * time.Second, autoCommit: 5 * time.Second, start: Earliest()}
	for _, f := range opts {
		f(&o)
	}
	g := &GroupConsumer{
		c: c, group: group, topics: slices.Clone(topics), o: o, hbWake: make(chan struct{}, 1),
		target: map[TopicPartition]bool{}, owned: map[TopicPartition]bool{}, lastCommit: time.Now(),
		interval: o.sessionTimeout / 3,
	}
	g.k = c.NewConsumer(WithGroup(group), WithFetchMaxBytes(o.maxBytes), WithCommitMetadata(o.metadata))
	g.k.commitHook = g.commitFenced
	g.k.mu.Lock()
	closed := g.k.closed
	if !closed {
		g.k.closeHook = g.Close
	}
	g.k.mu.Unlock()
	if closed {
		return nil, ErrClosed
	}
	g.ctx, g.cancel = context.WithCancel(g.k.ctx)
	g.wg.Add(1)
	go g.heartbeatLoop()
	return g, nil
}

// MemberID returns the member id the coordinator gave (empty before the first heartbeat).
func (g *GroupConsumer) MemberID() string {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.memberID
}

// Assignment returns the partitions the member reads now, sorted.
func (g *GroupConsumer) Assignment() []TopicPartition {
	g.mu.Lock()
	defer g.mu.Unlock()
	return sortedTPs(g.owned)
}

func sortedTPs(m map[TopicPartition]bool) []TopicPartition {
	out := make([]TopicPartition, 0, len(m))
	for tp := range m {
		out = append(out, tp)
	}
	slices.SortFunc(out, func(a, b TopicPartition) int {
		if a.Topic != b.Topic {
			if a.Topic < b.Topic {
				return -1
			}
			return 1
		}
		return int(a.Partition - b.Partition)
	})
	return out
}

func tpsPB(tps []TopicPartition) []*runnelv1.TopicPartitions {
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

func (g *GroupConsumer) wakeHeartbeat() {
	select {
	case g.hbWake <- struct{}{}:
	default:
	}
}

func (g *GroupConsumer) heartbeatLoop() {
	defer g.wg.Done()
	for {
		wait := g.heartbeat(g.ctx)
		t := time.NewTimer(wait)
		select {
		case <-g.ctx.Done():
			t.Stop()
			return
		case <-g.hbWake:
			t.Stop()
		case <-t.C:
		}
	}
}

// heartbeat sends one heartbeat and returns how long to wait before the next.
func (g *GroupConsumer) heartbeat(ctx context.Context) time.Duration {
	g.mu.Lock()
	if g.lost || g.left {
		// The partitions must be given up before the member rejoins.
		g.mu.Unlock()
		g.reconcileIfIdle()
		return g.c.opts.retryBackoff
	}
	req := &runnelv1.HeartbeatRequest{
		Group: g.group, MemberId: g.memberID, InstanceId: g.o.instanceID, MemberEpoch: g.epoch,
		SubscribedTopics: g.topics, Owned: tpsPB(sortedTPs(g.owned)),
		SessionTimeoutMs: int32(g.o.sessionTimeout.Milliseconds()), RebalanceTimeoutMs: int32(g.o.rebalanceTimeout.Milliseconds()),
	}
	g.mu.Unlock()
	ctx, cancel := context.WithTimeout(ctx, g.o.sessionTimeout)
	defer cancel()
	var resp *runnelv1.HeartbeatResponse
	err := g.c.callMeta(ctx, func(ctx context.Context, bc *brokerConn) (err error) {
		resp, err = runnelv1.NewGroupServiceClient(bc.conn).Heartbeat(ctx, req)
		return err
	})
	if err != nil {
		if ctx.Err() != nil {
			return 0
		}
		if hasReason(err, runnelv1.ErrorReason_ERROR_REASON_UNKNOWN_MEMBER_ID) || hasReason(err, runnelv1.ErrorReason_ERROR_REASON_FENCED_MEMBER_EPOCH) {
			g.c.opts.logf("runnel: group %s: member %s: %v: giving up its partitions and rejoining", g.group, req.MemberId, err)
			g.mu.Lock()
			g.lost, g.epoch = true, 0
			g.target = map[TopicPartition]bool{}
			g.mu.Unlock()
			g.signalRun()
			return 0
		}
		g.c.opts.logf("runnel: group %s: heartbeat: %v", g.group, err)
		return g.c.opts.retryBackoff
	}
	target := map[TopicPartition]bool{}
	for _, t := range resp.GetAssignment() {
		for _, p := range t.GetPartitions() {
			target[TopicPartition{t.GetTopic(), p}] = true
		}
	}
	g.mu.Lock()
	if g.lost || g.left || ctx.Err() != nil {
		g.mu.Unlock()
		return 0
	}
	g.memberID, g.epoch, g.target = resp.GetMemberId(), resp.GetMemberEpoch(), target
	if ms := resp.GetHeartbeatIntervalMs(); ms > 0 {
		g.interval = min(time.Duration(ms)*time.Millisecond, g.o.sessionTimeout/3)
	}
	interval := g.interval
	changed := !mapsEqual(target, g.owned)
	g.mu.Unlock()
	if changed {
		g.signalRun()
	}
	return interval
}

func mapsEqual(a, b map[TopicPartition]bool) bool {
	if len(a) != len(b) {
		return false
	}
	for k := range a {
		if !b[k] {
			return false
		}
	}
	return true
}

// signalRun asks Run to reconcile the partitions, or reconciles them here if Run is not
// running.
func (g *GroupConsumer) signalRun() {
	g.pending.Store(true)
	g.mu.Lock()
	if g.wakeRun != nil {
		g.wakeRun()
	}
	g.mu.Unlock()
	g.reconcileIfIdle()
}

func (g *GroupConsumer) reconcileIfIdle() {
	if g.running.Load() > 0 || !g.runMu.TryLock() {
		return
	}
	defer g.runMu.Unlock()
	if g.pending.Load() {
		g.reconcile(g.ctx)
	}
}

// reconcile makes the partitions read follow the assignment: it gives up the revoked ones
// (their progress committed first) and starts reading the new ones from the group's
// committed offsets. Called with runMu held, between records.
func (g *GroupConsumer) reconcile(ctx context.Context) {
	g.pending.Store(false)
	g.mu.Lock()
	lost := g.lost
	var revoked, added []TopicPartition
	for tp := range g.owned {
		if lost || !g.target[tp] {
			revoked = append(revoked, tp)
		}
	}
	if !lost {
		for tp := range g.target {
			if !g.owned[tp] {
				added = append(added, tp)
			}
		}
	}
	g.mu.Unlock()
	if len(revoked) > 0 {
		revoked = sortedTPs(setOf(revoked))
		if g.o.onRevoked != nil {
			g.o.onRevoked(ctx, revoked)
		}
		if !lost {
			cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), commitTimeout)
			if err := g.k.Commit(cctx); err != nil {
				g.c.opts.logf("runnel: group %s: commit on revocation: %v", g.group, err)
			}
			cancel()
		}
		for _, tp := range revoked {
			g.k.Unassign(tp.Topic, tp.Partition)
			g.k.mu.Lock()
			delete(g.k.committed, tpKey(tp))
			g.k.mu.Unlock()
		}
		g.dropLeftover(setOf(revoked))
		g.mu.Lock()
		for _, tp := range revoked {
			delete(g.owned, tp)
		}
		g.mu.Unlock()
	}
	g.mu.Lock()
	if lost {
		g.lost = false // rejoin
	}
	g.mu.Unlock()
	if len(added) > 0 {
		added = sortedTPs(setOf(added))
		for _, tp := range added {
			if err := g.k.Assign(tp.Topic, tp.Partition, CommittedOr(g.o.start)); err != nil {
				return
			}
		}
		g.mu.Lock()
		for _, tp := range added {
			g.owned[tp] = true
		}
		g.mu.Unlock()
		if g.o.onAssigned != nil {
			g.o.onAssigned(ctx, added)
		}
	}
	if len(revoked) > 0 || len(added) > 0 || lost {
		g.wakeHeartbeat()
	}
}

func setOf(tps []TopicPartition) map[TopicPartition]bool {
	m := make(map[TopicPartition]bool, len(tps))
	for _, tp := range tps {
		m[tp] = true
	}
	return m
}

// dropLeftover forgets records Run set aside for partitions given up.
func (g *GroupConsumer) dropLeftover(gone map[TopicPartition]bool) {
	g.k.pollMu.Lock()
	defer g.k.pollMu.Unlock()
	keep := g.k.leftover[:0:0]
	for _, r := range g.k.leftover {
		if !gone[TopicPartition{r.Topic, r.Partition}] {
			keep = append(keep, r)
		}
	}
	g.k.leftover = keep
}

// commitFenced commits offs as the member, at its current epoch (the inner consumer's commit
// hook). Partitions it does not own are left out; a commit refused because a heartbeat
// advanced the epoch meanwhile is made again at the new epoch.
func (g *GroupConsumer) commitFenced(ctx context.Context, offs map[TopicPartition]int64) error {
	for attempt := 0; ; attempt++ {
		g.mu.Lock()
		if g.left {
			g.mu.Unlock()
			return nil // nothing is committed after leaving (Close committed before)
		}
		id, epoch, skip := g.memberID, g.epoch, g.lost || g.memberID == "" || g.epoch <= 0
		req := &runnelv1.CommitOffsetsRequest{Group: g.group, MemberId: id, MemberEpoch: epoch, GroupInstanceId: g.o.instanceID}
		for tp, off := range offs {
			if g.owned[tp] {
				req.Offsets = append(req.Offsets, &runnelv1.OffsetCommit{Topic: tp.Topic, Partition: tp.Partition, Offset: off, Metadata: g.o.metadata})
			}
		}
		g.mu.Unlock()
		if skip {
			return errNotMember
		}
		if len(req.Offsets) == 0 {
			return nil
		}
		err := g.c.callMeta(ctx, func(ctx context.Context, bc *brokerConn) error {
			_, err := bc.offsets.CommitOffsets(ctx, req)
			return err
		})
		if err == nil || attempt >= 3 || !hasReason(err, runnelv1.ErrorReason_ERROR_REASON_STALE_MEMBER_EPOCH) {
			return err
		}
		g.mu.Lock()
		same := g.epoch == epoch
		g.mu.Unlock()
		if same {
			return err
		}
	}
}

var errNotMember = errors.New("runnel: not a member of the group (rejoining): nothing committed")

// Commit commits what the handler has finished of the partitions the member owns.
func (g *GroupConsumer) Commit(ctx context.Context) error {
	err := g.k.Commit(ctx)
	g.mu.Lock()
	g.lastCommit = time.Now()
	g.mu.Unlock()
	return err
}

// Run calls handler for every record of the partitions the member owns, in order per
// partition, until ctx ends (it then returns nil), the handler fails (its error is returned;
// the failed record and those after it come again from the next Run), a partition fails, or
// Close is called (ErrClosed). Between records it applies assignment changes: a partition
// revoked is not handed out again, and its progress is committed before it is released.
func (g *GroupConsumer) Run(ctx context.Context, handler func(*Record) error) error {
	g.running.Add(1)
	defer g.running.Add(-1)
	g.runMu.Lock()
	defer g.runMu.Unlock()
	for {
		if ctx.Err() != nil {
			return nil
		}
		if g.closing.Load() || g.ctx.Err() != nil {
			return ErrClosed
		}
		if g.pending.Load() {
			g.reconcile(ctx)
		}
		g.maybeAutoCommit(ctx)
		// The wait for records ends at the next auto-commit, so that what the handler
		// finished is committed even when no more records come.
		pctx, cancel := context.WithCancel(ctx)
		if g.o.autoCommit > 0 && g.k.uncommitted() {
			g.mu.Lock()
			due := max(time.Until(g.lastCommit.Add(g.o.autoCommit)), time.Millisecond)
			g.mu.Unlock()
			pctx, cancel = context.WithTimeout(ctx, due)
		}
		g.mu.Lock()
		g.wakeRun = cancel
		g.mu.Unlock()
		if g.pending.Load() || g.closing.Load() {
			cancel()
		}
		recs, err := g.k.poll(pctx, false)
		g.mu.Lock()
		g.wakeRun = nil
		g.mu.Unlock()
		cancel()
		if err != nil {
			switch {
			case ctx.Err() != nil:
				return nil
			case pctx.Err() != nil:
				continue
			case errors.Is(err, ErrClosed):
				return err
			}
			return err
		}
		for i, r := range recs {
			if g.pending.Load() || g.closing.Load() {
				g.k.pollMu.Lock()
				g.k.leftover = append(recs[i:len(recs):len(recs)], g.k.leftover...)
				g.k.pollMu.Unlock()
				break
			}
			if err := handler(r); err != nil {
				g.k.pollMu.Lock()
				g.k.leftover = append(recs[i:len(recs):len(recs)], g.k.leftover...)
				g.k.pollMu.Unlock()
				return err
			}
			g.k.markConsumed(r)
		}
	}
}

// maybeAutoCommit commits what the handler finished when the auto-commit interval has passed.
func (g *GroupConsumer) maybeAutoCommit(ctx context.Context) {
	if g.o.autoCommit <= 0 {
		return
	}
	g.mu.Lock()
	due := time.Since(g.lastCommit) >= g.o.autoCommit
	g.mu.Unlock()
	if due {
		if err := g.Commit(ctx); err != nil && ctx.Err() == nil && !errors.Is(err, errNotMember) {
			g.c.opts.logf("runnel: group %s: auto-commit: %v", g.group, err)
		}
	}
}

// Close commits what the handler finished, leaves the group (a static member only
// temporarily) and stops reading. Run returns ErrClosed. It waits for the record in hand.
func (g *GroupConsumer) Close() error {
	if g.closing.Swap(true) {
		return nil
	}
	g.k.mu.Lock()
	g.k.closeHook = nil
	g.k.mu.Unlock()
	g.mu.Lock()
	if g.wakeRun != nil {
		g.wakeRun()
	}
	g.mu.Unlock()
	g.runMu.Lock() // Run has returned
	defer g.runMu.Unlock()
	g.cancel()
	g.wg.Wait() // the heartbeat loop has stopped
	ctx, cancel := context.WithTimeout(context.Background(), commitTimeout)
	defer cancel()
	var errs []error
	err := g.k.Commit(ctx)
	g.mu.Lock()
	// The heartbeat loop saw the member lost but Run returned before giving its partitions
	// up: what the handler finished of them is still in hand.
	lostInHand := errors.Is(err, errNotMember) && g.lost && len(g.owned) > 0
	g.mu.Unlock()
	if lostInHand || hasReason(err, runnelv1.ErrorReason_ERROR_REASON_UNKNOWN_MEMBER_ID) || hasReason(err, runnelv1.ErrorReason_ERROR_REASON_FENCED_MEMBER_EPOCH) {
		// The coordinator lost the member (it restarted or moved): rejoin, and commit the
		// partitions the member still gets.
		g.mu.Lock()
		g.epoch, g.lost = 0, false
		g.mu.Unlock()
		g.heartbeat(ctx)
		g.mu.Lock()
		for tp := range g.owned {
			if !g.target[tp] {
				delete(g.owned, tp)
			}
		}
		g.mu.Unlock()
		err = g.k.Commit(ctx)
	}
	if err != nil && !errors.Is(err, errNotMember) {
		errs = append(errs, err)
	}
	g.mu.Lock()
	id := g.memberID
	wasMember := id != "" && g.epoch > 0 && !g.lost
	g.left = true
	g.mu.Unlock()
	if wasMember {
		req := &runnelv1.LeaveGroupRequest{Group: g.group, MemberId: id, InstanceId: g.o.instanceID}
		err := g.c.callMeta(ctx, func(ctx context.Context, bc *brokerConn) error {
			_, err := runnelv1.NewGroupServiceClient(bc.conn).LeaveGroup(ctx, req)
			return err
		})
		if err != nil && !hasReason(err, runnelv1.ErrorReason_ERROR_REASON_UNKNOWN_MEMBER_ID) {
			errs = append(errs, err)
		}
	}
	errs = append(errs, g.k.Close())
	return errors.Join(errs...)
}

// abort stops the member as if its process died: no commit, no leave (tests).
func (g *GroupConsumer) abort() {
	g.closing.Store(true)
	g.k.mu.Lock()
	g.k.closeHook = nil
	g.k.mu.Unlock()
	g.mu.Lock()
	g.left = true
	if g.wakeRun != nil {
		g.wakeRun()
	}
	g.mu.Unlock()
	g.cancel()
	g.wg.Wait()
	g.runMu.Lock()
	defer g.runMu.Unlock()
	_ = g.k.Close()
}

func tpKey(t TopicPartition) tp { return tp{t.Topic, t.Partition} }

// uncommitted reports whether a partition progressed since its last commit.
func (k *Consumer) uncommitted() bool {
	k.mu.Lock()
	defer k.mu.Unlock()
	for key, a := range k.parts {
		if a.consumed >= 0 && a.consumed != k.committed[key] {
			return true
		}
	}
	return false
}
