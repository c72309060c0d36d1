package topic

import (
	"errors"
	"maps"
	"math"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/runnel-io/runnel/commitlog"
)

func TestDefaultConfig(t *testing.T) {
	c := DefaultConfig()
	want := map[string]string{
		"retention.ms":        "604800000",
		"retention.bytes":     "-1",
		"segment.bytes":       "1073741824",
		"segment.ms":          "604800000",
		"max.message.bytes":   "1048576",
		"cleanup.policy":      "delete",
		"min.insync.replicas": "1",
	}
	if got := c.Map(); !maps.Equal(got, want) {
		t.Errorf("DefaultConfig().Map() = %v, want %v", got, want)
	}
	if err := c.Validate(); err != nil {
		t.Errorf("DefaultConfig().Validate() = %v", err)
	}
	if got, err := ParseConfig(nil); err != nil || got != c {
		t.Errorf("ParseConfig(nil) = %+v, %v; want the defaults", got, err)
	}
	if DefaultSegmentBytes != commitlog.DefaultSegmentBytes {
		t.Errorf("DefaultSegmentBytes %d != commitlog's %d", DefaultSegmentBytes, commitlog.DefaultSegmentBytes)
	}
	if time.Duration(DefaultSegmentMS)*time.Millisecond != commitlog.DefaultSegmentAge {
		t.Errorf("DefaultSegmentMS %d != commitlog's %v", DefaultSegmentMS, commitlog.DefaultSegmentAge)
	}
	if got := Keys(); strings.Join(got, ",") != "cleanup.policy,max.message.bytes,min.insync.replicas,retention.bytes,retention.ms,segment.bytes,segment.ms" {
		t.Errorf("Keys() = %v", got)
	}
}

// Every key: good values (with the field they set), bad types, out of range.
func TestParseConfigKeys(t *testing.T) {
	type check func(Config) bool
	for _, tc := range []struct {
		key, value string
		ok         check  // for a valid value: does the Config hold it?
		wantErr    string // for an invalid one: a substring of the error
	}{
		{"retention.ms", "-1", func(c Config) bool { return c.RetentionMS == -1 }, ""},
		{"retention.ms", "0", func(c Config) bool { return c.RetentionMS == 0 }, ""},
		{"retention.ms", "3600000", func(c Config) bool { return c.RetentionMS == 3600000 }, ""},
		{"retention.ms", " 1000 ", func(c Config) bool { return c.RetentionMS == 1000 }, ""},
		{"retention.ms", "+1000", func(c Config) bool { return c.RetentionMS == 1000 }, ""},
		{"retention.ms", "9223372036854775807", func(c Config) bool { return c.RetentionMS == math.MaxInt64 }, ""},
		{"retention.ms", "-2", nil, "below the minimum -1"},
		{"retention.ms", "9223372036854775808", nil, "out of range"},
		{"retention.ms", "7d", nil, "not an integer"},
		{"retention.ms", "1.5", nil, "not an integer"},
		{"retention.ms", "1e3", nil, "not an integer"},
		{"retention.ms", "0x10", nil, "not an integer"},
		{"retention.ms", "", nil, "empty value"},
		{"retention.ms", "  ", nil, "empty value"},

		{"retention.bytes", "-1", func(c Config) bool { return c.RetentionBytes == -1 }, ""},
		{"retention.bytes", "0", func(c Config) bool { return c.RetentionBytes == 0 }, ""},
		{"retention.bytes", "1073741824000", func(c Config) bool { return c.RetentionBytes == 1073741824000 }, ""},
		{"retention.bytes", "-5", nil, "below the minimum -1"},
		{"retention.bytes", "1GB", nil, "not an integer"},
		{"retention.bytes", "99999999999999999999", nil, "out of range"},

		{"segment.bytes", "4096", func(c Config) bool { return c.SegmentBytes == 4096 }, ""},
		{"segment.bytes", "2147483647", func(c Config) bool { return c.SegmentBytes == math.MaxInt32 }, ""},
		{"segment.bytes", "104857600", func(c Config) bool { return c.SegmentBytes == 100<<20 }, ""},
		{"segment.bytes", "4095", nil, "below the minimum 4096"},
		{"segment.bytes", "14", nil, "below the minimum 4096"},
		{"segment.bytes", "0", nil, "below the minimum 4096"},
		{"segment.bytes", "-1", nil, "below the minimum 4096"},
		{"segment.bytes", "2147483648", nil, "above the maximum 2147483647"},
		{"segment.bytes", "1 GiB", nil, "not an integer"},

		{"segment.ms", "1", func(c Config) bool { return c.SegmentMS == 1 }, ""},
		{"segment.ms", "3600000", func(c Config) bool { return c.SegmentMS == 3600000 }, ""},
		{"segment.ms", "9223372036854775807", func(c Config) bool { return c.SegmentMS == math.MaxInt64 }, ""},
		{"segment.ms", "0", nil, "below the minimum 1"},
		{"segment.ms", "-1", nil, "below the minimum 1"},
		{"segment.ms", "1h", nil, "not an integer"},

		{"max.message.bytes", "64", func(c Config) bool { return c.MaxMessageBytes == 64 }, ""},
		{"max.message.bytes", "1048588", func(c Config) bool { return c.MaxMessageBytes == 1048588 }, ""},
		{"max.message.bytes", "16777216", func(c Config) bool { return c.MaxMessageBytes == 16<<20 }, ""},
		{"max.message.bytes", "63", nil, "below the minimum 64"},
		{"max.message.bytes", "0", nil, "below the minimum 64"},
		{"max.message.bytes", "16777217", nil, "above the maximum 16777216"},
		{"max.message.bytes", "2147483647", nil, "above the maximum 16777216"},
		{"max.message.bytes", "big", nil, "not an integer"},

		{"cleanup.policy", "delete", func(c Config) bool { return c.CleanupPolicy == CleanupDelete }, ""},
		{"cleanup.policy", " delete ", func(c Config) bool { return c.CleanupPolicy == CleanupDelete }, ""},
		{"cleanup.policy", "compact", nil, "log compaction is not supported yet"},
		{"cleanup.policy", "compact,delete", nil, "log compaction is not supported yet"},
		{"cleanup.policy", "delete, compact", nil, "log compaction is not supported yet"},
		{"cleanup.policy", "Delete", nil, "unknown cleanup policy"},
		{"cleanup.policy", "remove", nil, "unknown cleanup policy"},
		{"cleanup.policy", ",", nil, "empty policy"},
		{"cleanup.policy", "1", nil, "unknown cleanup policy"},

		{"min.insync.replicas", "1", func(c Config) bool { return c.MinInsyncReplicas == 1 }, ""},
		{"min.insync.replicas", "2", func(c Config) bool { return c.MinInsyncReplicas == 2 }, ""},
		{"min.insync.replicas", "2147483647", func(c Config) bool { return c.MinInsyncReplicas == math.MaxInt32 }, ""},
		{"min.insync.replicas", "0", nil, "below the minimum 1"},
		{"min.insync.replicas", "-1", nil, "below the minimum 1"},
		{"min.insync.replicas", "2147483648", nil, "above the maximum 2147483647"},
		{"min.insync.replicas", "two", nil, "not an integer"},
	} {
		t.Run(tc.key+"="+tc.value, func(t *testing.T) {
			c, err := ParseConfig(map[string]string{tc.key: tc.value})
			if tc.ok != nil {
				if err != nil {
					t.Fatalf("ParseConfig = %v", err)
				}
				if !tc.ok(c) {
					t.Fatalf("ParseConfig gave %+v", c)
				}
				// The other keys keep their defaults.
				want := DefaultConfig().Map()
				want[tc.key] = c.Map()[tc.key]
				if got := c.Map(); !maps.Equal(got, want) {
					t.Errorf("Map() = %v, want %v", got, want)
				}
				roundTrip(t, c)
				return
			}
			if err == nil {
				t.Fatalf("ParseConfig accepted %s=%q: %+v", tc.key, tc.value, c)
			}
			if c != (Config{}) {
				t.Errorf("ParseConfig returned %+v with its error", c)
			}
			checkConfigError(t, err, tc.key, tc.value, tc.wantErr)
		})
	}
}

// checkConfigError checks that err wraps ErrInvalidConfig, is a *ConfigError for key, and
// names the key, the value and the reason.
func checkConfigError(t *testing.T, err error, key, value, reason string) {
	t.Helper()
	if !errors.Is(err, ErrInvalidConfig) {
		t.Errorf("error %v does not wrap ErrInvalidConfig", err)
	}
	var ce *ConfigError
	if !errors.As(err, &ce) {
		t.Fatalf("error %v is not a *ConfigError", err)
	}
	if ce.Key != key || ce.Value != value {
		t.Errorf("ConfigError{Key: %q, Value: %q}, want %q, %q", ce.Key, ce.Value, key, value)
	}
	if strings.Contains(ce.Reason, ";") {
		t.Errorf("reason %q holds the separator of several errors", ce.Reason)
	}
	msg := err.Error()
	for _, want := range []string{key, strconv.Quote(value), reason} {
		if !strings.Contains(msg, want) {
			t.Errorf("error %q does not contain %q", msg, want)
		}
	}
	if strings.Contains(msg, "\n") {
		t.Errorf("error %q is not one line", msg)
	}
}

func roundTrip(t *testing.T, c Config) {
	t.Helper()
	back, err := ParseConfig(c.Map())
	if err != nil || back != c {
		t.Errorf("ParseConfig(%v) = %+v, %v; want %+v", c.Map(), back, err, c)
	}
	if err := c.Validate(); err != nil {
		t.Errorf("Validate(%+v) = %v", c, err)
	}
}

func TestParseConfigCompactIsUnsupported(t *testing.T) {
	_, err := ParseConfig(map[string]string{"cleanup.policy": "compact"})
	if !errors.Is(err, errors.ErrUnsupported) || !errors.Is(err, ErrInvalidConfig) {
		t.Errorf("error %v should wrap errors.ErrUnsupported and ErrInvalidConfig", err)
	}
	_, err = ParseConfig(map[string]string{"cleanup.policy": "remove"})
	if errors.Is(err, errors.ErrUnsupported) {
		t.Errorf("an unknown policy %v should not be ErrUnsupported", err)
	}
}

func TestParseConfigUnknownKeys(t *testing.T) {
	for _, tc := range []struct{ key, hint string }{
		{"retention", ""},
		{"compression.type", ""}, // a Kafka topic config Runnel does not have
		{"Retention.ms", `did you mean "retention.ms"?`},
		{"retention_ms", `did you mean "retention.ms"?`},
		{"retention-bytes", `did you mean "retention.bytes"?`},
		{"log.retention.ms", `did you mean "retention.ms"?`},
		{"log.roll.ms", `did you mean "segment.ms"?`},
		{"message.max.bytes", `did you mean "max.message.bytes"?`},
		{"log.segment.bytes", `did you mean "segment.bytes"?`},
		{" segment.ms", `did you mean "segment.ms"?`},
		{"", ""},
	} {
		_, err := ParseConfig(map[string]string{tc.key: "1"})
		if err == nil {
			t.Fatalf("ParseConfig accepted the unknown key %q", tc.key)
		}
		if !errors.Is(err, ErrInvalidConfig) {
			t.Errorf("error %v does not wrap ErrInvalidConfig", err)
		}
		var ce *ConfigError
		if !errors.As(err, &ce) || ce.Key != tc.key {
			t.Errorf("error %v: want a ConfigError for key %q", err, tc.key)
		}
		msg := err.Error()
		if !strings.Contains(msg, "unknown config key") || !strings.Contains(msg, strconv.Quote(tc.key)) || !strings.Contains(msg, "retention.ms, segment.bytes") {
			t.Errorf("error %q should name the key and list the known keys", msg)
		}
		if tc.hint != "" && !strings.Contains(msg, tc.hint) {
			t.Errorf("error %q should contain %q", msg, tc.hint)
		}
		if tc.hint == "" && strings.Contains(msg, "did you mean") {
			t.Errorf("error %q has a hint for %q", msg, tc.key)
		}
	}
}

// Several problems are all reported, in key order, in one line.
func TestParseConfigSeveralErrors(t *testing.T) {
	_, err := ParseConfig(map[string]string{
		"segment.ms":      "0",
		"retention.ms":    "abc",
		"bogus":           "1",
		"retention.bytes": "100",
	})
	if err == nil {
		t.Fatal("ParseConfig accepted three bad keys")
	}
	msg := err.Error()
	want := `topic: invalid config: "bogus": unknown config key`
	if !strings.HasPrefix(msg, want) {
		t.Errorf("error %q does not start with %q", msg, want)
	}
	i, j := strings.Index(msg, `retention.ms="abc": not an integer`), strings.Index(msg, `segment.ms="0": below the minimum 1`)
	if i < 0 || j < 0 || i > j || strings.Contains(msg, "\n") || strings.Count(msg, "topic: invalid config") != 1 {
		t.Errorf("error %q should report retention.ms then segment.ms on one line", msg)
	}
	var ce *ConfigError
	if !errors.As(err, &ce) || ce.Key != "bogus" {
		t.Errorf("errors.As found %v, want the first (bogus)", ce)
	}
	if !errors.Is(err, ErrInvalidConfig) || errors.Is(err, errors.ErrUnsupported) {
		t.Errorf("error %v: wrong wrapping", err)
	}
}

func TestConfigRoundTrip(t *testing.T) {
	in := map[string]string{
		"retention.ms":        "86400000",
		"retention.bytes":     "0",
		"segment.bytes":       "16777216",
		"segment.ms":          "3600000",
		"max.message.bytes":   "2097152",
		"cleanup.policy":      "delete",
		"min.insync.replicas": "2",
	}
	c, err := ParseConfig(in)
	if err != nil {
		t.Fatal(err)
	}
	want := Config{RetentionMS: 86400000, RetentionBytes: 0, SegmentBytes: 16 << 20, SegmentMS: 3600000, MaxMessageBytes: 2 << 20, CleanupPolicy: CleanupDelete, MinInsyncReplicas: 2}
	if c != want {
		t.Errorf("ParseConfig = %+v, want %+v", c, want)
	}
	if got := c.Map(); !maps.Equal(got, in) {
		t.Errorf("Map() = %v, want %v", got, in)
	}
	roundTrip(t, c)

	// Non-canonical input round-trips to the canonical form.
	c, err = ParseConfig(map[string]string{"retention.ms": " +0042", "cleanup.policy": "delete,delete"})
	if err != nil {
		t.Fatal(err)
	}
	if m := c.Map(); m["retention.ms"] != "42" || m["cleanup.policy"] != "delete" {
		t.Errorf("Map() = %v, want canonical values", m)
	}
}

func TestConfigValidate(t *testing.T) {
	if err := (Config{}).Validate(); err == nil {
		t.Error("the zero Config is valid")
	}
	c := DefaultConfig()
	c.SegmentBytes = 100
	if err := c.Validate(); err == nil || !strings.Contains(err.Error(), `segment.bytes="100"`) {
		t.Errorf("Validate = %v, want a segment.bytes error", err)
	}
	c = DefaultConfig()
	c.CleanupPolicy = " delete"
	if err := c.Validate(); err == nil || !strings.Contains(err.Error(), "canonical") {
		t.Errorf("Validate = %v, want a non-canonical cleanup.policy error", err)
	}
	c = DefaultConfig()
	c.CleanupPolicy = "compact"
	if err := c.Validate(); !errors.Is(err, errors.ErrUnsupported) {
		t.Errorf("Validate = %v, want ErrUnsupported", err)
	}
}

func TestConfigApply(t *testing.T) {
	base, err := ParseConfig(map[string]string{"retention.ms": "1000", "segment.bytes": "8192", "min.insync.replicas": "2"})
	if err != nil {
		t.Fatal(err)
	}

	t.Run("set", func(t *testing.T) {
		got, err := base.Apply(map[string]string{"retention.bytes": "1048576", "retention.ms": "-1"}, nil)
		if err != nil {
			t.Fatal(err)
		}
		want := base
		want.RetentionBytes, want.RetentionMS = 1<<20, -1
		if got != want {
			t.Errorf("Apply = %+v, want %+v", got, want)
		}
		roundTrip(t, got)
	})
	t.Run("delete restores the default", func(t *testing.T) {
		got, err := base.Apply(nil, []string{"retention.ms", "segment.bytes"})
		if err != nil {
			t.Fatal(err)
		}
		want := base
		want.RetentionMS, want.SegmentBytes = DefaultRetentionMS, DefaultSegmentBytes
		if got != want {
			t.Errorf("Apply = %+v, want %+v", got, want)
		}
	})
	t.Run("every key deleted is the default config", func(t *testing.T) {
		got, err := base.Apply(nil, append(Keys(), "retention.ms")) // a repeated delete is harmless
		if err != nil || got != DefaultConfig() {
			t.Errorf("Apply = %+v, %v; want the defaults", got, err)
		}
	})
	t.Run("set and delete together", func(t *testing.T) {
		got, err := base.Apply(map[string]string{"segment.ms": "60000"}, []string{"min.insync.replicas"})
		if err != nil {
			t.Fatal(err)
		}
		want := base
		want.SegmentMS, want.MinInsyncReplicas = 60000, 1
		if got != want {
			t.Errorf("Apply = %+v, want %+v", got, want)
		}
	})
	t.Run("nothing", func(t *testing.T) {
		if got, err := base.Apply(nil, nil); err != nil || got != base {
			t.Errorf("Apply(nil, nil) = %+v, %v", got, err)
		}
	})
	for _, tc := range []struct {
		name    string
		changes map[string]string
		deletes []string
		key     string
		want    string
	}{
		{"bad value", map[string]string{"retention.ms": "x"}, nil, "retention.ms", "not an integer"},
		{"out of range", map[string]string{"segment.bytes": "1"}, nil, "segment.bytes", "below the minimum 4096"},
		{"unknown key", map[string]string{"foo": "1"}, nil, "foo", "unknown config key"},
		{"unknown delete", nil, []string{"foo"}, "foo", "unknown config key"},
		{"set and deleted", map[string]string{"segment.ms": "1"}, []string{"segment.ms"}, "segment.ms", "both set and deleted"},
		{"compact", map[string]string{"cleanup.policy": "compact"}, nil, "cleanup.policy", "not supported yet"},
		{"one bad among good", map[string]string{"retention.ms": "5", "max.message.bytes": "1"}, []string{"segment.bytes"}, "max.message.bytes", "below the minimum 64"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := base.Apply(tc.changes, tc.deletes)
			if err == nil {
				t.Fatalf("Apply accepted it: %+v", got)
			}
			if got != base {
				t.Errorf("Apply returned %+v with its error, want the receiver unchanged", got)
			}
			if !errors.Is(err, ErrInvalidConfig) {
				t.Errorf("error %v does not wrap ErrInvalidConfig", err)
			}
			var ce *ConfigError
			if !errors.As(err, &ce) || ce.Key != tc.key || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("Apply error %v, want one about %s: %s", err, tc.key, tc.want)
			}
		})
	}
	t.Run("errors in key order", func(t *testing.T) {
		_, err := base.Apply(map[string]string{"segment.ms": "0"}, []string{"a.unknown"})
		msg := err.Error()
		if i, j := strings.Index(msg, `"a.unknown"`), strings.Index(msg, "segment.ms="); i < 0 || j < i {
			t.Errorf("error %q should report a.unknown, then segment.ms", msg)
		}
	})
}

func TestCheckReplicationFactor(t *testing.T) {
	c := DefaultConfig()
	c.MinInsyncReplicas = 2
	for _, tc := range []struct {
		rf   int
		want error
	}{
		{3, nil},
		{2, nil},
		{1, ErrInvalidConfig},
		{0, ErrInvalidReplicationFactor},
		{-1, ErrInvalidReplicationFactor},
	} {
		err := c.CheckReplicationFactor(tc.rf)
		if tc.want == nil {
			if err != nil {
				t.Errorf("rf %d: %v", tc.rf, err)
			}
			continue
		}
		if !errors.Is(err, tc.want) {
			t.Errorf("rf %d: error %v, want %v", tc.rf, err, tc.want)
		}
	}
	err := c.CheckReplicationFactor(1)
	checkConfigError(t, err, "min.insync.replicas", "2", "exceeds the replication factor 1")
	if err := DefaultConfig().CheckReplicationFactor(1); err != nil {
		t.Errorf("the default config with replication factor 1: %v", err)
	}
}

func TestLogOptions(t *testing.T) {
	base := commitlog.DefaultOptions()
	base.Sync = commitlog.SyncAlways
	base.IndexIntervalBytes = 1

	got := DefaultConfig().LogOptions(base)
	if got.SegmentBytes != commitlog.DefaultSegmentBytes || got.SegmentAge != commitlog.DefaultSegmentAge ||
		got.RetentionBytes != -1 || got.RetentionAge != 7*24*time.Hour || got.MaxBatchBytes != commitlog.DefaultMaxBatchBytes {
		t.Errorf("defaults: %+v", got)
	}
	if got.Sync != commitlog.SyncAlways || got.IndexIntervalBytes != 1 || got.FS == nil || got.Now == nil {
		t.Errorf("the fields the config does not govern changed: %+v", got)
	}
	if err := got.Validate(); err != nil {
		t.Errorf("commitlog refuses the default mapping: %v", err)
	}

	for _, tc := range []struct {
		name      string
		cfg       map[string]string
		baseBatch int
		check     func(o commitlog.Options) bool
	}{
		{"retention.ms", map[string]string{"retention.ms": "90000"}, 0, func(o commitlog.Options) bool { return o.RetentionAge == 90*time.Second }},
		{"retention.ms -1", map[string]string{"retention.ms": "-1"}, 0, func(o commitlog.Options) bool { return o.RetentionAge == -1 }},
		{"retention.ms 0 is not the commitlog default", map[string]string{"retention.ms": "0"}, 0, func(o commitlog.Options) bool {
			return o.RetentionAge > 0 && o.RetentionAge.Milliseconds() == 0
		}},
		{"retention.ms max is no limit", map[string]string{"retention.ms": "9223372036854775807"}, 0, func(o commitlog.Options) bool { return o.RetentionAge == -1 }},
		{"retention.ms largest Duration", map[string]string{"retention.ms": strconv.FormatInt(maxDurationMS, 10)}, 0, func(o commitlog.Options) bool {
			return o.RetentionAge == time.Duration(maxDurationMS)*time.Millisecond
		}},
		{"retention.bytes", map[string]string{"retention.bytes": "5000"}, 0, func(o commitlog.Options) bool { return o.RetentionBytes == 5000 }},
		{"retention.bytes 0 is not the commitlog default", map[string]string{"retention.bytes": "0"}, 0, func(o commitlog.Options) bool { return o.RetentionBytes == 1 }},
		{"segment.bytes", map[string]string{"segment.bytes": "4096"}, 0, func(o commitlog.Options) bool { return o.SegmentBytes == 4096 }},
		{"segment.ms", map[string]string{"segment.ms": "1"}, 0, func(o commitlog.Options) bool { return o.SegmentAge == time.Millisecond }},
		{"segment.ms saturates", map[string]string{"segment.ms": "9223372036854775807"}, 0, func(o commitlog.Options) bool { return o.SegmentAge == math.MaxInt64 }},
		{"small max.message.bytes keeps the commitlog default", map[string]string{"max.message.bytes": "64"}, 0, func(o commitlog.Options) bool {
			return o.MaxBatchBytes == commitlog.DefaultMaxBatchBytes
		}},
		{"small max.message.bytes keeps base's cap", map[string]string{"max.message.bytes": "1000"}, 4096, func(o commitlog.Options) bool { return o.MaxBatchBytes == 4096 }},
		{"large max.message.bytes raises the cap", map[string]string{"max.message.bytes": "16777216"}, 0, func(o commitlog.Options) bool { return o.MaxBatchBytes == 16<<20 }},
		{"largest max.message.bytes", map[string]string{"max.message.bytes": "16777216"}, 4096, func(o commitlog.Options) bool { return o.MaxBatchBytes == 16<<20 }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := ParseConfig(tc.cfg)
			if err != nil {
				t.Fatal(err)
			}
			b := base
			b.MaxBatchBytes = tc.baseBatch
			o := c.LogOptions(b)
			if !tc.check(o) {
				t.Errorf("LogOptions = %+v", o)
			}
			if o.MaxBatchBytes < c.MaxMessageBytes {
				t.Errorf("MaxBatchBytes %d < max.message.bytes %d", o.MaxBatchBytes, c.MaxMessageBytes)
			}
			if err := o.Validate(); err != nil {
				t.Errorf("commitlog refuses it: %v", err)
			}
		})
	}
}

// The extremes of every key together still map to options the commitlog accepts.
func TestLogOptionsExtremesAreValid(t *testing.T) {
	for _, m := range []map[string]string{
		{"retention.ms": "-1", "retention.bytes": "-1", "segment.bytes": "4096", "segment.ms": "1", "max.message.bytes": "64"},
		{"retention.ms": "0", "retention.bytes": "0", "segment.bytes": "2147483647", "segment.ms": "9223372036854775807", "max.message.bytes": "16777216"},
		{"retention.ms": "9223372036854775807", "retention.bytes": "9223372036854775807"},
	} {
		c, err := ParseConfig(m)
		if err != nil {
			t.Fatal(err)
		}
		if err := c.LogOptions(commitlog.Options{}).Validate(); err != nil {
			t.Errorf("%v: %v", m, err)
		}
	}
}

func FuzzParseConfig(f *testing.F) {
	f.Add("retention.ms", "1000", "segment.bytes", "4096")
	f.Add("cleanup.policy", "compact", "max.message.bytes", "-1")
	f.Add("retention.bytes", " -1 ", "retention.bytes", "0")
	f.Add("min.insync.replicas", "99999999999999999999", "", "")
	f.Add("segment.ms", "+1", "cleanup.policy", ", delete,")
	f.Add("log.retention.ms", "x", "max.message.bytes", "16777216")
	f.Fuzz(func(t *testing.T, k1, v1, k2, v2 string) {
		m := map[string]string{k1: v1, k2: v2}
		c, err := ParseConfig(m)
		if err != nil {
			if !errors.Is(err, ErrInvalidConfig) {
				t.Fatalf("error %v does not wrap ErrInvalidConfig", err)
			}
			var ce *ConfigError
			if !errors.As(err, &ce) {
				t.Fatalf("error %v holds no ConfigError", err)
			}
			if _, ok := m[ce.Key]; !ok {
				t.Fatalf("error names key %q, which was not given", ce.Key)
			}
			if c != (Config{}) {
				t.Fatalf("config %+v returned with an error", c)
			}
			// Apply refuses the same input and keeps its receiver.
			d := DefaultConfig()
			if got, err := d.Apply(m, nil); err == nil || got != d {
				t.Fatalf("Apply(%v) = %+v, %v; ParseConfig refused it", m, got, err)
			}
			return
		}
		// Accepted configs round-trip, are valid, and map to valid log options.
		back, err := ParseConfig(c.Map())
		if err != nil || back != c {
			t.Fatalf("round trip of %+v: %+v, %v", c, back, err)
		}
		if err := c.Validate(); err != nil {
			t.Fatalf("Validate(%+v) = %v", c, err)
		}
		if o := c.LogOptions(commitlog.Options{}); o.Validate() != nil || o.MaxBatchBytes < c.MaxMessageBytes {
			t.Fatalf("LogOptions(%+v) = %+v: %v", c, o, o.Validate())
		}
		// Applying the same changes to the defaults gives the same config, and deleting
		// every key gives the defaults back.
		if got, err := DefaultConfig().Apply(m, nil); err != nil || got != c {
			t.Fatalf("Apply(%v) = %+v, %v; want %+v", m, got, err, c)
		}
		if got, err := c.Apply(nil, Keys()); err != nil || got != DefaultConfig() {
			t.Fatalf("deleting every key from %+v: %+v, %v", c, got, err)
		}
	})
}
