#!/usr/bin/env bash
# rstore-node vs Debian's redis-server, side by side, at equal durability.
#   N=200000       requests per redis-benchmark run
#   CLIENTS=50     concurrent clients
#   REPEAT=3       runs per cell, redis and rstore interleaved; the best is reported
#   RSS_KEYS=1000000  distinct keys (100-byte values) for the memory row; 0 skips it
#   SKIP_BUILD=1   use the existing target/release/rstore-node
#   KEEP_TMP=1     keep logs and data directories
set -euo pipefail

# shellcheck source=bench/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

N="${N:-200000}"
CLIENTS="${CLIENTS:-50}"
REPEAT="${REPEAT:-3}"
RSS_KEYS="${RSS_KEYS:-1000000}"

need redis-server; need redis-benchmark; need redis-cli; need python3
build_rstore

ROWS=()
run_durability() { # label redis-appendfsync rstore-fsync
    local label=$1 rfsync=$2 sfsync=$3
    local rport sport rpid spid
    rport=$(free_port); sport=$(free_port)
    log "durability $label: redis appendfsync $rfsync, rstore --fsync $sfsync"
    start_redis "redis-$rfsync" "$rport" --appendonly yes --appendfsync "$rfsync"
    rpid=$LAST_PID
    start_rstore "rstore_$label" "$sport" --role leader --fsync "$sfsync"
    spid=$LAST_PID
    local pipe test r s rs
    for pipe in 1 16; do
        for test in set get; do
            rs=$(pair_ops "$rport" "$sport" "$test" "$CLIENTS" "$N" "$pipe" "$REPEAT")
            read -r r s <<<"$rs"
            ROWS+=("$(printf '%-9s %-3s P=%-2s|%s|%s|%s' "$label" "${test^^}" "$pipe" "$r" "$s" "$(ratio "$s" "$r")")")
            log "  ${test^^} -P $pipe: redis $r  rstore $s"
        done
    done
    stop_pid "$rpid"; stop_pid "$spid"
}

run_durability everysec everysec interval:1000
run_durability always always always

echo
echo "rstore vs redis $(redis-server --version | awk '{print $3}'), $CLIENTS clients, -n $N, -r 1000000 -d 100, $(nproc) cores (client shares them)"
printf '%-22s %14s %14s %8s\n' "row" "redis ops/s" "rstore ops/s" "ratio"
for row in "${ROWS[@]}"; do
    IFS='|' read -r name r s q <<<"$row"
    printf '%-22s %14s %14s %8s\n' "$name" "$r" "$s" "$q"
done

if [[ "$RSS_KEYS" -gt 0 ]]; then
    log "memory: loading $RSS_KEYS distinct keys with 100-byte values into each"
    rport=$(free_port); sport=$(free_port)
    start_redis redis-rss "$rport" --appendonly yes --appendfsync everysec
    rpid=$LAST_PID
    start_rstore rstore_rss "$sport" --role leader --fsync interval:1000
    spid=$LAST_PID
    t0=$(date +%s.%N); load_keys "$rport" "$RSS_KEYS"; t1=$(date +%s.%N)
    load_keys "$sport" "$RSS_KEYS"; t2=$(date +%s.%N)
    sleep 3 # let background AOF rewrite / checkpoint settle
    rkib=$(rss_kib "$rpid"); skib=$(rss_kib "$spid")
    rused=$(info_field "$rport" memory used_memory)
    echo
    printf 'RSS, %d keys x 100 B     redis %8.1f MiB  rstore %8.1f MiB  ratio rstore/redis %s\n' \
        "$RSS_KEYS" "$(awk -v k="$rkib" 'BEGIN{print k/1024}')" "$(awk -v k="$skib" 'BEGIN{print k/1024}')" "$(ratio "$skib" "$rkib")"
    printf '  (redis used_memory %.1f MiB; load time via redis-cli --pipe: redis %.1fs, rstore %.1fs)\n' \
        "$(awk -v b="$rused" 'BEGIN{print b/1048576}')" "$(awk -v a="$t0" -v b="$t1" 'BEGIN{print b-a}')" "$(awk -v a="$t1" -v b="$t2" 'BEGIN{print b-a}')"
    log "dbsize after load: redis $(redis-cli -p "$rport" dbsize), rstore $(redis-cli -p "$sport" dbsize)"
    stop_pid "$rpid"; stop_pid "$spid"
fi
