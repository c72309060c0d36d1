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
	c := newTestCluster(t)
	c.metaRaft = func(rc *raft.Config) {
		fastRaft(rc)
		rc.SnapshotInterval = 50 * time.Millisecond
		rc.SnapshotThreshold = 20
		rc.TrailingLogs = 10_000
	}
	n := c.start(1)
	c.createTopic("before", 1, 1)
	// Entries enough for a snapshot (offset commits from outside a group: one entry each).
	for range 30 {
		if err := n.Cluster().CommitOffsets(context.Background(), "g", []cluster.OffsetCommit{{Topic: "before", Partition: 0, Offset: 0}}); err != nil {
			t.Fatal(err)
		}
	}
	snaps := filepath.Join(c.dirs[1], "meta", "snapshots", "snapshots") // raft.FileSnapshotStore's layout
	waitFor(t, 10*time.Second, "a metadata snapshot", func() error {
		if e, _ := os.ReadDir(snaps); len(e) == 0 {
			return fmt.Errorf("none in %s", snaps)
		}
		return nil
	})
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
