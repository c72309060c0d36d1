package broker

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	runnelv1 "github.com/runnel-io/runnel/proto/runnel/v1"
)

// benchLogEnd is the log end of the benchmark's partitions: the commits cycle through
// offsets 0 to benchLogEnd.
const benchLogEnd = 100

// BenchmarkGroupCommitsLocal measures offset commits on a single node (the local offset
// store, <data-dir>/offsets.db): 10 groups of 10 members each commit concurrently, one commit
// in flight per member, fenced by member epoch.
//
//	go test -run '^$' -bench BenchmarkGroupCommitsLocal -benchtime 20000x ./broker/
func BenchmarkGroupCommitsLocal(b *testing.B) {
	tb := startBroker(b, b.TempDir())
	tb.createTopic("bench", 10, nil)
	for p := range int32(10) {
		tb.fill("bench", p, benchLogEnd) // commits are refused beyond the log end
	}
	gc := tb.groupsClient()
	type mem struct {
		group, id string
		epoch     int32
		part      int32
	}
	var members []mem
	for g := range 10 {
		for i := range 10 {
			group := fmt.Sprintf("bench-%d", g)
			r, err := gc.Heartbeat(context.Background(), &runnelv1.HeartbeatRequest{Group: group, SubscribedTopics: []string{"bench"}, SessionTimeoutMs: 300_000})
			if err != nil {
				b.Fatal(err)
			}
			members = append(members, mem{group, r.GetMemberId(), r.GetMemberEpoch(), int32(i)})
		}
	}
	oc := tb.offsets()
	var next atomic.Int64
	var wg sync.WaitGroup
	b.ResetTimer()
	start := time.Now()
	for _, m := range members {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := next.Add(1)
				if i > int64(b.N) {
					return
				}
				if _, err := oc.CommitOffsets(context.Background(), &runnelv1.CommitOffsetsRequest{Group: m.group, MemberId: m.id, MemberEpoch: m.epoch,
					Offsets: []*runnelv1.OffsetCommit{{Topic: "bench", Partition: m.part, Offset: i % (benchLogEnd + 1)}}}); err != nil {
					b.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "commits/s")
}
