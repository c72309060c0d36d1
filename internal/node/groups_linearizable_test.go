package node

import (
	"context"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/anishathalye/porcupine"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/runnel-io/runnel/client"
	runnelv1 "github.com/runnel-io/runnel/proto/runnel/v1"
)

// linKey is a register of the linearizability test: a group's committed offset of one
// partition.
type linKey struct {
	group     string
	partition int32
}

// linInput is an operation on a register: a commit of value, or a fetch.
type linInput struct {
	commit bool
	value  int64
}

// linOutput is an operation's result: the offset a fetch read (-1: none); unknown for a
// commit that failed (it may or may not have been applied).
type linOutput struct {
	value   int64
	unknown bool
}

// offsetRegister is the sequential specification of one committed offset: a commit writes
// its value, a fetch returns the last value written (-1 before any).
var offsetRegister = porcupine.Model{
	Init: func() interface{} { return int64(-1) },
	Step: func(state, input, output interface{}) (bool, interface{}) {
		in, out := input.(linInput), output.(linOutput)
		if in.commit {
			return true, in.value
		}
		return out.value == state.(int64), state
	},
	DescribeOperation: func(input, output interface{}) string {
		in, out := input.(linInput), output.(linOutput)
		switch {
		case in.commit && out.unknown:
			return fmt.Sprintf("commit(%d) -> ?", in.value)
		case in.commit:
			return fmt.Sprintf("commit(%d)", in.value)
		}
		return fmt.Sprintf("fetch() -> %d", out.value)
	},
	DescribeState: func(state interface{}) string { return fmt.Sprint(state.(int64)) },
}

// linHistory records the operations of every client, by register.
type linHistory struct {
	start time.Time
	mu    sync.Mutex
	ops   map[linKey][]porcupine.Operation
	last  map[string]int64 // client -> call time of its last successful operation
}

func (h *linHistory) now() int64 { return int64(time.Since(h.start)) }

// progress records a client's successful operation called at call.
func (h *linHistory) progress(who string, call int64) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.last[who] = call
}

func (h *linHistory) add(k linKey, op porcupine.Operation) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.ops[k] = append(h.ops[k], op)
}

// linClient makes offset calls at the metadata leader as it knows it: a NOT_METADATA_LEADER
// naming the leader moves it there and the call is made again there (the same commit twice
// is the same write), as it is after a failure to dial a broker (nothing sent); any other
// failure moves it to the next broker and ends the call unless retryAll (the caller records
// a commit that failed as of unknown outcome). A call ends at its context's deadline.
type linClient struct {
	conns    func(addr string) runnelv1.OffsetServiceClient
	addrs    []string
	addr     string
	next     int
	retryAll bool
}

func (l *linClient) call(ctx context.Context, f func(context.Context, runnelv1.OffsetServiceClient) error) error {
	for {
		actx, cancel := context.WithTimeout(ctx, 2*time.Second)
		err := f(actx, l.conns(l.addr))
		cancel()
		if err == nil || ctx.Err() != nil {
			return err
		}
		// Made again: a redirect (the same commit twice is the same write), and a broker that
		// could not be dialed (nothing was sent).
		again := unsent(err)
		if info := errorInfo(err); info.GetReason() == runnelv1.ErrorReason_ERROR_REASON_NOT_METADATA_LEADER && info.GetLeaderAddress() != "" {
			l.addr, again = info.GetLeaderAddress(), true
		} else {
			l.next++
			l.addr = l.addrs[l.next%len(l.addrs)]
		}
		select {
		case <-ctx.Done():
			return err
		case <-time.After(20 * time.Millisecond):
		}
		if !again && !l.retryAll {
			return err
		}
	}
}

// unsent reports whether a call failed before its request left: the broker could not be
// dialed.
func unsent(err error) bool {
	st, ok := status.FromError(err)
	return ok && st.Code() == codes.Unavailable && errorInfo(err) == nil &&
		(strings.Contains(st.Message(), "Error while dialing") || strings.Contains(st.Message(), "connection refused"))
}

// TestClusterGroupOffsetsLinearizable: on three brokers, clients commit increasing offsets
// (one writer per group and partition) and fetch them (three readers) while the metadata
// leader, the groups' coordinator, is stopped, brought back, and the next leader stopped.
// Every operation's invocation and response times and result are recorded; a commit that
// failed may or may not have been applied, at any time up to the writer's next acknowledged
// commit (the writer's next commit is made again until acknowledged, so that unknown
// outcomes do not pile up). Each register's history must be linearizable (porcupine), and no
// reader may see a committed offset go back. About 12 s under -race; run it with
//
//	go test -race -count=5 -run 'TestClusterGroupOffsetsLinearizable' -v ./internal/node/
func TestClusterGroupOffsetsLinearizable(t *testing.T) {
	if testing.Short() {
		t.Skip("a failover test")
	}
	testOffsetsLinearizable(t, false)
}

// TestClusterGroupOffsetsLinearizableIsolated is TestClusterGroupOffsetsLinearizable with
// the metadata leader cut off from the other brokers' Raft links (netsplit) instead of
// stopped, clients still reaching it, and the network healed after each cut.
func TestClusterGroupOffsetsLinearizableIsolated(t *testing.T) {
	if testing.Short() {
		t.Skip("a failover test")
	}
	testOffsetsLinearizable(t, true)
}

func testOffsetsLinearizable(t *testing.T, isolate bool) {
	c := newTestCluster(t)
	if isolate {
		c.split = newNetsplit()
	}
	c.startThree()
	const (
		topic  = "lin"
		parts  = 3
		logEnd = 5000 // records per partition: the commits stay within the log
	)
	groups := []string{"lin-a", "lin-b"}
	c.createTopic(topic, parts, 3)
	var addrs []string
	for id := int32(1); id <= 3; id++ {
		addrs = append(addrs, c.addrs[id])
	}
	{
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		cl, err := client.New(ctx, client.WithBrokers(addrs...), client.WithRetryBackoff(50*time.Millisecond))
		if err != nil {
			t.Fatal(err)
		}
		var recs []*client.Record
		for p := range int32(parts) {
			for range logEnd {
				recs = append(recs, &client.Record{Topic: topic, Partition: p, ManualPartition: true, Value: []byte("x")})
			}
		}
		if err := cl.ProduceSync(ctx, recs...); err != nil {
			t.Fatal(err)
		}
		// A follower learns that entries committed from the leader's next append (on an idle
		// partition up to the commit timeout later, 5-10 s, its high watermark staying behind
		// meanwhile): one more record each, so that every replica's high watermark covers the
		// commits at once and the coordinator checks them without asking a partition leader
		// (a partition without a leader, its broker stopped or cut off, would stall the
		// commits of that partition until it elects one; that is the log-end check's
		// business, not this test's).
		recs = recs[:0]
		for p := range int32(parts) {
			recs = append(recs, &client.Record{Topic: topic, Partition: p, ManualPartition: true, Value: []byte("y")})
		}
		if err := cl.ProduceSync(ctx, recs...); err != nil {
			t.Fatal(err)
		}
		_ = cl.Close()
		cancel()
		waitFor(t, 30*time.Second, "every replica's high watermark at the log end", func() error {
			for id, n := range c.nodes {
				for p := range int32(parts) {
					pt, err := n.Registry().Partition(topic, p)
					if err != nil {
						return fmt.Errorf("broker %d: %w", id, err)
					}
					if hw := pt.HighWatermark(); hw < logEnd {
						return fmt.Errorf("broker %d partition %d: high watermark %d", id, p, hw)
					}
				}
			}
			return nil
		})
	}

	var connMu sync.Mutex
	conns := map[string]*grpc.ClientConn{}
	defer func() {
		for _, cc := range conns {
			_ = cc.Close()
		}
	}()
	offsetClient := func(addr string) runnelv1.OffsetServiceClient {
		connMu.Lock()
		defer connMu.Unlock()
		cc := conns[addr]
		if cc == nil {
			var err error
			if cc, err = grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials())); err != nil {
				panic(err)
			}
			conns[addr] = cc
		}
		return runnelv1.NewOffsetServiceClient(cc)
	}

	h := &linHistory{start: time.Now(), ops: map[linKey][]porcupine.Operation{}, last: map[string]int64{}}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var errMu sync.Mutex
	var regressions []string
	clientID := 0
	opTimeout := 10 * time.Second

	// Writers: one per register, committing 1, 2, 3, ...
	for _, g := range groups {
		for p := range int32(parts) {
			k, id := linKey{g, p}, clientID
			clientID++
			wg.Add(1)
			go func() {
				defer wg.Done()
				lc := &linClient{conns: offsetClient, addrs: addrs, addr: addrs[id%len(addrs)], next: id}
				var ops []porcupine.Operation
				defer func() {
					// A commit of unknown outcome may take effect at any time after its call,
					// up to the next commit of this writer that was acknowledged: Raft
					// applies a log in order, so an entry proposed earlier and not lost is
					// applied before a later one; effect after it would make the offset go
					// back, which is what the test looks for. (Placed just before the next
					// write, it is a commit that had no effect.) The last ones are open-ended.
					next := int64(math.MaxInt64)
					for i := len(ops) - 1; i >= 0; i-- {
						if ops[i].Output.(linOutput).unknown {
							ops[i].Return = next
						} else {
							next = ops[i].Return
						}
					}
					for _, op := range ops {
						h.add(k, op)
					}
				}()
				for v := int64(1); v <= logEnd; v++ {
					select {
					case <-stop:
						return
					default:
					}
					// After a commit of unknown outcome the next one is made again until
					// acknowledged (or out of time): one unknown at a time per writer keeps
					// the check linear (overlapping unknowns make it exponential).
					lc.retryAll = len(ops) > 0 && ops[len(ops)-1].Output.(linOutput).unknown
					ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
					call := h.now()
					err := lc.call(ctx, func(ctx context.Context, oc runnelv1.OffsetServiceClient) error {
						_, err := oc.CommitOffsets(ctx, &runnelv1.CommitOffsetsRequest{Group: k.group,
							Offsets: []*runnelv1.OffsetCommit{{Topic: topic, Partition: k.partition, Offset: v}}})
						return err
					})
					ret := h.now()
					cancel()
					op := porcupine.Operation{ClientId: id, Input: linInput{commit: true, value: v}, Call: call, Output: linOutput{}, Return: ret}
					if err != nil {
						op.Output = linOutput{unknown: true}
						t.Logf("commit %s/%d=%d: %v (outcome unknown)", k.group, k.partition, v, err)
					}
					ops = append(ops, op)
					if err == nil {
						h.progress(fmt.Sprintf("writer %s/%d", k.group, k.partition), call)
					}
					time.Sleep(3 * time.Millisecond)
				}
			}()
		}
	}
	// Readers: each fetches one group's partitions in turn.
	for r := range 3 {
		id := clientID
		clientID++
		wg.Add(1)
		go func() {
			defer wg.Done()
			lc := &linClient{conns: offsetClient, addrs: addrs, addr: addrs[r%len(addrs)], next: r, retryAll: true}
			last := map[linKey]int64{}
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				g := groups[(i+r)%len(groups)]
				ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
				call := h.now()
				var resp *runnelv1.FetchOffsetsResponse
				err := lc.call(ctx, func(ctx context.Context, oc runnelv1.OffsetServiceClient) error {
					var err error
					resp, err = oc.FetchOffsets(ctx, &runnelv1.FetchOffsetsRequest{Group: g,
						Topics: []*runnelv1.TopicPartitions{{Topic: topic, Partitions: []int32{0, 1, 2}}}})
					return err
				})
				ret := h.now()
				cancel()
				if err != nil {
					t.Logf("fetch %s: %v (a failed read changes nothing)", g, err)
					continue
				}
				for _, o := range resp.GetOffsets() {
					k := linKey{g, o.GetPartition()}
					h.add(k, porcupine.Operation{ClientId: id, Input: linInput{}, Call: call, Output: linOutput{value: o.GetOffset()}, Return: ret})
					h.progress(fmt.Sprintf("reader %d", r), call)
					if prev, ok := last[k]; ok && o.GetOffset() < prev {
						errMu.Lock()
						regressions = append(regressions, fmt.Sprintf("reader %d: %s/%d read %d after %d", r, k.group, k.partition, o.GetOffset(), prev))
						errMu.Unlock()
					}
					if prev, ok := last[k]; !ok || o.GetOffset() > prev {
						last[k] = o.GetOffset()
					}
				}
				time.Sleep(3 * time.Millisecond)
			}
		}()
	}

	// The failures: stop the metadata leader, bring it back, stop the next one.
	leaderID := func() int32 {
		var id int32 = -1
		waitFor(t, 20*time.Second, "a metadata leader", func() error {
			for nid, n := range c.nodes {
				if n != nil && n.Cluster().IsLeader() {
					id = nid
					return nil
				}
			}
			return fmt.Errorf("none")
		})
		return id
	}
	fail := func(id int32) {
		if isolate {
			var others []int32
			for o := int32(1); o <= 3; o++ {
				if o != id {
					others = append(others, o)
				}
			}
			t.Logf("cutting the metadata leader, broker %d, off the others", id)
			c.split.isolate(id, others...)
			return
		}
		t.Logf("stopping the metadata leader, broker %d", id)
		c.stop(id)
	}
	back := func(id int32) {
		if isolate {
			t.Logf("healing the network")
			c.split.heal()
		} else {
			t.Logf("restarting broker %d", id)
			c.start(id)
		}
		c.waitBrokers(3)
		waitFor(t, 20*time.Second, "the broker follows a leader", func() error {
			if lid, _, ok := c.nodes[id].Cluster().Leader(); !ok || lid == id {
				return fmt.Errorf("no other leader known")
			}
			return nil
		})
	}
	time.Sleep(2 * time.Second)
	first := leaderID()
	kill1 := h.now()
	fail(first)
	time.Sleep(3 * time.Second)
	back(first)
	time.Sleep(2 * time.Second)
	second := leaderID()
	kill2 := h.now()
	fail(second)
	time.Sleep(3 * time.Second)
	if isolate {
		back(second)
		time.Sleep(time.Second)
	}
	// Every client gets an operation through after the last failure before the end (a wait,
	// not a fixed time: a loaded machine may be slow to elect).
	waitFor(t, 30*time.Second, "every client served after the last failure", func() error {
		h.mu.Lock()
		defer h.mu.Unlock()
		if len(h.last) < len(groups)*parts+3 {
			return fmt.Errorf("%d clients served", len(h.last))
		}
		for who, at := range h.last {
			if at <= kill2 {
				return fmt.Errorf("%s not served since", who)
			}
		}
		return nil
	})
	close(stop)
	wg.Wait()

	// Check each register's history.
	if len(regressions) > 0 {
		t.Errorf("committed offsets went back: %v", regressions)
	}
	for _, g := range groups {
		for p := range int32(parts) {
			k := linKey{g, p}
			ops := h.ops[k]
			var okCommits, unknown, fetches, afterKill1, afterKill2 int
			for _, op := range ops {
				in, out := op.Input.(linInput), op.Output.(linOutput)
				switch {
				case in.commit && out.unknown:
					unknown++
				case in.commit:
					okCommits++
				default:
					fetches++
				}
				if !out.unknown && op.Call > kill1 {
					afterKill1++
				}
				if !out.unknown && op.Call > kill2 {
					afterKill2++
				}
			}
			t.Logf("%s/%d: %d commits acknowledged, %d of unknown outcome, %d fetches; %d and %d completed after the first and second failure",
				k.group, k.partition, okCommits, unknown, fetches, afterKill1, afterKill2)
			if okCommits < 5 || fetches < 5 || afterKill1 == 0 || afterKill2 == 0 {
				t.Errorf("%s/%d: too little progress", k.group, k.partition)
			}
			res, info := porcupine.CheckOperationsVerbose(offsetRegister, ops, 20*time.Second)
			switch res {
			case porcupine.Ok:
			case porcupine.Illegal:
				path := filepath.Join(os.TempDir(), fmt.Sprintf("runnel-lin-%s-%d-%d.html", k.group, k.partition, time.Now().UnixNano()))
				if err := porcupine.VisualizePath(offsetRegister, info, path); err != nil {
					t.Logf("visualization: %v", err)
				}
				t.Errorf("%s/%d: history not linearizable (visualization: %s)", k.group, k.partition, path)
			default:
				t.Errorf("%s/%d: linearizability check timed out (%d operations)", k.group, k.partition, len(ops))
			}
		}
	}
}
