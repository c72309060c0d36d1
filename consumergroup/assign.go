package consumergroup

import (
	"slices"
	"sort"
)

// computeTarget recomputes every member's target from the previous targets, topic by topic:
// balanced (the partitions of a topic are spread over the members subscribed to it, counts
// differing by at most one) and sticky (a member keeps as many of its previous target
// partitions as its quota allows; only the excess and the unowned partitions move). Static
// members that are away keep their place. Deterministic: members in id order.
func (g *Group) computeTarget() {
	ids := g.memberIDs()
	next := make(map[string]tpSet, len(ids))
	for _, id := range ids {
		next[id] = tpSet{}
	}
	topics := make([]string, 0, len(g.topics))
	for t := range g.topics {
		topics = append(topics, t)
	}
	slices.Sort(topics)
	for _, topic := range topics {
		n := g.topics[topic]
		var subs []string
		for _, id := range ids {
			if g.members[id].subscribed(topic) {
				subs = append(subs, id)
			}
		}
		if len(subs) == 0 {
			continue
		}
		prev := make(map[string][]int32, len(subs))
		taken := make([]bool, n)
		for _, id := range subs {
			for tp := range g.members[id].target {
				if tp.Topic == topic && tp.Partition < n && !taken[tp.Partition] {
					taken[tp.Partition] = true
					prev[id] = append(prev[id], tp.Partition)
				}
			}
			slices.Sort(prev[id])
		}
		// The members that held the most get the extra partitions: fewest moves.
		order := slices.Clone(subs)
		sort.SliceStable(order, func(i, j int) bool { return len(prev[order[i]]) > len(prev[order[j]]) })
		base, extra := int(n)/len(subs), int(n)%len(subs)
		quota := make(map[string]int, len(subs))
		for i, id := range order {
			quota[id] = base
			if i < extra {
				quota[id]++
			}
		}
		free := make([]bool, n)
		for p := range free {
			free[p] = true
		}
		count := make(map[string]int, len(subs))
		for _, id := range subs {
			keep := prev[id]
			if len(keep) > quota[id] {
				keep = keep[:quota[id]]
			}
			for _, p := range keep {
				free[p] = false
				next[id][TopicPartition{topic, p}] = struct{}{}
			}
			count[id] = len(keep)
		}
		p := int32(0)
		for _, id := range subs {
			for ; count[id] < quota[id]; count[id]++ {
				for !free[p] {
					p++
				}
				free[p] = false
				next[id][TopicPartition{topic, p}] = struct{}{}
			}
		}
	}
	for _, id := range ids {
		g.members[id].target = next[id]
	}
}
