//go:build bench

package integration

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"
)

func TestCompare(t *testing.T) {
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
			// The order rotates between repeats.
			probes := []string{"hostflow", "softflowd", "minflow"}
			for range (rep - 1) % len(probes) {
				probes = append(probes[1:], probes[0])
			}
			// baseline, probe, baseline, probe, ..., baseline: each
			// probe run is bracketed by two runs without a probe.
			for i, probe := range append([]string{""}, probes...) {
				if i > 0 {
					var r cmpRun
					if probe == "minflow" {
						r = lab.floorRun(t, layout, rep)
					} else {
						r = lab.probeRun(t, layout, probe, rep)
					}
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
