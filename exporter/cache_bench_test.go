//go:build bench

package exporter

import (
	"testing"

	"github.com/hostflow/hostflow/bpf"
)

// BenchmarkCacheFlood is the cache's share of a flood of new flows
// (TestLoadMemory/flood-2M): a full cache of DefaultMaxFlows, and each
// op a new flow that pushes out the least recently seen one, its record
// taken in batches of 4096 as the daemon does.
//
//	go test -tags bench -run '^$' -bench BenchmarkCacheFlood ./exporter/
func BenchmarkCacheFlood(b *testing.B) {
	c, err := NewCache(CacheConfig{ActiveTimeout: DefaultActiveTimeout, IdleTimeout: DefaultIdleTimeout, MaxFlows: DefaultMaxFlows}, SystemClock{})
	if err != nil {
		b.Fatal(err)
	}
	flow := func(i int) bpf.NetFlowId {
		id := key(uint16(i))
		id.SrcIp[13], id.SrcIp[14], id.SrcIp[15] = byte(i>>16), byte(i>>24), byte(i>>32)
		return id
	}
	m := pkt(1, 60, 1, 1)
	buf := make([]Flow, 0, 4096)
	for i := range DefaultMaxFlows {
		c.AddOne(flow(i), &m)
	}
	b.ResetTimer()
	for i := range b.N {
		c.AddOne(flow(DefaultMaxFlows+i), &m)
		if c.Pending() >= cap(buf) {
			buf = c.TakePending(buf[:0])
		}
	}
}
