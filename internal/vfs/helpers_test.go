package vfs

import "runtime"

func runtimeGosched() { runtime.Gosched() }

// fastOS is OS without the real fsyncs, to keep tests that sync a lot fast. CrashFS's model
// does not depend on the real syncs. (It also exercises CrashFS over a base whose Files are not
// *osFile.)
var fastOS = NoSync(OS)
