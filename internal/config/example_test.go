package config_test

import (
	"fmt"
	"os"
	"path/filepath"

	"github.com/runnel-io/runnel/internal/config"
	"github.com/spf13/pflag"
)

func ExampleLoad() {
	dir, _ := os.MkdirTemp("", "runnel-example")
	defer os.RemoveAll(dir)
	file := filepath.Join(dir, "runneld.yaml")
	_ = os.WriteFile(file, []byte(`
# runneld configuration
data-dir: /var/lib/runnel
join: [10.0.0.2:9421, 10.0.0.3:9421]
addr: 0.0.0.0:9420
`), 0o600)

	fs := pflag.NewFlagSet("runneld", pflag.ContinueOnError)
	dataDir := fs.String("data-dir", "./data", "where the logs live")
	addr := fs.String("addr", "127.0.0.1:9420", "listen address")
	nodeID := fs.String("node-id", "", "this broker's id")
	join := fs.StringSlice("join", nil, "serf addresses of brokers to join")
	fs.String("config", "", "YAML config file")
	_ = fs.Parse([]string{"--addr", "0.0.0.0:9500"})

	// In a program: config.Load(fs, "RUNNEL"), which reads os.Environ.
	r, err := config.Loader{
		Prefix: "RUNNEL",
		Env:    map[string]string{"RUNNEL_CONFIG": file, "RUNNEL_NODE_ID": "b1", "RUNNEL_COLOUR": "red"},
	}.Load(fs)
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println("data-dir", *dataDir, "from", r.Source("data-dir"))
	fmt.Println("addr", *addr, "from", r.Source("addr"))
	fmt.Println("node-id", *nodeID, "from", r.Where("node-id"))
	fmt.Println("join", *join, "from", r.Source("join"))
	fmt.Println("ignored", r.Ignored)
	// Output:
	// data-dir /var/lib/runnel from file
	// addr 0.0.0.0:9500 from flag
	// node-id b1 from env RUNNEL_NODE_ID
	// join [10.0.0.2:9421 10.0.0.3:9421] from file
	// ignored [RUNNEL_COLOUR]
}
