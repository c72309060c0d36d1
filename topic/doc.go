// Package topic holds the pure, I/O-free logic of a Runnel topic: what a valid topic name is,
// the per-topic configuration (Kafka's keys, defaults and meanings, mapped onto the commitlog's
// options), and how a producer chooses a record's partition the way Kafka's clients do.
//
// Nothing here touches the disk, the network or a clock, and nothing starts a goroutine: the
// broker (storing topics and their partitions under <data-dir>/topics/<topic>/<partition>/),
// the gRPC API and the SDK build on it.
//
// # Names
//
// ValidateName accepts what Kafka accepts: 1 to 249 characters from [a-zA-Z0-9._-], except "."
// and "..". A name becomes a directory name, so this is also what keeps a topic inside the data
// directory. CollidesWith reports names that differ only by '.' versus '_', which Kafka's
// metrics cannot tell apart; the broker refuses to create a topic that collides with an
// existing one.
//
// # Configs
//
// Config is the typed form of a topic's configs, keyed by Kafka's names (retention.ms,
// retention.bytes, segment.bytes, segment.ms, max.message.bytes, cleanup.policy,
// min.insync.replicas) with Kafka's defaults, except where the doc of the key says otherwise.
// ParseConfig and Config.Apply (alter-config) validate every value and refuse unknown keys;
// Config.Map is their inverse. Config.LogOptions turns a Config into commitlog.Options.
//
// # Partitioning
//
// A record with a key goes to KeyPartition(key, n) = (murmur2(key) & 0x7fffffff) % n, exactly
// Kafka's default partitioner, so a key lands on the same partition number as it would in
// Kafka (and in franz-go and the Java client). A record without a key (a nil key) goes to the
// topic's sticky partition (KIP-480): the same partition until the batch being built for it is
// completed, then another one at random. StickyPartitioner implements both behind the
// Partitioner interface the SDK uses.
package topic
