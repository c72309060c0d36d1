package client

import (
	"context"
	"errors"
	"fmt"
	"math"
	"sync"
	"time"

	"github.com/runnel-io/runnel/internal/recordbatch"
	runnelv1 "github.com/runnel-io/runnel/proto/runnel/v1"
)

// ConsumerOption configures a Consumer.
type ConsumerOption func(*consumerOptions)

type consumerOptions struct {
	group          string
	autoCommit     time.Duration
	commitMetadata string
	maxBytes       int32
}

// WithGroup makes the consumer commit its progress for group (Commit, auto-commit, Close)
// and lets Committed positions start from the group's committed offsets. Default: no group.
func WithGroup(name string) ConsumerOption { return func(o *consumerOptions) { o.group = name } }

// WithAutoCommit makes Poll and Run commit the group's progress when at least d has passed
// since the last commit. Default 0: commit only on Commit and Close.
func WithAutoCommit(d time.Duration) ConsumerOption {
	return func(o *consumerOptions) { o.autoCommit = d }
}

// WithCommitMetadata sets the metadata string committed with every offset. Default "".
func WithCommitMetadata(s string) ConsumerOption {
	return func(o *consumerOptions) { o.commitMetadata = s }
}

// WithFetchMaxBytes sets the most batch bytes the broker sends per message of a partition's
// stream. Default 0: the broker's default, 1 MiB.
func WithFetchMaxBytes(n int32) ConsumerOption { return func(o *consumerOptions) { o.maxBytes = n } }

// Consumer reads the partitions assigned to it, each over its own Subscribe stream, and
// hands their records out through Poll or Run. Assignment is manual (Assign), with a group's
// committed offsets (WithGroup); for group membership and partition balancing use
// NewGroupConsumer. A commit without membership is refused while the group has members.
// Its methods are safe for concurrent use, but records come out of one Poll at a time.
type Consumer struct {
	c      *Client
	o      consumerOptions
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
	ch     chan fetched

	pollMu     sync.Mutex // one Poll at a time
	pendingErr error      // an error to return on the next Poll
	leftover   []*Record  // records Run took but did not handle, for the next Poll or Run

	mu         sync.Mutex
	parts      map[tp]*assignment
	committed  map[tp]int64
	lastCommit time.Time
	closed     bool

	// Set by a GroupConsumer (group.go) that reads through this consumer: commitHook commits
	// fenced by its member epoch, closeHook (once) closes the GroupConsumer instead.
	commitHook func(ctx context.Context, offs map[TopicPartition]int64) error
	closeHook  func() error
}

// assignment is one assigned partition.
type assignment struct {
	cancel   context.CancelFunc
	done     chan struct{}
	consumed int64 // the offset after the last record handed out, or -1
}

// fetched is what a partition's goroutine hands to Poll: records, or its final error.
type fetched struct {
	tp   tp
	a    *assignment
	recs []*Record
	err  error
}

// NewConsumer returns a consumer with nothing assigned. Close it when done (Client.Close
// closes it too).
func (c *Client) NewConsumer(opts ...ConsumerOption) *Consumer {
	var o consumerOptions
	for _, f := range opts {
		f(&o)
	}
	ctx, cancel := context.WithCancel(context.Background())
	k := &Consumer{c: c, o: o, ctx: ctx, cancel: cancel, ch: make(chan fetched, 16),
		parts: map[tp]*assignment{}, committed: map[tp]int64{}, lastCommit: time.Now()}
	c.mu.Lock()
	if c.closed {
		k.closed = true
		cancel()
	} else {
		c.consumers[k] = struct{}{}
	}
	c.mu.Unlock()
	return k
}

// Assign starts reading partition of topic from start. Committed positions need WithGroup.
// Errors while reading (an unknown topic, an offset out of range) are returned by Poll; the
// partition is then no longer read (its progress is still committed until Unassign). Assigning a partition that is already assigned restarts
// it from start.
func (k *Consumer) Assign(topicName string, partition int32, start Position) error {
	if start.kind == posCommitted && k.o.group == "" {
		return errors.New("runnel: a Committed position needs a consumer WithGroup")
	}
	key := tp{topicName, partition}
	k.mu.Lock()
	if k.closed {
		k.mu.Unlock()
		return ErrClosed
	}
	old := k.parts[key]
	k.mu.Unlock()
	if old != nil {
		k.Unassign(topicName, partition)
	}
	ctx, cancel := context.WithCancel(k.ctx)
	a := &assignment{cancel: cancel, done: make(chan struct{}), consumed: -1}
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.closed {
		cancel()
		return ErrClosed
	}
	k.parts[key] = a
	k.wg.Add(1)
	go k.follow(ctx, key, a, start)
	return nil
}

// Unassign stops reading partition of topic. Its progress is no longer committed.
func (k *Consumer) Unassign(topicName string, partition int32) {
	key := tp{topicName, partition}
	k.mu.Lock()
	a := k.parts[key]
	delete(k.parts, key)
	k.mu.Unlock()
	if a != nil {
		a.cancel()
		<-a.done
	}
}

// Poll returns the next records of the assigned partitions, waiting until there are some or
// ctx ends. Records of one partition come in offset order. A partition's final error (it is
// then no longer read) is returned once, on its own.
//
// With WithAutoCommit, Poll first commits (when due) the progress of the earlier Polls, so
// records count as processed once the next Poll is called, as with Kafka's consumer.
func (k *Consumer) Poll(ctx context.Context) ([]*Record, error) {
	if err := k.maybeAutoCommit(ctx); err != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err() // Poll reports its ctx ending, whatever it was doing
		}
		return nil, err
	}
	return k.poll(ctx, true)
}

func (k *Consumer) poll(ctx context.Context, markConsumed bool) ([]*Record, error) {
	k.pollMu.Lock()
	defer k.pollMu.Unlock()
	if err := k.pendingErr; err != nil {
		k.pendingErr = nil
		return nil, err
	}
	if out := k.leftover; len(out) > 0 {
		k.leftover = nil
		if markConsumed {
			for _, r := range out {
				k.markConsumed(r)
			}
		}
		return out, nil
	}
	var out []*Record
	take := func(f fetched) bool {
		k.mu.Lock()
		defer k.mu.Unlock()
		if k.parts[f.tp] != f.a {
			return true // unassigned since: drop
		}
		if f.err != nil {
			if len(out) > 0 {
				k.pendingErr = f.err
			} else {
				out, k.pendingErr = nil, f.err
			}
			return false
		}
		out = append(out, f.recs...)
		if markConsumed && len(f.recs) > 0 {
			f.a.consumed = f.recs[len(f.recs)-1].Offset + 1
		}
		return true
	}
	for len(out) == 0 {
		select {
		case f := <-k.ch:
			if !take(f) {
				if len(out) == 0 {
					err := k.pendingErr
					k.pendingErr = nil
					return nil, err
				}
				return out, nil
			}
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-k.ctx.Done():
			return nil, ErrClosed
		}
	}
	for { // whatever else is ready
		select {
		case f := <-k.ch:
			if !take(f) {
				return out, nil
			}
		default:
			return out, nil
		}
	}
}

// Run calls handler for every record, in order per partition, until ctx ends (it then
// returns nil), the handler fails (its error is returned; the failed record does not count as
// consumed, and it and the records after it come again from the next Poll or Run) or a
// partition fails. A record counts as consumed, for Commit, once handler returned nil for it.
func (k *Consumer) Run(ctx context.Context, handler func(*Record) error) error {
	for {
		recs, err := k.poll(ctx, false)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
		for i, r := range recs {
			if err := handler(r); err != nil {
				k.pollMu.Lock()
				k.leftover = append(recs[i:len(recs):len(recs)], k.leftover...)
				k.pollMu.Unlock()
				return err
			}
			k.markConsumed(r)
		}
		if err := k.maybeAutoCommit(ctx); err != nil {
			if ctx.Err() != nil {
				return nil // stopped: Close (or the next Run) commits what was handled
			}
			return err
		}
	}
}

func (k *Consumer) markConsumed(r *Record) {
	k.mu.Lock()
	if a := k.parts[tp{r.Topic, r.Partition}]; a != nil {
		a.consumed = r.Offset + 1
	}
	k.mu.Unlock()
}

func (k *Consumer) maybeAutoCommit(ctx context.Context) error {
	if k.o.group == "" || k.o.autoCommit <= 0 {
		return nil
	}
	k.mu.Lock()
	due := time.Since(k.lastCommit) >= k.o.autoCommit
	k.mu.Unlock()
	if !due {
		return nil
	}
	return k.Commit(ctx)
}

// Commit commits, for the consumer's group, the offset after the last record consumed of each
// assigned partition that progressed since the last commit. It needs WithGroup.
func (k *Consumer) Commit(ctx context.Context) error {
	if k.o.group == "" {
		return errors.New("runnel: Commit needs a consumer WithGroup")
	}
	k.mu.Lock()
	offs := map[TopicPartition]int64{}
	for key, a := range k.parts {
		if a.consumed >= 0 && a.consumed != k.committed[key] {
			offs[TopicPartition{key.topic, key.partition}] = a.consumed
		}
	}
	k.lastCommit = time.Now()
	k.mu.Unlock()
	if len(offs) == 0 {
		return nil
	}
	commit := func(ctx context.Context, offs map[TopicPartition]int64) error {
		return k.c.CommitOffsets(ctx, k.o.group, offs, k.o.commitMetadata)
	}
	if k.commitHook != nil {
		commit = k.commitHook
	}
	if err := commit(ctx, offs); err != nil {
		return err
	}
	k.mu.Lock()
	for tpp, off := range offs {
		k.committed[tp{tpp.Topic, tpp.Partition}] = off
	}
	k.mu.Unlock()
	return nil
}

// commitTimeout bounds the commit Close makes.
const commitTimeout = 10 * time.Second

// Close stops reading every partition and, with a group, commits the progress made.
func (k *Consumer) Close() error {
	k.mu.Lock()
	if hook := k.closeHook; hook != nil {
		k.closeHook = nil
		k.mu.Unlock()
		return hook()
	}
	if k.closed {
		k.mu.Unlock()
		return nil
	}
	k.closed = true
	k.mu.Unlock()
	var err error
	if k.o.group != "" {
		ctx, cancel := context.WithTimeout(context.Background(), commitTimeout)
		err = k.Commit(ctx)
		cancel()
	}
	k.cancel()
	k.wg.Wait()
	k.c.mu.Lock()
	delete(k.c.consumers, k)
	k.c.mu.Unlock()
	return err
}

// send hands f to Poll, unless ctx ends first.
func (k *Consumer) send(ctx context.Context, f fetched) bool {
	select {
	case k.ch <- f:
		return true
	case <-ctx.Done():
		return false
	}
}

// backoff waits the retry backoff, unless ctx ends first.
func (k *Consumer) backoff(ctx context.Context) bool {
	t := time.NewTimer(k.c.opts.retryBackoff)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// follow reads one partition: it resolves the start position, then follows the partition with
// Subscribe, resubscribing from the last next_offset after retriable failures.
func (k *Consumer) follow(ctx context.Context, key tp, a *assignment, start Position) {
	defer k.wg.Done()
	defer close(a.done)
	fail := func(err error) { k.send(ctx, fetched{tp: key, a: a, err: err}) }

	var pos *runnelv1.Position
	skipBelow := int64(-1) // records below it are not handed out
	for pos == nil {
		p, off, err := k.resolve(ctx, key, start)
		switch {
		case err == nil:
			pos, skipBelow = p, off
		case ctx.Err() != nil:
			return
		case IsRetriable(err):
			if !k.backoff(ctx) {
				return
			}
		default:
			fail(err)
			return
		}
	}
	var dec recordbatch.Decoder
	redirects, unknown, behind := 0, 0, 0
	confirmed := int64(-1) // the highest next_offset a broker sent: committed, so readable
	// WithFollowerReads: read from a follower (the pick-th) while that works; after a
	// follower's stream fails, from the leader, and from the next follower after a failure
	// there.
	useFollower, pick, followerBehind := k.c.opts.followerReads, int(key.partition), 0
	for {
		onFollower := false
		err := k.subscribe(ctx, key, a, &pos, &skipBelow, &confirmed, dec, useFollower, pick, &onFollower)
		if ctx.Err() != nil {
			return
		}
		if onFollower {
			var e *Error
			if errors.As(err, &e) && e.Reason == reasonName(runnelv1.ErrorReason_ERROR_REASON_OFFSET_OUT_OF_RANGE) &&
				e.Info != nil && e.Info.Offset != nil && e.Info.HighWatermark != nil && e.Info.GetOffset() > e.Info.GetHighWatermark() && followerBehind < unknownRetries {
				// The follower has not learned yet that the offset is committed (it learns
				// with the leader's next append): give it a few backoffs.
				followerBehind++
				if !k.backoff(ctx) {
					return
				}
				continue
			}
			followerBehind = 0
			// Whatever the failure (the broker down, the replica moved, an offset still above
			// what the follower knows committed), the leader has the last word: resubscribe
			// there.
			k.c.opts.logf("runnel: %s/%d: reading from a follower failed: %v: resubscribing to the leader", key.topic, key.partition, err)
			useFollower, pick = false, pick+1
			continue
		}
		useFollower = k.c.opts.followerReads
		var e *Error
		errors.As(err, &e)
		reason := ""
		if e != nil {
			reason = e.Reason
		}
		switch {
		case reason == reasonName(runnelv1.ErrorReason_ERROR_REASON_NOT_LEADER) && e.Info.GetLeaderAddress() != "":
			// The broker named the leader: resubscribe there, at once the first time.
			k.c.router.setLeader(key.topic, key.partition, e.Info.GetLeaderId(), e.Info.GetLeaderAddress())
			k.c.opts.logf("runnel: %s/%d: leader is %s: resubscribing there", key.topic, key.partition, e.Info.GetLeaderAddress())
			redirects++
			if redirects == 1 {
				continue
			}
		case reason == reasonName(runnelv1.ErrorReason_ERROR_REASON_UNKNOWN_TOPIC),
			reason == reasonName(runnelv1.ErrorReason_ERROR_REASON_UNKNOWN_PARTITION):
			// Right after CreateTopic the partition may not be on its leader yet: retried a
			// few times while fresh metadata has it.
			unknown++
			if unknown > unknownRetries || !k.c.router.exists(ctx, key.topic, key.partition) {
				k.c.meta.invalidate(key.topic)
				fail(err)
				return
			}
		case reason == reasonName(runnelv1.ErrorReason_ERROR_REASON_OFFSET_OUT_OF_RANGE) && e.Info.Offset != nil && e.Info.HighWatermark != nil &&
			e.Info.GetOffset() > e.Info.GetHighWatermark() && e.Info.GetOffset() <= confirmed:
			// An offset a broker already said was committed is above this broker's high
			// watermark: a new leader that has not learned the commit index of its term yet,
			// or a lagging one. Retried a few times, looking the leader up again.
			behind++
			if behind > unknownRetries {
				fail(err)
				return
			}
			k.c.router.invalidate(key.topic)
		case err != nil && !IsRetriable(err):
			fail(err)
			return
		default:
			redirects = 0
			// The leader may have moved (NOT_LEADER, LEADER_NOT_AVAILABLE, a broken stream):
			// resubscribe where fresh metadata says.
			k.c.router.invalidate(key.topic)
		}
		k.c.opts.logf("runnel: resubscribing to %s/%d: %v", key.topic, key.partition, err)
		if !k.backoff(ctx) {
			return
		}
	}
}

// resolve turns start into a Subscribe position; for exact offsets (AtOffset, AtTime,
// Committed) it also returns that offset, below which records of the first batch are skipped.
func (k *Consumer) resolve(ctx context.Context, key tp, start Position) (*runnelv1.Position, int64, error) {
	if start.kind == posCommitted {
		cos, err := k.c.fetchCommitted(ctx, k.o.group, []*runnelv1.TopicPartitions{{Topic: key.topic, Partitions: []int32{key.partition}}})
		if err != nil {
			return nil, 0, err
		}
		for _, co := range cos {
			if co.Topic == key.topic && co.Partition == key.partition && co.Offset >= 0 {
				k.mu.Lock()
				k.committed[key] = co.Offset
				k.mu.Unlock()
				return AtOffset(co.Offset).pb(), co.Offset, nil
			}
		}
		start = *start.fallback
	}
	switch start.kind {
	case posOffset:
		return start.pb(), start.offset, nil
	case posLatest:
		if !k.c.opts.followerReads {
			break
		}
		// A follower's end may trail the leader's: the leader says where Latest is.
		fallthrough
	case posTime:
		m, err := k.c.ListOffsets(ctx, key.topic, start, key.partition)
		if err != nil {
			return nil, 0, err
		}
		off, ok := m[key.partition]
		if !ok {
			return nil, 0, fmt.Errorf("runnel: no offset listed for %s/%d", key.topic, key.partition)
		}
		return AtOffset(off).pb(), off, nil
	}
	return start.pb(), -1, nil
}

// subscribe runs one Subscribe stream until it fails, handing out its records. It advances
// *pos, *skipBelow and *confirmed as records arrive, so that a resubscription resumes where it ended.
//
// With follower set, the stream goes to the partition's pick-th follower (router.follower),
// if it has one, with allow_follower; *onFollower then reports that it did.
func (k *Consumer) subscribe(ctx context.Context, key tp, a *assignment, pos **runnelv1.Position, skipBelow, confirmed *int64, dec recordbatch.Decoder,
	follower bool, pick int, onFollower *bool) error {
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var addr string
	if follower {
		addr, *onFollower = k.c.router.follower(ctx, key.topic, key.partition, pick)
	}
	if !*onFollower {
		var err error
		if addr, err = k.c.router.leader(ctx, key.topic, key.partition); err != nil {
			return err
		}
	}
	bc, err := k.c.conn(addr)
	if err != nil {
		return err
	}
	st, err := bc.fetch.Subscribe(sctx, &runnelv1.SubscribeRequest{Topic: key.topic, Partition: key.partition, Start: *pos, MaxBytes: k.o.maxBytes,
		AllowFollower: *onFollower})
	if err != nil {
		return fromRPC(err)
	}
	for {
		resp, err := st.Recv()
		if err != nil {
			return fromRPC(err)
		}
		var recs []*Record
		rest := resp.GetBatches()
		for len(rest) > 0 {
			var b []byte
			b, rest, err = recordbatch.Next(rest, math.MaxInt32)
			if err != nil {
				return fmt.Errorf("runnel: %s/%d: %w", key.topic, key.partition, err)
			}
			h, err := recordbatch.ParseHeader(b)
			if err != nil {
				return fmt.Errorf("runnel: %s/%d: %w", key.topic, key.partition, err)
			}
			if h.IsControl() || h.NextOffset() <= *skipBelow {
				continue
			}
			// An uncompressed batch's keys and values point into resp's own bytes, which
			// nothing reuses, so records can keep them; a compressed batch is decoded into
			// the decoder's buffer, so its records get copies. Records are allocated a
			// batch at a time.
			alias := h.Compression() == recordbatch.CompressionNone
			block := make([]Record, 0, h.LastOffsetDelta+1)
			err = dec.ForEachRecord(b, func(r *recordbatch.Record) error {
				if r.Offset >= *skipBelow {
					block = append(block, Record{})
					fillFromBatch(&block[len(block)-1], key.topic, key.partition, r, alias)
					recs = append(recs, &block[len(block)-1])
				}
				return nil
			})
			if err != nil {
				return fmt.Errorf("runnel: %s/%d: %w", key.topic, key.partition, err)
			}
		}
		next := resp.GetNextOffset()
		*confirmed = max(*confirmed, next)
		*pos = AtOffset(next).pb()
		*skipBelow = max(*skipBelow, next)
		if len(recs) > 0 && !k.send(ctx, fetched{tp: key, a: a, recs: recs}) {
			return ctx.Err()
		}
	}
}
