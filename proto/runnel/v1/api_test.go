package runnelv1_test

import (
	"bufio"
	"context"
	"net"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/grpc/test/bufconn"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"

	runnelv1 "github.com/runnel-io/runnel/proto/runnel/v1"
)

// The wire names of every call, and how each streams. Renaming a call or changing its streaming
// breaks every client, so this list changes only on purpose.
func TestServiceMethods(t *testing.T) {
	const (
		unary = iota
		serverStream
		bidiStream
	)
	want := map[string]int{
		runnelv1.AdminService_CreateTopic_FullMethodName:       unary,
		runnelv1.AdminService_DeleteTopic_FullMethodName:       unary,
		runnelv1.AdminService_ListTopics_FullMethodName:        unary,
		runnelv1.AdminService_DescribeTopic_FullMethodName:     unary,
		runnelv1.AdminService_AlterTopicConfigs_FullMethodName: unary,
		runnelv1.AdminService_DescribeCluster_FullMethodName:   unary,
		runnelv1.AdminService_GetMetadata_FullMethodName:       unary,
		runnelv1.ProduceService_Produce_FullMethodName:         unary,
		runnelv1.ProduceService_ProduceStream_FullMethodName:   bidiStream,
		runnelv1.FetchService_Fetch_FullMethodName:             unary,
		runnelv1.FetchService_Subscribe_FullMethodName:         serverStream,
		runnelv1.FetchService_ListOffsets_FullMethodName:       unary,
		runnelv1.OffsetService_CommitOffsets_FullMethodName:    unary,
		runnelv1.OffsetService_FetchOffsets_FullMethodName:     unary,
		runnelv1.OffsetService_ListGroups_FullMethodName:       unary,
		runnelv1.OffsetService_DescribeGroup_FullMethodName:    unary,
		runnelv1.OffsetService_ResetOffsets_FullMethodName:     unary,
		runnelv1.OffsetService_DeleteGroup_FullMethodName:      unary,
		runnelv1.AdminService_RebalanceCluster_FullMethodName:  unary,
		runnelv1.GroupService_Heartbeat_FullMethodName:         unary,
		runnelv1.GroupService_LeaveGroup_FullMethodName:        unary,
	}
	for name := range want {
		if !strings.HasPrefix(name, "/runnel.v1.") {
			t.Errorf("method %s is not in package runnel.v1", name)
		}
	}
	if _, ok := want["/runnel.v1.AdminService/CreateTopic"]; !ok {
		t.Errorf("generated names do not have the form /runnel.v1.Service/Method")
	}

	got := map[string]int{}
	for _, file := range []protoreflect.FileDescriptor{
		runnelv1.File_runnel_v1_admin_proto, runnelv1.File_runnel_v1_produce_proto,
		runnelv1.File_runnel_v1_fetch_proto, runnelv1.File_runnel_v1_offset_proto,
		runnelv1.File_runnel_v1_group_proto, runnelv1.File_runnel_v1_common_proto,
	} {
		if file.Package() != "runnel.v1" {
			t.Errorf("%s: package %s", file.Path(), file.Package())
		}
		if file.Path() != "runnel/v1/common.proto" && file.Services().Len() != 1 {
			t.Errorf("%s: %d services, want one per file", file.Path(), file.Services().Len())
		}
		for i := 0; i < file.Services().Len(); i++ {
			svc := file.Services().Get(i)
			for j := 0; j < svc.Methods().Len(); j++ {
				m := svc.Methods().Get(j)
				kind := unary
				switch {
				case m.IsStreamingClient() && m.IsStreamingServer():
					kind = bidiStream
				case m.IsStreamingServer():
					kind = serverStream
				case m.IsStreamingClient():
					kind = -1 // no client-only streams in this API
				}
				got["/"+string(svc.FullName())+"/"+string(m.Name())] = kind
			}
		}
	}
	for name, kind := range want {
		if g, ok := got[name]; !ok {
			t.Errorf("%s: missing from the descriptors", name)
		} else if g != kind {
			t.Errorf("%s: streaming kind %d, want %d", name, g, kind)
		}
	}
	for name := range got {
		if _, ok := want[name]; !ok {
			t.Errorf("%s: not in this test's list; add it on purpose", name)
		}
	}
}

// Zero values are the documented defaults; above all, acks left unset is the durable mode.
func TestDefaults(t *testing.T) {
	if runnelv1.Acks(0) != runnelv1.Acks_ACKS_ALL {
		t.Fatalf("zero Acks is %v, want ACKS_ALL", runnelv1.Acks(0))
	}
	var req runnelv1.ProduceRequest
	if err := protojson.Unmarshal([]byte(`{"topics":[{"topic":"orders","records":[{"value_text":"x"}]}]}`), &req); err != nil {
		t.Fatal(err)
	}
	if req.GetAcks() != runnelv1.Acks_ACKS_ALL {
		t.Errorf("a request without acks has %v, want ACKS_ALL", req.GetAcks())
	}
	// Unset acks is not even on the wire: an old or foreign client that never heard of acks
	// gets durability too.
	if b, err := proto.Marshal(&runnelv1.ProduceRequest{Acks: runnelv1.Acks_ACKS_ALL}); err != nil || len(b) != 0 {
		t.Errorf("ACKS_ALL encodes as %x (%v), want nothing", b, err)
	}

	var fetch runnelv1.FetchRequest
	if fetch.GetFormat() != runnelv1.RecordFormat_RECORD_FORMAT_BATCHES {
		t.Errorf("default format %v, want RECORD_FORMAT_BATCHES", fetch.GetFormat())
	}
	if fetch.GetIsolation() != runnelv1.IsolationLevel_ISOLATION_LEVEL_READ_UNCOMMITTED {
		t.Errorf("default isolation %v, want READ_UNCOMMITTED", fetch.GetIsolation())
	}
	if fetch.GetMaxWait() != nil {
		t.Errorf("max_wait must be able to tell unset (500 ms) from 0s (no wait)")
	}
	if (&runnelv1.ResetOffsetsRequest{}).GetExecute() {
		t.Errorf("ResetOffsets must default to a dry run")
	}

	// Null and empty keys differ, as in Kafka.
	var null, empty runnelv1.Record
	if err := protojson.Unmarshal([]byte(`{}`), &null); err != nil {
		t.Fatal(err)
	}
	if err := protojson.Unmarshal([]byte(`{"key":""}`), &empty); err != nil {
		t.Fatal(err)
	}
	if null.GetKeyData() != nil || empty.GetKeyData() == nil {
		t.Errorf("null key %v and empty key %v are not told apart", null.GetKeyData(), empty.GetKeyData())
	}
	if err := protojson.Unmarshal([]byte(`{"key":"","key_text":""}`), &empty); err == nil {
		t.Errorf("a record with both key and key_text was accepted")
	}
}

// The error detail survives a real call: a server attaches it with status.WithDetails, the
// client reads it back with status.Details, with partition 0 still present.
func TestErrorInfoRoundTrip(t *testing.T) {
	want := &runnelv1.ErrorInfo{
		Reason:        runnelv1.ErrorReason_ERROR_REASON_NOT_LEADER,
		Topic:         "orders",
		Partition:     proto.Int32(0),
		LeaderId:      proto.Int32(2),
		LeaderAddress: "10.0.0.2:9420",
	}
	st, err := status.New(codes.Unavailable, `topic "orders" partition 0: not the leader (broker 2 is)`).WithDetails(want)
	if err != nil {
		t.Fatal(err)
	}

	lis := bufconn.Listen(1 << 20)
	srv := grpc.NewServer()
	runnelv1.RegisterFetchServiceServer(srv, &fetchServer{err: st.Err()})
	go func() { _ = srv.Serve(lis) }()
	defer srv.Stop()

	conn, err := grpc.NewClient("passthrough:///bufconn",
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return lis.DialContext(ctx) }),
		grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	_, err = runnelv1.NewFetchServiceClient(conn).Fetch(ctx, &runnelv1.FetchRequest{Topic: "orders"})
	got := status.Convert(err)
	if got.Code() != codes.Unavailable || got.Message() != st.Message() {
		t.Fatalf("got %v, want %v", got, st)
	}
	details := got.Details()
	if len(details) != 1 {
		t.Fatalf("got details %v, want one ErrorInfo", details)
	}
	info, ok := details[0].(*runnelv1.ErrorInfo)
	if !ok {
		t.Fatalf("detail is %T, want *runnelv1.ErrorInfo", details[0])
	}
	if !proto.Equal(info, want) {
		t.Errorf("got %v, want %v", info, want)
	}
	if info.Partition == nil || info.GetPartition() != 0 || info.Offset != nil {
		t.Errorf("presence lost: partition %v, offset %v", info.Partition, info.Offset)
	}

	// A per-partition Error converts to the same status as documented.
	e := &runnelv1.Error{Code: int32(got.Code()), Message: got.Message(), Info: info}
	st2, err := status.New(codes.Code(e.GetCode()), e.GetMessage()).WithDetails(e.GetInfo())
	if err != nil {
		t.Fatal(err)
	}
	if !proto.Equal(st2.Proto(), st.Proto()) {
		t.Errorf("Error converts to %v, want %v", st2.Proto(), st.Proto())
	}
}

type fetchServer struct {
	runnelv1.UnimplementedFetchServiceServer
	err error
}

func (s *fetchServer) Fetch(context.Context, *runnelv1.FetchRequest) (*runnelv1.FetchResponse, error) {
	return nil, s.err
}

// Every grpcurl example in proto/README.md names a real call and sends JSON that call accepts.
func TestReadmeExamples(t *testing.T) {
	f, err := os.Open("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	call := regexp.MustCompile(`\b(runnel\.v1\.\w+)/(\w+)\b`)
	data := regexp.MustCompile(`-d '([^']*)'`)

	n := 0
	var heredoc protoreflect.MessageDescriptor // input type while reading a -d @ heredoc
	sc := bufio.NewScanner(f)
	for line := 1; sc.Scan(); line++ {
		text := sc.Text()
		if heredoc != nil {
			if text == "EOF" {
				heredoc = nil
				continue
			}
			checkJSON(t, line, heredoc, text)
			n++
			continue
		}
		if !strings.HasPrefix(text, "grpcurl ") {
			continue
		}
		m := call.FindStringSubmatch(text)
		if m == nil {
			continue // list, describe
		}
		d, err := protoregistry.GlobalFiles.FindDescriptorByName(protoreflect.FullName(m[1]))
		if err != nil {
			t.Errorf("README line %d: %v", line, err)
			continue
		}
		svc, ok := d.(protoreflect.ServiceDescriptor)
		if !ok {
			t.Errorf("README line %d: %s is not a service", line, m[1])
			continue
		}
		method := svc.Methods().ByName(protoreflect.Name(m[2]))
		if method == nil {
			t.Errorf("README line %d: %s has no method %s", line, m[1], m[2])
			continue
		}
		n++
		switch {
		case strings.Contains(text, "-d @"):
			heredoc = method.Input()
		case data.MatchString(text):
			checkJSON(t, line, method.Input(), data.FindStringSubmatch(text)[1])
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	if n < 10 {
		t.Errorf("found only %d grpcurl calls in README.md", n)
	}
}

func checkJSON(t *testing.T, line int, md protoreflect.MessageDescriptor, js string) {
	t.Helper()
	mt, err := protoregistry.GlobalTypes.FindMessageByName(md.FullName())
	if err != nil {
		t.Errorf("README line %d: %v", line, err)
		return
	}
	msg := mt.New().Interface()
	if err := protojson.Unmarshal([]byte(js), msg); err != nil {
		t.Errorf("README line %d: %s does not accept %s: %v", line, md.FullName(), js, err)
	}
}
