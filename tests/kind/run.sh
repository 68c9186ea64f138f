#!/usr/bin/env bash
# kind end-to-end run: create a kind cluster, build the rstore image, load it
# into the cluster, install the operator with the Helm chart, and run the
# ignored kind scenarios of tests/tests/kind_e2e.rs against it: the same
# scenarios (tests/src/cluster/scenarios.rs) the real-API-server tests run.
#
# Needs: docker, kind, kubectl, helm, cargo. Environment:
#   CLUSTER   kind cluster name            [rstore-e2e]
#   IMAGE     image tag to build and load  [rstore:e2e]
#   KEEP=1    keep the cluster afterwards (default: delete it)
set -euo pipefail

cd "$(dirname "$0")/../.."
CLUSTER=${CLUSTER:-rstore-e2e}
IMAGE=${IMAGE:-rstore:e2e}
for tool in docker kind kubectl helm cargo; do  # docker: signals to pods
    command -v "$tool" >/dev/null || { echo "error: $tool is required" >&2; exit 2; }
done

cleanup() {
    status=$?
    if [ "$status" -ne 0 ]; then
        echo "== diagnostics"
        kubectl get rstore,statefulsets,pods,services,pvc -A -o wide || true
        kubectl describe rstore -A || true
        kubectl -n rstore-system logs deploy/rstore --tail=200 || true
        kubectl get events -A --sort-by=.lastTimestamp | tail -50 || true
    fi
    # The scenarios' Service proxies run kubectl port-forward children.
    pkill -f 'kubectl .*port-forward pod/' || true
    if [ "${KEEP:-0}" != 1 ]; then
        kind delete cluster --name "$CLUSTER" || true
    fi
    exit "$status"
}
trap cleanup EXIT

echo "== kind cluster $CLUSTER"
kind get clusters | grep -qx "$CLUSTER" || kind create cluster --name "$CLUSTER" --wait 120s
kubectl cluster-info --context "kind-$CLUSTER"

echo "== image $IMAGE"
DOCKER_BUILDKIT=1 docker build -t "$IMAGE" .
kind load docker-image "$IMAGE" --name "$CLUSTER"

echo "== helm install"
helm upgrade --install rstore charts/rstore \
    --namespace rstore-system --create-namespace \
    --set image.repository="${IMAGE%:*}" \
    --set image.tag="${IMAGE##*:}" \
    --set image.pullPolicy=Never \
    --set logLevel=debug \
    --wait --timeout 180s
kubectl -n rstore-system rollout status deploy/rstore --timeout 120s

echo "== scenarios"
cargo test -p rstore-e2e --test kind_e2e -- --ignored --test-threads 2
