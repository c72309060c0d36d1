package broker

import (
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/runnel-io/runnel/internal/recordbatch"
)

// brokerMetrics is the broker's view of its topics, partitions and consumer groups for
// /metrics. Gauges (high watermark, log start, size, segments, group lag) are read from the
// registry and the offset store at scrape time; the per-topic traffic counters are fed by the
// hooks appendedBatches and fetched, called by Produce, Fetch and Subscribe. It is a prometheus.Collector:
// Services.RegisterMetrics registers it on the Server's registry (Config.Metrics).
//
// Series of deleted topics disappear at the next scrape: only topics in the registry are
// exported, and the counters of the others are dropped.
type brokerMetrics struct {
	s *Services

	traffic sync.Map // topic name -> *topicTraffic
}

// topicTraffic counts one topic's produce and fetch traffic since the broker started.
type topicTraffic struct {
	recordsIn, bytesIn, recordsOut, bytesOut atomic.Int64
}

// fsyncCounter is what a commitlog exposes of its group-commit fsync count, if it does
// (commitlog.Log keeps it unexported, in groupSyncs, for now).
type fsyncCounter interface{ GroupSyncs() int64 }

var (
	partLabels  = []string{"topic", "partition"}
	topicLabels = []string{"topic"}

	descHighWatermark = prometheus.NewDesc("runnel_partition_high_watermark",
		"Offset after the last committed record of the partition.", partLabels, nil)
	descLogStart = prometheus.NewDesc("runnel_partition_log_start_offset",
		"First offset still in the partition's log (retention moves it).", partLabels, nil)
	descLogSize = prometheus.NewDesc("runnel_partition_log_size_bytes",
		"Bytes in all the partition's segments, headers included.", partLabels, nil)
	descSegments = prometheus.NewDesc("runnel_partition_segments",
		"Segments in the partition's log.", partLabels, nil)
	descFsyncs = prometheus.NewDesc("runnel_partition_fsyncs_total",
		"Group-commit fsyncs of the partition's log since it was opened.", partLabels, nil)
	descRecordsIn = prometheus.NewDesc("runnel_topic_records_appended_total",
		"Records appended to the topic by Produce since the broker started.", topicLabels, nil)
	descBytesIn = prometheus.NewDesc("runnel_topic_bytes_appended_total",
		"Record batch bytes appended to the topic by Produce since the broker started.", topicLabels, nil)
	descRecordsOut = prometheus.NewDesc("runnel_topic_records_fetched_total",
		"Records returned by Fetch and Subscribe from the topic since the broker started.", topicLabels, nil)
	descBytesOut = prometheus.NewDesc("runnel_topic_bytes_fetched_total",
		"Record batch bytes read from the topic's logs by Fetch and Subscribe since the broker started.", topicLabels, nil)
	descGroupLag = prometheus.NewDesc("runnel_consumer_group_lag",
		"High watermark minus the group's committed offset (at least 0), per committed partition.",
		[]string{"group", "topic", "partition"}, nil)
	descGroupLagSeconds = prometheus.NewDesc("runnel_consumer_group_lag_seconds",
		"Age of the oldest record the group has not consumed (0 at the end), per committed partition.",
		[]string{"group", "topic", "partition"}, nil)
)

func newBrokerMetrics(s *Services) *brokerMetrics { return &brokerMetrics{s: s} }

// RegisterMetrics registers the topic, partition and consumer group metrics on reg (use it
// as Config.Metrics).
func (s *Services) RegisterMetrics(reg prometheus.Registerer) error {
	if err := reg.Register(s.metrics); err != nil {
		return fmt.Errorf("broker: register topic metrics: %w", err)
	}
	return nil
}

func (m *brokerMetrics) topic(name string) *topicTraffic {
	if t, ok := m.traffic.Load(name); ok {
		return t.(*topicTraffic)
	}
	t, _ := m.traffic.LoadOrStore(name, new(topicTraffic))
	return t.(*topicTraffic)
}

// appended counts records and bytes appended to a topic. Safe on a nil receiver.
func (m *brokerMetrics) appended(topicName string, records, bytes int) {
	if m == nil {
		return
	}
	t := m.topic(topicName)
	t.recordsIn.Add(int64(records))
	t.bytesIn.Add(int64(bytes))
}

// countBatches returns the records and bytes of record batches, for appended. Call it before
// the append: the log sets each batch's base offset in place (a replicated partition's Raft
// log store does so on its own goroutine).
func countBatches(batches [][]byte) (records, bytes int) {
	for _, b := range batches {
		records += batchRecords(b)
		bytes += len(b)
	}
	return records, bytes
}

// fetched counts the records a Fetch or Subscribe response returns from a topic (at or after
// the offset asked for), and the record batch bytes read from the log to make it. Safe on a
// nil receiver.
func (m *brokerMetrics) fetched(topicName string, records int64, bytes int) {
	if m == nil {
		return
	}
	t := m.topic(topicName)
	t.recordsOut.Add(records)
	t.bytesOut.Add(int64(bytes))
}

// batchRecords returns the number of records in one batch (0 if its header is unreadable).
func batchRecords(b []byte) int {
	h, err := recordbatch.ParseHeader(b)
	if err != nil || h.NumRecords < 0 {
		return 0
	}
	return int(h.NumRecords)
}

// Describe sends the fixed descriptors of the collector.
func (m *brokerMetrics) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{
		descHighWatermark, descLogStart, descLogSize, descSegments, descFsyncs,
		descRecordsIn, descBytesIn, descRecordsOut, descBytesOut, descGroupLag, descGroupLagSeconds,
	} {
		ch <- d
	}
}

// Collect walks the registry and the offset store. A topic deleted during the walk is
// skipped; an unavailable offset store (closed, failed to open) exports no lag.
func (m *brokerMetrics) Collect(ch chan<- prometheus.Metric) {
	topics := m.s.reg.List()
	exists := make(map[string]TopicInfo, len(topics))
	for _, info := range topics {
		parts, err := m.s.reg.Partitions(info.Name)
		if err != nil {
			continue
		}
		exists[info.Name] = info
		for i, p := range parts {
			if p == nil {
				continue // cluster mode: no replica here
			}
			pl := strconv.Itoa(i)
			st := p.Stats()
			gauge := func(d *prometheus.Desc, v float64) { send(ch, d, prometheus.GaugeValue, v, info.Name, pl) }
			gauge(descHighWatermark, float64(st.HighWatermark))
			gauge(descLogStart, float64(st.LogStartOffset))
			gauge(descLogSize, float64(st.SizeBytes))
			gauge(descSegments, float64(st.Segments))
			if fc, ok := any(p.Log()).(fsyncCounter); ok {
				send(ch, descFsyncs, prometheus.CounterValue, float64(fc.GroupSyncs()), info.Name, pl)
			}
		}
		t := m.topic(info.Name)
		counter := func(d *prometheus.Desc, v int64) { send(ch, d, prometheus.CounterValue, float64(v), info.Name) }
		counter(descRecordsIn, t.recordsIn.Load())
		counter(descBytesIn, t.bytesIn.Load())
		counter(descRecordsOut, t.recordsOut.Load())
		counter(descBytesOut, t.bytesOut.Load())
	}
	// Drop the counters of deleted topics (a produce racing the delete may add one back; it
	// is not exported, and dropped again at the next scrape).
	m.traffic.Range(func(k, _ any) bool {
		if _, ok := exists[k.(string)]; !ok {
			m.traffic.Delete(k)
		}
		return true
	})
	m.collectLag(ch, exists)
}

func (m *brokerMetrics) collectLag(ch chan<- prometheus.Metric, topics map[string]TopicInfo) {
	// Read the offsets first, then the partitions: no partition lookups inside a transaction.
	lags, err := m.s.offsets.allCommitted(topics)
	now := time.Now()
	if err != nil {
		return // closed at shutdown, or a store failure the offset calls report
	}
	for _, l := range lags {
		p, err := m.s.reg.Partition(l.key.topic, l.key.partition)
		if err != nil {
			continue
		}
		send(ch, descGroupLag, prometheus.GaugeValue,
			float64(max(0, p.HighWatermark()-l.off)), l.group, l.key.topic, strconv.Itoa(int(l.key.partition)))
		if secs := lagSeconds(p, l.off, now); secs >= 0 {
			send(ch, descGroupLagSeconds, prometheus.GaugeValue, secs, l.group, l.key.topic, strconv.Itoa(int(l.key.partition)))
		}
	}
}

// send sends one metric, skipping it if a label value is invalid (not UTF-8): topic and
// group names are checked when created, but a panic in Collect would take the broker down.
func send(ch chan<- prometheus.Metric, d *prometheus.Desc, t prometheus.ValueType, v float64, labels ...string) {
	if m, err := prometheus.NewConstMetric(d, t, v, labels...); err == nil {
		ch <- m
	}
}
