package main

import (
	"fmt"
	"slices"
	"syscall"
	"testing"
	"time"
)

// BenchmarkSleepLateness measures how late a sleep of d returns, for the ways a paced
// benchmark can sleep: time.Sleep (Go's timers: about 1 ms late on an idle process here),
// nanosleep (precise, but it holds the goroutine's P), and the pacer (a timerfd read through
// Go's poller). docs/benchmarks.md quotes it:
//
//	go test -run '^$' -bench BenchmarkSleepLateness -benchtime 2000x ./cmd/runnel/
func BenchmarkSleepLateness(b *testing.B) {
	pace, err := newPacer()
	if err != nil {
		b.Fatal(err)
	}
	defer pace.Close()
	ways := []struct {
		name  string
		sleep func(due time.Time)
	}{
		{"time.Sleep", func(due time.Time) { time.Sleep(time.Until(due)) }},
		{"nanosleep", func(due time.Time) {
			ts := syscall.NsecToTimespec(int64(time.Until(due)))
			_ = syscall.Nanosleep(&ts, nil)
		}},
		{"timerfd", func(due time.Time) { _ = pace.sleepUntil(due) }},
	}
	for _, w := range ways {
		for _, d := range []time.Duration{20 * time.Microsecond, 100 * time.Microsecond, 300 * time.Microsecond} {
			b.Run(fmt.Sprintf("%s/d=%v", w.name, d), func(b *testing.B) {
				late := make([]time.Duration, 0, b.N)
				for range b.N {
					due := time.Now().Add(d)
					w.sleep(due)
					late = append(late, time.Since(due))
				}
				slices.Sort(late)
				q := func(f float64) float64 { return float64(late[int(f*float64(len(late)-1))].Microseconds()) }
				b.ReportMetric(q(0.5), "p50-late-us")
				b.ReportMetric(q(0.99), "p99-late-us")
			})
		}
	}
}
