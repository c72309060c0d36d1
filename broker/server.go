package broker

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/rs/zerolog"
	"github.com/soheilhy/cmux"
	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/reflection"

	"github.com/runnel-io/runnel/internal/wirecodec"
)

// Defaults for Config.
const (
	DefaultAddr            = "127.0.0.1:9420"
	DefaultMaxRecvMsgBytes = 64 << 20 // the API's documented request cap
	DefaultMatchTimeout    = 5 * time.Second

	// httpReadHeaderTimeout and httpIdleTimeout bound slow or idle HTTP/1 clients.
	httpReadHeaderTimeout = 10 * time.Second
	httpIdleTimeout       = 2 * time.Minute
	acceptRetryDelay      = 10 * time.Millisecond

	// writeBufferBytes is the size of gRPC's write buffer per connection (its default: 32 KiB).
	writeBufferBytes = 256 << 10
)

// ErrServerClosed is returned by Serve when it is called after Shutdown, or a second time.
var ErrServerClosed = errors.New("broker: server closed")

// Config configures a Server. Start from DefaultConfig.
type Config struct {
	// Addr is the TCP address to listen on, host:port. Port 0 picks a free port.
	// Default DefaultAddr (127.0.0.1:9420).
	Addr string

	// Logger receives the server's logs. The zero value logs nothing.
	Logger zerolog.Logger

	// MaxRecvMsgBytes caps the size of one gRPC request message. Default 64 MiB.
	MaxRecvMsgBytes int

	// MatchTimeout bounds protocol detection: a connection that has not identified itself
	// within it is closed. Must be positive. Default 5s.
	MatchTimeout time.Duration

	// Register, if set, is called once by New to add services to the gRPC server.
	Register func(*grpc.Server)

	// Metrics, if set, is called once by New to register collectors on the Server's Prometheus
	// registry, served on /metrics (Services.RegisterMetrics).
	Metrics func(prometheus.Registerer) error

	// Pprof serves Go's profiler under /debug/pprof/ on the HTTP side. Off by default: a
	// profile exposes internals and costs CPU, so it is for operators who ask for it.
	Pprof bool

	// Mux, if set, is called once by New before the built-in gRPC and HTTP matchers are
	// registered, so that other protocols (Raft) can claim connections on the same port. See
	// the package documentation for the contract.
	Mux func(cmux.CMux)
}

// DefaultConfig returns the defaults: loopback port 9420, 64 MiB requests, 5s protocol
// detection, no logging.
func DefaultConfig() Config {
	return Config{
		Addr:            DefaultAddr,
		Logger:          zerolog.Nop(),
		MaxRecvMsgBytes: DefaultMaxRecvMsgBytes,
		MatchTimeout:    DefaultMatchTimeout,
	}
}

// Validate reports the first problem with c, or nil.
func (c Config) Validate() error {
	host, port, err := net.SplitHostPort(c.Addr)
	if err != nil {
		return fmt.Errorf("broker: addr %q: %w", c.Addr, err)
	}
	if _, err := strconv.ParseUint(port, 10, 16); err != nil {
		return fmt.Errorf("broker: addr %q: port must be a number 0..65535", c.Addr)
	}
	if host != "" && net.ParseIP(host) == nil && !validHostname(host) {
		return fmt.Errorf("broker: addr %q: bad host", c.Addr)
	}
	if c.MaxRecvMsgBytes <= 0 {
		return fmt.Errorf("broker: MaxRecvMsgBytes must be positive, got %d", c.MaxRecvMsgBytes)
	}
	if c.MatchTimeout <= 0 {
		return fmt.Errorf("broker: MatchTimeout must be positive, got %v", c.MatchTimeout)
	}
	return nil
}

// Server serves the gRPC API and the HTTP endpoints on one listener. Create it with New, run
// it with Serve, stop it with Shutdown.
type Server struct {
	cfg Config
	log zerolog.Logger

	ln      *trackingListener
	mux     cmux.CMux
	grpcLn  net.Listener
	httpLn  net.Listener
	grpcSrv *grpc.Server
	httpSrv *http.Server
	health  *health.Server
	reg     *prometheus.Registry
	metrics *grpcMetrics

	// shuttingDown is set first thing in Shutdown; /healthz and the error filters read it.
	shuttingDown atomic.Bool

	mu        sync.Mutex
	closed    bool          // guarded by mu: Shutdown has begun; Serve refuses to start
	serving   bool          // guarded by mu: Serve has been called
	serveDone chan struct{} // closed when Serve returns; only waited on if serving

	stopOnce sync.Once
	stopErr  error
	wg       sync.WaitGroup // every goroutine the Server starts
}

// New validates cfg, listens on cfg.Addr and builds the gRPC and HTTP servers. Nothing is
// served until Serve is called; connections made before then wait in the listen backlog.
func New(cfg Config) (*Server, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	raw, err := net.Listen("tcp", cfg.Addr)
	if err != nil {
		return nil, fmt.Errorf("broker: listen %s: %w", cfg.Addr, err)
	}
	s := &Server{
		cfg:       cfg,
		log:       cfg.Logger.With().Str("component", "broker").Logger(),
		ln:        newTrackingListener(raw),
		reg:       prometheus.NewRegistry(),
		health:    health.NewServer(),
		serveDone: make(chan struct{}),
	}
	if err := s.reg.Register(collectors.NewGoCollector()); err != nil {
		_ = raw.Close()
		return nil, fmt.Errorf("broker: register go collector: %w", err)
	}
	if err := s.reg.Register(collectors.NewProcessCollector(collectors.ProcessCollectorOpts{})); err != nil {
		_ = raw.Close()
		return nil, fmt.Errorf("broker: register process collector: %w", err)
	}
	if s.metrics, err = newGRPCMetrics(s.reg); err != nil {
		_ = raw.Close()
		return nil, err
	}
	if cfg.Metrics != nil {
		if err := cfg.Metrics(s.reg); err != nil {
			_ = raw.Close()
			return nil, err
		}
	}

	s.grpcSrv = grpc.NewServer(
		grpc.MaxRecvMsgSize(cfg.MaxRecvMsgBytes),
		// Protobuf on the wire, without copying record batches twice (internal/wirecodec).
		grpc.ForceServerCodecV2(wirecodec.Codec),
		// Large static flow-control windows, so that a producer's stream is not held back by
		// window updates (gRPC's default starts at 64 KiB and grows by estimate).
		grpc.InitialWindowSize(4<<20), grpc.InitialConnWindowSize(16<<20),
		// Fetched batches go out in 256 KiB writes instead of gRPC's 32 KiB (a write system
		// call per two HTTP/2 frames); gRPC releases the buffer between flushes (its shared
		// write buffer, on by default), so idle connections do not hold it.
		grpc.WriteBufferSize(writeBufferBytes),
		grpc.ChainUnaryInterceptor(s.metrics.unary(s.log), recoverUnary(s.log)),
		grpc.ChainStreamInterceptor(s.metrics.stream(s.log), recoverStream(s.log)),
	)
	healthpb.RegisterHealthServer(s.grpcSrv, s.health)
	reflection.Register(s.grpcSrv)
	if cfg.Register != nil {
		cfg.Register(s.grpcSrv)
	}
	for name := range s.grpcSrv.GetServiceInfo() {
		s.health.SetServingStatus(name, healthpb.HealthCheckResponse_SERVING)
	}
	s.health.SetServingStatus("", healthpb.HealthCheckResponse_SERVING)

	s.httpSrv = &http.Server{
		Handler:           s.httpHandler(),
		ReadHeaderTimeout: httpReadHeaderTimeout,
		IdleTimeout:       httpIdleTimeout,
		ErrorLog:          newStdLogger(s.log.With().Str("server", "http").Logger()),
	}

	s.mux = cmux.New(s.ln)
	s.mux.SetReadTimeout(cfg.MatchTimeout)
	s.mux.HandleError(s.handleMuxError)
	if cfg.Mux != nil {
		cfg.Mux(s.mux)
	}
	// A prefix: gRPC clients send "application/grpc" or "application/grpc+<codec>" (the SDK
	// sends "application/grpc+proto").
	s.grpcLn = s.mux.MatchWithWriters(cmux.HTTP2MatchHeaderFieldPrefixSendSettings("content-type", "application/grpc"))
	s.httpLn = s.mux.Match(anyData)
	return s, nil
}

// Addr returns the address the server listens on, with the port chosen if Config.Addr had 0.
func (s *Server) Addr() net.Addr { return s.ln.Addr() }

// Registry returns the Server's private Prometheus registry, served on /metrics. Later code
// registers its metrics here.
func (s *Server) Registry() *prometheus.Registry { return s.reg }

// Serve serves connections until Shutdown, then returns nil. If a component fails on its
// own, Serve stops the others and returns the errors joined. Serve may be called once; a
// second call, or a call after Shutdown, returns ErrServerClosed.
func (s *Server) Serve() error {
	s.mu.Lock()
	if s.closed || s.serving {
		s.mu.Unlock()
		return ErrServerClosed
	}
	s.serving = true
	s.mu.Unlock()
	defer close(s.serveDone)

	s.log.Info().Str("addr", s.Addr().String()).Msg("serving gRPC and HTTP")
	type result struct {
		name string
		err  error
	}
	results := make(chan result, 3) // buffered: senders never block
	s.goFunc(func() { results <- result{"grpc", s.grpcSrv.Serve(s.grpcLn)} })
	s.goFunc(func() { results <- result{"http", s.httpSrv.Serve(s.httpLn)} })
	s.goFunc(func() { results <- result{"cmux", s.mux.Serve()} })

	var errs []error
	for range 3 {
		r := <-results
		if r.err == nil || s.shuttingDown.Load() && isClosedErr(r.err) {
			continue
		}
		s.log.Error().Err(r.err).Str("server", r.name).Msg("server failed")
		errs = append(errs, fmt.Errorf("broker: %s: %w", r.name, r.err))
		// A component failed on its own: stop the rest now so their Serve calls return.
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		_ = s.stop(ctx)
	}
	s.wg.Wait()
	return errors.Join(errs...)
}

// Shutdown stops the server gracefully in the order given in the package documentation,
// bounded by ctx, and waits for Serve and every goroutine it started. It returns the errors
// of the stop steps joined (ctx's error if graceful stopping was cut short). It is safe to
// call more than once and concurrently; later calls wait and return the same result.
func (s *Server) Shutdown(ctx context.Context) error {
	err := s.stop(ctx)
	s.mu.Lock()
	serving := s.serving
	s.mu.Unlock()
	if serving {
		<-s.serveDone
	}
	s.wg.Wait()
	return err
}

// stop runs the shutdown steps once. A done ctx makes every step immediate.
func (s *Server) stop(ctx context.Context) error {
	s.stopOnce.Do(func() {
		s.mu.Lock()
		s.closed = true
		s.mu.Unlock()
		s.shuttingDown.Store(true)
		s.log.Info().Msg("shutting down")

		// 1. Tell health checkers first.
		s.health.Shutdown()

		var errs []error
		// 2. gRPC: graceful, bounded by ctx.
		graceful := make(chan struct{})
		s.goFunc(func() {
			defer close(graceful)
			s.grpcSrv.GracefulStop()
		})
		select {
		case <-graceful:
		case <-ctx.Done():
			s.grpcSrv.Stop() // makes GracefulStop return
			<-graceful
			errs = append(errs, fmt.Errorf("broker: grpc graceful stop: %w", ctx.Err()))
		}

		// 3. HTTP: graceful, bounded by ctx.
		// Its listener shares the root listener, which GracefulStop already closed, hence the
		// net.ErrClosed it reports after a complete shutdown.
		if err := s.httpSrv.Shutdown(ctx); err != nil && !errors.Is(err, net.ErrClosed) {
			errs = append(errs, fmt.Errorf("broker: http shutdown: %w", err))
			if err := s.httpSrv.Close(); err != nil {
				errs = append(errs, fmt.Errorf("broker: http close: %w", err))
			}
		}

		// 4. cmux, the port, and connections nobody else closed.
		s.mux.Close()
		if err := s.ln.Close(); err != nil && !errors.Is(err, net.ErrClosed) {
			errs = append(errs, fmt.Errorf("broker: close listener: %w", err))
		}
		s.ln.closeConns()

		s.stopErr = errors.Join(errs...)
		s.log.Info().Err(s.stopErr).Msg("shut down")
	})
	return s.stopErr
}

// goFunc runs f in a goroutine tracked by s.wg.
func (s *Server) goFunc(f func()) {
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		f()
	}()
}

// handleMuxError decides whether cmux keeps serving after err. cmux calls it for connections
// no matcher took and for Accept errors on the root listener.
func (s *Server) handleMuxError(err error) bool {
	var nm cmux.ErrNotMatched
	if errors.As(err, &nm) {
		s.log.Debug().Err(err).Msg("connection not matched (silent or unknown protocol)")
		return true
	}
	if s.shuttingDown.Load() || errors.Is(err, net.ErrClosed) {
		return false
	}
	if t, ok := err.(interface{ Temporary() bool }); ok && t.Temporary() {
		// cmux retries temporary Accept errors (EMFILE...) at once, in a tight loop: slow it.
		s.log.Warn().Err(err).Msg("accept failed, retrying")
		time.Sleep(acceptRetryDelay)
		return true
	}
	return false
}

// validHostname is a loose check: letters, digits, '-', '.', no spaces.
func validHostname(h string) bool {
	if len(h) > 253 {
		return false
	}
	for _, r := range h {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '.') {
			return false
		}
	}
	return true
}

// isClosedErr reports whether err is what a component returns when it is stopped on purpose.
func isClosedErr(err error) bool {
	return errors.Is(err, net.ErrClosed) ||
		errors.Is(err, http.ErrServerClosed) ||
		errors.Is(err, grpc.ErrServerStopped) ||
		errors.Is(err, cmux.ErrServerClosed) ||
		errors.Is(err, cmux.ErrListenerClosed)
}
