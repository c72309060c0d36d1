package client_test

import (
	"context"
	"fmt"
	"net"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/runnel-io/runnel/client"
	runnelv1 "github.com/runnel-io/runnel/proto/runnel/v1"
)

// oldBroker forwards AdminService and unary Produce to a real broker and has no
// ProduceStream, like a broker from before it existed.
type oldBroker struct {
	runnelv1.UnimplementedAdminServiceServer
	runnelv1.UnimplementedProduceServiceServer
	admin   runnelv1.AdminServiceClient
	produce runnelv1.ProduceServiceClient
}

func (o *oldBroker) DescribeCluster(ctx context.Context, r *runnelv1.DescribeClusterRequest) (*runnelv1.DescribeClusterResponse, error) {
	return o.admin.DescribeCluster(ctx, r)
}

func (o *oldBroker) DescribeTopic(ctx context.Context, r *runnelv1.DescribeTopicRequest) (*runnelv1.DescribeTopicResponse, error) {
	return o.admin.DescribeTopic(ctx, r)
}

func (o *oldBroker) Produce(ctx context.Context, r *runnelv1.ProduceRequest) (*runnelv1.ProduceResponse, error) {
	return o.produce.Produce(ctx, r)
}

// TestUnaryFallback: against a broker without ProduceStream the producer uses unary Produce,
// one request per partition at a time, and keeps the partition's order.
func TestUnaryFallback(t *testing.T) {
	b := brokertestStart(t)
	conn, err := grpc.NewClient(b.Addr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	old := &oldBroker{admin: runnelv1.NewAdminServiceClient(conn), produce: runnelv1.NewProduceServiceClient(conn)}
	runnelv1.RegisterAdminServiceServer(srv, old)
	runnelv1.RegisterProduceServiceServer(srv, old)
	go srv.Serve(ln)
	defer srv.Stop()

	direct := clientOf(t, b)
	createTopic(t, direct, "u", 1, nil)
	cl, err := client.New(ctxT(t), client.WithBrokers(ln.Addr().String()), client.WithBatchBytes(1024), client.WithLinger(time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	ctx := ctxT(t)
	const n = 2000
	for i := range n {
		cl.Produce(ctx, &client.Record{Topic: "u", Value: fmt.Appendf(nil, "%d", i)}, func(_ *client.Record, err error) {
			if err != nil {
				t.Error(err)
			}
		})
	}
	if err := cl.Close(); err != nil { // flushes
		t.Fatal(err)
	}
	for i, r := range consumeN(t, direct, "u", []int32{0}, client.Earliest(), n) {
		if string(r.Value) != fmt.Sprint(i) {
			t.Fatalf("offset %d holds %q", i, r.Value)
		}
	}
}
