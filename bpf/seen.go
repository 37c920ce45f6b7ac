package bpf

import (
	"fmt"
	"hash/maphash"
	"unsafe"

	"golang.org/x/sys/unix"
)

// seenTable holds, for each flow of the kernel map programs count into,
// the packets and bytes Drain already handed out of it. It replaces a Go
// map, which cost about 62 bytes per IPv4 flow (its groups hold key,
// value and control bytes, at most 7/8 full and often half) on the heap
// the garbage collector lets grow by GOGC percent above what is live.
//
// Here a flow costs one slot, its key and 16 bytes (40 bytes for an IPv4
// flow), at most 7/8 full; nothing is ever deleted but the whole table at
// once, when its map is drained for good. The slots are split over
// seenParts parts by the top bits of the hash, each part an anonymous
// mapping outside the Go heap, doubled on its own (so that growing never
// holds two copies of the whole table) and unmapped as soon as it is
// replaced. They hold no pointer: the garbage collector never sees them.
//
// Open addressing with linear probing within a part; a slot whose packets
// are 0 is free (a flow is recorded only once it counted a packet). The
// hash is seeded at random: flow keys are chosen by whoever sends packets.
type seenTable[K comparable] struct {
	parts [seenParts]seenPart[K]
	n     int // flows recorded
	seed  maphash.Seed
}

// seenPart is one part of a seenTable.
type seenPart[K comparable] struct {
	slots []seenSlot[K] // in mem
	mem   []byte
	n     int
}

type seenSlot[K comparable] struct {
	key K
	tot flowTotals
}

const (
	// seenParts is the number of parts of a seenTable: growing a part
	// holds 1/64 of the table twice, at most.
	seenPartsShift = 6
	seenParts      = 1 << seenPartsShift
	// minPartSlots is the smallest part: a page of IPv6 slots.
	minPartSlots = 1 << 6
)

func newSeenTable[K comparable]() (*seenTable[K], error) {
	t := &seenTable[K]{seed: maphash.MakeSeed()}
	for i := range t.parts {
		if err := t.parts[i].alloc(minPartSlots); err != nil {
			t.free()
			return nil, err
		}
	}
	return t, nil
}

// alloc replaces the slots with n free ones, unmapping the old ones.
func (p *seenPart[K]) alloc(n int) error {
	mem, err := unix.Mmap(-1, 0, n*int(unsafe.Sizeof(seenSlot[K]{})), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
	if err != nil {
		return fmt.Errorf("map %d slots of flow totals: %w", n, err)
	}
	p.free()
	p.mem = mem
	p.slots = unsafe.Slice((*seenSlot[K])(unsafe.Pointer(&mem[0])), n)
	return nil
}

// free unmaps the slots; the part is unusable until alloc.
func (p *seenPart[K]) free() {
	if p.mem != nil {
		_ = unix.Munmap(p.mem)
	}
	p.mem, p.slots = nil, nil
}

// free unmaps every part; the table is unusable afterwards.
func (t *seenTable[K]) free() {
	for i := range t.parts {
		t.parts[i].free()
	}
}

// hash returns k's hash.
func (t *seenTable[K]) hash(k *K) uint64 {
	return maphash.Bytes(t.seed, unsafe.Slice((*byte)(unsafe.Pointer(k)), unsafe.Sizeof(*k)))
}

// index returns the slot of k (of hash h), or the free slot where it would
// go.
func (p *seenPart[K]) index(k *K, h uint64) int {
	mask := len(p.slots) - 1
	i := int(h) & mask
	for {
		s := &p.slots[i]
		if s.tot.packets == 0 || s.key == *k {
			return i
		}
		i = (i + 1) & mask
	}
}

// get returns what was handed out of k, zero if nothing.
func (t *seenTable[K]) get(k *K) flowTotals {
	if t.n == 0 {
		// Nothing handed out: the deleting read of a map switched
		// out before any live read of it (the early switch of a
		// flood) hashes no key.
		return flowTotals{}
	}
	h := t.hash(k)
	p := &t.parts[h>>(64-seenPartsShift)]
	return p.slots[p.index(k, h)].tot
}

// set records tot as what was handed out of k. Totals without packets
// are not recorded (a slot with 0 packets is free: recording them would
// lend them to the next flow that probes to it); the caller never hands
// them out of a live read (readMap). It fails only when the table cannot
// grow, and then records nothing.
func (t *seenTable[K]) set(k *K, tot flowTotals) error {
	if tot.packets == 0 {
		return nil
	}
	h := t.hash(k)
	p := &t.parts[h>>(64-seenPartsShift)]
	if (p.n+1)*8 > len(p.slots)*7 {
		if err := t.grow(p); err != nil {
			return err
		}
	}
	s := &p.slots[p.index(k, h)]
	if s.tot.packets == 0 {
		s.key = *k
		p.n++
		t.n++
	}
	s.tot = tot
	return nil
}

// grow doubles part p.
func (t *seenTable[K]) grow(p *seenPart[K]) error {
	old := *p
	p.mem = nil // alloc must not unmap it yet
	if err := p.alloc(2 * len(old.slots)); err != nil {
		*p = old
		return err
	}
	for i := range old.slots {
		if s := &old.slots[i]; s.tot.packets != 0 {
			p.slots[p.index(&s.key, t.hash(&s.key))] = *s
		}
	}
	old.free()
	return nil
}

// reset forgets every flow and gives the table's pages back to the
// kernel (they read as zeroes again). Each part keeps its size, unless
// the flows it held would fit in a quarter of it.
func (t *seenTable[K]) reset() {
	for i := range t.parts {
		p := &t.parts[i]
		shrink := len(p.slots) > minPartSlots && p.n*8 < len(p.slots)
		p.n = 0
		if shrink && p.alloc(max(minPartSlots, len(p.slots)/4)) == nil {
			continue
		}
		if unix.Madvise(p.mem, unix.MADV_DONTNEED) != nil {
			clear(p.slots)
		}
	}
	t.n = 0
}

// len returns the flows recorded.
func (t *seenTable[K]) len() int { return t.n }

// slots returns the slots of every part.
func (t *seenTable[K]) slots() int {
	n := 0
	for i := range t.parts {
		n += len(t.parts[i].slots)
	}
	return n
}
