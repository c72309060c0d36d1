package partition

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/runnel-io/runnel/commitlog"
	"github.com/runnel-io/runnel/internal/recordbatch"
)

// TestFollowerReadsStopAtCommitBound: a follower serves reads (ServesFollowerReads; not
// ServesReads) only up to what it knows is committed, never the entry it stored whose commit
// it has not learned yet, and a long poll on it wakes when it learns the commit.
//
// With a CommitTimeout of minutes the leader sends nothing to a follower between appends but
// heartbeats, which carry no commit index: after an acknowledged append B, the follower whose
// acknowledgement committed B holds B but learned from B's AppendEntries only the commit index
// before B. So its bound is the end of A, its log end the end of B.
func TestFollowerReadsStopAtCommitBound(t *testing.T) {
	conf := fastRaft()
	conf.CommitTimeout = 10 * time.Minute
	rs := newReplicaSetConf(t, 3, conf)
	ctx := context.Background()

	endA := rs.appendRetry(valueBatch(t, "a0", "a1")) + 2
	l := rs.leader()
	offB := rs.appendRetry(valueBatch(t, "b0", "b1", "b2"))
	if rs.leader() != l || offB != endA {
		t.Skipf("leadership moved during the appends (loaded machine): leader %d then %d, B at %d", l, rs.leader(), offB)
	}
	endB := offB + 3
	if hw := rs.parts[l].HighWatermark(); hw != endB {
		t.Fatalf("leader's high watermark %d, want %d", hw, endB)
	}

	// The follower whose acknowledgement committed B got B before its commit: it stores B
	// and knows only A committed (a slower follower may get B after its commit, with it). Wait
	// until a follower is in that state: log end at B's end, bound at A's end.
	f := -1
	deadline := time.Now().Add(10 * time.Second)
	for f < 0 {
		for i, p := range rs.parts {
			if st := p.Stats(); i != l && st.LogEndOffset == endB && st.HighWatermark == endA {
				f = i
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no follower holds B without knowing it committed: %+v, %+v", rs.parts[(l+1)%3].Stats(), rs.parts[(l+2)%3].Stats())
		}
		time.Sleep(5 * time.Millisecond)
	}
	fp := rs.parts[f]
	if fp.ServesReads() || !fp.ServesFollowerReads() {
		t.Fatalf("follower: ServesReads %t, ServesFollowerReads %t; want false, true", fp.ServesReads(), fp.ServesFollowerReads())
	}
	time.Sleep(200 * time.Millisecond) // what would deliver B's commit, if anything did
	if st := fp.Stats(); st.HighWatermark != endA || st.LogEndOffset != endB {
		t.Fatalf("follower %d: high watermark %d, log end %d; want %d (A's end: B's commit not learned), %d", f, st.HighWatermark, st.LogEndOffset, endA, endB)
	}
	for i, p := range rs.parts {
		if st := p.Stats(); st.HighWatermark > st.LogEndOffset || st.HighWatermark > endB {
			t.Fatalf("replica %d: high watermark %d past its log end %d or the leader's %d", i, st.HighWatermark, st.LogEndOffset, endB)
		}
	}

	// Reads from the follower: A, nothing of B.
	res, err := fp.Fetch(ctx, 0, FetchOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if got := values(t, res.Batches, 0); fmt.Sprint(got) != "[a0 a1]" || res.NextOffset != endA || res.HighWatermark != endA {
		t.Fatalf("follower fetch from 0: %v, next %d, high watermark %d; want [a0 a1], %d, %d", got, res.NextOffset, res.HighWatermark, endA, endA)
	}
	if res, err := fp.Fetch(ctx, endA, FetchOptions{}); err != nil || len(res.Batches) != 0 {
		t.Fatalf("follower fetch at its bound: %d bytes, %v; want nothing", len(res.Batches), err)
	}
	_, err = fp.Fetch(ctx, endA+1, FetchOptions{})
	var re *commitlog.OffsetRangeError
	if !errors.As(err, &re) || re.End != endA {
		t.Fatalf("follower fetch past its bound (inside its log): %v; want an OffsetRangeError ending at %d", err, endA)
	}
	if off, _, found, err := fp.OffsetForTime(0); err != nil || !found || off != 0 {
		t.Fatalf("follower OffsetForTime: %d %t %v", off, found, err)
	}

	// A long poll at the bound wakes when the follower learns B's commit (C's append carries it).
	type answer struct {
		res FetchResult
		err error
	}
	got := make(chan answer, 1)
	go func() {
		res, err := fp.Fetch(ctx, endA, FetchOptions{MaxWait: 20 * time.Second})
		got <- answer{res, err}
	}()
	time.Sleep(50 * time.Millisecond)
	started := time.Now()
	rs.appendRetry(valueBatch(t, "c0"))
	a := <-got
	if a.err != nil {
		t.Fatal(a.err)
	}
	if v := values(t, a.res.Batches, endA); fmt.Sprint(v) != "[b0 b1 b2]" || a.res.NextOffset > a.res.HighWatermark {
		t.Fatalf("long poll on the follower: %v, next %d, high watermark %d; want [b0 b1 b2] within the bound", v, a.res.NextOffset, a.res.HighWatermark)
	}
	if waited := time.Since(started); waited > 5*time.Second {
		t.Fatalf("the long poll woke %v after the next append", waited)
	}
}

// values returns the values of the records at or after from in batches.
func values(t *testing.T, batches []byte, from int64) []string {
	t.Helper()
	var out []string
	for rest := batches; len(rest) > 0; {
		b, r, err := recordbatch.Next(rest, len(rest))
		if err != nil {
			t.Fatal(err)
		}
		rest = r
		err = recordbatch.ForEachRecord(b, func(rec *recordbatch.Record) error {
			if rec.Offset >= from {
				out = append(out, string(rec.Value))
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	return out
}
