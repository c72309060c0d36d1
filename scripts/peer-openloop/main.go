// Command peer-openloop measures NATS JetStream the way `runnel bench produce --rate` measures
// Runnel: an open loop at a fixed rate, each message published synchronously (from its own
// goroutine, so that a slow acknowledgement does not hold back the messages due after it),
// latency from the message's scheduled time to its acknowledgement. nats-bench's pub-sync is
// a closed loop (one message at a time, as fast as acknowledgements come back); this is the
// same peer measured at the fixed rate of issue 3. See scripts/bench-peer-openloop.sh, which
// starts the server as nats-bench does.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"slices"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"golang.org/x/sys/unix"
)

func main() {
	url := flag.String("url", nats.DefaultURL, "server")
	msgs := flag.Int("msgs", 25000, "messages")
	size := flag.Int("size", 100, "message size in bytes")
	rate := flag.Float64("rate", 5000, "messages per second")
	async := flag.Bool("async", false, "publish with PublishAsync (acknowledgement futures) instead of a synchronous Publish per message")
	flag.Parse()
	if err := run(*url, *msgs, *size, *rate, *async); err != nil {
		fmt.Fprintln(os.Stderr, "peer-openloop:", err)
		os.Exit(1)
	}
}

func run(url string, msgs, size int, rate float64, async bool) error {
	nc, err := nats.Connect(url)
	if err != nil {
		return err
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return err
	}
	ctx := context.Background()
	_ = js.DeleteStream(ctx, "openloop")
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{
		Name: "openloop", Subjects: []string{"openloop.s"}, Storage: jetstream.FileStorage, Replicas: 1,
	}); err != nil {
		return err
	}
	payload := make([]byte, size)
	for i := 0; i < 200; i++ { // warm the connection and the stream, not measured
		if _, err := js.Publish(ctx, "openloop.s", payload); err != nil {
			return err
		}
	}
	fd, err := unix.TimerfdCreate(unix.CLOCK_MONOTONIC, unix.TFD_NONBLOCK|unix.TFD_CLOEXEC)
	if err != nil {
		return err
	}
	tf := os.NewFile(uintptr(fd), "timerfd")
	defer tf.Close()
	lat := make([]time.Duration, msgs)
	lag := make([]time.Duration, msgs)
	var wg sync.WaitGroup
	var errMu sync.Mutex
	var firstErr error
	start := time.Now().Add(10 * time.Millisecond)
	for i := 0; i < msgs; i++ {
		due := start.Add(time.Duration(float64(i) / rate * float64(time.Second)))
		if d := time.Until(due); d > 0 {
			its := unix.ItimerSpec{Value: unix.NsecToTimespec(int64(d))}
			if err := unix.TimerfdSettime(fd, 0, &its, nil); err != nil {
				return err
			}
			var exp [8]byte
			if _, err := tf.Read(exp[:]); err != nil {
				return err
			}
		}
		lag[i] = time.Since(due)
		wg.Add(1)
		if async {
			fut, err := js.PublishAsync("openloop.s", payload)
			if err != nil {
				return err
			}
			go func() {
				defer wg.Done()
				select {
				case <-fut.Ok():
				case err := <-fut.Err():
					errMu.Lock()
					firstErr = err
					errMu.Unlock()
				}
				lat[i] = time.Since(due)
			}()
			continue
		}
		go func() {
			defer wg.Done()
			_, err := js.Publish(ctx, "openloop.s", payload)
			lat[i] = time.Since(due)
			if err != nil {
				errMu.Lock()
				firstErr = err
				errMu.Unlock()
			}
		}()
	}
	wg.Wait()
	secs := time.Since(start).Seconds()
	if firstErr != nil {
		return firstErr
	}
	q := func(v []time.Duration) map[string]float64 {
		s := slices.Clone(v)
		slices.Sort(s)
		at := func(p float64) float64 { return float64(s[min(len(s)-1, int(p*float64(len(s))))]) / 1e6 }
		return map[string]float64{"p50": at(0.50), "p99": at(0.99), "p999": at(0.999), "max": float64(s[len(s)-1]) / 1e6}
	}
	out, _ := json.Marshal(map[string]any{
		"peer": "nats-jetstream", "op": map[bool]string{false: "pub-sync-open-loop", true: "pub-async-open-loop"}[async], "size": size, "msgs": msgs, "rate": rate,
		"records_per_sec": float64(msgs) / secs, "latency_ms": q(lat), "send_lag_ms": q(lag),
	})
	fmt.Println(string(out))
	return nil
}
