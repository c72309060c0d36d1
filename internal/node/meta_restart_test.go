package node

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/runnel-io/runnel/internal/cluster"
)

// TestClusterRestartAfterMetadataSnapshot: a broker restarts with a metadata snapshot older
// than its last topics. hashicorp/raft restores the newest snapshot when it starts and only
// then replays the log after it, so for a moment the state machine would show the cluster
// as it was at the snapshot; a broker acting on that (its first sync removes the
// directories of topics the metadata does not hold) would delete a topic created since.
// Every record acknowledged on a topic created after the snapshot must survive the restart
// (the topic has one replica: nothing could bring it back).
func TestClusterRestartAfterMetadataSnapshot(t *testing.T) {
	c := newSnapshottingCluster(t)
	n := c.start(1)
	c.createTopic("before", 1, 1)
	waitNewSnapshot(t, c, n, "before")
	// Fewer entries than the threshold from here: no newer snapshot.
	c.createTopic("after", 1, 1)
	acked := map[int32]map[int64][]byte{}
	c.produceAcked("after", 1, 5, acked)
	c.waitAllReplicasAgree("after", acked)
	applied := n.Cluster().AppliedIndex()
	c.stop(1)
	n = c.start(1)
	if got := n.Cluster().AppliedIndex(); got < applied {
		t.Errorf("metadata applied index %d after the restart, %d before: the state went back", got, applied)
	}
	c.waitAllReplicasAgree("after", acked)
}

// TestClusterRestartBehindMetadataSnapshot: the state file is older than the newest
// metadata snapshot, as when a crash cuts short the restore of a snapshot installed from the
// leader (Raft persists the snapshot, then restores it). Raft must then restore the snapshot
// at start; without it, it would take its index from the snapshot and never apply what the
// file lacks (here the creation of a topic, whose directory the first sync would remove).
func TestClusterRestartBehindMetadataSnapshot(t *testing.T) {
	c := newSnapshottingCluster(t)
	n := c.start(1)
	c.createTopic("before", 1, 1)
	waitNewSnapshot(t, c, n, "before")
	state := filepath.Join(c.dirs[1], "meta", "state.db")
	c.stop(1)
	old, err := os.ReadFile(state)
	if err != nil {
		t.Fatal(err)
	}
	n = c.start(1)
	c.createTopic("after", 1, 1)
	acked := map[int32]map[int64][]byte{}
	c.produceAcked("after", 1, 5, acked)
	waitNewSnapshot(t, c, n, "after")
	c.stop(1)
	if err := os.WriteFile(state, old, 0o600); err != nil { // the file from before "after"
		t.Fatal(err)
	}
	n = c.start(1)
	if _, err := n.Cluster().Topic("after"); err != nil {
		t.Fatalf("topic after the restart: %v", err)
	}
	c.waitAllReplicasAgree("after", acked)
}

// newSnapshottingCluster is a test cluster whose metadata group snapshots after 20 entries
// and keeps its log.
func newSnapshottingCluster(t *testing.T) *testCluster {
	c := newTestCluster(t)
	c.metaRaft = func(rc *raft.Config) {
		fastRaft(rc)
		rc.SnapshotInterval = 50 * time.Millisecond
		rc.SnapshotThreshold = 20
		rc.TrailingLogs = 10_000
	}
	return c
}

// waitNewSnapshot proposes entries enough for a metadata snapshot (offset commits from
// outside a group, one entry each, to a partition of topicName) and waits until a snapshot
// appears that was not there before.
func waitNewSnapshot(t *testing.T, c *testCluster, n *Node, topicName string) {
	t.Helper()
	snaps := filepath.Join(c.dirs[n.ID()], "meta", "snapshots", "snapshots") // raft.FileSnapshotStore's layout
	before := map[string]bool{}
	e, _ := os.ReadDir(snaps)
	for _, d := range e {
		before[d.Name()] = true
	}
	for range 30 {
		if err := n.Cluster().CommitOffsets(context.Background(), "g", []cluster.OffsetCommit{{Topic: topicName, Partition: 0, Offset: 0}}); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, 10*time.Second, "a new metadata snapshot", func() error {
		e, _ := os.ReadDir(snaps)
		for _, d := range e {
			if !before[d.Name()] {
				return nil
			}
		}
		return fmt.Errorf("none new in %s", snaps)
	})
}
