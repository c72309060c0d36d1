package commitlog

import (
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/runnel-io/runnel/internal/vfs"
)

// Benchmarks of the hot paths. Run them with `make bench` or, for one:
//
//	go test -run '^$' -bench 'BenchmarkAppend/' -benchtime 3s ./commitlog
//
// Each append benchmark reports bytes/s (b.SetBytes: batch bytes) and records/s.

func benchLog(b *testing.B, policy SyncPolicy) *Log {
	b.Helper()
	o := DefaultOptions()
	o.Sync = policy
	l, err := Open(b.TempDir(), o)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { l.Close() })
	return l
}

func BenchmarkAppend(b *testing.B) {
	cases := []struct {
		record, batch int
		policy        SyncPolicy
	}{
		{100, 100, SyncNone},
		{1024, 100, SyncNone},
		{1024, 1, SyncNone},
		{1024, 100, SyncAlways},
		{1024, 100, SyncGroup},
	}
	for _, c := range cases {
		name := fmt.Sprintf("record=%s/batch=%d/sync=%s", sizeName(c.record), c.batch, c.policy)
		b.Run(name, func(b *testing.B) {
			l := benchLog(b, c.policy)
			batch := makeBatch(b, c.batch, c.record, "bench", time.Now().UnixMilli())
			b.SetBytes(int64(len(batch)))
			b.ReportAllocs()
			b.ResetTimer()
			start := time.Now()
			for i := 0; i < b.N; i++ {
				if _, err := l.Append(batch); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.N*c.batch)/time.Since(start).Seconds(), "records/s")
		})
	}
}

// BenchmarkAppendConcurrent: appenders each append one 1 KiB record at a time and wait for it
// to be durable (SyncGroup). The group-commit goal compares appenders=16 with appenders=1.
func BenchmarkAppendConcurrent(b *testing.B) {
	for _, n := range []int{1, 16} {
		b.Run(fmt.Sprintf("appenders=%d/sync=group", n), func(b *testing.B) {
			l := benchLog(b, SyncGroup)
			// Each fsync's duration and the time from its end to the next one's start (the
			// appends it woke landing again): the two parts of a group-commit cycle.
			var (
				cycMu     sync.Mutex
				took, gap []time.Duration
				lastEnd   time.Time
			)
			l.onGroupSync = func(d time.Duration) {
				end := time.Now()
				cycMu.Lock()
				if !lastEnd.IsZero() {
					gap = append(gap, end.Sub(lastEnd)-d)
				}
				took, lastEnd = append(took, d), end
				cycMu.Unlock()
			}
			proto := makeBatch(b, 1, 1024, "c", time.Now().UnixMilli())
			b.SetBytes(int64(len(proto)))
			b.ResetTimer()
			start := time.Now()
			var wg sync.WaitGroup
			per := (b.N + n - 1) / n
			for a := 0; a < n; a++ {
				wg.Add(1)
				go func() {
					defer wg.Done()
					batch := append([]byte(nil), proto...)
					for i := 0; i < per; i++ {
						if _, err := l.Append(batch); err != nil {
							b.Error(err)
							return
						}
					}
				}()
			}
			wg.Wait()
			b.ReportMetric(float64(per*n)/time.Since(start).Seconds(), "appends/s")
			// How many appends each fsync made durable: group commit's effect, independent of
			// how fast the disk's fsyncs happen to be during the run.
			b.ReportMetric(float64(per*n)/float64(l.groupSyncs.Load()), "appends/fsync")
			median := func(v []time.Duration) float64 {
				if len(v) == 0 {
					return 0
				}
				slices.Sort(v)
				return float64(v[len(v)/2]) / 1e3
			}
			b.ReportMetric(median(took), "fsync-us")
			b.ReportMetric(median(gap), "gap-us")
		})
	}
}

// BenchmarkRead reads a 1 GiB log of 1 KiB records in batches of 100 from the page cache:
// sequentially with a 1 MiB budget, and one batch at a random offset.
// BenchmarkAppendPaced measures the latency of durable appends arriving at a fixed rate (open
// loop: append i is due at start + i/rate, and its latency counts from then), each waited for
// on its own goroutine, as a broker's produce stream does: one 100-byte record per append,
// SyncGroup. It reports p50/p99 in ms and how many appends each fsync covered. Run it with
// -benchtime Nx (N appends take N/rate seconds).
func BenchmarkAppendPaced(b *testing.B) {
	for _, rate := range []int{5000} {
		b.Run(fmt.Sprintf("rate=%d/sync=group", rate), func(b *testing.B) {
			l := benchLog(b, SyncGroup)
			var (
				syncsMu sync.Mutex
				syncs   []time.Duration // group commit may run two fsyncs at once
			)
			l.onGroupSync = func(d time.Duration) { syncsMu.Lock(); syncs = append(syncs, d); syncsMu.Unlock() }
			proto := makeBatch(b, 1, 100, "p", time.Now().UnixMilli())
			b.SetBytes(int64(len(proto)))
			lat := make([]time.Duration, b.N)
			write := make([]time.Duration, b.N) // the append call alone (written, not durable)
			var wg sync.WaitGroup
			b.ResetTimer()
			start := time.Now()
			for i := range b.N {
				due := start.Add(time.Duration(i) * time.Second / time.Duration(rate))
				sleepUntil(due)
				_, wait, err := l.AppendAsync(append([]byte(nil), proto...))
				if err != nil {
					b.Fatal(err)
				}
				write[i] = time.Since(due)
				wg.Go(func() {
					if err := wait(); err != nil {
						b.Error(err)
					}
					lat[i] = time.Since(due)
				})
			}
			wg.Wait()
			b.StopTimer()
			reportLatencies(b, lat)
			// The fsyncs themselves: an append waits for the one running when it lands and
			// then for its own, so a slow fsync delays every append queued behind it.
			slices.Sort(syncs)
			if n := len(syncs); n > 0 {
				b.ReportMetric(float64(syncs[n*99/100])/1e6, "fsync-p99-ms")
				b.ReportMetric(float64(syncs[n-1])/1e6, "fsync-max-ms")
			}
			slices.Sort(write)
			b.ReportMetric(float64(write[int(0.99*float64(len(write)-1))])/1e6, "write-p99-ms")
			b.ReportMetric(float64(b.N)/float64(l.groupSyncs.Load()), "appends/fsync")
		})
	}
}

func BenchmarkRead(b *testing.B) {
	l := benchLog(b, SyncNone)
	batch := makeBatch(b, 100, 1024, "r", time.Now().UnixMilli())
	const total = 1 << 30
	for l.Size() < total {
		if _, err := l.Append(batch); err != nil {
			b.Fatal(err)
		}
	}
	end := l.EndOffset()
	b.Run("sequential", func(b *testing.B) {
		buf := make([]byte, 0, 2<<20)
		var bytes int64
		off := int64(0)
		b.ResetTimer()
		for i := 0; i < b.N; i++ {
			if off >= end {
				off = 0
			}
			res, err := l.Read(off, ReadOptions{MaxBytes: 1 << 20, Buf: buf})
			if err != nil {
				b.Fatal(err)
			}
			bytes += int64(len(res.Batches))
			off = res.NextOffset
		}
		b.SetBytes(bytes / int64(b.N))
	})
	b.Run("random", func(b *testing.B) {
		rng := rand.New(rand.NewPCG(7, 8))
		buf := make([]byte, 0, 256<<10)
		var bytes int64
		b.ResetTimer()
		for i := 0; i < b.N; i++ {
			res, err := l.Read(rng.Int64N(end), ReadOptions{MaxBytes: 1, Buf: buf})
			if err != nil {
				b.Fatal(err)
			}
			bytes += int64(len(res.Batches))
		}
		b.SetBytes(bytes / int64(b.N))
	})
}

// BenchmarkRecovery opens a log holding 1 GiB after a crash (no clean-shutdown marker). Only
// the tail from the recovery point is scanned: with 128 MiB segments that is the active segment;
// with tail=whole the whole 1 GiB is one active segment, the worst case, scanned and checksummed
// in full. The first iteration also fsyncs what the "dead process" left dirty in the page cache
// (recovery makes what it recovered durable before anyone relies on it): run with -benchtime 1x
// to measure that first open alone, as after a kill -9.
func BenchmarkRecovery(b *testing.B) {
	for _, c := range []struct {
		name string
		seg  int64
	}{{"size=1GiB/segment=128MiB", 128 << 20}, {"size=1GiB/tail=whole", MaxSegmentBytes}} {
		b.Run(c.name, func(b *testing.B) {
			dir := b.TempDir()
			o := DefaultOptions()
			o.Sync = SyncNone
			o.SegmentBytes = c.seg
			l, err := Open(dir, o)
			if err != nil {
				b.Fatal(err)
			}
			batch := makeBatch(b, 100, 1024, "r", time.Now().UnixMilli())
			for l.Size() < 1<<30 {
				if _, err := l.Append(batch); err != nil {
					b.Fatal(err)
				}
			}
			want := l.EndOffset()
			abandonLog(l)
			b.SetBytes(1 << 30)
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				l, err := Open(dir, o)
				if err != nil {
					b.Fatal(err)
				}
				if l.EndOffset() != want {
					b.Fatalf("recovered end %d, want %d", l.EndOffset(), want)
				}
				abandonLog(l) // stays "crashed": the next iteration recovers again
			}
		})
	}
}

// abandonLog drops a log as a crash would: no sync, no clean-shutdown marker.
func abandonLog(l *Log) {
	l.closed.Store(true)
	close(l.done)
	l.wg.Wait()
	for _, s := range l.segments() {
		s.close()
	}
}

func sizeName(n int) string {
	switch {
	case n >= 1<<30 && n%(1<<30) == 0:
		return fmt.Sprintf("%dGiB", n>>30)
	case n >= 1<<20 && n%(1<<20) == 0:
		return fmt.Sprintf("%dMiB", n>>20)
	case n >= 1<<10 && n%(1<<10) == 0:
		return fmt.Sprintf("%dKiB", n>>10)
	}
	return fmt.Sprintf("%dB", n)
}

// BenchmarkRawWrite measures the write patterns the unsynced append figure is explained with,
// without the log. Each op writes one 100 KiB frame (102,436 bytes: one 100 x 1 KiB batch in
// its frame), so every pattern writes the same bytes; run with -benchtime 10000x to write 1 GiB,
// like the append benchmark, so that none runs into the kernel's dirty-page throttling:
//
//   - direct-100KiB: a pwrite per frame, back to back (what an append of 100 x 1 KiB does);
//   - reserved-100KiB: the same, into blocks reserved 4 MiB at a time ahead of the frames
//     (fallocate, FALLOC_FL_KEEP_SIZE), as the log does under SyncNone (reserve.go);
//   - frame-at-128KiB: the same pwrite, but each starting at a 128 KiB boundary of the file
//     (a hole after each): aligned starts, unaligned ends;
//   - aligned-64KiB, aligned-128KiB: the frames' bytes written in whole, aligned 64 or 128
//     KiB writes (dd bs=128k's pattern);
//   - coalesced-1MiB: the frames copied into a 1 MiB buffer written once full (what coalescing
//     appends in user space would do).
//
// The lead they were written for: on a kernel whose page cache uses large folios for ext4
// (Linux 6.16 and later) a write gets folios as large as its length and its file offset's
// alignment allow, so the unaligned ends of 100 KiB frames would cost more folios, each with its
// own overhead, than aligned writes. What session 10 measured (docs/benchmarks.md and
// docs/bench-rawwrite-2026-11-26-s10.txt): the size of each write separates them, not its
// alignment (aligned 64 KiB writes cost as much per byte as 100 KiB frames, frames started on
// 128 KiB boundaries more, 128 KiB and 1 MiB writes less), and into reserved blocks a pwrite per
// frame costs what 128 KiB writes do.
func BenchmarkRawWrite(b *testing.B) {
	frame := make([]byte, 102436) // one 100 x 1 KiB batch in its frame
	for i := range frame {
		frame[i] = byte(i)
	}
	type pattern struct {
		name   string
		stride int64 // distance between the starts of two frames' pwrites (0: back to back)
		chunk  int   // >0: write the stream in whole chunks of this size instead of per frame
		// reserve: >0: reserve this much ahead (fallocate, keeping the size) whenever less
		// than half of it is left.
		reserve int64
	}
	for _, p := range []pattern{
		{name: "direct-100KiB"},
		{name: "reserved-100KiB", reserve: 4 << 20},
		{name: "frame-at-128KiB", stride: 128 << 10},
		{name: "aligned-64KiB", chunk: 64 << 10},
		{name: "aligned-128KiB", chunk: 128 << 10},
		{name: "coalesced-1MiB", chunk: 1 << 20},
	} {
		b.Run("pattern="+p.name, func(b *testing.B) {
			dir := b.TempDir()
			warmPageCache(b, dir, int64(b.N)*int64(len(frame))*5/4)
			f, err := vfs.OS.OpenFile(filepath.Join(dir, "raw"), os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o644)
			if err != nil {
				b.Fatal(err)
			}
			defer f.Close()
			buf := make([]byte, 0, p.chunk+len(frame))
			var pos, flushed, reserved int64
			b.SetBytes(int64(len(frame)))
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				if p.reserve > 0 && reserved-pos < p.reserve/2 {
					if err := f.(vfs.Allocator).Allocate(max(reserved, pos), p.reserve); err != nil {
						b.Skipf("cannot reserve blocks here: %v", err)
					}
					reserved = max(reserved, pos) + p.reserve
				}
				if p.chunk == 0 {
					if _, err := f.WriteAt(frame, pos); err != nil {
						b.Fatal(err)
					}
					pos += max(p.stride, int64(len(frame)))
					continue
				}
				buf = append(buf, frame...)
				for len(buf) >= p.chunk {
					if _, err := f.WriteAt(buf[:p.chunk], flushed); err != nil {
						b.Fatal(err)
					}
					flushed += int64(p.chunk)
					buf = buf[:copy(buf, buf[p.chunk:])]
				}
			}
			if len(buf) > 0 {
				if _, err := f.WriteAt(buf, flushed); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkRawFsyncClosedLoop measures, without the log, one 100-byte write and its fdatasync
// at a time (a closed loop, as nats-bench pub-sync drives JetStream), back to back or paced to
// start no sooner than 200 us apart (5,000/s). Latency is from the write to the end of its
// fdatasync. On this VM the paced loop has the far longer tail (the disk and the vCPUs idle
// between writes), so a closed loop that runs faster than the goal's rate, as JetStream's did,
// sees fewer slow fsyncs than one held to it.
//
//	go test -run '^$' -bench BenchmarkRawFsyncClosedLoop -benchtime 20000x ./commitlog/
func BenchmarkRawFsyncClosedLoop(b *testing.B) {
	for _, paced := range []bool{false, true} {
		name := "pace=none"
		if paced {
			name = "pace=5000"
		}
		b.Run(name, func(b *testing.B) {
			f, err := vfs.OS.OpenFile(filepath.Join(b.TempDir(), "raw"), os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o600)
			if err != nil {
				b.Fatal(err)
			}
			defer f.Close()
			var pace func(i int)
			if paced {
				var start time.Time
				pace = func(i int) {
					if i == 0 {
						start = time.Now()
					}
					sleepUntil(start.Add(time.Duration(i) * time.Second / 5000))
				}
			}
			timeWriteSyncs(b, f, make([]byte, 100), pace)
		})
	}
}

// BenchmarkRawFsyncOverwrite measures, without the log, what preallocation (preallocate.go)
// saves each fdatasync: a closed loop of one write of W bytes and its fdatasync, appending to a
// new file (file=append), overwriting a file written with zeros and synced beforehand
// (file=prewritten: what the log does), or writing into fallocate'd space (file=fallocated:
// unwritten extents, converted by a journal commit). Latency is per write+fdatasync.
//
//	go test -run '^$' -bench BenchmarkRawFsyncOverwrite -benchtime 2000x ./commitlog/
func BenchmarkRawFsyncOverwrite(b *testing.B) {
	for _, size := range []int{1 << 10, 16 << 10, 100 << 10} {
		for _, file := range []string{"append", "prewritten", "fallocated"} {
			b.Run(fmt.Sprintf("write=%s/file=%s", sizeName(size), file), func(b *testing.B) {
				f, err := vfs.OS.OpenFile(filepath.Join(b.TempDir(), "raw"), os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o600)
				if err != nil {
					b.Fatal(err)
				}
				defer f.Close()
				total := int64(b.N) * int64(size)
				switch file {
				case "prewritten":
					if err := writeZeros(f, 0, total); err != nil {
						b.Fatal(err)
					}
				case "fallocated": // the blocks reserved, then the size set over them
					if err := f.(vfs.Allocator).Allocate(0, total); err != nil {
						b.Skipf("fallocate: %v", err)
					}
					if err := f.Truncate(total); err != nil {
						b.Fatal(err)
					}
				}
				if err := f.Sync(); err != nil {
					b.Fatal(err)
				}
				timeWriteSyncs(b, f, make([]byte, size), nil)
			})
		}
	}
}

// timeWriteSyncs writes rec at consecutive offsets b.N times, each write followed by its
// fdatasync, and reports the latencies of those pairs. pace, if set, runs before write i.
func timeWriteSyncs(b *testing.B, f vfs.File, rec []byte, pace func(i int)) {
	lat := make([]time.Duration, b.N)
	b.SetBytes(int64(len(rec)))
	b.ResetTimer()
	for i := range b.N {
		if pace != nil {
			pace(i)
		}
		t := time.Now()
		if _, err := f.WriteAt(rec, int64(i)*int64(len(rec))); err != nil {
			b.Fatal(err)
		}
		if err := f.Sync(); err != nil {
			b.Fatal(err)
		}
		lat[i] = time.Since(t)
	}
	b.StopTimer()
	reportLatencies(b, lat)
}

// warmPageCache writes n bytes to a file in dir and removes it, so that the page cache memory
// the benchmark then writes into is memory the VM's host has backed: freed guest pages go back
// to the host a few seconds after they are freed (free page reporting), and a write into such
// memory costs several times more. Without it, which pattern ran first, or how long ago the
// previous one freed its file, decided the figures more than the patterns did.
func warmPageCache(b *testing.B, dir string, n int64) {
	b.Helper()
	name := filepath.Join(dir, "warm")
	f, err := os.Create(name)
	if err != nil {
		b.Fatal(err)
	}
	chunk := make([]byte, 1<<20)
	for off := int64(0); off < n; off += int64(len(chunk)) {
		if _, err := f.WriteAt(chunk, off); err != nil {
			b.Fatal(err)
		}
	}
	if err := f.Close(); err != nil {
		b.Fatal(err)
	}
	if err := os.Remove(name); err != nil {
		b.Fatal(err)
	}
}

// BenchmarkRawFsyncPaced measures, without the log, whether fsyncs that overlap shorten an
// open loop's tail on this disk: 100-byte writes to one file at 5,000/s, each waiting until
// it is durable, latency from its due time. fsync=serial runs one fdatasync at a time, each
// covering every write made before it started (what the log's group commit does);
// fsync=concurrent runs one per write as soon as it is written (an fdatasync covers every
// write before it started, so a later one returning makes the earlier ones durable too);
// fsync=serial-preallocated is serial over a file written and synced beforehand, so that
// the writes overwrite allocated blocks and change no size (what preallocating segments
// would save each fdatasync: ext4's journal commit).
//
//	go test -run '^$' -bench BenchmarkRawFsyncPaced -benchtime 15000x ./commitlog/
func BenchmarkRawFsyncPaced(b *testing.B) {
	for _, mode := range []string{"serial", "concurrent", "serial-preallocated"} {
		b.Run("fsync="+mode, func(b *testing.B) {
			// vfs.OS: Sync is fdatasync on Linux, as the log's.
			f, err := vfs.OS.OpenFile(filepath.Join(b.TempDir(), "raw"), os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o600)
			if err != nil {
				b.Fatal(err)
			}
			defer f.Close()
			if mode == "serial-preallocated" {
				if _, err := f.WriteAt(make([]byte, b.N*100), 0); err != nil {
					b.Fatal(err)
				}
				if err := f.Sync(); err != nil {
					b.Fatal(err)
				}
			}
			var (
				mu              sync.Mutex
				cond            = sync.NewCond(&mu)
				written, synced int // writes made, and made durable (serial)
				done            bool
				wg              sync.WaitGroup
			)
			serial := mode != "concurrent"
			if serial {
				wg.Go(func() {
					mu.Lock()
					defer mu.Unlock()
					for {
						for written == synced && !done {
							cond.Wait()
						}
						if written == synced {
							return
						}
						upto := written
						mu.Unlock()
						err := f.Sync()
						mu.Lock()
						if err != nil {
							b.Error(err)
						}
						synced = upto
						cond.Broadcast()
					}
				})
			}
			rec := make([]byte, 100)
			lat := make([]time.Duration, b.N)
			var waiters sync.WaitGroup
			b.SetBytes(int64(len(rec)))
			b.ResetTimer()
			start := time.Now()
			for i := range b.N {
				due := start.Add(time.Duration(i) * time.Second / 5000)
				sleepUntil(due)
				mu.Lock()
				if _, err := f.WriteAt(rec, int64(i*len(rec))); err != nil {
					b.Fatal(err)
				}
				written++
				me := written
				cond.Broadcast()
				mu.Unlock()
				waiters.Go(func() {
					if serial {
						mu.Lock()
						for synced < me {
							cond.Wait()
						}
						mu.Unlock()
					} else if err := f.Sync(); err != nil {
						b.Error(err)
					}
					lat[i] = time.Since(due)
				})
			}
			waiters.Wait()
			b.StopTimer()
			mu.Lock()
			done = true
			cond.Broadcast()
			mu.Unlock()
			wg.Wait()
			reportLatencies(b, lat)
		})
	}
}

// reportLatencies sorts lat and reports its p50, p99, p999 and max in milliseconds.
func reportLatencies(b *testing.B, lat []time.Duration) {
	slices.Sort(lat)
	ms := func(q float64) float64 { return float64(lat[int(q*float64(len(lat)-1))]) / 1e6 }
	b.ReportMetric(ms(0.50), "p50-ms")
	b.ReportMetric(ms(0.99), "p99-ms")
	b.ReportMetric(ms(0.999), "p999-ms")
	b.ReportMetric(ms(1), "max-ms")
}
