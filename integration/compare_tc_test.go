package integration

// TestCompare's TC cost runs: hostflow's program, minflow and a no-op on
// hfc1's tcx ingress, timed by the kernel's BPF statistics.

import (
	"fmt"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	tcx "github.com/cilium/ebpf/link"
)

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
