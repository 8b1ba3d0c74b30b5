#!/usr/bin/env bash
# One entry point for people and CI. See ./build.sh --help.
set -euo pipefail

cd "$(dirname "$0")"
ROOT=$(pwd)

usage() {
	cat <<'USAGE'
Usage: ./build.sh [COMMAND]

Commands:
  build   (default) generate cmd/coredns from plugin.cfg and build ./coredns
  test    everything CI runs: gofmt check, go vet, unit + integration tests, the built binary's checks
  demo    build and serve the examples/ world on 127.0.0.1:1053 (no cluster needed)
  e2e     end-to-end tests against a real etcd + kube-apiserver on loopback
  bench   benchmarks side by side with upstream CoreDNS (writes bench/RESULTS.md)
  fuzz [DURATION]  every fuzz target for DURATION each (default: 20m for the node cache's
          targets, plugin/nodecache/..., and 10m for the others)
  image   a static binary in an OCI image tarball, built without a Docker daemon
  realnode  a one-node Kubernetes cluster on this machine (kubelet, containerd, kube-proxy, CNI;
          root): deploy/cluster and deploy/node applied, pods resolving through both roles, the
          Kubernetes conformance DNS tests both ways (REALNODE_CONFORMANCE=0: without), rollouts
          under load, a table of results, everything torn down (test/realnode/README.md)
  help    this text
USAGE
}

version() {
	git describe --always --dirty --tags 2>/dev/null || echo unknown
}

build() {
	go generate ./cmd/coredns
	CGO_ENABLED=0 go build -trimpath \
		-ldflags "-s -w -X github.com/coredns/coredns/coremain.GitCommit=$(version)" \
		-o "$ROOT/coredns" ./cmd/coredns
	echo "built $ROOT/coredns ($(du -h "$ROOT/coredns" | cut -f1))"
}

# ensure_tool installs a Debian package when its command is missing (root only; else it says how).
ensure_tool() {
	local cmd=$1 pkg=$2
	command -v "$cmd" >/dev/null 2>&1 && return 0
	if [ "$(id -u)" -ne 0 ]; then
		echo "build.sh: $cmd is missing; install it with: sudo apt-get install -y $pkg" >&2
		return 1
	fi
	echo "build.sh: installing $pkg for $cmd"
	DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$pkg" >/dev/null 2>&1 ||
		{ apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$pkg" >/dev/null; }
}

demo() {
	build
	ensure_tool dig dnsutils || true
	cat <<'DEMO'

Serving examples/manifests on 127.0.0.1:1053 (Ctrl-C stops). In another terminal, try:

  dig @127.0.0.1 -p 1053 myweb-svc.default.svc.cluster.local                 # ClusterIP A
  dig @127.0.0.1 -p 1053 _http._tcp.myweb-svc.default.svc.cluster.local SRV  # named port
  dig @127.0.0.1 -p 1053 10-244-1-5.myweb-svc.default.svc.cluster.local      # endpoint name
  dig @127.0.0.1 -p 1053 db.default.svc.cluster.local                        # headless: one A per pod
  dig @127.0.0.1 -p 1053 db-0.db.default.svc.cluster.local                   # StatefulSet pod hostname
  dig @127.0.0.1 -p 1053 _pg._tcp.db.default.svc.cluster.local SRV           # SRV per pod, with addresses
  dig @127.0.0.1 -p 1053 dual-svc.default.svc.cluster.local AAAA             # dual-stack
  dig @127.0.0.1 -p 1053 search-engine.default.svc.cluster.local             # ExternalName CNAME
  dig @127.0.0.1 -p 1053 10-244-1-20.dev.pod.cluster.local                   # pod record (verified)
  dig @127.0.0.1 -p 1053 -x 10.96.100.10                                     # PTR of a ClusterIP
  dig @127.0.0.1 -p 1053 nope.default.svc.cluster.local                      # NXDOMAIN with SOA
  dig @127.0.0.1 -p 1053 dns-version.cluster.local TXT                       # schema version

Edit a file under examples/manifests and the answers follow within a second or two.

DEMO
	exec ./coredns -conf examples/Corefile.demo
}

# image writes coredns.image.tar: the static ./coredns in a minimal OCI image (cmd/mkimage), no
# Docker daemon needed. The tarball loads with docker load, ctr import, podman load or skopeo.
image() {
	build
	local tag certs=()
	tag="clusterdns/coredns:$(version)"
	[ -r /etc/ssl/certs/ca-certificates.crt ] && certs=(-ca-certs /etc/ssl/certs/ca-certificates.crt)
	SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct 2>/dev/null || echo 0)} \
		go run ./cmd/mkimage -binary "$ROOT/coredns" -tag "$tag" -o "$ROOT/coredns.image.tar" "${certs[@]}" \
		-label org.opencontainers.image.title=clusterdns \
		-label org.opencontainers.image.version="$(version)" \
		-label org.opencontainers.image.revision="$(git rev-parse HEAD 2>/dev/null || echo unknown)"
	cat <<NEXT
load it:  docker load -i coredns.image.tar   or, on a node:  ctr -n k8s.io images import coredns.image.tar
deploy:   set newTag: $(version) in deploy/image/kustomization.yaml (README.md "Deploying to kube-system")
NEXT
}

# bench runs bench/run.sh: the side-by-side benchmarks with upstream CoreDNS (benchctl run),
# written to bench/results.json, bench/plots/ and bench/RESULTS.md (root; installs dnsperf and
# unbound; about 40 minutes on 2 cores with the memory test).
bench() {
	"$ROOT/bench/run.sh"
}

# realnode builds what test/realnode needs (control plane, kubelet, kube-proxy, kube-scheduler,
# containerd, Debian's runc and CNI plugins, e2e.test, the images), each skipped when cached, then
# runs it.
realnode() {
	test/e2e/controlplane/build.sh
	# ./coredns first: the conformance tests' agnhost image carries a copy.
	image
	test/realnode/build.sh
	test/realnode/run.sh
}

not_built_yet() {
	echo "build.sh $1: not built yet (see issue $2)" >&2
	exit 3
}

check_binary() {
	local plugins
	plugins=$(./coredns -plugins)
	for p in dns.k8sdiscovery dns.k8sdiscovery_external dns.nodecache dns.searchpath; do
		grep -qx "  $p" <<<"$plugins" || {
			echo "FAIL: ./coredns -plugins does not list $p" >&2
			exit 1
		}
	done
	for p in dns.route53 dns.azure dns.clouddns; do
		if grep -qx "  $p" <<<"$plugins"; then echo "FAIL: cloud-provider plugin $p is built in" >&2; exit 1; fi
	done
	echo "ok: ./coredns -plugins lists our plugins and no cloud-provider plugin"
}

# fuzz_targets lists "DIR TARGET" for every fuzz target of the repository.
fuzz_targets() {
	local dir target
	for dir in $(grep -rl --include='*_test.go' --exclude-dir=.cache --exclude-dir=.git '^func Fuzz' . | xargs -n1 dirname | sort -u); do
		for target in $(grep -h '^func Fuzz' "$dir"/*_test.go | sed 's/^func \(Fuzz[A-Za-z0-9_]*\).*/\1/'); do
			echo "$dir $target"
		done
	done
}

# fuzz_run DIR TARGET FUZZTIME runs one target; a failing input fails the build.
fuzz_run() {
	local dir=$1 target=$2 fuzztime=$3 try log
	log=$(mktemp /tmp/clusterdns-fuzz.XXXXXX)
	echo "fuzz: $dir $target for $fuzztime"
	for try in 1 2; do
		go test -run '^$' -fuzz "^${target}\$" -fuzztime "$fuzztime" "$dir" </dev/null >"$log" 2>&1 && break
		# Go's fuzzing engine sometimes ends a short run with "context deadline exceeded"
		# and no failing input when the machine is loaded: that is the engine's own
		# deadline, not a crasher (none is saved). Run it once more; a real failure
		# saves its input and fails every time.
		if [ "$try" = 1 ] && grep -q 'context deadline exceeded' "$log" &&
			! grep -q 'Failing input written' "$log"; then
			echo "fuzz: $target: the engine's deadline passed with no failing input; once more"
			continue
		fi
		cat "$log" >&2
		rm -f "$log"
		echo "FAIL: fuzz target $target in $dir (a crasher is saved under $dir/testdata/fuzz/$target)" >&2
		exit 1
	done
	# The engine's last progress line: elapsed time, executions, new interesting inputs.
	grep -E '^fuzz: elapsed' "$log" | tail -1
	rm -f "$log"
}

# fuzz_smoke runs every fuzz target until its baseline coverage is gathered (every input of its
# seed and cached corpus, which count as executions) and FUZZ_EXECS (2000) new inputs more; a
# time-boxed run could end before the baseline and fuzz nothing. FUZZTIME=5s sets a time instead.
fuzz_smoke() {
	local dir target corpus cache
	cache=$(go env GOCACHE)/fuzz
	while read -r dir target; do
		corpus=$(( $( { find "$dir/testdata/fuzz/$target" "$cache/$(go list "$dir")/$target" -type f 2>/dev/null || true; } | wc -l) + 100 ))
		fuzz_run "$dir" "$target" "${FUZZTIME:-$((corpus + ${FUZZ_EXECS:-2000}))x}"
	done < <(fuzz_targets)
}

# fuzz_long runs every fuzz target for DURATION: ./build.sh fuzz 30m. Without DURATION the
# node cache's targets (which parse what an upstream or a client sends) run 20m, the others 10m.
fuzz_long() {
	local dir target
	while read -r dir target; do
		case "$dir" in
			./plugin/nodecache*) fuzz_run "$dir" "$target" "${1:-20m}" ;;
			*) fuzz_run "$dir" "$target" "${1:-10m}" ;;
		esac
	done < <(fuzz_targets)
}

test_all() {
	build
	check_binary
	./coredns -conf Corefile.cluster -validate
	LOCAL_IPS="169.254.20.10 fd00::a9fe:140a" CLUSTER_DNS=10.96.0.10:53 CLUSTER_DNS_PIPELINED=10.96.0.10:5353 NODE_NAME=node-1 \
		./coredns -conf Corefile.nodelocal -validate
	./coredns -conf examples/Corefile.demo -validate
	local unformatted
	unformatted=$(gofmt -l $(git ls-files '*.go' 2>/dev/null || find . -name '*.go' -not -path './.cache/*'))
	if [ -n "$unformatted" ]; then
		echo "FAIL: gofmt would change: $unformatted" >&2
		exit 1
	fi
	go vet ./...
	# packetio's struct mmsghdr layout is checked at build time; build it where pointers are 32-bit too.
	GOARCH=386 go build ./internal/packetio
	# The e2e suite needs etcd, kube-apiserver and kube-controller-manager: built once from the Go
	# module proxy into .cache/ (10-20 min cold on 2 cores, skipped when present).
	test/e2e/controlplane/build.sh
	charts/helm/build.sh # helm for charts/'s tests, built once into .cache/ like the control plane
	monitoring/tools/build.sh # promtool and the PromQL parser for monitoring's tests (about 4 min cold)
	# Unit and integration tests quietly; the acceptance suites verbosely, since they print what
	# they tried and measured (queries sent/answered/lost, programming latency, restart times).
	local acceptance='/test/(e2e|nodecache|robustness)$'
	go test -count=1 -timeout 60m $(go list ./... | grep -Ev "$acceptance")
	go test -count=1 -v -timeout 60m $(go list ./... | grep -E "$acceptance")
	fuzz_smoke
}

case "${1:-build}" in
	build) build ;;
	test) test_all ;;
	demo) demo ;;
	e2e) go test -count=1 -v -timeout 60m ./test/e2e/... ;;
	fuzz) fuzz_long "${2:-}" ;;
	bench) bench ;;
	image) image ;;
	realnode) realnode ;;
	help | -h | --help) usage ;;
	*)
		echo "build.sh: unknown command ${1}" >&2
		usage >&2
		exit 2
		;;
esac
