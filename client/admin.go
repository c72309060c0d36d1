package client

import (
	"context"
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
	_, err := c.admin.CreateTopic(ctx, &runnelv1.CreateTopicRequest{Name: name, Partitions: partitions, ReplicationFactor: rf, Configs: configs})
	return fromRPC(err)
}

// DeleteTopic deletes a topic and its records.
func (c *Client) DeleteTopic(ctx context.Context, name string) error {
	_, err := c.admin.DeleteTopic(ctx, &runnelv1.DeleteTopicRequest{Name: name})
	if err == nil {
		c.meta.invalidate(name)
	}
	return fromRPC(err)
}

// ListTopics lists every topic, sorted by name (summary fields only).
func (c *Client) ListTopics(ctx context.Context) ([]TopicInfo, error) {
	resp, err := c.admin.ListTopics(ctx, &runnelv1.ListTopicsRequest{})
	if err != nil {
		return nil, fromRPC(err)
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
	resp, err := c.admin.DescribeTopic(ctx, &runnelv1.DescribeTopicRequest{Name: name})
	if err != nil {
		return nil, fromRPC(err)
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
	resp, err := c.admin.AlterTopicConfigs(ctx, &runnelv1.AlterTopicConfigsRequest{Name: name, Set: set, Delete: del})
	if err != nil {
		return nil, fromRPC(err)
	}
	c.meta.invalidate(name) // max.message.bytes may have changed
	return configMap(resp.GetConfigs()), nil
}

// ListOffsets looks up pos (Earliest, Latest or AtTime) in partitions of topic (none: every
// partition) and returns the offsets by partition. A partition's failure fails the call.
func (c *Client) ListOffsets(ctx context.Context, topicName string, pos Position, partitions ...int32) (map[int32]int64, error) {
	if pos.kind == posOffset || pos.kind == posCommitted {
		return nil, fmt.Errorf("runnel: ListOffsets: position %s cannot be looked up", pos)
	}
	resp, err := c.fetch.ListOffsets(ctx, &runnelv1.ListOffsetsRequest{Queries: []*runnelv1.OffsetQuery{{Topic: topicName, Partitions: partitions, Position: pos.pb()}}})
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
	resp, err := c.offsets.FetchOffsets(ctx, &runnelv1.FetchOffsetsRequest{Group: group, Topics: topics})
	if err != nil {
		return nil, fromRPC(err)
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
	_, err := c.offsets.CommitOffsets(ctx, req)
	return fromRPC(err)
}

// ClusterInfo describes the cluster and its brokers.
func (c *Client) ClusterInfo(ctx context.Context) (*ClusterInfo, error) {
	resp, err := c.admin.DescribeCluster(ctx, &runnelv1.DescribeClusterRequest{})
	if err != nil {
		return nil, fromRPC(err)
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

func trimEnum(s, prefix string) string {
	if len(s) >= len(prefix) && s[:len(prefix)] == prefix {
		return s[len(prefix):]
	}
	return s
}
