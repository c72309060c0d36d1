package commitlog

import (
	"sync"
	"sync/atomic"
	"testing"
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
