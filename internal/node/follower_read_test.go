package node

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/runnel-io/runnel/internal/recordbatch"
	runnelv1 "github.com/runnel-io/runnel/proto/runnel/v1"
)

// TestClusterFollowerReads: an RF=3 topic on three brokers; records produced with acks=all to
// the leader; a follower refuses Fetch and Subscribe with NOT_LEADER naming the leader unless
// the request sets allow_follower, and with it serves every acknowledged record at its
// offset, byte for byte, by Fetch and by a Subscribe stream that also follows records produced
// while it waits (its long poll wakes as the follower learns commits). No answer of the
// follower goes past the high watermark it reports, nor that past the leader's.
func TestClusterFollowerReads(t *testing.T) {
	c := newTestCluster(t)
	c.startThree()
	c.createTopic("reads", 1, 3)
	leader := c.waitLeader("reads", 0)
	var follower *Node
	for _, n := range c.nodes {
		if n != leader {
			if _, err := n.Registry().Partition("reads", 0); err == nil {
				follower = n
				break
			}
		}
	}
	if follower == nil {
		t.Fatal("no follower replica")
	}
	fetchCl := runnelv1.NewFetchServiceClient(c.conn(follower.Addr()))

	// acks=all, through whichever broker leads (a leader change on a loaded machine is
	// followed).
	acked := map[int64][]byte{}
	produceN := func(from, to int) {
		for i := from; i < to; i++ {
			b := testBatch(t, i)
			waitFor(t, 20*time.Second, "produce", func() error {
				l := c.leaderOf("reads", 0)
				if l == nil {
					return errors.New("no leader")
				}
				off, err := c.produce(l.Addr(), "reads", 0, append([]byte(nil), b...))
				if err == nil {
					acked[off] = b
				}
				return err
			})
		}
	}
	produceN(0, 100)
	leader = c.waitLeader("reads", 0)
	if leader == follower {
		t.Skip("leadership moved to the chosen follower (loaded machine)")
	}

	// Without the option: NOT_LEADER naming the leader, for Fetch and Subscribe.
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	_, err := fetchCl.Fetch(ctx, &runnelv1.FetchRequest{Topic: "reads", Partition: 0, Offset: 0})
	checkNotLeader(t, "fetch", err, leader.Addr())
	st, err := fetchCl.Subscribe(ctx, &runnelv1.SubscribeRequest{Topic: "reads", Partition: 0})
	if err == nil {
		_, err = st.Recv()
	}
	checkNotLeader(t, "subscribe", err, leader.Addr())

	// With it: every acknowledged record, by Fetch. The follower learns the last commits with
	// the leader's next append, or its commit timeout (5 s) when none comes.
	leaderHW := func() int64 {
		p, err := leader.Registry().Partition("reads", 0)
		if err != nil {
			t.Fatal(err)
		}
		return p.HighWatermark()
	}
	end := int64(0)
	for off := range acked {
		end = max(end, off+1)
	}
	got := map[int64][]byte{}
	for next := int64(0); next < end; {
		resp, err := fetchCl.Fetch(ctx, &runnelv1.FetchRequest{Topic: "reads", Partition: 0, Offset: next,
			AllowFollower: true, MaxWait: durationpb.New(time.Second), MaxBytes: 4096})
		if err != nil {
			t.Fatalf("follower fetch at %d: %v", next, err)
		}
		checkBound(t, resp.GetBatches(), resp.GetHighWatermark(), leaderHW())
		collect(t, resp.GetBatches(), next, got)
		next = resp.GetNextOffset()
	}
	for off, b := range acked {
		if !bytesEqualStripped(got[off], b) {
			t.Fatalf("offset %d from the follower: %x, want %x", off, got[off], b)
		}
	}

	// A Subscribe stream from the follower, from the start, follows records produced while it
	// runs.
	sctx, scancel := context.WithCancel(ctx)
	defer scancel()
	st, err = fetchCl.Subscribe(sctx, &runnelv1.SubscribeRequest{Topic: "reads", Partition: 0, AllowFollower: true})
	if err != nil {
		t.Fatal(err)
	}
	type answer struct {
		resp     *runnelv1.SubscribeResponse
		leaderHW int64 // read right after the answer came
		err      error
	}
	answers := make(chan answer, 10000)
	lp, err := leader.Registry().Partition("reads", 0)
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		for {
			resp, err := st.Recv()
			answers <- answer{resp, lp.HighWatermark(), err}
			if err != nil {
				return
			}
		}
	}()
	produceN(100, 200)
	streamed := map[int64][]byte{}
	timeout := time.After(30 * time.Second)
	missing := func() int {
		n := 0
		for off := range acked {
			if streamed[off] == nil {
				n++
			}
		}
		return n
	}
	for missing() > 0 {
		select {
		case a := <-answers:
			if a.err != nil {
				t.Fatalf("follower's stream after %d batches: %v", len(streamed), a.err)
			}
			checkBound(t, a.resp.GetBatches(), a.resp.GetHighWatermark(), a.leaderHW)
			collect(t, a.resp.GetBatches(), 0, streamed)
		case <-timeout:
			t.Fatalf("the follower's stream lacks %d of %d acknowledged batches after 30 s", missing(), len(acked))
		}
	}
	for off, b := range acked {
		if !bytesEqualStripped(streamed[off], b) {
			t.Fatalf("offset %d streamed by the follower: %x, want %x", off, streamed[off], b)
		}
	}
}

func checkNotLeader(t *testing.T, what string, err error, leaderAddr string) {
	t.Helper()
	info := errorInfo(err)
	if status.Code(err) != codes.Unavailable || info.GetReason() != runnelv1.ErrorReason_ERROR_REASON_NOT_LEADER || info.GetLeaderAddress() != leaderAddr {
		t.Fatalf("%s on a follower without allow_follower: %v (info %v), want NOT_LEADER naming %s", what, err, info, leaderAddr)
	}
}

// eachBatch calls fn with each whole batch of batches and its header.
func eachBatch(t *testing.T, batches []byte, fn func(h *recordbatch.Header, b []byte)) {
	t.Helper()
	for rest := batches; len(rest) > 0; {
		b, r, err := recordbatch.Next(rest, len(rest))
		if err != nil {
			t.Fatal(err)
		}
		rest = r
		h, err := recordbatch.ParseHeader(b)
		if err != nil {
			t.Fatal(err)
		}
		fn(&h, b)
	}
}

// checkBound fails unless every record of batches is below hw, and hw at most leaderHW (the
// leader's high watermark read after the answer came: it only grows).
func checkBound(t *testing.T, batches []byte, hw, leaderHW int64) {
	t.Helper()
	if hw > leaderHW {
		t.Errorf("a follower reported high watermark %d, past the leader's %d", hw, leaderHW)
	}
	eachBatch(t, batches, func(h *recordbatch.Header, _ []byte) {
		if h.NextOffset() > hw {
			t.Errorf("a follower served a batch ending at %d past its high watermark %d", h.NextOffset(), hw)
		}
	})
}

// collect records each whole batch of batches that starts at or after from, by base offset.
func collect(t *testing.T, batches []byte, from int64, into map[int64][]byte) {
	t.Helper()
	eachBatch(t, batches, func(h *recordbatch.Header, b []byte) {
		if h.BaseOffset >= from {
			into[h.BaseOffset] = append([]byte(nil), b...)
		}
	})
}

// bytesEqualStripped compares a stored batch with the one produced, base offsets aside (the
// broker writes the base offset into the batch).
func bytesEqualStripped(stored, produced []byte) bool {
	if stored == nil {
		return false
	}
	return fmt.Sprintf("%x", stripBase(stored)) == fmt.Sprintf("%x", stripBase(produced))
}
