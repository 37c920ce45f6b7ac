package router

import (
	"errors"
	"fmt"
	"net/netip"
	"sync"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// The route table copy: netlink subscriptions, the initial load and
// the notifications that keep it current.

// subscription is the enricher's notification sockets: routes, and the
// link and address changes after which the kernel flushes IPv4 routes
// without a notice. They end together.
type subscription struct {
	done   chan struct{}
	once   sync.Once
	routes chan netlink.RouteUpdate
	links  chan netlink.LinkUpdate
	addrs  chan netlink.AddrUpdate
}

func (s *subscription) close() { s.once.Do(func() { close(s.done) }) }

// subscribe opens the notification sockets in the enricher's namespace.
func (e *Enricher) subscribe() (*subscription, error) {
	s := &subscription{
		done:   make(chan struct{}),
		routes: make(chan netlink.RouteUpdate, 4096),
		links:  make(chan netlink.LinkUpdate, 256),
		addrs:  make(chan netlink.AddrUpdate, 256),
	}
	onError := func(what string) func(error) {
		return func(err error) {
			select {
			case <-s.done: // closed by close
			default:
				e.log.Warn("router: "+what+" subscription failed; reloading the table", "err", err)
			}
		}
	}
	err := netlink.RouteSubscribeWithOptions(s.routes, s.done, netlink.RouteSubscribeOptions{
		Namespace:         &e.ns,
		ReceiveBufferSize: 4 << 20,
		ErrorCallback:     onError("route"),
	})
	if err != nil {
		s.close()
		return nil, fmt.Errorf("router: route subscribe: %w", err)
	}
	err = netlink.LinkSubscribeWithOptions(s.links, s.done, netlink.LinkSubscribeOptions{
		Namespace:     &e.ns,
		ErrorCallback: onError("link"),
	})
	if err != nil {
		s.close()
		return nil, fmt.Errorf("router: link subscribe: %w", err)
	}
	err = netlink.AddrSubscribeWithOptions(s.addrs, s.done, netlink.AddrSubscribeOptions{
		Namespace:     &e.ns,
		ErrorCallback: onError("address"),
	})
	if err != nil {
		s.close()
		return nil, fmt.Errorf("router: address subscribe: %w", err)
	}
	return s, nil
}

// load replaces the table with a fresh dump of the main table. Called
// after subscribing, so no change between the dump and the notifications
// is missed: a notification of a route already in the dump is idempotent.
func (e *Enricher) load() error {
	var all []netlink.Route
	for _, fam := range []int{netlink.FAMILY_V4, netlink.FAMILY_V6} {
		rs, err := e.h.RouteListFiltered(fam, &netlink.Route{Table: unix.RT_TABLE_MAIN}, netlink.RT_FILTER_TABLE)
		for try := 0; errors.Is(err, netlink.ErrDumpInterrupted) && try < 3; try++ {
			// The table changed during the dump: dump again.
			rs, err = e.h.RouteListFiltered(fam, &netlink.Route{Table: unix.RT_TABLE_MAIN}, netlink.RT_FILTER_TABLE)
		}
		if err != nil {
			return fmt.Errorf("router: list routes: %w", err)
		}
		for i := range rs {
			rs[i].Family = fam
		}
		all = append(all, rs...)
	}
	fresh := NewTable()
	for i := range all {
		applyRoute(fresh, unix.RTM_NEWROUTE, 0, &all[i])
	}
	e.table.swap(fresh)
	return nil
}

// watch applies route notifications until Close. A link that goes down or
// away has its IPv4 routes removed at once, and a link or address change
// after which the kernel may have flushed routes silently loads the table
// again a little later. When a subscription dies (e.g. its socket
// overflowed), it subscribes again and reloads.
func (e *Enricher) watch(sub *subscription) {
	defer e.wg.Done()
	resync := time.NewTimer(time.Hour)
	resync.Stop()
	pending := false
	later := func() {
		if !pending {
			pending = true
			resync.Reset(e.resyncDelay)
		}
	}
	for {
		var ok bool
		select {
		case <-e.done:
			sub.close()
			return
		case u, open := <-sub.routes:
			if ok = open; ok {
				e.apply(u.Type, u.NlFlags, &u.Route)
			}
		case u, open := <-sub.links:
			if ok = open; ok && e.linkGone(u) {
				later()
			}
		case u, open := <-sub.addrs:
			if ok = open; ok && !u.NewAddr && u.LinkAddress.IP.To4() != nil {
				later() // routes with this source or through a link left without IPv4
			}
		case <-resync.C:
			pending, ok = false, true
			e.mu.Lock()
			err := e.load()
			e.mu.Unlock()
			if err != nil {
				e.log.Warn("router: route table resync failed", "err", err)
				later()
			} else {
				e.resyncs.Add(1)
			}
		}
		if !ok {
			if sub = e.resubscribe(sub); sub == nil {
				return
			}
		}
	}
}

// linkGone removes the IPv4 routes through a link that went down or away,
// and reports whether there were any.
func (e *Enricher) linkGone(u netlink.LinkUpdate) bool {
	if u.Header.Type != unix.RTM_DELLINK && u.IfInfomsg.Flags&unix.IFF_UP != 0 {
		return false
	}
	return e.table.RemoveLink(int(u.IfInfomsg.Index)) > 0
}

// resubscribe replaces a dead subscription and loads the table again,
// retrying every second; nil after Close.
func (e *Enricher) resubscribe(old *subscription) *subscription {
	old.close()
	for {
		select {
		case <-e.done:
			return nil
		case <-time.After(time.Second):
		}
		sub, err := e.subscribe()
		if err == nil {
			e.mu.Lock()
			err = e.load()
			e.mu.Unlock()
			if err == nil {
				e.resyncs.Add(1)
				return sub
			}
			sub.close()
		}
		e.log.Warn("router: route table resync failed", "err", err)
	}
}

// apply applies one route add or delete of the main table to the LPM
// table.
func (e *Enricher) apply(typ, flags uint16, r *netlink.Route) {
	applyRoute(e.table, typ, flags, r)
}

func applyRoute(t *Table, typ, flags uint16, r *netlink.Route) {
	if r.Table != unix.RT_TABLE_MAIN {
		return
	}
	p, ok := routePrefix(r)
	if !ok {
		return
	}
	k := RouteKey{TOS: uint8(r.Tos), Priority: r.Priority, Gateway: ipAddr(r.Gw), LinkIdx: r.LinkIndex}
	switch {
	case typ == unix.RTM_DELROUTE:
		t.Remove(p, k)
	case flags&unix.NLM_F_REPLACE != 0:
		t.Replace(p, k)
	default:
		t.Add(p, k)
	}
}

// routePrefix is the destination prefix of r: a nil Dst is the default
// route of r's family.
func routePrefix(r *netlink.Route) (netip.Prefix, bool) {
	if r.Dst == nil {
		switch r.Family {
		case netlink.FAMILY_V4:
			return netip.PrefixFrom(netip.IPv4Unspecified(), 0), true
		case netlink.FAMILY_V6:
			return netip.PrefixFrom(netip.IPv6Unspecified(), 0), true
		}
		return netip.Prefix{}, false
	}
	a := ipAddr(r.Dst.IP)
	ones, bits := r.Dst.Mask.Size()
	if !a.IsValid() || bits == 0 {
		return netip.Prefix{}, false
	}
	if a.Is4() && bits == 128 {
		ones -= 96
	}
	return netip.PrefixFrom(a, ones), true
}
