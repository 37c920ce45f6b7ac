package exporter

import (
	"bytes"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/hostflow/hostflow/internal/testutil"
	"github.com/hostflow/hostflow/templates"
)

// The tests in this file hand the encoders' output to other
// implementations: Wireshark's dissector (tshark) for IPFIX and v9, and
// libfixbuf's ipfixDump for IPFIX. They skip when the tool is missing,
// except on CI (CI=true), where a missing tool is a failure.

// peerMessages exports varied flows with options on, in small messages so
// there are several, across a template and options refresh. IPFIX
// messages are as the packer makes them for a writer without GSO
// (packing "plain"), exactly filled for one with GSO ("filled",
// fill.go), and padded where exact fill falls short too ("padded",
// PadForGSO).
func peerMessages(t *testing.T, proto templates.ExportProtocol, packing string) [][]byte {
	t.Helper()
	w := &gsoCapture{gso: packing != "plain", pad: packing == "padded"}
	e, clk := newOptionsExporter(t, proto, w, 640, testOptions())
	flows := append(sampleFlows(), randomFlows(200, 21)...)
	if err := e.Export(flows); err != nil {
		t.Fatal(err)
	}
	clk.Advance(time.Hour)
	if err := e.Export(flows[:50]); err != nil {
		t.Fatal(err)
	}
	if packing != "plain" {
		checkPacking(t, w.msgs, packing)
	}
	return w.msgs
}

// checkPacking requires IPFIX messages packed as packing says: several
// of one length, set padding, and none of 4 octets or more unless
// padded.
func checkPacking(t *testing.T, msgs [][]byte, packing string) {
	t.Helper()
	lens := map[int]int{}
	for _, m := range msgs {
		lens[len(m)]++
	}
	most := 0
	for _, n := range lens {
		most = max(most, n)
	}
	if most < 3 {
		t.Fatalf("%s: no three messages of one length: exact fill untested", packing)
	}
	switch p := maxSetPadding(t, msgs); {
	case p == 0:
		t.Fatalf("%s: no set padding: untested", packing)
	case packing == "filled" && p > maxSetPad:
		t.Fatalf("filled: a set has %d octets of padding", p)
	case packing == "padded" && p <= maxSetPad:
		t.Fatalf("padded: no set has more than %d octets of padding: PadForGSO untested", maxSetPad)
	}
}

// writePcap writes msgs as UDP payloads of IPv4 packets from
// 192.0.2.1:40000 to 192.0.2.2:port, one a second from testEpoch, in a
// classic pcap file.
func writePcap(t *testing.T, msgs [][]byte, port uint16) string {
	t.Helper()
	return testutil.WriteUDPPcap(t, msgs, netip.MustParseAddrPort("192.0.2.1:40000"),
		netip.AddrPortFrom(netip.MustParseAddr("192.0.2.2"), port), testEpoch)
}

func runTool(t *testing.T, name string, args ...string) string {
	t.Helper()
	var out, errOut bytes.Buffer
	cmd := exec.Command(name, args...)
	cmd.Stdout, cmd.Stderr = &out, &errOut
	cmd.Env = append(os.Environ(), "HOME="+t.TempDir()) // no user profile
	if err := cmd.Run(); err != nil {
		t.Fatalf("%s %v: %v\n%s", name, args, err, errOut.String())
	}
	if s := strings.TrimSpace(errOut.String()); s != "" && !strings.Contains(s, "Running as user \"root\"") {
		t.Errorf("%s wrote to stderr:\n%s", name, s)
	}
	return out.String()
}

// TestTshark dissects IPFIX and v9 with Wireshark's cflow dissector and
// requires every message decoded, with no malformed packet and no expert
// warning or error.
func TestTshark(t *testing.T) {
	tshark := testutil.RequireTool(t, "tshark")
	for _, tc := range []struct {
		proto   templates.ExportProtocol
		port    uint16
		packing string
	}{{templates.IPFIX, 4739, "plain"}, {templates.NetFlowV9, 2055, "plain"}, {templates.IPFIX, 4739, "filled"}, {templates.IPFIX, 4739, "padded"}} {
		name := tc.proto.String()
		if tc.packing != "plain" {
			name += "-" + tc.packing
		}
		t.Run(name, func(t *testing.T) {
			msgs := peerMessages(t, tc.proto, tc.packing)
			pcap := writePcap(t, msgs, tc.port)
			decode := "udp.port==" + strconv.Itoa(int(tc.port)) + ",cflow"
			verbose := runTool(t, tshark, "-r", pcap, "-d", decode, "-V", "-Y", "cflow")
			if n := strings.Count(verbose, "Cisco NetFlow/IPFIX\n"); n != len(msgs) {
				t.Errorf("tshark dissected %d messages, want %d", n, len(msgs))
			}
			for _, bad := range []string{"Malformed", "Expert Info (Warning", "Expert Info (Error", "not found", "[Data (", "Unknown"} {
				if i := strings.Index(verbose, bad); i >= 0 {
					t.Errorf("tshark output has %q:\n%s", bad, surrounding(verbose, i))
				}
			}
			// Spot checks of the values Wireshark decoded.
			for _, want := range []string{"InputInt: 2", "SrcAddr: 192.0.2.1", "DstPort: 443", "Protocol: TCP (6)", "IfName: eth0", "IfDescr: uplink – rack 7"} {
				if !strings.Contains(verbose, want) {
					t.Errorf("tshark output lacks %q", want)
				}
			}
			expert := runTool(t, tshark, "-r", pcap, "-d", decode, "-q", "-z", "expert,warn")
			if regexp.MustCompile(`(?m)^(Errors|Warns) \(\d+\)`).MatchString(expert) {
				t.Errorf("tshark expert info:\n%s", expert)
			}
			if testing.Verbose() {
				t.Logf("tshark: %d messages dissected, expert:\n%s", len(msgs), expert)
			}
		})
	}
}

// TestIPFIXDump reads an IPFIX file (the messages back to back, RFC 5655)
// with libfixbuf's ipfixDump and requires no warnings and every record.
func TestIPFIXDump(t *testing.T) {
	for _, packing := range []string{"plain", "filled", "padded"} {
		t.Run(packing, func(t *testing.T) { testIPFIXDump(t, packing) })
	}
}

// testIPFIXDump is TestIPFIXDump, on messages packed as packing says (see
// peerMessages).
func testIPFIXDump(t *testing.T, packing string) {
	ipfixDump := testutil.RequireTool(t, "ipfixDump")
	msgs := peerMessages(t, templates.IPFIX, packing)
	path := filepath.Join(t.TempDir(), "export.ipfix")
	if err := os.WriteFile(path, bytes.Join(msgs, nil), 0o644); err != nil {
		t.Fatal(err)
	}
	out := runTool(t, ipfixDump, "--in", path)
	for _, bad := range []string{"warning", "Warning", "error", "Error", "unknown", "Unknown"} {
		if i := strings.Index(out, bad); i >= 0 {
			t.Errorf("ipfixDump output has %q:\n%s", bad, surrounding(out, i))
		}
	}
	var records int
	for _, m := range gfDecodeAll(t, msgs) {
		records += len(m.Flows) + len(m.Options)
	}
	if n := strings.Count(out, "--- data record"); n != records {
		t.Errorf("ipfixDump printed %d data records, want %d", n, records)
	}
	for _, want := range []string{"interfaceName", "veth-with-a-very", "interfaceDescription", "notSentFlowTotalCount", "selectorAlgorithm"} {
		if !strings.Contains(out, want) {
			t.Errorf("ipfixDump output lacks %q", want)
		}
	}
}

func surrounding(s string, i int) string {
	return s[max(0, i-600):min(len(s), i+300)]
}
