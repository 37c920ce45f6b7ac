package bpf

import (
	"errors"
	"fmt"

	"github.com/cilium/ebpf"
)

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
//
// A deleting read reads ahead: a goroutine fetches (and deletes) the next
// batch while this one hands out the last (readAhead), so that the
// kernel's copying and freeing, 40% of the daemon's CPU in a flood of new
// flows, overlaps the cache's work on another CPU. Every batch fetched is
// handed out before readMap returns, the failed one's flows included.
func readMap[K comparable](fm *flowMaps, m *ebpf.Map, keys []K, seen *seenTable[K], id func(K) NetFlowId,
	del, quiescent bool, fn func(NetFlowId, []NetFlowMetrics)) (int, error) {
	var out [1]NetFlowMetrics
	var setErr error
	handOut := func(keys []K, values []NetFlowMetrics) {
		for i := range keys {
			k := &keys[i]
			tot, ok := fm.delta(&out[0], seen.get(k), values[i*fm.ncpu:(i+1)*fm.ncpu], del || quiescent)
			if !ok {
				continue
			}
			// A live read may find a new flow's first bytes before its
			// first packet (delta hands them out when quiescent). Its
			// totals cannot be kept (a slot with 0 packets is free), so
			// it waits: the next read that sees its packet hands out
			// both. Only a deleting read hands out a flow without
			// packets.
			if !del && tot.packets == 0 {
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
	}
	batch := len(keys)
	if fm.testBatch > 0 {
		batch = fm.testBatch
	}
	var total int
	var err error
	if del {
		total, err = readAhead(fm, m, keys, batch, handOut)
	} else {
		total, err = readLive(fm, m, keys, batch, handOut)
	}
	if err != nil {
		return total, fmt.Errorf("read aggregation map: %w", err)
	}
	return total, setErr
}

// readLive reads m in batches of at most batch flows, without deleting,
// and hands each batch to handOut; it returns the flows read.
func readLive[K comparable](fm *flowMaps, m *ebpf.Map, keys []K, batch int, handOut func([]K, []NetFlowMetrics)) (int, error) {
	var cursor ebpf.MapBatchCursor
	keys, values := keys[:batch], fm.values[:batch*fm.ncpu]
	total := 0
	for {
		var n int
		var err error
		if fm.testFail != nil {
			err = fm.testFail("batch")
		}
		if err == nil {
			n, err = m.BatchLookup(&cursor, keys, values, nil)
		}
		total += n
		handOut(keys[:n], values[:n*fm.ncpu])
		if errors.Is(err, ebpf.ErrKeyNotExist) {
			return total, nil
		}
		if err != nil {
			return total, err
		}
	}
}

// fetched is one batch of a deleting read: its flows are in half h of
// the read buffers.
type fetched struct {
	h   int
	n   int
	err error
}

// readAhead empties m in batches of at most half the read buffers (and
// at most batch flows): a goroutine fetches a batch into one half while
// handOut hands out the other, so the buffers cost no more memory than a
// read without it. It returns the flows read, once the goroutine is done.
func readAhead[K comparable](fm *flowMaps, m *ebpf.Map, keys []K, batch int, handOut func([]K, []NetFlowMetrics)) (int, error) {
	half := min(batch, len(keys)/2)
	keyHalf := [2][]K{keys[:half], keys[half : 2*half]}
	valHalf := [2][]NetFlowMetrics{fm.values[:half*fm.ncpu], fm.values[half*fm.ncpu : 2*half*fm.ncpu]}
	free := make(chan int, 2)
	full := make(chan fetched, 2)
	free <- 0
	free <- 1
	go func() {
		var cursor ebpf.MapBatchCursor
		for h := range free {
			var n int
			var err error
			if fm.testFail != nil {
				err = fm.testFail("delete batch")
			}
			if err == nil {
				n, err = m.BatchLookupAndDelete(&cursor, keyHalf[h], valHalf[h], nil)
			}
			full <- fetched{h: h, n: n, err: err}
			if err != nil { // ErrKeyNotExist: the map is empty
				close(full)
				return
			}
		}
	}()
	total := 0
	var last error
	for b := range full {
		total += b.n
		handOut(keyHalf[b.h][:b.n], valHalf[b.h][:b.n*fm.ncpu])
		if b.err != nil {
			last = b.err
			continue // the goroutine closes full
		}
		free <- b.h
	}
	close(free)
	if errors.Is(last, ebpf.ErrKeyNotExist) {
		return total, nil
	}
	return total, last
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
// old rate to the new packets. OutIfIndex is that of the CPU whose last
// packet is the latest.
func (fm *flowMaps) delta(out *NetFlowMetrics, prev flowTotals, perCPU []NetFlowMetrics, quiescent bool) (flowTotals, bool) {
	var tot flowTotals
	var anySampling uint32 // of every CPU that ever counted the flow
	var outIfTime uint64
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
		// Router mode's forwarded flows: the interface of the CPU
		// that counted last (each CPU keeps its last packet's).
		if c.OutIfIndex != 0 && c.EndMonoTimeTs >= outIfTime {
			out.OutIfIndex, outIfTime = c.OutIfIndex, c.EndMonoTimeTs
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
