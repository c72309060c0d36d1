package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/runnel-io/runnel/internal/recordbatch"
	runnelv1 "github.com/runnel-io/runnel/proto/runnel/v1"
	"github.com/runnel-io/runnel/topic"
)

// Batch limits of runnel produce: a partition's batch is sent when it reaches either.
const (
	produceBatchRecords = 500
	produceBatchBytes   = 256 << 10
)

type produceOpts struct {
	key, keySep string
	keySet      bool
	headers     []string
	acks        string
	partition   int32
	verbose     bool
}

func (a *app) produceCmd() *cobra.Command {
	var o produceOpts
	c := &cobra.Command{
		Use:   "produce TOPIC",
		Short: "Produce one record per line of standard input",
		Long: `Produce one record per line of standard input (the line without its newline is the value).

Records are batched per partition (up to 500 records or 256 KiB, or whatever input is available)
and sent with the chosen acks. Without -p, keyed records go to the partition Kafka's default
partitioner picks (murmur2 of the key) and keyless records use sticky partitioning.
The command exits 0 once every record is acknowledged.`,
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
	f.BoolVarP(&o.verbose, "verbose", "v", false, "print the partition and offsets of every batch")
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

// producer batches the records of one topic per partition and sends them.
type producer struct {
	a        *app
	cl       *clients
	topic    string
	acks     runnelv1.Acks
	verbose  bool
	builders map[int32]*recordbatch.Builder
	sticky   *topic.StickyPartitioner
}

func (a *app) produce(ctx context.Context, topicName string, o produceOpts) error {
	acks, err := parseAcks(o.acks)
	if err != nil {
		return err
	}
	if o.keySet && o.keySep != "" {
		return usagef("-k and --key-separator are exclusive")
	}
	hm := make([]recordbatch.RecordHeader, 0, len(o.headers))
	for _, h := range o.headers {
		k, v, ok := strings.Cut(h, "=")
		if !ok {
			return usagef("invalid -H %q: want key=value", h)
		}
		hm = append(hm, recordbatch.RecordHeader{Key: k, Value: []byte(v)})
	}
	cl, err := a.clients(ctx)
	if err != nil {
		return err
	}
	desc, err := a.describeTopic(ctx, cl, topicName)
	if err != nil {
		return err
	}
	n := int(desc.GetTopic().GetPartitionCount())
	if o.partition >= 0 && int(o.partition) >= n {
		return fmt.Errorf("topic %q has %d partition(s): no partition %d", topicName, n, o.partition)
	}
	p := &producer{a: a, cl: cl, topic: topicName, acks: acks, verbose: o.verbose,
		builders: map[int32]*recordbatch.Builder{}, sticky: topic.NewStickyPartitioner(rand.IntN)}

	r := bufio.NewReaderSize(a.stdin, 64<<10)
	for {
		line, rerr := r.ReadBytes('\n')
		if rerr != nil && !errors.Is(rerr, io.EOF) {
			return fmt.Errorf("reading standard input: %w", rerr)
		}
		if len(line) > 0 {
			line = bytes.TrimSuffix(line, []byte("\n"))
			line = bytes.TrimSuffix(line, []byte("\r"))
			var key, value []byte
			switch {
			case o.keySet:
				key, value = []byte(o.key), line
			case o.keySep != "":
				if k, v, ok := bytes.Cut(line, []byte(o.keySep)); ok {
					key, value = k, v
				} else {
					value = line
				}
			default:
				value = line
			}
			part := o.partition
			if part < 0 {
				part = int32(p.sticky.Partition(topicName, key, n))
			}
			b := p.builders[part]
			if b == nil {
				b = recordbatch.NewBuilder(recordbatch.BuilderOptions{})
				p.builders[part] = b
			}
			b.Add(recordbatch.Record{Timestamp: time.Now().UnixMilli(), Key: key, Value: value, Headers: hm})
			if b.Len() >= produceBatchRecords || b.EstimatedSize() >= produceBatchBytes {
				if err := p.flush(ctx, part); err != nil {
					return err
				}
			}
		}
		if rerr != nil { // EOF
			break
		}
		// Send what is pending whenever no more input is at hand, so that interactive input
		// is not held back; piped input still fills batches.
		if r.Buffered() == 0 {
			if err := p.flushAll(ctx); err != nil {
				return err
			}
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
	}
	return p.flushAll(ctx)
}

func (p *producer) flushAll(ctx context.Context) error {
	for part, b := range p.builders {
		if b.Len() > 0 {
			if err := p.flush(ctx, part); err != nil {
				return err
			}
		}
	}
	return nil
}

// flush sends partition part's batch and waits for its acknowledgement.
func (p *producer) flush(ctx context.Context, part int32) error {
	b := p.builders[part]
	count := b.Len()
	batch, err := b.Build()
	if err != nil {
		return fmt.Errorf("building batch for %s/%d: %w", p.topic, part, err)
	}
	b.Reset()
	p.sticky.OnNewBatch(p.topic, int(part))
	rctx, cancel := p.a.rpcCtx(ctx)
	defer cancel()
	resp, err := p.cl.produce.Produce(rctx, &runnelv1.ProduceRequest{
		Acks:       p.acks,
		Partitions: []*runnelv1.ProducePartition{{Topic: p.topic, Partition: part, Batches: batch}},
	})
	if err != nil {
		return err
	}
	for _, r := range resp.GetPartitions() {
		if err := apiError(r.GetError()); err != nil {
			return err
		}
		if p.verbose {
			if p.acks == runnelv1.Acks_ACKS_NONE {
				fmt.Fprintf(p.a.stdout, "%s partition %d: %d record(s) sent (acks none)\n", p.topic, r.GetPartition(), count)
			} else {
				fmt.Fprintf(p.a.stdout, "%s partition %d: %d record(s) at offsets %d-%d\n", p.topic, r.GetPartition(), count,
					r.GetBaseOffset(), r.GetBaseOffset()+int64(count)-1)
			}
		}
	}
	if p.verbose && len(resp.GetPartitions()) == 0 {
		fmt.Fprintf(p.a.stdout, "%s partition %d: %d record(s) sent\n", p.topic, part, count)
	}
	return nil
}
