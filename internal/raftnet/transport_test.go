package raftnet

import (
	"bytes"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/raft"
	"github.com/soheilhy/cmux"
)

// serve answers a transport's RPCs like a follower would, recording snapshot data.
func serve(t *testing.T, tr raft.Transport, snapshots chan<- []byte) {
	serveCounting(t, tr, snapshots, nil)
}

// serveCounting is serve that also counts the AppendEntries it answers (if appends is not nil).
func serveCounting(t *testing.T, tr raft.Transport, snapshots chan<- []byte, appends *atomic.Int64) {
	done := t.Context().Done()
	go func() {
		for {
			var rpc raft.RPC
			select {
			case rpc = <-tr.Consumer():
			case <-done:
				return
			}
			switch req := rpc.Command.(type) {
			case *raft.AppendEntriesRequest:
				if appends != nil {
					appends.Add(1)
				}
				rpc.Respond(&raft.AppendEntriesResponse{Term: req.Term, LastLog: req.PrevLogEntry + uint64(len(req.Entries)), Success: true}, nil)
			case *raft.RequestVoteRequest:
				rpc.Respond(&raft.RequestVoteResponse{Term: req.Term, Granted: true}, nil)
			case *raft.RequestPreVoteRequest:
				rpc.Respond(&raft.RequestPreVoteResponse{Term: req.Term, Granted: true}, nil)
			case *raft.TimeoutNowRequest:
				rpc.Respond(nil, errors.New("not now"))
			case *raft.InstallSnapshotRequest:
				b, err := io.ReadAll(rpc.Reader)
				if err == nil && int64(len(b)) != req.Size {
					err = errors.New("short snapshot")
				}
				snapshots <- b
				rpc.Respond(&raft.InstallSnapshotResponse{Term: req.Term, Success: err == nil}, err)
			}
		}
	}()
}

func closeT(t *testing.T, tr raft.Transport) {
	t.Cleanup(func() { _ = tr.(raft.WithClose).Close() })
}

func TestRPCs(t *testing.T) {
	a, b := newNet(t, 2*time.Second), newNet(t, 2*time.Second)
	ta, err := a.Transport("g1")
	if err != nil {
		t.Fatal(err)
	}
	closeT(t, ta)
	tb, err := b.Transport("g1")
	if err != nil {
		t.Fatal(err)
	}
	closeT(t, tb)
	if _, err := b.Transport("g1"); err == nil {
		t.Fatal("second transport for a group")
	}
	snaps := make(chan []byte, 1)
	serve(t, tb, snaps)
	heartbeats := make(chan struct{}, 1)
	tb.SetHeartbeatHandler(func(rpc raft.RPC) {
		heartbeats <- struct{}{}
		rpc.Respond(&raft.AppendEntriesResponse{Term: 99, Success: true}, nil)
	})

	if ta.LocalAddr() != a.Addr() || ta.DecodePeer(ta.EncodePeer("b", b.Addr())) != b.Addr() {
		t.Fatal("addresses")
	}
	var aeResp raft.AppendEntriesResponse
	err = ta.AppendEntries("b", b.Addr(), &raft.AppendEntriesRequest{Term: 3, PrevLogEntry: 5, Entries: []*raft.Log{{Index: 6}, {Index: 7}}}, &aeResp)
	if err != nil || !aeResp.Success || aeResp.LastLog != 7 || aeResp.Term != 3 {
		t.Fatalf("AppendEntries: %v %+v", err, aeResp)
	}
	// Heartbeat: the fast path, not the consumer.
	err = ta.AppendEntries("b", b.Addr(), &raft.AppendEntriesRequest{Term: 4, RPCHeader: raft.RPCHeader{Addr: []byte(a.Addr())}}, &aeResp)
	if err != nil || aeResp.Term != 99 {
		t.Fatalf("heartbeat: %v %+v", err, aeResp)
	}
	<-heartbeats
	var rv raft.RequestVoteResponse
	if err := ta.RequestVote("b", b.Addr(), &raft.RequestVoteRequest{Term: 5}, &rv); err != nil || !rv.Granted || rv.Term != 5 {
		t.Fatalf("RequestVote: %v %+v", err, rv)
	}
	var pv raft.RequestPreVoteResponse
	if err := ta.(raft.WithPreVote).RequestPreVote("b", b.Addr(), &raft.RequestPreVoteRequest{Term: 6}, &pv); err != nil || !pv.Granted || pv.Term != 6 {
		t.Fatalf("RequestPreVote: %v %+v", err, pv)
	}
	var tn raft.TimeoutNowResponse
	var remote *RemoteError
	if err := ta.TimeoutNow("b", b.Addr(), &raft.TimeoutNowRequest{}, &tn); !errors.As(err, &remote) || remote.Msg != "not now" {
		t.Fatalf("TimeoutNow: raft's error should come back, got %v", err)
	}

	// A group the peer does not have: an error at once.
	tx, err := a.Transport("nope")
	if err != nil {
		t.Fatal(err)
	}
	closeT(t, tx)
	if err := tx.RequestVote("b", b.Addr(), &raft.RequestVoteRequest{Term: 1}, &rv); !errors.As(err, &remote) || !strings.Contains(remote.Msg, "no raft group") {
		t.Fatalf("unknown group: %v", err)
	}

	// InstallSnapshot: several chunks, read by the receiver as a stream.
	data := make([]byte, 3*snapshotChunk+123)
	for i := range data {
		data[i] = byte(i * 7)
	}
	var is raft.InstallSnapshotResponse
	if err := ta.InstallSnapshot("b", b.Addr(), &raft.InstallSnapshotRequest{Term: 8, Size: int64(len(data))}, &is, bytes.NewReader(data)); err != nil || !is.Success {
		t.Fatalf("InstallSnapshot: %v %+v", err, is)
	}
	if got := <-snaps; !bytes.Equal(got, data) {
		t.Fatalf("snapshot data differs: %d bytes vs %d", len(got), len(data))
	}
	if err := tx.InstallSnapshot("b", b.Addr(), &raft.InstallSnapshotRequest{Term: 8, Size: 3}, &is, strings.NewReader("abc")); !errors.As(err, &remote) {
		t.Fatalf("snapshot for an unknown group: %v", err)
	}

	// Pipeline: several in flight, completed in order.
	p, err := ta.AppendEntriesPipeline("b", b.Addr())
	if err != nil {
		t.Fatal(err)
	}
	const n = 20
	go func() {
		for i := range n {
			req := &raft.AppendEntriesRequest{Term: 9, PrevLogEntry: uint64(i), Entries: []*raft.Log{{Index: uint64(i + 1)}}}
			if _, err := p.AppendEntries(req, new(raft.AppendEntriesResponse)); err != nil {
				t.Error(err)
				return
			}
		}
	}()
	for i := range n {
		f := <-p.Consumer()
		if err := f.Error(); err != nil {
			t.Fatal(err)
		}
		if f.Request().PrevLogEntry != uint64(i) || f.Response().LastLog != uint64(i+1) || f.Start().IsZero() {
			t.Fatalf("future %d: req %+v resp %+v", i, f.Request(), f.Response())
		}
	}
	_ = p.Close()
	if _, err := p.AppendEntries(&raft.AppendEntriesRequest{}, new(raft.AppendEntriesResponse)); !errors.Is(err, raft.ErrPipelineShutdown) {
		t.Fatalf("after Close: %v", err)
	}
}

// TestConnectionLoss: requests outstanding when the peer goes away fail at once, later ones fail
// fast (backoff), and the connection is redialled once the peer is back.
func TestConnectionLoss(t *testing.T) {
	a := newNet(t, 5*time.Second)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	b := newNetOn(t, ln, 5*time.Second)
	ta, _ := a.Transport("g")
	closeT(t, ta)
	tb, _ := b.Transport("g")
	// b's raft never answers: the request is outstanding when b goes away.
	errc := make(chan error, 1)
	go func() {
		errc <- ta.RequestVote("b", b.Addr(), &raft.RequestVoteRequest{Term: 1}, new(raft.RequestVoteResponse))
	}()
	<-tb.Consumer() // the request has arrived
	start := time.Now()
	_ = b.Close()
	_ = ln.Close()
	if err := <-errc; err == nil {
		t.Fatal("outstanding request succeeded")
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("outstanding request failed after %v, not at connection loss", d)
	}
	// Nobody listens now: a dial error, then fast failures during the backoff.
	for range 3 {
		if err := ta.RequestVote("b", b.Addr(), &raft.RequestVoteRequest{Term: 1}, new(raft.RequestVoteResponse)); err == nil {
			t.Fatal("request to a closed peer succeeded")
		}
	}
	// The peer comes back on the same address.
	ln2, err := net.Listen("tcp", addr)
	if err != nil {
		t.Skipf("cannot listen again on %s: %v", addr, err)
	}
	b2 := newNetOn(t, ln2, 5*time.Second)
	tb2, _ := b2.Transport("g")
	closeT(t, tb2)
	serve(t, tb2, nil)
	waitFor(t, 5*time.Second, "redial", func() bool {
		var resp raft.RequestVoteResponse
		return ta.RequestVote("b", b2.Addr(), &raft.RequestVoteRequest{Term: 2}, &resp) == nil && resp.Granted
	})
}

// TestTransportClose: closing a group's transport fails its outstanding RPCs at once and leaves
// the other groups working.
func TestTransportClose(t *testing.T) {
	a, b := newNet(t, 10*time.Second), newNet(t, 10*time.Second)
	ta1, _ := a.Transport("g1")
	ta2, _ := a.Transport("g2")
	closeT(t, ta2)
	tb1, _ := b.Transport("g1")
	closeT(t, tb1)
	tb2, _ := b.Transport("g2")
	closeT(t, tb2)
	serve(t, tb2, nil)
	errc := make(chan error, 1)
	go func() {
		errc <- ta1.RequestVote("b", b.Addr(), &raft.RequestVoteRequest{Term: 1}, new(raft.RequestVoteResponse))
	}()
	<-tb1.Consumer()
	_ = ta1.(raft.WithClose).Close()
	if err := <-errc; !errors.Is(err, raft.ErrTransportShutdown) {
		t.Fatalf("outstanding RPC of a closed transport: %v", err)
	}
	var resp raft.RequestVoteResponse
	if err := ta2.RequestVote("b", b.Addr(), &raft.RequestVoteRequest{Term: 1}, &resp); err != nil || !resp.Granted {
		t.Fatalf("other group: %v", err)
	}
	// The group can be created again once closed.
	again, err := a.Transport("g1")
	if err != nil {
		t.Fatal(err)
	}
	closeT(t, again)
}

// TestThroughCmux: Raft connections share a port with HTTP through cmux, routed by Marker.
func TestThroughCmux(t *testing.T) {
	root, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	m := cmux.New(root)
	raftLn := m.Match(cmux.PrefixMatcher(string([]byte{Marker})))
	httpLn := m.Match(cmux.Any())
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, "ok") })}
	go func() { _ = srv.Serve(httpLn) }()
	served := make(chan error, 1)
	go func() { served <- m.Serve() }()
	b := newNetOn(t, raftLn, 2*time.Second)
	t.Cleanup(func() {
		_ = srv.Close()
		m.Close()
		<-served
	})
	a := newNet(t, 2*time.Second)
	ta, _ := a.Transport("g")
	closeT(t, ta)
	tb, _ := b.Transport("g")
	closeT(t, tb)
	serve(t, tb, nil)
	var resp raft.RequestVoteResponse
	if err := ta.RequestVote("b", b.Addr(), &raft.RequestVoteRequest{Term: 4}, &resp); err != nil || !resp.Granted {
		t.Fatalf("RequestVote through cmux: %v %+v", err, resp)
	}
	res, err := http.Get("http://" + root.Addr().String() + "/")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(res.Body)
	_ = res.Body.Close()
	if string(body) != "ok" {
		t.Fatalf("http on the shared port: %q", body)
	}
	// The Match helper matches the same connections.
	if !Match(bytes.NewReader([]byte{Marker, 1})) || Match(bytes.NewReader([]byte("GET /"))) || Match(bytes.NewReader(nil)) {
		t.Fatal("Match")
	}
}

// TestStuckGroup: a group whose raft does not take requests (a slow disk) makes its own RPCs
// time out, but never delays another group on the same connection, and the connection stays.
func TestStuckGroup(t *testing.T) {
	const timeout = 300 * time.Millisecond
	a, b := newNet(t, timeout), newNet(t, timeout)
	stuckA, _ := a.Transport("stuck")
	closeT(t, stuckA)
	okA, _ := a.Transport("ok")
	closeT(t, okA)
	stuckB, err := b.transport("stuck") // nobody consumes
	if err != nil {
		t.Fatal(err)
	}
	closeT(t, stuckB)
	okB, _ := b.Transport("ok")
	closeT(t, okB)
	serve(t, okB, nil)

	const n = 10
	errs := make(chan error, n)
	for range n {
		go func() {
			errs <- stuckA.RequestVote("b", b.Addr(), &raft.RequestVoteRequest{Term: 1}, new(raft.RequestVoteResponse))
		}()
	}
	// All have arrived: one held by the group's dispatcher, the rest queued.
	waitFor(t, 5*time.Second, "the stuck group's requests to arrive", func() bool { return len(stuckB.inbox) == n-1 })
	c, err := a.getConn(b.Addr(), laneCtrl, nil)
	if err != nil {
		t.Fatal(err)
	}
	var resp raft.RequestVoteResponse
	if err := okA.RequestVote("b", b.Addr(), &raft.RequestVoteRequest{Term: 2}, &resp); err != nil || !resp.Granted {
		t.Fatalf("other group behind a stuck one: %v", err)
	}
	for range n {
		if err := <-errs; !errors.Is(err, ErrTimeout) {
			t.Fatalf("stuck group's RPC: %v, want ErrTimeout", err)
		}
	}
	if c2, err := a.getConn(b.Addr(), laneCtrl, nil); err != nil || c2 != c {
		t.Fatalf("connection replaced after timeouts of one group (err %v)", err)
	}
}

// TestFrameTooLargeToSend: a request above MaxFrame fails locally; the connection (shared with
// other groups) stays.
func TestFrameTooLargeToSend(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	a := newNet(t, 2*time.Second)
	b, err := New(Config{Advertise: raft.ServerAddress(ln.Addr().String()), Listener: ln, MaxFrame: 64 << 10})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = b.Close()
		_ = ln.Close()
	})
	a.maxFrame = 64 << 10 // as if configured alike
	ta, _ := a.Transport("g")
	closeT(t, ta)
	tb, _ := b.Transport("g")
	closeT(t, tb)
	serve(t, tb, nil)
	var resp raft.AppendEntriesResponse
	big := &raft.AppendEntriesRequest{Term: 1, Entries: []*raft.Log{{Index: 1, Data: make([]byte, 100<<10)}}}
	if err := ta.AppendEntries("b", b.Addr(), big, &resp); !errors.Is(err, errFrameTooLarge) {
		t.Fatalf("oversized request: %v", err)
	}
	small := &raft.AppendEntriesRequest{Term: 1, Entries: []*raft.Log{{Index: 1, Data: make([]byte, 1<<10)}}}
	if err := ta.AppendEntries("b", b.Addr(), small, &resp); err != nil || !resp.Success {
		t.Fatalf("request after an oversized one: %v", err)
	}
}

// TestFullInbox: a group that stopped taking requests gets error responses once its queue is
// full, and the connection's other groups are not held up.
func TestFullInbox(t *testing.T) {
	a, b := newNet(t, 5*time.Second), newNet(t, 5*time.Second)
	stuckA, _ := a.Transport("stuck")
	closeT(t, stuckA)
	okA, _ := a.Transport("ok")
	closeT(t, okA)
	stuckB, err := b.transport("stuck") // nobody consumes
	if err != nil {
		t.Fatal(err)
	}
	closeT(t, stuckB)
	okB, _ := b.Transport("ok")
	closeT(t, okB)
	serve(t, okB, nil)
	const n = inboxLen + 1 + 5 // one held by the dispatcher, inboxLen queued, 5 refused
	errs := make(chan error, n)
	for range n {
		go func() {
			errs <- stuckA.RequestVote("b", b.Addr(), &raft.RequestVoteRequest{Term: 1}, new(raft.RequestVoteResponse))
		}()
	}
	var remote *RemoteError
	for range 5 {
		if err := <-errs; !errors.As(err, &remote) || !strings.Contains(remote.Msg, "requests queued") {
			t.Fatalf("request to a full group: %v", err)
		}
	}
	var resp raft.RequestVoteResponse
	if err := okA.RequestVote("b", b.Addr(), &raft.RequestVoteRequest{Term: 2}, &resp); err != nil || !resp.Granted {
		t.Fatalf("other group: %v", err)
	}
	_ = stuckA.(raft.WithClose).Close() // the rest fail at once
	for range n - 5 {
		<-errs
	}
}

// TestProgressOfEarlierTermIgnored: a follower's progress recorded while this replica led in
// an earlier term does not count once it sends in a later one (the follower's log may have
// changed under other leaders meanwhile: a leader handed leadership to a replica it thought
// caught up from such a stale answer).
func TestProgressOfEarlierTermIgnored(t *testing.T) {
	a, b, c := newNet(t, 5*time.Second), newNet(t, 5*time.Second), newNet(t, 5*time.Second)
	ta, _ := a.Transport("g")
	closeT(t, ta)
	tb, _ := b.Transport("g")
	closeT(t, tb)
	tc, _ := c.Transport("g")
	closeT(t, tc)
	serve(t, tb, nil)
	serve(t, tc, nil)
	send := func(to raft.ServerAddress, term uint64) {
		t.Helper()
		req := &raft.AppendEntriesRequest{Term: term, PrevLogEntry: 4, PrevLogTerm: 1, Entries: []*raft.Log{{Index: 5, Term: term}}}
		if err := ta.AppendEntries("x", to, req, new(raft.AppendEntriesResponse)); err != nil {
			t.Fatal(err)
		}
	}
	tr := ta.(*Transport)
	send(b.Addr(), 1)
	if idx, _, ok := tr.Progress(b.Addr()); !ok || idx != 5 {
		t.Fatalf("progress in term 1: %d %v", idx, ok)
	}
	send(c.Addr(), 3) // leading again, in term 3; b not heard from in it yet
	if idx, _, ok := tr.Progress(b.Addr()); ok {
		t.Fatalf("progress of term 1 reported in term 3: %d", idx)
	}
	send(b.Addr(), 3)
	if _, _, ok := tr.Progress(b.Addr()); !ok {
		t.Fatal("progress of term 3 not reported")
	}
}
