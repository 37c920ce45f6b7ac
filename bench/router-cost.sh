#!/usr/bin/env bash
# Router mode's per-packet kernel cost against host mode's in the
# forwarding path (issue 13): the three-namespace router lab, the daemon on
# the router's two interfaces in host mode (both directions), host mode
# --direction ingress and router mode in turn, the same forwarded UDP
# packets each time, and the kernel's BPF run-time statistics of every
# program the daemon holds (TC ingress, TC egress, kfree_skb), per packet
# forwarded. Needs root. The full go test output is kept in $LOG (default:
# a temporary file).
#
#   sudo bench/router-cost.sh                          # 200000 packets, 3 repeats
#   PACKETS=400000 REPEATS=5 BIN=$PWD/bin/hostflow sudo -E bench/router-cost.sh
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PATH:/usr/local/go/bin"
log=${LOG:-$(mktemp -t hostflow-router-cost.XXXXXX)}
if [ "$(id -u)" -ne 0 ]; then
	echo "router-cost: needs root (BPF, network namespaces)" >&2
	exit 1
fi

echo "kernel $(uname -r), $(nproc) CPUs, $(date -u +%FT%TZ); full output in $log"
if ! ROUTER_COST_PACKETS=${PACKETS:-200000} ROUTER_COST_REPEATS=${REPEATS:-3} ROUTER_COST_BIN=${BIN:-} \
	go test -tags bench -count=1 -timeout 30m -run '^TestRouterFateCost$' -v ./integration/ >"$log" 2>&1; then
	cat "$log"
	exit 1
fi
grep -E 'ROUTER-FATE-COST' "$log" | sed -E 's/^ *router_fate_cost_test.go:[0-9]*: //'
