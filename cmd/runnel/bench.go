package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"runtime/pprof"
	"runtime/trace"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/runnel-io/runnel/client"
	runnelv1 "github.com/runnel-io/runnel/proto/runnel/v1"
)

// benchResult is the summary a bench prints last; with --format json it is one line of JSON,
// the contract scripts (and docs/benchmarks.md) rely on.
type benchResult struct {
	Op            string       `json:"op"`
	Topic         string       `json:"topic"`
	Records       int64        `json:"records"`
	Bytes         int64        `json:"bytes"`
	Seconds       float64      `json:"seconds"`
	RecordsPerSec float64      `json:"records_per_sec"`
	MBPerSec      float64      `json:"mb_per_sec"`
	Latency       latencyStats `json:"latency_ms"`
	// SendLag (under --rate) is how late each record was sent after its scheduled time: the
	// load generator's own share of an open loop's latency.
	SendLag *latencyStats `json:"send_lag_ms,omitempty"`
	Errors  int64         `json:"errors"`
}

type latencyStats struct {
	P50  float64 `json:"p50"`
	P99  float64 `json:"p99"`
	P999 float64 `json:"p999"`
	Max  float64 `json:"max"`
}

// latencies collects samples (one per record) from any goroutine.
type latencies struct {
	mu sync.Mutex
	ns []int64
}

func (l *latencies) add(d time.Duration) {
	l.mu.Lock()
	l.ns = append(l.ns, int64(d))
	l.mu.Unlock()
}

func (l *latencies) stats() latencyStats {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.ns) == 0 {
		return latencyStats{}
	}
	slices.Sort(l.ns)
	q := func(p float64) float64 {
		i := int(math.Ceil(p*float64(len(l.ns)))) - 1
		return float64(l.ns[max(i, 0)]) / 1e6
	}
	return latencyStats{P50: q(0.50), P99: q(0.99), P999: q(0.999), Max: float64(l.ns[len(l.ns)-1]) / 1e6}
}

func (a *app) benchCmd() *cobra.Command {
	c := &cobra.Command{
		Use:   "bench",
		Short: "Measure produce and consume throughput and latency (like kafka-*-perf-test)",
		Long: `bench produce writes records as fast as it can (or at --rate) through the Go SDK and
reports records/s, MB/s and per-record latency (from the Produce call, or from the record's
scheduled send time under --rate, to its acknowledgement; with --sync, one record at a time,
from its send). Under --rate it also reports how late records were sent after their scheduled
time (send_lag_ms): the load generator's own share of the latency. bench consume reads a topic from
its start. With --format json the last line printed is one JSON object:
{"op":…, "topic":…, "records":…, "bytes":…, "seconds":…, "records_per_sec":…, "mb_per_sec":…,
 "latency_ms":{"p50":…, "p99":…, "p999":…, "max":…}, "errors":…}`,
	}
	var cpuProfile string
	c.PersistentFlags().StringVar(&cpuProfile, "cpuprofile", "", "write the bench client's CPU profile to this file (go tool pprof)")
	var traceFile string
	c.PersistentFlags().StringVar(&traceFile, "trace", "", "write the bench client's execution trace to this file (go tool trace): where a latency tail comes from")
	c.PersistentPreRunE = func(cmd *cobra.Command, _ []string) error {
		if err := a.loadGlobals(cmd); err != nil {
			return err
		}
		if err := a.recordTo(cpuProfile, pprof.StartCPUProfile, pprof.StopCPUProfile); err != nil {
			return err
		}
		return a.recordTo(traceFile, trace.Start, trace.Stop)
	}
	c.AddCommand(a.benchProduceCmd(), a.benchConsumeCmd())
	return c
}

// recordTo starts a recording (CPU profile, execution trace) into the file at path, if path
// is set, and stops it when the command exits.
func (a *app) recordTo(path string, start func(io.Writer) error, stop func()) error {
	if path == "" {
		return nil
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if err := start(f); err != nil {
		_ = f.Close()
		return err
	}
	a.atExit = append(a.atExit, func() { stop(); _ = f.Close() })
	return nil
}

type benchProduceOpts struct {
	topic       string
	records     int64
	recordSize  int
	partitions  int32
	acks        string
	batchBytes  int
	linger      time.Duration
	producers   int
	rate        float64
	compression string
	maxInFlight int
	sync        bool
}

func (a *app) benchProduceCmd() *cobra.Command {
	o := &benchProduceOpts{}
	c := &cobra.Command{
		Use:   "produce",
		Short: "Produce records as fast as possible, or at a fixed rate, and report throughput and latency",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return a.benchProduce(cmd.Context(), o)
		},
	}
	f := c.Flags()
	f.StringVar(&o.topic, "topic", "runnel-bench", "topic to produce to (created with --partitions if missing)")
	f.Int64Var(&o.records, "records", 1_000_000, "records to produce in all")
	f.IntVar(&o.recordSize, "record-size", 100, "value size of each record, in bytes (records have no key)")
	f.Int32Var(&o.partitions, "partitions", 1, "partitions of the topic when bench creates it")
	f.StringVar(&o.acks, "acks", "all", "acknowledgement: all (durable), leader or none")
	f.IntVar(&o.batchBytes, "batch-bytes", 1<<20, "producer batch size per partition, in bytes")
	f.DurationVar(&o.linger, "linger", 0, "how long a batch waits for more records (0, the SDK's default: sent when a request slot is free)")
	f.IntVar(&o.producers, "producers", 1, "concurrent producers, each with its own connection")
	f.Float64Var(&o.rate, "rate", 0, "records per second in all (0: as fast as possible); latency is measured from each record's scheduled time")
	f.StringVar(&o.compression, "compression", "none", "batch compression: none, gzip, snappy, lz4 or zstd")
	f.IntVar(&o.maxInFlight, "max-in-flight", 16, "produce requests in flight per partition (the SDK's WithMaxInFlight default)")
	f.BoolVar(&o.sync, "sync", false, "each producer sends one record at a time and waits for its acknowledgement (ProduceSync), like nats-bench pub-sync: a closed loop, latency from each record's send (with --rate, not sent before its scheduled time)")
	return c
}

func parseCompression(s string) (client.Compression, error) {
	switch strings.ToLower(s) {
	case "none", "":
		return client.CompressionNone, nil
	case "gzip":
		return client.CompressionGzip, nil
	case "snappy":
		return client.CompressionSnappy, nil
	case "lz4":
		return client.CompressionLZ4, nil
	case "zstd":
		return client.CompressionZstd, nil
	}
	return 0, usagef("invalid --compression %q: want none, gzip, snappy, lz4 or zstd", s)
}

// ensureTopic creates the bench topic with n partitions unless it exists.
func (a *app) ensureTopic(ctx context.Context, name string, n int32) error {
	rctx, cl, cancel, err := a.connect(ctx)
	if err != nil {
		return err
	}
	defer cancel()
	_, err = cl.admin.CreateTopic(rctx, &runnelv1.CreateTopicRequest{Name: name, Partitions: n, ReplicationFactor: 1})
	if status.Code(err) == codes.AlreadyExists {
		return nil
	}
	return err
}

func (a *app) sdkOptions(extra ...client.Option) []client.Option {
	var addrs []string
	for _, s := range strings.Split(a.brokers, ",") {
		if s = strings.TrimSpace(s); s != "" {
			addrs = append(addrs, s)
		}
	}
	return append([]client.Option{client.WithBrokers(addrs...), client.WithDialTimeout(a.timeout)}, extra...)
}

func (a *app) benchProduce(ctx context.Context, o *benchProduceOpts) error {
	switch {
	case o.records <= 0:
		return usagef("invalid --records %d: must be positive", o.records)
	case o.recordSize < 0:
		return usagef("invalid --record-size %d: must not be negative", o.recordSize)
	case o.partitions <= 0:
		return usagef("invalid --partitions %d: must be positive", o.partitions)
	case o.producers <= 0:
		return usagef("invalid --producers %d: must be positive", o.producers)
	case o.rate < 0:
		return usagef("invalid --rate %v: must not be negative", o.rate)
	case o.batchBytes <= 0:
		return usagef("invalid --batch-bytes %d: must be positive", o.batchBytes)
	case o.linger < 0:
		return usagef("invalid --linger %s: must not be negative", o.linger)
	case o.maxInFlight <= 0:
		return usagef("invalid --max-in-flight %d: must be positive", o.maxInFlight)
	}
	acks, err := parseAcks(o.acks)
	if err != nil {
		return err
	}
	comp, err := parseCompression(o.compression)
	if err != nil {
		return err
	}
	if err := a.ensureTopic(ctx, o.topic, o.partitions); err != nil {
		return err
	}
	clients := make([]*client.Client, o.producers)
	for i := range clients {
		c, err := client.New(ctx, a.sdkOptions(client.WithAcks(client.Acks(acks)), client.WithBatchBytes(o.batchBytes),
			client.WithLinger(o.linger), client.WithCompression(comp), client.WithMaxInFlight(o.maxInFlight))...)
		if err != nil {
			return err
		}
		defer c.Close()
		clients[i] = c
	}
	value := make([]byte, o.recordSize)
	for i := range value {
		value[i] = byte('a' + i%26)
	}

	var (
		lat     latencies
		lag     latencies // under --rate: send time minus scheduled time
		done    atomic.Int64
		failed  atomic.Int64
		firstMu sync.Mutex
		first   error
		wg      sync.WaitGroup
	)
	lat.ns = make([]int64, 0, o.records)
	if o.rate > 0 {
		lag.ns = make([]int64, 0, o.records)
	}
	paces := make([]*pacer, len(clients)) // one per producer under --rate
	for i := range paces {
		if o.rate <= 0 {
			break
		}
		p, err := newPacer()
		if err != nil {
			for _, q := range paces[:i] {
				_ = q.Close()
			}
			return err
		}
		paces[i] = p
	}
	stopProgress := a.progress("produced", &done)
	start := time.Now()
	for i, c := range clients {
		n := o.records / int64(o.producers)
		if int64(i) < o.records%int64(o.producers) {
			n++
		}
		perProducer := o.rate / float64(o.producers)
		pace := paces[i]
		wg.Go(func() {
			if pace != nil {
				defer pace.Close()
			}
			// acked records a record's outcome, its latency counted from sent.
			acked := func(sent time.Time, err error) {
				lat.add(time.Since(sent))
				done.Add(1)
				if err != nil {
					failed.Add(1)
					firstMu.Lock()
					if first == nil {
						first = err
					}
					firstMu.Unlock()
				}
			}
			for j := int64(0); j < n; j++ {
				sent := time.Now()
				if pace != nil {
					// Record j is due at start + j/rate.
					due := start.Add(time.Duration(float64(j) / perProducer * float64(time.Second)))
					if err := pace.sleepUntil(due); err != nil {
						time.Sleep(time.Until(due)) // cannot happen with a working timerfd
					}
					// Open loop: its latency counts from then, so a stall shows in the latency
					// instead of slowing the offered load. Closed loop (--sync): from its send;
					// a stall delays the records after it, which are not charged for it (what
					// a synchronous publisher's latency shows).
					sent = due
					lag.add(time.Since(due))
					if o.sync {
						sent = time.Now()
					}
				}
				r := &client.Record{Topic: o.topic, Value: value}
				if o.sync {
					acked(sent, c.ProduceSync(ctx, r))
				} else {
					c.Produce(ctx, r, func(_ *client.Record, err error) { acked(sent, err) })
				}
				if ctx.Err() != nil {
					return
				}
			}
			_ = c.Flush(ctx)
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	stopProgress()
	if err := ctx.Err(); err != nil {
		return err
	}
	res := a.benchSummary("produce", o.topic, done.Load()-failed.Load(), int64(o.recordSize), elapsed, lat.stats())
	res.Errors = failed.Load()
	if o.rate > 0 {
		l := lag.stats()
		res.SendLag = &l
	}
	if err := a.printBench(res); err != nil {
		return err
	}
	if first != nil {
		return fmt.Errorf("%d of %d records failed, the first with: %w", failed.Load(), o.records, first)
	}
	return nil
}

func (a *app) benchSummary(op, topicName string, records, recordBytes int64, elapsed time.Duration, l latencyStats) benchResult {
	s := elapsed.Seconds()
	return benchResult{
		Op: op, Topic: topicName, Records: records, Bytes: records * recordBytes, Seconds: s,
		RecordsPerSec: float64(records) / s, MBPerSec: float64(records*recordBytes) / s / 1e6, Latency: l,
	}
}

// progress prints a line per second to stderr (stdout stays the result's) until stopped.
func (a *app) progress(what string, n *atomic.Int64) (stop func()) {
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		t := time.NewTicker(time.Second)
		defer t.Stop()
		last, lastAt := int64(0), time.Now()
		for {
			select {
			case <-done:
				return
			case now := <-t.C:
				cur := n.Load()
				fmt.Fprintf(a.stderr, "%d records %s, %.0f records/s\n", cur, what, float64(cur-last)/now.Sub(lastAt).Seconds())
				last, lastAt = cur, now
			}
		}
	})
	return func() { close(done); wg.Wait() }
}

func (a *app) printBench(r benchResult) error {
	if a.format == "json" {
		b, err := json.Marshal(r)
		if err != nil {
			return err
		}
		_, err = fmt.Fprintln(a.stdout, string(b))
		return err
	}
	lag := ""
	if r.SendLag != nil {
		lag = fmt.Sprintf("; sent after the scheduled time by ms p50 %.3f, p99 %.3f, max %.3f", r.SendLag.P50, r.SendLag.P99, r.SendLag.Max)
	}
	_, err := fmt.Fprintf(a.stdout, "%d records %s in %.3f s: %.0f records/s, %.2f MB/s; latency ms p50 %.3f, p99 %.3f, p99.9 %.3f, max %.3f%s\n",
		r.Records, r.Op+"d", r.Seconds, r.RecordsPerSec, r.MBPerSec, r.Latency.P50, r.Latency.P99, r.Latency.P999, r.Latency.Max, lag)
	return err
}

var errBenchEmpty = errors.New("bench consume: the topic holds no records (run bench produce first, or pass --records to wait for them)")
