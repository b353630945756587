#!/usr/bin/env bash
# tools/watch-compare.sh: what watchers (SPEC §15, docs/PROTOCOL.md §15)
# cost the herd, measured in one run.
#
#   tools/watch-compare.sh [--rounds N] [--duration SECS] [--port P]
#                          [--idle-watchers N]
#
# idle (default): one server (`Bench`, client port P) per round; IAMAT
# throughput flood_load rr 50 x 1 and pipelined 50 x 16 flat out, without
# and with N (default 1,000) idle watchers connected, alternating (the
# order flips every round). An idle watcher watches a client of its own
# that never moves (`flood_load --mode watch --rate 0`): the cost of
# having watchers at all, since every position stored is then looked up
# once in the watch index (none of the load's clients is watched, so no
# push is due). Prints every round's rates and the server's CPU time per
# IAMAT (user + system, from /proc/PID/stat over the run: less disturbed
# by other work on a shared machine than the rate is), the per-round
# ratios with/without and their median.
#
#   tools/watch-compare.sh --fanout [--rounds N] [--duration SECS] [--port P]
#                          [--watchers W] [--rate R] [--base HERD]
#
# instead measures fan-out: W (default 10,000) watchers of ONE client on
# ONE server, one update every 1/R s (default R = 100), with
# `flood_load --mode watch`: push latency, the time until the last watcher
# has each update, how long a bystander client's IAMAT waits meanwhile,
# pushes/s, and the CPU of the server and of the tool;
# alternating, every round, herd (--log-level info) with the least server
# that does the same I/O (`ceiling --watch`: one AT line formatted per
# update, one write(2) per watcher, nothing else), and with --base another
# herd binary (an older build, to show a change). Server and tool CPU per
# push are printed side by side: their sum, times W, is the CPU one update
# reaching every watcher costs this machine. Then, once, one watcher
# three hops away in the reference herd (tools/probe-herd.conf moved to
# this script's ports) at 20,000 updates/s.
#
# Every process it starts is stopped on exit. Ports P.. P+5 (default 61200,
# above the kernel's ephemeral range and the tests' ports). Wrap it in the
# measurement lock: `flock /tmp/herd-measure.lock tools/watch-compare.sh`.
set -euo pipefail
cd "$(dirname "$0")/.."

ROUNDS=5
DURATION=3
WARMUP=0.5
PORT=61200
IDLE=1000
FANOUT=
WATCHERS=10000
RATE=100
BASE=
while [ $# -gt 0 ]; do
    case "$1" in
        --rounds) ROUNDS=$2; shift 2 ;;
        --duration) DURATION=$2; shift 2 ;;
        --port) PORT=$2; shift 2 ;;
        --idle-watchers) IDLE=$2; shift 2 ;;
        --fanout) FANOUT=1; shift ;;
        --watchers) WATCHERS=$2; shift 2 ;;
        --rate) RATE=$2; shift 2 ;;
        --base) BASE=$2; shift 2 ;;
        -h|--help) sed -n '2,38p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "watch-compare.sh: unknown argument $1 (try --help)" >&2; exit 2 ;;
    esac
done

. tools/lib-compare.sh
build_release
work_dir watch-compare

ports_free $(seq "$PORT" $((PORT + 5)))

RATIO_DIGITS=3

printf 'server Bench 127.0.0.1:%s\n' "$PORT" > "$WORK/bench.conf"

SERVER=
# start KIND: herd (info) or ceiling (--watch) on $PORT.
start() {
    rm -rf "$WORK/logs" "$WORK/state"
    case $1 in
        herd|base) if [ "$1" = base ]; then exe=$BASE; else exe=$BIN/herd; fi
            "$exe" Bench --config "$WORK/bench.conf" --log-dir "$WORK/logs" \
                  --state-dir "$WORK/state" --log-level info 2> "$WORK/server.err" & ;;
        ceiling) "$BIN/ceiling" "127.0.0.1:$PORT" --watch 2> "$WORK/server.err" & ;;
    esac
    SERVER=$!
    PIDS+=("$SERVER")
    wait_port "$PORT"
}

stop() {
    kill -TERM "$SERVER" 2>/dev/null || true
    wait "$SERVER" 2>/dev/null || true
    SERVER=
}

echo "watch compare: $(date -u '+%Y-%m-%d %H:%M:%S UTC'); $(nproc) CPUs ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')), Linux $(uname -r), load average $(cut -d' ' -f1-3 /proc/loadavg)"

if [ -n "$FANOUT" ]; then
    declare -A V=()
    KEYS=(last_p50_us last_p99_us same_p50_us same_p99_us bystander_p50_us bystander_p99_us pushes_per_s server_cpu_pct tool_cpu_pct)
    KINDS="herd ceiling${BASE:+ base}"
    for round in $(seq "$ROUNDS"); do
        # The order turns every round.
        if [ $((round % 2)) = 1 ]; then order=$KINDS; else order=$(tr ' ' '\n' <<< "$KINDS" | tac | xargs); fi
        for kind in $order; do
            start "$kind"
            out=$("$BIN/flood_load" --mode watch --addr "127.0.0.1:$PORT" --conns "$WATCHERS" \
                --rate "$RATE" --duration "$DURATION" --warmup 1 --server-pid "$SERVER" 2>/dev/null) || true
            stop
            line="round $round $kind:"
            for k in "${KEYS[@]}"; do
                v=$(field "$k" <<< "$out")
                V[$kind,$k]="${V[$kind,$k]:-} ${v:-0}"
                line="$line $k=${v:-failed}"
            done
            echo "$line"
        done
    done
    echo
    echo "medians over $ROUNDS rounds, $WATCHERS watchers of one client on one server, $RATE updates/s:"
    for kind in $KINDS; do
        line="  $kind:"
        for k in "${KEYS[@]}"; do line="$line $k=$(median <<< "${V[$kind,$k]}")"; done
        echo "$line"
    done
    # CPU per push: each process's CPU share over the pushes made.
    for kind in $KINDS; do
        cpu=$(median <<< "${V[$kind,server_cpu_pct]}")
        tool=$(median <<< "${V[$kind,tool_cpu_pct]}")
        pps=$(median <<< "${V[$kind,pushes_per_s]}")
        awk -v k="$kind" -v c="$cpu" -v t="$tool" -v p="$pps" -v w="$WATCHERS" 'BEGIN {
            if (p <= 0) { print "  " k ": no pushes"; exit }
            s = c * 1e4 / p; u = t * 1e4 / p
            printf "  %s: %.2f us of server CPU + %.2f us of tool CPU per push received; one update to all %d watchers = %.1f ms of CPU\n", k, s, u, w, (s + u) * w / 1000 }'
    done
    echo "goal: herd last_p99_us <= 20000"
    # One watcher three hops away at 20,000 updates/s.
    P0=$((PORT + 1))
    sed -e "s/127.0.0.1:12000/127.0.0.1:$P0/; s/127.0.0.1:12001/127.0.0.1:$((P0 + 1))/; s/127.0.0.1:12002/127.0.0.1:$((P0 + 2))/" \
        -e "s/127.0.0.1:12003/127.0.0.1:$((P0 + 3))/; s/127.0.0.1:12004/127.0.0.1:$((P0 + 4))/; /^server Probe/d; /Probe$/d" \
        tools/probe-herd.conf > "$WORK/herd.conf"
    rm -rf "$WORK/logs"
    "$BIN/herd" Goloman Hands Holiday Welsh Wilkes --config "$WORK/herd.conf" --log-dir "$WORK/logs" \
        --log-level info 2> "$WORK/herd.err" &
    HERD=$!
    PIDS+=("$HERD")
    wait_port $((P0 + 1))
    wait_port $((P0 + 3))
    out=$("$BIN/flood_load" --mode watch --addr "127.0.0.1:$((P0 + 1))" --far-addr "127.0.0.1:$((P0 + 3))" \
        --conns 1 --far 1 --rate 20000 --duration "$DURATION" --warmup 1 2>/dev/null) || true
    kill -TERM "$HERD" 2>/dev/null || true
    wait "$HERD" 2>/dev/null || true
    echo
    echo "one watcher three hops away (Hands -> Welsh), 20,000 updates/s:"
    grep -v '^summary' <<< "$out" | sed 's/^/  /'
    echo "  goal: far p50 <= 300 us, p99 <= 2000 us: far_p50_us=$(field far_p50_us <<< "$out") far_p99_us=$(field far_p99_us <<< "$out")"
    exit 0
fi

# idle: with and without idle watchers.
ROWS=(rr50 pipe16)
declare -A ARGS=(
    [rr50]="--conns 50 --inflight 1"
    [pipe16]="--conns 50 --inflight 16"
)
declare -A V=()
declare -A C=()
WATCHERS_PID=
for round in $(seq "$ROUNDS"); do
    start herd
    if [ $((round % 2)) = 1 ]; then order="without with"; else order="with without"; fi
    for variant in $order; do
        if [ "$variant" = with ]; then
            "$BIN/flood_load" --mode watch --rate 0 --addr "127.0.0.1:$PORT" --conns "$IDLE" \
                --duration 3600 --quiet > "$WORK/idle.out" 2>&1 &
            WATCHERS_PID=$!
            PIDS+=("$WATCHERS_PID")
            for _ in $(seq 600); do
                if grep -q 'idle watchers at' "$WORK/idle.out"; then break; fi
                if ! kill -0 "$WATCHERS_PID" 2>/dev/null; then break; fi
                sleep 0.05
            done
            if ! grep -q "^$IDLE idle watchers at" "$WORK/idle.out"; then
                echo "watch-compare.sh: the idle watchers did not all connect:" >&2
                cat "$WORK/idle.out" >&2
                exit 1
            fi
        fi
        for row in "${ROWS[@]}"; do
            t0=$(cpu_ticks "$SERVER")
            # shellcheck disable=SC2086
            out=$("$BIN/flood_load" --mode rr --addr "127.0.0.1:$PORT" --duration "$DURATION" \
                --warmup "$WARMUP" --quiet ${ARGS[$row]}) || true
            t1=$(cpu_ticks "$SERVER")
            rate=$(field rate <<< "$out")
            # CPU per IAMAT over warm-up and run: ticks / (rate x time), in us.
            us=$(awk -v t=$((t1 - t0)) -v hz="$(getconf CLK_TCK)" -v r="${rate:-0}" -v d="$DURATION" -v w="$WARMUP" \
                'BEGIN { if (r > 0) printf "%.3f", t / hz * 1e6 / (r * (d + w)); else print 0 }')
            V[$row,$variant]="${V[$row,$variant]:-} ${rate:-0}"
            C[$row,$variant]="${C[$row,$variant]:-} $us"
            echo "round $round $row $variant idle watchers: ${rate:-failed}/s, server CPU ${us} us per IAMAT" >&2
        done
        if [ "$variant" = with ]; then
            kill -TERM "$WATCHERS_PID" 2>/dev/null || true
            wait "$WATCHERS_PID" 2>/dev/null || true
        fi
    done
    stop
done

# per_round ARRAY ROW: ARRAY's with/without ratio for ROW, round by round.
per_round() {
    local -n values=$1
    local a b i ratios=""
    read -r -a a <<< "${values[$2,without]}"
    read -r -a b <<< "${values[$2,with]}"
    for i in "${!a[@]}"; do ratios="$ratios $(ratio "${b[$i]}" "${a[$i]}")"; done
    echo "$ratios"
}

echo
echo "IAMATs/s without and with $IDLE idle watchers (each of a client that never moves), $ROUNDS rounds of ${DURATION} s:"
for row in "${ROWS[@]}"; do
    ratios=$(per_round V "$row")
    echo "  $row (${ARGS[$row]}): without:${V[$row,without]}"
    echo "  $row (${ARGS[$row]}): with:   ${V[$row,with]}"
    echo "  $row with/without per round:$ratios; median $(median <<< "$ratios"); ratio of medians $(ratio "$(median <<< "${V[$row,with]}")" "$(median <<< "${V[$row,without]}")")"
    ratios=$(per_round C "$row")
    echo "  $row server CPU us per IAMAT, without:${C[$row,without]}"
    echo "  $row server CPU us per IAMAT, with:   ${C[$row,with]}"
    echo "  $row CPU per IAMAT with/without per round:$ratios; median $(median <<< "$ratios")"
done
echo "load average at the end: $(cut -d' ' -f1-3 /proc/loadavg)"
