// Package config layers the configuration of Runnel's binaries (runneld and
// runnel): command-line flags over RUNNEL_* environment variables over an
// optional YAML file over the flags' defaults.
//
// A program defines its flags on a [pflag.FlagSet] as usual, parses the
// command line, then calls [Load] (or [Loader.Load]). Every flag that was not
// given on the command line is filled from the first source that has it:
//
//	flag   --data-dir /srv/runnel        (the command line; pflag has already applied it)
//	env    RUNNEL_DATA_DIR=/srv/runnel   (prefix, "_", flag name upper-cased, "-" and "." to "_")
//	file   data-dir: /srv/runnel         (a YAML mapping; keys are the flag names)
//	default                              (the flag's own default)
//
// Rules:
//
//   - One source wins per flag; sources are never merged, so a list given in the
//     environment replaces the file's list instead of extending it.
//
//   - Every value goes through the flag's own [pflag.Value.Set], so types and
//     validation are the flag's. A multi-value flag (one whose Value implements
//     [pflag.SliceValue], such as StringSlice) takes a YAML list through Replace,
//     one item per element; a single YAML scalar or an environment variable is
//     passed to Set once, so "a,b" is split by the flag exactly as --join a,b
//     would be.
//
//   - An environment variable set to the empty string counts as unset.
//
//   - The config file is named by the config flag (ConfigFlag, "config" by
//     default) on the command line, else by its variable (RUNNEL_CONFIG), else by
//     that flag's default; none of them set means no file. A named file that
//     cannot be read is an error. The config flag and "help" cannot be set from
//     the file or (help) from the environment.
//
//   - The file must be a single YAML document whose top level is a mapping. An
//     unknown key is an error that suggests the nearest flag name; so is a
//     repeated key, an empty (null) value, a list for a single-value flag, and a
//     mapping anywhere. Keys that are overridden by a flag or the environment are
//     still checked for these mistakes, but their values are not parsed.
//
//   - A variable that starts with the prefix but matches no flag is not an
//     error (the environment is shared with other programs and versions): its
//     name is returned in [Result.Ignored] so that the program can warn.
//
//   - All the mistakes found are returned together (joined with [errors.Join]);
//     each one is an [*Error] naming its source and key, for example
//
//     RUNNEL_ADDR="x": invalid value for --addr: address x: missing port in address
//     runnel.yaml:3: unknown key "data_dir" (did you mean "data-dir"?)
//
// Load does not change [pflag.Flag.Changed]: Changed still means "given on the
// command line". Use [Result.Source] to learn where a value came from, and
// [Result.WriteYAML] for a --print-config dump (which is itself a valid config
// file). Call Load once per flag set: a second call would append to slice
// flags.
package config

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"sort"
	"strings"

	"github.com/spf13/pflag"
	"gopkg.in/yaml.v3"
)

// Origin tells where a flag's final value came from.
type Origin string

// The origins, from the strongest to the weakest.
const (
	OriginFlag    Origin = "flag"
	OriginEnv     Origin = "env"
	OriginFile    Origin = "file"
	OriginDefault Origin = "default"
)

// DefaultConfigFlag is the flag (and, with the prefix, the environment
// variable) that names the YAML file when Loader.ConfigFlag is empty.
const DefaultConfigFlag = "config"

// Loader loads a flag set from its layered sources. The zero value uses no
// prefix; set Prefix to "RUNNEL".
type Loader struct {
	// Prefix of the environment variables, without the trailing underscore
	// ("RUNNEL"). Empty means variables are the bare upper-cased flag names.
	Prefix string
	// ConfigFlag is the name of the flag that holds the config file's path
	// ("config" if empty). The flag need not be defined: its environment
	// variable (RUNNEL_CONFIG) is consulted either way.
	ConfigFlag string
	// Env is the environment. Nil means the process environment (os.Environ).
	Env map[string]string
}

// Result records where every flag's value came from.
type Result struct {
	// File is the config file that was read, "" if none.
	File string
	// FileOrigin is where File's name came from (flag, env or default).
	FileOrigin Origin
	// Ignored lists, sorted, the environment variables that carry the prefix
	// but match no flag. They are worth a warning, not a failure.
	Ignored []string

	fs      *pflag.FlagSet
	prefix  string
	cfgFlag string
	sources map[string]Origin
	lines   map[string]int // file line of each flag set from the file
}

// Error is one configuration mistake. Its message names the source (an
// environment variable, or a file and line) and the key.
type Error struct {
	Origin Origin // OriginEnv or OriginFile (or OriginFlag for the config path)
	Name   string // the environment variable, or the file's path
	Line   int    // the file's line, 0 if unknown
	Key    string // the flag name or the offending key, "" if none
	Err    error  // the cause: the flag's Set error, an I/O error, or nil
	msg    string
}

func (e *Error) Error() string { return e.msg }

// Unwrap returns the cause.
func (e *Error) Unwrap() error { return e.Err }

// Load is Loader{Prefix: prefix}.Load(fs), reading the process environment.
func Load(fs *pflag.FlagSet, prefix string) (*Result, error) {
	return Loader{Prefix: prefix}.Load(fs)
}

// EnvName returns the environment variable for a flag name: the prefix and an
// underscore, then the name upper-cased with "-" and "." turned into "_".
// EnvName("RUNNEL", "data-dir") is "RUNNEL_DATA_DIR".
func EnvName(prefix, flag string) string {
	n := strings.ToUpper(strings.NewReplacer("-", "_", ".", "_").Replace(flag))
	if prefix == "" {
		return n
	}
	return prefix + "_" + n
}

// Load fills every flag of fs not set on the command line from the
// environment, then the YAML file, leaving the default otherwise. fs must
// already be parsed. On error the Result is still returned (for
// diagnostics), but flag values may be partly applied.
func (l Loader) Load(set *pflag.FlagSet) (*Result, error) {
	if !set.Parsed() {
		return nil, errors.New("config: Load called before the flag set was parsed")
	}
	cfgFlag := l.ConfigFlag
	if cfgFlag == "" {
		cfgFlag = DefaultConfigFlag
	}
	env := l.Env
	if env == nil {
		env = osEnv()
	}
	r := &Result{
		fs:      set,
		prefix:  l.Prefix,
		cfgFlag: cfgFlag,
		sources: map[string]Origin{},
		lines:   map[string]int{},
	}

	// Map variables to flags; refuse two flags sharing a variable.
	byEnv := map[string]*pflag.Flag{}
	var errs []error
	set.VisitAll(func(f *pflag.Flag) {
		n := EnvName(l.Prefix, f.Name)
		if g, ok := byEnv[n]; ok {
			errs = append(errs, fmt.Errorf("config: flags --%s and --%s both map to %s", g.Name, f.Name, n))
			return
		}
		byEnv[n] = f
	})
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	cfgEnv := EnvName(l.Prefix, cfgFlag)
	if l.Prefix != "" {
		pre := l.Prefix + "_"
		for name := range env {
			if strings.HasPrefix(name, pre) && byEnv[name] == nil && name != cfgEnv {
				r.Ignored = append(r.Ignored, name)
			}
		}
		sort.Strings(r.Ignored)
	}

	// Command line, then environment.
	set.VisitAll(func(f *pflag.Flag) {
		if f.Changed {
			r.sources[f.Name] = OriginFlag
			return
		}
		r.sources[f.Name] = OriginDefault
		if f.Name == "help" {
			return
		}
		n := EnvName(l.Prefix, f.Name)
		v, ok := env[n]
		if !ok || v == "" {
			return
		}
		if err := guardedSet(f, func() error { return f.Value.Set(v) }); err != nil {
			errs = append(errs, &Error{Origin: OriginEnv, Name: n, Key: f.Name, Err: err,
				msg: fmt.Sprintf("%s=%q: invalid value for --%s: %v", n, v, f.Name, err)})
			return
		}
		r.sources[f.Name] = OriginEnv
	})

	// Which file, if any.
	path, origin := "", OriginDefault
	if f := set.Lookup(cfgFlag); f != nil {
		path, origin = f.Value.String(), r.sources[f.Name]
	} else if v := env[cfgEnv]; v != "" {
		path, origin = v, OriginEnv
	}
	if path != "" {
		r.File, r.FileOrigin = path, origin
		data, err := os.ReadFile(path)
		if err != nil {
			cause := err
			var pe *fs.PathError
			if errors.As(err, &pe) {
				cause = pe.Err
			}
			errs = append(errs, &Error{Origin: OriginFile, Name: path, Key: cfgFlag, Err: err,
				msg: fmt.Sprintf("config file %s (from %s): %v", path, r.describe(cfgFlag, origin), cause)})
		} else {
			errs = append(errs, r.applyFile(path, data)...)
		}
	}
	return r, errors.Join(errs...)
}

// Source reports where the final value of the named flag came from: "flag",
// "env", "file" or "default"; "" for a flag that fs does not define.
func (r *Result) Source(name string) Origin {
	if f := r.fs.Lookup(name); f != nil {
		return r.sources[f.Name]
	}
	return ""
}

// Where describes the source of the named flag for messages: "flag --addr",
// "env RUNNEL_ADDR", "file runnel.yaml:3" or "default".
func (r *Result) Where(name string) string {
	f := r.fs.Lookup(name)
	if f == nil {
		return ""
	}
	return r.describe(f.Name, r.sources[f.Name])
}

func (r *Result) describe(name string, o Origin) string {
	switch o {
	case OriginFlag:
		return "flag --" + name
	case OriginEnv:
		return "env " + EnvName(r.prefix, name)
	case OriginFile:
		return fmt.Sprintf("file %s:%d", r.File, r.lines[name])
	}
	return string(o)
}

// WriteYAML writes every flag's final value (except help and the config flag)
// as a YAML config file, each line commented with its source. Reading the
// output back as a config file gives the same values.
func (r *Result) WriteYAML(w io.Writer) error {
	doc := &yaml.Node{Kind: yaml.MappingNode}
	r.fs.VisitAll(func(f *pflag.Flag) {
		if f.Name == "help" || f.Name == r.cfgFlag || f.Hidden {
			return
		}
		k := &yaml.Node{Kind: yaml.ScalarNode, Value: f.Name}
		var v *yaml.Node
		if sv, ok := f.Value.(pflag.SliceValue); ok {
			v = &yaml.Node{Kind: yaml.SequenceNode, Style: yaml.FlowStyle}
			for _, s := range sv.GetSlice() {
				v.Content = append(v.Content, strNode(s))
			}
		} else {
			v = strNode(f.Value.String())
		}
		v.LineComment = r.describe(f.Name, r.sources[f.Name])
		doc.Content = append(doc.Content, k, v)
	})
	enc := yaml.NewEncoder(w)
	enc.SetIndent(2)
	if err := enc.Encode(doc); err != nil {
		return err
	}
	return enc.Close()
}

func strNode(s string) *yaml.Node {
	return &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: s}
}

// applyFile checks the YAML file and applies its values to the flags still at
// their default. It returns every mistake found, in file order.
func (r *Result) applyFile(path string, data []byte) []error {
	fail := func(line int, key string, cause error, format string, args ...any) error {
		loc := path
		if line > 0 {
			loc = fmt.Sprintf("%s:%d", path, line)
		}
		return &Error{Origin: OriginFile, Name: path, Line: line, Key: key, Err: cause,
			msg: loc + ": " + fmt.Sprintf(format, args...)}
	}
	dec := yaml.NewDecoder(strings.NewReader(string(data)))
	var doc yaml.Node
	if err := dec.Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			return nil // empty file, or only comments
		}
		return []error{fail(0, "", err, "invalid YAML: %v", err)}
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); !errors.Is(err, io.EOF) {
		line := extra.Line
		if err != nil {
			return []error{fail(0, "", err, "invalid YAML: %v", err)}
		}
		return []error{fail(line, "", nil, "more than one YAML document; a config file holds one mapping")}
	}
	top := &doc
	if top.Kind == yaml.DocumentNode {
		if len(top.Content) == 0 {
			return nil
		}
		top = top.Content[0]
	}
	if top.Kind == yaml.ScalarNode && top.Tag == "!!null" {
		return nil // a document holding only "~" or "---"
	}
	if top.Kind != yaml.MappingNode {
		return []error{fail(top.Line, "", nil, "the top level must be a mapping of flag names to values, not %s", kindName(top))}
	}

	var errs []error
	seen := map[string]int{}
	for i := 0; i+1 < len(top.Content); i += 2 {
		kn, vn := top.Content[i], resolve(top.Content[i+1])
		if kn.Kind != yaml.ScalarNode {
			errs = append(errs, fail(kn.Line, "", nil, "a key must be a flag name, not %s", kindName(kn)))
			continue
		}
		key := kn.Value
		f := r.fs.Lookup(key)
		if f == nil || f.Name == "help" {
			msg := fmt.Sprintf("unknown key %q", key)
			if s := r.suggest(key); s != "" {
				msg += fmt.Sprintf(" (did you mean %q?)", s)
			} else if v := resolve(top.Content[i+1]); v != nil && v.Kind == yaml.MappingNode {
				msg += " (keys are flag names at the top level; sections are not supported)"
			}
			errs = append(errs, fail(kn.Line, key, nil, "%s", msg))
			continue
		}
		if f.Name == r.cfgFlag {
			errs = append(errs, fail(kn.Line, key, nil, "%s: the config file cannot name another config file", key))
			continue
		}
		if prev, ok := seen[f.Name]; ok {
			errs = append(errs, fail(kn.Line, key, nil, "%s: repeated key (first at line %d)", key, prev))
			continue
		}
		seen[f.Name] = kn.Line

		sv, multi := f.Value.(pflag.SliceValue)
		var items []string
		switch {
		case vn == nil:
			errs = append(errs, fail(kn.Line, key, nil, "%s: alias to nothing", key))
			continue
		case vn.Kind == yaml.ScalarNode && vn.Tag == "!!null":
			errs = append(errs, fail(vn.Line, key, nil, "%s: empty value (remove the key to keep the default)", key))
			continue
		case vn.Kind == yaml.ScalarNode:
		case vn.Kind == yaml.SequenceNode && multi:
			bad := false
			for _, it := range vn.Content {
				it2 := resolve(it)
				if it2 == nil || it2.Kind != yaml.ScalarNode || it2.Tag == "!!null" {
					line := it.Line
					errs = append(errs, fail(line, key, nil, "%s: list items must be single values, not %s", key, kindName(it2)))
					bad = true
					break
				}
				items = append(items, it2.Value)
			}
			if bad {
				continue
			}
		case vn.Kind == yaml.SequenceNode:
			errs = append(errs, fail(vn.Line, key, nil, "%s: expected a single %s value, not a list", key, f.Value.Type()))
			continue
		default:
			want := "a single " + f.Value.Type() + " value"
			if multi {
				want = "a list or a single value"
			}
			errs = append(errs, fail(vn.Line, key, nil, "%s: expected %s, not %s", key, want, kindName(vn)))
			continue
		}

		if r.sources[f.Name] != OriginDefault {
			continue // a flag or the environment wins
		}
		var err error
		var shown string
		if vn.Kind == yaml.SequenceNode {
			err = guardedSet(f, func() error { return sv.Replace(items) })
			shown = "[" + strings.Join(items, ", ") + "]"
		} else {
			err = guardedSet(f, func() error { return f.Value.Set(vn.Value) })
			shown = fmt.Sprintf("%q", vn.Value)
		}
		if err != nil {
			errs = append(errs, fail(vn.Line, key, err, "%s=%s: invalid value for --%s: %v", key, shown, f.Name, err))
			continue
		}
		r.sources[f.Name] = OriginFile
		r.lines[f.Name] = kn.Line
	}
	return errs
}

// guardedSet runs set and, if it fails, puts the flag's previous value back:
// some pflag values (int, bool, ...) store a zero before reporting an error.
func guardedSet(f *pflag.Flag, set func() error) error {
	sv, multi := f.Value.(pflag.SliceValue)
	var oldSlice []string
	if multi {
		oldSlice = append([]string(nil), sv.GetSlice()...)
	}
	old := f.Value.String()
	err := set()
	if err != nil && f.Value.String() != old {
		if multi {
			_ = sv.Replace(oldSlice)
		} else {
			_ = f.Value.Set(old) // best effort
		}
	}
	return err
}

// resolve follows aliases (at most a few, so that cycles cannot loop).
func resolve(n *yaml.Node) *yaml.Node {
	for i := 0; n != nil && n.Kind == yaml.AliasNode && i < 8; i++ {
		n = n.Alias
	}
	if n != nil && n.Kind == yaml.AliasNode {
		return nil
	}
	return n
}

func kindName(n *yaml.Node) string {
	if n == nil {
		return "nothing"
	}
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	case yaml.ScalarNode:
		if n.Tag == "!!null" {
			return "an empty value"
		}
		return "a single value"
	case yaml.AliasNode:
		return "an alias"
	case yaml.DocumentNode:
		return "a document"
	}
	return "an unknown node"
}

// suggest returns the flag name nearest to key, or "" if none is close.
func (r *Result) suggest(key string) string {
	norm := func(s string) string {
		return strings.ToLower(strings.NewReplacer("_", "-", ".", "-", " ", "-").Replace(s))
	}
	nk := norm(key)
	best, bestD := "", -1
	r.fs.VisitAll(func(f *pflag.Flag) {
		if f.Name == "help" || f.Name == r.cfgFlag {
			return
		}
		d := levenshtein(nk, norm(f.Name))
		if bestD < 0 || d < bestD {
			best, bestD = f.Name, d
		}
	})
	limit := max(2, len(nk)/3)
	if bestD < 0 || bestD > limit {
		return ""
	}
	return best
}

func levenshtein(a, b string) int {
	ra, rb := []rune(a), []rune(b)
	prev := make([]int, len(rb)+1)
	cur := make([]int, len(rb)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(ra); i++ {
		cur[0] = i
		for j := 1; j <= len(rb); j++ {
			cost := 1
			if ra[i-1] == rb[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(rb)]
}

func osEnv() map[string]string {
	m := map[string]string{}
	for _, kv := range os.Environ() {
		if k, v, ok := strings.Cut(kv, "="); ok {
			m[k] = v
		}
	}
	return m
}
