#!/usr/bin/env bash
# Builds the tools the monitoring tests run, from the Go module proxy, into a git-ignored folder
# named by version: promtool (checks and unit-tests monitoring/rules.yaml) and promqlcheck
# (Prometheus's PromQL parser over the dashboard's queries, see promqlcheck/main.go).
#
#   monitoring/tools/build.sh        build the tools that are not there yet (none if both are)
#   monitoring/tools/build.sh dir    print the tool folder
#
# Only `go` is needed. The versions are the ones in go.mod beside this script. The monitoring tests
# fail, saying to run this script, when a tool is missing.
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
PROM_VERSION=$(awk '$1 == "github.com/prometheus/prometheus" { print $2 }' "$HERE/go.mod")
[ -n "$PROM_VERSION" ] || { echo "monitoring tools: no prometheus version in $HERE/go.mod" >&2; exit 1; }
# Build tags: remove_all_sd leaves Prometheus's service-discovery plugins (AWS, Azure, GCE,
# Consul, ... SDKs) out of promtool: `check rules` and `test rules` need none of them, and they
# were most of its cold build.
TAGS=remove_all_sd
# Named by the sources and tags too, so that a change to go.mod, promqlcheck or the tags builds
# afresh.
SOURCES=$( (cat "$HERE/go.mod" "$HERE/go.sum" "$HERE"/promqlcheck/*.go; echo "$TAGS") | sha256sum | cut -c1-12)
OUT=${MONITORING_TOOLS_DIR:-$ROOT/.cache/monitoring-tools/prometheus-$PROM_VERSION-$SOURCES}
# name → package, in build order.
TOOLS=(promtool promqlcheck)
declare -A PKG=(
	[promtool]=github.com/prometheus/prometheus/cmd/promtool
	[promqlcheck]=./promqlcheck
)

log() { echo "monitoring tools: $*" >&2; }

build() {
	local todo=() t
	for t in "${TOOLS[@]}"; do [ -x "$OUT/$t" ] || todo+=("$t"); done
	if [ ${#todo[@]} -eq 0 ]; then
		log "cached in $OUT"
		return 0
	fi
	cd "$HERE"
	local start=$SECONDS
	log "building ${todo[*]} (Prometheus $PROM_VERSION) into $OUT (a few minutes for promtool on 2 cores with a cold Go cache)"
	# Global, not local: the EXIT trap runs after this function has returned.
	tmp="$OUT.tmp.$$"
	mkdir -p "$tmp"
	trap 'rm -rf "${tmp:-}"' EXIT
	for t in "${todo[@]}"; do
		CGO_ENABLED=0 go build -trimpath -tags "$TAGS" -ldflags "-s -w" -o "$tmp/$t" "${PKG[$t]}"
		log "$t built ($((SECONDS - start)) s so far)"
	done
	mkdir -p "$OUT"
	for t in "${todo[@]}"; do mv "$tmp/$t" "$OUT/$t"; done
	log "built in $((SECONDS - start)) s"
}

case "${1:-build}" in
	build) build ;;
	dir) echo "$OUT" ;;
	*)
		echo "usage: $0 [build|dir]" >&2
		exit 2
		;;
esac
