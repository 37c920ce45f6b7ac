package exporter

import (
	"encoding/binary"
	"math"
	"math/bits"
	"math/rand/v2"

	"github.com/hostflow/hostflow/bpf"
)

// entry is one cached flow: its key in the cache's compact form (ckey)
// and its metrics, every field of bpf.NetFlowMetrics the cache reports (not
// the kernel's epoch nor padding). 80 bytes for any flow; a wide (IPv6)
// flow's addresses take 32 more in the table's addrPool. Entries form a
// doubly linked list, by index, in the order their flows were last seen,
// most recent at the head, so the least recently seen flow is found in
// O(1) when the cache is full. An entry holds no pointer: the garbage
// collector never scans the table.
type entry struct {
	k               ckey
	packets, bytes  uint64
	start, end      uint64 // CLOCK_MONOTONIC ns
	sampling, outIf uint32
	flags           uint16
	fam             uint8
	prev, next      int32 // none at the ends; next links the free list
	// hash is the low 32 bits of the key's hash, in what would be
	// padding: removing a flow finds its index slot, and moves its
	// neighbours back to their home slots, without hashing keys again.
	hash uint32
}

// metrics returns the entry's metrics.
func (e *entry) metrics() bpf.NetFlowMetrics {
	return bpf.NetFlowMetrics{
		Packets:         e.packets,
		Bytes:           e.bytes,
		StartMonoTimeTs: e.start,
		EndMonoTimeTs:   e.end,
		Flags:           e.flags,
		Sampling:        e.sampling,
		OutIfIndex:      e.outIf,
	}
}

// setMetrics stores m in the entry.
func (e *entry) setMetrics(m *bpf.NetFlowMetrics) {
	e.packets, e.bytes = m.Packets, m.Bytes
	e.start, e.end = m.StartMonoTimeTs, m.EndMonoTimeTs
	e.flags, e.sampling, e.outIf = m.Flags, m.Sampling, m.OutIfIndex
}

// accumulate merges m into the entry (bpf.NetFlowMetrics.Accumulate).
func (e *entry) accumulate(m *bpf.NetFlowMetrics) {
	cur := e.metrics()
	cur.Accumulate(m)
	e.setMetrics(&cur)
}

// none is the null entry index.
const none = int32(-1)

// chunkShift sets the size of the blocks entries are allocated in: 4096
// entries, 320 KiB. Memory grows with the number of flows, a block at a
// time, up to the cache's bound, and is never moved.
const (
	chunkShift = 12
	chunkSize  = 1 << chunkShift
	chunkMask  = chunkSize - 1
)

// minSlots is the smallest index of a flowTable.
const minSlots = 1 << 10

// flowTable is the Cache's storage: entries in blocks, an open-addressing
// index (linear probing, backward-shift deletion, so no tombstones) of
// entry index + 1 by flow key hash, kept at most half full, and the LRU
// list. The bits of an index slot that entry indexes below max do not
// use hold the slot's distance from its home slot (up to 4 bits, the
// largest value meaning "that or more") and a tag, bits of the hash (of
// its upper half; the home slot is of the lower one). A lookup passes over
// most slots of other flows without reading their entries, which are
// scattered over the blocks (a 9-bit tag at the default max_flows: 1 in
// 512 slots of another flow is read for nothing), and a removal moves the
// slots that follow back without reading theirs. Go's map would do, but it costs about twice the
// memory per flow (its groups hold key and value, and grow in steps of
// two), holds the memory of its peak size forever, and its entries hold
// pointers the garbage collector scans.
//
// Its memory is bounded by max: at most max entries (rounded up to a
// block) of 80 bytes (and 32 more per IPv6 flow) and an index of at most 2*max rounded up to a power
// of two, 4 bytes a slot. The hash is seeded at random: flow keys are
// chosen by whoever sends packets, who must not be able to make them
// collide.
type flowTable struct {
	chunks     [][]entry
	used       int32 // entries ever handed out; below len(chunks)*chunkSize
	free       int32 // free list, through next
	n          int   // flows in the table
	head, tail int32
	index      []uint32 // tag | distance | entry index + 1; 0 if empty
	mask       uint64
	idxMask    uint32 // of the entry index + 1 in an index slot
	distShift  uint   // of the distance from the home slot
	distMax    uint32 // the distance field's largest value: read the entry
	maxSlots   int
	seed       [4]uint64
	addrs      addrPool // wide flows' addresses
}

func newFlowTable(max int) flowTable {
	maxSlots := minSlots
	for maxSlots < 2*max {
		maxSlots <<= 1
	}
	t := flowTable{maxSlots: maxSlots, idxMask: math.MaxUint32, distShift: 32}
	if b := bits.Len(uint(max)); b < 32 {
		t.idxMask = 1<<b - 1
		t.distShift = uint(b)
		t.distMax = 1<<min(distBits, 32-b) - 1
	}
	for i := range t.seed {
		t.seed[i] = rand.Uint64() | 1
	}
	t.reset()
	return t
}

// reset empties the table and lets go of its memory.
func (t *flowTable) reset() {
	t.chunks = nil
	t.addrs = addrPool{}
	t.used, t.free, t.n = 0, none, 0
	t.head, t.tail = none, none
	t.index = make([]uint32, minSlots)
	t.mask = minSlots - 1
}

func (t *flowTable) at(i int32) *entry {
	return &t.chunks[i>>chunkShift][i&chunkMask]
}

// mix is the folded 128-bit product, the core of wyhash-style hashes.
func mix(a, b uint64) uint64 {
	hi, lo := bits.Mul64(a, b)
	return hi ^ lo
}

// distBits is the most bits an index slot gives to its distance from its
// home slot: linear probing at most half full rarely goes further.
const distBits = 4

// tag is the tag of hash h in an index slot.
func (t *flowTable) tag(h uint64) uint32 {
	return uint32(h>>32) &^ (t.idxMask | t.distMax<<t.distShift)
}

// slotValue is the index slot of entry i, of hash h, at distance d from
// its home slot.
func (t *flowTable) slotValue(h uint64, d uint64, i int32) uint32 {
	return t.tag(h) | uint32(min(d, uint64(t.distMax)))<<t.distShift | (uint32(i) + 1)
}

// withDist is slot value v (its tag and entry) at distance d.
func (t *flowTable) withDist(v uint32, d uint64) uint32 {
	return v&^(t.distMax<<t.distShift) | uint32(min(d, uint64(t.distMax)))<<t.distShift
}

// dist returns how far slot s, of value v, is from its home slot; from
// the entry's hash when the slot's field cannot tell.
func (t *flowTable) dist(s uint64, v uint32) uint64 {
	if d := v >> t.distShift & t.distMax; d < t.distMax {
		return uint64(d)
	}
	return (s - uint64(t.at(t.entryOf(v)).hash)) & t.mask
}

// entryOf returns the entry index of a full index slot's value.
func (t *flowTable) entryOf(v uint32) int32 {
	return int32(v&t.idxMask) - 1
}

// find returns the entry of p (none if absent) and its index slot (or
// the empty slot where it would go).
func (t *flowTable) find(p *probe, h uint64) (int32, uint64) {
	tag := t.tag(h)
	for s := h & t.mask; ; s = (s + 1) & t.mask {
		v := t.index[s]
		if v == 0 {
			return none, s
		}
		if v&^(t.idxMask|t.distMax<<t.distShift) != tag {
			continue
		}
		if i := t.entryOf(v); t.at(i).hash == uint32(h) && t.matches(t.at(i), p) {
			return i, s
		}
	}
}

// emptySlot returns the first empty index slot from hash h on.
func (t *flowTable) emptySlot(h uint64) uint64 {
	s := h & t.mask
	for t.index[s] != 0 {
		s = (s + 1) & t.mask
	}
	return s
}

// slotOf returns the index slot that points to entry i.
func (t *flowTable) slotOf(i int32) uint64 {
	for s := uint64(t.at(i).hash) & t.mask; ; s = (s + 1) & t.mask {
		if t.index[s]&t.idxMask == uint32(i)+1 {
			return s
		}
	}
}

// insert adds a flow that is not in the table, at the head of the list.
func (t *flowTable) insert(p *probe, h uint64, m *bpf.NetFlowMetrics) {
	if 2*(t.n+1) > len(t.index) && len(t.index) < t.maxSlots {
		t.grow()
	}
	i := t.alloc()
	e := t.at(i)
	e.k, e.fam, e.hash = p.k, p.fam, uint32(h)
	if p.fam == famWide {
		binary.LittleEndian.PutUint32(e.k.addr[:4], t.addrs.put(p.src, p.dst))
	}
	e.setMetrics(m)
	s := t.emptySlot(h)
	t.index[s] = t.slotValue(h, (s-h)&t.mask, i)
	t.n++
	t.pushFront(i)
}

// alloc takes an entry from the free list or a block.
func (t *flowTable) alloc() int32 {
	if i := t.free; i != none {
		t.free = t.at(i).next
		return i
	}
	if int(t.used) == len(t.chunks)*chunkSize {
		t.chunks = append(t.chunks, make([]entry, chunkSize))
	}
	t.used++
	return t.used - 1
}

// grow doubles the index. A slot's tag is of the hash's upper half,
// which entries do not keep: slots move with their tags.
func (t *flowTable) grow() {
	old := t.index
	t.index = make([]uint32, 2*len(old))
	t.mask = uint64(len(t.index) - 1)
	for _, v := range old {
		if v != 0 {
			h := uint64(t.at(t.entryOf(v)).hash)
			s := t.emptySlot(h)
			t.index[s] = t.withDist(v, (s-h)&t.mask)
		}
	}
}

// remove deletes entry i from the index and the list, and frees it.
func (t *flowTable) remove(i int32) {
	s := t.slotOf(i)
	// Backward-shift deletion: move up every following entry of the
	// cluster whose home slot is not between the hole and itself.
	for j := (s + 1) & t.mask; t.index[j] != 0; j = (j + 1) & t.mask {
		v := t.index[j]
		if d, back := t.dist(j, v), (j-s)&t.mask; d >= back {
			t.index[s] = t.withDist(v, d-back)
			s = j
		}
	}
	t.index[s] = 0
	t.unlink(i)
	e := t.at(i)
	if e.fam == famWide {
		t.addrs.release(e.poolIndex())
	}
	*e = entry{next: t.free}
	t.free = i
	t.n--
}

func (t *flowTable) pushFront(i int32) {
	e := t.at(i)
	e.prev, e.next = none, t.head
	if t.head != none {
		t.at(t.head).prev = i
	} else {
		t.tail = i
	}
	t.head = i
}

func (t *flowTable) unlink(i int32) {
	e := t.at(i)
	if e.prev != none {
		t.at(e.prev).next = e.next
	} else {
		t.head = e.next
	}
	if e.next != none {
		t.at(e.next).prev = e.prev
	} else {
		t.tail = e.prev
	}
	e.prev, e.next = none, none
}

func (t *flowTable) moveToFront(i int32) {
	if t.head == i {
		return
	}
	t.unlink(i)
	t.pushFront(i)
}
