package integration

// hostflow as a service: the packages `make package` builds.

import (
	"debug/elf"
	"encoding/binary"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/hostflow/hostflow/internal/testutil"
)

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
			testutil.SkipOrFail(t, "hostflow is installed on this machine: the package test installs and purges it itself, so it does not touch an installed one")
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
	for _, args := range [][]string{{"version"}, {"--version"}, {"-v"}, {"--interfaces", "eth0", "--version"}} {
		if out := sh(t, "/usr/bin/hostflow", args...); !strings.Contains(out, version) {
			t.Errorf("hostflow %s: %q, want %s", strings.Join(args, " "), out, version)
		}
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
	nf := start(t, a.command("nfcapd", "-w", dir, "-b", "127.0.0.1", "-p", "4741", "-t", "3600", "-I", "pkg", "-v"))
	nf.waitOutput(t, "Startup nfcapd.", 20*time.Second) // logged after the bind
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
	a.waitUDPQueueEmpty(t, 4741, 10*time.Second) // nfcapd has read every datagram
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
