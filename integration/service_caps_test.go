package integration

// hostflow as a service: the capabilities it runs with as a non-root user.

import (
	"errors"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// svcSetpriv is the command line that runs bin as nobody with exactly caps
// (e.g. "+bpf,+net_admin,+perfmon") in its inheritable, ambient and
// bounding sets.
func svcSetpriv(ns *namespace, caps, bin string, args ...string) *exec.Cmd {
	set := "-all," + caps
	return ns.command("setpriv", append([]string{"--reuid=nobody", "--regid=nogroup", "--clear-groups",
		"--inh-caps=" + set, "--ambient-caps=" + set, "--bounding-set=" + set, bin}, args...)...)
}

// TestCapabilities runs hostflow as nobody with only CAP_BPF, CAP_NET_ADMIN
// and CAP_PERFMON, as the systemd unit does: it must capture and export.
// Without one of them it must fail at once, naming the capability.
func TestCapabilities(t *testing.T) {
	requireRoot(t, "ip", "ethtool", "setpriv", "sysctl")
	bin := svcPublicBinary(t, buildHostflow(t))
	a := newNamespace(t, "hf-cap-a")
	b := newNamespace(t, "hf-cap-b")
	p := newVethPair(t, a, b, "hfc0", "hfc1")
	a.waitQuiet(t, "hfc0", time.Second, 20*time.Second)

	args := []string{"--config", "/dev/null", "--interfaces", "hfc0", "--poll-interval", "200ms", "--state-dir=", "--control-socket="}
	hf := start(t, svcSetpriv(a, "+bpf,+net_admin,+perfmon", bin, args...))
	hf.waitOutput(t, "msg=ready", 15*time.Second)
	cport, sport := udpEcho(t, a, b, p.v4A, p.v4B, 10, 100)
	m := svcScrape(t, a, "127.0.0.1:9740")
	if svcMetric(m, `hostflow_interface_attached{interface="hfc0",mode="tcx"}`) != "1" {
		t.Errorf("metrics as nobody: hfc0 not attached:\n%s", m)
	}
	hf.stop(t, 20*time.Second)
	var found bool
	for _, f := range jsonFlows(t, hf.output.String()) {
		if f.Proto == 17 && f.Src == p.v4A && f.SrcPort == cport && f.DstPort == sport && f.Direction == "egress" {
			found = true
			if f.Packets != 10 || f.Bytes != 10*(20+8+100) {
				t.Errorf("udp flow as nobody: %d pkts %d bytes, want 10 and %d", f.Packets, f.Bytes, 10*(20+8+100))
			}
		}
	}
	if !found {
		t.Errorf("no record of the udp flow:\n%s", hf.output.String())
	}

	for _, tc := range []struct{ caps, missing string }{
		{"+bpf,+perfmon", "CAP_NET_ADMIN"},
		{"+net_admin,+perfmon", "CAP_BPF"},
		{"+bpf,+net_admin", "CAP_PERFMON"},
	} {
		out, err := svcSetpriv(a, tc.caps, bin, args...).CombinedOutput()
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() != 1 {
			t.Errorf("caps %s: exit %v, want 1\n%s", tc.caps, err, out)
		}
		if !strings.Contains(string(out), "missing "+tc.missing) {
			t.Errorf("caps %s: output does not say missing %s:\n%s", tc.caps, tc.missing, out)
		}
	}
}
