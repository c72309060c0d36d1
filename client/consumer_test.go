package client_test

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"google.golang.org/grpc/codes"

	"github.com/runnel-io/runnel/client"
)

// produceValues produces values to partition 0 of topic, one batch each call.
func produceValues(t *testing.T, cl *client.Client, topicName string, ts time.Time, values ...string) {
	t.Helper()
	var recs []*client.Record
	for _, v := range values {
		recs = append(recs, &client.Record{Topic: topicName, ManualPartition: true, Value: []byte(v), Timestamp: ts})
	}
	if err := cl.ProduceSync(ctxT(t), recs...); err != nil {
		t.Fatal(err)
	}
}

func values(recs []*client.Record) []string {
	var out []string
	for _, r := range recs {
		out = append(out, string(r.Value))
	}
	return out
}

func TestConsumerPositions(t *testing.T) {
	cl, _ := newClient(t)
	createTopic(t, cl, "pos", 1, nil)
	t0 := time.UnixMilli(1_700_000_000_000)
	// Two batches of 5 records each, at t0 and t0+1h.
	produceValues(t, cl, "pos", t0, "a0", "a1", "a2", "a3", "a4")
	produceValues(t, cl, "pos", t0.Add(time.Hour), "b0", "b1", "b2", "b3", "b4")

	if got := values(consumeN(t, cl, "pos", []int32{0}, client.Earliest(), 10)); fmt.Sprint(got) != "[a0 a1 a2 a3 a4 b0 b1 b2 b3 b4]" {
		t.Fatalf("earliest: %v", got)
	}
	// From the middle of a batch: the records before the offset are skipped.
	if got := values(consumeN(t, cl, "pos", []int32{0}, client.AtOffset(3), 7)); fmt.Sprint(got) != "[a3 a4 b0 b1 b2 b3 b4]" {
		t.Fatalf("offset 3: %v", got)
	}
	if got := values(consumeN(t, cl, "pos", []int32{0}, client.AtTime(t0.Add(time.Minute)), 5)); fmt.Sprint(got) != "[b0 b1 b2 b3 b4]" {
		t.Fatalf("time: %v", got)
	}

	// Latest: only what is produced after the assignment, even after a long wait at the end.
	c := cl.NewConsumer()
	defer c.Close()
	if err := c.Assign("pos", 0, client.Latest()); err != nil {
		t.Fatal(err)
	}
	ctx := ctxT(t)
	polled := make(chan []*client.Record, 1)
	go func() {
		recs, err := c.Poll(ctx)
		if err != nil {
			t.Error(err)
		}
		polled <- recs
	}()
	select {
	case recs := <-polled:
		t.Fatalf("Poll at the end returned %v", values(recs))
	case <-time.After(700 * time.Millisecond): // longer than the broker's 500ms default poll
	}
	produceValues(t, cl, "pos", time.Time{}, "c0")
	recs := <-polled
	if fmt.Sprint(values(recs)) != "[c0]" || recs[0].Offset != 10 || recs[0].Partition != 0 || recs[0].Topic != "pos" {
		t.Fatalf("latest: %v at %d", values(recs), recs[0].Offset)
	}
}

func TestConsumerErrors(t *testing.T) {
	cl, _ := newClient(t)
	createTopic(t, cl, "e", 1, nil)
	c := cl.NewConsumer()
	defer c.Close()
	if err := c.Assign("missing", 0, client.Earliest()); err != nil {
		t.Fatal(err)
	}
	_, err := c.Poll(ctxT(t))
	var e *client.Error
	if !errors.As(err, &e) || e.Code != codes.NotFound || e.Reason != "UNKNOWN_TOPIC" {
		t.Fatalf("got %v, want UNKNOWN_TOPIC", err)
	}
	if err := c.Assign("e", 0, client.AtOffset(99)); err != nil {
		t.Fatal(err)
	}
	_, err = c.Poll(ctxT(t))
	if !errors.As(err, &e) || e.Code != codes.OutOfRange {
		t.Fatalf("got %v, want OUT_OF_RANGE", err)
	}
	if err := c.Assign("e", 0, client.Committed()); err == nil {
		t.Fatal("Committed without a group: no error")
	}
}

func TestConsumerGroupCommit(t *testing.T) {
	cl, _ := newClient(t)
	createTopic(t, cl, "g", 2, nil)
	for p := range int32(2) {
		var recs []*client.Record
		for i := range 10 {
			recs = append(recs, &client.Record{Topic: "g", Partition: p, ManualPartition: true, Value: fmt.Appendf(nil, "%d-%d", p, i)})
		}
		if err := cl.ProduceSync(ctxT(t), recs...); err != nil {
			t.Fatal(err)
		}
	}
	ctx := ctxT(t)

	// The first consumer handles 4 records of partition 0 with Run, then stops: Close commits.
	c1 := cl.NewConsumer(client.WithGroup("billing"), client.WithCommitMetadata("c1"))
	if err := c1.Assign("g", 0, client.Committed()); err != nil {
		t.Fatal(err)
	}
	handled := 0
	stop := errors.New("stop")
	err := c1.Run(ctx, func(r *client.Record) error {
		if handled == 4 {
			return stop // not consumed
		}
		handled++
		return nil
	})
	if !errors.Is(err, stop) {
		t.Fatalf("Run: %v", err)
	}
	if err := c1.Close(); err != nil {
		t.Fatal(err)
	}
	cos, err := cl.FetchCommitted(ctx, "billing")
	if err != nil {
		t.Fatal(err)
	}
	if len(cos) != 1 || cos[0].Topic != "g" || cos[0].Partition != 0 || cos[0].Offset != 4 || cos[0].Metadata != "c1" {
		t.Fatalf("committed: %+v", cos)
	}

	// A new consumer resumes partition 0 from the commit; partition 1, without a commit,
	// starts from the fallback.
	c2 := cl.NewConsumer(client.WithGroup("billing"))
	defer c2.Close()
	if err := c2.Assign("g", 0, client.Committed()); err != nil {
		t.Fatal(err)
	}
	if err := c2.Assign("g", 1, client.CommittedOr(client.AtOffset(8))); err != nil {
		t.Fatal(err)
	}
	got := map[int32][]int64{}
	for n := 0; n < 6+2; {
		recs, err := c2.Poll(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range recs {
			got[r.Partition] = append(got[r.Partition], r.Offset)
		}
		n += len(recs)
	}
	if fmt.Sprint(got[0]) != "[4 5 6 7 8 9]" || fmt.Sprint(got[1]) != "[8 9]" {
		t.Fatalf("resumed at %v", got)
	}
	if err := c2.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	cos, err = cl.FetchCommitted(ctx, "billing")
	if err != nil {
		t.Fatal(err)
	}
	if len(cos) != 2 || cos[0].Offset != 10 || cos[1].Offset != 10 {
		t.Fatalf("committed after Poll: %+v", cos)
	}
}

func TestRunRedeliversAfterHandlerError(t *testing.T) {
	cl, _ := newClient(t)
	createTopic(t, cl, "r", 1, nil)
	produceValues(t, cl, "r", time.Time{}, "0", "1", "2", "3")
	c := cl.NewConsumer(client.WithGroup("g"))
	defer c.Close()
	if err := c.Assign("r", 0, client.Earliest()); err != nil {
		t.Fatal(err)
	}
	ctx := ctxT(t)
	fail := errors.New("fail")
	var seen []string
	err := c.Run(ctx, func(r *client.Record) error {
		if string(r.Value) == "2" && len(seen) == 2 {
			return fail
		}
		seen = append(seen, string(r.Value))
		return nil
	})
	if !errors.Is(err, fail) {
		t.Fatalf("Run: %v", err)
	}
	if err := c.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	if cos, _ := cl.FetchCommitted(ctx, "g"); len(cos) != 1 || cos[0].Offset != 2 {
		t.Fatalf("committed %+v, want offset 2", cos)
	}
	recs, err := c.Poll(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(values(recs)) != "[2 3]" {
		t.Fatalf("after the failure Poll returned %v", values(recs))
	}
}

func TestAutoCommit(t *testing.T) {
	cl, _ := newClient(t)
	createTopic(t, cl, "ac", 1, nil)
	produceValues(t, cl, "ac", time.Time{}, "0", "1", "2")
	c := cl.NewConsumer(client.WithGroup("auto"), client.WithAutoCommit(time.Nanosecond))
	defer c.Close()
	if err := c.Assign("ac", 0, client.Earliest()); err != nil {
		t.Fatal(err)
	}
	ctx := ctxT(t)
	if recs, err := c.Poll(ctx); err != nil || len(recs) != 3 {
		t.Fatalf("poll: %d records, %v", len(recs), err)
	}
	// Nothing is committed until the next Poll: the records may not be processed yet.
	if cos, _ := cl.FetchCommitted(ctx, "auto"); len(cos) != 0 {
		t.Fatalf("committed during the first Poll: %+v", cos)
	}
	produceValues(t, cl, "ac", time.Time{}, "3")
	if _, err := c.Poll(ctx); err != nil {
		t.Fatal(err)
	}
	if cos, _ := cl.FetchCommitted(ctx, "auto"); len(cos) != 1 || cos[0].Offset != 3 {
		t.Fatalf("committed %+v, want offset 3", cos)
	}
}

// TestConsumerSurvivesRestart: a consumer waiting at the end of the log resubscribes after the
// broker restarts and gets the records produced afterwards.
func TestConsumerSurvivesRestart(t *testing.T) {
	b := brokertestStart(t)
	cl := clientOf(t, b, client.WithRetryBackoff(20*time.Millisecond))
	createTopic(t, cl, "cr", 1, nil)
	c := cl.NewConsumer()
	defer c.Close()
	if err := c.Assign("cr", 0, client.Earliest()); err != nil {
		t.Fatal(err)
	}
	// The producer's stream is open and idle during the restart: the broker ends it on stop.
	produceValues(t, cl, "cr", time.Time{}, "before")
	if recs, err := c.Poll(ctxT(t)); err != nil || fmt.Sprint(values(recs)) != "[before]" {
		t.Fatalf("before the restart: %v, %v", values(recs), err) // the stream is open now
	}
	b.Restart()
	produceValues(t, cl, "cr", time.Time{}, "after")
	recs, err := c.Poll(ctxT(t))
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(values(recs)) != "[after]" {
		t.Fatalf("got %v", values(recs))
	}
}
