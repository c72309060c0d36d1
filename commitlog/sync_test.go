package commitlog

import (
	"encoding/binary"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/runnel-io/runnel/internal/vfs"
)

// Group commit: concurrent appenders, each waiting for durability, share fsyncs. (The disk is
// given a real fsync latency; CrashFS is not used here because it holds a file's writes while
// its sync runs, which a real filesystem does not.)
func TestGroupCommitSharesFsyncs(t *testing.T) {
	dir := t.TempDir()
	o := testOptions(dir)
	o.Sync = SyncGroup
	o.SegmentBytes = 1 << 20
	fs := &slowSyncFS{FS: vfs.NoSync(vfs.OS), delay: 2 * time.Millisecond}
	o.FS = fs
	l := openLog(t, dir, o)
	defer l.Close()
	before := fs.syncs.Load()
	const appenders, each = 16, 10
	var wg sync.WaitGroup
	for a := 0; a < appenders; a++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < each; i++ {
				if _, err := l.Append(makeBatch(t, 1, 20, "g", 0)); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	if n := fs.syncs.Load() - before; n >= appenders*each/4 {
		t.Fatalf("%d fsyncs for %d appends: group commit is not sharing them", n, appenders*each)
	}
	if l.DurableIndex() != appenders*each {
		t.Fatalf("durable index %d", l.DurableIndex())
	}
}

// slowSyncFS gives every Sync a delay, and can hold one in place through gate.
type slowSyncFS struct {
	vfs.FS
	delay time.Duration
	syncs atomic.Int64
	gate  opGate
}

type slowSyncFile struct {
	vfs.File
	fs *slowSyncFS
}

func (f slowSyncFile) Sync() error {
	f.fs.syncs.Add(1)
	f.fs.gate.pass()
	time.Sleep(f.fs.delay)
	return f.File.Sync()
}

func (s *slowSyncFS) OpenFile(name string, flag int, perm os.FileMode) (vfs.File, error) {
	f, err := s.FS.OpenFile(name, flag, perm)
	if err != nil {
		return nil, err
	}
	return slowSyncFile{f, s}, nil
}

// SyncInterval: appends return before they are durable; the background flusher makes them
// durable, after which a crash keeps them.
func TestSyncIntervalFlushes(t *testing.T) {
	for _, byBytes := range []bool{false, true} {
		dir := t.TempDir()
		cfs := vfs.NewCrashFS(vfs.NoSync(vfs.OS))
		o := crashOptions(dir, cfs, SyncInterval)
		o.SegmentBytes = 1 << 20
		o.SyncEvery = 20 * time.Millisecond
		if byBytes {
			o.SyncEvery = time.Hour
			o.SyncEveryBytes = 1000
		}
		l := openLog(t, dir, o)
		for i := 0; i < 10; i++ {
			if _, err := l.Append(makeBatch(t, 2, 100, "i", 0)); err != nil {
				t.Fatal(err)
			}
		}
		if byBytes {
			// Cross the byte threshold with the last append: below it, nothing is due yet.
			if _, err := l.Append(makeBatch(t, 10, 200, "big", 0)); err != nil {
				t.Fatal(err)
			}
		}
		deadline := time.Now().Add(10 * time.Second)
		for l.DurableIndex() < l.LastIndex() {
			if time.Now().After(deadline) {
				t.Fatalf("bytes=%v: the flusher never synced (durable %d of %d)", byBytes, l.DurableIndex(), l.LastIndex())
			}
			time.Sleep(5 * time.Millisecond)
		}
		cfs.Crash(vfs.CrashOptions{})
		l.Close()
		cfs.Revive()
		l = openLog(t, dir, o)
		if l.LastIndex() < 10 {
			t.Fatalf("bytes=%v: %d entries after the crash, want at least 10", byBytes, l.LastIndex())
		}
		l.Close()
	}
}

// An oversized length in a frame header on disk is refused before anything is allocated for
// it: after a crash it is a torn tail.
func TestOversizedFrameLengthOnDisk(t *testing.T) {
	dir := t.TempDir()
	o := testOptions(dir)
	l := openLog(t, dir, o)
	want := fillLog(t, l, 10)
	path := lastSegmentPath(t, l)
	abandon(t, l)
	f, _ := os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0)
	hdr := make([]byte, frameHeaderSize)
	binary.BigEndian.PutUint32(hdr, 0xfffffff0)
	f.Write(hdr)
	f.Close()
	// A 4 GiB allocation would fail the run; the cap refuses the frame first.
	l = openLog(t, dir, o)
	defer l.Close()
	equalBatches(t, readAll(t, l), want)
}

// A slow fsync does not hold up an append that lands after it started: once the running
// fsync has taken twice as long as fsyncs usually do, the next waiting append starts a second
// one, which makes durable both its own entry and the earlier one the stuck fsync covers (an
// fsync covers everything written before it started). The appender running the stuck fsync
// itself still waits for it.
func TestGroupCommitHedgesASlowFsync(t *testing.T) {
	dir := t.TempDir()
	o := testOptions(dir)
	o.Sync = SyncGroup
	o.SegmentBytes = 1 << 20
	fs := &slowSyncFS{FS: vfs.NoSync(vfs.OS)}
	o.FS = fs
	l := openLog(t, dir, o)
	defer l.Close()
	for range 20 { // fsyncs of a usual length
		if _, err := l.Append(makeBatch(t, 1, 20, "u", 0)); err != nil {
			t.Fatal(err)
		}
	}
	// The next fsync blocks until released: the append waiting for it is held.
	release := holdAppend(t, l, &fs.gate, makeBatch(t, 1, 20, "a", 0))
	defer release()
	time.Sleep(20 * time.Millisecond) // far past twice a usual fsync
	done := make(chan error, 1)
	go func() {
		_, err := l.Append(makeBatch(t, 1, 20, "b", 0))
		done <- err
	}()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("append behind a stuck fsync: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("an append behind a stuck fsync waited for it")
	}
	if got := l.DurableIndex(); got != 22 {
		t.Errorf("durable index %d with the first fsync stuck, want 22 (both appends)", got)
	}
	if _, err := release(); err != nil {
		t.Fatal(err)
	}
	if got := l.DurableIndex(); got != 22 {
		t.Errorf("durable index %d after the stuck fsync ended, want 22", got)
	}
}
