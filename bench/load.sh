#!/usr/bin/env bash
# `make load`: HTTP load on `warden serve` and on `wasmtime serve` running the
# `warden export-http` app of the same plugin: same body, same concurrency,
# loopback only, bounded duration. Prints the side-by-side table and writes it
# at the end of docs/performance.md (from the `<!-- make load -->` marker on).
#
# Usage: bench/load.sh WARDEN WASMTIME PLUGIN.wasm [SECONDS]
set -euo pipefail

warden=$1
wasmtime=$2
plugin=$3
seconds=${4:-10}
concurrencies=(1 4 16)
work=target/load
action=count-vowels
body='the quick brown fox jumps over the lazy dog'

mkdir -p "$work"
cat >"$work/post.lua" <<LUA
wrk.method = "POST"
wrk.body = "$body"
wrk.headers["Content-Type"] = "application/octet-stream"
LUA
cat >"$work/warden.toml" <<TOML
[defaults.trust]
unsigned = "allow"

[plugins.hello]
path = "$(realpath "$plugin")"
TOML
"$warden" export-http "$plugin" -o "$work/hello-http.wasm" >/dev/null

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

wait_for() {
    local url=$1
    for _ in $(seq 1 300); do
        if curl -fsS -o /dev/null -X POST --data "$body" "$url" 2>/dev/null; then return 0; fi
        sleep 0.1
    done
    echo "load: $url never answered" >&2
    return 1
}

# Runs wrk against URL at each concurrency; prints "c req/s p50 p99" lines.
measure() {
    local url=$1
    for c in "${concurrencies[@]}"; do
        local threads=$((c < 2 ? c : 2))
        wrk -t "$threads" -c "$c" -d "${seconds}s" --latency -s "$work/post.lua" "$url" >"$work/wrk.out"
        if grep -q "Non-2xx" "$work/wrk.out"; then
            echo "load: non-2xx replies from $url at concurrency $c:" >&2
            cat "$work/wrk.out" >&2
            return 1
        fi
        local rps p50 p99
        rps=$(awk '/^Requests\/sec:/ { printf "%.0f", $2 }' "$work/wrk.out")
        p50=$(awk '$1 == "50%" { print $2 }' "$work/wrk.out")
        p99=$(awk '$1 == "99%" { print $2 }' "$work/wrk.out")
        echo "$c $rps $p50 $p99"
    done
}

stop() {
    kill -TERM "$1" 2>/dev/null || true
    wait "$1" 2>/dev/null || true
}

wasmtime_version=$("$wasmtime" --version | awk '{ print $2 }')
port=$(free_port)
"$warden" serve --manifest "$work/warden.toml" --addr "127.0.0.1:$port" 2>"$work/warden-serve.log" &
warden_pid=$!
trap 'stop $warden_pid' EXIT
wait_for "http://127.0.0.1:$port/plugins/hello/$action"
echo "measuring warden serve (${seconds}s per concurrency)…" >&2
warden_results=$(measure "http://127.0.0.1:$port/plugins/hello/$action")
stop "$warden_pid"

port=$(free_port)
"$wasmtime" serve -O pooling-allocator=y -Scli --addr "127.0.0.1:$port" "$work/hello-http.wasm" \
    2>"$work/wasmtime-serve.log" &
wasmtime_pid=$!
trap 'stop $wasmtime_pid' EXIT
wait_for "http://127.0.0.1:$port/$action"
echo "measuring wasmtime serve (${seconds}s per concurrency)…" >&2
wasmtime_results=$(measure "http://127.0.0.1:$port/$action")
stop "$wasmtime_pid"

table=$(
    echo "| connections | warden serve req/s | p50 | p99 | wasmtime serve req/s | p50 | p99 | warden / wasmtime |"
    echo "|---:|---:|---:|---:|---:|---:|---:|---:|"
    paste -d ' ' <(echo "$warden_results") <(echo "$wasmtime_results") |
        awk '{ printf "| %s | %s | %s | %s | %s | %s | %s | %.2f× |\n", $1, $2, $3, $4, $6, $7, $8, $2 / $6 }'
)
echo "$table"

section="<!-- make load -->
## HTTP load: \`warden serve\` and \`wasmtime serve\`

Measured by \`make load\` (\`bench/load.sh\`) on $(nproc) cores, $(date -u +%Y-%m-%d): wrk on
loopback, POST of a ${#body}-byte body to the hello plugin's \`$action\`, ${seconds} s per row, both
servers creating a fresh instance per request. \`warden serve\` runs with its defaults (grants,
per-call reports, metrics and access logs on; logs to a file); \`wasmtime serve -O
pooling-allocator=y -Scli\` (the official wasmtime $wasmtime_version release binary that \`make wasmtime\`
fetches) runs the app \`warden export-http\` builds from the same plugin. wrk
shares the machine's cores with the server. Per request, the exported app instantiates three components
(the plugin, Warden's HTTP adapter and the logging shim, since hello imports \`wasi:logging\`);
\`warden serve\` instantiates the plugin alone and answers HTTP in the host.

$table
"
doc=docs/performance.md
if grep -q '<!-- make load -->' "$doc"; then
    sed -i '/<!-- make load -->/,$d' "$doc"
fi
printf '%s' "$section" >>"$doc"
echo "wrote the table at the end of $doc" >&2
