package config

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/spf13/pflag"
)

// hostPort is a flag value that validates host:port, like runneld's --addr.
type hostPort struct{ s string }

func (h *hostPort) String() string { return h.s }
func (h *hostPort) Type() string   { return "host:port" }
func (h *hostPort) Set(v string) error {
	if _, _, err := net.SplitHostPort(v); err != nil {
		return err
	}
	h.s = v
	return nil
}

type flags struct {
	fs         *pflag.FlagSet
	dataDir    *string
	addr       *hostPort
	join       *[]string
	partitions *int
	verbose    *bool
	timeout    *time.Duration
	config     *string
}

func newFlags() *flags {
	f := &flags{fs: pflag.NewFlagSet("runneld", pflag.ContinueOnError)}
	f.fs.SetOutput(&bytes.Buffer{})
	f.dataDir = f.fs.String("data-dir", "./data", "data directory")
	f.addr = &hostPort{"127.0.0.1:9420"}
	f.fs.Var(f.addr, "addr", "listen address")
	f.fs.String("node-id", "", "node id")
	f.fs.String("serf-addr", "127.0.0.1:9421", "serf address")
	f.join = f.fs.StringSlice("join", nil, "peers to join")
	f.fs.String("advertise-addr", "", "advertised address")
	f.partitions = f.fs.Int("partitions", 1, "default partitions")
	f.verbose = f.fs.Bool("verbose", false, "verbose")
	f.timeout = f.fs.Duration("timeout", 5*time.Second, "timeout")
	f.config = f.fs.String("config", "", "YAML config file")
	return f
}

func writeFile(t testing.TB, body string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "runnel.yaml")
	if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// load parses args, then loads with env (RUNNEL prefix) and, when file is not
// empty, a config file with that body named through RUNNEL_CONFIG.
func load(t *testing.T, args []string, env map[string]string, file string) (*flags, *Result, error) {
	t.Helper()
	f := newFlags()
	if err := f.fs.Parse(args); err != nil {
		t.Fatal(err)
	}
	if env == nil {
		env = map[string]string{}
	}
	if file != "" {
		env["RUNNEL_CONFIG"] = writeFile(t, file)
	}
	r, err := Loader{Prefix: "RUNNEL", Env: env}.Load(f.fs)
	return f, r, err
}

func TestPrecedence(t *testing.T) {
	for mask := 0; mask < 8; mask++ {
		useFlag, useEnv, useFile := mask&4 != 0, mask&2 != 0, mask&1 != 0
		name := fmt.Sprintf("flag=%v,env=%v,file=%v", useFlag, useEnv, useFile)
		t.Run(name, func(t *testing.T) {
			var args []string
			env := map[string]string{}
			file := "# nothing\n"
			want, wantSrc := "./data", OriginDefault
			if useFile {
				file = "data-dir: /from/file\n"
				want, wantSrc = "/from/file", OriginFile
			}
			if useEnv {
				env["RUNNEL_DATA_DIR"] = "/from/env"
				want, wantSrc = "/from/env", OriginEnv
			}
			if useFlag {
				args = []string{"--data-dir", "/from/flag"}
				want, wantSrc = "/from/flag", OriginFlag
			}
			f, r, err := load(t, args, env, file)
			if err != nil {
				t.Fatal(err)
			}
			if *f.dataDir != want || r.Source("data-dir") != wantSrc {
				t.Fatalf("data-dir = %q from %s, want %q from %s", *f.dataDir, r.Source("data-dir"), want, wantSrc)
			}
			if got := f.fs.Lookup("data-dir").Changed; got != useFlag {
				t.Fatalf("Changed = %v, want %v (only the command line)", got, useFlag)
			}
			// Untouched flags stay at their defaults.
			if r.Source("serf-addr") != OriginDefault || f.fs.Lookup("serf-addr").Value.String() != "127.0.0.1:9421" {
				t.Fatalf("serf-addr disturbed")
			}
		})
	}
}

func TestSourcesPerFlagAndWhere(t *testing.T) {
	f, r, err := load(t,
		[]string{"--addr", "0.0.0.0:1"},
		map[string]string{"RUNNEL_PARTITIONS": "3", "RUNNEL_NODE_ID": ""},
		"# comment\nnode-id: n1\ntimeout: 2s\npartitions: 9\n")
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]Origin{"addr": OriginFlag, "partitions": OriginEnv, "node-id": OriginFile,
		"timeout": OriginFile, "verbose": OriginDefault, "config": OriginEnv, "nope": ""}
	for k, w := range want {
		if got := r.Source(k); got != w {
			t.Errorf("Source(%q) = %q, want %q", k, got, w)
		}
	}
	if f.addr.s != "0.0.0.0:1" || *f.partitions != 3 || *f.timeout != 2*time.Second {
		t.Fatalf("values: %q %d %v", f.addr.s, *f.partitions, *f.timeout)
	}
	if v := f.fs.Lookup("node-id").Value.String(); v != "n1" {
		t.Fatalf("empty env must count as unset; node-id = %q", v)
	}
	for k, w := range map[string]string{
		"addr": "flag --addr", "partitions": "env RUNNEL_PARTITIONS",
		"node-id": "file " + r.File + ":2", "verbose": "default",
	} {
		if got := r.Where(k); got != w {
			t.Errorf("Where(%q) = %q, want %q", k, got, w)
		}
	}
	if r.FileOrigin != OriginEnv {
		t.Errorf("FileOrigin = %q", r.FileOrigin)
	}
}

func TestConfigPathPrecedence(t *testing.T) {
	fileA := writeFile(t, "node-id: a\n")
	fileB := writeFile(t, "node-id: b\n")
	f := newFlags()
	_ = f.fs.Parse([]string{"--config", fileA})
	r, err := Loader{Prefix: "RUNNEL", Env: map[string]string{"RUNNEL_CONFIG": fileB}}.Load(f.fs)
	if err != nil {
		t.Fatal(err)
	}
	if r.File != fileA || r.FileOrigin != OriginFlag || f.fs.Lookup("node-id").Value.String() != "a" {
		t.Fatalf("file %q from %s", r.File, r.FileOrigin)
	}

	// No config flag defined: the variable is still honoured.
	fs := pflag.NewFlagSet("x", pflag.ContinueOnError)
	id := fs.String("node-id", "", "")
	_ = fs.Parse(nil)
	r, err = Loader{Prefix: "RUNNEL", Env: map[string]string{"RUNNEL_CONFIG": fileB}}.Load(fs)
	if err != nil || *id != "b" || r.FileOrigin != OriginEnv || len(r.Ignored) != 0 {
		t.Fatalf("id=%q err=%v origin=%s ignored=%v", *id, err, r.FileOrigin, r.Ignored)
	}

	// No file at all.
	f = newFlags()
	_ = f.fs.Parse(nil)
	r, err = Loader{Prefix: "RUNNEL", Env: map[string]string{}}.Load(f.fs)
	if err != nil || r.File != "" {
		t.Fatalf("err=%v file=%q", err, r.File)
	}
}

func TestSlices(t *testing.T) {
	tests := []struct {
		name string
		args []string
		env  string
		file string
		want []string
		src  Origin
	}{
		{"default", nil, "", "", []string{}, OriginDefault},
		{"repeated flag", []string{"--join", "a:1", "--join", "b:2"}, "x", "join: [z]", []string{"a:1", "b:2"}, OriginFlag},
		{"comma flag", []string{"--join", "a:1,b:2"}, "", "", []string{"a:1", "b:2"}, OriginFlag},
		{"env comma list", nil, "a:1,b:2", "join: [z]", []string{"a:1", "b:2"}, OriginEnv},
		{"env single", nil, "a:1", "", []string{"a:1"}, OriginEnv},
		{"yaml block list", nil, "", "join:\n  - a:1\n  - b:2\n", []string{"a:1", "b:2"}, OriginFile},
		{"yaml flow list", nil, "", "join: [a:1, b:2]\n", []string{"a:1", "b:2"}, OriginFile},
		{"yaml item keeps commas", nil, "", "join: ['a:1,b:2']\n", []string{"a:1,b:2"}, OriginFile},
		{"yaml scalar parsed like the flag", nil, "", "join: a:1,b:2\n", []string{"a:1", "b:2"}, OriginFile},
		{"yaml empty list", nil, "", "join: []\n", []string{}, OriginFile},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			env := map[string]string{}
			if tt.env != "" {
				env["RUNNEL_JOIN"] = tt.env
			}
			f, r, err := load(t, tt.args, env, tt.file)
			if err != nil {
				t.Fatal(err)
			}
			got := *f.join
			if got == nil {
				got = []string{}
			}
			if !reflect.DeepEqual(got, tt.want) || r.Source("join") != tt.src {
				t.Fatalf("join = %q from %s, want %q from %s", got, r.Source("join"), tt.want, tt.src)
			}
		})
	}
}

// A file with a syntax mistake, an unknown key, a nesting mistake, a type
// mismatch and a bad value; every one reported, in file order, with its line.
func TestFileErrors(t *testing.T) {
	tests := []struct {
		name string
		env  map[string]string
		file string
		want []string // each error's message; "PATH" stands for the file
	}{
		{"unknown key suggests", nil, "data_dir: /x\n", []string{`PATH:1: unknown key "data_dir" (did you mean "data-dir"?)`}},
		{"typo suggests", nil, "# c\nadvertise_adr: 1.2.3.4:5\n", []string{`PATH:2: unknown key "advertise_adr" (did you mean "advertise-addr"?)`}},
		{"unknown key far from all", nil, "zzzzzzzzzz: 1\n", []string{`PATH:1: unknown key "zzzzzzzzzz"`}},
		{"section", nil, "broker:\n  data-dir: /x\n", []string{`PATH:1: unknown key "broker" (keys are flag names at the top level; sections are not supported)`}},
		{"help refused", nil, "help: true\n", []string{`PATH:1: unknown key "help"`}},
		{"config refused", nil, "config: other.yaml\n", []string{`PATH:1: config: the config file cannot name another config file`}},
		{"repeated", nil, "node-id: a\nnode-id: b\n", []string{`PATH:2: node-id: repeated key (first at line 1)`}},
		{"null", nil, "node-id:\n", []string{`PATH:1: node-id: empty value (remove the key to keep the default)`}},
		{"list for scalar", nil, "addr:\n  - a:1\n", []string{`PATH:2: addr: expected a single host:port value, not a list`}},
		{"mapping for scalar", nil, "partitions: {a: 1}\n", []string{`PATH:1: partitions: expected a single int value, not a mapping`}},
		{"mapping for list", nil, "join: {a: 1}\n", []string{`PATH:1: join: expected a list or a single value, not a mapping`}},
		{"nested list item", nil, "join:\n  - a:1\n  - [b:2]\n", []string{`PATH:3: join: list items must be single values, not a list`}},
		{"bad int", nil, "partitions: many\n", []string{`PATH:1: partitions="many": invalid value for --partitions: strconv.ParseInt: parsing "many": invalid syntax`}},
		{"bad custom", nil, "\naddr: x\n", []string{`PATH:2: addr="x": invalid value for --addr: address x: missing port in address`}},
		{"bad bool", nil, "verbose: maybe\n", []string{`PATH:1: verbose="maybe": invalid value for --verbose: strconv.ParseBool: parsing "maybe": invalid syntax`}},
		{"not a mapping", nil, "- a\n- b\n", []string{`PATH:1: the top level must be a mapping of flag names to values, not a list`}},
		{"scalar document", nil, "hello\n", []string{`PATH:1: the top level must be a mapping of flag names to values, not a single value`}},
		{"two documents", nil, "node-id: a\n---\nnode-id: b\n", []string{`PATH:2: more than one YAML document; a config file holds one mapping`}},
		{"syntax", nil, "node-id: a\n  bad: [\n", []string{`PATH: invalid YAML: yaml: line 2: mapping values are not allowed in this context`}},
		{"overridden value not parsed but shape checked", map[string]string{"RUNNEL_PARTITIONS": "2"},
			"partitions: many\naddr: [a]\n", []string{`PATH:2: addr: expected a single host:port value, not a list`}},
		{"several in order", nil,
			"# Runnel broker\ndata-dir: /var/lib/runnel   # where logs live\nnodeid: n1\njoin:\n  - a:1\n  - {b: 2}\npartitions: x\n",
			[]string{
				`PATH:3: unknown key "nodeid" (did you mean "node-id"?)`,
				`PATH:6: join: list items must be single values, not a mapping`,
				`PATH:7: partitions="x": invalid value for --partitions: strconv.ParseInt: parsing "x": invalid syntax`,
			}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, r, err := load(t, nil, tt.env, tt.file)
			if err == nil {
				t.Fatal("no error")
			}
			var got []string
			for _, e := range err.(interface{ Unwrap() []error }).Unwrap() {
				var ce *Error
				if !errors.As(e, &ce) || ce.Origin != OriginFile || ce.Name != r.File {
					t.Errorf("%v: not a file *Error", e)
				}
				got = append(got, strings.ReplaceAll(e.Error(), r.File, "PATH"))
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Fatalf("errors:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(tt.want, "\n"))
			}
		})
	}
}

func TestFileCommentsAndAnchors(t *testing.T) {
	f, r, err := load(t, nil, nil, `
# Runnel broker configuration.
data-dir: /var/lib/runnel  # trailing comment
peers: &peers [a:1, b:2]    # an anchor is an unknown key...
`)
	if err == nil || !strings.Contains(err.Error(), `unknown key "peers"`) {
		t.Fatalf("err = %v", err)
	}
	if *f.dataDir != "/var/lib/runnel" || r.Source("data-dir") != OriginFile {
		t.Fatalf("valid keys still apply: %q", *f.dataDir)
	}
	f, _, err = load(t, nil, nil, "node-id: &n n7\nadvertise-addr: *n\n")
	if err != nil || f.fs.Lookup("advertise-addr").Value.String() != "n7" {
		t.Fatalf("alias: err=%v", err)
	}
	f, r, err = load(t, nil, nil, "# only a comment\n")
	if err != nil || r.Source("data-dir") != OriginDefault || *f.dataDir != "./data" {
		t.Fatalf("comment-only file: %v", err)
	}
}

func TestEnvErrors(t *testing.T) {
	f, r, err := load(t, nil, map[string]string{
		"RUNNEL_ADDR":       "x",
		"RUNNEL_PARTITIONS": "two",
		"RUNNEL_DATA_DIR":   "/ok",
		"RUNNEL_DATADIR":    "/typo",
		"RUNNEL_HELP":       "1",
		"OTHER_ADDR":        "y",
	}, "")
	want := []string{
		`RUNNEL_ADDR="x": invalid value for --addr: address x: missing port in address`,
		`RUNNEL_PARTITIONS="two": invalid value for --partitions: strconv.ParseInt: parsing "two": invalid syntax`,
	}
	var got []string
	for _, e := range err.(interface{ Unwrap() []error }).Unwrap() {
		var ce *Error
		if !errors.As(e, &ce) || ce.Origin != OriginEnv || ce.Key == "" || ce.Err == nil {
			t.Errorf("%v: not an env *Error", e)
		}
		got = append(got, e.Error())
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("got\n%s", strings.Join(got, "\n"))
	}
	if *f.partitions != 1 || f.addr.s != "127.0.0.1:9420" || r.Source("partitions") != OriginDefault {
		t.Fatalf("a refused value must leave the flag as it was: %d %q", *f.partitions, f.addr.s)
	}
	if *f.dataDir != "/ok" {
		t.Fatalf("accepted values stay applied")
	}
	if !reflect.DeepEqual(r.Ignored, []string{"RUNNEL_DATADIR", "RUNNEL_HELP"}) {
		t.Fatalf("Ignored = %q", r.Ignored)
	}
}

func TestUnreadableFile(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "missing.yaml")
	f := newFlags()
	_ = f.fs.Parse([]string{"--config", missing})
	_, err := Loader{Prefix: "RUNNEL", Env: map[string]string{}}.Load(f.fs)
	want := "config file " + missing + " (from flag --config): no such file or directory"
	if err == nil || err.Error() != want {
		t.Fatalf("err = %v\nwant  %s", err, want)
	}
	if !errors.Is(err, os.ErrNotExist) {
		t.Fatal("cause lost")
	}

	f = newFlags()
	_ = f.fs.Parse(nil)
	_, err = Loader{Prefix: "RUNNEL", Env: map[string]string{"RUNNEL_CONFIG": t.TempDir()}}.Load(f.fs)
	if err == nil || !strings.HasSuffix(err.Error(), "(from env RUNNEL_CONFIG): is a directory") {
		t.Fatalf("err = %v", err)
	}
}

func TestMisuse(t *testing.T) {
	fs := pflag.NewFlagSet("x", pflag.ContinueOnError)
	fs.String("a-b", "", "")
	fs.String("a.b", "", "")
	if _, err := (Loader{Env: map[string]string{}}).Load(fs); err == nil || !strings.Contains(err.Error(), "before the flag set was parsed") {
		t.Fatalf("unparsed: %v", err)
	}
	_ = fs.Parse(nil)
	if _, err := (Loader{Prefix: "RUNNEL", Env: map[string]string{}}).Load(fs); err == nil ||
		err.Error() != "config: flags --a-b and --a.b both map to RUNNEL_A_B" {
		t.Fatalf("collision: %v", err)
	}
}

func TestEnvName(t *testing.T) {
	for in, want := range map[string]string{"data-dir": "RUNNEL_DATA_DIR", "addr": "RUNNEL_ADDR", "a.b-c": "RUNNEL_A_B_C"} {
		if got := EnvName("RUNNEL", in); got != want {
			t.Errorf("EnvName(%q) = %q", in, got)
		}
	}
	if EnvName("", "brokers") != "BROKERS" {
		t.Error("no prefix")
	}
}

func TestWriteYAMLRoundTrip(t *testing.T) {
	f, r, err := load(t, []string{"--join", "a:1", "--join", "b,2:3", "--join", "c"},
		map[string]string{"RUNNEL_PARTITIONS": "4"}, "node-id: 'yes'\ndata-dir: \"/d: x # y\"\n")
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if err := r.WriteYAML(&buf); err != nil {
		t.Fatal(err)
	}
	out := buf.String()
	for _, want := range []string{
		"partitions: \"4\" # env RUNNEL_PARTITIONS\n",
		"join: ['a:1', b, '2:3', c] # flag --join\n",
		"node-id: yes # file " + r.File + ":1\n",
		"serf-addr: 127.0.0.1:9421 # default\n",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("dump lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "config:") {
		t.Errorf("dump names the config flag:\n%s", out)
	}
	// Reading the dump back gives the same values.
	g, _, err := load(t, nil, nil, out)
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	f.fs.VisitAll(func(fl *pflag.Flag) {
		if fl.Name == "config" {
			return
		}
		if a, b := fl.Value.String(), g.fs.Lookup(fl.Name).Value.String(); a != b {
			t.Errorf("%s: %q became %q", fl.Name, a, b)
		}
	})
}

func TestLoadProcessEnv(t *testing.T) {
	t.Setenv("RUNNELTEST_DATA_DIR", "/proc-env")
	f := newFlags()
	_ = f.fs.Parse(nil)
	r, err := Load(f.fs, "RUNNELTEST")
	if err != nil || *f.dataDir != "/proc-env" || r.Source("data-dir") != OriginEnv {
		t.Fatalf("err=%v data-dir=%q", err, *f.dataDir)
	}
}

func TestSuggest(t *testing.T) {
	f := newFlags()
	r := &Result{fs: f.fs, cfgFlag: "config"}
	for in, want := range map[string]string{
		"DATA_DIR": "data-dir", "serf_addr": "serf-addr", "advertise": "", "joins": "join",
		"confg": "", "x": "",
	} {
		if got := r.suggest(in); got != want {
			t.Errorf("suggest(%q) = %q, want %q", in, got, want)
		}
	}
}
