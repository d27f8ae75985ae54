#!/usr/bin/env bash
# Loom's user and system CPU per request, apart: `/proc/PID/stat` around a
# 6-second `wrk -t2 -c64` window. Shows which side a change moved (Loom's own
# code, or the kernel's loopback TCP), which CPU per request alone does not.
#
#   bench/cpu-split.sh BIN_DIR URL [LUA]
#   bench/cpu-split.sh "$CARGO_TARGET_DIR/profiling" http://127.0.0.1:18080/plain/hello
#   bench/cpu-split.sh "$CARGO_TARGET_DIR/profiling" http://127.0.0.1:18080/v1/chat/completions bench/chat.lua
#   (BIN_DIR holds loom and loom-bench-upstream; needs wrk)
set -euo pipefail
cd "$(dirname "$0")/.."
B=$1 URL=$2 LUA=${3:-}
"$B/loom-bench-upstream" 18000 >/dev/null 2>&1 & UP=$!
"$B/loom" serve --config bench/loom-bench.yaml >/dev/null 2>&1 & L=$!
trap 'kill $L $UP 2>/dev/null || true' EXIT
for _ in $(seq 100); do curl -sf http://127.0.0.1:19091/ready >/dev/null && break; sleep 0.05; done
wrk -t2 -c64 -d2s ${LUA:+-s "$LUA"} "$URL" >/dev/null
read -r u0 s0 < <(awk '{print $14, $15}' "/proc/$L/stat")
n=$(wrk -t2 -c64 -d6s ${LUA:+-s "$LUA"} "$URL" | awk '/requests in/ {print $1}')
read -r u1 s1 < <(awk '{print $14, $15}' "/proc/$L/stat")
awk -v u=$((u1 - u0)) -v s=$((s1 - s0)) -v n="$n" -v hz="$(getconf CLK_TCK)" \
  'BEGIN {printf "%d requests, user %.1f µs, system %.1f µs per request\n", n, u / hz * 1e6 / n, s / hz * 1e6 / n}'
