// The state file is written without an fsync per apply batch, and trusted after a restart
// only when no machine crash can have come between.

package cluster

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/runnel-io/runnel/internal/vfs"
)

// Why: the state machine is derived. What makes a command durable is the Raft log (fsynced
// on a quorum before the command commits) and the snapshots (fsynced before the log before
// them is compacted); the state file only saves replaying them. Syncing it on every apply
// batch cost two fdatasyncs (bbolt syncs its pages, then its meta page) on every broker for
// every batch of offset commits, about a quarter of the metadata group's commit rate.
//
// What may then be lost: nothing on a process crash (kill -9), since every write of a
// committed bbolt transaction is in the page cache, which outlives the process. On a machine
// crash (power, kernel) the unsynced writes may reach the disk in any order, and the file
// may hold a meta page whose pages never landed: it cannot be trusted at all.
//
// So the file's writer records the machine's boot id beside it (state.db.boot, synced
// before the first unsynced write) and removes it on a clean close, after a final sync. At
// open, a marker from another boot means the machine went down while the file had unsynced
// writes: the file is removed, and the metadata is rebuilt from the newest snapshot and
// the log after it (Cluster.CaughtUp tells the broker when it holds what it held before).
// Containers share the host's boot id, so a container restart is a process restart here.
//
// A rebuild is itself marked (state.db.rebuild, synced before the file is removed, removed
// once the replay has caught up): a process that dies during the replay leaves a file of its
// own boot that is consistent but behind what the broker acted on before the crash, which a
// restart must not trust either, so it rebuilds again.

// bootIDPath is where Linux tells the boot id (a new random UUID at each boot).
const bootIDPath = "/proc/sys/kernel/random/boot_id"

// bootID returns this machine's current boot id; a variable so that tests can reboot.
var bootID = func() (string, error) {
	b, err := os.ReadFile(bootIDPath)
	if err != nil {
		return "", err
	}
	id := strings.TrimSpace(string(b))
	if id == "" {
		return "", errors.New("cluster: empty boot id")
	}
	return id, nil
}

// bootMarkerPath is the marker beside a state file written lazily.
func bootMarkerPath(statePath string) string { return statePath + ".boot" }

// checkBootMarker reports whether the state file at path can be trusted: true when no
// marker is there (the last writer closed it cleanly, or synced every batch) or when the
// marker names the current boot. A marker that cannot be read is not trusted.
func checkBootMarker(path, current string) (trusted bool, marker string, err error) {
	b, err := os.ReadFile(bootMarkerPath(path))
	if errors.Is(err, fs.ErrNotExist) {
		return true, "", nil
	}
	if err != nil {
		return false, "", fmt.Errorf("cluster: read %s: %w", bootMarkerPath(path), err)
	}
	marker = string(bytes.TrimSpace(b))
	return current != "" && marker == current, marker, nil
}

// writeBootMarker records the current boot id beside the state file, durably: it must be
// on disk before the first unsynced write to the file.
func writeBootMarker(path, current string) error {
	return writeMarker(bootMarkerPath(path), current)
}

// writeMarker writes a small file durably (synced, renamed into place, directory synced).
func writeMarker(m, content string) error {
	if err := vfs.WriteFileAtomic(vfs.OS, m, []byte(content+"\n")); err != nil {
		return fmt.Errorf("cluster: write %s: %w", m, err)
	}
	return nil
}

// rebuildMarkerPath marks a rebuild not yet caught up.
func rebuildMarkerPath(statePath string) string { return statePath + ".rebuild" }

// removeBootMarker removes the marker once the file is synced (a clean close).
func removeBootMarker(path string) error { return removeMarker(bootMarkerPath(path)) }

// removeMarker removes a marker durably; a missing one is not an error.
func removeMarker(m string) error {
	if err := os.Remove(m); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	return vfs.OS.SyncDir(filepath.Dir(m))
}
