// A broker's identity on disk: its broker id and its data directory's incarnation.

package cluster

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/runnel-io/runnel/internal/vfs"
	"github.com/runnel-io/runnel/topic"
)

// Files in the data directory.
const (
	BrokerIDFile    = "broker-id"
	IncarnationFile = "incarnation"
)

// LoadOrCreateBrokerID returns the broker id kept in dataDir/broker-id, creating the file
// with requested if it does not exist. requested < 0 means "whatever is stored" (an error
// for a new data dir). A requested id that differs from the stored one is an error: a data
// dir belongs to one broker.
func LoadOrCreateBrokerID(dataDir string, requested int32) (int32, error) {
	path := filepath.Join(dataDir, BrokerIDFile)
	b, err := os.ReadFile(path)
	switch {
	case err == nil:
		n, perr := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 32)
		if perr != nil || n < 0 {
			return 0, fmt.Errorf("cluster: %s: not a broker id: %q", path, strings.TrimSpace(string(b)))
		}
		if requested >= 0 && int32(n) != requested {
			return 0, fmt.Errorf("cluster: data dir %s belongs to broker %d, not %d", dataDir, n, requested)
		}
		return int32(n), nil
	case !errors.Is(err, fs.ErrNotExist):
		return 0, fmt.Errorf("cluster: %w", err)
	}
	if requested < 0 {
		return 0, fmt.Errorf("cluster: data dir %s has no broker id and none was given", dataDir)
	}
	if err := os.MkdirAll(dataDir, 0o755); err != nil {
		return 0, fmt.Errorf("cluster: %w", err)
	}
	if err := vfs.WriteFileAtomic(vfs.OS, path, []byte(strconv.Itoa(int(requested))+"\n")); err != nil {
		return 0, fmt.Errorf("cluster: %w", err)
	}
	return requested, nil
}

// LoadOrCreateIncarnation returns the data directory's incarnation id (a random UUID in
// dataDir/incarnation, created with the directory), and whether it was created now. A
// broker whose data directory was wiped comes back with another incarnation, which is how
// the cluster tells it from the broker it was.
func LoadOrCreateIncarnation(dataDir string) (string, bool, error) {
	path := filepath.Join(dataDir, IncarnationFile)
	b, err := os.ReadFile(path)
	if err == nil {
		id := strings.TrimSpace(string(b))
		if id == "" || strings.ContainsAny(id, "/ \t") {
			return "", false, fmt.Errorf("cluster: %s: bad incarnation %q", path, id)
		}
		return id, false, nil
	}
	if !errors.Is(err, fs.ErrNotExist) {
		return "", false, fmt.Errorf("cluster: %w", err)
	}
	if err := os.MkdirAll(dataDir, 0o755); err != nil {
		return "", false, fmt.Errorf("cluster: %w", err)
	}
	id := topic.NewID()
	if err := vfs.WriteFileAtomic(vfs.OS, path, []byte(id+"\n")); err != nil {
		return "", false, fmt.Errorf("cluster: %w", err)
	}
	return id, true, nil
}

// HasMetadata reports whether dataDir holds this broker's metadata Raft state (meta/raft.db):
// whether it has been a member of a cluster.
func HasMetadata(dataDir string) (bool, error) {
	_, err := os.Stat(filepath.Join(dataDir, metaDirName, raftFileName))
	switch {
	case err == nil:
		return true, nil
	case errors.Is(err, fs.ErrNotExist):
		return false, nil
	}
	return false, err
}
