#!/usr/bin/env bash
# tools/fronts-compare.sh: what herd's HTTP and WebSocket fronts cost
# against its line protocol (SPEC §14), measured in one run.
#
#   tools/fronts-compare.sh [--rounds N] [--duration SECS] [--port P]
#                           [--conns C] [--inflight W] [--idle-conns N]
#                           [--log-level LEVEL]
#
# Builds release once, then in every round, the order of the variants
# rotating from round to round:
#
#   load   one server (`Bench`, client port P, http port P+1), started once
#          per round; flood_load C x W (default 50 x 1) flat out three
#          times: IAMATs on the line port (`--mode rr`), the same IAMATs as
#          OsmAnd reports over keep-alive HTTP/1.1 (`--mode http`: GET
#          /?id=..&lat=..&lon=..&timestamp=.. with a phone's headers) and as
#          WebSocket messages (`--mode ws`, one line each, upgraded before
#          the warm-up): the same server in the same minute;
#   idle   a fresh Bench per kind; N idle connections (--idle-conns, default
#          5000): line (client port), http (each with one OsmAnd report
#          answered, kept alive) and ws (each upgraded); server VmRSS per
#          connection (flood_load --mode idle --idle-kind KIND --server-pid).
#
# Prints every round's value, the medians, and for each figure the median
# of the per-round ratios (http / line, ws / line; a round's runs are
# adjacent in time, so they share the machine's background load) or
# differences (idle bytes), next to the ratio of the medians; then the
# goals: http >= 0.7 x line, ws >= 0.8 x line, idle http and ws <= 1 KiB
# per connection more than idle line. Every process it starts is stopped
# on exit. Defaults: 7 rounds of 3 s runs at --log-level info (no traffic
# log lines), about 4 minutes.
set -euo pipefail
cd "$(dirname "$0")/.."

ROUNDS=7
DURATION=3
WARMUP=0.5
PORT=12700
CONNS=50
INFLIGHT=1
IDLE_CONNS=5000
LEVEL=info
while [ $# -gt 0 ]; do
    case "$1" in
        --rounds) ROUNDS=$2; shift 2 ;;
        --duration) DURATION=$2; shift 2 ;;
        --port) PORT=$2; shift 2 ;;
        --conns) CONNS=$2; shift 2 ;;
        --inflight) INFLIGHT=$2; shift 2 ;;
        --idle-conns) IDLE_CONNS=$2; shift 2 ;;
        --log-level) LEVEL=$2; shift 2 ;;
        -h|--help) sed -n '2,32p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "fronts-compare.sh: unknown argument $1 (try --help)" >&2; exit 2 ;;
    esac
done

. tools/lib-compare.sh
build_release
work_dir fronts-compare

ports_free $PORT $((PORT + 1))


cat > "$WORK/bench.conf" <<EOF
server Bench 127.0.0.1:$PORT http 127.0.0.1:$((PORT + 1))
EOF

SERVER=
start_bench() {
    rm -rf "$WORK/logs" "$WORK/state"
    "$BIN/herd" Bench --config "$WORK/bench.conf" --log-dir "$WORK/logs" --state-dir "$WORK/state" \
        --log-level "$LEVEL" 2> "$WORK/bench.err" &
    SERVER=$!
    PIDS+=("$SERVER")
    wait_port "$PORT"
    wait_port $((PORT + 1))
}

stop_server() {
    kill -TERM "$SERVER" 2>/dev/null || true
    wait "$SERVER" 2>/dev/null || true
    SERVER=
    rm -rf "$WORK/logs" "$WORK/state"
}

declare -A V=()    # V[row,variant]: the per-round values
declare -A ERRS=()

# record ROW VARIANT VALUE ERRORS
record() {
    V[$1,$2]="${V[$1,$2]:-} ${3:-0}"
    ERRS[$1,$2]=$(( ${ERRS[$1,$2]:-0} + ${4:-1} ))
}

# load VARIANT ARGS...: flood_load against Bench's line or http port.
load() {
    local variant=$1
    shift
    case $variant in
        line) "$BIN/flood_load" --mode rr --addr "127.0.0.1:$PORT" "$@" || true ;;
        http) "$BIN/flood_load" --mode http --addr "127.0.0.1:$((PORT + 1))" "$@" || true ;;
        ws) "$BIN/flood_load" --mode ws --addr "127.0.0.1:$((PORT + 1))" "$@" || true ;;
    esac
}

# The variants' order in round $1: rotated each round.
order() {
    case $(( $1 % 3 )) in
        1) echo "line http ws" ;;
        2) echo "http ws line" ;;
        0) echo "ws line http" ;;
    esac
}

LOAD=(--duration "$DURATION" --warmup "$WARMUP" --conns "$CONNS" --inflight "$INFLIGHT" --quiet)
START=$(date +%s)
for round in $(seq "$ROUNDS"); do
    start_bench
    for variant in $(order "$round"); do
        out=$(load "$variant" "${LOAD[@]}")
        rate=$(field rate <<< "$out")
        record rate "$variant" "$rate" "$(field errors <<< "$out")"
        record p50 "$variant" "$(field p50_us <<< "$out")" 0
        record p99 "$variant" "$(field p99_us <<< "$out")" 0
        echo "round $round $variant: ${rate:-failed}/s, p50 $(field p50_us <<< "$out") us, errors $(field errors <<< "$out")" >&2
    done
    stop_server

    for variant in $(order "$round"); do
        start_bench
        if [ "$variant" = line ]; then addr=127.0.0.1:$PORT; else addr=127.0.0.1:$((PORT + 1)); fi
        out=$("$BIN/flood_load" --mode idle --idle-kind "$variant" --addr "$addr" \
            --conns "$IDLE_CONNS" --server-pid "$SERVER" --quiet) || true
        stop_server
        record idle "$variant" "$(field bytes_per_conn <<< "$out")" "$(field errors <<< "$out")"
        record idle_first "$variant" "$(field bytes_per_conn_first <<< "$out")" 0
        record idle_second "$variant" "$(field bytes_per_conn_second <<< "$out")" 0
        echo "round $round idle $variant: $(field bytes_per_conn <<< "$out") B/conn" >&2
    done
done
ELAPSED=$(( $(date +%s) - START ))

declare -A PAIRED=()
# row LABEL KEY VARIANT: medians of line and VARIANT, the median of the
# per-round VARIANT/line ratios, the ratio of the medians, every round's values.
row() {
    local xs ys rounds="" i
    read -r -a xs <<< "${V[$2,$3]:-}"
    read -r -a ys <<< "${V[$2,line]:-}"
    for i in "${!xs[@]}"; do rounds+=" $(ratio "${xs[$i]}" "${ys[$i]:-0}")"; done
    PAIRED[$2,$3]=$(median <<< "$rounds" | awk '{ printf "%.2f", $1 }')
    local errs=""
    if [ "$(( ${ERRS[$2,line]:-0} + ${ERRS[$2,$3]:-0} ))" -gt 0 ]; then
        errs="  errors: line ${ERRS[$2,line]:-0}, $3 ${ERRS[$2,$3]:-0}"
    fi
    printf '%-34s %10.1f %10.1f %6s %6s   line:%s  %s:%s  ratios:%s%s\n' "$1" \
        "$(median <<< "${V[$2,line]:-}")" "$(median <<< "${V[$2,$3]:-}")" \
        "${PAIRED[$2,$3]}" \
        "$(ratio "$(median <<< "${V[$2,$3]:-}")" "$(median <<< "${V[$2,line]:-}")")" \
        "${V[$2,line]:-}" "$3" "${V[$2,$3]:-}" "$rounds" "$errs"
}

declare -A DIFF=()
# diff_row LABEL VARIANT: VARIANT - line idle bytes per connection, per round.
diff_row() {
    local xs ys diffs="" i
    read -r -a xs <<< "${V[idle,$2]:-}"
    read -r -a ys <<< "${V[idle,line]:-}"
    for i in "${!xs[@]}"; do diffs+=" $(( ${xs[$i]:-0} - ${ys[$i]:-0} ))"; done
    DIFF[$2]=$(median <<< "$diffs")
    printf '%-34s %10s %10s %6s %6s   %s-line:%s\n' "$1" "" "${DIFF[$2]}" "" "" "$2" "$diffs"
}

echo
echo "herd fronts-compare: $(date -u '+%Y-%m-%d %H:%M:%S UTC'); $(nproc) CPUs ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')), Linux $(uname -r), load average $(cut -d' ' -f1-3 /proc/loadavg)"
echo "commit $(git rev-parse --short HEAD 2>/dev/null || echo '?'); $ROUNDS rounds, ${DURATION} s per run (+${WARMUP} s warm-up), $CONNS x $INFLIGHT, --log-level $LEVEL, line/http/ws rotating; took ${ELAPSED} s"
echo
printf '%-34s %10s %10s %6s %6s   %s\n' "(medians over rounds)" line other ratio "(of" "medians)  per-round values and other/line ratios"
row "http: replies/s" rate http
row "http: reply p50 us" p50 http
row "http: reply p99 us" p99 http
row "ws: replies/s" rate ws
row "ws: reply p50 us" p50 ws
row "ws: reply p99 us" p99 ws
row "idle http: server bytes/conn" idle http
row "idle ws: server bytes/conn" idle ws
row "idle http: bytes/conn, 1st half" idle_first http
row "idle http: bytes/conn, 2nd half" idle_second http
row "idle ws: bytes/conn, 1st half" idle_first ws
row "idle ws: bytes/conn, 2nd half" idle_second ws
diff_row "idle: http - line, bytes/conn" http
diff_row "idle: ws - line, bytes/conn" ws
echo
goal() { printf 'goal: %-58s %8s  %s\n' "$1" "$2" "$(awk -v v="$2" -v l="$4" -v op="$3" 'BEGIN { ok = (op == ">=") ? (v >= l) : (v <= l); print (ok ? "met" : "NOT met") }')"; }
goal "OsmAnd over HTTP >= 0.7 x line IAMATs/s (median ratio)" "${PAIRED[rate,http]}" ">=" 0.7
goal "IAMAT over WebSocket >= 0.8 x line (median ratio)" "${PAIRED[rate,ws]}" ">=" 0.8
goal "idle HTTP <= 1024 B/conn more than idle line (median)" "${DIFF[http]}" "<=" 1024
goal "idle WebSocket <= 1024 B/conn more than idle line" "${DIFF[ws]}" "<=" 1024
