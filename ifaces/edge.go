package ifaces

import "fmt"

// Keywords that an interfaces rule may name instead of a link. Linux
// refuses both as interface names (they would clash with
// /proc/sys/net/ipv4/conf/all and .../default), so they cannot shadow a
// link.
const (
	// KeywordDefault selects the links the default selection selects:
	// this network namespace's edge (see Edge).
	KeywordDefault = "default"
	// KeywordAll selects every link that is up, except loopback: every
	// packet counted at each interface it crosses.
	KeywordAll = "all"
)

// Edge decides whether the default selection captures on a link, and says
// why. The default selection captures each packet once per host: on the
// links where traffic enters or leaves this network namespace's edge, not
// again on the virtual links that carry it inside. In host mode:
//
//   - physical links (no link kind, or dsa or ipoib), bonds and teams are captured,
//     also when they are ports of a bridge or Open vSwitch (they are the
//     wire) or of a VRF (the VRF device is skipped); slaves of a bond or
//     team are not (the bond counts their packets);
//   - veth and netkit links that are not ports of a bridge are captured (a
//     routed point-to-point link out of this namespace); those that are
//     ports are not (a container's traffic is counted where it leaves or
//     enters the host);
//   - bridges and Open vSwitch devices are not (their traffic with the
//     outside crosses a wire port or an uplink);
//   - vlan, macvlan, macvtap, ipvlan and ipvtap links are not: every one of
//     their packets crosses the link below them, which counts it (with its
//     VLAN id); unless that link is in another network namespace (a
//     container's macvlan), where this namespace cannot see it;
//   - tunnels (vxlan, geneve, gre, ipip, sit, ip6tnl, wireguard, xfrm, ...)
//     are not: their encapsulated packets cross the underlay link, which
//     counts them;
//   - tun/tap links (a VM's tap, a VPN's tun) are not: what they carry
//     to or from the outside crosses a physical link or uplink;
//   - ifb, dummy, vrf, nlmon and any other kind are not.
//
// In router mode, which counts a forwarded packet where it enters, every
// routed (layer 3) interface is captured, as a router's NetFlow counts on
// its bridge and tunnel interfaces: bridges and Open vSwitch devices are
// captured and none of their ports are, so that a packet entering through
// a port is counted once, on the bridge; tunnels and tun/tap links are
// captured, since the packets they carry are forwarded from there (their
// encapsulated packets, delivered to the router itself, are counted on the
// underlay as consumed).
//
// Links that are down and loopback are never in the default selection.
func Edge(l Link, router bool) (bool, string) {
	switch {
	case l.Loopback:
		return false, "loopback"
	case !l.Up:
		return false, "down"
	}
	switch l.MasterKind {
	case "bond", "team":
		return false, fmt.Sprintf("%s slave: counted on its %s", l.MasterKind, l.masterName())
	case "bridge", "openvswitch":
		// Open vSwitch's internal ports (the routed interfaces) are
		// ports of its datapath device too.
		if router && l.Kind != "openvswitch" {
			return false, fmt.Sprintf("%s port: router mode counts on the %s %s", l.MasterKind, l.MasterKind, l.masterName())
		}
	}
	switch l.Kind {
	case "", "device", "dsa", "ipoib":
		if l.MasterKind == "bridge" || l.MasterKind == "openvswitch" {
			return true, fmt.Sprintf("physical port of %s: the wire", l.masterName())
		}
		return true, "physical"
	case "bond", "team":
		return true, l.Kind
	case "veth", "netkit":
		if l.MasterIndex != 0 && l.MasterKind != "vrf" {
			return false, fmt.Sprintf("%s port of %s: counted where it leaves or enters the host", l.Kind, l.masterName())
		}
		return true, l.Kind + ", not a bridge port: routed link out of this namespace"
	case "bridge", "openvswitch":
		if router {
			return true, l.Kind + ": routed interface (router mode)"
		}
		return false, l.Kind + ": counted on its wire ports and uplinks"
	case "vlan", "macvlan", "macvtap", "ipvlan", "ipvtap":
		if l.LowerElsewhere {
			return true, l.Kind + " on a lower link in another namespace: the edge of this one"
		}
		return false, fmt.Sprintf("%s: counted on its lower link", l.Kind)
	case "vxlan", "geneve", "gre", "gretap", "ip6gre", "ip6gretap", "erspan", "ip6erspan",
		"ipip", "sit", "ip6tnl", "vti", "vti6", "wireguard", "xfrm", "bareudp", "gtp":
		if router {
			return true, l.Kind + ": tunnel, routed interface (router mode): decapsulated packets enter here"
		}
		return false, l.Kind + ": tunnel, counted encapsulated on its underlay link"
	case "tun", "tuntap":
		if router {
			return true, "tun/tap: routed interface (router mode)"
		}
		return false, "tun/tap: a VM's or a VPN's link, counted where its traffic leaves or enters the host"
	}
	return false, l.Kind + ": not an edge link"
}

func (l Link) masterName() string {
	if l.MasterName != "" {
		return l.MasterName
	}
	return fmt.Sprintf("master (ifindex %d)", l.MasterIndex)
}
