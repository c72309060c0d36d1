// Command consumer prints the records of every partition of a Runnel topic: from the earliest
// record, or with --group from the group's committed offsets (committing its progress on exit).
// It stops on Ctrl-C (SIGINT) or after --count records. Start a broker with `make run`
// (127.0.0.1:9420), produce something (go run ./examples/producer), then:
//
//	go run ./examples/consumer --topic demo --count 10
//	go run ./examples/consumer --topic demo --group printer   # again: only what is new
//
// --brokers (default: $RUNNEL_BROKERS, else 127.0.0.1:9420) names the broker; see --help.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"

	"github.com/runnel-io/runnel/client"
)

type options struct {
	Topic string
	Group string // "": no group, read from the earliest offsets and commit nothing
	Count int    // stop after this many records; 0: run until ctx ends
}

func main() {
	brokers := flag.String("brokers", "", "comma-separated broker addresses (default: $RUNNEL_BROKERS, else "+client.DefaultBroker+")")
	var o options
	flag.StringVar(&o.Topic, "topic", "demo", "topic to consume")
	flag.StringVar(&o.Group, "group", "", "consumer group: start from its committed offsets and commit on exit")
	flag.IntVar(&o.Count, "count", 0, "stop after this many records (0: until Ctrl-C)")
	flag.Parse()

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	cl, err := client.New(ctx, client.WithBrokers(splitList(*brokers)...))
	if err == nil {
		err = run(ctx, cl, os.Stdout, o)
		err = errors.Join(err, cl.Close())
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "consumer:", err)
		os.Exit(1)
	}
}

// errEnough ends Run once the wanted count of records was printed.
var errEnough = errors.New("enough records")

// run prints the records of every partition of o.Topic until ctx ends or o.Count records were
// printed, then commits the group's progress (with o.Group).
func run(ctx context.Context, cl *client.Client, out io.Writer, o options) error {
	ti, err := cl.DescribeTopic(ctx, o.Topic)
	if err != nil {
		return err
	}
	start, opts := client.Earliest(), []client.ConsumerOption(nil)
	if o.Group != "" {
		start, opts = client.Committed(), append(opts, client.WithGroup(o.Group))
	}
	c := cl.NewConsumer(opts...)
	for p := range ti.PartitionCount {
		if err := c.Assign(o.Topic, p, start); err != nil {
			return errors.Join(err, c.Close())
		}
	}

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	n := 0
	err = c.Run(ctx, func(r *client.Record) error {
		if o.Count > 0 && n >= o.Count {
			return errEnough // not counted as consumed: the group reads it next time
		}
		fmt.Fprintf(out, "partition=%d offset=%d key=%s value=%s\n", r.Partition, r.Offset, r.Key, r.Value)
		if n++; n == o.Count {
			cancel() // Run returns after the records it already holds
		}
		return nil
	})
	if errors.Is(err, errEnough) {
		err = nil
	}
	// Close commits, with the group, the offset after the last record printed of each partition.
	return errors.Join(err, c.Close())
}

// splitList splits a comma-separated list, dropping empty items.
func splitList(s string) []string {
	var out []string
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(f); f != "" {
			out = append(out, f)
		}
	}
	return out
}
