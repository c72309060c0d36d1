package cluster

import (
	"fmt"
	"testing"
	"time"

	"github.com/rs/zerolog"
)

func newTestMembership(t *testing.T, id int32) *Membership {
	t.Helper()
	m, err := NewMembership(MembershipConfig{
		BrokerID: id, Addr: fmt.Sprintf("grpc-%d:9092", id), RaftAddr: fmt.Sprintf("raft-%d", id),
		Incarnation: fmt.Sprintf("inc-%d", id), Bind: "127.0.0.1:0", Logger: zerolog.Nop(), Tune: fastSerf,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = m.Close() })
	return m
}

// nextEvent returns the next event about member id, skipping others.
func nextEvent(t *testing.T, m *Membership, id int32) MemberEvent {
	t.Helper()
	timeout := time.After(10 * time.Second)
	for {
		select {
		case ev := <-m.Events():
			if ev.Member.ID == id {
				return ev
			}
		case <-timeout:
			t.Fatalf("no event about member %d", id)
		}
	}
}

func TestMembershipEvents(t *testing.T) {
	a := newTestMembership(t, 1)
	b := newTestMembership(t, 2)
	c := newTestMembership(t, 3)
	if ev := nextEvent(t, a, 1); ev.Type != MemberJoin {
		t.Fatalf("own join: %+v", ev)
	}
	if err := b.Join([]string{a.Addr()}); err != nil {
		t.Fatal(err)
	}
	ev := nextEvent(t, a, 2)
	want := Member{ID: 2, Addr: "grpc-2:9092", RaftAddr: "raft-2", Incarnation: "inc-2", Status: MemberAlive}
	if ev.Type != MemberJoin || ev.Member != want {
		t.Fatalf("join event %+v, want join of %+v", ev, want)
	}
	b.SetApplied(42)
	if ev := nextEvent(t, a, 2); ev.Type != MemberUpdate || ev.Member.Applied != 42 {
		t.Fatalf("update event %+v", ev)
	}
	if err := c.Join([]string{b.Addr()}); err != nil {
		t.Fatal(err)
	}
	if ev := nextEvent(t, a, 3); ev.Type != MemberJoin {
		t.Fatalf("join of 3: %+v", ev)
	}
	// A graceful leave, then a crash.
	if err := c.Leave(); err != nil {
		t.Fatal(err)
	}
	// (On a loaded machine a failure may be suspected first; the leave follows.)
	for ev := nextEvent(t, a, 3); ev.Type != MemberLeave || ev.Member.Status != MemberLeft; ev = nextEvent(t, a, 3) {
		if ev.Type != MemberFail {
			t.Fatalf("leave event %+v", ev)
		}
	}
	_ = b.Close()
	for ev := nextEvent(t, a, 2); ev.Type != MemberFail || ev.Member.Status != MemberFailed; ev = nextEvent(t, a, 2) {
		if ev.Type != MemberUpdate {
			t.Fatalf("failure event %+v", ev)
		}
	}
	states := map[int32]MemberStatus{}
	for _, m := range a.Members() {
		states[m.ID] = m.Status
	}
	if fmt.Sprint(states) != "map[1:alive 2:failed 3:left]" {
		t.Errorf("members: %v", states)
	}
	if err := a.Join([]string{"127.0.0.1:1"}); err == nil {
		t.Error("join of a dead seed: no error")
	}
}

// TestMembershipAdvertiseName: a host name in the advertise address is resolved (memberlist
// takes IP addresses only).
func TestMembershipAdvertiseName(t *testing.T) {
	m, err := NewMembership(MembershipConfig{BrokerID: 1, Addr: "127.0.0.1:1", RaftAddr: "127.0.0.1:1", Incarnation: "i",
		Bind: "127.0.0.1:0", Advertise: "localhost:7946", Logger: zerolog.Nop()})
	if err != nil {
		t.Fatal(err)
	}
	_ = m.Close()
}
