#!/usr/bin/env bash
# Start the tests' Kubernetes cluster (etcd, kube-apiserver,
# kube-controller-manager on loopback, the same flags as `cargo test` uses)
# in the background, for a person to try rstore with kubectl and helm:
#
#   tests/cluster/up.sh && . tests/cluster/.state/env
#   kubectl get ns; helm install rstore charts/rstore
#   tests/cluster/down.sh
#
# Builds what is missing first (the Kubernetes components into a cache
# outside the repository, see build.sh; the rstore binaries with cargo).
# Writes tests/cluster/.state/env: `export KUBECONFIG=...` and
# `export PATH=<folder with kubectl and helm>:$PATH`. Logs are in
# tests/cluster/.state/ (up.log, cluster/logs/).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)
state="$here/.state"
target="${CARGO_TARGET_DIR:-$root/target}/debug"

if [[ -f "$state/pid" ]] && kill -0 "$(cat "$state/pid")" 2>/dev/null && [[ -f "$state/env" ]]; then
  echo "up.sh: already running (pid $(cat "$state/pid")); . $state/env"
  exit 0
fi

mkdir -p "$state"
rm -rf "$state/cluster" "$state/env" "$state/pid"

# The Kubernetes components (cached; a no-op when built).
"$here/build.sh" >/dev/null
# The cluster runner, and the binaries the pods run.
(cd "$root" && cargo build -q -p rstore-e2e --bin rstore-test-cluster -p rstore-node -p rstore-operator)

setsid nohup "$target/rstore-test-cluster" --state-dir "$state" >"$state/up.log" 2>&1 </dev/null &
pid=$!
echo "$pid" >"$state/pid"

deadline=$((SECONDS + ${RSTORE_UP_TIMEOUT:-180}))
until [[ -f "$state/env" ]]; do
  if ! kill -0 "$pid" 2>/dev/null; then
    echo "up.sh: the cluster did not start; $state/up.log:" >&2
    tail -n 40 "$state/up.log" >&2
    rm -f "$state/pid"
    exit 1
  fi
  if ((SECONDS >= deadline)); then
    echo "up.sh: timed out waiting for the cluster; $state/up.log:" >&2
    tail -n 40 "$state/up.log" >&2
    "$here/down.sh" || true
    exit 1
  fi
  sleep 0.5
done

echo "up.sh: cluster running (pid $pid); use it with:"
echo "  . $state/env"
echo "  kubectl get --raw /readyz; kubectl get namespaces"
echo "stop it with: $here/down.sh"
