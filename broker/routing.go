package broker

import (
	"fmt"

	"github.com/runnel-io/runnel/internal/cluster"
	"github.com/runnel-io/runnel/partition"
	runnelv1 "github.com/runnel-io/runnel/proto/runnel/v1"
	"github.com/runnel-io/runnel/topic"
)

// PartitionRoute is where a partition lives, as this broker knows it: what DescribeTopic and
// GetMetadata report.
type PartitionRoute struct {
	Partition  int32
	LeaderID   int32  // -1 while no leader is known
	LeaderAddr string // "" while no leader is known
	Replicas   []int32
	// InSync are the replicas caught up with the leader; known only on the leader (nil
	// elsewhere).
	InSync []int32
	// Stats are this broker's replica's figures; nil when it holds no replica.
	Stats *partition.Stats
}

// Routes returns a topic's partitions' leaders, replicas and (for local replicas) figures.
// selfAddr is this broker's advertised address (the leader of everything on a single node).
func (r *Registry) Routes(name, selfAddr string) (TopicInfo, []PartitionRoute, error) {
	if err := topic.ValidateName(name); err != nil {
		return TopicInfo{}, nil, err
	}
	r.mu.Lock()
	ts, ok := r.topics[name]
	closed, cm := r.closed, r.cm
	var (
		info   TopicInfo
		parts  []*partition.Partition
		assign []cluster.PartitionAssignment
	)
	if ok {
		info, parts, assign = cloneInfo(ts.info), append([]*partition.Partition(nil), ts.parts...), ts.assign
	}
	r.mu.Unlock()
	if closed {
		return TopicInfo{}, nil, fmt.Errorf("topic %q: %w", name, ErrRegistryClosed)
	}
	if !ok {
		return TopicInfo{}, nil, fmt.Errorf("topic %q: %w", name, ErrUnknownTopic)
	}
	out := make([]PartitionRoute, len(parts))
	for i, p := range parts {
		rt := PartitionRoute{Partition: int32(i), LeaderID: -1}
		if p != nil {
			st := p.Stats()
			rt.Stats = &st
		}
		if cm == nil {
			rt.LeaderID, rt.LeaderAddr = r.nodeID, selfAddr
			rt.Replicas, rt.InSync = []int32{r.nodeID}, []int32{r.nodeID}
		} else if i < len(assign) {
			rt.Replicas = append([]int32(nil), assign[i].Replicas...)
			if id, addr, ok := cm.leaderOf(p, assign[i]); ok {
				rt.LeaderID, rt.LeaderAddr = id, addr
			}
			rt.InSync = cm.inSync(p)
		}
		out[i] = rt
	}
	return info, out, nil
}

// notHereLocked is the error for a partition this broker holds no leading replica of:
// NOT_LEADER naming the leader it knows of, or LEADER_NOT_AVAILABLE. r.mu is held.
func (r *Registry) notHereLocked(ts *topicState, p int32) error {
	e := &NotLeaderError{Topic: ts.info.Name, Partition: p, LeaderID: -1}
	if r.cm != nil && int(p) < len(ts.assign) {
		if id, addr, ok := r.cm.leaderOf(ts.parts[p], ts.assign[p]); ok && id != r.nodeID {
			e.LeaderID, e.LeaderAddr = id, addr
		}
	}
	return e
}

// NotLeaderError: this broker does not lead the partition (UNAVAILABLE, NOT_LEADER with the
// leader's id and address), or knows no leader (UNAVAILABLE, LEADER_NOT_AVAILABLE).
type NotLeaderError struct {
	Topic      string
	Partition  int32
	LeaderID   int32 // -1 if unknown
	LeaderAddr string
}

func (e *NotLeaderError) Error() string {
	if e.LeaderID < 0 {
		return fmt.Sprintf("topic %q partition %d: no leader is known (an election or a replica move is under way): retry shortly", e.Topic, e.Partition)
	}
	return fmt.Sprintf("topic %q partition %d: this broker is not the leader; the leader is broker %d at %s", e.Topic, e.Partition, e.LeaderID, e.LeaderAddr)
}

// Brokers returns the cluster's brokers for DescribeCluster and GetMetadata, with the
// metadata leader's id (-1 if none is known). self is this broker as a single node reports it.
func (r *Registry) Brokers(self *runnelv1.Broker) ([]*runnelv1.Broker, int32) {
	r.mu.Lock()
	cm := r.cm
	r.mu.Unlock()
	if cm == nil {
		return []*runnelv1.Broker{self}, self.GetId()
	}
	leader, _, ok := cm.cl.Leader()
	if !ok {
		leader = -1
	}
	list, err := cm.cl.Brokers()
	if err != nil {
		return []*runnelv1.Broker{self}, leader
	}
	out := make([]*runnelv1.Broker, 0, len(list))
	for _, b := range list {
		pb := &runnelv1.Broker{Id: b.ID, Address: b.Addr, IsVoter: b.Voter, IsMetadataLeader: b.ID == leader}
		switch b.State {
		case cluster.BrokerAlive:
			pb.State = runnelv1.BrokerState_BROKER_STATE_ALIVE
		case cluster.BrokerFailed:
			pb.State = runnelv1.BrokerState_BROKER_STATE_FAILED
		case cluster.BrokerLeft:
			pb.State = runnelv1.BrokerState_BROKER_STATE_LEFT
		}
		if b.ID == self.GetId() {
			pb.Version = self.GetVersion()
		}
		out = append(out, pb)
	}
	return out, leader
}
