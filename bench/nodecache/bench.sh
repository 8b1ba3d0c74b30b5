#!/usr/bin/env bash
# Node cache benchmark: ours (nodecache) against upstream CoreDNS `cache` + `forward { force_tcp }`
# in the same run, on loopback, with dnsperf (Debian package, installed when missing). The quick
# check beside the full bench (bench/run.sh: its hit and miss scenarios, with the real central role).
#
#   bench/nodecache/bench.sh            # 10 s per run, A/B/A/B
#   SECONDS_PER_RUN=20 bench/nodecache/bench.sh
#
# Scenarios, each A/B/A/B (A = nodecache, B = upstream cache+forward), the server under test
# pinned to CPU 0 with taskset, dnsperf and the cluster DNS (a `template` zone) on CPU 1:
#   hit   cache hits: 100 names, warmed, asked over UDP
#   miss  cluster-zone misses: every name new, so every query goes to the cluster DNS over TCP
# The runs are Go (`benchctl nodecache`, bench/benchctl/nodecache.go); this script installs what is
# missing and builds. Prints a Markdown table and writes it, with the figures as JSON, to
# bench/out/nodecache/nodecache.md and nodecache.json.
set -euo pipefail

cd "$(dirname "$0")/../.."
ROOT=$(pwd)
export BENCH_OUT=$ROOT/bench/out/nodecache
mkdir -p "$BENCH_OUT"

need() {
	command -v "$1" >/dev/null 2>&1 && return
	echo "installing $2" >&2
	apt-get update -qq >/dev/null
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$2" >/dev/null
}
need dnsperf dnsperf
need taskset util-linux

[ "${SKIP_BUILD:-}" = 1 ] || ./build.sh build >&2
cp ./coredns "$BENCH_OUT/coredns"
go build -o "$BENCH_OUT/benchctl" ./bench/benchctl
exec "$BENCH_OUT/benchctl" nodecache
