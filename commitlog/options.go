package commitlog

import (
	"fmt"
	"time"

	"github.com/rs/zerolog"

	"github.com/runnel-io/runnel/internal/vfs"
)

// SyncPolicy says when appended bytes are made durable (fdatasync) and when Append returns.
type SyncPolicy int

const (
	// SyncGroup (the default): Append returns once its entries are durable; concurrent appends
	// share one fsync (group commit), so durability costs latency, not throughput.
	SyncGroup SyncPolicy = iota
	// SyncAlways: every Append performs its own fsync before it returns, while holding the
	// writer lock. The strictest and slowest; useful as a baseline.
	SyncAlways
	// SyncInterval: Append returns once written to the page cache; a background flusher
	// fsyncs every SyncEvery or after SyncEveryBytes unsynced bytes, whichever comes first.
	// A crash loses at most that window. Named for what it is: not durable on acknowledgement.
	SyncInterval
	// SyncNone: Append returns once written; only Sync, a segment roll (in the background) and
	// Close fsync. Not durable on acknowledgement.
	SyncNone
)

func (p SyncPolicy) String() string {
	switch p {
	case SyncGroup:
		return "group"
	case SyncAlways:
		return "always"
	case SyncInterval:
		return "interval"
	case SyncNone:
		return "none"
	}
	return fmt.Sprintf("SyncPolicy(%d)", int(p))
}

// ParseSyncPolicy parses "group", "always", "interval" or "none".
func ParseSyncPolicy(s string) (SyncPolicy, error) {
	for _, p := range []SyncPolicy{SyncGroup, SyncAlways, SyncInterval, SyncNone} {
		if p.String() == s {
			return p, nil
		}
	}
	return 0, fmt.Errorf("%w: unknown sync policy %q (want group, always, interval or none)", ErrBadOptions, s)
}

// Defaults. Sizes and ages follow Kafka's topic defaults where Kafka has one.
const (
	DefaultSegmentBytes           = 1 << 30            // Kafka segment.bytes
	DefaultSegmentAge             = 7 * 24 * time.Hour // Kafka segment.ms
	DefaultIndexIntervalBytes     = 4096               // Kafka index.interval.bytes
	DefaultMaxBatchBytes          = 8 << 20            // a frame's data; the broker caps batches lower (max.message.bytes)
	DefaultSyncEvery              = 100 * time.Millisecond
	DefaultSyncEveryBytes         = 64 << 20
	DefaultRetentionCheckInterval = 5 * time.Minute // Kafka log.retention.check.interval.ms
	DefaultPreallocateBytes       = 1 << 20
	DefaultReserveBytes           = 4 << 20

	// MaxSegmentBytes keeps every position in a segment within the index's 32-bit field.
	MaxSegmentBytes = 1<<31 - 1
	minSegmentBytes = 4096
	// maxBatchBytesLimit keeps a segment's positions (SegmentBytes plus one frame) within 32 bits.
	maxBatchBytesLimit = 1 << 30
)

// Options configure a Log. The zero value of a field means its default (see DefaultOptions);
// retention fields use a negative value for "no limit".
type Options struct {
	// SegmentBytes rolls the active segment once it holds this many bytes (default 1 GiB,
	// at most MaxSegmentBytes). One append may overshoot it by its own size.
	SegmentBytes int64
	// SegmentAge rolls a non-empty active segment this long after it was created (default 7 days).
	SegmentAge time.Duration
	// IndexIntervalBytes: a sparse index entry is added once this many bytes were written since
	// the previous one (default 4096). 1 indexes every entry.
	IndexIntervalBytes int
	// MaxBatchBytes caps one entry's data (default 8 MiB). Larger input is refused before any
	// allocation sized by it.
	MaxBatchBytes int

	// Sync is the durability policy (default SyncGroup: durable before Append returns).
	Sync SyncPolicy
	// SyncEvery and SyncEveryBytes drive SyncInterval (defaults 100 ms and 64 MiB).
	SyncEvery      time.Duration
	SyncEveryBytes int64

	// PreallocateBytes: under SyncGroup and SyncAlways the active segment is written with
	// zeros this far ahead of its end (default 1 MiB; negative: off), made durable by the
	// fsync that follows, so that later fsyncs overwrite allocated blocks of a file whose
	// size does not change and need no journal commit (see preallocate.go).
	PreallocateBytes int64
	// ReserveBytes: under SyncNone and SyncInterval the active segment's disk blocks are
	// reserved (fallocate, keeping the size) this far ahead of its end (default 4 MiB;
	// negative: off), so that appends write into allocated blocks (see reserve.go).
	ReserveBytes int64

	// RetentionBytes deletes the oldest segments while the log, without them, still holds at
	// least this many bytes (default: no limit, -1).
	RetentionBytes int64
	// RetentionAge deletes sealed segments whose newest record is older than this
	// (default: no limit, -1).
	RetentionAge time.Duration
	// RetentionCheckInterval is how often the background retention runs (default 5 minutes).
	RetentionCheckInterval time.Duration
	// RetentionGuard, if set, bounds retention: only segments whose last Raft index is at or
	// below the returned index may be deleted (a replicated partition returns its latest
	// snapshot index; see the package doc).
	RetentionGuard func() uint64

	// SkipReadVerification turns off the CRC32C check of every batch a read returns. With it
	// on (the default) a flipped bit in a sealed segment is ErrCorrupt, not data.
	SkipReadVerification bool

	// FS is the filesystem seam (default vfs.OS).
	FS vfs.FS
	// Logger receives recovery and retention events (default: discard).
	Logger *zerolog.Logger
	// Now is the clock for segment age and retention (default time.Now).
	Now func() time.Time
}

// DefaultOptions returns the defaults, filled in.
func DefaultOptions() Options {
	nop := zerolog.Nop()
	return Options{
		SegmentBytes:           DefaultSegmentBytes,
		SegmentAge:             DefaultSegmentAge,
		IndexIntervalBytes:     DefaultIndexIntervalBytes,
		MaxBatchBytes:          DefaultMaxBatchBytes,
		Sync:                   SyncGroup,
		SyncEvery:              DefaultSyncEvery,
		SyncEveryBytes:         DefaultSyncEveryBytes,
		RetentionBytes:         -1,
		RetentionAge:           -1,
		RetentionCheckInterval: DefaultRetentionCheckInterval,
		PreallocateBytes:       DefaultPreallocateBytes,
		ReserveBytes:           DefaultReserveBytes,
		FS:                     vfs.OS,
		Logger:                 &nop,
		Now:                    time.Now,
	}
}

// withDefaults fills zero fields from DefaultOptions.
func (o Options) withDefaults() Options {
	d := DefaultOptions()
	if o.SegmentBytes == 0 {
		o.SegmentBytes = d.SegmentBytes
	}
	if o.SegmentAge == 0 {
		o.SegmentAge = d.SegmentAge
	}
	if o.IndexIntervalBytes == 0 {
		o.IndexIntervalBytes = d.IndexIntervalBytes
	}
	if o.MaxBatchBytes == 0 {
		o.MaxBatchBytes = d.MaxBatchBytes
	}
	if o.SyncEvery == 0 {
		o.SyncEvery = d.SyncEvery
	}
	if o.SyncEveryBytes == 0 {
		o.SyncEveryBytes = d.SyncEveryBytes
	}
	if o.RetentionBytes == 0 {
		o.RetentionBytes = d.RetentionBytes
	}
	if o.RetentionAge == 0 {
		o.RetentionAge = d.RetentionAge
	}
	if o.RetentionCheckInterval == 0 {
		o.RetentionCheckInterval = d.RetentionCheckInterval
	}
	if o.PreallocateBytes == 0 {
		o.PreallocateBytes = d.PreallocateBytes
	}
	if o.ReserveBytes == 0 {
		o.ReserveBytes = d.ReserveBytes
	}
	if o.FS == nil {
		o.FS = d.FS
	}
	if o.Logger == nil {
		o.Logger = d.Logger
	}
	if o.Now == nil {
		o.Now = d.Now
	}
	return o
}

// Validate checks the options, including the relations between fields. Zero fields are
// accepted (they mean the default).
func (o Options) Validate() error {
	o = o.withDefaults()
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w: "+format, append([]any{ErrBadOptions}, args...)...)
	}
	switch {
	case o.SegmentBytes < minSegmentBytes || o.SegmentBytes > MaxSegmentBytes:
		return bad("SegmentBytes %d not in [%d, %d]", o.SegmentBytes, minSegmentBytes, MaxSegmentBytes)
	case o.SegmentAge < 0:
		return bad("SegmentAge %v is negative", o.SegmentAge)
	case o.IndexIntervalBytes < 1:
		return bad("IndexIntervalBytes %d < 1", o.IndexIntervalBytes)
	case o.MaxBatchBytes < 64 || o.MaxBatchBytes > maxBatchBytesLimit:
		return bad("MaxBatchBytes %d not in [64, %d]", o.MaxBatchBytes, maxBatchBytesLimit)
	case o.Sync < SyncGroup || o.Sync > SyncNone:
		return bad("unknown Sync policy %d", int(o.Sync))
	case o.SyncEvery < 0 || o.SyncEveryBytes < 0:
		return bad("SyncEvery and SyncEveryBytes must not be negative")
	case o.RetentionCheckInterval < 0:
		return bad("RetentionCheckInterval %v is negative", o.RetentionCheckInterval)
	}
	return nil
}
