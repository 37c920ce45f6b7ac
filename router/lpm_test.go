package router

import (
	"math/rand/v2"
	"net/netip"
	"testing"
)

func pfx(s string) netip.Prefix { return netip.MustParsePrefix(s) }

func TestTableLookup(t *testing.T) {
	tb := NewTable()
	for _, p := range []string{
		"0.0.0.0/0", "198.18.0.0/15", "198.18.10.0/24", "198.19.20.0/25", "198.19.20.128/32",
		"fd00::/8", "fd00:10::/64", "fd00:20::/80", "fd00:20::1/128",
	} {
		tb.Add(pfx(p), RouteKey{})
	}
	tests := []struct {
		addr string
		want int
		ok   bool
	}{
		{"198.18.10.7", 24, true},
		{"198.18.11.7", 15, true},
		{"198.19.20.5", 25, true},
		{"198.19.20.127", 25, true},
		{"198.19.20.128", 32, true},
		{"198.19.20.129", 15, true},
		{"8.8.8.8", 0, true},
		{"::ffff:198.18.10.1", 24, true}, // IPv4-mapped looks up as IPv4
		{"fd00:10::5", 64, true},
		{"fd00:10:0:1::5", 8, true},
		{"fd00:20::1", 128, true},
		{"fd00:20::2", 80, true},
		{"fd00:20:0:0:1::2", 8, true},
		{"2001:db8::1", 0, false}, // no IPv6 default route
		{"fe80::1%eth0", 0, false},
	}
	for _, tt := range tests {
		got, ok := tb.Lookup(netip.MustParseAddr(tt.addr))
		if got != tt.want || ok != tt.ok {
			t.Errorf("Lookup(%s) = %d, %v; want %d, %v", tt.addr, got, ok, tt.want, tt.ok)
		}
	}
	if _, ok := tb.Lookup(netip.Addr{}); ok {
		t.Error("Lookup(invalid) found a prefix")
	}
	if n := tb.Len(); n != 9 {
		t.Errorf("Len %d, want 9", n)
	}
}

func TestTableUpdates(t *testing.T) {
	tb := NewTable()
	a := netip.MustParseAddr("198.19.20.5")
	look := func() int {
		l, ok := tb.Lookup(a)
		if !ok {
			return -1
		}
		return l
	}
	r1 := RouteKey{Priority: 0, Gateway: netip.MustParseAddr("198.18.10.1"), LinkIdx: 2}
	r2 := RouteKey{Priority: 100, Gateway: netip.MustParseAddr("198.18.10.2"), LinkIdx: 2}
	steps := []struct {
		name string
		do   func()
		want int
	}{
		{"empty", func() {}, -1},
		{"default", func() { tb.Add(pfx("0.0.0.0/0"), r1) }, 0},
		{"/25 unmasked input", func() { tb.Add(pfx("198.19.20.77/25"), r1) }, 25},
		{"same route again", func() { tb.Add(pfx("198.19.20.0/25"), r1) }, 25},
		{"second route, other metric", func() { tb.Add(pfx("198.19.20.0/25"), r2) }, 25},
		{"remove first: second keeps the prefix", func() { tb.Remove(pfx("198.19.20.0/25"), r1) }, 25},
		{"remove absent route", func() { tb.Remove(pfx("198.19.20.0/25"), r1) }, 25},
		{"remove absent prefix", func() { tb.Remove(pfx("198.19.0.0/16"), r1) }, 25},
		{"remove last", func() { tb.Remove(pfx("198.19.20.0/25"), r2) }, 0},
		{"/16", func() { tb.Add(pfx("198.19.0.0/16"), r1) }, 16},
		{"replace next hop", func() {
			tb.Replace(pfx("198.19.0.0/16"), RouteKey{Gateway: netip.MustParseAddr("198.18.10.9"), LinkIdx: 3})
		}, 16},
		{"delete replaced: prefix gone", func() {
			tb.Remove(pfx("198.19.0.0/16"), RouteKey{Gateway: netip.MustParseAddr("198.18.10.9"), LinkIdx: 3})
		}, 0},
		{"remove default", func() { tb.Remove(pfx("0.0.0.0/0"), r1) }, -1},
		{"invalid prefix ignored", func() { tb.Add(netip.Prefix{}, r1) }, -1},
	}
	for _, s := range steps {
		s.do()
		if got := look(); got != s.want {
			t.Fatalf("%s: Lookup = %d, want %d", s.name, got, s.want)
		}
	}
	if n := tb.Len(); n != 0 {
		t.Errorf("Len %d after removing everything", n)
	}
	for i, f := range tb.fam {
		if len(f.lens) != 0 {
			t.Errorf("family %d: lengths %v left", i, f.lens)
		}
	}
}

// TestTableRandom compares the table with a linear scan over random
// prefixes, adds and removes.
func TestTableRandom(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	tb := NewTable()
	live := map[netip.Prefix]bool{}
	randPrefix := func() netip.Prefix {
		if r.IntN(2) == 0 {
			b := [4]byte{198, byte(18 + r.IntN(2)), byte(r.IntN(4)), byte(r.IntN(256))}
			return netip.PrefixFrom(netip.AddrFrom4(b), 8+r.IntN(25)).Masked()
		}
		var b [16]byte
		b[0], b[1], b[2] = 0xfd, 0, byte(r.IntN(4))
		b[15] = byte(r.IntN(256))
		return netip.PrefixFrom(netip.AddrFrom16(b), 8+r.IntN(121)).Masked()
	}
	for i := range 5000 {
		p := randPrefix()
		if r.IntN(3) == 0 {
			tb.Remove(p, RouteKey{})
			delete(live, p)
		} else {
			tb.Add(p, RouteKey{})
			live[p] = true
		}
		a := randPrefix().Addr()
		want, wantOK := -1, false
		for q := range live {
			if q.Contains(a) && q.Bits() > want {
				want, wantOK = q.Bits(), true
			}
		}
		got, ok := tb.Lookup(a)
		if ok != wantOK || (ok && got != want) {
			t.Fatalf("step %d: Lookup(%s) = %d, %v; want %d, %v", i, a, got, ok, want, wantOK)
		}
	}
}

func BenchmarkTableLookup(b *testing.B) {
	tb := NewTable()
	// A table with 25 distinct IPv4 lengths, like an Internet table's.
	for l := 8; l <= 32; l++ {
		for i := range 1000 {
			tb.Add(netip.PrefixFrom(netip.AddrFrom4([4]byte{byte(i), byte(i >> 8), 1, 0}), l).Masked(), RouteKey{})
		}
	}
	a := netip.MustParseAddr("203.0.113.9") // misses all: every length probed
	b.ResetTimer()
	for range b.N {
		tb.Lookup(a)
	}
	b.ReportMetric(float64(tb.Len()), "prefixes")
}

// TestTableRemoveLink: the IPv4 routes through one link go, a prefix with
// a route through another link stays, and IPv6 and multipath routes (no
// single link) are not touched.
func TestTableRemoveLink(t *testing.T) {
	tb := NewTable()
	via := func(link int) RouteKey { return RouteKey{LinkIdx: link} }
	tb.Add(pfx("198.18.0.0/15"), via(2))
	tb.Add(pfx("198.19.200.0/24"), via(3))
	tb.Add(pfx("198.19.100.0/24"), RouteKey{LinkIdx: 3, Gateway: netip.MustParseAddr("198.19.200.2")})
	tb.Add(pfx("198.19.100.0/24"), RouteKey{LinkIdx: 2, Priority: 10})
	tb.Add(pfx("10.20.0.0/16"), via(3))
	tb.Add(pfx("10.30.0.0/16"), via(0)) // multipath
	tb.Add(pfx("fd00:3::/64"), via(3))
	if n := tb.RemoveLink(3); n != 3 {
		t.Errorf("RemoveLink(3) removed %d routes, want 3", n)
	}
	for _, tt := range []struct {
		addr string
		want int // -1: none
	}{
		{"198.19.200.5", 15},
		{"198.19.100.5", 24}, // the metric 10 route through link 2
		{"10.20.1.1", -1},
		{"10.30.1.1", 16},
		{"fd00:3::1", 64},
	} {
		got, ok := tb.Lookup(netip.MustParseAddr(tt.addr))
		if !ok {
			got = -1
		}
		if got != tt.want {
			t.Errorf("Lookup(%s) = %d, want %d", tt.addr, got, tt.want)
		}
	}
	if n := tb.Len(); n != 4 {
		t.Errorf("Len %d, want 4", n)
	}
	if n := tb.RemoveLink(3); n != 0 {
		t.Errorf("RemoveLink(3) again removed %d", n)
	}
}
