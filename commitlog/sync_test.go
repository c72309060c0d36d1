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

type slowSyncFS struct {
	vfs.FS
	delay time.Duration
	syncs atomic.Int64
}

type slowSyncFile struct {
	vfs.File
	fs *slowSyncFS
}

func (f slowSyncFile) Sync() error {
	f.fs.syncs.Add(1)
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
