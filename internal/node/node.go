// Package node assembles one Runnel broker: the topic registry, the gRPC services, the server
// on its one port, and, in cluster mode, the Raft transport on that port (internal/raftnet),
// the cluster membership and metadata (internal/cluster) and the replicated partitions.
// cmd/runneld runs one; tests run several in one process (internal/brokertest).
//
// Start order (cluster mode): the registry opens empty; the server binds the port (so that
// port 0 is resolved before anything advertises it) with the Raft matcher registered on its
// cmux; the Raft network and the cluster start on the bound address; the registry is put
// under the metadata; then the port serves. Stop runs it backwards: the services stop, the
// server drains, the replicas close, the cluster closes (without leaving: a restart is not
// a departure), the Raft network closes.
package node

import (
	"context"
	"errors"
	"fmt"
	"net"
	"path/filepath"
	"strings"
	"sync/atomic"
	"time"

	"github.com/hashicorp/raft"
	"github.com/hashicorp/serf/serf"
	"github.com/rs/zerolog"
	"github.com/soheilhy/cmux"

	"github.com/runnel-io/runnel/broker"
	"github.com/runnel-io/runnel/internal/cluster"
	"github.com/runnel-io/runnel/internal/raftnet"
	"github.com/runnel-io/runnel/partition"
)

// Config configures a broker.
type Config struct {
	DataDir string
	// Addr is the one port (gRPC, HTTP, Raft), host:port; port 0 picks one.
	Addr string
	// Advertise is the address others dial (default: the bound address).
	Advertise string
	// NodeID is the broker id; in cluster mode it is kept in the data dir and must match.
	NodeID  int32
	Logger  zerolog.Logger
	Version string
	Pprof   bool
	// Partition is the base of every partition's options (nil: partition.DefaultOptions()).
	Partition *partition.Options
	// Cluster, if set, runs the broker as a member of a cluster.
	Cluster *ClusterConfig
}

// ClusterConfig configures cluster mode.
type ClusterConfig struct {
	// SerfAddr is the gossip address (host:port; port 0 picks one).
	SerfAddr string
	// SerfAdvertise is the gossip address others dial, if not SerfAddr's.
	SerfAdvertise string
	// Join lists Serf addresses of running brokers; empty founds a new cluster (when the
	// data dir is new).
	Join []string
	// Voters is how many brokers vote in the metadata group (default 3).
	Voters int
	// FailedTimeout is how long a failed broker keeps its replicas (default 30s).
	FailedTimeout time.Duration
	// PartitionRaft is the base Raft configuration of partitions (nil:
	// partition.DefaultRaftConfig).
	PartitionRaft *raft.Config
	// ReplicaRemoveDelay, SyncInterval: see broker.ClusterOptions.
	ReplicaRemoveDelay time.Duration
	SyncInterval       time.Duration
	// TuneMetaRaft and TuneSerf adjust the metadata group's Raft and Serf configurations
	// (tests shorten timeouts).
	TuneMetaRaft func(*raft.Config)
	TuneSerf     func(*serf.Config)
	// RaftDial, if set, opens the Raft connections to other brokers (tests cut links).
	RaftDial func(ctx context.Context, addr string) (net.Conn, error)
	// NoProbes turns off the Raft transport's liveness probes, and with them the elections
	// they start (raftnet liveness.go): for tests that cut every link and must keep Raft from
	// acting on it.
	NoProbes bool
}

// Node is a running broker.
type Node struct {
	cfg    Config
	log    zerolog.Logger
	reg    *broker.Registry
	svc    *broker.Services
	srv    *broker.Server
	net    *raftnet.Network
	netp   atomic.Pointer[raftnet.Network] // net, for the metrics collector
	cl     *cluster.Cluster
	raftLn net.Listener
	id     int32

	serveDone chan struct{} // closed when Serve returns
	serveErr  error         // Serve's result, set before serveDone closes
}

// Start starts a broker and serves its port.
func Start(cfg Config) (*Node, error) {
	n := &Node{cfg: cfg, log: cfg.Logger, id: cfg.NodeID}
	if err := checkDataDirMode(cfg.DataDir, cfg.Cluster != nil); err != nil {
		return nil, err
	}
	if cfg.Cluster != nil {
		id, err := cluster.LoadOrCreateBrokerID(cfg.DataDir, cfg.NodeID)
		if err != nil {
			return nil, err
		}
		n.id = id
	}
	reg, err := broker.OpenRegistry(broker.RegistryOptions{
		DataDir: cfg.DataDir, NodeID: n.id, Logger: cfg.Logger, Partition: cfg.Partition, Clustered: cfg.Cluster != nil,
	})
	if err != nil {
		return nil, err
	}
	n.reg = reg
	n.svc = broker.NewServices(broker.ServicesOptions{Registry: reg, Version: cfg.Version, Address: n.Addr})
	// Offsets (broker/offsets.go): fail at startup if <data-dir>/offsets.db cannot be opened
	// (e.g. another runneld holds it) rather than failing every offset call.
	if err := n.svc.OffsetStoreError(); err != nil {
		n.svc.Stop()
		return nil, errors.Join(err, reg.Close())
	}
	sc := broker.DefaultConfig()
	sc.Addr = cfg.Addr
	sc.Logger = cfg.Logger
	sc.Register = n.svc.Register
	sc.Metrics = n.registerMetrics
	sc.Pprof = cfg.Pprof
	if cfg.Cluster != nil {
		sc.Mux = func(m cmux.CMux) { n.raftLn = raftnet.Listen(m) }
	}
	n.srv, err = broker.New(sc)
	if err != nil {
		n.svc.Stop()
		return nil, errors.Join(err, reg.Close())
	}
	n.serveDone = make(chan struct{})
	if cfg.Cluster != nil {
		if err := n.startCluster(); err != nil {
			n.svc.Stop()
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			defer cancel()
			return nil, errors.Join(err, n.srv.Shutdown(ctx), n.closeCluster(), reg.Close())
		}
	}
	go func() {
		n.serveErr = n.srv.Serve()
		close(n.serveDone)
	}()
	return n, nil
}

func (n *Node) startCluster() error {
	cc := n.cfg.Cluster
	addr := n.Addr()
	probe := time.Duration(0) // the default
	if cc.NoProbes {
		probe = -1
	}
	nw, err := raftnet.New(raftnet.Config{
		ProbeInterval: probe,
		Advertise:     raft.ServerAddress(addr), Listener: n.raftLn, Dial: cc.RaftDial,
		PeerDown: n.reg.PeerDown, // fast failover: elections without waiting for Raft's timeout
		Logger:   n.log.With().Str("component", "raftnet").Logger(),
	})
	if err != nil {
		return err
	}
	n.net = nw
	n.netp.Store(nw)
	meta, err := nw.Transport("meta")
	if err != nil {
		return err
	}
	// The metadata group keeps Raft's short heartbeat timeout (1 s): its heartbeats stay RPCs.
	meta.(*raftnet.Transport).DisableCoalescing()
	ccfg := cluster.DefaultConfig()
	ccfg.DataDir = n.cfg.DataDir
	ccfg.BrokerID = n.id
	ccfg.Advertise = addr
	ccfg.SerfBind = cc.SerfAddr
	ccfg.SerfAdvertise = cc.SerfAdvertise
	ccfg.Join = cc.Join
	ccfg.Transport = meta
	if cc.Voters > 0 {
		ccfg.Voters = cc.Voters
	}
	if cc.FailedTimeout > 0 {
		ccfg.FailedTimeout = cc.FailedTimeout
	}
	ccfg.Logger = n.log // the cluster names its own components (cluster, serf)
	ccfg.TuneRaft, ccfg.TuneSerf = cc.TuneMetaRaft, cc.TuneSerf
	cl, err := cluster.New(ccfg)
	if err != nil {
		return err
	}
	n.cl = cl
	if err := cl.Start(); err != nil {
		return err
	}
	return n.reg.StartCluster(broker.ClusterOptions{
		Cluster: cl, Network: nw, Raft: cc.PartitionRaft,
		RemoveDelay: cc.ReplicaRemoveDelay, SyncInterval: cc.SyncInterval,
	})
}

// Addr returns the address clients and brokers dial: Advertise, else the bound address.
func (n *Node) Addr() string {
	if n.cfg.Advertise != "" {
		return n.cfg.Advertise
	}
	return n.srv.Addr().String()
}

// ID returns the broker id.
func (n *Node) ID() int32 { return n.id }

// Registry returns the broker's topic registry.
func (n *Node) Registry() *broker.Registry { return n.reg }

// Cluster returns the broker's cluster membership; nil on a single node.
func (n *Node) Cluster() *cluster.Cluster { return n.cl }

// SerfAddr returns the gossip address ("" on a single node).
func (n *Node) SerfAddr() string {
	if n.cl == nil {
		return ""
	}
	return n.cl.SerfAddr()
}

// Done is closed when the server stops serving (after Stop, or when serving fails).
func (n *Node) Done() <-chan struct{} { return n.serveDone }

// Stop stops the broker gracefully within ctx (see the package doc for the order). It
// returns the server's own failure too, if serving failed before.
func (n *Node) Stop(ctx context.Context) error {
	n.svc.Stop()
	shutErr := n.srv.Shutdown(ctx)
	<-n.serveDone
	regErr := n.reg.Close()
	serveErr := n.serveErr
	if errors.Is(serveErr, broker.ErrServerClosed) {
		// Stop came before the serving goroutine called Serve: a clean stop all the same.
		serveErr = nil
	}
	return errors.Join(serveErr, shutErr, regErr, n.closeCluster())
}

// Leave announces that this broker leaves the cluster for good (its replicas move
// elsewhere); Stop it afterwards.
func (n *Node) Leave() error {
	if n.cl == nil {
		return nil
	}
	return n.cl.Leave()
}

func (n *Node) closeCluster() error {
	var errs []error
	if n.cl != nil {
		errs = append(errs, n.cl.Close())
	}
	if n.net != nil {
		errs = append(errs, n.net.Close())
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("node: close cluster: %w", err)
	}
	return nil
}

// Errors of a data dir started in the other mode.
var (
	// ErrTopicsWithoutMetadata: a cluster member's data dir holds topics but no cluster
	// metadata (a single node's, or one whose meta/ was removed).
	ErrTopicsWithoutMetadata = errors.New("the data dir holds topics but no cluster metadata")
	// ErrClusterDataDir: a single node started on a cluster member's data dir.
	ErrClusterDataDir = errors.New("the data dir is a cluster member's")
)

// checkDataDirMode refuses a data dir written in the other mode (single node or cluster
// member): their topic directories differ, and a cluster member's would lose them.
func checkDataDirMode(dataDir string, clustered bool) error {
	if clustered {
		return checkClusterDataDir(dataDir)
	}
	has, err := cluster.HasMetadata(dataDir)
	if err != nil || !has {
		return err
	}
	return fmt.Errorf("%w: %s holds cluster metadata (%s); start it with --serf-addr (and --join) as before",
		ErrClusterDataDir, dataDir, filepath.Join(dataDir, "meta"))
}

// checkClusterDataDir refuses to start a cluster member on a data dir that holds topic
// directories but no metadata Raft state: a single node's data dir (runneld without
// --serf-addr), or one whose meta/ was removed. In cluster mode the metadata says which
// topics exist, and the first replica sync removes the directories of the others: it would
// delete every record of that data dir (found by hand in session 6; before this check the
// topics of a single node started with --serf-addr were gone without a word).
func checkClusterDataDir(dataDir string) error {
	has, err := cluster.HasMetadata(dataDir)
	if err != nil || has {
		return err
	}
	topics, err := broker.TopicDirs(dataDir)
	if err != nil || len(topics) == 0 {
		return err
	}
	return fmt.Errorf("%w: %s has %d topic directories (%s) and no %s: it is a single node's data "+
		"dir (runneld without --serf-addr) or its metadata was removed, and joining a cluster would "+
		"delete them; start it without --serf-addr, or move the topic directories away",
		ErrTopicsWithoutMetadata, dataDir, len(topics), strings.Join(topics[:min(3, len(topics))], ", "),
		filepath.Join(dataDir, "meta"))
}
