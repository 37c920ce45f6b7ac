package integration

// The arithmetic and parsing of TestCompare (bench/compare.sh): procfs,
// nfdump and softflowctl readers, and the summary table.

import (
	"fmt"
	"math"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

// clockTick is USER_HZ, the unit of /proc/stat and /proc/PID/stat: 100 on
// every Linux architecture hostflow runs on.
const clockTick = 10 * time.Millisecond

// parseProcStatBusy returns the busy time of all CPUs from /proc/stat's
// "cpu" line: user nice system idle iowait irq softirq steal [guest
// guest_nice]; idle and iowait are not busy, guest time is counted in user.
func parseProcStatBusy(s string) (time.Duration, error) {
	for _, line := range strings.Split(s, "\n") {
		f := strings.Fields(line)
		if len(f) == 0 || f[0] != "cpu" {
			continue
		}
		if len(f) < 9 {
			return 0, fmt.Errorf("proc stat: short cpu line %q", line)
		}
		var busy uint64
		for _, i := range []int{1, 2, 3, 6, 7, 8} {
			v, err := strconv.ParseUint(f[i], 10, 64)
			if err != nil {
				return 0, fmt.Errorf("proc stat: cpu field %d: %w", i, err)
			}
			busy += v
		}
		return time.Duration(busy) * clockTick, nil
	}
	return 0, fmt.Errorf("proc stat: no cpu line")
}

// parsePIDStatCPU returns utime+stime from /proc/PID/stat (fields 14 and
// 15; the command name in parentheses may hold spaces).
func parsePIDStatCPU(s string) (time.Duration, error) {
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0, fmt.Errorf("pid stat: no command name in %q", s)
	}
	f := strings.Fields(s[i+1:]) // f[0] is field 3 (state)
	if len(f) < 13 {
		return 0, fmt.Errorf("pid stat: %d fields after the name", len(f))
	}
	var sum uint64
	for _, v := range f[11:13] {
		n, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			return 0, fmt.Errorf("pid stat: %w", err)
		}
		sum += n
	}
	return time.Duration(sum) * clockTick, nil
}

var vmHWM = regexp.MustCompile(`(?m)^VmHWM:\s+(\d+) kB`)

// parseVmHWM returns VmHWM (kB) from /proc/PID/status.
func parseVmHWM(s string) (uint64, bool) {
	m := vmHWM.FindStringSubmatch(s)
	if m == nil {
		return 0, false
	}
	v, err := strconv.ParseUint(m[1], 10, 64)
	return v, err == nil
}

var nfdumpInfoPackets = regexp.MustCompile(`(?m)^Packets:\s*(\d+)\s*$`)

// parseNfdumpInfoPackets returns the "Packets:" total of nfdump -I.
func parseNfdumpInfoPackets(s string) (uint64, error) {
	m := nfdumpInfoPackets.FindStringSubmatch(s)
	if m == nil {
		return 0, fmt.Errorf("nfdump info: no Packets line in %q", s)
	}
	return strconv.ParseUint(m[1], 10, 64)
}

var (
	sfProcessed = regexp.MustCompile(`(?m)^Packets processed:\s*(\d+)`)
	sfDropped   = regexp.MustCompile(`(?m)^Packets dropped by libpcap:\s*(\d+)`)
)

// softflowdStats returns the packets softflowd counted and those libpcap
// dropped, from softflowctl statistics.
func softflowdStats(t *testing.T, s string) (counted, dropped uint64) {
	t.Helper()
	c, d := sfProcessed.FindStringSubmatch(s), sfDropped.FindStringSubmatch(s)
	if c == nil || d == nil {
		t.Fatalf("softflowctl statistics: no processed/dropped counts in:\n%s", s)
	}
	counted, _ = strconv.ParseUint(c[1], 10, 64)
	dropped, _ = strconv.ParseUint(d[1], 10, 64)
	return counted, dropped
}

// parseUDPRcvbufErrors returns RcvbufErrors of the Udp lines of
// /proc/net/snmp (a header line of names, then a line of values).
func parseUDPRcvbufErrors(s string) (uint64, error) {
	var names []string
	for _, line := range strings.Split(s, "\n") {
		f := strings.Fields(line)
		if len(f) == 0 || f[0] != "Udp:" {
			continue
		}
		if names == nil {
			names = f
			continue
		}
		for i, n := range names {
			if n == "RcvbufErrors" && i < len(f) {
				return strconv.ParseUint(f[i], 10, 64)
			}
		}
		break
	}
	return 0, fmt.Errorf("net snmp: no Udp RcvbufErrors")
}

// parseUDPRxQueue returns the receive queue (bytes) of the UDP socket bound
// to port in /proc/net/udp.
func parseUDPRxQueue(s string, port int) (uint64, error) {
	suffix := fmt.Sprintf(":%04X", port)
	for _, line := range strings.Split(s, "\n") {
		f := strings.Fields(line)
		if len(f) < 5 || !strings.HasSuffix(f[1], suffix) {
			continue
		}
		_, rx, ok := strings.Cut(f[4], ":")
		if !ok {
			return 0, fmt.Errorf("net udp: queues %q", f[4])
		}
		return strconv.ParseUint(rx, 16, 64)
	}
	return 0, fmt.Errorf("net udp: no socket on port %d", port)
}

// spread is the mean, minimum and maximum of some figures.
type spread struct {
	n              int
	mean, min, max float64
}

func spreadOf(v []float64) spread {
	s := spread{n: len(v), min: math.Inf(1), max: math.Inf(-1)}
	if len(v) == 0 {
		return spread{mean: math.NaN(), min: math.NaN(), max: math.NaN()}
	}
	for _, x := range v {
		s.mean += x
		s.min = min(s.min, x)
		s.max = max(s.max, x)
	}
	s.mean /= float64(len(v))
	return s
}

func (s spread) format(prec int) string {
	if s.n == 0 {
		return "n/a"
	}
	if s.n == 1 {
		return strconv.FormatFloat(s.mean, 'f', prec, 64)
	}
	return fmt.Sprintf("%.*f [%.*f..%.*f]", prec, s.mean, prec, s.min, prec, s.max)
}

// pairedFigures are the per-probe figures of one layout (or all), each
// probe run against the baseline runs just before and after it.
type pairedFigures struct {
	added, rate, daemon, rssMiB []float64 // one per probe run
	exported, rx, counted       uint64
	drops, collectorDrops       uint64
}

// pairFigures collects, for probe, every probe run whose layout is in
// layouts, against the mean of its baselines: the runs without a probe of
// the same layout just before and after it (a probe run without either is
// left out).
func pairFigures(runs []cmpRun, probe string, layouts map[string]bool) pairedFigures {
	var f pairedFigures
	for i, r := range runs {
		if r.probe != probe || !layouts[r.layout] {
			continue
		}
		var busy, pps []float64
		for _, j := range []int{i - 1, i + 1} {
			if j >= 0 && j < len(runs) && runs[j].probe == "" && runs[j].layout == r.layout {
				busy = append(busy, runs[j].usPerPkt(runs[j].busy))
				pps = append(pps, runs[j].gen.steadyPPS)
			}
		}
		if len(busy) == 0 {
			continue
		}
		f.added = append(f.added, r.usPerPkt(r.busy)-spreadOf(busy).mean)
		if base := spreadOf(pps).mean; base > 0 {
			f.rate = append(f.rate, r.gen.steadyPPS/base)
		}
		f.daemon = append(f.daemon, r.usPerPkt(r.daemonCPU))
		f.rssMiB = append(f.rssMiB, float64(r.hwmKB)/1024)
		f.exported += r.exported
		f.rx += r.rx
		f.counted += r.counted
		f.drops += r.drops
		f.collectorDrops += r.collectorDrops
	}
	return f
}

// ratios are a[i]/b[i] for the runs of the same index (the same repeat),
// where b[i] > 0.
func ratios(a, b []float64) []float64 {
	var out []float64
	for i := range min(len(a), len(b)) {
		if b[i] > 0 {
			out = append(out, a[i]/b[i])
		}
	}
	return out
}

func meanRatio(a, b []float64) string {
	sa, sb := spreadOf(a), spreadOf(b)
	if sa.n == 0 || sb.n == 0 || sb.mean <= 0 {
		return "n/a"
	}
	return fmt.Sprintf("%.2f", sa.mean/sb.mean)
}

func exactness(f pairedFigures) string {
	if f.rx == 0 {
		return "n/a"
	}
	s := fmt.Sprintf("%d/%d", f.exported, f.rx)
	if f.exported == f.rx {
		return s + " exact"
	}
	return fmt.Sprintf("%s LOST %d", s, int64(f.rx)-int64(f.exported))
}

// compareTable is the summary of TestCompare: per layout and over all
// layouts and runs, each figure for hostflow and softflowd as mean
// [min..max] over the repeats, and their ratio (mean ÷ mean, with the range
// of the per-repeat ratios).
func compareTable(o compareOpts, runs []cmpRun, tcs []tcCost) string {
	var b strings.Builder
	var loads []float64
	for _, r := range runs {
		loads = append(loads, r.load1)
	}
	for _, c := range tcs {
		loads = append(loads, c.load1)
	}
	fmt.Fprintf(&b, "hostflow vs softflowd: %d flows x %d packets of %d bytes per run, trafgen -P %d, %d repeat(s); load average (1 min) over the runs %s\n",
		loadFlows, o.perFlow, loadFrameSize, loadProcs, o.repeats, spreadOf(loads).format(2))
	var groups []string // none without throughput runs
	if len(runs) > 0 {
		groups = append(groups, o.layouts...)
		fmt.Fprintf(&b, "figures: mean [min..max] over repeats, each probe run against the mean of the runs without a probe just before and after it;\n")
		fmt.Fprintf(&b, "ratio = hostflow mean / softflowd mean [range of the per-repeat ratios]; per Mpkt = per million packets hfc1 received (CPU-s per Mpkt = us per packet)\n\n")
		fmt.Fprintf(&b, "%-7s %-40s %-26s %-26s %-24s %s\n", "layout", "figure", "hostflow", "softflowd", "ratio hf/sf", "target")
	}
	if len(groups) > 1 {
		groups = append(groups, "all")
	}
	for _, g := range groups {
		sel := map[string]bool{g: true}
		if g == "all" {
			sel = map[string]bool{}
			for _, l := range o.layouts {
				sel[l] = true
			}
		}
		hf, sf := pairFigures(runs, "hostflow", sel), pairFigures(runs, "softflowd", sel)
		row := func(name string, a, c []float64, prec int, ratio bool, target string) {
			r := "-"
			if ratio {
				r = meanRatio(a, c)
				if rs := spreadOf(ratios(a, c)); rs.n > 1 && r != "n/a" {
					r += fmt.Sprintf(" [%.2f..%.2f]", rs.min, rs.max)
				}
			}
			fmt.Fprintf(&b, "%-7s %-40s %-26s %-26s %-24s %s\n", g, name, spreadOf(a).format(prec), spreadOf(c).format(prec), r, target)
		}
		row("machine CPU added, CPU-s per Mpkt", hf.added, sf.added, 3, true, "<= 0.5")
		row("generator rate with probe / without", hf.rate, sf.rate, 3, true, ">= 1 (hf >= sf), aim hf 0.95")
		if mf := pairFigures(runs, "minflow", sel); len(mf.rate) > 0 {
			// The floor: minflow alone, no daemon.
			fmt.Fprintf(&b, "%-7s %-40s %-26s %-26s %-24s %s\n", g, "generator rate, minflow alone (floor)", spreadOf(mf.rate).format(3), "-",
				"hf/minflow "+meanRatio(hf.rate, mf.rate), "what any TC flow counter keeps at best")
			fmt.Fprintf(&b, "%-7s %-40s %-26s %-26s %-24s %s\n", g, "machine CPU added, minflow alone", spreadOf(mf.added).format(3), "-",
				"hf/minflow "+meanRatio(hf.added, mf.added), "")
		}
		row("daemon CPU (utime+stime), CPU-s per Mpkt", hf.daemon, sf.daemon, 3, true, "")
		row("daemon peak RSS (VmHWM), MiB", hf.rssMiB, sf.rssMiB, 1, true, "")
		fmt.Fprintf(&b, "%-7s %-40s %-26s %-26s %-24s %s\n", g, "collector stored / hfc1 received pkts", exactness(hf), exactness(sf), "-", "hostflow exact")
		fmt.Fprintf(&b, "%-7s %-40s %-26s %-26s\n", g, "probe counted (libpcap dropped) pkts", strconv.FormatUint(hf.counted, 10),
			fmt.Sprintf("%d (%d)", sf.counted, sf.drops))
		if hf.collectorDrops+sf.collectorDrops > 0 {
			fmt.Fprintf(&b, "%-7s %-40s %-26d %-26d %-24s %s\n", g, "datagrams the collector socket dropped", hf.collectorDrops, sf.collectorDrops, "-", "0, or the loss is the collector's")
		}
	}
	if len(tcs) > 0 {
		fmt.Fprintf(&b, "\nTC program cost, ns per packet (bpf_stats, the three programs on the same packets of hfc1's tcx ingress)\n")
		fmt.Fprintf(&b, "%-7s %-7s %9s %8s %8s %8s %8s %10s %10s %s\n", "flows", "layout", "packets", "noop", "minflow", "hostflow", "hf/noop", "mf/noop", "hf/minflow", "(target hf/minflow <= 1.25)")
		var all []float64
		for _, c := range tcs {
			fmt.Fprintf(&b, "%-7d %-7s %9d %8.1f %8.1f %8.1f %8.2f %10.2f %10.2f exported %s\n", c.flows, c.layout, c.rx,
				c.ns[2], c.ns[1], c.ns[0], c.ns[0]/c.ns[2], c.ns[1]/c.ns[2], c.ns[0]/c.ns[1], exactness(pairedFigures{exported: c.exported, rx: c.rx}))
			all = append(all, c.ns[0]/c.ns[1])
		}
		fmt.Fprintf(&b, "hostflow / minflow over the scenarios: %s\n", spreadOf(all).format(2))
	}
	return b.String()
}

func TestCompareParsers(t *testing.T) {
	busy, err := parseProcStatBusy("cpu  100 2 30 5000 7 1 4 3 9 0\ncpu0 50 1 15 2500 3 0 2 1 0 0\n")
	if err != nil || busy != (100+2+30+1+4+3)*clockTick {
		t.Errorf("parseProcStatBusy = %v, %v", busy, err)
	}
	if _, err := parseProcStatBusy("intr 1 2 3\n"); err == nil {
		t.Errorf("parseProcStatBusy without a cpu line: no error")
	}
	cpu, err := parsePIDStatCPU("4242 (host flow) S 1 4242 4242 0 -1 4194560 1000 0 0 0 123 45 0 0 20 0 9 0 100 1000 200")
	if err != nil || cpu != (123+45)*clockTick {
		t.Errorf("parsePIDStatCPU = %v, %v", cpu, err)
	}
	if kb, ok := parseVmHWM("Name:\thostflow\nVmPeak:\t 999 kB\nVmHWM:\t   45620 kB\nVmRSS:\t 40000 kB\n"); !ok || kb != 45620 {
		t.Errorf("parseVmHWM = %d, %v", kb, ok)
	}
	if n, err := parseNfdumpInfoPackets("Ident: hostflow\nFlows: 100608\nPackets: 301824\nPackets_tcp: 0\nBytes: 13883904\n"); err != nil || n != 301824 {
		t.Errorf("parseNfdumpInfoPackets = %d, %v", n, err)
	}
	if n, err := parseUDPRcvbufErrors("Udp: InDatagrams NoPorts InErrors OutDatagrams RcvbufErrors SndbufErrors InCsumErrors IgnoredMulti MemErrors\nUdp: 10 0 7 10 6 0 0 0 0\nUdpLite: InDatagrams\n"); err != nil || n != 6 {
		t.Errorf("parseUDPRcvbufErrors = %d, %v", n, err)
	}
	udp := "   sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops\n" +
		"  12: 0100007F:1283 00000000:0000 07 00000000:00000A00 00:00000000 00000000     0        0 1234 2 0000000000000000 0\n"
	if q, err := parseUDPRxQueue(udp, 4739); err != nil || q != 0xa00 {
		t.Errorf("parseUDPRxQueue = %d, %v", q, err)
	}
	if _, err := parseUDPRxQueue(udp, 4740); err == nil {
		t.Errorf("parseUDPRxQueue of a port without socket: no error")
	}
	c, d := softflowdStats(t, "Number of active flows: 97340\nPackets processed: 272392\nPackets received by libpcap: 301824\nPackets dropped by libpcap: 28864\n")
	if c != 272392 || d != 28864 {
		t.Errorf("softflowdStats = %d, %d", c, d)
	}
}

func TestComparePairing(t *testing.T) {
	run := func(probe string, pps float64, busy time.Duration) cmpRun {
		return cmpRun{layout: "ring", probe: probe, gen: trafgenRun{rx: 1_000_000, steadyPPS: pps}, busy: busy, rx: 1_000_000, exported: 1_000_000}
	}
	other := run("", 1, time.Hour)
	other.layout = "sendto"
	runs := []cmpRun{
		run("softflowd", 1, time.Hour), // no baseline next to it: left out
		other,
		run("", 400_000, 5*time.Second), run("hostflow", 380_000, 6500*time.Millisecond),
		run("", 360_000, 7*time.Second), run("softflowd", 315_000, 8*time.Second),
		other, // not the same layout: not its baseline
	}
	hf := pairFigures(runs, "hostflow", map[string]bool{"ring": true})
	sf := pairFigures(runs, "softflowd", map[string]bool{"ring": true})
	// hostflow: baselines 5 and 7 us/pkt (mean 6), 380k of 380k pps.
	if len(hf.added) != 1 || math.Abs(hf.added[0]-0.5) > 1e-9 || math.Abs(hf.rate[0]-1) > 1e-9 {
		t.Errorf("hostflow figures %+v", hf)
	}
	// softflowd: the baseline before it only, 7 us/pkt and 360k pps.
	if len(sf.added) != 1 || math.Abs(sf.added[0]-1) > 1e-9 || math.Abs(sf.rate[0]-0.875) > 1e-9 {
		t.Errorf("softflowd figures %+v", sf)
	}
	if got := meanRatio(hf.added, sf.added); got != "0.50" {
		t.Errorf("added ratio %s, want 0.50", got)
	}
	if got := exactness(pairedFigures{exported: 9, rx: 10}); got != "9/10 LOST 1" {
		t.Errorf("exactness %q", got)
	}

	table := compareTable(compareOpts{repeats: 1, perFlow: 30, layouts: []string{"ring"}}, runs,
		[]tcCost{{flows: 1000, layout: "ring", rx: 100, exported: 100, ns: [3]float64{150, 120, 50}}})
	for _, want := range []string{
		"ring    machine CPU added, CPU-s per Mpkt        0.500                      1.000                      0.50 ",
		"ring    generator rate with probe / without      1.000                      0.875                      1.14 ",
		"1000    ring          100     50.0    120.0    150.0     3.00       2.40       1.25 exported 100/100 exact",
	} {
		if !strings.Contains(table, want) {
			t.Errorf("table lacks %q:\n%s", want, table)
		}
	}
}
