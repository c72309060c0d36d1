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
// Batches travel on one ProduceService.ProduceStream per client: requests are pipelined, up
// to WithMaxInFlight per partition, and matched to responses by correlation id. The broker
// appends a partition's batches in the order they arrive on the stream, which is the order the
// producer built them. Against a broker without ProduceStream the producer falls back to
// unary Produce calls, one per partition at a time.
//
// Retriable failures (UNAVAILABLE, DEADLINE_EXCEEDED, a broken stream, after which every
// request in flight on it is sent again on a new stream) are retried after WithRetryBackoff
// until WithDeliveryTimeout has passed since the record was produced; other failures
// (INVALID_ARGUMENT, RECORD_TOO_LARGE, UNKNOWN_TOPIC, ...) go to the record's callback at once.
//
// Delivery is at least once. There is no idempotent producer yet, so:
//   - a retry can duplicate records: a request whose answer was lost (a broken stream, a
//     timeout) may have been appended before it is sent again;
//   - a retry can reorder a partition when WithMaxInFlight is above 1: the batches sent after
//     the failed one may be appended before it is retried. WithMaxInFlight(1) keeps the order
//     (at some cost in throughput).
//
// # Consumer
//
// A Consumer reads the partitions assigned to it (Assign; there is no group membership or
// partition balancing yet), each over its own FetchService.Subscribe stream, decoding the
// batches on the client. A broken stream is resumed from the last offset received after
// WithRetryBackoff, for retriable errors; other errors end the partition and are returned by
// Poll. With WithGroup, Commit (and Close, and WithAutoCommit) commits the offset after the
// last record consumed of each partition, and Committed positions resume from it.
//
// # Routing
//
// The client talks to one broker (the first of WithBrokers that answers), which is all a
// single-node Runnel has. Routing each partition to its leader (GetMetadata, NOT_LEADER
// redirects) comes with clustering.
//
// # Errors
//
// Failures reported by the broker are *Error values (use errors.As) with the gRPC code, the
// reason (e.g. "RECORD_TOO_LARGE"), the topic and partition, and the broker's ErrorInfo.
// IsRetriable tells whether a retry may succeed.
package client
