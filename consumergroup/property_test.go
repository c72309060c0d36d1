package consumergroup

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"
	"time"
)

// client is a simulated member. It starts consuming what it is assigned at once, and
// reports what it owns in every heartbeat; when the sim is lazy it sometimes keeps revoked
// partitions for a while (still reporting them), like a member finishing its work.
type client struct {
	id       string
	instance string
	epoch    int32
	subs     []string
	owned    []TopicPartition
}

type sim struct {
	t       *testing.T
	rng     *rand.Rand
	g       *Group
	now     time.Time
	clients map[string]*client
	nextIns int
	topics  []string
	lazy    bool // clients may keep revoked partitions for a few heartbeats
}

func (s *sim) fatalf(format string, args ...any) {
	s.t.Helper()
	s.t.Fatalf("%s\n%+v", fmt.Sprintf(format, args...), s.g.Describe())
}

func (s *sim) heartbeat(c *client, req HeartbeatRequest) {
	s.t.Helper()
	resp := s.g.Heartbeat(s.now, req)
	if resp.Error != nil {
		s.fatalf("heartbeat %+v: %v", req, resp.Error)
	}
	held := slices.Clone(resp.Assignment)
	if s.lazy && s.rng.IntN(3) == 0 {
		for _, tp := range c.owned {
			if !slices.Contains(resp.Assignment, tp) {
				held = append(held, tp)
			}
		}
		slices.SortFunc(held, compareTP)
	}
	c.id, c.epoch, c.owned = resp.MemberID, resp.MemberEpoch, held
	s.clients[c.id] = c
}

func (s *sim) randomSubs() []string {
	var subs []string
	for _, t := range s.topics {
		if s.rng.IntN(3) > 0 {
			subs = append(subs, t)
		}
	}
	if len(subs) == 0 {
		subs = []string{s.topics[s.rng.IntN(len(s.topics))]}
	}
	return subs
}

func (s *sim) join() *client {
	c := &client{subs: s.randomSubs()}
	if s.rng.IntN(3) == 0 {
		s.nextIns++
		c.instance = fmt.Sprintf("i%d", s.nextIns)
	}
	s.heartbeat(c, HeartbeatRequest{InstanceID: c.instance, Subscriptions: c.subs, Owned: []TopicPartition{}})
	return c
}

func (s *sim) live() []*client {
	ids := make([]string, 0, len(s.clients))
	for id := range s.clients {
		ids = append(ids, id)
	}
	slices.SortFunc(ids, compareIDs)
	out := make([]*client, 0, len(ids))
	for _, id := range ids {
		out = append(out, s.clients[id])
	}
	return out
}

// check verifies that no partition is held by two clients, nor assigned twice.
func (s *sim) check(what string) {
	s.t.Helper()
	if err := s.g.checkInvariants(); err != nil {
		s.fatalf("after %s: %v", what, err)
	}
	holder := map[TopicPartition]string{}
	for _, c := range s.live() {
		for _, tp := range c.owned {
			if o, ok := holder[tp]; ok {
				s.fatalf("after %s: %s held by clients %s and %s", what, tp, o, c.id)
			}
			holder[tp] = c.id
		}
	}
}

// settle heartbeats every live client until the group is stable.
func (s *sim) settle() {
	s.t.Helper()
	defer func(lazy bool) { s.lazy = lazy }(s.lazy)
	s.lazy = false
	for range 10 {
		if s.g.Describe().State != StateReconciling {
			return
		}
		for _, c := range s.live() {
			s.heartbeat(c, HeartbeatRequest{MemberID: c.id, MemberEpoch: c.epoch, Owned: c.owned})
			s.check("settle heartbeat")
		}
	}
	s.fatalf("not stable after 10 rounds")
}

// checkStable: every subscribed partition assigned exactly once, balanced per topic.
func (s *sim) checkStable() {
	s.t.Helper()
	d := s.g.Describe()
	if d.State != StateStable && d.State != StateEmpty {
		s.fatalf("state %s", d.State)
	}
	for _, topic := range s.topics {
		n := s.g.topics[topic]
		count := map[int32]int{}
		var per []int
		for _, m := range d.Members {
			if !slices.Contains(m.Subscriptions, topic) {
				for _, tp := range m.Assignment {
					if tp.Topic == topic {
						s.fatalf("%s assigned %s without subscribing", m.MemberID, tp)
					}
				}
				continue
			}
			k := 0
			for _, tp := range m.Assignment {
				if tp.Topic == topic {
					count[tp.Partition]++
					k++
				}
			}
			per = append(per, k)
		}
		if len(per) == 0 {
			continue
		}
		for p := int32(0); p < n; p++ {
			if count[p] != 1 {
				s.fatalf("%s:%d assigned %d times", topic, p, count[p])
			}
		}
		if slices.Max(per)-slices.Min(per) > 1 {
			s.fatalf("%s unbalanced: %v", topic, per)
		}
	}
}

func (s *sim) owners() map[TopicPartition]string {
	o := map[TopicPartition]string{}
	for _, m := range s.g.Describe().Members {
		for _, tp := range m.Assignment {
			o[tp] = m.MemberID
		}
	}
	return o
}

func TestProperties(t *testing.T) {
	for seed := range uint64(40) {
		t.Run(fmt.Sprint(seed), func(t *testing.T) {
			s := &sim{t: t, rng: rand.New(rand.NewPCG(seed, 42)), g: NewGroup(Config{}),
				now: epoch0, clients: map[string]*client{}, topics: []string{"a", "b", "c"}, lazy: seed%2 == 1}
			for _, topic := range s.topics {
				s.g.SetTopicPartitions(topic, int32(1+s.rng.IntN(12)))
			}
			for step := range 150 {
				s.now = s.now.Add(time.Duration(s.rng.IntN(500)) * time.Millisecond)
				live := s.live()
				var what string
				switch op := s.rng.IntN(20); {
				case op < 4 || len(live) == 0:
					what = "join"
					if len(live) < 8 {
						s.join()
					}
				case op < 5:
					what = "leave"
					c := live[s.rng.IntN(len(live))]
					if err := s.g.Leave(s.now, LeaveRequest{MemberID: c.id}); err != nil {
						t.Fatalf("leave %s: %v", c.id, err)
					}
					delete(s.clients, c.id)
				case op < 6:
					what = "static rejoin"
					for _, c := range live {
						if c.instance == "" {
							continue
						}
						wasStable := s.g.Describe().State == StateStable
						if err := s.g.Leave(s.now, LeaveRequest{InstanceID: c.instance}); err != nil {
							t.Fatalf("leave %s: %v", c.instance, err)
						}
						delete(s.clients, c.id)
						s.check(what)
						before := s.g.Epoch()
						nc := &client{instance: c.instance, subs: c.subs}
						s.heartbeat(nc, HeartbeatRequest{InstanceID: c.instance, Subscriptions: c.subs, Owned: []TopicPartition{}})
						if s.g.Epoch() != before || (wasStable && !slices.Equal(nc.owned, c.owned)) {
							t.Fatalf("static rejoin of %s rebalanced: epoch %d -> %d, %v -> %v", c.instance, before, s.g.Epoch(), c.owned, nc.owned)
						}
						break
					}
				case op < 7:
					what = "subscription change"
					c := live[s.rng.IntN(len(live))]
					c.subs = s.randomSubs()
					s.heartbeat(c, HeartbeatRequest{MemberID: c.id, MemberEpoch: c.epoch, Subscriptions: c.subs, Owned: c.owned})
				case op < 8:
					what = "partitions"
					topic := s.topics[s.rng.IntN(len(s.topics))]
					s.g.SetTopicPartitions(topic, s.g.topics[topic]+int32(s.rng.IntN(3)))
				case op < 9:
					what = "expire"
					c := live[s.rng.IntN(len(live))]
					// Everyone but c heartbeats, then time passes beyond its session timeout.
					s.now = s.now.Add(10 * time.Second)
					for _, o := range live {
						if o != c {
							s.heartbeat(o, HeartbeatRequest{MemberID: o.id, MemberEpoch: o.epoch, Owned: o.owned})
						}
					}
					expired := s.g.Tick(s.now)
					if !slices.Contains(expired, c.id) {
						t.Fatalf("step %d: %s not expired: %v", step, c.id, expired)
					}
					for _, id := range expired {
						delete(s.clients, id)
					}
				case op < 14:
					what = "stickiness"
					if len(live) >= 8 {
						break
					}
					s.settle()
					before := s.owners()
					nc := s.join()
					s.settle()
					s.checkStable()
					after := s.owners()
					d := s.g.Describe()
					for _, topic := range nc.subs {
						n := 0
						for _, m := range d.Members {
							if slices.Contains(m.Subscriptions, topic) {
								n++
							}
						}
						p := int(s.g.topics[topic])
						moved := 0
						for tp, o := range before {
							if tp.Topic == topic && after[tp] != o {
								moved++
							}
						}
						if limit := (p + n - 1) / n; moved > limit {
							t.Fatalf("step %d: join of %s moved %d partitions of %s (P=%d N=%d, limit %d)", step, nc.id, moved, topic, p, n, limit)
						}
					}
				default:
					what = "heartbeat"
					c := live[s.rng.IntN(len(live))]
					s.heartbeat(c, HeartbeatRequest{MemberID: c.id, MemberEpoch: c.epoch, Owned: c.owned})
				}
				s.check(what)
				if s.rng.IntN(10) == 0 {
					s.settle()
					s.checkStable()
				}
			}
			s.settle()
			s.checkStable()
		})
	}
}
