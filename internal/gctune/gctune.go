// Package gctune sets the garbage collector's target for Runnel's own binaries (runneld and
// runnel), unless the environment sets it.
//
// Why: a broker's live heap is small (records go to the page cache, indexes are memory-mapped),
// so at Go's default GOGC=100 it collects every few megabytes: several times a second under
// load, and a client at 5,000 records/s about four times a second. Each cycle takes CPU from
// the request path on a small machine, and with both processes collecting, some requests meet
// a cycle on one side or the other: at a fixed 5,000 records/s on two vCPUs, GOGC=400 in both
// processes took the produce p99 from 0.90-1.46 ms to 0.71-0.94 ms (8 of 8 alternated pairs;
// docs/benchmarks.md, session 7), for a broker's peak RSS of 88 MB instead of 49 MB in a
// 200 MB produce and consume. The heap may grow to five times what is live, so a broker with
// a large live heap can cap it with GOMEMLIMIT, or set GOGC itself.
package gctune

import (
	"os"
	"runtime/debug"
)

// DefaultPercent is the GOGC value runneld and runnel use when the environment sets none.
const DefaultPercent = 400

// Apply sets the GC target to DefaultPercent unless GOGC is set (not empty) in the
// environment, which the runtime has then applied. It returns the value it set, or -1 when
// the environment's GOGC applies.
func Apply() int {
	if os.Getenv("GOGC") != "" {
		return -1
	}
	debug.SetGCPercent(DefaultPercent)
	return DefaultPercent
}
