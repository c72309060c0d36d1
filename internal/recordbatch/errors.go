package recordbatch

import (
	"errors"
	"fmt"
)

// ErrInvalid is wrapped by every error this package returns for malformed,
// truncated or oversized input: errors.Is(err, ErrInvalid) tells a caller
// that the bytes, not the machine, are at fault (Kafka's INVALID_RECORD /
// CORRUPT_MESSAGE).
var ErrInvalid = errors.New("recordbatch: invalid record batch")

// kind is the type of the specific sentinels below. Each one is itself
// errors.Is(ErrInvalid).
type kind struct{ msg string }

func (k *kind) Error() string { return "recordbatch: " + k.msg }

// Is makes every specific sentinel match ErrInvalid.
func (k *kind) Is(target error) bool { return target == ErrInvalid }

// The specific sentinels. Errors returned by this package wrap exactly one
// of them (and therefore ErrInvalid); test with errors.Is.
var (
	// ErrTruncated: the input is shorter than its header or length field says.
	ErrTruncated error = &kind{"truncated batch"}
	// ErrTooLarge: the batch (or its decompressed payload) exceeds the
	// caller's maximum.
	ErrTooLarge error = &kind{"batch too large"}
	// ErrBadLength: the batchLength field is impossible (smaller than a
	// header) or disagrees with the size of the input (trailing bytes).
	ErrBadLength error = &kind{"bad batch length"}
	// ErrBadMagic: the magic byte is not 2.
	ErrBadMagic error = &kind{"bad magic"}
	// ErrBadCRC: the CRC32C stored in the header does not match the data.
	ErrBadCRC error = &kind{"crc mismatch"}
	// ErrBadRecordCount: the records count is < 1, disagrees with
	// lastOffsetDelta, cannot fit in the batch, or disagrees with the number
	// of records actually present.
	ErrBadRecordCount error = &kind{"bad record count"}
	// ErrBadOffsetDelta: a record's offsetDelta is not its index in the batch.
	ErrBadOffsetDelta error = &kind{"bad offset delta"}
	// ErrMalformedRecord: a record's framing (a varint, a length, the
	// headers) is malformed or runs past its end or the batch's end.
	ErrMalformedRecord error = &kind{"malformed record"}
	// ErrBadCompression: the attributes name an unknown codec, or the
	// compressed payload cannot be decompressed.
	ErrBadCompression error = &kind{"bad compression"}
)

// Error is the concrete type of the errors this package returns for bad
// input. Kind is one of the sentinels above; Error() renders the field and
// values involved, e.g.
//
//	recordbatch: crc mismatch: header 0x1234 computed 0x5678
//
// The message is formatted lazily, so constructing an Error on a hot path
// costs one small allocation and no formatting.
type Error struct {
	// Kind is the specific sentinel (ErrBadCRC, ErrTruncated, ...).
	Kind error
	// Record is the index of the offending record, or -1 for batch-level
	// errors.
	Record int

	format string
	args   [3]int64
	nargs  uint8
	cause  error // underlying codec error, if any
}

func (e *Error) Error() string {
	var args [3]any
	for i := 0; i < int(e.nargs); i++ {
		args[i] = e.args[i]
	}
	s := e.Kind.Error() + ": "
	if e.Record >= 0 {
		s += fmt.Sprintf("record %d: ", e.Record)
	}
	s += fmt.Sprintf(e.format, args[:e.nargs]...)
	if e.cause != nil {
		s += ": " + e.cause.Error()
	}
	return s
}

// Unwrap returns the specific sentinel and, for codec failures, the codec's
// own error.
func (e *Error) Unwrap() []error {
	if e.cause != nil {
		return []error{e.Kind, e.cause}
	}
	return []error{e.Kind}
}

// newErr builds a batch-level *Error. format uses only integer verbs.
func newErr(k error, format string, args ...int64) error {
	return recErr(k, -1, format, args...)
}

// recErr builds an *Error about record i.
func recErr(k error, i int, format string, args ...int64) error {
	e := &Error{Kind: k, Record: i, format: format}
	e.nargs = uint8(copy(e.args[:], args))
	return e
}

// causeErr builds a batch-level *Error that also wraps cause.
func causeErr(k error, cause error, format string, args ...int64) error {
	e := &Error{Kind: k, Record: -1, format: format, cause: cause}
	e.nargs = uint8(copy(e.args[:], args))
	return e
}
