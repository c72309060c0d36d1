package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/runnel-io/runnel/client"
	"github.com/runnel-io/runnel/commitlog"
	"github.com/runnel-io/runnel/internal/recordbatch"
	runnelv1 "github.com/runnel-io/runnel/proto/runnel/v1"
)

// clusterNode is one broker of a real-process cluster: its flags stay the same across
// restarts (data dir, ports, join list), as an operator's unit file would.
type clusterNode struct {
	id       int32
	dir      string
	addr     string // --addr (and the address clients dial)
	serfAddr string // --serf-addr
	join     []string
	args     []string // extra flags
	p        *proc
	exited   bool // p has exited and its error was collected
	starts   int
}

// freePort returns a loopback port free for TCP and UDP at the moment (Serf uses both).
func freePort(t testing.TB) string {
	t.Helper()
	for range 50 {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addr := ln.Addr().String()
		pc, err := net.ListenPacket("udp", addr)
		_ = ln.Close()
		if err != nil {
			continue
		}
		_ = pc.Close()
		return addr
	}
	t.Fatal("no free TCP+UDP port")
	return ""
}

// startNode runs runneld with the node's flags and waits for its "runneld started" line and
// /healthz. A restart on the same ports retries for a moment if a port is still held.
func startNode(t testing.TB, bin string, n *clusterNode) {
	t.Helper()
	args := []string{"--data-dir", n.dir, "--addr", n.addr, "--serf-addr", n.serfAddr,
		"--node-id", strconv.Itoa(int(n.id)), "--log-format", "json", "--log-level", "info"}
	if len(n.join) > 0 {
		args = append(args, "--join", strings.Join(n.join, ","))
	}
	args = append(args, n.args...)
	deadline := time.Now().Add(testTimeout)
	for {
		p, err := tryStart(bin, args)
		if err == nil {
			n.p, n.exited = p, false
			n.starts++
			break
		}
		if time.Now().After(deadline) || !strings.Contains(err.Error(), "address already in use") {
			t.Fatalf("broker %d: %v", n.id, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
	p := n.p
	t.Cleanup(func() {
		if p == n.p && !n.exited {
			_ = p.cmd.Process.Kill()
			<-p.done
			n.exited = true
		}
	})
	for {
		resp, err := http.Get("http://" + n.addr + "/healthz")
		if err == nil {
			_ = resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("broker %d: healthz never 200: %v\n%s", n.id, err, p.logs)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// tryStart starts the binary and waits for its "runneld started" line; an early exit is an
// error carrying the logs.
func tryStart(bin string, args []string) (*proc, error) {
	cmd := exec.Command(bin, args...)
	cmd.Env = os.Environ()
	stderr, err := cmd.StderrPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	p := &proc{cmd: cmd, logs: &syncBuffer{}, done: make(chan error, 1)}
	addrCh := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stderr)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
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
	select {
	case p.addr = <-addrCh:
		return p, nil
	case err := <-p.done:
		return nil, fmt.Errorf("runneld exited early: %v\n%s", err, p.logs)
	case <-time.After(testTimeout):
		_ = cmd.Process.Kill()
		<-p.done
		return nil, fmt.Errorf("runneld did not start\n%s", p.logs)
	}
}

// kill9 kills the node's process with SIGKILL and waits for it.
func kill9(t testing.TB, n *clusterNode) {
	t.Helper()
	if err := n.p.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = n.p.wait(t)
	n.exited = true
}

// stopNode stops the node with SIGTERM and expects a clean exit.
func stopNode(t testing.TB, n *clusterNode) {
	t.Helper()
	if err := n.p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	err := n.p.wait(t)
	n.exited = true
	if err != nil {
		t.Errorf("broker %d: exit after SIGTERM: %v\n%s", n.id, err, tail(n.p.logs.String(), 40))
	}
}

func tail(s string, lines int) string {
	l := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(l) > lines {
		l = l[len(l)-lines:]
	}
	return strings.Join(l, "\n")
}

// describe asks one broker (not following redirects) for a topic's partitions.
func describe(ctx context.Context, addr, topicName string) ([]*runnelv1.PartitionDescription, error) {
	c, err := dialQuiet(addr)
	if err != nil {
		return nil, err
	}
	defer c.conn.Close()
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	resp, err := c.admin.DescribeTopic(ctx, &runnelv1.DescribeTopicRequest{Name: topicName})
	if err != nil {
		return nil, err
	}
	return resp.GetPartitions(), nil
}

func dialQuiet(addr string) (clients, error) {
	conn, err := grpcDial(addr)
	if err != nil {
		return clients{}, err
	}
	return clients{conn, runnelv1.NewAdminServiceClient(conn), runnelv1.NewProduceServiceClient(conn), runnelv1.NewFetchServiceClient(conn)}, nil
}

// settled checks that every partition of the topic has a leader that every running broker
// names, that the leader counts all replicas in sync, and returns the leaders by partition.
func settled(ctx context.Context, nodes []*clusterNode, topicName string, parts int32) (map[int32]int32, error) {
	byID := map[int32]*clusterNode{}
	for _, n := range nodes {
		byID[n.id] = n
	}
	leaders := map[int32]int32{}
	for _, n := range nodes {
		if n.exited {
			continue
		}
		ps, err := describe(ctx, n.addr, topicName)
		if err != nil {
			return nil, fmt.Errorf("broker %d: %w", n.id, err)
		}
		if int32(len(ps)) != parts {
			return nil, fmt.Errorf("broker %d: %d partitions", n.id, len(ps))
		}
		for _, pd := range ps {
			l := pd.GetLeaderId()
			if l < 0 {
				return nil, fmt.Errorf("broker %d: partition %d has no leader", n.id, pd.GetPartition())
			}
			if prev, ok := leaders[pd.GetPartition()]; ok && prev != l {
				return nil, fmt.Errorf("partition %d: brokers disagree on the leader (%d, %d)", pd.GetPartition(), prev, l)
			}
			leaders[pd.GetPartition()] = l
			if l == n.id && len(pd.GetInSyncReplicas()) != len(pd.GetReplicas()) {
				return nil, fmt.Errorf("partition %d: leader %d has in-sync %v of %v", pd.GetPartition(), l, pd.GetInSyncReplicas(), pd.GetReplicas())
			}
		}
	}
	for p, l := range leaders {
		if ln := byID[l]; ln == nil || ln.exited {
			return nil, fmt.Errorf("partition %d: leader %d is not running", p, l)
		}
	}
	return leaders, nil
}

func waitSettled(t testing.TB, ctx context.Context, nodes []*clusterNode, topicName string, parts int32, d time.Duration) map[int32]int32 {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		leaders, err := settled(ctx, nodes, topicName, parts)
		if err == nil {
			return leaders
		}
		if time.Now().After(deadline) {
			t.Fatalf("cluster not settled within %v: %v", d, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestClusterKillRestartUnderLoad: three runneld processes form a cluster; a 3-partition RF=3
// topic takes a steady acks=all load from the SDK while each broker in turn is killed with
// SIGKILL and restarted (same data dir, flags and ports). Afterwards every acknowledged record
// is at its offset with its value, each partition is gap-free, and after a clean stop the
// three replicas' logs are identical batch for batch below the high watermark. The producer's
// failover time (kill to the first acknowledgement of a record produced after the kill to a
// partition the killed broker led) is logged.
func TestClusterKillRestartUnderLoad(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs three brokers")
	}
	bin := buildBinary(t)
	root := t.TempDir()
	const (
		topicName = "load"
		parts     = int32(3)
	)
	nodes := make([]*clusterNode, 3)
	for i := range nodes {
		nodes[i] = &clusterNode{
			id: int32(i + 1), dir: filepath.Join(root, fmt.Sprintf("broker-%d", i+1)),
			addr: freePort(t), serfAddr: freePort(t),
		}
		if i > 0 {
			nodes[i].join = []string{nodes[0].serfAddr}
		}
	}
	for _, n := range nodes {
		startNode(t, bin, n)
	}
	defer func() {
		if t.Failed() {
			for _, n := range nodes {
				t.Logf("broker %d logs (last lines):\n%s", n.id, tail(n.p.logs.String(), 60))
			}
		}
	}()

	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	seeds := []string{nodes[0].addr, nodes[1].addr, nodes[2].addr}
	cl, err := client.New(ctx, client.WithBrokers(seeds...), client.WithDeliveryTimeout(60*time.Second),
		client.WithRetryBackoff(50*time.Millisecond), client.WithLinger(2*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	// The cluster: three alive brokers.
	waitUntil(t, 30*time.Second, "three alive brokers", func() error {
		ci, err := cl.ClusterInfo(ctx)
		if err != nil {
			return err
		}
		alive := 0
		for _, b := range ci.Brokers {
			if b.State == "ALIVE" {
				alive++
			}
		}
		if alive != 3 {
			return fmt.Errorf("%d alive: %+v", alive, ci.Brokers)
		}
		return nil
	})
	if err := cl.CreateTopic(ctx, topicName, parts, 3, nil); err != nil {
		t.Fatal(err)
	}
	leaders := waitSettled(t, ctx, nodes, topicName, parts, 30*time.Second)
	t.Logf("leaders by partition: %v", leaders)

	// The load: one record every millisecond or so, round robin over the partitions.
	type at struct {
		part int32
		off  int64
	}
	type kill struct {
		broker int32
		at     time.Time
		led    []int32
		first  map[int32]time.Duration // partition -> kill to the first ack of a record produced after the kill
	}
	var (
		mu       sync.Mutex
		acked    = map[at]string{}
		failed   []string
		kills    []*kill
		produced int
	)
	stopLoad := make(chan struct{})
	loadDone := make(chan struct{})
	go func() {
		defer close(loadDone)
		for i := 0; ; i++ {
			select {
			case <-stopLoad:
				return
			default:
			}
			v := fmt.Sprintf("v%06d", i)
			p := int32(i) % parts
			sent := time.Now()
			cl.Produce(ctx, &client.Record{Topic: topicName, Partition: p, ManualPartition: true, Value: []byte(v)}, func(r *client.Record, err error) {
				now := time.Now()
				mu.Lock()
				defer mu.Unlock()
				if err != nil {
					failed = append(failed, fmt.Sprintf("%s (partition %d): %v", v, p, err))
					return
				}
				if prev, dup := acked[at{r.Partition, r.Offset}]; dup {
					failed = append(failed, fmt.Sprintf("offset %d/%d acknowledged for %s and %s", r.Partition, r.Offset, prev, v))
				}
				acked[at{r.Partition, r.Offset}] = v
				for _, k := range kills {
					if sent.After(k.at) && slices.Contains(k.led, r.Partition) {
						if _, ok := k.first[r.Partition]; !ok {
							k.first[r.Partition] = now.Sub(k.at)
						}
					}
				}
			})
			mu.Lock()
			produced++
			mu.Unlock()
			if i%3 == 2 {
				time.Sleep(time.Millisecond)
			}
		}
	}()
	stopped := false
	stop := func() {
		if !stopped {
			stopped = true
			close(stopLoad)
			<-loadDone
		}
	}
	defer stop()

	ackedCount := func() int {
		mu.Lock()
		defer mu.Unlock()
		return len(acked)
	}
	waitUntil(t, 20*time.Second, "first acknowledgements", func() error {
		if n := ackedCount(); n < 1000 {
			return fmt.Errorf("%d acknowledged", n)
		}
		return nil
	})

	// Kill each broker in turn, under load, and restart it.
	start := time.Now()
	for _, n := range nodes {
		// Leadership moves to each partition's preferred replica once it has caught up, so
		// the leaders of a moment ago may be stale: look again right before the kill, and give
		// the victim a few seconds to lead something (the failover time needs a leader killed).
		for deadline := time.Now().Add(10 * time.Second); ; {
			l, err := settled(ctx, nodes, topicName, parts)
			if err == nil {
				leaders = l
				if slices.Contains(slices.Collect(maps.Values(l)), n.id) {
					break
				}
			}
			if time.Now().After(deadline) {
				break
			}
			time.Sleep(100 * time.Millisecond)
		}
		var led []int32
		for p, l := range leaders {
			if l == n.id {
				led = append(led, p)
			}
		}
		slices.Sort(led)
		before := ackedCount()
		k := &kill{broker: n.id, led: led, first: map[int32]time.Duration{}}
		mu.Lock()
		k.at = time.Now()
		kills = append(kills, k)
		mu.Unlock()
		kill9(t, n)
		t.Logf("killed broker %d (leading partitions %v) after %d acknowledgements", n.id, led, before)
		// The others carry on: acknowledgements keep coming while it is down.
		waitUntil(t, 20*time.Second, "acknowledgements with a broker down", func() error {
			if got := ackedCount(); got < before+300 {
				return fmt.Errorf("%d acknowledged since the kill", got-before)
			}
			mu.Lock()
			defer mu.Unlock()
			if len(k.first) < len(led) {
				return fmt.Errorf("partitions recovered: %v of %v", k.first, led)
			}
			return nil
		})
		startNode(t, bin, n)
		restarted := time.Now()
		leaders = waitSettled(t, ctx, nodes, topicName, parts, 30*time.Second)
		t.Logf("broker %d back (settled %v after its restart), leaders %v", n.id, time.Since(restarted).Round(time.Millisecond), leaders)
	}
	t.Logf("three kill/restart rounds took %v", time.Since(start).Round(time.Millisecond))

	// A little more load on the settled cluster, then stop and flush.
	before := ackedCount()
	waitUntil(t, 20*time.Second, "acknowledgements after the restarts", func() error {
		if got := ackedCount(); got < before+300 {
			return fmt.Errorf("%d acknowledged", got-before)
		}
		return nil
	})
	stop()
	fctx, fcancel := context.WithTimeout(ctx, 90*time.Second)
	if err := cl.Flush(fctx); err != nil {
		t.Errorf("flush: %v", err)
	}
	fcancel()

	mu.Lock()
	for _, f := range failed {
		t.Errorf("delivery: %s", f)
	}
	t.Logf("%d records produced, %d acknowledged, %d failed", produced, len(acked), len(failed))
	for _, k := range kills {
		if len(k.led) == 0 {
			t.Logf("failover: broker %d led no partition when killed", k.broker)
			continue
		}
		var worst time.Duration
		var each []string
		for _, p := range k.led {
			d, ok := k.first[p]
			if !ok {
				t.Errorf("failover: partition %d of killed broker %d: no acknowledgement of a record produced after the kill", p, k.broker)
				continue
			}
			worst = max(worst, d)
			each = append(each, fmt.Sprintf("p%d %v", p, d.Round(time.Millisecond)))
		}
		t.Logf("failover: broker %d killed, leading %v: first ack after the kill: %s (worst %v)", k.broker, k.led, strings.Join(each, ", "), worst.Round(time.Millisecond))
	}
	ackedCopy := make(map[at]string, len(acked))
	for a, v := range acked {
		ackedCopy[a] = v
	}
	mu.Unlock()

	// Every acknowledged record is at its offset; every partition is gap-free.
	ends, err := cl.ListOffsets(ctx, topicName, client.Latest())
	if err != nil {
		t.Fatal(err)
	}
	for a := range ackedCopy {
		if a.off >= ends[a.part] {
			t.Errorf("acknowledged offset %d/%d at or past the high watermark %d", a.part, a.off, ends[a.part])
		}
	}
	k := cl.NewConsumer()
	defer k.Close()
	for p := range parts {
		if err := k.Assign(topicName, p, client.Earliest()); err != nil {
			t.Fatal(err)
		}
	}
	var want int64
	for _, e := range ends {
		want += e
	}
	got := map[at]string{}
	for int64(len(got)) < want {
		recs, err := k.Poll(ctx)
		if err != nil {
			t.Fatalf("poll after %d of %d records: %v", len(got), want, err)
		}
		for _, r := range recs {
			a := at{r.Partition, r.Offset}
			if r.Offset >= ends[r.Partition] {
				continue // a later record is fine; the load has stopped, though
			}
			if prev, ok := got[a]; ok && prev != string(r.Value) {
				t.Errorf("offset %d/%d read as %q and as %q", a.part, a.off, prev, r.Value)
			}
			got[a] = string(r.Value)
		}
	}
	for p := range parts {
		for off := int64(0); off < ends[p]; off++ {
			if _, ok := got[at{p, off}]; !ok {
				t.Errorf("partition %d: offset %d missing below the high watermark %d", p, off, ends[p])
			}
		}
	}
	lost := 0
	for a, v := range ackedCopy {
		if got[a] != v {
			if lost < 10 {
				t.Errorf("acknowledged %q at %d/%d, read %q", v, a.part, a.off, got[a])
			}
			lost++
		}
	}
	seen := map[string]int{}
	for _, v := range got {
		seen[v]++
	}
	dups := 0
	for _, c := range seen {
		dups += c - 1
	}
	t.Logf("high watermarks %v: %d records read, %d acknowledged ones wrong or missing, %d duplicates (at-least-once retries)", ends, len(got), lost, dups)

	// The replicas, byte for byte: stop all three cleanly once in sync, then read each log.
	waitSettled(t, ctx, nodes, topicName, parts, 30*time.Second)
	time.Sleep(time.Second) // followers learn the last commit index within the commit timeout
	_ = k.Close()
	_ = cl.Close()
	for _, n := range nodes {
		stopNode(t, n)
	}
	for p := range parts {
		compareReplicas(t, nodes, topicName, p, ends[p])
	}
}

// compareReplicas opens each broker's log of a partition (the brokers are stopped) and checks
// that the batches below hw are the same everywhere, byte for byte apart from the partition
// leader epoch.
func compareReplicas(t *testing.T, nodes []*clusterNode, topicName string, p int32, hw int64) {
	t.Helper()
	type replica struct {
		id      int32
		batches map[int64][]byte // by base offset
		end     int64
	}
	var reps []replica
	for _, n := range nodes {
		dir := filepath.Join(n.dir, "topics", topicName, strconv.Itoa(int(p)), "log")
		l, err := commitlog.Open(dir, commitlog.Options{})
		if err != nil {
			t.Errorf("broker %d partition %d: open %s: %v", n.id, p, dir, err)
			continue
		}
		r := replica{id: n.id, batches: map[int64][]byte{}, end: l.EndOffset()}
		for off := l.StartOffset(); off < min(hw, r.end); {
			res, err := l.Read(off, commitlog.ReadOptions{MaxBytes: 1 << 20, MaxOffset: hw})
			if err != nil {
				t.Errorf("broker %d partition %d: read at %d: %v", n.id, p, off, err)
				break
			}
			if res.NextOffset <= off {
				t.Errorf("broker %d partition %d: read at %d made no progress", n.id, p, off)
				break
			}
			for b := res.Batches; len(b) > 0; {
				one, rest, err := recordbatch.Next(b, len(b))
				if err != nil {
					t.Fatalf("broker %d partition %d: %v", n.id, p, err)
				}
				h, err := recordbatch.ParseHeader(one)
				if err != nil {
					t.Fatal(err)
				}
				c := bytes.Clone(one)
				recordbatch.SetPartitionLeaderEpoch(c, 0)
				r.batches[h.BaseOffset] = c
				b = rest
			}
			off = res.NextOffset
		}
		if err := l.Close(); err != nil {
			t.Errorf("broker %d partition %d: close: %v", n.id, p, err)
		}
		reps = append(reps, r)
	}
	if len(reps) != len(nodes) {
		return
	}
	limit := hw
	for _, r := range reps {
		if r.end < hw {
			t.Logf("partition %d: broker %d's log ends at %d, below the high watermark %d (a lagging follower at the stop)", p, r.id, r.end, hw)
		}
		limit = min(limit, r.end)
	}
	ref := reps[0]
	for _, r := range reps[1:] {
		for base, b := range ref.batches {
			if base >= limit {
				continue
			}
			o, ok := r.batches[base]
			if !ok {
				t.Errorf("partition %d: batch at %d on broker %d, not on broker %d", p, base, ref.id, r.id)
				continue
			}
			if !bytes.Equal(b, o) {
				t.Errorf("partition %d: batch at %d differs between brokers %d and %d", p, base, ref.id, r.id)
			}
		}
		for base := range r.batches {
			if _, ok := ref.batches[base]; !ok && base < limit {
				t.Errorf("partition %d: batch at %d on broker %d, not on broker %d", p, base, r.id, ref.id)
			}
		}
	}
	if limit < hw/2 {
		t.Errorf("partition %d: only offsets below %d of %d could be compared", p, limit, hw)
	}
	t.Logf("partition %d: %d batches below offset %d identical on brokers %d, %d and %d", p, len(ref.batches), limit, reps[0].id, reps[1].id, reps[2].id)
}

func waitUntil(t testing.TB, d time.Duration, what string, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %v: %v", what, d, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func grpcDial(addr string) (*grpc.ClientConn, error) {
	return grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
}
