// Placement: where a partition's replicas live. Pure functions of their inputs (no clocks, no
// randomness, no I/O): the metadata leader calls them and commits their result through Raft,
// so every decision is made once, by one broker, and replicated as data.

package cluster

import (
	"errors"
	"fmt"
	"slices"
)

// ErrNotEnoughBrokers is returned when a placement needs more alive brokers than there are.
var ErrNotEnoughBrokers = errors.New("cluster: not enough alive brokers")

// Load is how many replicas and preferred leaderships each broker holds already. Placement
// reads it to spread new work onto the emptiest brokers; a missing broker has none.
type Load map[int32]BrokerLoad

// BrokerLoad is one broker's share of the cluster's partitions.
type BrokerLoad struct {
	Replicas int // partitions this broker is a replica of
	Leaders  int // partitions this broker is the preferred leader of (first replica)
}

// LoadOf counts the replicas and preferred leaders in assignments.
func LoadOf(assignments map[string][][]int32) Load {
	l := Load{}
	for _, parts := range assignments {
		for _, reps := range parts {
			for i, b := range reps {
				bl := l[b]
				bl.Replicas++
				if i == 0 {
					bl.Leaders++
				}
				l[b] = bl
			}
		}
	}
	return l
}

// Assign places the replicas of a new topic with the given number of partitions and
// replication factor on the alive brokers, returning each partition's replica list with its
// preferred leader first. Each partition's replicas are rf distinct brokers. Replicas go to
// the brokers holding the fewest (counting load, then the partitions placed so far), so on
// brokers with equal load the replica counts differ by at most one; preferred leaders are
// then balanced among each partition's replicas the same way. Ties go to the lower broker
// id, so the result depends only on the inputs. load may be nil; it is not modified.
func Assign(alive []int32, load Load, partitions, rf int) ([][]int32, error) {
	brokers := sortedUnique(alive)
	if rf < 1 {
		return nil, fmt.Errorf("cluster: replication factor %d: must be at least 1", rf)
	}
	if partitions < 0 {
		return nil, fmt.Errorf("cluster: partition count %d: must not be negative", partitions)
	}
	if rf > len(brokers) {
		return nil, fmt.Errorf("%w: replication factor %d, %d alive brokers", ErrNotEnoughBrokers, rf, len(brokers))
	}
	reps := make(map[int32]int, len(brokers))
	leads := make(map[int32]int, len(brokers))
	for _, b := range brokers {
		reps[b], leads[b] = load[b].Replicas, load[b].Leaders
	}
	out := make([][]int32, partitions)
	order := slices.Clone(brokers)
	for p := range partitions {
		// The rf brokers with the fewest replicas, fewer leaders first among equals (so that
		// the leader pass below has room), then by id.
		slices.SortStableFunc(order, func(a, b int32) int {
			if reps[a] != reps[b] {
				return reps[a] - reps[b]
			}
			if leads[a] != leads[b] {
				return leads[a] - leads[b]
			}
			return int(a) - int(b)
		})
		set := slices.Clone(order[:rf])
		leader := 0
		for i := 1; i < rf; i++ {
			if leads[set[i]] < leads[set[leader]] || (leads[set[i]] == leads[set[leader]] && set[i] < set[leader]) {
				leader = i
			}
		}
		set[0], set[leader] = set[leader], set[0]
		slices.Sort(set[1:])
		for _, b := range set {
			reps[b]++
		}
		leads[set[0]]++
		out[p] = set
	}
	balanceLeaders(out, leads)
	return out, nil
}

// balanceLeaders changes which replica of each partition in parts comes first (the preferred
// leader; no replica moves) until the preferred-leader counts in leads, which it keeps up to
// date, differ by at most one wherever the replica sets allow it. It moves leadership along
// shortest chains: broker A leads a partition that B replicates, B leads one that C
// replicates, ... so that A loses one leadership and the last broker gains one. Each chain
// lowers the sum of squared counts, so it ends; broker ids and partition order fix every
// choice.
func balanceLeaders(parts [][]int32, leads map[int32]int) {
	brokers := make([]int32, 0, len(leads))
	for b := range leads {
		brokers = append(brokers, b)
	}
	slices.Sort(brokers)
	for range 10 * (len(parts) + 1) {
		// The most-loaded broker (lowest id among equals).
		var src int32
		first := true
		for _, b := range brokers {
			if first || leads[b] > leads[src] {
				src, first = b, false
			}
		}
		if first {
			return
		}
		// Breadth-first search for a broker with at most leads[src]-2 leaderships.
		type hop struct {
			from int32
			part int
		}
		prev := map[int32]hop{src: {from: -1, part: -1}}
		queue := []int32{src}
		target := int32(-1)
		found := false
		for len(queue) > 0 && !found {
			a := queue[0]
			queue = queue[1:]
			for p, reps := range parts {
				if len(reps) == 0 || reps[0] != a {
					continue
				}
				for _, b := range reps[1:] {
					if _, seen := prev[b]; seen {
						continue
					}
					if _, known := leads[b]; !known {
						continue
					}
					prev[b] = hop{from: a, part: p}
					if leads[b] <= leads[src]-2 {
						target, found = b, true
						break
					}
					queue = append(queue, b)
				}
				if found {
					break
				}
			}
		}
		if !found {
			return
		}
		// Walk the chain back, making each hop's broker the leader of its partition.
		for b := target; b != src; {
			h := prev[b]
			reps := parts[h.part]
			i := slices.Index(reps, b)
			old := reps[0]
			reps[0], reps[i] = b, old
			slices.Sort(reps[1:])
			b = h.from
		}
		leads[src]--
		leads[target]++
	}
}

// Repair returns the partitions of one topic whose replica lists must change so that no
// replica stays on a lost broker and, as far as there are eligible brokers, each partition
// has rf replicas again. A lost replica is dropped (the next replica, which holds the data,
// becomes the preferred leader if the lost one was first) and, for each replica missing, the
// eligible broker with the fewest replicas (counting load, updated as it goes; then the
// lowest id) that is not already a replica is appended. Nothing else moves: a partition
// without a lost replica and at rf keeps its list. The result maps partition index to its
// new replica list; parts is not modified; load is updated with the moves.
func Repair(parts [][]int32, rf int, lost map[int32]bool, eligible []int32, load Load) map[int32][]int32 {
	cands := sortedUnique(eligible)
	changed := map[int32][]int32{}
	for p, reps := range parts {
		keep := make([]int32, 0, max(rf, len(reps)))
		for _, b := range reps {
			if lost[b] {
				bl := load[b]
				bl.Replicas--
				load[b] = bl
				continue
			}
			keep = append(keep, b)
		}
		for len(keep) < rf {
			best := int32(-1)
			for _, b := range cands {
				if lost[b] || slices.Contains(keep, b) {
					continue
				}
				if best < 0 || load[b].Replicas < load[best].Replicas {
					best = b
				}
			}
			if best < 0 {
				break // too few brokers: the partition stays under-replicated for now
			}
			bl := load[best]
			bl.Replicas++
			load[best] = bl
			keep = append(keep, best)
		}
		if !slices.Equal(keep, reps) {
			changed[int32(p)] = keep
		}
	}
	return changed
}

// Move is one replica moved by a rebalance: partition Partition of Topic drops its replica on
// From and gains one on To (in From's place in the replica list).
type Move struct {
	Topic     string
	Partition int32
	From, To  int32
}

// PlanRebalance returns the moves that even out replica counts across the alive brokers (to
// within one) taking replicas from the fullest brokers onto the emptiest, typically a new
// broker, followed by the new replica lists of every partition that changes (moved replicas
// or a new preferred leader; leaderships are then evened out by reordering replicas, which
// moves no data). Moves prefer follower replicas, so preferred leaders stay put where they
// can. Topics are visited in name order and partitions in index order: the plan depends
// only on its inputs. assignments is not modified.
func PlanRebalance(assignments map[string][][]int32, alive []int32) ([]Move, map[string]map[int32][]int32) {
	brokers := sortedUnique(alive)
	if len(brokers) == 0 {
		return nil, nil
	}
	names := make([]string, 0, len(assignments))
	work := make(map[string][][]int32, len(assignments))
	for name, parts := range assignments {
		names = append(names, name)
		cp := make([][]int32, len(parts))
		for i, r := range parts {
			cp[i] = slices.Clone(r)
		}
		work[name] = cp
	}
	slices.Sort(names)
	isAlive := make(map[int32]bool, len(brokers))
	for _, b := range brokers {
		isAlive[b] = true
	}
	reps := map[int32]int{}
	for _, b := range brokers {
		reps[b] = 0
	}
	for _, parts := range work {
		for _, r := range parts {
			for _, b := range r {
				if isAlive[b] {
					reps[b]++
				}
			}
		}
	}
	var moves []Move
	for range 1 << 20 {
		hi, lo := brokers[0], brokers[0]
		for _, b := range brokers {
			if reps[b] > reps[hi] {
				hi = b
			}
			if reps[b] < reps[lo] {
				lo = b
			}
		}
		if reps[hi]-reps[lo] <= 1 {
			break
		}
		// A partition on hi but not on lo: a follower replica first, else a leader one.
		var mt string
		mp, mi := -1, -1
		for pass := 0; pass < 2 && mp < 0; pass++ {
			for _, name := range names {
				for p, r := range work[name] {
					if slices.Contains(r, lo) {
						continue
					}
					i := slices.Index(r, hi)
					if i < 0 || (pass == 0 && i == 0) {
						continue
					}
					mt, mp, mi = name, p, i
					break
				}
				if mp >= 0 {
					break
				}
			}
		}
		if mp < 0 {
			break // every partition on hi is already on lo (cannot happen while hi-lo >= 2)
		}
		work[mt][mp][mi] = lo
		reps[hi]--
		reps[lo]++
		moves = append(moves, Move{Topic: mt, Partition: int32(mp), From: hi, To: lo})
	}
	// Even out preferred leaders across all topics.
	var all [][]int32
	leads := map[int32]int{}
	for _, b := range brokers {
		leads[b] = 0
	}
	for _, name := range names {
		for _, r := range work[name] {
			all = append(all, r) // shares the backing arrays: reordering shows in work
			if len(r) > 0 && isAlive[r[0]] {
				leads[r[0]]++
			}
		}
	}
	balanceLeaders(all, leads)
	changed := map[string]map[int32][]int32{}
	for _, name := range names {
		for p, r := range work[name] {
			if !slices.Equal(r, assignments[name][p]) {
				if changed[name] == nil {
					changed[name] = map[int32][]int32{}
				}
				changed[name][int32(p)] = r
			}
		}
	}
	return moves, changed
}

func sortedUnique(ids []int32) []int32 {
	out := slices.Clone(ids)
	slices.Sort(out)
	return slices.Compact(out)
}
