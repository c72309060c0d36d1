// Package consumergroup is a consumer group coordinator's assignment logic in the spirit of
// Kafka's KIP-848: the broker, not a client leader, computes who owns which partition. It is
// a pure, deterministic state machine: no clocks, goroutines or I/O. Events come in as
// method calls carrying the time (Heartbeat, Leave, Tick, SetTopicPartitions); results come
// out as return values (HeartbeatResponse, expired member ids, errors). The caller (the
// broker's coordinator) serializes calls, persists what it must and drives Tick.
//
// # Epochs
//
// The group epoch advances whenever membership, a subscription, or the partition count of a
// subscribed topic changes; the target assignment is recomputed at once (so a group is never
// seen "assigning"). Each member has a member epoch: 0 to join (the coordinator assigns the
// member id m1, m2, ... unless the member brings one), then the epoch of its last response.
// A heartbeat with another epoch is refused with FENCED_MEMBER_EPOCH, except the member's
// previous epoch when it owns nothing beyond its assignment (the response that advanced it
// was lost); an unknown member id gets UNKNOWN_MEMBER_ID. Epoch -1 in a heartbeat leaves,
// -2 leaves temporarily (static members). CommitAllowed admits offset commits only from a
// present member at its current epoch (else STALE_MEMBER_EPOCH or UNKNOWN_MEMBER_ID).
//
// # Target assignment
//
// Per topic, the partitions are spread over the members subscribed to it, counts differing
// by at most one (members may subscribe to different topics). It is sticky: each member
// keeps the lowest-numbered of its previous target partitions up to its quota, the members
// that had the most get the +1 quotas, and only the excess and unowned partitions move, in
// member id order. A join therefore moves at most ceil(P/N) partitions of a topic.
//
// # Reconciliation (revocation before reassignment)
//
// On each heartbeat a member's assignment (what it may own now) follows its target:
// partitions outside the target leave the assignment at once; while the member still
// reports owning any of them (Owned) it stays at its old epoch ("unrevoked") and gets
// nothing new, and it must finish within its rebalance timeout or Tick removes it. Once it
// owns nothing outside its target its epoch advances to the group epoch, and it is given
// each target partition that no other member is assigned or still reports owning
// ("unreleased" until it has them all). So a partition reaches its new owner only after the
// old owner's heartbeat stops listing it, or the old owner left or expired. What a member
// reports owning counts only for partitions it was given, so it cannot block others with
// partitions it never had.
//
// # Session timeout and static membership
//
// Tick removes members that have not heartbeated for the session timeout (10 s default, or
// the member's own HeartbeatRequest.SessionTimeout).
// A member with an InstanceID is static: when it leaves without Permanent (or epoch -2) it
// is kept "away" with its assignment for a session timeout, and a join with the same
// InstanceID within that time takes over its place, assignment and epoch under a new member
// id, without bumping the group epoch, so the others see no rebalance. A join with an
// InstanceID whose member is still present replaces (fences) that member. Away members own
// nothing; their assignment keeps following their target so it is ready when they return.
//
// Describe reports the group state (empty, reconciling, stable), the group epoch and each
// member's epoch, state (stable, unrevoked, unreleased, away), subscriptions, assignment,
// target and last reported ownership, for `runnel group describe`.
//
// # Test scripts
//
// testdata/*.txt are scenarios run by TestScripts, one command a line, "#" comments.
// Times t= are milliseconds from the script's start (omitted: unchanged). Partition lists
// are comma-separated topic:N or topic:N-M items (orders:0-2,payments:1; empty for none).
//
//	config session=MS rebalance=MS        group config (first line only)
//	partitions TOPIC N                    SetTopicPartitions
//	heartbeat t=MS member=ID|- instance=I epoch=N|cur subscribe=T1,T2 owned=LIST|* rebalance=MS session=MS
//	                                      subscribe omitted: unchanged; owned=* the member's
//	                                      current assignment
//	leave t=MS member=ID|instance=I [permanent]
//	tick t=MS                             Tick
//	commit member=ID epoch=N              CommitAllowed
//	settle t=MS                           every present member heartbeats its assignment
//	                                      until the group is stable
//	expect [member=ID] [epoch=N] [assign=LIST] [error=CODE|none]   the last heartbeat's
//	                                      response (error defaults to none); after leave or
//	                                      commit only error=; after tick expired=ID,ID
//	expect-members ID...                  the present members (away ones included)
//	expect-member ID [epoch=] [state=] [instance=] [assign=] [target=] [owned=]
//	expect-group [epoch=N] [state=S]
//
// After every command the test checks that no partition is assigned to two members and that
// no member owns a partition assigned to another.
package consumergroup
