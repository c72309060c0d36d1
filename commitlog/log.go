package commitlog

import (
	"errors"
	"fmt"
	"math"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"
)

// Log is a partition's segmented commit log. See the package doc for the layout and rules.
//
// Locking: mu is the writer lock; it serialises appends, rolls, truncation and segment deletion.
// Readers never take it: they load the published segment list and end offsets with atomics and
// hold only the lifecycle lock of the one segment they read. Lock order: Log.mu, then a
// segment's mu, then groupCommit.mu.
type Log struct {
	dir    string
	opts   Options
	logger zerolog.Logger

	mu        sync.Mutex
	wbuf      []byte     // frame buffer of the current append; under mu
	cuts      []writeCut // large data written beside wbuf; under mu
	iov       [][]byte   // scratch for vectored writes; under mu
	entries   []Entry    // scratch for Append; under mu
	sealed    []*segment // sealed segments awaiting a background fsync (SyncInterval, SyncNone); under mu
	recPoint  int64      // base offset of the first segment not known to be fully synced; under mu
	unsynced  int64      // bytes appended since the last sync (SyncInterval); under mu
	lastTermW uint64     // term of the last entry; under mu

	segs     atomic.Pointer[[]*segment]
	start    atomic.Int64 // log start offset: the first segment's base offset
	end      atomic.Int64 // next offset to assign (the log end offset)
	firstIdx atomic.Uint64
	lastIdx  atomic.Uint64
	lastTerm atomic.Uint64
	closed   atomic.Bool
	failErr  atomic.Pointer[error] // sticky write/sync failure (mirrored in gc.err)
	// noPrealloc is the segment on which preallocation failed (a full disk): none until the next.
	noPrealloc atomic.Pointer[segment]
	// noReserveSeg is the segment on which reserving blocks failed: none until the next;
	// noReserve turns reservations off for the log (a filesystem without fallocate).
	noReserveSeg atomic.Pointer[segment]
	noReserve    atomic.Bool
	// syncSeg and syncAt: the segment and its size when the last fsync started; syncBytes: a
	// moving average of the bytes each fsync covered (preallocate.go).
	syncSeg   atomic.Pointer[segment]
	syncAt    atomic.Int64
	syncBytes atomic.Int64

	comb       combiner // write combining of concurrent Append calls (combine.go)
	gc         groupCommit
	gathering  atomic.Bool   // an fsync leader is waiting for appends (gatherAppends)
	groupSyncs atomic.Int64  // fsyncs performed by group commit (for benchmarks and metrics)
	gatherKick chan struct{} // appends wake it
	// lastArrival is when the last append landed (unix nanos), arrivalGap the moving average
	// of the gaps between appends (nanoseconds): gatherAppends waits only for appends that
	// come closer together than its limit.
	lastArrival atomic.Int64
	arrivalGap  atomic.Int64
	// onGroupSync, if set (benchmarks in this package), is told each group-commit fsync's
	// duration (from two goroutines at once when fsyncs overlap).
	onGroupSync func(time.Duration)
	// landed counts the appends (Append and AppendEntries calls) that have written their
	// entries: group commit counts appends, not entries (one append may carry many).
	landed atomic.Uint64

	done      chan struct{}
	wg        sync.WaitGroup
	flushKick chan struct{}
	closeOnce sync.Once
	closeErr  error
}

// groupCommit lets concurrent appenders share one fsync: the first waiter that finds no sync in
// flight performs one covering everything written so far; the others wait for it.
type groupCommit struct {
	mu      sync.Mutex
	durable uint64 // every entry with an index at or below is on stable storage
	syncing bool   // the token: Close, Restore or a truncation holds it, and no fsync starts
	// running counts the group-commit fsyncs in flight (up to maxGroupSyncs), and covering
	// is the highest index one of them will make durable (math.MaxUint64 while the first
	// gathers appends: it will cover whatever lands meanwhile).
	running  int
	covering uint64
	// started is when the oldest running fsync started, and typical a moving average of
	// how long fsyncs take: a second one starts only once the first runs slow (waitDurable).
	started      time.Time
	hedgeStarted time.Time // when the second running fsync started
	typical      time.Duration
	// lastCovered is how many appends the last fsync made durable (landed since the one
	// before), landedMark the landed count when it started, and lastSyncTook how long it
	// took; see gatherAppends.
	lastCovered  uint64
	landedMark   uint64
	lastSyncTook time.Duration
	err          error
	// changed is closed and replaced on every broadcast, and durableSeen mirrors durable
	// there: a waiter woken by an fsync that covered it returns without taking mu again.
	// (With a sync.Cond, the sixteen appenders an fsync woke queued on mu one after another
	// before they could append again.)
	changed     chan struct{}
	durableSeen atomic.Uint64
}

// broadcast wakes every waiter; mu must be held.
func (g *groupCommit) broadcast() {
	g.durableSeen.Store(g.durable)
	close(g.changed)
	g.changed = make(chan struct{})
}

// wait releases mu until the next broadcast, and takes it again (sync.Cond's Wait).
func (g *groupCommit) wait() {
	changed := g.changed
	g.mu.Unlock()
	<-changed
	g.mu.Lock()
}

// takeToken waits for the running group-commit fsyncs, if any, and keeps others from starting
// until the caller sets syncing back to false (under mu, then broadcast): Close, Restore
// and truncation change the files an fsync would touch.
func (g *groupCommit) takeToken() {
	g.mu.Lock()
	for g.syncing || g.running > 0 {
		g.wait()
	}
	g.syncing = true
	g.mu.Unlock()
}

// Open opens (creating if needed) the log in dir and recovers it (see the package doc).
func Open(dir string, opts Options) (*Log, error) {
	if err := opts.Validate(); err != nil {
		return nil, err
	}
	opts = opts.withDefaults()
	l := &Log{
		dir:        dir,
		opts:       opts,
		logger:     opts.Logger.With().Str("log", dir).Logger(),
		done:       make(chan struct{}),
		flushKick:  make(chan struct{}, 1),
		gatherKick: make(chan struct{}, 1),
	}
	l.gc.changed = make(chan struct{})
	if err := opts.FS.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("commitlog: create %s: %w", dir, err)
	}
	if err := l.recover(); err != nil {
		return nil, err
	}
	l.gc.durable = l.lastIdx.Load()
	if opts.Sync == SyncInterval || opts.Sync == SyncNone {
		l.goFunc(l.flushLoop)
	}
	if opts.RetentionBytes >= 0 || opts.RetentionAge >= 0 {
		l.goFunc(l.retentionLoop)
	}
	return l, nil
}

func (l *Log) goFunc(f func()) {
	l.wg.Add(1)
	go func() {
		defer l.wg.Done()
		f()
	}()
}

// Dir returns the log's directory.
func (l *Log) Dir() string { return l.dir }

// StartOffset returns the first offset the log holds (the first segment's base offset).
func (l *Log) StartOffset() int64 { return l.start.Load() }

// EndOffset returns the offset the next record will get (the log end offset).
func (l *Log) EndOffset() int64 { return l.end.Load() }

// FirstIndex returns the first Raft index held (1 for a new log).
func (l *Log) FirstIndex() uint64 { return l.firstIdx.Load() }

// LastIndex returns the last Raft index held (FirstIndex-1 when the log is empty).
func (l *Log) LastIndex() uint64 { return l.lastIdx.Load() }

// LastTerm returns the term of the last entry (0 when empty).
func (l *Log) LastTerm() uint64 { return l.lastTerm.Load() }

// DurableIndex returns the last Raft index known to be on stable storage.
func (l *Log) DurableIndex() uint64 {
	l.gc.mu.Lock()
	defer l.gc.mu.Unlock()
	return l.gc.durable
}

// SegmentInfo describes one segment, for operators and snapshots.
type SegmentInfo struct {
	Path         string
	BaseOffset   int64
	NextOffset   int64
	BaseIndex    uint64
	LastIndex    uint64
	Bytes        int64
	MaxTimestamp int64 // unix ms; math.MinInt64 when the segment holds no batch
	Active       bool
}

// GroupSyncs returns how many fsyncs group commit has performed since the log was opened
// (each covers every append waiting when it started).
func (l *Log) GroupSyncs() int64 { return l.groupSyncs.Load() }

// Segments describes the segments, oldest first.
func (l *Log) Segments() []SegmentInfo {
	segs := l.segments()
	out := make([]SegmentInfo, len(segs))
	for i, s := range segs {
		out[i] = SegmentInfo{
			Path: s.path, BaseOffset: s.baseOffset(), NextOffset: s.nextOff.Load(),
			BaseIndex: s.baseIndex(), LastIndex: s.lastIdx.Load(), Bytes: s.size.Load(),
			MaxTimestamp: s.maxTs.Load(), Active: i == len(segs)-1,
		}
	}
	return out
}

// Size returns the bytes held in all segments.
func (l *Log) Size() int64 {
	var n int64
	for _, s := range l.segments() {
		n += s.size.Load()
	}
	return n
}

func (l *Log) segments() []*segment { return *l.segs.Load() }

func (l *Log) active() *segment {
	segs := l.segments()
	return segs[len(segs)-1]
}

// publishSegments installs a new segment list and the start offset and first index.
func (l *Log) publishSegments(segs []*segment) {
	l.segs.Store(&segs)
	l.start.Store(segs[0].baseOffset())
	l.firstIdx.Store(segs[0].baseIndex())
}

// segmentForOffset returns the last segment whose base offset is at or below offset.
func segmentForOffset(segs []*segment, offset int64) *segment {
	i := sort.Search(len(segs), func(i int) bool { return segs[i].baseOffset() > offset })
	if i == 0 {
		return segs[0]
	}
	return segs[i-1]
}

// segmentForIndex returns the last segment whose base index is at or below index.
func segmentForIndex(segs []*segment, index uint64) *segment {
	i := sort.Search(len(segs), func(i int) bool { return segs[i].baseIndex() > index })
	if i == 0 {
		return segs[0]
	}
	return segs[i-1]
}

// fail makes a write or sync failure sticky and returns the ErrFailed error that every later
// write will get. Safe with or without mu held.
func (l *Log) fail(err error) error {
	wrapped := fmt.Errorf("%w: %w", ErrFailed, err)
	if !l.failErr.CompareAndSwap(nil, &wrapped) {
		return *l.failErr.Load()
	}
	l.logger.Error().Err(err).Msg("commitlog failed; reopen to recover")
	l.gc.mu.Lock()
	l.gc.err = wrapped
	l.gc.broadcast()
	l.gc.mu.Unlock()
	return wrapped
}

// failure returns the sticky failure, or nil.
func (l *Log) failure() error {
	if p := l.failErr.Load(); p != nil {
		return *p
	}
	return nil
}

// Sync makes every entry appended so far durable, whatever the policy.
func (l *Log) Sync() error {
	if l.closed.Load() {
		return ErrClosed
	}
	if err := l.syncSealed(); err != nil {
		return err
	}
	return l.waitDurable(l.lastIdx.Load())
}

// Close syncs everything, records a clean shutdown, and releases the files. It waits for the
// background goroutines; readers in flight finish first. Close is idempotent.
func (l *Log) Close() error {
	l.closeOnce.Do(func() {
		l.closed.Store(true)
		close(l.done)
		l.wg.Wait()
		l.mu.Lock()
		defer l.mu.Unlock()
		// Take the group-commit token, so no fsync runs on a file being closed.
		l.gc.takeToken()
		var errs []error
		if l.failure() == nil {
			if err := l.shutdownSyncLocked(); err != nil {
				errs = append(errs, err)
			} else {
				l.markDurable(l.lastIdx.Load()) // waiters get their acknowledgement
			}
		}
		for _, s := range l.segments() {
			errs = append(errs, s.close())
		}
		l.gc.mu.Lock()
		if l.gc.err == nil {
			l.gc.err = ErrClosed
		}
		l.gc.syncing = false
		l.gc.broadcast()
		l.gc.mu.Unlock()
		l.closeErr = errors.Join(errs...)
	})
	return l.closeErr
}

// shutdownSyncLocked syncs every segment and writes the clean-shutdown marker.
func (l *Log) shutdownSyncLocked() error {
	for _, s := range l.sealed {
		if err := s.syncAll(); err != nil {
			return err
		}
	}
	l.sealed = nil
	act := l.active()
	if err := act.flushIndexes(); err != nil {
		return err
	}
	if err := act.trimZeros(); err != nil {
		return err
	}
	if err := act.releaseReserved(); err != nil {
		return err
	}
	if err := act.syncAll(); err != nil {
		return err
	}
	if err := l.writeRecoveryPoint(act.baseOffset()); err != nil {
		return err
	}
	return l.writeCleanMarker()
}

// now returns the clock in unix milliseconds.
func (l *Log) nowMs() int64 { return l.opts.Now().UnixMilli() }

func (l *Log) now() time.Time { return l.opts.Now() }

// noTimestamp is the largest timestamp of a segment that holds no batch.
const noTimestamp int64 = math.MinInt64
