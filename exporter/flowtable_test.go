package exporter

import (
	"math/rand/v2"
	"reflect"
	"testing"
	"time"
	"unsafe"

	"github.com/hostflow/hostflow/bpf"
)

// An entry is 80 bytes (issue 11: 104 with the kernel's key and metrics).
func TestEntrySize(t *testing.T) {
	if got := unsafe.Sizeof(entry{}); got != 80 {
		t.Errorf("entry is %d bytes, want 80", got)
	}
}

// v6key is an IPv6 flow key.
func v6key(port uint16) bpf.NetFlowId {
	id := key(port)
	id.EthProtocol = 0x86dd
	id.SrcIp = [16]uint8{0: 0xfd, 15: 1}
	id.DstIp = [16]uint8{0: 0xfd, 15: 2}
	return id
}

// Every field of the kernel's key and metrics survives the cache's compact
// form: a field added to bpf.NetFlowIdT or bpf.NetFlowMetricsT and not to
// entry fails here, rather than being dropped from the records.
func TestEntryKeepsEveryField(t *testing.T) {
	skipID := map[string]bool{"SrcIp": true, "DstIp": true, "EthProtocol": true, "Pad2": true}
	skipMetrics := map[string]bool{"Epoch": true, "Pad": true}
	for _, base := range []bpf.NetFlowId{key(1), v6key(1)} {
		idT := reflect.TypeFor[bpf.NetFlowId]()
		for f := range idT.NumField() {
			name := idT.Field(f).Name
			if name == "_" || skipID[name] {
				continue
			}
			id := base
			v := reflect.ValueOf(&id).Elem().Field(f)
			v.SetUint(v.Uint() + 0xa5)
			tab := newFlowTable(16)
			p := probeOf(&id)
			var m bpf.NetFlowMetrics
			tab.insert(&p, tab.hash(&p), &m)
			if got := tab.idOf(tab.at(tab.head)); got != id {
				t.Errorf("%s changed: got %+v, want %+v", name, got, id)
			}
		}
	}
	mT := reflect.TypeFor[bpf.NetFlowMetrics]()
	for f := range mT.NumField() {
		name := mT.Field(f).Name
		if name == "_" || skipMetrics[name] {
			continue
		}
		var m bpf.NetFlowMetrics
		v := reflect.ValueOf(&m).Elem().Field(f)
		v.SetUint(0xa5)
		var e entry
		e.setMetrics(&m)
		if got := e.metrics(); got != m {
			t.Errorf("%s: got %+v, want %+v", name, got, m)
		}
	}
}

// Keys that differ in any one field of FlowKey, or in their address
// family, are different flows; each record carries its flow's key.
func TestCacheKeysDistinct(t *testing.T) {
	ids := []bpf.NetFlowId{key(1), v6key(1), {}}
	for _, change := range []func(*bpf.NetFlowId){
		func(id *bpf.NetFlowId) { id.SrcIp[15]++ },
		func(id *bpf.NetFlowId) { id.DstIp[15]++ },
		func(id *bpf.NetFlowId) { id.SrcIp[0] ^= 0x20 },
		func(id *bpf.NetFlowId) { id.IfIndex++ },
		func(id *bpf.NetFlowId) { id.SrcPort++ },
		func(id *bpf.NetFlowId) { id.DstPort++ },
		func(id *bpf.NetFlowId) { id.VlanId++ },
		func(id *bpf.NetFlowId) { id.TransportProtocol++ },
		func(id *bpf.NetFlowId) { id.Direction++ },
		func(id *bpf.NetFlowId) { id.IcmpType++ },
		func(id *bpf.NetFlowId) { id.IcmpCode++ },
		func(id *bpf.NetFlowId) { id.Tos++ },
		// Fate is kept too (TestEntryKeepsEveryField), but FlowKey
		// does not carry it yet.
	} {
		for _, base := range []bpf.NetFlowId{key(1), v6key(1)} {
			id := base
			change(&id)
			ids = append(ids, id)
		}
	}
	clk := newFakeClock()
	c := mustCache(t, CacheConfig{ActiveTimeout: time.Minute, IdleTimeout: time.Minute, MaxFlows: 1000}, clk)
	want := map[FlowKey]uint64{}
	for i, id := range ids {
		m := pkt(uint64(i+1), 60, clk.mono, clk.mono)
		c.AddOne(id, &m)
		want[KeyOf(id)] += uint64(i + 1)
	}
	// The IPv4 key with a changed SrcIp[0] is the same flow to KeyOf
	// (and to the cache): an IPv4 key's first 12 address bytes are not
	// part of it.
	if c.Len() != len(want) {
		t.Errorf("%d flows cached, want %d", c.Len(), len(want))
	}
	for _, f := range c.Flush(nil) {
		if f.Packets != want[f.Key] {
			t.Errorf("%v: %d packets, want %d", f.Key, f.Packets, want[f.Key])
		}
		delete(want, f.Key)
	}
	if len(want) != 0 {
		t.Errorf("no record of %v", want)
	}
}

// A random sequence of adds (IPv4 and IPv6 flows, closing TCP flows, a
// cache that overflows) and expiries loses no packet and merges no two
// flows: what the records and the cache hold per key is what was added.
// No flow ends before NextEnd.
func FuzzCacheTable(f *testing.F) {
	f.Add([]byte{0, 1, 2, 3, 0x81, 0x82, 0xff, 4, 5, 0x84})
	f.Add([]byte{0xff, 0xff, 1, 1, 1, 0x80, 0x80, 0x80})
	f.Add([]byte{0x41, 0xff, 0xff, 0x41, 0xff, 0xff, 0xff, 2, 0xff, 0xff, 0xff})
	f.Fuzz(func(t *testing.T, ops []byte) {
		clk := newFakeClock()
		c := mustCache(t, CacheConfig{ActiveTimeout: time.Minute, IdleTimeout: 3 * time.Second, MaxFlows: 8}, clk)
		added := map[FlowKey]uint64{}
		got := map[FlowKey]uint64{}
		take := func(fs []Flow) {
			for _, fl := range fs {
				got[fl.Key] += fl.Packets
			}
		}
		for i, op := range ops {
			if op == 0xff {
				// Every packet so far was added: lastRead is now,
				// and none came since (no FIN either).
				next := c.NextEnd(clk.mono, false)
				clk.advance(time.Second)
				pending := c.Pending()
				out := c.Expire(nil)
				if clk.mono < next && len(out) != pending {
					t.Fatalf("at %v, before NextEnd %v, Expire exported %d records, %d of them pending", clk.mono, next, len(out), pending)
				}
				take(out)
				continue
			}
			id := key(uint16(op & 0x1f))
			if op&0x80 != 0 {
				id = v6key(uint16(op & 0x1f))
			}
			id.Tos = op >> 5 & 1
			m := pkt(uint64(i%5+1), 60, clk.mono, clk.mono)
			if op&0x40 != 0 {
				id.TransportProtocol = protoTCP
				m.Flags = tcpFIN
			}
			c.AddOne(id, &m)
			checkIndex(t, &c.flows)
			added[KeyOf(id)] += m.Packets
			if c.Len() > 8 {
				t.Fatalf("%d flows cached, max 8", c.Len())
			}
		}
		take(c.Flush(nil))
		if !reflect.DeepEqual(added, got) {
			t.Fatalf("records hold %v, want %v", got, added)
		}
		if c.flows.addrs.used > 8 {
			t.Fatalf("%d IPv6 address pairs allocated for at most 8 flows", c.flows.addrs.used)
		}
	})
}

// NextEnd is the earliest deadline of a cached flow, or, for a flow counted
// since the last read, the TCP end grace after it if a FIN or RST may have
// been counted since (tcpEnds), else the idle timeout after it, but at most
// MaxUnread after the last read.
func TestCacheNextEnd(t *testing.T) {
	const s = time.Second
	cfg := CacheConfig{ActiveTimeout: 60 * s, IdleTimeout: 15 * s, TCPEndGrace: 2 * s, MaxFlows: 100}
	type add struct {
		port       uint16
		tcpFIN     bool
		start, end time.Duration // after the clock's start
	}
	for _, tc := range []struct {
		name     string
		adds     []add
		expireAt time.Duration // 0: no Expire
		lastRead time.Duration
		noEnds   bool // no FIN or RST counted since lastRead
		want     time.Duration
	}{
		{name: "empty", lastRead: 10 * s, want: 12 * s},
		{name: "udp idle", adds: []add{{1, false, 0, 3 * s}}, lastRead: 0, want: 2 * s},
		{name: "udp idle after the grace", adds: []add{{1, false, 0, 3 * s}}, lastRead: 17 * s, want: 18 * s},
		{name: "udp active", adds: []add{{1, false, 0, 50 * s}}, lastRead: 60 * s, want: 60 * s},
		{name: "tcp closing", adds: []add{{1, true, 0, 5 * s}, {2, false, 0, 5 * s}}, lastRead: 6 * s, want: 7 * s},
		{name: "tcp closing first", adds: []add{{1, true, 0, 4 * s}, {2, false, 0, 5 * s}}, lastRead: 6 * s, want: 6 * s},
		{name: "earliest of several", adds: []add{{1, false, 0, 9 * s}, {2, false, 0, 4 * s}, {3, false, 0, 7 * s}}, lastRead: 30 * s, want: 19 * s},
		{name: "exact after expire", adds: []add{{1, false, 0, 1 * s}, {2, false, 0, 8 * s}}, expireAt: 17 * s, lastRead: 30 * s, want: 23 * s},
		{name: "empty, no FIN since", lastRead: 10 * s, noEnds: true, want: 10*s + MaxUnread},
		{name: "udp idle, no FIN since", adds: []add{{1, false, 0, 3 * s}}, lastRead: 0, noEnds: true, want: MaxUnread},
		{name: "udp idle first, no FIN since", adds: []add{{1, false, 0, 3 * s}}, lastRead: 10 * s, noEnds: true, want: 18 * s},
		{name: "tcp closing, no FIN since", adds: []add{{1, true, 0, 5 * s}}, lastRead: 6 * s, noEnds: true, want: 7 * s},
	} {
		t.Run(tc.name, func(t *testing.T) {
			clk := newFakeClock()
			t0 := clk.mono
			c := mustCache(t, cfg, clk)
			for _, a := range tc.adds {
				id := key(a.port)
				m := pkt(1, 60, t0+a.start, t0+a.end)
				if a.tcpFIN {
					id.TransportProtocol = protoTCP
					m.Flags = tcpFIN
				}
				c.AddOne(id, &m)
			}
			if tc.expireAt != 0 {
				clk.mono = t0 + tc.expireAt
				c.Expire(nil)
			}
			if got := c.NextEnd(t0+tc.lastRead, !tc.noEnds) - t0; got != tc.want {
				t.Errorf("NextEnd %v after the start, want %v", got, tc.want)
			}
		})
	}
}

// entryHash is the hash of entry e's key, computed again.
func (t *flowTable) entryHash(e *entry) uint64 {
	p := probe{k: e.k, fam: e.fam}
	if e.fam == famWide {
		a := t.addrs.at(e.poolIndex())
		p.k.addr = [8]byte{}
		p.src, p.dst = &a[0], &a[1]
	}
	return t.hash(&p)
}

// checkIndex checks that every cached flow's stored hash is its key's,
// and that a lookup from its home slot reaches it before an empty slot.
func checkIndex(t *testing.T, ft *flowTable) {
	t.Helper()
	n := 0
	for i := ft.head; i != none; i = ft.at(i).next {
		n++
		e := ft.at(i)
		h := ft.entryHash(e)
		if e.hash != uint32(h) {
			t.Fatalf("entry %d: stored hash %#x, key hashes to %#x", i, e.hash, uint32(h))
		}
		s := ft.slotOf(i)
		if v, want := ft.index[s], ft.slotValue(h, (s-h)&ft.mask, i); v != want {
			t.Fatalf("entry %d: index slot %d is %#x, want %#x (tag, distance, entry)", i, s, v, want)
		}
		for s := h & ft.mask; ft.index[s]&ft.idxMask != uint32(i)+1; s = (s + 1) & ft.mask {
			if ft.index[s] == 0 {
				t.Fatalf("entry %d: empty slot %d between its home %d and it", i, s, h&ft.mask)
			}
		}
	}
	if n != ft.n {
		t.Fatalf("%d flows listed, %d counted", n, ft.n)
	}
}

// The index's distance field, exact or saturated (then the entry's hash
// decides), keeps every flow reachable through pushes out of a full
// cache and moves to the front: checkIndex after every add, with the
// field at its default width and narrowed so that most slots saturate.
func TestFlowTableDistances(t *testing.T) {
	for _, distMax := range []uint32{0, 1, 3, 1<<distBits - 1} {
		c := mustCache(t, CacheConfig{ActiveTimeout: time.Hour, IdleTimeout: time.Hour, MaxFlows: 500}, newFakeClock())
		c.flows.distMax = distMax // before any flow: tag and distance agree
		r := rand.New(rand.NewPCG(uint64(distMax), 7))
		saturated := 0
		for i := range 3000 {
			id := key(uint16(r.IntN(1200)))
			id.SrcIp[13] = byte(r.IntN(2))
			m := pkt(1, 60, time.Hour, time.Hour)
			c.AddOne(id, &m)
			checkIndex(t, &c.flows)
			for _, v := range c.flows.index {
				if v != 0 && v>>c.flows.distShift&distMax == distMax {
					saturated++
				}
			}
			if c.Pending() > 100 {
				c.TakePending(nil)
			}
			if i%7 == 0 && c.Len() > 0 {
				c.flows.remove(c.flows.head) // not only the tail
			}
		}
		if saturated == 0 && distMax < 1<<distBits-1 { // the default may never saturate here
			t.Errorf("distance field %d: no slot saturated", distMax)
		}
	}
}
