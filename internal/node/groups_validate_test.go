package node

import (
	"context"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/emptypb"

	runnelv1 "github.com/runnel-io/runnel/proto/runnel/v1"
)

// metaCall makes an offset call at the metadata leader, following NOT_METADATA_LEADER.
func (c *testCluster) metaCall(f func(runnelv1.OffsetServiceClient) error) error {
	c.t.Helper()
	addr := ""
	for _, n := range c.nodes {
		if n != nil && n.Cluster().IsLeader() {
			addr = n.Addr()
		}
	}
	if addr == "" {
		addr = c.any().Addr()
	}
	var err error
	for range 5 {
		if err = f(runnelv1.NewOffsetServiceClient(c.conn(addr))); err == nil {
			return nil
		}
		info := errorInfo(err)
		if info.GetReason() != runnelv1.ErrorReason_ERROR_REASON_NOT_METADATA_LEADER {
			return err
		}
		if info.GetLeaderAddress() != "" {
			addr = info.GetLeaderAddress()
		}
		time.Sleep(100 * time.Millisecond)
	}
	return err
}

// TestClusterCommitBeyondLogEndRemote: on three brokers, a group commits offsets of a
// partition whose only replica is on another broker than the coordinator (the metadata
// leader). The coordinator asks the partition's leader for the log end: a commit up to it is
// accepted, one beyond refused (OUT_OF_RANGE naming the log end), one beyond the end it knew
// accepted once records were produced; a reset reads the log from the leader too. With the
// partition's broker stopped, a commit within the log end already seen still passes (no I/O),
// one beyond it fails as UNAVAILABLE (retriable), not accepted.
func TestClusterCommitBeyondLogEndRemote(t *testing.T) {
	c := newTestCluster(t)
	c.startThree()
	const parts = 6
	c.createTopic("far", parts, 1)
	metaID, _, _ := c.leaderMeta().Leader()
	var p int32 = -1
	var owner *Node
	for i := range int32(parts) {
		if l := c.waitLeader("far", i); l.ID() != metaID {
			p, owner = i, l
			break
		}
	}
	if p < 0 {
		t.Skip("every partition placed on the metadata leader")
	}
	if _, err := c.nodes[metaID].Registry().Partition("far", p); err == nil {
		t.Fatalf("the coordinator, broker %d, holds a replica of far/%d", metaID, p)
	}
	t.Logf("coordinator broker %d; far/%d on broker %d", metaID, p, owner.ID())
	for i := range 5 {
		if _, err := c.produce(owner.Addr(), "far", p, testBatch(t, i)); err != nil {
			t.Fatal(err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	commit := func(off int64) error {
		return c.metaCall(func(oc runnelv1.OffsetServiceClient) error {
			_, err := oc.CommitOffsets(ctx, &runnelv1.CommitOffsetsRequest{Group: "g",
				Offsets: []*runnelv1.OffsetCommit{{Topic: "far", Partition: p, Offset: off}}})
			return err
		})
	}
	committed := func() int64 {
		var off int64 = -2
		if err := c.metaCall(func(oc runnelv1.OffsetServiceClient) error {
			r, err := oc.FetchOffsets(ctx, &runnelv1.FetchOffsetsRequest{Group: "g", Topics: []*runnelv1.TopicPartitions{{Topic: "far", Partitions: []int32{p}}}})
			if err == nil {
				off = r.GetOffsets()[0].GetOffset()
			}
			return err
		}); err != nil {
			t.Fatal(err)
		}
		return off
	}
	wantOutOfRange := func(err error, off, end int64) {
		t.Helper()
		info := errorInfo(err)
		if status.Code(err) != codes.OutOfRange || info.GetReason() != runnelv1.ErrorReason_ERROR_REASON_OFFSET_OUT_OF_RANGE ||
			info.GetOffset() != off || info.GetHighWatermark() != end || info.GetGroup() != "g" || info.GetPartition() != p {
			t.Fatalf("commit %d: %v (%v), want OUT_OF_RANGE with log end %d", off, err, info, end)
		}
	}

	if err := commit(5); err != nil {
		t.Fatal(err)
	}
	wantOutOfRange(commit(6), 6, 5)
	for i := range 2 {
		if _, err := c.produce(owner.Addr(), "far", p, testBatch(t, 5+i)); err != nil {
			t.Fatal(err)
		}
	}
	if err := commit(7); err != nil {
		t.Fatalf("commit at the new log end: %v", err)
	}
	wantOutOfRange(commit(8), 8, 7)
	if got := committed(); got != 7 {
		t.Fatalf("committed %d, want 7", got)
	}

	// ResetOffsets reads the partition's bounds from its leader.
	reset := func(pos *runnelv1.Position) int64 {
		t.Helper()
		var got int64 = -2
		if err := c.metaCall(func(oc runnelv1.OffsetServiceClient) error {
			r, err := oc.ResetOffsets(ctx, &runnelv1.ResetOffsetsRequest{Group: "g", Execute: true,
				Topics: []*runnelv1.TopicPartitions{{Topic: "far", Partitions: []int32{p}}},
				Target: &runnelv1.ResetOffsetsRequest_To{To: pos}})
			if err == nil {
				got = r.GetOffsets()[0].GetNewOffset()
			}
			return err
		}); err != nil {
			t.Fatalf("reset: %v", err)
		}
		return got
	}
	if got := reset(&runnelv1.Position{Position: &runnelv1.Position_Earliest{Earliest: &emptypb.Empty{}}}); got != 0 {
		t.Fatalf("reset to earliest: %d", got)
	}
	if got := reset(&runnelv1.Position{Position: &runnelv1.Position_Offset{Offset: 1000}}); got != 7 {
		t.Fatalf("reset to 1000: %d, want the log end 7", got)
	}
	if got := committed(); got != 7 {
		t.Fatalf("committed %d after reset, want 7", got)
	}

	// The partition's only broker stops: within the known end passes, beyond is UNAVAILABLE.
	c.stop(owner.ID())
	if err := commit(6); err != nil {
		t.Fatalf("commit within the known log end, its leader down: %v", err)
	}
	err := commit(8)
	if status.Code(err) != codes.Unavailable || errorInfo(err).GetReason() != runnelv1.ErrorReason_ERROR_REASON_LEADER_NOT_AVAILABLE {
		t.Fatalf("commit beyond the known log end, its leader down: %v, want UNAVAILABLE (LEADER_NOT_AVAILABLE)", err)
	}
	if got := committed(); got != 6 {
		t.Fatalf("committed %d, want 6", got)
	}
}
