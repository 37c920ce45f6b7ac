package integration

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestRestartAfterSIGKILL kills hostflow in clsact mode with SIGKILL, which
// leaves its cls_bpf filters and the clsact qdisc it created in the
// kernel, then starts it again: the new process must find and remove them,
// capture normally, and leave nothing behind when it stops.
func TestRestartAfterSIGKILL(t *testing.T) {
	requireRoot(t, "ip", "ethtool", "tc", "sysctl")
	bin := buildHostflow(t)
	a := newNamespace(t, "hf-kill-a")
	b := newNamespace(t, "hf-kill-b")
	newVethPair(t, a, b, "hfk0", "hfk1")
	state := t.TempDir()
	sock := filepath.Join(state, "ctl.sock")
	args := []string{"--config", "/dev/null", "--state-dir", state, "--metrics-enabled=false",
		"--interfaces", "hfk0", "--attach", "clsact", "--poll-interval", "200ms", "--control-socket", sock}

	filters := func() string {
		return a.run(t, "tc", "filter", "show", "dev", "hfk0", "ingress") + a.run(t, "tc", "filter", "show", "dev", "hfk0", "egress")
	}
	qdisc := func() bool { return strings.Contains(a.run(t, "tc", "qdisc", "show", "dev", "hfk0"), "clsact") }

	first := start(t, a.command(bin, args...))
	first.waitOutput(t, "msg=ready", 15*time.Second)
	if err := first.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	if err := <-first.done; err == nil {
		t.Fatal("SIGKILL: exit status 0")
	}
	first.done <- nil
	left := filters()
	if !strings.Contains(left, "hostflow_ingress") || !strings.Contains(left, "hostflow_egress") || !qdisc() {
		t.Fatalf("after SIGKILL the filters and qdisc should still be there (else this test proves nothing):\n%s", left)
	}

	// The killed daemon's control socket is left, answered by no one:
	// the restart replaces it.
	if fi, err := os.Stat(sock); err != nil || fi.Mode().Type() != os.ModeSocket {
		t.Fatalf("after SIGKILL the control socket should still be there: %v, %v", fi, err)
	}

	second := start(t, a.command(bin, args...))
	second.waitOutput(t, "msg=ready", 15*time.Second)
	if out, err := exec.Command(bin, "stats", "--control-socket", sock).CombinedOutput(); err != nil {
		t.Errorf("stats after the restart over a stale socket: %v\n%s", err, out)
	}
	if n := strings.Count(filters(), "hostflow_"); n != 2 {
		t.Errorf("after restart %d hostflow filters, want 2 (the new ones):\n%s", n, filters())
	}
	if !strings.Contains(second.output.String(), "msg=\"removed filters and qdiscs left by a previous hostflow\" count=3") {
		t.Errorf("the restart did not report removing what the killed process left:\n%s", second.output.String())
	}
	second.stop(t, 20*time.Second)
	if f := filters(); strings.Contains(f, "hostflow") || qdisc() {
		t.Errorf("after a clean stop: filters %q, clsact qdisc %v", f, qdisc())
	}
}
