#!/usr/bin/env bash
# Daemon memory (issue 11): peak RSS and CPU time of the real hostflow
# daemon, default settings, on the receiving end of a veth pair in test
# namespaces (hf-mem-*), with 100,608 active flows (30 packets each) and
# under a flood of 2,023,680 distinct flows of 2 packets each, sent by
# trafgen -P 2 (integration/load_memory_test.go, TestLoadMemory); each
# also exported as IPFIX over UDP to a collector in the namespace, as
# bench/compare.sh does (flows-100k-ipfix, flood-2M-ipfix). The
# exactness checks of the load tests apply; the flood run also asserts an
# RSS bound derived from max_flows and kernel_map_size.
#
#   sudo bench/memory.sh                # this tree's daemon
#   sudo BASE=<rev> bench/memory.sh     # and the daemon of <rev> first, same session
#   sudo LOAD_MEMORY_ARGS="--ring-buffer-size 4194304" bench/memory.sh   # extra daemon arguments
#
# RSS does not depend on the machine's load; CPU-s do. Needs root and
# trafgen (Debian netsniff-ng). Full go test output in $LOG.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PATH:/usr/local/go/bin"
log=${LOG:-$(mktemp -t hostflow-memory.XXXXXX)}
if [ "$(id -u)" -ne 0 ]; then
	echo "memory: needs root (BPF, network namespaces)" >&2
	exit 1
fi
echo "kernel $(uname -r), $(nproc) CPUs, $(date -u +%FT%TZ); full output in $log"
status=0
run() { # label, binary ("" to build this tree)
	local out
	out=$(mktemp)
	echo "== $1" | tee -a "$log"
	LOAD_HOSTFLOW_BIN="$2" go test -tags bench -count=1 -run '^TestLoadMemory$' -v ./integration/ >"$out" 2>&1 || status=$?
	cat "$out" >>"$log"
	grep -E 'MEMORY|peak RSS .* bound|^(ok|FAIL)' "$out" | sed 's/^ *load_memory_test.go:[0-9]*: /  /' || true
	rm -f "$out"
}
if [ -n "${BASE:-}" ]; then
	tmp=$(mktemp -d)
	trap 'rm -rf "$tmp"' EXIT
	git archive "$BASE" | tar -x -C "$tmp"
	(cd "$tmp" && CGO_ENABLED=0 go build -o "$tmp/hostflow" ./cmd/hostflow) # static, as the tree's daemon
	run "BASE $BASE ($(git rev-parse --short "$BASE"))" "$tmp/hostflow"
fi
run "this tree ($(git rev-parse --short HEAD)$(git diff --quiet || echo +changes))" ""
exit $status
