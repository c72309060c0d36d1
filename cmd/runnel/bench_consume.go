package main

import (
	"context"
	"sync/atomic"
	"time"

	"github.com/spf13/cobra"

	"github.com/runnel-io/runnel/client"
)

type benchConsumeOpts struct {
	topic    string
	records  int64
	maxBytes int32
}

func (a *app) benchConsumeCmd() *cobra.Command {
	o := &benchConsumeOpts{}
	c := &cobra.Command{
		Use:   "consume",
		Short: "Consume a topic from its start and report throughput",
		Long: `bench consume reads every partition of --topic from its earliest offset through the Go SDK
(one Subscribe stream per partition) until --records records have arrived; 0 means all the
records the topic holds when the bench starts. MB/s counts record values. The latency is end to
end: the time a record is consumed minus its timestamp, so it is meaningful when bench produce
runs at the same time, and measures the records' age otherwise.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return a.benchConsume(cmd.Context(), o)
		},
	}
	f := c.Flags()
	f.StringVar(&o.topic, "topic", "runnel-bench", "topic to consume")
	f.Int64Var(&o.records, "records", 0, "records to consume; 0: all the topic holds at the start")
	f.Int32Var(&o.maxBytes, "fetch-max-bytes", 1<<20, "most batch bytes per message of a partition's stream")
	return c
}

func (a *app) benchConsume(ctx context.Context, o *benchConsumeOpts) error {
	if o.records < 0 {
		return usagef("invalid --records %d: must not be negative", o.records)
	}
	if o.maxBytes <= 0 {
		return usagef("invalid --fetch-max-bytes %d: must be positive", o.maxBytes)
	}
	c, err := client.New(ctx, a.sdkOptions()...)
	if err != nil {
		return err
	}
	defer c.Close()
	start, err := c.ListOffsets(ctx, o.topic, client.Earliest())
	if err != nil {
		return err
	}
	end, err := c.ListOffsets(ctx, o.topic, client.Latest())
	if err != nil {
		return err
	}
	want := o.records
	if want == 0 {
		for p, e := range end {
			want += e - start[p]
		}
		if want == 0 {
			return errBenchEmpty
		}
	}
	k := c.NewConsumer(client.WithFetchMaxBytes(o.maxBytes))
	defer k.Close()
	for p := range start {
		if err := k.Assign(o.topic, p, client.Earliest()); err != nil {
			return err
		}
	}
	var (
		lat        latencies
		got, bytes atomic.Int64
	)
	stopProgress := a.progress("consumed", &got)
	began := time.Now()
	for got.Load() < want {
		recs, err := k.Poll(ctx)
		if err != nil {
			stopProgress()
			return err
		}
		now := time.Now()
		var n int64
		for _, r := range recs {
			n += int64(len(r.Value))
			lat.ns = append(lat.ns, int64(now.Sub(r.Timestamp))) // one goroutine: no lock
		}
		bytes.Add(n)
		got.Add(int64(len(recs)))
	}
	elapsed := time.Since(began)
	stopProgress()
	res := a.benchSummary("consume", o.topic, got.Load(), 0, elapsed, lat.stats())
	res.Bytes = bytes.Load()
	res.MBPerSec = float64(res.Bytes) / elapsed.Seconds() / 1e6
	return a.printBench(res)
}
