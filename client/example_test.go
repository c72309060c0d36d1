package client_test

import (
	"context"
	"fmt"
	"log"
	"time"

	"github.com/runnel-io/runnel/client"
)

// Examples need a running broker (runneld on 127.0.0.1:9420, or $RUNNEL_BROKERS), so they are
// compiled but not run by go test.

func Example() {
	ctx := context.Background()
	cl, err := client.New(ctx)
	if err != nil {
		log.Fatal(err)
	}
	defer cl.Close()
	if err := cl.CreateTopic(ctx, "orders", 3, 1, nil); err != nil {
		log.Fatal(err)
	}
	r := &client.Record{Topic: "orders", Key: []byte("customer-7"), Value: []byte(`{"total":42}`)}
	if err := cl.ProduceSync(ctx, r); err != nil {
		log.Fatal(err)
	}
	fmt.Printf("written to partition %d at offset %d\n", r.Partition, r.Offset)
}

func ExampleClient_Produce() {
	ctx := context.Background()
	cl, err := client.New(ctx, client.WithLinger(10*time.Millisecond), client.WithCompression(client.CompressionZstd))
	if err != nil {
		log.Fatal(err)
	}
	defer cl.Close()
	for i := range 1000 {
		cl.Produce(ctx, &client.Record{Topic: "events", Value: fmt.Appendf(nil, "event %d", i)}, func(r *client.Record, err error) {
			if err != nil {
				log.Printf("record %q failed: %v", r.Value, err)
			}
		})
	}
	// Wait for every acknowledgement (Close would too).
	if err := cl.Flush(ctx); err != nil {
		log.Fatal(err)
	}
}

func ExampleConsumer_Run() {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cl, err := client.New(ctx)
	if err != nil {
		log.Fatal(err)
	}
	defer cl.Close()
	c := cl.NewConsumer(client.WithGroup("billing"), client.WithAutoCommit(5*time.Second))
	defer c.Close() // commits what was handled
	for p := range int32(3) {
		if err := c.Assign("orders", p, client.Committed()); err != nil {
			log.Fatal(err)
		}
	}
	err = c.Run(ctx, func(r *client.Record) error {
		fmt.Printf("%d/%d %s=%s\n", r.Partition, r.Offset, r.Key, r.Value)
		return nil
	})
	if err != nil {
		log.Fatal(err)
	}
}

func ExampleConsumer_Poll() {
	ctx := context.Background()
	cl, err := client.New(ctx)
	if err != nil {
		log.Fatal(err)
	}
	defer cl.Close()
	c := cl.NewConsumer()
	defer c.Close()
	if err := c.Assign("orders", 0, client.AtTime(time.Now().Add(-time.Hour))); err != nil {
		log.Fatal(err)
	}
	recs, err := c.Poll(ctx)
	if err != nil {
		log.Fatal(err)
	}
	for _, r := range recs {
		fmt.Println(r.Offset, string(r.Value))
	}
}
