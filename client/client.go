package client

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/runnel-io/runnel/internal/wirecodec"
	runnelv1 "github.com/runnel-io/runnel/proto/runnel/v1"
)

// Client is a connection to a Runnel broker, with a producer (Produce, ProduceSync, Flush),
// consumers (NewConsumer) and admin calls. It is safe for concurrent use. Close it when done.
type Client struct {
	opts options
	conn *grpc.ClientConn
	addr string

	admin   runnelv1.AdminServiceClient
	produce runnelv1.ProduceServiceClient
	fetch   runnelv1.FetchServiceClient
	offsets runnelv1.OffsetServiceClient

	meta *metaCache

	prodOnce sync.Once
	prod     *producer

	mu        sync.Mutex
	closed    bool
	consumers map[*Consumer]struct{}
}

// windowBytes is the HTTP/2 flow-control window of each stream the client receives on.
const windowBytes = 4 << 20

// New connects to the first of the configured brokers that answers within the dial timeout
// (it calls DescribeCluster to make sure), and returns a Client.
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
	var errs []error
	for _, addr := range o.brokers {
		conn, err := grpc.NewClient(addr,
			grpc.WithTransportCredentials(insecure.NewCredentials()),
			// Large static flow-control windows: a consumer's stream is read ahead without
			// waiting for window updates (gRPC's default starts at 64 KiB and grows by estimate).
			grpc.WithInitialWindowSize(windowBytes), grpc.WithInitialConnWindowSize(4*windowBytes),
			grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(maxMsgBytes), grpc.MaxCallSendMsgSize(maxMsgBytes),
				grpc.ForceCodecV2(wirecodec.Codec))) // protobuf, batches copied once less
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", addr, err))
			continue
		}
		dctx, cancel := context.WithTimeout(ctx, o.dialTimeout)
		_, err = runnelv1.NewAdminServiceClient(conn).DescribeCluster(dctx, &runnelv1.DescribeClusterRequest{})
		cancel()
		if err != nil {
			_ = conn.Close()
			errs = append(errs, fmt.Errorf("%s: %w", addr, fromRPC(err)))
			if ctx.Err() != nil {
				break
			}
			continue
		}
		c := &Client{
			opts:      o,
			conn:      conn,
			addr:      addr,
			admin:     runnelv1.NewAdminServiceClient(conn),
			produce:   runnelv1.NewProduceServiceClient(conn),
			fetch:     runnelv1.NewFetchServiceClient(conn),
			offsets:   runnelv1.NewOffsetServiceClient(conn),
			consumers: map[*Consumer]struct{}{},
		}
		c.meta = newMetaCache(c.admin, o.retryBackoff, o.deliveryTimeout)
		return c, nil
	}
	return nil, fmt.Errorf("runnel: no broker reachable: %w", errors.Join(errs...))
}

// Addr returns the address of the broker the client is connected to.
func (c *Client) Addr() string { return c.addr }

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
// connection. Calls after the first return nil.
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
	errs = append(errs, c.conn.Close())
	return errors.Join(errs...)
}

func (c *Client) isClosed() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.closed
}
