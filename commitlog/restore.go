package commitlog

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/runnel-io/runnel/internal/vfs"
)

// restoreMarkerName marks a Restore in progress: while it exists the directory may hold a mix of
// the old and the new segments, so Open discards every segment (an empty log) and the caller,
// which still holds the source files (a Raft snapshot), restores again.
const restoreMarkerName = "restore-in-progress"

// SnapshotSegments describes the segments that hold the entries [FirstIndex, index], oldest
// first, for a snapshot at index: every one but the last as Segments reports it, and the last
// cut just after the entry index (LastIndex = index, Bytes = the byte length of the file up to
// and including that entry, NextOffset = the offset after it). The bytes described never change
// while the entries stay in the log: appends go past them, and a Raft log truncates only above
// its commit index. An index outside [FirstIndex, LastIndex] is ErrIndexNotFound.
func (l *Log) SnapshotSegments(index uint64) ([]SegmentInfo, error) {
	if l.closed.Load() {
		return nil, ErrClosed
	}
	for {
		segs := l.segments()
		if index < segs[0].baseIndex() || index > l.lastIdx.Load() {
			return nil, fmt.Errorf("%w: %d not in [%d, %d]", ErrIndexNotFound, index, segs[0].baseIndex(), l.lastIdx.Load())
		}
		last := segmentForIndex(segs, index)
		var out []SegmentInfo
		for _, s := range segs {
			out = append(out, SegmentInfo{
				Path: s.path, BaseOffset: s.baseOffset(), NextOffset: s.nextOff.Load(),
				BaseIndex: s.baseIndex(), LastIndex: s.lastIdx.Load(), Bytes: s.size.Load(),
				MaxTimestamp: s.maxTs.Load(),
			})
			if s == last {
				break
			}
		}
		end, next, retry, err := l.entryEnd(last, index)
		if retry {
			if l.closed.Load() {
				return nil, ErrClosed
			}
			continue
		}
		if err != nil {
			return nil, err
		}
		info := &out[len(out)-1]
		info.Bytes, info.NextOffset, info.LastIndex = end, next, index
		info.Active = last == segs[len(segs)-1]
		return out, nil
	}
}

// entryEnd returns the file position just after the entry index in seg, and the offset after it.
func (l *Log) entryEnd(seg *segment, index uint64) (pos, next int64, retry bool, err error) {
	seg.mu.RLock()
	defer seg.mu.RUnlock()
	if seg.closed {
		return 0, 0, true, nil
	}
	start, _, off, err := seg.indexStart(index, true)
	if err != nil {
		return 0, 0, false, err
	}
	sc := newFrameScanner(seg, start, seg.size.Load(), false, 2*l.opts.IndexIntervalBytes+4096)
	defer sc.release()
	next = off
	for sc.next() {
		_, next = sc.frameOffsets(next)
		if sc.h.index == index {
			return sc.pos, next, false, nil
		}
		if sc.h.index > index {
			break
		}
	}
	if sc.err != nil {
		return 0, 0, false, sc.err
	}
	if sc.bad != "" {
		return 0, 0, false, corruptf(seg.path, sc.pos, "%s", sc.bad)
	}
	return 0, 0, false, fmt.Errorf("%w: %d (segment %s does not hold it)", ErrIndexNotFound, index, seg.path)
}

// RestoreOptions say what Restore adopts.
type RestoreOptions struct {
	// Files are segment log files in this package's format, oldest first, each named
	// %020d.log by its base offset (as the log names them), holding one contiguous run of
	// entries. The last one may end anywhere after a whole frame.
	Files []string
	// LastIndex and LastTerm: the adopted log must end at exactly this entry.
	LastIndex, LastTerm uint64
	// LastBytes, if positive, is how much of the last file to adopt (a snapshot that linked a
	// segment which was still being appended to records its length at the snapshot index).
	LastBytes int64
	// Link places a file into the log's directory without copying it (os.Link: a hard link).
	// Nil copies it through Options.FS. The last file is always copied (up to LastBytes): the
	// log appends to it, and the source must not change. The others are never written by
	// the log (it truncates only above its commit index), so sharing them is safe.
	Link func(oldname, newname string) error
}

// Restore replaces the whole log with the segment files o.Files (a Raft follower installing
// a snapshot). It closes the current segments (readers in flight finish first, then retry on the
// new ones), removes their files, places the new ones, and recovers the log from them, verifying
// every frame as after a crash. If the adopted files do not end at exactly o.LastIndex with term
// o.LastTerm (a corrupt or short source), it returns an error wrapping ErrCorrupt and the log
// holds what verified.
//
// Crash safety: a marker file is made durable before the first old file is removed and removed
// only once every new file is durable. An Open that finds it discards every segment and starts
// an empty log, so after a crash the log is the old one, the new one, or empty; never a mix.
// The caller must keep the source files durable until Restore returns and run it again after a
// crash that left the log short of o.LastIndex (raft does: it restores its latest snapshot on
// start).
func (l *Log) Restore(o RestoreOptions) error {
	if len(o.Files) == 0 {
		return fmt.Errorf("%w: restore: no segment files", ErrInvalidEntry)
	}
	// Check the sources before touching the log: names, headers, order.
	bases := make([]int64, len(o.Files))
	var prevIndex uint64
	for i, p := range o.Files {
		name := filepath.Base(p)
		m := segmentFileRE.FindStringSubmatch(name)
		if m == nil || m[2] != "log" {
			return fmt.Errorf("%w: restore: %s is not named as a segment log file", ErrInvalidEntry, p)
		}
		base, err := strconv.ParseInt(m[1], 10, 64)
		if err != nil {
			return fmt.Errorf("%w: restore: %s: %v", ErrInvalidEntry, p, err)
		}
		hdr, err := l.readSegmentHeader(p)
		if err != nil {
			return err
		}
		if hdr.baseOffset != base || hdr.baseIndex == 0 || (i > 0 && (base <= bases[i-1] || hdr.baseIndex <= prevIndex)) {
			return fmt.Errorf("%w: restore: %s: header (index %d, offset %d) out of order or not matching its name",
				ErrCorrupt, p, hdr.baseIndex, hdr.baseOffset)
		}
		bases[i], prevIndex = base, hdr.baseIndex
	}

	l.mu.Lock()
	defer l.mu.Unlock()
	if err := l.writable(); err != nil {
		return err
	}
	g := &l.gc
	g.takeToken()
	defer func() {
		g.mu.Lock()
		g.syncing = false
		g.durable = l.lastIdx.Load()
		g.broadcast()
		g.mu.Unlock()
	}()

	if err := vfs.WriteFileAtomic(l.opts.FS, filepath.Join(l.dir, restoreMarkerName), []byte("restore\n")); err != nil {
		return fmt.Errorf("commitlog: restore: write marker: %w", err)
	}
	// From here on a failure leaves the directory in an unknown state: the log fails (and a
	// reopen finds the marker).
	old := l.segments()
	var errs []error
	for _, s := range old {
		errs = append(errs, s.remove())
	}
	l.sealed = nil
	if err := errors.Join(errs...); err != nil {
		return l.restoreBroken(fmt.Errorf("restore: remove segments: %w", err))
	}
	if err := l.opts.FS.Remove(filepath.Join(l.dir, recoveryPointName)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return l.restoreBroken(fmt.Errorf("restore: remove recovery point: %w", err))
	}
	for i, src := range o.Files {
		dst, _, _ := segmentPaths(l.dir, bases[i])
		var err error
		switch {
		case i == len(o.Files)-1:
			err = l.copyFile(src, dst, o.LastBytes)
		case o.Link != nil:
			err = o.Link(src, dst)
		default:
			err = l.copyFile(src, dst, 0)
		}
		if err != nil {
			return l.restoreBroken(fmt.Errorf("restore: place %s: %w", src, err))
		}
	}
	if err := l.opts.FS.SyncDir(l.dir); err != nil {
		return l.restoreBroken(fmt.Errorf("restore: sync dir: %w", err))
	}
	if err := l.opts.FS.Remove(filepath.Join(l.dir, restoreMarkerName)); err != nil {
		return l.restoreBroken(fmt.Errorf("restore: remove marker: %w", err))
	}
	// recover syncs the directory (making the marker's removal durable) and scans every
	// segment in full: there is no recovery point, so none is trusted.
	l.recPoint = -1
	if err := l.recover(); err != nil {
		return l.restoreBroken(fmt.Errorf("restore: %w", err))
	}
	if last, term := l.lastIdx.Load(), l.lastTerm.Load(); last != o.LastIndex || term != o.LastTerm {
		return fmt.Errorf("%w: restore: the adopted segments end at index %d term %d, want index %d term %d",
			ErrCorrupt, last, term, o.LastIndex, o.LastTerm)
	}
	l.logger.Info().Int("segments", len(o.Files)).Uint64("first_index", l.firstIdx.Load()).
		Uint64("last_index", o.LastIndex).Msg("restored log from segment files")
	return nil
}

func (l *Log) readSegmentHeader(path string) (segmentHeader, error) {
	f, err := l.opts.FS.OpenFile(path, os.O_RDONLY, 0)
	if err != nil {
		return segmentHeader{}, fmt.Errorf("commitlog: restore: %w", err)
	}
	defer f.Close()
	var hb [segmentHeaderSize]byte
	if n, err := f.ReadAt(hb[:], 0); n != len(hb) {
		return segmentHeader{}, fmt.Errorf("%w: restore: %s: short header: %v", ErrCorrupt, path, err)
	}
	hdr, reason := decodeSegmentHeader(hb[:])
	if reason != "" {
		return segmentHeader{}, fmt.Errorf("%w: restore: %s: %s", ErrCorrupt, path, reason)
	}
	return hdr, nil
}

// copyFile copies src (its first limit bytes if limit > 0) to dst through the FS and syncs dst
// (not its directory).
func (l *Log) copyFile(src, dst string, limit int64) error {
	fs := l.opts.FS
	in, err := fs.OpenFile(src, os.O_RDONLY, 0)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := fs.OpenFile(dst, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return err
	}
	buf := make([]byte, 1<<20)
	var off int64
	for limit <= 0 || off < limit {
		chunk := buf
		if limit > 0 && int64(len(chunk)) > limit-off {
			chunk = chunk[:limit-off]
		}
		n, rerr := in.ReadAt(chunk, off)
		if n > 0 {
			if _, err := out.WriteAt(buf[:n], off); err != nil {
				out.Close()
				return err
			}
			off += int64(n)
		}
		if rerr == io.EOF {
			if limit > 0 && off < limit {
				out.Close()
				return fmt.Errorf("%w: %s holds %d bytes, want %d", ErrCorrupt, src, off, limit)
			}
			break
		}
		if rerr != nil {
			out.Close()
			return rerr
		}
	}
	if err := out.Sync(); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

// discardInterruptedRestore is called by Open when the restore marker is present: the
// directory may hold a mix of old and new segments, so every segment file goes (the log starts
// empty) and the marker last.
func (l *Log) discardInterruptedRestore(names []string) error {
	fs := l.opts.FS
	l.logger.Warn().Msg("a restore was interrupted; discarding every segment")
	for _, name := range names {
		if segmentFileRE.MatchString(name) || name == recoveryPointName || strings.HasSuffix(name, tmpSuffix) {
			if err := fs.Remove(filepath.Join(l.dir, name)); err != nil && !errors.Is(err, os.ErrNotExist) {
				return fmt.Errorf("commitlog: discard interrupted restore: %w", err)
			}
		}
	}
	if err := fs.SyncDir(l.dir); err != nil {
		return fmt.Errorf("commitlog: sync dir: %w", err)
	}
	if err := fs.Remove(filepath.Join(l.dir, restoreMarkerName)); err != nil {
		return fmt.Errorf("commitlog: remove restore marker: %w", err)
	}
	return fs.SyncDir(l.dir)
}

// restoreBroken fails the log after a Restore removed the old segments without installing new
// ones: no segment is left that readers could use, so the log reports itself closed to them
// and refuses writes (ErrFailed) until it is reopened, which finds the marker.
func (l *Log) restoreBroken(err error) error {
	l.closed.Store(true)
	return l.fail(err)
}
