#!/usr/bin/env bash
# hostflow against softflowd, the libpcap flow probe it replaces (issue 11),
# on the same workload in one run: trafgen sends 100,608 UDP flows x 30
# packets of 60-byte frames through a veth pair between two test namespaces
# (hf-cmp-*, 198.18.0.0/15) into hfc1, where the probe watches and exports
# IPFIX over UDP to nfcapd on 127.0.0.1 in the namespace. Two skb layouts:
# trafgen's TX ring (non-linear skbs) and `trafgen -t 0` (sendto, linear).
# A third run per repeat attaches minflow alone (no daemon): the floor of
# the generator rate any TC flow counter keeps. Each probe run is compared
# with the runs without a probe just before and after it; the probes take
# turns going first.
# Then the kernel cost of hostflow's TC program against a no-op and minflow
# (../shared/bench/minflow.c) on the same packets, at 1,000 and 100,608 flows.
#
# Prints every run as it ends, then a table: machine CPU added per packet
# (/proc/stat, probe run minus its baseline), generator rate with / without,
# the daemon's own CPU per packet, its peak RSS, exported vs received
# packets, and the TC programs' ns per packet. The exit status says whether
# it ran, not whether a target was met. The machine's load average goes
# with every figure: on a shared machine the figures are noisy.
#
# Needs root, trafgen (netsniff-ng), softflowd, nfdump, clang. Builds
# bin/hostflow with `make build` (SKIP_BUILD=1 uses the existing one).
#
#   sudo bench/compare.sh
#   REPEATS=1 LAYOUTS=ring sudo bench/compare.sh     # a quick look
#   PHASES=tc TC_ORDER=minflow-first sudo bench/compare.sh
#
# Knobs: REPEATS (3), PER_FLOW (30 packets per flow), LAYOUTS (ring,sendto),
# TC_PACKETS (1000000 per TC scenario), TC_ORDER (hostflow-first or
# minflow-first), SOFTFLOWD_MAX_FLOWS (262144, hostflow's max_flows
# default), PHASES (throughput,tc,export: the probe runs, the TC program
# cost, IPFIX export over UDP against go-ipfix), EXPORT_COUNT (5 rounds),
# MINFLOW_C (path of minflow.c), LOG (the full go test output).
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)
export PATH="$PATH:/usr/local/go/bin"

if [ "$(id -u)" -ne 0 ]; then
	echo "compare: needs root (BPF, network namespaces)" >&2
	exit 1
fi
for tool in go clang trafgen softflowd softflowctl nfcapd nfdump ethtool; do
	if ! command -v "$tool" >/dev/null; then
		echo "compare: $tool is missing (scripts/install-deps.sh installs what scripts/debian-packages.txt lists)" >&2
		exit 1
	fi
done

# minflow.c: the shared copy next to the repository; a git worktree's
# repository is the one its common directory belongs to.
minflow_c=${MINFLOW_C:-}
if [ -z "$minflow_c" ]; then
	for dir in "$repo/.." "$(dirname "$(git rev-parse --path-format=absolute --git-common-dir 2>/dev/null || echo /nonexistent/.git)")/.."; do
		if [ -f "$dir/shared/bench/minflow.c" ]; then
			minflow_c=$(cd "$dir/shared/bench" && pwd)/minflow.c
			break
		fi
	done
fi
if [ -z "$minflow_c" ] || [ ! -f "$minflow_c" ]; then
	echo "compare: minflow.c not found: expected $repo/../shared/bench/minflow.c (the shared copy next to the repository), or set MINFLOW_C" >&2
	exit 1
fi

tmp=$(mktemp -d -t hostflow-compare.XXXXXX)
log=${LOG:-$(mktemp -t hostflow-compare.XXXXXX)}
before_ns=$(ip netns list | awk '/^hf-cmp-/ {print $1}' | sort)
cleanup() {
	# The test removes its namespaces and processes itself; if it was
	# killed, remove what this run created: the hf-cmp-* namespaces that
	# were not there before, after ending the processes inside them.
	local ns pid
	for ns in $(comm -13 <(echo "$before_ns") <(ip netns list | awk '/^hf-cmp-/ {print $1}' | sort)); do
		for pid in $(ip netns pids "$ns" 2>/dev/null); do
			kill -KILL "$pid" 2>/dev/null || true
		done
		ip netns del "$ns" 2>/dev/null || true
	done
	rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

clang -O2 -g -target bpf -I"/usr/include/$(uname -m)-linux-gnu" -c "$minflow_c" -o "$tmp/minflow.o"
if [ "${SKIP_BUILD:-0}" != 1 ]; then
	make -s build >/dev/null
fi
[ -x bin/hostflow ] || { echo "compare: bin/hostflow missing (make build)" >&2; exit 1; }

echo "compare: $(git describe --always --dirty 2>/dev/null) ($(bin/hostflow version 2>/dev/null | head -1)), softflowd $(dpkg-query -W -f='${Version}' softflowd 2>/dev/null), kernel $(uname -r), $(nproc) CPUs, $(date -u +%FT%TZ)"
echo "compare: minflow from $minflow_c; load average at start: $(cut -d' ' -f1-3 /proc/loadavg); full output in $log"

phases=${PHASES:-throughput,tc,export}
# TestCompare runs the throughput and tc phases; export is this script's.
test_phases=$(echo "$phases" | tr ',' '\n' | { grep -v '^export$' || true; } | paste -sd, -)
if [ -n "$test_phases" ]; then
	COMPARE_HOSTFLOW_BIN="$repo/bin/hostflow" COMPARE_MINFLOW_OBJ="$tmp/minflow.o" COMPARE_TABLE="$tmp/table.txt" \
		COMPARE_REPEATS="${REPEATS:-3}" COMPARE_PER_FLOW="${PER_FLOW:-30}" COMPARE_LAYOUTS="${LAYOUTS:-ring,sendto}" \
		COMPARE_TC_PACKETS="${TC_PACKETS:-1000000}" COMPARE_TC_ORDER="${TC_ORDER:-hostflow-first}" \
		COMPARE_SOFTFLOWD_MAX_FLOWS="${SOFTFLOWD_MAX_FLOWS:-262144}" COMPARE_PHASES="$test_phases" \
		go test -tags bench -count=1 -timeout 90m -run '^TestCompare$' -v ./integration/ 2>&1 |
		tee "$log" | { grep --line-buffered -E 'COMPARE-(SETUP|RUN|TC) ' || true; } | sed -u 's/^ *compare_test.go:[0-9]*: /  /' || true
	echo "compare: load average at end: $(cut -d' ' -f1-3 /proc/loadavg)"
	# It ran when the test passed: every run and scenario completed and the
	# TC programs saw the same packets. Targets are in the table, not here.
	if ! grep -q '^--- PASS: TestCompare ' "$log" || [ ! -s "$tmp/table.txt" ]; then
		echo "compare: did not run to the end; the failure (full output in $log):" >&2
		grep -E -- '--- (FAIL|SKIP)|^(FAIL|panic)|_test.go:[0-9]+:' "$log" | grep -v 'COMPARE-' | tail -20 >&2
		exit 1
	fi
	echo
	cat "$tmp/table.txt"
fi

# End-to-end IPFIX export over UDP against go-ipfix: the encoder benchmark
# (exporter/ipfix_bench_test.go), one CPU, EXPORT_COUNT rounds; each round
# runs hostflow's default UDP path and go-ipfix one after the other.
if echo "$phases" | tr ',' '\n' | grep -qx export; then
	go test -c -tags bench -o "$tmp/exporter.test" ./exporter/
	(cd exporter && "$tmp/exporter.test" -test.run '^$' -test.bench 'BenchmarkEncodeHostflowVsGoIPFIX/^udp$/' \
		-test.cpu 1 -test.count "${EXPORT_COUNT:-5}") >"$tmp/export.txt" 2>&1 || {
		echo "compare: export benchmark failed:" >&2
		cat "$tmp/export.txt" >&2
		exit 1
	}
	cat "$tmp/export.txt" >>"$log"
	echo
	awk '
		function metric(name,   i) { for (i = 3; i < NF; i++) if ($(i+1) == name) return $i; return 0 }
		/^BenchmarkEncodeHostflowVsGoIPFIX\/udp\/hostflow/ { hc[++nh] = metric("records/cpu-s"); hw[nh] = metric("records/s") }
		/^BenchmarkEncodeHostflowVsGoIPFIX\/udp\/go-ipfix/ { gc[++ng] = metric("records/cpu-s"); gw[ng] = metric("records/s") }
		function median(a, n,   i, j, t, b) {
			for (i = 1; i <= n; i++) b[i] = a[i]
			for (i = 1; i <= n; i++) for (j = i + 1; j <= n; j++) if (b[j] < b[i]) { t = b[i]; b[i] = b[j]; b[j] = t }
			return n % 2 ? b[(n + 1) / 2] : (b[n / 2] + b[n / 2 + 1]) / 2
		}
		END {
			n = nh < ng ? nh : ng
			if (n == 0) { print "export: no benchmark result"; exit 1 }
			for (i = 1; i <= n; i++) { rc[i] = hc[i] / gc[i]; rw[i] = hw[i] / gw[i] }
			printf "IPFIX export over UDP (BenchmarkEncodeHostflowVsGoIPFIX/udp, 256 flows of the 8 default templates, 1400-byte messages, -cpu 1, %d rounds)\n", n
			printf "%-34s %14s %14s %8s  %s\n", "figure", "hostflow", "go-ipfix", "ratio", "target"
			printf "%-34s %14.0f %14.0f %7.2fx  %s\n", "records per CPU-second (median)", median(hc, n), median(gc, n), median(rc, n), ">= 3x"
			printf "%-34s %14.0f %14.0f %7.2fx\n", "records per second, wall (median)", median(hw, n), median(gw, n), median(rw, n)
			printf "per-round ratios, CPU:"; for (i = 1; i <= n; i++) printf " %.2f", rc[i]; printf "\n"
		}' "$tmp/export.txt"
fi
