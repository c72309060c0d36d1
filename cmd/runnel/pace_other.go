//go:build !linux

package main

import "time"

// pacer sleeps until a record is due under --rate (see pace_linux.go: here with time.Sleep,
// whose resolution may add up to a millisecond of latency).
type pacer struct{}

func newPacer() (*pacer, error) { return &pacer{}, nil }

func (*pacer) sleepUntil(due time.Time) error {
	time.Sleep(time.Until(due))
	return nil
}

func (*pacer) Close() error { return nil }
