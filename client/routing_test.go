package client_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/runnel-io/runnel/client"
	runnelv1 "github.com/runnel-io/runnel/proto/runnel/v1"
)

// No cluster exists yet to test routing against, so these tests put a redirector in front of a
// real broker: a gRPC server (broker id 2) that leads nothing. It says it leads every
// partition in GetMetadata (while claims > 0), is the metadata leader in DescribeCluster, and
// refuses what a follower refuses: Produce, ProduceStream, Subscribe and ListOffsets with
// NOT_LEADER naming the real broker (id 1), or naming no one (noAddr), and metadata changes
// with NOT_METADATA_LEADER. Everything else it forwards to the real broker.

const (
	realID      = 1
	redirectID  = 2
	clusterName = "redirect-test"
)

type redirector struct {
	runnelv1.UnimplementedAdminServiceServer
	runnelv1.UnimplementedProduceServiceServer
	runnelv1.UnimplementedFetchServiceServer
	runnelv1.UnimplementedOffsetServiceServer

	addr, real string
	admin      runnelv1.AdminServiceClient
	offsets    runnelv1.OffsetServiceClient

	// claims is how many more GetMetadata answers name the redirector as every partition's
	// leader; afterwards they name the real broker.
	claims atomic.Int32
	// noAddr makes NOT_LEADER name no leader.
	noAddr atomic.Bool
	// metaNoAddr is how many more metadata changes get a NOT_METADATA_LEADER without a leader.
	metaNoAddr atomic.Int32
	// lagging makes the redirector a follower that has not heard of any topic yet: the real
	// broker is the metadata leader, and DescribeTopic and GetMetadata say UNKNOWN_TOPIC.
	lagging atomic.Bool
	// unknownProduce is how many more produce requests get UNKNOWN_TOPIC instead of NOT_LEADER.
	unknownProduce atomic.Int32
	// slow delays each ProduceStream answer after a stream's first, so that a client has
	// requests in flight at the redirector while it already knows the leader.
	slow atomic.Int64

	getMetadata, produceReqs, subscribes, listOffsets, notMetaLeader atomic.Int32

	srv *grpc.Server
}

func startRedirector(t *testing.T, real string) *redirector {
	t.Helper()
	conn, err := grpc.NewClient(real, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	r := &redirector{addr: ln.Addr().String(), real: real, admin: runnelv1.NewAdminServiceClient(conn), offsets: runnelv1.NewOffsetServiceClient(conn), srv: grpc.NewServer()}
	runnelv1.RegisterAdminServiceServer(r.srv, r)
	runnelv1.RegisterProduceServiceServer(r.srv, r)
	runnelv1.RegisterFetchServiceServer(r.srv, r)
	runnelv1.RegisterOffsetServiceServer(r.srv, r)
	served := make(chan struct{})
	go func() { defer close(served); _ = r.srv.Serve(ln) }()
	t.Cleanup(func() {
		r.srv.Stop()
		<-served
		conn.Close()
	})
	return r
}

func (r *redirector) Addr() string { return r.addr }

func (r *redirector) metaLeader() int32 {
	if r.lagging.Load() {
		return realID
	}
	return redirectID
}

func (r *redirector) brokers() []*runnelv1.Broker {
	return []*runnelv1.Broker{
		{Id: realID, Address: r.real, State: runnelv1.BrokerState_BROKER_STATE_ALIVE, IsMetadataLeader: r.metaLeader() == realID},
		{Id: redirectID, Address: r.addr, State: runnelv1.BrokerState_BROKER_STATE_ALIVE, IsMetadataLeader: r.metaLeader() == redirectID},
	}
}

func (r *redirector) DescribeCluster(context.Context, *runnelv1.DescribeClusterRequest) (*runnelv1.DescribeClusterResponse, error) {
	return &runnelv1.DescribeClusterResponse{ClusterId: clusterName, MetadataLeaderId: r.metaLeader(), Brokers: r.brokers(), RespondingBrokerId: redirectID}, nil
}

func unknownTopic(name string) *runnelv1.ErrorInfo {
	return &runnelv1.ErrorInfo{Reason: runnelv1.ErrorReason_ERROR_REASON_UNKNOWN_TOPIC, Topic: name}
}

func (r *redirector) GetMetadata(ctx context.Context, req *runnelv1.GetMetadataRequest) (*runnelv1.GetMetadataResponse, error) {
	r.getMetadata.Add(1)
	if r.lagging.Load() {
		resp := &runnelv1.GetMetadataResponse{ClusterId: clusterName, Brokers: r.brokers(), MetadataLeaderId: realID}
		for _, name := range req.GetTopics() {
			resp.Topics = append(resp.Topics, &runnelv1.TopicMetadata{Name: name, Error: &runnelv1.Error{Code: int32(codes.NotFound), Message: "unknown topic", Info: unknownTopic(name)}})
		}
		return resp, nil
	}
	resp, err := r.admin.GetMetadata(ctx, req)
	if err != nil {
		return nil, err
	}
	resp.Brokers, resp.MetadataLeaderId = r.brokers(), r.metaLeader()
	if r.claims.Add(-1) >= 0 {
		for _, tm := range resp.GetTopics() {
			for _, pm := range tm.GetPartitions() {
				pm.LeaderId, pm.LeaderAddress = redirectID, r.addr
			}
		}
	}
	return resp, nil
}

func (r *redirector) DescribeTopic(ctx context.Context, req *runnelv1.DescribeTopicRequest) (*runnelv1.DescribeTopicResponse, error) {
	if r.lagging.Load() {
		return nil, statusOf(codes.NotFound, "unknown topic", unknownTopic(req.GetName()))
	}
	return r.admin.DescribeTopic(ctx, req)
}

func (r *redirector) ListTopics(ctx context.Context, req *runnelv1.ListTopicsRequest) (*runnelv1.ListTopicsResponse, error) {
	return r.admin.ListTopics(ctx, req)
}

// notLeader is the ErrorInfo of a NOT_LEADER for topic/partition.
func (r *redirector) notLeader(topic string, partition int32) *runnelv1.ErrorInfo {
	info := &runnelv1.ErrorInfo{Reason: runnelv1.ErrorReason_ERROR_REASON_NOT_LEADER, Topic: topic, Partition: &partition}
	if !r.noAddr.Load() {
		id := int32(realID)
		info.LeaderId, info.LeaderAddress = &id, r.real
	}
	return info
}

func statusOf(code codes.Code, msg string, info *runnelv1.ErrorInfo) error {
	st, err := status.New(code, msg).WithDetails(info)
	if err != nil {
		panic(err)
	}
	return st.Err()
}

func (r *redirector) produceResponse(req *runnelv1.ProduceRequest) *runnelv1.ProduceResponse {
	r.produceReqs.Add(1)
	resp := &runnelv1.ProduceResponse{}
	for _, pp := range req.GetPartitions() {
		e := &runnelv1.Error{Code: int32(codes.Unavailable), Message: "not the leader", Info: r.notLeader(pp.GetTopic(), pp.GetPartition())}
		if r.unknownProduce.Add(-1) >= 0 {
			e = &runnelv1.Error{Code: int32(codes.NotFound), Message: "unknown topic", Info: unknownTopic(pp.GetTopic())}
		}
		resp.Partitions = append(resp.Partitions, &runnelv1.ProducePartitionResult{Topic: pp.GetTopic(), Partition: pp.GetPartition(), BaseOffset: -1, Error: e})
	}
	return resp
}

func (r *redirector) Produce(_ context.Context, req *runnelv1.ProduceRequest) (*runnelv1.ProduceResponse, error) {
	return r.produceResponse(req), nil
}

func (r *redirector) ProduceStream(st runnelv1.ProduceService_ProduceStreamServer) error {
	for i := 0; ; i++ {
		req, err := st.Recv()
		if err != nil {
			return nil
		}
		if d := time.Duration(r.slow.Load()); d > 0 && i > 0 {
			time.Sleep(d)
		}
		if err := st.Send(&runnelv1.ProduceStreamResponse{CorrelationId: req.GetCorrelationId(), Response: r.produceResponse(req.GetRequest())}); err != nil {
			return err
		}
	}
}

func (r *redirector) Subscribe(req *runnelv1.SubscribeRequest, _ runnelv1.FetchService_SubscribeServer) error {
	r.subscribes.Add(1)
	return statusOf(codes.Unavailable, "not the leader", r.notLeader(req.GetTopic(), req.GetPartition()))
}

func (r *redirector) ListOffsets(_ context.Context, req *runnelv1.ListOffsetsRequest) (*runnelv1.ListOffsetsResponse, error) {
	r.listOffsets.Add(1)
	resp := &runnelv1.ListOffsetsResponse{}
	for _, q := range req.GetQueries() {
		for _, p := range q.GetPartitions() {
			resp.Offsets = append(resp.Offsets, &runnelv1.ListedOffset{Topic: q.GetTopic(), Partition: p, Offset: -1,
				Error: &runnelv1.Error{Code: int32(codes.Unavailable), Message: "not the leader", Info: r.notLeader(q.GetTopic(), p)}})
		}
	}
	return resp, nil
}

// notMetadataLeader refuses a metadata change, naming the real broker unless metaNoAddr says
// otherwise.
func (r *redirector) notMetadataLeader() error {
	r.notMetaLeader.Add(1)
	info := &runnelv1.ErrorInfo{Reason: runnelv1.ErrorReason_ERROR_REASON_NOT_METADATA_LEADER}
	if r.metaNoAddr.Add(-1) < 0 {
		id := int32(realID)
		info.LeaderId, info.LeaderAddress = &id, r.real
	}
	return statusOf(codes.Unavailable, "not the metadata leader", info)
}

func (r *redirector) CreateTopic(context.Context, *runnelv1.CreateTopicRequest) (*runnelv1.CreateTopicResponse, error) {
	return nil, r.notMetadataLeader()
}

func (r *redirector) DeleteTopic(context.Context, *runnelv1.DeleteTopicRequest) (*runnelv1.DeleteTopicResponse, error) {
	return nil, r.notMetadataLeader()
}

func (r *redirector) AlterTopicConfigs(context.Context, *runnelv1.AlterTopicConfigsRequest) (*runnelv1.AlterTopicConfigsResponse, error) {
	return nil, r.notMetadataLeader()
}

func (r *redirector) RebalanceCluster(context.Context, *runnelv1.RebalanceClusterRequest) (*runnelv1.RebalanceClusterResponse, error) {
	return nil, r.notMetadataLeader()
}

func (r *redirector) CommitOffsets(context.Context, *runnelv1.CommitOffsetsRequest) (*runnelv1.CommitOffsetsResponse, error) {
	return nil, r.notMetadataLeader()
}

func (r *redirector) FetchOffsets(ctx context.Context, req *runnelv1.FetchOffsetsRequest) (*runnelv1.FetchOffsetsResponse, error) {
	return r.offsets.FetchOffsets(ctx, req)
}

// TestProduceFollowsNotLeader: the seed says it leads every partition but refuses produce
// with NOT_LEADER naming the real leader; every record ends up acknowledged by the leader, each
// partition in order, none lost or duplicated, although the redirector answers slowly, so
// that the producer learns the leader while later batches are still in flight at the
// redirector. CreateTopic, sent to the seed (the metadata
// leader in its DescribeCluster), is redirected by NOT_METADATA_LEADER.
func TestProduceFollowsNotLeader(t *testing.T) {
	b := brokertestStart(t)
	r := startRedirector(t, b.Addr())
	r.claims.Store(1 << 20)
	r.slow.Store(int64(2 * time.Millisecond))
	cl := clientOf(t, r, client.WithBatchBytes(1024), client.WithMaxInFlight(8), client.WithRetryBackoff(20*time.Millisecond), client.WithLogger(tLogger{t}))
	createTopic(t, cl, "rd", 2, nil)
	if r.notMetaLeader.Load() == 0 {
		t.Fatal("CreateTopic did not go to the metadata leader the seed named")
	}
	produceAndCheck(t, cl, b, "rd", 2, 4000)
	if r.produceReqs.Load() == 0 {
		t.Fatal("nothing was sent to the redirector: the test tests nothing")
	}
	t.Logf("redirector: %d produce requests, %d GetMetadata", r.produceReqs.Load(), r.getMetadata.Load())
}

// TestNotLeaderWithoutAddressRefreshesMetadata: NOT_LEADER naming no leader makes the producer
// look the metadata up again (after the backoff), and the new metadata leads it to the leader.
func TestNotLeaderWithoutAddressRefreshesMetadata(t *testing.T) {
	b := brokertestStart(t)
	direct := clientOf(t, b)
	createTopic(t, direct, "rn", 2, nil)
	r := startRedirector(t, b.Addr())
	r.claims.Store(1) // the first lookup points at the redirector, the next ones at the leader
	r.noAddr.Store(true)
	cl := clientOf(t, r, client.WithRetryBackoff(20*time.Millisecond), client.WithDeliveryTimeout(5*time.Second), client.WithLogger(tLogger{t}))
	produceAndCheck(t, cl, b, "rn", 2, 500)
	if r.produceReqs.Load() == 0 || r.getMetadata.Load() < 2 {
		t.Fatalf("redirector: %d produce requests, %d GetMetadata: want a refused produce and a second lookup", r.produceReqs.Load(), r.getMetadata.Load())
	}
}

// produceAndCheck produces n records over the partitions of topicName through cl, and checks
// with a client of the leader b that each partition holds exactly its records, in order.
func produceAndCheck(t *testing.T, cl *client.Client, b interface{ Addr() string }, topicName string, partitions int32, n int) {
	t.Helper()
	ctx := ctxT(t)
	var (
		mu   sync.Mutex
		errs []error
		last = map[int32]int64{}
	)
	for i := range n {
		p := int32(i) % partitions
		r := &client.Record{Topic: topicName, Partition: p, ManualPartition: true, Value: fmt.Appendf(nil, "%d", i)}
		cl.Produce(ctx, r, func(r *client.Record, err error) {
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				errs = append(errs, err)
				return
			}
			if prev, ok := last[r.Partition]; ok && r.Offset != prev+1 {
				errs = append(errs, fmt.Errorf("partition %d: callback of offset %d after %d", r.Partition, r.Offset, prev))
			}
			last[r.Partition] = r.Offset
		})
	}
	if err := cl.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
	direct := clientOf(t, b)
	for p := range partitions {
		want := n / int(partitions)
		if int(p) < n%int(partitions) {
			want++
		}
		got := consumeN(t, direct, topicName, []int32{p}, client.Earliest(), want)
		for i, r := range got {
			if w := fmt.Sprint(i*int(partitions) + int(p)); string(r.Value) != w {
				t.Fatalf("partition %d offset %d holds %q, want %q: lost, duplicated or reordered", p, i, r.Value, w)
			}
		}
		hw, err := direct.ListOffsets(ctx, topicName, client.Latest(), p)
		if err != nil {
			t.Fatal(err)
		}
		if hw[p] != int64(want) {
			t.Fatalf("partition %d has %d records, want %d", p, hw[p], want)
		}
	}
}

// TestConsumerFollowsLeader: the consumer's Subscribe at the broker the metadata named is
// refused with NOT_LEADER (naming the leader, or not: then fresh metadata names it); it
// resubscribes at the leader and reads every record once. ListOffsets is redirected likewise.
func TestConsumerFollowsLeader(t *testing.T) {
	for _, noAddr := range []bool{false, true} {
		t.Run(fmt.Sprintf("noAddr=%v", noAddr), func(t *testing.T) {
			b := brokertestStart(t)
			direct := clientOf(t, b)
			createTopic(t, direct, "rc", 1, nil)
			produceValues(t, direct, "rc", time.Now(), "a", "b", "c")
			r := startRedirector(t, b.Addr())
			r.claims.Store(1)
			r.noAddr.Store(noAddr)
			cl := clientOf(t, r, client.WithRetryBackoff(20*time.Millisecond), client.WithLogger(tLogger{t}))
			if got := values(consumeN(t, cl, "rc", []int32{0}, client.Earliest(), 3)); fmt.Sprint(got) != "[a b c]" {
				t.Fatalf("read %v", got)
			}
			if r.subscribes.Load() == 0 {
				t.Fatal("the consumer never subscribed at the redirector: the test tests nothing")
			}
			r.claims.Store(1)
			cl2 := clientOf(t, r, client.WithRetryBackoff(20*time.Millisecond))
			offs, err := cl2.ListOffsets(ctxT(t), "rc", client.Latest())
			if err != nil || offs[0] != 3 {
				t.Fatalf("ListOffsets: %v, %v", offs, err)
			}
			if r.listOffsets.Load() == 0 {
				t.Fatal("ListOffsets never went to the redirector")
			}
		})
	}
}

// TestAdminFollowsMetadataLeader: metadata changes sent to a broker that is not the metadata
// leader are made again at the leader it names; one it refuses without naming a leader (an
// election) is retried after the backoff.
func TestAdminFollowsMetadataLeader(t *testing.T) {
	b := brokertestStart(t)
	r := startRedirector(t, b.Addr())
	r.metaNoAddr.Store(1)
	cl := clientOf(t, r, client.WithRetryBackoff(20*time.Millisecond))
	ctx := ctxT(t)
	if err := cl.CreateTopic(ctx, "ra", 1, 0, nil); err != nil {
		t.Fatal(err)
	}
	if n := r.notMetaLeader.Load(); n != 2 {
		t.Fatalf("%d NOT_METADATA_LEADER answers, want 2 (one without a leader, one naming it)", n)
	}
	if _, err := cl.AlterTopicConfig(ctx, "ra", map[string]string{"retention.ms": "1000"}); err != nil {
		t.Fatal(err)
	}
	if err := cl.CommitOffsets(ctx, "g", map[client.TopicPartition]int64{{Topic: "ra", Partition: 0}: 0}, ""); err != nil {
		t.Fatal(err)
	}
	cos, err := cl.FetchCommitted(ctx, "g")
	if err != nil || len(cos) != 1 {
		t.Fatalf("committed %v, %v", cos, err)
	}
	if err := cl.DeleteTopic(ctx, "ra"); err != nil {
		t.Fatal(err)
	}
	var e *client.Error
	if err := cl.DeleteTopic(ctx, "ra"); !errors.As(err, &e) || e.Reason != "UNKNOWN_TOPIC" {
		t.Fatalf("deleting again: %v, want UNKNOWN_TOPIC from the leader", err)
	}
	if _, err := cl.RebalanceCluster(ctx); err != nil && status.Code(err) != codes.Unimplemented && !(errors.As(err, &e) && e.Code == codes.Unimplemented) {
		t.Fatal(err)
	}
}

// TestSeedDiesClientMovesOn: the broker the client bootstrapped from goes away; metadata and
// admin calls go to the other brokers it learned of, and producing goes on.
func TestSeedDiesClientMovesOn(t *testing.T) {
	b := brokertestStart(t)
	r := startRedirector(t, b.Addr())
	cl := clientOf(t, r, client.WithRetryBackoff(20*time.Millisecond), client.WithDialTimeout(2*time.Second))
	createTopic(t, cl, "rs1", 1, nil)
	produceAndCheck(t, cl, b, "rs1", 1, 100)
	r.srv.Stop()
	createTopic(t, cl, "rs2", 1, nil) // the metadata leader the client knew is gone
	produceAndCheck(t, cl, b, "rs2", 1, 100)
	if cl.Addr() != b.Addr() {
		t.Fatalf("client's broker is %s, want %s", cl.Addr(), b.Addr())
	}
}

// TestNewTopicNotYetEverywhere: right after CreateTopic, a broker may not know the topic yet.
// The broker the client asks first says UNKNOWN_TOPIC in DescribeTopic and GetMetadata: the
// client asks the metadata leader, which knows it. Then the partition's broker (the
// redirector, say the metadata) refuses produce with UNKNOWN_TOPIC a few times: retried while
// the metadata has the topic. A topic that does not exist still fails at once.
func TestNewTopicNotYetEverywhere(t *testing.T) {
	b := brokertestStart(t)
	direct := clientOf(t, b)
	createTopic(t, direct, "nt", 1, nil)
	r := startRedirector(t, b.Addr())
	r.lagging.Store(true)
	cl := clientOf(t, r, client.WithRetryBackoff(20*time.Millisecond), client.WithLogger(tLogger{t}))
	produceAndCheck(t, cl, b, "nt", 1, 10)

	createTopic(t, direct, "nt2", 1, nil)
	r.lagging.Store(false)
	r.claims.Store(1 << 20)
	r.unknownProduce.Store(3)
	cl2 := clientOf(t, r, client.WithRetryBackoff(20*time.Millisecond), client.WithLogger(tLogger{t}))
	produceAndCheck(t, cl2, b, "nt2", 1, 10)
	if r.unknownProduce.Load() >= 0 {
		t.Fatal("the redirector refused no produce with UNKNOWN_TOPIC: the test tests nothing")
	}

	start := time.Now()
	var e *client.Error
	if err := cl2.ProduceSync(ctxT(t), &client.Record{Topic: "nope", Value: []byte("x")}); !errors.As(err, &e) || e.Reason != "UNKNOWN_TOPIC" {
		t.Fatalf("producing to a topic that does not exist: %v, want UNKNOWN_TOPIC", err)
	}
	if d := time.Since(start); d > time.Second {
		t.Fatalf("UNKNOWN_TOPIC took %s", d)
	}
}
