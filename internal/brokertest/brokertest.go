// Package brokertest starts a real Runnel broker in process for tests: the single-node broker
// that cmd/runneld runs (internal/node), listening on 127.0.0.1 with a port picked by the
// kernel and a data directory from t.TempDir().
//
//	b := brokertest.Start(t)
//	cl, err := client.New(ctx, client.WithBrokers(b.Addr()))
//
// The broker is stopped by t.Cleanup. Restart stops it and starts it again on the same
// address and data directory, for tests of clients that must survive a broker restart.
package brokertest

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/runnel-io/runnel/internal/node"
)

// stopTimeout bounds the graceful stop; what remains after it is cut off.
const stopTimeout = 10 * time.Second

// Option configures Start.
type Option func(*config)

type config struct {
	dir    string
	logger zerolog.Logger
	nodeID int32
}

// WithDir makes the broker use dir as its data directory instead of a new t.TempDir().
func WithDir(dir string) Option { return func(c *config) { c.dir = dir } }

// WithLogger sets the broker's logger. Default: discard everything.
func WithLogger(l zerolog.Logger) Option { return func(c *config) { c.logger = l } }

// WithNodeID sets the broker id (runneld's --node-id). Default 1.
func WithNodeID(id int32) Option { return func(c *config) { c.nodeID = id } }

// Broker is a running in-process broker.
type Broker struct {
	t   testing.TB
	cfg config

	mu      sync.Mutex
	addr    string
	n       *node.Node
	running bool
}

// Start starts a broker and registers its Stop with t.Cleanup. It fails the test if the broker
// cannot start.
func Start(t testing.TB, opts ...Option) *Broker {
	t.Helper()
	cfg := config{logger: zerolog.Nop(), nodeID: 1}
	for _, o := range opts {
		o(&cfg)
	}
	if cfg.dir == "" {
		cfg.dir = t.TempDir()
	}
	b := &Broker{t: t, cfg: cfg, addr: "127.0.0.1:0"}
	if err := b.start(); err != nil {
		t.Fatalf("brokertest: start: %v", err)
	}
	t.Cleanup(b.Stop)
	return b
}

// Addr returns the broker's address (host:port). It stays the same across Restart.
func (b *Broker) Addr() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.addr
}

// Dir returns the broker's data directory.
func (b *Broker) Dir() string { return b.cfg.dir }

// start starts the broker as cmd/runneld does, on b.addr.
func (b *Broker) start() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	n, err := node.Start(node.Config{DataDir: b.cfg.dir, Addr: b.addr, NodeID: b.cfg.nodeID, Logger: b.cfg.logger, Version: "brokertest"})
	if err != nil {
		return err
	}
	b.n = n
	b.addr = n.Addr()
	b.running = true
	return nil
}

// Stop stops the broker gracefully (in-flight calls finish, streams end) and closes its
// registry, in runneld's order. It reports failures with t.Errorf. Calling it on a stopped
// broker does nothing.
func (b *Broker) Stop() {
	b.mu.Lock()
	defer b.mu.Unlock()
	if !b.running {
		return
	}
	b.running = false
	ctx, cancel := context.WithTimeout(context.Background(), stopTimeout)
	defer cancel()
	if err := b.n.Stop(ctx); err != nil {
		b.t.Errorf("brokertest: stop: %v", err)
	}
}

// Restart stops the broker if it is running and starts it again on the same address and data
// directory. The port may have been taken in between (unlikely on 127.0.0.1); Restart then
// retries for a few seconds before failing the test.
func (b *Broker) Restart() {
	b.t.Helper()
	b.Stop()
	var err error
	for range 50 {
		if err = b.start(); err == nil {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	b.t.Fatalf("brokertest: restart on %s: %v", b.addr, err)
}
