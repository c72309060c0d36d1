package broker

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/emptypb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/runnel-io/runnel/internal/recordbatch"
	runnelv1 "github.com/runnel-io/runnel/proto/runnel/v1"
)

// testBroker is an in-process broker on a loopback port with its clients.
type testBroker struct {
	t       testing.TB
	dir     string
	reg     *Registry
	svc     *Services
	srv     *Server
	served  chan error
	conn    *grpc.ClientConn
	admin   runnelv1.AdminServiceClient
	produce runnelv1.ProduceServiceClient
	fetch   runnelv1.FetchServiceClient
	stopped bool
}

func startBroker(t testing.TB, dir string) *testBroker {
	t.Helper()
	reg, err := OpenRegistry(RegistryOptions{DataDir: dir, NodeID: 1})
	if err != nil {
		t.Fatal(err)
	}
	b := &testBroker{t: t, dir: dir, reg: reg, served: make(chan error, 1)}
	b.svc = NewServices(ServicesOptions{Registry: reg, Version: "test", Address: func() string { return b.srv.Addr().String() }})
	cfg := DefaultConfig()
	cfg.Addr = "127.0.0.1:0"
	cfg.Register = b.svc.Register
	cfg.Metrics = b.svc.RegisterMetrics
	if b.srv, err = New(cfg); err != nil {
		_ = reg.Close()
		t.Fatal(err)
	}
	go func() { b.served <- b.srv.Serve() }()
	b.conn, err = grpc.NewClient(b.srv.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	b.admin = runnelv1.NewAdminServiceClient(b.conn)
	b.produce = runnelv1.NewProduceServiceClient(b.conn)
	b.fetch = runnelv1.NewFetchServiceClient(b.conn)
	t.Cleanup(b.stop)
	return b
}

// stop closes the client, the server (gracefully) and the registry, in the order runneld does.
func (b *testBroker) stop() {
	if b.stopped {
		return
	}
	b.stopped = true
	_ = b.conn.Close()
	b.svc.Stop()
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	if err := b.srv.Shutdown(ctx); err != nil {
		b.t.Errorf("shutdown: %v", err)
	}
	if err := <-b.served; err != nil {
		b.t.Errorf("serve: %v", err)
	}
	if err := b.reg.Close(); err != nil {
		b.t.Errorf("close registry: %v", err)
	}
}

func ctxT(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	t.Cleanup(cancel)
	return ctx
}

// wantStatus checks err's code and ErrorInfo reason and returns the ErrorInfo.
func wantStatus(t *testing.T, err error, code codes.Code, reason runnelv1.ErrorReason) *runnelv1.ErrorInfo {
	t.Helper()
	st, ok := status.FromError(err)
	if !ok || st.Code() != code {
		t.Fatalf("got %v, want code %v", err, code)
	}
	for _, d := range st.Details() {
		if info, ok := d.(*runnelv1.ErrorInfo); ok {
			if info.GetReason() != reason {
				t.Fatalf("got reason %v (%v), want %v", info.GetReason(), err, reason)
			}
			return info
		}
	}
	t.Fatalf("no ErrorInfo in %v", err)
	return nil
}

// partErr turns a per-partition Error into a status error.
func partErr(e *runnelv1.Error) error {
	if e == nil {
		return nil
	}
	st, err := status.New(codes.Code(e.GetCode()), e.GetMessage()).WithDetails(e.GetInfo())
	if err != nil {
		panic(err)
	}
	return st.Err()
}

func batch(t testing.TB, ts int64, values ...string) []byte {
	t.Helper()
	bld := recordbatch.NewBuilder(recordbatch.BuilderOptions{})
	for i, v := range values {
		bld.Add(recordbatch.Record{Timestamp: ts + int64(i), Key: []byte(fmt.Sprintf("k%d", i)), Value: []byte(v)})
	}
	b, err := bld.Build()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// withBase returns a copy of b (one batch) with its base offset set, as the broker stores it.
func withBase(b []byte, off int64) []byte {
	c := bytes.Clone(b)
	recordbatch.SetBaseOffset(c, off)
	return c
}

func (b *testBroker) createTopic(name string, partitions int32, configs map[string]string) {
	b.t.Helper()
	if _, err := b.admin.CreateTopic(ctxT(b.t), &runnelv1.CreateTopicRequest{Name: name, Partitions: partitions, Configs: configs}); err != nil {
		b.t.Fatal(err)
	}
}

func (b *testBroker) produceOK(topicName string, p int32, acks runnelv1.Acks, batches ...[]byte) int64 {
	b.t.Helper()
	resp, err := b.produce.Produce(ctxT(b.t), &runnelv1.ProduceRequest{Acks: acks, Partitions: []*runnelv1.ProducePartition{
		{Topic: topicName, Partition: p, Batches: bytes.Join(batches, nil)},
	}})
	if err != nil {
		b.t.Fatal(err)
	}
	r := resp.GetPartitions()[0]
	if r.GetError() != nil {
		b.t.Fatalf("produce %s/%d: %v", topicName, p, partErr(r.GetError()))
	}
	return r.GetBaseOffset()
}

func TestAdminTopics(t *testing.T) {
	b := startBroker(t, t.TempDir())
	ctx := ctxT(t)

	resp, err := b.admin.CreateTopic(ctx, &runnelv1.CreateTopicRequest{Name: "orders.eu", Partitions: 3, Configs: map[string]string{"retention.ms": " 86400000"}})
	if err != nil {
		t.Fatal(err)
	}
	if got := resp.GetTopic(); got.GetPartitionCount() != 3 || got.GetReplicationFactor() != 1 || got.GetTopicId() == "" {
		t.Fatalf("created %v", got)
	}
	var sawTopic bool
	for _, c := range resp.GetConfigs() {
		if c.GetName() == "retention.ms" {
			sawTopic = c.GetValue() == "86400000" && c.GetSource() == runnelv1.ConfigSource_CONFIG_SOURCE_TOPIC
		} else if c.GetSource() != runnelv1.ConfigSource_CONFIG_SOURCE_DEFAULT {
			t.Errorf("config %v: want default", c)
		}
	}
	if !sawTopic {
		t.Errorf("configs %v: want retention.ms=86400000 from the topic", resp.GetConfigs())
	}
	// validate_only creates nothing.
	v, err := b.admin.CreateTopic(ctx, &runnelv1.CreateTopicRequest{Name: "audit", ValidateOnly: true})
	if err != nil || v.GetTopic().GetTopicId() != "" || v.GetTopic().GetPartitionCount() != 1 {
		t.Fatalf("validate only: %v %v", v, err)
	}
	b.createTopic("audit", 0, nil)

	list, err := b.admin.ListTopics(ctx, &runnelv1.ListTopicsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if len(list.GetTopics()) != 2 || list.GetTopics()[0].GetName() != "audit" || list.GetTopics()[1].GetName() != "orders.eu" {
		t.Fatalf("list %v", list)
	}

	for _, tc := range []struct {
		req    *runnelv1.CreateTopicRequest
		code   codes.Code
		reason runnelv1.ErrorReason
		field  string
	}{
		{&runnelv1.CreateTopicRequest{Name: "bad/name"}, codes.InvalidArgument, runnelv1.ErrorReason_ERROR_REASON_INVALID_TOPIC_NAME, ""},
		{&runnelv1.CreateTopicRequest{Name: ".."}, codes.InvalidArgument, runnelv1.ErrorReason_ERROR_REASON_INVALID_TOPIC_NAME, ""},
		{&runnelv1.CreateTopicRequest{Name: ""}, codes.InvalidArgument, runnelv1.ErrorReason_ERROR_REASON_INVALID_REQUEST, "name"},
		{&runnelv1.CreateTopicRequest{Name: "audit"}, codes.AlreadyExists, runnelv1.ErrorReason_ERROR_REASON_TOPIC_ALREADY_EXISTS, ""},
		{&runnelv1.CreateTopicRequest{Name: "orders_eu"}, codes.AlreadyExists, runnelv1.ErrorReason_ERROR_REASON_TOPIC_ALREADY_EXISTS, ""},
		{&runnelv1.CreateTopicRequest{Name: "x", ReplicationFactor: 3}, codes.FailedPrecondition, runnelv1.ErrorReason_ERROR_REASON_INVALID_REPLICATION_FACTOR, "replication_factor"},
		{&runnelv1.CreateTopicRequest{Name: "x", ReplicationFactor: -1}, codes.InvalidArgument, runnelv1.ErrorReason_ERROR_REASON_INVALID_REPLICATION_FACTOR, "replication_factor"},
		{&runnelv1.CreateTopicRequest{Name: "x", Partitions: 10001}, codes.InvalidArgument, runnelv1.ErrorReason_ERROR_REASON_INVALID_PARTITIONS, "partitions"},
		{&runnelv1.CreateTopicRequest{Name: "x", Partitions: -2}, codes.InvalidArgument, runnelv1.ErrorReason_ERROR_REASON_INVALID_PARTITIONS, "partitions"},
		{&runnelv1.CreateTopicRequest{Name: "x", Configs: map[string]string{"compression.type": "zstd"}}, codes.InvalidArgument, runnelv1.ErrorReason_ERROR_REASON_INVALID_CONFIG, "configs[compression.type]"},
		{&runnelv1.CreateTopicRequest{Name: "x", Configs: map[string]string{"retention.ms": "soon"}}, codes.InvalidArgument, runnelv1.ErrorReason_ERROR_REASON_INVALID_CONFIG, "configs[retention.ms]"},
	} {
		_, err := b.admin.CreateTopic(ctx, tc.req)
		info := wantStatus(t, err, tc.code, tc.reason)
		if info.GetField() != tc.field {
			t.Errorf("%v: field %q, want %q", err, info.GetField(), tc.field)
		}
		if tc.req.GetName() != "" && info.GetTopic() != tc.req.GetName() {
			t.Errorf("%v: topic %q", err, info.GetTopic())
		}
		t.Logf("%v", err)
	}

	d, err := b.admin.DescribeTopic(ctx, &runnelv1.DescribeTopicRequest{Name: "orders.eu"})
	if err != nil {
		t.Fatal(err)
	}
	if len(d.GetPartitions()) != 3 {
		t.Fatalf("describe %v", d)
	}
	for i, p := range d.GetPartitions() {
		if p.GetPartition() != int32(i) || p.GetLeaderId() != 1 || p.GetLeaderAddress() != b.srv.Addr().String() ||
			len(p.GetReplicas()) != 1 || p.GetReplicas()[0] != 1 || p.GetLogStartOffset() != 0 || p.GetHighWatermark() != 0 {
			t.Errorf("partition %v", p)
		}
	}
	_, err = b.admin.DescribeTopic(ctx, &runnelv1.DescribeTopicRequest{Name: "nope"})
	wantStatus(t, err, codes.NotFound, runnelv1.ErrorReason_ERROR_REASON_UNKNOWN_TOPIC)

	// Alter configs: max.message.bytes applies live, retention.ms after a restart.
	var hdr metadata.MD
	alt, err := b.admin.AlterTopicConfigs(ctx, &runnelv1.AlterTopicConfigsRequest{
		Name: "orders.eu", Set: map[string]string{"max.message.bytes": "2048", "retention.ms": "1000"},
	}, grpc.Header(&hdr))
	if err != nil {
		t.Fatal(err)
	}
	if got := hdr.Get(RestartRequiredHeader); len(got) != 1 || got[0] != "retention.ms" {
		t.Errorf("restart header %v", got)
	}
	for _, c := range alt.GetConfigs() {
		if c.GetName() == "max.message.bytes" && (c.GetValue() != "2048" || c.GetSource() != runnelv1.ConfigSource_CONFIG_SOURCE_TOPIC) {
			t.Errorf("altered %v", c)
		}
	}
	alt, err = b.admin.AlterTopicConfigs(ctx, &runnelv1.AlterTopicConfigsRequest{Name: "orders.eu", Delete: []string{"retention.ms"}})
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range alt.GetConfigs() {
		if c.GetName() == "retention.ms" && (c.GetValue() != "604800000" || c.GetSource() != runnelv1.ConfigSource_CONFIG_SOURCE_DEFAULT) {
			t.Errorf("after delete %v", c)
		}
	}
	_, err = b.admin.AlterTopicConfigs(ctx, &runnelv1.AlterTopicConfigsRequest{Name: "orders.eu", Set: map[string]string{"bogus": "1"}})
	wantStatus(t, err, codes.InvalidArgument, runnelv1.ErrorReason_ERROR_REASON_INVALID_CONFIG)
	_, err = b.admin.AlterTopicConfigs(ctx, &runnelv1.AlterTopicConfigsRequest{Name: "orders.eu"})
	wantStatus(t, err, codes.InvalidArgument, runnelv1.ErrorReason_ERROR_REASON_INVALID_REQUEST)
	_, err = b.admin.AlterTopicConfigs(ctx, &runnelv1.AlterTopicConfigsRequest{Name: "nope", Set: map[string]string{"retention.ms": "1"}})
	wantStatus(t, err, codes.NotFound, runnelv1.ErrorReason_ERROR_REASON_UNKNOWN_TOPIC)

	cl, err := b.admin.DescribeCluster(ctx, &runnelv1.DescribeClusterRequest{})
	if err != nil || cl.GetClusterId() == "" || len(cl.GetBrokers()) != 1 || cl.GetBrokers()[0].GetId() != 1 || cl.GetMetadataLeaderId() != 1 {
		t.Fatalf("cluster %v %v", cl, err)
	}
	md, err := b.admin.GetMetadata(ctx, &runnelv1.GetMetadataRequest{Topics: []string{"audit", "nope"}})
	if err != nil {
		t.Fatal(err)
	}
	if len(md.GetTopics()) != 2 || len(md.GetTopics()[0].GetPartitions()) != 1 || md.GetTopics()[0].GetPartitions()[0].GetLeaderId() != 1 {
		t.Fatalf("metadata %v", md)
	}
	wantStatus(t, partErr(md.GetTopics()[1].GetError()), codes.NotFound, runnelv1.ErrorReason_ERROR_REASON_UNKNOWN_TOPIC)

	// Delete removes the files; the name is free again.
	if _, err := b.admin.DeleteTopic(ctx, &runnelv1.DeleteTopicRequest{Name: "orders.eu"}); err != nil {
		t.Fatal(err)
	}
	if _, err := filepath.Glob(filepath.Join(b.dir, "topics", "orders.eu", "*")); err != nil {
		t.Fatal(err)
	}
	if m, _ := filepath.Glob(filepath.Join(b.dir, "topics", "orders.eu")); len(m) != 0 {
		t.Fatalf("topic dir left: %v", m)
	}
	_, err = b.admin.DeleteTopic(ctx, &runnelv1.DeleteTopicRequest{Name: "orders.eu"})
	wantStatus(t, err, codes.NotFound, runnelv1.ErrorReason_ERROR_REASON_UNKNOWN_TOPIC)
	b.createTopic("orders_eu", 1, nil)
}

func TestProduceFetchTwoPartitions(t *testing.T) {
	b := startBroker(t, t.TempDir())
	ctx := ctxT(t)
	b.createTopic("events", 2, nil)

	b0a, b0b := batch(t, 1000, "a", "b", "c"), batch(t, 2000, "d")
	b1a := batch(t, 3000, "x", "y")
	resp, err := b.produce.Produce(ctx, &runnelv1.ProduceRequest{Partitions: []*runnelv1.ProducePartition{
		{Topic: "events", Partition: 0, Batches: bytes.Join([][]byte{b0a, b0b}, nil)},
		{Topic: "events", Partition: 1, Batches: b1a},
		{Topic: "events", Partition: 2, Batches: b1a},
		{Topic: "nope", Partition: 0, Batches: b1a},
	}})
	if err != nil {
		t.Fatal(err)
	}
	r := resp.GetPartitions()
	if r[0].GetError() != nil || r[0].GetBaseOffset() != 0 || r[0].GetLogAppendTime() == nil ||
		r[1].GetError() != nil || r[1].GetBaseOffset() != 0 {
		t.Fatalf("produce %v", resp)
	}
	wantStatus(t, partErr(r[2].GetError()), codes.NotFound, runnelv1.ErrorReason_ERROR_REASON_UNKNOWN_PARTITION)
	wantStatus(t, partErr(r[3].GetError()), codes.NotFound, runnelv1.ErrorReason_ERROR_REASON_UNKNOWN_TOPIC)
	if got := b.produceOK("events", 1, runnelv1.Acks_ACKS_LEADER, batch(t, 4000, "z")); got != 2 {
		t.Fatalf("second produce to partition 1 at %d, want 2", got)
	}
	if got := b.produceOK("events", 1, runnelv1.Acks_ACKS_NONE, batch(t, 5000, "n")); got != -1 {
		t.Fatalf("acks=none base offset %d, want -1", got)
	}
	// acks=none answers before the append is durable, so it becomes visible a little later.
	waitFor(t, func() bool {
		p, err := b.reg.Partition("events", 1)
		return err == nil && p.HighWatermark() == 4
	})

	f, err := b.fetch.Fetch(ctx, &runnelv1.FetchRequest{Topic: "events", Partition: 0, Offset: 0})
	if err != nil {
		t.Fatal(err)
	}
	want := append(withBase(b0a, 0), withBase(b0b, 3)...)
	if !bytes.Equal(f.GetBatches(), want) || f.GetNextOffset() != 4 || f.GetHighWatermark() != 4 || f.GetLogStartOffset() != 0 {
		t.Fatalf("fetch partition 0: next %d hw %d, %d bytes, want %d", f.GetNextOffset(), f.GetHighWatermark(), len(f.GetBatches()), len(want))
	}
	recs, err := decodeAll(f.GetBatches())
	if err != nil || len(recs) != 4 || string(recs[3].Value) != "d" || recs[3].Offset != 3 || recs[3].Timestamp != 2000 {
		t.Fatalf("records %v %v", recs, err)
	}
	// From the middle of a batch: the batch holding the offset comes whole.
	f, err = b.fetch.Fetch(ctx, &runnelv1.FetchRequest{Topic: "events", Partition: 0, Offset: 2, MaxRecords: 1})
	if err != nil || !bytes.Equal(f.GetBatches(), withBase(b0a, 0)) || f.GetNextOffset() != 3 {
		t.Fatalf("fetch from 2 with max_records 1: next %d, %v", f.GetNextOffset(), err)
	}
	f, err = b.fetch.Fetch(ctx, &runnelv1.FetchRequest{Topic: "events", Partition: 1, Offset: 0})
	if err != nil {
		t.Fatal(err)
	}
	if f.GetNextOffset() != 4 || !bytes.HasPrefix(f.GetBatches(), withBase(b1a, 0)) {
		t.Fatalf("fetch partition 1: next %d", f.GetNextOffset())
	}
	// At the end with max_wait 0: at once, empty.
	f, err = b.fetch.Fetch(ctx, &runnelv1.FetchRequest{Topic: "events", Partition: 1, Offset: 4, MaxWait: durationpb.New(0)})
	if err != nil || len(f.GetBatches()) != 0 || f.GetNextOffset() != 4 {
		t.Fatalf("fetch at end: %v %v", f, err)
	}

	// Errors.
	_, err = b.fetch.Fetch(ctx, &runnelv1.FetchRequest{Topic: "events", Partition: 0, Offset: 90})
	info := wantStatus(t, err, codes.OutOfRange, runnelv1.ErrorReason_ERROR_REASON_OFFSET_OUT_OF_RANGE)
	if info.GetOffset() != 90 || info.GetLogStartOffset() != 0 || info.GetHighWatermark() != 4 || info.GetTopic() != "events" || info.GetPartition() != 0 {
		t.Fatalf("out of range info %v", info)
	}
	if msg := status.Convert(err).Message(); msg != `topic "events" partition 0: offset 90 out of range [0, 4]` {
		t.Errorf("message %q", msg)
	}
	_, err = b.fetch.Fetch(ctx, &runnelv1.FetchRequest{Topic: "events", Partition: 0, Offset: -1})
	wantStatus(t, err, codes.OutOfRange, runnelv1.ErrorReason_ERROR_REASON_OFFSET_OUT_OF_RANGE)
	_, err = b.fetch.Fetch(ctx, &runnelv1.FetchRequest{Topic: "nope", Partition: 0})
	wantStatus(t, err, codes.NotFound, runnelv1.ErrorReason_ERROR_REASON_UNKNOWN_TOPIC)
	_, err = b.fetch.Fetch(ctx, &runnelv1.FetchRequest{Topic: "events", Partition: 7})
	wantStatus(t, err, codes.NotFound, runnelv1.ErrorReason_ERROR_REASON_UNKNOWN_PARTITION)
	_, err = b.fetch.Fetch(ctx, &runnelv1.FetchRequest{Topic: "bad name", Partition: 0})
	wantStatus(t, err, codes.InvalidArgument, runnelv1.ErrorReason_ERROR_REASON_INVALID_TOPIC_NAME)
	_, err = b.fetch.Fetch(ctx, &runnelv1.FetchRequest{Topic: "events", MaxWait: durationpb.New(time.Minute)})
	wantStatus(t, err, codes.InvalidArgument, runnelv1.ErrorReason_ERROR_REASON_INVALID_REQUEST)
	f, err = b.fetch.Fetch(ctx, &runnelv1.FetchRequest{Topic: "events", Offset: 1, MaxRecords: 2, Format: runnelv1.RecordFormat_RECORD_FORMAT_TEXT})
	if err != nil {
		t.Fatal(err)
	}
	if r := f.GetRecords(); len(r) != 2 || r[0].GetOffset() != 1 || r[0].GetValueText() != "b" || r[0].GetKeyText() != "k1" ||
		r[1].GetValueText() != "c" || r[1].GetTimestamp().AsTime().UnixMilli() != 1002 || f.GetNextOffset() != 3 || len(f.GetBatches()) != 0 {
		t.Fatalf("text fetch: %v", f)
	}
	f, err = b.fetch.Fetch(ctx, &runnelv1.FetchRequest{Topic: "events", Offset: 0, Format: runnelv1.RecordFormat_RECORD_FORMAT_DECODED})
	if err != nil || len(f.GetRecords()) != 4 || string(f.GetRecords()[3].GetValue()) != "d" || f.GetNextOffset() != 4 {
		t.Fatalf("decoded fetch: %v %v", f, err)
	}
	_, err = b.produce.Produce(ctx, &runnelv1.ProduceRequest{})
	wantStatus(t, err, codes.InvalidArgument, runnelv1.ErrorReason_ERROR_REASON_INVALID_REQUEST)
	_, err = b.produce.Produce(ctx, &runnelv1.ProduceRequest{Partitions: []*runnelv1.ProducePartition{
		{Topic: "events", Batches: b1a}, {Topic: "events", Batches: b1a},
	}})
	wantStatus(t, err, codes.InvalidArgument, runnelv1.ErrorReason_ERROR_REASON_INVALID_REQUEST)
}

func TestProduceInvalidBatches(t *testing.T) {
	b := startBroker(t, t.TempDir())
	ctx := ctxT(t)
	b.createTopic("small", 1, map[string]string{"max.message.bytes": "1024"})

	produce := func(batches []byte) *runnelv1.ProducePartitionResult {
		t.Helper()
		resp, err := b.produce.Produce(ctx, &runnelv1.ProduceRequest{Partitions: []*runnelv1.ProducePartition{{Topic: "small", Batches: batches}}})
		if err != nil {
			t.Fatal(err)
		}
		return resp.GetPartitions()[0]
	}
	ok := batch(t, 1, "fine")
	big := batch(t, 1, string(bytes.Repeat([]byte("v"), 2000)))
	// A good batch followed by a too-large one: nothing appended.
	r := produce(append(bytes.Clone(ok), big...))
	info := wantStatus(t, partErr(r.GetError()), codes.ResourceExhausted, runnelv1.ErrorReason_ERROR_REASON_RECORD_TOO_LARGE)
	if info.GetLimit() != 1024 || r.GetBaseOffset() != -1 || info.GetTopic() != "small" || info.GetPartition() != 0 {
		t.Fatalf("too large: %v %v", r, info)
	}
	bad := bytes.Clone(ok)
	bad[len(bad)-1] ^= 0xff
	r = produce(append(bytes.Clone(ok), bad...))
	wantStatus(t, partErr(r.GetError()), codes.InvalidArgument, runnelv1.ErrorReason_ERROR_REASON_INVALID_RECORD)
	r = produce(ok[:len(ok)-3])
	wantStatus(t, partErr(r.GetError()), codes.InvalidArgument, runnelv1.ErrorReason_ERROR_REASON_INVALID_RECORD)
	r = produce(nil)
	wantStatus(t, partErr(r.GetError()), codes.InvalidArgument, runnelv1.ErrorReason_ERROR_REASON_INVALID_REQUEST)
	// acks=none still reports validation failures.
	resp, err := b.produce.Produce(ctx, &runnelv1.ProduceRequest{Acks: runnelv1.Acks_ACKS_NONE, Partitions: []*runnelv1.ProducePartition{{Topic: "small", Batches: bad}}})
	if err != nil {
		t.Fatal(err)
	}
	wantStatus(t, partErr(resp.GetPartitions()[0].GetError()), codes.InvalidArgument, runnelv1.ErrorReason_ERROR_REASON_INVALID_RECORD)

	lo, err := b.fetch.ListOffsets(ctx, &runnelv1.ListOffsetsRequest{Queries: []*runnelv1.OffsetQuery{
		{Topic: "small", Position: &runnelv1.Position{Position: &runnelv1.Position_Latest{Latest: &emptypb.Empty{}}}},
	}})
	if err != nil || lo.GetOffsets()[0].GetOffset() != 0 {
		t.Fatalf("something was appended: %v %v", lo, err)
	}
}

func TestLongPoll(t *testing.T) {
	b := startBroker(t, t.TempDir())
	ctx := ctxT(t)
	b.createTopic("poll", 1, nil)

	type result struct {
		resp *runnelv1.FetchResponse
		err  error
		took time.Duration
	}
	done := make(chan result, 1)
	go func() {
		start := time.Now()
		resp, err := b.fetch.Fetch(ctx, &runnelv1.FetchRequest{Topic: "poll", Offset: 0, MaxWait: durationpb.New(20 * time.Second)})
		done <- result{resp, err, time.Since(start)}
	}()
	// Wait until the fetch is parked, then produce.
	waitFor(t, func() bool { return b.svc.fetching.Load() > 0 })
	select {
	case r := <-done:
		t.Fatalf("fetch returned before the produce: %v %v", r.resp, r.err)
	default:
	}
	want := batch(t, 7, "late")
	b.produceOK("poll", 0, runnelv1.Acks_ACKS_ALL, want)
	r := <-done
	if r.err != nil || !bytes.Equal(r.resp.GetBatches(), withBase(want, 0)) || r.resp.GetNextOffset() != 1 {
		t.Fatalf("long poll: %v %v", r.resp, r.err)
	}
	if r.took > 10*time.Second {
		t.Fatalf("long poll took %v", r.took)
	}

	// max_wait passes: an empty answer, no error.
	start := time.Now()
	resp, err := b.fetch.Fetch(ctx, &runnelv1.FetchRequest{Topic: "poll", Offset: 1, MaxWait: durationpb.New(50 * time.Millisecond)})
	if err != nil || len(resp.GetBatches()) != 0 || resp.GetNextOffset() != 1 || time.Since(start) < 50*time.Millisecond {
		t.Fatalf("timed out fetch: %v %v", resp, err)
	}
	// The call's deadline ends the wait a little before it, with an answer.
	dctx, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
	defer cancel()
	resp, err = b.fetch.Fetch(dctx, &runnelv1.FetchRequest{Topic: "poll", Offset: 1, MaxWait: durationpb.New(10 * time.Second)})
	if err != nil || len(resp.GetBatches()) != 0 {
		t.Fatalf("fetch with deadline: %v %v", resp, err)
	}

	// Shutdown ends a waiting fetch at once with SHUTTING_DOWN.
	go func() {
		resp, err := b.fetch.Fetch(ctx, &runnelv1.FetchRequest{Topic: "poll", Offset: 1, MaxWait: durationpb.New(20 * time.Second)})
		done <- result{resp, err, 0}
	}()
	waitFor(t, func() bool { return b.svc.fetching.Load() > 0 })
	b.svc.Stop()
	r = <-done
	wantStatus(t, r.err, codes.Unavailable, runnelv1.ErrorReason_ERROR_REASON_SHUTTING_DOWN)
}

func TestListOffsets(t *testing.T) {
	b := startBroker(t, t.TempDir())
	ctx := ctxT(t)
	b.createTopic("times", 2, nil)
	b.produceOK("times", 0, runnelv1.Acks_ACKS_ALL, batch(t, 1000, "a", "b")) // offsets 0,1 at 1000,1001
	b.produceOK("times", 0, runnelv1.Acks_ACKS_ALL, batch(t, 5000, "c"))      // offset 2 at 5000
	b.produceOK("times", 0, runnelv1.Acks_ACKS_ALL, batch(t, 9000, "d", "e")) // offsets 3,4

	pos := func(p *runnelv1.Position) *runnelv1.Position { return p }
	earliest := pos(&runnelv1.Position{Position: &runnelv1.Position_Earliest{Earliest: &emptypb.Empty{}}})
	latest := pos(&runnelv1.Position{Position: &runnelv1.Position_Latest{Latest: &emptypb.Empty{}}})
	at := func(ms int64) *runnelv1.Position {
		return &runnelv1.Position{Position: &runnelv1.Position_Timestamp{Timestamp: timestamppb.New(time.UnixMilli(ms))}}
	}
	resp, err := b.fetch.ListOffsets(ctx, &runnelv1.ListOffsetsRequest{Queries: []*runnelv1.OffsetQuery{
		{Topic: "times", Position: earliest},
		{Topic: "times", Partitions: []int32{0}, Position: latest},
		{Topic: "times", Partitions: []int32{0}, Position: at(1001)},
		{Topic: "times", Partitions: []int32{0}, Position: at(4000)},
		{Topic: "times", Partitions: []int32{0}, Position: at(99999)},
		{Topic: "times", Partitions: []int32{5}, Position: latest},
		{Topic: "nope", Position: latest},
	}})
	if err != nil {
		t.Fatal(err)
	}
	o := resp.GetOffsets()
	if len(o) != 8 {
		t.Fatalf("%d offsets: %v", len(o), o)
	}
	check := func(i int, part int32, off int64, ts int64) {
		t.Helper()
		if o[i].GetError() != nil || o[i].GetPartition() != part || o[i].GetOffset() != off {
			t.Errorf("offsets[%d] = %v, want partition %d offset %d", i, o[i], part, off)
		}
		if ts >= 0 && o[i].GetTimestamp().AsTime().UnixMilli() != ts || ts < 0 && o[i].GetTimestamp() != nil {
			t.Errorf("offsets[%d] timestamp %v, want %d", i, o[i].GetTimestamp(), ts)
		}
	}
	check(0, 0, 0, -1)
	check(1, 1, 0, -1)
	check(2, 0, 5, -1)
	check(3, 0, 1, 1001)
	check(4, 0, 2, 5000)
	check(5, 0, 5, -1)
	wantStatus(t, partErr(o[6].GetError()), codes.NotFound, runnelv1.ErrorReason_ERROR_REASON_UNKNOWN_PARTITION)
	wantStatus(t, partErr(o[7].GetError()), codes.NotFound, runnelv1.ErrorReason_ERROR_REASON_UNKNOWN_TOPIC)
	if o[7].GetPartition() != -1 || o[7].GetOffset() != -1 {
		t.Errorf("unknown topic %v", o[7])
	}

	_, err = b.fetch.ListOffsets(ctx, &runnelv1.ListOffsetsRequest{})
	wantStatus(t, err, codes.InvalidArgument, runnelv1.ErrorReason_ERROR_REASON_INVALID_REQUEST)
	_, err = b.fetch.ListOffsets(ctx, &runnelv1.ListOffsetsRequest{Queries: []*runnelv1.OffsetQuery{{Topic: "times"}}})
	wantStatus(t, err, codes.InvalidArgument, runnelv1.ErrorReason_ERROR_REASON_INVALID_REQUEST)
	_, err = b.fetch.ListOffsets(ctx, &runnelv1.ListOffsetsRequest{Queries: []*runnelv1.OffsetQuery{
		{Topic: "times", Position: &runnelv1.Position{Position: &runnelv1.Position_Offset{Offset: 3}}},
	}})
	wantStatus(t, err, codes.InvalidArgument, runnelv1.ErrorReason_ERROR_REASON_INVALID_REQUEST)
}

func TestRestartKeepsTopicsAndData(t *testing.T) {
	dir := t.TempDir()
	b := startBroker(t, dir)
	b.createTopic("keep", 2, map[string]string{"segment.bytes": "8192"})
	b.createTopic("gone", 1, nil)
	var want [][]byte
	for i := range 20 {
		bt := batch(t, int64(i), fmt.Sprintf("value-%d", i), "second")
		off := b.produceOK("keep", 1, runnelv1.Acks_ACKS_ALL, bt)
		want = append(want, withBase(bt, off))
	}
	if _, err := b.admin.DeleteTopic(ctxT(t), &runnelv1.DeleteTopicRequest{Name: "gone"}); err != nil {
		t.Fatal(err)
	}
	d1, err := b.admin.DescribeTopic(ctxT(t), &runnelv1.DescribeTopicRequest{Name: "keep"})
	if err != nil {
		t.Fatal(err)
	}
	b.stop()

	b = startBroker(t, dir)
	list, err := b.admin.ListTopics(ctxT(t), &runnelv1.ListTopicsRequest{})
	if err != nil || len(list.GetTopics()) != 1 || list.GetTopics()[0].GetTopicId() != d1.GetTopic().GetTopicId() {
		t.Fatalf("after restart: %v %v", list, err)
	}
	d2, err := b.admin.DescribeTopic(ctxT(t), &runnelv1.DescribeTopicRequest{Name: "keep"})
	if err != nil || d2.GetPartitions()[1].GetHighWatermark() != 40 {
		t.Fatalf("describe after restart: %v %v", d2, err)
	}
	for _, c := range d2.GetConfigs() {
		if c.GetName() == "segment.bytes" && (c.GetValue() != "8192" || c.GetSource() != runnelv1.ConfigSource_CONFIG_SOURCE_TOPIC) {
			t.Errorf("config after restart %v", c)
		}
	}
	var got []byte
	for off := int64(0); off < 40; {
		f, err := b.fetch.Fetch(ctxT(t), &runnelv1.FetchRequest{Topic: "keep", Partition: 1, Offset: off, MaxWait: durationpb.New(0)})
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, f.GetBatches()...)
		off = f.GetNextOffset()
	}
	if !bytes.Equal(got, bytes.Join(want, nil)) {
		t.Fatal("data differs after restart")
	}
	if got := b.produceOK("keep", 1, runnelv1.Acks_ACKS_ALL, batch(t, 0, "more")); got != 40 {
		t.Fatalf("produce after restart at %d", got)
	}
	_, err = b.admin.DescribeTopic(ctxT(t), &runnelv1.DescribeTopicRequest{Name: "gone"})
	wantStatus(t, err, codes.NotFound, runnelv1.ErrorReason_ERROR_REASON_UNKNOWN_TOPIC)
}

func TestRegistryClosed(t *testing.T) {
	reg, err := OpenRegistry(RegistryOptions{DataDir: t.TempDir(), NodeID: 1})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := reg.Create(CreateRequest{Name: "t"}); err != nil {
		t.Fatal(err)
	}
	if err := reg.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := reg.Partition("t", 0); !errors.Is(err, ErrRegistryClosed) {
		t.Fatalf("after close: %v", err)
	}
	if err := reg.Close(); err != nil {
		t.Fatal(err)
	}
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(testTimeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not reached")
		}
		time.Sleep(time.Millisecond)
	}
}

// decodeAll decodes concatenated batches.
func decodeAll(b []byte) ([]recordbatch.Record, error) {
	var out []recordbatch.Record
	for len(b) > 0 {
		one, rest, err := recordbatch.Next(b, len(b))
		if err != nil {
			return nil, err
		}
		recs, err := recordbatch.Records(one)
		if err != nil {
			return nil, err
		}
		out = append(out, recs...)
		b = rest
	}
	return out, nil
}

func TestDeleteWhileFetching(t *testing.T) {
	b := startBroker(t, t.TempDir())
	ctx := ctxT(t)
	b.createTopic("doomed", 1, nil)
	done := make(chan error, 1)
	go func() {
		_, err := b.fetch.Fetch(ctx, &runnelv1.FetchRequest{Topic: "doomed", MaxWait: durationpb.New(20 * time.Second)})
		done <- err
	}()
	waitFor(t, func() bool { return b.svc.fetching.Load() > 0 })
	if _, err := b.admin.DeleteTopic(ctx, &runnelv1.DeleteTopicRequest{Name: "doomed"}); err != nil {
		t.Fatal(err)
	}
	wantStatus(t, <-done, codes.NotFound, runnelv1.ErrorReason_ERROR_REASON_UNKNOWN_TOPIC)
}

func TestRegistryRecoversInterruptedCreate(t *testing.T) {
	dir := t.TempDir()
	reg, err := OpenRegistry(RegistryOptions{DataDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := reg.Create(CreateRequest{Name: "ok", Partitions: 2}); err != nil {
		t.Fatal(err)
	}
	if err := reg.Close(); err != nil {
		t.Fatal(err)
	}
	// A create cut short (no topic.json), a stray temp file, and a foreign directory.
	for _, d := range []string{"half/0", "lost+found"} {
		if err := os.MkdirAll(filepath.Join(dir, "topics", d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(dir, "topics", "ok", "topic.json.tmp"), []byte("{"), 0o644); err != nil {
		t.Fatal(err)
	}
	reg, err = OpenRegistry(RegistryOptions{DataDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	defer reg.Close()
	if l := reg.List(); len(l) != 1 || l[0].Name != "ok" || l[0].Partitions != 2 {
		t.Fatalf("list %v", l)
	}
	if _, err := os.Stat(filepath.Join(dir, "topics", "half")); !os.IsNotExist(err) {
		t.Fatalf("interrupted create left: %v", err)
	}
	if _, err := os.Stat(filepath.Join(dir, "topics", "lost+found")); err != nil {
		t.Fatalf("foreign directory removed: %v", err)
	}
	if _, err := reg.Create(CreateRequest{Name: "half"}); err != nil {
		t.Fatal(err)
	}
}
