package client

import (
	"time"

	"github.com/runnel-io/runnel/internal/recordbatch"
)

// Record is one record, to produce or as consumed.
type Record struct {
	// Topic is the record's topic. Required to produce.
	Topic string
	// Partition is the record's partition. To produce to a given partition, set it and
	// ManualPartition; otherwise the producer chooses (see ManualPartition) and sets it.
	// Consumed records carry their partition.
	Partition int32
	// ManualPartition makes the producer send the record to Partition. When false (the zero
	// value), the producer chooses: a record with a non-nil Key goes to
	// topic.KeyPartition(Key, partitions), Kafka's murmur2 partitioner, so a key lands on the
	// same partition number as with Kafka's clients; keyless records go to the topic's sticky
	// partition (KIP-480), which changes each time a batch is completed.
	ManualPartition bool
	// Key and Value; nil is null, which Kafka distinguishes from empty.
	Key, Value []byte
	// Headers, in order; keys may repeat.
	Headers []Header
	// Timestamp is the record's create time, kept with millisecond precision. Zero means the
	// time of the Produce call (the producer sets the field).
	Timestamp time.Time
	// Offset is the record's offset in its partition: set by the producer once the record is
	// acknowledged (-1 with AcksNone) and on consumed records.
	Offset int64
}

// Header is a record header. A nil Value is null.
type Header struct {
	Key   string
	Value []byte
}

// recordOverhead bounds a record's framing in a batch (length, attributes, timestamp and
// offset deltas, key and value lengths, header count), beyond its keys and values.
const recordOverhead = 5 + 1 + 10 + 5 + 5 + 5 + 5

// encodedSize is an upper estimate of r's size in an uncompressed batch.
func (r *Record) encodedSize() int {
	n := recordOverhead + len(r.Key) + len(r.Value)
	for _, h := range r.Headers {
		n += 10 + len(h.Key) + len(h.Value)
	}
	return n
}

// toBatch converts r for a recordbatch.Builder; hdrs is reused scratch space.
func (r *Record) toBatch(hdrs []recordbatch.RecordHeader) recordbatch.Record {
	hdrs = hdrs[:0]
	for _, h := range r.Headers {
		hdrs = append(hdrs, recordbatch.RecordHeader{Key: h.Key, Value: h.Value})
	}
	return recordbatch.Record{Timestamp: r.Timestamp.UnixMilli(), Key: r.Key, Value: r.Value, Headers: hdrs}
}

// fillFromBatch fills r from a decoded record. With alias, r keeps the decoded record's key,
// value and header slices (their memory must not be reused); otherwise it copies them.
func fillFromBatch(r *Record, topicName string, partition int32, br *recordbatch.Record, alias bool) {
	cp := cloneBytes
	if alias {
		cp = func(b []byte) []byte { return b }
	}
	*r = Record{
		Topic:     topicName,
		Partition: partition,
		Offset:    br.Offset,
		Timestamp: time.UnixMilli(br.Timestamp),
		Key:       cp(br.Key),
		Value:     cp(br.Value),
	}
	if len(br.Headers) > 0 {
		r.Headers = make([]Header, len(br.Headers))
		for i, h := range br.Headers {
			r.Headers[i] = Header{Key: clone(h.Key), Value: cp(h.Value)}
		}
	}
}

// cloneBytes copies b, keeping nil as nil and empty as empty.
func cloneBytes(b []byte) []byte {
	if b == nil {
		return nil
	}
	return append(make([]byte, 0, len(b)), b...)
}

func clone(s string) string { return string(append([]byte(nil), s...)) }
