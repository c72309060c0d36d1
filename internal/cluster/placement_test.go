package cluster

import (
	"fmt"
	"maps"
	"math/rand/v2"
	"slices"
	"testing"
)

func brokerIDs(n int) []int32 {
	out := make([]int32, n)
	for i := range out {
		out[i] = int32(i + 1)
	}
	return out
}

func counts(parts [][]int32) (reps, leads map[int32]int) {
	reps, leads = map[int32]int{}, map[int32]int{}
	for _, r := range parts {
		for i, b := range r {
			reps[b]++
			if i == 0 {
				leads[b]++
			}
		}
	}
	return reps, leads
}

func spread(m map[int32]int, brokers []int32) int {
	lo, hi := int(^uint(0)>>1), 0
	for _, b := range brokers {
		lo, hi = min(lo, m[b]), max(hi, m[b])
	}
	return hi - lo
}

func checkDistinct(t *testing.T, parts [][]int32, rf int) {
	t.Helper()
	for p, r := range parts {
		if len(r) != rf {
			t.Fatalf("partition %d: %d replicas, want %d: %v", p, len(r), rf, r)
		}
		if len(slices.Compact(slices.Sorted(slices.Values(r)))) != len(r) {
			t.Fatalf("partition %d: replicas not distinct: %v", p, r)
		}
	}
}

func TestAssignTable(t *testing.T) {
	for _, tc := range []struct {
		brokers, parts, rf int
		want               [][]int32
	}{
		{3, 3, 3, [][]int32{{1, 2, 3}, {2, 1, 3}, {3, 1, 2}}},
		{3, 1, 1, [][]int32{{1}}},
		{4, 2, 2, [][]int32{{1, 2}, {3, 4}}},
		{1, 3, 1, [][]int32{{1}, {1}, {1}}},
	} {
		got, err := Assign(brokerIDs(tc.brokers), nil, tc.parts, tc.rf)
		if err != nil {
			t.Fatal(err)
		}
		if fmt.Sprint(got) != fmt.Sprint(tc.want) {
			t.Errorf("Assign(%d brokers, %d partitions, rf %d) = %v, want %v", tc.brokers, tc.parts, tc.rf, got, tc.want)
		}
	}
	if _, err := Assign(brokerIDs(2), nil, 1, 3); err == nil {
		t.Error("rf 3 on 2 brokers: no error")
	}
	if _, err := Assign(brokerIDs(2), nil, 1, 0); err == nil {
		t.Error("rf 0: no error")
	}
}

// TestAssignProperties: on brokers with equal load, replicas are distinct, and replica and
// preferred-leader counts differ by at most one; the result is deterministic.
func TestAssignProperties(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for range 2000 {
		n := 1 + rng.IntN(9)
		rf := 1 + rng.IntN(n)
		parts := rng.IntN(60)
		brokers := brokerIDs(n)
		rng.Shuffle(len(brokers), func(i, j int) { brokers[i], brokers[j] = brokers[j], brokers[i] })
		got, err := Assign(brokers, nil, parts, rf)
		if err != nil {
			t.Fatal(err)
		}
		checkDistinct(t, got, rf)
		reps, leads := counts(got)
		if s := spread(reps, brokers); s > 1 {
			t.Fatalf("n=%d rf=%d parts=%d: replica spread %d: %v", n, rf, parts, s, got)
		}
		if s := spread(leads, brokers); s > 1 {
			t.Fatalf("n=%d rf=%d parts=%d: leader spread %d: %v", n, rf, parts, s, got)
		}
		again, _ := Assign(slices.Sorted(slices.Values(brokers)), nil, parts, rf)
		if fmt.Sprint(again) != fmt.Sprint(got) {
			t.Fatalf("not deterministic: %v vs %v", got, again)
		}
	}
}

// TestAssignFillsEmptyBroker: a new, empty broker takes the new partitions first.
func TestAssignFillsEmptyBroker(t *testing.T) {
	load := Load{1: {Replicas: 10, Leaders: 4}, 2: {Replicas: 10, Leaders: 3}, 3: {Replicas: 10, Leaders: 3}}
	got, err := Assign([]int32{1, 2, 3, 4}, load, 4, 2)
	if err != nil {
		t.Fatal(err)
	}
	reps, leads := counts(got)
	// Leaders: 4, 3, 3 held by brokers 1-3; balanced within one, broker 4 leads 3 or 4.
	if reps[4] != 4 || leads[4] < 3 {
		t.Errorf("new broker 4 got %d replicas and %d leaders of 4 partitions: %v", reps[4], leads[4], got)
	}
	if load[4].Replicas != 0 {
		t.Error("load modified")
	}
}

// TestRepairProperties: lost brokers vanish from every replica list, lists get back to rf
// from the eligible brokers, only partitions that had a lost replica change, and each of
// those keeps all its surviving replicas (in order) and gains exactly what it lost.
func TestRepairProperties(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	for range 2000 {
		n := 2 + rng.IntN(8)
		rf := 1 + rng.IntN(n-1)
		brokers := brokerIDs(n)
		parts, _ := Assign(brokers, nil, 1+rng.IntN(40), rf)
		orig := make([][]int32, len(parts))
		for i := range parts {
			orig[i] = slices.Clone(parts[i])
		}
		lost := map[int32]bool{brokers[rng.IntN(n)]: true}
		if rng.IntN(3) == 0 && n-len(lost) > rf {
			lost[brokers[rng.IntN(n)]] = true
		}
		var eligible []int32
		for _, b := range brokers {
			if !lost[b] {
				eligible = append(eligible, b)
			}
		}
		load := LoadOf(map[string][][]int32{"t": parts})
		changed := Repair(parts, rf, lost, eligible, load)
		if fmt.Sprint(parts) != fmt.Sprint(orig) {
			t.Fatal("Repair modified its input")
		}
		for p, r := range parts {
			had := slices.ContainsFunc(r, func(b int32) bool { return lost[b] })
			nr, ok := changed[int32(p)]
			if !had {
				if ok {
					t.Fatalf("partition %d without a lost replica moved: %v -> %v", p, r, nr)
				}
				continue
			}
			if !ok {
				t.Fatalf("partition %d with a lost replica unchanged: %v", p, r)
			}
			var kept []int32
			for _, b := range r {
				if !lost[b] {
					kept = append(kept, b)
				}
			}
			if !slices.Equal(nr[:len(kept)], kept) {
				t.Fatalf("partition %d: survivors %v not kept in order: %v", p, kept, nr)
			}
			if len(nr) != rf {
				t.Fatalf("partition %d: %d replicas after repair, want %d (%v)", p, len(nr), rf, nr)
			}
			for _, b := range nr {
				if lost[b] {
					t.Fatalf("partition %d: lost broker %d still a replica: %v", p, b, nr)
				}
			}
			checkDistinct(t, [][]int32{nr}, rf)
		}
	}
}

func TestRepairTooFewBrokers(t *testing.T) {
	parts := [][]int32{{1, 2, 3}}
	changed := Repair(parts, 3, map[int32]bool{3: true}, []int32{1, 2}, Load{})
	if fmt.Sprint(changed) != "map[0:[1 2]]" {
		t.Errorf("got %v, want the partition under-replicated on [1 2]", changed)
	}
	// A fourth broker later fills it.
	changed = Repair([][]int32{{1, 2}}, 3, nil, []int32{1, 2, 4}, Load{})
	if fmt.Sprint(changed) != "map[0:[1 2 4]]" {
		t.Errorf("got %v, want [1 2 4]", changed)
	}
	// The preferred leader lost: the next replica leads.
	changed = Repair([][]int32{{3, 1, 2}}, 3, map[int32]bool{3: true}, []int32{1, 2, 4}, Load{})
	if fmt.Sprint(changed) != "map[0:[1 2 4]]" {
		t.Errorf("got %v, want [1 2 4]", changed)
	}
}

// TestPlanRebalanceProperties: after the plan, replica counts differ by at most one; every
// move is from a broker above the final average onto one that gains; the number of moves
// is the minimum (the replicas above the ceiling of the average), and partitions keep rf
// distinct replicas.
func TestPlanRebalanceProperties(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 6))
	for range 500 {
		n := 2 + rng.IntN(6)
		rf := 1 + rng.IntN(n)
		old := brokerIDs(n)
		all := map[string][][]int32{}
		for ti := range 1 + rng.IntN(4) {
			parts, _ := Assign(old, LoadOf(all), 1+rng.IntN(20), rf)
			all[fmt.Sprintf("t%d", ti)] = parts
		}
		added := 1 + rng.IntN(2)
		alive := brokerIDs(n + added)
		before := map[int32]int{}
		total := 0
		for _, parts := range all {
			r, _ := counts(parts)
			for b, k := range r {
				before[b] += k
				total += k
			}
		}
		moves, changed := PlanRebalance(all, alive)
		after := map[string][][]int32{}
		for name, parts := range all {
			cp := slices.Clone(parts)
			for p, r := range changed[name] {
				cp[p] = r
			}
			after[name] = cp
			checkDistinct(t, cp, rf)
		}
		reps := map[int32]int{}
		for _, parts := range after {
			r, _ := counts(parts)
			for b, k := range r {
				reps[b] += k
			}
		}
		if s := spread(reps, alive); s > 1 {
			t.Fatalf("replica spread %d after rebalance: %v", s, reps)
		}
		hi := (total + len(alive) - 1) / len(alive)
		minMoves := 0
		for _, b := range alive {
			minMoves += max(0, before[b]-hi)
		}
		// Moving only from brokers over the ceiling may leave one below the floor, which
		// takes at most one more move per broker to fix.
		if len(moves) < minMoves || len(moves) > minMoves+len(alive) {
			t.Fatalf("%d moves, minimum %d (before %v, after %v)", len(moves), minMoves, before, reps)
		}
		if all2 := maps.Clone(all); fmt.Sprint(all2) != fmt.Sprint(all) {
			t.Fatal("input modified")
		}
	}
}
