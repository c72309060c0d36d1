// Command runnel is Runnel's command-line client, shaped like rpk: topics, producing and
// consuming lines of text, consumer group offsets and cluster information.
//
// Global flags: --brokers (RUNNEL_BROKERS; default 127.0.0.1:9420), --format table|json
// (RUNNEL_FORMAT) and --timeout (RUNNEL_TIMEOUT). A failure prints one line on stderr,
// "runnel: <message>", and exits 1; a usage error exits 2.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/runnel-io/runnel/internal/config"
	"github.com/runnel-io/runnel/internal/gctune"
	runnelv1 "github.com/runnel-io/runnel/proto/runnel/v1"
)

// defaultBrokers is the broker address used when neither --brokers nor RUNNEL_BROKERS is set.
const defaultBrokers = "127.0.0.1:9420"

// maxRecvBytes raises grpc-go's 4 MiB receive limit so that large fetches fit.
const maxRecvBytes = 128 << 20

// app is the state shared by every command: the global flags, the streams and the connection.
type app struct {
	brokers string
	format  string
	timeout time.Duration

	stdin          io.Reader
	stdout, stderr io.Writer

	conn *grpc.ClientConn
	// leaders holds the connections to metadata leaders that calls were redirected to
	// (followLeader).
	leaders   map[string]*grpc.ClientConn
	leadersMu sync.Mutex
	// atExit runs after the command, before run returns (bench --cpuprofile stops its profile).
	atExit []func()
}

// usageError marks a mistake in the command line (exit status 2).
type usageError struct{ err error }

func (e usageError) Error() string { return e.err.Error() }
func (e usageError) Unwrap() error { return e.err }

func usagef(format string, args ...any) error {
	return usageError{fmt.Errorf(format, args...)}
}

func main() {
	gctune.Apply() // GOGC=400 unless the environment says otherwise (internal/gctune)
	os.Exit(run(os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
}

// run executes the command line args and returns the exit status.
func run(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	a := &app{stdin: stdin, stdout: stdout, stderr: stderr}
	root := a.rootCmd()
	root.SetArgs(args)
	root.SetIn(stdin)
	root.SetOut(stdout)
	root.SetErr(stderr)
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	err := root.ExecuteContext(ctx)
	for _, f := range a.atExit {
		f()
	}
	if a.conn != nil {
		_ = a.conn.Close()
	}
	for _, c := range a.leaders {
		_ = c.Close()
	}
	if err == nil {
		return 0
	}
	fmt.Fprintf(stderr, "runnel: %s\n", oneLine(errMessage(err)))
	var ue usageError
	if errors.As(err, &ue) || strings.HasPrefix(err.Error(), "unknown command") ||
		strings.HasPrefix(err.Error(), "unknown flag") {
		return 2
	}
	return 1
}

func (a *app) rootCmd() *cobra.Command {
	root := &cobra.Command{
		Use:   "runnel",
		Short: "Runnel's command-line client",
		Long: `runnel manages topics, produces and consumes records, and inspects consumer groups
and the cluster of a Runnel broker, and measures it (runnel bench).`,
		SilenceErrors: true,
		SilenceUsage:  true,
		PersistentPreRunE: func(cmd *cobra.Command, _ []string) error {
			return a.loadGlobals(cmd)
		},
	}
	pf := root.PersistentFlags()
	pf.StringVar(&a.brokers, "brokers", defaultBrokers, "comma-separated seed broker addresses (host:port): requests go to the first reachable one, and from it to the metadata leader or each partition's leader (env RUNNEL_BROKERS)")
	pf.StringVar(&a.format, "format", "table", "output format: table or json (env RUNNEL_FORMAT)")
	pf.DurationVar(&a.timeout, "timeout", 10*time.Second, "timeout of each request to the broker (env RUNNEL_TIMEOUT)")
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return usageError{err} })
	root.AddCommand(a.topicCmd(), a.produceCmd(), a.consumeCmd(), a.groupCmd(), a.clusterCmd(), a.benchCmd())
	root.CompletionOptions.DisableDefaultCmd = true
	return root
}

// loadGlobals applies RUNNEL_BROKERS, RUNNEL_FORMAT and RUNNEL_TIMEOUT beneath the flags, through
// internal/config. Only these variables are read (not RUNNEL_CONFIG, which is runneld's file).
func (a *app) loadGlobals(cmd *cobra.Command) error {
	fs := pflag.NewFlagSet("runnel", pflag.ContinueOnError)
	env := map[string]string{}
	for _, name := range []string{"brokers", "format", "timeout"} {
		f := cmd.Flags().Lookup(name)
		if f == nil {
			continue
		}
		fs.AddFlag(f)
		key := config.EnvName("RUNNEL", name)
		if v, ok := os.LookupEnv(key); ok {
			env[key] = v
		}
	}
	if err := fs.Parse(nil); err != nil {
		return usageError{err}
	}
	if _, err := (config.Loader{Prefix: "RUNNEL", Env: env}).Load(fs); err != nil {
		return usageError{err}
	}
	switch a.format {
	case "table", "json":
	default:
		return usagef("invalid --format %q: want table or json", a.format)
	}
	if a.timeout <= 0 {
		return usagef("invalid --timeout %s: must be positive", a.timeout)
	}
	return nil
}

// dial connects to the first reachable broker of --brokers.
func (a *app) dial(ctx context.Context) (*grpc.ClientConn, error) {
	if a.conn != nil {
		return a.conn, nil
	}
	var addrs []string
	for _, s := range strings.Split(a.brokers, ",") {
		if s = strings.TrimSpace(s); s != "" {
			addrs = append(addrs, s)
		}
	}
	if len(addrs) == 0 {
		return nil, usagef("--brokers is empty")
	}
	var lastErr error
	for _, addr := range addrs {
		if _, _, err := net.SplitHostPort(addr); err != nil {
			return nil, usagef("invalid broker address %q: %v", addr, err)
		}
		d := net.Dialer{Timeout: min(a.timeout, 5*time.Second)}
		c, err := d.DialContext(ctx, "tcp", addr)
		if err != nil {
			lastErr = err
			continue
		}
		_ = c.Close()
		conn, err := grpc.NewClient(addr,
			grpc.WithTransportCredentials(insecure.NewCredentials()),
			grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(maxRecvBytes)),
			grpc.WithUnaryInterceptor(a.followLeader))
		if err != nil {
			lastErr = err
			continue
		}
		a.conn = conn
		return conn, nil
	}
	return nil, fmt.Errorf("no reachable broker in %q: %v", a.brokers, lastErr)
}

// clients returns the API clients over the connection to the broker.
type clients struct {
	admin   runnelv1.AdminServiceClient
	produce runnelv1.ProduceServiceClient
	fetch   runnelv1.FetchServiceClient
	offsets runnelv1.OffsetServiceClient
}

func (a *app) clients(ctx context.Context) (*clients, error) {
	conn, err := a.dial(ctx)
	if err != nil {
		return nil, err
	}
	return &clients{
		admin:   runnelv1.NewAdminServiceClient(conn),
		produce: runnelv1.NewProduceServiceClient(conn),
		fetch:   runnelv1.NewFetchServiceClient(conn),
		offsets: runnelv1.NewOffsetServiceClient(conn),
	}, nil
}

// rpcCtx bounds one request by --timeout.
func (a *app) rpcCtx(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, a.timeout)
}

// connect dials the brokers and returns the clients with a context bounded by --timeout, for a
// command that makes its calls right away. The caller defers cancel.
func (a *app) connect(ctx context.Context) (context.Context, *clients, context.CancelFunc, error) {
	cl, err := a.clients(ctx)
	if err != nil {
		return nil, nil, nil, err
	}
	rctx, cancel := a.rpcCtx(ctx)
	return rctx, cl, cancel, nil
}

// errMessage renders an error for the one-line report: a gRPC status's message and its
// ErrorInfo reason, if any.
func errMessage(err error) string {
	st, ok := status.FromError(err)
	if !ok {
		var ue usageError
		if errors.As(err, &ue) {
			return ue.err.Error()
		}
		return err.Error()
	}
	msg := st.Message()
	for _, d := range st.Details() {
		if info, ok := d.(*runnelv1.ErrorInfo); ok && info.GetReason() != runnelv1.ErrorReason_ERROR_REASON_UNSPECIFIED {
			msg += " (" + reasonName(info.GetReason()) + ")"
		}
	}
	if msg == "" {
		msg = st.Code().String()
	}
	return msg
}

func reasonName(r runnelv1.ErrorReason) string {
	return strings.TrimPrefix(r.String(), "ERROR_REASON_")
}

func oneLine(s string) string {
	s = strings.TrimSpace(s)
	return strings.Join(strings.Fields(strings.ReplaceAll(s, "\n", " ")), " ")
}

// exactArgs is cobra.ExactArgs with a usage error naming the arguments wanted.
func exactArgs(n int, names string) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if len(args) != n {
			return usagef("%s: want %s, got %d argument(s)", cmd.CommandPath(), names, len(args))
		}
		return nil
	}
}

func noArgs(cmd *cobra.Command, args []string) error {
	if len(args) != 0 {
		return usagef("%s takes no arguments, got %q", cmd.CommandPath(), args)
	}
	return nil
}

// parseKV parses key=value pairs.
func parseKV(flag string, pairs []string) (map[string]string, error) {
	m := make(map[string]string, len(pairs))
	for _, p := range pairs {
		k, v, ok := strings.Cut(p, "=")
		if !ok || k == "" {
			return nil, usagef("invalid %s %q: want key=value", flag, p)
		}
		m[k] = v
	}
	return m, nil
}

// parentRun is the RunE of commands that only group others: help without arguments, a usage
// error for an unknown subcommand.
func parentRun(cmd *cobra.Command, args []string) error {
	if len(args) > 0 {
		return usagef("unknown command %q for %q", args[0], cmd.CommandPath())
	}
	return cmd.Help()
}
