package broker

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"github.com/soheilhy/cmux"
	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	reflectionpb "google.golang.org/grpc/reflection/grpc_reflection_v1"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/emptypb"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// testTimeout bounds every wait in these tests; none is expected to come close.
const testTimeout = 5 * time.Second

// syncBuffer is a goroutine-safe log sink.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

type harness struct {
	t        *testing.T
	srv      *Server
	serveErr chan error
	logs     *syncBuffer
	http     *http.Client
	conns    []*grpc.ClientConn
}

// start builds a server on 127.0.0.1:0 with cfg's non-zero fields, serves it, and registers a
// cleanup that shuts it down (if the test has not) and closes the clients.
func start(t *testing.T, modify func(*Config)) *harness {
	t.Helper()
	logs := &syncBuffer{}
	cfg := DefaultConfig()
	cfg.Addr = "127.0.0.1:0"
	cfg.Logger = zerolog.New(logs)
	if modify != nil {
		modify(&cfg)
	}
	srv, err := New(cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	h := &harness{
		t:        t,
		srv:      srv,
		serveErr: make(chan error, 1),
		logs:     logs,
		http:     &http.Client{Transport: &http.Transport{}, Timeout: testTimeout},
	}
	go func() { h.serveErr <- srv.Serve() }()
	t.Cleanup(func() {
		for _, c := range h.conns {
			_ = c.Close()
		}
		h.http.CloseIdleConnections()
		ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
		defer cancel()
		// A test that shut down with a canceled context gets the same answer again.
		if err := srv.Shutdown(ctx); err != nil && !errors.Is(err, context.Canceled) {
			t.Errorf("Shutdown: %v", err)
		}
		select {
		case err := <-h.serveErr:
			// ErrServerClosed: the test ended before Serve began.
			if err != nil && !errors.Is(err, ErrServerClosed) {
				t.Errorf("Serve: %v", err)
			}
		case <-time.After(testTimeout):
			t.Errorf("Serve did not return after Shutdown")
		}
	})
	return h
}

func (h *harness) addr() string { return h.srv.Addr().String() }

func (h *harness) dial() *grpc.ClientConn {
	h.t.Helper()
	cc, err := grpc.NewClient(h.addr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		h.t.Fatalf("grpc.NewClient: %v", err)
	}
	h.conns = append(h.conns, cc)
	return cc
}

func (h *harness) healthCheck(cc *grpc.ClientConn) healthpb.HealthCheckResponse_ServingStatus {
	h.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	resp, err := healthpb.NewHealthClient(cc).Check(ctx, &healthpb.HealthCheckRequest{})
	if err != nil {
		h.t.Fatalf("health Check: %v", err)
	}
	return resp.GetStatus()
}

func (h *harness) get(path string) (int, string) {
	h.t.Helper()
	resp, err := h.http.Get("http://" + h.addr() + path)
	if err != nil {
		h.t.Fatalf("GET %s: %v", path, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		h.t.Fatalf("GET %s: read body: %v", path, err)
	}
	return resp.StatusCode, string(body)
}

func TestGRPCAndHTTPShareOnePort(t *testing.T) {
	h := start(t, nil)
	cc := h.dial()

	if got := h.healthCheck(cc); got != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("health status = %v, want SERVING", got)
	}

	// Reflection lists the health service.
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	stream, err := reflectionpb.NewServerReflectionClient(cc).ServerReflectionInfo(ctx)
	if err != nil {
		t.Fatalf("ServerReflectionInfo: %v", err)
	}
	if err := stream.Send(&reflectionpb.ServerReflectionRequest{
		MessageRequest: &reflectionpb.ServerReflectionRequest_ListServices{},
	}); err != nil {
		t.Fatalf("reflection Send: %v", err)
	}
	resp, err := stream.Recv()
	if err != nil {
		t.Fatalf("reflection Recv: %v", err)
	}
	var names []string
	for _, s := range resp.GetListServicesResponse().GetService() {
		names = append(names, s.GetName())
	}
	if !contains(names, "grpc.health.v1.Health") || !contains(names, "grpc.reflection.v1.ServerReflection") {
		t.Fatalf("reflection lists %v, want the health and reflection services", names)
	}
	if err := stream.CloseSend(); err != nil {
		t.Fatalf("CloseSend: %v", err)
	}
	if _, err := stream.Recv(); err != io.EOF {
		t.Fatalf("reflection stream end: %v, want EOF", err)
	}

	// HTTP on the same port.
	if code, body := h.get("/healthz"); code != http.StatusOK || strings.TrimSpace(body) != "ok" {
		t.Fatalf("/healthz = %d %q, want 200 ok", code, body)
	}
	code, body := h.get("/metrics")
	if code != http.StatusOK {
		t.Fatalf("/metrics = %d", code)
	}
	for _, want := range []string{
		"go_goroutines ",
		"process_",
		`runnel_grpc_requests_total{code="OK",method="/grpc.health.v1.Health/Check"} 1`,
		`runnel_grpc_request_duration_seconds_count{method="/grpc.health.v1.Health/Check"} 1`,
	} {
		if !strings.Contains(body, want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
	if code, _ := h.get("/nope"); code != http.StatusNotFound {
		t.Errorf("/nope = %d, want 404", code)
	}
}

// panicService is a hand-written service whose handlers panic.
type panicService interface{}

var panicDesc = grpc.ServiceDesc{
	ServiceName: "runnel.test.Panicker",
	HandlerType: (*panicService)(nil),
	Methods: []grpc.MethodDesc{{
		MethodName: "Unary",
		Handler: func(srv any, ctx context.Context, dec func(any) error, interceptor grpc.UnaryServerInterceptor) (any, error) {
			in := new(emptypb.Empty)
			if err := dec(in); err != nil {
				return nil, err
			}
			handler := func(context.Context, any) (any, error) { panic("boom: secret detail") }
			if interceptor == nil {
				return handler(ctx, in)
			}
			return interceptor(ctx, in, &grpc.UnaryServerInfo{Server: srv, FullMethod: "/runnel.test.Panicker/Unary"}, handler)
		},
	}},
	Streams: []grpc.StreamDesc{{
		StreamName:    "Stream",
		ServerStreams: true,
		ClientStreams: true,
		Handler:       func(any, grpc.ServerStream) error { panic("stream boom") },
	}},
}

func TestPanicBecomesInternal(t *testing.T) {
	h := start(t, func(c *Config) {
		c.Register = func(s *grpc.Server) { s.RegisterService(&panicDesc, struct{}{}) }
	})
	cc := h.dial()
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()

	err := cc.Invoke(ctx, "/runnel.test.Panicker/Unary", &emptypb.Empty{}, &emptypb.Empty{})
	if status.Code(err) != codes.Internal {
		t.Fatalf("unary panic: %v, want Internal", err)
	}
	if strings.Contains(err.Error(), "secret") {
		t.Errorf("panic detail leaked to the client: %v", err)
	}

	stream, err := cc.NewStream(ctx, &panicDesc.Streams[0], "/runnel.test.Panicker/Stream")
	if err != nil {
		t.Fatalf("NewStream: %v", err)
	}
	if err := stream.RecvMsg(&emptypb.Empty{}); status.Code(err) != codes.Internal {
		t.Fatalf("stream panic: %v, want Internal", err)
	}

	// Still serving, over the same connection and a new one.
	if got := h.healthCheck(cc); got != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("after panic: health = %v", got)
	}
	if got := h.healthCheck(h.dial()); got != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("after panic, new conn: health = %v", got)
	}
	// The registered service is reported SERVING too.
	resp, err := healthpb.NewHealthClient(cc).Check(ctx, &healthpb.HealthCheckRequest{Service: "runnel.test.Panicker"})
	if err != nil || resp.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("service health = %v, %v", resp.GetStatus(), err)
	}

	logs := h.logs.String()
	for _, want := range []string{"boom: secret detail", "stream boom", "/runnel.test.Panicker/Unary", "goroutine ", "panicked"} {
		if !strings.Contains(logs, want) {
			t.Errorf("logs lack %q:\n%s", want, logs)
		}
	}
	_, body := h.get("/metrics")
	if want := `runnel_grpc_requests_total{code="Internal",method="/runnel.test.Panicker/Unary"} 1`; !strings.Contains(body, want) {
		t.Errorf("/metrics lacks %q", want)
	}
}

func TestIdleConnectionDoesNotBlockOthers(t *testing.T) {
	// A match timeout far longer than the test: nothing below may wait for it.
	h := start(t, func(c *Config) { c.MatchTimeout = time.Hour })

	idle, err := net.Dial("tcp", h.addr())
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	defer idle.Close()

	if got := h.healthCheck(h.dial()); got != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("health = %v", got)
	}
	if code, _ := h.get("/healthz"); code != http.StatusOK {
		t.Fatalf("/healthz = %d", code)
	}

	// Shutdown does not wait for the silent connection's match timeout either: it closes it.
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	if err := h.srv.Shutdown(ctx); err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	_ = idle.SetReadDeadline(time.Now().Add(testTimeout))
	if _, err := idle.Read(make([]byte, 1)); err != io.EOF && !errors.Is(err, net.ErrClosed) && !isConnReset(err) {
		t.Fatalf("idle conn after Shutdown: read %v, want EOF", err)
	}
}

func TestSilentConnectionClosedAfterMatchTimeout(t *testing.T) {
	h := start(t, func(c *Config) { c.MatchTimeout = 50 * time.Millisecond })
	idle, err := net.Dial("tcp", h.addr())
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	defer idle.Close()
	_ = idle.SetReadDeadline(time.Now().Add(testTimeout))
	if _, err := idle.Read(make([]byte, 1)); err != io.EOF && !isConnReset(err) {
		t.Fatalf("silent conn: read %v, want EOF from the server closing it", err)
	}
	// Clients that talk are unaffected by the short timeout.
	if got := h.healthCheck(h.dial()); got != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("health = %v", got)
	}
}

func isConnReset(err error) bool {
	return err != nil && strings.Contains(err.Error(), "connection reset")
}

func TestShutdown(t *testing.T) {
	defer goleak.VerifyNone(t)
	h := start(t, nil)
	cc := h.dial()
	if got := h.healthCheck(cc); got != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("health = %v", got)
	}
	if code, _ := h.get("/healthz"); code != http.StatusOK { // leaves a keep-alive conn open
		t.Fatalf("/healthz = %d", code)
	}
	addr := h.addr()

	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	if err := h.srv.Shutdown(ctx); err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	select {
	case err := <-h.serveErr:
		if err != nil {
			t.Fatalf("Serve returned %v, want nil", err)
		}
	case <-time.After(testTimeout):
		t.Fatal("Serve did not return after Shutdown")
	}
	h.serveErr <- nil // for the cleanup's check

	// The port refuses connections.
	if c, err := net.DialTimeout("tcp", addr, testTimeout); err == nil {
		c.Close()
		t.Fatal("dial after Shutdown succeeded")
	}
	// Health reports NOT_SERVING and /healthz 503 (asked in process: the port is closed).
	resp, err := h.srv.health.Check(ctx, &healthpb.HealthCheckRequest{})
	if err != nil || resp.GetStatus() != healthpb.HealthCheckResponse_NOT_SERVING {
		t.Fatalf("health after Shutdown = %v, %v; want NOT_SERVING", resp.GetStatus(), err)
	}
	rec := httptest.NewRecorder()
	h.srv.httpSrv.Handler.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/healthz", nil))
	if rec.Code != http.StatusServiceUnavailable {
		t.Fatalf("/healthz after Shutdown = %d, want 503", rec.Code)
	}

	// Idempotent, and Serve refuses to restart.
	if err := h.srv.Shutdown(ctx); err != nil {
		t.Fatalf("second Shutdown: %v", err)
	}
	if err := h.srv.Serve(); !errors.Is(err, ErrServerClosed) {
		t.Fatalf("Serve after Shutdown = %v, want ErrServerClosed", err)
	}

	// Client side goroutines end with their connections.
	for _, c := range h.conns {
		_ = c.Close()
	}
	h.conns = nil
	h.http.CloseIdleConnections()
}

func TestShutdownInFlightRPCBoundedByContext(t *testing.T) {
	release := make(chan struct{})
	entered := make(chan struct{})
	desc := grpc.ServiceDesc{
		ServiceName: "runnel.test.Blocker",
		HandlerType: (*panicService)(nil),
		Streams: []grpc.StreamDesc{{
			StreamName:    "Block",
			ServerStreams: true,
			Handler: func(_ any, ss grpc.ServerStream) error {
				close(entered)
				select {
				case <-ss.Context().Done(): // grpc.Server.Stop cancels it
				case <-release:
				}
				return ss.Context().Err()
			},
		}},
	}
	h := start(t, func(c *Config) {
		c.Register = func(s *grpc.Server) { s.RegisterService(&desc, struct{}{}) }
	})
	defer close(release)
	cc := h.dial()
	sctx, scancel := context.WithCancel(context.Background())
	defer scancel()
	stream, err := cc.NewStream(sctx, &desc.Streams[0], "/runnel.test.Blocker/Block")
	if err != nil {
		t.Fatalf("NewStream: %v", err)
	}
	if err := stream.SendMsg(&emptypb.Empty{}); err != nil {
		t.Fatalf("SendMsg: %v", err)
	}
	select {
	case <-entered:
	case <-time.After(testTimeout):
		t.Fatal("handler not entered")
	}

	ctx, cancel := context.WithCancel(context.Background())
	cancel() // no grace at all: Shutdown must still stop and join everything
	if err := h.srv.Shutdown(ctx); !errors.Is(err, context.Canceled) {
		t.Fatalf("Shutdown = %v, want context.Canceled", err)
	}
	if _, err := stream.Header(); err == nil {
		if err := stream.RecvMsg(&emptypb.Empty{}); err == nil {
			t.Fatal("stream survived Shutdown")
		}
	}
}

func TestNewWithoutServe(t *testing.T) {
	cfg := DefaultConfig()
	cfg.Addr = "127.0.0.1:0"
	srv, err := New(cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	addr := srv.Addr().String()
	if err := srv.Shutdown(context.Background()); err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	if c, err := net.Dial("tcp", addr); err == nil {
		c.Close()
		t.Fatal("dial after Shutdown succeeded")
	}
	if err := srv.Serve(); !errors.Is(err, ErrServerClosed) {
		t.Fatalf("Serve = %v, want ErrServerClosed", err)
	}
}

func TestNewPortInUse(t *testing.T) {
	h := start(t, nil)
	cfg := DefaultConfig()
	cfg.Addr = h.addr()
	if srv, err := New(cfg); err == nil {
		_ = srv.Shutdown(context.Background())
		t.Fatal("New on a port in use succeeded")
	}
}

// TestMuxExtension shows the seam the cluster code uses for Raft: a first-byte marker gets its
// own listener on the same port, ahead of gRPC and HTTP.
func TestMuxExtension(t *testing.T) {
	const marker = "\x01"
	var extLn net.Listener
	h := start(t, func(c *Config) {
		c.Mux = func(m cmux.CMux) { extLn = m.Match(cmux.PrefixMatcher(marker)) }
	})

	var wg sync.WaitGroup
	defer wg.Wait()
	acceptErr := make(chan error, 1)
	wg.Add(1)
	go func() { // a toy "Raft transport": echo one line per connection
		defer wg.Done()
		for {
			c, err := extLn.Accept()
			if err != nil {
				acceptErr <- err
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				_, _ = io.Copy(c, c)
			}()
		}
	}()

	c, err := net.Dial("tcp", h.addr())
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	defer c.Close()
	msg := marker + "hello"
	if _, err := io.WriteString(c, msg); err != nil {
		t.Fatalf("write: %v", err)
	}
	_ = c.SetReadDeadline(time.Now().Add(testTimeout))
	got := make([]byte, len(msg))
	if _, err := io.ReadFull(c, got); err != nil || string(got) != msg {
		t.Fatalf("echo = %q, %v; want %q (marker included)", got, err, msg)
	}

	// gRPC and HTTP still work beside it.
	if got := h.healthCheck(h.dial()); got != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("health = %v", got)
	}
	if code, _ := h.get("/healthz"); code != http.StatusOK {
		t.Fatalf("/healthz = %d", code)
	}

	// Shutdown ends the extension's Accept and closes its open connection.
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	if err := h.srv.Shutdown(ctx); err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	select {
	case err := <-acceptErr:
		if !errors.Is(err, cmux.ErrServerClosed) && !errors.Is(err, cmux.ErrListenerClosed) {
			t.Fatalf("extension Accept after Shutdown: %v", err)
		}
	case <-time.After(testTimeout):
		t.Fatal("extension Accept did not return after Shutdown")
	}
	if _, err := c.Read(make([]byte, 1)); err == nil {
		t.Fatal("extension conn still open after Shutdown")
	}
}

func TestValidate(t *testing.T) {
	if err := DefaultConfig().Validate(); err != nil {
		t.Fatalf("DefaultConfig invalid: %v", err)
	}
	for name, mod := range map[string]func(*Config){
		"empty addr":        func(c *Config) { c.Addr = "" },
		"no port":           func(c *Config) { c.Addr = "127.0.0.1" },
		"bad port":          func(c *Config) { c.Addr = "127.0.0.1:http!" },
		"port too big":      func(c *Config) { c.Addr = "127.0.0.1:70000" },
		"bad host":          func(c *Config) { c.Addr = "no such host:9420" },
		"zero max recv":     func(c *Config) { c.MaxRecvMsgBytes = 0 },
		"negative max recv": func(c *Config) { c.MaxRecvMsgBytes = -1 },
		"zero match":        func(c *Config) { c.MatchTimeout = 0 },
	} {
		cfg := DefaultConfig()
		mod(&cfg)
		if err := cfg.Validate(); err == nil {
			t.Errorf("%s: Validate accepted %+v", name, cfg)
		}
		if srv, err := New(cfg); err == nil {
			_ = srv.Shutdown(context.Background())
			t.Errorf("%s: New accepted it", name)
		}
	}
	for _, addr := range []string{":0", "localhost:0", "[::1]:9420", "0.0.0.0:9420"} {
		cfg := DefaultConfig()
		cfg.Addr = addr
		if err := cfg.Validate(); err != nil {
			t.Errorf("Validate(%q): %v", addr, err)
		}
	}
}

func contains(s []string, v string) bool {
	for _, x := range s {
		if x == v {
			return true
		}
	}
	return false
}

// TestShutdownOrder checks that health turns NOT_SERVING, and /healthz 503, while the server is
// still draining: a health Watch stream (an in-flight RPC that GracefulStop waits for) sees
// NOT_SERVING, and an open HTTP keep-alive connection gets 503, before Shutdown returns.
func TestShutdownOrder(t *testing.T) {
	h := start(t, nil)
	cc := h.dial()
	wctx, wcancel := context.WithTimeout(context.Background(), testTimeout)
	defer wcancel()
	watch, err := healthpb.NewHealthClient(cc).Watch(wctx, &healthpb.HealthCheckRequest{})
	if err != nil {
		t.Fatalf("Watch: %v", err)
	}
	if resp, err := watch.Recv(); err != nil || resp.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("Watch first = %v, %v; want SERVING", resp.GetStatus(), err)
	}
	if code, _ := h.get("/healthz"); code != http.StatusOK { // opens a keep-alive connection
		t.Fatalf("/healthz = %d", code)
	}

	done := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
		defer cancel()
		done <- h.srv.Shutdown(ctx)
	}()

	if resp, err := watch.Recv(); err != nil || resp.GetStatus() != healthpb.HealthCheckResponse_NOT_SERVING {
		t.Fatalf("Watch during Shutdown = %v, %v; want NOT_SERVING", resp.GetStatus(), err)
	}
	// The HTTP server is still draining gRPC's turn, so the idle keep-alive conn answers.
	if code, body := h.get("/healthz"); code != http.StatusServiceUnavailable {
		t.Fatalf("/healthz during Shutdown = %d %q, want 503", code, body)
	}
	select {
	case err := <-done:
		t.Fatalf("Shutdown returned (%v) while a stream was in flight", err)
	default:
	}
	wcancel() // the last in-flight RPC ends; graceful stop completes
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Shutdown: %v", err)
		}
	case <-time.After(testTimeout):
		t.Fatal("Shutdown did not return")
	}
}
