package broker

import (
	"bufio"
	"fmt"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"

	runnelv1 "github.com/runnel-io/runnel/proto/runnel/v1"
)

// scrape GETs /metrics over HTTP and returns every sample by series, written as
// name{label="value",...} with the labels sorted by name (as promhttp writes them).
func (b *testBroker) scrape(t *testing.T) map[string]float64 {
	t.Helper()
	req, err := http.NewRequestWithContext(ctxT(t), http.MethodGet, "http://"+b.srv.Addr().String()+"/metrics", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /metrics: %s", resp.Status)
	}
	out := map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		if i < 0 {
			t.Fatalf("bad metrics line %q", line)
		}
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			t.Fatalf("bad metrics line %q: %v", line, err)
		}
		out[line[:i]] = v
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// series writes a series key as scrape does: series("m", "topic", "a", "partition", "0").
func series(name string, kv ...string) string {
	type pair struct{ k, v string }
	var ps []pair
	for i := 0; i+1 < len(kv); i += 2 {
		ps = append(ps, pair{kv[i], kv[i+1]})
	}
	sort.Slice(ps, func(i, j int) bool { return ps[i].k < ps[j].k })
	var sb strings.Builder
	sb.WriteString(name)
	if len(ps) > 0 {
		sb.WriteByte('{')
		for i, p := range ps {
			if i > 0 {
				sb.WriteByte(',')
			}
			sb.WriteString(p.k + "=" + strconv.Quote(p.v))
		}
		sb.WriteByte('}')
	}
	return sb.String()
}

func wantSample(t *testing.T, m map[string]float64, key string, want float64) {
	t.Helper()
	got, ok := m[key]
	switch {
	case !ok:
		t.Errorf("%s: missing", key)
	case got != want:
		t.Errorf("%s = %v, want %v", key, got, want)
	}
}

func noSeriesWith(t *testing.T, m map[string]float64, prefix, substr string) {
	t.Helper()
	for k := range m {
		if strings.HasPrefix(k, prefix) && strings.Contains(k, substr) {
			t.Errorf("unexpected series %s", k)
		}
	}
}

func TestMetricsPartitionsAndLag(t *testing.T) {
	b := startBroker(t, t.TempDir())
	b.createTopic("events", 2, nil)
	b.createTopic("other", 1, nil)
	b.produceOK("events", 0, runnelv1.Acks_ACKS_ALL, batch(t, 1, "a", "b", "c"))
	b.produceOK("events", 0, runnelv1.Acks_ACKS_ALL, batch(t, 2, "d", "e"))
	b.produceOK("other", 0, runnelv1.Acks_ACKS_ALL, batch(t, 3, "x"))
	b.commitOK("g1", oc("events", 0, 2, ""), oc("events", 1, 0, "md"))
	b.commitOK("g2", oc("events", 0, 5, ""), oc("other", 0, 0, "")) // at the end: lag 0
	_, stats, err := b.reg.Routes("events", "")
	if err != nil {
		t.Fatal(err)
	}

	m := b.scrape(t)
	p := func(name, topicName, part string) string { return series(name, "topic", topicName, "partition", part) }
	wantSample(t, m, p("runnel_partition_high_watermark", "events", "0"), 5)
	wantSample(t, m, p("runnel_partition_high_watermark", "events", "1"), 0)
	wantSample(t, m, p("runnel_partition_high_watermark", "other", "0"), 1)
	wantSample(t, m, p("runnel_partition_log_start_offset", "events", "0"), 0)
	wantSample(t, m, p("runnel_partition_log_start_offset", "events", "1"), 0)
	wantSample(t, m, p("runnel_partition_log_size_bytes", "events", "0"), float64(stats[0].Stats.SizeBytes))
	wantSample(t, m, p("runnel_partition_log_size_bytes", "events", "1"), float64(stats[1].Stats.SizeBytes))
	if m[p("runnel_partition_log_size_bytes", "events", "0")] <= m[p("runnel_partition_log_size_bytes", "events", "1")] {
		t.Errorf("partition 0 holds records, partition 1 none, yet sizes are %v and %v",
			m[p("runnel_partition_log_size_bytes", "events", "0")], m[p("runnel_partition_log_size_bytes", "events", "1")])
	}
	wantSample(t, m, p("runnel_partition_segments", "events", "0"), 1)
	wantSample(t, m, p("runnel_partition_segments", "events", "1"), 1)

	lag := func(group, topicName, part string) string {
		return series("runnel_consumer_group_lag", "group", group, "topic", topicName, "partition", part)
	}
	wantSample(t, m, lag("g1", "events", "0"), 3)
	wantSample(t, m, lag("g1", "events", "1"), 0)
	wantSample(t, m, lag("g2", "events", "0"), 0)
	wantSample(t, m, lag("g2", "other", "0"), 1)
	if s := m[series("runnel_consumer_group_lag_seconds", "group", "g1", "topic", "events", "partition", "0")]; s <= 0 {
		t.Errorf("lag seconds of g1 events/0: %v, want > 0", s)
	}
	wantSample(t, m, series("runnel_consumer_group_lag_seconds", "group", "g1", "topic", "events", "partition", "1"), 0)
	if _, ok := m[lag("g2", "events", "1")]; ok {
		t.Errorf("lag for a partition the group never committed")
	}
	for _, name := range []string{
		"runnel_topic_records_appended_total", "runnel_topic_bytes_appended_total",
		"runnel_topic_records_fetched_total", "runnel_topic_bytes_fetched_total",
	} {
		for _, topicName := range []string{"events", "other"} {
			if _, ok := m[series(name, "topic", topicName)]; !ok {
				t.Errorf("%s{topic=%q}: missing", name, topicName)
			}
		}
	}
	// The gRPC metrics are still there, on the same registry.
	if _, ok := m[series("runnel_grpc_requests_total", "code", "OK", "method", "/runnel.v1.ProduceService/Produce")]; !ok {
		t.Errorf("runnel_grpc_requests_total for Produce: missing")
	}

	// More records and the lag follows, at the next scrape.
	b.produceOK("events", 1, runnelv1.Acks_ACKS_ALL, batch(t, 4, "f", "g"))
	m = b.scrape(t)
	wantSample(t, m, p("runnel_partition_high_watermark", "events", "1"), 2)
	wantSample(t, m, lag("g1", "events", "1"), 2)

	// A deleted topic's series go, lag included; the others stay.
	if _, err := b.admin.DeleteTopic(ctxT(t), &runnelv1.DeleteTopicRequest{Name: "events"}); err != nil {
		t.Fatal(err)
	}
	m = b.scrape(t)
	noSeriesWith(t, m, "runnel_", `topic="events"`)
	wantSample(t, m, p("runnel_partition_high_watermark", "other", "0"), 1)
	wantSample(t, m, lag("g2", "other", "0"), 1)
}

// TestMetricsTraffic checks the per-topic counters the produce and fetch hooks feed. It calls
// the hooks itself and checks the increase, so it holds whether or not Produce and Fetch
// call them too.
func TestMetricsTraffic(t *testing.T) {
	b := startBroker(t, t.TempDir())
	b.createTopic("events", 1, nil)
	key := func(name string) string { return series(name, "topic", "events") }
	names := []string{
		"runnel_topic_records_appended_total", "runnel_topic_bytes_appended_total",
		"runnel_topic_records_fetched_total", "runnel_topic_bytes_fetched_total",
	}
	before := b.scrape(t)

	b1, b2 := batch(t, 1, "a", "b", "c"), batch(t, 2, "d")
	b.svc.metrics.appended("events", 4, len(b1)+len(b2))
	if r, n := countBatches([][]byte{b1, b2}); r != 4 || n != len(b1)+len(b2) {
		t.Fatalf("countBatches = %d records, %d bytes", r, n)
	}
	b.svc.metrics.fetched("events", 3, len(b1))
	b.svc.metrics.fetched("events", 7, 100)
	b.svc.metrics.appended("no.such.topic", 3, len(b1))

	after := b.scrape(t)
	want := []float64{4, float64(len(b1) + len(b2)), 3 + 7, float64(len(b1)) + 100}
	for i, name := range names {
		if d := after[key(name)] - before[key(name)]; d != want[i] {
			t.Errorf("%s increased by %v, want %v", name, d, want[i])
		}
	}
	noSeriesWith(t, after, "runnel_topic_", "no.such.topic")
}

func TestMetricsHooksTolerateNilAndGarbage(t *testing.T) {
	var m *brokerMetrics
	m.appended("t", 1, 4)
	if r, _ := countBatches([][]byte{[]byte("junk")}); r != 0 {
		t.Errorf("countBatches(garbage) = %d records", r)
	}
	m.fetched("t", 1, 1)
	if got := batchRecords([]byte("short")); got != 0 {
		t.Errorf("batchRecords(garbage) = %d", got)
	}
}

// TestMetricsAfterServicesStop scrapes after the offset store is closed (shutdown order:
// Services.Stop, then Server.Shutdown): no lag series, no failure.
func TestMetricsAfterServicesStop(t *testing.T) {
	b := startBroker(t, t.TempDir())
	b.createTopic("events", 1, nil)
	b.commitOK("g", oc("events", 0, 0, ""))
	b.svc.Stop()
	m := b.scrape(t)
	noSeriesWith(t, m, "runnel_consumer_group_lag", "")
	wantSample(t, m, series("runnel_partition_high_watermark", "topic", "events", "partition", "0"), 0)
}

// TestMetricsConcurrentScrape scrapes while topics are produced to, created, deleted and
// committed to (run it with -race): every scrape succeeds.
func TestMetricsConcurrentScrape(t *testing.T) {
	b := startBroker(t, t.TempDir())
	b.createTopic("events", 2, nil)
	ctx := ctxT(t)
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		for i := 0; ; i++ {
			select {
			case <-done:
				return
			default:
			}
			name := fmt.Sprintf("tmp%d", i%3)
			_, _ = b.admin.CreateTopic(ctx, &runnelv1.CreateTopicRequest{Name: name})
			_, _ = b.produce.Produce(ctx, &runnelv1.ProduceRequest{Partitions: []*runnelv1.ProducePartition{
				{Topic: "events", Partition: int32(i % 2), Batches: batch(t, int64(i), "v")},
			}})
			_, _ = b.offsets().CommitOffsets(ctx, &runnelv1.CommitOffsetsRequest{Group: "g", Offsets: []*runnelv1.OffsetCommit{
				oc(name, 0, int64(i), ""), oc("events", int32(i%2), int64(i), ""),
			}})
			b.svc.metrics.appended(name, 1, 1)
			_, _ = b.admin.DeleteTopic(ctx, &runnelv1.DeleteTopicRequest{Name: name})
		}
	})
	for range 30 {
		m := b.scrape(t)
		if _, ok := m[series("runnel_partition_high_watermark", "topic", "events", "partition", "0")]; !ok {
			t.Fatal("events/0 missing from a scrape")
		}
	}
	close(done)
	wg.Wait()
}
