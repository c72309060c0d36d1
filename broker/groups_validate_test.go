package broker

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/types/known/emptypb"

	runnelv1 "github.com/runnel-io/runnel/proto/runnel/v1"
)

// fill appends n records to a partition (acks=all), so that offsets up to its log end may be
// committed.
func (b *testBroker) fill(topicName string, p int32, n int) {
	b.t.Helper()
	vals := make([]string, n)
	for i := range vals {
		vals[i] = fmt.Sprint(i)
	}
	b.produceOK(topicName, p, runnelv1.Acks_ACKS_ALL, batch(b.t, time.Now().UnixMilli(), vals...))
}

// wantBeyondEnd checks a commit refused as beyond the log end.
func wantBeyondEnd(t *testing.T, err error, group, topicName string, p int32, off, end int64, field string) {
	t.Helper()
	info := wantStatus(t, err, codes.OutOfRange, runnelv1.ErrorReason_ERROR_REASON_OFFSET_OUT_OF_RANGE)
	if info.GetGroup() != group || info.GetTopic() != topicName || info.GetPartition() != p || info.GetOffset() != off ||
		info.GetHighWatermark() != end || info.GetField() != field {
		t.Fatalf("error info %v, want group %q topic %q partition %d offset %d log end %d field %q", info, group, topicName, p, off, end, field)
	}
	msg := err.Error()
	for _, s := range []string{fmt.Sprintf("group %q", group), fmt.Sprintf("topic %q partition %d", topicName, p),
		fmt.Sprintf("offset %d", off), fmt.Sprintf("log end %d", end)} {
		if !strings.Contains(msg, s) {
			t.Fatalf("message %q does not name %s", msg, s)
		}
	}
}

// TestCommitBeyondLogEnd (single node): a commit up to the log end is accepted, one beyond it
// refused (all or nothing), also for a member; the check follows the log as it grows and a
// topic created again under the same name; a reset beyond the end is clamped to it.
func TestCommitBeyondLogEnd(t *testing.T) {
	b := startBroker(t, t.TempDir())
	b.createTopic("orders", 2, nil)
	b.fill("orders", 0, 3)
	ctx := ctxT(t)
	commit := func(group string, cs ...*runnelv1.OffsetCommit) error {
		_, err := b.offsets().CommitOffsets(ctx, &runnelv1.CommitOffsetsRequest{Group: group, Offsets: cs})
		return err
	}

	b.commitOK("g", oc("orders", 0, 3, "")) // the log end: everything consumed
	b.commitOK("g", oc("orders", 0, 2, ""), oc("orders", 1, 0, ""))
	wantBeyondEnd(t, commit("g", oc("orders", 0, 4, "")), "g", "orders", 0, 4, 3, "offsets[0].offset")
	wantBeyondEnd(t, commit("g", oc("orders", 0, 1, ""), oc("orders", 1, 1, "")), "g", "orders", 1, 1, 0, "offsets[1].offset")
	wantBeyondEnd(t, commit("fresh", oc("orders", 1, 1<<62, "")), "fresh", "orders", 1, 1<<62, 0, "offsets[0].offset")
	// Nothing of the refused commits was written.
	if got := fetchAll(t, b, "g"); !eqTPO(got, []tpo{{"orders", 0, 2}, {"orders", 1, 0}}) {
		t.Fatalf("after refused commits: %v", got)
	}
	_, err := b.offsets().DescribeGroup(ctx, &runnelv1.DescribeGroupRequest{Group: "fresh"})
	wantStatus(t, err, codes.NotFound, runnelv1.ErrorReason_ERROR_REASON_UNKNOWN_GROUP)

	// The log grows: the same commit passes.
	b.fill("orders", 0, 2)
	b.commitOK("g", oc("orders", 0, 5, ""))
	wantBeyondEnd(t, commit("g", oc("orders", 0, 6, "")), "g", "orders", 0, 6, 5, "offsets[0].offset")

	// A member's commit is checked too (before its epoch is).
	hb, err := b.groupsClient().Heartbeat(ctx, &runnelv1.HeartbeatRequest{Group: "members", SubscribedTopics: []string{"orders"}})
	if err != nil {
		t.Fatal(err)
	}
	mc := func(off int64) error {
		_, err := b.offsets().CommitOffsets(ctx, &runnelv1.CommitOffsetsRequest{Group: "members", MemberId: hb.GetMemberId(),
			MemberEpoch: hb.GetMemberEpoch(), Offsets: []*runnelv1.OffsetCommit{oc("orders", 0, off, "")}})
		return err
	}
	if err := mc(5); err != nil {
		t.Fatal(err)
	}
	wantBeyondEnd(t, mc(7), "members", "orders", 0, 7, 5, "offsets[0].offset")
	if _, err := b.groupsClient().LeaveGroup(ctx, &runnelv1.LeaveGroupRequest{Group: "members", MemberId: hb.GetMemberId()}); err != nil {
		t.Fatal(err)
	}

	// A topic deleted and created again (a new id) is checked against its own, shorter log.
	b.createTopic("temp", 1, nil)
	b.fill("temp", 0, 10)
	b.commitOK("t", oc("temp", 0, 10, ""))
	if _, err := b.admin.DeleteTopic(ctx, &runnelv1.DeleteTopicRequest{Name: "temp"}); err != nil {
		t.Fatal(err)
	}
	b.createTopic("temp", 1, nil)
	b.fill("temp", 0, 2)
	wantBeyondEnd(t, commit("t", oc("temp", 0, 10, "")), "t", "temp", 0, 10, 2, "offsets[0].offset")
	b.commitOK("t", oc("temp", 0, 2, ""))

	// A reset to an offset beyond the end is moved to the end (ResetOffsets: "moved to the
	// nearer end"), and executed.
	resp, err := b.offsets().ResetOffsets(ctx, &runnelv1.ResetOffsetsRequest{Group: "g", Execute: true,
		Topics: []*runnelv1.TopicPartitions{{Topic: "orders", Partitions: []int32{0, 1}}},
		Target: &runnelv1.ResetOffsetsRequest_To{To: &runnelv1.Position{Position: &runnelv1.Position_Offset{Offset: 1000}}}})
	if err != nil {
		t.Fatal(err)
	}
	if o := resp.GetOffsets(); len(o) != 2 || o[0].GetNewOffset() != 5 || o[1].GetNewOffset() != 0 {
		t.Fatalf("reset: %v", resp)
	}
	if got := fetchAll(t, b, "g"); !eqTPO(got, []tpo{{"orders", 0, 5}, {"orders", 1, 0}}) {
		t.Fatalf("after reset: %v", got)
	}
}

// waitWaiters waits until n commits wait on the refresh of k under way.
func waitWaiters(t *testing.T, o *offsetService, k logEndKey, n int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		o.ends.mu.Lock()
		got := -1
		if c := o.ends.inflight[k]; c != nil {
			got = c.waiters
		}
		o.ends.mu.Unlock()
		if got == n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d waiters on the refresh, want %d", got, n)
		}
		time.Sleep(time.Millisecond)
	}
}

// TestLogEndRefreshCoalesced: concurrent refreshes of one partition's log end share one
// call; a commit that joined a call started before it arrived asks again when the answer is
// below its offset; a failed refresh is UNAVAILABLE and caches nothing.
func TestLogEndRefreshCoalesced(t *testing.T) {
	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	o := &offsetService{s: &Services{stopCtx: ctx}}
	var (
		calls   atomic.Int32
		end     atomic.Int64
		fail    atomic.Bool
		release = make(chan struct{})
	)
	started := make(chan struct{}, 100)
	o.ends.latest = func(ctx context.Context, _ string, _ int32) (int64, error) {
		calls.Add(1)
		e := end.Load() // the end when the call starts
		started <- struct{}{}
		<-release
		if fail.Load() {
			return 0, fmt.Errorf("no leader")
		}
		return e, nil
	}
	k := logEndKey{topicID: "id", partition: 0}

	// Ten refreshes at once: one call.
	end.Store(10)
	var wg sync.WaitGroup
	results := make([]int64, 10)
	for i := range 10 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			e, err := o.refreshLogEnd(context.Background(), k, "t", 0, 5)
			if err != nil {
				t.Error(err)
			}
			results[i] = e
		}()
	}
	<-started
	waitWaiters(t, o, k, 10)
	close(release)
	wg.Wait()
	if n := calls.Load(); n != 1 {
		t.Fatalf("%d calls for 10 concurrent refreshes", n)
	}
	for _, e := range results {
		if e != 10 {
			t.Fatalf("results %v", results)
		}
	}
	if c := o.ends.cached(k); c != 10 {
		t.Fatalf("cached %d", c)
	}

	// A call under way whose answer (10) predates a commit of 12: that commit asks again.
	release = make(chan struct{})
	calls.Store(0)
	first := make(chan int64)
	go func() {
		e, _ := o.refreshLogEnd(context.Background(), k, "t", 0, 11)
		first <- e
	}()
	<-started
	end.Store(12) // records produced after the first call started
	second := make(chan int64)
	go func() {
		e, _ := o.refreshLogEnd(context.Background(), k, "t", 0, 12)
		second <- e
	}()
	waitWaiters(t, o, k, 2)
	release <- struct{}{} // the first call answers 10
	if e := <-first; e != 10 {
		t.Fatalf("first: %d", e)
	}
	<-started
	release <- struct{}{} // the second, started after the commit arrived, answers 12
	if e := <-second; e != 12 {
		t.Fatalf("second: %d", e)
	}
	if n := calls.Load(); n != 2 {
		t.Fatalf("%d calls", n)
	}

	// A failure reaches every waiter, each with its own copy (groupError completes it), and
	// caches nothing.
	fail.Store(true)
	o.ends.latest = func(ctx context.Context, topicName string, p int32) (int64, error) {
		calls.Add(1)
		started <- struct{}{}
		<-release
		return 0, newAPIError(codes.Unavailable, runnelv1.ErrorReason_ERROR_REASON_LEADER_NOT_AVAILABLE, "no leader", nil)
	}
	errc := make(chan error, 2)
	for range 2 {
		go func() {
			_, err := o.refreshLogEnd(context.Background(), k, "t", 0, 15)
			errc <- err
		}()
	}
	<-started
	waitWaiters(t, o, k, 2)
	close(release)
	e1, e2 := <-errc, <-errc
	if e1 == nil || e2 == nil || e1 == e2 {
		t.Fatalf("refresh failures %v, %v: want two distinct errors", e1, e2)
	}
	groupError("a", e1)
	if info := wantStatus(t, groupError("b", e2), codes.Unavailable, runnelv1.ErrorReason_ERROR_REASON_LEADER_NOT_AVAILABLE); info.GetGroup() != "b" {
		t.Fatalf("group %q", info.GetGroup())
	}
	if c := o.ends.cached(k); c != 12 {
		t.Fatalf("cached %d after a failure", c)
	}
}

// TestCheckLogEndsMany: a commit of many partitions beyond the cache checks them at once and
// reports the first refusal in request order.
func TestCheckLogEndsMany(t *testing.T) {
	b := startBroker(t, t.TempDir())
	b.createTopic("many", 8, nil)
	for p := int32(1); p < 8; p++ {
		b.fill("many", p, int(p))
	}
	var cs []*runnelv1.OffsetCommit
	for p := range int32(8) {
		cs = append(cs, oc("many", p, int64(p), ""))
	}
	b.commitOK("g", cs...)
	cs[3].Offset, cs[6].Offset = 4, 7
	_, err := b.offsets().CommitOffsets(ctxT(t), &runnelv1.CommitOffsetsRequest{Group: "g", Offsets: cs})
	wantBeyondEnd(t, err, "g", "many", 3, 4, 3, "offsets[3].offset")
	// Reset to the latest: the end, which passes the check.
	resp, err := b.offsets().ResetOffsets(ctxT(t), &runnelv1.ResetOffsetsRequest{Group: "g", Execute: true,
		Topics: []*runnelv1.TopicPartitions{{Topic: "many"}},
		Target: &runnelv1.ResetOffsetsRequest_To{To: &runnelv1.Position{Position: &runnelv1.Position_Latest{Latest: &emptypb.Empty{}}}}})
	if err != nil || len(resp.GetOffsets()) != 8 || resp.GetOffsets()[7].GetNewOffset() != 7 {
		t.Fatalf("reset: %v %v", resp, err)
	}
}
