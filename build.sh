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
  image   a static binary in an OCI image tarball, built without a Docker daemon
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

not_built_yet() {
	echo "build.sh $1: not built yet (see issue $2)" >&2
	exit 3
}

check_binary() {
	local plugins
	plugins=$(./coredns -plugins)
	for p in dns.k8sdiscovery dns.nodecache dns.searchpath; do
		grep -qx "  $p" <<<"$plugins" || { echo "FAIL: ./coredns -plugins does not list $p" >&2; exit 1; }
	done
	for p in dns.route53 dns.azure dns.clouddns; do
		if grep -qx "  $p" <<<"$plugins"; then echo "FAIL: cloud-provider plugin $p is built in" >&2; exit 1; fi
	done
	echo "ok: ./coredns -plugins lists our plugins and no cloud-provider plugin"
}

test_all() {
	build
	check_binary
	local unformatted
	unformatted=$(gofmt -l $(git ls-files '*.go' 2>/dev/null || find . -name '*.go' -not -path './.cache/*'))
	if [ -n "$unformatted" ]; then
		echo "FAIL: gofmt would change: $unformatted" >&2
		exit 1
	fi
	go vet ./...
	go test -count=1 ./...
}

case "${1:-build}" in
	build) build ;;
	test) test_all ;;
	demo) not_built_yet demo 3 ;;
	e2e) not_built_yet e2e 4 ;;
	bench) not_built_yet bench 7 ;;
	image) not_built_yet image 8 ;;
	help | -h | --help) usage ;;
	*)
		echo "build.sh: unknown command ${1}" >&2
		usage >&2
		exit 2
		;;
esac
