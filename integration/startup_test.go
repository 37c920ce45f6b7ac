package integration

import (
	"strings"
	"testing"
	"time"
)

// TestStartBeforeInterfaces starts hostflow with rules that select no link
// yet (a /regex/ and an exact name), as at boot or on a container host
// whose veths come later: it warns, keeps running, attaches the links when
// they appear, and counts and exports their packets.
func TestStartBeforeInterfaces(t *testing.T) {
	requireRoot(t, "ip", "ethtool", "sysctl")
	bin := buildHostflow(t)
	a := newNamespace(t, "hf-late-a")
	b := newNamespace(t, "hf-late-b")

	hf := start(t, a.command(bin, daemonArgs(t, "--interfaces", "/^hfz/,hfy0", "--poll-interval", "200ms")...))
	hf.waitOutput(t, "msg=ready", 15*time.Second)
	for _, w := range []string{
		`level=WARN msg="no interface selected yet`,
		`level=WARN msg="interface does not exist yet: attached when it appears" interface=hfy0`,
	} {
		if !strings.Contains(hf.output.String(), w) {
			t.Errorf("no warning %q in:\n%s", w, hf.output.String())
		}
	}
	// Still running a while later, with nothing to capture.
	time.Sleep(500 * time.Millisecond)
	select {
	case err := <-hf.done:
		hf.done <- err
		t.Fatalf("hostflow exited (%v) with no interface:\n%s", err, hf.output.String())
	default:
	}

	p := newVethPair(t, a, b, "hfz0", "hfz1")
	hf.waitOutput(t, "msg=attached interface=hfz0", 10*time.Second)
	const n = 25
	cport, sport := udpEcho(t, a, b, p.v4A, p.v4B, n, 100)
	hf.stop(t, 20*time.Second)

	var out, in uint64
	for _, f := range jsonFlows(t, hf.output.String()) {
		switch {
		case f.Proto == 17 && f.Direction == "egress" && f.SrcPort == cport && f.DstPort == sport:
			out += f.Packets
		case f.Proto == 17 && f.Direction == "ingress" && f.SrcPort == sport && f.DstPort == cport:
			in += f.Packets
		}
	}
	if out != n || in != n {
		t.Errorf("exported %d datagrams out and %d echoes in on hfz0, want %d each:\n%s", out, in, n, hf.output.String())
	}
}
