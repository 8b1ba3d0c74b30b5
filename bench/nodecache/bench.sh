#!/usr/bin/env bash
# Node cache benchmark: ours (nodecache) against upstream CoreDNS `cache` + `forward { force_tcp }`
# in the same run, on loopback, with dnsperf (Debian package, installed when missing).
#
#   bench/nodecache/bench.sh            # 10 s per run, A/B/A/B
#   SECONDS_PER_RUN=20 bench/nodecache/bench.sh
#
# Scenarios, each A/B/A/B (A = nodecache, B = upstream cache+forward), the server under test
# pinned to CPU 0 with taskset, dnsperf and the cluster DNS (a `template` zone) on CPU 1:
#   hit   cache hits: 100 names, warmed, asked over UDP
#   miss  cluster-zone misses: every name new, so every query goes to the cluster DNS over TCP
# Prints a Markdown table (and writes it to bench/out/nodecache.md).
set -euo pipefail

cd "$(dirname "$0")/../.."
ROOT=$(pwd)
RUN_SECONDS=${SECONDS_PER_RUN:-10}
OUT=$ROOT/bench/out/nodecache
mkdir -p "$OUT"

need() {
	command -v "$1" >/dev/null 2>&1 && return
	echo "installing $2" >&2
	apt-get update -qq >/dev/null
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$2" >/dev/null
}
need dnsperf dnsperf
need taskset util-linux
need dig bind9-dnsutils

[ "${SKIP_BUILD:-}" = 1 ] || ./build.sh build >&2
BIN=$OUT/coredns
cp ./coredns "$BIN"

PIDS=()
cleanup() {
	for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
	wait 2>/dev/null || true
}
trap cleanup EXIT

# The cluster DNS: answers every cluster.local A name from a template, no cache, no log.
cat >"$OUT/Corefile.cluster" <<'EOF'
cluster.local:5300 {
    bind 127.0.0.2
    template IN A cluster.local {
        answer "{{ .Name }} 30 IN A 10.96.0.42"
    }
}
EOF
cat >"$OUT/Corefile.ours" <<'EOF'
cluster.local:1053 {
    nodecache {
        listen 127.0.0.1
        interface lo
        packet_filter none
        upstream tcp 127.0.0.2:5300
    }
}
EOF
cat >"$OUT/Corefile.upstream" <<'EOF'
cluster.local:1053 {
    bind 127.0.0.1
    cache {
        success 9984 30
        denial 9984 5
    }
    forward . 127.0.0.2:5300 {
        force_tcp
    }
}
EOF

taskset -c 1 "$BIN" -conf "$OUT/Corefile.cluster" >"$OUT/cluster.log" 2>&1 &
PIDS+=($!)

# Query files: 100 hot names; and enough unique names that no run asks one twice.
: >"$OUT/hit.txt"
for i in $(seq 1 100); do echo "web-$i.default.svc.cluster.local A" >>"$OUT/hit.txt"; done
if [ ! -s "$OUT/miss.txt" ]; then
	seq 1 3000000 | sed 's/.*/svc-&.bench.svc.cluster.local A/' >"$OUT/miss.txt"
fi

wait_serving() {
	for _ in $(seq 1 100); do
		dig +time=1 +tries=1 @127.0.0.1 -p 1053 ready.default.svc.cluster.local >/dev/null 2>&1 && return
		sleep 0.1
	done
	echo "server on :1053 did not answer" >&2
	exit 1
}

# run_one NAME SCENARIO -> prints QPS
run_one() {
	local name=$1 scenario=$2 pid qps
	taskset -c 0 "$BIN" -conf "$OUT/Corefile.$name" >"$OUT/$name.$scenario.log" 2>&1 &
	pid=$!
	PIDS+=("$pid")
	wait_serving
	local file=$OUT/$scenario.txt
	if [ "$scenario" = hit ]; then
		taskset -c 1 dnsperf -s 127.0.0.1 -p 1053 -d "$file" -l 1 -c 4 -q 100 >/dev/null 2>&1 # warm
	else
		# A fresh slice of never-asked names for every miss run.
		file=$OUT/miss.$name.$RANDOM.txt
		local start=$(( (RUN_COUNT * 700000) % 2300000 + 1 ))
		sed -n "${start},$((start + 699999))p" "$OUT/miss.txt" >"$file"
		RUN_COUNT=$((RUN_COUNT + 1))
	fi
	taskset -c 1 dnsperf -s 127.0.0.1 -p 1053 -d "$file" -l "$RUN_SECONDS" -c 8 -q 500 >"$OUT/$name.$scenario.dnsperf" 2>&1 || true
	qps=$(awk '/Queries per second:/ {print $4}' "$OUT/$name.$scenario.dnsperf")
	lost=$(awk '/Queries lost:/ {print $3}' "$OUT/$name.$scenario.dnsperf")
	kill "$pid"
	wait "$pid" 2>/dev/null || true
	[ "$scenario" = miss ] && rm -f "$file"
	echo "${qps:-0} ${lost:-?}"
}

RUN_COUNT=0
declare -A QPS LOST
for scenario in hit miss; do
	for round in 1 2; do
		for name in ours upstream; do
			read -r q l < <(run_one "$name" "$scenario")
			QPS[$scenario.$name.$round]=$q
			LOST[$scenario.$name]=$(( ${LOST[$scenario.$name]:-0} + l ))
			echo "$scenario round $round $name: $q qps (lost $l)" >&2
		done
	done
done

avg() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.0f", (a + b) / 2 }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "n/a" }'; }

{
	echo "| scenario | nodecache QPS (run 1, run 2) | cache+forward force_tcp QPS (run 1, run 2) | ratio (mean) | lost (ours / theirs) |"
	echo "| --- | --- | --- | --- | --- |"
	for scenario in hit miss; do
		o=$(avg "${QPS[$scenario.ours.1]}" "${QPS[$scenario.ours.2]}")
		u=$(avg "${QPS[$scenario.upstream.1]}" "${QPS[$scenario.upstream.2]}")
		label="cache hit (UDP)"
		[ "$scenario" = miss ] && label="cluster-zone miss (upstream over TCP)"
		printf '| %s | %s (%.0f, %.0f) | %s (%.0f, %.0f) | %s | %s / %s |\n' "$label" "$o" "${QPS[$scenario.ours.1]}" "${QPS[$scenario.ours.2]}" \
			"$u" "${QPS[$scenario.upstream.1]}" "${QPS[$scenario.upstream.2]}" "$(ratio "$o" "$u")" "${LOST[$scenario.ours]}" "${LOST[$scenario.upstream]}"
	done
	echo
	echo "Server under test on CPU 0 (taskset), dnsperf (-c 8 -q 500) and the cluster DNS on CPU 1; ${RUN_SECONDS}s per run, A/B/A/B; $(nproc) cores, $(uname -r); load average $(cut -d' ' -f1-3 /proc/loadavg). Lost: dnsperf's count over both runs (mostly its first burst of 500 queries overflowing a default-sized socket buffer)."
} | tee "$ROOT/bench/out/nodecache.md"
