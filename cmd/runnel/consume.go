package main

import (
	"bufio"
	"context"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/emptypb"
	"google.golang.org/protobuf/types/known/timestamppb"

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
}

func (a *app) consumeCmd() *cobra.Command {
	var o consumeOpts
	c := &cobra.Command{
		Use:   "consume TOPIC",
		Short: "Consume records and print them",
		Long: `Consume records of a topic (every partition, interleaved, unless -p) and print each with -f.

-o is where to start: start (the log start), end (the high watermark), an OFFSET, @RFC3339 (the
first record at or after that time) or @DURATION relative to now (@-1h). With -g GROUP the
group's committed offsets are used where it has one (-o elsewhere), and the offsets are committed
after every batch printed.

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
	f.StringVarP(&o.group, "group", "g", "", "consumer group: start from its committed offsets and commit as records are printed")
	f.StringVarP(&o.format, "format-record", "f", `%v\n`, "record format (see above)")
	f.DurationVar(&o.maxWait, "max-wait", 5*time.Second, "longest a fetch waits for new records (long poll)")
	return c
}

// fetched is one fetch's records of a partition, handed from its fetcher to the printer.
type fetched struct {
	partition int32
	records   []recordbatch.Record
	next      int64 // where the partition's next fetch starts
	atEnd     bool  // next reached the high watermark
	err       error
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

// resolve looks the offsets of pos up for partitions of topic.
func (a *app) resolve(ctx context.Context, cl *clients, topicName string, parts []int32, pos *runnelv1.Position) (map[int32]int64, error) {
	out := map[int32]int64{}
	if o, ok := pos.GetPosition().(*runnelv1.Position_Offset); ok {
		for _, p := range parts {
			out[p] = o.Offset
		}
		return out, nil
	}
	rctx, cancel := a.rpcCtx(ctx)
	defer cancel()
	resp, err := cl.fetch.ListOffsets(rctx, &runnelv1.ListOffsetsRequest{Queries: []*runnelv1.OffsetQuery{{Topic: topicName, Partitions: parts, Position: pos}}})
	if err != nil {
		return nil, err
	}
	for _, lo := range resp.GetOffsets() {
		if err := apiError(lo.GetError()); err != nil {
			return nil, err
		}
		out[lo.GetPartition()] = lo.GetOffset()
	}
	for _, p := range parts {
		if _, ok := out[p]; !ok {
			return nil, fmt.Errorf("no offset listed for %s/%d", topicName, p)
		}
	}
	return out, nil
}

func (a *app) consume(ctx context.Context, topicName string, o consumeOpts) error {
	tmpl, err := parseRecordFormat(o.format)
	if err != nil {
		return err
	}
	pos, err := parseStart(o.offset, time.Now())
	if err != nil {
		return err
	}
	cl, err := a.clients(ctx)
	if err != nil {
		return err
	}
	desc, err := a.describeTopic(ctx, cl, topicName)
	if err != nil {
		return err
	}
	n := desc.GetTopic().GetPartitionCount()
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

	// Start offsets: the group's committed ones, then -o for the rest.
	start := map[int32]int64{}
	if o.group != "" {
		rctx, cancel := a.rpcCtx(ctx)
		resp, err := cl.offsets.FetchOffsets(rctx, &runnelv1.FetchOffsetsRequest{Group: o.group,
			Topics: []*runnelv1.TopicPartitions{{Topic: topicName, Partitions: parts}}})
		cancel()
		if err != nil && status.Code(err) != codes.NotFound {
			return err
		}
		for _, c := range resp.GetOffsets() {
			if c.GetTopic() == topicName && c.GetOffset() >= 0 {
				start[c.GetPartition()] = c.GetOffset()
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
		m, err := a.resolve(ctx, cl, topicName, rest, pos)
		if err != nil {
			return err
		}
		for p, off := range m {
			start[p] = off
		}
	}

	fctx, stopFetch := context.WithCancel(ctx)
	defer stopFetch()
	ch := make(chan fetched)
	for _, p := range parts {
		go a.fetchLoop(fctx, cl, topicName, p, start[p], o, ch)
	}

	w := bufio.NewWriterSize(a.stdout, 64<<10)
	defer w.Flush()
	var printed int64
	active := len(parts)
	var buf []byte
	for active > 0 {
		var f fetched
		select {
		case f = <-ch:
		case <-ctx.Done():
			return nil // SIGINT: every printed batch is already committed
		}
		if f.err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return f.err
		}
		last := int64(-1)
		for i := range f.records {
			if o.count > 0 && printed >= o.count {
				break
			}
			r := &f.records[i]
			buf = formatRecord(buf[:0], tmpl, f.partition, r)
			if _, err := w.Write(buf); err != nil {
				return err
			}
			printed++
			last = r.Offset
		}
		if err := w.Flush(); err != nil {
			return err
		}
		if o.group != "" && last >= 0 {
			if err := a.commit(ctx, cl, o.group, topicName, f.partition, last+1); err != nil {
				return err
			}
		}
		if o.count > 0 && printed >= o.count {
			return nil
		}
		if f.atEnd && o.exitAtEnd {
			active--
		}
	}
	return nil
}

// commit commits offset for the group; it outlives a SIGINT so that progress is kept.
func (a *app) commit(ctx context.Context, cl *clients, group, topicName string, partition int32, offset int64) error {
	cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), a.timeout)
	defer cancel()
	_, err := cl.offsets.CommitOffsets(cctx, &runnelv1.CommitOffsetsRequest{Group: group,
		Offsets: []*runnelv1.OffsetCommit{{Topic: topicName, Partition: partition, Offset: offset}}})
	return err
}

// fetchLoop long-polls one partition from offset and hands its records to ch until ctx ends,
// or, with --exit-at-end, until it reaches the high watermark.
func (a *app) fetchLoop(ctx context.Context, cl *clients, topicName string, partition int32, offset int64, o consumeOpts, ch chan<- fetched) {
	send := func(f fetched) bool {
		select {
		case ch <- f:
			return true
		case <-ctx.Done():
			return false
		}
	}
	wait := o.maxWait
	if o.exitAtEnd {
		wait = 0
	}
	for {
		rctx, cancel := context.WithTimeout(ctx, a.timeout+wait)
		resp, err := cl.fetch.Fetch(rctx, &runnelv1.FetchRequest{Topic: topicName, Partition: partition, Offset: offset,
			MaxWait: durationpb.New(wait), Format: runnelv1.RecordFormat_RECORD_FORMAT_BATCHES})
		cancel()
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			send(fetched{partition: partition, err: err})
			return
		}
		var recs []recordbatch.Record
		b := resp.GetBatches()
		for len(b) > 0 {
			batch, rest, err := recordbatch.Next(b, len(b))
			if err != nil {
				send(fetched{partition: partition, err: fmt.Errorf("decoding %s/%d at offset %d: %w", topicName, partition, offset, err)})
				return
			}
			b = rest
			err = recordbatch.ForEachRecord(batch, func(r *recordbatch.Record) error {
				if r.Offset >= offset {
					rc := *r
					rc.Key = cloneBytes(r.Key)
					rc.Value = cloneBytes(r.Value)
					rc.Headers = append([]recordbatch.RecordHeader(nil), r.Headers...)
					for i := range rc.Headers {
						rc.Headers[i].Value = cloneBytes(rc.Headers[i].Value)
					}
					recs = append(recs, rc)
				}
				return nil
			})
			if err != nil {
				send(fetched{partition: partition, err: fmt.Errorf("decoding %s/%d at offset %d: %w", topicName, partition, offset, err)})
				return
			}
		}
		next := resp.GetNextOffset()
		if len(recs) > 0 && recs[len(recs)-1].Offset+1 > next {
			next = recs[len(recs)-1].Offset + 1
		}
		if next < offset {
			next = offset
		}
		offset = next
		atEnd := offset >= resp.GetHighWatermark()
		if len(recs) > 0 || (atEnd && o.exitAtEnd) {
			if !send(fetched{partition: partition, records: recs, next: offset, atEnd: atEnd}) {
				return
			}
		}
		if atEnd && o.exitAtEnd {
			return
		}
		if ctx.Err() != nil {
			return
		}
	}
}

func cloneBytes(b []byte) []byte {
	if b == nil {
		return nil
	}
	return append([]byte{}, b...)
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
