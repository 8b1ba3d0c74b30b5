#!/usr/bin/env bash
# Builds the helm CLI that charts/chart_test.go lints and renders charts/clusterdns with, from the
# Go module proxy, into a git-ignored folder named by version.
#
#   charts/helm/build.sh        build helm unless it is there already
#   charts/helm/build.sh path   print the path of the binary
#
# Only `go` is needed: `go install` of helm's own command at a fixed version (its go.sum is
# checked against the checksum database, as for any module).
set -euo pipefail

HELM_VERSION=${HELM_VERSION:-v3.22.0}

HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
OUT=${HELM_DIR:-$ROOT/.cache/helm/$HELM_VERSION}

log() { echo "helm: $*" >&2; }

build() {
	if [ -x "$OUT/helm" ]; then
		log "cached in $OUT"
		return 0
	fi
	local start=$SECONDS
	log "building helm $HELM_VERSION into $OUT (a few minutes on 2 cores with a cold Go cache)"
	# Global, not local: the EXIT trap runs after this function has returned.
	tmp="$OUT.tmp.$$"
	mkdir -p "$tmp"
	trap 'rm -rf "${tmp:-}"' EXIT
	# Run outside the repository so that its go.mod plays no part; -ldflags set what
	# `helm version` prints, as helm's Makefile does.
	(cd "$tmp" && CGO_ENABLED=0 GOBIN="$tmp" GOFLAGS=-trimpath go install \
		-ldflags "-s -w -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION" \
		"helm.sh/helm/v3/cmd/helm@$HELM_VERSION")
	mkdir -p "$OUT"
	mv "$tmp/helm" "$OUT/helm"
	log "built in $((SECONDS - start)) s: $(du -h "$OUT/helm" | cut -f1) $OUT/helm"
}

case "${1:-build}" in
	build) build ;;
	path) echo "$OUT/helm" ;;
	*)
		echo "usage: $0 [build|path]" >&2
		exit 2
		;;
esac
