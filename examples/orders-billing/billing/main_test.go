package main

import (
	"context"
	"encoding/json"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/runnel-io/runnel/client"
	"github.com/runnel-io/runnel/examples/orders-billing/events"
	"github.com/runnel-io/runnel/internal/brokertest"
)

// TestOrdersToBilling runs the orders program (built from ../orders) against an in-process
// broker while billing runs in a goroutine, then restarts billing: after a clean stop, and
// after a simulated crash that lost its last commits.
func TestOrdersToBilling(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	b := brokertest.Start(t)
	cl, err := client.New(ctx, client.WithBrokers(b.Addr()))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()

	ordersBin := filepath.Join(t.TempDir(), "orders")
	if out, err := exec.Command("go", "build", "-o", ordersBin, "github.com/runnel-io/runnel/examples/orders-billing/orders").CombinedOutput(); err != nil {
		t.Fatalf("go build orders: %v\n%s", err, out)
	}
	placeOrders := func(count int, prefix string) {
		t.Helper()
		cmd := exec.CommandContext(ctx, ordersBin, "--count", itoa(count), "--customers", "3", "--id-prefix", prefix)
		cmd.Env = append(os.Environ(), "RUNNEL_BROKERS="+b.Addr()) // the SDK's default
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("orders: %v\n%s", err, out)
		}
	}

	ledger := NewLedger()
	startBilling := func() (stop func()) {
		t.Helper()
		bctx, bcancel := context.WithCancel(ctx)
		done := make(chan error, 1)
		// Commit after every polled batch, so that a clean stop and a crash differ clearly.
		go func() {
			done <- run(bctx, cl, io.Discard, options{Group: "billing", CommitInterval: time.Nanosecond, Ledger: ledger})
		}()
		return func() {
			t.Helper()
			bcancel()
			if err := <-done; err != nil {
				t.Fatalf("billing: %v", err)
			}
		}
	}

	// 1. 100 orders over 3 customers: 100 invoices whose totals match.
	stop := startBilling()
	placeOrders(100, "a")
	invoices := waitBilled(t, ctx, cl, ledger, 100)
	stop()
	checkInvoices(t, readAll(t, ctx, cl, events.OrdersTopic), invoices)
	if c := committed(t, ctx, cl); c != 100 {
		t.Fatalf("committed %d orders after a clean stop, want 100", c)
	}

	// 2. Restart with the same group: only the 50 new orders are billed.
	placeOrders(50, "b")
	stop = startBilling()
	invoices = waitBilled(t, ctx, cl, ledger, 150)
	stop()
	checkInvoices(t, readAll(t, ctx, cl, events.OrdersTopic), invoices)
	if d := ledger.Duplicates(); d != 0 {
		t.Fatalf("%d orders delivered again after a clean stop", d)
	}

	// 3. A crash after invoicing but before committing: rewind the group's offsets by up to 10
	// per partition. The restarted billing sees those orders again and the ledger skips them.
	cos, err := cl.FetchCommitted(ctx, "billing")
	if err != nil {
		t.Fatal(err)
	}
	rewind, rewound := map[client.TopicPartition]int64{}, 0
	for _, co := range cos {
		off := max(co.Offset-10, 0)
		rewind[client.TopicPartition{Topic: co.Topic, Partition: co.Partition}] = off
		rewound += int(co.Offset - off)
	}
	if err := cl.CommitOffsets(ctx, "billing", rewind, ""); err != nil {
		t.Fatal(err)
	}
	stop = startBilling()
	for ledger.Duplicates() < rewound { // wait for the redelivered tail
		if ctx.Err() != nil {
			t.Fatalf("%d of %d redelivered orders seen", ledger.Duplicates(), rewound)
		}
		time.Sleep(5 * time.Millisecond)
	}
	stop()
	if d := ledger.Duplicates(); d != rewound {
		t.Fatalf("%d duplicates skipped, want %d", d, rewound)
	}
	if n := total(t, ctx, cl, events.InvoicesTopic); n != 150 {
		t.Fatalf("%d invoices after the redelivery, want still 150", n)
	}
	if c := committed(t, ctx, cl); c != 150 {
		t.Fatalf("committed %d orders, want 150", c)
	}
}

func itoa(n int) string { return strconv.Itoa(n) }

// checkInvoices checks that invoices bill each order exactly once and that each customer's
// last invoice carries the sum of the customer's orders.
func checkInvoices(t *testing.T, orderRecs, invoiceRecs []*client.Record) {
	t.Helper()
	want := map[string]int64{}
	ids := map[string]bool{}
	for _, r := range orderRecs {
		var o events.Order
		if err := json.Unmarshal(r.Value, &o); err != nil {
			t.Fatal(err)
		}
		want[o.Customer] += o.AmountCents
		ids[o.ID] = true
	}
	if len(want) != 3 {
		t.Fatalf("orders of %d customers, want 3", len(want))
	}
	sum, last := map[string]int64{}, map[string]int64{}
	for _, r := range invoiceRecs { // a customer's invoices are on one partition, in order
		var inv events.Invoice
		if err := json.Unmarshal(r.Value, &inv); err != nil {
			t.Fatal(err)
		}
		if !ids[inv.OrderID] {
			t.Fatalf("invoice for unknown or already billed order %s", inv.OrderID)
		}
		delete(ids, inv.OrderID)
		sum[inv.Customer] += inv.AmountCents
		if string(r.Key) != inv.Customer || inv.TotalCents != sum[inv.Customer] {
			t.Fatalf("invoice %+v (key %s): running total should be %d", inv, r.Key, sum[inv.Customer])
		}
		last[inv.Customer] = inv.TotalCents
	}
	if len(ids) != 0 {
		t.Fatalf("%d orders not billed", len(ids))
	}
	for c, w := range want {
		if last[c] != w {
			t.Errorf("%s: billed %d cents in total, ordered %d", c, last[c], w)
		}
	}
}

// total returns how many records topic holds.
func total(t *testing.T, ctx context.Context, cl *client.Client, topic string) int {
	t.Helper()
	ends, err := cl.ListOffsets(ctx, topic, client.Latest())
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, off := range ends {
		n += int(off)
	}
	return n
}

// waitBilled waits until l billed n orders (each order is consumed once it is in l, so a
// stop then commits it) and returns every record of the invoices topic.
func waitBilled(t *testing.T, ctx context.Context, cl *client.Client, l *Ledger, n int) []*client.Record {
	t.Helper()
	for l.Billed() < n {
		if ctx.Err() != nil {
			t.Fatalf("%d of %d orders billed: %v", l.Billed(), n, ctx.Err())
		}
		time.Sleep(5 * time.Millisecond)
	}
	return readAll(t, ctx, cl, events.InvoicesTopic)
}

// readAll reads every record topic holds now.
func readAll(t *testing.T, ctx context.Context, cl *client.Client, topic string) []*client.Record {
	t.Helper()
	ends, err := cl.ListOffsets(ctx, topic, client.Latest())
	if err != nil {
		t.Fatal(err)
	}
	c := cl.NewConsumer()
	defer c.Close()
	left := 0
	for p, end := range ends {
		if end > 0 {
			left++
			if err := c.Assign(topic, p, client.Earliest()); err != nil {
				t.Fatal(err)
			}
		}
	}
	var out []*client.Record
	for left > 0 {
		recs, err := c.Poll(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range recs {
			if r.Offset < ends[r.Partition] {
				out = append(out, r)
			}
			if r.Offset == ends[r.Partition]-1 {
				left--
			}
		}
	}
	return out
}

// committed returns the sum of the billing group's committed offsets.
func committed(t *testing.T, ctx context.Context, cl *client.Client) int {
	t.Helper()
	cos, err := cl.FetchCommitted(ctx, "billing")
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, co := range cos {
		n += int(co.Offset)
	}
	return n
}
