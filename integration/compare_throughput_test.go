package integration

// TestCompare's throughput runs: a baseline or a probe (hostflow or
// softflowd, or minflow alone: the floor) watching hfc1 while trafgen sends.

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	tcx "github.com/cilium/ebpf/link"
)

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
	hwmKB     uint64 // the probe's peak RSS: VmHWM sampled while it runs, and its maxrss once reaped
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
	// The sampler reads every 50 ms and the probe may export its flows
	// and exit sooner, out of its sight: the kernel's peak for the
	// reaped process (ip netns exec execs the probe) misses nothing.
	if ru, ok := state.SysUsage().(*syscall.Rusage); ok && uint64(ru.Maxrss) > r.hwmKB {
		r.hwmKB = uint64(ru.Maxrss)
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
	l.b.waitUDPQueueEmpty(t, port, limit)
}

// floorRun is a throughput run with minflow alone on hfc1's tcx ingress
// (probe "minflow"): no daemon and no export, only the smallest program
// that counts flows. What the generator keeps with it is the most any TC
// flow counter can keep on this machine and workload.
func (l *cmpLab) floorRun(t *testing.T, layout string, rep int) cmpRun {
	t.Helper()
	r := cmpRun{layout: layout, probe: "minflow", repeat: rep}
	mf := minflowProgram(t, l.o.minflowObj)
	idx := ifindex(t, l.b, "hfc1")
	var lk tcx.Link
	l.b.do(t, func() (err error) {
		lk, err = tcx.AttachTCX(tcx.TCXOptions{Interface: idx, Program: mf, Attach: ebpf.AttachTCXIngress})
		return err
	})
	before := l.b.waitQuiet(t, "hfc1", 500*time.Millisecond, 20*time.Second)
	r.load1 = loadAvg1(t)
	s0 := machineBusy(t)
	r.gen = l.gen(t, layout)
	r.busy = machineBusy(t) - s0
	after := l.b.waitQuiet(t, "hfc1", 500*time.Millisecond, 20*time.Second)
	if err := lk.Close(); err != nil {
		t.Errorf("detach minflow: %v", err)
	}
	r.rx = after.RxPackets - before.RxPackets
	return r
}
