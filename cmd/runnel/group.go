package main

import (
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	runnelv1 "github.com/runnel-io/runnel/proto/runnel/v1"
)

func (a *app) groupCmd() *cobra.Command {
	c := &cobra.Command{Use: "group", Short: "List, describe, reset and delete consumer groups' committed offsets", RunE: parentRun}
	c.AddCommand(a.groupListCmd(), a.groupDescribeCmd(), a.groupResetCmd(), a.groupDeleteCmd())
	return c
}

func (a *app) groupListCmd() *cobra.Command {
	return &cobra.Command{
		Use:     "list",
		Aliases: []string{"ls"},
		Short:   "List the groups that have committed offsets",
		Args:    noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx, cl, cancel, err := a.connect(cmd.Context())
			if err != nil {
				return err
			}
			defer cancel()
			resp, err := cl.offsets.ListGroups(ctx, &runnelv1.ListGroupsRequest{})
			if err != nil {
				return err
			}
			type groupJSON struct {
				Group          string     `json:"group"`
				State          string     `json:"state"`
				Members        int32      `json:"members"`
				Topics         []string   `json:"topics"`
				LastCommitTime *time.Time `json:"last_commit_time,omitempty"`
			}
			out := []groupJSON{}
			t := &table{header: []string{"GROUP", "STATE", "MEMBERS", "TOPICS", "LAST-COMMIT"}}
			for _, g := range resp.GetGroups() {
				out = append(out, groupJSON{g.GetGroup(), g.GetState(), g.GetMembers(), nonNil(g.GetTopics()), timePtr(g.GetLastCommitTime())})
				t.add(g.GetGroup(), orDash(g.GetState()), g.GetMembers(), strings.Join(g.GetTopics(), ","), timeString(g.GetLastCommitTime()))
			}
			return a.print(out, t)
		},
	}
}

func (a *app) groupDescribeCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "describe GROUP",
		Short: "Show a group's members and assignments, and its committed offset, log end and lag per partition",
		Args:  exactArgs(1, "a GROUP"),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx, cl, cancel, err := a.connect(cmd.Context())
			if err != nil {
				return err
			}
			defer cancel()
			resp, err := cl.offsets.DescribeGroup(ctx, &runnelv1.DescribeGroupRequest{Group: args[0]})
			if err != nil {
				return err
			}
			type partJSON struct {
				Topic          string     `json:"topic"`
				Partition      int32      `json:"partition"`
				Member         string     `json:"member,omitempty"`
				Committed      int64      `json:"committed"`
				LogStartOffset int64      `json:"log_start_offset"`
				LogEnd         int64      `json:"log_end"`
				Lag            int64      `json:"lag"`
				LagSeconds     float64    `json:"lag_seconds"`
				Metadata       string     `json:"metadata,omitempty"`
				CommitTime     *time.Time `json:"commit_time,omitempty"`
			}
			type memberJSON struct {
				Member     string   `json:"member"`
				Instance   string   `json:"instance,omitempty"`
				Epoch      int32    `json:"epoch"`
				State      string   `json:"state"`
				Topics     []string `json:"topics"`
				Assignment []string `json:"assignment"`
			}
			out := struct {
				Group      string       `json:"group"`
				State      string       `json:"state"`
				GroupEpoch int32        `json:"group_epoch"`
				TotalLag   int64        `json:"total_lag"`
				Members    []memberJSON `json:"members"`
				Partitions []partJSON   `json:"partitions"`
			}{resp.GetGroup(), resp.GetState(), resp.GetGroupEpoch(), resp.GetTotalLag(), []memberJSON{}, []partJSON{}}
			mt := &table{header: []string{"MEMBER", "INSTANCE", "EPOCH", "STATE", "TOPICS", "ASSIGNMENT"}}
			for _, m := range resp.GetMembers() {
				as := tpStrings(m.GetAssignment())
				out.Members = append(out.Members, memberJSON{m.GetMemberId(), m.GetInstanceId(), m.GetMemberEpoch(), m.GetState(), nonNil(m.GetSubscriptions()), as})
				mt.add(m.GetMemberId(), orDash(m.GetInstanceId()), m.GetMemberEpoch(), m.GetState(), strings.Join(m.GetSubscriptions(), ","), orDash(strings.Join(as, ",")))
			}
			t := &table{header: []string{"TOPIC", "PARTITION", "MEMBER", "COMMITTED", "LOG-END", "LAG", "LAG-TIME", "LAST-COMMIT"}}
			for _, p := range resp.GetPartitions() {
				out.Partitions = append(out.Partitions, partJSON{p.GetTopic(), p.GetPartition(), p.GetMemberId(), p.GetCommittedOffset(),
					p.GetLogStartOffset(), p.GetHighWatermark(), p.GetLag(), p.GetLagSeconds(), p.GetMetadata(), timePtr(p.GetCommitTime())})
				lagTime := "-"
				if s := p.GetLagSeconds(); s >= 0 {
					lagTime = time.Duration(s * float64(time.Second)).Round(time.Millisecond).String()
				}
				t.add(p.GetTopic(), p.GetPartition(), orDash(p.GetMemberId()), dashIfNeg(p.GetCommittedOffset()), dashIfNeg(p.GetHighWatermark()),
					dashIfNeg(p.GetLag()), lagTime, timeString(p.GetCommitTime()))
			}
			tables := []*table{kvTable("GROUP", resp.GetGroup(), "STATE", orDash(resp.GetState()), "MEMBERS", len(resp.GetMembers()), "TOTAL LAG", resp.GetTotalLag())}
			if len(resp.GetMembers()) > 0 {
				tables = append(tables, mt)
			}
			return a.print(out, append(tables, t)...)
		},
	}
}

func (a *app) groupResetCmd() *cobra.Command {
	var (
		topics  []string
		parts   []int32
		to      string
		execute bool
		force   bool
	)
	c := &cobra.Command{
		Use:   "reset GROUP --to earliest|latest|OFFSET|@TIME|shift:N",
		Short: "Reset a group's committed offsets (a dry run unless --execute)",
		Long: `Reset a group's committed offsets and print the plan: previous and new offset per partition.

--to: earliest, latest, an OFFSET, @RFC3339 or @-DURATION (the first record at or after that
time), or shift:N to move each committed offset by N (negative: back). Offsets are moved into
[log start, high watermark]. Without --topic, every partition the group has an offset for.
Nothing changes without --execute. A group with members is not reset unless --force.`,
		Args: exactArgs(1, "a GROUP"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if to == "" {
				return usagef("--to is required")
			}
			req := &runnelv1.ResetOffsetsRequest{Group: args[0], Execute: execute, Force: force}
			if len(parts) > 0 && len(topics) != 1 {
				return usagef("--partition needs exactly one --topic")
			}
			for _, t := range topics {
				req.Topics = append(req.Topics, &runnelv1.TopicPartitions{Topic: t, Partitions: parts})
			}
			if n, ok := strings.CutPrefix(to, "shift:"); ok {
				by, err := strconv.ParseInt(n, 10, 64)
				if err != nil {
					return usagef("invalid --to %q: shift:N needs an integer", to)
				}
				req.Target = &runnelv1.ResetOffsetsRequest_ShiftBy{ShiftBy: by}
			} else {
				pos, err := parseStart(to, time.Now())
				if err != nil {
					return usagef("invalid --to %q: want earliest, latest, OFFSET, @TIME or shift:N", to)
				}
				req.Target = &runnelv1.ResetOffsetsRequest_To{To: pos}
			}
			ctx, cl, cancel, err := a.connect(cmd.Context())
			if err != nil {
				return err
			}
			defer cancel()
			resp, err := cl.offsets.ResetOffsets(ctx, req)
			if err != nil {
				return err
			}
			type resetJSON struct {
				Topic     string `json:"topic"`
				Partition int32  `json:"partition"`
				Previous  int64  `json:"previous"`
				New       int64  `json:"new"`
			}
			out := struct {
				Group    string      `json:"group"`
				Executed bool        `json:"executed"`
				Offsets  []resetJSON `json:"offsets"`
			}{args[0], resp.GetExecuted(), []resetJSON{}}
			t := &table{header: []string{"TOPIC", "PARTITION", "PREVIOUS", "NEW"}}
			for _, r := range resp.GetOffsets() {
				out.Offsets = append(out.Offsets, resetJSON{r.GetTopic(), r.GetPartition(), r.GetPreviousOffset(), r.GetNewOffset()})
				prev := strconv.FormatInt(r.GetPreviousOffset(), 10)
				if r.GetPreviousOffset() < 0 {
					prev = "-"
				}
				t.add(r.GetTopic(), r.GetPartition(), prev, r.GetNewOffset())
			}
			if err := a.print(out, t); err != nil {
				return err
			}
			if !resp.GetExecuted() && a.format == "table" {
				fmt.Fprintln(a.stdout, "\ndry run: nothing changed; add --execute to apply")
			}
			return nil
		},
	}
	c.Flags().StringArrayVarP(&topics, "topic", "t", nil, "topic to reset (repeatable; default: every topic the group has offsets for)")
	c.Flags().Int32SliceVarP(&parts, "partition", "p", nil, "partitions of --topic to reset (default: all)")
	c.Flags().StringVar(&to, "to", "", "earliest|latest|OFFSET|@RFC3339|@-DURATION|shift:N (required)")
	c.Flags().BoolVar(&execute, "execute", false, "apply the reset (default: dry run)")
	c.Flags().BoolVar(&force, "force", false, "reset even while the group has members (refused otherwise)")
	return c
}

func (a *app) groupDeleteCmd() *cobra.Command {
	return &cobra.Command{
		Use:     "delete GROUP",
		Aliases: []string{"rm"},
		Short:   "Delete a group's committed offsets",
		Args:    exactArgs(1, "a GROUP"),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx, cl, cancel, err := a.connect(cmd.Context())
			if err != nil {
				return err
			}
			defer cancel()
			if _, err := cl.offsets.DeleteGroup(ctx, &runnelv1.DeleteGroupRequest{Group: args[0]}); err != nil {
				return err
			}
			t := &table{header: []string{"GROUP", "STATUS"}}
			t.add(args[0], "deleted")
			return a.print(map[string]string{"group": args[0], "status": "deleted"}, t)
		},
	}
}

// tpStrings renders partitions as topic:N.
func tpStrings(tps []*runnelv1.TopicPartitions) []string {
	out := []string{}
	for _, t := range tps {
		for _, p := range t.GetPartitions() {
			out = append(out, t.GetTopic()+":"+strconv.Itoa(int(p)))
		}
	}
	return out
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func dashIfNeg(n int64) string {
	if n < 0 {
		return "-"
	}
	return strconv.FormatInt(n, 10)
}
