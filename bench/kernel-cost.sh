#!/usr/bin/env bash
# Kernel cost of hostflow's TC program against a no-op TC program on the same
# tcx ingress hook of a test veth (namespaces hf-bpftest-*, 198.18.0.0/15),
# from the kernel's BPF run-time statistics. Needs root. The full go test
# output is kept in $LOG (default: a temporary file).
#
# Then hostflow against minflow (bench/minflow.c, the floor of issue 11) and
# the no-op on trafgen's non-linear (TX ring) and linear (-t 0) skbs at 1,000
# and 100,608 flows, ROUNDS times, alternating which of hostflow and minflow
# reads the frames first.
#
#   sudo bench/kernel-cost.sh               # 300000 frames per scenario
#   PACKETS=1000000 ROUNDS=3 sudo bench/kernel-cost.sh
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PATH:/usr/local/go/bin"
packets=${PACKETS:-300000}
rounds=${ROUNDS:-2}
log=${LOG:-$(mktemp -t hostflow-kernel-cost.XXXXXX)}
if [ "$(id -u)" -ne 0 ]; then
	echo "kernel-cost: needs root (BPF, network namespaces)" >&2
	exit 1
fi

echo "kernel $(uname -r), $(nproc) CPUs, $(date -u +%FT%TZ); full output in $log"
echo "== TestKernelCost (100000 frames per scenario)"
if ! go test -count=1 -run '^TestKernelCost$' -v ./bpf/ >"$log" 2>&1; then
	cat "$log"
	exit 1
fi
grep -E 'bpf_stats_enabled|KERNEL-COST|hostflow adds' "$log" | sed 's/^ *cost_test.go:[0-9]*: /  /'

echo "== BenchmarkKernelCost ($packets frames per scenario)"
if ! go test -count=1 -run '^$' -bench '^BenchmarkKernelCost$' -benchtime "${packets}x" ./bpf/ >>"$log" 2>&1; then
	cat "$log"
	exit 1
fi
grep -E '^BenchmarkKernelCost' "$log"

echo "== TestKernelCostVsMinflow (1000000 trafgen frames per scenario, $rounds rounds)"
for i in $(seq "$rounds"); do
	order=hostflow-first
	[ $((i % 2)) -eq 0 ] && order=minflow-first
	if ! HF_COST_ORDER=$order go test -count=1 -run '^TestKernelCostVsMinflow$' -v ./bpf/ >>"$log" 2>&1; then
		cat "$log"
		exit 1
	fi
done
grep -E 'KERNEL-COST-MINFLOW' "$log" | sed -E 's/^ *cost_minflow_test.go:[0-9]*: KERNEL-COST-MINFLOW /  /'
