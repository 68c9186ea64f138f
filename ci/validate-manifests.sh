#!/usr/bin/env bash
# Validate the Kubernetes manifests rstore ships:
#   1. crds/*.yaml and charts/rstore/crds/*.yaml, and everything
#      `rstore-operator render charts/rstore/examples/replicatedstore.yaml`
#      makes, against the Kubernetes OpenAPI schemas with
#      kubernetes-validate --strict (PyPI; ships the schemas, works offline);
#   2. the Helm chart with Helm's own linter through helm-sdkpy (PyPI; wraps
#      Helm's Go library, so no helm binary is needed). helm-sdkpy declares
#      Python >= 3.12 but works on 3.11, hence --ignore-requires-python. If
#      it cannot be installed or loaded here, this part is skipped with the
#      reason printed (the kubernetes-validate part still decides).
#
# Usage: ci/validate-manifests.sh PATH/TO/rstore-operator
# Idempotent: Python packages go to a private directory (reused when the
# pinned versions are already there); nothing else is installed.
set -euo pipefail

operator=${1:?usage: $0 PATH/TO/rstore-operator}
[ -x "$operator" ] || { echo "error: $operator is not an executable" >&2; exit 2; }
operator=$(cd "$(dirname "$operator")" && pwd)/$(basename "$operator")
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

KUBE_VERSION=${KUBE_VERSION:-1.34.0}
KV_PIN=kubernetes-validate==1.37.0
HELM_PIN=helm-sdkpy==0.1.32
pydir=${RSTORE_CI_PYDIR:-${XDG_CACHE_HOME:-$HOME/.cache}/rstore-ci/python}
python=${PYTHON:-python3}
mkdir -p "$pydir/kv" "$pydir/helm"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

pip_target() { # DIR PIN [extra pip args]
    local dir=$1 pin=$2
    shift 2
    if [ -f "$dir/.installed" ] && [ "$(cat "$dir/.installed")" = "$pin" ]; then
        return 0
    fi
    rm -rf "$dir" && mkdir -p "$dir"
    "$python" -m pip install --quiet --disable-pip-version-check --no-warn-script-location --root-user-action=ignore \
        --target "$dir" "$@" "$pin" && echo "$pin" > "$dir/.installed"
}

echo "== kubernetes-validate ($KV_PIN, Kubernetes $KUBE_VERSION, --strict)"
pip_target "$pydir/kv" "$KV_PIN"
kv() { PYTHONPATH="$pydir/kv" "$python" -m kubernetes_validate "$@"; }

"$operator" render charts/rstore/examples/replicatedstore.yaml > "$work/rendered.yaml"
files=(crds/*.yaml charts/rstore/crds/*.yaml "$work/rendered.yaml")
kv --strict --kubernetes-version "$KUBE_VERSION" "${files[@]}"
echo "kubernetes-validate: ${#files[@]} files passed"

echo "== helm lint (helm-sdkpy $HELM_PIN)"
if ! pip_target "$pydir/helm" "$HELM_PIN" --ignore-requires-python; then
    echo "SKIPPED helm lint: pip could not install $HELM_PIN (see the error above)"
    exit 0
fi
set +e
PYTHONPATH="$pydir/helm" "$python" - charts/rstore <<'PY'
import asyncio, sys
try:
    import helm_sdkpy
    config = helm_sdkpy.Configuration()
except Exception as err:  # library missing for this platform, cffi, ...
    print(f"SKIPPED helm lint: helm-sdkpy cannot load Helm's library here: {err}")
    sys.exit(3)
result = asyncio.run(helm_sdkpy.Lint(config).run(sys.argv[1]))
names = {1: "INFO", 2: "WARNING", 3: "ERROR"}
worst = 0
for message in result.get("Messages") or []:
    severity = message.get("Severity", 0)
    worst = max(worst, severity)
    print(f"[{names.get(severity, severity)}] {message.get('Path')}: {message.get('Err') or ''}")
# Like `helm lint --strict`: warnings fail too.
if worst >= 2:
    print(f"helm lint failed for {sys.argv[1]}")
    sys.exit(1)
print(f"helm lint: {sys.argv[1]} passed ({result.get('TotalChartsLinted')} chart)")
PY
status=$?
set -e
case $status in
    0) ;;
    3) exit 0 ;; # skipped, reason printed
    *) exit "$status" ;;
esac
