// Command runneld is the Runnel broker. With no flags it is a working single-node broker:
// data under ./data, the gRPC API and HTTP (/healthz, /metrics) on 127.0.0.1:9420.
//
// Flags may also be given as RUNNEL_* environment variables or in a YAML file (--config); see
// internal/config. With --serf-addr it is a member of a cluster (docs/cluster.md): the first
// broker founds it, the others are started with --join.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"runtime/debug"
	"strings"
	"syscall"
	"time"

	"github.com/rs/zerolog"
	"github.com/spf13/pflag"

	"github.com/runnel-io/runnel/broker"
	"github.com/runnel-io/runnel/internal/cluster"
	"github.com/runnel-io/runnel/internal/config"
	"github.com/runnel-io/runnel/internal/gctune"
	"github.com/runnel-io/runnel/internal/node"
)

// shutdownTimeout bounds the graceful stop; what remains after it is cut off.
const shutdownTimeout = 10 * time.Second

type options struct {
	dataDir       string
	addr          string
	nodeID        int32
	serfAddr      string
	join          []string
	advertiseAddr string
	serfAdvertise string
	voters        int
	failedTimeout time.Duration
	logFormat     string
	logLevel      string
	pprof         bool
}

func main() {
	gctune.Apply() // GOGC=400 unless the environment says otherwise (internal/gctune)
	os.Exit(run(os.Args[1:], os.Stderr))
}

func run(args []string, stderr io.Writer) int {
	var o options
	fs := pflag.NewFlagSet("runneld", pflag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&o.dataDir, "data-dir", "./data", "directory holding the broker's topics and logs")
	fs.StringVar(&o.addr, "addr", broker.DefaultAddr, "host:port for the gRPC API and HTTP (/healthz, /metrics); port 0 picks a free port")
	fs.Int32Var(&o.nodeID, "node-id", 1, "this broker's id, unique in the cluster")
	fs.StringVar(&o.serfAddr, "serf-addr", "", "host:port for cluster membership gossip (Serf, TCP and UDP); set it to run as a member of a cluster (empty: a single node)")
	fs.StringSliceVar(&o.join, "join", nil, "serf addresses of running brokers to join (cluster mode; none: found a new cluster if the data dir is new)")
	fs.StringVar(&o.advertiseAddr, "advertise-addr", "", "host:port clients and other brokers reach this broker at, reported in metadata (default: the listening address)")
	fs.StringVar(&o.serfAdvertise, "serf-advertise-addr", "", "host:port other brokers reach this broker's gossip at (default: --serf-addr)")
	fs.IntVar(&o.voters, "voters", cluster.DefaultVoters, "brokers that vote in the metadata Raft group (1, 3, 5 or 7); others replicate it without voting")
	fs.DurationVar(&o.failedTimeout, "failed-timeout", cluster.DefaultFailedTimeout, "how long a failed broker keeps its partition replicas before they are reassigned")
	fs.String(config.DefaultConfigFlag, "", "YAML file with flag values (keys are flag names); flags and RUNNEL_* variables override it")
	fs.StringVar(&o.logFormat, "log-format", "auto", "log format: auto (console on a terminal, else json), console or json")
	fs.StringVar(&o.logLevel, "log-level", "info", "log level: trace, debug, info, warn, error")
	fs.BoolVar(&o.pprof, "pprof", false, "serve Go's profiler under /debug/pprof/ on the HTTP side of --addr")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, pflag.ErrHelp) {
			return 0
		}
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "runneld: unexpected arguments: %s\n", strings.Join(fs.Args(), " "))
		return 2
	}
	res, err := config.Load(fs, "RUNNEL")
	if err != nil {
		fmt.Fprintf(stderr, "runneld: %v\n", err)
		return 2
	}
	logger, err := newLogger(o.logFormat, o.logLevel, stderr)
	if err != nil {
		fmt.Fprintf(stderr, "runneld: %v\n", err)
		return 2
	}
	for _, name := range res.Ignored {
		logger.Warn().Str("variable", name).Msg("ignoring environment variable that matches no flag")
	}
	if err := serve(o, logger); err != nil {
		logger.Error().Err(err).Msg("runneld failed")
		return 1
	}
	return 0
}

func newLogger(format, level string, w io.Writer) (zerolog.Logger, error) {
	lvl, err := zerolog.ParseLevel(strings.ToLower(level))
	if err != nil || level == "" {
		return zerolog.Logger{}, fmt.Errorf("--log-level %q: want trace, debug, info, warn or error", level)
	}
	switch format {
	case "auto":
		if isTerminal(w) {
			w = zerolog.ConsoleWriter{Out: w, TimeFormat: time.RFC3339}
		}
	case "console":
		w = zerolog.ConsoleWriter{Out: w, TimeFormat: time.RFC3339, NoColor: !isTerminal(w)}
	case "json":
	default:
		return zerolog.Logger{}, fmt.Errorf("--log-format %q: want auto, console or json", format)
	}
	return zerolog.New(w).Level(lvl).With().Timestamp().Logger(), nil
}

func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}

func version() string {
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
		return bi.Main.Version
	}
	return "dev"
}

func serve(o options, log zerolog.Logger) error {
	if o.nodeID < 0 {
		return fmt.Errorf("--node-id %d: must be at least 0", o.nodeID)
	}
	if o.advertiseAddr != "" {
		if _, _, err := net.SplitHostPort(o.advertiseAddr); err != nil {
			return fmt.Errorf("--advertise-addr %q: %w", o.advertiseAddr, err)
		}
	}
	cfg := node.Config{
		DataDir: o.dataDir, Addr: o.addr, Advertise: o.advertiseAddr, NodeID: o.nodeID,
		Logger: log, Version: version(), Pprof: o.pprof,
	}
	if o.serfAddr == "" && len(o.join) > 0 {
		return fmt.Errorf("--join needs --serf-addr (this broker's own gossip address)")
	}
	if o.serfAddr != "" {
		if _, _, err := net.SplitHostPort(o.serfAddr); err != nil {
			return fmt.Errorf("--serf-addr %q: %w", o.serfAddr, err)
		}
		cfg.Cluster = &node.ClusterConfig{
			SerfAddr: o.serfAddr, SerfAdvertise: o.serfAdvertise, Join: o.join,
			Voters: o.voters, FailedTimeout: o.failedTimeout,
		}
	}
	n, err := node.Start(cfg)
	if err != nil {
		return err
	}
	ev := log.Info().Str("addr", n.Addr()).Str("data_dir", o.dataDir).Int32("node_id", n.ID()).
		Str("cluster_id", n.Registry().ClusterID()).Str("version", version())
	if cfg.Cluster != nil {
		ev = ev.Str("serf_addr", n.SerfAddr()).Strs("join", o.join)
	}
	ev.Msg("runneld started")

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	select {
	case <-ctx.Done():
		log.Info().Msg("signal received, shutting down")
	case <-n.Done():
	}
	stop() // a second signal now kills the process the default way

	sctx, cancel := context.WithTimeout(context.Background(), shutdownTimeout)
	defer cancel()
	if err := n.Stop(sctx); err != nil {
		return err
	}
	log.Info().Msg("runneld stopped")
	return nil
}
