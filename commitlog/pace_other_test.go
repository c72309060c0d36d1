//go:build !linux

package commitlog

import "time"

func sleepUntil(due time.Time) { time.Sleep(time.Until(due)) }
