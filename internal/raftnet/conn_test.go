package raftnet

import (
	"bufio"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rs/zerolog"
)

// pipeConn returns an outbound conn over net.Pipe (not started), the far end, and the count of
// Write calls on the conn.
func pipeConn(t *testing.T, linger time.Duration) (*conn, *frameReader, *atomic.Int64) {
	t.Helper()
	n, err := New(Config{Advertise: "local:1", Linger: linger, Logger: zerolog.Nop()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = n.Close() })
	near, far := net.Pipe()
	t.Cleanup(func() { _ = far.Close() })
	writes := new(atomic.Int64)
	c := newConn(n, countingConn{near, writes}, bufio.NewReader(near), &peer{n: n})
	return c, &frameReader{r: bufio.NewReader(far), max: DefaultMaxFrame}, writes
}

// TestHeartbeatsFirst: frames queued as high priority (heartbeats, votes) are written before
// bulk AppendEntries queued earlier.
func TestHeartbeatsFirst(t *testing.T) {
	c, fr, _ := pipeConn(t, -1)
	c.writing = true // as if another goroutine were writing: everything below queues
	big := make([]byte, 300<<10)
	for range 3 {
		if _, _, err := c.requestRaw(kindAppendEntries, "bulk", big, false, false); err != nil {
			t.Fatal(err)
		}
	}
	if _, _, err := c.requestRaw(kindAppendEntries, "hb", []byte{1}, true, true); err != nil {
		t.Fatal(err)
	}
	if !c.start() {
		t.Fatal("not started")
	}
	go c.drain() // the writer that held the connection goes on
	var order []string
	for range 4 {
		f, err := fr.next()
		if err != nil {
			t.Fatal(err)
		}
		order = append(order, f.group)
	}
	if order[0] != "hb" {
		t.Fatalf("written in order %v; the heartbeat should be first", order)
	}
}

// TestCoalescing: lazy frames of many groups (heartbeats) are held and leave in one write
// together with the next urgent frame.
func TestCoalescing(t *testing.T) {
	c, fr, writes := pipeConn(t, time.Hour)
	if !c.start() {
		t.Fatal("not started")
	}
	const groups = 50
	for g := range groups {
		if _, _, err := c.requestRaw(kindAppendEntries, string(rune('A'+g)), []byte{byte(g)}, true, true); err != nil {
			t.Fatal(err)
		}
	}
	// An urgent frame (a vote) ends the linger at once: its sender writes everything.
	go func() {
		if _, _, err := c.requestRaw(kindRequestVote, "vote", []byte{9}, true, false); err != nil {
			t.Error(err)
		}
	}()
	for range groups + 1 {
		if _, err := fr.next(); err != nil {
			t.Fatal(err)
		}
	}
	if w := writes.Load(); w != 1 {
		t.Fatalf("%d frames took %d writes, want 1", groups+1, w)
	}
}
