#!/usr/bin/env bash
# Durable status reports and check-ins handing out an update, over HTTP, with rollout on the
# embedded store beside rollout on a real Cassandra 5.0 node (the ScyllaDB store), measured by
# the same rollout-load client in the same run, rounds alternating between the two.
#
#   load-tests/stores.sh                      # starts its own node (scripts/cassandra-node)
#   ROLLOUT_TEST_CQL=127.0.0.1:9042 load-tests/stores.sh   # or uses a running one
#   DURATION=20s CONCURRENCY=128 ROUNDS=5 load-tests/stores.sh
#
# Prints, per store and measurement, the median round's req/s and latencies, and the CPU
# seconds the client, rollout and (when started here) the Cassandra node each used, so that
# a client or node that is the bottleneck shows. Everything it starts is stopped on exit;
# on a node given through ROLLOUT_TEST_CQL it leaves its keyspace (named in the output).
set -euo pipefail
cd "$(dirname "$0")/.."

DEVICES=${DEVICES:-5000}
CONCURRENCY=${CONCURRENCY:-64}
DURATION=${DURATION:-10s}
WARMUP=${WARMUP:-3s}
ROUNDS=${ROUNDS:-3}
BIN=${CARGO_TARGET_DIR:-target}/release

cargo build --release -p api --bin rollout -p load-tests --bin rollout-load
. load-tests/lib.sh

node_pid=""
if [ -z "${ROLLOUT_TEST_CQL:-}" ]; then
    at_exit+=("scripts/cassandra-node stop '$tmp/node' >/dev/null 2>&1")
    scripts/cassandra-node start "$tmp/node" >/dev/null
    ROLLOUT_TEST_CQL=$(cat "$tmp/node/cql")
    node_pid=$(cat "$tmp/node/pid")
fi
keyspace="rollout_stores_$(date +%s)"

start embedded "$BIN/rollout" serve --listen 127.0.0.1:0 --data-dir "$tmp/embedded"
embedded=$addr
start cassandra "$BIN/rollout" serve --listen 127.0.0.1:0 --data-dir "$tmp/cassandra" \
    --store scylla --scylla-nodes "$ROLLOUT_TEST_CQL" --scylla-keyspace "$keyspace"
cassandra=$addr
declare -A pid_of=([embedded]=${pids[0]} [cassandra]=${pids[1]})


# mixed NAME OUT MIX [flags]: rollout-load against server NAME, only the request kinds of
# MIX, for the devices of tenant `updates`; client CPU seconds go to OUT.cpu.
mixed() {
    local name=$1 out=$2 mix=$3
    shift 3
    /usr/bin/time -f "%U %S" -o "$out.time" \
        "$BIN/rollout-load" --server "${!name}" --data-dir "$tmp/$name" --mode mixed \
        --devices "$DEVICES" --concurrency "$CONCURRENCY" --json --no-progress \
        --tenant updates --mix "$mix" "$@" >"$out"
    awk '{ printf "%.2f", $1 + $2 }' "$out.time" >"$out.cpu"
}

echo "machine: $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg);" \
    "Cassandra at $ROLLOUT_TEST_CQL, keyspace $keyspace;" \
    "$DEVICES devices, concurrency $CONCURRENCY, $DURATION per run"
for name in embedded cassandra; do
    mixed "$name" /dev/null checkin=100,status=0,log=0 --create-deployment --duration "$WARMUP"
done

declare -A wrk_rps wrk_cpu
for round in $(seq 1 "$ROUNDS"); do
    for name in embedded cassandra; do
        for run in update status; do
            mix=checkin=100,status=0,log=0
            [ "$run" = status ] && mix=checkin=0,status=100,log=0
            out="$tmp/$name-$run-$round.json"
            before=$(cpu_of "${pid_of[$name]}")
            node_before=$([ -n "$node_pid" ] && cpu_of "$node_pid" || echo 0)
            mixed "$name" "$out" "$mix" --duration "$DURATION"
            awk -v a="$before" -v b="$(cpu_of "${pid_of[$name]}")" \
                'BEGIN { printf "%.2f", b - a }' >"$out.server"
            node_after=$([ -n "$node_pid" ] && cpu_of "$node_pid" || echo 0)
            awk -v a="$node_before" -v b="$node_after" 'BEGIN { printf "%.2f", b - a }' >"$out.node"
        done
    done
done

# A second client: wrk (Debian's), on the update check-in of one device of the deployment,
# so a figure limited by rollout-load shows as such.
wrk_check() { # wrk_check NAME: prints "req/s client-CPU-s"
    local name=$1 token query
    token=$("$BIN/rollout" token device --tenant updates --device dev-00000001 \
        --data-dir "$tmp/$name")
    query="artifact_name=factory-0.1&device_type=rollout-load-device"
    /usr/bin/time -f "%U %S" -o "$tmp/wrk-$name.time" \
        wrk -t2 -c"$CONCURRENCY" -d"$DURATION" -H "Authorization: Bearer $token" \
        "${!name}/api/devices/v1/deployments/device/deployments/next?$query" >"$tmp/wrk-$name.out"
    printf '%.0f %.2f' "$(sed -n 's/^Requests\/sec: *//p' "$tmp/wrk-$name.out")" \
        "$(awk '{ print $1 + $2 }' "$tmp/wrk-$name.time")"
}
if command -v wrk >/dev/null; then
    for name in embedded cassandra; do
        read -r rps cpu <<<"$(wrk_check "$name")"
        wrk_rps[$name]=$rps
        wrk_cpu[$name]=$cpu
    done
fi

# median NAME RUN KIND: the report of the median round by that kind's req/s
median() {
    for f in "$tmp/$1-$2"-*.json; do
        echo "$(kind_num "$f" "$3" rps) $f"
    done | sort -g | awk '{ a[NR] = $2 } END { print a[int((NR + 1) / 2)] }'
}
rounds() {
    for f in "$tmp/$1-$2"-*.json; do printf '%.0f ' "$(kind_num "$f" "$3" rps)"; done
}

echo
echo "median of $ROUNDS rounds (CPU seconds over the $DURATION run: client / rollout / Cassandra node):"
printf '%-10s %-24s %9s %7s %7s %8s %6s %18s\n' store measurement "req/s" "p50 ms" "p99 ms" \
    "p99.9 ms" errors "CPU s cli/srv/node"
for run in update status; do
    kind=checkin-200
    label="check-ins with an update"
    [ "$run" = status ] && kind=status && label="durable status reports"
    for name in embedded cassandra; do
        f=$(median "$name" "$run" "$kind")
        printf '%-10s %-24s %9.0f %7s %7s %8s %6s %18s\n' "$name" "$label" \
            "$(kind_num "$f" "$kind" rps)" "$(kind_num "$f" "$kind" p50_ms)" \
            "$(kind_num "$f" "$kind" p99_ms)" "$(kind_num "$f" "$kind" p999_ms)" \
            "$(num "$f" errors)" "$(cat "$f.cpu") / $(cat "$f.server") / $(cat "$f.node")"
    done
done
echo
for run in update status; do
    kind=checkin-200
    [ "$run" = status ] && kind=status
    echo "$run req/s per round: embedded $(rounds embedded "$run" "$kind")| cassandra $(rounds cassandra "$run" "$kind")"
done
if [ ${#wrk_rps[@]} -gt 0 ]; then
    echo "wrk, one device's update check-in, c=$CONCURRENCY: embedded ${wrk_rps[embedded]} req/s" \
        "(wrk CPU ${wrk_cpu[embedded]} s) | cassandra ${wrk_rps[cassandra]} req/s (wrk CPU ${wrk_cpu[cassandra]} s)"
else
    echo "wrk not installed (apt-get install wrk): no second-client check"
fi
