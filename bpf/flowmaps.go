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

	// detached is set when programs were detached: one may still be
	// running, so the next Drain waits for it before reading.
	detached atomic.Bool
	// oldPending is set when a sampling change put new programs,
	// counting into the other map of each pair, on every hook
	// (swapToSpare): the next Drain waits for the old programs and
	// empties their map, and reads nothing else. Guarded by mu.
	oldPending bool
	// switchEpoch is the epoch written with the last switch: a record
	// diverted with this epoch or a later one was diverted by the map
	// programs count into now (Diverted).
	switchEpoch atomic.Uint32
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
}

// flowTotals is what Drain has already handed out of one flow.
type flowTotals struct{ packets, bytes uint64 }

// sharedMaps are the maps both objects define in c/account.h.
type sharedMaps struct {
	flows, flows4                               [2]*ebpf.Map // IPv6, IPv4
	state, grace, direct, counters, sampleCount *ebpf.Map
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

// writeState tells the programs which map to count into and the epoch.
func (fm *flowMaps) writeState() error {
	st := NetFlowStateT{Active: uint32(fm.active), Epoch: fm.epoch}
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
	return fm.rb.Read()
}

// FlushRingBuf makes ReadRingBuf return every record already in
// direct_flows and then ringbuf.ErrFlushed, instead of blocking. Call it
// after detaching, so that the last diverted packets are read before exit.
func (fm *flowMaps) FlushRingBuf() error {
	return fm.rb.Flush()
}

// Diverted tells the maps that the kernel diverted r to the ring buffer
// (its map was full) and reports whether r was diverted by the map
// programs count into now, not by one already switched out: then the
// next Drain switches maps first, and the caller should drain soon
// rather than at its next poll. It may be called concurrently with Drain.
func (fm *flowMaps) Diverted(r *Record) bool {
	// Epochs only grow within the 4096 polls a map is in use, and wrap
	// at 2^16 skipping 0: r is of this map if it is not older.
	if d := r.Metrics.Epoch - uint16(fm.switchEpoch.Load()); d >= 1<<15 {
		return false
	}
	fm.full.Store(true)
	return true
}

// Full reports whether the map programs count into is full: whether the
// kernel counted a packet that found it full since the programs switched
// to it (a record Diverted by it may be stuck behind older ones in a full
// ring buffer). Then the next Drain switches maps first, and the caller
// should drain soon.
func (fm *flowMaps) Full() (bool, error) {
	fm.mu.Lock()
	defer fm.mu.Unlock()
	return fm.isFull()
}

// isFull is Full with fm.mu held.
func (fm *flowMaps) isFull() (bool, error) {
	n, err := fm.readMapFull()
	if err != nil {
		return false, err
	}
	if n == fm.mapFull {
		return false, nil
	}
	fm.full.Store(true)
	return true, nil
}

// readMapFull returns COUNTER_MAP_FULL summed over CPUs.
func (fm *flowMaps) readMapFull() (uint64, error) {
	if err := fm.shared.counters.Lookup(uint32(NetCounterKeyCOUNTER_MAP_FULL), &fm.perCPU); err != nil {
		return 0, fmt.Errorf("read map full counter: %w", err)
	}
	var n uint64
	for _, v := range fm.perCPU {
		n += v
	}
	return n, nil
}

// Drain is LookupAndDeleteMap without the intermediate map: it calls fn
// for each flow that counted packets since the last call (twice for some
// flows when it switches maps: add the two up), with what it
// counted meanwhile as a one-element slice (valid only during the call):
// packets and bytes since the last call, exactly (a drain that empties a
// map may hand out bytes with 0 packets: bytes of packets handed out
// before, read ahead of them, see delta); the last packet's time;
// the first packet's time and the TCP flags since the last call, to within
// the time a drain takes (see docs/architecture.md).
//
// A Drain after a detach first waits for the programs that may still be
// running. It reads the active map without deleting anything, then, when that map
// is 7/8 full or old, switches the programs to the other (empty) one, waits
// until no program can still write to the old one, and empties it. Each
// flow's last increments reach fn then: none is lost. When the active map
// is full (Diverted or Full said so, or a packet found it full since),
// Drain switches first and reads only the old map, once, with deletion:
// the new map takes the packets meanwhile.
func (fm *flowMaps) Drain(fn func(NetFlowId, []NetFlowMetrics)) error {
	fm.mu.Lock()
	defer fm.mu.Unlock()
	// After a detach, a program may still be counting (it started
	// before): let it finish, so that the drain at shutdown has every
	// packet the hooks saw.
	quiescent := false
	if fm.detached.Swap(false) {
		if err := fm.waitForPrograms(); err != nil {
			fm.detached.Store(true)
			return err
		}
		// Maybe no program runs any more (the last drain): hand out
		// bytes read ahead of their packets too (delta).
		quiescent = true
	}
	if fm.oldPending {
		return fm.drainOld(fn)
	}
	// A map already full is switched out whatever this read finds:
	// reading it live first would read it twice.
	if fm.full.Swap(false) {
		return fm.switchFirst(fn)
	}
	if full, err := fm.isFull(); err == nil && full {
		fm.full.Store(false)
		return fm.switchFirst(fn)
	}
	readStart := fm.now()
	cur := fm.active
	n, err := fm.read(cur, false, quiescent, fn)
	if err != nil {
		return err
	}
	// Packets counted from now on start a new epoch: their first time
	// and flags are the next drain's.
	fm.lastRead = readStart
	fm.epoch++
	if fm.epoch == 0 {
		fm.epoch = 1
	}
	fm.genPolls++
	full := n*8 >= fm.capacity*7
	if !full && fm.genPolls < maxGenerationPolls && time.Since(fm.genStart) < fm.maxAge {
		return fm.writeState()
	}
	fm.active = 1 - cur
	if err := fm.writeState(); err != nil {
		fm.active = cur
		return err
	}
	fm.switched()
	if err := fm.waitForPrograms(); err != nil {
		// The old map may still be written to: it is drained at the
		// next switch instead, nothing is lost meanwhile.
		fm.active = cur
		return errors.Join(err, fm.writeState())
	}
	fm.countMapFull()
	if _, err := fm.read(cur, true, true, fn); err != nil {
		return err
	}
	fm.seen4.reset()
	fm.seen.reset()
	return nil
}

// switchFirst is Drain when the active map is full: it switches programs
// to the other map at once, waits until none can still write to the old
// one, and empties it, handing out what each flow counted since the last
// read. The packets that arrive meanwhile go to the new map instead of
// the ring buffer.
func (fm *flowMaps) switchFirst(fn func(NetFlowId, []NetFlowMetrics)) error {
	readStart := fm.now()
	cur := fm.active
	next := fm.epoch + 1
	if next == 0 {
		next = 1
	}
	st := NetFlowStateT{Active: uint32(1 - cur), Epoch: next}
	if err := fm.shared.state.Put(uint32(0), &st); err != nil {
		return fmt.Errorf("write flow state: %w", err)
	}
	fm.active = 1 - cur
	fm.switched()
	fm.switchEpoch.Store(uint32(next))
	if err := fm.waitForPrograms(); err != nil {
		// As in Drain: back to the old map, drained at the next switch.
		// The new map's packets carry the new epoch, the old map's
		// unread ones the old: lastRead stays.
		fm.active, fm.epoch = cur, next
		return errors.Join(err, fm.writeState())
	}
	fm.countMapFull()
	// The old map's values since the last read carry fm.epoch: read them
	// with it, then move on to the epoch the new map counts with.
	_, err := fm.read(cur, true, true, fn)
	fm.epoch, fm.lastRead = next, readStart
	fm.seen4.reset()
	fm.seen.reset()
	return err
}

// spareReplacements returns the maps to load a sampling change's new
// programs with (SetSampling): each pair's two maps named the other way
// round, so that for the same flow_state the new programs count into the
// map the running ones do not, and packets counted at two rates never
// share a map slot. It fails while the previous change's old map is not
// drained yet: the new programs would count into it.
func (fm *flowMaps) spareReplacements() (*ebpf.CollectionOptions, error) {
	fm.mu.Lock()
	defer fm.mu.Unlock()
	if fm.oldPending {
		return nil, errors.New("sampling change: the previous change's flows are not drained yet")
	}
	return fm.shared.swapped().replacements(), nil
}

// swapToSpare runs swap, which puts programs loaded with
// spareReplacements on every hook (or puts the running ones back and
// fails), with drains held off: a drain that switched maps meanwhile would
// empty a map that new programs count into. On success, the maps are
// named as the new programs name them, so the map they count into is the
// active one; the next Drain waits for the old programs still running,
// empties the map they counted into and hands out only that (at the old
// rate). If swap fails, what the new programs counted meanwhile stays in
// the spare map, handed out when it next becomes the active one.
func (fm *flowMaps) swapToSpare(swap func() error) error {
	fm.mu.Lock()
	defer fm.mu.Unlock()
	if err := swap(); err != nil {
		return err
	}
	fm.shared = fm.shared.swapped()
	fm.oldPending = true
	return nil
}

// drainOld is Drain after a sampling change: it waits until the old
// programs cannot write their map any more, then empties it, handing out
// what they counted since the last read. The new programs' map starts a
// generation. On error the map is drained again at the next Drain.
func (fm *flowMaps) drainOld(fn func(NetFlowId, []NetFlowMetrics)) error {
	if err := fm.waitForPrograms(); err != nil {
		return err
	}
	fm.countMapFull()
	if _, err := fm.read(1-fm.active, true, true, fn); err != nil {
		return err
	}
	fm.oldPending = false
	// A full map noted meanwhile was the old one.
	fm.full.Store(false)
	fm.switched()
	fm.seen4.reset()
	fm.seen.reset()
	return nil
}

// countMapFull notes COUNTER_MAP_FULL once no program counts into the old
// map any more: Full compares with it. On error, the next Full reports the
// map full, one early drain too many.
func (fm *flowMaps) countMapFull() {
	if n, err := fm.readMapFull(); err == nil {
		fm.mapFull = n
	}
}

// switched starts a new generation.
func (fm *flowMaps) switched() {
	fm.genStart, fm.genPolls = time.Now(), 0
	fm.switches++
	fm.switchEpoch.Store(uint32(fm.epoch))
}

// read hands fn what each flow of the map pair gen counted since it was
// last read, and returns how many flows the fuller map of the pair holds.
// With del (only for maps no program writes to any more) it empties the
// maps as it goes. quiescent (implied by del) says no program may write
// the maps any more: see delta.
func (fm *flowMaps) read(gen int, del, quiescent bool, fn func(NetFlowId, []NetFlowMetrics)) (int, error) {
	n4, err := readMap(fm, fm.shared.flows4[gen], fm.keys4, fm.seen4, NetFlowId4.id, del, quiescent, fn)
	if err != nil {
		return 0, err
	}
	n6, err := readMap(fm, fm.shared.flows[gen], fm.keys, fm.seen, NetFlowId6.id, del, quiescent, fn)
	return max(n4, n6), err
}

// readMap is read for one map whose keys are K, with what was handed out
// of it in seen.
func readMap[K comparable](fm *flowMaps, m *ebpf.Map, keys []K, seen *seenTable[K], id func(K) NetFlowId,
	del, quiescent bool, fn func(NetFlowId, []NetFlowMetrics)) (int, error) {
	var cursor ebpf.MapBatchCursor
	total := 0
	var out [1]NetFlowMetrics
	var setErr error
	for {
		var n int
		var err error
		if del {
			n, err = m.BatchLookupAndDelete(&cursor, keys, fm.values, nil)
		} else {
			n, err = m.BatchLookup(&cursor, keys, fm.values, nil)
		}
		total += n
		for i := 0; i < n; i++ {
			k := &keys[i]
			tot, ok := fm.delta(&out[0], seen.get(k), fm.values[i*fm.ncpu:(i+1)*fm.ncpu], del || quiescent)
			if !ok {
				continue
			}
			// With del, the flow is gone from the map, read once:
			// seen is emptied after the whole map. Without, a flow
			// whose totals cannot be kept is handed out at a later
			// read instead: nothing is lost, nothing counted twice.
			if !del {
				if err := seen.set(k, tot); err != nil {
					setErr = err
					continue
				}
			}
			fn(id(*k), out[:])
		}
		if errors.Is(err, ebpf.ErrKeyNotExist) {
			return total, setErr
		}
		if err != nil {
			return total, fmt.Errorf("read aggregation map: %w", err)
		}
	}
}

// delta sets out to what a flow counted since prev was handed out of it
// and returns its new totals; it reports false when nothing is to be
// handed out now (then the caller keeps prev).
//
// Packets and bytes are exact: each CPU's counts only grow while the map
// is in use, and whatever grew is handed out, so that the deltas add up to
// the last totals read. A live read may find a program between its byte
// and packet increments (it adds bytes first): it sees a packet's bytes
// before the packet, or on a weakly ordered CPU the packet before its
// bytes. Bytes that grew without packets are held (prev kept) until the
// packet count grows, unless quiescent (no program writes the map any
// more, so no later read of it will come): then they are handed out with
// 0 packets, and the caller adds them to the flow (Accumulate).
//
// A CPU whose value carries the current epoch counted packets since the
// last read: its start and flags are of those packets only. A CPU still on
// an older epoch may have counted a few packets between the last read and
// the epoch bump that followed it; its last packet's time and flags count
// when its last packet came after the last read began (on the coarse
// clock: in the same tick or later). The sampling rate is the coarsest of
// those CPUs, not of every CPU that ever counted the flow: after a
// sampling change, a CPU that counted only before it does not lend its
// old rate to the new packets.
func (fm *flowMaps) delta(out *NetFlowMetrics, prev flowTotals, perCPU []NetFlowMetrics, quiescent bool) (flowTotals, bool) {
	var tot flowTotals
	var anySampling uint32 // of every CPU that ever counted the flow
	*out = NetFlowMetrics{}
	for i := range perCPU {
		c := &perCPU[i]
		tot.packets += c.Packets
		tot.bytes += c.Bytes
		if c.Packets == 0 {
			continue
		}
		var start uint64
		switch {
		case c.Epoch == fm.epoch:
			start = c.StartMonoTimeTs
		case c.EndMonoTimeTs >= fm.lastRead:
			start = c.EndMonoTimeTs
		}
		if start != 0 {
			// This CPU counted some of the new packets: its flags
			// and rate are theirs.
			out.Flags |= c.Flags
			out.Sampling = max(out.Sampling, c.Sampling)
			if out.StartMonoTimeTs == 0 || start < out.StartMonoTimeTs {
				out.StartMonoTimeTs = start
			}
		}
		out.EndMonoTimeTs = max(out.EndMonoTimeTs, c.EndMonoTimeTs)
		anySampling = max(anySampling, c.Sampling)
	}
	switch {
	case tot.packets > prev.packets:
	case tot.bytes > prev.bytes && quiescent:
	default:
		return tot, false
	}
	out.Packets = tot.packets - prev.packets
	out.Bytes = tot.bytes - prev.bytes
	if out.Sampling == 0 {
		// No CPU counted since the last read by its epoch and
		// clock (bytes only): the rate of the flow's packets.
		out.Sampling = anySampling
	}
	if out.EndMonoTimeTs == 0 { // bytes only, of no CPU with packets
		out.EndMonoTimeTs = fm.now()
	}
	if out.StartMonoTimeTs == 0 {
		out.StartMonoTimeTs = out.EndMonoTimeTs
	}
	return tot, true
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
		NetCounterKeyCOUNTER_MAP_FULL:     &c.MapFull,
		NetCounterKeyCOUNTER_RINGBUF_FULL: &c.RingBufFull,
		NetCounterKeyCOUNTER_NOT_IP:       &c.NotIP,
		NetCounterKeyCOUNTER_MALFORMED:    &c.Malformed,
		NetCounterKeyCOUNTER_NO_MAP:       &c.NoMap,
		NetCounterKeyCOUNTER_SAMPLED_OUT:  &c.SampledOut,
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

// Both objects include c/account.h, so their settings and shared maps have
// the same names; these are the names account.h gives them.
const (
	varSampling     = NetVarSampling
	varSamplingMode = NetVarSamplingMode
	varPreciseClock = NetVarPreciseClock
	mapFlows0       = NetMapFlows0
	mapFlows1       = NetMapFlows1
	mapFlows40      = NetMapFlows40
	mapFlows41      = NetMapFlows41
	mapState        = NetMapFlowStateMap
	mapGrace        = NetMapGracePeriod
	mapDirect       = NetMapDirectFlows
	mapCounters     = NetMapGlobalCounters
	mapSampleCount  = NetMapSamplingCount
)

// configure applies the load-time settings to a spec loaded by LoadNet or
// LoadNetSk: sampling rate and algorithm (volatile consts), aggregation map
// and ring buffer sizes.
func configure(spec *ebpf.CollectionSpec, sampling, cacheMaxSize int, cfg fetcherConfig) (*ebpf.CollectionSpec, error) {
	if err := spec.Variables[varSampling].Set(uint32(sampling)); err != nil {
		return nil, fmt.Errorf("set sampling: %w", err)
	}
	if err := spec.Variables[varSamplingMode].Set(uint32(cfg.algorithm)); err != nil {
		return nil, fmt.Errorf("set sampling algorithm: %w", err)
	}
	precise := uint32(0)
	if cfg.preciseClock {
		precise = 1
	}
	if err := spec.Variables[varPreciseClock].Set(precise); err != nil {
		return nil, fmt.Errorf("set clock: %w", err)
	}
	for _, name := range []string{mapFlows0, mapFlows1, mapFlows40, mapFlows41} {
		spec.Maps[name].MaxEntries = uint32(cacheMaxSize)
	}
	spec.Maps[mapDirect].MaxEntries = cfg.ringBufSize
	return spec, nil
}

// swapped returns s with the two maps of each pair named the other way
// round.
func (s sharedMaps) swapped() sharedMaps {
	s.flows[0], s.flows[1] = s.flows[1], s.flows[0]
	s.flows4[0], s.flows4[1] = s.flows4[1], s.flows4[0]
	return s
}

// replacements are the loaded maps new programs must share (SetSampling).
func (s sharedMaps) replacements() *ebpf.CollectionOptions {
	return &ebpf.CollectionOptions{MapReplacements: map[string]*ebpf.Map{
		mapFlows0:      s.flows[0],
		mapFlows1:      s.flows[1],
		mapFlows40:     s.flows4[0],
		mapFlows41:     s.flows4[1],
		mapState:       s.state,
		mapGrace:       s.grace,
		mapDirect:      s.direct,
		mapCounters:    s.counters,
		mapSampleCount: s.sampleCount,
	}}
}

// shared returns the maps of the TC programs' objects.
func (m *NetMaps) shared() sharedMaps {
	return sharedMaps{flows: [2]*ebpf.Map{m.Flows0, m.Flows1}, flows4: [2]*ebpf.Map{m.Flows40, m.Flows41}, state: m.FlowStateMap, grace: m.GracePeriod,
		direct: m.DirectFlows, counters: m.GlobalCounters, sampleCount: m.SamplingCount}
}

// shared returns the maps of the socket filters' objects.
func (m *NetSkMaps) shared() sharedMaps {
	return sharedMaps{flows: [2]*ebpf.Map{m.Flows0, m.Flows1}, flows4: [2]*ebpf.Map{m.Flows40, m.Flows41}, state: m.FlowStateMap, grace: m.GracePeriod,
		direct: m.DirectFlows, counters: m.GlobalCounters, sampleCount: m.SamplingCount}
}
