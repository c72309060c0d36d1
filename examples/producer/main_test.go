package main

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/runnel-io/runnel/client"
	"github.com/runnel-io/runnel/internal/brokertest"
)

func TestProducerRecordsAreConsumable(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	b := brokertest.Start(t)
	cl, err := client.New(ctx, client.WithBrokers(b.Addr()))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()

	o := options{Topic: "demo", Partitions: 3, Count: 50, Keys: 4}
	var out strings.Builder
	if err := run(ctx, cl, &out, o); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), `produced 50 of 50 records to "demo"`) {
		t.Fatalf("output:\n%s", out.String())
	}
	// A second run finds the topic already there and appends.
	out.Reset()
	if err := run(ctx, cl, &out, o); err != nil {
		t.Fatalf("second run: %v", err)
	}

	// Read everything back: each value twice, each key on one partition.
	c := cl.NewConsumer()
	defer c.Close()
	for p := range o.Partitions {
		if err := c.Assign(o.Topic, p, client.Earliest()); err != nil {
			t.Fatal(err)
		}
	}
	seen := map[string]int{}
	keyPart := map[string]int32{}
	for n := 0; n < 2*o.Count; {
		recs, err := c.Poll(ctx)
		if err != nil {
			t.Fatalf("poll after %d records: %v", n, err)
		}
		for _, r := range recs {
			n++
			seen[string(r.Value)]++
			if p, ok := keyPart[string(r.Key)]; ok && p != r.Partition {
				t.Errorf("key %s on partitions %d and %d", r.Key, p, r.Partition)
			}
			keyPart[string(r.Key)] = r.Partition
		}
	}
	for i := range o.Count {
		if v := fmt.Sprintf("message %d", i); seen[v] != 2 {
			t.Errorf("%q consumed %d times, want 2", v, seen[v])
		}
	}
	if len(keyPart) != o.Keys {
		t.Errorf("keys: %v", keyPart)
	}
}
