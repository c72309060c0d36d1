package gctune

import (
	"runtime/debug"
	"testing"
)

func TestApply(t *testing.T) {
	for _, tc := range []struct {
		gogc string
		want int // Apply's result, and the target after it
	}{
		{"", DefaultPercent},
		{"150", -1},
		{"off", -1},
	} {
		old := debug.SetGCPercent(100)
		t.Setenv("GOGC", tc.gogc)
		got := Apply()
		after := debug.SetGCPercent(old)
		if got != tc.want {
			t.Errorf("GOGC=%q: Apply() = %d, want %d", tc.gogc, got, tc.want)
		}
		if want := max(tc.want, 100); after != want { // -1: left as it was (100 here)
			t.Errorf("GOGC=%q: GC percent %d after Apply, want %d", tc.gogc, after, want)
		}
	}
}
