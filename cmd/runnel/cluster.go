package main

import (
	"errors"
	"fmt"
	"strings"

	"github.com/spf13/cobra"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	runnelv1 "github.com/runnel-io/runnel/proto/runnel/v1"
)

func (a *app) clusterCmd() *cobra.Command {
	c := &cobra.Command{Use: "cluster", Short: "Inspect and rebalance the cluster", RunE: parentRun}
	c.AddCommand(a.clusterRebalanceCmd())
	c.AddCommand(&cobra.Command{
		Use:   "info",
		Short: "Show the cluster id, its brokers and their state, and the metadata leader",
		Args:  noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx, cl, cancel, err := a.connect(cmd.Context())
			if err != nil {
				return err
			}
			defer cancel()
			resp, err := cl.admin.DescribeCluster(ctx, &runnelv1.DescribeClusterRequest{})
			if err != nil {
				return err
			}
			type broker struct {
				ID             int32  `json:"id"`
				Address        string `json:"address"`
				State          string `json:"state"`
				Voter          bool   `json:"voter"`
				MetadataLeader bool   `json:"metadata_leader"`
				Version        string `json:"version"`
			}
			out := struct {
				ClusterID          string   `json:"cluster_id"`
				MetadataLeaderID   int32    `json:"metadata_leader_id"`
				RespondingBrokerID int32    `json:"responding_broker_id"`
				Brokers            []broker `json:"brokers"`
			}{resp.GetClusterId(), resp.GetMetadataLeaderId(), resp.GetRespondingBrokerId(), []broker{}}
			bt := &table{header: []string{"ID", "ADDRESS", "STATE", "VOTER", "METADATA-LEADER", "VERSION"}}
			for _, b := range resp.GetBrokers() {
				state := strings.ToLower(strings.TrimPrefix(b.GetState().String(), "BROKER_STATE_"))
				out.Brokers = append(out.Brokers, broker{b.GetId(), b.GetAddress(), state, b.GetIsVoter(), b.GetIsMetadataLeader(), b.GetVersion()})
				leader := ""
				if b.GetIsMetadataLeader() {
					leader = "*"
				}
				bt.add(b.GetId(), b.GetAddress(), state, b.GetIsVoter(), leader, b.GetVersion())
			}
			return a.print(out, kvTable("CLUSTER", resp.GetClusterId(), "METADATA LEADER", resp.GetMetadataLeaderId()), bt)
		},
	})
	return c
}

func (a *app) clusterRebalanceCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "rebalance",
		Short: "Move replicas onto the brokers holding the fewest (e.g. one that just joined) and print the moves",
		Long: `rebalance asks the metadata leader to move replicas from the brokers holding the most onto
those holding the fewest, until replica counts differ by at most one, and to even out
preferred leaders. It prints the moves decided, or "already balanced". It returns before
data has moved: each new replica catches up from the partition's leader before the one it
replaces is removed (watch the ISR column of "runnel topic describe").`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx, cl, cancel, err := a.connect(cmd.Context())
			if err != nil {
				return err
			}
			defer cancel()
			resp, err := cl.admin.RebalanceCluster(ctx, &runnelv1.RebalanceClusterRequest{})
			if status.Code(err) == codes.Unimplemented {
				return errors.New("cluster rebalance: the broker does not support RebalanceCluster (Unimplemented)")
			}
			if err != nil {
				return err
			}
			type move struct {
				Topic      string `json:"topic"`
				Partition  int32  `json:"partition"`
				FromBroker int32  `json:"from_broker"`
				ToBroker   int32  `json:"to_broker"`
			}
			out := struct {
				Moves []move `json:"moves"`
			}{[]move{}}
			mt := &table{header: []string{"TOPIC", "PARTITION", "FROM-BROKER", "TO-BROKER"}}
			for _, m := range resp.GetMoves() {
				out.Moves = append(out.Moves, move{m.GetTopic(), m.GetPartition(), m.GetFromBrokerId(), m.GetToBrokerId()})
				mt.add(m.GetTopic(), m.GetPartition(), m.GetFromBrokerId(), m.GetToBrokerId())
			}
			if len(out.Moves) == 0 && a.format != "json" {
				_, err := fmt.Fprintln(a.stdout, "already balanced")
				return err
			}
			return a.print(out, mt)
		},
	}
}
