package commitlog

import (
	"errors"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/runnel-io/runnel/internal/recordbatch"
)

// Appenders and readers at once, under the race detector: every read sees whole, valid batches
// in offset order up to what was published, and the final log holds every batch exactly once.
func TestConcurrentAppendAndRead(t *testing.T) {
	for _, policy := range []SyncPolicy{SyncGroup, SyncNone} {
		t.Run(policy.String(), func(t *testing.T) {
			dir := t.TempDir()
			o := testOptions(dir)
			o.Sync = policy
			l := openLog(t, dir, o)
			defer l.Close()
			const appenders, perAppender = 8, 60
			var wg sync.WaitGroup
			var stop atomic.Bool
			errs := make(chan error, 100)
			for a := 0; a < appenders; a++ {
				wg.Add(1)
				go func(a int) {
					defer wg.Done()
					for i := 0; i < perAppender; i++ {
						if _, err := l.Append(makeBatch(t, 3, 50, "c", int64(i))); err != nil {
							errs <- err
							return
						}
					}
				}(a)
			}
			var readers sync.WaitGroup
			for r := 0; r < 4; r++ {
				readers.Add(1)
				go func() {
					defer readers.Done()
					for !stop.Load() {
						off := l.StartOffset()
						for off < l.EndOffset() {
							res, err := l.Read(off, ReadOptions{MaxBytes: 4096})
							if err != nil {
								errs <- err
								return
							}
							for _, b := range splitBatches(t, res.Batches) {
								if batchBaseOffset(b) > off || batchNextOffset(b) <= off {
									t.Errorf("read at %d got batch [%d, %d)", off, batchBaseOffset(b), batchNextOffset(b))
								}
								off = batchNextOffset(b)
							}
						}
					}
				}()
			}
			wg.Wait()
			stop.Store(true)
			readers.Wait()
			close(errs)
			for err := range errs {
				t.Fatal(err)
			}
			if got := len(readAll(t, l)); got != appenders*perAppender {
				t.Fatalf("%d batches, want %d", got, appenders*perAppender)
			}
			if l.EndOffset() != 3*appenders*perAppender {
				t.Fatalf("end %d", l.EndOffset())
			}
		})
	}
}

// Readers racing retention and truncation: segments are removed and cut under them. A read
// either succeeds with whole batches, or reports the offset out of range (it was deleted or cut
// away); it never panics, faults on an unmapped index, or returns bytes of a removed batch.
func TestReadersRaceRetentionAndTruncation(t *testing.T) {
	dir := t.TempDir()
	o := testOptions(dir)
	o.SegmentBytes = 4096
	l := openLog(t, dir, o)
	defer l.Close()
	var stop atomic.Bool
	var readers sync.WaitGroup
	errs := make(chan error, 16)
	for r := 0; r < 4; r++ {
		readers.Add(1)
		go func(r int) {
			defer readers.Done()
			for !stop.Load() {
				start, end := l.StartOffset(), l.EndOffset()
				if end <= start {
					continue
				}
				off := start + int64(r/2)*(end-start)/2 // half the readers at the start, which retention removes
				res, err := l.Read(off, ReadOptions{MaxBytes: 2048})
				if err != nil {
					if errors.Is(err, ErrOffsetOutOfRange) {
						continue
					}
					errs <- err
					return
				}
				for _, b := range splitBatches(t, res.Batches) {
					if _, err := recordbatch.Validate(b, 1<<20); err != nil {
						errs <- err
						return
					}
				}
				if _, _, err := l.OffsetForTime(int64(r)); err != nil {
					errs <- err
					return
				}
			}
		}(r)
	}
	for round := 0; round < 150; round++ {
		for i := 0; i < 10; i++ {
			if _, err := l.Append(makeBatch(t, 3, 60, "r", int64(round*10+i))); err != nil {
				t.Fatal(err)
			}
		}
		if _, err := l.DeleteSegmentsBefore(l.EndOffset() / 2); err != nil {
			t.Fatal(err)
		}
		segs := l.Segments()
		if cut := segs[len(segs)-1].BaseOffset; round%3 == 0 && cut > l.StartOffset() {
			if err := l.Truncate(cut); err != nil {
				t.Fatal(err)
			}
		}
	}
	stop.Store(true)
	readers.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if l.StartOffset() == 0 {
		t.Fatal("retention deleted nothing: the race was not exercised")
	}
}

// The deterministic version of the race above: retention removes the very segment a read has
// chosen, before the read locks it. The read must notice and answer from the current log.
func TestReadOfASegmentRemovedUnderIt(t *testing.T) {
	dir := t.TempDir()
	o := testOptions(dir)
	o.SegmentBytes = 4096
	l := openLog(t, dir, o)
	defer l.Close()
	fillLog(t, l, 100)
	if len(l.Segments()) < 3 {
		t.Fatal("want several segments")
	}
	second := l.Segments()[1].BaseOffset
	testHookReadChoseSegment = func() {
		testHookReadChoseSegment = nil
		if _, err := l.DeleteSegmentsBefore(second); err != nil {
			t.Error(err)
		}
	}
	defer func() { testHookReadChoseSegment = nil }()
	_, err := l.Read(0, ReadOptions{})
	var re *OffsetRangeError
	if !errors.As(err, &re) || re.Start != second {
		t.Fatalf("read of a removed segment: %v, want out of range with the new start %d", err, second)
	}
	if res, err := l.Read(second, ReadOptions{}); err != nil || len(res.Batches) == 0 {
		t.Fatalf("read at the new start: %v", err)
	}
}
