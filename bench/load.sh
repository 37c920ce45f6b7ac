#!/usr/bin/env bash
# The load test: trafgen (2 processes) sends 60-byte UDP frames over 100,608
# flows through a veth pair between two test namespaces (hf-load-*,
# 198.18.0.0/15); the hostflow daemon on the receiving end must export
# exactly what the interface counted. Prints the rates with and without
# hostflow and the exported/counted figures. Needs root and trafgen
# (Debian netsniff-ng). The full go test output is kept in $LOG.
#
#   sudo bench/load.sh
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PATH:/usr/local/go/bin"
log=${LOG:-$(mktemp -t hostflow-load.XXXXXX)}
if [ "$(id -u)" -ne 0 ]; then
	echo "load: needs root (BPF, network namespaces)" >&2
	exit 1
fi

echo "kernel $(uname -r), $(nproc) CPUs, $(date -u +%FT%TZ); full output in $log"
status=0
go test -count=1 -run '^TestLoad$' -v ./integration/ >"$log" 2>&1 || status=$?
grep -E '^(=== RUN|--- |    --- )|WITH|rate with|hfl1 counted|received pps|load_test.go.*(exported|want)' "$log" |
	grep -v '^=== RUN' | sed 's/^ *load_test.go:[0-9]*: /  /'
grep -E '^(ok|FAIL)' "$log" || true
exit $status
