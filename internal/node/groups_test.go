package node

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/runnel-io/runnel/client"
	runnelv1 "github.com/runnel-io/runnel/proto/runnel/v1"
)

// groupSeen counts the records a group handled, by partition and offset.
type groupSeen struct {
	mu    sync.Mutex
	seen  map[[2]int64]int
	total int
}

func (s *groupSeen) add(r *client.Record) {
	s.mu.Lock()
	defer s.mu.Unlock()
	k := [2]int64{int64(r.Partition), r.Offset}
	if s.seen[k] == 0 {
		s.total++
	}
	s.seen[k]++
}

func (s *groupSeen) distinct() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.total
}

// TestClusterGroupCommitsSurviveMetadataLeader: a group of two members consumes a topic on
// three brokers; its coordinator is the metadata leader, and its commits go through the
// metadata Raft group (every broker's replica of the metadata has them, a follower refuses
// group calls naming the leader). The metadata leader is stopped mid-way: the members rejoin
// the new one, every record is handled, and no committed offset ever goes back.
func TestClusterGroupCommitsSurviveMetadataLeader(t *testing.T) {
	c := newTestCluster(t)
	c.startThree()
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer cancel()
	var addrs []string
	for id := int32(1); id <= 3; id++ {
		addrs = append(addrs, c.nodes[id].Addr())
	}
	cl, err := client.New(ctx, client.WithBrokers(addrs...), client.WithRetryBackoff(50*time.Millisecond), client.WithLogger(testLogger{t}))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	const parts, n = 6, 1200
	if err := cl.CreateTopic(ctx, "jobs", parts, 3, nil); err != nil {
		t.Fatal(err)
	}
	produce := func(from, to int) {
		var recs []*client.Record
		for i := from; i < to; i++ {
			recs = append(recs, &client.Record{Topic: "jobs", Partition: int32(i % parts), ManualPartition: true, Value: fmt.Append(nil, i)})
		}
		if err := cl.ProduceSync(ctx, recs...); err != nil {
			t.Fatal(err)
		}
	}
	produce(0, n/2)

	s := &groupSeen{seen: map[[2]int64]int{}}
	var members []*client.GroupConsumer
	var runs sync.WaitGroup
	for range 2 {
		g, err := cl.NewGroupConsumer("workers", []string{"jobs"}, client.WithSessionTimeout(2*time.Second), client.WithGroupAutoCommit(50*time.Millisecond))
		if err != nil {
			t.Fatal(err)
		}
		members = append(members, g)
		runs.Add(1)
		go func() {
			defer runs.Done()
			if err := g.Run(ctx, func(r *client.Record) error {
				s.add(r)
				time.Sleep(200 * time.Microsecond)
				return nil
			}); err != nil && !errors.Is(err, client.ErrClosed) {
				t.Errorf("run: %v", err)
			}
		}()
	}

	// The history of committed offsets, as read from the coordinator: never backwards.
	var (
		histMu     sync.Mutex
		last       = map[int32]int64{}
		regressed  []string
		fetches    int
		stopHist   = make(chan struct{})
		histDone   = make(chan struct{})
		fetchError error
	)
	go func() {
		defer close(histDone)
		for {
			select {
			case <-stopHist:
				return
			case <-time.After(20 * time.Millisecond):
			}
			fctx, fcancel := context.WithTimeout(ctx, 2*time.Second)
			cos, err := cl.FetchCommitted(fctx, "workers")
			fcancel()
			histMu.Lock()
			if err != nil {
				fetchError = err
			}
			for _, co := range cos {
				fetches++
				if co.Offset < last[co.Partition] {
					regressed = append(regressed, fmt.Sprintf("partition %d: %d after %d", co.Partition, co.Offset, last[co.Partition]))
				}
				last[co.Partition] = max(last[co.Partition], co.Offset)
			}
			histMu.Unlock()
		}
	}()

	waitFor(t, 30*time.Second, "records handled", func() error {
		if d := s.distinct(); d < n/4 {
			return fmt.Errorf("%d handled", d)
		}
		return nil
	})
	// The commits are in the metadata Raft group: every broker's replica has them.
	waitFor(t, 10*time.Second, "commits replicated in the metadata", func() error {
		for _, nd := range c.nodes {
			cos, err := nd.Cluster().FetchOffsets("workers")
			if err != nil {
				return fmt.Errorf("broker %d: %w", nd.ID(), err)
			}
			if len(cos) == 0 {
				return fmt.Errorf("broker %d: no offsets", nd.ID())
			}
		}
		return nil
	})
	// A follower refuses group calls, naming the leader.
	leader := c.leaderMeta()
	leaderID, leaderAddr, _ := leader.Leader()
	for id, nd := range c.nodes {
		if id == leaderID {
			continue
		}
		_, err := runnelv1.NewGroupServiceClient(c.conn(nd.Addr())).Heartbeat(ctx, &runnelv1.HeartbeatRequest{Group: "workers", SubscribedTopics: []string{"jobs"}})
		info := errorInfo(err)
		if info.GetReason() != runnelv1.ErrorReason_ERROR_REASON_NOT_METADATA_LEADER || info.GetLeaderAddress() != leaderAddr {
			t.Fatalf("heartbeat on follower %d: %v (%v), want NOT_METADATA_LEADER naming %s", id, err, info, leaderAddr)
		}
		_, err = runnelv1.NewOffsetServiceClient(c.conn(nd.Addr())).CommitOffsets(ctx, &runnelv1.CommitOffsetsRequest{Group: "other",
			Offsets: []*runnelv1.OffsetCommit{{Topic: "jobs", Partition: 0, Offset: 1}}})
		if info := errorInfo(err); info.GetReason() != runnelv1.ErrorReason_ERROR_REASON_NOT_METADATA_LEADER {
			t.Fatalf("commit on follower %d: %v", id, err)
		}
		break
	}
	// A zombie's commit (an epoch the coordinator never gave) commits nothing.
	_, err = runnelv1.NewOffsetServiceClient(c.conn(leaderAddr)).CommitOffsets(ctx, &runnelv1.CommitOffsetsRequest{Group: "workers",
		MemberId: members[0].MemberID(), MemberEpoch: 999, Offsets: []*runnelv1.OffsetCommit{{Topic: "jobs", Partition: 0, Offset: 0}}})
	if info := errorInfo(err); info.GetReason() != runnelv1.ErrorReason_ERROR_REASON_STALE_MEMBER_EPOCH {
		t.Fatalf("zombie commit: %v", err)
	}

	t.Logf("stopping the metadata leader, broker %d", leaderID)
	c.stop(leaderID)
	produce(n/2, n)
	waitFor(t, 60*time.Second, "every record handled", func() error {
		if d := s.distinct(); d < n {
			return fmt.Errorf("%d of %d handled", d, n)
		}
		return nil
	})
	newLeader := c.leaderMeta()
	if id, _, _ := newLeader.Leader(); id == leaderID {
		t.Fatalf("the stopped broker %d still leads", id)
	}
	waitFor(t, 30*time.Second, "everything committed", func() error {
		cos, err := cl.FetchCommitted(ctx, "workers")
		if err != nil {
			return err
		}
		done := 0
		for _, co := range cos {
			if co.Offset == n/parts {
				done++
			}
		}
		if done != parts {
			return fmt.Errorf("committed %v", cos)
		}
		return nil
	})
	for _, g := range members {
		if err := g.Close(); err != nil {
			t.Errorf("close: %v", err)
		}
	}
	runs.Wait()
	close(stopHist)
	<-histDone
	histMu.Lock()
	defer histMu.Unlock()
	t.Logf("%d committed offsets read; last fetch error %v", fetches, fetchError)
	if len(regressed) > 0 {
		t.Fatalf("committed offsets went back: %v", regressed)
	}
	s.mu.Lock()
	dups := 0
	for _, k := range s.seen {
		if k > 1 {
			dups++
		}
	}
	s.mu.Unlock()
	t.Logf("%d records handled more than once (at least once across the failover)", dups)

	// The group is empty now; describing it on the new leader shows its offsets.
	var d *runnelv1.DescribeGroupResponse
	waitFor(t, 10*time.Second, "describe", func() error {
		_, addr, _ := newLeader.Leader()
		var err error
		d, err = runnelv1.NewOffsetServiceClient(c.conn(addr)).DescribeGroup(ctx, &runnelv1.DescribeGroupRequest{Group: "workers"})
		return err
	})
	if len(d.GetMembers()) != 0 || len(d.GetPartitions()) != parts {
		t.Fatalf("describe: %v", d)
	}
}

// testLogger sends the client's log to the test's.
type testLogger struct{ t *testing.T }

func (l testLogger) Printf(format string, args ...any) { l.t.Logf(format, args...) }
