#!/usr/bin/env bash
# Handover at full load: a node cache (instance A) serves on loopback while three clients ask it
# as fast as they can, with a mix of hits and misses: dnsperf over UDP; TCP as stub resolvers use
# it, a new connection per query (benchctl tcpload); and dnsperf over long-lived TCP connections
# with queries pipelined on each (which no stub resolver does, shown for its known limit); a
# second instance (B) starts beside A, A gets SIGTERM and hands over. Behind the node cache is a
# central role (./coredns: cluster.local from a template, example.org forwarded to a resolver that
# takes SLOW_DELAY to answer), so misses are in flight when A is told to stop. Prints, per round,
# the rate each client reached, the queries it sent, lost (no answer within 5 s) and answered
# with SERVFAIL, and writes the table as markdown to $HANDOVER_OUT/section.handover.md (bench/run.sh
# puts it into bench/RESULTS.md).
#
# Queries, in a repeating pattern of 64: 47 hits (100 names, warmed first), 16 cluster-zone misses
# (each name new) and 1 miss answered by the slow resolver (each name new).
#
#   bench/nodecache/handover.sh           # 3 rounds with ./coredns
#   ROUNDS=1 SLOW_DELAY=500ms LOAD_SECONDS=10 bench/nodecache/handover.sh
# A binary to compare with (e.g. one built without the socket detach) may be given as
# $COMPARE_BINARY.
set -euo pipefail

cd "$(dirname "$0")/../.."
ROOT=$(pwd)
OUT=${HANDOVER_OUT:-$ROOT/bench/out/nodecache-handover}
ROUNDS=${ROUNDS:-3}
SLOW_DELAY=${SLOW_DELAY:-200ms}
LOAD_SECONDS=${LOAD_SECONDS:-8}
mkdir -p "$OUT"
command -v dnsperf >/dev/null || { apt-get update -qq >/dev/null; DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dnsperf >/dev/null; }
[ "${SKIP_BUILD:-}" = 1 ] || ./build.sh build >&2
cp ./coredns "$OUT/coredns"
go build -o "$OUT/goceiling" ./bench/goceiling
go build -o "$OUT/benchctl" ./bench/benchctl

PIDS=()
trap 'for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done' EXIT

cat >"$OUT/Corefile.central" <<'EOF'
cluster.local:5300 {
    bind 127.0.0.2
    template IN A cluster.local {
        answer "{{ .Name }} 30 IN A 10.96.0.42"
    }
}
example.org:5300 {
    bind 127.0.0.2
    forward . 127.0.0.3:5302
}
EOF
cat >"$OUT/Corefile" <<'EOF'
cluster.local:1053 example.org:1053 {
    nodecache {
        listen 127.0.0.1
        interface lo
        packet_filter none
        upstream tcp 127.0.0.2:5300
        timeout 2s
        max_concurrent 1024
    }
}
EOF
# queries FILE PREFIX: the pattern of 64, long enough that no miss name comes round twice.
queries() {
	awk -v p="$2" 'BEGIN {
		for (i = 0; i < 640000; i++) {
			k = i % 64
			if (k == 63) printf "slow-%s%d.example.org A\n", p, i
			else if (k % 4 == 3) printf "miss-%s%d.default.svc.cluster.local A\n", p, i
			else printf "web-%d.default.svc.cluster.local A\n", i % 100
		}
	}' >"$1"
}
queries "$OUT/udp.txt" u
queries "$OUT/tcp.txt" t
queries "$OUT/pipe.txt" p
: >"$OUT/warm.txt"
for i in $(seq 0 99); do echo "web-$i.default.svc.cluster.local A" >>"$OUT/warm.txt"; done

"$OUT/goceiling" -listen 127.0.0.3:5302 -tcp -a 192.0.2.80 -delay "$SLOW_DELAY" >"$OUT/slow.log" 2>&1 &
PIDS+=($!)
"$OUT/coredns" -conf "$OUT/Corefile.central" >"$OUT/central.log" 2>&1 &
PIDS+=($!)

# field FILE LABEL: a figure of dnsperf's report ("Queries sent:", ...); rcode FILE CODE: a count
# from its "Response codes:" line.
field() { awk -v l="$2" 'index($0, l) { sub(/^.*: */, ""); print $1; exit }' "$1"; }
rcode() { grep -o "$2 [0-9]*" "$1" | awk '{ print $2 }' | head -1 | grep . || echo 0; }

round() {
	local bin=$1 label=$2 a b du dt dp
	"$bin" -conf "$OUT/Corefile" >"$OUT/a.log" 2>&1 &
	a=$!
	sleep 1
	dnsperf -s 127.0.0.1 -p 1053 -d "$OUT/warm.txt" -n 1 >/dev/null 2>&1
	dnsperf -s 127.0.0.1 -p 1053 -d "$OUT/udp.txt" -l "$LOAD_SECONDS" -c 4 -q 200 -t 5 >"$OUT/dnsperf.udp.txt" 2>&1 &
	du=$!
	"$OUT/benchctl" tcpload -server 127.0.0.1:1053 -d "$OUT/tcp.txt" -l "$LOAD_SECONDS" -c 32 -t 5s >"$OUT/dnsperf.tcp.txt" 2>&1 &
	dt=$!
	dnsperf -m tcp -s 127.0.0.1 -p 1053 -d "$OUT/pipe.txt" -l "$LOAD_SECONDS" -c 8 -q 64 -t 5 >"$OUT/dnsperf.pipe.txt" 2>&1 &
	dp=$!
	sleep 3
	"$bin" -conf "$OUT/Corefile" >"$OUT/b.log" 2>&1 &
	b=$!
	sleep 1.5
	kill -TERM "$a"
	wait "$a" || true
	wait "$du" || true
	wait "$dt" || true
	wait "$dp" || true
	kill -TERM "$b"
	wait "$b" || true
	local t kind
	for t in udp tcp pipe; do
		case $t in
		udp) kind=UDP ;;
		tcp) kind=TCP ;;
		pipe) kind="TCP pipelined" ;;
		esac
		printf '| %s | %s | %s | %s | %s | %s |\n' "$label" "$kind" \
			"$(field "$OUT/dnsperf.$t.txt" "Queries per second:" | cut -d. -f1)" \
			"$(field "$OUT/dnsperf.$t.txt" "Queries sent:")" \
			"$(field "$OUT/dnsperf.$t.txt" "Queries lost:")" \
			"$(rcode "$OUT/dnsperf.$t.txt" SERVFAIL)"
	done
}

{
	echo "### Handover at full load"
	echo
	echo "Run by bench/nodecache/handover.sh on $(date -u '+%Y-%m-%d %H:%M UTC') at commit $(git describe --always --dirty 2>/dev/null || echo unknown)."
	echo "A node cache on loopback is asked by three clients at once, each as fast as it goes for ${LOAD_SECONDS} s: **UDP** (dnsperf \`-c 4 -q 200\`);"
	echo "**TCP** as stub resolvers use it after a truncated answer, a new connection per query (\`benchctl tcpload -c 32\`); and"
	echo "**TCP pipelined**, dnsperf \`-m tcp -c 8 -q 64\`: 8 long-lived connections with up to 8 queries queued on each, which no"
	echo "stub resolver does. Of every 64 queries 47 are hits, 16 cluster-zone misses (new names, answered by the"
	echo "central role at once) and 1 a miss the central role forwards to a resolver that takes ${SLOW_DELAY}. After 3 s a second instance"
	echo "starts beside the first; 1.5 s later the first gets SIGTERM and hands over. Lost: no answer within 5 s."
	echo "The pipelined client's losses are the queries it had sent on its connections to the old instance after that"
	echo "instance's last read: the old process closes those connections as it exits, and a client is expected to ask again"
	echo "on a new connection (RFC 7766 §6.2.3), which dnsperf does not (see docs/reliability.md, Known limits)."
	echo "Everything (both node caches, the central role, the slow resolver, both clients) shares the machine's $(nproc) cores."
	echo
	echo "| binary | clients | queries/s | sent | lost | SERVFAIL |"
	echo "| --- | --- | --- | --- | --- | --- |"
	for _ in $(seq 1 "$ROUNDS"); do
		round "$OUT/coredns" "./coredns"
		if [ -n "${COMPARE_BINARY:-}" ]; then round "$COMPARE_BINARY" "$(basename "$COMPARE_BINARY")"; fi
	done
	echo
} | tee "$OUT/section.handover.md"
