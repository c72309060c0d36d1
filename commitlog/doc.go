// Package commitlog is a partition's log on disk: Kafka RecordBatch v2 batches in segment files,
// found through sparse memory-mapped indexes, recovered exactly after a crash. It is also built
// to be the partition's Raft log (see "The log as a Raft log" below): every entry carries its
// Raft index, term and type, and offsets are derived from the entry order alone.
//
// # Directory
//
//	<dir>/00000000000000000000.log        segment: header + frames
//	<dir>/00000000000000000000.index      sparse offset index (mmap)
//	<dir>/00000000000000000000.timeindex  sparse time index (mmap)
//	<dir>/00000000000000004096.log        next segment, named by its base offset (%020d)
//	...
//	<dir>/recovery-point                  base offset of the first segment not known fully synced
//	<dir>/clean-shutdown                  present only between a clean Close and the next Open
//	<dir>/restore-in-progress             present only while Restore swaps the segments
//
// Files whose names end in .log, .index or .timeindex but are not 20 digits are refused
// (ErrCorrupt), never parsed as base offset 0. Other foreign files are ignored with a warning.
// Index files without their log (a deletion cut short) are removed; "*.tmp" leftovers of a
// checkpoint write are removed.
//
// # Segment file
//
// All integers are big-endian. A segment file starts with a 40-byte header, then frames:
//
//	0        8        10       12       16              24              32              40
//	+--------+--------+--------+--------+---------------+---------------+---------------+
//	| magic  | version| 0      | crc32c | base index    | base offset   | created (ms)  |
//	|RUNNELSG| u16 =1 | u16    | of 16:40| u64          | i64           | i64           |
//	+--------+--------+--------+--------+---------------+---------------+---------------+
//
// Each frame holds one entry:
//
//	0        4        8               16              24   25   26      28              36
//	+--------+--------+---------------+---------------+----+----+-------+---------------+------------+------------+
//	| length | crc32c | raft index    | raft term     |type|flag|ext len| appended (ns) | extensions | data       |
//	| u32    | u32    | u64           | u64           | u8 | =0 | u16   | i64           | ext len B  | the rest   |
//	+--------+--------+---------------+---------------+----+----+-------+---------------+------------+------------+
//
// length counts the bytes after itself. For type 0 (EntryBatch) the data is one Kafka
// RecordBatch v2, byte for byte as the producer sent it except its base offset (and,
// later, its partition leader epoch), which the log sets: both lie outside the batch's own CRC.
// The frame CRC32C covers bytes 8..36, the extensions, and for a batch the first 21 bytes of
// the batch (base offset, length, leader epoch, magic and the batch CRC, which in turn covers
// the rest); for any other type it covers the whole data. So every byte is under a checksum
// and each batch byte is hashed once on the write path beyond the producer's own CRC check.
//
// Frozen: the magic, the header and frame layouts, the type values (equal to hashicorp/raft's
// LogType: 0 command, 1 noop, 4 barrier, 5 configuration), the index entry layouts, the file
// names. A change of any of them is a new segment version.
//
// # Offsets
//
// Offsets come from the log alone: a batch's base offset is the log end offset when it is
// appended, and the end advances by its record count (lastOffsetDelta+1). Entries of other
// types take no offset. So every replica that holds the same entries in the same order holds
// the same offsets. A segment rolls only once it holds a batch, so base offsets (file names)
// are unique.
//
// # Indexes
//
// The offset index has one 12-byte entry (relative raft index u32, relative offset u32,
// position u32) at most every IndexIntervalBytes of log (4096 by default, like Kafka's
// index.interval.bytes; 1 indexes every entry). The time index has a 12-byte entry (timestamp
// i64, relative offset u32) at those same points whenever the segment's largest batch
// max-timestamp grew, plus one when the segment is sealed, so it is monotonic and its last
// entry is the segment's largest timestamp. Both files grow by exactly the entries written
// (WriteAt), never pre-grown: a crash cannot leave zero padding that reads as entries. Readers
// see them through one read-only shared mapping per file, reserved at the size a segment can
// need (pages past the end of file are never touched). The active segment's newest entries
// (up to 64 per index) are kept in memory, visible to readers, and written to the file 64 at a
// time and when the segment is sealed, truncated or closed (index.go): a crash loses them, and
// recovery rebuilds the active segment's indexes from its scan anyway.
//
// A read by offset binary-searches the offset index for the last entry at or below the offset
// and walks frames from there (at most an interval plus one frame). A read by Raft index does
// the same on the index column. A read by timestamp finds the first segment whose largest
// timestamp reaches it, the last time-index entry below it (every batch up to the one it names
// is older), walks to the first batch whose max timestamp reaches it, and decodes that batch
// for the first record at or after it.
//
// # Writes and durability
//
// One writer lock (Log.mu) serialises appends, rolls, truncation and deletion. An append
// validates its batches before taking the lock (magic, length, CRC32C, record count, offset
// deltas: see internal/recordbatch; the CRC32C is internal/crc32c's, folded with AVX-512 where
// the CPU has it), so a malformed batch is refused with ErrInvalidBatch and
// nothing of the call reaches the disk. Under the lock it writes the frames with one WriteAt
// past the segment end, then the index entries, then publishes with atomics: the segment size,
// the index counts, then the log end. Readers load those in the opposite order and never take
// the writer lock; they hold only the segment's lifecycle lock (shared), which truncation and
// deletion take exclusively.
//
// Append calls that overlap are written together (combine.go): one caller writes the queued
// calls' batches with one vectored write and wakes the others; each still returns only once its
// own batches are written and published.
//
// Under SyncGroup and SyncAlways the active segment file runs ahead of the log: the append that
// finds less than half of PreallocateBytes (1 MiB) written past the segment's end writes that
// much more as zeros, after its own frames, and the fsync it waits for makes them durable. Later
// appends overwrite allocated, written blocks of a file whose size does not change, so their
// fdatasyncs skip the journal commit (preallocate.go). The zeros are cut off before a segment is
// sealed and at Close, so only the active segment of a log that crashed ends in zeros; a zero
// frame header is invalid, so recovery's scan ends there as at a torn tail and cuts the file.
//
// Under SyncNone and SyncInterval the active segment's disk blocks are reserved instead,
// ReserveBytes (4 MiB) at a time with fallocate(FALLOC_FL_KEEP_SIZE), so that an append's
// pwrite lands in allocated blocks and skips ext4's per-block delayed-allocation work
// (reserve.go). The file's size does not change; the blocks past its end are given back when the
// segment is sealed and at Close.
//
// Sync policies: SyncGroup (the default; Append returns once durable, concurrent appends share
// one fdatasync, and one that runs slow gets a second started beside it: waitDurable),
// SyncAlways (one fdatasync per Append, under the lock), SyncInterval (a
// background flusher every SyncEvery or SyncEveryBytes: not durable on return) and SyncNone
// (only Sync, Close and sealing). A sealed segment is synced (log and both indexes) when it is
// sealed: inline under SyncGroup and SyncAlways, by the background flusher otherwise; then the
// recovery point advances past it. The directory is fsynced whenever a segment file is created
// or removed and after every checkpoint rename.
//
// A failed fsync fails the log (ErrFailed): after a failed fsync the kernel may have dropped
// the dirty pages, so retrying and reporting success would be a lie. A failed write (a full
// disk) is cut back off the segment and reported to every call written with it; the log stays
// usable. Reopening recovers.
//
// # Recovery
//
// Open trusts segments below the recovery point, or every segment when the clean-shutdown
// marker is present: it checks their indexes (whole entries, in order, positions inside the
// file; else it rebuilds them) and walks only the frames after the last index entry, fully
// verified. Anything wrong in a trusted segment is ErrCorrupt, never end-of-log.
//
// From the recovery point on (normally just the active segment: the tail) it scans every frame,
// verifying the frame CRC, the batch CRC and structure, index and offset continuity and term
// order, and rebuilds the indexes. At the first invalid frame it truncates the segment there
// (a torn tail, or the zeros written ahead of it), deletes every later segment, and syncs. A
// segment file shorter than its header at the very end (a crash right after creating it) is
// dropped. The marker is removed, durably, before Open returns, so a crash after a clean
// restart is not mistaken for a clean shutdown.
//
// Reads verify each returned batch's CRC32C (unless SkipReadVerification), so a bit flip in a
// sealed segment surfaces as ErrCorrupt on the read that meets it.
//
// # Retention and truncation
//
// Retention deletes whole segments from the oldest, never the active one: by total bytes
// (RetentionBytes) and by age of the newest record (RetentionAge), within RetentionGuard.
// DeleteSegmentsBefore and DeleteSegmentsThrough delete whole segments below an offset or Raft
// index (log compaction by the replication layer). Truncate(offset) and TruncateFrom(index)
// remove a suffix (a Raft conflict, or a follower realigning), durably.
//
// # Snapshots and Restore
//
// SnapshotSegments(index) describes the segments holding [FirstIndex, index], the last cut just
// after the entry index (its byte length and next offset there): what a snapshot links. Restore
// replaces the whole log with given segment files (a follower installing a snapshot): it makes
// a restore-in-progress marker durable, removes every segment, places the new files (hard links
// through RestoreOptions.Link, except the last, which is copied up to RestoreOptions.LastBytes
// because the log appends to it), syncs the directory, removes the marker and recovers the log
// from the files with every frame verified; it fails with ErrCorrupt unless the result ends at
// exactly the expected index and term. Open treats a marker it finds as a restore cut short:
// it discards every segment (an empty log), never mixing old and new; the caller restores again
// from the snapshot it still holds.
//
// # The log as a Raft log (design for the partition's Raft group)
//
// Design decision 5: a partition's data is written once per replica, so this log is the
// partition's hashicorp/raft LogStore, not a second copy beside it. Package partition/raftstore
// adapts it as follows; what that needs of this package is implemented here.
//
//   - StoreLog(s) maps raft.Log{Index, Term, Type, Data, Extensions, AppendedAt} to Entry and
//     calls AppendEntries, which returns once durable under the default SyncGroup. A command's
//     Data is one RecordBatch as the producer sent it; the log assigns its base offset in
//     place, so every replica derives the same offsets from the same order (decision 3).
//   - GetLog(i) calls Entry(i); an absent index must be reported as raft.ErrLogNotFound itself
//     (raft sends a snapshot only on exactly that error). FirstIndex/LastIndex are the log's.
//   - DeleteRange(min, max): raft calls it for a conflict (max = its cached last index) and
//     for compaction after a snapshot. A range that starts at or before FirstIndex is a
//     compaction and is ignored (prefix deletion belongs to retention); any other range is a
//     conflict and maps to TruncateFrom(min). Config.TrailingLogs = math.MaxUint64 keeps raft
//     from asking for compaction at all.
//   - Snapshots copy no segment data: FSM.Snapshot persists a small manifest (applied index,
//     term, high watermark, and the list of segments with their base index/offset and sizes,
//     the last one's length cut at the snapshot index, from SnapshotSegments). The snapshot
//     store hard-links those segment files (the active one too: only its recorded length is
//     used, and those bytes never change); Open of a snapshot streams the manifest and then the
//     segment bytes of the segments the log still retains, with meta.Size equal to the exact
//     byte count. A follower that receives one writes the segments into the snapshot's
//     directory, and Restore adopts them as the log (see "Snapshots and Restore"); a follower
//     whose log already holds the snapshot's index with the same term does nothing (Restore is
//     idempotent). A follower whose longer diverged tail survives a restore is served
//     placeholder term-0 entries above the snapshot index so raft truncates it.
//   - Retention in a replicated partition runs with RetentionGuard = the latest local
//     snapshot's index, so raft's restart scan (from the snapshot index + 1) always finds its
//     entries, and a leader always has a snapshot before it could need to send one.
//   - The high watermark is the applied index mapped to an offset; readers pass it as
//     ReadOptions.MaxOffset, so no replica serves records beyond what it knows is committed.
package commitlog
