package commitlog

import (
	"bytes"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/runnel-io/runnel/internal/recordbatch"
	"github.com/runnel-io/runnel/internal/vfs"
)

// makeBatch builds a batch of n records of size bytes each; record i's value starts with tag and
// i, and timestamps run from ts.
func makeBatch(t testing.TB, n, size int, tag string, ts int64) []byte {
	t.Helper()
	b := recordbatch.NewBuilder(recordbatch.BuilderOptions{})
	for i := 0; i < n; i++ {
		v := make([]byte, size)
		copy(v, fmt.Sprintf("%s-%d-", tag, i))
		b.Add(recordbatch.Record{Timestamp: ts + int64(i), Key: []byte(tag), Value: v})
	}
	out, err := b.Build()
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func testOptions(dir string) Options {
	o := DefaultOptions()
	o.SegmentBytes = 16 << 10
	o.IndexIntervalBytes = 512
	// Durability is tested where it is the point (with the real OS, or a CrashFS that models
	// it); elsewhere real fsyncs only make the suite slow.
	o.Sync = SyncNone
	o.FS = vfs.NoSync(vfs.OS)
	return o
}

func openLog(t testing.TB, dir string, o Options) *Log {
	t.Helper()
	l, err := Open(dir, o)
	if err != nil {
		t.Fatalf("open: %v", err)
	}
	return l
}

// readAll reads every batch from start to end and returns them split.
func readAll(t testing.TB, l *Log) [][]byte {
	t.Helper()
	var out [][]byte
	off := l.StartOffset()
	for off < l.EndOffset() {
		res, err := l.Read(off, ReadOptions{MaxBytes: 32 << 10})
		if err != nil {
			t.Fatalf("read at %d: %v", off, err)
		}
		if len(res.Batches) == 0 {
			t.Fatalf("read at %d (end %d) returned nothing", off, l.EndOffset())
		}
		out = append(out, splitBatches(t, res.Batches)...)
		off = res.NextOffset
	}
	return out
}

func splitBatches(t testing.TB, b []byte) [][]byte {
	t.Helper()
	var out [][]byte
	for len(b) > 0 {
		n, err := recordbatch.Size(b, 1<<30)
		if err != nil {
			t.Fatalf("split: %v", err)
		}
		out = append(out, b[:n])
		b = b[n:]
	}
	return out
}

func equalBatches(t testing.TB, got, want [][]byte) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("got %d batches, want %d", len(got), len(want))
	}
	for i := range got {
		if !bytes.Equal(got[i], want[i]) {
			t.Fatalf("batch %d differs", i)
		}
	}
}

// fakeClock is a settable clock.
type fakeClock struct{ t time.Time }

func (c *fakeClock) now() time.Time          { return c.t }
func (c *fakeClock) advance(d time.Duration) { c.t = c.t.Add(d) }

// opGate holds one filesystem operation in place: armed (by holdAppend), it blocks the first
// operation that passes it until released. held counts the operations it blocked.
type opGate struct {
	hold atomic.Pointer[chan struct{}]
	held atomic.Int32
}

// pass blocks while the gate is armed, once; it reports whether it did.
func (g *opGate) pass() bool {
	c := g.hold.Swap(nil)
	if c == nil {
		return false
	}
	g.held.Add(1)
	<-*c
	return true
}

// holdAppend arms g, starts an append of batch whose operation g blocks, and returns once it
// is blocked, with a function that lets it go and returns the append's result (any number of
// times: defer it too, so that a failing test does not leave Close waiting for the held
// operation).
func holdAppend(t *testing.T, l *Log, g *opGate, batch []byte) (release func() ([]int64, error)) {
	t.Helper()
	gate := make(chan struct{})
	before := g.held.Load()
	g.hold.Store(&gate)
	type result struct {
		offs []int64
		err  error
	}
	done := make(chan result, 1)
	go func() {
		offs, err := l.Append(batch)
		done <- result{offs, err}
	}()
	var (
		once sync.Once
		r    result
	)
	release = func() ([]int64, error) {
		once.Do(func() {
			close(gate)
			r = <-done
		})
		return r.offs, r.err
	}
	for deadline := time.Now().Add(5 * time.Second); g.held.Load() == before; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			release()
			t.Fatal("the held append never reached the gate")
		}
	}
	return release
}
