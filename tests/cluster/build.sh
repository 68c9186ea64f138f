#!/usr/bin/env bash
# Builds the Kubernetes components that the end-to-end tests run against
# (kube-apiserver, kube-controller-manager, etcd, kubectl, helm) from the Go
# module pinned in tests/cluster/components/go.mod, into a cache outside the
# repository keyed by that pin:
#
#   ${RSTORE_K8S_CACHE:-$HOME/.cache/rstore-k8s}/<hash of go.mod + go.sum>/bin
#
# Does nothing when the binaries are already there. Progress goes to stderr;
# the last line on stdout is the bin folder, so callers can do
#   bin=$(tests/cluster/build.sh)
#
# Environment: RSTORE_K8S_CACHE (cache root), RSTORE_K8S_BUILD_JOBS (go build
# -p, default: number of cores), RSTORE_K8S_NICE (nice level, default 10).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
mod="$here/components"
cache_root=${RSTORE_K8S_CACHE:-${HOME:-/root}/.cache/rstore-k8s}
key=$(cat "$mod/go.mod" "$mod/go.sum" | sha256sum | cut -c1-16)
dir="$cache_root/$key"
bin="$dir/bin"

# name=package, built with `go build -o`.
targets=(
  "kube-apiserver=k8s.io/kubernetes/cmd/kube-apiserver"
  "kube-controller-manager=k8s.io/kubernetes/cmd/kube-controller-manager"
  "kubectl=k8s.io/kubernetes/cmd/kubectl"
  "etcd=go.etcd.io/etcd/server/v3"
  "helm=helm.sh/helm/v3/cmd/helm"
)

all_built() {
  local t
  for t in "${targets[@]}"; do
    [[ -x "$bin/${t%%=*}" ]] || return 1
  done
}

log() { echo "build.sh: $*" >&2; }

if all_built; then
  log "components already built in $bin"
  echo "$bin"
  exit 0
fi

command -v go >/dev/null || {
  log "go is not installed: the Kubernetes components are built from Go modules"
  exit 1
}

mkdir -p "$dir"
# One build at a time per pin (tests of several binaries, up.sh, CI).
exec 9>"$dir/lock"
if ! flock -n 9; then
  log "another build of $dir is running: waiting for it"
  flock 9
fi
if all_built; then
  log "components built meanwhile in $bin"
  echo "$bin"
  exit 0
fi

version_of() { awk -v m="$1" '$1 == m { print $2; exit }' "$mod/go.mod"; }
k8s_version=$(version_of k8s.io/kubernetes)
helm_version=$(version_of helm.sh/helm/v3)
etcd_version=$(version_of go.etcd.io/etcd/server/v3)
k8s_minor=$(echo "$k8s_version" | cut -d. -f2)
build_date=$(date -u +%Y-%m-%dT%H:%M:%SZ)

# The version variables the Kubernetes and Helm release builds set, so that
# `kubectl version` and Helm's kubeVersion checks see the real version.
cb=k8s.io/component-base/version
ldflags="-s -w"
ldflags+=" -X $cb.gitVersion=$k8s_version -X $cb.gitMajor=1 -X $cb.gitMinor=$k8s_minor"
ldflags+=" -X $cb.gitTreeState=clean -X $cb.buildDate=$build_date"
ldflags+=" -X helm.sh/helm/v3/internal/version.version=$helm_version"
ldflags+=" -X helm.sh/helm/v3/internal/version.gitTreeState=clean"

log "building Kubernetes $k8s_version, etcd $etcd_version, helm $helm_version into $bin"
log "(cold: up to an hour on 2 cores; cached afterwards)"
start=$(date +%s)
tmp=$(mktemp -d "$dir/tmp.XXXXXX")
# Go's build and module caches for this build only, removed with it: they
# hold several GiB that nothing needs once the binaries exist (a CI machine
# ran out of disk with them left in $HOME). RSTORE_K8S_KEEP_GO_CACHE=1 uses
# the user's own Go caches instead, for someone who rebuilds often.
if [[ "${RSTORE_K8S_KEEP_GO_CACHE:-0}" != 1 ]]; then
  export GOCACHE="$tmp/go-build" GOMODCACHE="$tmp/go-mod"
fi
cleanup() {
  # The module cache is read-only by design; make it removable first.
  chmod -R u+w "$tmp" 2>/dev/null || true
  rm -rf "$tmp"
}
trap cleanup EXIT

jobs=${RSTORE_K8S_BUILD_JOBS:-$(nproc)}
for t in "${targets[@]}"; do
  name=${t%%=*}
  pkg=${t#*=}
  [[ -x "$bin/$name" ]] && continue
  t0=$(date +%s)
  log "go build $pkg -> $name"
  (cd "$mod" && CGO_ENABLED=0 GOFLAGS=-buildvcs=false \
    nice -n "${RSTORE_K8S_NICE:-10}" \
    go build -p "$jobs" -trimpath -ldflags "$ldflags" -o "$tmp/$name" "$pkg")
  mkdir -p "$bin"
  mv -f "$tmp/$name" "$bin/$name"
  log "$name built in $(($(date +%s) - t0)) s"
done

{
  echo "kubernetes $k8s_version"
  echo "etcd $etcd_version"
  echo "helm $helm_version"
  echo "go $(go env GOVERSION)"
  echo "built $build_date in $(($(date +%s) - start)) s"
} >"$dir/VERSIONS"
log "components built in $(($(date +%s) - start)) s: $bin"
echo "$bin"
