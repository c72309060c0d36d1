package client

import (
	"context"
	"errors"
	"fmt"
	"time"

	runnelv1 "github.com/runnel-io/runnel/proto/runnel/v1"
)

// TopicInfo describes a topic. ListTopics fills the summary fields only; DescribeTopic fills
// Partitions and Configs too.
type TopicInfo struct {
	Name              string
	ID                string
	PartitionCount    int32
	ReplicationFactor int32
	// Partitions, by partition number (DescribeTopic only).
	Partitions []PartitionInfo
	// Configs holds every config's effective value (DescribeTopic only).
	Configs map[string]string
}

// PartitionInfo describes one partition of a topic; offsets and size are -1 when unknown.
type PartitionInfo struct {
	Partition      int32
	Leader         int32
	LeaderAddress  string
	Replicas       []int32
	InSyncReplicas []int32
	LogStartOffset int64
	HighWatermark  int64
	SizeBytes      int64
}

// BrokerInfo is one broker of the cluster.
type BrokerInfo struct {
	ID      int32
	Address string
	// State is "ALIVE", "LEAVING", "LEFT" or "FAILED".
	State            string
	IsVoter          bool
	IsMetadataLeader bool
	Version          string
}

// ClusterInfo describes the cluster.
type ClusterInfo struct {
	ID               string
	MetadataLeaderID int32
	RespondingBroker int32
	Brokers          []BrokerInfo
}

// CommittedOffset is a consumer group's committed offset for one partition: the next record
// the group will consume.
type CommittedOffset struct {
	Topic      string
	Partition  int32
	Offset     int64
	Metadata   string
	CommitTime time.Time
}

// TopicPartition names one partition of a topic.
type TopicPartition struct {
	Topic     string
	Partition int32
}

// CreateTopic creates a topic with partitions partitions (0: 1) and replication factor rf
// (0: 1), with configs overriding the defaults (keys such as "retention.ms"; nil for none).
func (c *Client) CreateTopic(ctx context.Context, name string, partitions, rf int32, configs map[string]string) error {
	return c.callMeta(ctx, func(ctx context.Context, bc *brokerConn) error {
		_, err := bc.admin.CreateTopic(ctx, &runnelv1.CreateTopicRequest{Name: name, Partitions: partitions, ReplicationFactor: rf, Configs: configs})
		return err
	})
}

// DeleteTopic deletes a topic and its records.
func (c *Client) DeleteTopic(ctx context.Context, name string) error {
	err := c.callMeta(ctx, func(ctx context.Context, bc *brokerConn) error {
		_, err := bc.admin.DeleteTopic(ctx, &runnelv1.DeleteTopicRequest{Name: name})
		return err
	})
	if err == nil {
		c.meta.invalidate(name)
		c.router.invalidateNoRefresh(name)
	}
	return err
}

// ListTopics lists every topic, sorted by name (summary fields only).
func (c *Client) ListTopics(ctx context.Context) ([]TopicInfo, error) {
	var resp *runnelv1.ListTopicsResponse
	err := c.callAny(ctx, func(ctx context.Context, bc *brokerConn) (err error) {
		resp, err = bc.admin.ListTopics(ctx, &runnelv1.ListTopicsRequest{})
		return fromRPC(err)
	})
	if err != nil {
		return nil, err
	}
	out := make([]TopicInfo, 0, len(resp.GetTopics()))
	for _, t := range resp.GetTopics() {
		out = append(out, summary(t))
	}
	return out, nil
}

func summary(t *runnelv1.TopicSummary) TopicInfo {
	return TopicInfo{Name: t.GetName(), ID: t.GetTopicId(), PartitionCount: t.GetPartitionCount(), ReplicationFactor: t.GetReplicationFactor()}
}

// DescribeTopic describes a topic: its partitions with their offsets, and its configs.
func (c *Client) DescribeTopic(ctx context.Context, name string) (*TopicInfo, error) {
	var resp *runnelv1.DescribeTopicResponse
	err := c.callAny(ctx, func(ctx context.Context, bc *brokerConn) (err error) {
		resp, err = bc.admin.DescribeTopic(ctx, &runnelv1.DescribeTopicRequest{Name: name})
		return fromRPC(err)
	})
	if err != nil {
		return nil, err
	}
	ti := summary(resp.GetTopic())
	for _, p := range resp.GetPartitions() {
		ti.Partitions = append(ti.Partitions, PartitionInfo{
			Partition: p.GetPartition(), Leader: p.GetLeaderId(), LeaderAddress: p.GetLeaderAddress(),
			Replicas: p.GetReplicas(), InSyncReplicas: p.GetInSyncReplicas(),
			LogStartOffset: p.GetLogStartOffset(), HighWatermark: p.GetHighWatermark(), SizeBytes: p.GetSizeBytes(),
		})
	}
	ti.Configs = configMap(resp.GetConfigs())
	return &ti, nil
}

func configMap(cs []*runnelv1.ConfigEntry) map[string]string {
	m := make(map[string]string, len(cs))
	for _, e := range cs {
		m[e.GetName()] = e.GetValue()
	}
	return m
}

// AlterTopicConfig sets configs of a topic and resets the keys in del to their defaults, all
// or nothing, and returns every config's effective value afterwards. Some keys take effect
// only after a broker restart (the broker says which in a response header the SDK does not
// surface).
func (c *Client) AlterTopicConfig(ctx context.Context, name string, set map[string]string, del ...string) (map[string]string, error) {
	var resp *runnelv1.AlterTopicConfigsResponse
	err := c.callMeta(ctx, func(ctx context.Context, bc *brokerConn) (err error) {
		resp, err = bc.admin.AlterTopicConfigs(ctx, &runnelv1.AlterTopicConfigsRequest{Name: name, Set: set, Delete: del})
		return err
	})
	if err != nil {
		return nil, err
	}
	c.meta.invalidate(name) // max.message.bytes may have changed
	return configMap(resp.GetConfigs()), nil
}

// ListOffsets looks up pos (Earliest, Latest or AtTime) in partitions of topic (none: every
// partition) and returns the offsets by partition. Each partition is asked of its leader. A
// partition's failure fails the call.
func (c *Client) ListOffsets(ctx context.Context, topicName string, pos Position, partitions ...int32) (map[int32]int64, error) {
	if pos.kind == posOffset || pos.kind == posCommitted {
		return nil, fmt.Errorf("runnel: ListOffsets: position %s cannot be looked up", pos)
	}
	if len(partitions) == 0 {
		n, err := c.router.partitions(ctx, topicName)
		if err != nil {
			return nil, err
		}
		if n < 0 { // a broker without GetMetadata: it answers for every partition
			return c.listOffsets(ctx, c.router.bootstrap(), topicName, pos, nil)
		}
		for p := range n {
			partitions = append(partitions, int32(p))
		}
	}
	out := make(map[int32]int64, len(partitions))
	todo := partitions
	for attempt := 0; ; attempt++ {
		byLeader := map[string][]int32{}
		var retry []int32
		var lastErr error
		for _, p := range todo {
			addr, err := c.router.leader(ctx, topicName, p)
			switch {
			case err == nil:
				byLeader[addr] = append(byLeader[addr], p)
			case IsRetriable(err) && ctx.Err() == nil:
				c.router.invalidate(topicName)
				retry, lastErr = append(retry, p), err
			default:
				return nil, err
			}
		}
		redirected := true
		for addr, ps := range byLeader {
			m, err := c.listOffsets(ctx, addr, topicName, pos, ps)
			var e *Error
			switch {
			case err == nil:
			case ctx.Err() != nil || !IsRetriable(err):
				return nil, err
			case errors.As(err, &e) && e.Partition >= 0 && e.Reason == reasonName(runnelv1.ErrorReason_ERROR_REASON_NOT_LEADER) && e.Info.GetLeaderAddress() != "":
				c.router.setLeader(topicName, e.Partition, e.Info.GetLeaderId(), e.Info.GetLeaderAddress())
				retry, lastErr = append(retry, ps...), err
				continue
			default:
				if unreachable(err) {
					c.router.invalidateAddr(addr)
				} else {
					c.router.invalidate(topicName)
				}
				retry, lastErr, redirected = append(retry, ps...), err, false
				continue
			}
			for p, off := range m {
				out[p] = off
			}
		}
		if len(retry) == 0 {
			return out, nil
		}
		if attempt >= adminRetries {
			return nil, lastErr
		}
		if !redirected || len(byLeader) == 0 {
			t := time.NewTimer(c.opts.retryBackoff)
			select {
			case <-t.C:
			case <-ctx.Done():
				t.Stop()
				return nil, ctx.Err()
			}
		}
		todo = retry
	}
}

// listOffsets asks the broker at addr; the first partition's error fails it.
func (c *Client) listOffsets(ctx context.Context, addr, topicName string, pos Position, partitions []int32) (map[int32]int64, error) {
	bc, err := c.conn(addr)
	if err != nil {
		return nil, err
	}
	resp, err := bc.fetch.ListOffsets(ctx, &runnelv1.ListOffsetsRequest{Queries: []*runnelv1.OffsetQuery{{Topic: topicName, Partitions: partitions, Position: pos.pb()}}})
	if err != nil {
		return nil, fromRPC(err)
	}
	out := make(map[int32]int64, len(resp.GetOffsets()))
	for _, lo := range resp.GetOffsets() {
		if err := fromPB(lo.GetError()); err != nil {
			return nil, err
		}
		out[lo.GetPartition()] = lo.GetOffset()
	}
	return out, nil
}

// FetchCommitted returns a group's committed offsets, sorted by topic and partition (none,
// and no error, for a group that never committed).
func (c *Client) FetchCommitted(ctx context.Context, group string) ([]CommittedOffset, error) {
	return c.fetchCommitted(ctx, group, nil)
}

func (c *Client) fetchCommitted(ctx context.Context, group string, topics []*runnelv1.TopicPartitions) ([]CommittedOffset, error) {
	var resp *runnelv1.FetchOffsetsResponse
	err := c.callMeta(ctx, func(ctx context.Context, bc *brokerConn) (err error) {
		resp, err = bc.offsets.FetchOffsets(ctx, &runnelv1.FetchOffsetsRequest{Group: group, Topics: topics})
		return err
	})
	if err != nil {
		return nil, err
	}
	var out []CommittedOffset
	for _, o := range resp.GetOffsets() {
		if o.GetOffset() < 0 {
			continue
		}
		co := CommittedOffset{Topic: o.GetTopic(), Partition: o.GetPartition(), Offset: o.GetOffset(), Metadata: o.GetMetadata()}
		if o.GetCommitTime() != nil {
			co.CommitTime = o.GetCommitTime().AsTime()
		}
		out = append(out, co)
	}
	return out, nil
}

// CommitOffsets commits offsets for group (each the next record to consume: the last one
// processed plus 1), all or nothing, with metadata (may be empty) kept beside each.
func (c *Client) CommitOffsets(ctx context.Context, group string, offsets map[TopicPartition]int64, metadata string) error {
	if len(offsets) == 0 {
		return nil
	}
	req := &runnelv1.CommitOffsetsRequest{Group: group}
	for k, off := range offsets {
		req.Offsets = append(req.Offsets, &runnelv1.OffsetCommit{Topic: k.Topic, Partition: k.Partition, Offset: off, Metadata: metadata})
	}
	return c.callMeta(ctx, func(ctx context.Context, bc *brokerConn) error {
		_, err := bc.offsets.CommitOffsets(ctx, req)
		return err
	})
}

// ClusterInfo describes the cluster and its brokers.
func (c *Client) ClusterInfo(ctx context.Context) (*ClusterInfo, error) {
	var resp *runnelv1.DescribeClusterResponse
	err := c.callAny(ctx, func(ctx context.Context, bc *brokerConn) (err error) {
		resp, err = bc.admin.DescribeCluster(ctx, &runnelv1.DescribeClusterRequest{})
		return fromRPC(err)
	})
	if err != nil {
		return nil, err
	}
	ci := &ClusterInfo{ID: resp.GetClusterId(), MetadataLeaderID: resp.GetMetadataLeaderId(), RespondingBroker: resp.GetRespondingBrokerId()}
	for _, b := range resp.GetBrokers() {
		ci.Brokers = append(ci.Brokers, BrokerInfo{
			ID: b.GetId(), Address: b.GetAddress(), State: trimEnum(b.GetState().String(), "BROKER_STATE_"),
			IsVoter: b.GetIsVoter(), IsMetadataLeader: b.GetIsMetadataLeader(), Version: b.GetVersion(),
		})
	}
	return ci, nil
}

// ReplicaMove is one replica RebalanceCluster moved from one broker to another.
type ReplicaMove struct {
	Topic      string
	Partition  int32
	FromBroker int32
	ToBroker   int32
}

// RebalanceCluster moves replicas from the brokers holding the most onto those holding the
// fewest (typically a broker that just joined), until replica counts differ by at most one, and
// evens out preferred leaders. It returns the moves decided, by topic and partition; none when
// the cluster is already balanced. It returns before data has moved: each new replica catches
// up from the partition's leader before the one it replaces is removed.
func (c *Client) RebalanceCluster(ctx context.Context) ([]ReplicaMove, error) {
	var resp *runnelv1.RebalanceClusterResponse
	err := c.callMeta(ctx, func(ctx context.Context, bc *brokerConn) (err error) {
		resp, err = bc.admin.RebalanceCluster(ctx, &runnelv1.RebalanceClusterRequest{})
		return err
	})
	if err != nil {
		return nil, err
	}
	out := make([]ReplicaMove, 0, len(resp.GetMoves()))
	for _, m := range resp.GetMoves() {
		out = append(out, ReplicaMove{Topic: m.GetTopic(), Partition: m.GetPartition(), FromBroker: m.GetFromBrokerId(), ToBroker: m.GetToBrokerId()})
	}
	return out, nil
}

func trimEnum(s, prefix string) string {
	if len(s) >= len(prefix) && s[:len(prefix)] == prefix {
		return s[len(prefix):]
	}
	return s
}
