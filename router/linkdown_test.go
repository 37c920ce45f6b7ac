package router

import (
	"net/netip"
	"testing"
	"time"
)

// TestEnricherLinkGone: the kernel flushes the IPv4 routes through a link
// that goes down, is deleted or loses its last IPv4 address without an
// RTM_DELROUTE (fib_sync_down_dev, fib_disable_ip); IPv6 routes are
// deleted with one. Either way the prefixes leave the table.
func TestEnricherLinkGone(t *testing.T) {
	for _, tc := range []struct {
		name string
		cmd  []string
	}{
		{"down", []string{"link", "set", "hfe0", "down"}},
		{"deleted", []string{"link", "del", "hfe0"}},
		{"last address removed", []string{"addr", "del", "198.19.200.1/24", "dev", "hfe0"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l := newLab(t, Options{Conntrack: ConntrackOff})
			l.ns.IP(t, "link", "add", "hfe0", "type", "veth", "peer", "name", "hfe1")
			l.ns.IP(t, "link", "set", "hfe1", "up")
			l.ns.IP(t, "addr", "add", "198.19.200.1/24", "dev", "hfe0")
			l.ns.IP(t, "addr", "add", "fd00:2::1/64", "dev", "hfe0", "nodad")
			l.ns.IP(t, "link", "set", "hfe0", "up")
			l.ns.IP(t, "route", "add", "198.19.100.0/24", "via", "198.19.200.2", "dev", "hfe0")
			l.ns.IP(t, "route", "add", "10.20.0.0/16", "dev", "hfe0")
			l.ns.IP(t, "route", "add", "fd00:3::/64", "via", "fd00:2::2", "dev", "hfe0")

			want := map[string]int{"198.19.100.5": 24, "198.19.200.5": 24, "10.20.1.1": 16, "fd00:3::5": 64, "fd00:1::5": 64}
			waitPrefixes(t, l, want)
			l.ns.IP(t, tc.cmd...)
			// What stays: the /15 and fd00:1::/64 of hfd0.
			want = map[string]int{"198.19.100.5": 15, "198.19.200.5": 15, "10.20.1.1": -1, "fd00:3::5": -1, "fd00:1::5": 64}
			if tc.name == "last address removed" {
				want["fd00:3::5"] = 64 // hfe0 keeps its IPv6 address and routes
			}
			waitPrefixes(t, l, want)
		})
	}
}

// waitPrefixes waits until each address has the prefix length given (-1:
// no prefix covers it) in the enricher's table, bounded in time.
func waitPrefixes(t *testing.T, l *lab, want map[string]int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		got := map[string]int{}
		bad := false
		for a, w := range want {
			n, ok := l.e.Table().Lookup(netip.MustParseAddr(a))
			if !ok {
				n = -1
			}
			got[a] = n
			bad = bad || n != w
		}
		if !bad {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("prefix lengths %v, want %v", got, want)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
