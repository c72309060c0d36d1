// Package raftnet is a multiplexed raft.Transport: every Raft group of a broker (one per
// partition, hundreds per broker) talks to the same group on the other brokers over a few
// shared connections per broker pair, on the broker's one port.
//
// # Why
//
// With hashicorp/raft's NetworkTransport every group has its own listener and connections, and
// every message costs a write system call and a wakeup on both ends; idle groups cost CPU in
// proportion to their number (see ../shared/raft-log.md, "Many groups per broker"). Here one
// writer goroutine per connection puts every queued frame of every group into one buffered
// write, and holds lazy frames (heartbeats, AppendEntries without entries, and their responses)
// up to Config.Linger (default 10ms) so that other groups' frames join the same write. Anything
// else (entries, votes, TimeoutNow, their responses) is written at once, together with what is
// held, by the goroutine that sends it when no write is in progress (no hop through the writer
// goroutine), else by whoever is writing.
//
// Each broker dials two multiplexed connections to each peer: a control lane (heartbeats,
// votes, TimeoutNow, AppendEntries without entries) and a bulk lane (AppendEntries with
// entries), so that heartbeats never queue behind megabytes of entries in TCP buffers; with
// hundreds of groups on one stream they otherwise did, and leaders lost their lease under load.
// Within a connection, heartbeats and votes are also queued ahead of bulk frames.
//
// Idle groups send little at all: Raft's heartbeats are coalesced into one exchange per broker
// pair per second (beats.go), and an idle leader's repeated empty AppendEntries are answered
// from the follower's last answer while its beats say it is alive (idle.go). Liveness probes
// (liveness.go) report a dead leader's broker so that followers elect at once.
//
// # Use
//
//	n, _ := raftnet.New(raftnet.Config{Advertise: "10.0.0.1:9420", Listener: raftLn})
//	trans, _ := n.Transport("orders/3") // one per group
//	r, _ := raft.NewRaft(conf, fsm, logs, stable, snaps, trans)
//
// Server addresses in Raft configurations are broker addresses (Config.Advertise of the peer);
// the group name routes a request to the same group on the peer. A request for a group the
// peer has not created (yet) gets an error response at once, and raft retries with its backoff.
// Transport.Close (raft calls it on Shutdown) removes only that group; Network.Close closes
// everything but Config.Listener (closing a cmux listener would close the broker's port; its
// owner closes it, after Network.Close, and until then Raft connections are closed on arrival).
//
// # One port, split by cmux
//
// Every Raft connection starts with Marker (0x1e: below 0x20, so it can be neither HTTP/1 nor
// HTTP/2). The broker's cmux routes those connections to the Network:
//
//	cfg.Mux = func(m cmux.CMux) { raftLn = raftnet.Listen(m) } // m.Match(raftnet.Match)
//
// cmux replays the sniffed bytes, so the Network reads the Marker again and checks it. The
// Network writes the preamble itself after Config.Dial returns, so a custom Dial (TLS, a test
// network) only has to connect.
//
// # Wire format
//
// A connection starts with a 3-byte preamble:
//
//	[Marker 0x1e][version 1][type: 1 multiplexed, 2 snapshot]
//
// then carries frames, all integers big-endian:
//
//	[u32 length][u8 kind][u64 request id][u16 group-name length][group name][payload]
//
// length counts the bytes after itself (11 + name + payload). A reader rejects a length above
// Config.MaxFrame (default 128 MiB) or below 11, and a group-name length above 1024 or beyond
// the frame, before allocating. A frame above 1 MiB is read into a buffer of its own (handed
// to the group without a copy), allocated at once up to 16 MiB and beyond that grown as the
// bytes arrive, so a lying length prefix costs at most 16 MiB or about what was actually sent.
//
// Kinds:
//
//	1 AppendEntries   payload: msgpack raft.AppendEntriesRequest
//	2 RequestVote     payload: msgpack raft.RequestVoteRequest
//	3 InstallSnapshot payload: msgpack raft.InstallSnapshotRequest (snapshot connections only)
//	4 TimeoutNow      payload: msgpack raft.TimeoutNowRequest
//	5 RequestPreVote  payload: msgpack raft.RequestPreVoteRequest
//	6 SnapshotChunk   payload: raw snapshot bytes; an empty chunk ends the data
//	7 Heartbeat       payload: msgpack raft.AppendEntriesRequest that is raft's heartbeat
//	0x80 Response     payload: msgpack of the request's response struct
//	0x81 Error        payload: UTF-8 error text (raft's error, or the peer's refusal)
//
// msgpack is go-msgpack/v2 with raft's NetworkTransport settings (TimeNotBuiltin).
//
// A multiplexed connection is one-way in its requests: the dialer sends requests of any group,
// the acceptor answers each with a Response or Error frame carrying the request's id and group,
// in any order (ids are per connection). Each side dials its own connections to the other (a
// control and a bulk lane; the acceptor treats them alike), so a broker pair has four. An
// AppendEntries pipeline (Config.MaxRPCsInFlight requests in flight) sends requests with
// entries on the bulk lane, and empty ones too while any of those are in flight, so that a
// group's appends arrive in order; an idle group's empty appends go on the control lane. Its
// futures complete in the order sent.
//
// InstallSnapshot uses a connection of its own (type 2), dialed for one snapshot and closed
// after it: the request frame, the data as SnapshotChunk frames of up to 64 KiB, an empty
// chunk, then one Response or Error frame back. The receiver hands raft an io.Reader that
// decodes the chunk frames straight from the connection, so a snapshot never sits in memory
// and never delays other groups' traffic.
//
// # Failures and time limits
//
// Connections are dialed on first use. When one fails (read or write error, or a request timed
// out with nothing at all received on the connection since it was sent), its outstanding
// requests fail at once and the next request redials. After a failed dial, requests to that
// broker fail at once for a backoff, 10ms doubling up to 1s. Dials, each request's wait for its
// response and each write are bounded by Config.Timeout (default 10s, as NetworkTransport is
// usually configured); an InstallSnapshot gets Timeout per 256 KiB. Closing a group's
// transport fails its outstanding requests at once.
//
// # Receiving
//
// A connection's reader only copies a request's payload and queues it for its group; a
// goroutine per group decodes the requests and hands them to raft's Consumer channel one at a
// time in arrival order. So neither a slow group (disk) nor decoding a group's large
// AppendEntries stalls a connection shared with other groups: the reader never blocks on a
// group, and a group with 64 requests queued gets error responses until it catches up (raft
// retries). Heartbeats (kind 7) are decoded by the reader and go to raft's
// heartbeat handler (SetHeartbeatHandler) at once, as in NetworkTransport: they never wait
// behind the group's other requests. (The handler persists the term when a heartbeat carries a
// newer one; that rare write is done on the reader.)
//
// # Limits
//
// A message passes through more goroutines than with NetworkTransport (the connection's writer
// and reader are shared by the groups), so when the process is short of CPU heartbeats take
// longer: 5 groups replicating 32 KiB entries flat out under the race detector on 2 cores keep
// their leaders with HeartbeatTimeout 1s and LeaderLeaseTimeout 500ms, but lose them with
// 300ms/150ms, which NetworkTransport survives. (Writing heartbeats' responses from the reader,
// without linger, removed a hop but did not change that, and cost idle coalescing.)
package raftnet
