package client_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/runnel-io/runnel/client"
)

// BenchmarkGroupRebalance measures, in a group of 10 members sharing a 30-partition topic on
// one broker, the time from one member leaving (Close: commit and leave) or dying (Abort: no
// leave; session timeout 2 s) until the 9 others own every partition.
//
//	go test -run '^$' -bench BenchmarkGroupRebalance -benchtime 5x ./client/
func BenchmarkGroupRebalance(b *testing.B) {
	for _, mode := range []string{"leave", "die"} {
		b.Run(mode, func(b *testing.B) {
			cl, _ := newClient(b)
			createTopic(b, cl, "orders", 30, nil)
			var total time.Duration
			for i := range b.N {
				b.StopTimer()
				group := mode + string(rune('a'+i))
				var gs []*client.GroupConsumer
				for range 10 {
					g, err := cl.NewGroupConsumer(group, []string{"orders"}, client.WithSessionTimeout(2*time.Second))
					if err != nil {
						b.Fatal(err)
					}
					gs = append(gs, g)
					go func() { _ = g.Run(context.Background(), func(*client.Record) error { return nil }) }()
				}
				own := func(gs []*client.GroupConsumer, each int) bool {
					seen := map[client.TopicPartition]bool{}
					for _, g := range gs {
						a := g.Assignment()
						if each > 0 && len(a) != each {
							return false
						}
						for _, tp := range a {
							if seen[tp] {
								return false
							}
							seen[tp] = true
						}
					}
					return len(seen) == 30
				}
				deadline := time.Now().Add(20 * time.Second)
				for !own(gs, 3) {
					if time.Now().After(deadline) {
						b.Fatal("the group never balanced")
					}
					time.Sleep(5 * time.Millisecond)
				}
				b.StartTimer()
				start := time.Now()
				if mode == "leave" {
					if err := gs[0].Close(); err != nil {
						b.Fatal(err)
					}
				} else {
					gs[0].Abort()
				}
				for !own(gs[1:], 0) {
					if time.Since(start) > 20*time.Second {
						b.Fatal("the others never owned everything")
					}
					time.Sleep(time.Millisecond)
				}
				el := time.Since(start)
				b.StopTimer()
				total += el
				for _, g := range gs[1:] {
					_ = g.Close()
				}
			}
			b.ReportMetric(float64(total.Milliseconds())/float64(b.N), "ms/rebalance")
		})
	}
}

// BenchmarkGroupConsume compares the consumption throughput of a group of 3 members with
// that of 3 consumers each assigned a third of the partitions by hand, over 12 partitions
// holding 120,000 records of 100 bytes on one broker (records/s). The group's members start
// handling records once the group is balanced (its rebalance is BenchmarkGroupRebalance's).
//
//	go test -run '^$' -bench BenchmarkGroupConsume -benchtime 3x ./client/
func BenchmarkGroupConsume(b *testing.B) {
	cl, _ := newClient(b)
	const parts, n = 12, 120_000
	createTopic(b, cl, "load", parts, nil)
	ctx := context.Background()
	val := make([]byte, 100)
	for i := range n {
		cl.Produce(ctx, &client.Record{Topic: "load", Partition: int32(i % parts), ManualPartition: true, Value: val}, nil)
	}
	if err := cl.Flush(ctx); err != nil {
		b.Fatal(err)
	}
	b.Run("manual", func(b *testing.B) {
		var total time.Duration
		for range b.N {
			var count atomic.Int64
			start := time.Now()
			var wg sync.WaitGroup
			for c := range 3 {
				k := cl.NewConsumer()
				for p := c; p < parts; p += 3 {
					if err := k.Assign("load", int32(p), client.Earliest()); err != nil {
						b.Fatal(err)
					}
				}
				wg.Add(1)
				go func() {
					defer wg.Done()
					defer k.Close()
					rctx, cancel := context.WithCancel(ctx)
					defer cancel()
					mine := int64(0)
					_ = k.Run(rctx, func(*client.Record) error {
						mine++
						if count.Add(1) >= n || mine >= n/3 {
							cancel()
						}
						return nil
					})
				}()
			}
			wg.Wait()
			total += time.Since(start)
		}
		b.ReportMetric(float64(n*b.N)/total.Seconds(), "records/s")
	})
	groups := 0
	b.Run("group", func(b *testing.B) {
		var total time.Duration
		errNotYet := errors.New("not yet")
		for range b.N {
			groups++
			var count atomic.Int64
			var ready atomic.Bool
			done := make(chan struct{})
			var once sync.Once
			var gs []*client.GroupConsumer
			for range 3 {
				g, err := cl.NewGroupConsumer(fmt.Sprintf("load-%d", groups), []string{"load"}, client.WithGroupStart(client.Earliest()))
				if err != nil {
					b.Fatal(err)
				}
				gs = append(gs, g)
				go func() {
					// Until the group is balanced, nothing is handled (the records come
					// again from the next Run): the measure starts with 4 partitions each.
					for !ready.Load() {
						if err := g.Run(ctx, func(*client.Record) error { return errNotYet }); errors.Is(err, client.ErrClosed) {
							return
						}
						time.Sleep(time.Millisecond)
					}
					_ = g.Run(ctx, func(*client.Record) error {
						if count.Add(1) >= n {
							once.Do(func() { close(done) })
						}
						return nil
					})
				}()
			}
			deadline := time.Now().Add(20 * time.Second)
			for {
				ok := true
				for _, g := range gs {
					if len(g.Assignment()) != parts/3 {
						ok = false
					}
				}
				if ok {
					break
				}
				if time.Now().After(deadline) {
					b.Fatal("the group never balanced")
				}
				time.Sleep(time.Millisecond)
			}
			start := time.Now()
			ready.Store(true)
			<-done
			total += time.Since(start)
			for _, g := range gs {
				_ = g.Close()
			}
		}
		b.ReportMetric(float64(n*b.N)/total.Seconds(), "records/s")
	})
}
