#!/usr/bin/env bash
# tools/compare.sh: measures herd against its ceiling and the asyncio baseline,
# for every target of the issue "Measure it and make it fast" it can cover.
#
#   tools/compare.sh [--rounds N] [--duration SECS] [--port P] [--threads T]
#
# Builds release, then for each load row and each round starts every contender
# in turn (the order rotates each round) on one port, runs the same flood_load
# command against it, and stops it: ceiling (benches/baseline/ceiling.rs), herd
# with its default logging of every line (debug), herd with traffic logging off
# (info), and the Python asyncio baseline (benches/baseline/asyncio_herd.py).
# Prints the per-round rates, their medians, and for each target the median
# of the per-round ratios (each round's runs are adjacent in time, so this
# pairs runs under the same background load) next to the ratio of the
# medians; the first decides whether the target is met. Then single runs: idle RSS per connection, propagation in the
# five-server herd (tools/probe-herd.conf moved to this script's ports),
# reconnect, and catch-up (in process). Every process it starts is stopped on
# exit, whatever happens. Default: 3 rounds of 3 s runs, about 4 minutes.
#
#   tools/compare.sh --metrics [--rounds N] [--duration SECS] ...
#
# instead compares herd --log-level info with and without the operator
# endpoint (--metrics, scraped every 100 ms by a loop that GETs /metrics) in
# one alternating run, and reports throughput with/without per load row.
#
#   tools/compare.sh --console [--rounds N] [--duration SECS] ...
#
# instead compares herd --log-level info --metrics with no console open and
# with one (GET /status.json once a second, as the page polls, plus a second
# poller 10 times a second to exaggerate) in one alternating run, and
# reports throughput with/without per load row.
#
#   tools/compare.sh --baseline REV [--rounds N] ...
#
# instead compares this tree's herd with the herd of commit REV (built in a
# temporary worktree), both with debug and with info logging, alternating,
# and reports this/REV per load row and log level.
#
#   tools/compare.sh --baseline-bin PATH [--rounds N] ...
#
# the same, against a herd binary already built (PATH), e.g. one kept from
# before a change, without building a worktree.
set -euo pipefail
cd "$(dirname "$0")/.."

ROUNDS=3
DURATION=3
WARMUP=0.5
PORT=12100
THREADS=1
METRICS_MODE=
CONSOLE_MODE=
BASELINE=
BASE_BIN=
while [ $# -gt 0 ]; do
    case "$1" in
        --rounds) ROUNDS=$2; shift 2 ;;
        --duration) DURATION=$2; shift 2 ;;
        --port) PORT=$2; shift 2 ;;
        --threads) THREADS=$2; shift 2 ;;
        --metrics) METRICS_MODE=1; shift ;;
        --console) CONSOLE_MODE=1; shift ;;
        --baseline) BASELINE=$2; shift 2 ;;
        --baseline-bin) BASE_BIN=$2; BASELINE=$2; shift 2 ;;
        -h|--help) sed -n '2,40p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "compare.sh: unknown argument $1 (try --help)" >&2; exit 2 ;;
    esac
done

. tools/lib-compare.sh
build_release
work_dir compare

if [ -n "$BASELINE" ] && [ -z "$BASE_BIN" ]; then
    echo "building $BASELINE in a worktree..." >&2
    git worktree add -q --detach "$WORK/base" "$BASELINE"
    CARGO_TARGET_DIR=$PWD/target/baseline cargo build --release --bin herd -q --manifest-path "$WORK/base/Cargo.toml"
    BASE_BIN=$PWD/target/baseline/release/herd
    git worktree remove --force "$WORK/base"
fi

MPORT=$((PORT + 50))
SCRAPER=
# Scrapes /metrics on $MPORT every 100 ms, one line in $WORK/scrapes per
# whole answer, until killed.
scraper() {
    while :; do
        if exec 3<>"/dev/tcp/127.0.0.1/$MPORT"; then
            printf 'GET /metrics HTTP/1.1\r\nHost: compare\r\n\r\n' >&3
            if grep -q '^process_start_time_seconds ' <&3; then echo ok >> "$WORK/scrapes"; fi
            exec 3<&-
        fi 2>/dev/null
        sleep 0.1
    done
}

POLLERS=()
# Polls /status.json on $MPORT every $1 seconds, one line in $WORK/polls per
# whole answer, until killed: what an open console does (at 1 s).
poller() {
    while :; do
        if exec 3<>"/dev/tcp/127.0.0.1/$MPORT"; then
            printf 'GET /status.json HTTP/1.1\r\nHost: compare\r\n\r\n' >&3
            if grep -q '"servers"' <&3; then echo ok >> "$WORK/polls"; fi
            exec 3<&-
        fi 2>/dev/null
        sleep "$1"
    done
}

SERVER=
# start KIND: starts contender KIND on $PORT, sets SERVER to its pid.
start() {
    rm -rf "$WORK/logs"
    case "$1" in
        base) "$BASE_BIN" Bench --config "$WORK/bench.conf" --log-dir "$WORK/logs" --log-level debug & ;;
        base-info) "$BASE_BIN" Bench --config "$WORK/bench.conf" --log-dir "$WORK/logs" --log-level info & ;;
        herd-metrics|herd-endpoint|herd-console) "$BIN/herd" Bench --config "$WORK/bench.conf" --log-dir "$WORK/logs" --log-level info --metrics "127.0.0.1:$MPORT" & ;;
        ceiling) "$BIN/ceiling" "127.0.0.1:$PORT" 2>/dev/null & ;;
        herd) "$BIN/herd" Bench --config "$WORK/bench.conf" --log-dir "$WORK/logs" --log-level debug & ;;
        herd-info) "$BIN/herd" Bench --config "$WORK/bench.conf" --log-dir "$WORK/logs" --log-level info & ;;
        asyncio) python3 benches/baseline/asyncio_herd.py --name Bench --port "$PORT" --log-dir "$WORK/logs" & ;;
    esac
    SERVER=$!
    PIDS+=("$SERVER")
    wait_port "$PORT"
    if [ "$1" = herd-metrics ]; then
        scraper &
        SCRAPER=$!
        PIDS+=("$SCRAPER")
    fi
    if [ "$1" = herd-console ]; then
        wait_port "$MPORT"
        for every in 1 0.1; do
            poller "$every" &
            POLLERS+=("$!")
            PIDS+=("$!")
        done
    fi
}

stop() {
    for p in "${POLLERS[@]:-}"; do
        if [ -n "$p" ]; then kill -TERM "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; fi
    done
    POLLERS=()
    if [ -n "$SCRAPER" ]; then
        kill -TERM "$SCRAPER" 2>/dev/null || true
        wait "$SCRAPER" 2>/dev/null || true
        SCRAPER=
    fi
    kill -TERM "$SERVER" 2>/dev/null || true
    wait "$SERVER" 2>/dev/null || true
    SERVER=
    rm -rf "$WORK/logs"
}

# meets VALUE OP LIMIT -> yes/NO
meets() { awk -v v="$1" -v l="$3" -v op="$2" 'BEGIN { ok = (op == ">=") ? (v >= l) : (v <= l); print (ok ? "yes" : "NO") }'; }

printf 'server Bench 127.0.0.1:%s\n' "$PORT" > "$WORK/bench.conf"

LOAD=(--duration "$DURATION" --warmup "$WARMUP" --threads "$THREADS" --addr "127.0.0.1:$PORT" --quiet)
ROWS=(rr50 pipe16 rr1000 churn)
declare -A ARGS=(
    [rr50]="--conns 50 --inflight 1"
    [pipe16]="--conns 50 --inflight 16"
    [rr1000]="--conns 1000 --inflight 1"
    [churn]="--mode churn --conns 50"
)
declare -A WHO=(
    [rr50]="ceiling herd herd-info asyncio"
    [pipe16]="ceiling herd herd-info"
    [rr1000]="ceiling herd herd-info"
    [churn]="ceiling herd herd-info"
)
if [ -n "$METRICS_MODE" ]; then
    ROWS=(rr50 pipe16 rr1000)
    for row in "${ROWS[@]}"; do WHO[$row]="herd-info herd-metrics"; done
fi
if [ -n "$CONSOLE_MODE" ]; then
    ROWS=(rr50 pipe16 rr1000)
    for row in "${ROWS[@]}"; do WHO[$row]="herd-endpoint herd-console"; done
fi
if [ -n "$BASELINE" ]; then
    for row in "${ROWS[@]}"; do WHO[$row]="herd base herd-info base-info"; done
fi
declare -A RATES=()
declare -A ERRS=()

START=$(date +%s)
for round in $(seq "$ROUNDS"); do
    for row in "${ROWS[@]}"; do
        read -r -a who <<< "${WHO[$row]}"
        n=${#who[@]}
        for i in $(seq 0 $((n - 1))); do
            kind=${who[$(((i + round - 1) % n))]}
            start "$kind"
            # shellcheck disable=SC2086
            out=$("$BIN/flood_load" "${LOAD[@]}" ${ARGS[$row]}) || true
            stop
            rate=$(field rate <<< "$out")
            errors=$(field errors <<< "$out")
            RATES[$row,$kind]="${RATES[$row,$kind]:-} ${rate:-0}"
            ERRS[$row,$kind]=$(( ${ERRS[$row,$kind]:-0} + ${errors:-1} ))
            echo "round $round $row $kind: ${rate:-failed}/s errors ${errors:-?}" >&2
        done
    done
done

# pair_row ROW A B: median of A and of B, and the median of per-round A/B.
pair_row() {
    local xs ys rounds="" i
    read -r -a xs <<< "${RATES[$1,$2]:-}"
    read -r -a ys <<< "${RATES[$1,$3]:-}"
    for i in "${!xs[@]}"; do rounds+=" $(ratio "${xs[$i]}" "${ys[$i]:-0}")"; done
    printf '%-26s %12.0f %12.0f %8s   (%s)\n' "$1 $2/$3" "$(median <<< "${RATES[$1,$3]}")" \
        "$(median <<< "${RATES[$1,$2]}")" "$(median <<< "$rounds")" "${rounds# }"
}

if [ -n "$BASELINE" ]; then
    ELAPSED=$(( $(date +%s) - START ))
    echo
    echo "herd compare --baseline $BASELINE: $(date -u '+%Y-%m-%d %H:%M:%S UTC'); $(nproc) CPUs, load average $(cut -d' ' -f1-3 /proc/loadavg)"
    echo "this tree at $(git rev-parse --short HEAD 2>/dev/null || echo '?') against $(git rev-parse --short "$BASELINE" 2>/dev/null || echo "$BASELINE"); $ROUNDS rounds, ${DURATION} s per run (+${WARMUP} s warm-up), alternating; took ${ELAPSED} s"
    echo
    printf '%-26s %12s %12s %8s   %s\n' "load (replies/s, median)" "baseline" "this" "ratio" "(per-round ratios this/baseline)"
    for row in "${ROWS[@]}"; do
        pair_row "$row" herd base
        pair_row "$row" herd-info base-info
    done
    exit 0
fi

if [ -n "$CONSOLE_MODE" ]; then
    ELAPSED=$(( $(date +%s) - START ))
    echo
    echo "herd compare --console: $(date -u '+%Y-%m-%d %H:%M:%S UTC'); $(nproc) CPUs, load average $(cut -d' ' -f1-3 /proc/loadavg)"
    echo "commit $(git rev-parse --short HEAD 2>/dev/null || echo '?'); $ROUNDS rounds, ${DURATION} s per run (+${WARMUP} s warm-up), alternating; $(wc -l < "$WORK/polls" 2>/dev/null || echo 0) polls of /status.json answered; took ${ELAPSED} s"
    echo
    printf '%-26s %12s %12s %8s   %s\n' "load (replies/s, median)" "no console" "console" "ratio" "(per-round ratios console/none)"
    for row in "${ROWS[@]}"; do
        pair_row "$row" herd-console herd-endpoint
    done
    exit 0
fi

if [ -n "$METRICS_MODE" ]; then
    ELAPSED=$(( $(date +%s) - START ))
    echo
    echo "herd compare --metrics: $(date -u '+%Y-%m-%d %H:%M:%S UTC'); $(nproc) CPUs, load average $(cut -d' ' -f1-3 /proc/loadavg)"
    echo "commit $(git rev-parse --short HEAD 2>/dev/null || echo '?'); $ROUNDS rounds, ${DURATION} s per run (+${WARMUP} s warm-up), alternating; $(wc -l < "$WORK/scrapes" 2>/dev/null || echo 0) scrapes of /metrics answered; took ${ELAPSED} s"
    echo
    printf '%-26s %12s %12s %8s   %s\n' "load (replies/s, median)" "without" "with" "ratio" "(per-round ratios with/without)"
    for row in "${ROWS[@]}"; do
        read -r -a xs <<< "${RATES[$row,herd-metrics]:-}"
        read -r -a ys <<< "${RATES[$row,herd-info]:-}"
        rounds=""
        for i in "${!xs[@]}"; do rounds+=" $(ratio "${xs[$i]}" "${ys[$i]:-0}")"; done
        printf '%-26s %12.0f %12.0f %8s   (%s)\n' "$row" "$(median <<< "${RATES[$row,herd-info]}")" \
            "$(median <<< "${RATES[$row,herd-metrics]}")" "$(median <<< "$rounds")" "${rounds# }"
    done
    exit 0
fi

# Single runs of the herd alone.
start herd-info
out=$("$BIN/flood_load" --mode idle --addr "127.0.0.1:$PORT" --server-pid "$SERVER" --quiet) || true
stop
IDLE=$out

P0=$((PORT + 10))
sed -e "s/127.0.0.1:12000/127.0.0.1:$P0/; s/127.0.0.1:12001/127.0.0.1:$((P0 + 1))/; s/127.0.0.1:12002/127.0.0.1:$((P0 + 2))/" \
    -e "s/127.0.0.1:12003/127.0.0.1:$((P0 + 3))/; s/127.0.0.1:12004/127.0.0.1:$((P0 + 4))/; s/127.0.0.1:12010/127.0.0.1:$((P0 + 10))/" \
    tools/probe-herd.conf > "$WORK/probe-herd.conf"
PROBE_ARGS=(--addr "127.0.0.1:$((P0 + 1))" --probe "127.0.0.1:$((P0 + 10))" --quiet)
declare -A PROP=()
for level in debug info; do
    rm -rf "$WORK/herdlogs"
    "$BIN/herd" Goloman Hands Holiday Welsh Wilkes --config "$WORK/probe-herd.conf" --log-dir "$WORK/herdlogs" --log-level "$level" &
    SERVER=$!
    PIDS+=("$SERVER")
    wait_port $((P0 + 1))
    PROP[$level]=$("$BIN/flood_load" --mode propagation --duration "$DURATION" --warmup "$WARMUP" "${PROBE_ARGS[@]}") || true
    if [ "$level" = info ]; then
        RECONNECT=$("$BIN/flood_load" --mode reconnect --rounds 10 --observe-addr "127.0.0.1:$((P0 + 3))" "${PROBE_ARGS[@]}") || true
    fi
    kill -TERM "$SERVER" 2>/dev/null || true
    wait "$SERVER" 2>/dev/null || true
    rm -rf "$WORK/herdlogs"
done
CATCHUP=$("$BIN/flood_load" --mode catchup --clients 100000 --quiet) || true
ELAPSED=$(( $(date +%s) - START ))

# The report.
echo
echo "herd compare: $(date -u '+%Y-%m-%d %H:%M:%S UTC'); $(nproc) CPUs ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')), Linux $(uname -r), load average $(cut -d' ' -f1-3 /proc/loadavg)"
echo "commit $(git rev-parse --short HEAD 2>/dev/null || echo '?'); $ROUNDS rounds, ${DURATION} s per run (+${WARMUP} s warm-up), $THREADS load thread(s), contenders alternating; took ${ELAPSED} s"
echo
printf '%-26s %-10s %12s %12s %12s %12s   %s\n' "load (replies/s, median)" "" ceiling "herd" "herd-info" asyncio "per-round rates"
for row in "${ROWS[@]}"; do
    case $row in
        rr50) label="rr 50 conns x 1" ;;
        pipe16) label="pipelined 50 x 16" ;;
        rr1000) label="rr 1000 conns x 1" ;;
        churn) label="churn (conn/s), 50 at once" ;;
    esac
    line=$(printf '%-26s %-10s' "$label" "")
    rounds=""
    for kind in ceiling herd herd-info asyncio; do
        if [ -n "${RATES[$row,$kind]:-}" ]; then
            m=$(median <<< "${RATES[$row,$kind]}")
            declare "MED_${row}_${kind//-/_}=$m"
            line+=$(printf ' %12.0f' "$m")
            rounds+=" $kind:${RATES[$row,$kind]# }"
            [ "${ERRS[$row,$kind]}" -gt 0 ] && rounds+=" (${ERRS[$row,$kind]} errors)"
        else
            line+=$(printf ' %12s' "-")
        fi
    done
    echo "$line  $rounds"
done

m() { local v="MED_$1_${2//-/_}"; echo "${!v:-0}"; }
echo
printf '%-46s %10s %10s %6s   %s\n' "target" "measured" "wanted" "met" "(ratio of medians; per-round ratios)"
target() { printf '%-46s %10s %10s %6s   %s\n' "$1" "$2" "$3 $4" "$(meets "$2" "$3" "$4")" "${5:-}"; }
# rtarget LABEL ROW A B OP LIMIT: a ratio target between contenders A and B.
# The measure is the median over rounds of A/B within each round: a round's
# runs are minutes closer in time than the rounds' medians, so the pairs share
# the machine's background load.
rtarget() {
    local rounds="" paired xs ys
    read -r -a xs <<< "${RATES[$2,$3]:-}"
    read -r -a ys <<< "${RATES[$2,$4]:-}"
    for i in "${!xs[@]}"; do rounds+=" $(ratio "${xs[$i]}" "${ys[$i]:-0}")"; done
    paired=$(median <<< "$rounds" | awk '{ printf "%.2f", $1 }')
    target "$1" "$paired" "$5" "$6" "($(ratio "$(m "$2" "$3")" "$(m "$2" "$4")");$rounds)"
}
rtarget "rr 50x1: herd / ceiling" rr50 herd ceiling ">=" 0.9
rtarget "rr 50x1: herd / asyncio" rr50 herd asyncio ">=" 5
rtarget "pipelined 50x16, logging every line / ceiling" pipe16 herd ceiling ">=" 0.3
rtarget "pipelined 50x16, --log-level info / ceiling" pipe16 herd-info ceiling ">=" 0.6
rtarget "rr 1000x1: herd / ceiling" rr1000 herd ceiling ">=" 0.9
rtarget "churn: herd / ceiling" churn herd ceiling ">=" 0.9
echo "  not targets, with traffic logging off (--log-level info):"
rtarget "  rr 50x1: herd-info / ceiling" rr50 herd-info ceiling ">=" 0.9
rtarget "  rr 50x1: herd-info / asyncio" rr50 herd-info asyncio ">=" 5
rtarget "  rr 1000x1: herd-info / ceiling" rr1000 herd-info ceiling ">=" 0.9
rtarget "  churn: herd-info / ceiling" churn herd-info ceiling ">=" 0.9
b1=$(field bytes_per_conn_first <<< "$IDLE"); b2=$(field bytes_per_conn_second <<< "$IDLE")
n=$(field conns <<< "$IDLE")
target "idle: RSS bytes/conn, first half of ${n:-?}" "${b1:--}" "<=" 300
target "idle: RSS bytes/conn, second half" "${b2:--}" "<=" 300
for level in debug info; do
    p50=$(field p50_us <<< "${PROP[$level]}"); p99=$(field p99_us <<< "${PROP[$level]}")
    target "propagation Hands->Welsh p50 us ($level)" "${p50:--}" "<=" 200
    target "propagation Hands->Welsh p99 us ($level)" "${p99:--}" "<=" 1000
done
target "catch-up of 100,000 clients, ms" "$(field all_ms <<< "$CATCHUP")" "<=" 1000
target "reconnect after restart, median ms" "$(field p50_ms <<< "$RECONNECT")" "<=" 300
echo
echo "summaries:"
for s in "$IDLE" "${PROP[debug]}" "${PROP[info]}" "$RECONNECT" "$CATCHUP"; do
    grep '^summary' <<< "$s" | tail -1 | sed 's/^/  /' || echo "  (a run failed)"
done
