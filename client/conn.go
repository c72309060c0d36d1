package client

import (
	"context"
	"errors"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/runnel-io/runnel/internal/wirecodec"
	runnelv1 "github.com/runnel-io/runnel/proto/runnel/v1"
)

// brokerConn is the connection to one broker address, shared by everything the client sends
// there: the producer's stream, consumers' Subscribe streams, metadata and admin calls.
type brokerConn struct {
	addr    string
	conn    *grpc.ClientConn
	admin   runnelv1.AdminServiceClient
	produce runnelv1.ProduceServiceClient
	fetch   runnelv1.FetchServiceClient
	offsets runnelv1.OffsetServiceClient
}

// conn returns the connection to addr, opening it on first use (grpc.NewClient connects in the
// background; calls wait for it or fail with UNAVAILABLE).
func (c *Client) conn(addr string) (*brokerConn, error) {
	c.connMu.Lock()
	defer c.connMu.Unlock()
	if c.conns == nil {
		return nil, ErrClosed
	}
	if bc := c.conns[addr]; bc != nil {
		return bc, nil
	}
	opts := []grpc.DialOption{
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		// Large static flow-control windows: a consumer's stream is read ahead without
		// waiting for window updates (gRPC's default starts at 64 KiB and grows by estimate).
		grpc.WithInitialWindowSize(windowBytes), grpc.WithInitialConnWindowSize(4 * windowBytes),
		// Fetched batches are read in 256 KiB reads instead of gRPC's 32 KiB.
		grpc.WithReadBufferSize(readBufferBytes),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(maxMsgBytes), grpc.MaxCallSendMsgSize(maxMsgBytes),
			grpc.ForceCodecV2(wirecodec.Codec)), // protobuf, batches copied once less
	}
	if c.opts.dialer != nil {
		opts = append(opts, grpc.WithContextDialer(c.opts.dialer))
	}
	conn, err := grpc.NewClient(addr, opts...)
	if err != nil {
		return nil, err
	}
	bc := &brokerConn{
		addr: addr, conn: conn,
		admin:   runnelv1.NewAdminServiceClient(conn),
		produce: runnelv1.NewProduceServiceClient(conn),
		fetch:   runnelv1.NewFetchServiceClient(conn),
		offsets: runnelv1.NewOffsetServiceClient(conn),
	}
	c.conns[addr] = bc
	return bc, nil
}

// closeConns closes every connection; conn fails with ErrClosed afterwards.
func (c *Client) closeConns() error {
	c.connMu.Lock()
	defer c.connMu.Unlock()
	var errs []error
	for _, bc := range c.conns {
		errs = append(errs, bc.conn.Close())
	}
	c.conns = nil
	return errors.Join(errs...)
}

// candidates lists the brokers to try for a call any broker can answer: the one that answered
// last, then every broker the metadata names, then the seeds.
func (c *Client) candidates() []string {
	out := []string{c.router.bootstrap()}
	seen := map[string]bool{out[0]: true}
	add := func(a string) {
		if a != "" && !seen[a] {
			seen[a] = true
			out = append(out, a)
		}
	}
	for _, a := range c.router.brokerAddrs() {
		add(a)
	}
	for _, a := range c.opts.brokers {
		add(a)
	}
	return out
}

// unreachable reports whether err says the broker could not be reached or is going away (so
// that another broker may answer), rather than that it refused the request.
func unreachable(err error) bool {
	var e *Error
	if !errors.As(err, &e) {
		return false
	}
	switch {
	case e.Code == codes.Unavailable && (e.Reason == "" || e.Reason == reasonName(runnelv1.ErrorReason_ERROR_REASON_SHUTTING_DOWN)):
		return true
	case e.Code == codes.DeadlineExceeded && e.Reason == "":
		return true
	}
	return false
}

// callAny makes a call any broker can answer (metadata, descriptions, reads of committed
// offsets) on the broker that answered last, and on the other known brokers in turn while
// brokers are unreachable. Each attempt but the last is bounded by the dial timeout. The
// broker that answers becomes the one tried first next time.
func (c *Client) callAny(ctx context.Context, f func(context.Context, *brokerConn) error) error {
	cands := c.candidates()
	var err error
	for i, addr := range cands {
		bc, cerr := c.conn(addr)
		if cerr != nil {
			if errors.Is(cerr, ErrClosed) {
				return cerr
			}
			err = cerr
			continue
		}
		actx, cancel := ctx, context.CancelFunc(func() {})
		if i < len(cands)-1 {
			actx, cancel = context.WithTimeout(ctx, c.opts.dialTimeout)
		}
		err = f(actx, bc)
		cancel()
		if err == nil {
			c.router.setBootstrap(addr)
			return nil
		}
		if ctx.Err() != nil {
			return err
		}
		if errors.Is(err, context.DeadlineExceeded) {
			err = &Error{Code: codes.DeadlineExceeded, Partition: -1, Message: "broker " + addr + " did not answer within the dial timeout"}
		}
		if !unreachable(err) {
			return err
		}
		c.opts.logf("runnel: broker %s: %v", addr, err)
	}
	return err
}

// adminRetries bounds the retries of a call that changes metadata while the cluster has no
// metadata leader (an election), after the redirect to the leader the broker named.
const adminRetries = 5

// callMeta makes a call that the metadata leader decides (topic and group changes, offset
// commits). It goes to the metadata leader if the client knows it, else to any broker; a broker
// that is not the leader answers UNAVAILABLE (NOT_METADATA_LEADER) naming it, and the call is
// made again there at once; without a leader named (an election under way), or after
// LEADER_NOT_AVAILABLE, it is retried after the retry backoff, a few times. A call on an
// unreachable broker moves on to the next known one, as in callAny: a call whose answer was
// lost may then have been made twice (CreateTopic then fails with TOPIC_ALREADY_EXISTS).
func (c *Client) callMeta(ctx context.Context, f func(context.Context, *brokerConn) error) error {
	target := c.router.metadataLeaderAddr()
	redirected := false
	for attempt := 0; ; attempt++ {
		var err error
		if target != "" {
			var bc *brokerConn
			if bc, err = c.conn(target); err == nil {
				err = fromRPC(f(ctx, bc))
				if err != nil && unreachable(err) && ctx.Err() == nil {
					c.opts.logf("runnel: broker %s: %v", target, err)
					err = c.callAny(ctx, func(ctx context.Context, bc *brokerConn) error { return fromRPC(f(ctx, bc)) })
				}
			}
		} else {
			err = c.callAny(ctx, func(ctx context.Context, bc *brokerConn) error { return fromRPC(f(ctx, bc)) })
		}
		if err == nil || ctx.Err() != nil {
			return err
		}
		var e *Error
		if !errors.As(err, &e) {
			return err
		}
		notMeta := e.Reason == reasonName(runnelv1.ErrorReason_ERROR_REASON_NOT_METADATA_LEADER)
		if notMeta && e.Info.GetLeaderAddress() != "" && !redirected {
			redirected = true
			target = e.Info.GetLeaderAddress()
			c.router.setMetadataLeader(e.Info.GetLeaderId(), target)
			c.opts.logf("runnel: metadata leader is %s: retrying there", target)
			continue
		}
		if !notMeta && e.Reason != reasonName(runnelv1.ErrorReason_ERROR_REASON_LEADER_NOT_AVAILABLE) || attempt >= adminRetries {
			return err
		}
		t := time.NewTimer(c.opts.retryBackoff)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return err
		}
		if notMeta && e.Info.GetLeaderAddress() != "" {
			target = e.Info.GetLeaderAddress()
		} else {
			target = ""
			c.router.setMetadataLeader(-1, "")
		}
	}
}

// askMetadataLeader makes f again on the metadata leader, when the client knows it and it is
// not the broker that answered; it returns f's error there, or err if it cannot ask.
func (c *Client) askMetadataLeader(ctx context.Context, answered string, err error, f func(context.Context, *brokerConn) error) error {
	leader := c.router.metadataLeaderAddr()
	if leader == "" || leader == answered {
		return err
	}
	bc, cerr := c.conn(leader)
	if cerr != nil {
		return err
	}
	actx, cancel := context.WithTimeout(ctx, c.opts.dialTimeout)
	defer cancel()
	if ferr := f(actx, bc); ferr == nil || !unreachable(ferr) && actx.Err() == nil {
		return ferr
	}
	return err
}
