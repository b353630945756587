# tools/lib-compare.sh: what the comparison scripts share (compare.sh,
# tls-compare.sh, fronts-compare.sh, watch-compare.sh source it; it is not
# run on its own). Every figure those scripts print comes from flood_load's
# `summary` lines and is reduced here the same way: medians over rounds,
# ratios within a round.
#
#   work_dir NAME        WORK, a fresh directory /tmp/herd-NAME.XXXXXX;
#                        PIDS, the processes to stop; on exit every PID is
#                        sent SIGTERM and waited for, and WORK removed
#   ports_free P...      exits 1, saying which, if something listens on a P
#   wait_port P          waits (10 s at most) until something accepts on P
#   field NAME           NAME=... of the last summary line on stdin
#   median               the median of the numbers on stdin (0 if none)
#   ratio A B            A / B with RATIO_DIGITS decimals (2), "-" if B is 0
#   cpu_ticks PID        user + system CPU time of PID so far, clock ticks
#   build_release [ARG..] builds the release binaries (and any other cargo
#                        build ARGs) into CARGO_TARGET_DIR (default ./target),
#                        sets BIN to where they are

SCRIPT=${0##*/}

work_dir() {
    WORK=$(mktemp -d "/tmp/herd-$1.XXXXXX")
    PIDS=()
    trap cleanup EXIT
    trap 'exit 130' INT TERM
}

cleanup() {
    for p in "${PIDS[@]:-}"; do
        if [ -n "$p" ]; then kill -TERM "$p" 2>/dev/null || true; fi
    done
    for p in "${PIDS[@]:-}"; do
        if [ -n "$p" ]; then wait "$p" 2>/dev/null || true; fi
    done
    rm -rf "$WORK"
}

ports_free() {
    for port in "$@"; do
        if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
            echo "$SCRIPT: something already listens on port $port (try --port)" >&2
            exit 1
        fi
    done
}

wait_port() {
    for _ in $(seq 200); do
        if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
        sleep 0.05
    done
    echo "$SCRIPT: nothing listens on port $1" >&2
    return 1
}

field() { grep '^summary' | tail -1 | tr ' ' '\n' | sed -n "s/^$1=//p"; }

median() { tr ' ' '\n' | grep -v '^$' | sort -g | awk '{v[NR]=$1} END {if (NR==0) print 0; else if (NR%2) print v[(NR+1)/2]; else print (v[NR/2]+v[NR/2+1])/2}'; }

ratio() { awk -v a="$1" -v b="$2" -v d="${RATIO_DIGITS:-2}" 'BEGIN { if (b > 0) printf "%.*f", d, a / b; else print "-" }'; }

cpu_ticks() { awk '{ sub(/^.*\) /, ""); print $12 + $13 }' "/proc/$1/stat"; }

build_release() {
    export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$PWD/target}
    echo "building release..." >&2
    cargo build --release --bins -q "$@"
    BIN=$CARGO_TARGET_DIR/release
}
