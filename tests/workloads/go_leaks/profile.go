//go:build !noprofile

// The program references runtime.MemProfile (as one importing
// net/http/pprof or runtime/pprof does), so the linker leaves memory
// profiling on. Built with -tags noprofile it does not: the runtime then
// sets MemProfileRate to 0 at its start.
package main

import (
	"os"
	"runtime"
)

func init() {
	if len(os.Args) > 1<<20 {
		runtime.MemProfile(nil, false)
	}
}
