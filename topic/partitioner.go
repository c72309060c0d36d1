package topic

import (
	"math/rand/v2"
	"sync"
)

// Partitioner chooses the partition of each record a producer sends. The SDK calls Partition
// for every record and OnNewBatch whenever the batch it is building for a partition is
// completed (full, or sent after linger).
type Partitioner interface {
	// Partition returns the partition, in [0, numPartitions), of a record of topic with key:
	// by the key (KeyPartition) if key is not nil, else the topic's sticky partition. An
	// empty but non-nil key is a key, as in Kafka (whose null key is Go's nil). It returns -1
	// if numPartitions < 1.
	Partition(topic string, key []byte, numPartitions int) int
	// OnNewBatch says that the batch for partition prev of topic was completed, so that
	// keyless records move to another partition (KIP-480). A stale call, for a partition that
	// is no longer the topic's sticky one, is ignored, so two batches completing together move
	// the topic once.
	OnNewBatch(topic string, prev int)
}

// Murmur2 is Kafka's Utils.murmur2: 32-bit MurmurHash2 with seed 0x9747b28c, returned as the
// same signed int the Java code returns. (Java's ints wrap like Go's uint32 and its tail reads
// bytes as data[i] & 0xff, so unsigned arithmetic gives the same bits.)
func Murmur2(data []byte) int32 {
	const (
		seed uint32 = 0x9747b28c
		m    uint32 = 0x5bd1e995
		r           = 24
	)
	h := seed ^ uint32(len(data))
	b := data
	for len(b) >= 4 {
		k := uint32(b[0]) | uint32(b[1])<<8 | uint32(b[2])<<16 | uint32(b[3])<<24
		k *= m
		k ^= k >> r
		k *= m
		h *= m
		h ^= k
		b = b[4:]
	}
	switch len(b) { // Java's switch falls through from 3 to 1.
	case 3:
		h ^= uint32(b[2]) << 16
		fallthrough
	case 2:
		h ^= uint32(b[1]) << 8
		fallthrough
	case 1:
		h ^= uint32(b[0])
		h *= m
	}
	h ^= h >> 13
	h *= m
	h ^= h >> 15
	return int32(h)
}

// KeyPartition is Kafka's default partitioner for a keyed record:
// toPositive(murmur2(key)) % numPartitions, where toPositive(h) = h & 0x7fffffff. A key lands
// on the same partition number as in Kafka's Java client, franz-go's default, and librdkafka's
// murmur2_random. It returns -1 if numPartitions < 1.
func KeyPartition(key []byte, numPartitions int) int {
	if numPartitions < 1 {
		return -1
	}
	return int(Murmur2(key)&0x7fffffff) % numPartitions
}

// StickyPartitioner is the default Partitioner: keyed records by KeyPartition, keyless records
// by sticky partitioning (KIP-480, Kafka 2.4 to 3.2's default). A topic's keyless records all
// go to one partition, chosen at random, until OnNewBatch reports that partition's batch
// completed; then the next keyless record picks another partition at random (uniformly among
// the others when there is more than one), so batches fill up instead of every partition
// getting a small one.
//
// It is safe for concurrent use. It keeps one small entry per topic it has seen.
type StickyPartitioner struct {
	mu     sync.Mutex
	intN   func(n int) int
	sticky map[string]*stickyState
}

type stickyState struct {
	current int // the sticky partition, or -1 when one is to be chosen
	avoid   int // the partition whose batch completed last, or -1
}

// NewStickyPartitioner returns a StickyPartitioner drawing its random choices from intN, which
// must return a number in [0, n) for n >= 1; nil means math/rand/v2's IntN. intN is called with
// the partitioner's lock held, so it need not be safe for concurrent use itself.
func NewStickyPartitioner(intN func(n int) int) *StickyPartitioner {
	if intN == nil {
		intN = rand.IntN
	}
	return &StickyPartitioner{intN: intN, sticky: make(map[string]*stickyState)}
}

var _ Partitioner = (*StickyPartitioner)(nil)

// Partition implements Partitioner.
func (p *StickyPartitioner) Partition(topic string, key []byte, numPartitions int) int {
	if key != nil || numPartitions < 1 {
		return KeyPartition(key, numPartitions)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	s := p.sticky[topic]
	if s == nil {
		s = &stickyState{current: -1, avoid: -1}
		p.sticky[topic] = s
	}
	if s.current < 0 || s.current >= numPartitions { // a new topic, a completed batch, or fewer partitions
		s.current = p.choose(numPartitions, s.avoid)
	}
	return s.current
}

// choose picks a partition in [0, n) at random, other than avoid when there is another one.
func (p *StickyPartitioner) choose(n, avoid int) int {
	if n == 1 {
		return 0
	}
	if avoid < 0 || avoid >= n {
		return p.intN(n)
	}
	c := p.intN(n - 1) // uniform over the n-1 others: skip over avoid
	if c >= avoid {
		c++
	}
	return c
}

// OnNewBatch implements Partitioner.
func (p *StickyPartitioner) OnNewBatch(topic string, prev int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	s := p.sticky[topic]
	if s == nil || s.current != prev {
		return
	}
	s.current, s.avoid = -1, prev
}
