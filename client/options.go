package client

import (
	"context"
	"net"
	"os"
	"strings"
	"time"

	"github.com/runnel-io/runnel/internal/recordbatch"
)

// DefaultBroker is the address used when neither WithBrokers nor RUNNEL_BROKERS names one.
const DefaultBroker = "127.0.0.1:9420"

// maxMsgBytes is the broker's request limit; the client's send and receive limits match it.
const maxMsgBytes = 64 << 20

// Acks is how far a produce must get before the broker acknowledges it. The values are those
// of runnelv1.Acks.
type Acks int

const (
	// AcksAll (the default) waits until the batch is durable: on stable storage on a majority
	// of the partition's replicas, and committed.
	AcksAll Acks = iota
	// AcksLeader waits until the leader appended the batch, before fsync; a crash can lose it.
	AcksLeader
	// AcksNone waits only for validation; offsets are unknown (-1) and later failures are lost.
	AcksNone
)

// Compression is a batch compression codec.
type Compression = recordbatch.Compression

// The codecs; CompressionNone is the default.
const (
	CompressionNone   = recordbatch.CompressionNone
	CompressionGzip   = recordbatch.CompressionGzip
	CompressionSnappy = recordbatch.CompressionSnappy
	CompressionLZ4    = recordbatch.CompressionLZ4
	CompressionZstd   = recordbatch.CompressionZstd
)

// Logger receives the client's rare diagnostic messages (stream reconnects, retries).
type Logger interface {
	Printf(format string, args ...any)
}

type options struct {
	brokers          []string
	dialTimeout      time.Duration
	logger           Logger
	acks             Acks
	linger           time.Duration
	batchBytes       int
	maxBufferedBytes int64
	compression      Compression
	maxInFlight      int
	retryBackoff     time.Duration
	deliveryTimeout  time.Duration
	metadataMaxAge   time.Duration
	followerReads    bool
	// dialer, if set, opens the client's TCP connections (tests route them through a proxy).
	dialer func(ctx context.Context, addr string) (net.Conn, error)
}

func defaultOptions() options {
	o := options{
		brokers:          []string{DefaultBroker},
		dialTimeout:      10 * time.Second,
		acks:             AcksAll,
		linger:           0,
		batchBytes:       1 << 20,
		maxBufferedBytes: 64 << 20,
		maxInFlight:      16,
		retryBackoff:     100 * time.Millisecond,
		deliveryTimeout:  2 * time.Minute,
		metadataMaxAge:   5 * time.Minute,
	}
	if env := os.Getenv("RUNNEL_BROKERS"); env != "" {
		var bs []string
		for _, b := range strings.Split(env, ",") {
			if b = strings.TrimSpace(b); b != "" {
				bs = append(bs, b)
			}
		}
		if len(bs) > 0 {
			o.brokers = bs
		}
	}
	return o
}

// Option configures a Client.
type Option func(*options)

// WithBrokers sets the seed brokers (host:port). The client starts from the first one that
// answers and learns the others, and which broker leads each partition, from it (see Routing in
// the package documentation); the seeds are tried again when no known broker answers. Default: the comma-separated list in $RUNNEL_BROKERS if set, else
// 127.0.0.1:9420.
func WithBrokers(addrs ...string) Option {
	return func(o *options) {
		if len(addrs) > 0 {
			o.brokers = append([]string(nil), addrs...)
		}
	}
}

// WithDialTimeout bounds how long New waits for the first broker to answer, and each attempt
// of a metadata lookup on one broker before the next is tried. Default 10s.
func WithDialTimeout(d time.Duration) Option { return func(o *options) { o.dialTimeout = d } }

// WithLogger sets where the client logs reconnects and retries. Default: nowhere.
func WithLogger(l Logger) Option { return func(o *options) { o.logger = l } }

// WithAcks sets the producer's acknowledgement level. Default AcksAll (durable).
func WithAcks(a Acks) Option { return func(o *options) { o.acks = a } }

// WithLinger sets how long the producer waits for more records before sending a partition's
// batch that is not full. Default 0: a batch is sent as soon as the partition has a request
// slot free for it (two such small requests in flight per partition, or up to WithMaxInFlight
// while its records arrive 100 us apart or more), so a lone record is not delayed, and under
// load records gather into batches anyway while earlier requests are in flight (as franz-go
// does). Measured with
// `runnel bench produce --record-size 100 --records 1000000 --linger 0|5ms`: the same
// throughput, and with `--records 25000 --rate 5000` a p50 of 1.0 ms against 4.2 ms and a p99
// of 3.3-3.4 ms against 7.5 ms (docs/benchmarks.md). A linger > 0 trades latency for fewer,
// larger batches.
func WithLinger(d time.Duration) Option { return func(o *options) { o.linger = d } }

// WithBatchBytes sets the size at which a partition's batch is sent without waiting for the
// linger; batches are also kept within the topic's max.message.bytes. Default 1 MiB.
func WithBatchBytes(n int) Option { return func(o *options) { o.batchBytes = n } }

// WithMaxBufferedBytes bounds the bytes of records produced but not yet acknowledged. When the
// bound is reached, Produce blocks until acknowledgements free space or its context ends
// (back-pressure). A single record larger than the bound is accepted when nothing else is
// buffered. Default 64 MiB.
func WithMaxBufferedBytes(n int64) Option { return func(o *options) { o.maxBufferedBytes = n } }

// WithCompression sets the codec of produced batches. Default CompressionNone.
func WithCompression(c Compression) Option { return func(o *options) { o.compression = c } }

// WithMaxInFlight sets how many produce requests per partition may await acknowledgement at
// once. 1 keeps a partition's order across retries; more is faster but a retry may reorder.
// Default 16: the broker appends a stream's requests in order, so depth costs nothing without
// failures, and it keeps a partition's pipeline full while fsyncs of earlier batches run
// (`runnel bench produce --record-size 1024 --records 500000 --max-in-flight 16|5`: 422-428k
// against 371-376k records/s; see docs/benchmarks.md).
func WithMaxInFlight(n int) Option { return func(o *options) { o.maxInFlight = n } }

// WithRetryBackoff sets the wait before a retriable produce or subscribe failure is retried,
// and before a metadata change refused for want of a metadata leader is made again; metadata
// lookups of a topic in the background are at most one per backoff. Default 100ms.
func WithRetryBackoff(d time.Duration) Option { return func(o *options) { o.retryBackoff = d } }

// WithDeliveryTimeout bounds the time from Produce to the record's final outcome, retries
// included (Kafka's delivery.timeout.ms). Default 2 minutes.
func WithDeliveryTimeout(d time.Duration) Option { return func(o *options) { o.deliveryTimeout = d } }

// WithMetadataMaxAge sets how old the client's metadata of a topic (its partitions' leaders,
// its partition count and max.message.bytes) may get before it is looked up again, even when
// nothing failed. Leader changes are learned sooner, from NOT_LEADER errors. Default 5 minutes
// (Kafka's metadata.max.age.ms).
func WithMetadataMaxAge(d time.Duration) Option { return func(o *options) { o.metadataMaxAge = d } }

// WithFollowerReads makes the consumers (Consumer, GroupConsumer) read each partition from one
// of its followers instead of its leader, to spread reads over the replicas (Subscribe with
// allow_follower). Default false: every read goes to the partition's leader.
//
// A partition's follower is chosen from the metadata's replica list (the replicas other than
// the leader, the first for partition 0, the next for partition 1, and so on); the next is
// tried after a failure. A follower serves only what it knows is committed, so nothing is
// read that a leader change could take back, but it may lag the leader: it learns of a
// commit with the leader's next append, up to 5 s late while the partition is idle, and a
// follower cut off from its leader serves what it had until the stream fails. When a
// follower's stream fails (the broker is down, the replica moved, the resume offset is above
// the follower's committed end), the consumer resubscribes to the leader from the same
// offset, and goes back to a follower only after a failure there. Without a follower (one
// replica, a single-node broker) the leader is read. ListOffsets (AtTime, Latest via
// ListOffsets) still asks the leader.
func WithFollowerReads(on bool) Option { return func(o *options) { o.followerReads = on } }

func (o *options) logf(format string, args ...any) {
	if o.logger != nil {
		o.logger.Printf(format, args...)
	}
}
