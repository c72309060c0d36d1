// Package cluster is Runnel's control plane: who the brokers are (Serf), what the cluster
// holds (the metadata Raft group and its state machine), and where each partition's replicas
// live (placement). It is transport-agnostic: the caller hands it a raft.Transport (in
// runneld, a group of the shared cmux port's Raft transport; in tests raft.InmemTransport).
// It does not run partitions: the broker watches the applied metadata (Cluster.Watch) and
// creates or removes its local replicas.
//
// # Who decides what (design.md decision 6: Serf detects, Raft decides)
//
//   - Serf (membership.go) gossips each broker's tags: its broker id, advertised gRPC
//     address, Raft address, data-dir incarnation, and, while it is a non-voter, the metadata
//     index it has applied. Serf's events are hints; nothing acts on them directly.
//   - The metadata leader (meta.go, Cluster.loop) reconciles on every Serf event, every
//     applied change and every ReconcileInterval: it commits broker records from Serf's view
//     (alive, failed, left), then brings the Raft configuration in line with them, then the
//     replica assignments. Every decision is a committed command, so a new leader picks up
//     where the old one stopped; it first issues a Barrier so it acts on everything
//     committed.
//   - Placement (placement.go) is pure: Assign (new topics), Repair (replicas of lost
//     brokers, under-replicated partitions) and PlanRebalance compute replica lists from their
//     inputs alone; the leader commits their output.
//   - Every broker applies the same commands to the same state (fsm.go), so any broker
//     answers metadata reads. Changes (create/delete/alter topic, commit offsets, rebalance)
//     are proposed on the metadata leader only; a follower returns a *NotLeaderError with
//     the leader's id and gRPC address (not forwarded: the broker maps it to UNAVAILABLE
//     with the leader's address, as for a partition, and the client retries there).
//
// # Identity, voters, and wiped data dirs
//
// A broker's id is kept in <data-dir>/broker-id (LoadOrCreateBrokerID) and its data dir's
// incarnation, a random UUID created with the directory, in <data-dir>/incarnation. Its Raft
// server id is "<broker id>/<incarnation>", so a broker whose data dir was wiped comes back
// as a different Raft server. The leader removes the old identity from the configuration and
// adds the new one as a non-voter; it promotes a non-voter only once the non-voter gossips an
// applied index at least the index at which it was added (caught up), and only while there
// are fewer voters than Config.Voters (3 by default; 1, 3, 5 or 7). More brokers stay
// non-voters, and one is promoted when a voter is removed.
//
// hashicorp/raft grants a vote from any server with an empty log and no configuration, so
// a wiped broker answering at its old address could vote in place of the server it was. The
// vote guard (meta.go) wraps the transport and refuses vote and pre-vote requests while this
// broker is not a voter in the latest configuration it holds. Refusing a vote never breaks
// safety.
//
// The first broker bootstraps a one-voter cluster when it has no Raft state and no seed to
// join (Config.Join empty). Every other broker starts empty and waits to be added by the
// leader after it has joined Serf.
//
// Broker lifecycle as the leader sees it (Since is the leader's clock when the state was
// entered, carried in the command):
//
//	alive  --Serf failed-->  failed  --FailedTimeout-->  removed from Raft; replicas moved
//	alive  --Serf left---->  left    (at once)           removed from Raft; replicas moved
//	failed/left --Serf alive, same incarnation--> alive (re-added as a non-voter if it had
//	                                                      been removed)
//	any    --Serf alive, new incarnation-------> alive, old Raft identity removed, new one
//	                                             added as a non-voter, promoted when caught up
//
// Cluster.Leave transfers leadership away first if it leads, then leaves Serf; Close stops
// without leaving (a restart is not a departure).
//
// # The state (fsm.go; bbolt file <data-dir>/meta/state.db)
//
//	meta/applied                       last applied Raft index (uint64 BE)
//	meta/cluster_id                    the cluster's id (set-cluster-id: the first one stays)
//	brokers/<id int32 BE>              {id, addr, raft_addr, incarnation, state, since_ms, voter}
//	topics/<name>                      {name, id, configs (overrides), partitions,
//	                                    replication_factor, created_at_ms}
//	partitions/<topic>/<p int32 BE>    {replicas (preferred leader first), epoch}
//	groups/<group>/<topic>\x00<p BE>   {topic_id, offset, metadata, at_ms} (binary since
//	                                   session 6, JSON before; command_offsets.go)
//
// The Raft log and stable store are raft-boltdb (<data-dir>/meta/raft.db); snapshots are a
// file snapshot store (<data-dir>/meta/snapshots). A snapshot copies the bbolt file in one
// read transaction (tx.WriteTo) to a temporary file that Persist streams (holding the read
// transaction until Persist could deadlock against a Restore); a restore writes the stream to a temporary file, syncs it,
// opens it to check it, and renames it over the state file. Because the state file persists,
// Apply skips entries at or below meta/applied (Raft replays its log from the last snapshot
// on start). Apply batches (raft.BatchingFSM) are one bbolt transaction, not synced: the Raft
// log and the snapshots make commands durable, and the file only saves a replay. A process
// crash loses none of its writes (they are in the page cache); a machine crash may tear it,
// so it carries a marker naming the boot that writes it (state.db.boot, removed on a clean
// close after a final sync), and a file whose marker names another boot is removed at open
// and rebuilt from the newest snapshot and the log, the broker holding its replicas still
// until the replay reaches what the log held (Cluster.CaughtUp; state.db.rebuild marks a
// rebuild until then, and one that a crash cut short starts over; fsm_boot.go;
// TestClusterRestartAfterMachineCrash and its follower twin in internal/node). So the
// file is normally at or ahead of the newest snapshot, and Raft is told not to restore that
// snapshot at start when the file holds applied entries (Config.NoSnapshotRestoreOnStart):
// restoring it would rewind the metadata to the snapshot until the replay caught up, and a
// broker syncing its replicas in that window removed the directories of topics created
// since (TestClusterRestartAfterMetadataSnapshot in internal/node). The exception is a
// snapshot installed from the leader whose restore a crash cut short (Raft persists the
// snapshot, then calls Restore): the file's applied index is then below the one inside the
// snapshot, which the broker compares at start (restoreAtStart), and Raft restores it
// (TestClusterRestartBehindMetadataSnapshot).
//
// # The commands (command.go)
//
// An entry is | version (1 byte) | type (1 byte) | payload length (uint32 BE) | JSON payload |
// (binary for commit-offsets-batch-bin, the coordinator's batches: command_offsets.go),
// the length capped (MaxCommandBytes) and checked to match exactly, unknown versions and
// types refused, payloads validated. Types: upsert-broker, remove-broker, create-topic (with
// its replica lists, epoch 1), delete-topic (optionally of one topic id), alter-topic (the
// new overrides), set-assignments (new replica lists; each changed partition's epoch + 1),
// commit-offsets, commit-offsets-batch (several groups' commits in one entry: the group
// coordinator's batches, in JSON; still applied, no longer proposed), commit-offsets-batch-bin
// (the same in binary: what the coordinator proposes), delete-group, set-cluster-id (proposed by a leader that finds no id: the
// founding broker). Apply reads no clock: times are in the commands. A command
// the state rejects (topic exists, unknown topic, stale topic id, ...) is rejected the same
// way on every replica, and the proposer gets the error. A partition's epoch changes exactly
// when its replica list does, so a broker can tell a newer assignment from an older one.
//
// # Not here yet
//
// The partitions' own Raft groups (partition/, the broker), moving consumer-group state from
// broker/offsets.go onto CommitOffsets/FetchOffsets/DeleteGroup, decommissioning a broker for
// good (remove-broker exists as a command; no API proposes it), and rack awareness.
package cluster
