// Commands: the entries of the metadata Raft log, and their encoding.

package cluster

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"math"

	"github.com/runnel-io/runnel/topic"
)

// Command encoding (frozen for version 1):
//
//	+---------+--------+----------------------+--------------------------+
//	| version | type   | payload length       | payload (JSON object)    |
//	| 1 byte  | 1 byte | 4 bytes, big endian  | exactly `length` bytes   |
//	+---------+--------+----------------------+--------------------------+
//
// The length is checked against MaxCommandBytes before anything is allocated and must match
// the rest of the entry exactly. A decoder refuses a version or a type it does not know, so a
// broker never applies a command it does not understand (a rolling upgrade must finish before
// the leader proposes a newer version).
const (
	commandVersion    = 1
	commandHeaderSize = 6
	// MaxCommandBytes caps a command's payload: a topic of 10,000 partitions with RF 5 is
	// about 300 KB of JSON.
	MaxCommandBytes = 8 << 20
)

type commandType uint8

const (
	cmdUpsertBroker   commandType = 1 // a broker's record: joined, failed, left, voter or not
	cmdRemoveBroker   commandType = 2 // forget a broker
	cmdCreateTopic    commandType = 3 // a topic and its partitions' replica lists
	cmdDeleteTopic    commandType = 4
	cmdAlterTopic     commandType = 5 // replace a topic's config overrides
	cmdSetAssignments commandType = 6 // new replica lists for some partitions (epoch + 1 each)
	cmdCommitOffsets  commandType = 7
	cmdDeleteGroup    commandType = 8
	// Several groups' commits in one entry: the coordinator's batches (one entry per
	// batch rather than per group keeps the metadata log and its fsyncs off the commit path).
	cmdCommitOffsetsBatch commandType = 9
	cmdSetClusterID       commandType = 10 // the cluster's id, set once (the first one committed stays)
	// cmdCommitOffsetsBatch with a binary payload (command_offsets.go): what the coordinator
	// proposes. Type 9 stays decodable for the entries already in logs and snapshots. A
	// broker built before type 11 refuses it (a rejection, so its copy of the offsets would
	// fall behind): every broker of a cluster must run a build that knows it before a leader
	// that proposes it; there is no version negotiation yet.
	cmdCommitOffsetsBin commandType = 11
)

func (t commandType) String() string {
	switch t {
	case cmdUpsertBroker:
		return "upsert-broker"
	case cmdRemoveBroker:
		return "remove-broker"
	case cmdCreateTopic:
		return "create-topic"
	case cmdDeleteTopic:
		return "delete-topic"
	case cmdAlterTopic:
		return "alter-topic"
	case cmdSetAssignments:
		return "set-assignments"
	case cmdCommitOffsets:
		return "commit-offsets"
	case cmdDeleteGroup:
		return "delete-group"
	case cmdCommitOffsetsBatch:
		return "commit-offsets-batch"
	case cmdSetClusterID:
		return "set-cluster-id"
	case cmdCommitOffsetsBin:
		return "commit-offsets-batch-bin"
	}
	return fmt.Sprintf("type-%d", uint8(t))
}

// ErrBadCommand is wrapped by every decoding error.
var ErrBadCommand = errors.New("cluster: bad metadata command")

// Payloads. Times are Unix milliseconds set by the proposer: Apply reads no clock.

type upsertBrokerCmd struct {
	Broker brokerRecord `json:"broker"`
}

type removeBrokerCmd struct {
	ID int32 `json:"id"`
}

type createTopicCmd struct {
	Topic    topicRecord `json:"topic"`
	Replicas [][]int32   `json:"replicas"` // per partition, preferred leader first
}

type deleteTopicCmd struct {
	Name string `json:"name"`
	ID   string `json:"id,omitempty"` // if set, only this incarnation of the topic
}

type alterTopicCmd struct {
	Name    string            `json:"name"`
	ID      string            `json:"id,omitempty"` // if set, only this incarnation of the topic
	Configs map[string]string `json:"configs"`      // the new overrides, replacing the old
	// Conditional: apply only if the overrides are still IfConfigs (compare and set, so
	// that two alterations never lose one another's keys).
	Conditional bool              `json:"conditional,omitempty"`
	IfConfigs   map[string]string `json:"if_configs,omitempty"`
}

type setAssignmentsCmd struct {
	Topic   string            `json:"topic"`
	TopicID string            `json:"topic_id"`
	Changes []assignmentDelta `json:"changes"`
}

type assignmentDelta struct {
	Partition int32   `json:"partition"`
	Replicas  []int32 `json:"replicas"`
}

type commitOffsetsCmd struct {
	Group   string         `json:"group"`
	AtMS    int64          `json:"at_ms"`
	Offsets []offsetCommit `json:"offsets"`
}

type offsetCommit struct {
	Topic     string `json:"topic"`
	TopicID   string `json:"topic_id,omitempty"`
	Partition int32  `json:"partition"`
	Offset    int64  `json:"offset"`
	Metadata  string `json:"metadata,omitempty"`
}

// commitOffsetsBatchCmd applies its groups' commits in order, as consecutive
// commitOffsetsCmd would (a group may appear more than once).
type commitOffsetsBatchCmd struct {
	AtMS   int64               `json:"at_ms"`
	Groups []groupOffsetCommit `json:"groups"`
}

type groupOffsetCommit struct {
	Group   string         `json:"group"`
	Offsets []offsetCommit `json:"offsets"`
}

type deleteGroupCmd struct {
	Group string `json:"group"`
}

type setClusterIDCmd struct {
	ID string `json:"id"`
}

// encodeCommand frames a payload: JSON, except cmdCommitOffsetsBin's
// (*)commitOffsetsBatchCmd.
func encodeCommand(t commandType, payload any) ([]byte, error) {
	var body []byte
	var err error
	if t == cmdCommitOffsetsBin {
		switch c := payload.(type) {
		case commitOffsetsBatchCmd:
			body = encodeOffsetsBatch(&c)
		case *commitOffsetsBatchCmd:
			body = encodeOffsetsBatch(c)
		default:
			err = fmt.Errorf("payload %T", payload)
		}
	} else {
		body, err = json.Marshal(payload)
	}
	if err != nil {
		return nil, fmt.Errorf("cluster: encode %s: %w", t, err)
	}
	if len(body) > MaxCommandBytes {
		return nil, fmt.Errorf("cluster: encode %s: %d bytes, over the limit of %d", t, len(body), MaxCommandBytes)
	}
	out := make([]byte, commandHeaderSize, commandHeaderSize+len(body))
	out[0] = commandVersion
	out[1] = byte(t)
	binary.BigEndian.PutUint32(out[2:], uint32(len(body)))
	return append(out, body...), nil
}

// decodeCommand checks a frame and decodes and validates its payload.
func decodeCommand(b []byte) (commandType, any, error) {
	if len(b) < commandHeaderSize {
		return 0, nil, fmt.Errorf("%w: %d bytes, shorter than the header", ErrBadCommand, len(b))
	}
	if b[0] != commandVersion {
		return 0, nil, fmt.Errorf("%w: version %d, want %d", ErrBadCommand, b[0], commandVersion)
	}
	t := commandType(b[1])
	n := binary.BigEndian.Uint32(b[2:])
	if n > MaxCommandBytes {
		return t, nil, fmt.Errorf("%w: %s: payload of %d bytes, over the limit of %d", ErrBadCommand, t, n, MaxCommandBytes)
	}
	if uint64(len(b)-commandHeaderSize) != uint64(n) {
		return t, nil, fmt.Errorf("%w: %s: payload length %d, but %d bytes follow", ErrBadCommand, t, n, len(b)-commandHeaderSize)
	}
	var v interface{ validate() error }
	if t == cmdCommitOffsetsBin {
		c, err := decodeOffsetsBatch(b[commandHeaderSize:])
		if err == nil {
			err = c.validate()
		}
		if err != nil {
			return t, nil, fmt.Errorf("%w: %s: %w", ErrBadCommand, t, err)
		}
		return t, c, nil
	}
	switch t {
	case cmdUpsertBroker:
		v = new(upsertBrokerCmd)
	case cmdRemoveBroker:
		v = new(removeBrokerCmd)
	case cmdCreateTopic:
		v = new(createTopicCmd)
	case cmdDeleteTopic:
		v = new(deleteTopicCmd)
	case cmdAlterTopic:
		v = new(alterTopicCmd)
	case cmdSetAssignments:
		v = new(setAssignmentsCmd)
	case cmdCommitOffsets:
		v = new(commitOffsetsCmd)
	case cmdDeleteGroup:
		v = new(deleteGroupCmd)
	case cmdCommitOffsetsBatch:
		v = new(commitOffsetsBatchCmd)
	case cmdSetClusterID:
		v = new(setClusterIDCmd)
	default:
		return t, nil, fmt.Errorf("%w: unknown type %d", ErrBadCommand, uint8(t))
	}
	dec := json.NewDecoder(bytes.NewReader(b[commandHeaderSize:]))
	if err := dec.Decode(v); err != nil {
		return t, nil, fmt.Errorf("%w: %s: %w", ErrBadCommand, t, err)
	}
	if dec.More() {
		return t, nil, fmt.Errorf("%w: %s: trailing data after the payload", ErrBadCommand, t)
	}
	if err := v.validate(); err != nil {
		return t, nil, fmt.Errorf("%w: %s: %w", ErrBadCommand, t, err)
	}
	return t, v, nil
}

func validBrokerID(id int32) error {
	if id < 0 {
		return fmt.Errorf("broker id %d is negative", id)
	}
	return nil
}

func validReplicas(reps []int32) error {
	if len(reps) > MaxReplicationFactor {
		return fmt.Errorf("%d replicas, over the limit of %d", len(reps), MaxReplicationFactor)
	}
	for i, b := range reps {
		if err := validBrokerID(b); err != nil {
			return err
		}
		for _, c := range reps[:i] {
			if c == b {
				return fmt.Errorf("broker %d twice in a replica list", b)
			}
		}
	}
	return nil
}

func (c *upsertBrokerCmd) validate() error {
	if err := validBrokerID(c.Broker.ID); err != nil {
		return err
	}
	switch c.Broker.State {
	case BrokerAlive, BrokerFailed, BrokerLeft:
	default:
		return fmt.Errorf("broker state %q", c.Broker.State)
	}
	return nil
}

func (c *removeBrokerCmd) validate() error { return validBrokerID(c.ID) }

func (c *createTopicCmd) validate() error {
	t := c.Topic
	if err := topic.ValidateName(t.Name); err != nil {
		return err
	}
	if t.ID == "" {
		return errors.New("empty topic id")
	}
	if t.Partitions < 1 || t.Partitions > MaxPartitions {
		return fmt.Errorf("partition count %d", t.Partitions)
	}
	if t.ReplicationFactor < 1 || t.ReplicationFactor > MaxReplicationFactor {
		return fmt.Errorf("replication factor %d", t.ReplicationFactor)
	}
	if len(c.Replicas) != int(t.Partitions) {
		return fmt.Errorf("%d replica lists for %d partitions", len(c.Replicas), t.Partitions)
	}
	for _, r := range c.Replicas {
		if len(r) == 0 {
			return errors.New("empty replica list")
		}
		if err := validReplicas(r); err != nil {
			return err
		}
	}
	return nil
}

func (c *deleteTopicCmd) validate() error { return topic.ValidateName(c.Name) }

func (c *alterTopicCmd) validate() error { return topic.ValidateName(c.Name) }

func (c *setAssignmentsCmd) validate() error {
	if err := topic.ValidateName(c.Topic); err != nil {
		return err
	}
	if len(c.Changes) == 0 || len(c.Changes) > MaxPartitions {
		return fmt.Errorf("%d changes", len(c.Changes))
	}
	for _, ch := range c.Changes {
		if ch.Partition < 0 || ch.Partition >= MaxPartitions {
			return fmt.Errorf("partition %d", ch.Partition)
		}
		if err := validReplicas(ch.Replicas); err != nil {
			return err
		}
	}
	return nil
}

func (c *commitOffsetsCmd) validate() error {
	if c.Group == "" || len(c.Group) > MaxGroupNameBytes {
		return fmt.Errorf("group name of %d bytes", len(c.Group))
	}
	for _, o := range c.Offsets {
		if err := topic.ValidateName(o.Topic); err != nil {
			return err
		}
		if o.Partition < 0 || o.Offset < 0 || o.Offset == math.MaxInt64 {
			return fmt.Errorf("partition %d offset %d", o.Partition, o.Offset)
		}
		if len(o.Metadata) > MaxOffsetMetadataBytes {
			return fmt.Errorf("metadata of %d bytes", len(o.Metadata))
		}
	}
	return nil
}

func (c *commitOffsetsBatchCmd) validate() error {
	if len(c.Groups) == 0 {
		return errors.New("no groups")
	}
	for _, g := range c.Groups {
		one := commitOffsetsCmd{Group: g.Group, Offsets: g.Offsets}
		if err := one.validate(); err != nil {
			return err
		}
	}
	return nil
}

func (c *deleteGroupCmd) validate() error {
	if c.Group == "" || len(c.Group) > MaxGroupNameBytes {
		return fmt.Errorf("group name of %d bytes", len(c.Group))
	}
	return nil
}

func (c *setClusterIDCmd) validate() error {
	if c.ID == "" || len(c.ID) > 64 {
		return fmt.Errorf("cluster id of %d bytes", len(c.ID))
	}
	return nil
}
