package broker

import (
	"context"
	"sort"
	"strings"
	"sync/atomic"

	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"

	runnelv1 "github.com/runnel-io/runnel/proto/runnel/v1"
	"github.com/runnel-io/runnel/topic"
)

// RestartRequiredHeader is the response header AlterTopicConfigs sets, listing (comma
// separated) the config keys that take effect only when the broker restarts: the commitlog
// cannot change its segment and retention settings while a partition is open. The response
// already reports the new values.
const RestartRequiredHeader = "runnel-effective-after-restart"

// Services are the API's gRPC services on one broker: AdminService, ProduceService and
// FetchService over a Registry. Create them with NewServices, add them to a Server with
// Register (as Config.Register), and call Stop before Server.Shutdown so that waiting
// fetches end at once instead of holding up the graceful stop.
type Services struct {
	reg     *Registry
	addr    func() string // the address clients reach this broker at
	version string

	stopCtx  context.Context // done once Stop is called
	fetching atomic.Int32    // Fetch calls inside partition.Fetch (tests wait on it)
	stop     context.CancelFunc

	admin   adminService
	produce produceService
	fetch   fetchService
	offsets offsetService     // OffsetService (offsets.go): its store opens in NewServices, closes in Stop
	groups  *groupCoordinator // groups.go: the consumer groups' coordinator and commit batcher
	group   groupService      // GroupService (groups.go)

	metrics *brokerMetrics // metrics.go: topic, partition and group metrics; see RegisterMetrics
}

// ServicesOptions configure Services.
type ServicesOptions struct {
	// Registry holds the topics. Required. Services do not close it.
	Registry *Registry
	// Address returns the address clients reach this broker at (host:port), for metadata:
	// --advertise-addr, else the listening address. Called per request, so it may be set up
	// after the listener exists.
	Address func() string
	// Version is the broker's version, reported by DescribeCluster.
	Version string
}

// NewServices returns the services over opts.Registry.
func NewServices(opts ServicesOptions) *Services {
	s := &Services{reg: opts.Registry, addr: opts.Address, version: opts.Version}
	if s.addr == nil {
		s.addr = func() string { return "" }
	}
	s.stopCtx, s.stop = context.WithCancel(context.Background())
	s.admin.s, s.produce.s, s.fetch.s = s, s, s
	s.produce.sticky = topic.NewStickyPartitioner(nil)
	// Offsets (offsets.go): open <data-dir>/offsets.db; see OffsetStoreError.
	s.offsets.s = s
	s.offsets.open()
	s.groups, s.group.s = newGroupCoordinator(s), s
	s.metrics = newBrokerMetrics(s)
	return s
}

// Register adds the services to a gRPC server (use it as Config.Register).
func (s *Services) Register(g *grpc.Server) {
	runnelv1.RegisterAdminServiceServer(g, &s.admin)
	runnelv1.RegisterProduceServiceServer(g, &s.produce)
	runnelv1.RegisterFetchServiceServer(g, &s.fetch)
	runnelv1.RegisterOffsetServiceServer(g, &s.offsets) // offsets.go
	runnelv1.RegisterGroupServiceServer(g, &s.group)    // groups.go
}

// Stop makes waiting fetches return (UNAVAILABLE, SHUTTING_DOWN) and new ones fail at once.
// Call it when shutdown begins, before Server.Shutdown. Idempotent.
func (s *Services) Stop() {
	s.stop()
	s.groups.stop()
	// Offsets (offsets.go): close <data-dir>/offsets.db, after the transactions in progress.
	if err := s.offsets.close(); err != nil {
		s.reg.log.Error().Err(err).Msg("closing the offset store")
	}
}

func (s *Services) broker() *runnelv1.Broker {
	return &runnelv1.Broker{
		Id: s.reg.NodeID(), Address: s.addr(), State: runnelv1.BrokerState_BROKER_STATE_ALIVE,
		IsVoter: true, IsMetadataLeader: true, Version: s.version,
	}
}

type adminService struct {
	runnelv1.UnimplementedAdminServiceServer
	s *Services
}

func summary(info TopicInfo) *runnelv1.TopicSummary {
	return &runnelv1.TopicSummary{
		Name: info.Name, TopicId: info.ID, PartitionCount: info.Partitions, ReplicationFactor: info.ReplicationFactor,
	}
}

func configEntries(info TopicInfo) []*runnelv1.ConfigEntry {
	all := info.Config.Map()
	keys := topic.Keys()
	out := make([]*runnelv1.ConfigEntry, 0, len(keys))
	for _, k := range keys {
		src := runnelv1.ConfigSource_CONFIG_SOURCE_DEFAULT
		if _, ok := info.Overrides[k]; ok {
			src = runnelv1.ConfigSource_CONFIG_SOURCE_TOPIC
		}
		out = append(out, &runnelv1.ConfigEntry{Name: k, Value: all[k], Source: src})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

func (a *adminService) CreateTopic(_ context.Context, req *runnelv1.CreateTopicRequest) (*runnelv1.CreateTopicResponse, error) {
	w := at(req.GetName(), -1)
	if req.GetName() == "" {
		return nil, invalidRequest("name", "create topic: name is required")
	}
	info, err := a.s.reg.Create(CreateRequest{
		Name: req.GetName(), Partitions: req.GetPartitions(), ReplicationFactor: req.GetReplicationFactor(),
		Configs: req.GetConfigs(), ValidateOnly: req.GetValidateOnly(),
	})
	if err != nil {
		return nil, callError(w, err)
	}
	return &runnelv1.CreateTopicResponse{Topic: summary(info), Configs: configEntries(info)}, nil
}

func (a *adminService) DeleteTopic(_ context.Context, req *runnelv1.DeleteTopicRequest) (*runnelv1.DeleteTopicResponse, error) {
	if req.GetName() == "" {
		return nil, invalidRequest("name", "delete topic: name is required")
	}
	if err := a.s.reg.Delete(req.GetName()); err != nil {
		return nil, callError(at(req.GetName(), -1), err)
	}
	return &runnelv1.DeleteTopicResponse{}, nil
}

func (a *adminService) ListTopics(context.Context, *runnelv1.ListTopicsRequest) (*runnelv1.ListTopicsResponse, error) {
	topics := a.s.reg.List()
	out := &runnelv1.ListTopicsResponse{Topics: make([]*runnelv1.TopicSummary, len(topics))}
	for i, t := range topics {
		out.Topics[i] = summary(t)
	}
	return out, nil
}

func (a *adminService) DescribeTopic(_ context.Context, req *runnelv1.DescribeTopicRequest) (*runnelv1.DescribeTopicResponse, error) {
	if req.GetName() == "" {
		return nil, invalidRequest("name", "describe topic: name is required")
	}
	info, routes, err := a.s.reg.Routes(req.GetName(), a.s.addr())
	if err != nil {
		return nil, callError(at(req.GetName(), -1), err)
	}
	out := &runnelv1.DescribeTopicResponse{Topic: summary(info), Configs: configEntries(info)}
	for _, rt := range routes {
		pd := &runnelv1.PartitionDescription{
			Partition: rt.Partition, LeaderId: rt.LeaderID, LeaderAddress: rt.LeaderAddr,
			Replicas: rt.Replicas, InSyncReplicas: rt.InSync,
			LogStartOffset: -1, HighWatermark: -1, SizeBytes: -1,
		}
		if st := rt.Stats; st != nil {
			// This broker's replica: on a follower the high watermark is what it knows is
			// committed, at most a heartbeat behind the leader's.
			pd.LogStartOffset, pd.HighWatermark, pd.SizeBytes = st.LogStartOffset, st.HighWatermark, st.SizeBytes
		}
		out.Partitions = append(out.Partitions, pd)
	}
	return out, nil
}

func (a *adminService) AlterTopicConfigs(ctx context.Context, req *runnelv1.AlterTopicConfigsRequest) (*runnelv1.AlterTopicConfigsResponse, error) {
	if req.GetName() == "" {
		return nil, invalidRequest("name", "alter topic configs: name is required")
	}
	if len(req.GetSet()) == 0 && len(req.GetDelete()) == 0 {
		return nil, invalidRequest("set", "topic %q: alter topic configs: nothing to set or delete", req.GetName())
	}
	for _, k := range req.GetDelete() {
		if _, ok := req.GetSet()[k]; ok {
			return nil, invalidRequest("delete", "topic %q: alter topic configs: %q is both set and deleted", req.GetName(), k)
		}
	}
	info, restart, err := a.s.reg.AlterConfigs(req.GetName(), req.GetSet(), req.GetDelete(), req.GetValidateOnly())
	if err != nil {
		return nil, callError(at(req.GetName(), -1), err)
	}
	if len(restart) > 0 {
		_ = grpc.SetHeader(ctx, metadata.Pairs(RestartRequiredHeader, strings.Join(restart, ",")))
	}
	return &runnelv1.AlterTopicConfigsResponse{Configs: configEntries(info)}, nil
}

func (a *adminService) DescribeCluster(context.Context, *runnelv1.DescribeClusterRequest) (*runnelv1.DescribeClusterResponse, error) {
	brokers, leader := a.s.reg.Brokers(a.s.broker())
	return &runnelv1.DescribeClusterResponse{
		ClusterId: a.s.reg.ClusterID(), MetadataLeaderId: leader,
		Brokers: brokers, RespondingBrokerId: a.s.reg.NodeID(),
	}, nil
}

func (a *adminService) RebalanceCluster(context.Context, *runnelv1.RebalanceClusterRequest) (*runnelv1.RebalanceClusterResponse, error) {
	moves, err := a.s.reg.Rebalance()
	if err != nil {
		return nil, callError(where{partition: -1, offset: -1}, err)
	}
	out := &runnelv1.RebalanceClusterResponse{}
	for _, m := range moves {
		out.Moves = append(out.Moves, &runnelv1.ReplicaMove{Topic: m.Topic, Partition: m.Partition, FromBrokerId: m.From, ToBrokerId: m.To})
	}
	return out, nil
}

func (a *adminService) GetMetadata(_ context.Context, req *runnelv1.GetMetadataRequest) (*runnelv1.GetMetadataResponse, error) {
	brokers, leader := a.s.reg.Brokers(a.s.broker())
	out := &runnelv1.GetMetadataResponse{
		ClusterId: a.s.reg.ClusterID(), MetadataLeaderId: leader, Brokers: brokers,
	}
	names := req.GetTopics()
	if len(names) == 0 {
		for _, t := range a.s.reg.List() {
			names = append(names, t.Name)
		}
	}
	for _, name := range names {
		info, routes, err := a.s.reg.Routes(name, a.s.addr())
		if err != nil {
			out.Topics = append(out.Topics, &runnelv1.TopicMetadata{Name: name, Error: apiErrorOf(at(name, -1), err).proto()})
			continue
		}
		tm := &runnelv1.TopicMetadata{Name: name, TopicId: info.ID}
		for _, rt := range routes {
			tm.Partitions = append(tm.Partitions, &runnelv1.PartitionMetadata{
				Partition: rt.Partition, LeaderId: rt.LeaderID, LeaderAddress: rt.LeaderAddr,
				Replicas: rt.Replicas, InSyncReplicas: rt.InSync,
			})
		}
		out.Topics = append(out.Topics, tm)
	}
	return out, nil
}
