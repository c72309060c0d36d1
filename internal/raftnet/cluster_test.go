package raftnet

import (
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/raft"
)

// leaderOf returns the index of the node that is leader of a group, or -1.
func leaderOf(nodes []*node, skip map[int]bool) int {
	for i, n := range nodes {
		if n != nil && !skip[i] && n.r.State() == raft.Leader {
			return i
		}
	}
	return -1
}

// TestManyGroups: 50 groups, each a 3-voter raft cluster across 3 Networks, elect leaders and
// apply; closing one broker's Network makes the groups it led elect new leaders on the others.
func TestManyGroups(t *testing.T) {
	const groups = 50
	nets := []*Network{newNet(t, 2*time.Second), newNet(t, 2*time.Second), newNet(t, 2*time.Second)}
	nodes := make([][]*node, groups)
	for g := range groups {
		name := fmt.Sprintf("topic/%d", g)
		for i := range nets {
			nodes[g] = append(nodes[g], startNode(t, nets, i, name, testRaftConfig(brokerID(i)), true, 0))
		}
	}
	waitFor(t, 30*time.Second, "a leader in every group", func() bool {
		for g := range groups {
			if leaderOf(nodes[g], nil) < 0 {
				return false
			}
		}
		return true
	})
	apply := func(skip map[int]bool) {
		t.Helper()
		var wg sync.WaitGroup
		errs := make(chan error, groups)
		for g := range groups {
			wg.Go(func() {
				deadline := time.Now().Add(20 * time.Second)
				for {
					err := fmt.Errorf("no leader")
					if l := leaderOf(nodes[g], skip); l >= 0 {
						if err = nodes[g][l].r.Apply([]byte("x"), 5*time.Second).Error(); err == nil {
							return
						}
					}
					if time.Now().After(deadline) {
						errs <- fmt.Errorf("group %d: %w", g, err)
						return
					}
					time.Sleep(10 * time.Millisecond)
				}
			})
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Fatal(err)
		}
	}
	apply(nil)
	// Every replica applies it.
	waitFor(t, 10*time.Second, "replication to every replica", func() bool {
		for g := range groups {
			for _, n := range nodes[g] {
				if n.fsm.count() < 1 {
					return false
				}
			}
		}
		return true
	})

	// Close the broker that leads the most groups.
	led := make([]int, len(nets))
	for g := range groups {
		if l := leaderOf(nodes[g], nil); l >= 0 {
			led[l]++
		}
	}
	victim := 0
	for i := range led {
		if led[i] > led[victim] {
			victim = i
		}
	}
	t.Logf("leaders per broker %v; closing broker %d", led, victim)
	if err := nets[victim].Close(); err != nil {
		t.Fatal(err)
	}
	skip := map[int]bool{victim: true}
	waitFor(t, 30*time.Second, "new leaders on the surviving brokers", func() bool {
		for g := range groups {
			if leaderOf(nodes[g], skip) < 0 {
				return false
			}
		}
		return true
	})
	apply(skip)
	for g := range groups {
		l := leaderOf(nodes[g], skip)
		if l >= 0 && nodes[g][l].fsm.count() < 2 {
			t.Fatalf("group %d: leader applied %d", g, nodes[g][l].fsm.count())
		}
	}
	st := nets[(victim+1)%3].Stats()
	t.Logf("broker %d: %d frames in, %d flushes", (victim+1)%3, st.FramesIn, st.Flushes)
}

// TestInstallSnapshot: a follower that joins after the leader compacted its log catches up by
// an InstallSnapshot streamed in chunks.
func TestInstallSnapshot(t *testing.T) {
	nets := []*Network{newNet(t, 2*time.Second), newNet(t, 2*time.Second), newNet(t, 2*time.Second)}
	conf := func(i int) *raft.Config {
		c := testRaftConfig(brokerID(i))
		c.TrailingLogs = 5
		c.SnapshotThreshold = 1 << 30 // only the explicit Snapshot below
		c.SnapshotInterval = time.Hour
		return c
	}
	const blob = 300 << 10 // several chunks
	nodes := []*node{startNode(t, nets, 0, "g", conf(0), true, blob), startNode(t, nets, 1, "g", conf(1), true, blob), nil}
	waitFor(t, 10*time.Second, "a leader", func() bool { return leaderOf(nodes, nil) >= 0 })
	l := leaderOf(nodes, nil)
	const entries = 100
	for range entries {
		if err := nodes[l].r.Apply([]byte("x"), 5*time.Second).Error(); err != nil {
			t.Fatal(err)
		}
	}
	if err := nodes[l].r.Snapshot().Error(); err != nil {
		t.Fatal(err)
	}
	// Broker 2's replica starts empty (not bootstrapped): the leader's log no longer has what it
	// needs, so it gets the snapshot.
	nodes[2] = startNode(t, nets, 2, "g", conf(2), false, blob)
	waitFor(t, 20*time.Second, "the new follower to catch up", func() bool { return nodes[2].fsm.count() == entries })
	if nodes[2].fsm.restores() != 1 {
		t.Fatalf("follower restored %d snapshots", nodes[2].fsm.restores())
	}
	// And it keeps replicating afterwards.
	if err := nodes[l].r.Apply([]byte("y"), 5*time.Second).Error(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "replication after the snapshot", func() bool { return nodes[2].fsm.count() == entries+1 })
}

// TestReplicationUnderLoad: several groups replicating large entries at once (pipelined, bulk
// frames) while their heartbeats share the connections; every replica gets every entry.
func TestReplicationUnderLoad(t *testing.T) {
	const groups, entries, size = 5, 100, 32 << 10
	conf := func(i int) *raft.Config {
		// Slower timeouts than the other tests: the race detector makes msgpack of large
		// entries slow enough on a small machine to starve a 150ms leader lease.
		c := testRaftConfig(brokerID(i))
		c.HeartbeatTimeout, c.ElectionTimeout, c.LeaderLeaseTimeout = time.Second, time.Second, 500*time.Millisecond
		return c
	}
	nets := []*Network{newNet(t, 5*time.Second), newNet(t, 5*time.Second), newNet(t, 5*time.Second)}
	nodes := make([][]*node, groups)
	for g := range groups {
		for i := range nets {
			nodes[g] = append(nodes[g], startNode(t, nets, i, fmt.Sprintf("g%d", g), conf(i), true, 0))
		}
	}
	waitFor(t, 20*time.Second, "a leader in every group", func() bool {
		for g := range groups {
			if leaderOf(nodes[g], nil) < 0 {
				return false
			}
		}
		return true
	})
	data := make([]byte, size)
	var wg sync.WaitGroup
	errs := make(chan error, groups)
	for g := range groups {
		wg.Go(func() {
			// Apply in batches of pipelined futures; on a starved machine a leader may lose its
			// lease meanwhile (a correct outcome), so failed batches are retried on the new
			// leader: entries may then be applied more than once, and every replica must agree.
			deadline := time.Now().Add(60 * time.Second)
			for done := 0; done < entries; {
				l := leaderOf(nodes[g], nil)
				if l < 0 {
					if time.Now().After(deadline) {
						errs <- fmt.Errorf("group %d: no leader", g)
						return
					}
					time.Sleep(10 * time.Millisecond)
					continue
				}
				n := min(20, entries-done)
				futures := make([]raft.ApplyFuture, 0, n)
				for range n {
					futures = append(futures, nodes[g][l].r.Apply(data, 10*time.Second))
				}
				var err error
				for _, f := range futures {
					if e := f.Error(); e != nil && err == nil {
						err = e
					}
				}
				if err == nil {
					done += n
				} else if time.Now().After(deadline) {
					errs <- fmt.Errorf("group %d: %w", g, err)
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	waitFor(t, 30*time.Second, "every replica to apply every entry", func() bool {
		for g := range groups {
			c := nodes[g][0].fsm.count()
			for _, n := range nodes[g] {
				if n.fsm.count() < entries || n.fsm.count() != c {
					return false
				}
			}
		}
		return true
	})
}

// TestLeadershipTransfer: TimeoutNow through the transport hands leadership to another broker.
func TestLeadershipTransfer(t *testing.T) {
	nets := []*Network{newNet(t, 2*time.Second), newNet(t, 2*time.Second), newNet(t, 2*time.Second)}
	var nodes []*node
	for i := range nets {
		nodes = append(nodes, startNode(t, nets, i, "g", testRaftConfig(brokerID(i)), true, 0))
	}
	waitFor(t, 10*time.Second, "a leader", func() bool { return leaderOf(nodes, nil) >= 0 })
	old := leaderOf(nodes, nil)
	if err := nodes[old].r.LeadershipTransfer().Error(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "another leader", func() bool {
		l := leaderOf(nodes, nil)
		return l >= 0 && l != old
	})
}
