package main

import (
	"bufio"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"
)

// Two `runnel consume -g` processes share a topic's partitions; `group describe` shows them
// with their assignments; SIGINT commits what each printed and leaves the group.
func TestConsumeGroupShares(t *testing.T) {
	addr := startBroker(t)
	ok(t, addr, "", "topic", "create", "jobs", "-p", "4")
	for p := range 4 {
		ok(t, addr, strings.Repeat("x\n", 5), "produce", "jobs", "-p", string(rune('0'+p)))
	}
	var (
		mu    sync.Mutex
		total int
	)
	var cmds []*exec.Cmd
	var stderrs []*syncBuffer
	var readers sync.WaitGroup
	for range 2 {
		cmd := exec.Command(runnel, "consume", "jobs", "-g", "workers", "-f", `%p %o\n`)
		cmd.Env = append(os.Environ(), "RUNNEL_BROKERS="+addr)
		stdout, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		se := &syncBuffer{}
		cmd.Stderr = se
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		defer func() { _ = cmd.Process.Kill() }()
		cmds, stderrs = append(cmds, cmd), append(stderrs, se)
		readers.Add(1)
		go func() {
			defer readers.Done()
			sc := bufio.NewScanner(stdout)
			for sc.Scan() {
				mu.Lock()
				total++
				mu.Unlock()
			}
		}()
	}
	type describeJSON struct {
		State   string `json:"state"`
		Members []struct {
			Member     string   `json:"member"`
			Assignment []string `json:"assignment"`
		} `json:"members"`
		TotalLag int64 `json:"total_lag"`
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		var g describeJSON
		if r := cli(t, addr, "", "group", "describe", "workers", "--format", "json"); r.code == 0 {
			g = decode[describeJSON](t, r.stdout)
		}
		mu.Lock()
		n := total
		mu.Unlock()
		if g.State == "stable" && len(g.Members) == 2 && len(g.Members[0].Assignment) == 2 && len(g.Members[1].Assignment) == 2 && n >= 20 && g.TotalLag == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("group %+v, %d lines printed; stderr %q %q", g, n, stderrs[0].String(), stderrs[1].String())
		}
		time.Sleep(100 * time.Millisecond)
	}
	table := ok(t, addr, "", "group", "describe", "workers")
	for _, w := range []string{"MEMBER", "ASSIGNMENT", "jobs:", "LAG"} {
		if !strings.Contains(table, w) {
			t.Fatalf("describe table lacks %q:\n%s", w, table)
		}
	}
	for i, cmd := range cmds {
		if err := cmd.Process.Signal(os.Interrupt); err != nil {
			t.Fatal(err)
		}
		if err := cmd.Wait(); err != nil {
			t.Fatalf("consume %d after SIGINT: %v; stderr %q", i, err, stderrs[i].String())
		}
	}
	readers.Wait()
	if total != 20 {
		t.Fatalf("%d lines printed, want 20", total)
	}
	g := decode[describeJSON](t, ok(t, addr, "", "group", "describe", "workers", "--format", "json"))
	if len(g.Members) != 0 || g.State != "empty" || g.TotalLag != 0 {
		t.Fatalf("after SIGINT: %+v", g)
	}
}
