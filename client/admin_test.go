package client_test

import (
	"errors"
	"testing"
	"time"

	"github.com/runnel-io/runnel/client"
)

func TestAdmin(t *testing.T) {
	cl, b := newClient(t)
	ctx := ctxT(t)
	createTopic(t, cl, "a", 3, map[string]string{"retention.ms": "3600000"})
	createTopic(t, cl, "b", 1, nil)
	var e *client.Error
	if err := cl.CreateTopic(ctx, "a", 1, 0, nil); !errors.As(err, &e) || e.Reason != "TOPIC_ALREADY_EXISTS" {
		t.Fatalf("create twice: %v", err)
	}
	ts, err := cl.ListTopics(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(ts) != 2 || ts[0].Name != "a" || ts[0].PartitionCount != 3 || ts[1].Name != "b" || ts[0].ID == "" {
		t.Fatalf("topics: %+v", ts)
	}
	ti, err := cl.DescribeTopic(ctx, "a")
	if err != nil {
		t.Fatal(err)
	}
	if len(ti.Partitions) != 3 || ti.Configs["retention.ms"] != "3600000" || ti.Partitions[1].Leader != 1 || ti.Partitions[1].LeaderAddress != b.Addr() {
		t.Fatalf("describe: %+v", ti)
	}
	cfg, err := cl.AlterTopicConfig(ctx, "a", map[string]string{"retention.bytes": "1048576"}, "retention.ms")
	if err != nil {
		t.Fatal(err)
	}
	if cfg["retention.bytes"] != "1048576" || cfg["retention.ms"] != "604800000" {
		t.Fatalf("altered: %v", cfg)
	}

	t0 := time.UnixMilli(1_700_000_000_000)
	recs := []*client.Record{
		{Topic: "a", ManualPartition: true, Partition: 2, Value: []byte("x"), Timestamp: t0},
		{Topic: "a", ManualPartition: true, Partition: 2, Value: []byte("y"), Timestamp: t0.Add(time.Hour)},
	}
	if err := cl.ProduceSync(ctx, recs...); err != nil {
		t.Fatal(err)
	}
	latest, err := cl.ListOffsets(ctx, "a", client.Latest())
	if err != nil {
		t.Fatal(err)
	}
	if latest[0] != 0 || latest[1] != 0 || latest[2] != 2 {
		t.Fatalf("latest: %v", latest)
	}
	at, err := cl.ListOffsets(ctx, "a", client.AtTime(t0.Add(time.Minute)), 2)
	if err != nil {
		t.Fatal(err)
	}
	if len(at) != 1 || at[2] != 1 {
		t.Fatalf("at time: %v", at)
	}
	if _, err := cl.ListOffsets(ctx, "a", client.AtOffset(1)); err == nil {
		t.Fatal("ListOffsets AtOffset: no error")
	}

	if err := cl.CommitOffsets(ctx, "g", map[client.TopicPartition]int64{{Topic: "a", Partition: 2}: 1}, "m"); err != nil {
		t.Fatal(err)
	}
	cos, err := cl.FetchCommitted(ctx, "g")
	if err != nil {
		t.Fatal(err)
	}
	if len(cos) != 1 || cos[0].Offset != 1 || cos[0].Metadata != "m" || cos[0].CommitTime.IsZero() {
		t.Fatalf("committed: %+v", cos)
	}
	if cos, err := cl.FetchCommitted(ctx, "never"); err != nil || len(cos) != 0 {
		t.Fatalf("unknown group: %v, %v", cos, err)
	}

	ci, err := cl.ClusterInfo(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if ci.ID == "" || len(ci.Brokers) != 1 || ci.Brokers[0].State != "ALIVE" || ci.Brokers[0].Address != b.Addr() {
		t.Fatalf("cluster: %+v", ci)
	}

	if err := cl.DeleteTopic(ctx, "b"); err != nil {
		t.Fatal(err)
	}
	if err := cl.DeleteTopic(ctx, "b"); !errors.As(err, &e) || e.Reason != "UNKNOWN_TOPIC" {
		t.Fatalf("delete twice: %v", err)
	}
}

func TestNewNoBroker(t *testing.T) {
	ctx := ctxT(t)
	_, err := client.New(ctx, client.WithBrokers("127.0.0.1:1"), client.WithDialTimeout(200*time.Millisecond))
	if err == nil {
		t.Fatal("New with no broker: no error")
	}
}

func TestNewFallsBackToSecondBroker(t *testing.T) {
	b := brokertestStart(t)
	cl, err := client.New(ctxT(t), client.WithBrokers("127.0.0.1:1", b.Addr()), client.WithDialTimeout(time.Second))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	if cl.Addr() != b.Addr() {
		t.Fatalf("connected to %s", cl.Addr())
	}
}
