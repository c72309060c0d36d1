package partition

import (
	"context"
	"errors"
	"time"

	"github.com/runnel-io/runnel/commitlog"
	"github.com/runnel-io/runnel/internal/recordbatch"
)

// DefaultFetchMaxBytes is the MaxBytes of a FetchOptions that leaves it zero (1 MiB, as
// FetchRequest.max_bytes).
const DefaultFetchMaxBytes = 1 << 20

// DefaultFetchMaxWait is the API's default wait (FetchRequest.max_wait unset: 500 ms). The
// broker applies it; a zero FetchOptions.MaxWait means "answer at once" ("0s").
const DefaultFetchMaxWait = 500 * time.Millisecond

// FetchOptions bound a Fetch, as FetchRequest's fields of the same names do.
type FetchOptions struct {
	// MaxBytes is the budget of batch bytes, as stored (0: DefaultFetchMaxBytes). The first
	// batch comes whole even if it alone is larger, so a consumer always progresses.
	MaxBytes int
	// MinBytes: answer as soon as this many batch bytes are available past the offset
	// (0: 1, as soon as there is any record).
	MinBytes int
	// MaxWait is the longest Fetch waits for MinBytes; 0 answers at once with what there is.
	MaxWait time.Duration
}

// FetchResult is what a Fetch found.
type FetchResult struct {
	// Batches are whole RecordBatch v2 batches, concatenated, as stored. The first may begin
	// before the requested offset (it holds it). Empty when nothing was available in time.
	Batches []byte
	// HighWatermark and LogStartOffset are the partition's when the result was made.
	HighWatermark  int64
	LogStartOffset int64
	// NextOffset is where to fetch next: after the last returned batch, or the requested
	// offset when nothing was returned.
	NextOffset int64
}

// Fetch reads whole batches from offset up to the high watermark. offset must lie in [log
// start offset, high watermark]; anything else is a *commitlog.OffsetRangeError
// (commitlog.ErrOffsetOutOfRange) whose Start is the log start offset and End the high
// watermark. At the high watermark Fetch waits (a long poll, FetchService.Fetch): if fewer than
// MinBytes are available it waits until enough records are appended, MaxWait passes (then it
// returns what there is, possibly nothing, and no error), ctx ends (ctx's error), or the
// partition closes (ErrClosed). It never polls: appends wake it.
func (p *Partition) Fetch(ctx context.Context, offset int64, opt FetchOptions) (FetchResult, error) {
	maxBytes := opt.MaxBytes
	if maxBytes <= 0 {
		maxBytes = DefaultFetchMaxBytes
	}
	minBytes := max(opt.MinBytes, 1)
	var (
		out     []byte
		next    = offset
		timeout <-chan time.Time
	)
	for first := true; ; first = false {
		if p.closed.Load() {
			return FetchResult{}, p.closedErr("fetch")
		}
		wake := p.wait()
		hw := p.readBound()
		start := p.log.StartOffset()
		if first && (offset < start || offset > hw) {
			return FetchResult{}, p.errorf("fetch: %w", &commitlog.OffsetRangeError{Offset: offset, Start: start, End: hw})
		}
		full := false
		if next < hw {
			budget := maxBytes - len(out)
			res, err := p.log.Read(next, commitlog.ReadOptions{MaxBytes: budget, MaxOffset: hw})
			switch {
			case err == nil:
			case errors.Is(err, commitlog.ErrOffsetOutOfRange) && len(out) > 0:
				// Retention removed what follows what we hold: answer with that; the next
				// fetch reports the range.
				full = true
			case errors.Is(err, commitlog.ErrOffsetOutOfRange):
				var re *commitlog.OffsetRangeError
				if errors.As(err, &re) {
					err = &commitlog.OffsetRangeError{Offset: re.Offset, Start: re.Start, End: hw}
				}
				return FetchResult{}, p.errorf("fetch: %w", err)
			default:
				return FetchResult{}, p.wrap("fetch", err)
			}
			if err == nil {
				b, nextOff, trimmed := res.Batches, res.NextOffset, false
				if len(out) > 0 && len(b) > budget {
					b, nextOff, trimmed = fitBatches(b, budget, next)
				}
				if len(out) == 0 {
					out = b
				} else {
					out = append(out, b...)
				}
				next = nextOff
				full = trimmed || next < hw || len(out) >= maxBytes
			}
		}
		if full || len(out) >= minBytes || opt.MaxWait <= 0 {
			return p.result(out, next, hw, start), nil
		}
		if timeout == nil {
			t := time.NewTimer(opt.MaxWait)
			defer t.Stop()
			timeout = t.C
		}
		if p.testHookWait != nil {
			p.testHookWait()
		}
		select {
		case <-wake:
		case <-timeout:
			return p.result(out, next, p.readBound(), p.log.StartOffset()), nil
		case <-ctx.Done():
			return FetchResult{}, p.errorf("fetch at offset %d: %w", offset, ctx.Err())
		case <-p.done:
			return FetchResult{}, p.closedErr("fetch")
		}
	}
}

// readBound is the high watermark as reads see it: with replication, never past the local log
// end either (the FSM applies only entries this replica holds, so the two agree; the clamp
// keeps a follower's read inside its own log whatever happens to the log under it).
func (p *Partition) readBound() int64 {
	hw := p.hw.Load()
	if p.rep != nil {
		hw = min(hw, p.log.EndOffset())
	}
	return hw
}

func (p *Partition) result(out []byte, next, hw, start int64) FetchResult {
	return FetchResult{Batches: out, HighWatermark: hw, LogStartOffset: start, NextOffset: next}
}

// fitBatches keeps the leading whole batches of b that fit in budget bytes and returns them
// with the offset after the last one kept (from when nothing is kept); trimmed reports that
// some were dropped.
func fitBatches(b []byte, budget int, from int64) ([]byte, int64, bool) {
	n := 0
	next := from
	for n < len(b) {
		size, err := recordbatch.Size(b[n:], len(b)-n)
		if err != nil || n+size > budget {
			break
		}
		h, err := recordbatch.ParseHeader(b[n:])
		if err != nil {
			break
		}
		next = h.NextOffset()
		n += size
	}
	return b[:n], next, n < len(b)
}
