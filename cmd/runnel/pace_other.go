//go:build !unix

package main

import "time"

// sleepUntil returns at due or later (see pace_unix.go).
func sleepUntil(due time.Time) {
	if d := time.Until(due); d > 0 {
		time.Sleep(d)
	}
}
