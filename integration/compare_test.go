package integration

// hostflow against softflowd, the libpcap flow probe it replaces (issue 11),
// on the same workload in one run. Opt-in (COMPARE_RUN=1): it takes
// minutes and its figures need a machine of its own; bench/compare.sh
// builds bin/hostflow and minflow.o, runs it and prints the table.
//
// Namespace A (hf-cmp-a-*) runs trafgen on hfc0 (60-byte UDP frames over
// 100,608 flows, loadTrafgen); namespace B (hf-cmp-b-*) receives on hfc1,
// where the probe under test watches and exports IPFIX over UDP to nfcapd
// on 127.0.0.1. Each probe run is compared with the baseline runs (same
// packets, no probe) just before and after it; the probes' order alternates
// between repeats.
// Then hostflow's TC program, a no-op and minflow (the floor of per-packet
// flow accounting, shared/bench/minflow.c) share hfc1's tcx ingress hook
// and the kernel's BPF statistics give each one's ns per packet on the same
// packets.
//
//	sudo bench/compare.sh
//	COMPARE_RUN=1 COMPARE_HOSTFLOW_BIN=$PWD/bin/hostflow COMPARE_MINFLOW_OBJ=$PWD/minflow.o \
//	    go test -count=1 -timeout 90m -run '^TestCompare$' -v ./integration/
//
// What the test asserts is only what makes the figures valid: every
// process started, trafgen sent, the three TC programs ran on exactly the
// packets hfc1 received. Speeds, costs and exactness are reported, never
// asserted.

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	tcx "github.com/cilium/ebpf/link"
	"golang.org/x/sys/unix"
)

// compareOpts are the knobs of TestCompare, from the environment.
type compareOpts struct {
	bin         string   // COMPARE_HOSTFLOW_BIN: the hostflow binary (default: built from this tree)
	minflowObj  string   // COMPARE_MINFLOW_OBJ: minflow.c compiled for BPF (required)
	repeats     int      // COMPARE_REPEATS: pairs of runs per probe and layout
	perFlow     int      // COMPARE_PER_FLOW: packets per flow in a throughput run
	tcPackets   int      // COMPARE_TC_PACKETS: packets per TC cost scenario
	layouts     []string // COMPARE_LAYOUTS: "ring" (TX ring, non-linear skbs), "sendto" (-t 0, linear)
	sfMaxFlows  int      // COMPARE_SOFTFLOWD_MAX_FLOWS: softflowd -m
	minflowLast bool     // COMPARE_TC_ORDER=hostflow-first (default) puts minflow after hostflow
	table       string   // COMPARE_TABLE: also write the summary table there
	// COMPARE_PHASES: "throughput" (the probe runs), "tc" (TC program
	// cost), comma-separated; both by default.
	throughput, tc bool
}

func compareEnv(t *testing.T) compareOpts {
	t.Helper()
	num := func(key string, def, lo, hi int) int {
		s := os.Getenv(key)
		if s == "" {
			return def
		}
		n, err := strconv.Atoi(s)
		if err != nil || n < lo || n > hi {
			t.Fatalf("%s=%q: want an integer in [%d, %d]", key, s, lo, hi)
		}
		return n
	}
	o := compareOpts{
		bin:        os.Getenv("COMPARE_HOSTFLOW_BIN"),
		minflowObj: os.Getenv("COMPARE_MINFLOW_OBJ"),
		repeats:    num("COMPARE_REPEATS", 3, 1, 20),
		perFlow:    num("COMPARE_PER_FLOW", 30, 1, 300),
		tcPackets:  num("COMPARE_TC_PACKETS", 1_000_000, 10_000, 30_000_000),
		sfMaxFlows: num("COMPARE_SOFTFLOWD_MAX_FLOWS", 262144, 1024, 1<<24),
		table:      os.Getenv("COMPARE_TABLE"),
	}
	layouts := os.Getenv("COMPARE_LAYOUTS")
	if layouts == "" {
		layouts = "ring,sendto"
	}
	for _, l := range strings.Split(layouts, ",") {
		if l != "ring" && l != "sendto" {
			t.Fatalf("COMPARE_LAYOUTS=%q: want ring and/or sendto, comma-separated", layouts)
		}
		o.layouts = append(o.layouts, l)
	}
	phases := os.Getenv("COMPARE_PHASES")
	if phases == "" {
		phases = "throughput,tc"
	}
	for _, p := range strings.Split(phases, ",") {
		switch p {
		case "throughput":
			o.throughput = true
		case "tc":
			o.tc = true
		default:
			t.Fatalf("COMPARE_PHASES=%q: want throughput and/or tc, comma-separated", phases)
		}
	}
	switch order := os.Getenv("COMPARE_TC_ORDER"); order {
	case "", "hostflow-first":
		o.minflowLast = true
	case "minflow-first":
	default:
		t.Fatalf("COMPARE_TC_ORDER=%q: want hostflow-first or minflow-first", order)
	}
	if o.minflowObj == "" {
		t.Fatalf("COMPARE_MINFLOW_OBJ is not set: compile shared/bench/minflow.c for BPF (bench/compare.sh does) and name the object")
	}
	if _, err := os.Stat(o.minflowObj); err != nil {
		t.Fatalf("COMPARE_MINFLOW_OBJ: %v", err)
	}
	return o
}

// layoutArgs are trafgen's extra arguments for an skb layout.
func layoutArgs(layout string) []string {
	if layout == "sendto" {
		return []string{"-t", "0"} // sendto(2): linear skbs
	}
	return nil // TX ring: non-linear skbs (only the Ethernet header linear)
}

// trafgen1000 is loadTrafgen with 8 x 125 = 1,000 flows (source ports
// cycling with coprime periods, one destination port).
func trafgen1000(t *testing.T) string {
	const ports = "dinc(0, 255), dinc(0, 130), 0x23, dinc(0x28, 0x2a)"
	if !strings.Contains(loadTrafgen, ports) {
		t.Fatalf("loadTrafgen no longer holds %q: update trafgen1000", ports)
	}
	return strings.Replace(loadTrafgen, ports, "dinc(0, 7), dinc(0, 124), 0x23, 0x28", 1)
}

// collectorPort is where nfcapd listens in B, for either probe.
const collectorPort = 4739

// cmpRun is one throughput run: a baseline (probe "") or a probe run.
type cmpRun struct {
	layout, probe string
	repeat        int
	gen           trafgenRun
	load1         float64 // 1-minute load average at the start
	// busy is the machine's busy CPU time (/proc/stat) over the trafgen
	// run, plus, for a probe, the probe's own CPU from trafgen's exit to
	// its own (the final export).
	busy time.Duration
	// daemonCPU is the probe's utime+stime from attached to exited.
	daemonCPU time.Duration
	hwmKB     uint64 // the probe's VmHWM
	rx        uint64 // packets hfc1 received while the probe was attached
	exported  uint64 // packets in the flows its collector stored
	counted   uint64 // packets the probe says it counted
	drops     uint64 // softflowd: packets libpcap dropped
	// collectorDrops are export datagrams B's UDP stack dropped for a
	// full receive buffer during the run (the collector's loss).
	collectorDrops uint64
}

func (r cmpRun) usPerPkt(d time.Duration) float64 {
	return d.Seconds() * 1e6 / float64(r.gen.rx)
}

func (r cmpRun) String() string {
	if r.probe == "" {
		return fmt.Sprintf("layout=%s repeat=%d probe=none load1=%.2f rx=%d pps=%.0f machine_us_per_pkt=%.3f",
			r.layout, r.repeat, r.load1, r.gen.rx, r.gen.steadyPPS, r.usPerPkt(r.busy))
	}
	return fmt.Sprintf("layout=%s repeat=%d probe=%s load1=%.2f rx=%d pps=%.0f machine_us_per_pkt=%.3f daemon_cpu=%v daemon_us_per_pkt=%.3f vmhwm_kb=%d exported=%d counted=%d pcap_dropped=%d collector_dropped_datagrams=%d",
		r.layout, r.repeat, r.probe, r.load1, r.gen.rx, r.gen.steadyPPS, r.usPerPkt(r.busy),
		r.daemonCPU.Round(time.Millisecond), r.usPerPkt(r.daemonCPU), r.hwmKB, r.exported, r.counted, r.drops, r.collectorDrops)
}

// cmpLab is the two namespaces and what every run needs.
type cmpLab struct {
	o        compareOpts
	a, b     *namespace
	bin      string
	cfg      string // 100,608-flow trafgen configuration
	cfg1000  string
	maxCount uint64
}

func TestCompare(t *testing.T) {
	if os.Getenv("COMPARE_RUN") != "1" {
		t.Skip("opt-in benchmark: set COMPARE_RUN=1 (bench/compare.sh does)")
	}
	requireRoot(t, "ip", "ethtool", "sysctl", "trafgen", "softflowd", "softflowctl", "nfcapd", "nfdump")
	o := compareEnv(t)
	bin := o.bin
	if bin == "" {
		bin = buildHostflow(t)
	}
	lab := &cmpLab{o: o, bin: bin, maxCount: uint64(loadFlows * o.perFlow)}
	lab.a = newNamespace(t, "hf-cmp-a")
	lab.b = newNamespace(t, "hf-cmp-b")
	newVethPair(t, lab.a, lab.b, "hfc0", "hfc1")
	lab.a.run(t, "sysctl", "-qw", "net.ipv6.conf.hfc0.disable_ipv6=1")
	lab.b.run(t, "sysctl", "-qw", "net.ipv6.conf.hfc1.disable_ipv6=1")
	lab.cfg = writeTrafgenConfig(t)
	lab.cfg1000 = filepath.Join(t.TempDir(), "1000.trafgen")
	if err := os.WriteFile(lab.cfg1000, []byte(trafgen1000(t)), 0o644); err != nil {
		t.Fatal(err)
	}
	lab.b.waitQuiet(t, "hfc1", time.Second, 20*time.Second)
	t.Logf("COMPARE-SETUP hostflow=%s softflowd -m %d; %d flows x %d packets of %d bytes per run, trafgen -P %d; %d repeats; layouts %v; kernel %s; %d CPUs",
		bin, o.sfMaxFlows, loadFlows, o.perFlow, loadFrameSize, loadProcs, o.repeats, o.layouts, kernelRelease(), cpuCount())

	var runs []cmpRun
	for rep := 1; o.throughput && rep <= o.repeats; rep++ {
		for _, layout := range o.layouts {
			probes := []string{"hostflow", "softflowd"}
			if rep%2 == 0 {
				probes = []string{"softflowd", "hostflow"}
			}
			// baseline, probe, baseline, probe, baseline: each probe
			// run is bracketed by two runs without a probe.
			for i, probe := range append([]string{""}, probes...) {
				if i > 0 {
					r := lab.probeRun(t, layout, probe, rep)
					t.Logf("COMPARE-RUN %s", r)
					runs = append(runs, r)
				}
				base := lab.baseline(t, layout, rep)
				t.Logf("COMPARE-RUN %s", base)
				runs = append(runs, base)
			}
		}
	}

	var tcs []tcCost
	var stats io.Closer
	if o.tc {
		var err error
		if stats, err = ebpf.EnableStats(uint32(unix.BPF_STATS_RUN_TIME)); err != nil {
			t.Fatalf("enable BPF run-time statistics: %v", err)
		}
	}
	for _, flows := range []int{1000, loadFlows} {
		for _, layout := range o.layouts {
			if !o.tc {
				break
			}
			// A subtest each: its programs and links go when it ends.
			t.Run(fmt.Sprintf("tc-%dflows-%s", flows, layout), func(t *testing.T) {
				c := lab.tcRun(t, flows, layout)
				t.Logf("COMPARE-TC %s", c)
				tcs = append(tcs, c)
			})
		}
	}
	if stats != nil {
		if err := stats.Close(); err != nil {
			t.Errorf("release BPF statistics: %v", err)
		}
	}

	table := compareTable(o, runs, tcs)
	t.Logf("COMPARE-TABLE\n%s", table)
	if o.table != "" {
		if err := os.WriteFile(o.table, []byte(table), 0o644); err != nil {
			t.Errorf("write %s: %v", o.table, err)
		}
	}
}

// gen runs trafgen with the 100,608-flow configuration, bounded by count
// (maxCount) and time.
func (l *cmpLab) gen(t *testing.T, layout string) trafgenRun {
	t.Helper()
	g := runTrafgen(t, l.a, "hfc0", l.cfg, loadProcs, l.maxCount, 120*time.Second, l.b, "hfc1", layoutArgs(layout)...)
	if g.rx == 0 {
		t.Fatalf("hfc1 received nothing: %s", g)
	}
	return g
}

// baseline is a run without any probe.
func (l *cmpLab) baseline(t *testing.T, layout string, rep int) cmpRun {
	t.Helper()
	l.b.waitQuiet(t, "hfc1", 500*time.Millisecond, 20*time.Second)
	r := cmpRun{layout: layout, repeat: rep, load1: loadAvg1(t)}
	s0 := machineBusy(t)
	r.gen = l.gen(t, layout)
	r.busy = machineBusy(t) - s0
	return r
}

// probeRun starts a collector and the probe in B, runs the generator and
// stops both, the probe first (its final export).
func (l *cmpLab) probeRun(t *testing.T, layout, probe string, rep int) cmpRun {
	t.Helper()
	r := cmpRun{layout: layout, probe: probe, repeat: rep}
	dir := t.TempDir()
	port := strconv.Itoa(collectorPort)
	// A 4 MiB socket buffer: both probes send every flow at once when
	// they stop, and the default buffer loses a part of that burst.
	col := start(t, l.b.command("nfcapd", "-B", "4194304", "-w", dir, "-b", "127.0.0.1", "-p", port, "-t", "3600", "-I", probe))
	col.waitOutput(t, "Startup", 10*time.Second)

	var pid int
	var stop func() (counted, drops uint64, state *os.ProcessState)
	switch probe {
	case "hostflow":
		dm := startDaemon(t, l.b, l.bin, "--config", "/dev/null", "--state-dir", t.TempDir(), "--control-socket=",
			"--collector", "ipfix+udp://127.0.0.1:"+port)
		pid = dm.cmd.Process.Pid
		stop = func() (uint64, uint64, *os.ProcessState) {
			res := dm.stop(t, 60*time.Second)
			return res.stopped["packets"], 0, dm.cmd.ProcessState
		}
	case "softflowd":
		ctl := filepath.Join(t.TempDir(), "softflowd.ctl")
		sf := start(t, l.b.command("softflowd", "-i", "hfc1", "-n", "127.0.0.1:"+port, "-v", "10", "-d",
			"-m", strconv.Itoa(l.o.sfMaxFlows), "-p", filepath.Join(t.TempDir(), "softflowd.pid"), "-c", ctl))
		sf.waitOutput(t, "starting data collection", 10*time.Second)
		pid = sf.cmd.Process.Pid
		stop = func() (uint64, uint64, *os.ProcessState) {
			// softflowd exports its flows when told to shut down by
			// its control socket; SIGTERM exits without exporting.
			st := sh(t, "softflowctl", "-c", ctl, "statistics")
			counted, drops := softflowdStats(t, st)
			sh(t, "softflowctl", "-c", ctl, "shutdown")
			select {
			case err := <-sf.done:
				sf.done <- err
				// softflowd 1.1.0 exits 1 after a requested shutdown.
				if !strings.Contains(sf.output.String(), "Shutting down on user request") {
					t.Fatalf("softflowd exited (%v) without its shutdown message\n%s", err, sf.output.String())
				}
			case <-time.After(60 * time.Second):
				t.Fatalf("softflowd did not stop within 60s\n%s", sf.output.String())
			}
			return counted, drops, sf.cmd.ProcessState
		}
	default:
		t.Fatalf("unknown probe %q", probe)
	}
	hwm := watchHWM(pid)
	drops0 := l.udpRcvbufErrors(t)

	before := l.b.waitQuiet(t, "hfc1", 500*time.Millisecond, 20*time.Second)
	cpu0 := procCPU(t, pid)
	r.load1 = loadAvg1(t)
	s0 := machineBusy(t)
	r.gen = l.gen(t, layout)
	r.busy = machineBusy(t) - s0
	cpu1 := procCPU(t, pid)
	after := l.b.waitQuiet(t, "hfc1", 500*time.Millisecond, 20*time.Second)
	r.hwmKB = hwm()
	var state *os.ProcessState
	r.counted, r.drops, state = stop()
	if peak := hwm(); peak > r.hwmKB {
		r.hwmKB = peak
	}
	total := state.UserTime() + state.SystemTime()
	r.daemonCPU = total - cpu0
	r.busy += total - cpu1
	r.rx = after.RxPackets - before.RxPackets

	// nfcapd must have read every datagram before it stops.
	l.waitUDPQueueEmpty(t, collectorPort, 20*time.Second)
	col.stop(t, 20*time.Second)
	r.exported = nfcapdPackets(t, dir)
	r.collectorDrops = l.udpRcvbufErrors(t) - drops0
	return r
}

// udpRcvbufErrors is B's count of UDP datagrams dropped because a socket's
// receive buffer was full (/proc/net/snmp Udp RcvbufErrors): the collector
// lost them, not the probe.
func (l *cmpLab) udpRcvbufErrors(t *testing.T) uint64 {
	t.Helper()
	n, err := parseUDPRcvbufErrors(l.b.run(t, "cat", "/proc/net/snmp"))
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// waitUDPQueueEmpty waits (bounded) until the UDP socket bound to port in
// B has nothing left to read.
func (l *cmpLab) waitUDPQueueEmpty(t *testing.T, port int, limit time.Duration) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for {
		q, err := parseUDPRxQueue(l.b.run(t, "cat", "/proc/net/udp"), port)
		if err != nil {
			t.Fatal(err)
		}
		if q == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("the collector on port %d still has %d bytes to read after %v", port, q, limit)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// tcCost is one TC cost scenario: ns per packet of each program on the
// same packets.
type tcCost struct {
	flows             int
	layout            string
	load1             float64
	rx                uint64
	runs              [3]uint64  // hostflow, minflow, no-op
	ns                [3]float64 // per run
	exported          uint64     // packets in hostflow's flows
	minflowAfterHfl   bool
	hostflowProgramID ebpf.ProgramID
}

func (c tcCost) String() string {
	order := "minflow-first"
	if c.minflowAfterHfl {
		order = "hostflow-first"
	}
	return fmt.Sprintf("flows=%d layout=%s load1=%.2f rx=%d hostflow_ns=%.1f minflow_ns=%.1f noop_ns=%.1f hostflow/noop=%.2f minflow/noop=%.2f hostflow/minflow=%.2f exported=%d order=%s",
		c.flows, c.layout, c.load1, c.rx, c.ns[0], c.ns[1], c.ns[2], c.ns[0]/c.ns[2], c.ns[1]/c.ns[2], c.ns[0]/c.ns[1], c.exported, order)
}

// noopProgram is a TC program that returns TC_ACT_UNSPEC (TCX_NEXT) at
// once.
func noopProgram(t *testing.T) *ebpf.Program {
	t.Helper()
	p, err := ebpf.NewProgram(&ebpf.ProgramSpec{
		Name:         "hf_cmp_noop",
		Type:         ebpf.SchedCLS,
		License:      "GPL",
		Instructions: asm.Instructions{asm.Mov.Imm(asm.R0, -1), asm.Return()},
	})
	if err != nil {
		t.Fatalf("load no-op: %v", err)
	}
	t.Cleanup(func() { p.Close() })
	return p
}

// minflowProgram loads a fresh copy of minflow (an empty map).
func minflowProgram(t *testing.T, obj string) *ebpf.Program {
	t.Helper()
	spec, err := ebpf.LoadCollectionSpec(obj)
	if err != nil {
		t.Fatalf("load %s: %v", obj, err)
	}
	coll, err := ebpf.NewCollection(spec)
	if err != nil {
		t.Fatalf("load minflow from %s: %v", obj, err)
	}
	t.Cleanup(coll.Close)
	p := coll.Programs["hf_minflow"]
	if p == nil {
		t.Fatalf("%s has no program hf_minflow", obj)
	}
	return p
}

// tcRun runs hostflow's daemon (default settings, JSON lines) with the
// no-op first and minflow after (or before) hostflow on hfc1's tcx
// ingress, sends tcPackets frames over flows flows, and reads each
// program's run time.
func (l *cmpLab) tcRun(t *testing.T, flows int, layout string) tcCost {
	t.Helper()
	c := tcCost{flows: flows, layout: layout, minflowAfterHfl: l.o.minflowLast}
	cfg := l.cfg
	if flows == 1000 {
		cfg = l.cfg1000
	}
	idx := ifindex(t, l.b, "hfc1")
	dm := startDaemon(t, l.b, l.bin, "--config", "/dev/null", "--state-dir", t.TempDir(), "--control-socket=")
	var hfl *ebpf.Program
	l.b.do(t, func() error {
		res, err := tcx.QueryPrograms(tcx.QueryOptions{Target: idx, Attach: ebpf.AttachTCXIngress})
		if err != nil {
			return fmt.Errorf("query tcx ingress of hfc1: %w", err)
		}
		if len(res.Programs) != 1 {
			return fmt.Errorf("tcx ingress of hfc1 holds %d programs, want hostflow's alone (is hostflow attached with tcx?)", len(res.Programs))
		}
		c.hostflowProgramID = res.Programs[0].ID
		hfl, err = ebpf.NewProgramFromID(c.hostflowProgramID)
		return err
	})
	t.Cleanup(func() { hfl.Close() })
	nop := noopProgram(t)
	mf := minflowProgram(t, l.o.minflowObj)
	attach := func(p *ebpf.Program, anchor tcx.Anchor) {
		t.Helper()
		var lk tcx.Link
		l.b.do(t, func() (err error) {
			lk, err = tcx.AttachTCX(tcx.TCXOptions{Interface: idx, Program: p, Attach: ebpf.AttachTCXIngress, Anchor: anchor})
			return err
		})
		t.Cleanup(func() { lk.Close() })
	}
	// The first program to read a frame pays its cache misses.
	if l.o.minflowLast {
		attach(nop, tcx.Head())
		attach(mf, tcx.Tail())
	} else {
		attach(mf, tcx.Head())
		attach(nop, tcx.Head())
	}
	progs := [3]*ebpf.Program{hfl, mf, nop}
	read := func() (runs [3]uint64, rt [3]time.Duration) {
		for i, p := range progs {
			s, err := p.Stats()
			if err != nil {
				t.Fatalf("stats of %v: %v", p, err)
			}
			runs[i], rt[i] = s.RunCount, s.Runtime
		}
		return runs, rt
	}

	l.b.waitQuiet(t, "hfc1", 500*time.Millisecond, 20*time.Second)
	c.load1 = loadAvg1(t)
	runs0, rt0 := read()
	g := runTrafgen(t, l.a, "hfc0", cfg, loadProcs, uint64(l.o.tcPackets), 120*time.Second, l.b, "hfc1", layoutArgs(layout)...)
	c.rx = g.rx
	var runs1 [3]uint64
	var rt1 [3]time.Duration
	for wait := time.Now().Add(5 * time.Second); ; {
		runs1, rt1 = read()
		done := true
		for i := range progs {
			done = done && runs1[i]-runs0[i] >= c.rx
		}
		if done || time.Now().After(wait) {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	for i := range progs {
		c.runs[i] = runs1[i] - runs0[i]
		if c.runs[i] == 0 {
			t.Fatalf("%v: no run recorded: are BPF statistics on?", progs[i])
		}
		if c.runs[i] != c.rx {
			t.Errorf("%v ran %d times, hfc1 received %d frames: the programs must see the same packets", progs[i], c.runs[i], c.rx)
		}
		c.ns[i] = float64(rt1[i]-rt0[i]) / float64(c.runs[i])
	}
	res := dm.stop(t, 60*time.Second)
	c.exported = res.ingress.RxPackets
	return c
}

// machineBusy is the busy time of every CPU together from /proc/stat:
// user, nice, system, irq, softirq and steal (guest time is inside user).
func machineBusy(t *testing.T) time.Duration {
	t.Helper()
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		t.Fatal(err)
	}
	d, err := parseProcStatBusy(string(b))
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// procCPU is utime+stime of a process from /proc/PID/stat.
func procCPU(t *testing.T, pid int) time.Duration {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		t.Fatal(err)
	}
	d, err := parsePIDStatCPU(string(b))
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// watchHWM samples the VmHWM of pid every 50 ms until it exits or the
// returned function is called for the last time after it exited; the
// function returns the highest value seen so far.
func watchHWM(pid int) func() uint64 {
	read := func() (uint64, bool) {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
		if err != nil {
			return 0, false
		}
		kb, ok := parseVmHWM(string(b))
		return kb, ok
	}
	peak := make(chan uint64, 1)
	peak <- 0
	set := func(v uint64) {
		p := <-peak
		peak <- max(p, v)
	}
	go func() {
		for {
			v, ok := read()
			if !ok {
				return
			}
			set(v)
			time.Sleep(50 * time.Millisecond)
		}
	}()
	return func() uint64 {
		if v, ok := read(); ok {
			set(v)
		}
		p := <-peak
		peak <- p
		return p
	}
}

func loadAvg1(t *testing.T) float64 {
	t.Helper()
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		t.Fatal(err)
	}
	f := strings.Fields(string(b))
	v, err := strconv.ParseFloat(f[0], 64)
	if err != nil {
		t.Fatalf("parse /proc/loadavg %q: %v", b, err)
	}
	return v
}

func kernelRelease() string {
	var u syscall.Utsname
	if err := syscall.Uname(&u); err != nil {
		return "?"
	}
	var b []byte
	for _, c := range u.Release {
		if c == 0 {
			break
		}
		b = append(b, byte(c))
	}
	return string(b)
}

func cpuCount() int {
	var s unix.CPUSet
	if err := unix.SchedGetaffinity(0, &s); err != nil {
		return 0
	}
	return s.Count()
}

// nfcapdPackets sums the packets of every flow in the finished nfcapd
// files under dir (nfdump -I reads each file's statistics record).
func nfcapdPackets(t *testing.T, dir string) uint64 {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(dir, "nfcapd.[0-9]*"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no finished nfcapd file in %s (%v)", dir, err)
	}
	var sum uint64
	for _, f := range files {
		n, err := parseNfdumpInfoPackets(sh(t, "nfdump", "-I", "-r", f))
		if err != nil {
			t.Fatalf("nfdump -I -r %s: %v", f, err)
		}
		sum += n
	}
	return sum
}
