package broker

import (
	"context"
	"fmt"
	"runtime/debug"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// The interceptors, outermost first: metrics and logging (sees the final status code), then
// recovery (closest to the handler, so a panic becomes codes.Internal before it is counted).

// errInternal is what a client sees when a handler panics: no detail leaks.
var errInternal = status.Error(codes.Internal, "internal error")

func recoverUnary(log zerolog.Logger) grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (resp any, err error) {
		defer func() {
			if r := recover(); r != nil {
				logPanic(log, info.FullMethod, r)
				resp, err = nil, errInternal
			}
		}()
		return handler(ctx, req)
	}
}

func recoverStream(log zerolog.Logger) grpc.StreamServerInterceptor {
	return func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) (err error) {
		defer func() {
			if r := recover(); r != nil {
				logPanic(log, info.FullMethod, r)
				err = errInternal
			}
		}()
		return handler(srv, ss)
	}
}

func logPanic(log zerolog.Logger, method string, r any) {
	log.Error().
		Str("method", method).
		Str("panic", fmt.Sprint(r)).
		Str("stack", string(debug.Stack())).
		Msg("gRPC handler panicked")
}

// grpcMetrics counts and times gRPC requests.
type grpcMetrics struct {
	requests *prometheus.CounterVec
	duration *prometheus.HistogramVec
}

func newGRPCMetrics(reg prometheus.Registerer) (*grpcMetrics, error) {
	m := &grpcMetrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "runnel",
			Name:      "grpc_requests_total",
			Help:      "gRPC requests handled, by full method and status code.",
		}, []string{"method", "code"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: "runnel",
			Name:      "grpc_request_duration_seconds",
			Help:      "Time to handle a gRPC request (a stream's whole life), by full method.",
			Buckets:   prometheus.ExponentialBuckets(0.0001, 4, 10), // 100µs .. 26s
		}, []string{"method"}),
	}
	for _, c := range []prometheus.Collector{m.requests, m.duration} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("broker: register gRPC metrics: %w", err)
		}
	}
	return m, nil
}

func (m *grpcMetrics) observe(log zerolog.Logger, method string, start time.Time, err error) {
	code := status.Code(err)
	elapsed := time.Since(start)
	m.requests.WithLabelValues(method, code.String()).Inc()
	m.duration.WithLabelValues(method).Observe(elapsed.Seconds())
	log.Debug().Str("method", method).Str("code", code.String()).Dur("elapsed", elapsed).Err(err).Msg("gRPC request")
}

func (m *grpcMetrics) unary(log zerolog.Logger) grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		start := time.Now()
		resp, err := handler(ctx, req)
		m.observe(log, info.FullMethod, start, err)
		return resp, err
	}
}

func (m *grpcMetrics) stream(log zerolog.Logger) grpc.StreamServerInterceptor {
	return func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
		start := time.Now()
		err := handler(srv, ss)
		m.observe(log, info.FullMethod, start, err)
		return err
	}
}
