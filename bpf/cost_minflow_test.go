package bpf

// hostflow's TC program against the floor of flow accounting (minflow, a
// reference copy of shared/bench/minflow.c) and a no-op, all three on the
// same tcx ingress hook, on the same trafgen frames, from the kernel's
// BPF run-time statistics. trafgen's TX ring makes non-linear skbs (only
// the Ethernet header in the linear area), `trafgen -t 0` (sendto) linear
// ones.
//
//	go test -count=1 -run TestKernelCostVsMinflow -v ./bpf/
//	HF_COST_PACKETS=1000000 HF_COST_ORDER=minflow-first go test ...
//
// Figures are logged (KERNEL-COST-MINFLOW lines), never asserted: speed
// depends on the machine. The test asserts that all three programs ran on
// exactly the same packets and that hostflow counted each of them.

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"

	"github.com/hostflow/hostflow/bpf/internal/minflow"
	"github.com/hostflow/hostflow/bpf/internal/noop"
	"github.com/hostflow/hostflow/internal/testutil"
)

// trafgenFlows returns a trafgen configuration of 60-byte Ethernet/IPv4/UDP
// frames 198.18.0.1 -> 198.18.0.2 cycling over flows distinct flows, to a
// MAC nobody owns (the receiver drops them right after TC). Counters with
// coprime periods make the flows: 8 x 125 = 1,000 source ports, or
// 256 x 131 source ports x 3 destination ports = 100,608.
func trafgenFlows(flows int) string {
	var ports string
	switch flows {
	case 1000:
		ports = "dinc(0, 7), dinc(0, 124), const16(9000)"
	case 100608:
		ports = "dinc(0, 255), dinc(0, 130), 0x23, dinc(0x28, 0x2a)"
	default:
		panic(fmt.Sprintf("no trafgen pattern for %d flows", flows))
	}
	return `{
  0x02, 0x00, 0x00, 0x00, 0x00, 0x02,
  0x02, 0x00, 0x00, 0x00, 0x00, 0x01,
  0x08, 0x00,
  0x45, 0x00, const16(46), const16(0), 0x40, 0x00, 64, 17, csumip(14, 33),
  198, 18, 0, 1,
  198, 18, 0, 2,
  ` + ports + `, const16(26), const16(0),
  fill(0x00, 18)
}
`
}

type minflowScenario struct {
	flows  int
	linear bool
}

func (s minflowScenario) String() string {
	layout := "nonlinear"
	if s.linear {
		layout = "linear"
	}
	return fmt.Sprintf("%dflows/%s", s.flows, layout)
}

type progCost struct {
	runs uint64
	ns   float64
}

func TestKernelCostVsMinflow(t *testing.T) {
	requirePrivileges(t)
	trafgen := testutil.RequireTool(t, "trafgen")
	packets := 1_000_000
	if testing.Short() {
		packets = 50_000
	}
	if s := os.Getenv("HF_COST_PACKETS"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil {
			t.Fatalf("HF_COST_PACKETS=%q: %v", s, err)
		}
		packets = n
	}
	minflowFirst := os.Getenv("HF_COST_ORDER") == "minflow-first"
	enableBPFStats(t)
	for _, sc := range []minflowScenario{{1000, false}, {1000, true}, {100608, false}, {100608, true}} {
		t.Run(sc.String(), func(t *testing.T) {
			measureVsMinflow(t, trafgen, sc, packets, minflowFirst)
		})
	}
}

// measureVsMinflow builds a fresh veth pair with no-op, hostflow and
// minflow on hfb0's tcx ingress (no-op first; hostflow before minflow
// unless minflowFirst: the first to read a frame pays its cache misses),
// sends packets frames with trafgen from hfa0, drains hostflow every
// second as the daemon does, and logs the three costs.
func measureVsMinflow(t *testing.T, trafgen string, sc minflowScenario, packets int, minflowFirst bool) {
	pair := testutil.NewVethPair(t)
	ifB, rx := costLink(t, pair.B, pair.NameB)

	var nop noop.NoopObjects
	if err := noop.LoadNoopObjects(&nop, nil); err != nil {
		t.Fatalf("load no-op: %v", err)
	}
	t.Cleanup(func() { nop.Close() })
	var mf minflow.MinflowObjects
	if err := minflow.LoadMinflowObjects(&mf, nil); err != nil {
		t.Fatalf("load minflow: %v", err)
	}
	t.Cleanup(func() { mf.Close() })
	f, err := NewFlowFetcher(0, 1<<17, true, false, WithAttachMode(AttachTCX))
	if err != nil {
		t.Fatalf("NewFlowFetcher: %v", err)
	}
	t.Cleanup(func() {
		if err := pair.B.Do(f.Close); err != nil {
			t.Errorf("close fetcher: %v", err)
		}
	})
	attach := func(p *ebpf.Program) {
		var l link.Link
		if err := pair.B.Do(func() (err error) {
			l, err = link.AttachTCX(link.TCXOptions{Interface: ifB, Program: p, Attach: ebpf.AttachTCXIngress, Anchor: link.Tail()})
			return err
		}); err != nil {
			t.Fatalf("attach %v: %v", p, err)
		}
		t.Cleanup(func() { l.Close() })
	}
	attach(nop.Noop)
	if minflowFirst {
		attach(mf.HfMinflow)
	}
	if err := pair.B.Do(func() error { return f.Attach(ifB, pair.NameB) }); err != nil {
		t.Fatalf("attach hostflow: %v", err)
	}
	if !minflowFirst {
		attach(mf.HfMinflow)
	}
	hf := f.progs.IngressFlowParse
	progs := []*ebpf.Program{hf, mf.HfMinflow, nop.Noop}

	conf := filepath.Join(t.TempDir(), "cost.trafgen")
	if err := os.WriteFile(conf, []byte(trafgenFlows(sc.flows)), 0o644); err != nil {
		t.Fatal(err)
	}

	var total NetFlowMetrics
	var mu sync.Mutex
	drain := func() error {
		mu.Lock()
		defer mu.Unlock()
		return f.Drain(func(_ NetFlowId, perCPU []NetFlowMetrics) {
			for i := range perCPU {
				total.Accumulate(&perCPU[i])
			}
		})
	}
	c0, err := f.ReadCounters()
	if err != nil {
		t.Fatal(err)
	}
	rx0 := rx()
	var before [3]progCost
	for i, p := range progs {
		r, d := progStats(t, p)
		before[i] = progCost{runs: r, ns: float64(d)}
	}

	stopDrain := drainEverySecond(drain)
	args := []string{"netns", "exec", pair.A.Name, trafgen, "--dev", pair.NameA, "--conf", conf,
		"--cpus", "1", "--num", strconv.Itoa(packets), "--no-sock-mem"}
	if sc.linear {
		args = append(args, "-t", "0")
	}
	cmd := exec.Command("ip", args...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	start := time.Now()
	out, err := runBounded(cmd, 120*time.Second)
	elapsed := time.Since(start)
	if err != nil {
		stopDrain()
		t.Fatalf("trafgen: %v\n%s", err, out)
	}
	// Every frame counted by hfb0 must have crossed all three programs.
	var after [3]progCost
	var got uint64
	for wait := time.Now().Add(5 * time.Second); ; {
		got = rx() - rx0
		done := true
		for i, p := range progs {
			r, d := progStats(t, p)
			after[i] = progCost{runs: r, ns: float64(d)}
			done = done && after[i].runs-before[i].runs >= got
		}
		if done || time.Now().After(wait) {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	if err := stopDrain(); err != nil {
		t.Fatalf("drain: %v", err)
	}
	if err := drain(); err != nil {
		t.Fatalf("drain: %v", err)
	}
	c1, err := f.ReadCounters()
	if err != nil {
		t.Fatal(err)
	}
	var cost [3]progCost
	for i := range progs {
		cost[i].runs = after[i].runs - before[i].runs
		if cost[i].runs == 0 {
			t.Fatalf("%v: no run recorded: are BPF stats on?", progs[i])
		}
		cost[i].ns = (after[i].ns - before[i].ns) / float64(cost[i].runs)
		if cost[i].runs != got {
			t.Errorf("%v ran %d times, hfb0 received %d frames", progs[i], cost[i].runs, got)
		}
	}
	// Exactness on the way: every frame counted once, 46 IP bytes each.
	if total.Packets+c1.MapFull-c0.MapFull != got || total.Bytes != 46*total.Packets {
		t.Errorf("hostflow counted %d packets / %d bytes (+%d diverted), hfb0 received %d frames",
			total.Packets, total.Bytes, c1.MapFull-c0.MapFull, got)
	}
	hfNs, mfNs, nopNs := cost[0].ns, cost[1].ns, cost[2].ns
	t.Logf("KERNEL-COST-MINFLOW scenario=%s packets=%d elapsed=%v pps=%.0f hostflow=%.1f minflow=%.1f noop=%.1f hostflow/minflow=%.2f hostflow/noop=%.2f minflow/noop=%.2f order=%s",
		sc, got, elapsed.Round(time.Millisecond), float64(got)/elapsed.Seconds(), hfNs, mfNs, nopNs,
		hfNs/mfNs, hfNs/nopNs, mfNs/nopNs, map[bool]string{false: "hostflow-first", true: "minflow-first"}[minflowFirst])
}

// runBounded runs cmd (in its own process group) and kills the group after
// limit.
func runBounded(cmd *exec.Cmd, limit time.Duration) (string, error) {
	var out strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		return "", err
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		return out.String(), err
	case <-time.After(limit):
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		<-done
		return out.String(), fmt.Errorf("killed after %v", limit)
	}
}
