package bpf

// Frames sent with AF_PACKET over a test veth pair. A packet socket with a
// TX ring (PACKET_TX_RING, qdisc bypass off) builds skbs whose linear area
// holds only the Ethernet header, the rest being page fragments pointing
// into the ring: the parser must read every header with
// bpf_skb_load_bytes. A plain packet socket sends frames BPF_PROG_TEST_RUN
// refuses (truncated IP headers) and VLAN-tagged frames the receiving
// side's stack untags before TC ingress (skb->vlan_present).

import (
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
	"sync/atomic"
	"testing"
	"unsafe"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/link"
	"golang.org/x/sys/unix"

	"github.com/hostflow/hostflow/internal/testutil"
)

// packetSocket opens an AF_PACKET raw socket bound to ifindex inside ns.
// Protocol 0 keeps it from receiving anything.
func packetSocket(ns *testutil.Netns, ifindex int) (int, error) {
	fd := -1
	err := ns.Do(func() error {
		var err error
		fd, err = unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			return fmt.Errorf("packet socket: %w", err)
		}
		if err := unix.Bind(fd, &unix.SockaddrLinklayer{Ifindex: ifindex}); err != nil {
			unix.Close(fd)
			return fmt.Errorf("bind packet socket to ifindex %d: %w", ifindex, err)
		}
		return nil
	})
	return fd, err
}

// sendFrames sends each frame with a plain packet socket (linear skbs).
func sendFrames(t *testing.T, ns *testutil.Netns, ifindex int, frames ...[]byte) {
	t.Helper()
	fd, err := packetSocket(ns, ifindex)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	for _, fr := range frames {
		n, err := unix.Write(fd, fr)
		if err != nil || n != len(fr) {
			t.Fatalf("send %d-byte frame: %d, %v", len(fr), n, err)
		}
	}
}

const (
	txFrameSize = 2048
	txBlockSize = 4096
	txBlocks    = 4
	txFrames    = txBlocks * txBlockSize / txFrameSize
	// TPACKET_V2 without PACKET_TX_HAS_OFF: data starts at
	// TPACKET2_HDRLEN - sizeof(struct sockaddr_ll) = 32.
	tpacket2DataOff = 32
)

// sendTXRing sends frames through a TPACKET_V2 TX ring on ifindex in ns.
func sendTXRing(t *testing.T, ns *testutil.Netns, ifindex int, frames ...[]byte) {
	t.Helper()
	if len(frames) > txFrames {
		t.Fatalf("%d frames, the ring holds %d", len(frames), txFrames)
	}
	fd, err := packetSocket(ns, ifindex)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	if err := unix.SetsockoptInt(fd, unix.SOL_PACKET, unix.PACKET_VERSION, unix.TPACKET_V2); err != nil {
		t.Fatalf("PACKET_VERSION: %v", err)
	}
	req := unix.TpacketReq{Block_size: txBlockSize, Block_nr: txBlocks, Frame_size: txFrameSize, Frame_nr: txFrames}
	if err := unix.SetsockoptTpacketReq(fd, unix.SOL_PACKET, unix.PACKET_TX_RING, &req); err != nil {
		t.Fatalf("PACKET_TX_RING: %v", err)
	}
	ring, err := unix.Mmap(fd, 0, txBlockSize*txBlocks, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		t.Fatalf("mmap TX ring: %v", err)
	}
	defer unix.Munmap(ring)

	status := func(i int) *uint32 { return (*uint32)(unsafe.Pointer(&ring[i*txFrameSize])) }
	total := 0
	for i, fr := range frames {
		if len(fr) > txFrameSize-tpacket2DataOff {
			t.Fatalf("frame of %d bytes does not fit a ring slot", len(fr))
		}
		slot := ring[i*txFrameSize : (i+1)*txFrameSize]
		if s := atomic.LoadUint32(status(i)); s != unix.TP_STATUS_AVAILABLE {
			t.Fatalf("slot %d status %#x, want available", i, s)
		}
		copy(slot[tpacket2DataOff:], fr)
		binary.NativeEndian.PutUint32(slot[4:], uint32(len(fr))) // tp_len
		atomic.StoreUint32(status(i), unix.TP_STATUS_SEND_REQUEST)
		total += len(fr)
	}
	// A blocking send returns once the kernel has sent every slot marked.
	n, _, errno := unix.Syscall6(unix.SYS_SENDTO, uintptr(fd), 0, 0, 0, 0, 0)
	if errno != 0 || int(n) != total {
		t.Fatalf("send TX ring: %d bytes of %d, %v", n, total, errno)
	}
	for i := range frames {
		if s := atomic.LoadUint32(status(i)); s != unix.TP_STATUS_AVAILABLE {
			t.Fatalf("slot %d status %#x after send, want available", i, s)
		}
	}
}

// linearProbe is a tcx program that records, for the last packet of at
// least 1000 bytes, skb->len and the length of the linear area
// (data_end - data), so a test can prove that its skbs were non-linear.
type linearProbe struct {
	m    *ebpf.Map
	prog *ebpf.Program
}

func newLinearProbe(t *testing.T) *linearProbe {
	t.Helper()
	m, err := ebpf.NewMap(&ebpf.MapSpec{Type: ebpf.Array, KeySize: 4, ValueSize: 16, MaxEntries: 1})
	if err != nil {
		t.Fatalf("probe map: %v", err)
	}
	t.Cleanup(func() { m.Close() })
	prog, err := ebpf.NewProgram(&ebpf.ProgramSpec{
		Type:    ebpf.SchedCLS,
		License: "GPL",
		Instructions: asm.Instructions{
			asm.Mov.Reg(asm.R6, asm.R1),
			asm.LoadMem(asm.R7, asm.R6, 0, asm.Word), // skb->len
			asm.JLT.Imm(asm.R7, 1000, "out"),
			asm.LoadMem(asm.R2, asm.R6, 76, asm.Word), // skb->data
			asm.LoadMem(asm.R8, asm.R6, 80, asm.Word), // skb->data_end
			asm.Sub.Reg(asm.R8, asm.R2),
			asm.StoreImm(asm.RFP, -4, 0, asm.Word),
			asm.Mov.Reg(asm.R2, asm.RFP),
			asm.Add.Imm(asm.R2, -4),
			asm.LoadMapPtr(asm.R1, m.FD()),
			asm.FnMapLookupElem.Call(),
			asm.JEq.Imm(asm.R0, 0, "out"),
			asm.StoreMem(asm.R0, 0, asm.R8, asm.DWord),
			asm.StoreMem(asm.R0, 8, asm.R7, asm.DWord),
			asm.Mov.Imm(asm.R0, -1).WithSymbol("out"), // TC_ACT_UNSPEC: next program
			asm.Return(),
		},
	})
	if err != nil {
		t.Fatalf("load linear probe: %v", err)
	}
	t.Cleanup(func() { prog.Close() })
	return &linearProbe{m: m, prog: prog}
}

func (p *linearProbe) attach(t *testing.T, ns *testutil.Netns, ifindex int, hook ebpf.AttachType) {
	t.Helper()
	var l link.Link
	if err := ns.Do(func() error {
		var err error
		l, err = link.AttachTCX(link.TCXOptions{Interface: ifindex, Program: p.prog, Attach: hook, Anchor: link.Head()})
		return err
	}); err != nil {
		t.Fatalf("attach linear probe: %v", err)
	}
	t.Cleanup(func() { l.Close() })
}

func (p *linearProbe) read(t *testing.T) (linear, length uint64) {
	t.Helper()
	var v [16]byte
	if err := p.m.Lookup(uint32(0), &v); err != nil {
		t.Fatalf("read probe: %v", err)
	}
	return binary.NativeEndian.Uint64(v[0:]), binary.NativeEndian.Uint64(v[8:])
}

func etherTo(dst net.HardwareAddr, etherType uint16, tags []vlanTag, l3 []byte) []byte {
	fr := ether(etherType, tags, l3)
	copy(fr[0:6], dst)
	return fr
}

// TestNonLinearSkb sends full-size frames through an AF_PACKET TX ring: the
// skbs carry only the Ethernet header in their linear area (a probe program
// proves it), and both the egress program on the sender and the ingress
// program on the receiver must still parse IPv4 UDP and IPv6 TCP behind
// extension headers and count the full length.
func TestNonLinearSkb(t *testing.T) {
	e := newVethEnv(t)
	egressProbe, ingressProbe := newLinearProbe(t), newLinearProbe(t)
	egressProbe.attach(t, e.A, e.ifA, ebpf.AttachTCXEgress)
	ingressProbe.attach(t, e.B, e.ifB, ebpf.AttachTCXIngress)
	fa, _ := nsFetcher(t, e.A, false, true)
	fb, _ := nsFetcher(t, e.B, true, false)
	attachIn(t, e.A, fa, e.ifA, e.NameA)
	attachIn(t, e.B, fb, e.ifB, e.NameB)
	drain(t, fa)
	drain(t, fb)

	src4, dst4 := ipKey(e.AddrA), ipKey(e.AddrB)
	udpL3 := ipv4{src: v4a, dst: v4b, proto: protoUDP}.build(udp(40001, 40002, bytesN(1500-28)))
	tcpL3 := ipv6{src: v6a, dst: v6b, proto: protoTCP, exts: []ipv6Ext{
		{proto: protoHop, length: 8}, {proto: protoDstOpt, length: 16},
	}}.build(tcp(40003, 40004, tcpACK|tcpPSH, bytesN(12), bytesN(1500-40-24-32)))
	if len(udpL3) != 1500 || len(tcpL3) != 1500 {
		t.Fatalf("builder: %d and %d IP bytes, want 1500", len(udpL3), len(tcpL3))
	}
	udpFrame := etherTo(e.macB, etherTypeIPv4, nil, udpL3)
	tcpFrame := etherTo(e.macB, etherTypeIPv6, nil, tcpL3)
	sendTXRing(t, e.A, e.ifA, udpFrame, udpFrame, tcpFrame, udpFrame, tcpFrame)

	linear, length := egressProbe.read(t)
	t.Logf("egress skb: %d bytes, %d linear", length, linear)
	if length != 1514 || linear >= length {
		t.Fatalf("egress skb of %d bytes has %d linear bytes: the TX ring did not make a non-linear skb", length, linear)
	}
	linear, length = ingressProbe.read(t)
	t.Logf("ingress skb: %d bytes, %d linear", length, linear)
	if length != 1514 {
		t.Errorf("ingress probe saw %d bytes, want 1514", length)
	}

	udpKey := NetFlowId{SrcIp: src4, DstIp: dst4, EthProtocol: etherTypeIPv4, TransportProtocol: protoUDP, SrcPort: 40001, DstPort: 40002}
	tcpKey := NetFlowId{SrcIp: ipKey("2001:db8::1"), DstIp: ipKey("2001:db8::2"), EthProtocol: etherTypeIPv6,
		TransportProtocol: protoTCP, SrcPort: 40003, DstPort: 40004}
	for _, side := range []struct {
		name    string
		f       *FlowFetcher
		ifindex int
		dir     uint8
	}{{"egress " + e.NameA, fa, e.ifA, DirectionEgress}, {"ingress " + e.NameB, fb, e.ifB, DirectionIngress}} {
		flows := drain(t, side.f)
		for _, w := range []struct {
			key     NetFlowId
			packets uint64
			flags   uint16
		}{{udpKey, 3, 0}, {tcpKey, 2, tcpACK | tcpPSH}} {
			k := w.key
			k.IfIndex, k.Direction = uint32(side.ifindex), side.dir
			m, ok := flows[k]
			if !ok {
				t.Errorf("%s: no flow %v among %v", side.name, k, flows)
				continue
			}
			if m.Packets != w.packets || m.Bytes != w.packets*1500 || m.Flags != w.flags {
				t.Errorf("%s %v: packets %d bytes %d flags %#x, want %d, %d, %#x", side.name, k, m.Packets, m.Bytes, m.Flags, w.packets, w.packets*1500, w.flags)
			}
		}
		if c := counters(t, side.f); c.Malformed != 0 {
			t.Errorf("%s: %d malformed", side.name, c.Malformed)
		}
	}
}

// TestRawFrames sends hand-made frames over the veth with a packet socket:
// truncated IP headers (which BPF_PROG_TEST_RUN refuses) must count as
// malformed on both sides, and VLAN-tagged frames must keep their outer VLAN
// id both at egress (tag in the frame) and at ingress, where the stack has
// already moved the outer tag to skb->vlan_tci.
func TestRawFrames(t *testing.T) {
	e := newVethEnv(t)
	fa, _ := nsFetcher(t, e.A, false, true)
	fb, _ := nsFetcher(t, e.B, true, false)
	attachIn(t, e.A, fa, e.ifA, e.NameA)
	attachIn(t, e.B, fb, e.ifB, e.NameB)
	drain(t, fa)
	drain(t, fb)
	ca0, cb0 := counters(t, fa), counters(t, fb)

	udp4 := ipv4{src: v4a, dst: v4b, proto: protoUDP}
	single := udp4.build(udp(50001, 50002, bytesN(64)))
	double := ipv6{src: v6a, dst: v6b, proto: protoTCP}.build(tcp(50003, 50004, tcpSYN, nil, nil))
	sendFrames(t, e.A, e.ifA,
		etherTo(e.macB, etherTypeIPv4, nil, udp4.build(nil)[:10]),                             // truncated IPv4
		etherTo(e.macB, etherTypeIPv6, nil, ipv6{src: v6a, dst: v6b}.build(nil)[:30]),         // truncated IPv6
		etherTo(e.macB, etherTypeIPv4, nil, udp4.build(udp(1, 2, nil))[:22]),                  // truncated UDP header
		etherTo(e.macB, etherTypeIPv4, []vlanTag{{tpid: tpid8021Q, vid: 42, pcp: 3}}, single), // 802.1Q
		etherTo(e.macB, etherTypeIPv4, []vlanTag{{tpid: tpid8021Q, vid: 42, pcp: 3}}, single),
		etherTo(e.macB, etherTypeIPv6, []vlanTag{{tpid: tpid8021AD, vid: 100}, {tpid: tpid8021Q, vid: 200}}, double), // QinQ
	)
	pingFrom(t, e.A, netip.MustParseAddr(e.AddrB), 1, 8) // the pair carries traffic; the frames have gone through

	singleKey := NetFlowId{SrcIp: ipKey("198.18.0.1"), DstIp: ipKey("198.18.0.2"), EthProtocol: etherTypeIPv4,
		TransportProtocol: protoUDP, SrcPort: 50001, DstPort: 50002, VlanId: 42}
	doubleKey := NetFlowId{SrcIp: ipKey("2001:db8::1"), DstIp: ipKey("2001:db8::2"), EthProtocol: etherTypeIPv6,
		TransportProtocol: protoTCP, SrcPort: 50003, DstPort: 50004, VlanId: 100}
	for _, side := range []struct {
		name    string
		f       *FlowFetcher
		c0      KernelCounters
		ifindex int
		dir     uint8
	}{{"egress " + e.NameA, fa, ca0, e.ifA, DirectionEgress}, {"ingress " + e.NameB, fb, cb0, e.ifB, DirectionIngress}} {
		if c := counters(t, side.f); c.Malformed-side.c0.Malformed != 3 {
			t.Errorf("%s: %d malformed frames, want 3", side.name, c.Malformed-side.c0.Malformed)
		}
		flows := drain(t, side.f)
		for _, w := range []struct {
			key            NetFlowId
			packets, bytes uint64
		}{{singleKey, 2, 2 * uint64(len(single))}, {doubleKey, 1, uint64(len(double))}} {
			k := w.key
			k.IfIndex, k.Direction = uint32(side.ifindex), side.dir
			m, ok := flows[k]
			if !ok {
				t.Errorf("%s: no flow %v among %v", side.name, k, flows)
				continue
			}
			if m.Packets != w.packets || m.Bytes != w.bytes {
				t.Errorf("%s %v: packets %d bytes %d, want %d and %d", side.name, k, m.Packets, m.Bytes, w.packets, w.bytes)
			}
		}
	}
}
