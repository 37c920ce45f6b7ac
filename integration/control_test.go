package integration

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// ctlFlow is what the tests read of a line of hostflow flows --json and of
// the stdout JSON lines: the same field names.
type ctlFlow struct {
	Src       string `json:"src"`
	Dst       string `json:"dst"`
	SrcPort   int    `json:"src_port"`
	DstPort   int    `json:"dst_port"`
	Proto     int    `json:"proto"`
	IfIndex   int    `json:"ifindex"`
	IfName    string `json:"ifname"`
	Direction string `json:"direction"`
	Packets   uint64 `json:"packets"`
	Bytes     uint64 `json:"bytes"`
	Start     string `json:"start"`
	End       string `json:"end"`
	EndReason string `json:"end_reason"`
}

// hostflowCmd runs a hostflow client command and returns its stdout,
// stderr and exit code.
func hostflowCmd(t *testing.T, bin string, args ...string) (string, string, int) {
	t.Helper()
	cmd := exec.Command(bin, args...)
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err := cmd.Run()
	var ee *exec.ExitError
	switch {
	case err == nil:
		return out.String(), errOut.String(), 0
	case errors.As(err, &ee):
		return out.String(), errOut.String(), ee.ExitCode()
	}
	t.Fatalf("%v: %v", cmd.Args, err)
	return "", "", 0
}

func parseFlows(t *testing.T, s string) []ctlFlow {
	t.Helper()
	var out []ctlFlow
	for _, l := range strings.Split(strings.TrimSpace(s), "\n") {
		if !strings.HasPrefix(l, "{") {
			continue
		}
		var f ctlFlow
		if err := json.Unmarshal([]byte(l), &f); err != nil {
			t.Fatalf("line %q: %v", l, err)
		}
		out = append(out, f)
	}
	return out
}

// udpFlows keeps the UDP flows between the two ports.
func udpFlows(flows []ctlFlow, p1, p2 int) []ctlFlow {
	var out []ctlFlow
	for _, f := range flows {
		if f.Proto == 17 && (f.SrcPort == p1 && f.DstPort == p2 || f.SrcPort == p2 && f.DstPort == p1) {
			out = append(out, f)
		}
	}
	return out
}

// TestControlSocket runs the daemon in a namespace and asks it over its
// control socket: flows lists the flows of traffic over a veth with exact
// packet counts (table, --json, --sort, --top), stats counts, expire sends
// them to stdout at once although the idle timeout is an hour away; a
// second daemon on the same socket refuses to start; once the daemon is
// gone, a command says there is no daemon and exits 1.
func TestControlSocket(t *testing.T) {
	requireRoot(t, "ip", "ethtool", "sysctl", "setpriv")
	// Where nobody may run it and reach the socket: the group test below.
	bin := svcPublicBinary(t, buildHostflow(t))
	a := newNamespace(t, "hf-ctl-a")
	b := newNamespace(t, "hf-ctl-b")
	p := newVethPair(t, a, b, "hfx0", "hfx1")
	idx := ifindex(t, a, "hfx0")
	a.waitQuiet(t, "hfx0", time.Second, 20*time.Second)

	sock := filepath.Join(filepath.Dir(bin), "ctl.sock")
	args := []string{"--config", "/dev/null", "--state-dir", t.TempDir(), "--metrics-enabled=false",
		"--interfaces", "hfx0", "--poll-interval", "200ms", "--idle-timeout", "1h", "--active-timeout", "2h",
		"--control-socket", sock}
	hf := start(t, a.command(bin, args...))
	hf.waitOutput(t, "msg=ready", 15*time.Second)
	fi, err := os.Stat(sock)
	if err != nil || fi.Mode().Type() != os.ModeSocket || fi.Mode().Perm() != 0o660 {
		t.Fatalf("control socket: %v, %v: want a socket of mode 0660", fi, err)
	}

	// A second daemon on the same socket stops before loading anything.
	second := start(t, a.command(bin, args...))
	select {
	case err := <-second.done:
		second.done <- err
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() != 1 || !strings.Contains(second.output.String(), "another hostflow is running") {
			t.Errorf("second daemon: %v:\n%s", err, second.output.String())
		}
	case <-time.After(15 * time.Second):
		t.Fatalf("a second daemon on the same control socket did not stop:\n%s", second.output.String())
	}

	c1, s1 := udpEcho(t, a, b, p.v4A, p.v4B, 10, 100) // many small packets
	c2, s2 := udpEcho(t, a, b, p.v4A, p.v4B, 3, 1200) // few large ones

	out, errOut, code := hostflowCmd(t, bin, "flows", "--json", "--control-socket", sock)
	if code != 0 {
		t.Fatalf("flows --json: exit %d: %s", code, errOut)
	}
	all := parseFlows(t, out)
	small, large := udpFlows(all, c1, s1), udpFlows(all, c2, s2)
	if len(small) != 2 || len(large) != 2 {
		t.Fatalf("flows --json: want 2 flows of each echo (egress, ingress):\n%s", out)
	}
	for _, f := range append(small, large...) {
		want := uint64(10)
		if f.SrcPort == c2 || f.DstPort == c2 {
			want = 3
		}
		if f.Packets != want || f.IfName != "hfx0" || f.IfIndex != idx || f.Start == "" || f.End == "" || f.EndReason != "" {
			t.Errorf("flow %+v: want %d packets on hfx0 (%d), times, no end reason", f, want, idx)
		}
		if f.Direction == "egress" && (f.Src != p.v4A || f.Dst != p.v4B) || f.Direction == "ingress" && (f.Src != p.v4B || f.Dst != p.v4A) {
			t.Errorf("flow %+v: direction and addresses disagree", f)
		}
	}

	// The table names the interface and the endpoints.
	out, _, code = hostflowCmd(t, bin, "flows", "--control-socket", sock)
	if code != 0 || !strings.HasPrefix(out, "SRC ") ||
		!strings.Contains(out, fmt.Sprintf("%s:%d", p.v4A, c1)) || !strings.Contains(out, fmt.Sprintf("hfx0(%d)", idx)) {
		t.Errorf("flows table:\n%s", out)
	}
	// --sort and --top: the large datagrams' flows have more bytes, the
	// small ones' more packets.
	for _, tc := range []struct {
		sort  string
		ports [2]int
	}{{"bytes", [2]int{c2, s2}}, {"packets", [2]int{c1, s1}}} {
		out, _, code := hostflowCmd(t, bin, "flows", "--json", "--sort", tc.sort, "--top", "2", "--control-socket", sock)
		got := parseFlows(t, out)
		if code != 0 || len(got) != 2 || len(udpFlows(got, tc.ports[0], tc.ports[1])) != 2 {
			t.Errorf("flows --sort %s --top 2: want the 2 flows of ports %v:\n%s", tc.sort, tc.ports, out)
		}
	}

	out, errOut, code = hostflowCmd(t, bin, "stats", "--json", "--control-socket", sock)
	var st struct {
		PacketsSeen   uint64            `json:"packets_seen"`
		FlowsActive   int               `json:"flows_active"`
		FlowsExported map[string]uint64 `json:"flows_exported"`
		Kernel        map[string]uint64 `json:"kernel"`
	}
	if err := json.Unmarshal([]byte(out), &st); code != 0 || err != nil {
		t.Fatalf("stats --json: exit %d, %v: %s%s", code, err, out, errOut)
	}
	if st.FlowsActive < 4 || st.PacketsSeen < 26 || st.FlowsExported["idle"] != 0 || st.Kernel["ringbuf_full"] != 0 || len(st.Kernel) != 7 || st.Kernel["fate_malformed"] != 0 {
		t.Errorf("stats --json: %s", out)
	}
	out, _, code = hostflowCmd(t, bin, "stats", "--control-socket", sock)
	if code != 0 || !strings.Contains(out, "flows active") || !strings.Contains(out, "kernel ring buffer full (lost)") ||
		!strings.Contains(out, "collectors") {
		t.Errorf("stats:\n%s", out)
	}

	// Mode 0660: a user outside the socket's group may not connect, one
	// in it may (as an operator in group hostflow with the service).
	asNobody := func() (string, string, int) {
		return hostflowCmd(t, "setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", bin, "stats", "--control-socket", sock)
	}
	if out, errOut, code := asNobody(); code != 1 || !strings.Contains(errOut, "permission denied") {
		t.Errorf("stats as nobody, socket root:root 0660: exit %d, %q %q; want permission denied", code, out, errOut)
	}
	if err := os.Chown(sock, 0, 65534); err != nil { // group nogroup
		t.Fatal(err)
	}
	if out, errOut, code := asNobody(); code != 0 || !strings.Contains(out, "flows active") {
		t.Errorf("stats as nobody in the socket's group: exit %d, %q %q", code, out, errOut)
	}

	// expire: on stdout at once, an hour before the idle timeout.
	out, errOut, code = hostflowCmd(t, bin, "expire", "--control-socket", sock)
	if code != 0 || !strings.HasPrefix(out, "exported ") {
		t.Fatalf("expire: exit %d: %s%s", code, out, errOut)
	}
	exported := udpFlows(parseFlows(t, hf.output.String()), c1, s1)
	if len(exported) != 2 {
		t.Fatalf("after expire, want the 2 flows of the small echo on stdout:\n%s", hf.output.String())
	}
	for _, f := range exported {
		if f.Packets != 10 || f.EndReason != "forced" || f.IfName != "hfx0" {
			t.Errorf("exported %+v: want 10 packets, forced end, ifname hfx0", f)
		}
	}
	out, _, _ = hostflowCmd(t, bin, "flows", "--json", "--control-socket", sock)
	if left := udpFlows(parseFlows(t, out), c1, s1); len(left) != 0 {
		t.Errorf("flows still cached after expire: %+v", left)
	}

	hf.stop(t, 20*time.Second)
	if !strings.Contains(hf.output.String(), " flows_forced=") || strings.Contains(hf.output.String(), "flows_exported=") {
		t.Errorf("the stop line does not label its counts:\n%s", hf.output.String())
	}
	if _, err := os.Stat(sock); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("control socket after stop: %v", err)
	}
	out, errOut, code = hostflowCmd(t, bin, "stats", "--control-socket", sock)
	if code != 1 || out != "" || !strings.HasPrefix(errOut, "hostflow: no daemon at "+sock+": ") {
		t.Errorf("stats with no daemon: exit %d, stdout %q, stderr %q", code, out, errOut)
	}
}
