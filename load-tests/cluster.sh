#!/usr/bin/env bash
# rollout as a cluster, on this machine over one Cassandra 5.0 node:
#  1. takeover: KILLS times, kill -9 the node holding a deployment's lease and time how long
#     until another node answers for the deployment again (a GET of it through a surviving
#     node, sent right after the kill and repeated until 200);
#  2. throughput through 1, 2 and 3 nodes: check-ins handing out an update and durable
#     status reports, devices spread over the nodes by rollout-load (`--server` repeated),
#     with the CPU seconds every rollout process used per 1,000 requests, so the cost of
#     forwarding requests to the deployment's owner shows even where two cores cannot show
#     scaling.
#
#   load-tests/cluster.sh                                # starts its own Cassandra node
#   ROLLOUT_TEST_CQL=127.0.0.1:9042 load-tests/cluster.sh
#   KILLS=10 DURATION=10s DEVICES=3000 CONCURRENCY=64 load-tests/cluster.sh
#
# Everything it starts is stopped on exit; on a node given through ROLLOUT_TEST_CQL it
# leaves its keyspaces (named in the output).
set -euo pipefail
cd "$(dirname "$0")/.."

KILLS=${KILLS:-10}
DEVICES=${DEVICES:-3000}
CONCURRENCY=${CONCURRENCY:-64}
DURATION=${DURATION:-10s}
BIN=${CARGO_TARGET_DIR:-target}/release

cargo build --release -p api --bin rollout -p load-tests --bin rollout-load
. load-tests/lib.sh

if [ -z "${ROLLOUT_TEST_CQL:-}" ]; then
    at_exit+=("scripts/cassandra-node stop '$tmp/cassandra' >/dev/null 2>&1")
    scripts/cassandra-node start "$tmp/cassandra" >/dev/null
    ROLLOUT_TEST_CQL=$(cat "$tmp/cassandra/cql")
fi
run=$(date +%s)
echo "machine: $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg); Cassandra at $ROLLOUT_TEST_CQL"

declare -A pid_of addr_of
# node NAME KEYSPACE: start node NAME on KEYSPACE (data dir, with the shared keys, per keyspace)
node() {
    start "$1" "$BIN/rollout" serve --listen 127.0.0.1:0 --data-dir "$tmp/$2" --node-id "$1" \
        --store scylla --scylla-nodes "$ROLLOUT_TEST_CQL" --scylla-keyspace "$2"
    pid_of[$1]=${pids[-1]}
    addr_of[$1]=$addr
}
halt() { kill -9 "${pid_of[$1]}" 2>/dev/null || true; wait "${pid_of[$1]}" 2>/dev/null || true; }
status_of() { # status_of KEYSPACE: rollout cluster status
    "$BIN/rollout" cluster status --data-dir "$tmp/$1" --store scylla 2>/dev/null \
        --scylla-nodes "$ROLLOUT_TEST_CQL" --scylla-keyspace "$1"
}
# load KEYSPACE OUT MIX NODES... [-- flags]: rollout-load over NODES; client CPU to OUT.cpu
load() {
    local ks=$1 out=$2 mix=$3
    shift 3
    local servers=()
    while [ $# -gt 0 ] && [ "$1" != -- ]; do
        servers+=(--server "${addr_of[$1]}")
        shift
    done
    [ $# -gt 0 ] && shift
    /usr/bin/time -f "%U %S" -o "$out.time" \
        "$BIN/rollout-load" "${servers[@]}" --data-dir "$tmp/$ks" --mode mixed \
        --devices "$DEVICES" --concurrency "$CONCURRENCY" --json --no-progress \
        --tenant cluster --mix "$mix" "$@" >"$out"
    awk '{ printf "%.2f", $1 + $2 }' "$out.time" >"$out.cpu"
}

# ---- 1. takeover ----
ks="rollout_takeover_$run"
node n1 "$ks"
node n2 "$ks"
node n3 "$ks"
load "$ks" /dev/null checkin=100,status=0,log=0 n1 -- --create-deployment --duration 1s
token=$("$BIN/rollout" token user --subject load --tenant cluster --data-dir "$tmp/$ks")
list="${addr_of[n1]}/api/management/v1/deployments/deployments"
deployment=$(curl -sS -H "Authorization: Bearer $token" "$list" | grep -o '"id":"[^"]*"' | head -n1 | cut -d'"' -f4)
[ -n "$deployment" ] || { echo "no deployment was created" >&2; exit 1; }
echo
echo "takeover: deployment $deployment in keyspace $ks, lease TTL 3 s (default), $KILLS kills"
times=()
for k in $(seq 1 "$KILLS"); do
    owner=$(status_of "$ks" | awk -v d="$deployment" '$1 == d { print $3 }')
    case "$owner" in n1|n2|n3) ;; *) echo "kill $k: no owner ($owner)" >&2; exit 1 ;; esac
    survivor=n1
    [ "$owner" = n1 ] && survivor=n2
    url="${addr_of[$survivor]}/api/management/v1/deployments/deployments/$deployment"
    started=$(date +%s.%N)
    halt "$owner"
    for _ in $(seq 1 100); do
        code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 10 \
            -H "Authorization: Bearer $token" "$url" || true)
        [ "$code" = 200 ] && break
        sleep 0.05
    done
    [ "$code" = 200 ] || { echo "kill $k: the deployment did not answer again" >&2; exit 1; }
    took=$(awk -v a="$started" -v b="$(date +%s.%N)" 'BEGIN { printf "%.2f", b - a }')
    new=$(status_of "$ks" | awk -v d="$deployment" '$1 == d { print $3 " epoch " $4 }')
    echo "kill $k: $owner killed, answering again after $took s (owner now $new)"
    times+=("$took")
    node "$owner" "$ks"
    sleep 2
done
printf '%s\n' "${times[@]}" | sort -g | awk '
    { t[NR] = $1 }
    END { printf "takeover over %d kills: min %.2f s, median %.2f s, max %.2f s\n", NR, t[1], t[int((NR + 1) / 2)], t[NR] }'
for n in n1 n2 n3; do halt "$n"; done

# ---- 2. throughput through 1, 2, 3 nodes ----
echo
echo "throughput: $DEVICES devices spread over the nodes, concurrency $CONCURRENCY, $DURATION per run"
printf '%-6s %-26s %9s %7s %7s %7s %24s\n' nodes measurement "req/s" "p50 ms" "p99 ms" errors \
    "CPU s/1k req rollout+cli"
for count in 1 2 3; do
    ks="rollout_cluster${count}_$run"
    names=()
    for i in $(seq 1 "$count"); do
        node "c$i" "$ks"
        names+=("c$i")
    done
    load "$ks" /dev/null checkin=100,status=0,log=0 c1 -- --create-deployment --duration 2s
    for measure in update status; do
        mix=checkin=100,status=0,log=0
        kind=checkin-200
        label="check-ins with an update"
        if [ "$measure" = status ]; then
            mix=checkin=0,status=100,log=0
            kind=status
            label="durable status reports"
        fi
        out="$tmp/$ks-$measure.json"
        before=0
        for n in "${names[@]}"; do before=$(awk -v a="$before" -v b="$(cpu_of "${pid_of[$n]}")" 'BEGIN { print a + b }'); done
        load "$ks" "$out" "$mix" "${names[@]}" -- --duration "$DURATION"
        after=0
        for n in "${names[@]}"; do after=$(awk -v a="$after" -v b="$(cpu_of "${pid_of[$n]}")" 'BEGIN { print a + b }'); done
        rps=$(kind_num "$out" "$kind" rps)
        seconds=${DURATION%s}
        per_k=$(awk -v a="$before" -v b="$after" -v r="$rps" -v s="$seconds" -v c="$(cat "$out.cpu")" \
            'BEGIN { n = r * s / 1000; if (n > 0) printf "%.3f + %.3f", (b - a) / n, c / n; else print "-" }')
        printf '%-6s %-26s %9.0f %7s %7s %7s %24s\n' "$count" "$label" "$rps" \
            "$(kind_num "$out" "$kind" p50_ms)" "$(kind_num "$out" "$kind" p99_ms)" \
            "$(num "$out" errors)" "$per_k"
    done
    for n in "${names[@]}"; do halt "$n"; done
done
