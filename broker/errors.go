package broker

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/hashicorp/raft"
	"github.com/runnel-io/runnel/commitlog"
	"github.com/runnel-io/runnel/internal/cluster"
	"github.com/runnel-io/runnel/internal/recordbatch"
	"github.com/runnel-io/runnel/partition"
	runnelv1 "github.com/runnel-io/runnel/proto/runnel/v1"
	"github.com/runnel-io/runnel/topic"
)

// Errors of the topic registry. Each is wrapped with a message naming the topic (and
// partition); apiErrorOf maps them to gRPC codes and ErrorInfo reasons.
var (
	// ErrUnknownTopic: no topic of that name (NOT_FOUND, UNKNOWN_TOPIC).
	ErrUnknownTopic = errors.New("unknown topic")
	// ErrUnknownPartition: the topic exists without that partition (NOT_FOUND, UNKNOWN_PARTITION).
	ErrUnknownPartition = errors.New("unknown partition")
	// ErrTopicExists: a topic of that name exists, or one that collides with it
	// (ALREADY_EXISTS, TOPIC_ALREADY_EXISTS).
	ErrTopicExists = errors.New("topic already exists")
	// ErrInvalidPartitions: a partition count outside 1..MaxPartitions (INVALID_ARGUMENT,
	// INVALID_PARTITIONS).
	ErrInvalidPartitions = errors.New("invalid partition count")
	// ErrReplicationFactorTooLarge: more replicas than brokers (FAILED_PRECONDITION,
	// INVALID_REPLICATION_FACTOR).
	ErrReplicationFactorTooLarge = errors.New("replication factor larger than the number of brokers")
	// ErrRegistryClosed: the registry was closed (UNAVAILABLE, SHUTTING_DOWN).
	ErrRegistryClosed = errors.New("broker is shutting down")
	// ErrStorage: the registry could not read or write its files (UNAVAILABLE, STORAGE_ERROR).
	ErrStorage = errors.New("storage error")
)

// apiError is a failure as the API reports it: a gRPC code, a message naming the topic,
// partition and offset, and an ErrorInfo. It is both a status (GRPCStatus, for whole calls)
// and an Error message (proto, for per-partition results).
type apiError struct {
	code codes.Code
	msg  string
	info *runnelv1.ErrorInfo
}

func (e *apiError) Error() string { return e.msg }

// GRPCStatus lets status.FromError and grpc-go turn the error into its status with details.
func (e *apiError) GRPCStatus() *status.Status {
	st := status.New(e.code, e.msg)
	if e.info == nil {
		return st
	}
	if d, err := st.WithDetails(e.info); err == nil {
		return d
	}
	return st
}

// proto returns the error as a per-partition Error.
func (e *apiError) proto() *runnelv1.Error {
	return &runnelv1.Error{Code: int32(e.code), Message: e.msg, Info: e.info}
}

// newAPIError builds an apiError; info may be nil.
func newAPIError(code codes.Code, reason runnelv1.ErrorReason, msg string, info *runnelv1.ErrorInfo) *apiError {
	if info == nil {
		info = &runnelv1.ErrorInfo{}
	}
	info.Reason = reason
	return &apiError{code: code, msg: msg, info: info}
}

// invalidRequest is INVALID_ARGUMENT (INVALID_REQUEST) naming the request field at fault.
func invalidRequest(field, format string, args ...any) *apiError {
	return newAPIError(codes.InvalidArgument, runnelv1.ErrorReason_ERROR_REASON_INVALID_REQUEST,
		fmt.Sprintf(format, args...), &runnelv1.ErrorInfo{Field: field})
}

// invalidRequestLimit is invalidRequest with the bound that was broken.
func invalidRequestLimit(field string, limit int64, format string, args ...any) *apiError {
	e := invalidRequest(field, format, args...)
	e.info.Limit = proto.Int64(limit)
	return e
}

// where locates an error: the topic, partition (-1: none) and offset (-1: none) concerned.
type where struct {
	topic     string
	partition int32
	offset    int64
	field     string // request field for INVALID_* reasons, if known
}

func at(topicName string, p int32) where { return where{topic: topicName, partition: p, offset: -1} }

func (w where) withOffset(off int64) where { w.offset = off; return w }

func (w where) withField(f string) where { w.field = f; return w }

// prefix names the topic and partition, as every message does.
func (w where) prefix() string {
	switch {
	case w.topic == "":
		return ""
	case w.partition < 0:
		return fmt.Sprintf("topic %q: ", w.topic)
	default:
		return fmt.Sprintf("topic %q partition %d: ", w.topic, w.partition)
	}
}

func (w where) info() *runnelv1.ErrorInfo {
	info := &runnelv1.ErrorInfo{Topic: w.topic}
	if w.partition >= 0 {
		info.Partition = proto.Int32(w.partition)
	}
	if w.offset >= 0 {
		info.Offset = proto.Int64(w.offset)
	}
	return info
}

// cleanMessage strips the package prefixes of lower layers and the location w's prefix
// already states, so that messages read `topic "t" partition 0: what went wrong`.
func cleanMessage(w where, err error) string {
	msg := err.Error()
	for _, p := range []string{"partition: ", "broker: ", "topic: "} {
		msg = strings.TrimPrefix(msg, p)
	}
	if w.topic != "" {
		msg = strings.TrimPrefix(msg, strings.TrimSuffix(w.prefix(), " "))
		msg = strings.TrimPrefix(msg, " ")
		if w.partition >= 0 {
			// Errors of the registry name the topic only; partition errors name both.
			msg = strings.TrimPrefix(msg, fmt.Sprintf("topic %q: ", w.topic))
		}
	}
	for _, p := range []string{"partition: ", "broker: ", "topic: "} {
		msg = strings.ReplaceAll(msg, ": "+p, ": ")
	}
	return w.prefix() + msg
}

// apiErrorOf maps any error of the registry, partition, commitlog, topic or recordbatch
// packages (or a context error) to the API's code, reason and ErrorInfo. It is the one place
// that does; handlers call it for every failure they report.
func apiErrorOf(w where, err error) *apiError {
	var ae *apiError
	if errors.As(err, &ae) {
		return ae
	}
	info := w.info()
	mk := func(code codes.Code, reason runnelv1.ErrorReason) *apiError {
		info.Reason = reason
		return &apiError{code: code, msg: cleanMessage(w, err), info: info}
	}
	var (
		rangeErr  *commitlog.OffsetRangeError
		tooLarge  *partition.RecordTooLargeError
		cfgErr    *topic.ConfigError
		notLeader *NotLeaderError
		partNL    *partition.NotLeaderError
		metaNL    *cluster.NotLeaderError
	)
	switch {
	case errors.As(err, &notLeader):
		if notLeader.LeaderID < 0 {
			return mk(codes.Unavailable, runnelv1.ErrorReason_ERROR_REASON_LEADER_NOT_AVAILABLE)
		}
		info.LeaderId, info.LeaderAddress = proto.Int32(notLeader.LeaderID), notLeader.LeaderAddr
		return mk(codes.Unavailable, runnelv1.ErrorReason_ERROR_REASON_NOT_LEADER)
	case errors.As(err, &partNL):
		// The partition's Raft group names its leader by server id "<broker id>/<incarnation>"
		// and by its Raft address, which is its one port: the address clients use too.
		id, _, ok := cluster.ParseRaftServerID(raft.ServerID(partNL.LeaderID))
		if !ok || partNL.Leader == "" {
			return mk(codes.Unavailable, runnelv1.ErrorReason_ERROR_REASON_LEADER_NOT_AVAILABLE)
		}
		info.LeaderId, info.LeaderAddress = proto.Int32(id), partNL.Leader
		return mk(codes.Unavailable, runnelv1.ErrorReason_ERROR_REASON_NOT_LEADER)
	case errors.As(err, &metaNL):
		if metaNL.LeaderID >= 0 {
			info.LeaderId, info.LeaderAddress = proto.Int32(metaNL.LeaderID), metaNL.LeaderAddr
		}
		return mk(codes.Unavailable, runnelv1.ErrorReason_ERROR_REASON_NOT_METADATA_LEADER)
	case errors.Is(err, cluster.ErrTopicExists):
		return mk(codes.AlreadyExists, runnelv1.ErrorReason_ERROR_REASON_TOPIC_ALREADY_EXISTS)
	case errors.Is(err, cluster.ErrUnknownTopic), errors.Is(err, cluster.ErrStaleTopic):
		return mk(codes.NotFound, runnelv1.ErrorReason_ERROR_REASON_UNKNOWN_TOPIC)
	case errors.Is(err, cluster.ErrUnknownGroup):
		return mk(codes.NotFound, runnelv1.ErrorReason_ERROR_REASON_UNKNOWN_GROUP)
	case errors.Is(err, cluster.ErrNotEnoughBrokers):
		info.Field = "replication_factor"
		return mk(codes.FailedPrecondition, runnelv1.ErrorReason_ERROR_REASON_INVALID_REPLICATION_FACTOR)
	case errors.Is(err, cluster.ErrInvalidPartitions):
		info.Field = "partitions"
		info.Limit = proto.Int64(MaxPartitions)
		return mk(codes.InvalidArgument, runnelv1.ErrorReason_ERROR_REASON_INVALID_PARTITIONS)
	case errors.Is(err, cluster.ErrClosed):
		return mk(codes.Unavailable, runnelv1.ErrorReason_ERROR_REASON_SHUTTING_DOWN)
	case errors.Is(err, cluster.ErrConcurrentChange):
		return mk(codes.Unavailable, runnelv1.ErrorReason_ERROR_REASON_UNSPECIFIED)
	case errors.As(err, &rangeErr):
		info.Reason = runnelv1.ErrorReason_ERROR_REASON_OFFSET_OUT_OF_RANGE
		info.Offset = proto.Int64(rangeErr.Offset)
		info.LogStartOffset = proto.Int64(rangeErr.Start)
		info.HighWatermark = proto.Int64(rangeErr.End)
		return &apiError{code: codes.OutOfRange, info: info,
			msg: fmt.Sprintf("%soffset %d out of range [%d, %d]", w.prefix(), rangeErr.Offset, rangeErr.Start, rangeErr.End)}
	case errors.As(err, &tooLarge):
		info.Limit = proto.Int64(int64(tooLarge.Limit))
		if w.field != "" {
			info.Field = w.field
		}
		return mk(codes.ResourceExhausted, runnelv1.ErrorReason_ERROR_REASON_RECORD_TOO_LARGE)
	case errors.Is(err, partition.ErrRecordTooLarge):
		return mk(codes.ResourceExhausted, runnelv1.ErrorReason_ERROR_REASON_RECORD_TOO_LARGE)
	case errors.Is(err, topic.ErrInvalidName):
		return mk(codes.InvalidArgument, runnelv1.ErrorReason_ERROR_REASON_INVALID_TOPIC_NAME)
	case errors.As(err, &cfgErr):
		info.Field = "configs[" + cfgErr.Key + "]"
		return mk(codes.InvalidArgument, runnelv1.ErrorReason_ERROR_REASON_INVALID_CONFIG)
	case errors.Is(err, topic.ErrInvalidConfig):
		return mk(codes.InvalidArgument, runnelv1.ErrorReason_ERROR_REASON_INVALID_CONFIG)
	case errors.Is(err, topic.ErrInvalidReplicationFactor):
		info.Field = "replication_factor"
		return mk(codes.InvalidArgument, runnelv1.ErrorReason_ERROR_REASON_INVALID_REPLICATION_FACTOR)
	case errors.Is(err, ErrReplicationFactorTooLarge):
		info.Field = "replication_factor"
		return mk(codes.FailedPrecondition, runnelv1.ErrorReason_ERROR_REASON_INVALID_REPLICATION_FACTOR)
	case errors.Is(err, ErrInvalidPartitions):
		info.Field = "partitions"
		info.Limit = proto.Int64(MaxPartitions)
		return mk(codes.InvalidArgument, runnelv1.ErrorReason_ERROR_REASON_INVALID_PARTITIONS)
	case errors.Is(err, ErrUnknownTopic):
		return mk(codes.NotFound, runnelv1.ErrorReason_ERROR_REASON_UNKNOWN_TOPIC)
	case errors.Is(err, ErrUnknownPartition):
		return mk(codes.NotFound, runnelv1.ErrorReason_ERROR_REASON_UNKNOWN_PARTITION)
	case errors.Is(err, ErrTopicExists):
		return mk(codes.AlreadyExists, runnelv1.ErrorReason_ERROR_REASON_TOPIC_ALREADY_EXISTS)
	case errors.Is(err, partition.ErrEmptyRequest):
		info.Field = w.field
		return mk(codes.InvalidArgument, runnelv1.ErrorReason_ERROR_REASON_INVALID_REQUEST)
	case errors.Is(err, commitlog.ErrInvalidBatch), errors.Is(err, recordbatch.ErrInvalid):
		info.Field = w.field
		return mk(codes.InvalidArgument, runnelv1.ErrorReason_ERROR_REASON_INVALID_RECORD)
	case errors.Is(err, commitlog.ErrCorrupt):
		return mk(codes.DataLoss, runnelv1.ErrorReason_ERROR_REASON_CORRUPT_DATA)
	case errors.Is(err, partition.ErrClosed), errors.Is(err, commitlog.ErrClosed), errors.Is(err, ErrRegistryClosed):
		return mk(codes.Unavailable, runnelv1.ErrorReason_ERROR_REASON_SHUTTING_DOWN)
	case errors.Is(err, commitlog.ErrFailed), errors.Is(err, ErrStorage):
		return mk(codes.Unavailable, runnelv1.ErrorReason_ERROR_REASON_STORAGE_ERROR)
	case errors.Is(err, context.DeadlineExceeded):
		return mk(codes.DeadlineExceeded, runnelv1.ErrorReason_ERROR_REASON_UNSPECIFIED)
	case errors.Is(err, context.Canceled):
		return mk(codes.Canceled, runnelv1.ErrorReason_ERROR_REASON_UNSPECIFIED)
	default:
		// An I/O error from below that none of the sentinels name: the storage failed.
		return mk(codes.Unavailable, runnelv1.ErrorReason_ERROR_REASON_STORAGE_ERROR)
	}
}

// callError is apiErrorOf for a whole call's failure, as a status error.
func callError(w where, err error) error { return apiErrorOf(w, err) }

// invalidRecord is INVALID_ARGUMENT (INVALID_RECORD) for a record the broker cannot store.
func invalidRecord(field, format string, args ...any) *apiError {
	return newAPIError(codes.InvalidArgument, runnelv1.ErrorReason_ERROR_REASON_INVALID_RECORD,
		fmt.Sprintf(format, args...), &runnelv1.ErrorInfo{Field: field})
}
