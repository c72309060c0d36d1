package commitlog

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"

	"github.com/runnel-io/runnel/internal/crc32c"
	"github.com/runnel-io/runnel/internal/vfs"
)

// Files beside the segments.
const (
	cleanMarkerName   = "clean-shutdown"
	recoveryPointName = "recovery-point"
	tmpSuffix         = vfs.TempSuffix
)

var segmentFileRE = regexp.MustCompile(`^(\d{20})\.(log|index|timeindex)$`)

// recover opens the segments in l.dir and brings the log to a consistent state:
//   - with a clean-shutdown marker, or for segments below the recovery point (known fully
//     synced), it trusts the log files: it checks the indexes and walks only the frames after the
//     last index entry; anything wrong there is ErrCorrupt;
//   - from the recovery point on (the tail a crash can tear), it scans every frame, verifying
//     checksums and continuity and rebuilding the indexes; at the first invalid frame it truncates
//     the log and drops every later segment.
func (l *Log) recover() error {
	fs := l.opts.FS
	names, err := fs.ReadDir(l.dir)
	if err != nil {
		return fmt.Errorf("commitlog: list %s: %w", l.dir, err)
	}
	for _, name := range names {
		if name == restoreMarkerName {
			if err := l.discardInterruptedRestore(names); err != nil {
				return err
			}
			if names, err = fs.ReadDir(l.dir); err != nil {
				return fmt.Errorf("commitlog: list %s: %w", l.dir, err)
			}
			break
		}
	}
	var bases []int64
	logs := map[int64]bool{}
	var clean bool
	for _, name := range names {
		path := filepath.Join(l.dir, name)
		switch {
		case name == cleanMarkerName:
			clean = true
		case name == recoveryPointName:
		case strings.HasSuffix(name, tmpSuffix):
			// A checkpoint that was being written when the process stopped.
			if err := fs.Remove(path); err != nil {
				return fmt.Errorf("commitlog: remove leftover %s: %w", path, err)
			}
		default:
			m := segmentFileRE.FindStringSubmatch(name)
			if m == nil {
				ext := filepath.Ext(name)
				if ext == ".log" || ext == ".index" || ext == ".timeindex" {
					return fmt.Errorf("%w: stray file %s: segment files are named by a 20-digit base offset", ErrCorrupt, path)
				}
				l.logger.Warn().Str("file", path).Msg("ignoring a file that is not part of the log")
				continue
			}
			base, err := strconv.ParseInt(m[1], 10, 64)
			if err != nil || base < 0 {
				return fmt.Errorf("%w: stray file %s: base offset out of range", ErrCorrupt, path)
			}
			if m[2] == "log" {
				logs[base] = true
				bases = append(bases, base)
			}
		}
	}
	// Index files without their log are leftovers of a deletion cut short: remove them.
	for _, name := range names {
		if m := segmentFileRE.FindStringSubmatch(name); m != nil && m[2] != "log" {
			base, _ := strconv.ParseInt(m[1], 10, 64)
			if !logs[base] {
				if err := fs.Remove(filepath.Join(l.dir, name)); err != nil {
					return fmt.Errorf("commitlog: remove orphan index %s: %w", name, err)
				}
			}
		}
	}
	sort.Slice(bases, func(i, j int) bool { return bases[i] < bases[j] })

	recPoint, err := l.readRecoveryPoint()
	if err != nil {
		return err
	}
	var segs []*segment
	closeAll := func() {
		for _, s := range segs {
			s.close()
		}
	}
	for i, base := range bases {
		trusted := clean || base < recPoint
		s, size, err := openSegmentFiles(&l.opts, l.dir, base)
		if err != nil {
			// A segment created just before a crash may have a torn header; if it is the last and
			// untrusted, nothing in it was ever acknowledged as durable: drop it.
			if !trusted && i == len(bases)-1 && errors.Is(err, ErrCorrupt) && size < segmentHeaderSize+frameHeaderSize {
				l.logger.Warn().Int64("base_offset", base).Err(err).Msg("dropping a segment torn at creation")
				if rerr := removeSegmentFiles(&l.opts, l.dir, base); rerr != nil {
					closeAll()
					return rerr
				}
				break
			}
			closeAll()
			return fmt.Errorf("commitlog: open segment %020d: %w", base, err)
		}
		if n := len(segs); n > 0 {
			prev := segs[n-1]
			if s.baseIndex() != prev.lastIdx.Load()+1 || s.baseOffset() != prev.nextOff.Load() {
				s.close()
				gap := fmt.Sprintf("segment %s starts at index %d offset %d, but the previous ends at index %d offset %d",
					s.path, s.baseIndex(), s.baseOffset(), prev.lastIdx.Load(), prev.nextOff.Load())
				if trusted {
					closeAll()
					return fmt.Errorf("%w: %s", ErrCorrupt, gap)
				}
				// The previous segment lost unsynced bytes (a policy that does not sync on every
				// append): this and every later segment follow a gap, so they go.
				l.logger.Warn().Str("reason", gap).Msg("dropping segments after a lost tail")
				for _, later := range bases[i:] {
					if err := removeSegmentFiles(&l.opts, l.dir, later); err != nil {
						closeAll()
						return err
					}
				}
				break
			}
			s.w.lastTerm = prev.w.lastTerm
		}
		segs = append(segs, s)
		truncated, err := l.loadSegment(s, size, trusted)
		if err != nil {
			closeAll()
			return err
		}
		if truncated {
			// Everything after a torn point is gone: later segments were written after it.
			for _, later := range bases[i+1:] {
				l.logger.Warn().Int64("base_offset", later).Msg("dropping a segment after a torn tail")
				if err := removeSegmentFiles(&l.opts, l.dir, later); err != nil {
					closeAll()
					return err
				}
			}
			break
		}
	}
	if len(segs) == 0 {
		s, err := createSegment(&l.opts, l.dir, segmentHeader{baseIndex: 1, baseOffset: 0, createdAt: l.nowMs()})
		if err != nil {
			return fmt.Errorf("commitlog: create first segment: %w", err)
		}
		segs = append(segs, s)
	}
	if err := l.opts.FS.SyncDir(l.dir); err != nil {
		closeAll()
		return fmt.Errorf("commitlog: sync dir: %w", err)
	}
	act := segs[len(segs)-1]
	l.publishSegments(segs)
	l.end.Store(act.nextOff.Load())
	l.lastIdx.Store(act.lastIdx.Load())
	l.lastTermW = act.w.lastTerm
	l.lastTerm.Store(act.w.lastTerm)
	// The recovery point moves to the active segment: everything before it is now known synced
	// (trusted, or scanned and synced by loadSegment).
	if err := l.writeRecoveryPoint(act.baseOffset()); err != nil {
		closeAll()
		return err
	}
	if clean {
		// From here on a crash is not a clean shutdown.
		if err := l.opts.FS.Remove(filepath.Join(l.dir, cleanMarkerName)); err != nil {
			closeAll()
			return fmt.Errorf("commitlog: remove clean-shutdown marker: %w", err)
		}
		if err := l.opts.FS.SyncDir(l.dir); err != nil {
			closeAll()
			return fmt.Errorf("commitlog: sync dir: %w", err)
		}
	}
	l.recPoint = act.baseOffset()
	return nil
}

func removeSegmentFiles(o *Options, dir string, base int64) error {
	logPath, idxPath, tidxPath := segmentPaths(dir, base)
	for _, p := range []string{idxPath, tidxPath, logPath} {
		if err := o.FS.Remove(p); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("commitlog: remove %s: %w", p, err)
		}
	}
	return nil
}

// loadSegment sets a freshly opened segment's state. A trusted segment keeps its indexes if they
// check out, and only its frames after the last index entry are walked; an untrusted one is
// scanned in full with its indexes rebuilt. It reports whether it truncated a torn tail.
func (l *Log) loadSegment(s *segment, size int64, trusted bool) (truncated bool, err error) {
	from := int64(segmentHeaderSize)
	index, offset := s.baseIndex(), s.baseOffset()
	rebuild := !trusted
	if trusted {
		ok, reason := l.checkIndexes(s, size)
		if !ok {
			l.logger.Warn().Str("segment", s.path).Str("reason", reason).Msg("rebuilding index")
			rebuild = true
		}
	}
	if rebuild {
		if err := s.idx.truncate(0); err != nil {
			return false, err
		}
		if err := s.tidx.truncate(0); err != nil {
			return false, err
		}
	} else {
		if from, index, offset, err = s.indexStart(^uint64(0)>>1, true); err != nil {
			return false, err
		}
		if n := s.tidx.len(); n > 0 {
			var buf [timeEntrySize]byte
			b, err := s.tidx.entry(n-1, buf[:])
			if err != nil {
				return false, err
			}
			te := decodeTimeEntry(b)
			s.w.maxTs, s.w.maxTsRelOff, s.w.lastTimeTs = te.ts, te.relOffset, te.ts
		}
		s.w.lastIdxPos = from
	}
	w := &s.w
	w.beginAppend()
	sc := newFrameScanner(s, from, size, true, 1<<20)
	defer sc.release()
	next, want := offset, index
	for sc.next() {
		h := &sc.h
		if h.index != want {
			sc.bad = fmt.Sprintf("frame has index %d, want %d", h.index, want)
			break
		}
		if h.term < w.lastTerm {
			sc.bad = fmt.Sprintf("frame term %d below the previous term %d", h.term, w.lastTerm)
			break
		}
		first, after := sc.frameOffsets(next)
		if h.typ == EntryBatch && first != next {
			sc.bad = fmt.Sprintf("batch base offset %d, want %d", first, next)
			break
		}
		maxTs := noTimestamp
		if h.typ == EntryBatch {
			maxTs = batchMaxTimestamp(sc.frame[h.dataStart():])
		}
		if sc.at > from || rebuild {
			w.track(s, l.opts.IndexIntervalBytes, sc.at, h.index, first, maxTs)
		} else if maxTs > w.maxTs { // the last indexed frame itself
			w.maxTs, w.maxTsRelOff = maxTs, uint32(first-s.baseOffset())
		}
		w.lastTerm = h.term
		next, want = after, want+1
	}
	if sc.err != nil {
		w.abortAppend(s)
		return false, fmt.Errorf("commitlog: read %s: %w", s.path, sc.err)
	}
	end := size
	if sc.bad != "" {
		if trusted {
			// A trusted segment was fully synced (even if its index needed a rebuild): a bad
			// frame in it is corruption, never a torn tail.
			w.abortAppend(s)
			return false, corruptf(s.path, sc.pos, "%s", sc.bad)
		}
		if isZeros(s.log, sc.pos, size) {
			l.logger.Info().Str("segment", s.path).Int64("at", sc.pos).Int64("dropped_bytes", size-sc.pos).
				Msg("cutting the zeros preallocated past the log's end")
		} else {
			l.logger.Warn().Str("segment", s.path).Int64("at", sc.pos).Int64("dropped_bytes", size-sc.pos).
				Str("reason", sc.bad).Msg("truncating torn tail")
		}
		end = sc.pos
		truncated = true
	}
	if err := w.writeIndexes(s); err != nil {
		w.abortAppend(s)
		return false, err
	}
	s.size.Store(end)
	w.publish(s)
	if err := s.flushIndexes(); err != nil {
		return false, err
	}
	s.nextOff.Store(next)
	s.lastIdx.Store(want - 1)
	if truncated || rebuild {
		if err := s.log.Truncate(end); err != nil {
			return false, err
		}
		if err := s.syncAll(); err != nil {
			return false, err
		}
	}
	return truncated, nil
}

// checkIndexes checks a trusted segment's indexes against its log: sizes whole, entries in
// order, positions inside the file. A failure means rebuild, not corruption.
func (l *Log) checkIndexes(s *segment, size int64) (bool, string) {
	for _, x := range []*index{s.idx, s.tidx} {
		fsize, err := x.f.Size()
		if err != nil {
			return false, err.Error()
		}
		if fsize%int64(x.entrySize) != 0 {
			return false, "index size is not a whole number of entries"
		}
		if fsize/int64(x.entrySize) > int64(x.capacity) {
			return false, "index larger than a segment can need"
		}
	}
	var buf [16]byte
	var prev offsetEntry
	for i := 0; i < s.idx.len(); i++ {
		b, err := s.idx.entry(i, buf[:])
		if err != nil {
			return false, err.Error()
		}
		e := decodeOffsetEntry(b)
		if int64(e.pos) < segmentHeaderSize || int64(e.pos)+frameHeaderSize > size {
			return false, fmt.Sprintf("index entry %d points at byte %d of %d", i, e.pos, size)
		}
		if i > 0 && (e.pos <= prev.pos || e.relIndex <= prev.relIndex || e.relOffset < prev.relOffset) {
			return false, fmt.Sprintf("index entry %d out of order", i)
		}
		prev = e
	}
	var tprev timeEntry
	for i := 0; i < s.tidx.len(); i++ {
		b, err := s.tidx.entry(i, buf[:])
		if err != nil {
			return false, err.Error()
		}
		e := decodeTimeEntry(b)
		if i > 0 && (e.ts <= tprev.ts || e.relOffset < tprev.relOffset) {
			return false, fmt.Sprintf("time index entry %d out of order", i)
		}
		tprev = e
	}
	return true, ""
}

// The recovery point file: the base offset of the first segment not known to be fully synced,
// 8 bytes big-endian and a CRC32C of them. Written to a temporary file, synced, renamed.
func (l *Log) writeRecoveryPoint(base int64) error {
	if base == l.recPoint {
		return nil
	}
	var b [12]byte
	binary.BigEndian.PutUint64(b[0:], uint64(base))
	binary.BigEndian.PutUint32(b[8:], crc32c.Checksum(b[:8]))
	if err := vfs.WriteFileAtomic(l.opts.FS, filepath.Join(l.dir, recoveryPointName), b[:]); err != nil {
		return fmt.Errorf("commitlog: write recovery point: %w", err)
	}
	l.recPoint = base
	return nil
}

func (l *Log) readRecoveryPoint() (int64, error) {
	f, err := l.opts.FS.OpenFile(filepath.Join(l.dir, recoveryPointName), os.O_RDONLY, 0)
	if errors.Is(err, os.ErrNotExist) {
		return 0, nil // no checkpoint: scan everything
	}
	if err != nil {
		return 0, fmt.Errorf("commitlog: open recovery point: %w", err)
	}
	defer f.Close()
	var b [12]byte
	if n, _ := f.ReadAt(b[:], 0); n != len(b) || binary.BigEndian.Uint32(b[8:]) != crc32c.Checksum(b[:8]) {
		l.logger.Warn().Msg("recovery point unreadable; scanning every segment")
		return 0, nil
	}
	return int64(binary.BigEndian.Uint64(b[:8])), nil
}

func (l *Log) writeCleanMarker() error {
	if err := vfs.WriteFileAtomic(l.opts.FS, filepath.Join(l.dir, cleanMarkerName), []byte("clean\n")); err != nil {
		return fmt.Errorf("commitlog: write clean-shutdown marker: %w", err)
	}
	return nil
}
