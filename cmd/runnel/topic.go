package main

import (
	"sort"
	"strings"

	"github.com/spf13/cobra"

	runnelv1 "github.com/runnel-io/runnel/proto/runnel/v1"
)

func (a *app) topicCmd() *cobra.Command {
	c := &cobra.Command{Use: "topic", Short: "Create, list, describe, alter and delete topics", RunE: parentRun}
	c.AddCommand(a.topicCreateCmd(), a.topicListCmd(), a.topicDescribeCmd(), a.topicDeleteCmd(), a.topicAlterConfigCmd())
	return c
}

// topicJSON is a topic's summary in JSON output.
type topicJSON struct {
	Name              string `json:"name"`
	TopicID           string `json:"topic_id"`
	Partitions        int32  `json:"partitions"`
	ReplicationFactor int32  `json:"replication_factor"`
}

func topicOf(t *runnelv1.TopicSummary) topicJSON {
	return topicJSON{t.GetName(), t.GetTopicId(), t.GetPartitionCount(), t.GetReplicationFactor()}
}

// configJSON is one config entry in JSON output.
type configJSON struct {
	Name   string `json:"name"`
	Value  string `json:"value"`
	Source string `json:"source"`
}

func configsOf(entries []*runnelv1.ConfigEntry) ([]configJSON, *table) {
	out := []configJSON{}
	t := &table{header: []string{"CONFIG", "VALUE", "SOURCE"}}
	sorted := append([]*runnelv1.ConfigEntry(nil), entries...)
	sort.Slice(sorted, func(i, j int) bool { return sorted[i].GetName() < sorted[j].GetName() })
	for _, e := range sorted {
		src := strings.ToLower(strings.TrimPrefix(e.GetSource().String(), "CONFIG_SOURCE_"))
		out = append(out, configJSON{e.GetName(), e.GetValue(), src})
		t.add(e.GetName(), e.GetValue(), src)
	}
	return out, t
}

func (a *app) topicCreateCmd() *cobra.Command {
	var (
		partitions, replicas int32
		configs              []string
		validateOnly         bool
	)
	c := &cobra.Command{
		Use:   "create NAME",
		Short: "Create a topic",
		Args:  exactArgs(1, "a topic NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			cfg, err := parseKV("-c", configs)
			if err != nil {
				return err
			}
			ctx, cl, cancel, err := a.connect(cmd.Context())
			if err != nil {
				return err
			}
			defer cancel()
			resp, err := cl.admin.CreateTopic(ctx, &runnelv1.CreateTopicRequest{
				Name: args[0], Partitions: partitions, ReplicationFactor: replicas, Configs: cfg, ValidateOnly: validateOnly,
			})
			if err != nil {
				return err
			}
			t := topicOf(resp.GetTopic())
			tt := &table{header: []string{"TOPIC", "PARTITIONS", "REPLICAS", "STATUS"}}
			status := "created"
			if validateOnly {
				status = "valid (not created)"
			}
			tt.add(t.Name, t.Partitions, t.ReplicationFactor, status)
			return a.print(t, tt)
		},
	}
	c.Flags().Int32VarP(&partitions, "partitions", "p", 1, "number of partitions")
	c.Flags().Int32VarP(&replicas, "replicas", "r", 1, "replication factor")
	c.Flags().StringArrayVarP(&configs, "config", "c", nil, "topic config key=value (repeatable), e.g. retention.ms=3600000")
	c.Flags().BoolVar(&validateOnly, "dry-run", false, "validate the request without creating the topic")
	return c
}

func (a *app) topicListCmd() *cobra.Command {
	return &cobra.Command{
		Use:     "list",
		Aliases: []string{"ls"},
		Short:   "List topics",
		Args:    noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx, cl, cancel, err := a.connect(cmd.Context())
			if err != nil {
				return err
			}
			defer cancel()
			resp, err := cl.admin.ListTopics(ctx, &runnelv1.ListTopicsRequest{})
			if err != nil {
				return err
			}
			out := []topicJSON{}
			t := &table{header: []string{"NAME", "PARTITIONS", "REPLICAS", "ID"}}
			for _, s := range resp.GetTopics() {
				j := topicOf(s)
				out = append(out, j)
				t.add(j.Name, j.Partitions, j.ReplicationFactor, j.TopicID)
			}
			return a.print(out, t)
		},
	}
}

func (a *app) topicDescribeCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "describe NAME",
		Short: "Describe a topic: its partitions (leader, replicas, log start, high watermark) and configs",
		Args:  exactArgs(1, "a topic NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx, cl, cancel, err := a.connect(cmd.Context())
			if err != nil {
				return err
			}
			defer cancel()
			resp, err := cl.admin.DescribeTopic(ctx, &runnelv1.DescribeTopicRequest{Name: args[0]})
			if err != nil {
				return err
			}
			type partJSON struct {
				Partition      int32   `json:"partition"`
				Leader         int32   `json:"leader"`
				LeaderAddress  string  `json:"leader_address"`
				Replicas       []int32 `json:"replicas"`
				InSyncReplicas []int32 `json:"in_sync_replicas"`
				LogStartOffset int64   `json:"log_start_offset"`
				HighWatermark  int64   `json:"high_watermark"`
				SizeBytes      int64   `json:"size_bytes"`
			}
			t := topicOf(resp.GetTopic())
			out := struct {
				topicJSON
				PartitionList []partJSON   `json:"partition_list"`
				Configs       []configJSON `json:"configs"`
			}{topicJSON: t, PartitionList: []partJSON{}}
			pt := &table{header: []string{"PARTITION", "LEADER", "REPLICAS", "ISR", "LOG-START", "HIGH-WATERMARK", "SIZE"}}
			for _, p := range resp.GetPartitions() {
				out.PartitionList = append(out.PartitionList, partJSON{p.GetPartition(), p.GetLeaderId(), p.GetLeaderAddress(),
					nonNil(p.GetReplicas()), nonNil(p.GetInSyncReplicas()), p.GetLogStartOffset(), p.GetHighWatermark(), p.GetSizeBytes()})
				pt.add(p.GetPartition(), p.GetLeaderId(), joinInts(p.GetReplicas()), joinInts(p.GetInSyncReplicas()),
					p.GetLogStartOffset(), p.GetHighWatermark(), p.GetSizeBytes())
			}
			var ct *table
			out.Configs, ct = configsOf(resp.GetConfigs())
			summary := kvTable("NAME", t.Name, "ID", t.TopicID, "PARTITIONS", t.Partitions, "REPLICAS", t.ReplicationFactor)
			return a.print(out, summary, pt, ct)
		},
	}
}

func nonNil[T any](xs []T) []T {
	if xs == nil {
		return []T{}
	}
	return xs
}

func (a *app) topicDeleteCmd() *cobra.Command {
	return &cobra.Command{
		Use:     "delete NAME",
		Aliases: []string{"rm"},
		Short:   "Delete a topic and its data",
		Args:    exactArgs(1, "a topic NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx, cl, cancel, err := a.connect(cmd.Context())
			if err != nil {
				return err
			}
			defer cancel()
			if _, err := cl.admin.DeleteTopic(ctx, &runnelv1.DeleteTopicRequest{Name: args[0]}); err != nil {
				return err
			}
			t := &table{header: []string{"TOPIC", "STATUS"}}
			t.add(args[0], "deleted")
			return a.print(map[string]string{"topic": args[0], "status": "deleted"}, t)
		},
	}
}

func (a *app) topicAlterConfigCmd() *cobra.Command {
	var (
		set, del     []string
		validateOnly bool
	)
	c := &cobra.Command{
		Use:   "alter-config NAME",
		Short: "Set or delete (revert to default) topic configs",
		Args:  exactArgs(1, "a topic NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			m, err := parseKV("-c", set)
			if err != nil {
				return err
			}
			if len(m) == 0 && len(del) == 0 {
				return usagef("nothing to alter: give -c key=value or --delete key")
			}
			ctx, cl, cancel, err := a.connect(cmd.Context())
			if err != nil {
				return err
			}
			defer cancel()
			resp, err := cl.admin.AlterTopicConfigs(ctx, &runnelv1.AlterTopicConfigsRequest{
				Name: args[0], Set: m, Delete: del, ValidateOnly: validateOnly,
			})
			if err != nil {
				return err
			}
			out, t := configsOf(resp.GetConfigs())
			return a.print(out, t)
		},
	}
	c.Flags().StringArrayVarP(&set, "config", "c", nil, "config to set, key=value (repeatable)")
	c.Flags().StringArrayVar(&del, "delete", nil, "config to delete, reverting it to its default (repeatable)")
	c.Flags().BoolVar(&validateOnly, "dry-run", false, "validate the change without applying it")
	return c
}
