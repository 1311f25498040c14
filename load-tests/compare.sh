#!/usr/bin/env bash
# Check-in and status-report throughput and latency of rollout beside a bare warp server
# (baseline-server), measured by two clients on this machine, one server after the other:
# rollout-load, and wrk (Debian's; skipped with a note when it is not installed). Each run
# also reports the client's own CPU: a client that uses a whole core measures itself.
#
#   load-tests/compare.sh            # defaults below
#   DURATION=20s CONCURRENCY=128 load-tests/compare.sh
#
# 1. builds rollout, rollout-load and baseline-server in release;
# 2. starts baseline-server and `rollout serve` on ephemeral ports (rollout with a temp data
#    dir, whose token key rollout-load signs the device tokens with);
# 3. closed loop: `rollout-load --mode checkin` against each → max req/s, and the ratio;
# 4. open loop at half of rollout's max rate against each → p50/p99 at that rate;
# 5. wrk -t1: idle check-in with one token beside the baseline, check-ins handing out an
#    update, durable status reports (load-tests/wrk/status.lua), /health and a 404; each
#    with the server's CPU per request and the share of the machine's time stolen by its
#    hypervisor, the two figures that stay put when a neighbour slows the machine down.
# Each measurement is taken ROUNDS times, alternating between the servers; the median round
# is reported. On a shared machine, run it when nothing else is busy (see the load average
# it prints).
# Servers and the temp dir are removed on exit, whatever happens.
set -euo pipefail
cd "$(dirname "$0")/.."

DEVICES=${DEVICES:-1000}
CONCURRENCY=${CONCURRENCY:-64}
DURATION=${DURATION:-10s}
WARMUP=${WARMUP:-2s}
ROUNDS=${ROUNDS:-3}
TARGET_DIR=${CARGO_TARGET_DIR:-target}
BIN=$TARGET_DIR/release

cargo build --release -p api --bin rollout -p load-tests --bin rollout-load --bin baseline-server

. load-tests/lib.sh

start baseline "$BIN/baseline-server" --listen 127.0.0.1:0
baseline=$addr
baseline_pid=${pids[-1]}
start rollout "$BIN/rollout" serve --listen 127.0.0.1:0 --data-dir "$tmp/data"
rollout=$addr
rollout_pid=${pids[-1]}

load() { # load SERVER OUT [extra flags]
    local server=$1 out=$2
    shift 2
    "$BIN/rollout-load" --server "$server" --data-dir "$tmp/data" --mode checkin \
        --devices "$DEVICES" --concurrency "$CONCURRENCY" --json --no-progress "$@" >"$out"
}

echo "machine: $(nproc) cores, $(sed -n 's/^model name\s*: //p' /proc/cpuinfo | head -n1)," \
    "load average $(cut -d' ' -f1-3 /proc/loadavg)"
echo "baseline-server at $baseline, rollout at $rollout;" \
    "$DEVICES devices, concurrency $CONCURRENCY, $DURATION per run"

# Rounds alternate between the servers, so that a burst of other work on the machine hits
# both; each figure below is the median round (every round is listed too).
for name in baseline rollout; do
    load "${!name}" /dev/null --duration "$WARMUP"
done
# Check-ins that hand out an update, and durable status reports: rollout-load creates a
# deployment for the devices of another tenant (so the idle runs stay idle), then runs
# `mixed` with only that kind of request. Held to the same closed-loop baseline. Each round
# runs every measurement, so a slow spell of the machine hits all of them alike.
mixed() { # mixed OUT MIX [extra flags]
    local out=$1 mix=$2
    shift 2
    "$BIN/rollout-load" --server "$rollout" --data-dir "$tmp/data" --mode mixed \
        --devices "$DEVICES" --concurrency "$CONCURRENCY" --json --no-progress \
        --tenant updates --mix "$mix" "$@" >"$out"
}
mixed /dev/null checkin=100,status=0,log=0 --create-deployment --duration "$WARMUP"
for round in $(seq 1 "$ROUNDS"); do
    for name in baseline rollout; do
        load "${!name}" "$tmp/$name-max-$round.json" --duration "$DURATION"
    done
    mixed "$tmp/rollout-update-$round.json" checkin=100,status=0,log=0 --duration "$DURATION"
    mixed "$tmp/rollout-status-$round.json" checkin=0,status=100,log=0 --duration "$DURATION"
done

# value FILE [KIND] KEY: a top-level number, or a number of one request kind
value() { if [ $# -eq 3 ]; then kind_num "$@"; else num "$@"; fi; }
# median NAME RUN [KIND] KEY: the report file of the median round by that number
median() {
    local name=$1 run=$2
    shift 2
    for f in "$tmp/$name-$run"-*.json; do
        echo "$(value "$f" "$@") $f"
    done | sort -g | awk '{ a[NR] = $2 } END { print a[int((NR + 1) / 2)] }'
}
# rounds NAME RUN [KIND] KEY: that number in every round
rounds() {
    local name=$1 run=$2
    shift 2
    for f in "$tmp/$name-$run"-*.json; do
        printf '%.5g ' "$(value "$f" "$@")"
    done
}

base_max=$(median baseline max throughput_rps)
roll_max=$(median rollout max throughput_rps)
base_rps=$(num "$base_max" throughput_rps)
roll_rps=$(num "$roll_max" throughput_rps)
half=$(awk -v r="$roll_rps" 'BEGIN { printf "%.0f", r / 2 }')

for round in $(seq 1 "$ROUNDS"); do
    for name in baseline rollout; do
        load "${!name}" "$tmp/$name-half-$round.json" --duration "$DURATION" --rate "$half"
    done
done
base_half=$(median baseline half checkin-200 p99_ms)
roll_half=$(median rollout half checkin-204 p99_ms)

roll_update=$(median rollout update checkin-200 rps)
roll_status=$(median rollout status status rps)

row() { # row NAME FILE KIND LABEL
    local f=$2
    printf '%-9s %-22s %10.0f %8s %8s %8s %8s %7s\n' "$1" "$4" "$(kind_num "$f" "$3" rps)" \
        "$(kind_num "$f" "$3" p50_ms)" "$(kind_num "$f" "$3" p99_ms)" \
        "$(kind_num "$f" "$3" p999_ms)" "$(kind_num "$f" "$3" max_ms)" "$(num "$f" errors)"
}
echo
echo "median of $ROUNDS rounds:"
printf '%-9s %-22s %10s %8s %8s %8s %8s %7s\n' server run "req/s" "p50 ms" "p99 ms" \
    "p99.9 ms" "max ms" errors
row baseline "$base_max" checkin-200 "closed loop, c=$CONCURRENCY"
row rollout "$roll_max" checkin-204 "closed loop, c=$CONCURRENCY"
row baseline "$base_half" checkin-200 "open loop, $half/s"
row rollout "$roll_half" checkin-204 "open loop, $half/s"
row rollout "$roll_update" checkin-200 "update check-ins, c=$CONCURRENCY"
row rollout "$roll_status" status "status reports, c=$CONCURRENCY"
echo
echo "closed-loop req/s per round: baseline $(rounds baseline max throughput_rps)| rollout $(rounds rollout max throughput_rps)"
echo "update check-ins req/s per round: $(rounds rollout update checkin-200 rps)| status reports req/s per round: $(rounds rollout status status rps)"
echo "open-loop p99 ms per round:  baseline $(rounds baseline half checkin-200 p99_ms)| rollout $(rounds rollout half checkin-204 p99_ms)"
echo
# Each target: print the figure beside it, and remember a miss (the exit status says).
missed=0
target() { # target LABEL VALUE OP LIMIT UNIT
    if awk -v v="$2" -v l="$4" -v op="$3" 'BEGIN { exit !((op == ">=") ? v >= l : v < l) }'; then
        printf '%s: %.1f %s (target %s %s %s) ok\n' "$1" "$2" "$5" "$3" "$4" "$5"
    else
        printf '%s: %.1f %s (target %s %s %s) MISSED\n' "$1" "$2" "$5" "$3" "$4" "$5"
        missed=$((missed + 1))
    fi
}
share() { awk -v r="$1" -v b="$2" 'BEGIN { printf "%.1f", (b > 0) ? 100 * r / b : 0 }'; }
update_rps=$(kind_num "$roll_update" checkin-200 rps)
status_rps=$(kind_num "$roll_status" status rps)
target "rollout-load: rollout / baseline idle check-in throughput" "$(share "$roll_rps" "$base_rps")" ">=" 90 "%"
target "rollout-load: rollout p99 at $half req/s" "$(kind_num "$roll_half" checkin-204 p99_ms)" "<" 5 ms
target "rollout-load: rollout / baseline check-ins handing out an update" \
    "$(share "$update_rps" "$base_rps")" ">=" 80 "%"
target "rollout-load: rollout / baseline durable status reports" "$(share "$status_rps" "$base_rps")" ">=" 60 "%"
echo "rollout-load's own CPU (% of one core), median round: baseline $(num "$base_max" client_cpu_percent), rollout idle $(num "$roll_max" client_cpu_percent)"

if command -v wrk >/dev/null 2>&1; then
    . load-tests/wrk.sh
else
    echo "wrk is not installed (apt-get install wrk): the wrk rounds were skipped"
    missed=$((missed + 1))
fi
if [ "$missed" -gt 0 ]; then
    echo "$missed target(s) missed"
    exit 1
fi
