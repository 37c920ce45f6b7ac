package bpf

import (
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/ringbuf"
	"golang.org/x/sys/unix"
)

// flowMaps is the user-space side of the maps every hostflow program
// writes: the aggregation maps, two pairs of per-CPU hashes (flows4_0 and
// flows_0 for IPv4 and IPv6 flows, flows4_1 and flows_1), and the
// flow_state that says which pair programs count into, the grace_period
// map that makes the kernel wait for running programs, the direct_flows
// ring buffer and global_counters. fetcherCore embeds it, so FlowFetcher
// and SockFlowFetcher read their maps with the same methods.
//
// Each Drain reads the active map without deleting anything and hands out
// what each flow counted since the previous Drain (its totals minus the
// ones seen last time, kept in seen). It switches maps, which empties the
// kernel's map of idle flows, only when the map fills up or has been in use
// for maxGenerationAge: between switches, a flow that keeps sending is
// never inserted again, which is most of the programs' cost with many
// flows. A map that filled up (Diverted, Full) is switched first, at the
// next Drain, which the caller makes early. See docs/architecture.md for
// why no increment is lost.
type flowMaps struct {
	mu       sync.Mutex // serialises drains
	shared   sharedMaps // owned by the loaded objects
	capacity int        // max_entries of each aggregation map
	ncpu     int
	rb       *ringbuf.Reader
	graceMap *ebpf.Map // the inner map put in grace_period, ours

	maxAge   time.Duration // maps switch at least this often
	active   int           // flows_<active> is the map programs count into
	epoch    uint16        // flow_state.epoch as last written
	genStart time.Time
	genPolls int
	// lastRead is when the previous read began, on the programs' clock
	// (CLOCK_MONOTONIC, or its coarse version unless precise).
	lastRead uint64
	precise  bool
	// seen4 and seen hold, per flow of the active flows4_* and flows_*,
	// the packets and bytes already handed out. Only the active map is
	// read without deleting: they are emptied once the old map is
	// drained after a switch.
	seen4 *seenTable[NetFlowId4]
	seen  *seenTable[NetFlowId6]

	keys  []NetFlowId6
	keys4 []NetFlowId4

	// done is set by DoneReading: seen4, seen and rb are gone.
	done atomic.Bool
	// ends reads COUNTER_TCP_END (TCPEnds).
	ends tcpEnds

	// detached is set when programs were detached: one may still be
	// running, so the next Drain waits for it before reading.
	detached atomic.Bool
	// hooks is how many interfaces the programs are attached to (the
	// fetcher keeps it): a Drain after a detach is quiescent only when
	// none is left, as other interfaces' programs still count otherwise.
	hooks atomic.Int32
	// oldPending is set when a sampling change put new programs,
	// counting into the other map of each pair, on every hook
	// (swapToSpare): the next Drain waits for the old programs and
	// empties their map, and reads nothing else. Guarded by mu.
	oldPending bool
	// switchEpoch is the epoch written with the last switch: a record
	// diverted with this epoch or a later one was diverted by the map
	// programs count into now (Diverted). After a sampling change it is
	// the epoch after the one the old programs counted with.
	switchEpoch atomic.Uint32
	// changePending is oldPending for Diverted, which may run
	// concurrently with Drain: records are not trusted until the old
	// programs' map is drained.
	changePending atomic.Bool
	// full is set by Diverted when the active map is full: the next
	// Drain switches maps before reading.
	full     atomic.Bool
	switches int // map switches (tests)
	// mapFull is COUNTER_MAP_FULL summed over CPUs once the programs
	// count into the active map (after the last switch's wait): when it
	// grew, the active map is full (Full). Read by the drains' goroutine.
	mapFull uint64
	perCPU  []uint64
	waits   int // grace periods waited for (tests)
	values  []NetFlowMetrics

	// swaps counts the sampling changes that swapped the names of each
	// map pair (swapToSpare): programs loaded once for the fetcher's life
	// (the drop counter, c/fate.c) name the maps as at load, and
	// flow_state.swapped tells them the parity. Guarded by mu.
	swaps int

	// switchPending is set when the deleting read of the map a switch
	// left (1-active) failed: it may still hold flows, and seen4 and seen
	// still hold what was handed out of them. The next Drain reads it
	// again, with deletion, before anything else, and forgets the totals
	// only once it is empty. Guarded by mu.
	switchPending bool

	// Tests only: testFail, when set, is asked before each map operation
	// ("batch", "delete batch", "wait") and fails it with its error;
	// testBatch, when not 0, is the number of flows per batch.
	testFail  func(op string) error
	testBatch int
}

// flowTotals is what Drain has already handed out of one flow.
type flowTotals struct{ packets, bytes uint64 }

// sharedMaps are the maps both objects define in c/account.h.
type sharedMaps struct {
	flows, flows4                               [2]*ebpf.Map // IPv6, IPv4
	state, grace, direct, counters, sampleCount *ebpf.Map
	// fateIfaceBits and fateIfaces are router mode's interfaces whose
	// arrivals are counted (c/fate.h): the TC programs' objects and the
	// drop counter's have them, the socket filters' not (nil).
	fateIfaceBits, fateIfaces *ebpf.Map
}

const (
	// maxGenerationAge bounds how long a flow that stopped sending keeps
	// its entry in the kernel's map: the maps switch at least this often.
	maxGenerationAge = 60 * time.Second
	// maxGenerationPolls bounds the polls between two switches, so that
	// the 16-bit epoch never wraps within one map's lifetime.
	maxGenerationPolls = 1 << 12
)

// newFlowMaps sets flow_state to flows_0 and epoch 1 and opens a reader on
// the ring buffer. The maps stay owned by the caller; capacity is each
// aggregation map's max_entries.
func newFlowMaps(maps sharedMaps, capacity int, cfg fetcherConfig) (*flowMaps, error) {
	ncpu, err := ebpf.PossibleCPU()
	if err != nil {
		return nil, fmt.Errorf("possible CPUs: %w", err)
	}
	fm := &flowMaps{
		shared:   maps,
		capacity: capacity,
		ncpu:     ncpu,
		epoch:    1,
		maxAge:   maxGenerationAge,
		precise:  cfg.preciseClock,
		genStart: time.Now(),
		keys:     make([]NetFlowId6, drainBatch),
		keys4:    make([]NetFlowId4, drainBatch),
		values:   make([]NetFlowMetrics, drainBatch*ncpu),
	}
	if fm.seen4, err = newSeenTable[NetFlowId4](); err != nil {
		return nil, err
	}
	if fm.seen, err = newSeenTable[NetFlowId6](); err != nil {
		fm.close()
		return nil, err
	}
	fm.graceMap, err = ebpf.NewMap(&ebpf.MapSpec{Type: ebpf.Array, KeySize: 4, ValueSize: 4, MaxEntries: 1})
	if err != nil {
		fm.close()
		return nil, fmt.Errorf("create grace period map: %w", err)
	}
	if err := fm.writeState(); err != nil {
		fm.close()
		return nil, err
	}
	fm.switchEpoch.Store(uint32(fm.epoch))
	fm.rb, err = ringbuf.NewReader(maps.direct)
	if err != nil {
		fm.close()
		return nil, fmt.Errorf("open ring buffer: %w", err)
	}
	return fm, nil
}

// swappedNames is flow_state.swapped: 1 when the maps of each pair are
// named the other way round than at load.
func (fm *flowMaps) swappedNames() uint16 { return uint16(fm.swaps & 1) }

// writeState tells the programs which map to count into and the epoch.
func (fm *flowMaps) writeState() error {
	st := NetFlowStateT{Active: uint32(fm.active), Epoch: fm.epoch, Swapped: fm.swappedNames()}
	if err := fm.shared.state.Put(uint32(0), &st); err != nil {
		return fmt.Errorf("write flow state: %w", err)
	}
	return nil
}

// waitForPrograms returns once every program that was running when it was
// called has finished: updating an array of maps from user space makes the
// kernel wait for an RCU grace period (maybe_wait_bpf_programs), and TC
// programs and socket filters run inside RCU read-side critical sections.
func (fm *flowMaps) waitForPrograms() error {
	fm.waits++
	if fm.testFail != nil {
		if err := fm.testFail("wait"); err != nil {
			return fmt.Errorf("wait for running programs: %w", err)
		}
	}
	if err := fm.shared.grace.Put(uint32(0), fm.graceMap); err != nil {
		return fmt.Errorf("wait for running programs: %w", err)
	}
	return nil
}

// LookupAndDeleteMap returns every flow the kernel counted since the last
// call (or Drain), with its metrics as a one-element slice.
//
// No increment can be lost (see Drain), and a failed drain is returned,
// not logged: the caller counts it.
func (fm *flowMaps) LookupAndDeleteMap() (map[NetFlowId][]NetFlowMetrics, error) {
	out := make(map[NetFlowId][]NetFlowMetrics)
	err := fm.Drain(func(id NetFlowId, m []NetFlowMetrics) {
		// A drain that switches maps may report a flow twice: what
		// the live read saw, then the last increments.
		if prev, ok := out[id]; ok {
			prev[0].Accumulate(&m[0])
			return
		}
		out[id] = append([]NetFlowMetrics(nil), m...)
	})
	return out, err
}

// ReadRingBuf blocks until the kernel diverts a packet through direct_flows
// and returns its raw record; decode it with DecodeRecord. It returns
// ringbuf.ErrClosed (wrapped in os.ErrClosed) after Close.
func (fm *flowMaps) ReadRingBuf() (ringbuf.Record, error) {
	if fm.done.Load() {
		return ringbuf.Record{}, ErrDoneReading
	}
	return fm.rb.Read()
}

// FlushRingBuf makes ReadRingBuf return every record already in
// direct_flows and then ringbuf.ErrFlushed, instead of blocking. Call it
// after detaching, so that the last diverted packets are read before exit.
func (fm *flowMaps) FlushRingBuf() error {
	if fm.done.Load() {
		return ErrDoneReading
	}
	return fm.rb.Flush()
}

// now reads the clock the programs stamp flows with.
func (fm *flowMaps) now() uint64 {
	clock := int32(unix.CLOCK_MONOTONIC_COARSE)
	if fm.precise {
		clock = unix.CLOCK_MONOTONIC
	}
	var ts unix.Timespec
	_ = unix.ClockGettime(clock, &ts)
	return uint64(ts.Nano())
}

// ReadCounters reads the kernel counters, summed over CPUs.
func (fm *flowMaps) ReadCounters() (KernelCounters, error) {
	var c KernelCounters
	fields := []*uint64{
		NetCounterKeyCOUNTER_MAP_FULL:       &c.MapFull,
		NetCounterKeyCOUNTER_RINGBUF_FULL:   &c.RingBufFull,
		NetCounterKeyCOUNTER_NOT_IP:         &c.NotIP,
		NetCounterKeyCOUNTER_MALFORMED:      &c.Malformed,
		NetCounterKeyCOUNTER_NO_MAP:         &c.NoMap,
		NetCounterKeyCOUNTER_SAMPLED_OUT:    &c.SampledOut,
		NetCounterKeyCOUNTER_FATE_MALFORMED: &c.FateMalformed,
	}
	var perCPU []uint64
	for k, dst := range fields {
		if err := fm.shared.counters.Lookup(uint32(k), &perCPU); err != nil {
			return c, fmt.Errorf("read counter %d: %w", k, err)
		}
		for _, v := range perCPU {
			*dst += v
		}
	}
	return c, nil
}

// close closes the ring buffer reader and the map it created. It may be
// called on a partly built flowMaps.
func (fm *flowMaps) close() error {
	var errs []error
	if fm.rb != nil {
		errs = append(errs, fm.rb.Close())
	}
	if fm.graceMap != nil {
		errs = append(errs, fm.graceMap.Close())
	}
	if fm.seen4 != nil {
		fm.seen4.free()
	}
	if fm.seen != nil {
		fm.seen.free()
	}
	return errors.Join(errs...)
}
