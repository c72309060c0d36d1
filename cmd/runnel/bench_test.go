package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestBench runs bench produce and bench consume against a real runneld: the JSON summary is
// the last line of stdout, counts are exact, and every record produced is consumed.
func TestBench(t *testing.T) {
	addr := startBroker(t)
	type summary struct {
		Op            string  `json:"op"`
		Records       int64   `json:"records"`
		Bytes         int64   `json:"bytes"`
		Seconds       float64 `json:"seconds"`
		RecordsPerSec float64 `json:"records_per_sec"`
		MBPerSec      float64 `json:"mb_per_sec"`
		Latency       struct {
			P50, P99, P999, Max float64
		} `json:"latency_ms"`
		SendLag *struct {
			P50, P99, P999, Max float64
		} `json:"send_lag_ms"`
		Errors int64 `json:"errors"`
	}
	last := func(out string) string {
		lines := strings.Split(strings.TrimSpace(out), "\n")
		return lines[len(lines)-1]
	}
	out := ok(t, addr, "", "bench", "produce", "--topic", "b", "--records", "5000", "--record-size", "64",
		"--partitions", "3", "--producers", "2", "--linger", "1ms", "--batch-bytes", "4096", "--format", "json")
	p := decode[summary](t, last(out))
	if p.Op != "produce" || p.Records != 5000 || p.Bytes != 5000*64 || p.Errors != 0 || p.Seconds <= 0 || p.RecordsPerSec <= 0 ||
		p.Latency.P50 <= 0 || p.Latency.P50 > p.Latency.P99 || p.Latency.P99 > p.Latency.P999 || p.Latency.P999 > p.Latency.Max ||
		p.SendLag != nil {
		t.Fatalf("bench produce summary %+v (no send lag without --rate)", p)
	}
	// At a fixed rate, with acks=leader and compression.
	out = ok(t, addr, "", "bench", "produce", "--topic", "b", "--records", "500", "--rate", "5000", "--acks", "leader", "--compression", "zstd", "--format", "json")
	if r := decode[summary](t, last(out)); r.Records != 500 || r.Seconds < 0.09 ||
		r.SendLag == nil || r.SendLag.P50 < 0 || r.SendLag.P50 > r.SendLag.Max || r.SendLag.Max <= 0 {
		t.Fatalf("bench produce --rate 5000 of 500 records: %+v (at least 0.1 s and a send lag expected)", r)
	}
	// One record at a time (--sync), paced and not: every record acknowledged and there.
	out = ok(t, addr, "", "bench", "produce", "--topic", "s", "--records", "300", "--rate", "5000", "--sync", "--format", "json")
	if r := decode[summary](t, last(out)); r.Records != 300 || r.Errors != 0 || r.Seconds < 0.059 || r.Latency.P50 <= 0 {
		t.Fatalf("bench produce --sync --rate 5000 of 300 records: %+v (at least 0.06 s expected)", r)
	}
	out = ok(t, addr, "", "bench", "produce", "--topic", "s", "--records", "50", "--sync", "--format", "json")
	if r := decode[summary](t, last(out)); r.Records != 50 || r.Errors != 0 {
		t.Fatalf("bench produce --sync of 50 records: %+v", r)
	}
	if c := decode[summary](t, last(ok(t, addr, "", "bench", "consume", "--topic", "s", "--format", "json"))); c.Records != 350 {
		t.Fatalf("bench consume after --sync: %+v, want 350 records", c)
	}
	// The client's CPU profile and execution trace, for finding where time goes.
	prof, tr := filepath.Join(t.TempDir(), "cpu.prof"), filepath.Join(t.TempDir(), "trace.out")
	ok(t, addr, "", "bench", "produce", "--topic", "s", "--records", "20", "--cpuprofile", prof, "--trace", tr)
	for _, f := range []string{prof, tr} {
		if st, err := os.Stat(f); err != nil || st.Size() == 0 {
			t.Fatalf("%s: %v (empty or missing)", f, err)
		}
	}
	out = ok(t, addr, "", "bench", "consume", "--topic", "b", "--format", "json")
	if c := decode[summary](t, last(out)); c.Op != "consume" || c.Records != 5500 || c.Bytes != 5000*64+500*100 {
		t.Fatalf("bench consume summary %+v", c)
	}
	if out := ok(t, addr, "", "bench", "consume", "--topic", "b", "--records", "10"); !strings.Contains(out, "records consumed") {
		t.Fatalf("bench consume table output %q", out)
	}

	// Bad input: one line on stderr, exit 2 for usage, 1 for what the broker refuses.
	fails(t, addr, 2, "", "bench", "produce", "--records", "0")
	fails(t, addr, 2, "", "bench", "produce", "--acks", "most")
	fails(t, addr, 2, "", "bench", "produce", "--compression", "rar")
	fails(t, addr, 2, "", "bench", "produce", "--rate", "-1")
	fails(t, addr, 1, "", "bench", "produce", "--topic", "bad name!", "--records", "10")
	fails(t, addr, 1, "", "bench", "consume", "--topic", "missing")
	ok(t, addr, "", "topic", "create", "empty")
	fails(t, addr, 1, "", "bench", "consume", "--topic", "empty")
}
