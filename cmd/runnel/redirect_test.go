package main

import (
	"bytes"
	"context"
	"net"
	"strings"
	"sync/atomic"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	runnelv1 "github.com/runnel-io/runnel/proto/runnel/v1"
)

// fakeAdmin answers CreateTopic: a follower refuses it with NOT_METADATA_LEADER, first
// without a leader named (noLeader times), then naming leaderAddr; the leader creates.
type fakeAdmin struct {
	runnelv1.UnimplementedAdminServiceServer
	leaderAddr string // "" for the leader itself
	noLeader   atomic.Int32
	calls      atomic.Int32
}

func (f *fakeAdmin) CreateTopic(_ context.Context, req *runnelv1.CreateTopicRequest) (*runnelv1.CreateTopicResponse, error) {
	f.calls.Add(1)
	if f.leaderAddr == "" {
		return &runnelv1.CreateTopicResponse{Topic: &runnelv1.TopicSummary{Name: req.GetName(), PartitionCount: 1, ReplicationFactor: 1}}, nil
	}
	info := &runnelv1.ErrorInfo{Reason: runnelv1.ErrorReason_ERROR_REASON_NOT_METADATA_LEADER}
	if f.noLeader.Add(-1) < 0 {
		id := int32(1)
		info.LeaderId, info.LeaderAddress = &id, f.leaderAddr
	}
	st, err := status.New(codes.Unavailable, "not the metadata leader").WithDetails(info)
	if err != nil {
		panic(err)
	}
	return nil, st.Err()
}

func serveFake(t *testing.T, f *fakeAdmin) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	runnelv1.RegisterAdminServiceServer(srv, f)
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(srv.Stop)
	return ln.Addr().String()
}

// TestFollowMetadataLeader: the CLI's admin call, refused by a follower first while it knows
// no leader (an election) and then naming the leader, is made at the leader.
func TestFollowMetadataLeader(t *testing.T) {
	leader := &fakeAdmin{}
	leaderAddr := serveFake(t, leader)
	follower := &fakeAdmin{leaderAddr: leaderAddr}
	follower.noLeader.Store(2)
	followerAddr := serveFake(t, follower)

	var stdout, stderr bytes.Buffer
	code := run([]string{"--brokers", followerAddr, "topic", "create", "t"}, strings.NewReader(""), &stdout, &stderr)
	if code != 0 {
		t.Fatalf("exit %d, stderr %q", code, stderr.String())
	}
	if follower.calls.Load() != 3 || leader.calls.Load() != 1 {
		t.Fatalf("follower asked %d times, leader %d: want 3 and 1", follower.calls.Load(), leader.calls.Load())
	}
	if !strings.Contains(stdout.String(), "created") {
		t.Fatalf("stdout %q", stdout.String())
	}
}
