package cluster

import (
	"bytes"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// withBootID makes bootID return id (or fail, if id is "") for the rest of the test.
func withBootID(t *testing.T, id string) {
	t.Helper()
	old := bootID
	t.Cleanup(func() { bootID = old })
	bootID = func() (string, error) {
		if id == "" {
			return "", errors.New("no boot id here")
		}
		return id, nil
	}
}

// crash closes f's file the way a killed process leaves it: unsynced writes in the page
// cache, the boot marker still there.
func crash(t *testing.T, f *fsm) {
	t.Helper()
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.db.Close(); err != nil {
		t.Fatal(err)
	}
}

func TestFSMBootMarker(t *testing.T) {
	for _, tc := range []struct {
		name      string
		crash     bool   // the first process dies instead of closing
		nextBoot  string // the boot id at the second open ("" = unreadable)
		wantState bool   // the second open keeps the state
	}{
		{name: "clean close, same boot", nextBoot: "boot-1", wantState: true},
		{name: "clean close, another boot", nextBoot: "boot-2", wantState: true},
		{name: "process crash, same boot", crash: true, nextBoot: "boot-1", wantState: true},
		{name: "machine crash", crash: true, nextBoot: "boot-2", wantState: false},
		{name: "machine crash, boot id unreadable", crash: true, nextBoot: "", wantState: false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "state.db")
			withBootID(t, "boot-1")
			f, err := openFSM(path, nil)
			if err != nil {
				t.Fatal(err)
			}
			if !f.lazy {
				t.Fatal("a readable boot id should make the file lazily synced")
			}
			if _, err := os.Stat(bootMarkerPath(path)); err != nil {
				t.Fatalf("no boot marker while the file is open: %v", err)
			}
			h := &fsmHarness{t: t, f: f}
			sampleState(h)
			want := dump(t, f)
			if tc.crash {
				crash(t, f)
			} else {
				if err := f.close(); err != nil {
					t.Fatal(err)
				}
				if _, err := os.Stat(bootMarkerPath(path)); !errors.Is(err, os.ErrNotExist) {
					t.Fatalf("boot marker after a clean close: %v", err)
				}
			}
			withBootID(t, tc.nextBoot)
			f, err = openFSM(path, nil)
			if err != nil {
				t.Fatal(err)
			}
			defer f.close()
			if f.lazy != (tc.nextBoot != "") {
				t.Errorf("lazy = %v with boot id %q", f.lazy, tc.nextBoot)
			}
			got := dump(t, f)
			if tc.wantState {
				if f.rebuilt || !f.holdsState || got != want {
					t.Errorf("rebuilt=%v holdsState=%v; state:\n%s\nwant\n%s", f.rebuilt, f.holdsState, got, want)
				}
				return
			}
			if !f.rebuilt || f.holdsState || f.appliedIndex() != 0 || !strings.Contains(f.rebuildWhy, `"boot-1"`) {
				t.Errorf("untrusted file kept: rebuilt=%v holdsState=%v applied=%d why=%q",
					f.rebuilt, f.holdsState, f.appliedIndex(), f.rebuildWhy)
			}
			_, err = os.Stat(bootMarkerPath(path))
			if tc.nextBoot == "" && !errors.Is(err, os.ErrNotExist) {
				t.Errorf("a file synced on every batch keeps a boot marker: %v", err)
			}
		})
	}
}

// A restore (a snapshot installed from the leader) replaces the file and keeps it lazy.
func TestFSMRestoreKeepsLazy(t *testing.T) {
	withBootID(t, "boot-1")
	src := newFSMHarness(t)
	sampleState(src)
	want := dump(t, src.f)
	snap, err := src.f.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	defer snap.Release()
	var sink memSink
	if err := snap.Persist(&sink); err != nil {
		t.Fatal(err)
	}
	dst := newFSMHarness(t)
	if err := dst.f.Restore(io.NopCloser(bytes.NewReader(sink.Bytes()))); err != nil {
		t.Fatal(err)
	}
	if !dst.f.db.NoSync {
		t.Error("the restored file is synced on every batch")
	}
	if got := dump(t, dst.f); got != want {
		t.Errorf("restored:\n%s\nwant\n%s", got, want)
	}
}

// A rebuild that has not caught up when the process dies is done again at the next start,
// although the file is of the same boot: it is consistent but may be behind what the broker
// acted on before the machine crash. Once caught up, the file is trusted again.
func TestFSMUnfinishedRebuild(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.db")
	withBootID(t, "boot-1")
	f, err := openFSM(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	sampleState(&fsmHarness{t: t, f: f})
	crash(t, f)

	withBootID(t, "boot-2") // the machine crashed: rebuild
	f, err = openFSM(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	if !f.rebuilt {
		t.Fatal("not rebuilt after a machine crash")
	}
	h := &fsmHarness{t: t, f: f}
	// Part of a replay:
	h.mustApply(cmdUpsertBroker, upsertBrokerCmd{Broker: brokerRecord{ID: 1, State: BrokerAlive, Incarnation: "a"}})
	crash(t, f) // dies before catching up

	f, err = openFSM(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	if !f.rebuilt || f.holdsState || !strings.Contains(f.rebuildWhy, "did not catch up") {
		t.Fatalf("an unfinished rebuild was trusted: rebuilt=%v holdsState=%v why=%q", f.rebuilt, f.holdsState, f.rebuildWhy)
	}
	h = &fsmHarness{t: t, f: f}
	sampleState(h)
	if err := f.rebuildDone(); err != nil {
		t.Fatal(err)
	}
	want := dump(t, f)
	crash(t, f)

	f, err = openFSM(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer f.close()
	if f.rebuilt || !f.holdsState || dump(t, f) != want {
		t.Errorf("a caught-up rebuild was not trusted: rebuilt=%v holdsState=%v", f.rebuilt, f.holdsState)
	}
}
