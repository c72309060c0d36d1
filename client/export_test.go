package client

import (
	"context"
	"net"
)

// WithDialer makes the client open its connections with dial: tests route them through a
// proxy, whatever address the metadata gives.
func WithDialer(dial func(ctx context.Context, addr string) (net.Conn, error)) Option {
	return func(o *options) { o.dialer = dial }
}

// Abort stops a group member as if its process died: no commit, no leave.
func (g *GroupConsumer) Abort() { g.abort() }

// Lost reports whether the heartbeat loop found the member gone from the group and Run has not
// yet given its partitions up.
func (g *GroupConsumer) Lost() bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.lost
}

// StreamEndErr exposes streamEndErr to the external tests.
var StreamEndErr = streamEndErr
