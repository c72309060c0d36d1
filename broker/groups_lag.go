package broker

import (
	"context"
	"math"
	"time"

	"github.com/runnel-io/runnel/internal/recordbatch"
	"github.com/runnel-io/runnel/partition"
)

// lagSeconds returns the age, in seconds, of the oldest record a group has not consumed in
// p: now minus the timestamp of the record at offset committed (the first after it if
// compaction removed it). 0 when the group is at the end; -1 if it cannot be read.
func lagSeconds(p *partition.Partition, committed int64, now time.Time) float64 {
	if committed >= p.HighWatermark() {
		return 0
	}
	off := max(committed, p.Earliest())
	res, err := p.Fetch(context.Background(), off, partition.FetchOptions{MaxBytes: 1})
	if err != nil {
		return -1
	}
	var dec recordbatch.Decoder
	ts := int64(math.MinInt64)
	rest := res.Batches
	for len(rest) > 0 && ts == math.MinInt64 {
		var b []byte
		if b, rest, err = recordbatch.Next(rest, math.MaxInt32); err != nil {
			return -1
		}
		_ = dec.ForEachRecord(b, func(r *recordbatch.Record) error {
			if ts == math.MinInt64 && r.Offset >= off {
				ts = r.Timestamp
			}
			return nil
		})
	}
	if ts == math.MinInt64 {
		return -1
	}
	return max(0, now.Sub(time.UnixMilli(ts)).Seconds())
}
