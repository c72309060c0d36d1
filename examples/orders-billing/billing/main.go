// Command billing is the billing service of the orders-billing example. It consumes topic
// "orders" as consumer group --group, keeps a running total per customer, and produces one
// invoice (JSON events.Invoice, keyed by customer) per order to topic "invoices". Start a
// broker with `make run` (127.0.0.1:9420), then:
//
//	go run ./examples/orders-billing/billing            # runs until Ctrl-C
//	go run ./examples/orders-billing/orders --count 100 # in another terminal
//
// --brokers (default: $RUNNEL_BROKERS, else 127.0.0.1:9420) names the broker; see --help.
//
// # Delivery guarantees
//
// Billing is at least once. An order counts as consumed once its invoice has been
// acknowledged, and the group's offsets are committed every --commit-interval and on exit. If
// billing crashes after writing invoices but before committing, the orders since the last
// commit are delivered again after the restart, and a naive service would bill them twice.
//
// So billing is made idempotent by order id: the Ledger remembers which orders were billed
// and skips those it sees again. Here the Ledger lives in memory, so it only covers
// redeliveries within one process (and the tests, which keep it across restarts); a real
// service would keep it where it survives a crash: a database table of billed order ids
// (a unique key), updated in the same transaction as the totals, or state rebuilt on start by
// reading the invoices topic, whose records carry the order ids.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"sync"
	"time"

	"github.com/runnel-io/runnel/client"
	"github.com/runnel-io/runnel/examples/orders-billing/events"
)

type options struct {
	Group string
	// CommitInterval is how often the group's progress is committed (and on exit); the orders
	// consumed since the last commit are those billing could see again after a crash.
	CommitInterval time.Duration
	// Ledger is the billing state; nil: a new, empty one.
	Ledger *Ledger
}

func main() {
	brokers := flag.String("brokers", "", "comma-separated broker addresses (default: $RUNNEL_BROKERS, else "+client.DefaultBroker+")")
	var o options
	flag.StringVar(&o.Group, "group", "billing", "consumer group")
	flag.DurationVar(&o.CommitInterval, "commit-interval", time.Second, "how often to commit the group's progress")
	flag.Parse()

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	cl, err := client.New(ctx, client.WithBrokers(splitList(*brokers)...))
	if err == nil {
		err = run(ctx, cl, os.Stdout, o)
		err = errors.Join(err, cl.Close())
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "billing:", err)
		os.Exit(1)
	}
}

// run bills the orders of the group's partitions of topic "orders" until ctx ends (a clean
// stop, which commits the progress made) or a failure.
func run(ctx context.Context, cl *client.Client, out io.Writer, o options) error {
	if o.Ledger == nil {
		o.Ledger = NewLedger()
	}
	for _, topic := range []string{events.OrdersTopic, events.InvoicesTopic} {
		if err := events.EnsureTopic(ctx, cl, topic); err != nil {
			return err
		}
	}
	ti, err := cl.DescribeTopic(ctx, events.OrdersTopic)
	if err != nil {
		return err
	}
	// No group membership yet: this process takes every partition, resuming from the group's
	// committed offsets.
	c := cl.NewConsumer(client.WithGroup(o.Group), client.WithAutoCommit(o.CommitInterval))
	for p := range ti.PartitionCount {
		if err := c.Assign(events.OrdersTopic, p, client.Committed()); err != nil {
			return errors.Join(err, c.Close())
		}
	}
	err = c.Run(ctx, func(r *client.Record) error { return bill(ctx, cl, out, o.Ledger, r) })
	if ctx.Err() != nil {
		// Stopping. An order whose invoice was being written is not consumed: it comes again
		// after the restart, and the Ledger skips it if its invoice was written after all.
		err = nil
	}
	// Close commits the offset after the last order billed of each partition.
	return errors.Join(err, c.Close())
}

// bill writes the invoice of the order in r, unless the order was billed already.
func bill(ctx context.Context, cl *client.Client, out io.Writer, l *Ledger, r *client.Record) error {
	var ord events.Order
	if err := json.Unmarshal(r.Value, &ord); err != nil || ord.ID == "" {
		// A malformed order would fail forever: skip it (a real service would dead-letter it).
		fmt.Fprintf(out, "skipping malformed order at %d/%d: %q\n", r.Partition, r.Offset, r.Value)
		return nil
	}
	inv, dup := l.invoice(ord)
	if dup {
		fmt.Fprintf(out, "order %s already billed: skipped (redelivered)\n", ord.ID)
		return nil
	}
	v, err := json.Marshal(inv)
	if err != nil {
		return err
	}
	// One synchronous produce per order keeps the sketch simple; a faster service would
	// produce a polled batch's invoices asynchronously and Flush before committing.
	if err := cl.ProduceSync(ctx, &client.Record{Topic: events.InvoicesTopic, Key: []byte(inv.Customer), Value: v}); err != nil {
		return fmt.Errorf("invoice for order %s: %w", ord.ID, err)
	}
	l.record(inv) // only now: an invoice that failed is retried on redelivery
	fmt.Fprintf(out, "billed order %s: %s +%d cents, total %d\n", ord.ID, inv.Customer, inv.AmountCents, inv.TotalCents)
	return nil
}

// Ledger is billing's state: each customer's running total, and the ids of the orders billed,
// to skip redelivered orders. It is safe for concurrent use.
type Ledger struct {
	mu         sync.Mutex
	totals     map[string]int64
	billed     map[string]bool
	duplicates int
}

// NewLedger returns an empty Ledger.
func NewLedger() *Ledger {
	return &Ledger{totals: map[string]int64{}, billed: map[string]bool{}}
}

// invoice returns the invoice of ord, or dup if ord was billed already (counting it).
func (l *Ledger) invoice(ord events.Order) (inv events.Invoice, dup bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.billed[ord.ID] {
		l.duplicates++
		return events.Invoice{}, true
	}
	return events.Invoice{OrderID: ord.ID, Customer: ord.Customer, AmountCents: ord.AmountCents,
		TotalCents: l.totals[ord.Customer] + ord.AmountCents}, false
}

// record notes that inv was written.
func (l *Ledger) record(inv events.Invoice) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.billed[inv.OrderID] = true
	l.totals[inv.Customer] = inv.TotalCents
}

// Totals returns a copy of the running totals by customer.
func (l *Ledger) Totals() map[string]int64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	m := make(map[string]int64, len(l.totals))
	for k, v := range l.totals {
		m[k] = v
	}
	return m
}

// Billed returns how many orders were billed.
func (l *Ledger) Billed() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.billed)
}

// Duplicates returns how many redelivered orders were skipped.
func (l *Ledger) Duplicates() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.duplicates
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
