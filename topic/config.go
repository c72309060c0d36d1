package topic

import (
	"errors"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/runnel-io/runnel/commitlog"
)

// Config keys: Kafka's topic-level config names.
const (
	KeyRetentionMS       = "retention.ms"
	KeyRetentionBytes    = "retention.bytes"
	KeySegmentBytes      = "segment.bytes"
	KeySegmentMS         = "segment.ms"
	KeyMaxMessageBytes   = "max.message.bytes"
	KeyCleanupPolicy     = "cleanup.policy"
	KeyMinInsyncReplicas = "min.insync.replicas"
)

// Defaults, as in Kafka except DefaultMaxMessageBytes (see there).
const (
	DefaultRetentionMS       = 7 * 24 * 60 * 60 * 1000 // 604800000: 7 days
	DefaultRetentionBytes    = -1                      // no limit
	DefaultSegmentBytes      = 1 << 30                 // 1 GiB, = commitlog.DefaultSegmentBytes
	DefaultSegmentMS         = 7 * 24 * 60 * 60 * 1000 // 604800000: 7 days
	DefaultMaxMessageBytes   = 1 << 20                 // 1 MiB: Kafka says 1048588 (1 MiB + 12 bytes of legacy log overhead)
	DefaultCleanupPolicy     = CleanupDelete
	DefaultMinInsyncReplicas = 1
)

// Limits that differ from Kafka's, because the commitlog underneath has its own.
const (
	// MinSegmentBytes is the smallest segment.bytes: the commitlog's smallest segment (4096).
	// Kafka's minimum (14, its legacy record overhead) would mean a roll after every batch.
	MinSegmentBytes = 4096
	// MaxSegmentBytes is the largest segment.bytes, Kafka's (2^31-1) and the commitlog's,
	// whose index holds positions in 32 bits.
	MaxSegmentBytes = commitlog.MaxSegmentBytes
	// MinMaxMessageBytes is the smallest max.message.bytes: the commitlog's smallest batch
	// cap (64). Kafka accepts 0, but a RecordBatch header alone is 61 bytes.
	MinMaxMessageBytes = 64
	// MaxMaxMessageBytes is the largest max.message.bytes: 16 MiB, the limit the gRPC API
	// documents (proto/runnel/v1/admin.proto), well under its 64 MiB request cap. Kafka allows
	// 2^31-1; the commitlog itself takes batches up to 1 GiB.
	MaxMaxMessageBytes = 16 << 20
)

// CleanupPolicy is the value of cleanup.policy.
type CleanupPolicy string

// CleanupDelete deletes old segments by retention.ms and retention.bytes. It is the only
// policy supported: "compact" (and "compact,delete") is refused until log compaction exists.
const CleanupDelete CleanupPolicy = "delete"

// Config is a topic's configuration. Fields use Kafka's units (milliseconds, bytes) so that a
// value reads the same as in Kafka; the zero Config is not valid: start from DefaultConfig or
// ParseConfig.
type Config struct {
	// RetentionMS (retention.ms): delete a sealed segment once its newest record is older than
	// this many milliseconds. -1: no limit; 0: delete every sealed segment. Default 7 days.
	// Any value up to 2^63-1 is accepted, as in Kafka; one beyond what a time.Duration holds
	// (about 292 years) means no limit.
	RetentionMS int64
	// RetentionBytes (retention.bytes): delete the oldest segments while the partition
	// without them still holds at least this many bytes. -1 (the default): no limit.
	RetentionBytes int64
	// SegmentBytes (segment.bytes): roll the active segment once it holds this many bytes.
	// MinSegmentBytes to MaxSegmentBytes; default 1 GiB.
	SegmentBytes int64
	// SegmentMS (segment.ms): roll a non-empty active segment this many milliseconds after it
	// was created, so that time-based retention can delete it. At least 1; default 7 days.
	SegmentMS int64
	// MaxMessageBytes (max.message.bytes): the largest record batch the broker accepts for
	// the topic, as the producer sent it (compressed). MinMaxMessageBytes to
	// MaxMaxMessageBytes; default 1 MiB.
	MaxMessageBytes int
	// CleanupPolicy (cleanup.policy): only CleanupDelete, the default.
	CleanupPolicy CleanupPolicy
	// MinInsyncReplicas (min.insync.replicas): with acks=all, a write succeeds only while at
	// least this many replicas are in sync. At least 1 and at most the replication factor
	// (see CheckReplicationFactor); default 1.
	MinInsyncReplicas int
}

// ErrInvalidConfig is wrapped by every error about a config key or value (see ConfigError).
var ErrInvalidConfig = errors.New("topic: invalid config")

// ErrInvalidReplicationFactor is wrapped by CheckReplicationFactor's error for a replication
// factor below 1.
var ErrInvalidReplicationFactor = errors.New("topic: invalid replication factor")

// ConfigError describes one invalid config key or value. It wraps ErrInvalidConfig, and also
// errors.ErrUnsupported when the value is valid in Kafka but not supported by Runnel yet
// (cleanup.policy=compact). When several keys are wrong, the error returned holds one
// ConfigError per key (errors.As finds the first, in key order).
type ConfigError struct {
	Key    string // the config key, as given
	Value  string // the value, as given ("" for an unknown key or a delete)
	Reason string // what is wrong with it

	unsupported bool
	hasValue    bool
}

func (e *ConfigError) Error() string { return ErrInvalidConfig.Error() + ": " + e.detail() }

func (e *ConfigError) detail() string {
	if e.hasValue {
		return fmt.Sprintf("%s=%s: %s", e.Key, shortQuote(e.Value), e.Reason)
	}
	return fmt.Sprintf("%s: %s", shortQuote(e.Key), e.Reason)
}

// Unwrap returns ErrInvalidConfig, and errors.ErrUnsupported for a value Kafka accepts but
// Runnel does not support yet.
func (e *ConfigError) Unwrap() []error {
	if e.unsupported {
		return []error{ErrInvalidConfig, errors.ErrUnsupported}
	}
	return []error{ErrInvalidConfig}
}

// configErrors is more than one ConfigError, in key order, reported as one line.
type configErrors []*ConfigError

func (es configErrors) Error() string {
	parts := make([]string, len(es))
	for i, e := range es {
		parts[i] = e.detail()
	}
	return ErrInvalidConfig.Error() + ": " + strings.Join(parts, "; ")
}

func (es configErrors) Unwrap() []error {
	errs := make([]error, len(es))
	for i, e := range es {
		errs[i] = e
	}
	return errs
}

func joinConfigErrors(es []*ConfigError) error {
	switch len(es) {
	case 0:
		return nil
	case 1:
		return es[0]
	}
	return configErrors(es)
}

// configKey is one known key: how to parse a value into a Config and format it back.
type configKey struct {
	name   string
	parse  func(c *Config, v string) *ConfigError // v as given; the error has Reason set
	format func(c *Config) string
}

// intKey describes an integer key whose valid values are [lo, hi].
func intKey(name string, lo, hi int64, valid string, get func(*Config) int64, set func(*Config, int64)) configKey {
	return configKey{
		name: name,
		parse: func(c *Config, v string) *ConfigError {
			n, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
			switch {
			case err != nil && errors.Is(err, strconv.ErrRange):
				return &ConfigError{Reason: "out of range (valid: " + valid + ")"}
			case err != nil:
				return &ConfigError{Reason: "not an integer (valid: " + valid + ")"}
			case n < lo:
				return &ConfigError{Reason: fmt.Sprintf("below the minimum %d (valid: %s)", lo, valid)}
			case n > hi:
				return &ConfigError{Reason: fmt.Sprintf("above the maximum %d (valid: %s)", hi, valid)}
			}
			set(c, n)
			return nil
		},
		format: func(c *Config) string { return strconv.FormatInt(get(c), 10) },
	}
}

// configKeys are the known keys, sorted by name.
var configKeys = []configKey{
	{
		name: KeyCleanupPolicy,
		parse: func(c *Config, v string) *ConfigError {
			// Kafka's type is a comma-separated list of "delete" and "compact".
			seen := false
			for item := range strings.SplitSeq(v, ",") {
				switch strings.TrimSpace(item) {
				case string(CleanupDelete):
					seen = true
				case "compact":
					return &ConfigError{Reason: `log compaction is not supported yet (the only policy is "delete")`, unsupported: true}
				case "":
				default:
					return &ConfigError{Reason: `unknown cleanup policy (the only valid one is "delete", "compact" is not supported yet)`}
				}
			}
			if !seen {
				return &ConfigError{Reason: `empty policy (valid: "delete")`}
			}
			c.CleanupPolicy = CleanupDelete
			return nil
		},
		format: func(c *Config) string { return string(c.CleanupPolicy) },
	},
	intKey(KeyMaxMessageBytes, MinMaxMessageBytes, MaxMaxMessageBytes,
		fmt.Sprintf("%d to %d bytes", MinMaxMessageBytes, MaxMaxMessageBytes),
		func(c *Config) int64 { return int64(c.MaxMessageBytes) },
		func(c *Config, n int64) { c.MaxMessageBytes = int(n) }),
	intKey(KeyMinInsyncReplicas, 1, math.MaxInt32, "1 to the replication factor",
		func(c *Config) int64 { return int64(c.MinInsyncReplicas) },
		func(c *Config, n int64) { c.MinInsyncReplicas = int(n) }),
	intKey(KeyRetentionBytes, -1, math.MaxInt64, "-1 for no limit, or a number of bytes >= 0",
		func(c *Config) int64 { return c.RetentionBytes },
		func(c *Config, n int64) { c.RetentionBytes = n }),
	intKey(KeyRetentionMS, -1, math.MaxInt64, "-1 for no limit, or a number of milliseconds >= 0",
		func(c *Config) int64 { return c.RetentionMS },
		func(c *Config, n int64) { c.RetentionMS = n }),
	intKey(KeySegmentBytes, MinSegmentBytes, MaxSegmentBytes,
		fmt.Sprintf("%d (the commitlog's smallest segment) to %d bytes", MinSegmentBytes, MaxSegmentBytes),
		func(c *Config) int64 { return c.SegmentBytes },
		func(c *Config, n int64) { c.SegmentBytes = n }),
	intKey(KeySegmentMS, 1, math.MaxInt64, "a number of milliseconds >= 1",
		func(c *Config) int64 { return c.SegmentMS },
		func(c *Config, n int64) { c.SegmentMS = n }),
}

func lookupKey(name string) (configKey, bool) {
	i, ok := slices.BinarySearchFunc(configKeys, name, func(k configKey, name string) int { return strings.Compare(k.name, name) })
	if !ok {
		return configKey{}, false
	}
	return configKeys[i], true
}

// brokerAliases maps Kafka's broker-level names (and near misses) of the topic keys to them,
// for the hint in an unknown-key error.
var brokerAliases = map[string]string{
	"log.retention.ms":        KeyRetentionMS,
	"log.retention.bytes":     KeyRetentionBytes,
	"log.segment.bytes":       KeySegmentBytes,
	"log.roll.ms":             KeySegmentMS,
	"message.max.bytes":       KeyMaxMessageBytes,
	"log.cleanup.policy":      KeyCleanupPolicy,
	"min.insync.replica":      KeyMinInsyncReplicas,
	"max.message.byte":        KeyMaxMessageBytes,
	"retention.hours":         KeyRetentionMS,
	"log.retention.hours":     KeyRetentionMS,
	"log.retention.minutes":   KeyRetentionMS,
	"retention.minutes":       KeyRetentionMS,
	"max.request.size":        KeyMaxMessageBytes,
	"segment.size":            KeySegmentBytes,
	"log.segment.ms":          KeySegmentMS,
	"log.min.insync.replicas": KeyMinInsyncReplicas,
}

func unknownKey(name string) *ConfigError {
	reason := "unknown config key (known: " + strings.Join(Keys(), ", ") + ")"
	norm := strings.NewReplacer("_", ".", "-", ".").Replace(strings.ToLower(strings.TrimSpace(name)))
	hint, ok := brokerAliases[norm]
	if _, known := lookupKey(norm); known {
		hint, ok = norm, true
	}
	if ok {
		reason = fmt.Sprintf("unknown config key, did you mean %q? (known: %s)", hint, strings.Join(Keys(), ", "))
	}
	return &ConfigError{Key: name, Reason: reason}
}

// Keys returns the known config keys, sorted.
func Keys() []string {
	keys := make([]string, len(configKeys))
	for i, k := range configKeys {
		keys[i] = k.name
	}
	return keys
}

// DefaultConfig returns the default topic config.
func DefaultConfig() Config {
	return Config{
		RetentionMS:       DefaultRetentionMS,
		RetentionBytes:    DefaultRetentionBytes,
		SegmentBytes:      DefaultSegmentBytes,
		SegmentMS:         DefaultSegmentMS,
		MaxMessageBytes:   DefaultMaxMessageBytes,
		CleanupPolicy:     DefaultCleanupPolicy,
		MinInsyncReplicas: DefaultMinInsyncReplicas,
	}
}

// ParseConfig returns the default config with the given keys set, as a create-topic request or
// the CLI's -c key=value gives them. Keys are Kafka's names, case-sensitive. Integer values are
// decimal, surrounding white space ignored (as Kafka does). Every key is checked: an unknown
// key, a value that is not an integer, or one out of range is an error wrapping
// ErrInvalidConfig that names the key and the value (all of them, in key order, if several are
// wrong; see ConfigError).
//
// The replication-dependent check of min.insync.replicas is CheckReplicationFactor's.
func ParseConfig(m map[string]string) (Config, error) {
	c := DefaultConfig()
	if errs := c.set(m); len(errs) > 0 {
		return Config{}, joinConfigErrors(errs)
	}
	return c, nil
}

// set parses m into c, in key order, and returns every problem.
func (c *Config) set(m map[string]string) []*ConfigError {
	var errs []*ConfigError
	for _, name := range sortedKeys(m) {
		v := m[name]
		k, ok := lookupKey(name)
		if !ok {
			errs = append(errs, unknownKey(name))
			continue
		}
		if strings.TrimSpace(v) == "" {
			errs = append(errs, &ConfigError{Key: name, Value: v, hasValue: true,
				Reason: "empty value (to restore the default, delete the key)"})
			continue
		}
		if e := k.parse(c, v); e != nil {
			e.Key, e.Value, e.hasValue = name, v, true
			errs = append(errs, e)
		}
	}
	return errs
}

func sortedKeys(m map[string]string) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

// Map returns every key with its value in canonical form: ParseConfig(c.Map()) == c for a
// valid c.
func (c Config) Map() map[string]string {
	m := make(map[string]string, len(configKeys))
	for _, k := range configKeys {
		m[k.name] = k.format(&c)
	}
	return m
}

// Validate checks a Config built by hand (ParseConfig and Apply only return valid ones).
func (c Config) Validate() error {
	got, err := ParseConfig(c.Map())
	if err != nil {
		return err
	}
	// A non-canonical spelling, such as CleanupPolicy " delete", parses but does not round-trip.
	var errs []*ConfigError
	for _, k := range configKeys {
		if have, want := k.format(&c), k.format(&got); have != want {
			errs = append(errs, &ConfigError{Key: k.name, Value: have, hasValue: true, Reason: fmt.Sprintf("not in canonical form (%q)", want)})
		}
	}
	return joinConfigErrors(errs)
}

// Apply returns c altered as an alter-config request asks: each key in changes set to its
// value, each key in deletes restored to its default. Every key and value is checked as in
// ParseConfig; a key both set and deleted, or an unknown key to delete, is an error too. On
// error, Apply returns c unchanged, so cfg, err = cfg.Apply(...) keeps cfg.
func (c Config) Apply(changes map[string]string, deletes []string) (Config, error) {
	out := c
	def := DefaultConfig()
	var errs []*ConfigError
	seen := make(map[string]bool, len(deletes))
	for _, name := range slices.Sorted(slices.Values(deletes)) {
		if seen[name] {
			continue
		}
		seen[name] = true
		k, ok := lookupKey(name)
		switch {
		case !ok:
			errs = append(errs, unknownKey(name))
		case hasKey(changes, name):
			errs = append(errs, &ConfigError{Key: name, Reason: "both set and deleted in one request"})
		default:
			if e := k.parse(&out, k.format(&def)); e != nil {
				panic("topic: a default does not parse: " + e.Reason)
			}
		}
	}
	errs = append(errs, out.set(changes)...)
	if len(errs) > 0 {
		slices.SortStableFunc(errs, func(a, b *ConfigError) int { return strings.Compare(a.Key, b.Key) })
		return c, joinConfigErrors(errs)
	}
	return out, nil
}

func hasKey(m map[string]string, k string) bool {
	_, ok := m[k]
	return ok
}

// CheckReplicationFactor checks the config against the topic's replication factor: the
// factor must be at least 1 (ErrInvalidReplicationFactor), and min.insync.replicas must not
// exceed it, or no acks=all write could ever succeed (a ConfigError for min.insync.replicas).
// The broker calls it on create, and on alter-config with the topic's current factor.
func (c Config) CheckReplicationFactor(replicationFactor int) error {
	if replicationFactor < 1 {
		return fmt.Errorf("%w: %d (must be at least 1)", ErrInvalidReplicationFactor, replicationFactor)
	}
	if c.MinInsyncReplicas > replicationFactor {
		return &ConfigError{
			Key: KeyMinInsyncReplicas, Value: strconv.Itoa(c.MinInsyncReplicas), hasValue: true,
			Reason: fmt.Sprintf("exceeds the replication factor %d, so no write with acks=all could succeed", replicationFactor),
		}
	}
	return nil
}

// maxDurationMS is the largest number of milliseconds a time.Duration holds.
const maxDurationMS = math.MaxInt64 / int64(time.Millisecond)

// LogOptions returns base with the fields the topic's config governs set from c (c must be
// valid):
//
//   - SegmentBytes = segment.bytes.
//   - SegmentAge = segment.ms (beyond what a Duration holds, the largest Duration).
//   - RetentionBytes = retention.bytes; -1 stays "no limit". 0 becomes 1, because the
//     commitlog reads 0 as "the default"; the two are the same, since a partition always holds
//     at least its active segment's header.
//   - RetentionAge = retention.ms; -1 stays "no limit", and so does a value beyond what a
//     Duration holds (about 292 years). 0 becomes 1 ns, the same retention (the commitlog
//     compares ages in whole milliseconds) without meaning "the default".
//   - MaxBatchBytes: the broker refuses batches over max.message.bytes itself, so the
//     commitlog's own cap is kept at least that large: base's (or the commitlog default, 8 MiB,
//     if base leaves it zero), raised to max.message.bytes if that is larger.
//
// Everything else (sync policy, filesystem, logger, clock, retention guard) is base's.
func (c Config) LogOptions(base commitlog.Options) commitlog.Options {
	o := base
	o.SegmentBytes = c.SegmentBytes
	o.SegmentAge = msDuration(c.SegmentMS)
	o.RetentionBytes = c.RetentionBytes
	if o.RetentionBytes == 0 {
		o.RetentionBytes = 1
	}
	switch {
	case c.RetentionMS < 0 || c.RetentionMS > maxDurationMS:
		o.RetentionAge = -1
	case c.RetentionMS == 0:
		o.RetentionAge = time.Nanosecond
	default:
		o.RetentionAge = time.Duration(c.RetentionMS) * time.Millisecond
	}
	maxBatch := base.MaxBatchBytes
	if maxBatch == 0 {
		maxBatch = commitlog.DefaultMaxBatchBytes
	}
	o.MaxBatchBytes = max(maxBatch, c.MaxMessageBytes)
	return o
}

// msDuration converts milliseconds to a Duration, saturating at the largest one.
func msDuration(ms int64) time.Duration {
	if ms > maxDurationMS {
		return math.MaxInt64
	}
	return time.Duration(ms) * time.Millisecond
}

// CanonicalOverrides returns, for the keys a topic sets itself, their canonical values in cfg
// (as Map renders them); nil when it sets none.
func CanonicalOverrides(cfg Config, keys []string) map[string]string {
	if len(keys) == 0 {
		return nil
	}
	all := cfg.Map()
	out := make(map[string]string, len(keys))
	for _, k := range keys {
		if v, ok := all[k]; ok {
			out[k] = v
		}
	}
	return out
}
