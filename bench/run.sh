#!/usr/bin/env bash
# Benchmarks side by side with upstream CoreDNS v1.15.0 (issue 7). Run by `./build.sh bench`;
# writes bench/results.json, bench/plots/ and bench/RESULTS.md (rendered from the JSON by
# bench/benchctl/results.md.tmpl), working files under bench/out/run/ (git-ignored). About 40 min
# on 2 cores.
#
# The scenarios are Go (bench/benchctl: `benchctl run`); this script only does what needs root
# first: installs dnsperf and unbound when missing, builds ./coredns (unless SKIP_BUILD=1),
# benchctl, bench/goceiling and the control plane (test/e2e/controlplane/build.sh, started by
# internal/controlplane), and adds the bridge BENCH_LINK with the run's addresses; then it runs
# benchctl run (and deletes the link after). Every server under test runs alone on CPU $SERVER_CPU (taskset), dnsperf and helpers on
# CPU $LOAD_CPU; every comparison is run as rounds A/B/A/B so drift cancels.
#
# Scenarios (SCENARIOS, default all, in this order):
#   index   cluster names from the index: k8sdiscovery vs upstream kubernetes, the same objects
#           (INDEX_SERVICES Services, half headless, with EndpointSlices) in a real kube-apiserver
#   hit     node-cache hits over UDP: nodecache vs CoreDNS cache vs Unbound vs a bare miekg/dns server,
#           a bare miekg/dns stub (bench/goceiling) behind the caches
#   miss    cluster-zone misses, upstream over TCP: nodecache vs cache + forward { force_tcp }, behind
#           them the real central role: ./coredns with k8sdiscovery on a real kube-apiserver
#           (MISS_SERVICES Services), asked only names it has never seen (NXDOMAIN)
#   search  an external lookup from a pod with ndots:5, with and without searchpath
#   memory  MEM_SERVICES Services and MEM_PODS Pods with EndpointSlices in the apiserver: heap and
#           RSS, the peak during a forced relist, time to first sync; k8sdiscovery vs kubernetes,
#           with and without `pods verified`
#   handover a node-cache handover (SIGTERM beside a second instance) under UDP and TCP clients at
#           full speed, hits and misses, a slow resolver behind the central role (uses both CPUs)
#   lowrate CPU per query at fixed rates (LOW_RATES, 2000 and 10000 q/s), where a node cache spends
#           most of its life: the central role (k8sdiscovery vs kubernetes, the index scenario's
#           objects and queries) and the node role (nodecache vs cache + forward, hits)
#   chain   the whole chain as deployed, hits and misses: nodecache in front of k8sdiscovery vs
#           CoreDNS as NodeLocal DNSCache in front of CoreDNS kubernetes, CPU of each tier
#
# Knobs (environment): SCENARIOS, ROUNDS (3), LOWRATE_ROUNDS (5, the lowrate scenario's), RUN_SECONDS (10), OUTSTANDING (100), LATENCY_SECONDS (5),
# INDEX_SERVICES (1000), MISS_SERVICES (100), MEM_SERVICES (10000), MEM_PODS (150000), MEM_SETTLE (20 s),
# RELIST_WATCH (60 s), LOW_RATES ("2000 10000"), SKIP_BUILD=1, BENCH_LINK (dnsbench0), BENCH_NET
# (169.254.77: servers on .1, the stub or central role behind a cache on .2, search's upstream on .3,
# its pod on .9), SERVER_CPU (0), LOAD_CPU (1), BENCH_OUT and BENCH_RESULTS (where the working files
# and the table go; results.json and plots/ go beside the table).
# OUTSTANDING: queries dnsperf keeps in flight. 100 fits a default-sized socket receive buffer;
# with 500 the first burst overflows the buffer of every server that keeps the default (all but
# nodecache) and each lost query holds one of dnsperf's slots for its 5 s timeout.
#
# bench/RESULTS.memory.md and bench/RESULTS.miss.md (with results.miss.json and plots/miss/) are
# records of earlier runs of single scenarios, made before the scenarios moved into Go: kept as
# written, not rendered again (results.miss.json is in the former JSON shape, which `benchctl plot`
# still reads; `benchctl report` would render it without the figures that shape lacked).
#
#   bench/run.sh          a run (what ./build.sh bench does)
#   bench/run.sh report   RESULTS.md and plots again from results.json (`benchctl report`)
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$(pwd)
export BENCH_OUT=${BENCH_OUT:-$ROOT/bench/out/run}
export BENCH_RESULTS=${BENCH_RESULTS:-$ROOT/bench/RESULTS.md}
export BENCH_LINK=${BENCH_LINK:-dnsbench0}
export BENCH_NET=${BENCH_NET:-169.254.77}
SCENARIOS=${SCENARIOS:-index hit miss search memory handover lowrate chain}

log() { echo "bench: $*" >&2; }

need() {
	command -v "$1" >/dev/null 2>&1 && return
	[ "$(id -u)" -eq 0 ] || { echo "bench: $1 is missing; install it with: sudo apt-get install -y $2" >&2; exit 1; }
	log "installing $2"
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$2" >/dev/null 2>&1 ||
		{ apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$2" >/dev/null; }
}

wants() { [[ " $SCENARIOS " == *" $1 "* ]]; }

case "${1:-run}" in
report)
	go build -o "$BENCH_OUT/benchctl" ./bench/benchctl
	dir=$(dirname "$BENCH_RESULTS")
	name=$(basename "$BENCH_RESULTS" .md)
	name=${name#RESULTS}
	name=${name#.}
	exec "$BENCH_OUT/benchctl" report "$dir/results${name:+.$name}.json" "$BENCH_RESULTS"
	;;
run) ;;
*)
	echo "usage: bench/run.sh [run|report]" >&2
	exit 2
	;;
esac

[ "$(id -u)" -eq 0 ] || { echo "bench: run as root (it adds a bridge for its addresses and may install packages)" >&2; exit 1; }
need dnsperf dnsperf
need unbound unbound
need taskset util-linux
need ip iproute2
[ "$(nproc)" -ge 2 ] || { echo "bench: needs 2 CPUs (server and load each pinned to one)" >&2; exit 1; }
rm -rf "$BENCH_OUT"
mkdir -p "$BENCH_OUT"
[ "${SKIP_BUILD:-}" = 1 ] || ./build.sh build >&2
cp ./coredns "$BENCH_OUT/coredns"
go build -o "$BENCH_OUT/benchctl" ./bench/benchctl
go build -o "$BENCH_OUT/goceiling" ./bench/goceiling
if wants index || wants miss || wants memory || wants lowrate || wants chain; then
	test/e2e/controlplane/build.sh >&2
	CONTROLPLANE_BIN=$(test/e2e/controlplane/build.sh dir)
	export CONTROLPLANE_BIN
fi

# The addresses the servers use: on a bridge of our own, so nothing else on the machine (another
# benchmark on 127.0.0.1:1053, say) shares a socket with them. Local delivery as on loopback.
ip link del "$BENCH_LINK" 2>/dev/null || true
ip link add "$BENCH_LINK" type bridge
ip link set "$BENCH_LINK" up
for a in 1 2 3 9; do ip addr add "$BENCH_NET.$a/32" dev "$BENCH_LINK"; done
trap 'ip link del "$BENCH_LINK" 2>/dev/null || true' EXIT

export SCENARIOS
"$BENCH_OUT/benchctl" run
