package consumergroup

import (
	"errors"
	"fmt"
	"slices"
	"strconv"
	"time"
)

// TopicPartition names one partition of a topic.
type TopicPartition struct {
	Topic     string
	Partition int32
}

func (tp TopicPartition) String() string {
	return tp.Topic + ":" + strconv.Itoa(int(tp.Partition))
}

func compareTP(a, b TopicPartition) int {
	if a.Topic != b.Topic {
		if a.Topic < b.Topic {
			return -1
		}
		return 1
	}
	return int(a.Partition) - int(b.Partition)
}

// Errors returned in HeartbeatResponse.Error, by Leave and by CommitAllowed. Their text is
// the Kafka error code they map to.
var (
	ErrUnknownMemberID   = errors.New("UNKNOWN_MEMBER_ID")
	ErrFencedMemberEpoch = errors.New("FENCED_MEMBER_EPOCH")
	ErrStaleMemberEpoch  = errors.New("STALE_MEMBER_EPOCH")
	ErrInvalidRequest    = errors.New("INVALID_REQUEST")
)

// Special member epochs in a HeartbeatRequest, as in KIP-848.
const (
	LeaveEpoch       int32 = -1 // leave the group for good
	StaticLeaveEpoch int32 = -2 // a static member leaves temporarily (it keeps its assignment)
)

// Config tunes a Group. Zero fields take the defaults.
type Config struct {
	SessionTimeout    time.Duration // default 10 s
	RebalanceTimeout  time.Duration // default 30 s: time a member has to revoke partitions
	HeartbeatInterval time.Duration // default 3 s: returned to members
}

func (c Config) withDefaults() Config {
	if c.SessionTimeout <= 0 {
		c.SessionTimeout = 10 * time.Second
	}
	if c.RebalanceTimeout <= 0 {
		c.RebalanceTimeout = 30 * time.Second
	}
	if c.HeartbeatInterval <= 0 {
		c.HeartbeatInterval = 3 * time.Second
	}
	return c
}

// HeartbeatRequest is what a member sends periodically.
type HeartbeatRequest struct {
	MemberID    string // empty on the first join: the coordinator assigns one
	InstanceID  string // optional: static membership
	MemberEpoch int32  // 0 to join, the last epoch received otherwise, or LeaveEpoch/StaticLeaveEpoch
	// Subscriptions are the topics the member subscribes to; nil means unchanged.
	Subscriptions []string
	// Owned are the partitions the member currently owns (has not yet released).
	Owned []TopicPartition
	// RebalanceTimeout overrides Config.RebalanceTimeout for this member when > 0.
	RebalanceTimeout time.Duration
	// SessionTimeout overrides Config.SessionTimeout for this member when > 0.
	SessionTimeout time.Duration
}

// HeartbeatResponse is the coordinator's answer.
type HeartbeatResponse struct {
	MemberID          string
	MemberEpoch       int32
	HeartbeatInterval time.Duration
	// Assignment is the full set of partitions the member may own now (sorted).
	Assignment []TopicPartition
	Error      error
}

// LeaveRequest names the member that leaves, by MemberID or by InstanceID.
type LeaveRequest struct {
	MemberID   string
	InstanceID string
	// Permanent removes a static member at once; otherwise a static member keeps its
	// assignment for a session timeout, waiting for its instance to rejoin.
	Permanent bool
}

type tpSet map[TopicPartition]struct{}

func (s tpSet) sorted() []TopicPartition {
	out := make([]TopicPartition, 0, len(s))
	for tp := range s {
		out = append(out, tp)
	}
	slices.SortFunc(out, compareTP)
	return out
}

func (s tpSet) equal(o tpSet) bool {
	if len(s) != len(o) {
		return false
	}
	for tp := range s {
		if _, ok := o[tp]; !ok {
			return false
		}
	}
	return true
}

func (s tpSet) subsetOf(o tpSet) bool {
	for tp := range s {
		if _, ok := o[tp]; !ok {
			return false
		}
	}
	return true
}

type member struct {
	id, instance     string
	epoch, prevEpoch int32
	subs             []string // sorted, deduplicated
	target           tpSet    // what the coordinator wants it to own
	assigned         tpSet    // what it has been told it may own
	owned            tpSet    // what it last reported owning (bounded by what it was given)
	lastSeen         time.Time
	away             bool      // static member that left temporarily
	awaySince        time.Time // when it left
	rebalanceTimeout time.Duration
	sessionTimeout   time.Duration
	revokeDeadline   time.Time // non-zero while it must revoke partitions
}

func (m *member) subscribed(topic string) bool {
	_, ok := slices.BinarySearch(m.subs, topic)
	return ok
}

// Group is one consumer group's coordinator state. It is not safe for concurrent use and
// never reads a clock: callers pass the time with each event.
type Group struct {
	cfg        Config
	epoch      int32
	topics     map[string]int32
	members    map[string]*member
	byInstance map[string]string // instance id -> member id
	nextID     int
}

// NewGroup returns an empty group.
func NewGroup(cfg Config) *Group {
	return &Group{
		cfg:        cfg.withDefaults(),
		topics:     map[string]int32{},
		members:    map[string]*member{},
		byInstance: map[string]string{},
	}
}

// Epoch is the group epoch: it advances whenever membership, subscriptions or the metadata
// of subscribed topics change.
func (g *Group) Epoch() int32 { return g.epoch }

// SetTopicPartitions records that topic has n partitions (0 deletes it). A change to a
// topic some member subscribes to bumps the group epoch and recomputes the target.
func (g *Group) SetTopicPartitions(topic string, n int32) {
	if n < 0 {
		n = 0
	}
	if g.topics[topic] == n {
		return
	}
	if n == 0 {
		delete(g.topics, topic)
	} else {
		g.topics[topic] = n
	}
	for _, m := range g.members {
		if m.subscribed(topic) {
			g.bump()
			g.reconcileAway()
			return
		}
	}
}

// bump advances the group epoch and recomputes the target assignment.
func (g *Group) bump() {
	g.epoch++
	g.computeTarget()
}

func normSubs(s []string) []string {
	out := slices.Clone(s)
	slices.Sort(out)
	return slices.Compact(out)
}

// Heartbeat handles a member's heartbeat (join, reconcile, or leave with a negative epoch).
func (g *Group) Heartbeat(now time.Time, req HeartbeatRequest) HeartbeatResponse {
	switch {
	case req.MemberEpoch == LeaveEpoch || req.MemberEpoch == StaticLeaveEpoch:
		err := g.Leave(now, LeaveRequest{MemberID: req.MemberID, InstanceID: req.InstanceID,
			Permanent: req.MemberEpoch == LeaveEpoch})
		return HeartbeatResponse{MemberID: req.MemberID, MemberEpoch: req.MemberEpoch, Error: err}
	case req.MemberEpoch < 0:
		return g.errResp(req, ErrInvalidRequest)
	case req.MemberEpoch == 0:
		return g.join(now, req)
	}
	m := g.members[req.MemberID]
	if m == nil || m.away {
		return g.errResp(req, ErrUnknownMemberID)
	}
	if req.InstanceID != "" && req.InstanceID != m.instance {
		return g.errResp(req, ErrFencedMemberEpoch)
	}
	owned := tpSet{}
	for _, tp := range req.Owned {
		owned[tp] = struct{}{}
	}
	switch {
	case req.MemberEpoch == m.epoch:
	case req.MemberEpoch == m.prevEpoch && owned.subsetOf(m.assigned):
		// The response that advanced its epoch was lost; what it owns is still valid.
	default:
		return g.errResp(req, ErrFencedMemberEpoch)
	}
	g.touch(now, m, req)
	g.setOwned(m, owned)
	if req.Subscriptions != nil {
		if subs := normSubs(req.Subscriptions); !slices.Equal(subs, m.subs) {
			m.subs = subs
			g.bump()
		}
	}
	g.reconcile(now, m)
	g.reconcileAway()
	return g.resp(m)
}

func (g *Group) errResp(req HeartbeatRequest, err error) HeartbeatResponse {
	return HeartbeatResponse{MemberID: req.MemberID, MemberEpoch: req.MemberEpoch, Error: err}
}

func (g *Group) resp(m *member) HeartbeatResponse {
	return HeartbeatResponse{
		MemberID:          m.id,
		MemberEpoch:       m.epoch,
		HeartbeatInterval: g.cfg.HeartbeatInterval,
		Assignment:        m.assigned.sorted(),
	}
}

func (g *Group) touch(now time.Time, m *member, req HeartbeatRequest) {
	m.lastSeen = now
	if req.RebalanceTimeout > 0 {
		m.rebalanceTimeout = req.RebalanceTimeout
	}
	if req.SessionTimeout > 0 {
		m.sessionTimeout = req.SessionTimeout
	}
}

// setOwned records what m reports owning, bounded by what it was given and has not
// confirmed releasing: a member cannot block a partition it was never assigned.
func (g *Group) setOwned(m *member, reported tpSet) {
	next := tpSet{}
	for tp := range reported {
		_, a := m.assigned[tp]
		_, o := m.owned[tp]
		if a || o {
			next[tp] = struct{}{}
		}
	}
	m.owned = next
}

func (g *Group) join(now time.Time, req HeartbeatRequest) HeartbeatResponse {
	if req.Subscriptions == nil {
		req.Subscriptions = []string{}
	}
	subs := normSubs(req.Subscriptions)
	var inherit *member
	if req.InstanceID != "" {
		if id, ok := g.byInstance[req.InstanceID]; ok {
			inherit = g.members[id]
		}
	}
	if inherit == nil && req.MemberID != "" {
		if old := g.members[req.MemberID]; old != nil {
			if old.instance != "" && old.instance != req.InstanceID {
				return g.errResp(req, ErrFencedMemberEpoch)
			}
			inherit = old
		}
	}
	id := req.MemberID
	if id == "" || (inherit != nil && inherit.id != id && g.members[id] != nil) {
		g.nextID++
		id = "m" + strconv.Itoa(g.nextID)
		for g.members[id] != nil {
			g.nextID++
			id = "m" + strconv.Itoa(g.nextID)
		}
	}
	m := &member{id: id, instance: req.InstanceID, rebalanceTimeout: g.cfg.RebalanceTimeout, sessionTimeout: g.cfg.SessionTimeout}
	g.touch(now, m, req)
	if inherit != nil {
		// Static rejoin (or a member rejoining after being fenced): take over the old
		// member's place, assignment and epoch without a rebalance. The old member id is
		// fenced.
		delete(g.members, inherit.id)
		m.epoch, m.prevEpoch = inherit.epoch, inherit.epoch
		m.subs = inherit.subs
		m.target = inherit.target
		m.assigned = inherit.assigned
		m.owned = tpSet{}
		if !inherit.away && inherit.id == id {
			m.owned = inherit.owned // same process rejoining: it may still hold them
		}
		if req.RebalanceTimeout <= 0 {
			m.rebalanceTimeout = inherit.rebalanceTimeout
		}
		if req.SessionTimeout <= 0 {
			m.sessionTimeout = inherit.sessionTimeout
		}
		g.members[id] = m
		if m.instance != "" {
			g.byInstance[m.instance] = id
		}
		owned := tpSet{}
		for _, tp := range req.Owned {
			owned[tp] = struct{}{}
		}
		g.setOwned(m, owned)
		if !slices.Equal(subs, m.subs) {
			m.subs = subs
			g.bump()
		}
	} else {
		m.subs = subs
		m.target, m.assigned, m.owned = tpSet{}, tpSet{}, tpSet{}
		g.members[id] = m
		if m.instance != "" {
			g.byInstance[m.instance] = id
		}
		g.bump()
	}
	g.reconcile(now, m)
	g.reconcileAway()
	return g.resp(m)
}

// reconcileAway reconciles static members that are away: they own nothing, so their
// assignment follows their target as far as other members have released it, and they find
// it ready when they rejoin.
func (g *Group) reconcileAway() {
	for _, id := range g.memberIDs() {
		if m := g.members[id]; m.away {
			g.reconcile(time.Time{}, m)
		}
	}
}

// reconcile moves m's current assignment toward its target: partitions leave the
// assignment at once (the member must then stop reporting them), the member epoch advances
// to the group epoch once it owns nothing outside its target, and target partitions are
// added only when no other member is assigned them or still reports owning them.
func (g *Group) reconcile(now time.Time, m *member) {
	for tp := range m.assigned {
		if _, ok := m.target[tp]; !ok {
			delete(m.assigned, tp)
		}
	}
	if !m.owned.subsetOf(m.target) {
		if m.revokeDeadline.IsZero() {
			m.revokeDeadline = now.Add(m.rebalanceTimeout)
		}
		return
	}
	m.revokeDeadline = time.Time{}
	if m.epoch != g.epoch {
		m.prevEpoch, m.epoch = m.epoch, g.epoch
	}
	for tp := range m.target {
		if _, ok := m.assigned[tp]; ok {
			continue
		}
		if g.heldByOther(tp, m.id) {
			continue
		}
		m.assigned[tp] = struct{}{}
	}
}

func (g *Group) heldByOther(tp TopicPartition, id string) bool {
	for _, o := range g.members {
		if o.id == id {
			continue
		}
		if _, ok := o.assigned[tp]; ok {
			return true
		}
		if _, ok := o.owned[tp]; ok {
			return true
		}
	}
	return false
}

// Leave removes a member (or, for a static member leaving temporarily, keeps its
// assignment for a session timeout).
func (g *Group) Leave(now time.Time, req LeaveRequest) error {
	id := req.MemberID
	if id == "" && req.InstanceID != "" {
		id = g.byInstance[req.InstanceID]
	}
	m := g.members[id]
	if m == nil {
		return ErrUnknownMemberID
	}
	if req.InstanceID != "" && m.instance != req.InstanceID {
		return ErrFencedMemberEpoch
	}
	if m.instance != "" && !req.Permanent {
		m.away = true
		m.awaySince = now
		m.owned = tpSet{}
		m.revokeDeadline = time.Time{}
		g.reconcileAway()
		return nil
	}
	g.remove(m)
	g.reconcileAway()
	return nil
}

func (g *Group) remove(m *member) {
	delete(g.members, m.id)
	if m.instance != "" && g.byInstance[m.instance] == m.id {
		delete(g.byInstance, m.instance)
	}
	g.bump()
}

// Tick expires members whose session timed out (no heartbeat for SessionTimeout, or a
// static member away for SessionTimeout) and members that did not revoke partitions
// within their rebalance timeout. It returns the removed member ids, sorted.
func (g *Group) Tick(now time.Time) []string {
	var expired []string
	for _, id := range g.memberIDs() {
		m := g.members[id]
		last := m.lastSeen
		if m.away {
			last = m.awaySince
		}
		if !now.Before(last.Add(m.sessionTimeout)) ||
			(!m.revokeDeadline.IsZero() && !now.Before(m.revokeDeadline)) {
			expired = append(expired, id)
			g.remove(m)
		}
	}
	g.reconcileAway()
	return expired
}

func (g *Group) memberIDs() []string {
	ids := make([]string, 0, len(g.members))
	for id := range g.members {
		ids = append(ids, id)
	}
	slices.SortFunc(ids, compareIDs)
	return ids
}

// compareIDs orders "m2" before "m10" (numeric suffixes compare as numbers).
func compareIDs(a, b string) int {
	if len(a) != len(b) && a != "" && b != "" && a[0] == b[0] {
		na, ea := strconv.Atoi(a[1:])
		nb, eb := strconv.Atoi(b[1:])
		if ea == nil && eb == nil {
			return na - nb
		}
	}
	if a < b {
		return -1
	}
	if a > b {
		return 1
	}
	return 0
}

// Members returns the number of members present (static members away included).
func (g *Group) Members() int { return len(g.members) }

// Subscribed returns the topics some member subscribes to, sorted.
func (g *Group) Subscribed() []string {
	var out []string
	for _, m := range g.members {
		out = append(out, m.subs...)
	}
	slices.Sort(out)
	return slices.Compact(out)
}

// HeartbeatInterval is the interval returned to members (Config.HeartbeatInterval).
func (g *Group) HeartbeatInterval() time.Duration { return g.cfg.HeartbeatInterval }

// CommitAllowed fences offset commits: only a current member with its current epoch may
// commit.
func (g *Group) CommitAllowed(memberID string, memberEpoch int32) error {
	m := g.members[memberID]
	if m == nil || m.away {
		return ErrUnknownMemberID
	}
	if memberEpoch != m.epoch {
		return ErrStaleMemberEpoch
	}
	return nil
}

// State of a group or member as Describe reports it.
type State string

// Group states (KIP-848). Targets are computed synchronously, so a group is never seen
// assigning: a group whose target moved is reconciling until every member caught up.
const (
	StateEmpty       State = "empty"
	StateAssigning   State = "assigning"
	StateReconciling State = "reconciling"
	StateStable      State = "stable"
)

// Member states.
const (
	MemberStable     State = "stable"     // owns exactly its target at the group epoch
	MemberUnrevoked  State = "unrevoked"  // must stop owning partitions outside its target
	MemberUnreleased State = "unreleased" // waits for others to release its target partitions
	MemberAway       State = "away"       // static member that left, kept for a session timeout
)

// MemberDescription describes one member.
type MemberDescription struct {
	MemberID      string
	InstanceID    string
	MemberEpoch   int32
	State         State
	Subscriptions []string
	Assignment    []TopicPartition // what it may own now
	Target        []TopicPartition // what it will own once reconciled
	Owned         []TopicPartition // what it last reported owning
}

// Description describes the group, for `runnel group describe`.
type Description struct {
	State      State
	GroupEpoch int32
	Members    []MemberDescription // by member id
}

func (g *Group) memberState(m *member) State {
	switch {
	case m.away:
		return MemberAway
	case !m.owned.subsetOf(m.target):
		return MemberUnrevoked
	case m.epoch != g.epoch || !m.assigned.equal(m.target) || !m.owned.equal(m.assigned):
		return MemberUnreleased
	}
	return MemberStable
}

// Describe reports the group's state and members.
func (g *Group) Describe() Description {
	d := Description{GroupEpoch: g.epoch, State: StateStable}
	if len(g.members) == 0 {
		d.State = StateEmpty
	}
	for _, id := range g.memberIDs() {
		m := g.members[id]
		st := g.memberState(m)
		if st != MemberStable && st != MemberAway {
			d.State = StateReconciling
		}
		d.Members = append(d.Members, MemberDescription{
			MemberID: m.id, InstanceID: m.instance, MemberEpoch: m.epoch, State: st,
			Subscriptions: slices.Clone(m.subs),
			Assignment:    m.assigned.sorted(), Target: m.target.sorted(), Owned: m.owned.sorted(),
		})
	}
	return d
}

// checkInvariants reports the first violated internal invariant (used by tests).
func (g *Group) checkInvariants() error {
	seen := map[TopicPartition]string{}
	for _, id := range g.memberIDs() {
		m := g.members[id]
		for tp := range m.assigned {
			if o, ok := seen[tp]; ok {
				return fmt.Errorf("%s assigned to both %s and %s", tp, o, id)
			}
			seen[tp] = id
		}
	}
	for _, id := range g.memberIDs() {
		m := g.members[id]
		for tp := range m.owned {
			if o, ok := seen[tp]; ok && o != id {
				return fmt.Errorf("%s owned by %s while assigned to %s", tp, id, o)
			}
		}
	}
	return nil
}
