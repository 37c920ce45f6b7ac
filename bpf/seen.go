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
// value and control bytes, at most 7/8 full and often half, growing by
// splits that leave garbage): here a flow costs one slot, the key and 16
// bytes (40 bytes for an IPv4 flow), in one array at most 7/8 full, and
// nothing is ever deleted but the whole table at once, when its map is
// drained for good. It holds no pointer: the garbage collector never scans
// it, and it lives outside the Go heap (an anonymous mapping, unmapped as
// soon as it is replaced): its pages count once, not in the heap the
// garbage collector lets grow by GOGC percent above what is live.
//
// Open addressing with linear probing; a slot whose packets are 0 is free
// (a flow is recorded only once it counted a packet). The hash is seeded
// at random: flow keys are chosen by whoever sends packets.
type seenTable[K comparable] struct {
	slots []seenSlot[K] // in mem
	mem   []byte
	n     int // flows recorded
	seed  maphash.Seed
}

type seenSlot[K comparable] struct {
	key K
	tot flowTotals
}

// minSeenSlots is the smallest table.
const minSeenSlots = 1 << 10

func newSeenTable[K comparable]() (*seenTable[K], error) {
	t := &seenTable[K]{seed: maphash.MakeSeed()}
	if err := t.alloc(minSeenSlots); err != nil {
		return nil, err
	}
	return t, nil
}

// alloc replaces the slots with n free ones, unmapping the old ones.
func (t *seenTable[K]) alloc(n int) error {
	mem, err := unix.Mmap(-1, 0, n*int(unsafe.Sizeof(seenSlot[K]{})), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
	if err != nil {
		return fmt.Errorf("map %d slots of flow totals: %w", n, err)
	}
	t.free()
	t.mem = mem
	t.slots = unsafe.Slice((*seenSlot[K])(unsafe.Pointer(&mem[0])), n)
	return nil
}

// free unmaps the slots; the table is unusable until alloc.
func (t *seenTable[K]) free() {
	if t.mem != nil {
		_ = unix.Munmap(t.mem)
	}
	t.mem, t.slots = nil, nil
}

// index returns the slot of k, or the free slot where it would go.
func (t *seenTable[K]) index(k *K) int {
	b := unsafe.Slice((*byte)(unsafe.Pointer(k)), unsafe.Sizeof(*k))
	mask := len(t.slots) - 1
	i := int(maphash.Bytes(t.seed, b)) & mask
	for {
		s := &t.slots[i]
		if s.tot.packets == 0 || s.key == *k {
			return i
		}
		i = (i + 1) & mask
	}
}

// get returns what was handed out of k, zero if nothing.
func (t *seenTable[K]) get(k *K) flowTotals {
	return t.slots[t.index(k)].tot
}

// set records tot (tot.packets > 0) as what was handed out of k. It fails
// only when the table cannot grow, and then records nothing.
func (t *seenTable[K]) set(k *K, tot flowTotals) error {
	if (t.n+1)*8 > len(t.slots)*7 {
		if err := t.grow(); err != nil {
			return err
		}
	}
	s := &t.slots[t.index(k)]
	if s.tot.packets == 0 {
		s.key = *k
		t.n++
	}
	s.tot = tot
	return nil
}

// grow doubles the table.
func (t *seenTable[K]) grow() error {
	old := *t
	t.mem = nil // alloc must not unmap it yet
	if err := t.alloc(2 * len(old.slots)); err != nil {
		t.mem, t.slots = old.mem, old.slots
		return err
	}
	for i := range old.slots {
		if old.slots[i].tot.packets != 0 {
			t.slots[t.index(&old.slots[i].key)] = old.slots[i]
		}
	}
	old.free()
	return nil
}

// reset forgets every flow and gives the table's pages back to the
// kernel (they read as zeroes again). The table keeps its size, unless
// the flows it held would fit in a quarter of it.
func (t *seenTable[K]) reset() {
	shrink := len(t.slots) > minSeenSlots && t.n*8 < len(t.slots)
	t.n = 0
	if shrink && t.alloc(max(minSeenSlots, len(t.slots)/4)) == nil {
		return
	}
	if unix.Madvise(t.mem, unix.MADV_DONTNEED) != nil {
		clear(t.slots)
	}
}

// len returns the flows recorded.
func (t *seenTable[K]) len() int { return t.n }
