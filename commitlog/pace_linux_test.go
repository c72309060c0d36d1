//go:build linux

package commitlog

import (
	"runtime"
	"syscall"
	"time"
)

// sleepUntil returns at due: time.Sleep of under a millisecond returns after about 1 ms on an
// otherwise idle process here (Go's timer floor), which paced benchmarks would count as
// latency. nanosleep blocks only this goroutine's thread; the last 60 us are yielded away.
func sleepUntil(due time.Time) {
	if d := time.Until(due) - 60*time.Microsecond; d > 0 {
		ts := syscall.NsecToTimespec(int64(d))
		_ = syscall.Nanosleep(&ts, nil)
	}
	for time.Now().Before(due) {
		runtime.Gosched()
	}
}
