package commitlog

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/runnel-io/runnel/internal/vfs"
)

// raftEntries appends n entries from the log's next index with term, every third a noop.
func raftEntries(t *testing.T, l *Log, n int, term uint64, tag string) {
	t.Helper()
	for i := 0; i < n; i++ {
		e := Entry{Index: l.LastIndex() + 1, Term: term, Type: EntryBatch}
		if i%3 == 2 {
			e.Type, e.Data = EntryNoop, []byte("noop")
		} else {
			e.Data = makeBatch(t, 1+i%3, 200, fmt.Sprint(tag, i), int64(i))
		}
		if err := l.AppendEntries([]Entry{e}); err != nil {
			t.Fatal(err)
		}
	}
}

// snapshotFiles copies the files SnapshotSegments(index) describes into dir (the last cut at
// its length), as a snapshot store would, and returns their paths.
func snapshotFiles(t *testing.T, l *Log, index uint64, dir string) []string {
	t.Helper()
	infos, err := l.SnapshotSegments(index)
	if err != nil {
		t.Fatal(err)
	}
	if got := infos[len(infos)-1]; got.LastIndex != index {
		t.Fatalf("last snapshot segment ends at %d, want %d", got.LastIndex, index)
	}
	var out []string
	for _, in := range infos {
		b, err := os.ReadFile(in.Path)
		if err != nil {
			t.Fatal(err)
		}
		p := filepath.Join(dir, filepath.Base(in.Path))
		if err := os.WriteFile(p, b[:in.Bytes], 0o644); err != nil {
			t.Fatal(err)
		}
		out = append(out, p)
	}
	return out
}

func entriesEqual(t *testing.T, a, b *Log, from, to uint64) {
	t.Helper()
	for i := from; i <= to; i++ {
		x, err := a.Entry(i)
		if err != nil {
			t.Fatalf("entry %d: %v", i, err)
		}
		y, err := b.Entry(i)
		if err != nil {
			t.Fatalf("entry %d: %v", i, err)
		}
		if x.Term != y.Term || x.Type != y.Type || !bytes.Equal(x.Data, y.Data) {
			t.Fatalf("entry %d differs", i)
		}
	}
}

func TestRestoreAdoptsSegments(t *testing.T) {
	src := openLog(t, t.TempDir(), testOptions(""))
	defer src.Close()
	raftEntries(t, src, 200, 2, "a")
	if _, err := src.DeleteSegmentsThrough(20); err != nil {
		t.Fatal(err)
	}
	const snap = 170
	files := snapshotFiles(t, src, snap, t.TempDir())
	if len(files) < 3 {
		t.Fatalf("want several segments, got %d", len(files))
	}
	infos, _ := src.SnapshotSegments(snap)
	hwm := infos[len(infos)-1].NextOffset

	// A follower with a longer, diverged log (different term) adopts them.
	dir := t.TempDir()
	dst := openLog(t, dir, testOptions(dir))
	raftEntries(t, dst, 220, 1, "b")
	e, _ := src.Entry(snap)
	if err := dst.Restore(RestoreOptions{Files: files, LastIndex: snap, LastTerm: e.Term}); err != nil {
		t.Fatal(err)
	}
	if dst.FirstIndex() != src.FirstIndex() || dst.LastIndex() != snap || dst.EndOffset() != hwm {
		t.Fatalf("restored log [%d, %d] end %d; want [%d, %d] end %d", dst.FirstIndex(), dst.LastIndex(), dst.EndOffset(), src.FirstIndex(), snap, hwm)
	}
	entriesEqual(t, src, dst, src.FirstIndex(), snap)
	// It continues like the source, and reopens.
	for i := uint64(snap + 1); i <= src.LastIndex(); i++ {
		e, err := src.Entry(i)
		if err != nil {
			t.Fatal(err)
		}
		if err := dst.AppendEntries([]Entry{e}); err != nil {
			t.Fatal(err)
		}
	}
	if dst.EndOffset() != src.EndOffset() {
		t.Fatalf("end %d, want %d", dst.EndOffset(), src.EndOffset())
	}
	dst.Close()
	dst = openLog(t, dir, testOptions(dir))
	defer dst.Close()
	entriesEqual(t, src, dst, src.FirstIndex(), src.LastIndex())
	equalBatches(t, readAll(t, dst), readAll(t, src))

	// A wrong term is refused after adoption as corrupt.
	if err := dst.Restore(RestoreOptions{Files: files, LastIndex: snap, LastTerm: 7}); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("restore with a wrong term: %v", err)
	}
}

// TestRestoreCrashAtEveryWritePoint crashes at every mutating operation of a Restore: the
// reopened log is the old one, the new one, or empty (never a mix), and restoring again gives
// the new one.
func TestRestoreCrashAtEveryWritePoint(t *testing.T) {
	src := openLog(t, t.TempDir(), testOptions(""))
	defer src.Close()
	raftEntries(t, src, 60, 3, "a")
	const snap = 50
	files := snapshotFiles(t, src, snap, t.TempDir())
	e, _ := src.Entry(snap)
	ro := RestoreOptions{Files: files, LastIndex: snap, LastTerm: e.Term}

	run := func(k int) (crashed bool) {
		dir := t.TempDir()
		cfs := vfs.NewCrashFS(vfs.NoSync(vfs.OS))
		o := testOptions(dir)
		o.FS = cfs
		o.Sync = SyncGroup
		l := openLog(t, dir, o)
		raftEntries(t, l, 40, 1, "b")
		oldLast := l.LastIndex()
		start := cfs.Ops()
		cfs.SetOnOp(func(op vfs.Op) error {
			if k > 0 && op.Seq == start+int64(k) && !crashed {
				crashed = true
				if err := cfs.Crash(vfs.CrashOptions{}); err != nil {
					t.Errorf("crash: %v", err)
				}
			}
			return nil
		})
		err := l.Restore(ro)
		l.Close()
		if !crashed {
			if err != nil {
				t.Fatalf("restore without a crash: %v", err)
			}
			return false
		}
		cfs.SetOnOp(nil)
		if err := cfs.Revive(); err != nil {
			t.Fatal(err)
		}
		l, err = Open(dir, o)
		if err != nil {
			t.Fatalf("crash at op %d of restore: reopen: %v", k, err)
		}
		defer l.Close()
		switch last := l.LastIndex(); {
		case last == oldLast && l.LastTerm() == 1: // the old log
		case last == 0: // empty: the marker was found
		case last == snap && l.LastTerm() == e.Term:
			entriesEqual(t, src, l, 1, snap)
			return true
		default:
			t.Fatalf("crash at op %d of restore: the log ends at %d term %d", k, last, l.LastTerm())
		}
		if err := l.Restore(ro); err != nil {
			t.Fatalf("crash at op %d: restore again: %v", k, err)
		}
		entriesEqual(t, src, l, 1, snap)
		return true
	}
	k := 1
	for ; run(k); k++ {
	}
	if k < 5 {
		t.Fatalf("restore took only %d operations", k)
	}
}
