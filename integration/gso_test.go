package integration

import (
	"bufio"
	"encoding/json"
	"strconv"
	"strings"
	"testing"
	"time"
)

// jsonFlow is one line of hostflow's JSON output.
type jsonFlow struct {
	Src       string `json:"src"`
	Dst       string `json:"dst"`
	SrcPort   int    `json:"src_port"`
	DstPort   int    `json:"dst_port"`
	Proto     int    `json:"proto"`
	Direction string `json:"direction"`
	Packets   uint64 `json:"packets"`
	Bytes     uint64 `json:"bytes"`
	EndReason string `json:"end_reason"`
}

// jsonFlows parses hostflow's stdout.
func jsonFlows(t *testing.T, out string) []jsonFlow {
	t.Helper()
	var flows []jsonFlow
	sc := bufio.NewScanner(strings.NewReader(out))
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, "{") {
			continue // a log line
		}
		var f jsonFlow
		if err := json.Unmarshal([]byte(line), &f); err != nil {
			t.Fatalf("parse flow %q: %v", line, err)
		}
		flows = append(flows, f)
	}
	return flows
}

// tcpOutSegs reads the namespace's TcpOutSegs: TCP segments sent, counting
// each segment of a GSO packet (tcp_skb_pcount).
func tcpOutSegs(t *testing.T, ns *namespace) uint64 {
	t.Helper()
	out := ns.run(t, "cat", "/proc/net/snmp")
	var names, values []string
	for _, line := range strings.Split(out, "\n") {
		if !strings.HasPrefix(line, "Tcp:") {
			continue
		}
		if names == nil {
			names = strings.Fields(line)
		} else {
			values = strings.Fields(line)
		}
	}
	for i, n := range names {
		if n == "OutSegs" && i < len(values) {
			v, err := strconv.ParseUint(values[i], 10, 64)
			if err != nil {
				t.Fatal(err)
			}
			return v
		}
	}
	t.Fatalf("no Tcp OutSegs in /proc/net/snmp:\n%s", out)
	return 0
}

// TestGSOAccounting sends TCP with segmentation offload on: the veth carries
// GSO super-packets, yet hostflow must count the segments TCP put on the
// wire and the IP bytes they carry.
func TestGSOAccounting(t *testing.T) {
	requireRoot(t, "ip", "ethtool", "sysctl")
	bin := buildHostflow(t)
	a := newNamespace(t, "hf-gso-a")
	b := newNamespace(t, "hf-gso-b")
	p := newVethPair(t, a, b, "hfg0", "hfg1")
	a.run(t, "ethtool", "-K", "hfg0", "tso", "on", "gso", "on")
	// SACK off: without loss it never appears, but the SYN's option
	// length must not depend on it.
	a.run(t, "sysctl", "-qw", "net.ipv4.tcp_sack=0")
	a.waitQuiet(t, "hfg0", 500*time.Millisecond, 20*time.Second)

	hf := start(t, a.command(bin, daemonArgs(t, "--interfaces", "hfg0", "--poll-interval", "200ms")...))
	hf.waitOutput(t, "msg=attached", 10*time.Second)
	before := a.stats(t, "hfg0")
	segs0 := tcpOutSegs(t, a)
	const size = 4 << 20
	cport, sport := tcpTransfer(t, a, b, p.v4A, p.v4B, size)
	after := a.waitQuiet(t, "hfg0", 300*time.Millisecond, 10*time.Second)
	segs := tcpOutSegs(t, a) - segs0
	hf.stop(t, 20*time.Second)

	var flow *jsonFlow
	for _, f := range jsonFlows(t, hf.output.String()) {
		if f.Proto == 6 && f.Direction == "egress" && f.SrcPort == cport && f.DstPort == sport {
			if flow != nil {
				t.Fatalf("two records for the client flow")
			}
			f := f
			flow = &f
		}
	}
	if flow == nil {
		t.Fatalf("no record of the client flow in:\n%s", hf.output.String())
	}
	frames := after.TxPackets - before.TxPackets
	t.Logf("client: %d TCP segments sent (%d frames on the veth); exported %d packets, %d bytes",
		segs, frames, flow.Packets, flow.Bytes)
	if frames >= segs {
		t.Fatalf("the veth carried %d frames for %d segments: GSO did not happen, the test proves nothing", frames, segs)
	}
	if flow.Packets != segs {
		t.Errorf("exported %d packets, TCP sent %d segments", flow.Packets, segs)
	}
	// Every segment: IPv4 20 + TCP 20 + timestamps option 12; the SYN
	// carries 8 more option bytes (MSS 4, window scale 3 + NOP 1).
	if want := size + segs*(20+32) + 8; flow.Bytes != want {
		t.Errorf("exported %d bytes, want %d (payload %d + %d segments x 52 + 8 SYN option bytes)", flow.Bytes, want, size, segs)
	}
}
