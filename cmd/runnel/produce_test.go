package main

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// syncBuffer is a bytes.Buffer safe to read while a command writes to it.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// broker is a runneld that a test can stop and start again on the same address and data.
type broker struct {
	t         *testing.T
	dir, addr string
	cmd       *exec.Cmd
	exited    chan error
	log       *syncBuffer
}

func newBroker(t *testing.T) *broker {
	b := &broker{t: t, dir: filepath.Join(t.TempDir(), "data"), addr: freeAddr(t)}
	b.start()
	t.Cleanup(b.stop)
	return b
}

func (b *broker) start() {
	b.t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		b.cmd = exec.Command(filepath.Join(binDir, "runneld"), "--data-dir", b.dir, "--addr", b.addr)
		b.log = &syncBuffer{}
		b.cmd.Stdout, b.cmd.Stderr = b.log, b.log
		if err := b.cmd.Start(); err != nil {
			b.t.Fatal(err)
		}
		b.exited = make(chan error, 1)
		go func(cmd *exec.Cmd, ch chan<- error) { ch <- cmd.Wait() }(b.cmd, b.exited)
		if b.waitListening(deadline) {
			return
		}
		// runneld exited: after a stop, its address may take a moment to be free again.
		time.Sleep(100 * time.Millisecond)
	}
}

// waitListening waits until runneld listens (true) or exits (false) before deadline.
func (b *broker) waitListening(deadline time.Time) bool {
	b.t.Helper()
	for {
		c, err := net.DialTimeout("tcp", b.addr, time.Second)
		if err == nil {
			_ = c.Close()
			return true
		}
		select {
		case err := <-b.exited:
			if time.Now().After(deadline) {
				b.t.Fatalf("runneld exited: %v\n%s", err, b.log.String())
			}
			return false
		default:
		}
		if time.Now().After(deadline) {
			b.t.Fatalf("runneld not listening on %s: %v\n%s", b.addr, err, b.log.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (b *broker) stop() {
	if b.cmd == nil {
		return
	}
	_ = b.cmd.Process.Signal(os.Interrupt)
	select {
	case <-b.exited:
	case <-time.After(10 * time.Second):
		_ = b.cmd.Process.Kill()
		<-b.exited
	}
	b.cmd = nil
}

// TestProduceRetriesAcrossRestart stops the broker while runnel produce is running, feeds it
// more lines while the broker is down, starts the broker again and checks that every line
// was appended, in order, and that produce exited 0.
func TestProduceRetriesAcrossRestart(t *testing.T) {
	b := newBroker(t)
	ok(t, b.addr, "", "topic", "create", "retry", "-p", "1")

	cmd := exec.Command(runnel, "produce", "retry", "-v", "--delivery-timeout", "60s")
	cmd.Env = append(os.Environ(), "RUNNEL_BROKERS="+b.addr)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr syncBuffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	defer func() {
		select {
		case <-done:
		default:
			_ = cmd.Process.Kill()
		}
	}()
	acked := make(chan string, 1000)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			acked <- sc.Text()
		}
		_, _ = io.Copy(io.Discard, stdout)
		done <- cmd.Wait()
	}()
	waitAcks := func(n int) {
		t.Helper()
		for i := range n {
			select {
			case l := <-acked:
				if !strings.HasPrefix(l, "retry partition 0: offset ") {
					t.Fatalf("unexpected -v line %q", l)
				}
			case <-time.After(30 * time.Second):
				t.Fatalf("%d of %d acknowledgements; stderr %q", i, n, stderr.String())
			}
		}
	}
	write := func(from, to int) {
		t.Helper()
		for i := from; i < to; i++ {
			if _, err := fmt.Fprintf(stdin, "line-%d\n", i); err != nil {
				t.Fatal(err)
			}
		}
	}

	write(0, 100)
	waitAcks(100) // the producer is connected and its stream works
	b.stop()
	write(100, 200) // fail (broker down) and are retried
	time.Sleep(500 * time.Millisecond)
	b.start()
	write(200, 300)
	if err := stdin.Close(); err != nil {
		t.Fatal(err)
	}
	waitAcks(200)
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("produce: %v; stderr %q", err, stderr.String())
		}
	case <-time.After(30 * time.Second):
		t.Fatalf("produce did not exit; stderr %q", stderr.String())
	}

	out := ok(t, b.addr, "", "consume", "retry", "--exit-at-end")
	var want strings.Builder
	for i := range 300 {
		fmt.Fprintf(&want, "line-%d\n", i)
	}
	if out != want.String() {
		t.Fatalf("consumed %d lines, want the 300 produced in order:\n%s", strings.Count(out, "\n"), out)
	}
}

// TestProduceDeliveryTimeout checks that a record that cannot be delivered fails produce
// with one line once --delivery-timeout has passed: a record the SDK sent and retried (the
// topic known from an earlier record), and a record whose topic lookup the SDK retried (the broker gone
// before the first record).
func TestProduceDeliveryTimeout(t *testing.T) {
	for _, warm := range []bool{true, false} {
		t.Run(fmt.Sprintf("warm=%v", warm), func(t *testing.T) { testProduceDeliveryTimeout(t, warm) })
	}
}

func testProduceDeliveryTimeout(t *testing.T, warm bool) {
	b := newBroker(t)
	ok(t, b.addr, "", "topic", "create", "gone", "-p", "1")

	cmd := exec.Command(runnel, "produce", "gone", "-v", "--delivery-timeout", "2s")
	cmd.Env = append(os.Environ(), "RUNNEL_BROKERS="+b.addr)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr syncBuffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = cmd.Process.Kill() }()
	lines := bufio.NewScanner(stdout)
	if warm {
		if _, err := io.WriteString(stdin, "delivered\n"); err != nil {
			t.Fatal(err)
		}
		if !lines.Scan() || lines.Text() != "gone partition 0: offset 0" {
			t.Fatalf("-v line %q; stderr %q", lines.Text(), stderr.String())
		}
	} else {
		time.Sleep(time.Second) // let it connect
	}
	b.stop()
	if _, err := io.WriteString(stdin, "lost\n"); err != nil {
		t.Fatal(err)
	}
	_ = stdin.Close()
	start := time.Now()
	done := make(chan error, 1)
	go func() {
		for lines.Scan() {
			t.Errorf("unexpected -v line %q", lines.Text())
		}
		done <- cmd.Wait()
	}()
	select {
	case err := <-done:
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() != 1 {
			t.Fatalf("produce: %v, want exit 1; stderr %q", err, stderr.String())
		}
	case <-time.After(20 * time.Second):
		t.Fatalf("produce did not give up; stderr %q", stderr.String())
	}
	if d := time.Since(start); d < time.Second || d > 10*time.Second {
		t.Fatalf("produce gave up after %s, want about the 2s delivery timeout", d)
	}
	msg := stderr.String()
	t.Logf("gave up after %s: %s", time.Since(start).Round(time.Millisecond), strings.TrimSpace(msg))
	if !strings.HasPrefix(msg, "runnel: ") || strings.Count(msg, "\n") != 1 || strings.Contains(msg[len("runnel: "):], "runnel: ") ||
		!strings.Contains(msg, "1 of ") || !strings.Contains(msg, "not acknowledged") || (warm && !strings.Contains(msg, "delivery timeout")) {
		t.Fatalf("stderr %q, want one line saying the record was not acknowledged", msg)
	}
}

// TestConsumeAcrossRestart checks that runnel consume keeps following a topic across a broker
// restart (the SDK consumer resubscribes), and that it commits what it printed.
func TestConsumeAcrossRestart(t *testing.T) {
	b := newBroker(t)
	ok(t, b.addr, "", "topic", "create", "tail", "-p", "1")
	ok(t, b.addr, "a\nb\n", "produce", "tail")

	cmd := exec.Command(runnel, "consume", "tail", "-g", "follower")
	cmd.Env = append(os.Environ(), "RUNNEL_BROKERS="+b.addr)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr syncBuffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = cmd.Process.Kill() }()
	lines := make(chan string, 10)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
	}()
	expect := func(want ...string) {
		t.Helper()
		for _, w := range want {
			select {
			case l := <-lines:
				if l != w {
					t.Fatalf("consumed %q, want %q; stderr %q", l, w, stderr.String())
				}
			case <-time.After(20 * time.Second):
				t.Fatalf("%q not consumed; stderr %q", w, stderr.String())
			}
		}
	}
	expect("a", "b")
	// The commit of what was printed follows the print: wait for it before the restart, or
	// the group resumes from before it (at least once: a and b again).
	deadline := time.Now().Add(10 * time.Second)
	for {
		g := decode[groupJSON](t, ok(t, b.addr, "", "group", "describe", "follower", "--format", "json"))
		if len(g.Partitions) == 1 && g.Partitions[0].Committed == 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("printed records not committed: %+v", g)
		}
		time.Sleep(50 * time.Millisecond)
	}
	b.stop()
	time.Sleep(300 * time.Millisecond)
	b.start()
	ok(t, b.addr, "c\nd\n", "produce", "tail")
	expect("c", "d")
	if err := cmd.Process.Signal(os.Interrupt); err != nil {
		t.Fatal(err)
	}
	for l := range lines { // read stdout to its end before Wait
		t.Errorf("unexpected line %q", l)
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("consume after SIGINT: %v; stderr %q", err, stderr.String())
	}
	g := decode[groupJSON](t, ok(t, b.addr, "", "group", "describe", "follower", "--format", "json"))
	if len(g.Partitions) != 1 || g.Partitions[0].Committed != 4 {
		t.Fatalf("group after restart: %+v", g)
	}
}
