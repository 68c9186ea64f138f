#!/usr/bin/env bash
# Stop the cluster that tests/cluster/up.sh started, and everything it
# started (its janitor stops the components even if the runner is gone).
# Logs stay in tests/cluster/.state/ until the next up.sh.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
state="$here/.state"

if [[ ! -f "$state/pid" ]]; then
  echo "down.sh: no cluster running (no $state/pid)"
  rm -f "$state/env"
  exit 0
fi
pid=$(cat "$state/pid")
if kill -0 "$pid" 2>/dev/null; then
  kill -TERM "$pid"
  for _ in $(seq 300); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  if kill -0 "$pid" 2>/dev/null; then
    echo "down.sh: pid $pid still running after 30 s: SIGKILL (its janitor stops the components)" >&2
    kill -KILL "$pid" 2>/dev/null || true
    sleep 6
  fi
fi
rm -f "$state/pid" "$state/env"
echo "down.sh: stopped (logs in $state)"
