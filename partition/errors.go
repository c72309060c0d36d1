package partition

import (
	"errors"
	"fmt"
	"strings"

	"github.com/runnel-io/runnel/commitlog"
)

var (
	// ErrClosed: the partition was closed (broker shutdown, topic deletion). Fetches waiting at
	// the end of the log return it when Close runs.
	ErrClosed = errors.New("partition: closed")
	// ErrEmptyRequest: an Append without any batch.
	ErrEmptyRequest = errors.New("partition: empty request, no record batch")
	// ErrRecordTooLarge: a batch over the topic's max.message.bytes (see RecordTooLargeError).
	ErrRecordTooLarge = errors.New("partition: record batch too large")
	// ErrUnsupportedBatch: a valid batch the broker does not support yet: a producer id other
	// than -1 (idempotent producer), the transactional attribute, or a control batch. It also
	// matches commitlog.ErrInvalidBatch (the API reports INVALID_RECORD) and
	// errors.ErrUnsupported.
	ErrUnsupportedBatch error = unsupportedError{}
	// ErrReopenRequired: UpdateConfig was given settings the open log cannot change live
	// (see ReopenError).
	ErrReopenRequired = errors.New("partition: config change needs a reopen")
)

type unsupportedError struct{}

func (unsupportedError) Error() string {
	return "partition: unsupported record batch (idempotent, transactional and control batches are not supported yet)"
}

func (unsupportedError) Is(target error) bool {
	return target == commitlog.ErrInvalidBatch || target == errors.ErrUnsupported
}

// RecordTooLargeError is a batch over the topic's max.message.bytes. It wraps
// ErrRecordTooLarge; nothing of the request was appended.
type RecordTooLargeError struct {
	Topic     string
	Partition int32
	Batch     int // index of the batch in the request
	Size      int // its size in bytes
	Limit     int // max.message.bytes
}

func (e *RecordTooLargeError) Error() string {
	return fmt.Sprintf("%s: topic %q partition %d: batch %d is %d bytes, over max.message.bytes %d",
		ErrRecordTooLarge, e.Topic, e.Partition, e.Batch, e.Size, e.Limit)
}

func (e *RecordTooLargeError) Unwrap() error { return ErrRecordTooLarge }

// ReopenError lists the config keys UpdateConfig could not apply to the open log: they take
// effect when the partition is next opened with the new config. It wraps ErrReopenRequired.
type ReopenError struct {
	Topic     string
	Partition int32
	Keys      []string
}

func (e *ReopenError) Error() string {
	return fmt.Sprintf("%s: topic %q partition %d: %s take effect when the partition is reopened",
		ErrReopenRequired, e.Topic, e.Partition, strings.Join(e.Keys, ", "))
}

func (e *ReopenError) Unwrap() error { return ErrReopenRequired }
