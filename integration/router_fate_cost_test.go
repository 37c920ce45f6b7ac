//go:build bench

package integration

// Kernel cost of router mode against host mode in the forwarding path
// (issue 13): the router lab (newRouterNet), hostflow's daemon on the
// router's two interfaces, the same forwarded UDP packets client → server
// through it, and the kernel's BPF run-time statistics
// (ebpf.EnableStats(BPF_STATS_RUN_TIME)) of every program the daemon holds
// (its TC ingress and egress programs, and in router mode its kfree_skb
// program when it has one), summed and divided by the packets forwarded.
//
// Three configurations run in turn, in a rotating order, ROUTER_COST_REPEATS
// times:
//
//   - host: host mode, default direction (both: each forwarded packet
//     meets the ingress program on rc0 and the egress program on rs0);
//   - host-ingress: host mode, --direction ingress (one program a packet,
//     what router mode ran before issue 13);
//   - router: --mode router (arrival at ingress, fate at egress, drops at
//     kfree_skb).
//
// The figures are noisy on a shared machine: only the ratios of runs of the
// same repeat mean something, and every repeat is printed. The kfree_skb
// program is global: it also runs for drops elsewhere on the machine; its
// runs are printed apart and included in "all" but not in "tc".
//
//	sudo go test -tags bench -count=1 -run '^TestRouterFateCost$' -v ./integration/
//	ROUTER_COST_PACKETS=400000 ROUTER_COST_REPEATS=5 ROUTER_COST_BIN=$PWD/bin/hostflow \
//	    go test -tags bench -count=1 -run '^TestRouterFateCost$' -v ./integration/
//
// It asserts only what makes the figures valid: every configuration's
// programs ran, at least once per packet forwarded, and the router
// forwarded the packets sent.

import (
	"fmt"
	"net"
	"os"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"
)

// costProg is one of the daemon's programs and its statistics.
type costProg struct {
	name    string
	typ     ebpf.ProgramType
	runs    uint64
	runtime time.Duration
}

// daemonPrograms returns the BPF programs process pid holds a descriptor
// of, directly or through a link, by ID.
func daemonPrograms(t *testing.T, pid int) map[ebpf.ProgramID]*ebpf.Program {
	t.Helper()
	dir := fmt.Sprintf("/proc/%d/fdinfo", pid)
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatalf("list %s: %v", dir, err)
	}
	progs := map[ebpf.ProgramID]*ebpf.Program{}
	for _, e := range ents {
		b, err := os.ReadFile(dir + "/" + e.Name())
		if err != nil {
			continue // closed meanwhile
		}
		for _, line := range strings.Split(string(b), "\n") {
			v, ok := strings.CutPrefix(line, "prog_id:")
			if !ok {
				continue
			}
			n, err := strconv.ParseUint(strings.TrimSpace(v), 10, 32)
			if err != nil || n == 0 {
				continue
			}
			id := ebpf.ProgramID(n)
			if _, seen := progs[id]; seen {
				continue
			}
			p, err := ebpf.NewProgramFromID(id)
			if err != nil {
				t.Fatalf("program %d of hostflow: %v", id, err)
			}
			t.Cleanup(func() { p.Close() })
			progs[id] = p
		}
	}
	if len(progs) == 0 {
		t.Fatalf("hostflow (pid %d) holds no BPF program", pid)
	}
	return progs
}

// readCost returns each program's statistics.
func readCost(t *testing.T, progs map[ebpf.ProgramID]*ebpf.Program) map[ebpf.ProgramID]costProg {
	t.Helper()
	out := map[ebpf.ProgramID]costProg{}
	for id, p := range progs {
		info, err := p.Info()
		if err != nil {
			t.Fatalf("info of program %d: %v", id, err)
		}
		s, err := p.Stats()
		if err != nil {
			t.Fatalf("stats of program %d: %v", id, err)
		}
		out[id] = costProg{name: info.Name, typ: info.Type, runs: s.RunCount, runtime: s.Runtime}
	}
	return out
}

// costRun is one configuration's measurement.
type costRun struct {
	config       string
	forwarded    uint64 // packets rs0 sent
	sent         uint64
	tcRuns       uint64
	tcTime       time.Duration
	otherRuns    uint64 // kfree_skb and any non-TC program
	otherTime    time.Duration
	perProgram   []string
	sinkReceived uint64
}

func (r costRun) tcNs() float64 { return float64(r.tcTime.Nanoseconds()) / float64(r.forwarded) }
func (r costRun) allNs() float64 {
	return float64((r.tcTime + r.otherTime).Nanoseconds()) / float64(r.forwarded)
}

func (r costRun) String() string {
	return fmt.Sprintf("config=%s sent=%d forwarded=%d received=%d tc_runs_per_pkt=%.2f tc_ns_per_pkt=%.1f other_runs=%d all_ns_per_pkt=%.1f programs=[%s]",
		r.config, r.sent, r.forwarded, r.sinkReceived, float64(r.tcRuns)/float64(r.forwarded), r.tcNs(), r.otherRuns, r.allNs(),
		strings.Join(r.perProgram, "; "))
}

func costEnvInt(t *testing.T, key string, def int) int {
	t.Helper()
	s := os.Getenv(key)
	if s == "" {
		return def
	}
	n, err := strconv.Atoi(s)
	if err != nil || n <= 0 {
		t.Fatalf("%s=%q: want a positive number", key, s)
	}
	return n
}

func TestRouterFateCost(t *testing.T) {
	requireRoot(t, "ip", "ethtool", "sysctl", "nft")
	packets := costEnvInt(t, "ROUTER_COST_PACKETS", 200_000)
	repeats := costEnvInt(t, "ROUTER_COST_REPEATS", 3)
	const flows = 64
	bin := os.Getenv("ROUTER_COST_BIN")
	if bin == "" {
		bin = buildHostflow(t)
	}
	stats, err := ebpf.EnableStats(uint32(unix.BPF_STATS_RUN_TIME))
	if err != nil {
		t.Fatalf("enable BPF statistics: %v", err)
	}
	t.Cleanup(func() { stats.Close() })

	l := newRouterNet(t)
	newCollectorSocket(t, l.rtr, "127.0.0.1") // the daemons' IPFIX goes there
	sink := newFateSink(t, l.server, serverV4)
	socks := make([]*net.UDPConn, flows)
	for i := range socks {
		socks[i] = udpSocket(t, l.client, clientV4, 0)
	}

	configs := []struct {
		name string
		args []string
	}{
		{"host", nil},
		{"host-ingress", []string{"--direction", "ingress"}},
		{"router", []string{"--mode", "router"}},
	}
	results := map[string][]costRun{}
	for rep := range repeats {
		for k := range configs {
			c := configs[(k+rep)%len(configs)]
			r := routerCostRun(t, l, bin, c.name, c.args, socks, sink, packets)
			t.Logf("ROUTER-FATE-COST rep=%d %s", rep+1, r)
			results[c.name] = append(results[c.name], r)
		}
	}
	ratio := func(a, b string, ns func(costRun) float64) string {
		var parts []string
		var sum float64
		for i := range results[a] {
			x := ns(results[a][i]) / ns(results[b][i])
			sum += x
			parts = append(parts, fmt.Sprintf("%.2f", x))
		}
		return fmt.Sprintf("%.2f (per repeat: %s)", sum/float64(len(parts)), strings.Join(parts, " "))
	}
	tc, all := costRun.tcNs, costRun.allNs
	t.Logf("ROUTER-FATE-COST-SUMMARY kernel %s, %d packets over %d flows, %d repeats", kernelRelease(), packets, flows, repeats)
	for _, c := range configs {
		var tcs, alls []float64
		for _, r := range results[c.name] {
			tcs, alls = append(tcs, r.tcNs()), append(alls, r.allNs())
		}
		t.Logf("ROUTER-FATE-COST-SUMMARY %-12s tc ns/pkt %s  all ns/pkt %s", c.name, spreadOf(tcs).format(1), spreadOf(alls).format(1))
	}
	t.Logf("ROUTER-FATE-COST-SUMMARY router/host tc %s, all %s", ratio("router", "host", tc), ratio("router", "host", all))
	t.Logf("ROUTER-FATE-COST-SUMMARY router/host-ingress tc %s, all %s", ratio("router", "host-ingress", tc), ratio("router", "host-ingress", all))
}

// routerCostRun starts the daemon with args on the router, sends packets
// datagrams round-robin over socks to the sink through the router, and
// reads the daemon's programs' statistics before and after.
func routerCostRun(t *testing.T, l *routerLab, bin, name string, args []string, socks []*net.UDPConn, sink *fateSink, packets int) costRun {
	t.Helper()
	hf := start(t, l.rtr.command(bin, daemonArgs(t, append(args, "--interfaces", "rc0,rs0",
		"--collector", "ipfix+udp://127.0.0.1:4739", "--poll-interval", "1s")...)...))
	hf.waitOutput(t, "msg=ready", 15*time.Second)
	progs := daemonPrograms(t, hf.cmd.Process.Pid)
	l.rtr.waitQuiet(t, "rs0", 300*time.Millisecond, 20*time.Second)

	rx0, tx0, got0 := l.rtr.stats(t, "rc0").RxPackets, l.rtr.stats(t, "rs0").TxPackets, sink.n.Load()
	before := readCost(t, progs)
	to := &net.UDPAddr{IP: net.ParseIP(serverV4), Port: sink.port}
	payload := make([]byte, 64)
	// Paced so that no backlog on the way overflows: a round of one
	// datagram per socket, then a pause.
	for sent := 0; sent < packets; {
		for _, c := range socks {
			if sent == packets {
				break
			}
			if _, err := c.WriteToUDP(payload, to); err != nil {
				t.Fatalf("send: %v", err)
			}
			sent++
		}
		time.Sleep(50 * time.Microsecond)
	}
	deadline := time.Now().Add(5 * time.Second)
	for sink.n.Load()-got0 < uint64(packets) && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	after := readCost(t, progs)
	r := costRun{config: name, sent: uint64(packets), sinkReceived: sink.n.Load() - got0}
	rx := l.rtr.stats(t, "rc0").RxPackets - rx0
	r.forwarded = l.rtr.stats(t, "rs0").TxPackets - tx0
	hf.stop(t, 20*time.Second)
	if rx < r.sent || r.forwarded < r.sent {
		t.Fatalf("%s: sent %d, the router received %d and forwarded %d: lost packets make no cost figure", name, r.sent, rx, r.forwarded)
	}
	ids := make([]ebpf.ProgramID, 0, len(after))
	for id := range after {
		ids = append(ids, id)
	}
	sort.Slice(ids, func(i, j int) bool { return ids[i] < ids[j] })
	for _, id := range ids {
		a, b := after[id], before[id]
		runs, rt := a.runs-b.runs, a.runtime-b.runtime
		if a.typ == ebpf.SchedCLS {
			r.tcRuns += runs
			r.tcTime += rt
		} else {
			r.otherRuns += runs
			r.otherTime += rt
		}
		ns := 0.0
		if runs > 0 {
			ns = float64(rt.Nanoseconds()) / float64(runs)
		}
		r.perProgram = append(r.perProgram, fmt.Sprintf("%s/%s runs=%d ns_per_run=%.1f", a.name, a.typ, runs, ns))
	}
	if r.tcRuns < r.forwarded {
		t.Fatalf("%s: hostflow's TC programs ran %d times for %d forwarded packets: are BPF statistics on, the programs attached?", name, r.tcRuns, r.forwarded)
	}
	return r
}
