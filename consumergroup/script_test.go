package consumergroup

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestScripts runs the scenarios in testdata/*.txt (the language is described in doc.go).
func TestScripts(t *testing.T) {
	files, err := filepath.Glob("testdata/*.txt")
	if err != nil || len(files) == 0 {
		t.Fatalf("no scripts: %v", err)
	}
	for _, f := range files {
		t.Run(strings.TrimSuffix(filepath.Base(f), ".txt"), func(t *testing.T) { runScript(t, f) })
	}
}

var epoch0 = time.Unix(1_700_000_000, 0)

type scriptRun struct {
	g        *Group
	now      time.Time
	last     string // kind of the last command: heartbeat, leave, tick, commit
	resp     HeartbeatResponse
	err      error
	expired  []string
	sawFirst bool
}

func runScript(t *testing.T, path string) {
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	r := &scriptRun{g: NewGroup(Config{}), now: epoch0}
	sc := bufio.NewScanner(f)
	line := 0
	for sc.Scan() {
		line++
		text := strings.TrimSpace(sc.Text())
		if text == "" || strings.HasPrefix(text, "#") {
			continue
		}
		if err := r.exec(text); err != nil {
			t.Fatalf("%s:%d: %s: %v", path, line, text, err)
		}
		if err := r.g.checkInvariants(); err != nil {
			t.Fatalf("%s:%d: after %s: invariant: %v", path, line, text, err)
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
}

// parseArgs splits "k=v" words; a bare word maps to "".
func parseArgs(words []string) (map[string]string, []string) {
	kv := map[string]string{}
	var bare []string
	for _, w := range words {
		if k, v, ok := strings.Cut(w, "="); ok {
			kv[k] = v
		} else {
			kv[w] = ""
			bare = append(bare, w)
		}
	}
	return kv, bare
}

func parseTPs(s string) ([]TopicPartition, error) {
	out := []TopicPartition{}
	if s == "" || s == "-" {
		return out, nil
	}
	for _, item := range strings.Split(s, ",") {
		topic, ps, ok := strings.Cut(item, ":")
		if !ok {
			return nil, fmt.Errorf("partition %q: want topic:N or topic:N-M", item)
		}
		lo, hi, rng := strings.Cut(ps, "-")
		a, err := strconv.Atoi(lo)
		if err != nil {
			return nil, err
		}
		b := a
		if rng {
			if b, err = strconv.Atoi(hi); err != nil {
				return nil, err
			}
		}
		for p := a; p <= b; p++ {
			out = append(out, TopicPartition{topic, int32(p)})
		}
	}
	slices.SortFunc(out, compareTP)
	return slices.Compact(out), nil
}

// formatTPs writes sorted partitions compactly: orders:0-2,orders:5.
func formatTPs(tps []TopicPartition) string {
	tps = slices.Clone(tps)
	slices.SortFunc(tps, compareTP)
	var parts []string
	for i := 0; i < len(tps); {
		j := i
		for j+1 < len(tps) && tps[j+1].Topic == tps[i].Topic && tps[j+1].Partition == tps[j].Partition+1 {
			j++
		}
		if j == i {
			parts = append(parts, tps[i].String())
		} else {
			parts = append(parts, fmt.Sprintf("%s-%d", tps[i], tps[j].Partition))
		}
		i = j + 1
	}
	return strings.Join(parts, ",")
}

func errName(err error) string {
	if err == nil {
		return "none"
	}
	return err.Error()
}

func (r *scriptRun) setTime(kv map[string]string) error {
	if v, ok := kv["t"]; ok {
		ms, err := strconv.Atoi(v)
		if err != nil {
			return err
		}
		r.now = epoch0.Add(time.Duration(ms) * time.Millisecond)
	}
	return nil
}

func (r *scriptRun) exec(text string) error {
	words := strings.Fields(text)
	cmd := words[0]
	kv, bare := parseArgs(words[1:])
	if err := r.setTime(kv); err != nil {
		return err
	}
	switch cmd {
	case "config":
		if r.sawFirst {
			return fmt.Errorf("config must come first")
		}
		var cfg Config
		if v, ok := kv["session"]; ok {
			ms, _ := strconv.Atoi(v)
			cfg.SessionTimeout = time.Duration(ms) * time.Millisecond
		}
		if v, ok := kv["rebalance"]; ok {
			ms, _ := strconv.Atoi(v)
			cfg.RebalanceTimeout = time.Duration(ms) * time.Millisecond
		}
		r.g = NewGroup(cfg)
	case "partitions":
		if len(bare) != 2 {
			return fmt.Errorf("want: partitions TOPIC N")
		}
		n, err := strconv.Atoi(bare[1])
		if err != nil {
			return err
		}
		r.g.SetTopicPartitions(bare[0], int32(n))
	case "heartbeat":
		req := HeartbeatRequest{MemberID: strings.Trim(kv["member"], "-"), InstanceID: kv["instance"]}
		m := r.g.members[req.MemberID]
		switch e := kv["epoch"]; e {
		case "cur":
			if m == nil {
				return fmt.Errorf("epoch=cur of unknown member %q", req.MemberID)
			}
			req.MemberEpoch = m.epoch
		default:
			n, err := strconv.Atoi(e)
			if err != nil {
				return fmt.Errorf("epoch: %v", err)
			}
			req.MemberEpoch = int32(n)
		}
		if v, ok := kv["subscribe"]; ok {
			req.Subscriptions = []string{}
			if v != "" {
				req.Subscriptions = strings.Split(v, ",")
			}
		}
		if v := kv["owned"]; v == "*" {
			if m != nil {
				req.Owned = m.assigned.sorted()
			}
		} else {
			tps, err := parseTPs(v)
			if err != nil {
				return err
			}
			req.Owned = tps
		}
		if v, ok := kv["rebalance"]; ok {
			ms, _ := strconv.Atoi(v)
			req.RebalanceTimeout = time.Duration(ms) * time.Millisecond
		}
		if v, ok := kv["session"]; ok {
			ms, _ := strconv.Atoi(v)
			req.SessionTimeout = time.Duration(ms) * time.Millisecond
		}
		r.last, r.resp = cmd, r.g.Heartbeat(r.now, req)
	case "leave":
		_, perm := kv["permanent"]
		r.last = cmd
		r.err = r.g.Leave(r.now, LeaveRequest{MemberID: kv["member"], InstanceID: kv["instance"], Permanent: perm})
	case "tick":
		r.last, r.expired = cmd, r.g.Tick(r.now)
	case "commit":
		n, err := strconv.Atoi(kv["epoch"])
		if err != nil {
			return err
		}
		r.last, r.err = cmd, r.g.CommitAllowed(kv["member"], int32(n))
	case "settle":
		return r.settle()
	case "expect":
		return r.expect(kv)
	case "expect-members":
		var got []string
		for _, m := range r.g.Describe().Members {
			got = append(got, m.MemberID)
		}
		if !slices.Equal(got, bare) {
			return fmt.Errorf("members %v, want %v", got, bare)
		}
	case "expect-member":
		if len(bare) < 1 {
			return fmt.Errorf("want: expect-member ID k=v...")
		}
		return r.expectMember(bare[0], kv)
	case "expect-group":
		d := r.g.Describe()
		if v, ok := kv["epoch"]; ok && v != strconv.Itoa(int(d.GroupEpoch)) {
			return fmt.Errorf("group epoch %d, want %s", d.GroupEpoch, v)
		}
		if v, ok := kv["state"]; ok && v != string(d.State) {
			return fmt.Errorf("group state %s, want %s", d.State, v)
		}
	default:
		return fmt.Errorf("unknown command %q", cmd)
	}
	r.sawFirst = true
	return nil
}

func (r *scriptRun) expect(kv map[string]string) error {
	switch r.last {
	case "heartbeat":
		want := kv["error"]
		if want == "" {
			want = "none"
		}
		if got := errName(r.resp.Error); got != want {
			return fmt.Errorf("error %s, want %s", got, want)
		}
		if v, ok := kv["member"]; ok && v != r.resp.MemberID {
			return fmt.Errorf("member %s, want %s", r.resp.MemberID, v)
		}
		if v, ok := kv["epoch"]; ok && v != strconv.Itoa(int(r.resp.MemberEpoch)) {
			return fmt.Errorf("epoch %d, want %s", r.resp.MemberEpoch, v)
		}
		if v, ok := kv["assign"]; ok {
			return compareTPs("assign", r.resp.Assignment, v)
		}
	case "leave", "commit":
		want := kv["error"]
		if want == "" {
			want = "none"
		}
		if got := errName(r.err); got != want {
			return fmt.Errorf("error %s, want %s", got, want)
		}
	case "tick":
		want := []string{}
		if v := kv["expired"]; v != "" {
			want = strings.Split(v, ",")
		}
		if !slices.Equal(append([]string{}, r.expired...), want) {
			return fmt.Errorf("expired %v, want %v", r.expired, want)
		}
	default:
		return fmt.Errorf("expect after %q", r.last)
	}
	return nil
}

func compareTPs(what string, got []TopicPartition, want string) error {
	w, err := parseTPs(want)
	if err != nil {
		return err
	}
	if formatTPs(got) != formatTPs(w) {
		return fmt.Errorf("%s %q, want %q", what, formatTPs(got), formatTPs(w))
	}
	return nil
}

func (r *scriptRun) expectMember(id string, kv map[string]string) error {
	for _, m := range r.g.Describe().Members {
		if m.MemberID != id {
			continue
		}
		if v, ok := kv["epoch"]; ok && v != strconv.Itoa(int(m.MemberEpoch)) {
			return fmt.Errorf("epoch %d, want %s", m.MemberEpoch, v)
		}
		if v, ok := kv["state"]; ok && v != string(m.State) {
			return fmt.Errorf("state %s, want %s", m.State, v)
		}
		if v, ok := kv["instance"]; ok && v != m.InstanceID {
			return fmt.Errorf("instance %s, want %s", m.InstanceID, v)
		}
		for _, c := range []struct {
			key string
			got []TopicPartition
		}{{"assign", m.Assignment}, {"target", m.Target}, {"owned", m.Owned}} {
			if v, ok := kv[c.key]; ok {
				if err := compareTPs(c.key, c.got, v); err != nil {
					return err
				}
			}
		}
		return nil
	}
	return fmt.Errorf("no member %s", id)
}

// settle lets every present member heartbeat with its current epoch, reporting exactly its
// assignment, until the group is stable (at most 10 rounds).
func (r *scriptRun) settle() error {
	for range 10 {
		if r.g.Describe().State != StateReconciling {
			return nil
		}
		for _, id := range r.g.memberIDs() {
			m := r.g.members[id]
			if m == nil || m.away {
				continue
			}
			resp := r.g.Heartbeat(r.now, HeartbeatRequest{MemberID: id, MemberEpoch: m.epoch, Owned: m.assigned.sorted()})
			if resp.Error != nil {
				return fmt.Errorf("settle: %s: %v", id, resp.Error)
			}
			if err := r.g.checkInvariants(); err != nil {
				return fmt.Errorf("settle: invariant: %v", err)
			}
		}
	}
	if st := r.g.Describe().State; st == StateReconciling {
		return fmt.Errorf("settle: still %s after 10 rounds", st)
	}
	return nil
}
