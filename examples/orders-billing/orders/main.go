// Command orders is the order service of the orders-billing example: it produces --count
// order events (JSON events.Order) for --customers customers to topic "orders", keyed by
// customer so that a customer's orders stay in order on one partition. Start a broker with
// `make run` (127.0.0.1:9420) and the billing service (go run ./examples/orders-billing/billing),
// then:
//
//	go run ./examples/orders-billing/orders --count 100 --customers 3
//
// --brokers (default: $RUNNEL_BROKERS, else 127.0.0.1:9420) names the broker; see --help.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/signal"
	"strings"
	"sync"
	"time"

	"github.com/runnel-io/runnel/client"
	"github.com/runnel-io/runnel/examples/orders-billing/events"
)

type options struct {
	Count     int
	Customers int
	// IDPrefix starts every order id, so that the ids of separate runs differ.
	IDPrefix string
}

func main() {
	brokers := flag.String("brokers", "", "comma-separated broker addresses (default: $RUNNEL_BROKERS, else "+client.DefaultBroker+")")
	var o options
	flag.IntVar(&o.Count, "count", 100, "orders to place")
	flag.IntVar(&o.Customers, "customers", 3, "distinct customers")
	flag.StringVar(&o.IDPrefix, "id-prefix", time.Now().Format("20060102T150405"), "prefix of the order ids")
	flag.Parse()

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	cl, err := client.New(ctx, client.WithBrokers(splitList(*brokers)...))
	if err == nil {
		_, err = run(ctx, cl, os.Stdout, o)
		err = errors.Join(err, cl.Close())
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "orders:", err)
		os.Exit(1)
	}
}

// run places o.Count orders of random amounts, spread over o.Customers customers, and returns
// the orders acknowledged by the broker.
func run(ctx context.Context, cl *client.Client, out io.Writer, o options) ([]events.Order, error) {
	if err := events.EnsureTopic(ctx, cl, events.OrdersTopic); err != nil {
		return nil, err
	}
	var (
		mu     sync.Mutex
		placed []events.Order
		errs   []error
	)
	for i := range o.Count {
		ord := events.Order{
			ID:          fmt.Sprintf("%s-%d", o.IDPrefix, i),
			Customer:    fmt.Sprintf("customer-%d", i%max(o.Customers, 1)),
			AmountCents: 100 + rand.Int64N(10_000),
		}
		v, err := json.Marshal(ord)
		if err != nil {
			return nil, err
		}
		r := &client.Record{Topic: events.OrdersTopic, Key: []byte(ord.Customer), Value: v}
		cl.Produce(ctx, r, func(r *client.Record, err error) {
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				errs = append(errs, fmt.Errorf("order %s: %w", ord.ID, err))
				return
			}
			placed = append(placed, ord)
			fmt.Fprintf(out, "order %s: %s, %d cents (partition %d, offset %d)\n", ord.ID, ord.Customer, ord.AmountCents, r.Partition, r.Offset)
		})
	}
	err := cl.Flush(ctx)
	mu.Lock()
	defer mu.Unlock()
	return placed, errors.Join(append(errs, err)...)
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
