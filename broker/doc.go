// Package broker is Runnel's serving shell: one TCP listener that carries the gRPC API and an
// HTTP endpoint for operators, with health checking, reflection, panic recovery and metrics.
// The API services are added by callers through Config.Register: NewServices (admin.go,
// produce.go, fetch.go) serves AdminService, ProduceService.Produce and FetchService (Fetch,
// ListOffsets) on a single node over the topic Registry (topics.go), with one error mapping to
// gRPC status and ErrorInfo (errors.go), and OffsetService (offsets.go) on a bbolt store
// (offsetstore.go). ProduceStream, Subscribe and the decoded-records produce form are not
// implemented yet.
//
// # One port, split by cmux
//
// New listens on Config.Addr (default 127.0.0.1:9420; port 0 picks a free port, see Addr).
// Serve hands every accepted connection to a goroutine that sniffs its first bytes and routes it,
// trying matchers in this order:
//
//  1. Matchers registered by Config.Mux (the extension point, see below).
//  2. gRPC: an HTTP/2 connection whose first request's content-type starts with
//     "application/grpc" (plain, or "+proto" as the SDK sends), matched by
//     cmux.HTTP2MatchHeaderFieldPrefixSendSettings. The SendSettings variant is required:
//     grpc-go clients wait for the server's SETTINGS frame before they send headers, so a
//     matcher that only reads would hang them.
//  3. HTTP/1.1: any other connection that has sent at least one byte. It serves /healthz (200
//     "ok" while serving, 503 once shutting down) and /metrics (Prometheus text format, from the
//     Server's private registry, see Registry).
//
// Sniffing is bounded by Config.MatchTimeout (default 5s), a read deadline set when the
// connection is accepted and cleared once it is matched. A connection that sends nothing is
// closed when the deadline passes; it never delays other connections, since each is sniffed in
// its own goroutine.
//
// # gRPC
//
// Every gRPC server carries the standard health service (overall status "" SERVING while up,
// and each registered service likewise), server reflection (so `grpcurl -plaintext ADDR list`
// works), and two interceptors on both unary and streaming calls: an outer one that counts
// requests by method and code (runnel_grpc_requests_total) and times them
// (runnel_grpc_request_duration_seconds), and an inner recovery interceptor that turns a panic
// into codes.Internal with a generic message and logs the panic value and stack at error level.
// Requests are capped at Config.MaxRecvMsgBytes (default 64 MiB, the API's documented limit).
//
// # Extension point: more protocols on the same port
//
// Config.Mux is called by New with the cmux.CMux before the built-in matchers are registered,
// so its matchers take priority. The cluster code uses it to give Raft traffic its own listener,
// recognised by a first-byte marker:
//
//	cfg.Mux = func(m cmux.CMux) { raftLn = m.Match(cmux.PrefixMatcher(string([]byte{raftMarker}))) }
//
// A marker must not be a byte that starts gRPC or HTTP/1 traffic: HTTP/2's preface begins with
// 'P' and HTTP/1 methods with ASCII capital letters, so a byte below 0x20 is safe. The matched
// connection still starts with the marker (cmux replays the sniffed bytes). The caller owns the
// returned listener and whatever serves it; after Shutdown its Accept returns
// cmux.ErrServerClosed, and any of its connections still open when Shutdown finishes are closed.
//
// # Shutdown
//
// Shutdown(ctx) is graceful, idempotent, and joins everything Serve started:
//
//  1. The health service reports NOT_SERVING for everything and /healthz answers 503, so
//     load balancers and clients stop sending new work.
//  2. grpc.Server.GracefulStop: the listener closes (which closes the shared port: cmux
//     sub-listeners close the root listener), clients get GOAWAY, in-flight RPCs finish. If ctx
//     ends first, grpc.Server.Stop cancels what remains.
//  3. http.Server.Shutdown, bounded by the same ctx, then http.Server.Close.
//  4. cmux is closed, the root listener is closed, and every connection still open on the port
//     (one still being sniffed, or one handed to a Config.Mux listener) is closed, so cmux's
//     Serve, which waits for its sniffing goroutines, returns at once.
//  5. Shutdown waits for Serve and every goroutine it started, and returns their unexpected
//     errors joined, or ctx's error if the graceful steps were cut short.
//
// Serve returns nil after a clean Shutdown, ErrServerClosed if called after Shutdown, and the
// joined errors if a component fails on its own (in which case it stops the others first).
package broker
