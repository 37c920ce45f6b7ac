package exporter

import (
	"errors"
	"fmt"
	"time"

	"github.com/hostflow/hostflow/bpf"
)

// Default timeouts, as on most routers' NetFlow exports: a long flow is
// reported every minute, a quiet one 15 s after its last packet.
const (
	DefaultActiveTimeout = 60 * time.Second
	DefaultIdleTimeout   = 15 * time.Second
	DefaultMaxFlows      = 1 << 18
)

// CacheConfig sets the expiry rules of a Cache.
type CacheConfig struct {
	// ActiveTimeout ends a flow this long after its first packet, even if
	// it is still sending; the next packets start a new record.
	ActiveTimeout time.Duration
	// IdleTimeout ends a flow this long after its last packet.
	IdleTimeout time.Duration
	// MaxFlows bounds the cache. A new flow that finds it full is exported
	// at once with flowEndReason lack of resources.
	MaxFlows int
}

// Validate reports the first bad setting.
func (c CacheConfig) Validate() error {
	var errs []error
	if c.ActiveTimeout <= 0 {
		errs = append(errs, fmt.Errorf("active timeout %v: must be positive", c.ActiveTimeout))
	}
	if c.IdleTimeout <= 0 {
		errs = append(errs, fmt.Errorf("idle timeout %v: must be positive", c.IdleTimeout))
	}
	if c.MaxFlows <= 0 {
		errs = append(errs, fmt.Errorf("max flows %d: must be positive", c.MaxFlows))
	}
	return errors.Join(errs...)
}

// CacheStats counts what went through a Cache.
type CacheStats struct {
	// Exported counts flow records by end reason (index: EndReason).
	Exported [6]uint64
	// Active is the number of flows in the cache now.
	Active int
}

// Cache aggregates kernel metrics by flow key and decides when a flow ends.
// Times are kept on the kernel's monotonic clock and converted to wall time
// only when a record leaves, so a wall-clock step never expires a flow. A
// Cache is used by one goroutine.
type Cache struct {
	cfg     CacheConfig
	clock   Clock
	flows   map[bpf.NetFlowId]*bpf.NetFlowMetrics
	pending []Flow // expired while adding (lack of resources)
	stats   CacheStats
}

// NewCache returns an empty cache.
func NewCache(cfg CacheConfig, clock Clock) (*Cache, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("cache config: %w", err)
	}
	return &Cache{cfg: cfg, clock: clock, flows: make(map[bpf.NetFlowId]*bpf.NetFlowMetrics)}, nil
}

// Add merges the per-CPU values of one flow into the cache.
func (c *Cache) Add(id bpf.NetFlowId, perCPU []bpf.NetFlowMetrics) {
	var sum bpf.NetFlowMetrics
	for i := range perCPU {
		sum.Accumulate(&perCPU[i])
	}
	c.AddOne(id, &sum)
}

// AddOne merges one metrics value into the cache.
func (c *Cache) AddOne(id bpf.NetFlowId, m *bpf.NetFlowMetrics) {
	if m.Packets == 0 {
		return
	}
	if cur, ok := c.flows[id]; ok {
		cur.Accumulate(m)
		return
	}
	if len(c.flows) >= c.cfg.MaxFlows {
		c.pending = append(c.pending, c.record(id, m, EndLackOfResources, c.clock.Now(), c.clock.Monotonic()))
		return
	}
	v := *m
	c.flows[id] = &v
}

// Expire appends to out the flows whose active or idle timeout has passed,
// and those pushed out for lack of room, and removes them.
func (c *Cache) Expire(out []Flow) []Flow {
	out = append(out, c.pending...)
	c.pending = c.pending[:0]
	wall, mono := c.clock.Now(), c.clock.Monotonic()
	now := uint64(mono)
	idle, active := uint64(c.cfg.IdleTimeout), uint64(c.cfg.ActiveTimeout)
	for id, m := range c.flows {
		var reason EndReason
		switch {
		case now >= m.EndMonoTimeTs && now-m.EndMonoTimeTs >= idle:
			reason = EndIdleTimeout
		case now >= m.StartMonoTimeTs && now-m.StartMonoTimeTs >= active:
			reason = EndActiveTimeout
		default:
			continue
		}
		out = append(out, c.record(id, m, reason, wall, mono))
		delete(c.flows, id)
	}
	return out
}

// Flush appends every cached flow to out with flowEndReason forced end, as
// at shutdown, and empties the cache.
func (c *Cache) Flush(out []Flow) []Flow {
	out = append(out, c.pending...)
	c.pending = c.pending[:0]
	wall, mono := c.clock.Now(), c.clock.Monotonic()
	for id, m := range c.flows {
		out = append(out, c.record(id, m, EndForced, wall, mono))
		delete(c.flows, id)
	}
	return out
}

// Len returns the number of flows in the cache.
func (c *Cache) Len() int { return len(c.flows) }

// Stats returns the cache's counters.
func (c *Cache) Stats() CacheStats {
	s := c.stats
	s.Active = len(c.flows)
	return s
}

func (c *Cache) record(id bpf.NetFlowId, m *bpf.NetFlowMetrics, reason EndReason, wall time.Time, mono time.Duration) Flow {
	c.stats.Exported[reason]++
	return Flow{
		Key:       id,
		Packets:   m.Packets,
		Bytes:     m.Bytes,
		Start:     bpf.MonoToTime(m.StartMonoTimeTs, wall, mono),
		End:       bpf.MonoToTime(m.EndMonoTimeTs, wall, mono),
		TCPFlags:  m.Flags,
		EndReason: reason,
	}
}
