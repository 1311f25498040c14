# The wrk rounds of compare.sh (sourced by it, after its rollout-load rounds; uses its
# servers, data dir, settings, `target` and `share`). wrk is a second client, lighter than
# rollout-load: one thread (-t1), CONCURRENCY connections, keep-alive.
#   - baseline: bare warp's check-in route;
#   - idle: rollout's check-in with one device token that has no deployment (204);
#   - update: one device of the `updates` tenant, in the deployment rollout-load created
#     (every answer a 200 with a signed link);
#   - status: durable status reports of 256 devices of that deployment (wrk/status.lua);
#   - health, 404: `/health` and a path no route has.
# Every run records wrk's CPU (user + system, in % of one core) from /usr/bin/time, the
# server's CPU (from /proc/PID/stat) and the machine's steal time (from /proc/stat): on a
# virtual machine, a busy neighbour lowers req/s but not the CPU a request costs.

next_path=/api/devices/v1/deployments/device/deployments/next
query="artifact_name=factory-0.1&device_type=rollout-load-device"
mint() { "$BIN/rollout" token "$@" --data-dir "$tmp/data" --ttl 86400; }
idle_token=$(mint device --device wrk-idle)
update_token=$(mint device --tenant updates --device dev-00000000)
for i in $(seq 0 255); do
    mint device --tenant updates --device "$(printf 'dev-%08d' "$i")"
done >"$tmp/wrk-tokens.txt"
deployment=$(curl -sSf -H "Authorization: Bearer $(mint user --tenant updates --subject wrk)" \
    "$rollout/api/management/v1/deployments/deployments" |
    python3 -c 'import json, sys; print([d["id"] for d in json.load(sys.stdin) if d["status"] != "finished"][0])')
answer=$(curl -s -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $update_token" \
    "$rollout$next_path?$query")
if [ "$answer" != 200 ]; then
    echo "wrk: the update check-in answers $answer, not 200: its figure would not be one" >&2
    missed=$((missed + 1))
fi

seconds=$(awk -v d="$DURATION" 'BEGIN { sub(/s$/, "", d); print d + 0 }')
# wrk_run OUT PID URL [wrk flags]: the report in OUT, wrk's user+system seconds in OUT.cpu,
# and the server's CPU seconds and the machine's stolen seconds over the run in OUT.server
# (PID: the server measured)
wrk_run() {
    local out=$1 pid=$2 url=$3
    shift 3
    local server0 stolen0
    server0=$(cpu_of "$pid")
    stolen0=$(stolen)
    /usr/bin/time -f '%U %S' -o "$out.cpu" \
        wrk -t1 -c"$CONCURRENCY" -d"$DURATION" --latency "$@" "$url" >"$out"
    awk -v s0="$server0" -v s1="$(cpu_of "$pid")" -v t0="$stolen0" -v t1="$(stolen)" \
        'BEGIN { print s1 - s0, t1 - t0 }' >"$out.server"
}
wrk_rps() { sed -n 's/^Requests\/sec: *//p' "$1"; }
wrk_p99() { awk '$1 == "99%" { v = $2; if (v ~ /us$/) { sub(/us/, "", v); v /= 1000 }
    else if (v ~ /ms$/) { sub(/ms/, "", v) } else if (v ~ /s$/) { sub(/s/, "", v); v *= 1000 }
    print v }' "$1"; }
wrk_bad() { sed -n 's/^ *Non-2xx or 3xx responses: *//p' "$1" | grep . || echo 0; }
wrk_cpu() { awk -v s="$seconds" '{ printf "%.0f", 100 * ($1 + $2) / s }' "$1.cpu"; }
wrk_requests() { awk '/ requests in / { print $1 }' "$1"; }
# server CPU per request (µs), and stolen time in % of the machine's CPU time over the run
wrk_server_us() { awk -v n="$(wrk_requests "$1")" \
    '{ printf "%.1f", (n > 0) ? 1e6 * $1 / n : 0 }' "$1.server"; }
wrk_steal() { awk -v s="$seconds" -v c="$(nproc)" '{ printf "%.1f", 100 * $2 / s / c }' "$1.server"; }

echo
echo "wrk -t1 -c$CONCURRENCY, $DURATION per run, $ROUNDS rounds alternating:"
wrk -t1 -c"$CONCURRENCY" -d"$WARMUP" "$baseline$next_path" >/dev/null
wrk -t1 -c"$CONCURRENCY" -d"$WARMUP" -H "Authorization: Bearer $idle_token" \
    "$rollout$next_path?$query" >/dev/null
for round in $(seq 1 "$ROUNDS"); do
    wrk_run "$tmp/wrk-baseline-$round.txt" "$baseline_pid" "$baseline$next_path"
    wrk_run "$tmp/wrk-idle-$round.txt" "$rollout_pid" "$rollout$next_path?$query" \
        -H "Authorization: Bearer $idle_token"
    wrk_run "$tmp/wrk-update-$round.txt" "$rollout_pid" "$rollout$next_path?$query" \
        -H "Authorization: Bearer $update_token"
    WRK_TOKENS="$tmp/wrk-tokens.txt" WRK_DEPLOYMENT="$deployment" \
        wrk_run "$tmp/wrk-status-$round.txt" "$rollout_pid" "$rollout" -s load-tests/wrk/status.lua
    wrk_run "$tmp/wrk-health-$round.txt" "$rollout_pid" "$rollout/health"
    wrk_run "$tmp/wrk-404-$round.txt" "$rollout_pid" "$rollout/no/such/route"
done

# wrk_median RUN: the report of the median round by req/s
wrk_median() {
    for f in "$tmp/wrk-$1"-*.txt; do
        echo "$(wrk_rps "$f") $f"
    done | sort -g | awk '{ a[NR] = $2 } END { print a[int((NR + 1) / 2)] }'
}
printf '%-9s %-9s %10s %8s %9s %10s %14s %8s\n' server run "req/s" "p99 ms" "non-2xx" \
    "wrk CPU %" "server us/req" "steal %"
for run in baseline idle update status health 404; do
    f=$(wrk_median "$run")
    server=rollout
    [ "$run" = baseline ] && server=baseline
    printf '%-9s %-9s %10.0f %8s %9s %10s %14s %8s\n' "$server" "$run" "$(wrk_rps "$f")" \
        "$(wrk_p99 "$f")" "$(wrk_bad "$f")" "$(wrk_cpu "$f")" "$(wrk_server_us "$f")" \
        "$(wrk_steal "$f")"
done
for run in baseline idle update status health 404; do
    printf '%s req/s (server us/req) per round: ' "$run"
    for f in "$tmp/wrk-$run"-*.txt; do printf '%.0f (%s) ' "$(wrk_rps "$f")" "$(wrk_server_us "$f")"; done
    echo
done
echo
w_base=$(wrk_rps "$(wrk_median baseline)")
w_idle=$(wrk_rps "$(wrk_median idle)")
for run in idle update status health 404; do
    bad=$(wrk_bad "$(wrk_median "$run")")
    if [ "$bad" != 0 ] && [ "$run" != 404 ]; then
        echo "wrk: $bad unexpected answers in the median $run round" >&2
        missed=$((missed + 1))
    fi
done
target "wrk: rollout / baseline idle check-in throughput" "$(share "$w_idle" "$w_base")" ">=" 90 "%"
target "wrk: rollout / baseline check-ins handing out an update" \
    "$(share "$(wrk_rps "$(wrk_median update)")" "$w_base")" ">=" 80 "%"
target "wrk: rollout / baseline durable status reports" \
    "$(share "$(wrk_rps "$(wrk_median status)")" "$w_base")" ">=" 60 "%"
# "No slower than the check-in", with 5 points for the noise between runs.
target "wrk: /health / idle check-in" "$(share "$(wrk_rps "$(wrk_median health)")" "$w_idle")" ">=" 95 "%"
target "wrk: 404 / idle check-in" "$(share "$(wrk_rps "$(wrk_median 404)")" "$w_idle")" ">=" 95 "%"
# Not targets: what each request costs the server, beside bare warp's (a ratio that a slow
# spell of the machine moves less than req/s).
w_base_us=$(wrk_server_us "$(wrk_median baseline)")
for run in idle update status; do
    us=$(wrk_server_us "$(wrk_median "$run")")
    echo "wrk: server CPU per request, $run / baseline: $us / $w_base_us us ($(share "$us" "$w_base_us") %)"
done
