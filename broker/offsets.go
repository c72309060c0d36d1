package broker

import (
	"context"
	"errors"
	"fmt"
	"math"
	"slices"
	"sort"
	"sync"
	"time"
	"unicode"
	"unicode/utf8"

	bolt "go.etcd.io/bbolt"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/runnel-io/runnel/consumergroup"
	"github.com/runnel-io/runnel/internal/cluster"
	runnelv1 "github.com/runnel-io/runnel/proto/runnel/v1"
	"github.com/runnel-io/runnel/topic"
)

// Limits of the offset service (proto/README.md, Limits).
const (
	// MaxGroupNameBytes is the longest group name, in bytes.
	MaxGroupNameBytes = 255
	// MaxOffsetMetadataBytes is the most metadata a committed offset may carry.
	MaxOffsetMetadataBytes = 4096
)

// offsetService is OffsetService over the offset store in <data-dir>/offsets.db.
//
// Single node: groups have no members yet (consumer-group issue), so ResetOffsets and
// DeleteGroup never fail with FAILED_PRECONDITION for active members.
//
// Deleted topics: commits remember their topic's id. A commit for a topic that no longer
// exists, or that was deleted and created again (a new id), is stale: FetchOffsets,
// ListGroups, DescribeGroup and ResetOffsets skip it as if it had never been made, and the
// group's next commit or reset removes it from the store. The group itself remains until
// DeleteGroup.
type offsetService struct {
	runnelv1.UnimplementedOffsetServiceServer
	s *Services

	store     *offsetStore
	openErr   error
	closeOnce sync.Once

	ends logEnds // groups_validate.go: commits are checked against the log end
}

// open opens the store under the registry's data directory; a failure is kept and returned
// by every call (and by Services.OffsetStoreError, which runneld checks at startup).
func (o *offsetService) open() {
	o.store, o.openErr = openOffsetStore(o.s.reg.dataDir)
	if o.openErr != nil {
		o.s.reg.log.Error().Err(o.openErr).Str("store", "offsets").Msg("offset store unavailable") // reg.log has its component
	}
}

// close closes the store (waiting for transactions in progress); later calls fail with
// UNAVAILABLE (SHUTTING_DOWN). Idempotent.
func (o *offsetService) close() error {
	var err error
	o.closeOnce.Do(func() {
		if o.store != nil {
			err = o.store.close()
		}
	})
	return err
}

// OffsetStoreError returns the error opening <data-dir>/offsets.db, nil if it is open.
func (s *Services) OffsetStoreError() error { return s.offsets.openErr }

func (o *offsetService) ready(group string) error {
	if o.openErr != nil {
		return groupError(group, apiErrorOf(where{partition: -1, offset: -1}, fmt.Errorf("%w: %w", ErrStorage, o.openErr)))
	}
	return nil
}

// readyFor checks that this broker serves group's offsets: on a single node, that the local
// store is open; in a cluster, that this broker is the metadata leader (the groups'
// coordinator), else NOT_METADATA_LEADER naming it.
func (o *offsetService) readyFor(ctx context.Context, group string) error {
	if o.s.reg.Cluster() != nil {
		if err := o.s.groups.ready(ctx); err != nil {
			return groupError(group, err)
		}
		return nil
	}
	return o.ready(group)
}

// loadGroup returns a group's committed offsets (sorted keys, entries) and its last commit
// time; found is false if it has none. Commits queued before the call are read.
func (o *offsetService) loadGroup(group string) (keys []offsetKey, entries map[offsetKey]offsetEntry, last time.Time, found bool, err error) {
	o.s.groups.batch.wait()
	if cl := o.s.reg.Cluster(); cl != nil {
		cos, err := cl.FetchOffsets(group)
		if errors.Is(err, cluster.ErrUnknownGroup) {
			return nil, map[offsetKey]offsetEntry{}, time.Time{}, false, nil
		}
		if err != nil {
			return nil, nil, time.Time{}, false, err
		}
		entries = make(map[offsetKey]offsetEntry, len(cos))
		for _, co := range cos {
			k := offsetKey{topic: co.Topic, partition: co.Partition}
			entries[k] = offsetEntry{TopicID: co.TopicID, Offset: co.Offset, Metadata: co.Metadata, CommitTime: co.CommittedAt.UnixNano()}
			if co.CommittedAt.After(last) {
				last = co.CommittedAt
			}
		}
		return sortedKeys(entries), entries, last, true, nil
	}
	entries = map[offsetKey]offsetEntry{}
	err = o.store.view(func(tx *bolt.Tx) error {
		b := groupBucket(tx, group)
		if b == nil {
			return nil
		}
		found = true
		last = lastCommit(b)
		var err error
		keys, entries, err = groupEntries(b)
		return err
	})
	return keys, entries, last, found, err
}

// groupError sets ErrorInfo.group on err (an apiError, or mapped to one).
func groupError(group string, err error) error {
	ae := apiErrorOf(where{partition: -1, offset: -1}, err)
	if ae.info != nil && group != "" {
		ae.info.Group = group
	}
	return ae
}

// validateGroup checks a group name: 1 to 255 bytes of UTF-8 without control characters.
func validateGroup(group string) error {
	bad := func(format string, args ...any) error {
		e := newAPIError(codes.InvalidArgument, runnelv1.ErrorReason_ERROR_REASON_INVALID_GROUP_NAME,
			fmt.Sprintf(format, args...), &runnelv1.ErrorInfo{Field: "group", Group: group})
		return e
	}
	switch {
	case group == "":
		return bad("group name is required")
	case len(group) > MaxGroupNameBytes:
		e := newAPIError(codes.InvalidArgument, runnelv1.ErrorReason_ERROR_REASON_INVALID_GROUP_NAME,
			fmt.Sprintf("group name is %d bytes, over the limit of %d", len(group), MaxGroupNameBytes),
			&runnelv1.ErrorInfo{Field: "group"})
		e.info.Limit = ptr(int64(MaxGroupNameBytes))
		return e
	case !utf8.ValidString(group):
		return bad("group name %q is not valid UTF-8", group)
	}
	for _, r := range group {
		if unicode.IsControl(r) {
			return bad("group name %q contains a control character", group)
		}
	}
	return nil
}

func ptr[T any](v T) *T { return &v }

func unknownGroup(group string) error {
	return newAPIError(codes.NotFound, runnelv1.ErrorReason_ERROR_REASON_UNKNOWN_GROUP,
		fmt.Sprintf("group %q: unknown group", group), &runnelv1.ErrorInfo{Group: group})
}

// topicsNow returns the existing topics by name.
func (o *offsetService) topicsNow() map[string]TopicInfo {
	m := make(map[string]TopicInfo)
	for _, t := range o.s.reg.List() {
		m[t.Name] = t
	}
	return m
}

// liveFunc reports whether a stored commit belongs to an existing topic and partition.
func liveFunc(topics map[string]TopicInfo) func(offsetKey, offsetEntry) bool {
	return func(k offsetKey, e offsetEntry) bool {
		t, ok := topics[k.topic]
		return ok && t.ID == e.TopicID && k.partition >= 0 && k.partition < t.Partitions
	}
}

// lookupPartition checks that a topic and partition exist and returns the topic.
func (o *offsetService) lookupPartition(name string, p int32) (TopicInfo, error) {
	info, err := o.s.reg.Lookup(name)
	if err != nil {
		return TopicInfo{}, apiErrorOf(at(name, -1), err)
	}
	if p < 0 || p >= info.Partitions {
		return TopicInfo{}, apiErrorOf(at(name, p),
			fmt.Errorf("topic %q partition %d: %w (the topic has %d)", name, p, ErrUnknownPartition, info.Partitions))
	}
	return info, nil
}

func (o *offsetService) CommitOffsets(ctx context.Context, req *runnelv1.CommitOffsetsRequest) (*runnelv1.CommitOffsetsResponse, error) {
	group := req.GetGroup()
	if err := validateGroup(group); err != nil {
		return nil, err
	}
	if err := o.readyFor(ctx, group); err != nil {
		return nil, err
	}
	if len(req.GetOffsets()) == 0 {
		return nil, groupError(group, invalidRequest("offsets", "group %q: commit offsets: no offsets", group))
	}
	now := time.Now()
	items := make([]commitItem, 0, len(req.GetOffsets()))
	seen := make(map[offsetKey]bool, len(req.GetOffsets()))
	for i, c := range req.GetOffsets() {
		field := fmt.Sprintf("offsets[%d]", i)
		if err := topic.ValidateName(c.GetTopic()); err != nil {
			return nil, groupError(group, apiErrorOf(at(c.GetTopic(), -1).withField(field+".topic"), err))
		}
		w := at(c.GetTopic(), c.GetPartition())
		if c.GetOffset() < 0 {
			return nil, groupError(group, invalidRequest(field+".offset", "%sgroup %q: offset %d is negative", w.prefix(), group, c.GetOffset()))
		}
		if n := len(c.GetMetadata()); n > MaxOffsetMetadataBytes {
			return nil, groupError(group, invalidRequestLimit(field+".metadata", MaxOffsetMetadataBytes,
				"%sgroup %q: metadata is %d bytes, over the limit of %d", w.prefix(), group, n, MaxOffsetMetadataBytes))
		}
		k := offsetKey{topic: c.GetTopic(), partition: c.GetPartition()}
		if seen[k] {
			return nil, groupError(group, invalidRequest(field, "%sgroup %q: partition given twice", w.prefix(), group))
		}
		seen[k] = true
		info, err := o.lookupPartition(c.GetTopic(), c.GetPartition())
		if err != nil {
			return nil, groupError(group, err)
		}
		items = append(items, commitItem{key: k, entry: offsetEntry{
			TopicID: info.ID, Offset: c.GetOffset(), Metadata: c.GetMetadata(), CommitTime: now.UnixNano(),
		}})
	}
	// Not beyond the log end (groups_validate.go).
	if err := o.checkLogEnds(ctx, group, items, func(i int) string { return fmt.Sprintf("offsets[%d].offset", i) }); err != nil {
		return nil, err
	}
	// Fenced by the group's coordinator, then written with the other commits of its batch.
	if err := o.s.groups.commit(ctx, newCommitReq(group, items, now), req.GetMemberId(), req.GetMemberEpoch()); err != nil {
		return nil, groupError(group, err)
	}
	return &runnelv1.CommitOffsetsResponse{CommitTime: timestamppb.New(now)}, nil
}

func committed(k offsetKey, e offsetEntry) *runnelv1.CommittedOffset {
	return &runnelv1.CommittedOffset{
		Topic: k.topic, Partition: k.partition, Offset: e.Offset, Metadata: e.Metadata,
		CommitTime: timestamppb.New(time.Unix(0, e.CommitTime)),
	}
}

func (o *offsetService) FetchOffsets(ctx context.Context, req *runnelv1.FetchOffsetsRequest) (*runnelv1.FetchOffsetsResponse, error) {
	group := req.GetGroup()
	if err := validateGroup(group); err != nil {
		return nil, err
	}
	if err := o.readyFor(ctx, group); err != nil {
		return nil, err
	}
	for i, tp := range req.GetTopics() {
		if err := topic.ValidateName(tp.GetTopic()); err != nil {
			return nil, groupError(group, apiErrorOf(at(tp.GetTopic(), -1).withField(fmt.Sprintf("topics[%d].topic", i)), err))
		}
	}
	live := liveFunc(o.topicsNow())
	keys, entries, _, _, err := o.loadGroup(group)
	if err != nil {
		return nil, groupError(group, err)
	}
	out := &runnelv1.FetchOffsetsResponse{}
	if len(req.GetTopics()) == 0 {
		for _, k := range keys {
			if e := entries[k]; live(k, e) {
				out.Offsets = append(out.Offsets, committed(k, e))
			}
		}
		return out, nil
	}
	want := map[offsetKey]bool{}
	for _, tp := range req.GetTopics() {
		if len(tp.GetPartitions()) == 0 {
			for _, k := range keys {
				if k.topic == tp.GetTopic() && live(k, entries[k]) {
					want[k] = true
				}
			}
			continue
		}
		for _, p := range tp.GetPartitions() {
			want[offsetKey{topic: tp.GetTopic(), partition: p}] = true
		}
	}
	sorted := make([]offsetKey, 0, len(want))
	for k := range want {
		sorted = append(sorted, k)
	}
	sort.Slice(sorted, func(i, j int) bool { return sorted[i].less(sorted[j]) })
	for _, k := range sorted {
		if e, ok := entries[k]; ok && live(k, e) {
			out.Offsets = append(out.Offsets, committed(k, e))
		} else {
			out.Offsets = append(out.Offsets, &runnelv1.CommittedOffset{Topic: k.topic, Partition: k.partition, Offset: -1})
		}
	}
	return out, nil
}

func (o *offsetService) ListGroups(ctx context.Context, _ *runnelv1.ListGroupsRequest) (*runnelv1.ListGroupsResponse, error) {
	if err := o.readyFor(ctx, ""); err != nil {
		return nil, err
	}
	var names []string
	if cl := o.s.reg.Cluster(); cl != nil {
		o.s.groups.batch.wait()
		var err error
		if names, err = cl.Groups(); err != nil {
			return nil, groupError("", err)
		}
	} else {
		err := o.store.view(func(tx *bolt.Tx) error {
			return tx.Bucket(bucketGroups).ForEachBucket(func(name []byte) error {
				names = append(names, string(name))
				return nil
			})
		})
		if err != nil {
			return nil, groupError("", err)
		}
	}
	// Groups with members and no commits yet are listed too.
	for _, g := range o.s.groups.names() {
		if !slices.Contains(names, g) {
			names = append(names, g)
		}
	}
	sort.Strings(names)
	live := liveFunc(o.topicsNow())
	out := &runnelv1.ListGroupsResponse{}
	for _, name := range names {
		keys, entries, last, _, err := o.loadGroup(name)
		if err != nil {
			return nil, groupError(name, err)
		}
		g := &runnelv1.GroupSummary{Group: name}
		if !last.IsZero() {
			g.LastCommitTime = timestamppb.New(last)
		}
		for _, k := range keys {
			if live(k, entries[k]) && (len(g.Topics) == 0 || g.Topics[len(g.Topics)-1] != k.topic) {
				g.Topics = append(g.Topics, k.topic)
			}
		}
		d, _ := o.s.groups.describe(name)
		g.State, g.Members = string(d.State), int32(len(d.Members))
		out.Groups = append(out.Groups, g)
	}
	return out, nil
}

func tpList(tps []consumergroup.TopicPartition) []*runnelv1.TopicPartitions { return tpsProto(tps) }

func (o *offsetService) DescribeGroup(ctx context.Context, req *runnelv1.DescribeGroupRequest) (*runnelv1.DescribeGroupResponse, error) {
	group := req.GetGroup()
	if err := validateGroup(group); err != nil {
		return nil, err
	}
	if err := o.readyFor(ctx, group); err != nil {
		return nil, err
	}
	live := liveFunc(o.topicsNow())
	keys, entries, _, found, err := o.loadGroup(group)
	if err != nil {
		return nil, groupError(group, err)
	}
	d, active := o.s.groups.describe(group)
	if !found && !active {
		return nil, unknownGroup(group)
	}
	out := &runnelv1.DescribeGroupResponse{Group: group, State: string(d.State), GroupEpoch: d.GroupEpoch}
	now := time.Now()
	owner := map[offsetKey]string{}
	for _, m := range d.Members {
		out.Members = append(out.Members, &runnelv1.GroupMember{
			MemberId: m.MemberID, InstanceId: m.InstanceID, MemberEpoch: m.MemberEpoch, State: string(m.State),
			Subscriptions: m.Subscriptions, Assignment: tpList(m.Assignment), Target: tpList(m.Target),
		})
		for _, tp := range m.Assignment {
			owner[offsetKey{topic: tp.Topic, partition: tp.Partition}] = m.MemberID
		}
	}
	// Every partition with a commit, and every partition assigned (committed -1 if none).
	want := map[offsetKey]bool{}
	for _, k := range keys {
		if live(k, entries[k]) {
			want[k] = true
		}
	}
	for k := range owner {
		want[k] = true
	}
	for _, k := range sortedKeys(want) {
		gp := &runnelv1.GroupPartition{
			Topic: k.topic, Partition: k.partition, CommittedOffset: -1, LogStartOffset: -1, HighWatermark: -1, Lag: -1,
			MemberId: owner[k],
		}
		e, committed := entries[k]
		committed = committed && live(k, e)
		if committed {
			gp.CommittedOffset, gp.Metadata, gp.CommitTime = e.Offset, e.Metadata, timestamppb.New(time.Unix(0, e.CommitTime))
		}
		gp.LagSeconds = -1
		if p, err := o.s.reg.Partition(k.topic, k.partition); err == nil {
			gp.LogStartOffset, gp.HighWatermark = p.Earliest(), p.HighWatermark()
			if committed {
				gp.Lag = max(0, gp.HighWatermark-e.Offset)
				out.TotalLag += gp.Lag
				gp.LagSeconds = lagSeconds(p, e.Offset, now)
			}
		}
		out.Partitions = append(out.Partitions, gp)
	}
	return out, nil
}

// clampOffset moves off into [lo, hi] (ResetOffsets: "moved to the nearer end").
func clampOffset(off, lo, hi int64) int64 { return min(max(off, lo), hi) }

// addSat adds b to a without overflowing.
func addSat(a, b int64) int64 {
	if b > 0 && a > math.MaxInt64-b {
		return math.MaxInt64
	}
	if b < 0 && a < math.MinInt64-b {
		return math.MinInt64
	}
	return a + b
}

func (o *offsetService) ResetOffsets(ctx context.Context, req *runnelv1.ResetOffsetsRequest) (*runnelv1.ResetOffsetsResponse, error) {
	group := req.GetGroup()
	if err := validateGroup(group); err != nil {
		return nil, err
	}
	if err := o.readyFor(ctx, group); err != nil {
		return nil, err
	}
	switch t := req.GetTarget().(type) {
	case nil:
		return nil, groupError(group, invalidRequest("target", "group %q: reset offsets: no target (to or shift_by)", group))
	case *runnelv1.ResetOffsetsRequest_To:
		if t.To.GetPosition() == nil {
			return nil, groupError(group, invalidRequest("to", "group %q: reset offsets: empty position (earliest, latest, offset or timestamp)", group))
		}
		if off, ok := t.To.GetPosition().(*runnelv1.Position_Offset); ok && off.Offset < 0 {
			return nil, groupError(group, invalidRequest("to.offset", "group %q: reset offsets: offset %d is negative", group, off.Offset))
		}
	}
	for i, tp := range req.GetTopics() {
		if err := topic.ValidateName(tp.GetTopic()); err != nil {
			return nil, groupError(group, apiErrorOf(at(tp.GetTopic(), -1).withField(fmt.Sprintf("topics[%d].topic", i)), err))
		}
	}
	if n := o.s.groups.members(group); n > 0 && req.GetExecute() && !req.GetForce() {
		return nil, groupNotEmpty(group, "reset offsets (use force to reset anyway)", n)
	}
	topics := o.topicsNow()
	live := liveFunc(topics)
	now := time.Now()
	out := &runnelv1.ResetOffsetsResponse{Executed: req.GetExecute()}

	keys, entries, _, _, err := o.loadGroup(group)
	if err != nil {
		return nil, groupError(group, err)
	}
	prev := func(k offsetKey) int64 {
		if e, ok := entries[k]; ok && live(k, e) {
			return e.Offset
		}
		return -1
	}
	want := map[offsetKey]TopicInfo{}
	if len(req.GetTopics()) == 0 {
		for _, k := range keys {
			if live(k, entries[k]) {
				want[k] = topics[k.topic]
			}
		}
		if len(want) == 0 {
			return nil, unknownGroup(group)
		}
	}
	for _, tp := range req.GetTopics() {
		name := tp.GetTopic()
		if len(tp.GetPartitions()) == 0 {
			info, err := o.s.reg.Lookup(name)
			if err != nil {
				return nil, groupError(group, apiErrorOf(at(name, -1), err))
			}
			for p := range info.Partitions {
				want[offsetKey{topic: name, partition: p}] = info
			}
			continue
		}
		for _, p := range tp.GetPartitions() {
			info, err := o.lookupPartition(name, p)
			if err != nil {
				return nil, groupError(group, err)
			}
			want[offsetKey{topic: name, partition: p}] = info
		}
	}
	var items []commitItem
	for _, k := range sortedKeys(want) {
		w := at(k.topic, k.partition)
		p, err := o.resetOffsets(ctx, want[k], k.partition) // groups_validate.go
		if err != nil {
			return nil, groupError(group, apiErrorOf(w, err))
		}
		lo, hi := p.Earliest(), p.HighWatermark()
		before := prev(k)
		var next int64
		switch t := req.GetTarget().(type) {
		case *runnelv1.ResetOffsetsRequest_ShiftBy:
			if before < 0 {
				e := newAPIError(codes.FailedPrecondition, runnelv1.ErrorReason_ERROR_REASON_NO_COMMITTED_OFFSET,
					fmt.Sprintf("%sgroup %q: no committed offset to shift", w.prefix(), group), w.info())
				e.info.Group = group
				return nil, e
			}
			next = addSat(before, t.ShiftBy)
		case *runnelv1.ResetOffsetsRequest_To:
			switch pos := t.To.GetPosition().(type) {
			case *runnelv1.Position_Earliest:
				next = lo
			case *runnelv1.Position_Latest:
				next = hi
			case *runnelv1.Position_Offset:
				next = pos.Offset
			case *runnelv1.Position_Timestamp:
				off, _, _, err := p.OffsetForTime(pos.Timestamp.AsTime().UnixMilli())
				if err != nil {
					return nil, groupError(group, apiErrorOf(w, err))
				}
				next = off
			}
		}
		next = clampOffset(next, lo, hi)
		out.Offsets = append(out.Offsets, &runnelv1.OffsetReset{
			Topic: k.topic, Partition: k.partition, PreviousOffset: before, NewOffset: next,
		})
		items = append(items, commitItem{key: k, entry: offsetEntry{TopicID: want[k].ID, Offset: next, CommitTime: now.UnixNano()}})
	}
	if !req.GetExecute() || len(items) == 0 {
		return out, nil
	}
	// Within [log start, log end] by the clamp above; checked as commits are (groups_validate.go).
	if err := o.checkLogEnds(ctx, group, items, nil); err != nil {
		return nil, err
	}
	// Written like a commit from outside the group (queued in order with the commits), but
	// allowed while the group has members when forced.
	r := newCommitReq(group, items, now)
	o.s.groups.batch.enqueue(r)
	select {
	case <-r.done:
	case <-ctx.Done():
		return nil, groupError(group, ctx.Err())
	}
	if r.err != nil {
		return nil, groupError(group, r.err)
	}
	return out, nil
}

func (o *offsetService) DeleteGroup(ctx context.Context, req *runnelv1.DeleteGroupRequest) (*runnelv1.DeleteGroupResponse, error) {
	group := req.GetGroup()
	if err := validateGroup(group); err != nil {
		return nil, err
	}
	if err := o.readyFor(ctx, group); err != nil {
		return nil, err
	}
	if n := o.s.groups.members(group); n > 0 {
		return nil, groupNotEmpty(group, "delete group", n)
	}
	o.s.groups.batch.wait()
	if cl := o.s.reg.Cluster(); cl != nil {
		cctx, cancel := context.WithTimeout(ctx, clusterCallTimeout)
		defer cancel()
		if err := cl.DeleteGroup(cctx, group); err != nil {
			if errors.Is(err, cluster.ErrUnknownGroup) {
				return nil, unknownGroup(group)
			}
			return nil, groupError(group, err)
		}
		return &runnelv1.DeleteGroupResponse{}, nil
	}
	err := o.store.update(func(tx *bolt.Tx) error {
		if groupBucket(tx, group) == nil {
			return unknownGroup(group)
		}
		return tx.Bucket(bucketGroups).DeleteBucket([]byte(group))
	})
	if err != nil {
		return nil, groupError(group, err)
	}
	return &runnelv1.DeleteGroupResponse{}, nil
}
