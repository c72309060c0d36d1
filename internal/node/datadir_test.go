package node

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/rs/zerolog"

	runnelv1 "github.com/runnel-io/runnel/proto/runnel/v1"
)

// TestClusterRefusesSingleNodeDataDir: a single node's data dir, holding a topic, started as
// a cluster member is refused with ErrTopicsWithoutMetadata (the first replica sync would
// delete every topic the new cluster's metadata does not hold), and nothing of it is lost:
// started as a single node again, the topic and its records are there.
func TestClusterRefusesSingleNodeDataDir(t *testing.T) {
	dir := t.TempDir()
	single := func() *Node {
		n, err := Start(Config{DataDir: dir, Addr: "127.0.0.1:0", NodeID: 1, Logger: zerolog.Nop(), Version: "test"})
		if err != nil {
			t.Fatal(err)
		}
		return n
	}
	stop := func(n *Node) {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := n.Stop(ctx); err != nil {
			t.Fatal(err)
		}
	}
	n := single()
	cc := benchConn(t, n.Addr())
	if _, err := runnelv1.NewAdminServiceClient(cc).CreateTopic(context.Background(),
		&runnelv1.CreateTopicRequest{Name: "kept", Partitions: 1, ReplicationFactor: 1}); err != nil {
		t.Fatal(err)
	}
	if _, err := (&testCluster{t: t}).produce(n.Addr(), "kept", 0, testBatch(t, 1)); err != nil {
		t.Fatal(err)
	}
	stop(n)

	_, err := Start(Config{DataDir: dir, Addr: "127.0.0.1:0", NodeID: 1, Logger: zerolog.Nop(), Version: "test",
		Cluster: &ClusterConfig{SerfAddr: "127.0.0.1:0", Voters: 3, FailedTimeout: time.Minute, TuneMetaRaft: fastRaft, TuneSerf: fastSerf}})
	if !errors.Is(err, ErrTopicsWithoutMetadata) {
		t.Fatalf("cluster start on a single node's data dir: %v, want ErrTopicsWithoutMetadata", err)
	}
	t.Log(err)
	if _, err := os.Stat(filepath.Join(dir, "topics", "kept")); err != nil {
		t.Fatalf("the topic's directory after the refused start: %v", err)
	}

	n = single()
	defer stop(n)
	pt, err := n.Registry().Partition("kept", 0)
	if err != nil {
		t.Fatal(err)
	}
	if hw := pt.HighWatermark(); hw != 1 {
		t.Fatalf("high watermark %d after the refused start, want 1", hw)
	}
}

// TestSingleNodeRefusesClusterDataDir: a cluster member's data dir started as a single node
// is refused with ErrClusterDataDir (rather than failing on its topic files), and it still
// starts as a cluster member afterwards.
func TestSingleNodeRefusesClusterDataDir(t *testing.T) {
	c := newTestCluster(t)
	c.start(1)
	c.createTopic("member", 1, 1)
	c.stop(1)
	_, err := Start(Config{DataDir: c.dirs[1], Addr: "127.0.0.1:0", NodeID: 1, Logger: zerolog.Nop(), Version: "test"})
	if !errors.Is(err, ErrClusterDataDir) {
		t.Fatalf("single-node start on a cluster member's data dir: %v, want ErrClusterDataDir", err)
	}
	t.Log(err)
	n := c.start(1)
	waitFor(t, 10*time.Second, "the topic open again", func() error {
		_, err := n.Registry().Partition("member", 0)
		return err
	})
}

// TestClusterRemovesStrayTopicDirs: a topic directory the metadata does not hold (a topic
// deleted while this broker was down) is removed when the broker starts; the directories
// of the metadata's topics stay.
func TestClusterRemovesStrayTopicDirs(t *testing.T) {
	c := newTestCluster(t)
	c.start(1)
	c.createTopic("held", 1, 1)
	c.stop(1)
	stray := filepath.Join(c.dirs[1], "topics", "gone")
	if err := os.MkdirAll(filepath.Join(stray, "0"), 0o755); err != nil {
		t.Fatal(err)
	}
	n := c.start(1)
	waitFor(t, 10*time.Second, "the stray directory removed", func() error {
		if _, err := os.Stat(stray); !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("%s: %v", stray, err)
		}
		return nil
	})
	if _, err := n.Registry().Partition("held", 0); err != nil {
		t.Fatalf("the metadata's topic: %v", err)
	}
	if _, err := os.Stat(filepath.Join(c.dirs[1], "topics", "held")); err != nil {
		t.Fatal(err)
	}
}
