#!/usr/bin/env bash
# tools/tls-compare.sh: what TLS costs herd (SPEC §12: throughput and flood
# latency with and without it, measured in one run).
#
#   tools/tls-compare.sh [--rounds N] [--duration SECS] [--port P]
#                        [--idle-conns N] [--log-level LEVEL]
#
# Builds release once, makes a CA and a certificate per server with
# `examples/herd-certs.rs` in a temporary folder, and then, in every round,
# with the order of the two variants alternating from round to round:
#
#   rr       one server (`Bench`, client port P, tls port P+1, peer port
#            P+2), started once per round; flood_load rr 50 x 1 and 50 x 16
#            against its plaintext client port and against its TLS port
#            (`--tls`): the same server in the same minute;
#   churn    the same server: 50 concurrent connect / IAMAT / close cycles,
#            plaintext and TLS (a full TLS handshake per cycle);
#   churn resumed  the same again, the TLS cycles resuming their sessions
#            from the tickets earlier cycles got (flood_load --tls-resume),
#            as phones that reconnect do; its plaintext runs are a second
#            sample of plaintext churn, adjacent in time. Both churn rows
#            also give the CPU time per connection of the tool and of the
#            server (flood_load --server-pid; there the ratio is TLS's cost
#            over plaintext's, the inverse of a rate's), which the machine's
#            other work does not change as it does the rates;
#   prop     the five-server herd of tools/probe-herd.conf (ports moved to
#            P+10...), posting at Hands at 20,000 IAMAT/s and observing
#            Welsh -> Probe: once with plaintext links, once with every link
#            of the five over mutual TLS on peer ports (P+30...); the posting
#            clients and the Welsh -> Probe hop are plaintext in both;
#   idle     a fresh Bench per variant; N idle connections (--idle-conns,
#            default 5000) to its plaintext or TLS port, server VmRSS per
#            connection (flood_load --mode idle --server-pid).
#
# Prints every round's value, the medians, and for each figure the median
# of the per-round ratios TLS / plaintext (a round's two runs are adjacent
# in time, so they share the machine's background load) next to the ratio of
# the medians. Every process it starts is stopped on exit. Defaults: 7
# rounds of 3 s runs at --log-level info (no traffic log lines), about 5
# minutes.
set -euo pipefail
cd "$(dirname "$0")/.."

ROUNDS=7
DURATION=3
WARMUP=0.5
PORT=12400
IDLE_CONNS=5000
LEVEL=info
while [ $# -gt 0 ]; do
    case "$1" in
        --rounds) ROUNDS=$2; shift 2 ;;
        --duration) DURATION=$2; shift 2 ;;
        --port) PORT=$2; shift 2 ;;
        --idle-conns) IDLE_CONNS=$2; shift 2 ;;
        --log-level) LEVEL=$2; shift 2 ;;
        -h|--help) sed -n '2,40p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "tls-compare.sh: unknown argument $1 (try --help)" >&2; exit 2 ;;
    esac
done

. tools/lib-compare.sh
build_release --example herd-certs
work_dir tls-compare

ports_free $PORT $((PORT + 1)) $((PORT + 2)) $((PORT + 11)) $((PORT + 20)) $((PORT + 30))


"$BIN/examples/herd-certs" "$WORK/certs" Bench Goloman Hands Holiday Welsh Wilkes > /dev/null
CA=$WORK/certs/ca.pem
TLS_LINES="tls_cert $WORK/certs/{name}.pem
tls_key $WORK/certs/{name}.key
tls_ca $CA"

# One server with a plaintext client port, a TLS client port and (because a
# herd with TLS has its links on peer ports) a peer port.
cat > "$WORK/bench.conf" <<EOF
server Bench 127.0.0.1:$PORT tls 127.0.0.1:$((PORT + 1)) peer 127.0.0.1:$((PORT + 2))
$TLS_LINES
EOF

# The probe herd, moved to P+10...: plaintext links, and the same herd with
# a peer port for each of the five (links over mutual TLS there); the Probe
# has none, so Welsh dials it in plaintext in both.
P0=$((PORT + 10))
sed -e "s/127.0.0.1:12000/127.0.0.1:$P0/; s/127.0.0.1:12001/127.0.0.1:$((P0 + 1))/; s/127.0.0.1:12002/127.0.0.1:$((P0 + 2))/" \
    -e "s/127.0.0.1:12003/127.0.0.1:$((P0 + 3))/; s/127.0.0.1:12004/127.0.0.1:$((P0 + 4))/; s/127.0.0.1:12010/127.0.0.1:$((P0 + 10))/" \
    tools/probe-herd.conf > "$WORK/probe-plain.conf"
awk -v base=$((PORT + 30)) '
    /^server / && $2 != "Probe" { print $0 " peer 127.0.0.1:" base + n++; next }
    { print }' "$WORK/probe-plain.conf" > "$WORK/probe-tls.conf"
printf '%s\n' "$TLS_LINES" >> "$WORK/probe-tls.conf"

SERVER=
start_bench() {
    rm -rf "$WORK/logs"
    "$BIN/herd" Bench --config "$WORK/bench.conf" --log-dir "$WORK/logs" --log-level "$LEVEL" 2> "$WORK/bench.err" &
    SERVER=$!
    PIDS+=("$SERVER")
    wait_port "$PORT"
    wait_port $((PORT + 1))
}

stop_server() {
    kill -TERM "$SERVER" 2>/dev/null || true
    wait "$SERVER" 2>/dev/null || true
    SERVER=
    rm -rf "$WORK/logs"
}

LOAD=(--duration "$DURATION" --warmup "$WARMUP" --quiet)
TLS_ARGS=(--tls "$CA" --tls-name Bench)
declare -A ARGS=(
    [rr50]="--conns 50 --inflight 1"
    [pipe16]="--conns 50 --inflight 16"
    [churn]="--mode churn --conns 50"
    [churnr]="--mode churn --conns 50"
)
# What a row's TLS runs add: churn resumed resumes.
declare -A TLS_EXTRA=([churnr]="--tls-resume")
ROWS=(rr50 pipe16 churn churnr)
declare -A V=()    # V[row,variant]: the per-round values
declare -A ERRS=()

# record ROW VARIANT VALUE ERRORS
record() {
    V[$1,$2]="${V[$1,$2]:-} ${3:-0}"
    ERRS[$1,$2]=$(( ${ERRS[$1,$2]:-0} + ${4:-1} ))
}

# load VARIANT ROW ARGS...: flood_load against Bench's plaintext or TLS port.
load() {
    local variant=$1 row=$2
    shift 2
    if [ "$variant" = tls ]; then
        # shellcheck disable=SC2086
        "$BIN/flood_load" --addr "127.0.0.1:$((PORT + 1))" "${TLS_ARGS[@]}" ${TLS_EXTRA[$row]:-} ${CPU_ARGS[$row]:-} "$@" || true
    else
        "$BIN/flood_load" --addr "127.0.0.1:$PORT" ${CPU_ARGS[$row]:-} "$@" || true
    fi
}

START=$(date +%s)
for round in $(seq "$ROUNDS"); do
    if [ $((round % 2)) = 1 ]; then order="plain tls"; else order="tls plain"; fi

    start_bench
    # The churn rows read the server's CPU time around each run.
    declare -A CPU_ARGS=([churn]="--server-pid $SERVER" [churnr]="--server-pid $SERVER")
    for row in "${ROWS[@]}"; do
        for variant in $order; do
            # shellcheck disable=SC2086
            out=$(load "$variant" "$row" "${LOAD[@]}" ${ARGS[$row]})
            rate=$(field rate <<< "$out")
            record "$row" "$variant" "$rate" "$(field errors <<< "$out")"
            if [ "$variant" = tls ] && [ "$row" = churnr ]; then
                record churnr_share tls "$(awk -v r="$(field tls_resumed <<< "$out")" -v f="$(field tls_full <<< "$out")" 'BEGIN { if (r + f > 0) printf "%.3f", r / (r + f); else print 0 }')" 0
            fi
            if [ "$row" = churn ] || [ "$row" = churnr ]; then
                record "${row}_tool_cpu" "$variant" "$(field tool_cpu_us <<< "$out")" 0
                record "${row}_server_cpu" "$variant" "$(field server_cpu_us <<< "$out")" 0
            fi
            if [ "$row" = rr50 ]; then
                record rr50_p50 "$variant" "$(field p50_us <<< "$out")" 0
                record rr50_p99 "$variant" "$(field p99_us <<< "$out")" 0
            fi
            echo "round $round $row $variant: ${rate:-failed}/s" >&2
        done
    done
    stop_server

    for variant in $order; do
        rm -rf "$WORK/herdlogs"
        "$BIN/herd" Goloman Hands Holiday Welsh Wilkes --config "$WORK/probe-$variant.conf" \
            --log-dir "$WORK/herdlogs" --log-level "$LEVEL" 2> "$WORK/herd.err" &
        SERVER=$!
        PIDS+=("$SERVER")
        wait_port $((P0 + 1))
        out=$("$BIN/flood_load" --mode propagation --duration "$DURATION" --warmup "$WARMUP" \
            --addr "127.0.0.1:$((P0 + 1))" --probe "127.0.0.1:$((P0 + 10))" --quiet) || true
        stop_server
        rm -rf "$WORK/herdlogs"
        record prop_p50 "$variant" "$(field p50_us <<< "$out")" "$(field errors <<< "$out")"
        record prop_p99 "$variant" "$(field p99_us <<< "$out")" 0
        record prop_rate "$variant" "$(field rate <<< "$out")" 0
        echo "round $round propagation $variant: p50 $(field p50_us <<< "$out") us, p99 $(field p99_us <<< "$out") us, $(field arrived <<< "$out")/$(field posted <<< "$out") arrived" >&2
    done

    for variant in $order; do
        start_bench
        out=$(load "$variant" idle --mode idle --conns "$IDLE_CONNS" --server-pid "$SERVER" --quiet)
        stop_server
        record idle "$variant" "$(field bytes_per_conn <<< "$out")" "$(field errors <<< "$out")"
        record idle_first "$variant" "$(field bytes_per_conn_first <<< "$out")" 0
        record idle_second "$variant" "$(field bytes_per_conn_second <<< "$out")" 0
        echo "round $round idle $variant: $(field bytes_per_conn <<< "$out") B/conn" >&2
    done
done
ELAPSED=$(( $(date +%s) - START ))

declare -A PAIRED=()
# row LABEL KEY: medians, the median of per-round TLS/plain ratios, the
# ratio of the medians, and every round's values.
row() {
    local xs ys rounds="" i
    read -r -a xs <<< "${V[$2,tls]:-}"
    read -r -a ys <<< "${V[$2,plain]:-}"
    for i in "${!xs[@]}"; do rounds+=" $(ratio "${xs[$i]}" "${ys[$i]:-0}")"; done
    PAIRED[$2]=$(median <<< "$rounds" | awk '{ printf "%.2f", $1 }')
    local errs=""
    if [ "$(( ${ERRS[$2,plain]:-0} + ${ERRS[$2,tls]:-0} ))" -gt 0 ]; then
        errs="  errors: plain ${ERRS[$2,plain]:-0}, tls ${ERRS[$2,tls]:-0}"
    fi
    printf '%-34s %10.1f %10.1f %6s %6s   plain:%s  tls:%s  ratios:%s%s\n' "$1" \
        "$(median <<< "${V[$2,plain]:-}")" "$(median <<< "${V[$2,tls]:-}")" \
        "${PAIRED[$2]}" \
        "$(ratio "$(median <<< "${V[$2,tls]:-}")" "$(median <<< "${V[$2,plain]:-}")")" \
        "${V[$2,plain]:-}" "${V[$2,tls]:-}" "$rounds" "$errs"
}

echo
echo "herd tls-compare: $(date -u '+%Y-%m-%d %H:%M:%S UTC'); $(nproc) CPUs ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')), Linux $(uname -r), load average $(cut -d' ' -f1-3 /proc/loadavg)"
echo "commit $(git rev-parse --short HEAD 2>/dev/null || echo '?'); $ROUNDS rounds, ${DURATION} s per run (+${WARMUP} s warm-up), --log-level $LEVEL, plaintext and TLS alternating; took ${ELAPSED} s"
echo
printf '%-34s %10s %10s %6s %6s   %s\n' "(medians over rounds)" plain tls ratio "(of" "medians)  per-round values and TLS/plain ratios"
row "rr 50 x 1, replies/s" rr50
row "rr 50 x 1, reply p50 us" rr50_p50
row "rr 50 x 1, reply p99 us" rr50_p99
row "pipelined 50 x 16, replies/s" pipe16
row "churn 50, connections/s" churn
row "churn 50 resumed, connections/s" churnr
printf '%-34s %10s %10s %6s %6s   tls:%s\n' "churn 50 resumed: share resumed" "" "$(median <<< "${V[churnr_share,tls]:-}")" "" "" "${V[churnr_share,tls]:-}"
row "churn 50: tool CPU us/conn" churn_tool_cpu
row "churn 50: server CPU us/conn" churn_server_cpu
row "churn 50 resumed: tool CPU us/conn" churnr_tool_cpu
row "churn 50 resumed: server CPU us/conn" churnr_server_cpu
row "propagation p50 us (20,000/s)" prop_p50
row "propagation p99 us" prop_p99
row "propagation posted/s" prop_rate
row "idle: server bytes/conn ($IDLE_CONNS)" idle
row "idle: bytes/conn, first half" idle_first
row "idle: bytes/conn, second half" idle_second
read -r -a xs <<< "${V[idle,tls]:-}"
read -r -a ys <<< "${V[idle,plain]:-}"
diffs=""
for i in "${!xs[@]}"; do diffs+=" $(( ${xs[$i]:-0} - ${ys[$i]:-0} ))"; done
printf '%-34s %10s %10s %6s %6s   tls-plain:%s\n' "idle: TLS - plain, bytes/conn" "" "$(median <<< "$diffs")" "" "" "$diffs"
echo
# target TEXT VALUE AWK-CONDITION-ON-v
target() {
    printf 'target: %s: %s, %s\n' "$1" "$2" "$(awk -v v="$2" "BEGIN { print ($3) ? \"met\" : \"NOT met\" }")"
}
target "rr 50 x 1 over TLS >= 0.8 x plaintext (median of the per-round ratios)" "${PAIRED[rr50]}" 'v >= 0.8'
target "churn resumed over TLS >= 0.4 x plaintext churn (median of the per-round ratios)" "${PAIRED[churnr]}" 'v >= 0.4'
target "idle TLS connection <= 3 KB over a plaintext one (median of the per-round differences)" "$(median <<< "$diffs")" 'v <= 3072'
