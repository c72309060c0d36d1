package partition

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/runnel-io/runnel/commitlog"
	"github.com/runnel-io/runnel/internal/recordbatch"
	"github.com/runnel-io/runnel/topic"
)

const long = time.Minute // a wait that must be ended by something else

func openTest(t testing.TB, dir string, cfg topic.Config) *Partition {
	t.Helper()
	opts := DefaultOptions()
	opts.Topic, opts.Partition = "orders", 3
	p, err := Open(dir, cfg, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	return p
}

func newTest(t testing.TB) *Partition {
	return openTest(t, t.TempDir(), topic.DefaultConfig())
}

// batch builds a batch of n records "<prefix>-i" with timestamps ts, ts+1, ...
func batch(t testing.TB, prefix string, n int, ts int64, bo recordbatch.BuilderOptions) []byte {
	t.Helper()
	b := recordbatch.NewBuilder(bo)
	for i := range n {
		b.Add(recordbatch.Record{Timestamp: ts + int64(i), Key: []byte("k"), Value: fmt.Appendf(nil, "%s-%d", prefix, i)})
	}
	out, err := b.Build()
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func plain(t testing.TB, prefix string, n int) []byte {
	return batch(t, prefix, n, 1000, recordbatch.BuilderOptions{})
}

// records decodes concatenated batches into "offset:value" strings.
func records(t testing.TB, b []byte) []string {
	t.Helper()
	var out []string
	for len(b) > 0 {
		one, rest, err := recordbatch.Next(b, len(b))
		if err != nil {
			t.Fatal(err)
		}
		recs, err := recordbatch.Records(one)
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range recs {
			out = append(out, fmt.Sprintf("%d:%s", r.Offset, r.Value))
		}
		b = rest
	}
	return out
}

// waitHook makes each blocking Fetch of p signal on the returned channel.
func waitHook(p *Partition) <-chan struct{} {
	ch := make(chan struct{}, 1024)
	p.testHookWait = func() { ch <- struct{}{} }
	return ch
}

type fetchOut struct {
	res FetchResult
	err error
}

func goFetch(p *Partition, ctx context.Context, offset int64, opt FetchOptions) <-chan fetchOut {
	ch := make(chan fetchOut, 1)
	go func() {
		res, err := p.Fetch(ctx, offset, opt)
		ch <- fetchOut{res, err}
	}()
	return ch
}

func mustAppend(t testing.TB, p *Partition, batches ...[]byte) []int64 {
	t.Helper()
	offs, err := p.Append(context.Background(), batches)
	if err != nil {
		t.Fatal(err)
	}
	return offs
}

func notReturned(t *testing.T, ch <-chan fetchOut) {
	t.Helper()
	select {
	case r := <-ch:
		t.Fatalf("fetch returned before an append: %+v", r)
	default:
	}
}

func TestAppendFetchRoundTrip(t *testing.T) {
	p := newTest(t)
	offs := mustAppend(t, p, plain(t, "a", 2), plain(t, "b", 3))
	if fmt.Sprint(offs) != "[0 2]" {
		t.Fatalf("offsets %v", offs)
	}
	offs = mustAppend(t, p, plain(t, "c", 1))
	if fmt.Sprint(offs) != "[5]" {
		t.Fatalf("offsets %v", offs)
	}
	res, err := p.Fetch(context.Background(), 0, FetchOptions{})
	if err != nil {
		t.Fatal(err)
	}
	got := strings.Join(records(t, res.Batches), " ")
	if want := "0:a-0 1:a-1 2:b-0 3:b-1 4:b-2 5:c-0"; got != want {
		t.Fatalf("records %q, want %q", got, want)
	}
	if res.HighWatermark != 6 || res.LogStartOffset != 0 || res.NextOffset != 6 {
		t.Fatalf("result %+v", res)
	}
	// From inside a batch: the batch holding the offset comes first.
	res, err = p.Fetch(context.Background(), 3, FetchOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if got := records(t, res.Batches); got[0] != "2:b-0" || res.NextOffset != 6 {
		t.Fatalf("from 3: %v next %d", got, res.NextOffset)
	}
	// MaxBytes smaller than a batch still returns the first batch whole, and only it.
	res, err = p.Fetch(context.Background(), 0, FetchOptions{MaxBytes: 1})
	if err != nil {
		t.Fatal(err)
	}
	if got := records(t, res.Batches); len(got) != 2 || res.NextOffset != 2 {
		t.Fatalf("MaxBytes 1: %v next %d", got, res.NextOffset)
	}
	// At the end with MaxWait 0: empty at once.
	res, err = p.Fetch(context.Background(), 6, FetchOptions{})
	if err != nil || len(res.Batches) != 0 || res.NextOffset != 6 || res.HighWatermark != 6 {
		t.Fatalf("at end: %+v %v", res, err)
	}
	if p.Earliest() != 0 || p.Latest() != 6 {
		t.Fatalf("earliest %d latest %d", p.Earliest(), p.Latest())
	}
	st := p.Stats()
	if st.LogStartOffset != 0 || st.HighWatermark != 6 || st.LogEndOffset != 6 || st.Segments != 1 || st.SizeBytes <= 0 {
		t.Fatalf("stats %+v", st)
	}
}

func TestLongPollWokenByAppend(t *testing.T) {
	p := newTest(t)
	mustAppend(t, p, plain(t, "a", 1))
	waiting := waitHook(p)
	ch := goFetch(p, context.Background(), 1, FetchOptions{MaxWait: long})
	<-waiting
	notReturned(t, ch)
	mustAppend(t, p, plain(t, "b", 2))
	r := <-ch
	if r.err != nil {
		t.Fatal(r.err)
	}
	if got := strings.Join(records(t, r.res.Batches), " "); got != "1:b-0 2:b-1" || r.res.NextOffset != 3 || r.res.HighWatermark != 3 {
		t.Fatalf("got %q %+v", got, r.res)
	}
}

func TestMaxWaitExpiresEmpty(t *testing.T) {
	p := newTest(t)
	mustAppend(t, p, plain(t, "a", 1))
	start := time.Now()
	res, err := p.Fetch(context.Background(), 1, FetchOptions{MaxWait: 30 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Batches) != 0 || res.NextOffset != 1 || res.HighWatermark != 1 {
		t.Fatalf("result %+v", res)
	}
	if d := time.Since(start); d < 30*time.Millisecond {
		t.Fatalf("returned after %v, before MaxWait", d)
	}
}

func TestFetchContextCancel(t *testing.T) {
	p := newTest(t)
	waiting := waitHook(p)
	ctx, cancel := context.WithCancel(context.Background())
	ch := goFetch(p, ctx, 0, FetchOptions{MaxWait: long})
	<-waiting
	cancel()
	r := <-ch
	if !errors.Is(r.err, context.Canceled) {
		t.Fatalf("err %v, want context.Canceled", r.err)
	}
}

func TestMinBytesAccumulates(t *testing.T) {
	p := newTest(t)
	bs := [][]byte{plain(t, "a", 1), plain(t, "b", 1), plain(t, "c", 1)}
	total := len(bs[0]) + len(bs[1]) + len(bs[2])
	waiting := waitHook(p)
	ch := goFetch(p, context.Background(), 0, FetchOptions{MinBytes: total, MaxWait: long})
	<-waiting
	for i, b := range bs {
		notReturned(t, ch)
		mustAppend(t, p, b)
		if i < len(bs)-1 {
			<-waiting // it woke, read, and waits again
		}
	}
	r := <-ch
	if r.err != nil {
		t.Fatal(r.err)
	}
	if got := strings.Join(records(t, r.res.Batches), " "); got != "0:a-0 1:b-0 2:c-0" || len(r.res.Batches) != total || r.res.NextOffset != 3 {
		t.Fatalf("got %q %+v", got, r.res)
	}
}

func TestMinBytesReturnsWhenMaxBytesFull(t *testing.T) {
	p := newTest(t)
	a, b := plain(t, "a", 1), plain(t, "b", 1)
	waiting := waitHook(p)
	// MinBytes can never be reached within MaxBytes: it answers once the budget is full.
	ch := goFetch(p, context.Background(), 0, FetchOptions{MaxBytes: len(a) + 1, MinBytes: 1 << 20, MaxWait: long})
	<-waiting
	mustAppend(t, p, a)
	<-waiting
	mustAppend(t, p, b)
	r := <-ch
	if r.err != nil {
		t.Fatal(r.err)
	}
	if got := strings.Join(records(t, r.res.Batches), " "); got != "0:a-0" || r.res.NextOffset != 1 {
		t.Fatalf("got %q next %d", got, r.res.NextOffset)
	}
}

func TestMinBytesWaitExpiresWithPartial(t *testing.T) {
	p := newTest(t)
	mustAppend(t, p, plain(t, "a", 1))
	res, err := p.Fetch(context.Background(), 0, FetchOptions{MinBytes: 1 << 20, MaxWait: 20 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if got := records(t, res.Batches); len(got) != 1 || res.NextOffset != 1 {
		t.Fatalf("got %v %+v", got, res)
	}
}

func TestOffsetOutOfRange(t *testing.T) {
	cfg := topic.DefaultConfig()
	cfg.SegmentBytes = topic.MinSegmentBytes
	p := openTest(t, t.TempDir(), cfg)
	big := bytes.Repeat([]byte("x"), 1500)
	for i := range 12 {
		b := recordbatch.NewBuilder(recordbatch.BuilderOptions{})
		b.Add(recordbatch.Record{Timestamp: int64(i), Value: big})
		out, err := b.Build()
		if err != nil {
			t.Fatal(err)
		}
		mustAppend(t, p, out)
	}
	check := func(offset, start, end int64) {
		t.Helper()
		_, err := p.Fetch(context.Background(), offset, FetchOptions{MaxWait: long})
		var re *commitlog.OffsetRangeError
		if !errors.Is(err, commitlog.ErrOffsetOutOfRange) || !errors.As(err, &re) {
			t.Fatalf("offset %d: err %v, want out of range", offset, err)
		}
		if re.Offset != offset || re.Start != start || re.End != end || !strings.Contains(err.Error(), `topic "orders" partition 3`) {
			t.Fatalf("offset %d: %+v (%v), want [%d, %d]", offset, re, err, start, end)
		}
	}
	check(-1, 0, 12)
	check(13, 0, 12)
	if n, err := p.log.DeleteSegmentsBefore(8); err != nil || n == 0 {
		t.Fatalf("DeleteSegmentsBefore: %d %v", n, err)
	}
	start := p.Earliest()
	if start == 0 || start > 8 {
		t.Fatalf("log start %d", start)
	}
	check(0, start, 12)
	check(start-1, start, 12)
	res, err := p.Fetch(context.Background(), start, FetchOptions{})
	if err != nil || res.LogStartOffset != start || len(res.Batches) == 0 {
		t.Fatalf("at start: %+v %v", res, err)
	}
	if st := p.Stats(); st.LogStartOffset != start || st.Segments < 2 {
		t.Fatalf("stats %+v", st)
	}
}

func TestAppendRefusals(t *testing.T) {
	cfg := topic.DefaultConfig()
	cfg.MaxMessageBytes = 1024
	p := openTest(t, t.TempDir(), cfg)
	good := func() []byte { return plain(t, "ok", 2) }
	bigB := recordbatch.NewBuilder(recordbatch.BuilderOptions{})
	bigB.Add(recordbatch.Record{Value: bytes.Repeat([]byte("y"), 2000)})
	big, _ := bigB.Build()
	corrupt := good()
	corrupt[len(corrupt)-1] ^= 0xff
	idem := batch(t, "i", 1, 0, recordbatch.BuilderOptions{Idempotent: true, ProducerID: 7, ProducerEpoch: 0, BaseSequence: 0})
	txn := batch(t, "t", 1, 0, recordbatch.BuilderOptions{Idempotent: true, ProducerID: -1, ProducerEpoch: -1, BaseSequence: -1, Transactional: true})
	ctrl := batch(t, "c", 1, 0, recordbatch.BuilderOptions{Control: true})
	badIdem := batch(t, "i", 1, 0, recordbatch.BuilderOptions{Idempotent: true, ProducerID: 7})
	badIdem[len(badIdem)-1] ^= 0xff

	cases := []struct {
		name    string
		batches [][]byte
		is      []error
	}{
		{"empty request", nil, []error{ErrEmptyRequest}},
		{"too large", [][]byte{good(), big}, []error{ErrRecordTooLarge}},
		{"bad crc", [][]byte{good(), corrupt}, []error{commitlog.ErrInvalidBatch, recordbatch.ErrBadCRC}},
		{"truncated", [][]byte{good(), good()[:30]}, []error{commitlog.ErrInvalidBatch, recordbatch.ErrTruncated}},
		{"empty batch", [][]byte{{}}, []error{commitlog.ErrInvalidBatch}},
		{"idempotent", [][]byte{good(), idem}, []error{ErrUnsupportedBatch, commitlog.ErrInvalidBatch, errors.ErrUnsupported}},
		{"transactional", [][]byte{txn}, []error{ErrUnsupportedBatch, commitlog.ErrInvalidBatch}},
		{"control", [][]byte{good(), ctrl}, []error{ErrUnsupportedBatch}},
		{"idempotent and corrupt", [][]byte{badIdem}, []error{commitlog.ErrInvalidBatch, recordbatch.ErrBadCRC}},
	}
	for _, c := range cases {
		_, err := p.Append(context.Background(), c.batches)
		if err == nil {
			t.Fatalf("%s: accepted", c.name)
		}
		for _, want := range c.is {
			if !errors.Is(err, want) {
				t.Errorf("%s: %v is not %v", c.name, err, want)
			}
		}
		if c.name == "idempotent and corrupt" && errors.Is(err, ErrUnsupportedBatch) {
			t.Errorf("%s: reported as unsupported: %v", c.name, err)
		}
		if c.name != "too large" && !strings.Contains(err.Error(), `topic "orders" partition 3`) {
			t.Errorf("%s: %q does not name the partition", c.name, err)
		}
		if p.log.EndOffset() != 0 || p.HighWatermark() != 0 {
			t.Fatalf("%s: something was appended (end %d)", c.name, p.log.EndOffset())
		}
	}
	_, err := p.Append(context.Background(), [][]byte{big})
	var tl *RecordTooLargeError
	if !errors.As(err, &tl) || tl.Limit != 1024 || tl.Size != len(big) || tl.Topic != "orders" || tl.Partition != 3 {
		t.Fatalf("too large: %v %+v", err, tl)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := p.Append(ctx, [][]byte{good()}); !errors.Is(err, context.Canceled) || p.log.EndOffset() != 0 {
		t.Fatalf("cancelled append: %v", err)
	}
	mustAppend(t, p, good())
}

func TestCloseWakesFetch(t *testing.T) {
	p := newTest(t)
	waiting := waitHook(p)
	ch := goFetch(p, context.Background(), 0, FetchOptions{MaxWait: long})
	<-waiting
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	if r := <-ch; !errors.Is(r.err, ErrClosed) {
		t.Fatalf("err %v, want ErrClosed", r.err)
	}
	if err := p.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if _, err := p.Fetch(context.Background(), 0, FetchOptions{}); !errors.Is(err, ErrClosed) {
		t.Fatalf("fetch after close: %v", err)
	}
	if _, err := p.Append(context.Background(), [][]byte{plain(t, "a", 1)}); !errors.Is(err, ErrClosed) {
		t.Fatalf("append after close: %v", err)
	}
	if _, _, _, err := p.OffsetForTime(0); !errors.Is(err, ErrClosed) {
		t.Fatalf("offset for time after close: %v", err)
	}
}

func TestReopenKeepsData(t *testing.T) {
	dir := t.TempDir()
	p := openTest(t, dir, topic.DefaultConfig())
	if p.logOpts.Sync != commitlog.SyncGroup {
		t.Fatalf("sync policy %v", p.logOpts.Sync)
	}
	mustAppend(t, p, plain(t, "a", 2), plain(t, "b", 1))
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	q := openTest(t, dir, topic.DefaultConfig())
	if q.HighWatermark() != 3 {
		t.Fatalf("high watermark %d after reopen", q.HighWatermark())
	}
	res, err := q.Fetch(context.Background(), 0, FetchOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(records(t, res.Batches), " "); got != "0:a-0 1:a-1 2:b-0" {
		t.Fatalf("after reopen: %q", got)
	}
	if offs := mustAppend(t, q, plain(t, "c", 1)); offs[0] != 3 {
		t.Fatalf("offset after reopen %v", offs)
	}
}

func TestManyFetchersOneAppend(t *testing.T) {
	p := newTest(t)
	const n = 32
	waiting := waitHook(p)
	chs := make([]<-chan fetchOut, n)
	for i := range chs {
		chs[i] = goFetch(p, context.Background(), 0, FetchOptions{MaxWait: long})
	}
	for range n {
		<-waiting
	}
	mustAppend(t, p, plain(t, "a", 1))
	for i, ch := range chs {
		r := <-ch
		if r.err != nil || len(records(t, r.res.Batches)) != 1 || r.res.NextOffset != 1 {
			t.Fatalf("fetcher %d: %+v %v", i, r.res, r.err)
		}
	}
}

func TestConcurrentAppendersAndFollowers(t *testing.T) {
	p := newTest(t)
	const appenders, per = 4, 25
	var wg sync.WaitGroup
	for a := range appenders {
		wg.Go(func() {
			for i := range per {
				mustAppend(t, p, plain(t, fmt.Sprintf("w%d-%d", a, i), 1))
			}
		})
	}
	// Followers read everything, waiting at the end, until they have every record.
	for range 3 {
		wg.Go(func() {
			next := int64(0)
			for next < appenders*per {
				res, err := p.Fetch(context.Background(), next, FetchOptions{MaxWait: long})
				if err != nil {
					t.Error(err)
					return
				}
				if res.NextOffset > res.HighWatermark {
					t.Errorf("next %d beyond high watermark %d", res.NextOffset, res.HighWatermark)
				}
				next = res.NextOffset
			}
		})
	}
	wg.Wait()
}

func TestOffsetForTime(t *testing.T) {
	p := newTest(t)
	mustAppend(t, p, batch(t, "a", 3, 1000, recordbatch.BuilderOptions{})) // 0..2 at 1000..1002
	mustAppend(t, p, batch(t, "b", 2, 2000, recordbatch.BuilderOptions{})) // 3..4 at 2000..2001
	cases := []struct {
		ts, off, at int64
		found       bool
	}{
		{0, 0, 1000, true},
		{1001, 1, 1001, true},
		{1500, 3, 2000, true},
		{2001, 4, 2001, true},
		{2002, 5, -1, false},
	}
	for _, c := range cases {
		off, at, found, err := p.OffsetForTime(c.ts)
		if err != nil || off != c.off || at != c.at || found != c.found {
			t.Errorf("OffsetForTime(%d) = %d, %d, %t, %v; want %d, %d, %t", c.ts, off, at, found, err, c.off, c.at, c.found)
		}
	}
}

func TestUpdateConfig(t *testing.T) {
	cfg := topic.DefaultConfig()
	cfg.MaxMessageBytes = 1024
	p := openTest(t, t.TempDir(), cfg)
	bigB := recordbatch.NewBuilder(recordbatch.BuilderOptions{})
	bigB.Add(recordbatch.Record{Value: bytes.Repeat([]byte("y"), 2000)})
	big, _ := bigB.Build()
	if _, err := p.Append(context.Background(), [][]byte{big}); !errors.Is(err, ErrRecordTooLarge) {
		t.Fatalf("err %v", err)
	}
	cfg.MaxMessageBytes = 4096
	if err := p.UpdateConfig(cfg); err != nil {
		t.Fatal(err)
	}
	mustAppend(t, p, big)

	cfg.SegmentBytes = 1 << 20
	cfg.RetentionMS = 1000
	cfg.MaxMessageBytes = 2048
	err := p.UpdateConfig(cfg)
	var re *ReopenError
	if !errors.Is(err, ErrReopenRequired) || !errors.As(err, &re) || strings.Join(re.Keys, ",") != "segment.bytes,retention.ms" {
		t.Fatalf("err %v", err)
	}
	got := p.Config()
	if got.MaxMessageBytes != 2048 || got.SegmentBytes != topic.DefaultSegmentBytes || got.RetentionMS != topic.DefaultRetentionMS {
		t.Fatalf("config in effect %+v", got)
	}
	bad := cfg
	bad.MaxMessageBytes = 1
	if err := p.UpdateConfig(bad); !errors.Is(err, topic.ErrInvalidConfig) || p.Config().MaxMessageBytes != 2048 {
		t.Fatalf("invalid config: %v", err)
	}
}

func TestDelete(t *testing.T) {
	dir := t.TempDir() + "/orders/3"
	p := openTest(t, dir, topic.DefaultConfig())
	mustAppend(t, p, plain(t, "a", 1))
	if err := p.Delete(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("dir still there: %v", err)
	}
	if _, err := p.Fetch(context.Background(), 0, FetchOptions{}); !errors.Is(err, ErrClosed) {
		t.Fatalf("fetch after delete: %v", err)
	}
}

// BenchmarkFetchLongPoll measures how long a fetcher waiting at the end of the log takes to
// return once an append starts (SyncNone, so the figure is the wake-up path, not the fsync).
func BenchmarkFetchLongPoll(b *testing.B) {
	opts := DefaultOptions()
	opts.Log.Sync = commitlog.SyncNone
	p, err := Open(b.TempDir(), topic.DefaultConfig(), opts)
	if err != nil {
		b.Fatal(err)
	}
	defer p.Close()
	bb := recordbatch.NewBuilder(recordbatch.BuilderOptions{})
	bb.Add(recordbatch.Record{Value: make([]byte, 100)})
	proto, _ := bb.Build()
	waiting := make(chan struct{}, 1)
	p.testHookWait = func() { waiting <- struct{}{} }
	woke := make(chan time.Time, 1)
	go func() {
		next := int64(0)
		for {
			res, err := p.Fetch(context.Background(), next, FetchOptions{MaxWait: time.Hour})
			if err != nil {
				return
			}
			woke <- time.Now()
			next = res.NextOffset
		}
	}()
	var total time.Duration
	b.ResetTimer()
	for range b.N {
		<-waiting
		batch := append([]byte(nil), proto...)
		start := time.Now()
		if _, err := p.Append(context.Background(), [][]byte{batch}); err != nil {
			b.Fatal(err)
		}
		total += (<-woke).Sub(start)
	}
	b.StopTimer()
	b.ReportMetric(float64(total.Microseconds())/float64(b.N), "µs/wake")
	p.Close()
}

func TestZeroOptions(t *testing.T) {
	p, err := Open(t.TempDir(), topic.DefaultConfig(), Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	mustAppend(t, p, plain(t, "a", 1))
	if p.HighWatermark() != 1 {
		t.Fatalf("high watermark %d", p.HighWatermark())
	}
	if _, err := Open(t.TempDir(), topic.Config{}, Options{}); !errors.Is(err, topic.ErrInvalidConfig) {
		t.Fatalf("zero config: %v", err)
	}
}
