package exporter

import (
	"encoding/binary"

	"github.com/hostflow/hostflow/bpf"
)

// Address families of a cached flow (entry.fam): how its addresses are
// kept.
const (
	// famNone: the key has no L3 protocol (bpf.NetFlowId.Valid is
	// false); KeyOf gives it no addresses, so none are kept.
	famNone uint8 = iota
	// famIPv4: ethertype 0x0800; the entry holds the two 4-byte
	// addresses, the only bytes KeyOf reads of an IPv4 key.
	famIPv4
	// famWide: any other L3 protocol (IPv6); the entry holds the index
	// of the 16-byte address pair in the table's addrPool.
	famWide
)

// keyRest is every field of a flow key but the addresses and the
// ethertype, as the cache keeps it.
type keyRest struct {
	ifIndex          uint32
	srcPort, dstPort uint16
	vlan             uint16
	proto, dir       uint8
	icmpType         uint8
	icmpCode         uint8
	tos              uint8
	fate             uint8
}

// ckey is the cache's form of a flow key: 24 bytes, against the 52 of a
// bpf.NetFlowId. addr holds an IPv4 flow's source and destination
// addresses, or the index (little endian) of a wide flow's addresses in
// the addrPool.
type ckey struct {
	addr [8]byte
	rest keyRest
}

// probe is a flow key as a lookup sees it: the compact key (addr zero for
// a wide flow), its family, and a wide flow's addresses.
type probe struct {
	k        ckey
	fam      uint8
	src, dst *[16]uint8
}

// probeOf splits id into the cache's form.
func probeOf(id *bpf.NetFlowId) probe {
	p := probe{fam: famNone, k: ckey{rest: keyRest{
		ifIndex:  id.IfIndex,
		srcPort:  id.SrcPort,
		dstPort:  id.DstPort,
		vlan:     id.VlanId,
		proto:    id.TransportProtocol,
		dir:      id.Direction,
		icmpType: id.IcmpType,
		icmpCode: id.IcmpCode,
		tos:      id.Tos,
		fate:     id.Fate,
	}}}
	switch {
	case id.IsIPv4():
		p.fam = famIPv4
		copy(p.k.addr[:4], id.SrcIp[12:])
		copy(p.k.addr[4:], id.DstIp[12:])
	case id.Valid():
		p.fam = famWide
		p.src, p.dst = &id.SrcIp, &id.DstIp
	}
	return p
}

// idOf rebuilds the bpf.NetFlowId of entry e: the one it was added with,
// as far as KeyOf can tell (an IPv4 key's addresses mapped into
// ::ffff:0:0/96, a wide key's ethertype 0x86dd).
func (t *flowTable) idOf(e *entry) bpf.NetFlowId {
	r := &e.k.rest
	id := bpf.NetFlowId{
		IfIndex:           r.ifIndex,
		SrcPort:           r.srcPort,
		DstPort:           r.dstPort,
		VlanId:            r.vlan,
		TransportProtocol: r.proto,
		Direction:         r.dir,
		IcmpType:          r.icmpType,
		IcmpCode:          r.icmpCode,
		Tos:               r.tos,
		Fate:              r.fate,
	}
	switch e.fam {
	case famIPv4:
		id.EthProtocol = 0x0800
		id.SrcIp[10], id.SrcIp[11] = 0xff, 0xff
		id.DstIp[10], id.DstIp[11] = 0xff, 0xff
		copy(id.SrcIp[12:], e.k.addr[:4])
		copy(id.DstIp[12:], e.k.addr[4:])
	case famWide:
		id.EthProtocol = 0x86dd
		a := t.addrs.at(e.poolIndex())
		id.SrcIp, id.DstIp = a[0], a[1]
	}
	return id
}

// poolIndex is a wide entry's index in the addrPool.
func (e *entry) poolIndex() uint32 { return binary.LittleEndian.Uint32(e.k.addr[:4]) }

// matches reports whether entry e is the flow p.
func (t *flowTable) matches(e *entry, p *probe) bool {
	if e.fam != p.fam || e.k.rest != p.k.rest {
		return false
	}
	if p.fam != famWide {
		return e.k.addr == p.k.addr
	}
	a := t.addrs.at(e.poolIndex())
	return a[0] == *p.src && a[1] == *p.dst
}

// hash hashes every field of the key. A field added to the key and not
// here only makes more keys share a hash: equality decides.
func (t *flowTable) hash(p *probe) uint64 {
	le := binary.LittleEndian
	r := &p.k.rest
	w := uint64(r.ifIndex) | uint64(r.srcPort)<<32 | uint64(r.dstPort)<<48
	x := uint64(r.vlan) | uint64(r.proto)<<16 | uint64(r.dir)<<24 | uint64(r.icmpType)<<32 |
		uint64(r.icmpCode)<<40 | uint64(r.tos)<<48 | uint64(r.fate)<<56
	h := mix(w^t.seed[0], x^t.seed[1])
	if p.fam == famWide {
		h = mix(h^le.Uint64(p.src[0:8]), le.Uint64(p.src[8:16])^t.seed[2])
		h = mix(h^le.Uint64(p.dst[0:8]), le.Uint64(p.dst[8:16])^t.seed[3])
	}
	return mix(h^le.Uint64(p.k.addr[:])^t.seed[2], uint64(p.fam)^t.seed[3])
}

// addrPool holds the address pairs of wide (IPv6) flows, in blocks like
// the entries, with a free list through the first 4 bytes of free pairs.
type addrPool struct {
	chunks [][][2][16]uint8
	used   uint32
	free   uint32 // index + 1; 0: none
}

const poolChunkShift = 10

func (p *addrPool) at(i uint32) *[2][16]uint8 {
	return &p.chunks[i>>poolChunkShift][i&(1<<poolChunkShift-1)]
}

// put stores a pair and returns its index.
func (p *addrPool) put(src, dst *[16]uint8) uint32 {
	var i uint32
	if p.free != 0 {
		i = p.free - 1
		p.free = binary.LittleEndian.Uint32(p.at(i)[0][:4])
	} else {
		if int(p.used) == len(p.chunks)<<poolChunkShift {
			p.chunks = append(p.chunks, make([][2][16]uint8, 1<<poolChunkShift))
		}
		i = p.used
		p.used++
	}
	a := p.at(i)
	a[0], a[1] = *src, *dst
	return i
}

// release frees pair i.
func (p *addrPool) release(i uint32) {
	a := p.at(i)
	*a = [2][16]uint8{}
	binary.LittleEndian.PutUint32(a[0][:4], p.free)
	p.free = i + 1
}
