package main

import (
	"context"
	"encoding/json"
	"io"
	"testing"
	"time"

	"github.com/runnel-io/runnel/client"
	"github.com/runnel-io/runnel/examples/orders-billing/events"
	"github.com/runnel-io/runnel/internal/brokertest"
)

func TestOrdersAreKeyedByCustomer(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	b := brokertest.Start(t)
	cl, err := client.New(ctx, client.WithBrokers(b.Addr()))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()

	placed, err := run(ctx, cl, io.Discard, options{Count: 30, Customers: 3, IDPrefix: "t"})
	if err != nil {
		t.Fatal(err)
	}
	if len(placed) != 30 {
		t.Fatalf("placed %d orders, want 30", len(placed))
	}
	want := map[string]events.Order{}
	for _, o := range placed {
		want[o.ID] = o
	}

	c := cl.NewConsumer()
	defer c.Close()
	for p := range int32(events.Partitions) {
		if err := c.Assign(events.OrdersTopic, p, client.Earliest()); err != nil {
			t.Fatal(err)
		}
	}
	custPart := map[string]int32{}
	for len(want) > 0 {
		recs, err := c.Poll(ctx)
		if err != nil {
			t.Fatalf("%d orders not consumed: %v", len(want), err)
		}
		for _, r := range recs {
			var o events.Order
			if err := json.Unmarshal(r.Value, &o); err != nil {
				t.Fatal(err)
			}
			if w, ok := want[o.ID]; !ok || w != o || string(r.Key) != o.Customer {
				t.Fatalf("record %s=%s: unexpected", r.Key, r.Value)
			}
			delete(want, o.ID)
			if p, ok := custPart[o.Customer]; ok && p != r.Partition {
				t.Errorf("%s on partitions %d and %d", o.Customer, p, r.Partition)
			}
			custPart[o.Customer] = r.Partition
		}
	}
	if len(custPart) != 3 {
		t.Errorf("customers: %v", custPart)
	}
}
