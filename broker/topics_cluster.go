package broker

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/hashicorp/raft"
	"github.com/runnel-io/runnel/internal/cluster"
	"github.com/runnel-io/runnel/topic"
)

// clusterCallTimeout bounds a metadata change proposed for a client, including the wait for
// this broker to apply it.
const clusterCallTimeout = 15 * time.Second

// clusterMode returns the cluster mode, or ErrRegistryClosed if it is not started (yet) or
// the registry is closed.
func (r *Registry) clusterMode() (*clusterMode, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed || r.cm == nil {
		return nil, ErrRegistryClosed
	}
	return r.cm, nil
}

// createClustered creates a topic through the metadata leader (a follower answers
// NOT_METADATA_LEADER), then waits until this broker has opened its replicas of it.
func (r *Registry) createClustered(req CreateRequest, n, rf int32, cfg topic.Config) (TopicInfo, error) {
	cm, err := r.clusterMode()
	if err != nil {
		return TopicInfo{}, fmt.Errorf("topic %q: %w", req.Name, err)
	}
	r.mu.Lock()
	other, collides := r.byKey[topic.CollisionKey(req.Name)]
	r.mu.Unlock()
	if collides && other != req.Name {
		return TopicInfo{}, fmt.Errorf("topic %q: %w: it collides with topic %q (names that differ only by '.' and '_' are not allowed together)",
			req.Name, ErrTopicExists, other)
	}
	info := TopicInfo{
		Name: req.Name, Partitions: n, ReplicationFactor: rf, Config: cfg,
		Overrides: topic.CanonicalOverrides(cfg, keysOf(req.Configs)),
	}
	if req.ValidateOnly {
		if _, err := cm.cl.Topic(req.Name); err == nil {
			return TopicInfo{}, fmt.Errorf("topic %q: %w", req.Name, ErrTopicExists)
		}
		alive := 0
		if list, err := cm.cl.Brokers(); err == nil {
			for _, b := range list {
				if b.State == cluster.BrokerAlive {
					alive++
				}
			}
		}
		if int(rf) > alive {
			return TopicInfo{}, fmt.Errorf("topic %q: %w: replication factor %d, %d brokers alive", req.Name, ErrReplicationFactorTooLarge, rf, alive)
		}
		return info, nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), clusterCallTimeout)
	defer cancel()
	var t cluster.TopicInfo
	err = duringElection(ctx, func() (err error) {
		t, _, err = cm.cl.CreateTopic(ctx, cluster.TopicSpec{Name: req.Name, Partitions: n, ReplicationFactor: rf, Configs: req.Configs})
		return err
	})
	if err != nil {
		return TopicInfo{}, err
	}
	// Wait (briefly) until this broker has the topic: a client's next call here finds it.
	// Its partitions elect their leaders meanwhile; with hundreds of them that takes longer
	// than a call should wait, and clients retry LEADER_NOT_AVAILABLE.
	wctx, wcancel := context.WithTimeout(ctx, createWait)
	cm.waitSynced(wctx, cm.cl.AppliedIndex())
	wcancel()
	info.ID, info.CreatedAt = t.ID, t.CreatedAt
	r.log.Info().Str("topic", req.Name).Str("topic_id", t.ID).Int32("partitions", n).Int32("replication_factor", rf).Msg("topic created")
	return cloneInfo(info), nil
}

// deleteClustered deletes a topic through the metadata leader; every broker then removes its
// replicas (this one before the call returns).
func (r *Registry) deleteClustered(name string) error {
	cm, err := r.clusterMode()
	if err != nil {
		return fmt.Errorf("topic %q: %w", name, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), clusterCallTimeout)
	defer cancel()
	if err := duringElection(ctx, func() error { return cm.cl.DeleteTopic(ctx, name) }); err != nil {
		return err
	}
	cm.waitSynced(ctx, cm.cl.AppliedIndex())
	r.log.Info().Str("topic", name).Msg("topic deleted")
	return nil
}

// alterClustered changes a topic's configs through the metadata leader; each broker applies
// them to its replicas (this one before the call returns).
func (r *Registry) alterClustered(name string, set map[string]string, del []string) (TopicInfo, []string, error) {
	cm, err := r.clusterMode()
	if err != nil {
		return TopicInfo{}, nil, fmt.Errorf("topic %q: %w", name, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), clusterCallTimeout)
	defer cancel()
	var t cluster.TopicInfo
	err = duringElection(ctx, func() (err error) {
		t, err = cm.cl.AlterTopic(ctx, name, set, del)
		return err
	})
	if err != nil {
		return TopicInfo{}, nil, err
	}
	cm.waitSynced(ctx, cm.cl.AppliedIndex())
	cfg, err := topic.ParseConfig(t.Configs)
	if err != nil {
		return TopicInfo{}, nil, fmt.Errorf("topic %q: %w", name, err)
	}
	info := TopicInfo{Name: t.Name, ID: t.ID, Partitions: t.Partitions, ReplicationFactor: t.ReplicationFactor,
		CreatedAt: t.CreatedAt, Config: cfg, Overrides: topic.CanonicalOverrides(cfg, keysOf(t.Configs))}
	r.log.Info().Str("topic", name).Interface("set", set).Strs("deleted", del).Msg("topic configs altered")
	// Segment and retention settings take effect when replicas reopen, as on a single node.
	return info, nil, nil
}

// Rebalance moves replicas onto the brokers holding the fewest (cluster mode; a single node
// has nothing to move).
func (r *Registry) Rebalance() ([]cluster.Move, error) {
	if !r.clustered {
		return nil, nil
	}
	cm, err := r.clusterMode()
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), clusterCallTimeout)
	defer cancel()
	var moves []cluster.Move
	err = duringElection(ctx, func() (err error) {
		moves, err = cm.cl.Rebalance(ctx)
		return err
	})
	return moves, err
}

// createWait bounds how long CreateTopic waits for this broker to open the new replicas.
const createWait = 3 * time.Second

// electionWait bounds how long a metadata change waits for a metadata leader to be elected
// (a cluster just started, or one whose leader just failed) before answering
// NOT_METADATA_LEADER without an address.
const electionWait = 5 * time.Second

// duringElection runs a metadata change, again while no metadata leader is known, for up to
// electionWait: the caller gets an answer instead of a retry.
func duringElection(ctx context.Context, change func() error) error {
	deadline := time.Now().Add(electionWait)
	for {
		err := change()
		var nl *cluster.NotLeaderError
		// A change cut short by a lost leadership may have been committed: not retried.
		if !errors.As(err, &nl) || nl.LeaderID >= 0 || errors.Is(err, raft.ErrLeadershipLost) || time.Now().After(deadline) {
			return err
		}
		select {
		case <-ctx.Done():
			return err
		case <-time.After(50 * time.Millisecond):
		}
	}
}
