#!/usr/bin/env bash
# Handover under load: dnsperf asks cache hits at full speed on loopback while a second
# nodecache instance starts beside the first and the first gets SIGTERM. Prints the queries sent
# and lost per round. A binary to compare with (e.g. one built without the socket detach) may be
# given as $COMPARE_BINARY.
#
#   bench/nodecache/handover.sh            # 3 rounds with ./coredns
set -euo pipefail

cd "$(dirname "$0")/../.."
ROOT=$(pwd)
OUT=$ROOT/bench/out/nodecache-handover
ROUNDS=${ROUNDS:-3}
mkdir -p "$OUT"
command -v dnsperf >/dev/null || { apt-get update -qq >/dev/null; DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dnsperf >/dev/null; }
[ "${SKIP_BUILD:-}" = 1 ] || ./build.sh build >&2
cp ./coredns "$OUT/coredns"

PIDS=()
trap 'for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done' EXIT

cat >"$OUT/Corefile.cluster" <<'EOF'
cluster.local:5300 {
    bind 127.0.0.2
    template IN A cluster.local {
        answer "{{ .Name }} 30 IN A 10.96.0.42"
    }
}
EOF
cat >"$OUT/Corefile" <<'EOF'
cluster.local:1053 {
    nodecache {
        listen 127.0.0.1
        interface lo
        packet_filter none
        upstream tcp 127.0.0.2:5300
    }
}
EOF
: >"$OUT/hit.txt"
for i in $(seq 1 100); do echo "web-$i.default.svc.cluster.local A" >>"$OUT/hit.txt"; done

"$OUT/coredns" -conf "$OUT/Corefile.cluster" >"$OUT/cluster.log" 2>&1 &
PIDS+=($!)

round() {
	local bin=$1 label=$2 a b d
	"$bin" -conf "$OUT/Corefile" >"$OUT/a.log" 2>&1 &
	a=$!
	sleep 1
	dnsperf -s 127.0.0.1 -p 1053 -d "$OUT/hit.txt" -l 6 -c 8 -q 100 -t 1 >"$OUT/dnsperf.txt" 2>&1 &
	d=$!
	sleep 2
	"$bin" -conf "$OUT/Corefile" >"$OUT/b.log" 2>&1 &
	b=$!
	sleep 1.5
	kill -TERM "$a"
	wait "$a" || true
	wait "$d" || true
	kill -TERM "$b"
	wait "$b" || true
	printf '| %s | %s | %s |\n' "$label" "$(awk '/Queries sent:/ {print $3}' "$OUT/dnsperf.txt")" "$(awk '/Queries lost:/ {print $3}' "$OUT/dnsperf.txt")"
}

echo "| binary | queries sent | lost across the handover |"
echo "| --- | --- | --- |"
for _ in $(seq 1 "$ROUNDS"); do
	round "$OUT/coredns" "./coredns"
	if [ -n "${COMPARE_BINARY:-}" ]; then round "$COMPARE_BINARY" "$(basename "$COMPARE_BINARY")"; fi
done
