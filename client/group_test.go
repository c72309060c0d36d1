package client_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/runnel-io/runnel/client"
)

// produceSpread produces n records over parts partitions of topic (value "p-i"), waiting for
// every acknowledgment.
func produceSpread(t testing.TB, cl *client.Client, topicName string, parts int32, from, n int) {
	t.Helper()
	ctx := ctxT(t)
	var mu sync.Mutex
	var firstErr error
	for i := from; i < from+n; i++ {
		p := int32(i) % parts
		cl.Produce(ctx, &client.Record{Topic: topicName, Partition: p, ManualPartition: true, Value: fmt.Appendf(nil, "%d-%d", p, i)},
			func(_ *client.Record, err error) {
				if err != nil {
					mu.Lock()
					firstErr = err
					mu.Unlock()
				}
			})
	}
	if err := cl.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if firstErr != nil {
		t.Fatal(firstErr)
	}
}

// seen counts the records handled, by partition and offset.
type seen struct {
	mu     sync.Mutex
	counts map[client.TopicPartition]map[int64]int
	total  int
}

func newSeen() *seen { return &seen{counts: map[client.TopicPartition]map[int64]int{}} }

func (s *seen) add(r *client.Record) {
	s.mu.Lock()
	defer s.mu.Unlock()
	tp := client.TopicPartition{Topic: r.Topic, Partition: r.Partition}
	if s.counts[tp] == nil {
		s.counts[tp] = map[int64]int{}
	}
	if s.counts[tp][r.Offset] == 0 {
		s.total++
	}
	s.counts[tp][r.Offset]++
}

func (s *seen) distinct() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.total
}

// check reports records never seen (and, if exactlyOnce, records seen twice), given each
// partition's record count.
func (s *seen) check(t *testing.T, topicName string, perPartition map[int32]int64, exactlyOnce bool) {
	t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	dups := 0
	for p, n := range perPartition {
		m := s.counts[client.TopicPartition{Topic: topicName, Partition: p}]
		for off := range n {
			switch c := m[off]; {
			case c == 0:
				t.Errorf("%s/%d offset %d never handled", topicName, p, off)
			case c > 1:
				dups++
				if exactlyOnce {
					t.Errorf("%s/%d offset %d handled %d times", topicName, p, off, c)
				}
			}
		}
	}
	t.Logf("%d records handled more than once", dups)
}

type member struct {
	g    *client.GroupConsumer
	done chan error
}

func startMember(t *testing.T, cl *client.Client, group, topicName string, s *seen, opts ...client.GroupOption) *member {
	t.Helper()
	g, err := cl.NewGroupConsumer(group, []string{topicName}, opts...)
	if err != nil {
		t.Fatal(err)
	}
	m := &member{g: g, done: make(chan error, 1)}
	go func() {
		m.done <- g.Run(context.Background(), func(r *client.Record) error {
			s.add(r)
			time.Sleep(20 * time.Microsecond) // keep the handler busy through rebalances
			return nil
		})
	}()
	return m
}

func waitUntil(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func owners(ms []*member) map[client.TopicPartition]int {
	out := map[client.TopicPartition]int{}
	for _, m := range ms {
		for _, tp := range m.g.Assignment() {
			out[tp]++
		}
	}
	return out
}

func covered(ms []*member, topicName string, parts int32) bool {
	o := owners(ms)
	for p := range parts {
		if o[client.TopicPartition{Topic: topicName, Partition: p}] != 1 {
			return false
		}
	}
	return len(o) == int(parts)
}

// Three members share a 12-partition topic, joining one after another while records flow:
// with no failures every record is handled exactly once (revocations commit what the
// handler finished before the partition moves).
func TestGroupConsumerExactlyOnce(t *testing.T) {
	cl, _ := newClient(t, client.WithLogger(tLogger{t}))
	const parts, n = 12, 6000
	createTopic(t, cl, "orders", parts, nil)
	produceSpread(t, cl, "orders", parts, 0, n/2)
	s := newSeen()
	opts := []client.GroupOption{client.WithSessionTimeout(3 * time.Second), client.WithGroupAutoCommit(50 * time.Millisecond)}
	var ms []*member
	ms = append(ms, startMember(t, cl, "billing", "orders", s, opts...))
	waitUntil(t, 20*time.Second, "the first member to handle records", func() bool { return s.distinct() > 200 })
	ms = append(ms, startMember(t, cl, "billing", "orders", s, opts...))
	produceSpread(t, cl, "orders", parts, n/2, n/4)
	ms = append(ms, startMember(t, cl, "billing", "orders", s, opts...))
	produceSpread(t, cl, "orders", parts, n/2+n/4, n/4)
	waitUntil(t, 30*time.Second, "every record handled", func() bool { return s.distinct() == n })
	waitUntil(t, 10*time.Second, "the members to own 4 partitions each", func() bool {
		for _, m := range ms {
			if len(m.g.Assignment()) != 4 {
				return false
			}
		}
		return covered(ms, "orders", parts)
	})
	for _, m := range ms {
		if err := m.g.Close(); err != nil {
			t.Errorf("close: %v", err)
		}
		if err := <-m.done; !errors.Is(err, client.ErrClosed) {
			t.Errorf("run: %v", err)
		}
	}
	per := map[int32]int64{}
	for p := range int32(parts) {
		per[p] = n / parts
	}
	s.check(t, "orders", per, true)
	// Everything is committed: the group is at the end of every partition.
	cos, err := cl.FetchCommitted(ctxT(t), "billing")
	if err != nil {
		t.Fatal(err)
	}
	if len(cos) != parts {
		t.Fatalf("committed %v", cos)
	}
	for _, co := range cos {
		if co.Offset != n/parts {
			t.Errorf("committed %s/%d at %d, want %d", co.Topic, co.Partition, co.Offset, n/parts)
		}
	}
}

// A member dies (no commit, no leave): its partitions move to the others within the session
// timeout, and no record is skipped (those it handled since its last commit come again).
func TestGroupConsumerMemberDies(t *testing.T) {
	cl, _ := newClient(t, client.WithLogger(tLogger{t}))
	const parts, n = 12, 3000
	const session = time.Second
	createTopic(t, cl, "orders", parts, nil)
	s := newSeen()
	opts := []client.GroupOption{client.WithSessionTimeout(session), client.WithGroupAutoCommit(200 * time.Millisecond)}
	var ms []*member
	for range 3 {
		ms = append(ms, startMember(t, cl, "billing", "orders", s, opts...))
	}
	waitUntil(t, 10*time.Second, "the members to share the partitions", func() bool { return covered(ms, "orders", parts) })
	produceSpread(t, cl, "orders", parts, 0, n/2)
	waitUntil(t, 20*time.Second, "records handled", func() bool { return s.distinct() > n/4 })
	victim := ms[2]
	lostParts := victim.g.Assignment()
	victim.g.Abort()
	died := time.Now()
	rest := ms[:2]
	waitUntil(t, session+5*time.Second, "the survivors to own everything", func() bool { return covered(rest, "orders", parts) })
	moved := time.Since(died)
	t.Logf("partitions %v of the dead member moved after %v (session timeout %v)", lostParts, moved, session)
	if moved > session+time.Second {
		t.Errorf("partitions moved after %v, more than the session timeout %v + 1s", moved, session)
	}
	produceSpread(t, cl, "orders", parts, n/2, n/2)
	waitUntil(t, 30*time.Second, "every record handled", func() bool { return s.distinct() == n })
	for _, m := range rest {
		if err := m.g.Close(); err != nil {
			t.Errorf("close: %v", err)
		}
		<-m.done
	}
	<-victim.done
	per := map[int32]int64{}
	for p := range int32(parts) {
		per[p] = n / parts
	}
	s.check(t, "orders", per, false)
}

// A static member that restarts with its instance id gets its partitions back without the
// others seeing a rebalance.
func TestGroupConsumerStaticMember(t *testing.T) {
	cl, _ := newClient(t)
	createTopic(t, cl, "orders", 4, nil)
	s := newSeen()
	a := startMember(t, cl, "g", "orders", s, client.WithInstanceID("a"), client.WithSessionTimeout(5*time.Second))
	b := startMember(t, cl, "g", "orders", s, client.WithInstanceID("b"), client.WithSessionTimeout(5*time.Second))
	ms := []*member{a, b}
	waitUntil(t, 10*time.Second, "the members to share the partitions", func() bool {
		return covered(ms, "orders", 4) && len(a.g.Assignment()) == 2
	})
	before := a.g.Assignment()
	if err := a.g.Close(); err != nil {
		t.Fatal(err)
	}
	<-a.done
	a = startMember(t, cl, "g", "orders", s, client.WithInstanceID("a"), client.WithSessionTimeout(5*time.Second))
	ms = []*member{a, b}
	waitUntil(t, 5*time.Second, "the static member to get its partitions back", func() bool {
		return covered(ms, "orders", 4) && len(a.g.Assignment()) == 2
	})
	if after := a.g.Assignment(); fmt.Sprint(after) != fmt.Sprint(before) {
		t.Fatalf("static member owned %v, now %v", before, after)
	}
	for _, m := range ms {
		if err := m.g.Close(); err != nil {
			t.Error(err)
		}
		<-m.done
	}
}

// The coordinator restarts (forgetting the member) while the handler holds a record, and Run
// returns before it gives the partitions up: Close still commits what the handler finished,
// by rejoining (runnel consume -g stopped by SIGINT right after a broker restart lost its
// last commit this way).
func TestGroupConsumerCloseAfterMemberLost(t *testing.T) {
	cl, b := newClient(t, client.WithLogger(tLogger{t}))
	createTopic(t, cl, "tail", 1, nil)
	produceSpread(t, cl, "tail", 1, 0, 4)
	g, err := cl.NewGroupConsumer("follower", []string{"tail"}, client.WithGroupAutoCommit(time.Nanosecond))
	if err != nil {
		t.Fatal(err)
	}
	ctx, stop := context.WithCancel(ctxT(t))
	defer stop()
	err = g.Run(ctx, func(r *client.Record) error {
		if r.Offset == 2 {
			b.Restart()
			waitUntil(t, 20*time.Second, "the member to be found lost", g.Lost)
			stop()
		}
		return nil
	})
	if err != nil {
		t.Fatalf("run: %v", err)
	}
	if err := g.Close(); err != nil {
		t.Fatalf("close: %v", err)
	}
	cos, err := cl.FetchCommitted(ctxT(t), "follower")
	if err != nil {
		t.Fatal(err)
	}
	if len(cos) != 1 || cos[0].Offset != 3 {
		t.Fatalf("committed %+v, want offset 3 (the record after the last one handled)", cos)
	}
}
