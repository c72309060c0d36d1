package broker

import (
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/types/known/emptypb"

	runnelv1 "github.com/runnel-io/runnel/proto/runnel/v1"
)

func (b *testBroker) groupsClient() runnelv1.GroupServiceClient {
	return runnelv1.NewGroupServiceClient(b.conn)
}

func countTPs(tps []*runnelv1.TopicPartitions) int {
	n := 0
	for _, t := range tps {
		n += len(t.GetPartitions())
	}
	return n
}

// A member joins, gets every partition, a second joins: the first must give up half before
// the second gets them; commits are fenced by member epoch; describe shows members and lag.
func TestGroupHeartbeatRebalanceAndFencing(t *testing.T) {
	b := startBroker(t, t.TempDir())
	b.createTopic("orders", 4, nil)
	b.produceOK("orders", 0, runnelv1.Acks_ACKS_ALL, batch(t, 1, "a", "b", "c"))
	ctx := ctxT(t)
	gc := b.groupsClient()

	r1, err := gc.Heartbeat(ctx, &runnelv1.HeartbeatRequest{Group: "g", SubscribedTopics: []string{"orders"}, SessionTimeoutMs: 3000})
	if err != nil {
		t.Fatal(err)
	}
	if r1.GetMemberId() == "" || r1.GetMemberEpoch() != 1 || countTPs(r1.GetAssignment()) != 4 {
		t.Fatalf("join: %v", r1)
	}
	if int64(r1.GetHeartbeatIntervalMs()) != DefaultHeartbeatInterval.Milliseconds() {
		t.Fatalf("heartbeat interval %d, want the default", r1.GetHeartbeatIntervalMs())
	}
	m1 := r1.GetMemberId()
	// The member commits at its epoch.
	if _, err := b.offsets().CommitOffsets(ctx, &runnelv1.CommitOffsetsRequest{Group: "g", MemberId: m1, MemberEpoch: 1,
		Offsets: []*runnelv1.OffsetCommit{oc("orders", 0, 1, "")}}); err != nil {
		t.Fatal(err)
	}
	// A commit from outside the group is refused while it has members.
	_, err = b.offsets().CommitOffsets(ctx, &runnelv1.CommitOffsetsRequest{Group: "g", Offsets: []*runnelv1.OffsetCommit{oc("orders", 0, 2, "")}})
	wantStatus(t, err, codes.FailedPrecondition, runnelv1.ErrorReason_ERROR_REASON_GROUP_NOT_EMPTY)

	r2, err := gc.Heartbeat(ctx, &runnelv1.HeartbeatRequest{Group: "g", SubscribedTopics: []string{"orders"}})
	if err != nil {
		t.Fatal(err)
	}
	if r2.GetMemberEpoch() != 2 || countTPs(r2.GetAssignment()) != 0 {
		t.Fatalf("second join: %v (nothing before the first gives up)", r2)
	}
	owned1 := r1.GetAssignment()
	r1, err = gc.Heartbeat(ctx, &runnelv1.HeartbeatRequest{Group: "g", MemberId: m1, MemberEpoch: 1, Owned: owned1})
	if err != nil {
		t.Fatal(err)
	}
	if r1.GetMemberEpoch() != 1 || countTPs(r1.GetAssignment()) != 2 {
		t.Fatalf("m1 asked to revoke: %v", r1)
	}
	r1, err = gc.Heartbeat(ctx, &runnelv1.HeartbeatRequest{Group: "g", MemberId: m1, MemberEpoch: 1, Owned: r1.GetAssignment()})
	if err != nil || r1.GetMemberEpoch() != 2 {
		t.Fatalf("m1 revoked: %v %v", r1, err)
	}
	// Epoch 1 is now stale for commits: nothing is committed.
	_, err = b.offsets().CommitOffsets(ctx, &runnelv1.CommitOffsetsRequest{Group: "g", MemberId: m1, MemberEpoch: 1,
		Offsets: []*runnelv1.OffsetCommit{oc("orders", 0, 3, "")}})
	wantStatus(t, err, codes.FailedPrecondition, runnelv1.ErrorReason_ERROR_REASON_STALE_MEMBER_EPOCH)
	if got := fetchAll(t, b, "g"); !eqTPO(got, []tpo{{"orders", 0, 1}}) {
		t.Fatalf("after a stale commit: %v", got)
	}
	_, err = b.offsets().CommitOffsets(ctx, &runnelv1.CommitOffsetsRequest{Group: "g", MemberId: "nobody", MemberEpoch: 2,
		Offsets: []*runnelv1.OffsetCommit{oc("orders", 0, 3, "")}})
	wantStatus(t, err, codes.NotFound, runnelv1.ErrorReason_ERROR_REASON_UNKNOWN_MEMBER_ID)
	r2, err = gc.Heartbeat(ctx, &runnelv1.HeartbeatRequest{Group: "g", MemberId: r2.GetMemberId(), MemberEpoch: 2})
	if err != nil || countTPs(r2.GetAssignment()) != 2 {
		t.Fatalf("m2 gets the released partitions: %v %v", r2, err)
	}
	if r2, err = gc.Heartbeat(ctx, &runnelv1.HeartbeatRequest{Group: "g", MemberId: r2.GetMemberId(), MemberEpoch: 2, Owned: r2.GetAssignment()}); err != nil {
		t.Fatal(err)
	}
	// Heartbeats from a stale epoch or an unknown member.
	_, err = gc.Heartbeat(ctx, &runnelv1.HeartbeatRequest{Group: "g", MemberId: m1, MemberEpoch: 7})
	wantStatus(t, err, codes.FailedPrecondition, runnelv1.ErrorReason_ERROR_REASON_FENCED_MEMBER_EPOCH)
	_, err = gc.Heartbeat(ctx, &runnelv1.HeartbeatRequest{Group: "nope", MemberId: "x", MemberEpoch: 3})
	wantStatus(t, err, codes.NotFound, runnelv1.ErrorReason_ERROR_REASON_UNKNOWN_MEMBER_ID)

	d, err := b.offsets().DescribeGroup(ctx, &runnelv1.DescribeGroupRequest{Group: "g"})
	if err != nil {
		t.Fatal(err)
	}
	if d.GetState() != "stable" || len(d.GetMembers()) != 2 || len(d.GetPartitions()) != 4 {
		t.Fatalf("describe: %v", d)
	}
	p0 := d.GetPartitions()[0]
	if p0.GetCommittedOffset() != 1 || p0.GetHighWatermark() != 3 || p0.GetLag() != 2 || p0.GetMemberId() == "" ||
		p0.GetLagSeconds() < float64(time.Since(time.UnixMilli(1))/time.Second)-5 {
		t.Fatalf("describe partition 0: %v", p0)
	}
	if p1 := d.GetPartitions()[1]; p1.GetCommittedOffset() != -1 || p1.GetLag() != -1 || p1.GetLagSeconds() != -1 {
		t.Fatalf("describe partition 1 (no commit): %v", p1)
	}
	l, err := b.offsets().ListGroups(ctx, &runnelv1.ListGroupsRequest{})
	if err != nil || len(l.GetGroups()) != 1 || l.GetGroups()[0].GetMembers() != 2 || l.GetGroups()[0].GetState() != "stable" {
		t.Fatalf("list: %v %v", l, err)
	}

	// Reset and delete are refused while the group has members; a dry run is fine, and force
	// resets anyway.
	reset := &runnelv1.ResetOffsetsRequest{Group: "g", Target: &runnelv1.ResetOffsetsRequest_To{To: &runnelv1.Position{Position: &runnelv1.Position_Earliest{Earliest: &emptypb.Empty{}}}}}
	if _, err := b.offsets().ResetOffsets(ctx, reset); err != nil {
		t.Fatalf("dry run: %v", err)
	}
	reset.Execute = true
	_, err = b.offsets().ResetOffsets(ctx, reset)
	wantStatus(t, err, codes.FailedPrecondition, runnelv1.ErrorReason_ERROR_REASON_GROUP_NOT_EMPTY)
	_, err = b.offsets().DeleteGroup(ctx, &runnelv1.DeleteGroupRequest{Group: "g"})
	wantStatus(t, err, codes.FailedPrecondition, runnelv1.ErrorReason_ERROR_REASON_GROUP_NOT_EMPTY)
	reset.Force = true
	if _, err := b.offsets().ResetOffsets(ctx, reset); err != nil {
		t.Fatalf("forced reset: %v", err)
	}
	if got := fetchAll(t, b, "g"); !eqTPO(got, []tpo{{"orders", 0, 0}}) {
		t.Fatalf("after a forced reset: %v", got)
	}

	// Both leave: the group is empty, and can be deleted.
	for _, m := range []string{m1, r2.GetMemberId()} {
		if _, err := gc.LeaveGroup(ctx, &runnelv1.LeaveGroupRequest{Group: "g", MemberId: m}); err != nil {
			t.Fatal(err)
		}
	}
	_, err = gc.LeaveGroup(ctx, &runnelv1.LeaveGroupRequest{Group: "g", MemberId: m1})
	wantStatus(t, err, codes.NotFound, runnelv1.ErrorReason_ERROR_REASON_UNKNOWN_MEMBER_ID)
	if _, err := b.offsets().DeleteGroup(ctx, &runnelv1.DeleteGroupRequest{Group: "g"}); err != nil {
		t.Fatal(err)
	}
	_, err = b.offsets().DescribeGroup(ctx, &runnelv1.DescribeGroupRequest{Group: "g"})
	wantStatus(t, err, codes.NotFound, runnelv1.ErrorReason_ERROR_REASON_UNKNOWN_GROUP)
}

func TestGroupBadInput(t *testing.T) {
	b := startBroker(t, t.TempDir())
	b.createTopic("orders", 2, nil)
	ctx := ctxT(t)
	gc := b.groupsClient()
	_, err := gc.Heartbeat(ctx, &runnelv1.HeartbeatRequest{Group: "", SubscribedTopics: []string{"orders"}})
	wantStatus(t, err, codes.InvalidArgument, runnelv1.ErrorReason_ERROR_REASON_INVALID_GROUP_NAME)
	_, err = gc.Heartbeat(ctx, &runnelv1.HeartbeatRequest{Group: "g"})
	wantStatus(t, err, codes.InvalidArgument, runnelv1.ErrorReason_ERROR_REASON_INVALID_REQUEST)
	_, err = gc.Heartbeat(ctx, &runnelv1.HeartbeatRequest{Group: "g", SubscribedTopics: []string{"bad/name"}})
	wantStatus(t, err, codes.InvalidArgument, runnelv1.ErrorReason_ERROR_REASON_INVALID_TOPIC_NAME)
	_, err = gc.Heartbeat(ctx, &runnelv1.HeartbeatRequest{Group: "g", SubscribedTopics: []string{"orders"}, SessionTimeoutMs: 400_000})
	wantStatus(t, err, codes.InvalidArgument, runnelv1.ErrorReason_ERROR_REASON_INVALID_REQUEST)
	_, err = gc.Heartbeat(ctx, &runnelv1.HeartbeatRequest{Group: "g", SubscribedTopics: []string{"orders"}, MemberEpoch: -5, MemberId: "x"})
	wantStatus(t, err, codes.NotFound, runnelv1.ErrorReason_ERROR_REASON_UNKNOWN_MEMBER_ID)
	_, err = gc.LeaveGroup(ctx, &runnelv1.LeaveGroupRequest{Group: "g"})
	wantStatus(t, err, codes.InvalidArgument, runnelv1.ErrorReason_ERROR_REASON_INVALID_REQUEST)
	_, err = b.offsets().DescribeGroup(ctx, &runnelv1.DescribeGroupRequest{Group: "unknown"})
	wantStatus(t, err, codes.NotFound, runnelv1.ErrorReason_ERROR_REASON_UNKNOWN_GROUP)
	// A subscription to a topic that does not exist yet: nothing assigned, until it does.
	r, err := gc.Heartbeat(ctx, &runnelv1.HeartbeatRequest{Group: "g", SubscribedTopics: []string{"later"}})
	if err != nil || countTPs(r.GetAssignment()) != 0 {
		t.Fatalf("%v %v", r, err)
	}
	b.createTopic("later", 3, nil)
	time.Sleep(3 * groupTickInterval)
	r, err = gc.Heartbeat(ctx, &runnelv1.HeartbeatRequest{Group: "g", MemberId: r.GetMemberId(), MemberEpoch: r.GetMemberEpoch()})
	if err != nil || countTPs(r.GetAssignment()) != 3 {
		t.Fatalf("after the topic was created: %v %v", r, err)
	}
}

// A member that stops heartbeating is removed after its session timeout.
func TestGroupSessionTimeout(t *testing.T) {
	b := startBroker(t, t.TempDir())
	b.createTopic("orders", 2, nil)
	ctx := ctxT(t)
	gc := b.groupsClient()
	r1, err := gc.Heartbeat(ctx, &runnelv1.HeartbeatRequest{Group: "g", SubscribedTopics: []string{"orders"}, SessionTimeoutMs: 300})
	if err != nil {
		t.Fatal(err)
	}
	r2, err := gc.Heartbeat(ctx, &runnelv1.HeartbeatRequest{Group: "g", SubscribedTopics: []string{"orders"}, SessionTimeoutMs: 5000})
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	for {
		r2, err = gc.Heartbeat(ctx, &runnelv1.HeartbeatRequest{Group: "g", MemberId: r2.GetMemberId(), MemberEpoch: r2.GetMemberEpoch(), Owned: r2.GetAssignment()})
		if err != nil {
			t.Fatal(err)
		}
		if countTPs(r2.GetAssignment()) == 2 {
			break
		}
		if time.Since(start) > 3*time.Second {
			t.Fatalf("m1 never expired: %v", r2)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if el := time.Since(start); el < 250*time.Millisecond {
		t.Fatalf("expired after %v, before its session timeout", el)
	}
	_, err = gc.Heartbeat(ctx, &runnelv1.HeartbeatRequest{Group: "g", MemberId: r1.GetMemberId(), MemberEpoch: r1.GetMemberEpoch()})
	wantStatus(t, err, codes.NotFound, runnelv1.ErrorReason_ERROR_REASON_UNKNOWN_MEMBER_ID)
}

// Concurrent commits of many members are batched, and each is durable when acknowledged.
func TestGroupCommitsBatched(t *testing.T) {
	b := startBroker(t, t.TempDir())
	b.createTopic("orders", 8, nil)
	for p := range int32(8) {
		b.fill("orders", p, 50) // commits go up to the log end
	}
	ctx := ctxT(t)
	var wg sync.WaitGroup
	for p := range int32(8) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range int64(50) {
				if _, err := b.offsets().CommitOffsets(ctx, &runnelv1.CommitOffsetsRequest{Group: "g", Offsets: []*runnelv1.OffsetCommit{oc("orders", p, i+1, "")}}); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	got := fetchAll(t, b, "g")
	if len(got) != 8 {
		t.Fatalf("%v", got)
	}
	for _, o := range got {
		if o.off != 50 {
			t.Fatalf("%v", got)
		}
	}
}
