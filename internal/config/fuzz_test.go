package config

import (
	"testing"

	"github.com/spf13/pflag"
)

func FuzzLoadYAML(f *testing.F) {
	for _, s := range []string{
		"", "# c\n", "data-dir: /x\n", "join: [a:1, b:2]\n", "join:\n  - a\n  - {b: c}\n",
		"partitions: 3\nverbose: true\ntimeout: 1s\n", "a: &x [1]\nb: *x\n", "node-id: &n x\naddr: *n\n",
		"- 1\n", "x: y\n---\nz: 1\n", "{data-dir: 1, data-dir: 2}", "? [a]\n: b\n", "addr: ~\n",
		"join: &j [*j]\n", "!!binary aGk=: x\n",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		fl := newFlags()
		_ = fl.fs.Parse(nil)
		r := &Result{fs: fl.fs, prefix: "RUNNEL", cfgFlag: "config", sources: map[string]Origin{}, lines: map[string]int{}, File: "f.yaml"}
		before := map[string]string{}
		fl.fs.VisitAll(func(x *pflag.Flag) {
			r.sources[x.Name] = OriginDefault
			before[x.Name] = x.Value.String()
		})
		errs := r.applyFile("f.yaml", data)
		n := 0
		fl.fs.VisitAll(func(x *pflag.Flag) {
			n++
			if x.Changed {
				t.Fatalf("%s: Changed set by the file", x.Name)
			}
			if x.Name == "config" && x.Value.String() != before["config"] {
				t.Fatal("file set the config flag")
			}
			if r.sources[x.Name] != OriginFile && x.Value.String() != before[x.Name] {
				t.Fatalf("%s changed to %q without being recorded as from the file", x.Name, x.Value.String())
			}
		})
		if n != len(before) || len(r.sources) != len(before) {
			t.Fatalf("flag set grew: %d flags, %d sources", n, len(r.sources))
		}
		for _, e := range errs {
			if _, ok := e.(*Error); !ok || e.Error() == "" {
				t.Fatalf("error %T %q", e, e)
			}
		}
	})
}
