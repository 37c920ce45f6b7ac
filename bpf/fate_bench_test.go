//go:build bench

package bpf

import (
	"testing"

	"github.com/cilium/ebpf"

	"github.com/hostflow/hostflow/internal/testutil"
)

// BenchmarkFateEgress compares, in one run, the per-packet cost of the
// TC egress program in host mode and in router mode on a forwarded packet
// (ingress_ifindex set), over BPF_PROG_TEST_RUN: one flow, a linear
// skb, no conntrack entry (the NAT lookup is not exercised). Compare the
// two ns/op as a ratio:
//
//	go test -tags bench -run '^$' -bench BenchmarkFateEgress -count 5 ./bpf/
func BenchmarkFateEgress(b *testing.B) {
	requirePrivileges(b)
	host := newTestFetcher(b, 1024)
	// In a namespace of its own: its drop counter watches that one.
	ns := testutil.NewNetns(b)
	var router *FlowFetcher
	if err := ns.Do(func() (err error) {
		router, err = NewFlowFetcher(0, 1024, true, true, WithFate(true))
		return err
	}); err != nil {
		b.Fatalf("NewFlowFetcher with fate: %v", err)
	}
	b.Cleanup(func() { _ = router.Close() })
	// Arrivals on ifindex 7 are counted: their fates are.
	if err := router.watchArrivals(7, true); err != nil {
		b.Fatal(err)
	}
	frame := costFrame(1024)
	ctx := ctxWithIfindexes(7, 1)
	for _, c := range []struct {
		name string
		prog *ebpf.Program
	}{{"host", host.progs.EgressFlowParse}, {"router-forwarded", router.progs.EgressRouterParse}} {
		b.Run(c.name, func(b *testing.B) {
			// Repeat in the kernel: one syscall for all b.N runs.
			if _, err := c.prog.Run(&ebpf.RunOptions{Data: frame, Context: ctx, Repeat: uint32(b.N)}); err != nil {
				b.Fatal(err)
			}
		})
	}
}
