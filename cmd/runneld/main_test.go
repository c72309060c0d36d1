package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/runnel-io/runnel/internal/recordbatch"
	runnelv1 "github.com/runnel-io/runnel/proto/runnel/v1"
)

const testTimeout = 30 * time.Second

// buildBinary builds runneld into a temporary directory once per test.
func buildBinary(t testing.TB) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "runneld")
	cmd := exec.Command("go", "build", "-o", bin, ".")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

// proc is a running runneld.
type proc struct {
	cmd  *exec.Cmd
	addr string
	logs *syncBuffer
	done chan error
}

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

// start runs the binary on a free port (--addr 127.0.0.1:0; the port is read from its
// "runneld started" log line) and waits for /healthz to answer 200.
func start(t *testing.T, bin, dataDir string) *proc {
	t.Helper()
	cmd := exec.Command(bin, "--data-dir", dataDir, "--addr", "127.0.0.1:0", "--log-format", "json", "--log-level", "debug")
	cmd.Env = append(os.Environ(), "RUNNEL_NODE_ID=3")
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &proc{cmd: cmd, logs: &syncBuffer{}, done: make(chan error, 1)}
	addrCh := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stderr)
		sent := false
		for sc.Scan() {
			line := sc.Bytes()
			_, _ = p.logs.Write(append(bytes.Clone(line), '\n'))
			var ev struct {
				Message string `json:"message"`
				Addr    string `json:"addr"`
			}
			if !sent && json.Unmarshal(line, &ev) == nil && ev.Message == "runneld started" {
				addrCh <- ev.Addr
				sent = true
			}
		}
		_, _ = io.Copy(p.logs, stderr)
		p.done <- cmd.Wait()
	}()
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			_ = cmd.Process.Kill()
			<-p.done
		}
	})
	select {
	case p.addr = <-addrCh:
	case err := <-p.done:
		t.Fatalf("runneld exited early: %v\n%s", err, p.logs)
	case <-time.After(testTimeout):
		t.Fatalf("runneld did not start\n%s", p.logs)
	}
	deadline := time.Now().Add(testTimeout)
	for {
		resp, err := http.Get("http://" + p.addr + "/healthz")
		if err == nil {
			_ = resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("healthz never 200: %v\n%s", err, p.logs)
		}
		time.Sleep(10 * time.Millisecond)
	}
	return p
}

func (p *proc) wait(t testing.TB) error {
	t.Helper()
	select {
	case err := <-p.done:
		return err
	case <-time.After(testTimeout):
		t.Fatalf("runneld did not exit\n%s", p.logs)
		return nil
	}
}

type clients struct {
	conn    *grpc.ClientConn
	admin   runnelv1.AdminServiceClient
	produce runnelv1.ProduceServiceClient
	fetch   runnelv1.FetchServiceClient
}

func dial(t *testing.T, addr string) clients {
	t.Helper()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return clients{conn, runnelv1.NewAdminServiceClient(conn), runnelv1.NewProduceServiceClient(conn), runnelv1.NewFetchServiceClient(conn)}
}

func mkBatch(t *testing.T, vals ...string) []byte {
	t.Helper()
	b := recordbatch.NewBuilder(recordbatch.BuilderOptions{})
	for _, v := range vals {
		b.Add(recordbatch.Record{Timestamp: time.Now().UnixMilli(), Value: []byte(v)})
	}
	out, err := b.Build()
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func produce(t *testing.T, c clients, topicName string, b []byte) int64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	resp, err := c.produce.Produce(ctx, &runnelv1.ProduceRequest{Acks: runnelv1.Acks_ACKS_ALL, Partitions: []*runnelv1.ProducePartition{{Topic: topicName, Batches: b}}})
	if err != nil {
		t.Fatal(err)
	}
	if e := resp.GetPartitions()[0].GetError(); e != nil {
		t.Fatalf("produce: %v", e)
	}
	return resp.GetPartitions()[0].GetBaseOffset()
}

// fetchValues reads the whole partition 0 and returns its values in order.
func fetchValues(t *testing.T, c clients, topicName string) []string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	var vals []string
	for off := int64(0); ; {
		f, err := c.fetch.Fetch(ctx, &runnelv1.FetchRequest{Topic: topicName, Offset: off, MaxWait: nil, MinBytes: 0})
		if err != nil {
			t.Fatal(err)
		}
		b := f.GetBatches()
		for len(b) > 0 {
			one, rest, err := recordbatch.Next(b, len(b))
			if err != nil {
				t.Fatal(err)
			}
			recs, err := recordbatch.Records(one)
			if err != nil {
				t.Fatal(err)
			}
			for _, r := range recs {
				if r.Offset >= off {
					vals = append(vals, string(r.Value))
				}
			}
			b = rest
		}
		off = f.GetNextOffset()
		if off >= f.GetHighWatermark() {
			return vals
		}
	}
}

func TestBinaryEndToEnd(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the binary")
	}
	bin := buildBinary(t)
	dataDir := filepath.Join(t.TempDir(), "data")

	// A clean run: create, produce, fetch, SIGTERM, exit 0.
	p := start(t, bin, dataDir)
	c := dial(t, p.addr)
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	if _, err := c.admin.CreateTopic(ctx, &runnelv1.CreateTopicRequest{Name: "e2e"}); err != nil {
		t.Fatal(err)
	}
	md, err := c.admin.DescribeCluster(ctx, &runnelv1.DescribeClusterRequest{})
	if err != nil || md.GetBrokers()[0].GetId() != 3 || md.GetBrokers()[0].GetAddress() != p.addr {
		t.Fatalf("cluster %v %v (want node id 3 from RUNNEL_NODE_ID)", md, err)
	}
	if off := produce(t, c, "e2e", mkBatch(t, "one", "two")); off != 0 {
		t.Fatalf("base offset %d", off)
	}
	if got := fetchValues(t, c, "e2e"); strings.Join(got, ",") != "one,two" {
		t.Fatalf("fetched %v", got)
	}
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := p.wait(t); err != nil {
		t.Fatalf("exit after SIGTERM: %v\n%s", err, p.logs)
	}
	if !strings.Contains(p.logs.String(), "runneld stopped") {
		t.Errorf("logs lack the expected lines:\n%s", p.logs)
	}

	// kill -9 after acknowledged produces: all of them are there after a restart.
	p = start(t, bin, dataDir)
	c = dial(t, p.addr)
	want := []string{"one", "two"}
	for i := range 50 {
		v := fmt.Sprintf("acked-%d", i)
		produce(t, c, "e2e", mkBatch(t, v))
		want = append(want, v)
	}
	if err := p.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	_ = p.wait(t)
	p = start(t, bin, dataDir)
	c = dial(t, p.addr)
	if got := fetchValues(t, c, "e2e"); strings.Join(got, ",") != strings.Join(want, ",") {
		t.Fatalf("after kill -9: got %d values %v, want %d", len(got), got, len(want))
	}
	if err := p.cmd.Process.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	if err := p.wait(t); err != nil {
		t.Fatalf("exit after SIGINT: %v\n%s", err, p.logs)
	}
}

func TestBadFlags(t *testing.T) {
	var out bytes.Buffer
	if code := run([]string{"--log-format", "xml", "--data-dir", t.TempDir()}, &out); code != 2 {
		t.Fatalf("bad log format: exit %d", code)
	}
	if code := run([]string{"--nope"}, &out); code != 2 {
		t.Fatalf("unknown flag: exit %d", code)
	}
	if code := run([]string{"--addr", "nonsense", "--data-dir", t.TempDir(), "--log-format", "json"}, &out); code != 1 {
		t.Fatalf("bad addr: exit %d\n%s", code, out.String())
	}
}
