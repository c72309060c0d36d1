package node

import (
	"fmt"
	"os"
	"sort"
	"time"

	metrics "github.com/armon/go-metrics"
)

// With RUNNEL_RAFT_METRICS set, hashicorp/raft's own metrics (every Raft group of the process
// reports to the same names; raft.boltdb.* is the metadata group's log alone) are collected
// in memory and printed to stderr every 2 s: count, mean and max of each sample sampled more
// than 100 times in the interval (timers in milliseconds, sizes and counts in their own units). It is how the metadata group's append times in
// docs/benchmarks.md were read:
//
//	RUNNEL_RAFT_METRICS=1 go test -run '^$' -bench 'BenchmarkGroupCommitsCluster/brokers=3/members=10x10/partitions-per-commit=1$' -benchtime 100000x ./internal/node/
func init() {
	if os.Getenv("RUNNEL_RAFT_METRICS") == "" {
		return
	}
	sink := metrics.NewInmemSink(2*time.Second, time.Minute)
	cfg := metrics.DefaultConfig("")
	cfg.EnableHostname, cfg.EnableRuntimeMetrics, cfg.EnableServiceLabel, cfg.EnableTypePrefix = false, false, false, false
	if _, err := metrics.NewGlobal(cfg, sink); err != nil {
		fmt.Fprintln(os.Stderr, "raft metrics:", err)
		return
	}
	go func() {
		for range time.Tick(2 * time.Second) {
			d := sink.Data()
			if len(d) < 2 {
				continue
			}
			iv := d[len(d)-2] // the last complete interval
			iv.RLock()
			keys := make([]string, 0, len(iv.Samples))
			for k := range iv.Samples {
				keys = append(keys, k)
			}
			sort.Strings(keys)
			for _, k := range keys {
				if s := iv.Samples[k]; s.Count > 100 {
					fmt.Fprintf(os.Stderr, "raft-metric %-60s n=%6d mean=%.3f max=%.2f\n", k, s.Count, s.Sum/float64(s.Count), s.Max)
				}
			}
			iv.RUnlock()
		}
	}()
}
