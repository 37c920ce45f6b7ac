package integration

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hostflow/hostflow/templates"
	"github.com/netsampler/goflow2/v2/decoders/netflow"
)

// gfRecords decodes IPFIX or v9 messages in order with goflow2's decoder
// and returns the raw values by element id of the flow records and of the
// options records (scope and options fields together).
func gfRecords(t *testing.T, msgs [][]byte) (flows, options []map[uint16][]byte) {
	t.Helper()
	ts := netflow.CreateTemplateSystem()
	vals := func(out map[uint16][]byte, fs []netflow.DataField) map[uint16][]byte {
		for _, f := range fs {
			if b, ok := f.Value.([]byte); ok {
				out[f.Type] = b
			}
		}
		return out
	}
	for i, msg := range msgs {
		var v9 netflow.NFv9Packet
		var ipfix netflow.IPFIXPacket
		if err := netflow.DecodeMessageVersion(bytes.NewBuffer(msg), ts, &v9, &ipfix); err != nil {
			t.Fatalf("decode message %d: %v", i, err)
		}
		sets := ipfix.FlowSets
		if binary.BigEndian.Uint16(msg) == 9 {
			sets = v9.FlowSets
		}
		for _, s := range sets {
			switch s := s.(type) {
			case netflow.DataFlowSet:
				for _, r := range s.Records {
					flows = append(flows, vals(map[uint16][]byte{}, r.Values))
				}
			case netflow.OptionsDataFlowSet:
				for _, r := range s.Records {
					options = append(options, vals(vals(map[uint16][]byte{}, r.ScopesValues), r.OptionsValues))
				}
			}
		}
	}
	return flows, options
}

// collectorSocket is a UDP and a TCP collector in a namespace that record
// each datagram's and connection's source address.
type collectorSocket struct {
	ns      *namespace
	udp     *net.UDPConn
	udpDone chan struct{} // closed when the UDP reader has returned
	tcp     *net.TCPListener
	mu      sync.Mutex
	msgs    [][]byte
	sources map[string]int // "udp 198.18.0.77" -> datagrams or connections
	wg      sync.WaitGroup
}

func newCollectorSocket(t *testing.T, ns *namespace, addr string) *collectorSocket {
	t.Helper()
	c := &collectorSocket{ns: ns, udpDone: make(chan struct{}), sources: map[string]int{}}
	ns.do(t, func() (err error) {
		if c.udp, err = net.ListenUDP("udp", &net.UDPAddr{IP: net.ParseIP(addr), Port: 4739}); err != nil {
			return err
		}
		l, err := net.Listen("tcp", net.JoinHostPort(addr, "4739"))
		if err == nil {
			c.tcp = l.(*net.TCPListener)
		}
		return err
	})
	t.Cleanup(func() { c.udp.Close(); c.tcp.Close(); c.wg.Wait() })
	c.wg.Add(2)
	go func() {
		defer c.wg.Done()
		defer close(c.udpDone)
		buf := make([]byte, 65536)
		for {
			n, from, err := c.udp.ReadFromUDPAddrPort(buf)
			if err != nil {
				return
			}
			c.add("udp", from.Addr(), bytes.Clone(buf[:n]))
		}
	}()
	go func() {
		defer c.wg.Done()
		for {
			conn, err := c.tcp.AcceptTCP()
			if err != nil {
				return
			}
			c.add("tcp", conn.RemoteAddr().(*net.TCPAddr).AddrPort().Addr(), nil)
			c.wg.Add(1)
			go func() {
				defer c.wg.Done()
				defer conn.Close()
				for {
					hdr := make([]byte, 4)
					if _, err := io.ReadFull(conn, hdr); err != nil {
						return
					}
					msg := make([]byte, binary.BigEndian.Uint16(hdr[2:]))
					copy(msg, hdr)
					if len(msg) < 4 {
						return
					}
					if _, err := io.ReadFull(conn, msg[4:]); err != nil {
						return
					}
					c.add("", netip.Addr{}, msg)
				}
			}()
		}
	}()
	return c
}

func (c *collectorSocket) add(transport string, from netip.Addr, msg []byte) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if transport != "" {
		c.sources[transport+" "+from.Unmap().String()]++
	}
	if msg != nil {
		c.msgs = append(c.msgs, msg)
	}
}

func (c *collectorSocket) snapshot() (map[string]int, [][]byte) {
	c.mu.Lock()
	defer c.mu.Unlock()
	src := map[string]int{}
	for k, v := range c.sources {
		src[k] = v
	}
	return src, append([][]byte(nil), c.msgs...)
}

// drainUDP waits until the UDP socket has nothing left to read, then
// closes it and waits for its reader, so that snapshot holds every
// datagram that reached it (the reader may hold the last one a moment).
func (c *collectorSocket) drainUDP(t *testing.T, limit time.Duration) {
	t.Helper()
	c.ns.waitUDPQueueEmpty(t, 4739, limit)
	c.udp.Close()
	<-c.udpDone
}

// await runs check on what the collector has received until check finds
// nothing wrong or limit passes, and returns check's last findings. The
// exporter may have exited while its last datagrams are still crossing the
// veth or sit in the reader goroutines: a single early look can miss them.
func (c *collectorSocket) await(limit time.Duration, check func(sources map[string]int, msgs [][]byte) []string) []string {
	deadline := time.Now().Add(limit)
	for {
		problems := check(c.snapshot())
		if len(problems) == 0 || time.Now().After(deadline) {
			return problems
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestExportSourceAddress runs the daemon in a namespace whose veth holds
// two addresses, bound to the second (not the one the kernel would pick):
// the collector's recvfrom (UDP) and accept (TCP) see only that address.
// The records carry interfaceName, and interface_index exports the veth
// under index 1234 in the records and the interface options table, as
// goflow2's decoder reads them.
func TestExportSourceAddress(t *testing.T) {
	requireRoot(t, "ip", "ethtool", "sysctl")
	bin := buildHostflow(t)
	a := newNamespace(t, "hf-src-a")
	b := newNamespace(t, "hf-src-b")
	p := newVethPair(t, a, b, "hfs0", "hfs1")
	const src = "198.18.0.77"
	a.run(t, "ip", "addr", "add", src+"/24", "dev", "hfs0")
	b.run(t, "ip", "neigh", "replace", src, "lladdr", mac(t, a, "hfs0"), "dev", "hfs1", "nud", "permanent")
	if got := a.run(t, "ip", "route", "get", p.v4B); strings.Contains(got, "src "+src) {
		t.Fatalf("the kernel already picks %s: the test proves nothing\n%s", src, got)
	}
	col := newCollectorSocket(t, b, p.v4B)

	hf := start(t, a.command(bin, daemonArgs(t, "--interfaces", "hfs0", "--poll-interval", "200ms",
		"--collector", "ipfix+udp://"+p.v4B+":4739", "--collector", "ipfix+tcp://"+p.v4B+":4739",
		"--source-address", src, "--interface-index", "hfs0=1234", "--template-refresh", "1s",
		"--fields", "sourceIPv4Address,destinationIPv4Address,protocolIdentifier,octetDeltaCount,packetDeltaCount,ingressInterface,interfaceName,flowDirection")...))
	hf.waitOutput(t, "msg=attached", 10*time.Second)
	udpEcho(t, a, b, p.v4A, p.v4B, 5, 100)
	time.Sleep(1500 * time.Millisecond) // an options refresh
	hf.stop(t, 20*time.Second)

	problems := col.await(20*time.Second, func(sources map[string]int, msgs [][]byte) (problems []string) {
		if len(sources) != 2 || sources["udp "+src] == 0 || sources["tcp "+src] != 1 {
			problems = append(problems, fmt.Sprintf("collector saw sources %v, want only %s, over UDP and one TCP connection", sources, src))
		}
		flows, options := gfRecords(t, msgs)
		var named, echo int
		for _, f := range flows {
			idx := f[templates.IEIngressInterface]
			if idx == nil {
				idx = f[templates.IEEgressInterface]
			}
			name := string(bytes.TrimRight(f[templates.IEInterfaceName], "\x00"))
			if len(idx) != 4 || binary.BigEndian.Uint32(idx) != 1234 || name != "hfs0" {
				problems = append(problems, fmt.Sprintf("flow record: interface %x named %q, want 1234 named hfs0", idx, name))
				continue
			}
			named++
			if f[templates.IEProtocolIdentifier][0] == 17 && net.IP(f[templates.IESourceIPv4Address]).String() == p.v4A {
				echo++
			}
		}
		if named == 0 || echo != 2 { // the echo request, once over UDP and once over TCP
			problems = append(problems, fmt.Sprintf("%d flow records on hfs0, %d of the UDP echo (want 2: one per collector)", named, echo))
		}
		var rows int
		for _, o := range options {
			if string(bytes.TrimRight(o[templates.IEInterfaceName], "\x00")) == "hfs0" {
				rows++
				if got := binary.BigEndian.Uint32(o[templates.IEIngressInterface]); got != 1234 {
					problems = append(problems, fmt.Sprintf("options: hfs0 has index %d, want 1234", got))
				}
			}
		}
		if rows < 2 {
			problems = append(problems, fmt.Sprintf("%d interface options rows for hfs0, want one or more per collector", rows))
		}
		return problems
	})
	for _, msg := range problems {
		t.Error(msg)
	}
}

// TestExportMissingVRF: a vrf that does not exist fails the start, naming
// the device.
func TestExportMissingVRF(t *testing.T) {
	requireRoot(t, "ip")
	bin := buildHostflow(t)
	a := newNamespace(t, "hf-novrf")
	out, err := a.command(bin, daemonArgs(t, "--interfaces", "lo", "--collector", "ipfix+udp://127.0.0.1:4739", "--vrf", "hf-novrf0")...).CombinedOutput()
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.ExitCode() == 0 {
		t.Fatalf("hostflow with a missing vrf: %v\n%s", err, out)
	}
	if !strings.Contains(string(out), `vrf: bind device "hf-novrf0"`) {
		t.Errorf("output does not name the vrf:\n%s", out)
	}
}

// TestExportVRF: the collector is reachable only through the device that
// --vrf names; the main table has no route to it, so records arrive only if
// the export sockets are bound to that device (SO_BINDTODEVICE). Where the
// kernel has VRFs, the device is a real one (vrf-x, table 10, the veth
// enslaved to it). Where it has none (no CONFIG_NET_VRF, as on the CI
// machine), the device is the veth itself, which checks the same binding
// and leaves only the VRF's own table lookup untested; the test says which.
func TestExportVRF(t *testing.T) {
	requireRoot(t, "ip", "ethtool", "sysctl")
	bin := buildHostflow(t)
	a := newNamespace(t, "hf-vrf-a")
	b := newNamespace(t, "hf-vrf-b")
	p := newVethPair(t, a, b, "hfv0", "hfv1")
	dev := "hfv0"
	if out, err := exec.Command("ip", "-n", a.name, "link", "add", "vrf-x", "type", "vrf", "table", "10").CombinedOutput(); err != nil {
		t.Logf("no VRF support in this kernel (%v: %s): binding to the veth itself", err, strings.TrimSpace(string(out)))
	} else {
		dev = "vrf-x"
		a.run(t, "ip", "link", "set", "vrf-x", "up")
		a.run(t, "ip", "link", "set", "hfv0", "master", "vrf-x")
	}
	// No connected route in the main table: the address has /32, and the
	// peer is reached only by a neighbour entry on the bound device.
	a.run(t, "ip", "addr", "flush", "dev", "hfv0")
	a.run(t, "ip", "addr", "add", p.v4A+"/32", "dev", "hfv0")
	a.run(t, "ip", "neigh", "replace", p.v4B, "lladdr", mac(t, b, "hfv1"), "dev", "hfv0", "nud", "permanent")
	if dev == "vrf-x" {
		a.run(t, "ip", "route", "add", p.v4B+"/32", "dev", "hfv0", "table", "10")
	}
	b.run(t, "ip", "route", "replace", p.v4A+"/32", "dev", "hfv1")
	if out, err := a.command("ip", "route", "get", p.v4B).CombinedOutput(); err == nil {
		t.Fatalf("the main table reaches %s: the test proves nothing\n%s", p.v4B, out)
	}
	col := newCollectorSocket(t, b, p.v4B)

	hf := start(t, a.command(bin, daemonArgs(t, "--interfaces", "hfv0", "--poll-interval", "200ms",
		"--collector", "ipfix+udp://"+p.v4B+":4739", "--collector", "ipfix+tcp://"+p.v4B+":4739", "--vrf", dev)...))
	hf.waitOutput(t, "msg=attached", 10*time.Second)
	a.run(t, "ping", "-I", dev, "-c", "2", "-i", "0.2", "-W", "2", p.v4B)
	hf.stop(t, 20*time.Second)

	problems := col.await(20*time.Second, func(sources map[string]int, msgs [][]byte) (problems []string) {
		if sources["udp "+p.v4A] == 0 || sources["tcp "+p.v4A] != 1 {
			problems = append(problems, fmt.Sprintf("collector saw %v: want datagrams and a connection from %s", sources, p.v4A))
		}
		if flows, _ := gfRecords(t, msgs); len(flows) == 0 {
			problems = append(problems, fmt.Sprintf("no flow record through the VRF (%d messages)", len(msgs)))
		}
		return problems
	})
	for _, msg := range problems {
		t.Error(msg)
	}
}
