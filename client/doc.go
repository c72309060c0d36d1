// Package client is the Go SDK for Runnel: a producer, consumers and admin calls over the
// broker's gRPC API (package runnelv1).
//
//	cl, err := client.New(ctx, client.WithBrokers("127.0.0.1:9420"))
//	...
//	defer cl.Close()
//	cl.Produce(ctx, &client.Record{Topic: "orders", Key: []byte("customer-7"), Value: v},
//		func(r *client.Record, err error) { ... r.Partition, r.Offset ... })
//	err = cl.Flush(ctx)
//
//	c := cl.NewConsumer(client.WithGroup("billing"))
//	c.Assign("orders", 0, client.Committed())
//	err = c.Run(ctx, func(r *client.Record) error { ...; return nil })
//
// # Producer
//
// The producer partitions records on the client (keyed records by Kafka's murmur2
// partitioner, keyless ones by sticky partitioning, see Record.ManualPartition), builds
// Kafka RecordBatch v2 batches per partition (compressed if WithCompression), and sends a
// partition's batch when it reaches WithBatchBytes (kept within the topic's
// max.message.bytes), or when the partition has a request slot free and WithLinger (default
// 0) has passed since the batch's first record. The bytes of
// records not yet acknowledged are bounded by WithMaxBufferedBytes: Produce blocks when it is
// reached (back-pressure).
//
// Batches go to their partition's leader (see Routing), on one ProduceService.ProduceStream
// per broker: requests are pipelined, up to WithMaxInFlight per partition, and matched to
// responses by correlation id. The broker appends a partition's batches in the order they
// arrive on the stream, which is the order the producer built them. Against a broker without
// ProduceStream the producer falls back to unary Produce calls, one per partition at a time.
//
// Retriable failures (UNAVAILABLE, DEADLINE_EXCEEDED, a broken stream, after which every
// request in flight on it is sent again) are retried until WithDeliveryTimeout has passed since
// the record was produced: at once at the leader a NOT_LEADER names (the first time; after
// WithRetryBackoff if it happens again), else after WithRetryBackoff, where fresh metadata
// says the leader is when the error calls for it. When a batch of a partition is to be sent
// again, the partition's later batches in flight are waited for first, so that a partition
// refused as a whole (NOT_LEADER) goes out again in its order. UNKNOWN_TOPIC and
// UNKNOWN_PARTITION are retried a few times while fresh metadata has the partition (a new
// topic's partitions reach their brokers a moment after CreateTopic returns), and fail the
// record's callback as soon as the metadata says the topic does not exist. Other failures
// (INVALID_ARGUMENT, RECORD_TOO_LARGE, ...) go to the callback at once.
//
// Delivery is at least once. There is no idempotent producer yet, so:
//   - a retry can duplicate records (never lose them, with AcksAll): a request whose answer
//     was lost may have been appended, and committed, before it is sent again. That happens
//     when a stream breaks or a request times out, when the leader dies after appending (or
//     committing) a batch and before answering, and when a NOT_LEADER comes after the batch
//     was proposed (leadership lost while waiting for the replicas, which the broker reports
//     as indeterminate);
//   - a retry can reorder a partition when WithMaxInFlight is above 1 and the batches sent
//     after the failed one were appended: they are then before it in the log.
//     WithMaxInFlight(1) keeps the order (at some cost in throughput).
//
// # Consumer
//
// A Consumer reads the partitions assigned to it (Assign; for group membership and partition
// balancing see the group consumer below), each over its own FetchService.Subscribe stream to the partition's
// leader, decoding the batches on the client. A stream that ends with a retriable error is
// resumed from the last offset received: at once at the leader a NOT_LEADER names, else after
// WithRetryBackoff at the leader fresh metadata names (NOT_LEADER, LEADER_NOT_AVAILABLE, a
// broken stream or a broker gone). An OFFSET_OUT_OF_RANGE above the high watermark for an
// offset an earlier broker already served (a new leader that does not know its commit index
// yet) is retried likewise, a few times. Other errors end the partition and are returned by
// Poll. With WithGroup, Commit (and Close, and WithAutoCommit) commits the offset after the
// last record consumed of each partition, and Committed positions resume from it.
//
// # Group consumer
//
// NewGroupConsumer makes the client a member of a consumer group: the group's coordinator
// (the broker, or in a cluster the metadata leader) assigns it a balanced, sticky share of the
// partitions of the topics it subscribes to, and moves partitions as members join, leave or
// die (a member silent for WithSessionTimeout is removed). A background goroutine heartbeats
// (GroupService.Heartbeat) at the interval the coordinator asks, at most a third of the session
// timeout, reporting the partitions the member owns. Run hands out the owned partitions'
// records, and between records applies assignment changes: a revoked partition is no longer
// handed out, OnRevoked is called, what the handler finished is committed, and only then is the
// partition released (the next heartbeat, sent at once, stops listing it), so its next owner
// starts exactly after the last record handled. New partitions start from the group's committed
// offset (WithGroupStart where it has none), after OnAssigned. Commits carry the member id and
// epoch: a member the group removed (a zombie) cannot commit. Delivery is at least once: a
// member that dies loses what it handled since its last commit (WithGroupAutoCommit, default
// 5 s), and its successor handles those records again. A member told it is unknown or fenced
// (removed, or the coordinator moved) gives up every partition without committing and rejoins,
// keeping its member id. Close commits, leaves the group (a static member, WithInstanceID,
// only temporarily: it gets its partitions back if it returns within the session timeout) and
// stops.
//
// # Routing
//
// New starts from the first seed broker (WithBrokers) that answers DescribeCluster, which also
// names the cluster's other brokers. The client keeps one gRPC connection per broker address,
// opened on first use and shared by the producer, the consumers and admin calls, and closed by
// Close.
//
// Each partition's produce, Subscribe and ListOffsets go to its leader, which the client learns
// from AdminService.GetMetadata: a topic is looked up on first use, again when an error says
// the client's view is wrong (NOT_LEADER without a leader named, LEADER_NOT_AVAILABLE, a broker
// unreachable or shutting down, UNKNOWN_TOPIC), and again when it is older than
// WithMetadataMaxAge (5 minutes), checked as the topic is used. A NOT_LEADER that names the
// leader (leader_id, leader_address) updates the partition at once. Metadata, topic
// descriptions and the other calls any broker can answer go to the broker that answered last;
// if it does not answer, to the other brokers the client knows of, then to the seeds, so a
// client whose broker died moves on to the others.
//
// WithFollowerReads (default off) sends the consumers' Subscribe streams to one of a
// partition's followers instead (allow_follower): it serves what it knows is committed, which
// may trail the leader by a moment (up to 5 s on an idle partition); a stream that fails there
// is resumed at the leader.
//
// Calls that change metadata (CreateTopic, DeleteTopic, AlterTopicConfig, RebalanceCluster,
// CommitOffsets, FetchCommitted, and the group consumer's heartbeats, commits and leave) go to the metadata leader if the client knows it, else to
// any broker; one refused with NOT_METADATA_LEADER is made again at the leader the error
// names, and one refused while there is no leader (NOT_METADATA_LEADER without a leader named,
// LEADER_NOT_AVAILABLE) is made again after WithRetryBackoff, a few times. A call whose broker
// became unreachable is made again on another broker, so a call whose answer was lost may have
// been made twice (a CreateTopic then fails with TOPIC_ALREADY_EXISTS).
//
// Against a broker without GetMetadata (from before clustering) everything goes to the broker
// the client connected to.
//
// # Errors
//
// Failures reported by the broker are *Error values (use errors.As) with the gRPC code, the
// reason (e.g. "RECORD_TOO_LARGE"), the topic and partition, and the broker's ErrorInfo.
// IsRetriable tells whether a retry may succeed.
package client
