#!/usr/bin/env bash
# Server CPU per operation: rstore-node vs Debian's redis-server (and, with
# BASELINE_BIN, an older rstore-node build for before/after), side by side
# in one run, at equal durability (redis appendfsync everysec, rstore
# --fsync interval:1000). CPU time is the server process's utime + stime
# from /proc/<pid>/stat around one redis-benchmark run: far steadier than
# ops/s on a shared 2-core machine, since it does not count waiting.
#   N=200000      requests per run (the figure is CPU seconds per N)
#   CLIENTS=50    concurrent clients
#   REPEAT=3      runs per cell, servers interleaved; the median counts
#   BASELINE_BIN=/path/to/old/rstore-node   adds a "before" column
#   SKIP_BUILD=1  use the existing target/release/rstore-node
#   ROWS="set:1 get:16"   only these rows (test:pipeline); default all four
set -euo pipefail

# shellcheck source=bench/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

N="${N:-200000}"
CLIENTS="${CLIENTS:-50}"
REPEAT="${REPEAT:-3}"
BASELINE_BIN="${BASELINE_BIN:-}"
ROWS="${ROWS:-set:1 set:16 get:1 get:16}"

need redis-server; need redis-benchmark; need redis-cli; need python3
build_rstore

TICKS=$(getconf CLK_TCK)
# cpu_ticks PID: utime + stime (fields 14 and 15; the name field has no spaces here)
cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }

# measure PORT PID TEST PIPE -> "ops/s cpu-seconds"
measure() {
    local port=$1 pid=$2 test=$3 pipe=$4 before after ops
    before=$(cpu_ticks "$pid")
    ops=$(bench_ops "$port" "$test" "$CLIENTS" "$N" "$pipe")
    after=$(cpu_ticks "$pid")
    echo "$ops $(awk -v a="$after" -v b="$before" -v t="$TICKS" 'BEGIN { printf "%.2f", (a - b) / t }')"
}

median() { sort -g | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }

names=(redis rstore)
rport=$(free_port); sport=$(free_port)
start_redis redis "$rport" --appendonly yes --appendfsync everysec
pids=("$LAST_PID"); ports=("$rport")
start_rstore rstore_now "$sport" --role leader --fsync interval:1000
pids+=("$LAST_PID"); ports+=("$sport")
if [[ -n "$BASELINE_BIN" ]]; then
    bport=$(free_port)
    RSTORE_BIN="$BASELINE_BIN" start_rstore rstore_before "$bport" --role leader --fsync interval:1000
    pids+=("$LAST_PID"); ports+=("$bport"); names+=(before)
fi

printf '\n%-10s' "row"
for n in "${names[@]}"; do printf '| %-8s ops/s  cpu-s ' "$n"; done
printf '| cpu ratio rstore/redis | ops ratio rstore/redis'
[[ -n "$BASELINE_BIN" ]] && printf ' | cpu rstore/before'
printf '\n'
for row in $ROWS; do
    test=${row%%:*} pipe=${row##*:}
    declare -A ops=() cpu=()
    for ((r = 0; r < REPEAT; r++)); do
        for i in "${!names[@]}"; do
            read -r o c < <(measure "${ports[$i]}" "${pids[$i]}" "$test" "$pipe")
            ops[$i]+="$o "; cpu[$i]+="$c "
        done
    done
    printf '%-10s' "${test^^} P=$pipe"
    declare -a mo=() mc=()
    for i in "${!names[@]}"; do
        mo[$i]=$(tr ' ' '\n' <<<"${ops[$i]}" | grep . | median)
        mc[$i]=$(tr ' ' '\n' <<<"${cpu[$i]}" | grep . | median)
        printf '| %14s %6s ' "${mo[$i]}" "${mc[$i]}"
    done
    printf '| %22s | %22s' "$(ratio "${mc[1]}" "${mc[0]}")" "$(ratio "${mo[1]}" "${mo[0]}")"
    [[ -n "$BASELINE_BIN" ]] && printf ' | %s' "$(ratio "${mc[1]}" "${mc[2]}")"
    printf '\n'
    unset ops cpu
done
echo "(cpu-s: server CPU seconds per $N requests, median of $REPEAT; -c $CLIENTS -r 1000000 -d 100)"
