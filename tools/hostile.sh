#!/usr/bin/env bash
# tools/hostile.sh: the hostile-client figures of README, reproducibly.
#
#   tools/hostile.sh [--rounds N] [--duration SECS] [--port P] [--pin]
#                    [--levels "debug info"] [--unthrottled]
#                    [-- FLOOD_LOAD_ARGS...]
#
# Builds release, then for each round and each log level starts a fresh
# herd server (member Bench on 127.0.0.1:P), samples its VmRSS every 200 ms,
# runs `flood_load --mode hostile` against it (the normal load alone, then
# the same load while every attacker runs), and stops it. A run counts only
# if the server it started is the one that answered (the port must be free
# first: a stray server would silently take the load) and it is still alive
# at the end. Prints one row per run (quiet p99, p99 under attack, their
# ratio, RSS at start and peak) and, per level, the median ratio. --pin puts
# the server on core 0 and the load tool on core 1 (taskset). --unthrottled
# also runs each level with `--invalid-rate 0`, in the same rounds, for
# comparison. Arguments after `--` go to flood_load (e.g. `-- --attackers
# garbage --attack-mbps 0`). Default: 3 rounds of 5 s phases, both levels,
# about 90 s.
set -euo pipefail
cd "$(dirname "$0")/.."

ROUNDS=3
DURATION=5
PORT=12300
PIN=
LEVELS="debug info"
UNTHROTTLED=
while [ $# -gt 0 ]; do
    case "$1" in
        --rounds) ROUNDS=$2; shift 2 ;;
        --duration) DURATION=$2; shift 2 ;;
        --port) PORT=$2; shift 2 ;;
        --pin) PIN=1; shift ;;
        --levels) LEVELS=$2; shift 2 ;;
        --unthrottled) UNTHROTTLED=1; shift ;;
        --) shift; break ;;
        -h|--help) sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "hostile.sh: unknown argument $1 (try --help)" >&2; exit 2 ;;
    esac
done

export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$PWD/target}
echo "building release..." >&2
cargo build --release --bins -q
BIN=$CARGO_TARGET_DIR/release
WORK=$(mktemp -d /tmp/herd-hostile.XXXXXX)
SERVER=
SAMPLER=

cleanup() {
    for p in $SAMPLER $SERVER; do kill -TERM "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

port_taken() { (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; }
rss_kb() { awk '/^VmRSS/ {print $2}' "/proc/$1/status" 2>/dev/null || echo 0; }
field() { tr ' ' '\n' | sed -n "s/^$1=//p"; }
median() { tr ' ' '\n' | grep -v '^$' | sort -g | awk '{v[NR]=$1} END {if (NR==0) print "-"; else if (NR%2) print v[(NR+1)/2]; else print (v[NR/2]+v[NR/2+1])/2}'; }

SERVER_PIN=()
TOOL_PIN=()
if [ -n "$PIN" ]; then
    SERVER_PIN=(taskset -c 0)
    TOOL_PIN=(taskset -c 1)
fi
printf 'server Bench 127.0.0.1:%s\n' "$PORT" > "$WORK/h.conf"

# Contenders: LABEL=HERD_ARGS (spaces in args as commas).
CONTENDERS=()
for level in $LEVELS; do
    CONTENDERS+=("$level=--log-level,$level")
    if [ -n "$UNTHROTTLED" ]; then
        CONTENDERS+=("$level-unthrottled=--log-level,$level,--invalid-rate,0")
    fi
done

declare -A RATIOS=()
printf '%-18s %-5s %10s %12s %7s %14s %6s  %s\n' level round quiet_p99 attacked_p99 ratio rss_kB alive attackers
for round in $(seq "$ROUNDS"); do
    for contender in "${CONTENDERS[@]}"; do
        level=${contender%%=*}
        IFS=, read -r -a HERD_ARGS <<<"${contender#*=}"
        if port_taken; then
            echo "hostile.sh: something already listens on 127.0.0.1:$PORT; stop it or use --port" >&2
            exit 1
        fi
        rm -rf "$WORK/logs"
        "${SERVER_PIN[@]}" "$BIN/herd" Bench --config "$WORK/h.conf" --log-dir "$WORK/logs" "${HERD_ARGS[@]}" 2>/dev/null &
        SERVER=$!
        for _ in $(seq 200); do port_taken && break; sleep 0.05; done
        kill -0 "$SERVER" 2>/dev/null || { echo "hostile.sh: the server did not start" >&2; exit 1; }
        start_kb=$(rss_kb "$SERVER")
        echo "$start_kb" > "$WORK/peak"
        ( peak=$start_kb
          while kill -0 "$SERVER" 2>/dev/null; do
              r=$(rss_kb "$SERVER"); [ "${r:-0}" -gt "$peak" ] && peak=$r && echo "$peak" > "$WORK/peak"
              sleep 0.2
          done ) &
        SAMPLER=$!
        out=$("${TOOL_PIN[@]}" "$BIN/flood_load" --mode hostile --addr "127.0.0.1:$PORT" --duration "$DURATION" --quiet "$@" 2>&1) || true
        alive=no
        kill -0 "$SERVER" 2>/dev/null && alive=yes
        summary=$(grep '^summary' <<<"$out" | tail -1)
        attackers=$(grep '^attackers' <<<"$out" | sed 's/^attackers *//')
        kill -TERM "$SERVER" 2>/dev/null || true
        wait "$SERVER" 2>/dev/null || true
        kill "$SAMPLER" 2>/dev/null || true
        wait "$SAMPLER" 2>/dev/null || true
        SERVER= SAMPLER=
        if [ -z "$summary" ]; then
            echo "hostile.sh: flood_load failed:" >&2
            echo "$out" >&2
            exit 1
        fi
        q=$(field quiet_p99_us <<<"$summary")
        a=$(field hostile_p99_us <<<"$summary" | head -1)
        r=$(field p99_ratio <<<"$summary")
        RATIOS[$level]="${RATIOS[$level]:-} $r"
        printf '%-18s %-5s %8sus %10sus %6sx %6s->%-6s %6s  %s\n' "$level" "$round" "$q" "$a" "$r" "$start_kb" "$(cat "$WORK/peak")" "$alive" "$attackers"
    done
done
for contender in "${CONTENDERS[@]}"; do
    level=${contender%%=*}
    echo "median p99 ratio, $level: $(median <<<"${RATIOS[$level]}")x  (target: at most 2x)"
done
