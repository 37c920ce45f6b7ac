package bpf

import (
	"errors"
	"fmt"
)

// ErrDoneReading is returned by Drain, ReadRingBuf and FlushRingBuf after
// DoneReading.
var ErrDoneReading = errors.New("flow maps: done reading")

// DoneReading gives back the memory that only reading the flows needs: the
// per-flow totals of live reads and the ring buffer's mapping (resident
// twice its size). The daemon calls it at shutdown, after the last Drain
// and once the ring buffer's flush has been read to its end, so that the
// final export of the cache does not come on top of them. Drain,
// ReadRingBuf and FlushRingBuf fail with ErrDoneReading afterwards;
// ReadCounters, Full and Close still work. Calling it again does nothing.
func (fm *flowMaps) DoneReading() error {
	fm.mu.Lock()
	defer fm.mu.Unlock()
	if fm.done.Swap(true) {
		return nil
	}
	fm.seen4.free()
	fm.seen.free()
	if err := fm.rb.Close(); err != nil {
		return fmt.Errorf("close ring buffer reader: %w", err)
	}
	return nil
}
