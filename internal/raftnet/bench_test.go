package raftnet

import (
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/raft"
	"github.com/rs/zerolog"
)

// countingConn counts Write calls: about one write system call each (loopback TCP, no partial
// writes at these sizes).
type countingConn struct {
	net.Conn
	writes *atomic.Int64
}

func (c countingConn) Write(b []byte) (int, error) {
	c.writes.Add(1)
	return c.Conn.Write(b)
}

type countingListener struct {
	net.Listener
	writes *atomic.Int64
}

func (l countingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return countingConn{c, l.writes}, nil
}

// Dial makes countingListener a raft.StreamLayer for NetworkTransport.
func (l countingListener) Dial(addr raft.ServerAddress, timeout time.Duration) (net.Conn, error) {
	c, err := net.DialTimeout("tcp", string(addr), timeout)
	if err != nil {
		return nil, err
	}
	return countingConn{c, l.writes}, nil
}

func cpuTime() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkIdleGroups measures what idle Raft groups cost: 3 brokers in this process, every
// group a 3-voter cluster across them, HeartbeatTimeout/ElectionTimeout 1s, CommitTimeout 1s,
// once every group has a leader. It reports the process's CPU (user+system, % of one core, the
// three brokers together), writes to sockets per second, and for raftnet frames read per second
// (messages: requests and responses). Run with -bench IdleGroups -benchtime 1x; RAFTNET_GROUPS
// and RAFTNET_MEASURE (a duration) override 100 groups and 5s. No pass/fail on the figures.
func BenchmarkIdleGroups(b *testing.B) {
	groups := 100
	if v, err := strconv.Atoi(os.Getenv("RAFTNET_GROUPS")); err == nil && v > 0 {
		groups = v
	}
	measure := 5 * time.Second
	if v, err := time.ParseDuration(os.Getenv("RAFTNET_MEASURE")); err == nil && v > 0 {
		measure = v
	}
	// raftnet/beats: coalesced heartbeats and probes on (the broker's setting), with the Raft
	// timeouts the broker gives partitions (partition.DefaultRaftConfig: heartbeat timeout 20 s,
	// commit timeout 5 s, lease 10 s); the others send every heartbeat as an RPC, timeouts 1 s.
	for _, kind := range []string{"raftnet/beats", "raftnet/linger=none", "raftnet/linger=10ms", "NetworkTransport"} {
		b.Run(fmt.Sprintf("%s/groups=%d", kind, groups), func(b *testing.B) {
			benchIdle(b, kind, groups, measure)
		})
	}
}

func benchIdle(b *testing.B, kind string, groups int, measure time.Duration) {
	var writes atomic.Int64
	const brokers = 3
	trans := make([][]raft.Transport, brokers) // [broker][group]
	var nets []*Network
	for i := range brokers {
		for g := range groups {
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				b.Fatal(err)
			}
			cl := countingListener{ln, &writes}
			defer ln.Close() // a Network leaves its listener to its owner
			if kind == "NetworkTransport" {
				trans[i] = append(trans[i], raft.NewNetworkTransport(cl, 3, 10*time.Second, io.Discard))
				continue
			}
			if g == 0 {
				linger := map[string]time.Duration{"raftnet/linger=none": -1, "raftnet/linger=10ms": 10 * time.Millisecond}[kind]
				beats := time.Duration(-1)
				if kind == "raftnet/beats" {
					beats = 0 // the default
				}
				n, err := New(Config{
					Linger:       linger,
					BeatInterval: beats, ProbeInterval: beats,
					Advertise: raft.ServerAddress(ln.Addr().String()),
					Listener:  cl,
					Logger:    zerolog.Nop(),
					Dial: func(ctx context.Context, addr string) (net.Conn, error) {
						var d net.Dialer
						c, err := d.DialContext(ctx, "tcp", addr)
						if err != nil {
							return nil, err
						}
						return countingConn{c, &writes}, nil
					},
				})
				if err != nil {
					b.Fatal(err)
				}
				nets = append(nets, n)
			} else {
				_ = ln.Close()
			}
			t, err := nets[i].Transport(fmt.Sprintf("topic/%d", g))
			if err != nil {
				b.Fatal(err)
			}
			trans[i] = append(trans[i], t)
		}
	}
	var rafts []*raft.Raft
	leaders := func() int {
		n := 0
		for _, r := range rafts {
			if r.State() == raft.Leader {
				n++
			}
		}
		return n
	}
	for g := range groups {
		var cfg raft.Configuration
		for i := range brokers {
			cfg.Servers = append(cfg.Servers, raft.Server{Suffrage: raft.Voter, ID: brokerID(i), Address: trans[i][g].LocalAddr()})
		}
		for i := range brokers {
			c := raft.DefaultConfig()
			c.LocalID = brokerID(i)
			c.HeartbeatTimeout = time.Second
			c.ElectionTimeout = time.Second
			c.LeaderLeaseTimeout = 500 * time.Millisecond
			c.CommitTimeout = time.Second
			if kind == "raftnet/beats" {
				c.HeartbeatTimeout, c.ElectionTimeout = 20*time.Second, 20*time.Second
				c.LeaderLeaseTimeout, c.CommitTimeout = 10*time.Second, 5*time.Second
			}
			c.LogOutput = io.Discard
			store := raft.NewInmemStore()
			r, err := raft.NewRaft(c, &fsm{}, store, store, raft.NewInmemSnapshotStore(), trans[i][g])
			if err != nil {
				b.Fatal(err)
			}
			if err := r.BootstrapCluster(cfg).Error(); err != nil {
				b.Fatal(err)
			}
			rafts = append(rafts, r)
		}
	}
	defer func() {
		var wg sync.WaitGroup
		for _, r := range rafts {
			wg.Go(func() { _ = r.Shutdown().Error() })
		}
		wg.Wait()
		for _, n := range nets {
			_ = n.Close()
		}
		for i := range trans {
			for _, t := range trans[i] {
				_ = t.(raft.WithClose).Close()
				if nt, ok := t.(*raft.NetworkTransport); ok {
					nt.CloseStreams() // its pooled connections, so that the peers' handlers end
				}
			}
		}
	}()
	waitFor(b, 2*time.Minute, "a leader in every group", func() bool { return leaders() == groups })
	time.Sleep(2 * time.Second) // settle: elections' and first commits' traffic

	runtime.GC()
	frames := func() (n int64) {
		for _, nw := range nets {
			n += nw.Stats().FramesIn
		}
		return n
	}
	b.ResetTimer()
	w0, f0, c0, t0 := writes.Load(), frames(), cpuTime(), time.Now()
	time.Sleep(measure) // the measurement window (the groups are idle)
	w1, f1, c1, t1 := writes.Load(), frames(), cpuTime(), time.Now()
	b.StopTimer()
	wall := t1.Sub(t0).Seconds()
	b.ReportMetric(100*(c1-c0).Seconds()/wall, "cpu%")
	b.ReportMetric(float64(w1-w0)/wall, "writes/s")
	if kind != "NetworkTransport" {
		b.ReportMetric(float64(f1-f0)/wall, "msgs/s")
	}
	b.ReportMetric(float64(runtime.NumGoroutine()), "goroutines")
	if l := leaders(); l != groups {
		b.Logf("%d of %d groups have a leader at the end", l, groups)
	}
}
