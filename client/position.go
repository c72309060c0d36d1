package client

import (
	"fmt"
	"time"

	"google.golang.org/protobuf/types/known/emptypb"
	"google.golang.org/protobuf/types/known/timestamppb"

	runnelv1 "github.com/runnel-io/runnel/proto/runnel/v1"
)

type posKind int

const (
	posEarliest posKind = iota
	posLatest
	posOffset
	posTime
	posCommitted
)

// Position is where a consumer starts reading a partition, or what ListOffsets looks up. The
// zero value is Earliest.
type Position struct {
	kind     posKind
	offset   int64
	t        time.Time
	fallback *Position
}

// Earliest is the log start offset: the oldest record retention has kept.
func Earliest() Position { return Position{kind: posEarliest} }

// Latest is the high watermark: only records produced from now on.
func Latest() Position { return Position{kind: posLatest} }

// AtOffset is an exact offset, from the log start offset to the high watermark.
func AtOffset(n int64) Position { return Position{kind: posOffset, offset: n} }

// AtTime is the first record whose timestamp is at or after t (the high watermark if none).
func AtTime(t time.Time) Position { return Position{kind: posTime, t: t} }

// Committed is the consumer group's committed offset for the partition, or Earliest where the
// group has none. It needs a consumer with WithGroup.
func Committed() Position { return CommittedOr(Earliest()) }

// CommittedOr is the consumer group's committed offset for the partition, or fallback where the
// group has none.
func CommittedOr(fallback Position) Position {
	if fallback.kind == posCommitted {
		fallback = *fallback.fallback
	}
	return Position{kind: posCommitted, fallback: &fallback}
}

// String describes p.
func (p Position) String() string {
	switch p.kind {
	case posLatest:
		return "latest"
	case posOffset:
		return fmt.Sprintf("offset %d", p.offset)
	case posTime:
		return "time " + p.t.Format(time.RFC3339Nano)
	case posCommitted:
		return "committed, else " + p.fallback.String()
	}
	return "earliest"
}

// pb converts p (not Committed) for the API.
func (p Position) pb() *runnelv1.Position {
	switch p.kind {
	case posLatest:
		return &runnelv1.Position{Position: &runnelv1.Position_Latest{Latest: &emptypb.Empty{}}}
	case posOffset:
		return &runnelv1.Position{Position: &runnelv1.Position_Offset{Offset: p.offset}}
	case posTime:
		return &runnelv1.Position{Position: &runnelv1.Position_Timestamp{Timestamp: timestamppb.New(p.t)}}
	}
	return &runnelv1.Position{Position: &runnelv1.Position_Earliest{Earliest: &emptypb.Empty{}}}
}
