package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/types/known/emptypb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/runnel-io/runnel/client"
	"github.com/runnel-io/runnel/internal/recordbatch"
	runnelv1 "github.com/runnel-io/runnel/proto/runnel/v1"
)

type consumeOpts struct {
	partition int32
	offset    string
	count     int64
	exitAtEnd bool
	group     string
	format    string
	maxWait   time.Duration
	// followerReads reads each partition from a follower replica (client.WithFollowerReads).
	followerReads bool
}

func (a *app) consumeCmd() *cobra.Command {
	var o consumeOpts
	c := &cobra.Command{
		Use:   "consume TOPIC",
		Short: "Consume records and print them",
		Long: `Consume records of a topic (every partition, interleaved, unless -p) and print each with -f.

-o is where to start: start (the log start), end (the high watermark), an OFFSET, @RFC3339 (the
first record at or after that time) or @DURATION relative to now (@-1h). --exit-at-end stops
each partition at the high watermark it had when the command started.

With -g GROUP the command joins the consumer group: the group's coordinator gives it a share of
the topic's partitions, so several such processes split the partitions between them, and moves
partitions as processes join, leave or die. Each partition starts at the group's committed
offset (-o where there is none); what is printed is committed after every batch and whenever
a partition moves; SIGINT (or -n) commits and leaves the group cleanly. With -p or --exit-at-end,
-g only commits (the command reads the partitions itself, outside the group's membership: the
broker refuses that while the group has members).

Records are streamed through the Go SDK's consumer (one Subscribe stream per partition); a
stream broken by a retriable failure (the broker restarting) is resumed where it stopped.
--follower-reads reads each partition from a follower replica (cluster mode), up to what that
replica knows is committed; a failing follower is left for the leader.

-f FORMAT: %k key, %v value, %p partition, %o offset, %t timestamp (unix ms), %h headers
(k=v,k=v), %% a percent sign; \n, \t and \\ are escapes. Default: %v\n.`,
		Args: exactArgs(1, "a TOPIC"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if !cmd.Flags().Changed("partition") {
				o.partition = -1
			}
			return a.consume(cmd.Context(), args[0], o)
		},
	}
	f := c.Flags()
	f.Int32VarP(&o.partition, "partition", "p", -1, "partition to consume (default: all)")
	f.StringVarP(&o.offset, "offset", "o", "start", "start position: start|end|OFFSET|@RFC3339|@-DURATION")
	f.Int64VarP(&o.count, "num", "n", 0, "exit after this many records (0: no limit)")
	f.BoolVar(&o.exitAtEnd, "exit-at-end", false, "exit when every consumed partition reaches its high watermark")
	f.StringVarP(&o.group, "group", "g", "", "consumer group: join it (share the partitions with its other members), start from its committed offsets and commit as records are printed")
	f.StringVarP(&o.format, "format-record", "f", `%v\n`, "record format (see above)")
	f.BoolVar(&o.followerReads, "follower-reads", false, "read each partition from one of its follower replicas instead of its leader (cluster mode): records up to what that replica knows is committed, possibly a little behind the leader; falls back to the leader on errors")
	f.DurationVar(&o.maxWait, "max-wait", 5*time.Second, "no effect (kept for compatibility: records are now streamed, not long-polled)")
	return c
}

// parseStart turns -o into a Position (nil for an error).
func parseStart(s string, now time.Time) (*runnelv1.Position, error) {
	switch strings.ToLower(s) {
	case "start", "earliest", "beginning", "oldest":
		return &runnelv1.Position{Position: &runnelv1.Position_Earliest{Earliest: &emptypb.Empty{}}}, nil
	case "end", "latest", "newest":
		return &runnelv1.Position{Position: &runnelv1.Position_Latest{Latest: &emptypb.Empty{}}}, nil
	}
	if t, ok := strings.CutPrefix(s, "@"); ok {
		var at time.Time
		if d, err := time.ParseDuration(t); err == nil {
			at = now.Add(d)
		} else if ts, err := time.Parse(time.RFC3339Nano, t); err == nil {
			at = ts
		} else if ms, err := strconv.ParseInt(t, 10, 64); err == nil {
			at = time.UnixMilli(ms)
		} else {
			return nil, usagef("invalid time %q: want @RFC3339, @DURATION (e.g. @-1h) or @UNIX-MILLIS", s)
		}
		return &runnelv1.Position{Position: &runnelv1.Position_Timestamp{Timestamp: timestamppb.New(at)}}, nil
	}
	off, err := strconv.ParseInt(s, 10, 64)
	if err != nil || off < 0 {
		return nil, usagef("invalid offset %q: want start, end, an offset, @RFC3339 or @-DURATION", s)
	}
	return &runnelv1.Position{Position: &runnelv1.Position_Offset{Offset: off}}, nil
}

// sdkPosition converts a Position of parseStart for the SDK.
func sdkPosition(pos *runnelv1.Position) client.Position {
	switch p := pos.GetPosition().(type) {
	case *runnelv1.Position_Latest:
		return client.Latest()
	case *runnelv1.Position_Offset:
		return client.AtOffset(p.Offset)
	case *runnelv1.Position_Timestamp:
		return client.AtTime(p.Timestamp.AsTime())
	}
	return client.Earliest()
}

// resolve looks the offsets of pos up for partitions of topic.
func (a *app) resolve(ctx context.Context, c *client.Client, topicName string, parts []int32, pos *runnelv1.Position) (map[int32]int64, error) {
	out := map[int32]int64{}
	if o, ok := pos.GetPosition().(*runnelv1.Position_Offset); ok {
		for _, p := range parts {
			out[p] = o.Offset
		}
		return out, nil
	}
	rctx, cancel := a.rpcCtx(ctx)
	defer cancel()
	m, err := c.ListOffsets(rctx, topicName, sdkPosition(pos), parts...)
	if err != nil {
		return nil, err
	}
	for _, p := range parts {
		off, ok := m[p]
		if !ok {
			return nil, fmt.Errorf("no offset listed for %s/%d", topicName, p)
		}
		out[p] = off
	}
	return out, nil
}

func (a *app) consume(ctx context.Context, topicName string, o consumeOpts) error {
	return sdkError(a.consumeSDK(ctx, topicName, o))
}

func (a *app) consumeSDK(ctx context.Context, topicName string, o consumeOpts) error {
	tmpl, err := parseRecordFormat(o.format)
	if err != nil {
		return err
	}
	startPos, err := parseStart(o.offset, time.Now())
	if err != nil {
		return err
	}
	c, err := client.New(ctx, a.sdkOptions(client.WithFollowerReads(o.followerReads))...)
	if err != nil {
		return err
	}
	defer c.Close()
	if o.group != "" && o.partition < 0 && !o.exitAtEnd {
		return a.consumeGroup(ctx, c, topicName, o, tmpl, startPos)
	}
	rctx, cancel := a.rpcCtx(ctx)
	desc, err := c.DescribeTopic(rctx, topicName)
	cancel()
	if err != nil {
		return err
	}
	n := desc.PartitionCount
	var parts []int32
	if o.partition >= 0 {
		if o.partition >= n {
			return fmt.Errorf("topic %q has %d partition(s): no partition %d", topicName, n, o.partition)
		}
		parts = []int32{o.partition}
	} else {
		for p := range n {
			parts = append(parts, p)
		}
	}

	// Start offsets: the group's committed ones, then -o for the rest. They are resolved here,
	// not by the consumer, so that --exit-at-end can tell which partitions have nothing to read.
	start := map[int32]int64{}
	if o.group != "" {
		rctx, cancel := a.rpcCtx(ctx)
		cos, err := c.FetchCommitted(rctx, o.group)
		cancel()
		if err != nil {
			var ce *client.Error
			if !errors.As(err, &ce) || ce.Code != codes.NotFound {
				return err
			}
		}
		for _, co := range cos {
			if co.Topic == topicName && co.Offset >= 0 && slices.Contains(parts, co.Partition) {
				start[co.Partition] = co.Offset
			}
		}
	}
	var rest []int32
	for _, p := range parts {
		if _, ok := start[p]; !ok {
			rest = append(rest, p)
		}
	}
	if len(rest) > 0 {
		m, err := a.resolve(ctx, c, topicName, rest, startPos)
		if err != nil {
			return err
		}
		maps.Copy(start, m)
	}
	// With --exit-at-end, each partition is read up to its high watermark at the start.
	var end map[int32]int64
	if o.exitAtEnd {
		if end, err = a.resolve(ctx, c, topicName, parts, &runnelv1.Position{Position: &runnelv1.Position_Latest{Latest: &emptypb.Empty{}}}); err != nil {
			return err
		}
	}

	// The consumer has no group: the command commits exactly what it printed (-n may print
	// part of what a Poll returned), and Close must not commit more.
	k := c.NewConsumer()
	defer k.Close()
	active := 0
	for _, p := range parts {
		if end != nil && start[p] == end[p] {
			continue // nothing to read (beyond the end, the consumer reports OFFSET_OUT_OF_RANGE)
		}
		if err := k.Assign(topicName, p, client.AtOffset(start[p])); err != nil {
			return err
		}
		active++
	}

	w := bufio.NewWriterSize(a.stdout, 64<<10)
	defer w.Flush()
	var (
		printed int64
		buf     []byte
		br      recordbatch.Record
	)
	for active > 0 {
		recs, err := k.Poll(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return nil // SIGINT: every printed batch is already committed
			}
			return err
		}
		last := map[int32]int64{}
		var reached []int32 // partitions at their end (--exit-at-end)
		for _, r := range recs {
			if o.count > 0 && printed >= o.count {
				break
			}
			if end != nil {
				e, ok := end[r.Partition]
				if !ok {
					continue // past the end, and already unassigned
				}
				if r.Offset >= e { // past the end (the records before it may have been compacted away)
					delete(end, r.Partition)
					reached = append(reached, r.Partition)
					continue
				}
				if r.Offset+1 >= e {
					delete(end, r.Partition)
					reached = append(reached, r.Partition)
				}
			}
			buf = formatRecord(buf[:0], tmpl, r.Partition, toBatchRecord(&br, r))
			if _, err := w.Write(buf); err != nil {
				return err
			}
			printed++
			last[r.Partition] = r.Offset
		}
		if err := w.Flush(); err != nil {
			return err
		}
		if o.group != "" && len(last) > 0 {
			offs := make(map[client.TopicPartition]int64, len(last))
			for p, off := range last {
				offs[client.TopicPartition{Topic: topicName, Partition: p}] = off + 1
			}
			if err := a.commit(ctx, c, o.group, offs); err != nil {
				return err
			}
		}
		if o.count > 0 && printed >= o.count {
			return nil
		}
		for _, p := range reached {
			k.Unassign(topicName, p)
			active--
		}
	}
	return nil
}

// groupCommitInterval is how often `consume -g` commits what it printed: after every batch.
const groupCommitInterval = time.Nanosecond

// errCountReached ends a group consumption at -n records.
var errCountReached = errors.New("count reached")

// consumeGroup consumes topicName as a member of o.group until SIGINT or -n records, then
// commits and leaves the group.
func (a *app) consumeGroup(ctx context.Context, c *client.Client, topicName string, o consumeOpts, tmpl []formatPart, startPos *runnelv1.Position) error {
	rctx, cancel := a.rpcCtx(ctx)
	_, err := c.DescribeTopic(rctx, topicName) // fail early on an unknown topic
	cancel()
	if err != nil {
		return err
	}
	gc, err := c.NewGroupConsumer(o.group, []string{topicName},
		client.WithGroupStart(sdkPosition(startPos)), client.WithGroupAutoCommit(groupCommitInterval))
	if err != nil {
		return err
	}
	w := bufio.NewWriterSize(a.stdout, 64<<10)
	defer w.Flush()
	var (
		printed int64
		buf     []byte
		br      recordbatch.Record
	)
	rctx, stop := context.WithCancel(ctx)
	defer stop()
	err = gc.Run(rctx, func(r *client.Record) error {
		if o.count > 0 && printed >= o.count {
			return errCountReached // not printed: not committed
		}
		buf = formatRecord(buf[:0], tmpl, r.Partition, toBatchRecord(&br, r))
		if _, err := w.Write(buf); err != nil {
			return err
		}
		// Flushed before the record counts as handled: what is committed was printed.
		if err := w.Flush(); err != nil {
			return err
		}
		printed++
		if o.count > 0 && printed >= o.count {
			stop()
		}
		return nil
	})
	if errors.Is(err, errCountReached) {
		err = nil
	}
	// SIGINT or -n: commit what was printed and leave the group.
	return errors.Join(err, gc.Close())
}

// commitRetryBackoff is the wait before a commit that failed retriably is tried again.
const commitRetryBackoff = 100 * time.Millisecond

// commit commits offs for group, retrying retriable failures (the broker restarting) for up to
// --timeout. It outlives a SIGINT so that the progress printed is kept.
func (a *app) commit(ctx context.Context, c *client.Client, group string, offs map[client.TopicPartition]int64) error {
	cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), a.timeout)
	defer cancel()
	for {
		err := c.CommitOffsets(cctx, group, offs, "")
		if err == nil || !client.IsRetriable(err) {
			return err
		}
		t := time.NewTimer(commitRetryBackoff)
		select {
		case <-t.C:
		case <-cctx.Done():
			t.Stop()
			return fmt.Errorf("committing the offsets of group %q: %w", group, err)
		}
	}
}

// toBatchRecord fills br with r for formatRecord, reusing br's headers.
func toBatchRecord(br *recordbatch.Record, r *client.Record) *recordbatch.Record {
	hs := br.Headers[:0]
	for _, h := range r.Headers {
		hs = append(hs, recordbatch.RecordHeader{Key: h.Key, Value: h.Value})
	}
	*br = recordbatch.Record{Offset: r.Offset, Timestamp: r.Timestamp.UnixMilli(), Key: r.Key, Value: r.Value, Headers: hs}
	return br
}

// A record format is a list of literal text and verbs.
type formatPart struct {
	lit  string
	verb byte // 0 for a literal
}

func parseRecordFormat(s string) ([]formatPart, error) {
	var parts []formatPart
	var lit strings.Builder
	flush := func() {
		if lit.Len() > 0 {
			parts = append(parts, formatPart{lit: lit.String()})
			lit.Reset()
		}
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '\\' && i+1 < len(s):
			i++
			switch s[i] {
			case 'n':
				lit.WriteByte('\n')
			case 't':
				lit.WriteByte('\t')
			case 'r':
				lit.WriteByte('\r')
			case '\\':
				lit.WriteByte('\\')
			default:
				lit.WriteByte('\\')
				lit.WriteByte(s[i])
			}
		case c == '%' && i+1 < len(s):
			i++
			switch v := s[i]; v {
			case '%':
				lit.WriteByte('%')
			case 'k', 'v', 'p', 'o', 't', 'h':
				flush()
				parts = append(parts, formatPart{verb: v})
			default:
				return nil, usagef("invalid -f %q: unknown verb %%%c (want %%k %%v %%p %%o %%t %%h %%%%)", s, v)
			}
		default:
			lit.WriteByte(c)
		}
	}
	flush()
	return parts, nil
}

func formatRecord(dst []byte, tmpl []formatPart, partition int32, r *recordbatch.Record) []byte {
	for _, p := range tmpl {
		switch p.verb {
		case 0:
			dst = append(dst, p.lit...)
		case 'k':
			dst = append(dst, r.Key...)
		case 'v':
			dst = append(dst, r.Value...)
		case 'p':
			dst = strconv.AppendInt(dst, int64(partition), 10)
		case 'o':
			dst = strconv.AppendInt(dst, r.Offset, 10)
		case 't':
			dst = strconv.AppendInt(dst, r.Timestamp, 10)
		case 'h':
			for i, h := range r.Headers {
				if i > 0 {
					dst = append(dst, ',')
				}
				dst = append(dst, h.Key...)
				dst = append(dst, '=')
				dst = append(dst, h.Value...)
			}
		}
	}
	return dst
}
