package node

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/runnel-io/runnel/client"
	runnelv1 "github.com/runnel-io/runnel/proto/runnel/v1"
)

// startBenchCluster starts n brokers of one cluster (the first founds it) and returns them
// once the metadata has a leader and every broker alive.
func startBenchCluster(tb testing.TB, n int) []*Node {
	tb.Helper()
	var nodes []*Node
	for i := range n {
		cc := &ClusterConfig{
			SerfAddr: "127.0.0.1:0", Voters: 3, FailedTimeout: time.Minute, PartitionRaft: partitionRaftForTests(),
			ReplicaRemoveDelay: 2 * time.Second, SyncInterval: 200 * time.Millisecond, TuneMetaRaft: fastRaft, TuneSerf: fastSerf,
		}
		if i > 0 {
			cc.Join = []string{nodes[0].SerfAddr()}
		}
		nd, err := Start(Config{DataDir: tb.TempDir(), Addr: "127.0.0.1:0", NodeID: int32(i + 1), Logger: zerolog.Nop(), Version: "bench", Cluster: cc})
		if err != nil {
			tb.Fatal(err)
		}
		nodes = append(nodes, nd)
		tb.Cleanup(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			_ = nd.Stop(ctx)
		})
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		ok := true
		for _, nd := range nodes {
			list, err := nd.Cluster().Brokers()
			alive := 0
			for _, b := range list {
				if b.State == "alive" {
					alive++
				}
			}
			if _, _, known := nd.Cluster().Leader(); err != nil || alive < n || !known {
				ok = false
			}
		}
		if ok {
			return nodes
		}
		if time.Now().After(deadline) {
			tb.Fatalf("cluster of %d not up", n)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func benchConn(tb testing.TB, addr string) *grpc.ClientConn {
	cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = cc.Close() })
	return cc
}

// metaLeaderAddr returns the metadata leader's address.
func metaLeaderAddr(tb testing.TB, nodes []*Node) string {
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		for _, nd := range nodes {
			if nd.Cluster().IsLeader() {
				return nd.Addr()
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	tb.Fatal("no metadata leader")
	return ""
}

// benchMember is a group member for the commit benchmark.
type benchMember struct {
	group string
	id    string
	epoch int32
	part  int32
}

// joinBenchMembers joins groups×members members (session timeout 5 min: none expires during
// the benchmark) to topic on the metadata leader, starting over there if the leadership
// moves, and returns the connection to the leader with the members.
func joinBenchMembers(tb testing.TB, nodes []*Node, topic string, groups, members int) (*grpc.ClientConn, []*benchMember) {
	addr := metaLeaderAddr(tb, nodes)
	for attempt := 0; ; attempt++ {
		cc := benchConn(tb, addr)
		gc := runnelv1.NewGroupServiceClient(cc)
		var out []*benchMember
		var err error
	join:
		for g := range groups {
			for i := range members {
				var resp *runnelv1.HeartbeatResponse
				resp, err = gc.Heartbeat(context.Background(), &runnelv1.HeartbeatRequest{
					Group: fmt.Sprintf("bench-%d", g), SubscribedTopics: []string{topic}, SessionTimeoutMs: 300_000,
				})
				if err != nil {
					break join
				}
				out = append(out, &benchMember{group: fmt.Sprintf("bench-%d", g), id: resp.GetMemberId(), epoch: resp.GetMemberEpoch(), part: int32(i)})
			}
		}
		if err == nil {
			return cc, out
		}
		if attempt == 10 {
			tb.Fatal(err)
		}
		time.Sleep(200 * time.Millisecond)
		if info := errorInfo(err); info.GetLeaderAddress() != "" {
			addr = info.GetLeaderAddress()
		} else {
			addr = metaLeaderAddr(tb, nodes)
		}
	}
}

// benchLogEnd is the log end of the benchmark's partitions (commits beyond it are refused):
// the commits cycle through offsets 0 to benchLogEnd.
const benchLogEnd = 100

// fillBench produces benchLogEnd records to each of the topic's partitions.
func fillBench(tb testing.TB, nodes []*Node, topic string, parts int32) {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var addrs []string
	for _, nd := range nodes {
		addrs = append(addrs, nd.Addr())
	}
	cl, err := client.New(ctx, client.WithBrokers(addrs...), client.WithRetryBackoff(50*time.Millisecond))
	if err != nil {
		tb.Fatal(err)
	}
	defer cl.Close()
	var recs []*client.Record
	for p := range parts {
		for range benchLogEnd {
			recs = append(recs, &client.Record{Topic: topic, Partition: p, ManualPartition: true, Value: []byte("x")})
		}
	}
	if err := cl.ProduceSync(ctx, recs...); err != nil {
		tb.Fatal(err)
	}
}

// runCommits has every member commit the offsets of its perCommit partitions, one commit at
// a time each, until n commits are done, and returns the elapsed time.
func runCommits(tb testing.TB, cc *grpc.ClientConn, topic string, members []*benchMember, perCommit int, n int64) time.Duration {
	oc := runnelv1.NewOffsetServiceClient(cc)
	var next atomic.Int64
	var wg sync.WaitGroup
	var firstErr atomic.Pointer[error]
	start := time.Now()
	for _, m := range members {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := next.Add(1)
				if i > n {
					return
				}
				req := &runnelv1.CommitOffsetsRequest{Group: m.group, MemberId: m.id, MemberEpoch: m.epoch}
				for k := range int32(perCommit) {
					req.Offsets = append(req.Offsets, &runnelv1.OffsetCommit{Topic: topic, Partition: m.part*int32(perCommit) + k, Offset: i % (benchLogEnd + 1)})
				}
				_, err := oc.CommitOffsets(context.Background(), req)
				if err != nil {
					firstErr.CompareAndSwap(nil, &err)
					return
				}
			}
		}()
	}
	wg.Wait()
	if e := firstErr.Load(); e != nil {
		tb.Fatal(*e)
	}
	return time.Since(start)
}

// BenchmarkGroupCommitsCluster measures offset commits through the metadata Raft group: 10
// groups of 10 members (or 1 group of 100: one Raft entry per batch instead of one per group
// and batch) each commit concurrently (one commit in flight per member, of 1 or 3
// partitions of its own), fenced by member epoch, on a cluster of 1 and of 3 brokers.
// commits/s counts CommitOffsets calls, offsets/s the partition offsets they carry.
//
//	go test -run '^$' -bench BenchmarkGroupCommitsCluster -benchtime 20000x ./internal/node/
func BenchmarkGroupCommitsCluster(b *testing.B) {
	for _, c := range []struct{ brokers, groups, members, perCommit int }{{1, 10, 10, 1}, {3, 10, 10, 1}, {1, 10, 10, 3}, {3, 10, 10, 3}, {1, 1, 100, 1}, {3, 1, 100, 1}} {
		n := c.brokers
		b.Run(fmt.Sprintf("brokers=%d/members=%dx%d/partitions-per-commit=%d", n, c.groups, c.members, c.perCommit), func(b *testing.B) {
			nodes := startBenchCluster(b, n)
			time.Sleep(2 * time.Second) // a new cluster's metadata leadership may still move
			cc := benchConn(b, metaLeaderAddr(b, nodes))
			if _, err := runnelv1.NewAdminServiceClient(cc).CreateTopic(context.Background(),
				&runnelv1.CreateTopicRequest{Name: "bench", Partitions: int32(c.members * c.perCommit), ReplicationFactor: int32(n)}); err != nil {
				b.Fatal(err)
			}
			cc, members := joinBenchMembers(b, nodes, "bench", c.groups, c.members)
			time.Sleep(time.Second) // the topic's replicas open in the background
			fillBench(b, nodes, "bench", int32(c.members*c.perCommit))
			b.ResetTimer()
			cpu0 := processCPU()
			el := runCommits(b, cc, "bench", members, c.perCommit, int64(b.N))
			cpu := processCPU() - cpu0
			b.StopTimer()
			b.ReportMetric(float64(b.N)/el.Seconds(), "commits/s")
			// The process's CPU time (members and brokers alike) per commit: what bounds the
			// rate on two vCPUs. It moves with the rate between runs (larger batches, when
			// fsyncs are slower, cost less per commit), so compare builds run alternately.
			b.ReportMetric(float64(cpu.Microseconds())/float64(b.N), "cpu-us/commit")
			b.ReportMetric(float64(b.N*c.perCommit)/el.Seconds(), "offsets/s")
			// Every broker's metadata has the groups' commits.
			for _, nd := range nodes {
				deadline := time.Now().Add(10 * time.Second)
				for {
					gs, err := nd.Cluster().Groups()
					if err == nil && len(gs) > 0 {
						break
					}
					if time.Now().After(deadline) {
						b.Fatalf("broker %d: no group offsets: %v", nd.ID(), err)
					}
					time.Sleep(20 * time.Millisecond)
				}
			}
		})
	}
}

// processCPU is the CPU time (user and system) this process has used.
func processCPU() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
