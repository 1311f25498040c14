# Shell helpers shared by the load-test scripts (compare.sh, stores.sh); source it from the
# repository root. Sets $tmp (removed on exit, with every server started through `start`).
tmp=$(mktemp -d)
pids=()
at_exit=()  # commands run on exit before the servers are stopped
cleanup() {
    for cmd in "${at_exit[@]}"; do
        eval "$cmd" || true
    done
    for pid in "${pids[@]}"; do
        kill "$pid" 2>/dev/null || true
    done
    for pid in "${pids[@]}"; do
        wait "$pid" 2>/dev/null || true
    done
    rm -rf "$tmp"
}
trap cleanup EXIT INT TERM

# start NAME CMD...: run CMD with stdout in $tmp/NAME.out; sets $addr to the URL it prints.
start() {
    local name=$1
    shift
    "$@" >"$tmp/$name.out" 2>"$tmp/$name.log" &
    pids+=($!)
    for _ in $(seq 1 600); do
        addr=$(sed -n 's/^listening on //p' "$tmp/$name.out")
        if [ -n "$addr" ]; then
            return 0
        fi
        if ! kill -0 "${pids[-1]}" 2>/dev/null; then
            echo "$name exited:" >&2
            cat "$tmp/$name.log" >&2
            exit 1
        fi
        sleep 0.1
    done
    echo "$name printed no address within 60 s" >&2
    exit 1
}

# CPU seconds (user + system) process $1 has used so far.
cpu_of() { awk -v hz="$(getconf CLK_TCK)" '{ printf "%.2f", ($14 + $15) / hz }' "/proc/$1/stat"; }
# CPU seconds the hypervisor has stolen from this machine so far, all its CPUs together.
stolen() { awk -v hz="$(getconf CLK_TCK)" 'NR == 1 { printf "%.2f", $9 / hz }' /proc/stat; }

# top-level number KEY of the JSON report FILE
num() { sed -n "s/^  \"$2\": \([0-9.e+-]*\),\{0,1\}$/\1/p" "$1" | head -n1; }
# number KEY of kind KIND in the JSON report FILE
kind_num() {
    awk -v kind="\"$2\": {" -v key="\"$3\":" '
        index($0, kind) { inside = 1; next }
        inside && index($0, key) { gsub(/[ ,]/, "", $2); print $2; exit }
        inside && /^    }/ { inside = 0 }
    ' FS=: "$1"
}

