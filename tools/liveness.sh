#!/usr/bin/env bash
# tools/liveness.sh: the figures of README's "Liveness and reloads".
#
#   tools/liveness.sh [--rounds N] [--ab-rounds M]
#
# 1. SIGSTOP of a neighbour, N rounds: how long until its link is declared
#    down (tests/liveness.rs with HERD_ROUNDS=N, link timeout 1 s).
# 2. A host's link taken down in a network namespace, N rounds: detection,
#    and convergence after the heal (tests/hosts.rs; needs root).
# 3. What heartbeats cost: propagation Hands -> Welsh at 20,000 updates/s in
#    the five-server herd (as tools/compare.sh runs it) with the default
#    --link-timeout 3s against --link-timeout 1h (heartbeats every 20 min,
#    i.e. none), M alternating rounds each.
# Every process it starts is stopped on exit. Defaults: N=10, M=3.
set -euo pipefail
cd "$(dirname "$0")/.."

ROUNDS=10
AB=3
while [ $# -gt 0 ]; do
    case "$1" in
        --rounds) ROUNDS=$2; shift 2 ;;
        --ab-rounds) AB=$2; shift 2 ;;
        -h|--help) sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "liveness.sh: unknown argument $1 (try --help)" >&2; exit 2 ;;
    esac
done

export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$PWD/target}
cargo build --release --bins -q
HERD_ROUNDS=$ROUNDS cargo test --release -q --test liveness -- --nocapture a_stopped 2>&1 | grep '^liveness:' || true
HERD_ROUNDS=$ROUNDS cargo test --release -q --test hosts -- --nocapture 2>&1 | grep -E '^hosts:|skipped' || true

BIN=$CARGO_TARGET_DIR/release
WORK=$(mktemp -d /tmp/herd-liveness.XXXXXX)
SERVER=
cleanup() {
    if [ -n "$SERVER" ]; then kill -TERM "$SERVER" 2>/dev/null || true; wait "$SERVER" 2>/dev/null || true; fi
    rm -rf "$WORK"
}
trap cleanup EXIT
P0=12310
sed -e "s/127.0.0.1:1200\([0-4]\)/127.0.0.1:$((P0 / 10))\1/; s/127.0.0.1:12010/127.0.0.1:$((P0 + 10))/" \
    tools/probe-herd.conf > "$WORK/probe-herd.conf"
declare -A P50 P99
for round in $(seq "$AB"); do
    for timeout in 3s 1h; do
        rm -rf "$WORK/logs"
        "$BIN/herd" Goloman Hands Holiday Welsh Wilkes --config "$WORK/probe-herd.conf" \
            --log-dir "$WORK/logs" --log-level info --link-timeout "$timeout" 2>/dev/null &
        SERVER=$!
        for _ in $(seq 200); do (exec 3<>"/dev/tcp/127.0.0.1/$((P0 + 1))") 2>/dev/null && break; sleep 0.05; done
        out=$("$BIN/flood_load" --mode propagation --duration 3 --warmup 0.5 --quiet \
            --addr "127.0.0.1:$((P0 + 1))" --probe "127.0.0.1:$((P0 + 10))") || true
        kill -TERM "$SERVER"; wait "$SERVER" 2>/dev/null || true; SERVER=
        s=$(grep '^summary' <<< "$out" | tail -1)
        p50=$(tr ' ' '\n' <<< "$s" | sed -n 's/^p50_us=//p'); p99=$(tr ' ' '\n' <<< "$s" | sed -n 's/^p99_us=//p')
        P50[$timeout]="${P50[$timeout]:-} $p50"; P99[$timeout]="${P99[$timeout]:-} $p99"
        echo "round $round --link-timeout $timeout: p50 ${p50:-?} us, p99 ${p99:-?} us" >&2
    done
done
median() { tr ' ' '\n' | grep -v '^$' | sort -g | awk '{v[NR]=$1} END {if (NR==0) print "-"; else if (NR%2) print v[(NR+1)/2]; else print (v[NR/2]+v[NR/2+1])/2}'; }
for timeout in 3s 1h; do
    echo "propagation Hands->Welsh at 20000/s, --link-timeout $timeout: p50 $(median <<< "${P50[$timeout]}") us, p99 $(median <<< "${P99[$timeout]}") us (medians of $AB rounds:${P50[$timeout]} /${P99[$timeout]})"
done
