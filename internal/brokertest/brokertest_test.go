package brokertest_test

import (
	"context"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/runnel-io/runnel/internal/brokertest"
	runnelv1 "github.com/runnel-io/runnel/proto/runnel/v1"
)

func TestStartRestart(t *testing.T) {
	b := brokertest.Start(t)
	conn, err := grpc.NewClient(b.Addr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	admin := runnelv1.NewAdminServiceClient(conn)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := admin.CreateTopic(ctx, &runnelv1.CreateTopicRequest{Name: "t", Partitions: 2}); err != nil {
		t.Fatal(err)
	}
	addr := b.Addr()
	b.Restart()
	if b.Addr() != addr {
		t.Fatalf("address changed across restart: %s, then %s", addr, b.Addr())
	}
	resp, err := admin.DescribeTopic(ctx, &runnelv1.DescribeTopicRequest{Name: "t"}, grpc.WaitForReady(true))
	if err != nil {
		t.Fatal(err)
	}
	if got := resp.GetTopic().GetPartitionCount(); got != 2 {
		t.Fatalf("partitions after restart: %d, want 2", got)
	}
	b.Stop()
	b.Stop() // idempotent
}
