package router

import (
	"net"
	"net/netip"
	"testing"

	"github.com/vishvananda/netlink"
)

func tup(proto uint8, src string, sport uint16, dst string, dport uint16) Tuple {
	return Tuple{Proto: proto, Src: netip.MustParseAddr(src), Dst: netip.MustParseAddr(dst), SrcPort: sport, DstPort: dport}
}

func TestPostNAT(t *testing.T) {
	tests := []struct {
		name          string
		orig, reply   Tuple
		wantFwd, wRev Tuple
	}{
		{"no NAT",
			tup(6, "198.18.10.2", 40000, "198.19.20.2", 80), tup(6, "198.19.20.2", 80, "198.18.10.2", 40000),
			tup(6, "198.18.10.2", 40000, "198.19.20.2", 80), tup(6, "198.19.20.2", 80, "198.18.10.2", 40000)},
		{"masquerade with port change",
			tup(6, "198.18.10.2", 40000, "198.19.20.2", 80), tup(6, "198.19.20.2", 80, "198.19.20.1", 61000),
			tup(6, "198.19.20.1", 61000, "198.19.20.2", 80), tup(6, "198.19.20.2", 80, "198.18.10.2", 40000)},
		{"DNAT",
			tup(17, "198.18.10.2", 5000, "198.18.10.1", 53), tup(17, "198.19.20.2", 5353, "198.18.10.2", 5000),
			tup(17, "198.18.10.2", 5000, "198.19.20.2", 5353), tup(17, "198.18.10.1", 53, "198.18.10.2", 5000)},
		{"SNAT and DNAT",
			tup(17, "fd00:10::2", 5000, "fd00:10::1", 53), tup(17, "fd00:20::2", 5353, "fd00:20::1", 7000),
			tup(17, "fd00:20::1", 7000, "fd00:20::2", 5353), tup(17, "fd00:10::1", 53, "fd00:10::2", 5000)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fwd, rev := PostNAT(tt.orig, tt.reply)
			if fwd != tt.wantFwd || rev != tt.wRev {
				t.Errorf("PostNAT = %+v, %+v; want %+v, %+v", fwd, rev, tt.wantFwd, tt.wRev)
			}
			x := NATIndex{}
			x.Add(tt.orig, tt.reply)
			if got, ok := x.Lookup(tt.orig); !ok || got != tt.wantFwd {
				t.Errorf("Lookup(orig) = %+v, %v", got, ok)
			}
			if got, ok := x.Lookup(tt.reply); !ok || got != tt.wRev {
				t.Errorf("Lookup(reply) = %+v, %v", got, ok)
			}
		})
	}
}

func TestNATIndexNormalizes(t *testing.T) {
	x := NATIndex{}
	// conntrack's ICMP tuples have no ports here (the library does not
	// decode the id); flows have none either.
	x.Add(tup(1, "198.18.10.2", 0, "198.19.20.2", 0), tup(1, "198.19.20.2", 0, "198.19.20.1", 0))
	got, ok := x.Lookup(tup(1, "::ffff:198.18.10.2", 7, "198.19.20.2", 9))
	if want := tup(1, "198.19.20.1", 0, "198.19.20.2", 0); !ok || got != want {
		t.Errorf("ICMP lookup = %+v, %v; want %+v", got, ok, want)
	}
	if _, ok := x.Lookup(tup(6, "198.18.10.2", 0, "198.19.20.2", 0)); ok {
		t.Error("other protocol matched")
	}
}

func TestIndexFlows(t *testing.T) {
	ct := []*netlink.ConntrackFlow{{
		FamilyType: 2,
		Forward:    netlink.IPTuple{Protocol: 6, SrcIP: net.ParseIP("198.18.10.2"), DstIP: net.ParseIP("198.19.20.2"), SrcPort: 40000, DstPort: 80},
		Reverse:    netlink.IPTuple{Protocol: 6, SrcIP: net.ParseIP("198.19.20.2"), DstIP: net.ParseIP("198.19.20.1"), SrcPort: 80, DstPort: 1024},
	}}
	x := NATIndex{}
	indexFlows(x, ct)
	got, ok := x.Lookup(tup(6, "198.18.10.2", 40000, "198.19.20.2", 80))
	if want := tup(6, "198.19.20.1", 1024, "198.19.20.2", 80); !ok || got != want {
		t.Errorf("got %+v, %v; want %+v", got, ok, want)
	}
	if len(x) != 2 {
		t.Errorf("%d index entries, want 2", len(x))
	}
}

func TestStatusOfError(t *testing.T) {
	for _, e := range []error{syscallErr("ENETUNREACH"), syscallErr("EINVAL"), syscallErr("EHOSTUNREACH"), syscallErr("EACCES")} {
		if st, ok := statusOfError(e); !ok || st != StatusDropped {
			t.Errorf("%v: %d, %v", e, st, ok)
		}
	}
	if _, ok := statusOfError(syscallErr("ENODEV")); ok {
		t.Error("ENODEV taken for a drop")
	}
}
