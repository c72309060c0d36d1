// Command producer writes keyed records to a Runnel topic, creating the topic if it is missing,
// and prints where they landed. Start a broker with `make run` (127.0.0.1:9420), then:
//
//	go run ./examples/producer --topic demo --count 10
//
// --brokers (default: $RUNNEL_BROKERS, else 127.0.0.1:9420) names the broker; see --help.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"maps"
	"os"
	"os/signal"
	"slices"
	"strings"
	"sync"

	"github.com/runnel-io/runnel/client"
)

type options struct {
	Topic      string
	Partitions int32 // for a topic created here
	Count      int   // records to produce
	Keys       int   // distinct keys: key-0 .. key-<Keys-1>
}

func main() {
	brokers := flag.String("brokers", "", "comma-separated broker addresses (default: $RUNNEL_BROKERS, else "+client.DefaultBroker+")")
	var o options
	flag.StringVar(&o.Topic, "topic", "demo", "topic to produce to")
	partitions := flag.Int("partitions", 3, "partitions of the topic, if it is created")
	flag.IntVar(&o.Count, "count", 10, "records to produce")
	flag.IntVar(&o.Keys, "keys", 3, "distinct record keys")
	flag.Parse()
	o.Partitions = int32(*partitions)

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	if err := connectAndRun(ctx, *brokers, o); err != nil {
		fmt.Fprintln(os.Stderr, "producer:", err)
		os.Exit(1)
	}
}

func connectAndRun(ctx context.Context, brokers string, o options) error {
	// WithBrokers() with no address keeps the SDK's default ($RUNNEL_BROKERS, else 127.0.0.1:9420).
	cl, err := client.New(ctx, client.WithBrokers(splitList(brokers)...))
	if err != nil {
		return err
	}
	defer cl.Close()
	return run(ctx, cl, os.Stdout, o)
}

// run creates o.Topic if needed, produces o.Count keyed records asynchronously and prints how
// many landed on each partition and at which offsets.
func run(ctx context.Context, cl *client.Client, out io.Writer, o options) error {
	err := cl.CreateTopic(ctx, o.Topic, o.Partitions, 1, nil)
	if e := (*client.Error)(nil); errors.As(err, &e) && e.Reason == "TOPIC_ALREADY_EXISTS" {
		err = nil
	}
	if err != nil {
		return err
	}

	var (
		mu    sync.Mutex
		errs  []error
		first = map[int32]int64{} // partition -> lowest offset written
		last  = map[int32]int64{} // partition -> highest offset written
		count = map[int32]int{}
	)
	for i := range o.Count {
		r := &client.Record{
			Topic: o.Topic,
			Key:   fmt.Appendf(nil, "key-%d", i%max(o.Keys, 1)), // same key, same partition
			Value: fmt.Appendf(nil, "message %d", i),
		}
		cl.Produce(ctx, r, func(r *client.Record, err error) {
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				errs = append(errs, fmt.Errorf("%s: %w", r.Value, err))
				return
			}
			if n, ok := first[r.Partition]; !ok || r.Offset < n {
				first[r.Partition] = r.Offset
			}
			last[r.Partition] = max(last[r.Partition], r.Offset)
			count[r.Partition]++
		})
	}
	if err := cl.Flush(ctx); err != nil { // every callback has returned after this
		return err
	}

	mu.Lock()
	defer mu.Unlock()
	for _, p := range slices.Sorted(maps.Keys(count)) {
		fmt.Fprintf(out, "partition %d: %d records, offsets %d-%d\n", p, count[p], first[p], last[p])
	}
	fmt.Fprintf(out, "produced %d of %d records to %q\n", o.Count-len(errs), o.Count, o.Topic)
	return errors.Join(errs...)
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
