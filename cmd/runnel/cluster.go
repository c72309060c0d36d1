package main

import (
	"strings"

	"github.com/spf13/cobra"

	runnelv1 "github.com/runnel-io/runnel/proto/runnel/v1"
)

func (a *app) clusterCmd() *cobra.Command {
	c := &cobra.Command{Use: "cluster", Short: "Inspect the cluster", RunE: parentRun}
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
