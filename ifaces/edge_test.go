package ifaces

import (
	"strings"
	"testing"
)

// TestEdge: the default selection over link attributes, host and router
// mode, for the links of a container host, a bridged VM host and a router.
func TestEdge(t *testing.T) {
	up := func(name, kind string) Link { return Link{Name: name, Kind: kind, Up: true} }
	port := func(l Link, masterKind, masterName string) Link {
		l.MasterIndex, l.MasterKind, l.MasterName = 99, masterKind, masterName
		return l
	}
	for _, tt := range []struct {
		link         Link
		host, router bool
		why          string // part of the host mode reason
	}{
		{Link{Name: "lo", Kind: "device", Up: true, Loopback: true}, false, false, "loopback"},
		{Link{Name: "eth1", Kind: "device"}, false, false, "down"},
		{up("eth0", "device"), true, true, "physical"},
		{up("eth0", ""), true, true, "physical"},
		{up("lan1", "dsa"), true, true, "physical"},
		{up("ib0", "ipoib"), true, true, "physical"},
		// Docker / CNI bridge: ports and bridge skipped in host mode.
		{port(up("veth1a2b", "veth"), "bridge", "docker0"), false, false, "veth port of docker0"},
		{up("docker0", "bridge"), false, true, "bridge"},
		// Routed veth (hostflow's own uplink in a namespace, routed CNIs).
		{up("uplink0", "veth"), true, true, "routed link"},
		{up("nk0", "netkit"), true, true, "routed link"},
		// veth in a VRF: still a routed edge.
		{port(up("v0", "veth"), "vrf", "vrf-blue"), true, true, "routed link"},
		// Bridged host: the physical port is the wire; in router mode
		// the bridge is the routed interface.
		{port(up("eno1", "device"), "bridge", "vmbr0"), true, false, "physical port of vmbr0"},
		{port(up("eno2", "device"), "openvswitch", "ovs-system"), true, false, "physical port"},
		{port(up("br-ex", "openvswitch"), "openvswitch", "ovs-system"), false, true, "openvswitch"},
		{port(up("veth9", "veth"), "openvswitch", "ovs-system"), false, false, "veth port of ovs-system"},
		{port(up("tap0", "tuntap"), "bridge", "vmbr0"), false, false, "tun/tap"},
		// Bonds count, not their slaves.
		{port(up("eth2", "device"), "bond", "bond0"), false, false, "bond slave: counted on its bond0"},
		{port(up("eth3", "device"), "team", "team0"), false, false, "team slave"},
		{up("bond0", "bond"), true, true, "bond"},
		{port(up("bond1", "bond"), "bridge", "br0"), true, false, "bond"},
		{up("team0", "team"), true, true, "team"},
		// Physical in a VRF: the VRF device is skipped.
		{port(up("eth4", "device"), "vrf", "vrf-blue"), true, true, "physical"},
		{up("vrf-blue", "vrf"), false, false, "not an edge"},
		// Stacked on a lower link, which counts their packets.
		{up("eth0.100", "vlan"), false, false, "lower link"},
		{up("mv0", "macvlan"), false, false, "lower link"},
		{up("ipv0", "ipvlan"), false, false, "lower link"},
		{up("mvt0", "macvtap"), false, false, "lower link"},
		{Link{Name: "mv1", Kind: "macvlan", Up: true, LowerElsewhere: true}, true, true, "another namespace"},
		{Link{Name: "eth0", Kind: "ipvlan", Up: true, LowerElsewhere: true}, true, true, "another namespace"},
		// Tunnels: counted encapsulated on the underlay.
		{up("wg0", "wireguard"), false, true, "tunnel"},
		{up("vxlan.calico", "vxlan"), false, true, "tunnel"},
		{up("flannel.1", "vxlan"), false, true, "tunnel"},
		{up("tunl0", "ipip"), false, true, "tunnel"},
		{up("gre1", "gre"), false, true, "tunnel"},
		{up("tun0", "tuntap"), false, true, "tun/tap"},
		{up("tap1", "tun"), false, true, "tun/tap"},
		{up("geneve0", "geneve"), false, true, "tunnel"},
		// Mirrors and sinks.
		{up("ifb0", "ifb"), false, false, "not an edge"},
		{up("dummy0", "dummy"), false, false, "not an edge"},
		{up("nlmon0", "nlmon"), false, false, "not an edge"},
	} {
		t.Run(tt.link.Name, func(t *testing.T) {
			got, why := Edge(tt.link, false)
			if got != tt.host || !strings.Contains(why, tt.why) {
				t.Errorf("host: %+v: %v %q, want %v %q", tt.link, got, why, tt.host, tt.why)
			}
			if got, why := Edge(tt.link, true); got != tt.router || why == "" {
				t.Errorf("router: %+v: %v %q, want %v", tt.link, got, why, tt.router)
			}
		})
	}
}

// TestRulesKeywords: explicit rules win over the default selection,
// default and all combine with names, exclusions win over everything.
func TestRulesKeywords(t *testing.T) {
	links := []Link{
		{Name: "lo", Kind: "device", Up: true, Loopback: true},
		{Name: "eth0", Kind: "device", Up: true},
		{Name: "eth9", Kind: "device"},
		{Name: "br0", Kind: "bridge", Up: true},
		{Name: "veth1", Kind: "veth", Up: true, MasterIndex: 4, MasterKind: "bridge", MasterName: "br0"},
		{Name: "uplink", Kind: "veth", Up: true},
		{Name: "wg0", Kind: "wireguard", Up: true},
	}
	for _, tt := range []struct {
		include, exclude []string
		router           bool
		want             string
	}{
		{want: "eth0 uplink"},
		{router: true, want: "eth0 br0 uplink wg0"},
		{include: []string{"default"}, want: "eth0 uplink"},
		{include: []string{"default", "wg0"}, want: "eth0 uplink wg0"},
		{include: []string{"all"}, want: "eth0 br0 veth1 uplink wg0"},
		{include: []string{"/.*/"}, want: "lo eth0 eth9 br0 veth1 uplink wg0"},
		{include: []string{"br0", "eth9"}, want: "eth9 br0"},
		{include: []string{"all"}, exclude: []string{"/^veth/"}, want: "eth0 br0 uplink wg0"},
		{exclude: []string{"uplink"}, want: "eth0"},
	} {
		r, err := ParseRules(tt.include, tt.exclude)
		if err != nil {
			t.Fatal(err)
		}
		r = r.ForMode(tt.router)
		var got []string
		for _, l := range links {
			if r.Match(l) {
				got = append(got, l.Name)
			}
		}
		if strings.Join(got, " ") != tt.want {
			t.Errorf("%q except %q (router %v): %q, want %q", tt.include, tt.exclude, tt.router, got, tt.want)
		}
	}

	r, err := ParseRules([]string{"default:ingress", "wg0:both"}, []string{"uplink"})
	if err != nil {
		t.Fatal(err)
	}
	if d := r.Direction(links[1]); d != DirIngress {
		t.Errorf("eth0 direction %v", d)
	}
	if d := r.Direction(links[6]); d != DirBoth {
		t.Errorf("wg0 direction %v", d)
	}
	if ok, why := r.Explain(links[5]); ok || why != "excluded by uplink" {
		t.Errorf("uplink: %v %q", ok, why)
	}
	if ok, why := r.Explain(links[3]); ok || !strings.Contains(why, "bridge") {
		t.Errorf("br0: %v %q", ok, why)
	}
	if n := r.Names(); strings.Join(n, " ") != "wg0" {
		t.Errorf("Names() = %q: keywords are not links", n)
	}
	if s := r.String(); s != "default:ingress,wg0:both except uplink" {
		t.Errorf("String() = %q", s)
	}
	if _, err := ParseRules(nil, []string{"all"}); err == nil {
		t.Error("a keyword among exclusions: no error")
	}
}
