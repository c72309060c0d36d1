package cluster

import (
	"time"

	"github.com/hashicorp/raft"
	"github.com/hashicorp/serf/serf"
)

// FastRaftForTests shortens a Raft configuration's timeouts to a few hundred milliseconds, for
// clusters in tests (Config.TuneRaft, node.ClusterConfig.TuneMetaRaft). Not for production:
// every idle group would heartbeat 30 times a second.
func FastRaftForTests(c *raft.Config) {
	c.HeartbeatTimeout = 300 * time.Millisecond
	c.ElectionTimeout = 300 * time.Millisecond
	c.LeaderLeaseTimeout = 150 * time.Millisecond
	c.CommitTimeout = 20 * time.Millisecond
}

// FastSerfForTests shortens Serf's and memberlist's intervals so that a failure or a
// departure is seen within a second, for clusters in tests (Config.TuneSerf).
func FastSerfForTests(c *serf.Config) {
	ml := c.MemberlistConfig
	ml.ProbeInterval = 200 * time.Millisecond
	ml.ProbeTimeout = 100 * time.Millisecond
	ml.SuspicionMult = 2
	ml.GossipInterval = 10 * time.Millisecond
	ml.PushPullInterval = 500 * time.Millisecond
	ml.TCPTimeout = time.Second
	ml.DeadNodeReclaimTime = time.Millisecond
	c.ReapInterval = 100 * time.Millisecond
	c.ReconnectInterval = 100 * time.Millisecond
	c.ReconnectTimeout = time.Second
	c.TombstoneTimeout = time.Second
}
