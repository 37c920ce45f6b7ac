package main

import "runtime/debug"

// releaseStartupMemory returns to the system the heap that loading and
// attaching used (ELF and BTF parsing, program specs, verifier buffers):
// it is garbage once the programs are in the kernel, and the steady state
// should not start with it resident. One forced collection, at start.
func releaseStartupMemory() {
	debug.FreeOSMemory()
}

// defaultGCPercent is the garbage collector's target when GOGC is not
// set: a collection each time the heap grows by half of what is live,
// instead of Go's 100%. Almost all of what is live is the flow cache, which
// holds no pointer, so a collection costs little; what it saves is the
// garbage of encoding records (a flood of new flows exports hundreds of
// thousands a second), which at 100% doubled the peak.
const defaultGCPercent = 50

// tuneGC applies defaultGCPercent unless GOGC is set.
func tuneGC(getenv func(string) string) {
	if getenv("GOGC") == "" {
		debug.SetGCPercent(defaultGCPercent)
	}
}
