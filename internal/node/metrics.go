package node

import (
	"github.com/prometheus/client_golang/prometheus"
)

// raftNetMetrics exports the Raft transport's counters (cluster mode): what it sends, and
// what it answers without a round trip (coalesced heartbeats, repeated idle appends).
type raftNetMetrics struct {
	n *Node

	framesIn, beatsLocal, idleAppends *prometheus.Desc
}

func newRaftNetMetrics(n *Node) *raftNetMetrics {
	return &raftNetMetrics{
		n: n,
		framesIn: prometheus.NewDesc("runnel_raft_transport_frames_received_total",
			"Frames read by the Raft transport from other brokers (every group and kind).", nil, nil),
		beatsLocal: prometheus.NewDesc("runnel_raft_transport_heartbeats_answered_locally_total",
			"Raft heartbeats answered from the coalesced per-broker heartbeats instead of an RPC.", nil, nil),
		idleAppends: prometheus.NewDesc("runnel_raft_transport_idle_appends_total",
			"AppendEntries without entries (an idle group's commit index): answered=local repeats answered from the follower's last answer, answered=remote sent and answered.", []string{"answered"}, nil),
	}
}

func (m *raftNetMetrics) Describe(ch chan<- *prometheus.Desc) {
	ch <- m.framesIn
	ch <- m.beatsLocal
	ch <- m.idleAppends
}

func (m *raftNetMetrics) Collect(ch chan<- prometheus.Metric) {
	nw := m.n.netp.Load()
	if nw == nil {
		return
	}
	st := nw.Stats()
	ch <- prometheus.MustNewConstMetric(m.framesIn, prometheus.CounterValue, float64(st.FramesIn))
	ch <- prometheus.MustNewConstMetric(m.beatsLocal, prometheus.CounterValue, float64(st.HeartbeatsLocal))
	ch <- prometheus.MustNewConstMetric(m.idleAppends, prometheus.CounterValue, float64(st.IdleAppendsLocal), "local")
	ch <- prometheus.MustNewConstMetric(m.idleAppends, prometheus.CounterValue, float64(st.IdleAppendsSent), "remote")
}

var _ prometheus.Collector = (*raftNetMetrics)(nil)

// registerMetrics registers the broker's collectors and, for cluster mode, the transport's.
func (n *Node) registerMetrics(reg prometheus.Registerer) error {
	if err := n.svc.RegisterMetrics(reg); err != nil {
		return err
	}
	return reg.Register(newRaftNetMetrics(n))
}
