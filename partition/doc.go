// Package partition is one partition of a topic on this broker: the layer the broker's gRPC
// handlers call for Produce, Fetch, Subscribe, ListOffsets and DescribeTopics. It owns the
// partition's commitlog (opened with the topic's config, topic.Config.LogOptions), refuses
// what the API documents as invalid before anything reaches the log, tracks the high
// watermark, and lets fetches at the end of the log wait for new records without spinning.
//
// # High watermark
//
// Readers never see past the high watermark (HighWatermark, FetchResult.HighWatermark,
// Latest): reads pass it to commitlog as ReadOptions.MaxOffset. On a single node the high
// watermark is the log end offset as of the last Append that returned successfully: with the
// default sync policy (commitlog.SyncGroup, or SyncAlways) that is the end of what is durable,
// so a consumer never sees a record a crash could take back (design decision 4, acks=all).
// Under SyncInterval or SyncNone it is the end of what was written, not durable. A record
// being appended is invisible until its Append is about to return, even though commitlog has
// already published it. On Open the high watermark is the recovered log end.
//
// # Long poll
//
// Fetch returns at once when MinBytes of batches are available past the offset (or the
// MaxBytes budget is full); otherwise it waits until enough arrives, MaxWait passes, its
// context ends, or the partition closes. Waiting fetches share one channel that the next
// advance of the high watermark closes and replaces (under a mutex, and only when somebody
// waits), so one append wakes every waiter and an idle waiter costs nothing.
//
// # Errors
//
// Every error names the topic and partition. Sentinels to map to API codes with errors.Is:
// ErrEmptyRequest (INVALID_REQUEST), commitlog.ErrInvalidBatch (INVALID_RECORD; also wrapped
// by ErrUnsupportedBatch), ErrRecordTooLarge (RECORD_TOO_LARGE, *RecordTooLargeError carries
// the limit), commitlog.ErrOffsetOutOfRange (OFFSET_OUT_OF_RANGE; *commitlog.OffsetRangeError
// carries the log start offset as Start and the high watermark as End), ErrClosed
// (SHUTTING_DOWN or, after deletion, UNKNOWN_TOPIC), commitlog.ErrCorrupt (CORRUPT_DATA),
// commitlog.ErrFailed (STORAGE_ERROR), ErrReopenRequired (UpdateConfig).
//
// # What changes with replication (the cluster issue)
//
// The API is meant to stay: Append, Fetch, the offset lookups, Stats, Close and Delete keep
// their signatures. Underneath, a Raft group replaces the direct append:
//
//   - Append proposes the batches to the partition's Raft group (the commitlog becomes its
//     LogStore, see commitlog's package doc) and returns once they are committed (acks=all),
//     or appended locally (acks=leader). ctx then bounds the wait for the commit; a follower
//     refuses with a not-leader error before appending.
//   - The high watermark becomes the committed index mapped to an offset (the FSM's applied
//     index), not the local durable log end; the FSM's apply advances it and wakes fetchers
//     exactly as Append does here. It may then trail the local log end, and truncation (a Raft
//     conflict) may cut the local log above it, never below.
//   - Retention runs with RetentionGuard set to the latest snapshot index.
//   - Reads: the leader serves them once its Barrier returned (ServesReads); any replica may
//     serve follower reads (ServesFollowerReads) up to its own high watermark, which on a
//     follower is what it knows committed and holds (see ServesFollowerReads).
package partition
