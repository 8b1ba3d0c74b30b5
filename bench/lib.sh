# Shared by bench/run.sh: the local control plane, servers pinned to a CPU, dnsperf runs.
# Sourced, not run. Expects ROOT, OUT, BENCHCTL, SERVER_CPU, LOAD_CPU, CONTROLPLANE_BIN.

PIDS=()

log() { echo "bench: $*" >&2; }

# stop_pid PID [GRACE_SECONDS]: SIGTERM, then SIGKILL after the grace period.
stop_pid() {
	local pid=$1 grace=${2:-10} i
	kill -TERM "$pid" 2>/dev/null || return 0
	for ((i = 0; i < grace * 10; i++)); do
		kill -0 "$pid" 2>/dev/null || break
		sleep 0.1
	done
	kill -KILL "$pid" 2>/dev/null || true
	wait "$pid" 2>/dev/null || true
}

cleanup_all() {
	local p
	for p in "${PIDS[@]}"; do stop_pid "$p" 5; done
	ip link del "$BENCH_LINK" 2>/dev/null || true
}

# The addresses the servers use: on a bridge of our own, so nothing else on the machine (another
# benchmark on 127.0.0.1:1053, say) shares a socket with them. Local delivery as on loopback.
setup_link() {
	ip link del "$BENCH_LINK" 2>/dev/null || true
	ip link add "$BENCH_LINK" type bridge
	ip link set "$BENCH_LINK" up
	local a
	for a in "$ADDR_SERVER" "$ADDR_STUB" "$ADDR_UPSTREAM" "$ADDR_POD"; do
		ip addr add "$a/32" dev "$BENCH_LINK"
	done
}

# ---- control plane: etcd + kube-apiserver on 127.0.0.1 (flags as in test/e2e/controlplane_test.go)

# Admission plugins that cost time per pod and change nothing DNS reads (namespace lifecycle
# stays). With them and APF off, and GOGC=400 (GOMEMLIMIT 6 GiB for the apiserver), object
# creation is about twice as fast here.
CP_DISABLED_ADMISSION=ServiceAccount,PodSecurity,LimitRanger,Priority,DefaultTolerationSeconds,TaintNodesByCondition,ResourceQuota,RuntimeClass,DefaultStorageClass,StorageObjectInUseProtection,PodTopologyLabels,NodeDeclaredFeatureValidator,PodResizeValidator,MutatingAdmissionPolicy,ValidatingAdmissionPolicy,MutatingAdmissionWebhook,ValidatingAdmissionWebhook,PodGroupProtection

cp_start() {
	CP_DIR=$1
	rm -rf "$CP_DIR"
	mkdir -p "$CP_DIR"
	CP_ETCD_PORT=$("$BENCHCTL" freeport)
	CP_ETCD_PEER_PORT=$("$BENCHCTL" freeport)
	CP_API_PORT=$("$BENCHCTL" freeport)
	"$BENCHCTL" secrets "$CP_DIR"
	local client=http://127.0.0.1:$CP_ETCD_PORT peer=http://127.0.0.1:$CP_ETCD_PEER_PORT
	GOGC=${CP_GOGC:-400} "$CONTROLPLANE_BIN/etcd" --name=bench --data-dir="$CP_DIR/etcd-data" \
		--listen-client-urls="$client" --advertise-client-urls="$client" \
		--listen-peer-urls="$peer" --initial-advertise-peer-urls="$peer" --initial-cluster="bench=$peer" \
		--unsafe-no-fsync --quota-backend-bytes=8589934592 --log-level=warn >"$CP_DIR/etcd.log" 2>&1 &
	CP_ETCD_PID=$!
	PIDS+=("$CP_ETCD_PID")
	CP_ETCD_URL=$client
	cp_start_apiserver
	"$BENCHCTL" kubeconfig -out "$CP_DIR/kubeconfig" -server "https://127.0.0.1:$CP_API_PORT" \
		-ca "$CP_DIR/certs/apiserver.crt" -token-file "$CP_DIR/token"
	KUBECONFIG_BENCH=$CP_DIR/kubeconfig
	local t
	t=$("$BENCHCTL" ready -kubeconfig "$KUBECONFIG_BENCH")
	log "kube-apiserver ready on 127.0.0.1:$CP_API_PORT after ${t}s"
}

cp_start_apiserver() {
	GOGC=${CP_GOGC:-400} GOMEMLIMIT=${CP_GOMEMLIMIT:-6GiB} "$CONTROLPLANE_BIN/kube-apiserver" \
		--etcd-servers="$CP_ETCD_URL" \
		--bind-address=127.0.0.1 --advertise-address=127.0.0.1 --secure-port="$CP_API_PORT" \
		--cert-dir="$CP_DIR/certs" --token-auth-file="$CP_DIR/tokens.csv" --authorization-mode=RBAC \
		--service-account-issuer=https://kubernetes.default.svc.cluster.local \
		--service-account-key-file="$CP_DIR/sa.key" --service-account-signing-key-file="$CP_DIR/sa.key" \
		--service-cluster-ip-range=10.96.0.0/16 --endpoint-reconciler-type=none \
		--disable-admission-plugins="$CP_DISABLED_ADMISSION" --enable-priority-and-fairness=false --profiling=false \
		>>"$CP_DIR/kube-apiserver.log" 2>&1 &
	CP_API_PID=$!
	PIDS+=("$CP_API_PID")
}

# cp_restart_apiserver: stop the apiserver, move etcd's revision on and compact it, start it
# again. Every watch then resumes from a compacted resource version and its client relists.
cp_restart_apiserver() {
	stop_pid "$CP_API_PID" 10
	"$BENCHCTL" etcd-compact -endpoint "$CP_ETCD_URL" >/dev/null
	cp_start_apiserver
	"$BENCHCTL" ready -kubeconfig "$KUBECONFIG_BENCH"
}

cp_stop() {
	stop_pid "$CP_API_PID" 10
	stop_pid "$CP_ETCD_PID" 10
}

# ---- servers under test

# start_server NAME CPU CMD...: runs CMD pinned to CPU, logs to $OUT/NAME.log, sets SERVER_PID.
start_server() {
	local name=$1 cpu=$2
	shift 2
	taskset -c "$cpu" "$@" >"$OUT/$name.log" 2>&1 &
	SERVER_PID=$!
	PIDS+=("$SERVER_PID")
}

# wait_answer ADDR PROBES: until every probe line (NAME TYPE WANT) is answered.
wait_answer() {
	"$BENCHCTL" sync -server "$1" -probes "$2" -timeout "${3:-60s}" >/dev/null || {
		log "server at $1 did not answer $(head -1 "$2"); its log:"
		tail -20 "$OUT/$CURRENT.log" >&2 || true
		return 1
	}
}

# cpu_ticks PID: user+system clock ticks so far.
cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }
peak_rss_mib() { awk '/^VmHWM:/ { printf "%.0f", $2 / 1024 }' "/proc/$1/status"; }

# dnsperf_run PID LABEL FILE SECONDS [dnsperf options]: dnsperf on LOAD_CPU against
# $ADDR_SERVER:53. Appends "qps lost cpu_pct cpu_us_per_query rcodes response_bytes loadavg"
# to $OUT/LABEL.runs.
dnsperf_run() {
	local pid=$1 label=$2 file=$3 secs=$4
	shift 4
	local t0 t1 e0 e1 out=$OUT/$label.dnsperf.$RANDOM
	t0=$(cpu_ticks "$pid")
	[ -n "${EXTRA_PID:-}" ] && e0=$(cpu_ticks "$EXTRA_PID")
	taskset -c "$LOAD_CPU" dnsperf -s "$ADDR_SERVER" -p 53 -d "$file" -l "$secs" "$@" >"$out" 2>&1 || true
	t1=$(cpu_ticks "$pid")
	if [ -n "${EXTRA_PID:-}" ]; then
		# The second process's CPU (a chain's central role) per answered query: LABEL.extra.
		e1=$(cpu_ticks "$EXTRA_PID")
		awk -v ticks=$((e1 - e0)) -v hz="$(getconf CLK_TCK)" '/Queries completed:/ { done = $3 }
			END { printf "%.2f\n", (done > 0 ? 1e6 * ticks / hz / done : 0) }' "$out" >>"$OUT/$label.extra"
	fi
	awk -v ticks=$((t1 - t0)) -v hz="$(getconf CLK_TCK)" '
		/Queries per second:/ { qps = $4 }
		/Queries completed:/ { done = $3 }
		/Queries lost:/ { lost = $3 }
		/Run time \(s\):/ { rt = $4 }
		/Average packet size:/ { size = $NF }
		/Response codes:/ { sub(/^ *Response codes: */, ""); gsub(/ [0-9]+ \(/, ":"); gsub(/[) ]/, ""); rc = $0 }
		END {
			cpu = ticks / hz
			pct = 0; per = 0
			if (rt > 0) pct = 100 * cpu / rt
			if (done > 0) per = 1e6 * cpu / done
			printf "%.0f %d %.0f %.2f %s %s %s\n", qps, lost, pct, per, rc, size, load
		}' load="$(cut -d' ' -f1 /proc/loadavg)" "$out" >>"$OUT/$label.runs"
	mv "$out" "$OUT/$label.dnsperf.last"
}

# ab_rounds SCENARIO NAMES...: for each of ROUNDS rounds, every server in order (A/B/A/B...):
# start_<scenario>_<name>, a warm-up (hit only), a throughput run (RUN_SECONDS, -c 8 -q OUTSTANDING),
# stop. Then, at half the slowest server's mean QPS, a latency run per server and round with
# dnsperf -v. Needs functions start_<scenario>_<name> (sets SERVER_PID, returns once it serves)
# and query_file_<scenario> NAME RUN (prints a dnsperf input file).
ab_rounds() {
	local scenario=$1
	shift
	local name round file
	for name in "$@"; do rm -f "$OUT/$scenario.$name.runs" "$OUT/$scenario.$name.lat" "$OUT/$scenario.$name.v"; done
	for round in $(seq 1 "$ROUNDS"); do
		for name in "$@"; do
			CURRENT=$scenario.$name
			"start_${scenario}_$name"
			file=$("query_file_$scenario" "$name" "tp$round")
			warm_up "$scenario" "$file"
			dnsperf_run "$SERVER_PID" "$scenario.$name" "$file" "$RUN_SECONDS" -c 8 -q "$OUTSTANDING"
			echo "$(peak_rss_mib "$SERVER_PID")" >>"$OUT/$scenario.$name.rss"
			stop_pid "$SERVER_PID"
			stop_extra
			log "$scenario round $round $name: $(tail -1 "$OUT/$scenario.$name.runs") (load $(cut -d' ' -f1 /proc/loadavg))"
		done
	done
	local slowest rate
	slowest=$(for name in "$@"; do mean_col "$OUT/$scenario.$name.runs" 1; done | sort -n | head -1)
	rate=$((slowest / 2))
	echo "$rate" >"$OUT/$scenario.latency_rate"
	for round in $(seq 1 "$ROUNDS"); do
		for name in "$@"; do
			CURRENT=$scenario.$name
			"start_${scenario}_$name"
			file=$("query_file_$scenario" "$name" "lat$round")
			warm_up "$scenario" "$file"
			taskset -c "$LOAD_CPU" dnsperf -s "$ADDR_SERVER" -d "$file" -l "$LATENCY_SECONDS" -c 8 -q "$OUTSTANDING" -Q "$rate" -v \
				>>"$OUT/$scenario.$name.v" 2>&1 || true
			stop_pid "$SERVER_PID"
			stop_extra
		done
	done
	for name in "$@"; do
		"$BENCHCTL" latency "$OUT/$scenario.$name.v" >"$OUT/$scenario.$name.lat"
		rm -f "$OUT/$scenario.$name.v"
	done
}

# warm_up SCENARIO FILE: one second of the queries first, for the scenarios that measure hits.
warm_up() {
	case $1 in
	hit | chainhit) taskset -c "$LOAD_CPU" dnsperf -s "$ADDR_SERVER" -d "$2" -l 1 -c 4 -q 100 >/dev/null 2>&1 || true ;;
	esac
}

# stop_extra stops EXTRA_PID, the second process a server start may leave (a chain's central role).
stop_extra() {
	if [ -n "${EXTRA_PID:-}" ]; then
		stop_pid "$EXTRA_PID"
		EXTRA_PID=
	fi
}

# mean_col FILE N: mean of column N.
mean_col() { awk -v c="$2" '{ s += $c; n++ } END { printf "%.0f\n", n ? s / n : 0 }' "$1"; }
mean_col_f() { awk -v c="$2" '{ s += $c; n++ } END { printf "%.2f\n", n ? s / n : 0 }' "$1"; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "n/a" }'; }

# table_row SCENARIO NAME LABEL [REF]: a Markdown row of the detail table from NAME's runs; the
# last column is ours (REF) ÷ this server's QPS, empty for ours.
table_row() {
	local scenario=$1 name=$2 label=$3 ref=${4:-} runs qps p50 p99 r=""
	runs=$OUT/$scenario.$name.runs
	qps=$(mean_col "$runs" 1)
	read -r p50 p99 _ _ <"$OUT/$scenario.$name.lat" || true
	if [ -n "$ref" ] && [ "$ref" != "$name" ]; then
		r=$(ratio "$(mean_col "$OUT/$scenario.$ref.runs" 1)" "$qps")
	fi
	printf '| %s | %s (%s) | %s / %s | %s | %s | %s | %s | %s | %s | %s | %s |\n' \
		"$label" "$qps" "$(cut -d' ' -f1 "$runs" | paste -sd, | sed 's/,/, /g')" \
		"${p50:-?}" "${p99:-?}" "$(mean_col "$runs" 3)" "$(mean_col_f "$runs" 4)" \
		"$(sort -n "$OUT/$scenario.$name.rss" | tail -1)" "$(awk '{ s += $2 } END { print s + 0 }' "$runs")" \
		"$(cut -d' ' -f5 "$runs" | sort -u | paste -sd' ')" "$(mean_col "$runs" 6)" \
		"$(cut -d' ' -f7 "$runs" | sort -n | sed -n '1p;$p' | paste -sd'-')" "${r:-—}"
}

table_header() {
	echo "| server | QPS mean (per run) | p50 / p99 ms at $(cat "$OUT/$1.latency_rate") qps | CPU % | CPU µs/query | peak RSS MiB | lost | rcodes | response bytes | load avg (1 min) | ours ÷ this |"
	echo "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"
}

# summary_row LABEL SCENARIO OURS THEIRS OURS-LABEL THEIRS-LABEL TARGET THRESHOLD: one comparison of the
# summary table. The target is judged on QPS; "by CPU" is the same ratio from CPU time per answered
# query, which other processes on the machine disturb less than QPS.
summary_row() {
	local label=$1 scenario=$2 ours=$3 theirs=$4 oursLabel=$5 theirsLabel=$6 target=$7 threshold=$8
	local qo qt r co ct po pt met
	qo=$(mean_col "$OUT/$scenario.$ours.runs" 1)
	qt=$(mean_col "$OUT/$scenario.$theirs.runs" 1)
	r=$(ratio "$qo" "$qt")
	co=$(mean_col_f "$OUT/$scenario.$ours.runs" 4)
	ct=$(mean_col_f "$OUT/$scenario.$theirs.runs" 4)
	po=$(cut -d' ' -f1,2 "$OUT/$scenario.$ours.lat" | sed 's# # / #')
	pt=$(cut -d' ' -f1,2 "$OUT/$scenario.$theirs.lat" | sed 's# # / #')
	met=$(awk -v r="$r" -v t="$threshold" 'BEGIN { print (t == "" ? "" : (r + 0 >= t + 0 ? "met" : "not met")) }')
	printf '| %s | %s vs %s | %s / %s | **%s** | %s / %s | %s | %s ; %s | %s / %s | %s | %s |\n' \
		"$label" "$oursLabel" "$theirsLabel" "$qo" "$qt" "$r" "$co" "$ct" "$(ratio "$ct" "$co")" "$po" "$pt" \
		"$(sort -n "$OUT/$scenario.$ours.rss" | tail -1)" "$(sort -n "$OUT/$scenario.$theirs.rss" | tail -1)" \
		"$target" "$met"
}
