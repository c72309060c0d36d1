package client

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	runnelv1 "github.com/runnel-io/runnel/proto/runnel/v1"
)

// ErrClosed is returned (or passed to a produce callback) for work given to a closed Client or
// Consumer, and for records still buffered when Close gave up on them.
var ErrClosed = errors.New("runnel: client closed")

// Error is a failure reported by the broker (a gRPC status with Runnel's ErrorInfo, or a
// partition's Error in a response), or a failure of the transport. Use errors.As to get it.
type Error struct {
	// Code is the gRPC status code, e.g. codes.NotFound.
	Code codes.Code
	// Reason is the ErrorReason without its prefix ("UNKNOWN_TOPIC", "RECORD_TOO_LARGE", ...),
	// or "" when the broker gave none (DEADLINE_EXCEEDED, a broken connection, ...).
	Reason string
	// Topic is the topic concerned, or "".
	Topic string
	// Partition is the partition concerned, or -1.
	Partition int32
	// Message is the broker's message, naming the topic, partition and offset concerned.
	Message string
	// Info is the broker's full ErrorInfo (leader address, offsets, limit, field), or nil.
	Info *runnelv1.ErrorInfo
}

// Error implements error: the code, the reason and the broker's message, e.g.
// `NotFound (UNKNOWN_TOPIC): topic "orders": unknown topic`. No "runnel: " prefix: the SDK's
// own errors that wrap an *Error carry it once ("runnel: delivery timeout for orders/0: ...").
func (e *Error) Error() string {
	var b strings.Builder
	b.WriteString(e.Code.String())
	if e.Reason != "" {
		b.WriteString(" (")
		b.WriteString(e.Reason)
		b.WriteString(")")
	}
	if e.Message != "" {
		b.WriteString(": ")
		b.WriteString(e.Message)
	} else if e.Topic != "" {
		fmt.Fprintf(&b, ": topic %q partition %d", e.Topic, e.Partition)
	}
	return b.String()
}

// IsRetriable reports whether sending the same request again may succeed: UNAVAILABLE
// (NOT_LEADER, LEADER_NOT_AVAILABLE, STORAGE_ERROR, SHUTTING_DOWN, a lost connection),
// DEADLINE_EXCEEDED and ABORTED. A retried produce may duplicate records.
func (e *Error) IsRetriable() bool {
	switch e.Code {
	case codes.Unavailable, codes.DeadlineExceeded, codes.Aborted:
		return true
	}
	return false
}

// IsRetriable reports whether err is an *Error that IsRetriable.
func IsRetriable(err error) bool {
	var e *Error
	return errors.As(err, &e) && e.IsRetriable()
}

// reasonName turns ERROR_REASON_UNKNOWN_TOPIC into UNKNOWN_TOPIC.
func reasonName(r runnelv1.ErrorReason) string {
	if r == runnelv1.ErrorReason_ERROR_REASON_UNSPECIFIED {
		return ""
	}
	return strings.TrimPrefix(r.String(), "ERROR_REASON_")
}

func newError(code codes.Code, msg string, info *runnelv1.ErrorInfo) *Error {
	e := &Error{Code: code, Message: msg, Partition: -1, Info: info}
	if info != nil {
		e.Reason = reasonName(info.GetReason())
		e.Topic = info.GetTopic()
		if info.Partition != nil {
			e.Partition = info.GetPartition()
		}
	}
	return e
}

// fromPB converts a per-partition Error of a response; nil stays nil.
func fromPB(pe *runnelv1.Error) error {
	if pe == nil {
		return nil
	}
	return newError(codes.Code(pe.GetCode()), pe.GetMessage(), pe.GetInfo())
}

// fromRPC converts the error of a gRPC call into an *Error, keeping context errors and nil as
// they are. io.EOF (a stream the broker ended early) becomes a retriable UNAVAILABLE.
func fromRPC(err error) error {
	if err == nil || errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return err
	}
	if errors.Is(err, io.EOF) {
		return &Error{Code: codes.Unavailable, Partition: -1, Message: "stream ended by the broker"}
	}
	st, ok := status.FromError(err)
	if !ok {
		return err
	}
	var info *runnelv1.ErrorInfo
	for _, d := range st.Details() {
		if i, ok := d.(*runnelv1.ErrorInfo); ok {
			info = i
			break
		}
	}
	return newError(st.Code(), st.Message(), info)
}

// hasReason reports whether err is an *Error with reason r.
func hasReason(err error, r runnelv1.ErrorReason) bool {
	var e *Error
	return errors.As(err, &e) && e.Reason == reasonName(r)
}
