package broker

import (
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/types/known/emptypb"
	"google.golang.org/protobuf/types/known/timestamppb"

	runnelv1 "github.com/runnel-io/runnel/proto/runnel/v1"
)

func (b *testBroker) offsets() runnelv1.OffsetServiceClient {
	return runnelv1.NewOffsetServiceClient(b.conn)
}

func (b *testBroker) commitOK(group string, cs ...*runnelv1.OffsetCommit) {
	b.t.Helper()
	if _, err := b.offsets().CommitOffsets(ctxT(b.t), &runnelv1.CommitOffsetsRequest{Group: group, Offsets: cs}); err != nil {
		b.t.Fatalf("commit %s: %v", group, err)
	}
}

func oc(topicName string, p int32, off int64, md string) *runnelv1.OffsetCommit {
	return &runnelv1.OffsetCommit{Topic: topicName, Partition: p, Offset: off, Metadata: md}
}

type tpo struct {
	topic string
	p     int32
	off   int64
}

func fetchAll(t *testing.T, b *testBroker, group string, topics ...*runnelv1.TopicPartitions) []tpo {
	t.Helper()
	resp, err := b.offsets().FetchOffsets(ctxT(t), &runnelv1.FetchOffsetsRequest{Group: group, Topics: topics})
	if err != nil {
		t.Fatal(err)
	}
	var out []tpo
	for _, o := range resp.GetOffsets() {
		out = append(out, tpo{o.GetTopic(), o.GetPartition(), o.GetOffset()})
		if (o.GetOffset() == -1) != (o.GetCommitTime() == nil) {
			t.Errorf("commit time %v with offset %d", o.GetCommitTime(), o.GetOffset())
		}
	}
	return out
}

func eqTPO(a, b []tpo) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func TestOffsetsCommitFetchRestart(t *testing.T) {
	dir := t.TempDir()
	b := startBroker(t, dir)
	b.createTopic("orders", 2, nil)
	b.createTopic("audit", 1, nil)
	b.fill("orders", 0, 3)
	b.fill("orders", 1, 10)
	b.fill("audit", 0, 100)
	ctx := ctxT(t)

	before := time.Now()
	resp, err := b.offsets().CommitOffsets(ctx, &runnelv1.CommitOffsetsRequest{Group: "billing", Offsets: []*runnelv1.OffsetCommit{
		oc("orders", 1, 7, "host-a"), oc("orders", 0, 3, ""), oc("audit", 0, 100, strings.Repeat("m", MaxOffsetMetadataBytes)),
	}})
	if err != nil {
		t.Fatal(err)
	}
	ct := resp.GetCommitTime().AsTime()
	if ct.Before(before.Add(-time.Second)) || ct.After(time.Now().Add(time.Second)) {
		t.Fatalf("commit time %v", ct)
	}
	want := []tpo{{"audit", 0, 100}, {"orders", 0, 3}, {"orders", 1, 7}}
	if got := fetchAll(t, b, "billing"); !eqTPO(got, want) {
		t.Fatalf("fetch all: %v, want %v", got, want)
	}
	f, err := b.offsets().FetchOffsets(ctx, &runnelv1.FetchOffsetsRequest{Group: "billing", Topics: []*runnelv1.TopicPartitions{{Topic: "orders", Partitions: []int32{1}}}})
	if err != nil || len(f.GetOffsets()) != 1 || f.GetOffsets()[0].GetMetadata() != "host-a" ||
		!f.GetOffsets()[0].GetCommitTime().AsTime().Equal(ct) {
		t.Fatalf("fetch orders/1: %v %v", f, err)
	}
	// Named partitions without commits, an unknown group, an unknown topic: -1.
	if got := fetchAll(t, b, "billing", &runnelv1.TopicPartitions{Topic: "orders", Partitions: []int32{5, 0}}, &runnelv1.TopicPartitions{Topic: "nope", Partitions: []int32{0}}); !eqTPO(got, []tpo{{"nope", 0, -1}, {"orders", 0, 3}, {"orders", 5, -1}}) {
		t.Fatalf("fetch named: %v", got)
	}
	if got := fetchAll(t, b, "billing", &runnelv1.TopicPartitions{Topic: "orders"}); !eqTPO(got, []tpo{{"orders", 0, 3}, {"orders", 1, 7}}) {
		t.Fatalf("fetch topic: %v", got)
	}
	if got := fetchAll(t, b, "newcomer", &runnelv1.TopicPartitions{Topic: "orders", Partitions: []int32{0}}); !eqTPO(got, []tpo{{"orders", 0, -1}}) {
		t.Fatalf("fetch unknown group: %v", got)
	}
	if got := fetchAll(t, b, "newcomer"); len(got) != 0 {
		t.Fatalf("fetch unknown group, all: %v", got)
	}
	// Commits overwrite; an offset beyond the log end is refused (groups_validate_test.go).
	b.commitOK("billing", oc("orders", 1, 10, "v2"))

	b.stop()
	b = startBroker(t, dir)
	want = []tpo{{"audit", 0, 100}, {"orders", 0, 3}, {"orders", 1, 10}}
	if got := fetchAll(t, b, "billing"); !eqTPO(got, want) {
		t.Fatalf("after restart: %v, want %v", got, want)
	}
	f, err = b.offsets().FetchOffsets(ctxT(t), &runnelv1.FetchOffsetsRequest{Group: "billing", Topics: []*runnelv1.TopicPartitions{{Topic: "orders", Partitions: []int32{1}}}})
	if err != nil || f.GetOffsets()[0].GetMetadata() != "v2" {
		t.Fatalf("metadata after restart: %v %v", f, err)
	}
}

func TestOffsetsSecondOpenFails(t *testing.T) {
	dir := t.TempDir()
	b := startBroker(t, dir)
	_ = b
	start := time.Now()
	_, err := openOffsetStore(dir)
	if err == nil || !strings.Contains(err.Error(), "locked by another process") {
		t.Fatalf("second open: %v", err)
	}
	if time.Since(start) > 4*offsetsOpenTimeout {
		t.Fatalf("second open took %v", time.Since(start))
	}
}

func TestOffsetsErrors(t *testing.T) {
	b := startBroker(t, t.TempDir())
	b.createTopic("orders", 2, nil)
	b.fill("orders", 0, 1)
	ctx := ctxT(t)
	commit := func(group string, cs ...*runnelv1.OffsetCommit) error {
		_, err := b.offsets().CommitOffsets(ctx, &runnelv1.CommitOffsetsRequest{Group: group, Offsets: cs})
		return err
	}
	const (
		badGroup   = runnelv1.ErrorReason_ERROR_REASON_INVALID_GROUP_NAME
		badRequest = runnelv1.ErrorReason_ERROR_REASON_INVALID_REQUEST
	)
	for _, g := range []string{"", strings.Repeat("g", 256), "a\nb", "bad\x7f"} {
		wantStatus(t, commit(g, oc("orders", 0, 1, "")), codes.InvalidArgument, badGroup)
		_, err := b.offsets().FetchOffsets(ctx, &runnelv1.FetchOffsetsRequest{Group: g})
		wantStatus(t, err, codes.InvalidArgument, badGroup)
		_, err = b.offsets().DescribeGroup(ctx, &runnelv1.DescribeGroupRequest{Group: g})
		wantStatus(t, err, codes.InvalidArgument, badGroup)
	}
	// Invalid UTF-8 cannot cross gRPC (proto3 strings); check the validation itself.
	if err := validateGroup(string([]byte{'g', 0xff})); err == nil {
		t.Fatal("invalid UTF-8 group name accepted")
	}
	if err := commit(strings.Repeat("é", 127)); err == nil {
		t.Fatal("no offsets accepted")
	}
	b.commitOK(strings.Repeat("g", 255)+"", oc("orders", 0, 1, ""))
	b.commitOK("ünïcode group", oc("orders", 0, 1, ""))

	wantStatus(t, commit("g"), codes.InvalidArgument, badRequest)
	wantStatus(t, commit("g", oc("orders", 0, -1, "")), codes.InvalidArgument, badRequest)
	info := wantStatus(t, commit("g", oc("orders", 0, 1, strings.Repeat("m", MaxOffsetMetadataBytes+1))), codes.InvalidArgument, badRequest)
	if info.GetLimit() != MaxOffsetMetadataBytes || info.GetField() != "offsets[0].metadata" || info.GetGroup() != "g" {
		t.Fatalf("metadata error info %v", info)
	}
	wantStatus(t, commit("g", oc("orders", 0, 1, ""), oc("orders", 0, 2, "")), codes.InvalidArgument, badRequest)
	wantStatus(t, commit("g", oc("Bad Name!", 0, 1, "")), codes.InvalidArgument, runnelv1.ErrorReason_ERROR_REASON_INVALID_TOPIC_NAME)
	info = wantStatus(t, commit("g", oc("orders", 0, 1, ""), oc("nope", 0, 1, "")), codes.NotFound, runnelv1.ErrorReason_ERROR_REASON_UNKNOWN_TOPIC)
	if info.GetTopic() != "nope" {
		t.Fatalf("unknown topic info %v", info)
	}
	info = wantStatus(t, commit("g", oc("orders", 0, 1, ""), oc("orders", 2, 1, "")), codes.NotFound, runnelv1.ErrorReason_ERROR_REASON_UNKNOWN_PARTITION)
	if info.GetPartition() != 2 {
		t.Fatalf("unknown partition info %v", info)
	}
	wantStatus(t, commit("g", oc("orders", -1, 1, "")), codes.NotFound, runnelv1.ErrorReason_ERROR_REASON_UNKNOWN_PARTITION)
	// All or nothing: none of the failed commits created the group.
	_, err := b.offsets().DescribeGroup(ctx, &runnelv1.DescribeGroupRequest{Group: "g"})
	wantStatus(t, err, codes.NotFound, runnelv1.ErrorReason_ERROR_REASON_UNKNOWN_GROUP)
	_, err = b.offsets().DeleteGroup(ctx, &runnelv1.DeleteGroupRequest{Group: "g"})
	wantStatus(t, err, codes.NotFound, runnelv1.ErrorReason_ERROR_REASON_UNKNOWN_GROUP)

	// After Stop, calls fail as shutting down.
	b.svc.Stop()
	wantStatus(t, commit("g", oc("orders", 0, 1, "")), codes.Unavailable, runnelv1.ErrorReason_ERROR_REASON_SHUTTING_DOWN)
}

func TestOffsetsListDescribeDelete(t *testing.T) {
	b := startBroker(t, t.TempDir())
	b.createTopic("orders", 2, nil)
	b.createTopic("audit", 1, nil)
	b.createTopic("temp", 1, nil)
	ctx := ctxT(t)
	for range 3 {
		b.produceOK("orders", 0, runnelv1.Acks_ACKS_ALL, batch(t, 0, "a", "b"))
	}
	b.produceOK("orders", 1, runnelv1.Acks_ACKS_ALL, batch(t, 0, "a"))
	b.commitOK("zeta", oc("audit", 0, 0, ""))
	b.commitOK("billing", oc("orders", 0, 2, "md"), oc("orders", 1, 1, ""), oc("temp", 0, 0, ""))

	d, err := b.offsets().DescribeGroup(ctx, &runnelv1.DescribeGroupRequest{Group: "billing"})
	if err != nil {
		t.Fatal(err)
	}
	type row struct {
		topic              string
		p                  int32
		committed, lso, hw int64
		lag                int64
	}
	var got []row
	for _, p := range d.GetPartitions() {
		got = append(got, row{p.GetTopic(), p.GetPartition(), p.GetCommittedOffset(), p.GetLogStartOffset(), p.GetHighWatermark(), p.GetLag()})
	}
	want := []row{{"orders", 0, 2, 0, 6, 4}, {"orders", 1, 1, 0, 1, 0}, {"temp", 0, 0, 0, 0, 0}}
	if len(got) != len(want) || d.GetTotalLag() != 4 || d.GetPartitions()[0].GetMetadata() != "md" {
		t.Fatalf("describe: %v total %d", got, d.GetTotalLag())
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("describe row %d: %v, want %v", i, got[i], want[i])
		}
	}

	// A deleted topic's commits disappear, also when a topic of that name is created again.
	if _, err := b.admin.DeleteTopic(ctx, &runnelv1.DeleteTopicRequest{Name: "temp"}); err != nil {
		t.Fatal(err)
	}
	b.createTopic("temp", 1, nil)
	d, err = b.offsets().DescribeGroup(ctx, &runnelv1.DescribeGroupRequest{Group: "billing"})
	if err != nil || len(d.GetPartitions()) != 2 {
		t.Fatalf("describe after topic delete: %v %v", d, err)
	}
	if got := fetchAll(t, b, "billing", &runnelv1.TopicPartitions{Topic: "temp", Partitions: []int32{0}}); !eqTPO(got, []tpo{{"temp", 0, -1}}) {
		t.Fatalf("fetch recreated topic: %v", got)
	}

	l, err := b.offsets().ListGroups(ctx, &runnelv1.ListGroupsRequest{})
	if err != nil || len(l.GetGroups()) != 2 {
		t.Fatalf("list: %v %v", l, err)
	}
	if g := l.GetGroups()[0]; g.GetGroup() != "billing" || strings.Join(g.GetTopics(), ",") != "orders" || g.GetLastCommitTime() == nil {
		t.Fatalf("list[0] %v", g)
	}
	if g := l.GetGroups()[1]; g.GetGroup() != "zeta" || strings.Join(g.GetTopics(), ",") != "audit" {
		t.Fatalf("list[1] %v", g)
	}

	if _, err := b.offsets().DeleteGroup(ctx, &runnelv1.DeleteGroupRequest{Group: "billing"}); err != nil {
		t.Fatal(err)
	}
	_, err = b.offsets().DescribeGroup(ctx, &runnelv1.DescribeGroupRequest{Group: "billing"})
	wantStatus(t, err, codes.NotFound, runnelv1.ErrorReason_ERROR_REASON_UNKNOWN_GROUP)
	if got := fetchAll(t, b, "billing", &runnelv1.TopicPartitions{Topic: "orders", Partitions: []int32{0}}); !eqTPO(got, []tpo{{"orders", 0, -1}}) {
		t.Fatalf("fetch after delete: %v", got)
	}
	_, err = b.offsets().DeleteGroup(ctx, &runnelv1.DeleteGroupRequest{Group: "billing"})
	wantStatus(t, err, codes.NotFound, runnelv1.ErrorReason_ERROR_REASON_UNKNOWN_GROUP)
	l, err = b.offsets().ListGroups(ctx, &runnelv1.ListGroupsRequest{})
	if err != nil || len(l.GetGroups()) != 1 || l.GetGroups()[0].GetGroup() != "zeta" {
		t.Fatalf("list after delete: %v %v", l, err)
	}
}

func TestOffsetsReset(t *testing.T) {
	b := startBroker(t, t.TempDir())
	b.createTopic("orders", 2, nil)
	ctx := ctxT(t)
	// orders/0: offsets 0-2 at 1000-1002 ms, 3-5 at 2000-2002 ms, 6-8 at 3000-3002 ms.
	for _, ts := range []int64{1000, 2000, 3000} {
		b.produceOK("orders", 0, runnelv1.Acks_ACKS_ALL, batch(t, ts, "a", "b", "c"))
	}
	b.produceOK("orders", 1, runnelv1.Acks_ACKS_ALL, batch(t, 1000, "a", "b"))
	b.commitOK("g", oc("orders", 0, 4, "md"), oc("orders", 1, 1, ""))

	reset := func(req *runnelv1.ResetOffsetsRequest) ([]tpo, []tpo, error) {
		t.Helper()
		req.Group = "g"
		resp, err := b.offsets().ResetOffsets(ctx, req)
		if err != nil {
			return nil, nil, err
		}
		if resp.GetExecuted() != req.GetExecute() {
			t.Fatalf("executed %v", resp.GetExecuted())
		}
		var prev, next []tpo
		for _, o := range resp.GetOffsets() {
			prev = append(prev, tpo{o.GetTopic(), o.GetPartition(), o.GetPreviousOffset()})
			next = append(next, tpo{o.GetTopic(), o.GetPartition(), o.GetNewOffset()})
		}
		return prev, next, nil
	}
	to := func(p *runnelv1.Position) *runnelv1.ResetOffsetsRequest_To {
		return &runnelv1.ResetOffsetsRequest_To{To: p}
	}
	earliest := to(&runnelv1.Position{Position: &runnelv1.Position_Earliest{Earliest: &emptypb.Empty{}}})
	latest := to(&runnelv1.Position{Position: &runnelv1.Position_Latest{Latest: &emptypb.Empty{}}})
	offset := func(o int64) *runnelv1.ResetOffsetsRequest_To {
		return to(&runnelv1.Position{Position: &runnelv1.Position_Offset{Offset: o}})
	}
	at := func(ms int64) *runnelv1.ResetOffsetsRequest_To {
		return to(&runnelv1.Position{Position: &runnelv1.Position_Timestamp{Timestamp: timestamppb.New(time.UnixMilli(ms))}})
	}
	shift := func(n int64) *runnelv1.ResetOffsetsRequest_ShiftBy {
		return &runnelv1.ResetOffsetsRequest_ShiftBy{ShiftBy: n}
	}

	cases := []struct {
		name   string
		topics []*runnelv1.TopicPartitions
		target interface{}
		want   []tpo // new offsets; the previous ones are the state before
	}{
		{"earliest", nil, earliest, []tpo{{"orders", 0, 0}, {"orders", 1, 0}}},
		{"latest", nil, latest, []tpo{{"orders", 0, 9}, {"orders", 1, 2}}},
		{"offset", nil, offset(5), []tpo{{"orders", 0, 5}, {"orders", 1, 2}}}, // orders/1 clamped to its high watermark
		{"offset-one", []*runnelv1.TopicPartitions{{Topic: "orders", Partitions: []int32{1}}}, offset(0), []tpo{{"orders", 1, 0}}},
		{"timestamp", nil, at(2000), []tpo{{"orders", 0, 3}, {"orders", 1, 2}}},
		{"timestamp-old", nil, at(0), []tpo{{"orders", 0, 0}, {"orders", 1, 0}}},
		{"timestamp-future", nil, at(1 << 50), []tpo{{"orders", 0, 9}, {"orders", 1, 2}}},
		{"shift-back", []*runnelv1.TopicPartitions{{Topic: "orders"}}, shift(-3), nil}, // computed below
		{"shift-forward", nil, shift(1 << 62), []tpo{{"orders", 0, 9}, {"orders", 1, 2}}},
	}
	for _, c := range cases {
		state := fetchAll(t, b, "g")
		req := func(execute bool) *runnelv1.ResetOffsetsRequest {
			r := &runnelv1.ResetOffsetsRequest{Topics: c.topics, Execute: execute}
			switch tg := c.target.(type) {
			case *runnelv1.ResetOffsetsRequest_To:
				r.Target = tg
			case *runnelv1.ResetOffsetsRequest_ShiftBy:
				r.Target = tg
			}
			return r
		}
		want := c.want
		if c.name == "shift-back" {
			for _, s := range state {
				want = append(want, tpo{s.topic, s.p, max(0, s.off-3)})
			}
		}
		prev, next, err := reset(req(false))
		if err != nil {
			t.Fatalf("%s dry run: %v", c.name, err)
		}
		if !eqTPO(next, want) {
			t.Fatalf("%s dry run: %v, want %v", c.name, next, want)
		}
		if got := fetchAll(t, b, "g"); !eqTPO(got, state) {
			t.Fatalf("%s: dry run changed %v to %v", c.name, state, got)
		}
		for _, p := range prev {
			found := false
			for _, s := range state {
				found = found || s == p
			}
			if !found {
				t.Fatalf("%s: previous %v not in %v", c.name, p, state)
			}
		}
		prev2, next2, err := reset(req(true))
		if err != nil || !eqTPO(next2, next) || !eqTPO(prev2, prev) {
			t.Fatalf("%s execute: %v -> %v, dry run said %v -> %v (%v)", c.name, prev2, next2, prev, next, err)
		}
		after := fetchAll(t, b, "g")
		for _, n := range next2 {
			found := false
			for _, a := range after {
				found = found || a == n
			}
			if !found {
				t.Fatalf("%s: executed %v, group has %v", c.name, n, after)
			}
		}
	}
	// A reset clears the metadata.
	f, err := b.offsets().FetchOffsets(ctx, &runnelv1.FetchOffsetsRequest{Group: "g"})
	if err != nil || f.GetOffsets()[0].GetMetadata() != "" {
		t.Fatalf("metadata after reset: %v %v", f, err)
	}

	// Errors.
	_, _, err = reset(&runnelv1.ResetOffsetsRequest{})
	wantStatus(t, err, codes.InvalidArgument, runnelv1.ErrorReason_ERROR_REASON_INVALID_REQUEST)
	_, _, err = reset(&runnelv1.ResetOffsetsRequest{Target: to(&runnelv1.Position{})})
	wantStatus(t, err, codes.InvalidArgument, runnelv1.ErrorReason_ERROR_REASON_INVALID_REQUEST)
	_, _, err = reset(&runnelv1.ResetOffsetsRequest{Target: earliest, Topics: []*runnelv1.TopicPartitions{{Topic: "nope"}}})
	wantStatus(t, err, codes.NotFound, runnelv1.ErrorReason_ERROR_REASON_UNKNOWN_TOPIC)
	_, _, err = reset(&runnelv1.ResetOffsetsRequest{Target: earliest, Topics: []*runnelv1.TopicPartitions{{Topic: "orders", Partitions: []int32{7}}}})
	wantStatus(t, err, codes.NotFound, runnelv1.ErrorReason_ERROR_REASON_UNKNOWN_PARTITION)
	_, err = b.offsets().ResetOffsets(ctx, &runnelv1.ResetOffsetsRequest{Group: "other", Target: earliest, Execute: true})
	wantStatus(t, err, codes.NotFound, runnelv1.ErrorReason_ERROR_REASON_UNKNOWN_GROUP)
	_, err = b.offsets().ResetOffsets(ctx, &runnelv1.ResetOffsetsRequest{Group: "other", Target: shift(1), Execute: true,
		Topics: []*runnelv1.TopicPartitions{{Topic: "orders"}}})
	wantStatus(t, err, codes.FailedPrecondition, runnelv1.ErrorReason_ERROR_REASON_NO_COMMITTED_OFFSET)
	if _, err := b.offsets().DescribeGroup(ctx, &runnelv1.DescribeGroupRequest{Group: "other"}); err == nil {
		t.Fatal("failed reset created the group")
	}
	// A reset naming topics creates the group.
	resp, err := b.offsets().ResetOffsets(ctx, &runnelv1.ResetOffsetsRequest{Group: "other", Target: latest, Execute: true,
		Topics: []*runnelv1.TopicPartitions{{Topic: "orders", Partitions: []int32{0}}}})
	if err != nil || len(resp.GetOffsets()) != 1 || resp.GetOffsets()[0].GetPreviousOffset() != -1 || resp.GetOffsets()[0].GetNewOffset() != 9 {
		t.Fatalf("reset creating group: %v %v", resp, err)
	}
	if got := fetchAll(t, b, "other"); !eqTPO(got, []tpo{{"orders", 0, 9}}) {
		t.Fatalf("created group: %v", got)
	}
}
