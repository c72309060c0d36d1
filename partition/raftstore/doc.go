// Package raftstore is a partition's hashicorp/raft storage over its commitlog: the log is the
// Raft log (design decision 5: a partition's data is written once per replica), and a snapshot
// copies no segment data. commitlog/doc.go ("The log as a Raft log") is the design; this is how
// it is built, and ../shared/raft-log.md the traps it avoids.
//
// # Wiring (one partition)
//
//	snaps, _ := raftstore.NewSnapshotStore(filepath.Join(dir, "snapshots"), 2)
//	opts.RetentionGuard = snaps.LatestIndex          // trap 4
//	log, _ := commitlog.Open(filepath.Join(dir, "log"), opts)
//	snaps.SetLogFirstIndex(log.FirstIndex)           // stream only the retained segments
//	logs := raftstore.NewLogStore(log)
//	stable, _ := raftstore.OpenStableStore(nil, dir)
//	fsm := raftstore.NewFSM(logs, snaps, onAdvance)
//	conf.TrailingLogs = math.MaxUint64               // raft never asks for a prefix deletion
//	r, _ := raft.NewRaft(conf, fsm, logs, stable, snaps, transport)
//
// Do not wrap the LogStore in raft.LogCache (Restore replaces the log under it) and do not
// make it a raft.MonotonicLogStore. NoSnapshotRestoreOnStart stays false: restoring on start
// is cheap (idempotent: the log already holds the snapshot's entry) and sets the high
// watermark; it is also what finishes a Restore cut short by a crash.
//
// # LogStore
//
// StoreLogs maps raft.Log{Index, Term, Type, Data, Extensions, AppendedAt} to commitlog entries
// (LogType values equal EntryType values) and appends them, durable on return under SyncGroup.
// A command's Data must be one Kafka RecordBatch: the log validates it and writes its base
// offset into Data in place. That write is safe with raft: on the leader, dispatchLogs passes
// the futures' Log structs to StoreLogs before anything else reads them (the FSM later reads the
// same struct from the inflight list, and so sees the offset); replication reads entries back
// through GetLog (fresh copies), never the inflight structs. The caller of raft.Apply must not
// reuse its slice before the future returns. On a follower the decoded entries are stored and
// the offsets written are the ones the leader assigned (same entries, same order).
//
// GetLog of an absent index is exactly raft.ErrLogNotFound (the leader's only cue to send a
// snapshot). DeleteRange(min, max) starting at or before FirstIndex is a compaction and is
// ignored (prefix deletion belongs to retention); any other range is a conflict:
// TruncateFrom(min).
//
// Stale cached last index (trap 3): raft caches its last index and does not re-read it after
// installing a snapshot. The store remembers the last index raft stored (the "believed" end)
// and serves placeholder entries with term 0 for (log.LastIndex(), believed]; raft sees a term
// conflict there, calls DeleteRange (which forgets the placeholders) and appends normally. The
// same covers a truncation whose following append failed.
//
// # StableStore
//
// A small file (raft-stable) in the partition directory, rewritten whole on every Set through
// internal/vfs: temporary file, fsync, rename, directory fsync; CRC32C-checked on open. Get of
// a missing key fails with the message "not found" (raft compares it).
//
// # Snapshots
//
// The stream is "RNLSNAP1", a u32 manifest length, the manifest (JSON: ID, index, term, high
// watermark, configuration, and the segments with base index/offset, last index, next offset and
// byte length), then each segment's first Bytes bytes in order. meta.Size is exactly its length.
//
// Taking one (FSM.Snapshot, then Persist into this store's Sink) writes only meta.json: Persist
// asks the log for SnapshotSegments(index) (sealed segments whole, the segment holding the
// index cut just after it) and hard-links those files into the snapshot directory. The active
// segment is linked too and keeps growing under the link; only its recorded length is ever
// streamed, and those bytes never change (a Raft log truncates only above its commit index).
// Open streams lazily from the links, leaving out segments that retention has deleted from the
// log since (SetLogFirstIndex), so a new replica receives the retained log, not every byte the
// snapshot still pins. Sink.Close and Cancel are idempotent; a snapshot becomes visible by an
// atomic directory rename, and the store keeps the newest `retain`.
//
// Receiving one (InstallSnapshot on a follower): raft copies the stream into a Sink once; the
// sink parses the manifest and writes each segment into its file. Raft then opens that snapshot
// and calls FSM.Restore, which reads only the manifest from the stream: if the log already holds
// the snapshot's index with the same term (a restart, or the node's own snapshot; issue #697 is
// why the term is compared), nothing changes but the applied index and high watermark.
// Otherwise commitlog.Restore adopts the snapshot's files as the log: hard links for the sealed
// segments, a copy of the last (partial) one, which the log then appends to. commitlog.Restore is
// crash-safe (a marker file: after a crash the log is the old one, the new one, or empty, and
// raft's restore on start finishes the job). A stream that is not one of this store's snapshots
// (raft.Restore by an operator) is first staged from the stream.
//
// # FSM and the high watermark
//
// Apply of a command entry records the applied index and the high watermark, the offset after
// the applied batch (read from the batch header in Data, where the log wrote the base offset),
// and returns an ApplyResult{Index, BaseOffset, NextOffset} as the future's Response. Only
// commands reach the FSM (noops, barriers and configurations do not move the watermark).
// HighWatermark is what reads pass as commitlog.ReadOptions.MaxOffset; Changed returns a channel
// closed at the next advance (a fetch long-poll waits on it), and NewFSM's onAdvance callback
// runs on raft's FSM goroutine. After a restart without a snapshot the watermark starts at the
// log start and advances as raft re-applies committed entries.
//
// # Retention
//
// The log's RetentionGuard is the latest local snapshot's index, so raft's restart scan (from
// that index + 1) always finds its entries, and a leader has a snapshot before it can lack an
// entry a follower needs. Snapshots are taken by the partition (r.Snapshot, or raft's
// SnapshotThreshold/SnapshotInterval); each costs a few links and a small file.
//
// # Costs and limits
//
// A lagging follower downloads the whole retained log in one InstallSnapshot RPC. Snapshots pin
// segments retention deleted until they are reaped. Readers of the log retry (spin) for the
// short time a Restore swaps the segments.
package raftstore
