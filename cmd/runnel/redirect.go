package main

import (
	"context"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	runnelv1 "github.com/runnel-io/runnel/proto/runnel/v1"
)

// leaderBackoff is the wait before a call refused for want of a (metadata) leader is made again.
const leaderBackoff = 100 * time.Millisecond

// maxRedirects bounds how often one call follows a NOT_METADATA_LEADER naming the leader (the
// leader may change again meanwhile).
const maxRedirects = 3

// followLeader is the CLI connection's unary interceptor. The calls that change metadata
// (topic changes, offset commits and resets, group deletion, rebalancing) are decided by the
// metadata leader; another broker refuses them with UNAVAILABLE (NOT_METADATA_LEADER), naming
// the leader when it knows it. A call so refused is made again at the leader named; one refused
// without a leader named (an election, a broker just started), or with LEADER_NOT_AVAILABLE,
// is made again after a short backoff, until the call's deadline (--timeout).
func (a *app) followLeader(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
	var conn *grpc.ClientConn // nil: cc
	redirects := 0
	for {
		var err error
		if conn == nil {
			err = invoker(ctx, method, req, reply, cc, opts...)
		} else {
			err = conn.Invoke(ctx, method, req, reply, opts...)
		}
		if err == nil {
			return nil
		}
		info := errorInfo(err)
		switch info.GetReason() {
		case runnelv1.ErrorReason_ERROR_REASON_NOT_METADATA_LEADER:
			if addr := info.GetLeaderAddress(); addr != "" && redirects < maxRedirects {
				redirects++
				c, derr := a.leaderConn(addr)
				if derr != nil {
					return err
				}
				conn = c
				continue
			}
		case runnelv1.ErrorReason_ERROR_REASON_LEADER_NOT_AVAILABLE:
		default:
			return err
		}
		t := time.NewTimer(leaderBackoff)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return err
		}
		conn = nil
	}
}

// errorInfo returns the ErrorInfo detail of a gRPC error, or nil.
func errorInfo(err error) *runnelv1.ErrorInfo {
	st, ok := status.FromError(err)
	if !ok {
		return nil
	}
	for _, d := range st.Details() {
		if info, ok := d.(*runnelv1.ErrorInfo); ok {
			return info
		}
	}
	return nil
}

// leaderConn returns a connection to the (metadata) leader at addr, without the interceptor:
// the leader answers itself.
func (a *app) leaderConn(addr string) (*grpc.ClientConn, error) {
	a.leadersMu.Lock()
	defer a.leadersMu.Unlock()
	if c := a.leaders[addr]; c != nil {
		return c, nil
	}
	c, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(maxRecvBytes)))
	if err != nil {
		return nil, err
	}
	if a.leaders == nil {
		a.leaders = map[string]*grpc.ClientConn{}
	}
	a.leaders[addr] = c
	return c, nil
}
