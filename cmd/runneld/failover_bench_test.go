package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/runnel-io/runnel/client"
)

// BenchmarkFailover measures issue 4's failover figure on real processes: three runneld form
// a cluster; a 3-partition RF=3 topic takes a steady acks=all load of 1 KiB records from the
// SDK (one record per partition every 2 ms); RUNNEL_FAILOVER_KILLS times (default 10), the
// leader of one partition is killed with SIGKILL, and the failover time is the time from
// the kill until the first acknowledgement of a record produced after the kill to that
// partition; the broker is restarted and the cluster settles before the next kill. Reported:
// the median and the worst, in milliseconds.
//
//	go test -run '^$' -bench Failover -benchtime 1x ./cmd/runneld/
func BenchmarkFailover(b *testing.B) {
	kills := 10
	if v, err := strconv.Atoi(os.Getenv("RUNNEL_FAILOVER_KILLS")); err == nil && v > 0 {
		kills = v
	}
	bin := buildBinary(b)
	root := b.TempDir()
	const (
		topicName = "failover"
		parts     = int32(3)
	)
	nodes := make([]*clusterNode, 3)
	for i := range nodes {
		nodes[i] = &clusterNode{id: int32(i + 1), dir: filepath.Join(root, fmt.Sprint("broker-", i+1)), addr: freePort(b), serfAddr: freePort(b)}
		if i > 0 {
			nodes[i].join = []string{nodes[0].serfAddr}
		}
	}
	for _, n := range nodes {
		startNode(b, bin, n)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	cl, err := client.New(ctx, client.WithBrokers(nodes[0].addr, nodes[1].addr, nodes[2].addr),
		client.WithDeliveryTimeout(time.Minute), client.WithRetryBackoff(20*time.Millisecond))
	if err != nil {
		b.Fatal(err)
	}
	defer cl.Close()
	waitUntil(b, 30*time.Second, "three brokers", func() error {
		ci, err := cl.ClusterInfo(ctx)
		if err != nil {
			return err
		}
		if len(ci.Brokers) < 3 {
			return fmt.Errorf("%d brokers", len(ci.Brokers))
		}
		return nil
	})
	if err := cl.CreateTopic(ctx, topicName, parts, 3, nil); err != nil {
		b.Fatal(err)
	}
	waitSettled(b, ctx, nodes, topicName, parts, 30*time.Second)

	// acks[p] holds, per partition, the (produced, acknowledged) times of acknowledged records.
	type ack struct{ produced, acked time.Time }
	var (
		mu   sync.Mutex
		acks = map[int32][]ack{}
		stop = make(chan struct{})
		wg   sync.WaitGroup
	)
	value := make([]byte, 1024)
	wg.Go(func() {
		tick := time.NewTicker(2 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-stop:
				return
			case <-tick.C:
			}
			for p := range parts {
				produced := time.Now()
				cl.Produce(ctx, &client.Record{Topic: topicName, Partition: p, ManualPartition: true, Value: value}, func(_ *client.Record, err error) {
					if err != nil {
						return
					}
					now := time.Now()
					mu.Lock()
					acks[p] = append(acks[p], ack{produced, now})
					mu.Unlock()
				})
			}
		}
	})
	var times []time.Duration
	b.ResetTimer()
	for k := range kills {
		leaders := waitSettled(b, ctx, nodes, topicName, parts, 60*time.Second)
		p := int32(k) % parts
		var victim *clusterNode
		for _, n := range nodes {
			if n.id == leaders[p] {
				victim = n
			}
		}
		time.Sleep(500 * time.Millisecond) // under load for a moment
		killed := time.Now()
		kill9(b, victim)
		var took time.Duration
		waitUntil(b, 60*time.Second, "an acknowledgement after the kill", func() error {
			mu.Lock()
			defer mu.Unlock()
			for _, a := range acks[p] {
				if a.produced.After(killed) {
					took = a.acked.Sub(killed)
					return nil
				}
			}
			return fmt.Errorf("none yet")
		})
		times = append(times, took)
		b.Logf("kill %d: broker %d (leader of partition %d): produce resumed after %v", k+1, victim.id, p, took.Round(time.Millisecond))
		startNode(b, bin, victim)
		mu.Lock()
		clear(acks) // the next kill looks at its own acknowledgements only
		mu.Unlock()
	}
	b.StopTimer()
	close(stop)
	wg.Wait()
	slices.Sort(times)
	median := times[len(times)/2]
	if len(times)%2 == 0 {
		median = (times[len(times)/2-1] + times[len(times)/2]) / 2
	}
	b.ReportMetric(float64(median.Microseconds())/1000, "failover-median-ms")
	b.ReportMetric(float64(times[len(times)-1].Microseconds())/1000, "failover-max-ms")
	b.ReportMetric(float64(len(times)), "kills")
}
