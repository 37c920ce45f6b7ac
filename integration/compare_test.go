package integration

// hostflow against softflowd, the libpcap flow probe it replaces (issue 11),
// on the same workload in one run. TestCompare (compare_run_test.go) is
// built only with -tags bench, so `go test ./...` never runs it: it takes
// minutes and its figures need a machine of its own; bench/compare.sh
// builds bin/hostflow and minflow.o, runs it and prints the table.
//
// Namespace A (hf-cmp-a-*) runs trafgen on hfc0 (60-byte UDP frames over
// 100,608 flows, loadTrafgen); namespace B (hf-cmp-b-*) receives on hfc1,
// where the probe under test watches and exports IPFIX over UDP to nfcapd
// on 127.0.0.1. A third run per repeat attaches minflow alone (no daemon,
// no export): the generator rate it keeps is the floor any TC flow counter
// can reach. Each probe run is compared with the baseline runs (same
// packets, no probe) just before and after it; the probes' order rotates
// between repeats.
// Then hostflow's TC program, a no-op and minflow (the floor of per-packet
// flow accounting, shared/bench/minflow.c) share hfc1's tcx ingress hook
// and the kernel's BPF statistics give each one's ns per packet on the same
// packets.
//
//	sudo bench/compare.sh
//	COMPARE_HOSTFLOW_BIN=$PWD/bin/hostflow COMPARE_MINFLOW_OBJ=$PWD/minflow.o \
//	    go test -tags bench -count=1 -timeout 90m -run '^TestCompare$' -v ./integration/
//
// What the test asserts is only what makes the figures valid: every
// process started, trafgen sent, the three TC programs ran on exactly the
// packets hfc1 received. Speeds, costs and exactness are reported, never
// asserted.

import (
	"os"
	"strconv"
	"strings"
	"testing"
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

// cmpLab is the two namespaces and what every run needs.
type cmpLab struct {
	o        compareOpts
	a, b     *namespace
	bin      string
	cfg      string // 100,608-flow trafgen configuration
	cfg1000  string
	maxCount uint64
}
