package commitlog

import (
	"errors"
	"fmt"
)

// Sentinel errors. Every error the package returns wraps one of these (or an error of the
// filesystem), so callers test with errors.Is and map them to API status codes in one place.
var (
	// ErrOffsetOutOfRange: a read before the log start or past its end.
	ErrOffsetOutOfRange = errors.New("commitlog: offset out of range")
	// ErrIndexNotFound: no entry with that Raft index is held (compacted, or not yet written).
	ErrIndexNotFound = errors.New("commitlog: raft index not found")
	// ErrCorrupt: bytes that were once durable fail their checks. Never read as end-of-log.
	ErrCorrupt = errors.New("commitlog: corrupt")
	// ErrInvalidBatch: a record batch refused by Append; nothing of the call reached the disk.
	ErrInvalidBatch = errors.New("commitlog: invalid record batch")
	// ErrInvalidEntry: an entry refused by AppendEntries (wrong index, oversized extensions).
	ErrInvalidEntry = errors.New("commitlog: invalid entry")
	// ErrClosed: the log was closed.
	ErrClosed = errors.New("commitlog: closed")
	// ErrFailed: an earlier write or fsync failed in a way that leaves the on-disk state unknown
	// (after a failed fsync the kernel may have dropped the dirty pages: retrying is not safe).
	// The log refuses further writes until it is reopened, which runs recovery.
	ErrFailed = errors.New("commitlog: failed, reopen to recover")
	// ErrNotBatchBoundary: a truncation offset that falls inside a batch.
	ErrNotBatchBoundary = errors.New("commitlog: offset is not a batch boundary")
	// ErrBadOptions: Options.Validate refused the options.
	ErrBadOptions = errors.New("commitlog: bad options")
)

// OffsetRangeError reports an offset outside [Start, End] (End is the next offset to be
// written; reading at End is allowed and returns nothing).
type OffsetRangeError struct {
	Offset, Start, End int64
}

func (e *OffsetRangeError) Error() string {
	return fmt.Sprintf("commitlog: offset %d out of range [%d, %d]", e.Offset, e.Start, e.End)
}

func (e *OffsetRangeError) Unwrap() error { return ErrOffsetOutOfRange }

// CorruptError locates corruption: the segment file and the byte position of the frame.
type CorruptError struct {
	File   string
	Pos    int64
	Reason string
}

func (e *CorruptError) Error() string {
	return fmt.Sprintf("commitlog: corrupt %s at byte %d: %s", e.File, e.Pos, e.Reason)
}

func (e *CorruptError) Unwrap() error { return ErrCorrupt }

func corruptf(file string, pos int64, format string, args ...any) error {
	return &CorruptError{File: file, Pos: pos, Reason: fmt.Sprintf(format, args...)}
}

var errStopIteration = errors.New("stop")
