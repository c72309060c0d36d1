package node

import (
	"context"
	"errors"
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
func TestClusterRestartAfterMetadataSnapshot(t *testing.T) { restartAfterSnapshot(t, false) }

// restartAfterSnapshot restarts a one-broker cluster whose newest metadata snapshot is older
// than its last topic, cleanly or after a machine crash, and checks that the topic's
// acknowledged records survive.
func restartAfterSnapshot(t *testing.T, machineCrash bool) {
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
	if machineCrash {
		markMachineCrash(t, c.dirs[1])
	}
	n = c.start(1)
	if !machineCrash {
		if got := n.Cluster().AppliedIndex(); got < applied {
			t.Errorf("metadata applied index %d after the restart, %d before: the state went back", got, applied)
		}
	}
	// After a machine crash the state comes back from the snapshot and the log.
	waitFor(t, 10*time.Second, "the metadata after the restart", func() error {
		if got := n.Cluster().AppliedIndex(); got < applied {
			return fmt.Errorf("applied index %d, %d before", got, applied)
		}
		return nil
	})
	if _, err := n.Cluster().Topic("after"); err != nil {
		t.Fatalf("topic after the restart: %v", err)
	}
	c.waitAllReplicasAgree("after", acked)
	// Caught up: the next start trusts the rebuilt file.
	if _, err := os.Stat(filepath.Join(c.dirs[1], "meta", "state.db.rebuild")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("rebuild marker after catching up: %v", err)
	}
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

// TestClusterRestartAfterMachineCrash: the metadata state file is written without an fsync
// per apply batch, so after a machine crash (the boot marker beside it names another boot)
// it is not trusted: it is removed and the metadata rebuilt from the newest snapshot and
// the log. The rebuilt metadata shows the cluster as it was at the snapshot until the
// replay is done, and the broker must not act on it meanwhile: a topic created after the
// snapshot (one replica: nothing could bring it back) keeps every acknowledged record.
func TestClusterRestartAfterMachineCrash(t *testing.T) { restartAfterSnapshot(t, true) }

// TestClusterFollowerRestartAfterMachineCrash: the same on a follower of three, which
// learns from the leader how far the replay must go. The topic created after the snapshot
// has three partitions of one replica, one on each broker: the restarted follower's must
// keep its records.
func TestClusterFollowerRestartAfterMachineCrash(t *testing.T) {
	c := newSnapshottingCluster(t)
	c.startThree()
	c.createTopic("before", 1, 3)
	var leader, follower *Node
	waitFor(t, 10*time.Second, "a metadata leader", func() error {
		leader, follower = nil, nil
		for _, nd := range c.nodes {
			id, _, ok := nd.Cluster().Leader()
			switch {
			case !ok:
				return fmt.Errorf("broker %d knows no leader", nd.ID())
			case id == nd.ID():
				leader = nd
			default:
				follower = nd
			}
		}
		if leader == nil || follower == nil {
			return fmt.Errorf("leader %v, follower %v", leader, follower)
		}
		return nil
	})
	waitNewSnapshot(t, c, leader, "before")
	snaps := filepath.Join(c.dirs[follower.ID()], "meta", "snapshots", "snapshots")
	waitFor(t, 10*time.Second, "a snapshot on the follower", func() error {
		if e, _ := os.ReadDir(snaps); len(e) == 0 {
			return fmt.Errorf("none in %s", snaps)
		}
		return nil
	})
	c.createTopic("after", 3, 1)
	acked := map[int32]map[int64][]byte{}
	c.produceAcked("after", 3, 5, acked)
	c.waitAllReplicasAgree("after", acked)
	id := follower.ID()
	applied := follower.Cluster().AppliedIndex()
	c.stop(id)
	markMachineCrash(t, c.dirs[id])
	n := c.start(id)
	waitFor(t, 20*time.Second, "the rebuilt metadata", func() error {
		if got := n.Cluster().AppliedIndex(); got < applied {
			return fmt.Errorf("applied index %d, %d before the crash", got, applied)
		}
		return nil
	})
	c.waitAllReplicasAgree("after", acked)
}

// markMachineCrash leaves the boot marker of another boot beside a stopped broker's
// metadata state file, as a machine crash would.
func markMachineCrash(t *testing.T, dataDir string) {
	t.Helper()
	marker := filepath.Join(dataDir, "meta", "state.db.boot")
	if err := os.WriteFile(marker, []byte("a-boot-that-crashed\n"), 0o600); err != nil {
		t.Fatal(err)
	}
}
