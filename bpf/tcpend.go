package bpf

import (
	"fmt"
	"sync"
)

// tcpEnds reads COUNTER_TCP_END; its own buffer, so that it may run while
// a Drain holds flowMaps.mu.
type tcpEnds struct {
	mu     sync.Mutex
	perCPU []uint64
}

// TCPEnds returns how many TCP packets with FIN or RST the programs have
// counted into flows, summed over CPUs. While it does not grow, no flow
// counted since a read can end sooner than the idle or active timeout
// after that read began (a flow that saw FIN or RST ends a TCP end grace
// after its last packet): a caller that read this before a Drain need not
// read the flows again before then.
func (fm *flowMaps) TCPEnds() (uint64, error) {
	fm.ends.mu.Lock()
	defer fm.ends.mu.Unlock()
	if err := fm.shared.counters.Lookup(uint32(NetCounterKeyCOUNTER_TCP_END), &fm.ends.perCPU); err != nil {
		return 0, fmt.Errorf("read TCP end counter: %w", err)
	}
	var n uint64
	for _, v := range fm.ends.perCPU {
		n += v
	}
	return n, nil
}
