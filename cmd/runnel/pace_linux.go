package main

import (
	"os"
	"time"

	"golang.org/x/sys/unix"
)

// pacer sleeps until a record is due under --rate. time.Sleep does not do for that: Go's
// timers do not wake an otherwise idle process sooner than about 1 ms here (a 20-300 us
// time.Sleep returned after 1.08 ms), and every record due during the oversleep would count
// it as latency. A nanosleep is precise but holds the goroutine's P for the length of the
// system call, which delayed the SDK's own goroutines. A timerfd read through Go's network
// poller parks only the goroutine and wakes 20-30 us after the deadline (BenchmarkSleepLateness).
type pacer struct {
	fd int
	f  *os.File
}

func newPacer() (*pacer, error) {
	fd, err := unix.TimerfdCreate(unix.CLOCK_MONOTONIC, unix.TFD_NONBLOCK|unix.TFD_CLOEXEC)
	if err != nil {
		return nil, os.NewSyscallError("timerfd_create", err)
	}
	return &pacer{fd: fd, f: os.NewFile(uintptr(fd), "timerfd")}, nil
}

// sleepUntil returns at due or, rarely, up to a few tens of microseconds after.
func (p *pacer) sleepUntil(due time.Time) error {
	d := time.Until(due)
	if d <= 0 {
		return nil
	}
	its := unix.ItimerSpec{Value: unix.NsecToTimespec(int64(d))}
	if err := unix.TimerfdSettime(p.fd, 0, &its, nil); err != nil {
		return os.NewSyscallError("timerfd_settime", err)
	}
	var expirations [8]byte
	_, err := p.f.Read(expirations[:])
	return err
}

func (p *pacer) Close() error { return p.f.Close() }
