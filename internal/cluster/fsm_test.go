package cluster

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/raft"
)

type fsmHarness struct {
	t       testing.TB
	f       *fsm
	index   uint64
	mu      sync.Mutex
	changes []Change
}

func newFSMHarness(t testing.TB) *fsmHarness {
	t.Helper()
	h := &fsmHarness{t: t}
	f, err := openFSM(filepath.Join(t.TempDir(), "state.db"), func(ch []Change) {
		h.mu.Lock()
		h.changes = append(h.changes, ch...)
		h.mu.Unlock()
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = f.close() })
	h.f = f
	return h
}

func mustEncode(t testing.TB, ct commandType, payload any) []byte {
	t.Helper()
	b, err := encodeCommand(ct, payload)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// apply applies one command at the next index and returns the state machine's answer.
func (h *fsmHarness) apply(ct commandType, payload any) error {
	h.t.Helper()
	h.index++
	res := h.f.Apply(&raft.Log{Index: h.index, Type: raft.LogCommand, Data: mustEncode(h.t, ct, payload)})
	if res == nil {
		return nil
	}
	return res.(error)
}

func (h *fsmHarness) mustApply(ct commandType, payload any) {
	h.t.Helper()
	if err := h.apply(ct, payload); err != nil {
		h.t.Fatalf("%s: %v", ct, err)
	}
}

// dump renders the whole state, for comparisons.
func dump(t *testing.T, f *fsm) string {
	t.Helper()
	brokers, err := f.brokers()
	if err != nil {
		t.Fatal(err)
	}
	topics, err := f.topics()
	if err != nil {
		t.Fatal(err)
	}
	var b bytes.Buffer
	fmt.Fprintf(&b, "applied=%d\n", f.appliedIndex())
	for id := range int32(10) {
		if r, ok := brokers[id]; ok {
			j, _ := json.Marshal(r)
			fmt.Fprintf(&b, "broker %s\n", j)
		}
	}
	for _, tr := range topics {
		j, _ := json.Marshal(tr)
		parts, _, err := f.assignment(tr.Name)
		if err != nil {
			t.Fatal(err)
		}
		pj, _ := json.Marshal(parts)
		fmt.Fprintf(&b, "topic %s %s\n", j, pj)
	}
	offs, _, err := f.offsets("g1")
	if err != nil {
		t.Fatal(err)
	}
	oj, _ := json.Marshal(offs)
	fmt.Fprintf(&b, "g1 %s\n", oj)
	return b.String()
}

func sampleState(h *fsmHarness) {
	for id := int32(1); id <= 3; id++ {
		h.mustApply(cmdUpsertBroker, upsertBrokerCmd{Broker: brokerRecord{ID: id, Addr: fmt.Sprintf("b%d:9092", id),
			RaftAddr: fmt.Sprintf("b%d:9092", id), Incarnation: fmt.Sprintf("inc-%d", id), State: BrokerAlive, SinceMS: 1000, Voter: true}})
	}
	h.mustApply(cmdCreateTopic, createTopicCmd{
		Topic:    topicRecord{Name: "orders", ID: "id-orders", Partitions: 3, ReplicationFactor: 2, CreatedAtMS: 2000, Configs: map[string]string{"retention.ms": "1000"}},
		Replicas: [][]int32{{1, 2}, {2, 3}, {3, 1}},
	})
	h.mustApply(cmdCommitOffsets, commitOffsetsCmd{Group: "g1", AtMS: 3000, Offsets: []offsetCommit{{Topic: "orders", TopicID: "id-orders", Partition: 1, Offset: 42, Metadata: "m"}}})
}

func TestFSMApply(t *testing.T) {
	h := newFSMHarness(t)
	sampleState(h)

	h.mustApply(cmdCreateTopic, createTopicCmd{Topic: topicRecord{Name: "a.b", ID: "ab", Partitions: 1, ReplicationFactor: 1}, Replicas: [][]int32{{1}}})
	// Rejections leave the state alone, and are the same on every replica.
	before := dump(t, h.f)
	for _, tc := range []struct {
		ct      commandType
		payload any
		want    error
	}{
		{cmdCreateTopic, createTopicCmd{Topic: topicRecord{Name: "orders", ID: "x", Partitions: 1, ReplicationFactor: 1}, Replicas: [][]int32{{1}}}, ErrTopicExists},
		{cmdCreateTopic, createTopicCmd{Topic: topicRecord{Name: "a_b", ID: "x", Partitions: 1, ReplicationFactor: 1}, Replicas: [][]int32{{1}}}, ErrTopicExists},
		{cmdDeleteTopic, deleteTopicCmd{Name: "nope"}, ErrUnknownTopic},
		{cmdDeleteTopic, deleteTopicCmd{Name: "orders", ID: "other"}, ErrStaleTopic},
		{cmdAlterTopic, alterTopicCmd{Name: "nope"}, ErrUnknownTopic},
		{cmdAlterTopic, alterTopicCmd{Name: "orders", Conditional: true, IfConfigs: map[string]string{"retention.ms": "7"}}, ErrConcurrentChange},
		{cmdAlterTopic, alterTopicCmd{Name: "orders", ID: "other"}, ErrStaleTopic},
		{cmdSetAssignments, setAssignmentsCmd{Topic: "orders", TopicID: "other", Changes: []assignmentDelta{{0, []int32{1}}}}, ErrStaleTopic},
		{cmdSetAssignments, setAssignmentsCmd{Topic: "orders", Changes: []assignmentDelta{{7, []int32{1}}}}, nil},
		{cmdDeleteGroup, deleteGroupCmd{Group: "nope"}, ErrUnknownGroup},
	} {
		err := h.apply(tc.ct, tc.payload)
		if err == nil || (tc.want != nil && !errors.Is(err, tc.want)) {
			t.Errorf("%s %+v: got %v, want %v", tc.ct, tc.payload, err, tc.want)
		}
	}
	after := dump(t, h.f)
	// Only the applied index moved.
	if before[bytes.IndexByte([]byte(before), '\n'):] != after[bytes.IndexByte([]byte(after), '\n'):] {
		t.Errorf("rejected commands changed the state:\n%s\nvs\n%s", before, after)
	}

	// Assignment changes bump the epoch of the partitions that change only.
	h.changes = nil
	h.mustApply(cmdSetAssignments, setAssignmentsCmd{Topic: "orders", TopicID: "id-orders",
		Changes: []assignmentDelta{{0, []int32{2, 3}}, {1, []int32{2, 3}}}})
	parts, _, _ := h.f.assignment("orders")
	if parts[0].Epoch != 2 || parts[1].Epoch != 1 || fmt.Sprint(parts[0].Replicas) != "[2 3]" {
		t.Errorf("after set-assignments: %+v", parts)
	}
	if len(h.changes) != 1 || h.changes[0].Kind != ChangeAssignment || fmt.Sprint(h.changes[0].Partitions) != "[0]" {
		t.Errorf("changes: %+v", h.changes)
	}

	// Replaying an applied entry (Raft after a restart, the file being ahead) is a no-op.
	st := dump(t, h.f)
	res := h.f.Apply(&raft.Log{Index: 2, Type: raft.LogCommand, Data: mustEncode(t, cmdDeleteTopic, deleteTopicCmd{Name: "orders"})})
	if res != nil || dump(t, h.f) != st {
		t.Errorf("replay of an applied index changed the state (%v)", res)
	}

	h.mustApply(cmdAlterTopic, alterTopicCmd{Name: "orders", Configs: map[string]string{"retention.ms": "5"}})
	h.mustApply(cmdDeleteTopic, deleteTopicCmd{Name: "orders", ID: "id-orders"})
	if _, ok, _ := h.f.topic("orders"); ok {
		t.Error("orders still there")
	}
	if _, ok, _ := h.f.assignment("orders"); ok {
		t.Error("orders' partitions still there")
	}
	h.mustApply(cmdDeleteGroup, deleteGroupCmd{Group: "g1"})
	h.mustApply(cmdRemoveBroker, removeBrokerCmd{ID: 3})
	if b, _ := h.f.brokers(); len(b) != 2 {
		t.Errorf("brokers after remove: %v", b)
	}
}

// memSink is a raft.SnapshotSink in memory.
type memSink struct {
	bytes.Buffer
	closed, cancelled bool
}

func (s *memSink) ID() string    { return "mem" }
func (s *memSink) Close() error  { s.closed = true; return nil }
func (s *memSink) Cancel() error { s.cancelled = true; return nil }

func TestFSMSnapshotRestore(t *testing.T) {
	src := newFSMHarness(t)
	sampleState(src)
	snap, err := src.f.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	want := dump(t, src.f)
	// Changes after the snapshot are not in it.
	src.mustApply(cmdDeleteTopic, deleteTopicCmd{Name: "orders"})
	var sink memSink
	if err := snap.Persist(&sink); err != nil {
		t.Fatal(err)
	}
	snap.Release()
	if !sink.closed {
		t.Fatal("sink not closed")
	}

	dst := newFSMHarness(t)
	dst.mustApply(cmdUpsertBroker, upsertBrokerCmd{Broker: brokerRecord{ID: 9, State: BrokerAlive, Incarnation: "z"}})
	if err := dst.f.Restore(io.NopCloser(bytes.NewReader(sink.Bytes()))); err != nil {
		t.Fatal(err)
	}
	if got := dump(t, dst.f); got != want {
		t.Errorf("restored state:\n%s\nwant:\n%s", got, want)
	}
	if n := len(dst.changes); n == 0 || dst.changes[n-1].Kind != ChangeRestored {
		t.Errorf("no ChangeRestored: %+v", dst.changes)
	}
	// The restored machine goes on applying after the snapshot's index.
	dst.index = dst.f.appliedIndex()
	dst.mustApply(cmdDeleteTopic, deleteTopicCmd{Name: "orders"})

	// Garbage is refused and the state kept.
	before := dump(t, dst.f)
	if err := dst.f.Restore(io.NopCloser(bytes.NewReader([]byte("not a bbolt file")))); err == nil {
		t.Error("restore of garbage: no error")
	}
	if dump(t, dst.f) != before {
		t.Error("failed restore changed the state")
	}
}

// TestFSMRestoreWhileSnapshotPending: Raft may restore while a snapshot it took is not
// persisted yet (its snapshot goroutine waiting on the main loop, which waits on the
// restore); the restore must not wait for that snapshot.
func TestFSMRestoreWhileSnapshotPending(t *testing.T) {
	h := newFSMHarness(t)
	sampleState(h)
	pending, err := h.f.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	snap, _ := h.f.Snapshot()
	var sink memSink
	if err := snap.Persist(&sink); err != nil {
		t.Fatal(err)
	}
	snap.Release()
	done := make(chan error, 1)
	go func() { done <- h.f.Restore(io.NopCloser(bytes.NewReader(sink.Bytes()))) }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Restore blocked by a snapshot not yet persisted")
	}
	var late memSink
	if err := pending.Persist(&late); err != nil {
		t.Fatal(err)
	}
	pending.Release()
	if late.Len() == 0 {
		t.Error("pending snapshot persisted nothing")
	}
}

func TestFSMReopen(t *testing.T) {
	dir := t.TempDir()
	f, err := openFSM(filepath.Join(dir, "s.db"), nil)
	if err != nil {
		t.Fatal(err)
	}
	h := &fsmHarness{t: t, f: f}
	sampleState(h)
	want := dump(t, f)
	if err := f.close(); err != nil {
		t.Fatal(err)
	}
	f, err = openFSM(filepath.Join(dir, "s.db"), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer f.close()
	if got := dump(t, f); got != want {
		t.Errorf("after reopen:\n%s\nwant\n%s", got, want)
	}
}

func TestDecodeCommand(t *testing.T) {
	good := mustEncode(t, cmdDeleteTopic, deleteTopicCmd{Name: "orders"})
	if _, _, err := decodeCommand(good); err != nil {
		t.Fatal(err)
	}
	bad := map[string][]byte{
		"short":         good[:3],
		"version":       append([]byte{9}, good[1:]...),
		"type":          append([]byte{1, 99}, good[2:]...),
		"truncated":     good[:len(good)-1],
		"trailing":      append(append([]byte{}, good...), ' '),
		"huge length":   {1, 4, 0xff, 0xff, 0xff, 0xff},
		"bad name":      mustEncode(t, cmdDeleteTopic, deleteTopicCmd{Name: ".."}),
		"dup replicas":  mustEncode(t, cmdSetAssignments, setAssignmentsCmd{Topic: "a", Changes: []assignmentDelta{{0, []int32{1, 1}}}}),
		"neg offset":    mustEncode(t, cmdCommitOffsets, commitOffsetsCmd{Group: "g", Offsets: []offsetCommit{{Topic: "a", Offset: -1}}}),
		"bad state":     mustEncode(t, cmdUpsertBroker, upsertBrokerCmd{Broker: brokerRecord{ID: 1, State: "zombie"}}),
		"partition cnt": mustEncode(t, cmdCreateTopic, createTopicCmd{Topic: topicRecord{Name: "a", ID: "x", Partitions: 2, ReplicationFactor: 1}, Replicas: [][]int32{{1}}}),
		"empty batch":   mustEncode(t, cmdCommitOffsetsBatch, commitOffsetsBatchCmd{}),
		"batch offset":  mustEncode(t, cmdCommitOffsetsBatch, commitOffsetsBatchCmd{Groups: []groupOffsetCommit{{Group: "g", Offsets: []offsetCommit{{Topic: "a", Offset: -1}}}}}),
		"no cluster id": mustEncode(t, cmdSetClusterID, setClusterIDCmd{}),
		"two values":    append([]byte{1, byte(cmdDeleteGroup), 0, 0, 0, 22}, []byte(`{"group":"a"} {"a":1} `)...),
	}
	for name, b := range bad {
		if _, _, err := decodeCommand(b); !errors.Is(err, ErrBadCommand) {
			t.Errorf("%s: got %v, want ErrBadCommand", name, err)
		}
	}
}

// FuzzDecodeCommand: the decoder never panics, and whatever it accepts re-encodes to a
// command that decodes the same and applies without a storage error.
func FuzzDecodeCommand(f *testing.F) {
	seeds := []struct {
		t commandType
		p any
	}{
		{cmdUpsertBroker, upsertBrokerCmd{Broker: brokerRecord{ID: 1, Addr: "a:1", State: BrokerAlive, Incarnation: "i"}}},
		{cmdRemoveBroker, removeBrokerCmd{ID: 2}},
		{cmdCreateTopic, createTopicCmd{Topic: topicRecord{Name: "t", ID: "x", Partitions: 2, ReplicationFactor: 2}, Replicas: [][]int32{{1, 2}, {2, 1}}}},
		{cmdDeleteTopic, deleteTopicCmd{Name: "t"}},
		{cmdAlterTopic, alterTopicCmd{Name: "t", Configs: map[string]string{"retention.ms": "1"}}},
		{cmdSetAssignments, setAssignmentsCmd{Topic: "t", Changes: []assignmentDelta{{1, []int32{3}}}}},
		{cmdCommitOffsets, commitOffsetsCmd{Group: "g", Offsets: []offsetCommit{{Topic: "t", Offset: 5}}}},
		{cmdDeleteGroup, deleteGroupCmd{Group: "g"}},
		{cmdCommitOffsetsBatch, commitOffsetsBatchCmd{AtMS: 1, Groups: []groupOffsetCommit{{Group: "g", Offsets: []offsetCommit{{Topic: "t", Offset: 5}}}, {Group: "h"}}}},
		{cmdSetClusterID, setClusterIDCmd{ID: "c"}},
		{cmdCommitOffsetsBin, commitOffsetsBatchCmd{AtMS: 1, Groups: []groupOffsetCommit{{Group: "g", Offsets: []offsetCommit{{Topic: "t", TopicID: "i", Partition: 3, Offset: 5, Metadata: "m"}}}, {Group: "h"}}}},
	}
	for _, s := range seeds {
		f.Add(mustEncode(f, s.t, s.p))
	}
	f.Add([]byte{1, 3, 0, 0, 0, 0})
	h := newFSMHarness(f)
	f.Fuzz(func(t *testing.T, data []byte) {
		ct, v, err := decodeCommand(data)
		if err != nil {
			if !errors.Is(err, ErrBadCommand) {
				t.Fatalf("error not ErrBadCommand: %v", err)
			}
			return
		}
		again := mustEncode(t, ct, v)
		ct2, v2, err := decodeCommand(again)
		if err != nil || ct2 != ct || fmt.Sprint(v2) != fmt.Sprint(v) {
			t.Fatalf("re-encoding: %v %v vs %v (%v)", ct, v, v2, err)
		}
		h.index++
		// A rejection is fine; a storage error panics.
		_ = h.f.Apply(&raft.Log{Index: h.index, Type: raft.LogCommand, Data: data})
	})
}

// TestFSMCommitOffsetsBatch: a batch applies its groups' commits in order (a group that
// appears twice ends with its later offsets), and reports one change per group.
func TestFSMCommitOffsetsBatch(t *testing.T) {
	h := newFSMHarness(t)
	h.mustApply(cmdCommitOffsetsBatch, commitOffsetsBatchCmd{AtMS: 5000, Groups: []groupOffsetCommit{
		{Group: "a", Offsets: []offsetCommit{{Topic: "t", TopicID: "id", Partition: 0, Offset: 1}, {Topic: "t", TopicID: "id", Partition: 1, Offset: 7, Metadata: "m"}}},
		{Group: "b", Offsets: []offsetCommit{{Topic: "t", TopicID: "id", Partition: 0, Offset: 3}}},
		{Group: "a", Offsets: []offsetCommit{{Topic: "t", TopicID: "id", Partition: 0, Offset: 2}}},
	}})
	want := map[string]map[int32]int64{"a": {0: 2, 1: 7}, "b": {0: 3}}
	for g, parts := range want {
		offs, ok, err := h.f.offsets(g)
		if err != nil || !ok || len(offs) != len(parts) {
			t.Fatalf("group %s: %+v %v %v", g, offs, ok, err)
		}
		for _, o := range offs {
			if parts[o.Partition] != o.Offset || o.CommittedAt.UnixMilli() != 5000 {
				t.Fatalf("group %s partition %d: %+v, want offset %d at 5000 ms", g, o.Partition, o, parts[o.Partition])
			}
			if o.Partition == 1 && o.Metadata != "m" {
				t.Fatalf("metadata lost: %+v", o)
			}
		}
	}
	var groups []string
	for _, c := range h.changes {
		if c.Kind == ChangeOffsets {
			groups = append(groups, c.Group)
		}
	}
	if fmt.Sprint(groups) != "[a b]" {
		t.Fatalf("changes for groups %v, want [a b]", groups)
	}
}

// TestGroupCommitValidate: the coordinator's per-group check agrees with the state machine's.
func TestGroupCommitValidate(t *testing.T) {
	ok := GroupCommit{Group: "g", Offsets: []OffsetCommit{{Topic: "t", Partition: 1, Offset: 5}}}
	if err := ok.Validate(); err != nil {
		t.Fatal(err)
	}
	for name, g := range map[string]GroupCommit{
		"no name":    {Offsets: ok.Offsets},
		"negative":   {Group: "g", Offsets: []OffsetCommit{{Topic: "t", Offset: -1}}},
		"bad topic":  {Group: "g", Offsets: []OffsetCommit{{Topic: "..", Offset: 1}}},
		"long group": {Group: strings.Repeat("g", MaxGroupNameBytes+1)},
	} {
		if err := g.Validate(); err == nil {
			t.Errorf("%s: accepted", name)
		}
		if _, err := (&Cluster{}).ProposeCommits(context.Background(), []GroupCommit{ok, g}); err == nil {
			t.Errorf("%s: a batch holding it was proposed", name)
		}
	}
}

// TestFSMAheadOfSnapshot: a state file is ahead of a snapshot taken from it (and of itself),
// and behind a snapshot of a state that applied more: the case of a snapshot installed from
// the leader whose restore a crash cut short, which Raft must then restore at start.
func TestFSMAheadOfSnapshot(t *testing.T) {
	snapshot := func(h *fsmHarness) []byte {
		s, err := h.f.Snapshot()
		if err != nil {
			t.Fatal(err)
		}
		defer s.Release()
		b, err := io.ReadAll(s.(*fsmSnapshot).file)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	ahead := func(h *fsmHarness, snap []byte) bool {
		ok, err := h.f.aheadOfSnapshot(bytes.NewReader(snap))
		if err != nil {
			t.Fatal(err)
		}
		return ok
	}
	commit := commitOffsetsCmd{Group: "g", Offsets: []offsetCommit{{Topic: "t", Offset: 1}}}
	a, b := newFSMHarness(t), newFSMHarness(t)
	for i := range 3 {
		a.mustApply(cmdCommitOffsets, commit)
		if i < 1 {
			b.mustApply(cmdCommitOffsets, commit)
		}
	}
	snapA := snapshot(a)
	if !ahead(a, snapA) {
		t.Fatal("a state file is not ahead of its own snapshot")
	}
	a.mustApply(cmdCommitOffsets, commit)
	if !ahead(a, snapA) {
		t.Fatal("a state file is not ahead of an older snapshot of itself")
	}
	if ahead(b, snapA) {
		t.Fatal("a state file that applied less is ahead of the snapshot")
	}
	if _, err := b.f.aheadOfSnapshot(bytes.NewReader([]byte("not a bbolt file"))); err == nil {
		t.Fatal("a damaged snapshot compared without an error")
	}
}
