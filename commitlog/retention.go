package commitlog

import (
	"errors"
	"fmt"
	"time"
)

// DeleteSegmentsBefore deletes the oldest whole segments whose every offset is below offset
// (retention, or compaction by the replication layer). The active segment is never deleted.
// It returns how many segments went.
func (l *Log) DeleteSegmentsBefore(offset int64) (int, error) {
	return l.deletePrefix(func(s, next *segment) bool { return next.baseOffset() <= offset })
}

// DeleteSegmentsThrough deletes the oldest whole segments whose last Raft index is at or below
// index. The active segment is never deleted.
func (l *Log) DeleteSegmentsThrough(index uint64) (int, error) {
	return l.deletePrefix(func(s, next *segment) bool { return next.baseIndex()-1 <= index })
}

// deletePrefix deletes segments from the oldest while ok(segment, its successor) holds.
func (l *Log) deletePrefix(ok func(s, next *segment) bool) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if err := l.writable(); err != nil {
		return 0, err
	}
	segs := l.segments()
	n := 0
	for n < len(segs)-1 && ok(segs[n], segs[n+1]) {
		n++
	}
	if n == 0 {
		return 0, nil
	}
	gone := segs[:n]
	l.publishSegments(append([]*segment(nil), segs[n:]...))
	var errs []error
	for _, s := range gone {
		errs = append(errs, s.remove())
		for i, q := range l.sealed {
			if q == s {
				l.sealed = append(l.sealed[:i:i], l.sealed[i+1:]...)
				break
			}
		}
	}
	errs = append(errs, l.opts.FS.SyncDir(l.dir))
	if err := errors.Join(errs...); err != nil {
		return n, fmt.Errorf("commitlog: delete segments: %w", err)
	}
	l.logger.Info().Int("segments", n).Int64("log_start_offset", l.start.Load()).Msg("deleted segments")
	return n, nil
}

// ApplyRetention deletes the segments that RetentionBytes and RetentionAge no longer keep,
// within RetentionGuard. The background loop calls it every RetentionCheckInterval.
func (l *Log) ApplyRetention() (int, error) {
	now := l.now().UnixMilli()
	total := l.Size()
	guard := ^uint64(0)
	if l.opts.RetentionGuard != nil {
		guard = l.opts.RetentionGuard()
	}
	return l.deletePrefix(func(s, next *segment) bool {
		if next.baseIndex()-1 > guard {
			return false
		}
		size := s.size.Load()
		bySize := l.opts.RetentionBytes >= 0 && total-size >= l.opts.RetentionBytes
		byAge := l.opts.RetentionAge >= 0 && s.maxTs.Load() < now-l.opts.RetentionAge.Milliseconds()
		if bySize || byAge {
			total -= size
			return true
		}
		return false
	})
}

func (l *Log) retentionLoop() {
	t := time.NewTicker(l.opts.RetentionCheckInterval)
	defer t.Stop()
	for {
		select {
		case <-l.done:
			return
		case <-t.C:
			if _, err := l.ApplyRetention(); err != nil && !errors.Is(err, ErrClosed) {
				l.logger.Warn().Err(err).Msg("retention")
			}
		}
	}
}
