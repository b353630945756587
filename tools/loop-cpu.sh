#!/usr/bin/env bash
# tools/loop-cpu.sh: where a server's CPU goes per request, thread by thread,
# for herd binaries against each other and the ceiling, in alternating rounds.
#
#   tools/loop-cpu.sh [--rounds N] [--duration SECS] [--port P]
#                     [--level debug|info] [--inflight K] [HERD_BIN ...]
#
# Each round starts, in turn, the ceiling (benches/baseline/ceiling.rs) and
# each HERD_BIN (default: this tree's release herd) as `herd Bench
# --log-level LEVEL` on a fresh log directory, runs `flood_load --conns 50
# --inflight K --threads 1` against it, and reads utime + stime of every
# thread of the server (/proc/PID/task/TID/stat) and of flood_load over the
# run's middle. It prints the rate and, per thread, CPU microseconds per
# request: at 50 x 16 herd's loop thread (named after the server, `Bench`)
# is one busy core, so its figure is what the rate is made of, and it is
# far less noisy on a shared machine than the rate. The log writer is
# `log-Bench`. Default: 3 rounds of 3 s, --level debug, --inflight 16.
set -euo pipefail
cd "$(dirname "$0")/.."

ROUNDS=3
DURATION=3
PORT=12100
LEVEL=debug
INFLIGHT=16
BINS=()
while [ $# -gt 0 ]; do
    case "$1" in
        --rounds) ROUNDS=$2; shift 2 ;;
        --duration) DURATION=$2; shift 2 ;;
        --port) PORT=$2; shift 2 ;;
        --level) LEVEL=$2; shift 2 ;;
        --inflight) INFLIGHT=$2; shift 2 ;;
        -h|--help) sed -n '2,17p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        -*) echo "loop-cpu.sh: unknown argument $1 (try --help)" >&2; exit 2 ;;
        *) BINS+=("$1"); shift ;;
    esac
done

. tools/lib-compare.sh
build_release
[ ${#BINS[@]} -gt 0 ] || BINS=("$BIN/herd")
work_dir loop-cpu
ports_free "$PORT"
printf 'server Bench 127.0.0.1:%s\n' "$PORT" > "$WORK/bench.conf"

# ticks PID: "TID NAME TICKS" per thread, sorted by TID.
ticks() {
    for t in /proc/"$1"/task/*; do
        echo "${t##*/} $(cat "$t/comm" 2>/dev/null || echo gone) $(awk '{print $14 + $15}' "$t/stat" 2>/dev/null || echo 0)"
    done | sort
}

# one WHO: a run against the ceiling or a herd binary; prints its line.
one() {
    rm -rf "$WORK/logs"
    if [ "$1" = ceiling ]; then
        "$BIN/ceiling" "127.0.0.1:$PORT" 2>/dev/null &
    else
        "$1" Bench --config "$WORK/bench.conf" --log-dir "$WORK/logs" --log-level "$LEVEL" >/dev/null 2>&1 &
    fi
    local server=$!
    PIDS+=("$server")
    wait_port "$PORT"
    "$BIN/flood_load" --duration "$DURATION" --warmup 0.5 --threads 1 --conns 50 --inflight "$INFLIGHT" \
        --addr "127.0.0.1:$PORT" --quiet > "$WORK/load.out" &
    local load=$!
    PIDS+=("$load")
    # The middle of the run: after the warm-up, before the end.
    local span
    span=$(awk -v d="$DURATION" 'BEGIN { printf "%.2f", d * 0.8 }')
    sleep 0.6
    ticks "$server" > "$WORK/a"
    local la lb
    la=$(cpu_ticks "$load")
    sleep "$span"
    ticks "$server" > "$WORK/b"
    lb=$(cpu_ticks "$load")
    wait "$load" || true
    kill -TERM "$server" 2>/dev/null || true
    wait "$server" 2>/dev/null || true
    local rate hz
    rate=$(field rate < "$WORK/load.out")
    hz=$(getconf CLK_TCK)
    printf '%-28s rate %9s/s  flood_load %s' "${1##*/}" "$rate" \
        "$(awk -v a="$la" -v b="$lb" -v r="$rate" -v s="$span" -v hz="$hz" 'BEGIN { printf "%.3f", (r > 0 ? (b - a) / hz * 1e6 / (r * s) : 0) }')"
    join "$WORK/a" "$WORK/b" | awk -v r="$rate" -v s="$span" -v hz="$hz" \
        '$5 > $3 && r > 0 { printf "  %s %.3f", $2, ($5 - $3) / hz * 1e6 / (r * s) }'
    echo "   (µs of CPU per request)"
}

echo "loop-cpu: $(date -u '+%Y-%m-%d %H:%M:%S UTC'); $(nproc) CPUs; load average $(cut -d' ' -f1-3 /proc/loadavg); 50 x $INFLIGHT, --log-level $LEVEL, $ROUNDS rounds of ${DURATION} s"
for ((round = 1; round <= ROUNDS; round++)); do
    echo "round $round"
    one ceiling
    for b in "${BINS[@]}"; do one "$b"; done
done
