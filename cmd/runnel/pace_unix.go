//go:build unix

package main

import (
	"runtime"
	"syscall"
	"time"
)

// paceSlack is how much earlier than due sleepUntil asks the kernel to wake it: a nanosleep
// here returns about 75 us late (the thread's timer slack and the wakeup).
const paceSlack = 60 * time.Microsecond

// sleepUntil returns at due, not before and, unlike time.Sleep, not up to a millisecond after:
// Go's timers do not wake an idle process sooner than about 1 ms (measured here: a 20-300 us
// time.Sleep returned after 1.08 ms), which under --rate made each record due during the
// oversleep count it as latency. It sleeps in the kernel (nanosleep blocks only this
// goroutine's thread) and yields for what remains.
func sleepUntil(due time.Time) {
	if d := time.Until(due) - paceSlack; d > 0 {
		ts := syscall.NsecToTimespec(int64(d))
		_ = syscall.Nanosleep(&ts, nil) // an interruption only ends the sleep early
	}
	for time.Now().Before(due) {
		runtime.Gosched()
	}
}
