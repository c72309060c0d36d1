// Command commitlog is a small tour of Runnel's storage engine, the program `make run` starts
// until the broker (cmd/runneld) exists. It opens a partition log under ./data/demo-log, appends
// each line of standard input (or -n generated records) as a record batch, made durable with the
// default group-commit policy, reads the log back from -from, and prints its segments.
//
//	echo -e "hello\nworld" | go run ./examples/commitlog
//	go run ./examples/commitlog -n 100000 -batch 100
package main

import (
	"bufio"
	"flag"
	"fmt"
	"os"
	"time"

	"github.com/runnel-io/runnel/commitlog"
	"github.com/runnel-io/runnel/internal/recordbatch"
)

func main() {
	dir := flag.String("dir", "data/demo-log", "log directory")
	n := flag.Int("n", 0, "generate this many records instead of reading stdin")
	batchSize := flag.Int("batch", 100, "records per batch")
	from := flag.Int64("from", -1, "offset to read back from (-1: the records appended now)")
	show := flag.Int("show", 5, "records to print when reading back")
	flag.Parse()
	if err := run(*dir, *n, *batchSize, *from, *show); err != nil {
		fmt.Fprintln(os.Stderr, "commitlog:", err)
		os.Exit(1)
	}
}

func run(dir string, n, batchSize int, from int64, show int) error {
	if batchSize < 1 {
		return fmt.Errorf("-batch must be at least 1")
	}
	l, err := commitlog.Open(dir, commitlog.DefaultOptions())
	if err != nil {
		return err
	}
	defer l.Close()
	start := l.EndOffset()
	fmt.Printf("opened %s: offsets [%d, %d), %d segment(s)\n", dir, l.StartOffset(), l.EndOffset(), len(l.Segments()))

	records := make(chan []byte)
	go func() {
		defer close(records)
		if n > 0 {
			for i := 0; i < n; i++ {
				records <- []byte(fmt.Sprintf("record %d", i))
			}
			return
		}
		if fi, err := os.Stdin.Stat(); err == nil && fi.Mode()&os.ModeCharDevice != 0 {
			fmt.Println("type records, one per line; end with Ctrl-D")
		}
		sc := bufio.NewScanner(os.Stdin)
		for sc.Scan() {
			records <- append([]byte(nil), sc.Bytes()...)
		}
	}()

	b := recordbatch.NewBuilder(recordbatch.BuilderOptions{})
	began, count := time.Now(), 0
	flush := func() error {
		if b.Len() == 0 {
			return nil
		}
		batch, err := b.Build()
		if err != nil {
			return err
		}
		if _, err := l.Append(batch); err != nil {
			return err
		}
		b.Reset()
		return nil
	}
	for v := range records {
		b.Add(recordbatch.Record{Timestamp: time.Now().UnixMilli(), Value: v})
		count++
		if b.Len() >= batchSize {
			if err := flush(); err != nil {
				return err
			}
		}
	}
	if err := flush(); err != nil {
		return err
	}
	if count > 0 {
		el := time.Since(began)
		fmt.Printf("appended %d records at offsets [%d, %d) in %v (%.0f records/s, durable)\n",
			count, start, l.EndOffset(), el.Round(time.Millisecond), float64(count)/el.Seconds())
	}

	if from < 0 {
		from = start
		if count == 0 {
			from = l.StartOffset()
		}
	}
	printed := 0
	for off := from; off < l.EndOffset() && printed < show; {
		res, err := l.Read(off, commitlog.ReadOptions{MaxBytes: 64 << 10})
		if err != nil {
			return err
		}
		data := res.Batches
		for len(data) > 0 && printed < show {
			size, err := recordbatch.Size(data, len(data))
			if err != nil {
				return err
			}
			err = recordbatch.ForEachRecord(data[:size], func(r *recordbatch.Record) error {
				if r.Offset >= off && printed < show {
					fmt.Printf("  offset %d  %s  %q\n", r.Offset, time.UnixMilli(r.Timestamp).Format(time.RFC3339), r.Value)
					printed++
				}
				return nil
			})
			if err != nil {
				return err
			}
			data = data[size:]
		}
		off = res.NextOffset
	}
	for _, s := range l.Segments() {
		fmt.Printf("segment %s: offsets [%d, %d), raft indexes [%d, %d], %d bytes\n",
			s.Path, s.BaseOffset, s.NextOffset, s.BaseIndex, s.LastIndex, s.Bytes)
	}
	return nil
}
