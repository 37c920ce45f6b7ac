package bpf

import (
	"errors"
	"net/netip"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/hostflow/hostflow/internal/testutil"
)

// nsSockFetcher loads a socket fetcher whose Close runs when the test ends.
func nsSockFetcher(t *testing.T) (*SockFlowFetcher, func() error) {
	t.Helper()
	f, err := NewSockFlowFetcher(0, 256)
	if err != nil {
		t.Fatalf("NewSockFlowFetcher: %v", err)
	}
	closeFn := sync.OnceValue(f.Close)
	t.Cleanup(func() {
		if err := closeFn(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return f, closeFn
}

// udpSend sends count datagrams of payload bytes from a socket in ns bound
// to src:sport to dst:dport, where a socket opened in peer reads each one:
// when udpSend returns, every datagram has crossed the pair.
func udpSend(t *testing.T, ns, peer *testutil.Netns, src, dst netip.AddrPort, count, payload int) {
	t.Helper()
	open := func(in *testutil.Netns, local netip.AddrPort) int {
		fd := -1
		err := in.Do(func() error {
			var err error
			fd, err = unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
			if err != nil {
				return err
			}
			return unix.Bind(fd, &unix.SockaddrInet4{Addr: local.Addr().As4(), Port: int(local.Port())})
		})
		if err != nil {
			t.Fatalf("udp socket on %v in %s: %v", local, in.Name, err)
		}
		t.Cleanup(func() { unix.Close(fd) })
		return fd
	}
	rx := open(peer, dst)
	tx := open(ns, src)
	tv := unix.NsecToTimeval((3 * time.Second).Nanoseconds())
	if err := unix.SetsockoptTimeval(rx, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 2048)
	for i := 0; i < count; i++ {
		if err := unix.Sendto(tx, bytesN(payload), 0, &unix.SockaddrInet4{Addr: dst.Addr().As4(), Port: int(dst.Port())}); err != nil {
			t.Fatalf("send datagram %d: %v", i, err)
		}
		for {
			n, _, err := unix.Recvfrom(rx, buf, 0)
			if errors.Is(err, unix.EINTR) {
				continue
			}
			if err != nil || n != payload {
				t.Fatalf("receive datagram %d: %d bytes, %v", i, n, err)
			}
			break
		}
	}
}

// TestSockAttach puts the socket filter on one end of a veth pair and
// checks, from ping and UDP both ways, that every packet is counted once in
// the right direction with its exact IP bytes, and that the packet socket
// itself never received anything.
func TestSockAttach(t *testing.T) {
	e := newVethEnv(t)
	f, closeFn := nsSockFetcher(t)
	if err := e.A.Do(func() error { return f.Attach(e.ifA, e.NameA) }); err != nil {
		t.Fatalf("Attach: %v", err)
	}
	if err := e.A.Do(func() error { return f.Attach(e.ifA, e.NameA) }); !errors.Is(err, ErrAlreadyAttached) {
		t.Errorf("second Attach: %v, want ErrAlreadyAttached", err)
	}
	if got := f.Attached(); len(got) != 1 || got[e.ifA] != e.NameA {
		t.Errorf("Attached() = %v", got)
	}

	a, b := netip.MustParseAddr(e.AddrA), netip.MustParseAddr(e.AddrB)
	pingFrom(t, e.A, b, pingCount, pingPayload)
	const out, in, payload = 4, 5, 100
	udpSend(t, e.A, e.B, netip.AddrPortFrom(a, 40001), netip.AddrPortFrom(b, 40002), out, payload)
	udpSend(t, e.B, e.A, netip.AddrPortFrom(b, 40003), netip.AddrPortFrom(a, 40004), in, payload)

	flows, err := f.LookupAndDeleteMap()
	if err != nil {
		t.Fatalf("LookupAndDeleteMap: %v", err)
	}
	got := make(map[NetFlowId]NetFlowMetrics)
	for id, perCPU := range flows {
		got[id] = sumMetrics(perCPU)
	}
	key := func(proto uint8, src, dst string, sport, dport uint16, dir uint8) NetFlowId {
		return NetFlowId{SrcIp: ipKey(src), DstIp: ipKey(dst), EthProtocol: etherTypeIPv4, TransportProtocol: proto,
			SrcPort: sport, DstPort: dport, IfIndex: uint32(e.ifA), Direction: dir}
	}
	echo := key(protoICMP, e.AddrA, e.AddrB, 0, 0, DirectionEgress)
	echo.IcmpType = 8
	reply := key(protoICMP, e.AddrB, e.AddrA, 0, 0, DirectionIngress)
	for _, w := range []struct {
		key            NetFlowId
		packets, bytes uint64
	}{
		{echo, pingCount, pingCount * (20 + 8 + pingPayload)},
		{reply, pingCount, pingCount * (20 + 8 + pingPayload)},
		{key(protoUDP, e.AddrA, e.AddrB, 40001, 40002, DirectionEgress), out, out * (20 + 8 + payload)},
		{key(protoUDP, e.AddrB, e.AddrA, 40003, 40004, DirectionIngress), in, in * (20 + 8 + payload)},
	} {
		m, ok := got[w.key]
		if !ok {
			t.Errorf("no flow %v among %v", w.key, got)
			continue
		}
		if m.Packets != w.packets || m.Bytes != w.bytes {
			t.Errorf("%v: packets %d bytes %d, want %d and %d", w.key, m.Packets, m.Bytes, w.packets, w.bytes)
		}
		delete(got, w.key)
	}
	if len(got) != 0 {
		t.Errorf("unexpected flows: %v", got) // IPv6 is off: nothing else is IP
	}
	c := counters(t, f)
	if c.Malformed != 0 || c.MapFull != 0 || c.NoMap != 0 || c.RingBufFull != 0 || c.SampledOut != 0 {
		t.Errorf("counters %+v: only NotIP (ARP) may count", c)
	}

	checkSocketEmpty(t, f.attached[e.ifA].fd)

	if err := f.Detach(e.ifA); err != nil {
		t.Fatalf("Detach: %v", err)
	}
	pingFrom(t, e.A, b, 1, pingPayload)
	if flows, err := f.LookupAndDeleteMap(); err != nil || len(flows) != 0 {
		t.Errorf("after Detach: flows %v, %v; want none", flows, err)
	}
	if err := closeFn(); err != nil {
		t.Fatalf("Close: %v", err)
	}
}

// checkSocketEmpty checks that the packet socket fd was handed no packet:
// its statistics count none received or dropped, its receive queue is
// empty and a read finds nothing.
func checkSocketEmpty(t *testing.T, fd int) {
	t.Helper()
	st, err := unix.GetsockoptTpacketStats(fd, unix.SOL_PACKET, unix.PACKET_STATISTICS)
	if err != nil {
		t.Fatalf("PACKET_STATISTICS: %v", err)
	}
	if st.Packets != 0 || st.Drops != 0 {
		t.Errorf("packet socket statistics: %d packets, %d drops; want none", st.Packets, st.Drops)
	}
	if n, err := unix.IoctlGetInt(fd, unix.SIOCINQ); err != nil || n != 0 {
		t.Errorf("SIOCINQ: %d bytes queued, %v; want 0", n, err)
	}
	buf := make([]byte, 2048)
	if n, _, err := unix.Recvfrom(fd, buf, unix.MSG_DONTWAIT); !errors.Is(err, unix.EAGAIN) {
		t.Errorf("read from the packet socket: %d bytes, %v; want EAGAIN", n, err)
	}
}

// TestSockSetSampling checks that SetSampling puts new filters on the
// attached socket in place: after it, with count sampling of 1 in 2, every
// packet of four pings is either counted (with sampling 2 recorded) or
// counted as sampled out, and some are sampled out, which the filter loaded
// without sampling never does. (Count sampling is per CPU, so which ones
// depends on where the packets ran.)
func TestSockSetSampling(t *testing.T) {
	e := newVethEnv(t)
	f, err := NewSockFlowFetcher(0, 64, WithSamplingAlgorithm(SamplingCount))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	if err := e.A.Do(func() error { return f.Attach(e.ifA, e.NameA) }); err != nil {
		t.Fatalf("Attach: %v", err)
	}
	b := netip.MustParseAddr(e.AddrB)
	pingFrom(t, e.A, b, 1, 8) // resolves ARP before sampling starts
	drain(t, f)
	if err := f.SetSampling(2); err != nil {
		t.Fatalf("SetSampling: %v", err)
	}
	if f.Sampling() != 2 {
		t.Fatalf("Sampling() = %d, want 2", f.Sampling())
	}
	// The drain after a change hands out what the old filters counted
	// (nothing here), as the daemon's does.
	if old := drain(t, f); len(old) != 0 {
		t.Errorf("drain after the change: %v, want nothing", old)
	}
	c0 := counters(t, f)
	const pings = 4
	pingFrom(t, e.A, b, pings, 8)
	var counted uint64
	for id, m := range drain(t, f) {
		counted += m.Packets
		if m.Sampling != 2 {
			t.Errorf("%v: sampling %d, want 2", id, m.Sampling)
		}
	}
	sampledOut := counters(t, f).SampledOut - c0.SampledOut
	if sampledOut == 0 || counted+sampledOut != 2*pings {
		t.Errorf("%d packets counted, %d sampled out: want some sampled out and %d in all", counted, sampledOut, 2*pings)
	}
}
