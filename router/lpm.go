package router

import (
	"net/netip"
	"slices"
	"sync"
)

// RouteKey tells apart routes to the same prefix in one table: the kernel
// keys a route by prefix, TOS and priority (metric), and an IPv6 multipath
// route is added and removed one next hop at a time, so the next hop is
// part of the key too. A prefix stays in the table while any route to it
// does.
type RouteKey struct {
	TOS      uint8
	Priority int
	Gateway  netip.Addr
	LinkIdx  int
}

// Table is a longest-prefix-match table of the prefixes of one routing
// table, both families, answering "how long is the longest prefix that
// covers this address". It is safe for concurrent use: the route watcher
// writes, Enrich reads.
//
// Layout: per family, one hash map per prefix length (masked prefix ->
// routes), and the list of lengths in use, longest first. A lookup probes
// the lengths in use, longest first, and stops at the first hit: at most
// as many map probes as there are distinct prefix lengths (a host or
// small router has a handful; a full Internet table about 25 for IPv4),
// no allocation, and updates are O(1) map operations plus a sort of the
// short length list when a length appears or disappears. A binary trie
// would bound a lookup by the address width (32/128 steps) instead, at a
// node per bit of every prefix and more code to get right; sorted prefixes
// make insertion O(n). The maps are the least code for the tables hostflow
// sees, and obviously correct.
type Table struct {
	mu  sync.RWMutex
	fam [2]famTable // IPv4, IPv6
}

type famTable struct {
	byLen [129]map[netip.Prefix]map[RouteKey]struct{}
	lens  []int // lengths with at least one prefix, longest first
}

// NewTable returns an empty table.
func NewTable() *Table { return &Table{} }

func famIndex(a netip.Addr) int {
	if a.Is4() {
		return 0
	}
	return 1
}

// normalize returns p masked, with an IPv4-mapped address unmapped, and
// false if p is not valid.
func normalize(p netip.Prefix) (netip.Prefix, bool) {
	if !p.IsValid() {
		return p, false
	}
	a, bits := p.Addr(), p.Bits()
	if a.Is4In6() {
		if bits < 96 {
			return p, false
		}
		a, bits = a.Unmap(), bits-96
	}
	return netip.PrefixFrom(a.WithZone(""), bits).Masked(), true
}

// Add records route k to prefix p. Adding the same route twice is the same
// as adding it once.
func (t *Table) Add(p netip.Prefix, k RouteKey) {
	p, ok := normalize(p)
	if !ok {
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	f := &t.fam[famIndex(p.Addr())]
	l := p.Bits()
	m := f.byLen[l]
	if m == nil {
		m = map[netip.Prefix]map[RouteKey]struct{}{}
		f.byLen[l] = m
	}
	routes := m[p]
	if routes == nil {
		routes = map[RouteKey]struct{}{}
		m[p] = routes
		if len(m) == 1 {
			f.lens = append(f.lens, l)
			slices.SortFunc(f.lens, func(a, b int) int { return b - a })
		}
	}
	routes[k] = struct{}{}
}

// Remove forgets route k to prefix p; the prefix goes when its last route
// does. Removing a route that is not there does nothing.
func (t *Table) Remove(p netip.Prefix, k RouteKey) {
	t.remove(p, func(r RouteKey) bool { return r == k })
}

// Replace drops the routes to p that have k's TOS and priority, whatever
// their next hop, and adds k: what the kernel does for NLM_F_REPLACE.
func (t *Table) Replace(p netip.Prefix, k RouteKey) {
	t.remove(p, func(r RouteKey) bool { return r.TOS == k.TOS && r.Priority == k.Priority })
	t.Add(p, k)
}

func (t *Table) remove(p netip.Prefix, match func(RouteKey) bool) {
	p, ok := normalize(p)
	if !ok {
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	f := &t.fam[famIndex(p.Addr())]
	l := p.Bits()
	m := f.byLen[l]
	routes := m[p]
	for r := range routes {
		if match(r) {
			delete(routes, r)
		}
	}
	if routes == nil || len(routes) > 0 {
		return
	}
	delete(m, p)
	if len(m) == 0 {
		f.lens = slices.DeleteFunc(f.lens, func(x int) bool { return x == l })
	}
}

// RemoveLink forgets every IPv4 route whose next hop is on link ifindex
// (an IPv4 multipath route has no single link and stays), and returns how
// many it removed: what the kernel flushes, without a notification, when
// the link goes down or away.
func (t *Table) RemoveLink(ifindex int) int {
	if ifindex == 0 {
		return 0
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	f := &t.fam[0]
	n := 0
	for _, l := range f.lens {
		m := f.byLen[l]
		for p, routes := range m {
			for r := range routes {
				if r.LinkIdx == ifindex {
					delete(routes, r)
					n++
				}
			}
			if len(routes) == 0 {
				delete(m, p)
			}
		}
	}
	f.lens = slices.DeleteFunc(f.lens, func(l int) bool { return len(f.byLen[l]) == 0 })
	return n
}

// Lookup returns the length of the longest prefix covering a, and false if
// none does (no route, not even a default one). An IPv4-mapped IPv6
// address is looked up as IPv4.
func (t *Table) Lookup(a netip.Addr) (int, bool) {
	if !a.IsValid() {
		return 0, false
	}
	a = a.Unmap().WithZone("")
	t.mu.RLock()
	defer t.mu.RUnlock()
	f := &t.fam[famIndex(a)]
	for _, l := range f.lens {
		p, _ := a.Prefix(l)
		if _, ok := f.byLen[l][p]; ok {
			return l, true
		}
	}
	return 0, false
}

// Len returns the number of prefixes in the table.
func (t *Table) Len() int {
	t.mu.RLock()
	defer t.mu.RUnlock()
	n := 0
	for i := range t.fam {
		for _, m := range t.fam[i].byLen {
			n += len(m)
		}
	}
	return n
}

// swap replaces t's contents with fresh's (a full reload), atomically for
// readers. fresh must not be used afterwards.
func (t *Table) swap(fresh *Table) {
	fresh.mu.Lock()
	f := fresh.fam
	fresh.mu.Unlock()
	t.mu.Lock()
	t.fam = f
	t.mu.Unlock()
}
