package partition

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"

	"github.com/rs/zerolog"

	"github.com/runnel-io/runnel/commitlog"
	"github.com/runnel-io/runnel/internal/recordbatch"
	"github.com/runnel-io/runnel/internal/vfs"
	"github.com/runnel-io/runnel/topic"
)

// Options configure a Partition beyond its topic config.
type Options struct {
	// Topic and Partition name the partition in errors and logs.
	Topic     string
	Partition int32
	// Logger receives the partition's and its log's events (with topic and partition fields).
	// The zero Logger discards.
	Logger zerolog.Logger
	// Log is the base of the commitlog options: sync policy, filesystem seam, clock, retention
	// check interval. The fields the topic config governs (segment and retention settings,
	// MaxBatchBytes) are overwritten by topic.Config.LogOptions. A nil Log.Logger is replaced by
	// Logger.
	Log commitlog.Options
}

// DefaultOptions returns options with commitlog's defaults (SyncGroup: durable on return) and
// a discarding logger.
func DefaultOptions() Options {
	return Options{Logger: zerolog.Nop(), Log: commitlog.DefaultOptions()}
}

// Partition is one partition's log with its high watermark and waiting fetches. Its methods
// are safe for concurrent use.
type Partition struct {
	dir     string
	opts    Options
	logOpts commitlog.Options // as the log was opened
	log     *commitlog.Log
	logger  zerolog.Logger
	cfg     atomic.Pointer[topic.Config]

	hw atomic.Int64 // high watermark; written under mu

	mu      sync.Mutex
	notify  chan struct{} // closed and replaced when hw advances, if waiting; under mu
	waiting bool          // somebody holds notify; under mu
	closed  atomic.Bool
	done    chan struct{} // closed by Close

	closeOnce sync.Once
	closeErr  error

	rep *replication // nil: a single-node partition, appending directly

	// testHookWait, set by tests before use, runs when a Fetch is about to block.
	testHookWait func()
}

// Open opens (or creates) the partition's log in dir with the topic's config.
func Open(dir string, cfg topic.Config, opts Options) (*Partition, error) {
	name := fmt.Sprintf("topic %q partition %d", opts.Topic, opts.Partition)
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("partition: %s: %w", name, err)
	}
	logger := opts.Logger.With().Str("topic", opts.Topic).Int32("partition", opts.Partition).Logger()
	base := opts.Log
	if base.Logger == nil {
		base.Logger = &logger
	}
	lo := cfg.LogOptions(base)
	l, err := commitlog.Open(dir, lo)
	if err != nil {
		return nil, fmt.Errorf("partition: %s: open log: %w", name, err)
	}
	p := &Partition{
		dir: dir, opts: opts, logOpts: lo, log: l, logger: logger,
		notify: make(chan struct{}), done: make(chan struct{}),
	}
	p.cfg.Store(&cfg)
	p.hw.Store(l.EndOffset())
	logger.Debug().Int64("log_start_offset", l.StartOffset()).Int64("high_watermark", l.EndOffset()).Msg("partition opened")
	return p, nil
}

// Topic returns the topic's name; Number the partition's.
func (p *Partition) Topic() string { return p.opts.Topic }

// Number returns the partition number.
func (p *Partition) Number() int32 { return p.opts.Partition }

// Dir returns the partition's directory.
func (p *Partition) Dir() string { return p.dir }

// Config returns the topic config in effect (see UpdateConfig).
func (p *Partition) Config() topic.Config { return *p.cfg.Load() }

// errorf prefixes an error with the package and the partition's name.
func (p *Partition) errorf(format string, args ...any) error {
	return fmt.Errorf("partition: topic %q partition %d: "+format,
		append([]any{p.opts.Topic, p.opts.Partition}, args...)...)
}

// wrap names the partition in a commitlog error and turns commitlog.ErrClosed into ErrClosed.
func (p *Partition) wrap(what string, err error) error {
	if errors.Is(err, commitlog.ErrClosed) {
		return fmt.Errorf("%w: topic %q partition %d: %s", ErrClosed, p.opts.Topic, p.opts.Partition, what)
	}
	return p.errorf("%s: %w", what, err)
}

func (p *Partition) closedErr(what string) error {
	return fmt.Errorf("%w: topic %q partition %d: %s", ErrClosed, p.opts.Topic, p.opts.Partition, what)
}

// UpdateConfig applies a changed topic config. max.message.bytes applies at once (up to the
// log's batch cap, commitlog's MaxBatchBytes as opened, 8 MiB by default). The commitlog
// cannot change its segment and retention settings while open: if segment.bytes, segment.ms,
// retention.bytes or retention.ms changed (or max.message.bytes grew past the log's cap), the
// rest is applied and a *ReopenError (ErrReopenRequired) names those keys; they take effect
// when the partition is reopened with the new config, and Config keeps reporting the old
// values until then. An invalid config is refused whole.
func (p *Partition) UpdateConfig(cfg topic.Config) error {
	if err := cfg.Validate(); err != nil {
		return p.errorf("update config: %w", err)
	}
	old := *p.cfg.Load()
	next := cfg
	want := cfg.LogOptions(p.opts.Log)
	var keys []string
	if want.SegmentBytes != p.logOpts.SegmentBytes {
		keys = append(keys, topic.KeySegmentBytes)
		next.SegmentBytes = old.SegmentBytes
	}
	if want.SegmentAge != p.logOpts.SegmentAge {
		keys = append(keys, topic.KeySegmentMS)
		next.SegmentMS = old.SegmentMS
	}
	if want.RetentionBytes != p.logOpts.RetentionBytes {
		keys = append(keys, topic.KeyRetentionBytes)
		next.RetentionBytes = old.RetentionBytes
	}
	if want.RetentionAge != p.logOpts.RetentionAge {
		keys = append(keys, topic.KeyRetentionMS)
		next.RetentionMS = old.RetentionMS
	}
	if cfg.MaxMessageBytes > p.logOpts.MaxBatchBytes {
		keys = append(keys, topic.KeyMaxMessageBytes)
		next.MaxMessageBytes = old.MaxMessageBytes
	}
	p.cfg.Store(&next)
	if len(keys) > 0 {
		return &ReopenError{Topic: p.opts.Topic, Partition: p.opts.Partition, Keys: keys}
	}
	return nil
}

// Append validates the batches (one Kafka RecordBatch v2 each, as the producer sent it) and
// appends them in order with consecutive offsets, returning each batch's base offset. Under
// the default sync policy the batches are durable, and visible to Fetch, when it returns.
// Append writes the base offsets into the callers' batches, which it owns until it returns.
//
// Refused, with nothing of the request appended: no batch (ErrEmptyRequest); a batch over
// max.message.bytes (*RecordTooLargeError); a malformed batch (commitlog.ErrInvalidBatch);
// a batch with a producer id other than -1, the transactional bit or the control bit
// (ErrUnsupportedBatch), as produce.proto's ProducePartition.batches documents.
//
// ctx is checked before the append starts; an append under way completes. (With replication
// ctx will bound the wait for the commit.)
func (p *Partition) Append(ctx context.Context, batches [][]byte) ([]int64, error) {
	pend, err := p.AppendAsync(ctx, batches)
	if err != nil {
		return nil, err
	}
	return pend.Wait()
}

// Pending is an append under way (AppendAsync).
type Pending struct {
	offsets []int64 // known at once on a single node; from the commits with replication
	wait    func() ([]int64, error)
}

// Offsets returns the batches' base offsets if they are known before Wait returns (a
// partition without replication assigns them as it writes), else nil.
func (a *Pending) Offsets() []int64 { return a.offsets }

// Wait returns the batches' base offsets once they are acknowledged: durable on this broker,
// or, with replication, committed by the partition's Raft group (durable on a majority). The
// high watermark is then at or past them. Wait may be called from any goroutine, more than
// once.
func (a *Pending) Wait() ([]int64, error) { return a.wait() }

// AppendAsync is Append split in two, for pipelined produce: it checks and writes (or, with
// replication, proposes) the batches, so that appends to a partition land in the order of
// their AppendAsync calls, and returns a Pending whose Wait returns once they may be
// acknowledged. The high watermark passes them only then, so no reader sees them before.
// Without replication the batches' slices are free once AppendAsync returns; with it, once
// Wait returns.
func (p *Partition) AppendAsync(ctx context.Context, batches [][]byte) (*Pending, error) {
	if p.closed.Load() {
		return nil, p.closedErr("append")
	}
	if len(batches) == 0 {
		return nil, fmt.Errorf("%w: topic %q partition %d", ErrEmptyRequest, p.opts.Topic, p.opts.Partition)
	}
	limit := p.cfg.Load().MaxMessageBytes
	var lastDelta int32
	for i, b := range batches {
		if len(b) > limit {
			return nil, &RecordTooLargeError{Topic: p.opts.Topic, Partition: p.opts.Partition, Batch: i, Size: len(b), Limit: limit}
		}
		h, err := recordbatch.ParseHeader(b)
		if err != nil {
			return nil, p.errorf("%w: batch %d of %d: %w", commitlog.ErrInvalidBatch, i, len(batches), err)
		}
		if h.ProducerID != -1 || h.IsTransactional() || h.IsControl() {
			// A malformed batch's header fields mean nothing: report it as malformed.
			if _, err := recordbatch.Validate(b, limit); err != nil {
				return nil, p.errorf("%w: batch %d of %d: %w", commitlog.ErrInvalidBatch, i, len(batches), err)
			}
			return nil, p.errorf("%w: batch %d of %d: producer id %d, transactional %t, control %t (want producer id -1, neither transactional nor control)",
				ErrUnsupportedBatch, i, len(batches), h.ProducerID, h.IsTransactional(), h.IsControl())
		}
		lastDelta = h.LastOffsetDelta
	}
	if err := ctx.Err(); err != nil {
		return nil, p.errorf("append: %w", err)
	}
	if p.rep != nil {
		return p.propose(ctx, batches)
	}
	offsets, logWait, err := p.log.AppendAsync(batches...)
	if err != nil {
		return nil, p.wrap("append", err)
	}
	end := offsets[len(offsets)-1] + int64(lastDelta) + 1
	wait := func() ([]int64, error) {
		if err := logWait(); err != nil {
			return nil, p.wrap("append", err)
		}
		// Durability is monotonic in the log, so this append's end is safe to expose even if
		// a later append's wait returned first (advance only raises the watermark).
		p.advance(end)
		return offsets, nil
	}
	return &Pending{offsets: offsets, wait: wait}, nil
}

// advance raises the high watermark to end and wakes the waiting fetches.
func (p *Partition) advance(end int64) {
	p.mu.Lock()
	if end > p.hw.Load() {
		p.hw.Store(end)
		if p.waiting {
			close(p.notify)
			p.notify = make(chan struct{})
			p.waiting = false
		}
	}
	p.mu.Unlock()
}

// wait returns the channel the next advance of the high watermark closes. Taken before the
// high watermark is loaded, it cannot miss an advance.
func (p *Partition) wait() <-chan struct{} {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.waiting = true
	return p.notify
}

// HighWatermark returns the offset the next committed record will get; readers see nothing at
// or beyond it (see the package doc).
func (p *Partition) HighWatermark() int64 { return p.hw.Load() }

// Earliest returns the log start offset: the oldest offset retention has kept (ListOffsets
// earliest).
func (p *Partition) Earliest() int64 { return p.log.StartOffset() }

// Latest returns the high watermark (ListOffsets latest).
func (p *Partition) Latest() int64 { return p.hw.Load() }

// OffsetForTime looks up the first record whose timestamp (unix ms) is at or after ts, as
// fetch.proto's ListedOffset documents for timestamp queries: it returns that record's offset
// and timestamp with found true, or, when no committed record is that recent, the high
// watermark with timestamp -1 and found false.
func (p *Partition) OffsetForTime(ts int64) (offset, timestamp int64, found bool, err error) {
	if p.closed.Load() {
		return -1, -1, false, p.closedErr("offset for time")
	}
	hw := p.hw.Load()
	off, ok, err := p.log.OffsetForTime(ts)
	if err != nil {
		return -1, -1, false, p.wrap(fmt.Sprintf("offset for time %d", ts), err)
	}
	if !ok || off >= hw {
		return hw, -1, false, nil
	}
	res, err := p.log.Read(off, commitlog.ReadOptions{MaxBytes: 1, MaxOffset: hw})
	if err != nil {
		return -1, -1, false, p.wrap(fmt.Sprintf("offset for time %d: read offset %d", ts, off), err)
	}
	n, err := recordbatch.Size(res.Batches, len(res.Batches))
	if err != nil {
		return -1, -1, false, p.errorf("offset for time %d: batch at offset %d: %w", ts, off, err)
	}
	timestamp = -1
	errFound := errors.New("found")
	err = recordbatch.ForEachRecord(res.Batches[:n], func(r *recordbatch.Record) error {
		if r.Offset >= off {
			timestamp = r.Timestamp
			return errFound
		}
		return nil
	})
	if err != nil && err != errFound {
		return -1, -1, false, p.errorf("offset for time %d: decode batch at offset %d: %w", ts, off, err)
	}
	if timestamp == -1 {
		return -1, -1, false, p.errorf("offset for time %d: batch at offset %d does not hold it", ts, off)
	}
	return off, timestamp, true, nil
}

// Stats describe the partition (DescribeTopics).
type Stats struct {
	LogStartOffset int64
	HighWatermark  int64
	// LogEndOffset is the local log's end; equal to HighWatermark except while appends are in
	// flight (and, with replication, above the committed index).
	LogEndOffset int64
	SizeBytes    int64 // bytes in all segments, headers included
	Segments     int
}

// Stats returns the partition's current figures.
func (p *Partition) Stats() Stats {
	return Stats{
		LogStartOffset: p.log.StartOffset(),
		HighWatermark:  p.hw.Load(),
		LogEndOffset:   p.log.EndOffset(),
		SizeBytes:      p.log.Size(),
		Segments:       len(p.log.Segments()),
	}
}

// Close fails the waiting fetches with ErrClosed, then closes the log (which syncs it and
// marks a clean shutdown). Later calls return ErrClosed. Close is idempotent and returns the
// first call's error.
func (p *Partition) Close() error {
	p.closeOnce.Do(func() {
		p.mu.Lock()
		p.closed.Store(true)
		close(p.done)
		p.mu.Unlock()
		rerr := p.shutdownRaft()
		if err := errors.Join(rerr, p.log.Close()); err != nil {
			p.closeErr = p.errorf("close: %w", err)
		}
		p.logger.Debug().Msg("partition closed")
	})
	return p.closeErr
}

// Delete closes the partition and removes its directory (topic deletion).
func (p *Partition) Delete() error {
	cerr := p.Close()
	fs := p.logOpts.FS
	if fs == nil {
		fs = vfs.OS
	}
	if err := fs.RemoveAll(p.dir); err != nil {
		return errors.Join(cerr, p.errorf("delete %s: %w", p.dir, err))
	}
	p.logger.Info().Str("dir", p.dir).Msg("partition deleted")
	return nil
}

// Log returns the underlying commitlog, for retention and replication plumbing. Writing to it
// directly bypasses the high watermark.
func (p *Partition) Log() *commitlog.Log { return p.log }
