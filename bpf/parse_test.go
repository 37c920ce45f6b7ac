package bpf

import (
	"net/netip"
	"testing"
)

var (
	v4a = netip.MustParseAddr("198.18.0.1")
	v4b = netip.MustParseAddr("198.18.0.2")
	v6a = netip.MustParseAddr("2001:db8::1")
	v6b = netip.MustParseAddr("2001:db8::2")
)

// pkt is one frame of a parser case: an L3 packet, its ethertype and tags.
type pkt struct {
	etherType uint16
	tags      []vlanTag
	l3        []byte
	pad       int // Ethernet padding after the IP packet: not IP bytes
}

func (p pkt) frame() []byte {
	return append(ether(p.etherType, p.tags, p.l3), make([]byte, p.pad)...)
}

// padded returns p with n bytes of Ethernet padding behind its IP packet.
func padded(p pkt, n int) pkt { p.pad = n; return p }

func v4pkt(h ipv4, l4 []byte, tags ...vlanTag) pkt {
	return pkt{etherType: etherTypeIPv4, tags: tags, l3: h.build(l4)}
}

func v6pkt(h ipv6, l4 []byte, tags ...vlanTag) pkt {
	return pkt{etherType: etherTypeIPv6, tags: tags, l3: h.build(l4)}
}

// parseCase is a set of frames that must all land in one flow (or, when
// notIP or malformed is set, in no flow and in those counters).
type parseCase struct {
	name   string
	pkts   []pkt
	repeat int       // each frame is run this many times (default 1)
	want   NetFlowId // Direction and IfIndex are filled by the runner
	flags  uint16
	// Expected counter increments per run of the whole case; a case that
	// sets one expects no flow at all.
	notIP, malformed uint64
}

func parseCases() []parseCase {
	tcp4 := ipv4{src: v4a, dst: v4b, proto: protoTCP}
	udp4 := ipv4{src: v4a, dst: v4b, proto: protoUDP}
	v4key := func(proto uint8, sport, dport uint16) NetFlowId {
		return NetFlowId{SrcIp: ipKey("198.18.0.1"), DstIp: ipKey("198.18.0.2"), EthProtocol: etherTypeIPv4,
			TransportProtocol: proto, SrcPort: sport, DstPort: dport}
	}
	v6key := func(proto uint8, sport, dport uint16) NetFlowId {
		return NetFlowId{SrcIp: ipKey("2001:db8::1"), DstIp: ipKey("2001:db8::2"), EthProtocol: etherTypeIPv6,
			TransportProtocol: proto, SrcPort: sport, DstPort: dport}
	}
	withVLAN := func(k NetFlowId, vid uint16) NetFlowId { k.VlanId = vid; return k }
	withICMP := func(k NetFlowId, typ, code uint8) NetFlowId { k.IcmpType, k.IcmpCode = typ, code; return k }
	withTOS := func(k NetFlowId, tos uint8) NetFlowId { k.Tos = tos; return k }
	udp6 := ipv6{src: v6a, dst: v6b, proto: protoUDP}

	return []parseCase{
		{
			name: "ipv4 tcp flags or-ed: SYN then ACK|PSH",
			pkts: []pkt{
				v4pkt(tcp4, tcp(40000, 443, tcpSYN, nil, nil)),
				v4pkt(tcp4, tcp(40000, 443, tcpACK|tcpPSH, nil, bytesN(100))),
			},
			want:  v4key(protoTCP, 40000, 443),
			flags: 0x1a,
		},
		{
			name:   "ipv4 tcp with options, repeated",
			pkts:   []pkt{v4pkt(tcp4, tcp(1234, 80, tcpACK, bytesN(12), bytesN(1000)))},
			repeat: 5,
			want:   v4key(protoTCP, 1234, 80),
			flags:  tcpACK,
		},
		{
			name: "ipv4 tcp NS, CWR, ECE, FIN, RST, URG flags",
			pkts: []pkt{
				v4pkt(tcp4, tcp(1, 2, tcpNS|tcpCWR|tcpECE, nil, nil)),
				v4pkt(tcp4, tcp(1, 2, tcpFIN|tcpRST|tcpURG, nil, nil)),
			},
			want:  v4key(protoTCP, 1, 2),
			flags: tcpNS | tcpCWR | tcpECE | tcpFIN | tcpRST | tcpURG,
		},
		{
			// A 28-byte IP packet padded to a 60-byte frame, as short
			// frames arrive from Ethernet: octets stay 28.
			name: "ipv4 udp padded to the ethernet minimum",
			pkts: []pkt{padded(v4pkt(udp4, udp(5353, 5353, nil)), 18)},
			want: v4key(protoUDP, 5353, 5353),
		},
		{
			// Trailing bytes behind an IPv6 packet (a trailer some
			// drivers leave) are not IP bytes either.
			name:  "ipv6 tcp ack with trailing bytes behind a vlan tag",
			pkts:  []pkt{padded(v6pkt(ipv6{src: v6a, dst: v6b, proto: protoTCP}, tcp(1, 2, tcpACK, nil, nil), vlanTag{tpid: 0x8100, vid: 7}), 8)},
			want:  withVLAN(v6key(protoTCP, 1, 2), 7),
			flags: tcpACK,
		},
		{
			// The whole byte, ECN bits included: DSCP EF (46) with
			// ECT(0) is 0xba.
			name:   "ipv4 tos byte, fast path",
			pkts:   []pkt{v4pkt(ipv4{src: v4a, dst: v4b, proto: protoUDP, tos: 0xba}, udp(1, 2, bytesN(10)))},
			repeat: 2,
			want:   withTOS(v4key(protoUDP, 1, 2), 0xba),
		},
		{
			name:  "ipv4 tos byte with options, slow path",
			pkts:  []pkt{v4pkt(ipv4{src: v4a, dst: v4b, proto: protoTCP, tos: 0x03, options: []byte{0x94, 0x04, 0, 0}}, tcp(1, 2, tcpSYN, nil, nil))},
			want:  withTOS(v4key(protoTCP, 1, 2), 0x03),
			flags: tcpSYN,
		},
		{
			name: "ipv4 tos of a non-first fragment",
			pkts: []pkt{v4pkt(ipv4{src: v4a, dst: v4b, proto: protoUDP, tos: 0xff, fragOff: 10}, bytesN(8))},
			want: withTOS(v4key(protoUDP, 0, 0), 0xff),
		},
		{
			// Traffic Class straddles bytes 0 and 1; a flow label
			// of all ones beside it must not leak in.
			name:   "ipv6 traffic class, fast path",
			pkts:   []pkt{v6pkt(ipv6{src: v6a, dst: v6b, proto: protoTCP, tclass: 0xb9, flow: 0xfffff}, tcp(1, 2, tcpACK, nil, nil))},
			repeat: 2,
			want:   withTOS(v6key(protoTCP, 1, 2), 0xb9),
			flags:  tcpACK,
		},
		{
			name: "ipv6 traffic class behind a vlan tag, slow path",
			pkts: []pkt{v6pkt(ipv6{src: v6a, dst: v6b, proto: protoUDP, tclass: 0x81, exts: []ipv6Ext{{proto: protoHop, length: 8}}},
				udp(1, 2, nil), vlanTag{tpid: tpid8021Q, vid: 3})},
			want: withTOS(withVLAN(v6key(protoUDP, 1, 2), 3), 0x81),
		},
		{
			name:   "ipv4 udp",
			pkts:   []pkt{v4pkt(udp4, udp(5353, 53, bytesN(33)))},
			repeat: 3,
			want:   v4key(protoUDP, 5353, 53),
		},
		{
			name: "ipv4 sctp",
			pkts: []pkt{v4pkt(ipv4{src: v4a, dst: v4b, proto: protoSCTP}, sctp(2905, 3868, bytesN(16)))},
			want: v4key(protoSCTP, 2905, 3868),
		},
		{
			name:   "ipv4 icmp echo request",
			pkts:   []pkt{v4pkt(ipv4{src: v4a, dst: v4b, proto: protoICMP}, icmpEcho(8, 0, 7, 1, bytesN(56)))},
			repeat: 3,
			want:   withICMP(v4key(protoICMP, 0, 0), 8, 0),
		},
		{
			name: "ipv4 icmp destination unreachable code 3",
			pkts: []pkt{v4pkt(ipv4{src: v4a, dst: v4b, proto: protoICMP}, icmpEcho(3, 3, 0, 0, bytesN(28)))},
			want: withICMP(v4key(protoICMP, 0, 0), 3, 3),
		},
		{
			name: "ipv4 options IHL 6 (router alert) udp",
			pkts: []pkt{v4pkt(ipv4{src: v4a, dst: v4b, proto: protoUDP, options: []byte{0x94, 0x04, 0, 0}}, udp(1111, 2222, bytesN(10)))},
			want: v4key(protoUDP, 1111, 2222),
		},
		{
			name:  "ipv4 options IHL 15 (40 option bytes) tcp",
			pkts:  []pkt{v4pkt(ipv4{src: v4a, dst: v4b, proto: protoTCP, options: append(make([]byte, 39), 0)}, tcp(3333, 4444, tcpSYN, nil, nil))},
			want:  v4key(protoTCP, 3333, 4444),
			flags: tcpSYN,
		},
		{
			name: "ipv4 first fragment: ports read",
			pkts: []pkt{v4pkt(ipv4{src: v4a, dst: v4b, proto: protoUDP, mf: true}, udp(5000, 6000, bytesN(1472))[:1480])},
			want: v4key(protoUDP, 5000, 6000),
		},
		{
			name: "ipv4 non-first fragment: ports 0, protocol kept",
			// The payload would read as ports 0x0102/0x0304 if parsed.
			pkts: []pkt{
				v4pkt(ipv4{src: v4a, dst: v4b, proto: protoUDP, fragOff: 185, mf: true}, bytesN(1480)),
				v4pkt(ipv4{src: v4a, dst: v4b, proto: protoUDP, fragOff: 370}, bytesN(200)),
			},
			want: v4key(protoUDP, 0, 0),
		},
		{
			name: "ipv4 non-first fragment of tcp: no flags",
			pkts: []pkt{v4pkt(ipv4{src: v4a, dst: v4b, proto: protoTCP, fragOff: 1}, tcp(1, 2, 0xff, nil, nil))},
			want: v4key(protoTCP, 0, 0),
		},
		{
			name: "ipv4 other protocol (GRE): no ports",
			pkts: []pkt{v4pkt(ipv4{src: v4a, dst: v4b, proto: 47}, bytesN(24))},
			want: v4key(47, 0, 0),
		},
		{
			name:   "ipv6 tcp",
			pkts:   []pkt{v6pkt(ipv6{src: v6a, dst: v6b, proto: protoTCP}, tcp(50000, 22, tcpSYN|tcpACK, nil, bytesN(7)))},
			repeat: 2,
			want:   v6key(protoTCP, 50000, 22),
			flags:  tcpSYN | tcpACK,
		},
		{
			name: "ipv6 udp",
			pkts: []pkt{v6pkt(udp6, udp(546, 547, bytesN(60)))},
			want: v6key(protoUDP, 546, 547),
		},
		{
			name: "ipv6 icmpv6 echo request",
			pkts: []pkt{v6pkt(ipv6{src: v6a, dst: v6b, proto: protoICMPv6}, icmpEcho(128, 0, 1, 1, bytesN(56)))},
			want: withICMP(v6key(protoICMPv6, 0, 0), 128, 0),
		},
		{
			name: "ipv6 hop-by-hop + destination options + routing before udp",
			pkts: []pkt{v6pkt(ipv6{src: v6a, dst: v6b, proto: protoUDP, exts: []ipv6Ext{
				{proto: protoHop, length: 8},
				{proto: protoDstOpt, length: 16},
				{proto: protoRoute, length: 24},
			}}, udp(7000, 8000, bytesN(20)))},
			want: v6key(protoUDP, 7000, 8000),
		},
		{
			name: "ipv6 authentication header before tcp",
			pkts: []pkt{v6pkt(ipv6{src: v6a, dst: v6b, proto: protoTCP, exts: []ipv6Ext{
				{proto: protoHop, length: 8},
				{proto: protoAH, length: 24},
			}}, tcp(9000, 9001, tcpPSH, nil, bytesN(5)))},
			want:  v6key(protoTCP, 9000, 9001),
			flags: tcpPSH,
		},
		{
			name: "ipv6 first fragment: ports read",
			pkts: []pkt{v6pkt(ipv6{src: v6a, dst: v6b, proto: protoUDP, exts: []ipv6Ext{
				{proto: protoFrag, mf: true},
			}}, udp(5000, 6000, bytesN(1400))[:1232])},
			want: v6key(protoUDP, 5000, 6000),
		},
		{
			name: "ipv6 non-first fragment after destination options: ports 0, protocol kept",
			pkts: []pkt{
				v6pkt(ipv6{src: v6a, dst: v6b, proto: protoUDP, exts: []ipv6Ext{
					{proto: protoDstOpt, length: 8}, {proto: protoFrag, fragOff: 154, mf: true},
				}}, bytesN(1232)),
				v6pkt(ipv6{src: v6a, dst: v6b, proto: protoUDP, exts: []ipv6Ext{
					{proto: protoDstOpt, length: 8}, {proto: protoFrag, fragOff: 308},
				}}, bytesN(100)),
			},
			want: v6key(protoUDP, 0, 0),
		},
		{
			name:   "802.1Q single tag",
			pkts:   []pkt{v4pkt(udp4, udp(1, 2, bytesN(100)), vlanTag{tpid: tpid8021Q, vid: 100, pcp: 5})},
			repeat: 2,
			want:   withVLAN(v4key(protoUDP, 1, 2), 100),
		},
		{
			name: "802.1ad outer + 802.1Q inner: outer id kept",
			pkts: []pkt{v6pkt(ipv6{src: v6a, dst: v6b, proto: protoTCP}, tcp(10, 20, tcpFIN|tcpACK, nil, nil),
				vlanTag{tpid: tpid8021AD, vid: 200}, vlanTag{tpid: tpid8021Q, vid: 300})},
			want:  withVLAN(v6key(protoTCP, 10, 20), 200),
			flags: tcpFIN | tcpACK,
		},
		{
			name: "802.1Q vid 4095 masked to 12 bits",
			pkts: []pkt{v4pkt(udp4, udp(1, 2, nil), vlanTag{tpid: tpid8021Q, vid: 4095, pcp: 7})},
			want: withVLAN(v4key(protoUDP, 1, 2), 4095),
		},
		{
			name:   "arp is not a flow",
			pkts:   []pkt{{etherType: etherTypeARP, l3: arpRequest(v4a, v4b)}},
			repeat: 3,
			notIP:  3,
		},
		{
			name:  "unknown ethertype inside a vlan tag is not a flow",
			pkts:  []pkt{{etherType: 0x88cc, tags: []vlanTag{{tpid: tpid8021Q, vid: 1}}, l3: bytesN(40)}},
			notIP: 1,
		},
		{
			// BPF_PROG_TEST_RUN itself rejects an untagged frame whose IP
			// header is cut short (EINVAL), so the tag hides the IP
			// ethertype from it; TestAttachTruncatedFrames sends the
			// untagged ones over a veth.
			name:      "truncated ipv4 header behind a vlan tag",
			pkts:      []pkt{{etherType: etherTypeIPv4, tags: []vlanTag{{tpid: tpid8021Q, vid: 9}}, l3: udp4.build(nil)[:10]}},
			repeat:    2,
			malformed: 2,
		},
		{
			name:      "ipv4 with truncated tcp header",
			pkts:      []pkt{{etherType: etherTypeIPv4, l3: tcp4.build(tcp(1, 2, tcpSYN, nil, nil))[:30]}},
			malformed: 1,
		},
		{
			name:      "ipv4 ethertype with version 6",
			pkts:      []pkt{{etherType: etherTypeIPv4, l3: udp6.build(udp(1, 2, nil))}},
			malformed: 1,
		},
		{
			name: "ipv4 IHL below 5",
			pkts: []pkt{{etherType: etherTypeIPv4, l3: func() []byte {
				b := udp4.build(udp(1, 2, nil))
				b[0] = 0x44
				return b
			}()}},
			malformed: 1,
		},
		{
			name:      "truncated ipv6 header behind a vlan tag",
			pkts:      []pkt{{etherType: etherTypeIPv6, tags: []vlanTag{{tpid: tpid8021AD, vid: 9}}, l3: udp6.build(nil)[:39]}},
			malformed: 1,
		},
		{
			name: "ipv6 truncated extension header",
			pkts: []pkt{{etherType: etherTypeIPv6, l3: ipv6{src: v6a, dst: v6b, proto: protoUDP,
				exts: []ipv6Ext{{proto: protoHop, length: 8}}}.build(nil)[:44]}},
			malformed: 1,
		},
		{
			name:      "truncated vlan tag",
			pkts:      []pkt{{etherType: tpid8021Q, l3: []byte{0x00}}},
			malformed: 1,
		},
	}
}

// TestParse runs every case through both programs with BPF_PROG_TEST_RUN
// and checks the one flow it must produce: every key field, the exact
// packet and byte counts (bytes = frame length - L2 header), the OR of the
// TCP flags, the timestamps, and the direction of each program.
func TestParse(t *testing.T) {
	requirePrivileges(t)
	for _, tc := range parseCases() {
		t.Run(tc.name, func(t *testing.T) {
			for _, dir := range []struct {
				name      string
				direction uint8
			}{{"ingress", DirectionIngress}, {"egress", DirectionEgress}} {
				t.Run(dir.name, func(t *testing.T) {
					f := newTestFetcher(t, 64)
					prog := f.progs.IngressFlowParse
					if dir.direction == DirectionEgress {
						prog = f.progs.EgressFlowParse
					}
					repeat := max(tc.repeat, 1)
					var wantBytes uint64
					before := monoCoarse(t)
					for _, p := range tc.pkts {
						frame := p.frame()
						if got, want := len(frame)-len(p.l3)-p.pad, 14+4*len(p.tags); got != want {
							t.Fatalf("builder: L2 header %d bytes, want %d", got, want)
						}
						for range repeat {
							runFrame(t, prog, frame, nil)
							wantBytes += uint64(len(p.l3))
						}
					}
					after := monoNow(t)
					wantPackets := uint64(len(tc.pkts) * repeat)

					c := counters(t, f)
					if c.NotIP != tc.notIP || c.Malformed != tc.malformed || c.MapFull != 0 ||
						c.RingBufFull != 0 || c.NoMap != 0 || c.SampledOut != 0 {
						t.Errorf("counters %+v, want NotIP=%d Malformed=%d and no others", c, tc.notIP, tc.malformed)
					}
					flows := drain(t, f)
					if tc.notIP != 0 || tc.malformed != 0 {
						if len(flows) != 0 {
							t.Fatalf("got %d flows, want none: %v", len(flows), flows)
						}
						return
					}
					if len(flows) != 1 {
						t.Fatalf("got %d flows, want exactly 1: %v", len(flows), flows)
					}
					want := tc.want
					want.Direction = dir.direction
					want.IfIndex = 1 // test_run runs on the namespace's loopback
					m, ok := flows[want]
					if !ok {
						for got := range flows {
							t.Fatalf("flow key\n got %+v\nwant %+v", got, want)
						}
					}
					if m.Packets != wantPackets || m.Bytes != wantBytes {
						t.Errorf("packets %d bytes %d, want %d and %d", m.Packets, m.Bytes, wantPackets, wantBytes)
					}
					if m.Flags != tc.flags {
						t.Errorf("flags %#x, want %#x", m.Flags, tc.flags)
					}
					if m.StartMonoTimeTs < before || m.EndMonoTimeTs > after || m.StartMonoTimeTs > m.EndMonoTimeTs {
						t.Errorf("times [%d, %d] outside the runs [%d, %d]", m.StartMonoTimeTs, m.EndMonoTimeTs, before, after)
					}
					if want.IsIPv4() != IPAddr(want.SrcIp).Is4() {
						t.Errorf("IPv4 flow must hold IPv4-mapped addresses: %v", want)
					}
				})
			}
		})
	}
}

// TestParseIPv4MappedAddresses pins the key layout of IPv4 addresses:
// ten zero bytes, 0xffff, then the address (::ffff:a.b.c.d).
func TestParseIPv4MappedAddresses(t *testing.T) {
	f := newTestFetcher(t, 8)
	runFrame(t, f.progs.IngressFlowParse, ether(etherTypeIPv4, nil,
		ipv4{src: netip.MustParseAddr("198.19.1.2"), dst: netip.MustParseAddr("198.18.255.254"), proto: protoUDP}.build(udp(1, 2, nil))), nil)
	flows := drain(t, f)
	if len(flows) != 1 {
		t.Fatalf("got %d flows, want 1", len(flows))
	}
	for id := range flows {
		wantSrc := [16]uint8{10: 0xff, 11: 0xff, 12: 198, 13: 19, 14: 1, 15: 2}
		wantDst := [16]uint8{10: 0xff, 11: 0xff, 12: 198, 13: 18, 14: 255, 15: 254}
		if id.SrcIp != wantSrc || id.DstIp != wantDst {
			t.Errorf("addresses % x -> % x, want % x -> % x", id.SrcIp, id.DstIp, wantSrc, wantDst)
		}
		if id.SrcAddr().String() != "198.19.1.2" || id.DstAddr().String() != "198.18.255.254" {
			t.Errorf("SrcAddr/DstAddr %v -> %v", id.SrcAddr(), id.DstAddr())
		}
	}
}

// TestParseDistinctKeys checks that every key field separates flows: the
// same 5-tuple seen by the two programs, on two VLANs, with two ICMP
// types, or with two ToS values (IPv4 and IPv6) makes distinct flows.
func TestParseDistinctKeys(t *testing.T) {
	f := newTestFetcher(t, 64)
	u := v4pkt(ipv4{src: v4a, dst: v4b, proto: protoUDP}, udp(1, 2, nil))
	rev := v4pkt(ipv4{src: v4b, dst: v4a, proto: protoUDP}, udp(2, 1, nil))
	tagged := v4pkt(ipv4{src: v4a, dst: v4b, proto: protoUDP}, udp(1, 2, nil), vlanTag{tpid: tpid8021Q, vid: 7})
	echo := v4pkt(ipv4{src: v4a, dst: v4b, proto: protoICMP}, icmpEcho(8, 0, 1, 1, nil))
	reply := v4pkt(ipv4{src: v4a, dst: v4b, proto: protoICMP}, icmpEcho(0, 0, 1, 1, nil))
	ef := v4pkt(ipv4{src: v4a, dst: v4b, proto: protoUDP, tos: 0xb8}, udp(1, 2, nil))
	u6 := v6pkt(ipv6{src: v6a, dst: v6b, proto: protoUDP}, udp(1, 2, nil))
	u6cs1 := v6pkt(ipv6{src: v6a, dst: v6b, proto: protoUDP, tclass: 0x20}, udp(1, 2, nil))
	for _, p := range []pkt{u, rev, tagged, echo, reply, ef, u6, u6cs1} {
		runFrame(t, f.progs.IngressFlowParse, p.frame(), nil)
		runFrame(t, f.progs.EgressFlowParse, p.frame(), nil)
	}
	flows := drain(t, f)
	if len(flows) != 16 {
		t.Fatalf("got %d flows, want 16", len(flows))
	}
	for id, m := range flows {
		if m.Packets != 1 {
			t.Errorf("%v: %d packets, want 1", id, m.Packets)
		}
	}
}
