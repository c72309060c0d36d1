package main

import "testing"

// TestConsumeFollowerReads: --follower-reads is accepted and, on a single broker (no follower
// to read from), reads from the leader as without it.
func TestConsumeFollowerReads(t *testing.T) {
	addr := startBroker(t)
	ok(t, addr, "", "topic", "create", "orders", "-p", "1")
	ok(t, addr, "v1\nv2\nv3\n", "produce", "orders")
	if out := ok(t, addr, "", "consume", "orders", "--follower-reads", "--exit-at-end"); out != "v1\nv2\nv3\n" {
		t.Fatalf("consume --follower-reads = %q", out)
	}
	if out := ok(t, addr, "", "consume", "orders", "--follower-reads", "-n", "1", "-o", "2"); out != "v3\n" {
		t.Fatalf("consume --follower-reads -o 2 -n 1 = %q", out)
	}
}
