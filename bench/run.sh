#!/usr/bin/env bash
# Benchmarks side by side with upstream CoreDNS v1.15.0 (issue 7). Run by `./build.sh bench`;
# writes bench/RESULTS.md, working files under bench/out/run/ (git-ignored). About 25 min on 2 cores:
# 10 for scenarios 1-4, 9 to load the memory test's objects into the apiserver, 7 to measure it.
#
# One binary serves both sides: ./coredns carries our plugins and upstream's kubernetes, cache and
# forward. The server under test runs alone on CPU $SERVER_CPU (taskset), dnsperf and helpers on
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
#           full speed, hits and misses, a slow resolver behind the central role
#           (bench/nodecache/handover.sh; uses both CPUs)
#   chain   the whole chain as deployed, hits and misses: nodecache in front of k8sdiscovery vs
#           CoreDNS as NodeLocal DNSCache in front of CoreDNS kubernetes, CPU of each tier
#   lowrate CPU per query at fixed rates (LOW_RATES, 2000 and 10000 q/s), where a node cache spends
#           most of its life: the central role (k8sdiscovery vs kubernetes, the index scenario's
#           objects and queries) and the node role (nodecache vs cache + forward, hits)
#
# Knobs (environment): SCENARIOS, ROUNDS (3), RUN_SECONDS (10), OUTSTANDING (100), LATENCY_SECONDS (5),
# INDEX_SERVICES (1000), MISS_SERVICES (100), MEM_SERVICES (10000), MEM_PODS (150000), MEM_SETTLE (20 s),
# RELIST_WATCH (60 s), LOW_RATES ("2000 10000"), SKIP_BUILD=1, BENCH_LINK, BENCH_NET, SERVER_CPU (0), LOAD_CPU (1), BENCH_OUT and BENCH_RESULTS (where
# the working files and the table go).
#
#   bench/run.sh          a run (what ./build.sh bench does)
#   bench/run.sh report   rewrite RESULTS.md from the last run's files
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$(pwd)
OUT=${BENCH_OUT:-$ROOT/bench/out/run}
RESULTS=${BENCH_RESULTS:-$ROOT/bench/RESULTS.md}

SCENARIOS=${SCENARIOS:-index hit miss search memory handover lowrate chain}
ROUNDS=${ROUNDS:-3}
RUN_SECONDS=${RUN_SECONDS:-10}
# Queries dnsperf keeps in flight. 100 fits a default-sized socket receive buffer (212992 bytes);
# with 500, the first burst overflows the buffer of every server that keeps the default (all but
# nodecache, which asks for 4 MiB), and each lost query holds one of dnsperf's slots for its 5 s
# timeout, which throttles those servers for half a run.
OUTSTANDING=${OUTSTANDING:-100}
LATENCY_SECONDS=${LATENCY_SECONDS:-5}
INDEX_SERVICES=${INDEX_SERVICES:-1000}
MISS_SERVICES=${MISS_SERVICES:-100}
MEM_SERVICES=${MEM_SERVICES:-10000}
MEM_PODS=${MEM_PODS:-150000}
MEM_SETTLE=${MEM_SETTLE:-20}
RELIST_WATCH=${RELIST_WATCH:-60}
LOW_RATES=${LOW_RATES:-2000 10000}
SERVER_CPU=${SERVER_CPU:-0}
LOAD_CPU=${LOAD_CPU:-1}

# BENCH_NET (169.254.77) and BENCH_LINK (dnsbench0) may be set so that two runs do not share them.
BENCH_LINK=${BENCH_LINK:-dnsbench0}
BENCH_NET=${BENCH_NET:-169.254.77}
ADDR_SERVER=$BENCH_NET.1   # the server under test, port 53
ADDR_STUB=$BENCH_NET.2     # the cluster DNS behind a cache, port 53: bench/goceiling (hit), ./coredns with k8sdiscovery (miss)
ADDR_UPSTREAM=$BENCH_NET.3 # the resolver behind the central DNS in the search scenario
ADDR_POD=$BENCH_NET.9      # the pod asking in the search scenario

# shellcheck source=bench/lib.sh
source "$ROOT/bench/lib.sh"
BIN=$OUT/coredns
BENCHCTL=$OUT/benchctl


# profile_cpu NAME START-FUNCTION QUERY-FILE: a 10 s dnsperf run against a server started with
# pprof, a CPU profile of 8 s of it, and its top entries in $OUT/profile.NAME.txt.
profile_cpu() {
	local name=$1 start=$2 file=$3 d
	PPROF=1 "$start"
	taskset -c "$LOAD_CPU" dnsperf -s "$ADDR_SERVER" -d "$file" -l 10 -c 8 -q "$OUTSTANDING" >"$OUT/profile.$name.dnsperf" 2>&1 &
	d=$!
	sleep 1
	"$BENCHCTL" fetch "http://$ADDR_SERVER:6060/debug/pprof/profile?seconds=8" "$OUT/profile.$name.cpu.pb.gz"
	wait "$d" || true
	stop_pid "$SERVER_PID"
	{
		echo "Under dnsperf at $(awk '/Queries per second:/ { printf "%.0f", $4 }' "$OUT/profile.$name.dnsperf") QPS (load average $(cut -d' ' -f1 /proc/loadavg))."
		go tool pprof -top -nodecount=25 "$OUT/profile.$name.cpu.pb.gz" 2>/dev/null
	} >"$OUT/profile.$name.txt" || true
}

pprof_line() { [ "${PPROF:-}" = 1 ] && echo "    pprof $ADDR_SERVER:6060" || true; }

# ---- scenario 1: cluster names from the index

start_index_ours() {
	cat >"$OUT/Corefile.index.ours" <<EOF
cluster.local in-addr.arpa ip6.arpa {
    bind $ADDR_SERVER
$(pprof_line)
    k8sdiscovery cluster.local in-addr.arpa ip6.arpa {
        kubeconfig $KUBECONFIG_BENCH
        ttl 30
    }
}
EOF
	start_server "$CURRENT" "$SERVER_CPU" "$BIN" -conf "$OUT/Corefile.index.ours"
	wait_answer "$ADDR_SERVER:53" "$OUT/index.probes"
}

start_index_upstream() {
	cat >"$OUT/Corefile.index.upstream" <<EOF
cluster.local in-addr.arpa ip6.arpa {
    bind $ADDR_SERVER
$(pprof_line)
    kubernetes cluster.local in-addr.arpa ip6.arpa {
        kubeconfig $KUBECONFIG_BENCH bench
        ttl 30
    }
}
EOF
	start_server "$CURRENT" "$SERVER_CPU" "$BIN" -conf "$OUT/Corefile.index.upstream"
	wait_answer "$ADDR_SERVER:53" "$OUT/index.probes"
}

query_file_index() { echo "$OUT/index.queries"; }

scenario_index() {
	log "scenario index: $INDEX_SERVICES services in a local kube-apiserver"
	cp_start "$OUT/cp-index"
	"$BENCHCTL" load -kubeconfig "$KUBECONFIG_BENCH" -services "$INDEX_SERVICES" -endpoints-per-service 5 \
		-queries "$OUT/index.queries" -probes "$OUT/index.probes" | tee "$OUT/index.load" >&2
	ab_rounds index ours upstream
	CURRENT=index.profile.ours profile_cpu index.ours start_index_ours "$OUT/index.queries"
	CURRENT=index.profile.upstream profile_cpu index.upstream start_index_upstream "$OUT/index.queries"
	cp_stop
	section_index
}

section_index() {
	{
		echo "### 1. Cluster names from the index"
		echo
		echo "$INDEX_SERVICES Services in $(( (INDEX_SERVICES + 99) / 100 )) namespaces of a real kube-apiserver v1.37.1 on loopback, half of them headless"
		echo "(endpoints with StatefulSet-style hostnames), each with one EndpointSlice of 5 ready endpoints and ports http/80 and metrics/9090."
		echo "Queries ($(wc -l <"$OUT/index.queries") lines, shuffled): A 50% (half ClusterIP, half headless: 5 records), SRV \`_http._tcp\` 25% (half headless:"
		echo "5 SRV + 5 A in additional), PTR 25% (half cluster IPs, half endpoint addresses). No cache on either side; ttl 30."
		echo "Loading: $(grep -h '^loaded' "$OUT/index.load")."
		echo
		table_header index
		table_row index ours "k8sdiscovery" ours
		table_row index upstream "upstream kubernetes" ours
		echo
	} >"$OUT/section.index.md"
}

# ---- scenarios 2 and 3: the node cache (Corefiles as in bench/nodecache/bench.sh)

# The stub behind the caches in the hit scenario: bench/goceiling over UDP and TCP on CPU
# $LOAD_CPU (a hit never reaches it but for the warm-up; a CoreDNS template zone there cost
# 51-73 µs of CPU per query, shared with dnsperf).
start_stub() {
	CURRENT=stub start_server stub "$LOAD_CPU" "$OUT/goceiling" -listen "$ADDR_STUB:53" -tcp
	STUB_PID=$SERVER_PID
	echo "ready.default.svc.cluster.local. A 10.96.0.42" >"$OUT/cache.probes"
	wait_answer "$ADDR_STUB:53" "$OUT/cache.probes"
}

# start_nodecache [PROBES [UPSTREAM]], start_cache [PROBES]: the caches in front of $ADDR_STUB,
# ready once they answer PROBES (default: the stub's name of the hit scenario); UPSTREAM is the
# node cache's upstream line (default: tcp to the stub's port 53).
start_nodecache() {
	cat >"$OUT/Corefile.nodecache" <<EOF
cluster.local:53 {
$(pprof_line)
    nodecache {
        listen $ADDR_SERVER
        interface $BENCH_LINK
        packet_filter none
        upstream ${2:-tcp $ADDR_STUB:53}
    }
}
EOF
	start_server "$CURRENT" "$SERVER_CPU" "$BIN" -conf "$OUT/Corefile.nodecache"
	wait_answer "$ADDR_SERVER:53" "${1:-$OUT/cache.probes}"
}

start_cache() {
	cat >"$OUT/Corefile.cache" <<EOF
cluster.local:53 {
    bind $ADDR_SERVER
$(pprof_line)
    cache {
        success 9984 30
        denial 9984 5
    }
    forward . $ADDR_STUB:53 {
        force_tcp
    }
}
EOF
	start_server "$CURRENT" "$SERVER_CPU" "$BIN" -conf "$OUT/Corefile.cache"
	wait_answer "$ADDR_SERVER:53" "${1:-$OUT/cache.probes}"
}

# Unbound as NodeLocal DNSCache's fastest rival: one thread, a cache in front of the same stub,
# no validation.
start_unbound() {
	cat >"$OUT/unbound.conf" <<EOF
server:
    interface: $ADDR_SERVER
    port: 53
    num-threads: 1
    do-daemonize: no
    username: ""
    chroot: ""
    directory: "$OUT"
    pidfile: "$OUT/unbound.pid"
    use-syslog: no
    verbosity: 0
    access-control: 0.0.0.0/0 allow
    do-not-query-localhost: no
    module-config: "iterator"
    qname-minimisation: no
    msg-cache-size: 64m
    rrset-cache-size: 128m
stub-zone:
    name: "cluster.local"
    stub-addr: $ADDR_STUB@53
EOF
	start_server "$CURRENT" "$SERVER_CPU" unbound -d -c "$OUT/unbound.conf"
	wait_answer "$ADDR_SERVER:53" "$OUT/cache.probes"
}

start_goceiling() {
	start_server "$CURRENT" "$SERVER_CPU" "$OUT/goceiling" -listen "$ADDR_SERVER:53"
	wait_answer "$ADDR_SERVER:53" "$OUT/cache.probes"
}

start_hit_ours() { start_nodecache; }
start_hit_cache() { start_cache; }
start_hit_unbound() { start_unbound; }
start_hit_goceiling() { start_goceiling; }
start_miss_ours() { start_nodecache "$OUT/miss.probes"; }
# The node cache pipelining its misses to the central role's pipelining address (port 5353).
start_miss_pipelined() { start_nodecache "$OUT/miss.probes" "pipelined $ADDR_STUB:5353"; }
start_miss_forward() { start_cache "$OUT/miss.probes"; }

query_file_hit() {
	[ -s "$OUT/hit.txt" ] || for i in $(seq 1 100); do echo "web-$i.default.svc.cluster.local A"; done >"$OUT/hit.txt"
	echo "$OUT/hit.txt"
}

# Every miss run gets names never asked before (more than a run can send), each NXDOMAIN in
# k8sdiscovery, alternately an unknown Service of a namespace that exists
# (m<N>-<run>.bench-<k>.svc.cluster.local) and an unknown endpoint of a headless Service
# (m<N>-<run>.svc-<odd>.bench-<k>.svc.cluster.local), over the MISS_SERVICES Services loaded.
query_file_miss() {
	local f=$OUT/miss.$1.$2.txt
	awk -v p="$1-$2" -v n="$MISS_SERVICES" 'BEGIN {
		for (i = 1; i <= 2000000; i++) {
			s = i % n
			if (s % 2) printf "m%d-%s.svc-%d.bench-%d.svc.cluster.local A\n", i, p, s, int(s / 100)
			else printf "m%d-%s.bench-%d.svc.cluster.local A\n", i, p, int(s / 100)
		}
	}' >"$f"
	echo "$f"
}

scenario_hit() {
	log "scenario hit: node-cache hits"
	start_stub
	ab_rounds hit ours cache unbound goceiling
	CURRENT=hit.profile.ours profile_cpu hit.ours start_hit_ours "$(query_file_hit)"
	stop_pid "$STUB_PID"
	section_hit
}

section_hit() {
	{
		echo "### 2. Node-cache hits (UDP)"
		echo
		echo "100 names, warmed for 1 s before each run, asked over UDP. Behind each cache the same stub (bench/goceiling"
		echo "on CPU $LOAD_CPU), reached over TCP by nodecache and \`forward { force_tcp }\`, over UDP by Unbound (stub-zone,"
		echo "iterator only, one thread). The Go ceiling answers every query itself (bench/goceiling: miekg/dns, fixed A record)."
		echo
		table_header hit
		table_row hit ours "nodecache" ours
		table_row hit cache "CoreDNS cache + forward" ours
		table_row hit unbound "Unbound $(unbound -V 2>/dev/null | awk '/^Version/ { print $2 }')" ours
		table_row hit goceiling "Go ceiling (miekg/dns)" ours
		echo
	} >"$OUT/section.hit.md"
}

# The central role behind the caches in the miss scenario, as the caches meet it in a cluster:
# ./coredns with k8sdiscovery (no cache) on the scenario's apiserver, on CPU $LOAD_CPU with dnsperf.
# start_central [PROBES]: ready once it answers PROBES (default: the miss scenario's).
start_central() {
	cat >"$OUT/Corefile.central" <<EOF
.:53 {
    bind $ADDR_STUB
    pipelining $ADDR_STUB:5353
    k8sdiscovery cluster.local in-addr.arpa ip6.arpa {
        kubeconfig $KUBECONFIG_BENCH
        ttl 30
    }
}
EOF
	CURRENT=central start_server central "$LOAD_CPU" "$BIN" -conf "$OUT/Corefile.central"
	CENTRAL_PID=$SERVER_PID
	wait_answer "$ADDR_STUB:53" "${1:-$OUT/miss.probes}"
}

scenario_miss() {
	log "scenario miss: cluster-zone misses over TCP to k8sdiscovery ($MISS_SERVICES services in a local kube-apiserver)"
	cp_start "$OUT/cp-miss"
	"$BENCHCTL" load -kubeconfig "$KUBECONFIG_BENCH" -services "$MISS_SERVICES" -endpoints-per-service 5 \
		-probes "$OUT/miss.probes" | tee "$OUT/miss.load" >&2
	start_central
	ab_rounds miss ours pipelined forward
	CURRENT=miss.profile.ours profile_cpu miss.ours start_miss_ours "$(query_file_miss profile 1)"
	stop_pid "$CENTRAL_PID"
	cp_stop
	rm -f "$OUT"/miss.*.txt
	section_miss
}

section_miss() {
	local ns=$(( (MISS_SERVICES + 99) / 100 ))
	{
		echo "### 3. Cluster-zone misses, upstream over TCP"
		echo
		echo "Behind the caches the real central role: ./coredns with \`k8sdiscovery\` (no cache, ttl 30) on a real kube-apiserver v1.37.1"
		echo "on loopback, holding $MISS_SERVICES Services in $ns namespace$([ "$ns" = 1 ] || echo s), half of them headless, each with one EndpointSlice"
		echo "of 5 ready endpoints; it runs on CPU $LOAD_CPU, shared with dnsperf. Loading: $(grep -h '^loaded' "$OUT/miss.load")."
		echo "Every query is a name never asked before, alternately an unknown Service of an existing namespace"
		echo "(m<N>-<run>.bench-<k>.svc.cluster.local) and an unknown endpoint of a headless Service (m<N>-<run>.svc-<odd>.bench-<k>.svc.cluster.local),"
		echo "so every query is a miss in the cache under test and goes to k8sdiscovery over TCP, which answers NXDOMAIN with the"
		echo "zone's SOA: what a miss costs. nodecache (\`upstream tcp\`, default \`max_concurrent\`) vs \`cache\` + \`forward { force_tcp }\`."
		echo "CoreDNS serves a TCP connection's queries one at a time, so the node cache keeps one outstanding query per TCP"
		echo "connection (up to \`max_concurrent\`, 256, per upstream) instead of pipelining; \`forward\` also sends one query at a time"
		echo "on each of its connections. The central role's CPU is taken from dnsperf's core, so it bounds the QPS of all; CPU per"
		echo "query is that of the cache under test alone."
		if [ -e "$OUT/miss.pipelined.runs" ]; then
			echo "The node cache pipelined (\`upstream pipelined\`) shares at most 4 connections of 100 queries each, to the central"
			echo "role's *pipelining* address (port 5353 beside 53), which answers a connection's queries concurrently."
		fi
		echo "Cache Corefiles as in bench/nodecache/bench.sh, on this run's own addresses."
		echo
		table_header miss
		table_row miss ours "nodecache" ours
		[ -e "$OUT/miss.pipelined.runs" ] && table_row miss pipelined "nodecache, upstream pipelined" ours
		table_row miss forward "CoreDNS cache + forward force_tcp" ours
		echo
	} >"$OUT/section.miss.md"
}

# ---- scenario 4: searchpath

scenario_search() {
	log "scenario search: an external lookup with ndots:5"
	mkdir -p "$OUT/search-manifests"
	cat >"$OUT/search-manifests/world.yaml" <<EOF
apiVersion: v1
kind: Namespace
metadata: {name: ns1}
---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: ns1}
spec: {clusterIP: 10.96.0.10, clusterIPs: [10.96.0.10]}
---
apiVersion: v1
kind: Pod
metadata: {name: client, namespace: ns1}
spec:
  dnsPolicy: ClusterFirst
  containers: [{name: c, image: busybox}]
status: {phase: Running, podIP: $ADDR_POD, podIPs: [{ip: $ADDR_POD}]}
EOF
	: >"$OUT/search.resolv.conf"
	cat >"$OUT/Corefile.search-upstream" <<EOF
.:53 {
    bind $ADDR_UPSTREAM
    prometheus $ADDR_UPSTREAM:9153
    template IN A example.com {
        answer "{{ .Name }} 60 IN A 192.0.2.10"
    }
    template IN AAAA example.com {
        answer "{{ .Name }} 60 IN AAAA 2001:db8::10"
    }
}
EOF
	local mode sp
	CURRENT=search-upstream start_server search-upstream "$LOAD_CPU" "$BIN" -conf "$OUT/Corefile.search-upstream"
	local up_pid=$SERVER_PID
	echo "x.example.com. A 192.0.2.10" >"$OUT/search-upstream.probes"
	wait_answer "$ADDR_UPSTREAM:53" "$OUT/search-upstream.probes"
	echo "web.ns1.svc.cluster.local. A 10.96.0.10" >"$OUT/search.probes"
	for mode in without with; do
		sp=""
		[ "$mode" = with ] && sp="    searchpath cluster.local {
        source k8sdiscovery
        resolv_conf $OUT/search.resolv.conf
    }"
		# The central role as in Corefile.cluster, asked directly by the pod.
		cat >"$OUT/Corefile.search-$mode" <<EOF
.:53 {
    bind $ADDR_SERVER
    prometheus $ADDR_SERVER:9153
$sp
    k8sdiscovery cluster.local in-addr.arpa ip6.arpa {
        manifests $OUT/search-manifests
        fallthrough in-addr.arpa ip6.arpa
        ttl 30
    }
    forward . $ADDR_UPSTREAM:53
    cache 30
}
EOF
		CURRENT=search-$mode
		start_server "search-$mode" "$SERVER_CPU" "$BIN" -conf "$OUT/Corefile.search-$mode"
		wait_answer "$ADDR_SERVER:53" "$OUT/search.probes"
		[ "$mode" = with ] && sleep 1 # searchpath's client index
		local c0 u0 c1 u1
		c0=$("$BENCHCTL" metric "http://$ADDR_SERVER:9153/metrics" coredns_dns_requests_total)
		u0=$("$BENCHCTL" metric "http://$ADDR_UPSTREAM:9153/metrics" coredns_dns_requests_total)
		# One lookup (A and AAAA of one name) counted, then 1000 lookups of new names for the timing.
		read -r q1 _ _ a1 n1 < <("$BENCHCTL" walk -server "$ADDR_SERVER:53" -source "$ADDR_POD" \
			-search "ns1.svc.cluster.local svc.cluster.local cluster.local" -ndots 5 -names 1 -prefix "one-$mode-")
		sleep 0.5
		c1=$("$BENCHCTL" metric "http://$ADDR_SERVER:9153/metrics" coredns_dns_requests_total)
		u1=$("$BENCHCTL" metric "http://$ADDR_UPSTREAM:9153/metrics" coredns_dns_requests_total)
		read -r qn p50 p99 an nn < <(taskset -c "$LOAD_CPU" "$BENCHCTL" walk -server "$ADDR_SERVER:53" -source "$ADDR_POD" \
			-search "ns1.svc.cluster.local svc.cluster.local cluster.local" -ndots 5 -names 1000 -prefix "many-$mode-")
		echo "$q1 $((c1 - c0)) $((u1 - u0)) $a1/$n1 $qn $p50 $p99 $an/$nn $("$BENCHCTL" metric "http://$ADDR_SERVER:9153/metrics" coredns_searchpath_expanded_total)" >"$OUT/search.$mode"
		stop_pid "$SERVER_PID"
	done
	stop_pid "$up_pid"
	section_search
}

section_search() {
	local m q1 c u a1 qn p50 p99 an ex
	{
		echo "### 4. An external lookup from a pod with ndots:5"
		echo
		echo "A pod in ns1 (ClusterFirst, search \`ns1.svc.cluster.local svc.cluster.local cluster.local\`, ndots:5) looks up"
		echo "\`<name>.example.com\`, A then AAAA, walking the search list as a stub resolver does. It asks the central role"
		echo "(k8sdiscovery from a manifests folder, forward to an upstream, cache 30) directly, from the pod's address."
		echo "Client queries: sent by the pod per lookup (both families). Central/upstream: coredns_dns_requests_total"
		echo "counted by each server for one lookup. Latency: one lookup (both families, sequential), 1000 new names."
		echo
		echo "| central DNS | client queries per lookup | central requests counted | upstream requests | answered | lookup p50 / p99 ms | searchpath expansions |"
		echo "| --- | --- | --- | --- | --- | --- | --- |"
		for m in without with; do
			read -r q1 c u a1 qn p50 p99 an ex <"$OUT/search.$m"
			printf '| %s searchpath | %s | %s | %s | %s | %s / %s | %s |\n' "$m" "$q1" "$c" "$u" "$a1, $an" "$p50" "$p99" "$ex"
		done
		echo
	} >"$OUT/section.search.md"
}

# ---- memory at scale

mem_corefile() {
	local name=$1 plugin pods=""
	case $name in
	ours*) plugin="k8sdiscovery cluster.local in-addr.arpa ip6.arpa {
        kubeconfig $KUBECONFIG_BENCH" ;;
	*) plugin="kubernetes cluster.local in-addr.arpa ip6.arpa {
        kubeconfig $KUBECONFIG_BENCH bench" ;;
	esac
	[[ $name == *-verified ]] && pods="        pods verified"
	cat <<EOF
cluster.local in-addr.arpa ip6.arpa {
    bind $ADDR_SERVER
    prometheus $ADDR_SERVER:9153
    pprof $ADDR_SERVER:6060
    $plugin
$pods
        ttl 30
    }
}
EOF
}

scenario_memory() {
	local per=$((MEM_PODS / MEM_SERVICES)) t0 name
	log "scenario memory: $MEM_SERVICES services, $((per * MEM_SERVICES)) pods"
	cp_start "$OUT/cp-memory"
	t0=$SECONDS
	"$BENCHCTL" load -kubeconfig "$KUBECONFIG_BENCH" -services "$MEM_SERVICES" -pods-per-service "$per" -workers 64 \
		-probes "$OUT/memory.probes" | tee "$OUT/memory.load" >&2
	echo "$((SECONDS - t0))" >"$OUT/memory.load_seconds"
	head -2 "$OUT/memory.probes" >"$OUT/memory.probes.services"
	for name in ours upstream ours-verified upstream-verified; do
		CURRENT=memory.$name
		mem_corefile "$name" >"$OUT/Corefile.memory.$name"
		local probes=$OUT/memory.probes.services since pid sync steady relist peak_rss control
		[[ $name == *-verified ]] && probes=$OUT/memory.probes
		since=$(date +%s%N)
		start_server "$CURRENT" "$SERVER_CPU" "$BIN" -conf "$OUT/Corefile.memory.$name"
		pid=$SERVER_PID
		sync=$("$BENCHCTL" sync -server "$ADDR_SERVER:53" -probes "$probes" -since "$since" -timeout 15m)
		sleep "$MEM_SETTLE"
		# Steady: after a forced GC (the pprof heap endpoint with gc=1; its profile is kept).
		"$BENCHCTL" fetch "http://$ADDR_SERVER:6060/debug/pprof/heap?gc=1" "$OUT/profile.memory.$name.heap.pb.gz"
		sleep 2
		steady=$("$BENCHCTL" mem -pid "$pid" -metrics "http://$ADDR_SERVER:9153/metrics" -duration 3s)
		# Control: the same sampling as the relist below, as long, without a relist. Scraping
		# /metrics every 100 ms makes garbage of its own, and any Go heap then swings between
		# collections; the relist's peak is compared with this one as well as with the value above.
		echo 5 >"/proc/$pid/clear_refs"
		control=$("$BENCHCTL" mem -pid "$pid" -metrics "http://$ADDR_SERVER:9153/metrics" -duration "${RELIST_WATCH}s" -interval 100ms)
		control="$(peak_rss_mib "$pid") $control"
		# Relist: reset the peak RSS, restart the apiserver over a compacted etcd, watch.
		echo 5 >"/proc/$pid/clear_refs"
		"$BENCHCTL" mem -pid "$pid" -metrics "http://$ADDR_SERVER:9153/metrics" -duration 600s -interval 100ms \
			-samples "$OUT/memory.$name.relist.samples" >"$OUT/memory.$name.relist" &
		local sampler=$!
		local restart_t0=$SECONDS
		cp_restart_apiserver >"$OUT/memory.$name.apiserver_ready"
		sleep "$RELIST_WATCH"
		kill -TERM "$sampler" 2>/dev/null || true
		wait "$sampler" 2>/dev/null || true
		relist=$(cat "$OUT/memory.$name.relist")
		peak_rss=$(peak_rss_mib "$pid")
		# Proof of the relist: the restarted apiserver's watch events per resource (a relist sends every object again).
		"$BENCHCTL" api-requests -kubeconfig "$KUBECONFIG_BENCH" >"$OUT/memory.$name.api" || true
		"$BENCHCTL" sync -server "$ADDR_SERVER:53" -probes "$probes" -timeout 60s >/dev/null || log "$name does not answer after the relist"
		"$BENCHCTL" fetch "http://$ADDR_SERVER:6060/debug/pprof/heap" "$OUT/profile.memory.$name.heap-after-relist.pb.gz" || true
		stop_pid "$pid"
		echo "$sync $steady $peak_rss $relist $((SECONDS - restart_t0)) $(cat "$OUT/memory.$name.apiserver_ready") $control" >"$OUT/memory.$name"
		log "memory $name: sync ${sync}s, steady (rss_last rss_max heap_last heap_max) $steady, relist peak RSS $peak_rss MiB"
		go tool pprof -top -nodecount=20 -sample_index=inuse_space "$OUT/profile.memory.$name.heap.pb.gz" 2>/dev/null >"$OUT/profile.memory.$name.txt" || true
	done
	cp_stop
	section_memory
}

# memory.<name> holds: sync_s | steady: rss_last rss_max heap_last heap_max | relist peak RSS (VmHWM) |
# relist sampled: rss_last rss_max heap_last heap_max | seconds watched | apiserver ready s |
# control window (no relist): peak RSS (VmHWM) | sampled: rss_last rss_max heap_last heap_max
section_memory() {
	local per=$((MEM_PODS / MEM_SERVICES)) name label
	{
		echo "### 5. Memory at scale"
		echo
		echo "$MEM_SERVICES Services (half headless) in $(( (MEM_SERVICES + 99) / 100 )) namespaces, $((per * MEM_SERVICES)) Pods ($per per Service, Running with an IP,"
		echo "set through the status subresource) and one EndpointSlice per Service listing its pods, in kube-apiserver v1.37.1 + etcd 3.7.0."
		echo "$(grep -h '^created\|^loaded' "$OUT/memory.load" | sed 's/$/;/' | paste -sd' ' | sed 's/;$/./')"
		echo "Creation took $(cat "$OUT/memory.load_seconds") s on this machine ($(nproc) cores, shared; the apiserver, etcd and the loader on both cores)."
		echo
		echo "Each DNS alone, pinned to CPU $SERVER_CPU. *First sync*: from process start until the last Service's name (and, with"
		echo "\`pods verified\`, the last Pod's name) answer. *Steady*: ${MEM_SETTLE} s later, right after a GC forced through pprof (heap?gc=1):"
		echo "VmRSS from /proc, heap = go_memstats_heap_inuse_bytes. *Relist*: the apiserver is stopped, etcd's revision moved on and"
		echo "compacted, the apiserver started again, so every watch resumes from a compacted resource version and relists; peak RSS is"
		echo "VmHWM after resetting it (clear_refs) before the restart, peak heap the highest sample (every 100 ms) over ${RELIST_WATCH} s after ready."
		echo "*Steady window*: before the restart, the same: VmHWM reset, then ${RELIST_WATCH} s sampled every 100 ms, with no relist. The sampling"
		echo "scrapes /metrics ten times a second, and the garbage of that alone swings a Go heap between collections; the relist"
		echo "is judged against this window (a process doing the same, minus the relist), and its ratio to the post-GC value is shown too."
		echo "The last column is what the restarted apiserver sent on watches (apiserver_watch_events_total) by the end: the"
		echo "apiserver's own informers account for one copy of the world (pods included: the rows without \`pods verified\`, whose"
		echo "DNS does not watch pods, show that share), the DNS's relist for the second copy; client-go lists through streaming lists (WatchList)."
		echo
		echo "| DNS | first sync s | steady RSS MiB | steady heap MiB | steady window: peak RSS / heap MiB | relist peak RSS MiB | relist peak heap MiB | relist ÷ steady window RSS | peak ÷ steady RSS | peak ÷ steady heap | watch events after the restart |"
		echo "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"
		for name in ours upstream ours-verified upstream-verified; do
			case $name in
			ours) label="k8sdiscovery" ;;
			upstream) label="upstream kubernetes" ;;
			ours-verified) label="k8sdiscovery, pods verified" ;;
			upstream-verified) label="upstream kubernetes, pods verified" ;;
			esac
			read -r sync rss _ heap _ peak _ _ _ pheap _ _ cpeak _ _ _ cheap <"$OUT/memory.$name" || continue
			printf '| %s | %s | %s | %s | %s / %s | %s | %s | %s | %s | %s | %s |\n' "$label" "$sync" "$rss" "$heap" "$cpeak" "$cheap" "$peak" "$pheap" \
				"$(ratio "$peak" "$cpeak")" "$(ratio "$peak" "$rss")" "$(ratio "$pheap" "$heap")" \
				"$(tr ' ' '\n' <"$OUT/memory.$name.api" | sed -n 's/^EVENTS:\(.*\)=\(.*\)/\2 \1/p' | paste -sd, | sed 's/,/, /g')"
		done
		echo
	} >"$OUT/section.memory.md"
}

# mem_value NAME FIELD: a field of memory.NAME (1 sync, 2 steady RSS, 4 steady heap, 6 peak RSS, 10 peak heap,
# 13 control-window peak RSS, 17 control-window peak heap).
mem_value() { cut -d' ' -f"$2" "$OUT/memory.$1" 2>/dev/null || echo 0; }

scenario_handover() {
	log "handover: $ROUNDS rounds"
	SKIP_BUILD=1 ROUNDS=$ROUNDS HANDOVER_OUT="$OUT/handover" bench/nodecache/handover.sh >&2
	cp "$OUT/handover/section.handover.md" "$OUT/section.handover.md"
}

# ---- scenario 8: the whole chain as deployed

# The central role of the upstream chain: CoreDNS's kubernetes on the same address and objects.
start_central_upstream() {
	cat >"$OUT/Corefile.central-upstream" <<EOF
.:53 {
    bind $ADDR_STUB
    kubernetes cluster.local in-addr.arpa ip6.arpa {
        kubeconfig $KUBECONFIG_BENCH bench
        ttl 30
    }
}
EOF
	CURRENT=central-upstream start_server central-upstream "$LOAD_CPU" "$BIN" -conf "$OUT/Corefile.central-upstream"
	CENTRAL_PID=$SERVER_PID
	wait_answer "$ADDR_STUB:53" "$OUT/chain.probes"
}

# Ours: nodecache (upstream tcp, as deploy/ has it) in front of k8sdiscovery; upstream's:
# CoreDNS as NodeLocal DNSCache (cache + forward force_tcp) in front of CoreDNS kubernetes.
start_chain_ours() {
	start_central "$OUT/chain.probes"
	EXTRA_PID=$CENTRAL_PID
	CURRENT=${CURRENT%.*}.ours start_nodecache "$OUT/chain.probes"
}
start_chain_upstream() {
	start_central_upstream
	EXTRA_PID=$CENTRAL_PID
	CURRENT=${CURRENT%.*}.upstream start_cache "$OUT/chain.probes"
}
start_chainhit_ours() { start_chain_ours; }
start_chainhit_upstream() { start_chain_upstream; }
start_chainmiss_ours() { start_chain_ours; }
start_chainmiss_upstream() { start_chain_upstream; }
# The loaded names of the cluster zone (the node roles here serve only cluster.local: the PTRs of
# the query mix would be REFUSED at the node).
query_file_chainhit() {
	[ -s "$OUT/chainhit.txt" ] || grep -v 'in-addr.arpa\|ip6.arpa' "$OUT/chain.queries" >"$OUT/chainhit.txt"
	echo "$OUT/chainhit.txt"
}
query_file_chainmiss() { query_file_miss "$@"; }

scenario_chain() {
	log "scenario chain: node role in front of the central role, ours vs upstream's ($MISS_SERVICES services in a local kube-apiserver)"
	cp_start "$OUT/cp-chain"
	"$BENCHCTL" load -kubeconfig "$KUBECONFIG_BENCH" -services "$MISS_SERVICES" -endpoints-per-service 5 \
		-queries "$OUT/chain.queries" -probes "$OUT/chain.probes" | tee "$OUT/chain.load" >&2
	ab_rounds chainhit ours upstream
	ab_rounds chainmiss ours upstream
	cp_stop
	rm -f "$OUT"/miss.*.txt
	section_chain
}

section_chain() {
	local kind name
	{
		echo "### 8. The whole chain as deployed"
		echo
		echo "A pod-like client (dnsperf) asks the node role, which asks the central role over TCP, which answers from a real"
		echo "kube-apiserver v1.37.1 ($MISS_SERVICES Services, half headless, 5 endpoints each). Ours: nodecache (\`upstream tcp\`, as deploy/"
		echo "has it) in front of k8sdiscovery; upstream's: CoreDNS as NodeLocal DNSCache (\`cache\` + \`forward { force_tcp }\`) in front"
		echo "of CoreDNS \`kubernetes\`. Hits: the loaded cluster.local names (A and SRV), warmed for 1 s; misses: names never asked before (NXDOMAIN)."
		echo "The node role runs on CPU $SERVER_CPU; the central role on CPU $LOAD_CPU with dnsperf, so it bounds the misses' QPS. CPU per"
		echo "query of each tier: the node role's in the table, the central role's below."
		echo
		for kind in chainhit chainmiss; do
			echo "#### $([ "$kind" = chainhit ] && echo Hits || echo Misses)"
			echo
			table_header "$kind"
			table_row "$kind" ours "nodecache → k8sdiscovery" ours
			table_row "$kind" upstream "cache + forward → kubernetes" ours
			echo
		done
		echo "| chain | hits: central CPU µs/query | misses: central CPU µs/query |"
		echo "| --- | --- | --- |"
		for name in ours upstream; do
			printf '| %s | %s | %s |\n' "$([ "$name" = ours ] && echo "nodecache → k8sdiscovery" || echo "cache + forward → kubernetes")" \
				"$(mean_col_f "$OUT/chainhit.$name.extra" 1 2>/dev/null)" "$(mean_col_f "$OUT/chainmiss.$name.extra" 1 2>/dev/null)"
		done
		echo
	} >"$OUT/section.chain.md"
}

# ---- scenario 7: CPU per query at fixed rates

# fixed_rounds SCENARIO RATE NAMES...: for each of ROUNDS rounds, every server in order (A/B/A/B),
# a fresh process, a warm-up (hit only) and a run of RUN_SECONDS at RATE q/s; CPU as in
# dnsperf_run, into SCENARIO.NAME.qRATE.runs.
fixed_rounds() {
	local scenario=$1 rate=$2 name round file
	shift 2
	for name in "$@"; do rm -f "$OUT/$scenario.$name.q$rate.runs"; done
	for round in $(seq 1 "$ROUNDS"); do
		for name in "$@"; do
			CURRENT=$scenario.$name
			"start_${scenario}_$name"
			file=$("query_file_$scenario" "$name" "q$rate.$round")
			warm_up "$scenario" "$file"
			dnsperf_run "$SERVER_PID" "$scenario.$name.q$rate" "$file" "$RUN_SECONDS" -c 8 -q "$OUTSTANDING" -Q "$rate"
			stop_pid "$SERVER_PID"
			log "lowrate $scenario $rate q/s round $round $name: $(tail -1 "$OUT/$scenario.$name.q$rate.runs") (load $(cut -d' ' -f1 /proc/loadavg))"
		done
	done
}

scenario_lowrate() {
	local rate
	log "scenario lowrate: CPU per query at $LOW_RATES q/s"
	cp_start "$OUT/cp-lowrate"
	"$BENCHCTL" load -kubeconfig "$KUBECONFIG_BENCH" -services "$INDEX_SERVICES" -endpoints-per-service 5 \
		-queries "$OUT/index.queries" -probes "$OUT/index.probes" | tee "$OUT/lowrate.load" >&2
	for rate in $LOW_RATES; do fixed_rounds index "$rate" ours upstream; done
	cp_stop
	start_stub
	for rate in $LOW_RATES; do fixed_rounds hit "$rate" ours cache; done
	stop_pid "$STUB_PID"
	section_lowrate
}

# lowrate_row SCENARIO RATE NAME LABEL ROLE REF: a row of the fixed-rate table.
lowrate_row() {
	local scenario=$1 rate=$2 name=$3 label=$4 role=$5 ref=$6 runs r=""
	runs=$OUT/$scenario.$name.q$rate.runs
	[ -e "$runs" ] || return 0
	if [ "$name" != "$ref" ]; then
		r=$(ratio "$(mean_col_f "$OUT/$scenario.$ref.q$rate.runs" 4)" "$(mean_col_f "$runs" 4)")
	fi
	printf '| %s | %s | %s | %s | %s | %s | %s | %s |\n' "$role" "$label" "$rate" "$(mean_col "$runs" 1)" \
		"$(mean_col "$runs" 3)" "$(mean_col_f "$runs" 4)" "${r:-—}" "$(awk '{ s += $2 } END { print s + 0 }' "$runs")"
}

section_lowrate() {
	local rate
	{
		echo "### 7. CPU per query at fixed rates"
		echo
		echo "The same servers, objects and queries as scenarios 1 and 2, asked at a fixed rate instead of as fast as they answer:"
		echo "$ROUNDS rounds of ${RUN_SECONDS} s per server and rate, A/B/A/B, a fresh process each run. CPU is the server's user+system"
		echo "time over the run, per answered query; the last column is ours ÷ theirs (lower is better for us; the target is ≤ 0.5)."
		echo
		echo "| role | server | q/s asked | answered q/s | CPU % of a core | CPU µs per query | ours ÷ theirs, CPU per query | lost |"
		echo "| --- | --- | --- | --- | --- | --- | --- | --- |"
		for rate in $LOW_RATES; do
			lowrate_row index "$rate" ours "k8sdiscovery" central ours
			lowrate_row index "$rate" upstream "upstream kubernetes" central ours
		done
		for rate in $LOW_RATES; do
			lowrate_row hit "$rate" ours "nodecache" "node (hits)" ours
			lowrate_row hit "$rate" cache "CoreDNS cache + forward" "node (hits)" ours
		done
		echo
	} >"$OUT/section.lowrate.md"
}

# ---- RESULTS.md

write_results() {
	local status=$1 plots=()
	# The figures as JSON and as charts, from the same files: bench/results.json and bench/plots/
	# for bench/RESULTS.md; results.<name>.json and plots/<name>/ for RESULTS.<name>.md.
	local dir name json plotdir
	dir=$(dirname "$RESULTS")
	name=$(basename "$RESULTS" .md)
	name=${name#RESULTS}
	name=${name#.}
	json=$dir/results${name:+.$name}.json
	plotdir=plots${name:+/$name}
	go build -o "$BENCHCTL" ./bench/benchctl
	"$BENCHCTL" results "$OUT" "$json"
	rm -f "$dir/$plotdir"/*.png
	"$BENCHCTL" plot "$json" "$dir/$plotdir"
	local p
	for p in qps cpu latency memory relist fixed-rate-cpu; do
		[ -e "$dir/$plotdir/$p.png" ] && plots+=("$p")
	done
	{
		echo "# Benchmark results"
		echo
		echo "Written by \`./build.sh bench\` (bench/run.sh) from a run started $RUN_DATE at commit $RUN_COMMIT, which took"
		echo "$RUN_MINUTES min. ./coredns (CoreDNS v1.15.0 as a library) serves both sides: our plugins and upstream's \`kubernetes\`, \`cache\`, \`forward\`."
		echo "Machine: $(nproc) cores ($(awk -F': ' '/model name/ { print $2; exit }' /proc/cpuinfo)), $(awk '/MemTotal/ { printf "%.0f GiB", $2 / 1048576 }' /proc/meminfo), $(uname -r)."
		echo "dnsperf $(dnsperf -h 2>&1 | awk '/^Version/ { print $2 }'), one thread, \`-c 8 -q $OUTSTANDING\`, ${RUN_SECONDS} s per throughput run."
		echo
		echo "**Method.** The server under test runs alone on CPU $SERVER_CPU (taskset); dnsperf and helper servers on CPU $LOAD_CPU; every"
		echo "comparison is $ROUNDS rounds of A/B(/C/D) with a fresh server process each run, so drift cancels. QPS: the mean of the"
		echo "throughput runs (each run in brackets). Latency: dnsperf 2.10 has no histogram; p50/p99 are computed from \`dnsperf -v\`"
		echo "(one line per answered query) in separate runs of ${LATENCY_SECONDS} s per round at a fixed rate, half the slowest server's QPS"
		echo "(at saturation dnsperf's latency is only its queue, $OUTSTANDING outstanding ÷ QPS). CPU: the server's user+system time over the"
		echo "throughput run (% of one core, and per answered query). RSS: the server's peak (VmHWM). Lost: dnsperf's count over all runs."
		echo
		echo "**Other processes share this machine** (other builds and tests ran during the run): load average"
		echo "$LOAD_START at the start, $LOAD_END at the end; each table gives the 1-minute load average seen"
		echo "across its runs. Absolute numbers are lower than on an idle machine; the A/B ratios are the result."
		echo
		[ "$status" = ok ] || { echo "**This run did not finish: $status.** Sections below are those that completed."; echo; }
		echo "## Summary"
		echo
		if [ -e "$OUT/section.index.md" ] || [ -e "$OUT/section.hit.md" ] || [ -e "$OUT/section.miss.md" ] || [ -e "$OUT/section.chain.md" ]; then
			echo "| scenario | ours vs theirs | QPS ours / theirs | ratio | CPU µs/query ours / theirs | ratio by CPU | p50 / p99 ms ours ; theirs | peak RSS MiB ours / theirs | target (QPS) | |"
			echo "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"
			[ -e "$OUT/section.index.md" ] && summary_row "1. cluster names" index ours upstream k8sdiscovery "upstream kubernetes" "≥ 2.5×" 2.5
			if [ -e "$OUT/section.hit.md" ]; then
				summary_row "2. node-cache hits" hit ours unbound nodecache Unbound "≥ 1× Unbound" 1.0
				summary_row "2. node-cache hits" hit ours cache nodecache "CoreDNS cache" "" ""
				summary_row "2. node-cache hits" hit ours goceiling nodecache "Go ceiling" "" ""
			fi
			[ -e "$OUT/section.miss.md" ] && summary_row "3. cluster misses, TCP" miss ours forward nodecache "forward force_tcp" "" ""
			[ -e "$OUT/miss.pipelined.runs" ] && summary_row "3. cluster misses, TCP" miss pipelined forward "nodecache pipelined" "forward force_tcp" "" ""
			[ -e "$OUT/miss.pipelined.runs" ] && summary_row "3. cluster misses, TCP" miss pipelined ours "nodecache pipelined" "nodecache one query per connection" "" ""
			if [ -e "$OUT/section.chain.md" ]; then
				summary_row "8. whole chain, hits" chainhit ours upstream "nodecache → k8sdiscovery" "cache+forward → kubernetes" "" ""
				summary_row "8. whole chain, misses" chainmiss ours upstream "nodecache → k8sdiscovery" "cache+forward → kubernetes" "" ""
			fi
			echo
		fi
		if [ -e "$OUT/section.search.md" ] || [ -e "$OUT/section.memory.md" ] || [ -e "$OUT/section.handover.md" ] || [ -e "$OUT/section.lowrate.md" ] ||
			{ [ -e "$OUT/section.index.md" ] && [ -e "$OUT/section.hit.md" ]; }; then
			echo "| target | measured | |"
			echo "| --- | --- | --- |"
			if [ -e "$OUT/section.index.md" ] && [ -e "$OUT/section.hit.md" ]; then
				local ci ch
				ci=$(mean_col_f "$OUT/index.ours.runs" 4)
				ch=$(mean_col_f "$OUT/hit.ours.runs" 4)
				printf '| 1. cluster names: CPU per query within 1.5× of the node cache'"'"'s CPU per hit (same run) | %s vs %s µs: %s× | %s |\n' \
					"$ci" "$ch" "$(ratio "$ci" "$ch")" "$(awk -v r="$(ratio "$ci" "$ch")" 'BEGIN { print (r + 0 <= 1.5 ? "met" : "not met") }')"
			fi
			if [ -e "$OUT/section.search.md" ]; then
				local q_with q_without
				q_without=$(cut -d' ' -f1 "$OUT/search.without")
				q_with=$(cut -d' ' -f1 "$OUT/search.with")
				printf '| 4. one query per family for an external lookup with searchpath (ndots:5) | %s queries per lookup (A+AAAA) with searchpath, %s without | %s |\n' \
					"$q_with" "$q_without" "$(awk -v q="$q_with" 'BEGIN { print (q + 0 <= 2 ? "met" : "not met") }')"
			fi
			if [ -e "$OUT/section.memory.md" ]; then
				local mode o u r
				for mode in "" -verified; do
					o=$(mem_value "ours$mode" 4)
					u=$(mem_value "upstream$mode" 4)
					r=$(ratio "$o" "$u")
					printf '| 5. heap ≤ 0.5× upstream kubernetes%s | %s MiB vs %s MiB: %s× (RSS %s vs %s MiB: %s×) | %s |\n' \
						"${mode:+, pods verified}" "$o" "$u" "$r" "$(mem_value "ours$mode" 2)" "$(mem_value "upstream$mode" 2)" \
						"$(ratio "$(mem_value "ours$mode" 2)" "$(mem_value "upstream$mode" 2)")" \
						"$(awk -v r="$r" 'BEGIN { print (r != "n/a" && r + 0 <= 0.5 ? "met" : "not met") }')"
					r=$(ratio "$(mem_value "ours$mode" 6)" "$(mem_value "ours$mode" 13)")
					printf '| 5. relist peak ≤ 1.2× steady (k8sdiscovery%s, RSS) | %s MiB peak vs %s MiB in a steady window sampled the same way: %s× (vs %s MiB right after a forced GC: %s×; heap peak %s× that window'"'"'s; upstream %s× and %s×) | %s |\n' \
						"${mode:+, pods verified}" "$(mem_value "ours$mode" 6)" "$(mem_value "ours$mode" 13)" "$r" \
						"$(mem_value "ours$mode" 2)" "$(ratio "$(mem_value "ours$mode" 6)" "$(mem_value "ours$mode" 2)")" \
						"$(ratio "$(mem_value "ours$mode" 10)" "$(mem_value "ours$mode" 17)")" \
						"$(ratio "$(mem_value "upstream$mode" 6)" "$(mem_value "upstream$mode" 13)")" \
						"$(ratio "$(mem_value "upstream$mode" 6)" "$(mem_value "upstream$mode" 2)")" \
						"$(awk -v r="$r" 'BEGIN { print (r != "n/a" && r + 0 <= 1.2 ? "met" : "not met") }')"
				done
			fi
			if [ -e "$OUT/section.handover.md" ]; then
				# The rows of the handover table: | binary | clients | q/s | sent | lost | SERVFAIL |
				awk -F' *[|] *' '$2 == "./coredns" { q[$3] += $4; n[$3]++; s[$3] += $5; l[$3] += $6; f[$3] += $7 }
					END { lf = l["UDP"] + l["TCP"] + f["UDP"] + f["TCP"]
						printf "| 0 queries lost across a node-cache handover at full load (UDP, and TCP a connection per query as stub resolvers ask) | %d lost, %d SERVFAIL of %d sent; UDP at %d q/s, TCP at %d q/s (mean of %d rounds); TCP pipelined on long-lived connections: %d lost of %d (a known limit) | %s |\n",
						l["UDP"] + l["TCP"], f["UDP"] + f["TCP"], s["UDP"] + s["TCP"], q["UDP"] / n["UDP"], q["TCP"] / n["TCP"], n["UDP"],
						l["TCP pipelined"], s["TCP pipelined"], (lf == 0 ? "met" : "not met") }' "$OUT/section.handover.md"
			fi
			if [ -e "$OUT/section.lowrate.md" ]; then
				local rate role scenario theirs o t r
				for scenario in index hit; do
					[ "$scenario" = index ] && role="central role (k8sdiscovery vs kubernetes)" theirs=upstream
					[ "$scenario" = hit ] && role="node role, hits (nodecache vs cache + forward)" theirs=cache
					for rate in $LOW_RATES; do
						[ -e "$OUT/$scenario.ours.q$rate.runs" ] && [ -e "$OUT/$scenario.$theirs.q$rate.runs" ] || continue
						o=$(mean_col_f "$OUT/$scenario.ours.q$rate.runs" 4)
						t=$(mean_col_f "$OUT/$scenario.$theirs.q$rate.runs" 4)
						r=$(ratio "$o" "$t")
						printf '| 7. CPU per query at %s q/s ≤ 0.5× upstream, %s | %s vs %s µs: %s× | %s |\n' "$rate" "$role" "$o" "$t" "$r" \
							"$(awk -v r="$r" 'BEGIN { print (r != "n/a" && r + 0 <= 0.5 ? "met" : "not met") }')"
					done
				done
			fi
			echo
		fi
		if [ ${#plots[@]} -gt 0 ]; then
			echo "The same figures as charts (\`benchctl plot\` from $(basename "$json"), which \`benchctl results\` writes from this run's files):"
			echo
			for p in "${plots[@]}"; do
				echo "![$p]($plotdir/$p.png)"
				echo
			done
		fi
		echo "## Details"
		echo
		local s
		for s in index hit miss search memory handover lowrate chain; do
			[ -e "$OUT/section.$s.md" ] && cat "$OUT/section.$s.md"
		done
		if compgen -G "$OUT/profile.*.txt" >/dev/null; then
			echo "## Profiles"
			echo
			echo "CPU profiles (8 s of a throughput run, the server started with \`pprof\`) and heap profiles (after the forced GC of the"
			echo "memory test); top entries, from \`go tool pprof -top\`. The profiles are in bench/out/run/ after a run."
			echo
			for s in "$OUT"/profile.*.txt; do
				echo "#### $(basename "$s" .txt | sed 's/^profile\.//')"
				echo
				echo '```'
				grep '^Under dnsperf\|^Duration:\|^Showing nodes' "$s" || true
				sed -n '/flat%/,$p' "$s" | head -16
				echo '```'
				echo
			done
		fi
	} >"$RESULTS"
	log "wrote $RESULTS"
}

# ---- a run

need() {
	command -v "$1" >/dev/null 2>&1 && return
	[ "$(id -u)" -eq 0 ] || { echo "bench: $1 is missing; install it with: sudo apt-get install -y $2" >&2; exit 1; }
	echo "bench: installing $2" >&2
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$2" >/dev/null 2>&1 ||
		{ apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$2" >/dev/null; }
}

wants() { [[ " $SCENARIOS " == *" $1 "* ]]; }

# prepare installs what is missing, builds ./coredns and the helpers, adds the bridge and
# builds (or finds) the control plane.
prepare() {
	[ "$(id -u)" -eq 0 ] || { echo "bench: run as root (it adds a bridge for its addresses and may install packages)" >&2; exit 1; }
	need dnsperf dnsperf
	need unbound unbound
	need taskset util-linux
	need ip iproute2
	[ "$(nproc)" -ge 2 ] || { echo "bench: needs 2 CPUs (server and load each pinned to one)" >&2; exit 1; }
	[ "${SKIP_BUILD:-}" = 1 ] || ./build.sh build >&2
	cp ./coredns "$BIN"
	go build -o "$BENCHCTL" ./bench/benchctl
	go build -o "$OUT/goceiling" ./bench/goceiling

	setup_link

	if wants index || wants miss || wants memory || wants lowrate || wants chain; then
		test/e2e/controlplane/build.sh >&2
		CONTROLPLANE_BIN=$(test/e2e/controlplane/build.sh dir)
	fi
}

# The run's settings and circumstances, for `bench/run.sh report`.
save_meta() {
	{
		declare -p SCENARIOS ROUNDS RUN_SECONDS OUTSTANDING LATENCY_SECONDS INDEX_SERVICES MISS_SERVICES MEM_SERVICES MEM_PODS MEM_SETTLE \
			RELIST_WATCH LOW_RATES SERVER_CPU LOAD_CPU RUN_DATE RUN_COMMIT LOAD_START
		if [ -n "${RUN_MINUTES:-}" ]; then declare -p RUN_MINUTES LOAD_END; fi
	} >"$OUT/meta"
}

on_exit() {
	local rc=$?
	trap - EXIT
	cleanup_all
	if [ "$rc" -ne 0 ]; then
		RUN_MINUTES=$(( (SECONDS - START) / 60 ))
		LOAD_END=$(cut -d' ' -f1-3 /proc/loadavg)
		save_meta
		write_results "failed with status $rc after $RUN_MINUTES min (see bench/out/run/)" || true
	fi
	exit "$rc"
}

case "${1:-run}" in
run)
	for s in $SCENARIOS; do
		case $s in
		index | hit | miss | search | memory | handover | lowrate | chain) ;;
		*) echo "bench: unknown scenario $s" >&2; exit 2 ;;
		esac
	done
	rm -rf "$OUT"
	mkdir -p "$OUT"
	trap on_exit EXIT
	START=$SECONDS
	RUN_DATE=$(date -u '+%Y-%m-%d %H:%M UTC')
	RUN_COMMIT=$(git describe --always --dirty 2>/dev/null || echo unknown)
	LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)
	save_meta
	prepare
	for s in $SCENARIOS; do "scenario_$s"; done
	RUN_MINUTES=$(( (SECONDS - START) / 60 ))
	LOAD_END=$(cut -d' ' -f1-3 /proc/loadavg)
	save_meta
	write_results ok
	log "done in $RUN_MINUTES min"
	;;
report)
	# Rewrite bench/RESULTS.md from the files of the last run (after editing the text of a section).
	[ -s "$OUT/meta" ] || { echo "bench: no run in $OUT" >&2; exit 1; }
	# shellcheck source=/dev/null
	source "$OUT/meta"
	[ -e "$OUT/index.ours.runs" ] && section_index
	[ -e "$OUT/hit.ours.runs" ] && section_hit
	[ -e "$OUT/miss.ours.runs" ] && section_miss
	[ -e "$OUT/search.with" ] && section_search
	[ -e "$OUT/memory.upstream-verified" ] && section_memory
	compgen -G "$OUT/*.q*.runs" >/dev/null && section_lowrate
	[ -e "$OUT/chainmiss.ours.runs" ] && section_chain
	write_results ok
	;;
*)
	echo "usage: bench/run.sh [run|report]" >&2
	exit 2
	;;
esac
