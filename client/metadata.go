package client

import (
	"context"
	"strconv"
	"sync"
	"time"

	runnelv1 "github.com/runnel-io/runnel/proto/runnel/v1"
	"github.com/runnel-io/runnel/topic"
)

// topicMeta is what the producer needs of a topic.
type topicMeta struct {
	partitions int
	// maxBatch is the topic's max.message.bytes: no batch may be larger.
	maxBatch int
}

// metaCache caches topics' partition counts and batch limits (DescribeTopic, on any broker).
// Entries are dropped on UNKNOWN_TOPIC and UNKNOWN_PARTITION so that the next use asks the
// broker again, and when older than the metadata max age.
type metaCache struct {
	c *Client
	// backoff and timeout bound the retries of a lookup that fails with a retriable error
	// (a broker restarting, a connection being re-established).
	backoff, timeout time.Duration
	maxAge           time.Duration

	mu      sync.Mutex
	entries map[string]*metaEntry
}

type metaEntry struct {
	done chan struct{} // closed once meta or err is set
	meta topicMeta
	err  error
	at   time.Time // when meta was looked up
}

func newMetaCache(c *Client) *metaCache {
	return &metaCache{c: c, backoff: c.opts.retryBackoff, timeout: c.opts.deliveryTimeout, maxAge: c.opts.metadataMaxAge, entries: map[string]*metaEntry{}}
}

// get returns topic's metadata, asking the broker (once, for concurrent callers) if it is not
// cached. A failed lookup is not cached.
func (m *metaCache) get(ctx context.Context, name string) (topicMeta, error) {
	m.mu.Lock()
	e := m.entries[name]
	if e != nil && m.maxAge > 0 {
		select {
		case <-e.done:
			if time.Since(e.at) > m.maxAge {
				e = nil // too old: look it up again
			}
		default:
		}
	}
	if e == nil {
		e = &metaEntry{done: make(chan struct{})}
		m.entries[name] = e
		m.mu.Unlock()
		e.meta, e.err = m.lookup(ctx, name)
		e.at = time.Now()
		m.mu.Lock()
		if e.err != nil && m.entries[name] == e {
			delete(m.entries, name)
		}
		close(e.done)
		m.mu.Unlock()
		return e.meta, e.err
	}
	m.mu.Unlock()
	select {
	case <-e.done:
		if e.err != nil {
			// The leader of the lookup failed, perhaps by its own context: try ourselves.
			return m.get(ctx, name)
		}
		return e.meta, nil
	case <-ctx.Done():
		return topicMeta{}, ctx.Err()
	}
}

// lookup asks the broker, retrying retriable errors every backoff for up to timeout (the
// delivery timeout): a producer whose broker restarts must not fail records it would have
// retried had their topic's metadata been cached.
func (m *metaCache) lookup(ctx context.Context, name string) (topicMeta, error) {
	deadline := time.Now().Add(m.timeout)
	var resp *runnelv1.DescribeTopicResponse
	for {
		describe := func(ctx context.Context, bc *brokerConn) error {
			r, err := bc.admin.DescribeTopic(ctx, &runnelv1.DescribeTopicRequest{Name: name})
			resp = r
			return fromRPC(err)
		}
		var answered string
		err := m.c.callAny(ctx, func(ctx context.Context, bc *brokerConn) error {
			answered = bc.addr
			return describe(ctx, bc)
		})
		if hasReason(err, runnelv1.ErrorReason_ERROR_REASON_UNKNOWN_TOPIC) {
			// A broker may learn of a topic a moment after CreateTopic returned: the metadata
			// leader has the last word.
			err = m.c.askMetadataLeader(ctx, answered, err, describe)
		}
		if err == nil {
			break
		}
		if !IsRetriable(err) || ctx.Err() != nil || time.Now().Add(m.backoff).After(deadline) {
			return topicMeta{}, err
		}
		t := time.NewTimer(m.backoff)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return topicMeta{}, err
		}
	}
	tm := topicMeta{partitions: int(resp.GetTopic().GetPartitionCount()), maxBatch: topic.DefaultMaxMessageBytes}
	for _, c := range resp.GetConfigs() {
		if c.GetName() == topic.KeyMaxMessageBytes {
			if v, err := strconv.Atoi(c.GetValue()); err == nil && v > 0 {
				tm.maxBatch = v
			}
		}
	}
	return tm, nil
}

// invalidate drops topic's entry.
func (m *metaCache) invalidate(name string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if e := m.entries[name]; e != nil {
		select {
		case <-e.done:
			delete(m.entries, name)
		default: // a lookup is under way: it is fresh enough
		}
	}
}
