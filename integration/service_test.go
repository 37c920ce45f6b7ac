package integration

import (
	"debug/elf"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"
)

// The tests here check hostflow as a service: SIGHUP reload without losing
// a count, the capabilities it runs with as a non-root user, and the
// packages `make package` builds.

// svcConfig writes a config file for a test.
func svcConfig(t *testing.T, path, body string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
}

// svcSignal sends sig to the process.
func svcSignal(t *testing.T, p *process, sig os.Signal) {
	t.Helper()
	if err := p.cmd.Process.Signal(sig); err != nil {
		t.Fatalf("signal %v: %v", sig, err)
	}
}

// svcWaitCount waits until the output holds s at least n times.
func svcWaitCount(t *testing.T, p *process, s string, n int, limit time.Duration) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for strings.Count(p.output.String(), s) < n {
		if time.Now().After(deadline) {
			t.Fatalf("%q not printed %d times within %v:\n%s", s, n, limit, p.output.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// svcScrape GETs /metrics from addr inside the namespace: the socket is
// made in the namespace, the request is sent from the test.
func svcScrape(t *testing.T, ns *namespace, addr string) string {
	t.Helper()
	var conn net.Conn
	ns.do(t, func() (err error) {
		conn, err = net.DialTimeout("tcp", addr, 5*time.Second)
		return err
	})
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := fmt.Fprintf(conn, "GET /metrics HTTP/1.0\r\nHost: %s\r\n\r\n", addr); err != nil {
		t.Fatal(err)
	}
	body, err := io.ReadAll(conn)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(string(body), "HTTP/1.0 200") {
		t.Fatalf("GET /metrics:\n%s", body)
	}
	return string(body)
}

// svcMetric returns the value of one sample line (name{labels}), or "".
func svcMetric(body, sample string) string {
	re := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(sample) + ` (\S+)$`)
	if m := re.FindStringSubmatch(body); m != nil {
		return m[1]
	}
	return ""
}

// svcRecords reads the records of the one nfcapd file in dir.
func svcRecords(t *testing.T, dir string) []nfRecord {
	t.Helper()
	out := sh(t, "nfdump", "-r", nfdumpFile(t, dir), "-o", "json")
	var recs []nfRecord
	if strings.TrimSpace(out) == "" {
		return nil
	}
	if err := json.Unmarshal([]byte(out), &recs); err != nil {
		t.Fatalf("parse nfdump json: %v\n%s", err, out)
	}
	for i := range recs {
		recs[i].normalize()
	}
	return recs
}

// TestReloadKeepsCounts runs hostflow from a config file, sends traffic,
// rewrites the file (other collector, new interface, other timeouts,
// sampling) and sends SIGHUP, sends more traffic, then an invalid file and
// SIGHUP again, and more traffic. The records both collectors received
// must add up exactly to the veth's counters, and each UDP flow must be in
// exactly one record with its exact count.
func TestReloadKeepsCounts(t *testing.T) {
	requireRoot(t, "ip", "ethtool", "nfcapd", "nfdump", "sysctl")
	bin := buildHostflow(t)

	a := newNamespace(t, "hf-rl-a")
	b := newNamespace(t, "hf-rl-b")
	p := newVethPair(t, a, b, "hfr0", "hfr1")
	a.run(t, "ip", "link", "add", "hfd0", "type", "veth", "peer", "name", "hfd1")
	a.run(t, "ip", "link", "set", "hfd0", "up")
	a.run(t, "ip", "link", "set", "hfd1", "up")

	dir1, dir2 := t.TempDir(), t.TempDir()
	nf1 := start(t, a.command("nfcapd", "-w", dir1, "-b", "127.0.0.1", "-p", "4739", "-t", "3600", "-I", "one"))
	nf2 := start(t, a.command("nfcapd", "-w", dir2, "-b", "127.0.0.1", "-p", "4740", "-t", "3600", "-I", "two"))
	a.waitQuiet(t, "hfr0", time.Second, 20*time.Second)

	conf := filepath.Join(t.TempDir(), "hostflow.yaml")
	common := "poll_interval: 200ms\nstate_dir: " + t.TempDir() + "\nmetrics:\n  listen: 127.0.0.1:9740\n" +
		"control_socket: " + filepath.Join(t.TempDir(), "ctl.sock") + "\n"
	svcConfig(t, conf, common+`
interfaces: [hfr0]
collectors: [ipfix+udp://127.0.0.1:4739]
active_timeout: 60s
idle_timeout: 15s
`)
	hf := start(t, a.command(bin, "--config", conf))
	hf.waitOutput(t, "msg=ready", 15*time.Second)
	before := a.stats(t, "hfr0")

	// Before the reload: to collector one.
	const n, size = 10, 100
	u1c, u1s := udpEcho(t, a, b, p.v4A, p.v4B, n, size)
	tcpTransfer(t, a, b, p.v4A, p.v4B, 100_000)

	svcConfig(t, conf, common+`
interfaces: [hfr0, hfd0]
collectors: [ipfix+udp://127.0.0.1:4740]
active_timeout: 30s
idle_timeout: 10s
sampling: 1
`)
	svcSignal(t, hf, syscall.SIGHUP)
	svcWaitCount(t, hf, "msg=reloaded", 1, 10*time.Second)

	// After it: to collector two.
	u2c, u2s := udpEcho(t, a, b, p.v6A, p.v6B, n, size)
	tcpTransfer(t, a, b, p.v6A, p.v6B, 100_000)

	// An invalid file changes nothing.
	svcConfig(t, conf, common+"interfaces: [hfr0]\ncollectors: [ipfix+udp://127.0.0.1:4739]\nidle_timout: 1s\n")
	svcSignal(t, hf, syscall.SIGHUP)
	svcWaitCount(t, hf, "msg=\"reload rejected", 1, 10*time.Second)
	if !strings.Contains(hf.output.String(), "idle_timout") {
		t.Errorf("the rejection does not name the unknown key:\n%s", hf.output.String())
	}
	u3c, u3s := udpEcho(t, a, b, p.v4A, p.v4B, n, size)

	m := svcScrape(t, a, "127.0.0.1:9740")
	for sample, want := range map[string]string{
		`hostflow_config_reloads_total{result="success"}`:                              "1",
		`hostflow_config_reloads_total{result="failure"}`:                              "1",
		`hostflow_interface_attached{interface="hfr0",mode="tcx"}`:                     "1",
		`hostflow_interface_attached{interface="hfd0",mode="tcx"}`:                     "1",
		`hostflow_collector_send_errors_total{collector="ipfix+udp://127.0.0.1:4740"}`: "0",
	} {
		if got := svcMetric(m, sample); got != want {
			t.Errorf("%s = %q, want %s", sample, got, want)
		}
	}
	if strings.Contains(m, `collector="ipfix+udp://127.0.0.1:4739"`) {
		t.Error("metrics still list the collector the reload removed")
	}
	if strings.Contains(hf.output.String(), "level=ERROR") && !strings.Contains(hf.output.String(), "reload rejected") {
		t.Errorf("errors logged:\n%s", hf.output.String())
	}

	after := a.waitQuiet(t, "hfr0", 500*time.Millisecond, 10*time.Second)
	hf.stop(t, 20*time.Second)
	time.Sleep(200 * time.Millisecond)
	nf1.stop(t, 10*time.Second)
	nf2.stop(t, 10*time.Second)

	recs1, recs2 := svcRecords(t, dir1), svcRecords(t, dir2)
	var egress, ingress linkStats
	idx := ifindex(t, a, "hfr0")
	for _, r := range append(append([]nfRecord(nil), recs1...), recs2...) {
		if r.Direction == nil {
			t.Fatalf("record without direction: %s", r)
		}
		// hfd0, attached by the reload, has traffic of its own (IPv6
		// link-up chatter): only hfr0's records meet its counters.
		if (*r.Direction == 1 && (r.Output == nil || *r.Output != idx)) ||
			(*r.Direction == 0 && (r.Input == nil || *r.Input != idx)) {
			continue
		}
		if *r.Direction == 1 {
			egress.TxPackets += r.Packets
			egress.TxBytes += r.Bytes
		} else {
			ingress.RxPackets += r.Packets
			ingress.RxBytes += r.Bytes
		}
	}
	txPk, txBy := after.TxPackets-before.TxPackets, after.TxBytes-before.TxBytes
	rxPk, rxBy := after.RxPackets-before.RxPackets, after.RxBytes-before.RxBytes
	t.Logf("collector one %d records, two %d; hfr0 sent %d frames, received %d; exported egress %d, ingress %d",
		len(recs1), len(recs2), txPk, rxPk, egress.TxPackets, ingress.RxPackets)
	if egress.TxPackets != txPk || egress.TxBytes != txBy-14*txPk {
		t.Errorf("egress: exported %d pkts %d bytes, hfr0 sent %d frames = %d IP bytes", egress.TxPackets, egress.TxBytes, txPk, txBy-14*txPk)
	}
	if ingress.RxPackets != rxPk || ingress.RxBytes != rxBy-14*rxPk {
		t.Errorf("ingress: exported %d pkts %d bytes, hfr0 received %d frames = %d IP bytes", ingress.RxPackets, ingress.RxBytes, rxPk, rxBy-14*rxPk)
	}

	for _, w := range []struct {
		name         string
		recs, others []nfRecord
		src          string
		sport, dport int
		bytes        uint64
	}{
		{"udp4 before the reload", recs1, recs2, p.v4A, u1c, u1s, n * (20 + 8 + size)},
		{"udp6 after the reload", recs2, recs1, p.v6A, u2c, u2s, n * (40 + 8 + size)},
		{"udp4 after the rejected reload", recs2, recs1, p.v4A, u3c, u3s, n * (20 + 8 + size)},
	} {
		match := func(recs []nfRecord) []nfRecord {
			var out []nfRecord
			for _, r := range recs {
				if r.Proto == 17 && r.SrcAddress == w.src && r.SrcPort == w.sport && r.DstPort == w.dport {
					out = append(out, r)
				}
			}
			return out
		}
		got, elsewhere := match(w.recs), match(w.others)
		if len(got) != 1 || len(elsewhere) != 0 {
			t.Errorf("%s: %d records at the expected collector, %d at the other: %v %v", w.name, len(got), len(elsewhere), got, elsewhere)
			continue
		}
		if got[0].Packets != n || got[0].Bytes != w.bytes {
			t.Errorf("%s: %d pkts %d bytes, sent %d pkts %d bytes", w.name, got[0].Packets, got[0].Bytes, n, w.bytes)
		}
	}
}

// svcSetpriv is the command line that runs bin as nobody with exactly caps
// (e.g. "+bpf,+net_admin,+perfmon") in its inheritable, ambient and
// bounding sets.
func svcSetpriv(ns *namespace, caps, bin string, args ...string) *exec.Cmd {
	set := "-all," + caps
	return ns.command("setpriv", append([]string{"--reuid=nobody", "--regid=nogroup", "--clear-groups",
		"--inh-caps=" + set, "--ambient-caps=" + set, "--bounding-set=" + set, bin}, args...)...)
}

// svcPublicBinary copies the daemon where nobody can run it.
func svcPublicBinary(t *testing.T, bin string) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "hostflow-caps-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(bin)
	if err != nil {
		t.Fatal(err)
	}
	pub := filepath.Join(dir, "hostflow")
	if err := os.WriteFile(pub, data, 0o755); err != nil {
		t.Fatal(err)
	}
	return pub
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

// TestPackage builds the .deb and .rpm with `make package`, for amd64 and
// arm64, checks their metadata, contents and binaries, verifies the
// systemd unit (its watchdog included), installs the amd64 .deb on this
// machine, checks the man page and the shell completions it installed,
// runs the installed hostflow with the installed config (the interface and
// collector overridden through the environment) as the hostflow user with
// the unit's capabilities, and removes the package again, whatever
// happens.
func TestPackage(t *testing.T) {
	requireRoot(t, "make", "git", "dpkg", "dpkg-deb", "rpm", "systemd-analyze", "setpriv", "ip", "ethtool",
		"nfcapd", "nfdump", "sysctl", "getent", "man", "groff", "bash", "zsh", "fish")
	if exec.Command("dpkg-query", "-W", "-f=${Status}", "hostflow").Run() == nil {
		out, _ := exec.Command("dpkg-query", "-W", "-f=${Status}", "hostflow").Output()
		if strings.Contains(string(out), "installed") {
			if os.Getenv("CI") == "true" {
				t.Fatal("hostflow is installed on the CI machine: the package test must install it itself")
			}
			t.Skip("hostflow is installed on this machine: not touching it")
		}
	}
	root, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	dist := t.TempDir()
	for _, arch := range []string{"amd64", "arm64"} {
		if out, err := exec.Command("make", "-C", root, "package", "DIST="+dist, "ARCH="+arch).CombinedOutput(); err != nil {
			t.Fatalf("make package ARCH=%s: %v\n%s", arch, err, out)
		}
	}
	debs, _ := filepath.Glob(filepath.Join(dist, "hostflow_*_amd64.deb"))
	rpms, _ := filepath.Glob(filepath.Join(dist, "hostflow_*_amd64.rpm"))
	if len(debs) != 1 || len(rpms) != 1 {
		t.Fatalf("make package made %v %v", debs, rpms)
	}
	deb, rpm := debs[0], rpms[0]
	version := strings.TrimSuffix(strings.TrimPrefix(filepath.Base(deb), "hostflow_"), "_amd64.deb")
	for _, f := range []string{deb, rpm} {
		if st, err := os.Stat(f); err == nil {
			t.Logf("%s: %d bytes", filepath.Base(f), st.Size())
		}
	}

	const (
		manPage = "/usr/share/man/man8/hostflow.8.gz"
		bashCmp = "/usr/share/bash-completion/completions/hostflow"
		zshCmp  = "/usr/share/zsh/vendor-completions/_hostflow"
		fishCmp = "/usr/share/fish/vendor_completions.d/hostflow.fish"
	)
	files := []string{"/usr/bin/hostflow", "/etc/hostflow/hostflow.yaml",
		"/usr/lib/systemd/system/hostflow.service", "/usr/lib/sysusers.d/hostflow.conf",
		manPage, bashCmp, zshCmp, fishCmp}

	// Both architectures: metadata, contents and the binary's machine.
	for _, tc := range []struct {
		arch, rpmArch string
		machine       elf.Machine
	}{
		{"amd64", "x86_64", elf.EM_X86_64},
		{"arm64", "aarch64", elf.EM_AARCH64},
	} {
		d := filepath.Join(dist, "hostflow_"+version+"_"+tc.arch+".deb")
		r := filepath.Join(dist, "hostflow_"+version+"_"+tc.arch+".rpm")
		if info := sh(t, "dpkg-deb", "-I", d); !strings.Contains(info, "Architecture: "+tc.arch+"\n") {
			t.Errorf("%s: dpkg-deb -I lacks Architecture: %s:\n%s", tc.arch, tc.arch, info)
		}
		if got := sh(t, "rpm", "-qp", "--qf", "%{ARCH}", r); got != tc.rpmArch {
			t.Errorf("%s: rpm arch %q, want %s", tc.arch, got, tc.rpmArch)
		}
		contents, list := sh(t, "dpkg-deb", "-c", d), sh(t, "rpm", "-qlp", r)
		for _, f := range files {
			if !strings.Contains(contents, " ."+f+"\n") {
				t.Errorf("%s: dpkg-deb -c lacks %s:\n%s", tc.arch, f, contents)
			}
			if !strings.Contains(list, f+"\n") {
				t.Errorf("%s: rpm -qlp lacks %s:\n%s", tc.arch, f, list)
			}
		}
		x := t.TempDir()
		sh(t, "dpkg-deb", "-x", d, x)
		bin, err := elf.Open(filepath.Join(x, "usr/bin/hostflow"))
		if err != nil {
			t.Fatalf("%s: %v", tc.arch, err)
		}
		if bin.Machine != tc.machine || bin.Class != elf.ELFCLASS64 || bin.ByteOrder != binary.LittleEndian {
			t.Errorf("%s: /usr/bin/hostflow is %v %v %v, want %v", tc.arch, bin.Class, bin.Machine, bin.ByteOrder, tc.machine)
		}
		bin.Close()
	}

	// .deb metadata and contents.
	info := sh(t, "dpkg-deb", "-I", deb)
	for _, w := range []string{"Package: hostflow", "Version: " + version + "-1", "Architecture: amd64",
		"conffiles", "postinst", "prerm", "postrm"} {
		if !strings.Contains(info, w) {
			t.Errorf("dpkg-deb -I lacks %q:\n%s", w, info)
		}
	}
	if got := strings.TrimSpace(sh(t, "dpkg-deb", "-I", deb, "conffiles")); got != "/etc/hostflow/hostflow.yaml" {
		t.Errorf("conffiles %q", got)
	}
	contents := sh(t, "dpkg-deb", "-c", deb)
	for _, f := range files {
		if !strings.Contains(contents, " ."+f+"\n") {
			t.Errorf("dpkg-deb -c lacks %s:\n%s", f, contents)
		}
	}
	if !strings.Contains(contents, "-rwxr-xr-x root/root") {
		t.Errorf("no executable in the .deb:\n%s", contents)
	}

	// .rpm contents; the config is %config(noreplace).
	rpmOut := func(args ...string) string {
		out, err := exec.Command("rpm", args...).Output()
		if err != nil {
			t.Fatalf("rpm %v: %v", args, err)
		}
		return string(out)
	}
	list := rpmOut("-qlp", rpm)
	for _, f := range files {
		if !strings.Contains(list, f+"\n") {
			t.Errorf("rpm -qlp lacks %s:\n%s", f, list)
		}
	}
	if flags := rpmOut("-qp", "--qf", "[%{FILENAMES} %{FILEFLAGS:fflags}\n]", rpm); !strings.Contains(flags, "/etc/hostflow/hostflow.yaml cn\n") {
		t.Errorf("config is not %%config(noreplace):\n%s", flags)
	}
	if scripts := rpmOut("-qp", "--scripts", rpm); !strings.Contains(scripts, "systemd-sysusers") || !strings.Contains(scripts, "useradd") {
		t.Errorf("rpm scripts do not create the user:\n%s", scripts)
	}

	// Install. Where systemd runs, the postinst would start the service on
	// this host's interfaces: mask it for the test's lifetime.
	if st, err := os.Stat("/run/systemd/system"); err == nil && st.IsDir() {
		sh(t, "systemctl", "mask", "--runtime", "hostflow.service")
		t.Cleanup(func() { _ = exec.Command("systemctl", "unmask", "--runtime", "hostflow.service").Run() })
	}
	_, userErr := exec.Command("getent", "passwd", "hostflow").Output()
	hadUser := userErr == nil
	t.Cleanup(func() {
		if out, err := exec.Command("dpkg", "--purge", "hostflow").CombinedOutput(); err != nil {
			t.Errorf("dpkg --purge hostflow: %v\n%s", err, out)
		}
		if !hadUser {
			_ = exec.Command("userdel", "hostflow").Run()
			_ = exec.Command("groupdel", "hostflow").Run()
		}
	})
	install := exec.Command("dpkg", "-i", deb)
	install.Env = append(os.Environ(), "DEBIAN_FRONTEND=noninteractive")
	if out, err := install.CombinedOutput(); err != nil {
		t.Fatalf("dpkg -i: %v\n%s", err, out)
	}
	for _, f := range files {
		if _, err := os.Stat(f); err != nil {
			t.Errorf("installed: %v", err)
		}
	}
	pw := sh(t, "getent", "passwd", "hostflow")
	if !strings.Contains(pw, "nologin") {
		t.Errorf("hostflow user: %q", pw)
	}
	sh(t, "systemd-analyze", "verify", "/usr/lib/systemd/system/hostflow.service")
	if unit, err := os.ReadFile("/usr/lib/systemd/system/hostflow.service"); err != nil || !regexp.MustCompile(`(?m)^WatchdogSec=\d+s$`).Match(unit) {
		t.Errorf("the installed unit has no WatchdogSec= (%v):\n%s", err, unit)
	}

	// The man page: it renders without a warning, as man shows it.
	roff := sh(t, "sh", "-c", "gunzip -c "+manPage+" | groff -man -Tutf8 -ww -z 2>&1")
	if roff != "" {
		t.Errorf("groff -ww %s:\n%s", manPage, roff)
	}
	page := manText(t, manPage)
	for _, w := range []string{"HOSTFLOW(8)", "SYNOPSIS", "hostflow check-config", "--collector", "HOSTFLOW_COLLECTORS",
		"WatchdogSec", "EXIT STATUS", "hostflow " + version} {
		if !strings.Contains(page, w) {
			t.Errorf("man -l %s lacks %q:\n%s", manPage, w, page)
		}
	}
	// The completions: each shell loads its file.
	if got := strings.TrimSpace(sh(t, "bash", "-c", "source "+bashCmp+"; complete -p hostflow")); got != "complete -F _hostflow hostflow" {
		t.Errorf("bash: complete -p hostflow: %q", got)
	}
	if got := sh(t, "bash", "-c", `source `+bashCmp+`; COMP_WORDS=(hostflow --mode ""); COMP_CWORD=2; _hostflow; echo "${COMPREPLY[*]}"`); got != "host router\n" {
		t.Errorf("bash completes hostflow --mode with %q", got)
	}
	sh(t, "zsh", "-n", zshCmp)
	if got := sh(t, "fish", "--no-config", "-c", "source "+fishCmp+"; complete -C 'hostflow completion '"); got != "bash\nfish\nzsh\n" {
		t.Errorf("fish completes hostflow completion with %q", got)
	}
	if out := sh(t, "/usr/bin/hostflow", "version"); !strings.Contains(out, version) {
		t.Errorf("hostflow version: %q, want %s", out, version)
	}
	if out := sh(t, "/usr/bin/hostflow", "check-config"); !strings.Contains(out, "file: /etc/hostflow/hostflow.yaml") {
		t.Errorf("check-config of the installed file:\n%s", out)
	}

	// Run it as the unit would: the hostflow user, three capabilities,
	// the installed config; interface and collector from the environment.
	a := newNamespace(t, "hf-pkg-a")
	b := newNamespace(t, "hf-pkg-b")
	p := newVethPair(t, a, b, "hfk0", "hfk1")
	dir := t.TempDir()
	nf := start(t, a.command("nfcapd", "-w", dir, "-b", "127.0.0.1", "-p", "4741", "-t", "3600", "-I", "pkg"))
	a.waitQuiet(t, "hfk0", time.Second, 20*time.Second)
	set := "-all,+bpf,+net_admin,+perfmon"
	cmd := a.command("setpriv", "--reuid=hostflow", "--regid=hostflow", "--clear-groups", "--inh-caps="+set,
		"--ambient-caps="+set, "--bounding-set="+set, "/usr/bin/hostflow", "--state-dir=", "--poll-interval=200ms")
	cmd.Env = append(os.Environ(), "HOSTFLOW_INTERFACES=hfk0", "HOSTFLOW_COLLECTORS=ipfix+udp://127.0.0.1:4741")
	hf := start(t, cmd)
	hf.waitOutput(t, "msg=ready", 15*time.Second)
	if !strings.Contains(hf.output.String(), "config=/etc/hostflow/hostflow.yaml") {
		t.Errorf("the installed config was not read:\n%s", hf.output.String())
	}
	cport, sport := udpEcho(t, a, b, p.v4A, p.v4B, 10, 100)
	hf.stop(t, 20*time.Second)
	time.Sleep(200 * time.Millisecond)
	nf.stop(t, 10*time.Second)
	var found int
	for _, r := range svcRecords(t, dir) {
		if r.Proto == 17 && r.SrcAddress == p.v4A && r.SrcPort == cport && r.DstPort == sport {
			found++
			if r.Packets != 10 || r.Bytes != 10*(20+8+100) {
				t.Errorf("udp flow: %d pkts %d bytes, want 10 and %d", r.Packets, r.Bytes, 10*(20+8+100))
			}
		}
	}
	if found != 1 {
		t.Errorf("%d records of the udp flow, want 1", found)
	}
}

// manText renders an installed man page as man(1) shows it, without
// bold, underline or hyphenation at line ends.
func manText(t *testing.T, path string) string {
	t.Helper()
	cmd := exec.Command("man", "-l", path)
	cmd.Env = append(os.Environ(), "MANWIDTH=200", "MANPAGER=cat", "PAGER=cat", "MAN_KEEP_FORMATTING=0", "GROFF_NO_SGR=1")
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("man -l %s: %v", path, err)
	}
	return regexp.MustCompile(".\b").ReplaceAllString(string(out), "")
}
