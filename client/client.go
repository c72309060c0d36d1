package client

import (
	"context"
	"errors"
	"fmt"
	"sync"

	runnelv1 "github.com/runnel-io/runnel/proto/runnel/v1"
)

// Client is a client of a Runnel cluster, with a producer (Produce, ProduceSync, Flush),
// consumers (NewConsumer) and admin calls. It keeps one connection per broker it talks to, and
// sends each partition's traffic to the partition's leader (see Routing in the package
// documentation). It is safe for concurrent use. Close it when done.
type Client struct {
	opts options

	connMu sync.Mutex
	conns  map[string]*brokerConn // by address; nil once closed

	router *router
	meta   *metaCache

	// bg tracks the client's background metadata lookups; bgCtx ends them at Close.
	bg       sync.WaitGroup
	bgCtx    context.Context
	bgCancel context.CancelFunc

	prodOnce sync.Once
	prod     *producer

	mu        sync.Mutex
	closed    bool
	consumers map[*Consumer]struct{}
}

// windowBytes is the HTTP/2 flow-control window of each stream the client receives on.
const windowBytes = 4 << 20

// readBufferBytes is the size of gRPC's read buffer per connection (its default: 32 KiB).
const readBufferBytes = 256 << 10

// New connects to the first of the seed brokers (WithBrokers) that answers within the dial
// timeout (it calls DescribeCluster, which also names the cluster's other brokers), and
// returns a Client.
func New(ctx context.Context, opts ...Option) (*Client, error) {
	o := defaultOptions()
	for _, f := range opts {
		f(&o)
	}
	if o.maxInFlight < 1 {
		o.maxInFlight = 1
	}
	if !o.compression.Valid() {
		return nil, fmt.Errorf("runnel: invalid compression %d", o.compression)
	}
	c := &Client{opts: o, conns: map[string]*brokerConn{}, consumers: map[*Consumer]struct{}{}}
	c.bgCtx, c.bgCancel = context.WithCancel(context.Background())
	var errs []error
	for _, addr := range o.brokers {
		bc, err := c.conn(addr)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", addr, err))
			continue
		}
		dctx, cancel := context.WithTimeout(ctx, o.dialTimeout)
		resp, err := bc.admin.DescribeCluster(dctx, &runnelv1.DescribeClusterRequest{})
		cancel()
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", addr, fromRPC(err)))
			if ctx.Err() != nil {
				break
			}
			continue
		}
		c.router = newRouter(c, addr)
		c.router.setBrokers(resp.GetBrokers(), resp.GetMetadataLeaderId())
		c.meta = newMetaCache(c)
		c.closeConnsExcept(addr)
		return c, nil
	}
	c.bgCancel()
	_ = c.closeConns()
	return nil, fmt.Errorf("runnel: no broker reachable: %w", errors.Join(errs...))
}

// closeConnsExcept closes the connections New opened to seeds that did not answer.
func (c *Client) closeConnsExcept(addr string) {
	c.connMu.Lock()
	defer c.connMu.Unlock()
	for a, bc := range c.conns {
		if a != addr {
			_ = bc.conn.Close()
			delete(c.conns, a)
		}
	}
}

// Addr returns the address of the broker the client bootstrapped from, or the broker that
// answered its last metadata call if that one became unreachable.
func (c *Client) Addr() string { return c.router.bootstrap() }

// producer returns the client's producer, starting it on first use so that a client used only
// for consuming or admin never opens a produce stream; nil once the client is closed.
func (c *Client) producer() *producer {
	c.prodOnce.Do(func() {
		if !c.isClosed() {
			c.prod = newProducer(c)
		}
	})
	return c.prod
}

// Close flushes the producer (waiting at most the delivery timeout; records still buffered
// then fail with ErrClosed), closes every consumer (committing their groups' offsets) and the
// connections. Calls after the first return nil.
func (c *Client) Close() error {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return nil
	}
	c.closed = true
	cons := make([]*Consumer, 0, len(c.consumers))
	for k := range c.consumers {
		cons = append(cons, k)
	}
	c.mu.Unlock()

	var errs []error
	for _, k := range cons {
		errs = append(errs, k.Close())
	}
	if p := c.producer(); p != nil { // producer() starts none now that closed is set
		errs = append(errs, p.close())
	}
	c.router.close()
	c.bgCancel()
	c.bg.Wait()
	errs = append(errs, c.closeConns())
	return errors.Join(errs...)
}

func (c *Client) isClosed() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.closed
}
