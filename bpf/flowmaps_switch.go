package bpf

import (
	"errors"
	"fmt"
	"time"

	"github.com/cilium/ebpf"
)

// Diverted tells the maps that the kernel diverted r to the ring buffer
// (its map was full) and reports whether r was diverted by the map
// programs count into now, not by one already switched out: then the
// next Drain switches maps first, and the caller should drain soon
// rather than at its next poll. It may be called concurrently with Drain.
func (fm *flowMaps) Diverted(r *Record) bool {
	// Until the old programs' map is drained after a sampling change,
	// records may be theirs (they carry the same epoch as the new
	// programs'): that map is emptied at the next Drain anyway.
	if fm.changePending.Load() {
		return false
	}
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
// running. After a sampling change, the next Drain hands out only what
// the old programs counted (drainOld), unless no hook is left: then it
// also reads the new programs' map. It reads the active map without deleting anything, then, when that map
// is 7/8 full or old, switches the programs to the other (empty) one, waits
// until no program can still write to the old one, and empties it. Each
// flow's last increments reach fn then: none is lost. When the active map
// is full (Diverted or Full said so, or a packet found it full since),
// Drain switches first and reads only the old map, once, with deletion:
// the new map takes the packets meanwhile.
func (fm *flowMaps) Drain(fn func(NetFlowId, []NetFlowMetrics)) error {
	fm.mu.Lock()
	defer fm.mu.Unlock()
	if fm.done.Load() {
		return ErrDoneReading
	}
	// After a detach, a program may still be counting (it started
	// before): let it finish, so that the drain at shutdown has every
	// packet the hooks saw.
	quiescent := false
	if fm.detached.Swap(false) {
		if err := fm.waitForPrograms(); err != nil {
			fm.detached.Store(true)
			return err
		}
		// With no hook left (the last drain), no program can write
		// the maps any more: hand out bytes read ahead of their
		// packets too (delta). With other hooks still attached, this
		// is a live read like any other.
		quiescent = fm.hooks.Load() == 0
	}
	if fm.oldPending {
		// Only the old programs' map, for the old rate's sinks; but
		// when no program is left (the last drain), also what the new
		// programs counted: no later drain will read it.
		if err := fm.drainOld(fn); err != nil || !quiescent {
			if err != nil && quiescent {
				fm.detached.Store(true) // the next Drain is the last
			}
			return err
		}
	}
	if fm.switchPending {
		if err := fm.drainSwitched(fn); err != nil {
			return err
		}
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
	fm.switchPending = true
	return fm.drainSwitched(fn)
}

// drainSwitched empties the map the last switch left, which no program
// writes to any more, handing out what each flow counted since the last
// read, and then forgets what was handed out. If the read fails, the map
// may still hold flows: switchPending stays set and the totals are kept,
// so that the next Drain reads it again, before the active map (whose
// flows the kept totals are not of). A flow is then neither held back nor
// handed out twice.
func (fm *flowMaps) drainSwitched(fn func(NetFlowId, []NetFlowMetrics)) error {
	if _, err := fm.read(1-fm.active, true, true, fn); err != nil {
		return err
	}
	fm.switchPending = false
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
	st := NetFlowStateT{Active: uint32(1 - cur), Epoch: next, Swapped: fm.swappedNames()}
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
	fm.switchPending = true
	err := fm.drainSwitched(fn)
	fm.epoch, fm.lastRead = next, readStart
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
	if fm.switchPending {
		return nil, errors.New("sampling change: the map switched out last is not drained yet")
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
	// The drop counter follows flow_state: it counts into the new
	// programs' map from now on, so that the old one, emptied at the
	// next Drain, is written by no program by then.
	fm.swaps++
	if err := fm.writeState(); err != nil {
		fm.swaps--
		return err
	}
	if err := swap(); err != nil {
		fm.swaps--
		return errors.Join(err, fm.writeState())
	}
	fm.shared = fm.shared.swapped()
	fm.oldPending = true
	fm.changePending.Store(true)
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
	fm.switched()
	// The old programs' records read from now on (the ring buffer may
	// still hold some) carry this epoch, as do the new programs' until
	// the next read bumps it: only records of a later epoch show the
	// new map full. Set before Diverted looks at epochs again.
	next := fm.epoch + 1
	if next == 0 {
		next = 1
	}
	fm.switchEpoch.Store(uint32(next))
	fm.changePending.Store(false)
	// A full map noted meanwhile was the old one.
	fm.full.Store(false)
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
