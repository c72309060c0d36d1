package client_test

import (
	"context"
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
