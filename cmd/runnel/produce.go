package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"time"

	"github.com/spf13/cobra"

	"github.com/runnel-io/runnel/client"
	runnelv1 "github.com/runnel-io/runnel/proto/runnel/v1"
)

type produceOpts struct {
	key, keySep     string
	keySet          bool
	headers         []string
	acks            string
	partition       int32
	verbose         bool
	deliveryTimeout time.Duration
	linger          time.Duration
	batchBytes      int
}

func (a *app) produceCmd() *cobra.Command {
	var o produceOpts
	c := &cobra.Command{
		Use:   "produce TOPIC",
		Short: "Produce one record per line of standard input",
		Long: `Produce one record per line of standard input (the line without its newline is the value).

Records go through the Go SDK's producer: batched per partition (up to --batch-bytes, or
--linger after a batch's first record) and sent with the chosen acks, one batch per partition
in flight so that the lines keep their order. Without -p, keyed records go to the partition
Kafka's default partitioner picks (murmur2 of the key) and keyless records use sticky
partitioning. Retriable failures (the broker unavailable or restarting, a lost connection, a
timeout) are retried until --delivery-timeout has passed since the record was read; a retry
may duplicate records (delivery is at least once). The command exits 0 once every record is
acknowledged, and 1 if any record failed.`,
		Args: exactArgs(1, "a TOPIC"),
		RunE: func(cmd *cobra.Command, args []string) error {
			o.keySet = cmd.Flags().Changed("key")
			if !cmd.Flags().Changed("partition") {
				o.partition = -1
			}
			return a.produce(cmd.Context(), args[0], o)
		},
	}
	f := c.Flags()
	f.StringVarP(&o.key, "key", "k", "", "key of every record")
	f.StringVar(&o.keySep, "key-separator", "", "split each line at the first SEP into key and value (a line without SEP has no key)")
	f.StringArrayVarP(&o.headers, "header", "H", nil, "header key=value added to every record (repeatable)")
	f.StringVar(&o.acks, "acks", "all", "acknowledgement: all (durable), leader or none")
	f.Int32VarP(&o.partition, "partition", "p", -1, "partition to produce to (default: by key, or sticky for keyless records)")
	f.BoolVarP(&o.verbose, "verbose", "v", false, "print the partition and offset of every acknowledged record")
	f.DurationVar(&o.deliveryTimeout, "delivery-timeout", 30*time.Second, "how long a record may take to be acknowledged, retries included")
	f.DurationVar(&o.linger, "linger", 5*time.Millisecond, "how long a partition's batch waits for more records before it is sent")
	f.IntVar(&o.batchBytes, "batch-bytes", 1<<20, "size at which a partition's batch is sent without waiting for --linger")
	return c
}

func parseAcks(s string) (runnelv1.Acks, error) {
	switch strings.ToLower(s) {
	case "all", "-1":
		return runnelv1.Acks_ACKS_ALL, nil
	case "leader", "1":
		return runnelv1.Acks_ACKS_LEADER, nil
	case "none", "0":
		return runnelv1.Acks_ACKS_NONE, nil
	}
	return 0, usagef("invalid --acks %q: want all, leader or none", s)
}

// sdkAcks converts the API's acks to the SDK's.
func sdkAcks(a runnelv1.Acks) client.Acks {
	switch a {
	case runnelv1.Acks_ACKS_LEADER:
		return client.AcksLeader
	case runnelv1.Acks_ACKS_NONE:
		return client.AcksNone
	}
	return client.AcksAll
}

// sdkError renders an SDK error for the one-line report: the SDK's own errors start with
// "runnel: ", which the report already starts with; a broker's error becomes its message.
func sdkError(err error) error {
	if err == nil {
		return nil
	}
	var ue usageError
	if errors.As(err, &ue) {
		return err
	}
	var ce *client.Error
	if errors.As(err, &ce) && err == error(ce) {
		msg := ce.Message
		if msg == "" {
			msg = ce.Code.String()
		}
		if ce.Reason != "" && !strings.Contains(msg, ce.Reason) {
			msg += " (" + ce.Reason + ")"
		}
		return errors.New(msg)
	}
	return errors.New(strings.ReplaceAll(err.Error(), "runnel: ", ""))
}

// produceResults collects the outcomes of the records produced, from the SDK's callbacks.
type produceResults struct {
	a       *app
	verbose bool
	acks    client.Acks

	mu     sync.Mutex
	failed int64
	first  error
}

func (r *produceResults) done(rec *client.Record, err error) {
	if err != nil {
		r.mu.Lock()
		r.failed++
		if r.first == nil {
			r.first = err
		}
		r.mu.Unlock()
		return
	}
	if r.verbose {
		r.mu.Lock()
		defer r.mu.Unlock()
		if r.acks == client.AcksNone {
			fmt.Fprintf(r.a.stdout, "%s partition %d: record sent (acks none)\n", rec.Topic, rec.Partition)
		} else {
			fmt.Fprintf(r.a.stdout, "%s partition %d: offset %d\n", rec.Topic, rec.Partition, rec.Offset)
		}
	}
}

func (a *app) produce(ctx context.Context, topicName string, o produceOpts) error {
	return sdkError(a.produceSDK(ctx, topicName, o))
}

func (a *app) produceSDK(ctx context.Context, topicName string, o produceOpts) (err error) {
	acks, err := parseAcks(o.acks)
	if err != nil {
		return err
	}
	if o.keySet && o.keySep != "" {
		return usagef("-k and --key-separator are exclusive")
	}
	switch {
	case o.deliveryTimeout <= 0:
		return usagef("invalid --delivery-timeout %s: must be positive", o.deliveryTimeout)
	case o.linger < 0:
		return usagef("invalid --linger %s: must not be negative", o.linger)
	case o.batchBytes <= 0:
		return usagef("invalid --batch-bytes %d: must be positive", o.batchBytes)
	}
	hs := make([]client.Header, 0, len(o.headers))
	for _, h := range o.headers {
		k, v, ok := strings.Cut(h, "=")
		if !ok {
			return usagef("invalid -H %q: want key=value", h)
		}
		hs = append(hs, client.Header{Key: k, Value: []byte(v)})
	}
	c, err := client.New(ctx, a.sdkOptions(client.WithAcks(sdkAcks(acks)), client.WithDeliveryTimeout(o.deliveryTimeout),
		client.WithLinger(o.linger), client.WithBatchBytes(o.batchBytes), client.WithMaxInFlight(1))...)
	if err != nil {
		return err
	}
	defer func() {
		if cerr := c.Close(); err == nil && cerr != nil {
			err = cerr
		}
	}()
	rctx, cancel := a.rpcCtx(ctx)
	desc, err := c.DescribeTopic(rctx, topicName)
	cancel()
	if err != nil {
		return err
	}
	if n := desc.PartitionCount; o.partition >= 0 && o.partition >= n {
		return fmt.Errorf("topic %q has %d partition(s): no partition %d", topicName, n, o.partition)
	}

	res := &produceResults{a: a, verbose: o.verbose, acks: sdkAcks(acks)}
	var sent int64
	r := bufio.NewReaderSize(a.stdin, 64<<10)
	for {
		line, rerr := r.ReadBytes('\n')
		if rerr != nil && !errors.Is(rerr, io.EOF) {
			return fmt.Errorf("reading standard input: %w", rerr)
		}
		if len(line) > 0 {
			line = bytes.TrimSuffix(line, []byte("\n"))
			line = bytes.TrimSuffix(line, []byte("\r"))
			rec := &client.Record{Topic: topicName, Headers: hs}
			switch {
			case o.keySet:
				rec.Key, rec.Value = []byte(o.key), line
			case o.keySep != "":
				if k, v, ok := bytes.Cut(line, []byte(o.keySep)); ok {
					rec.Key, rec.Value = k, v
				} else {
					rec.Value = line
				}
			default:
				rec.Value = line
			}
			if rec.Value == nil {
				rec.Value = []byte{} // an empty line is an empty value, not null
			}
			if o.partition >= 0 {
				rec.Partition, rec.ManualPartition = o.partition, true
			}
			c.Produce(ctx, rec, res.done)
			sent++
		}
		if rerr != nil { // EOF
			break
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		res.mu.Lock()
		failed := res.failed > 0
		res.mu.Unlock()
		if failed {
			break // the command fails anyway: stop reading
		}
	}
	if err := c.Flush(ctx); err != nil {
		return err
	}
	res.mu.Lock()
	defer res.mu.Unlock()
	if res.failed > 0 {
		return fmt.Errorf("%d of %d record(s) not acknowledged, the first: %w", res.failed, sent, res.first)
	}
	return nil
}
