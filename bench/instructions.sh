#!/usr/bin/env bash
# Counts the user-space instructions Loom executes per request, under
# callgrind: a figure that, unlike CPU time on a shared 2-core machine, is the
# same from run to run, so it shows whether a change made the hot path
# cheaper. Kernel time (syscalls) is not included.
#
#   bench/instructions.sh        (needs valgrind and wrk)
#   LOOM_CONFIG=FILE WRK_HEADER="X-API-Key: k" bench/instructions.sh   (another configuration)
#   LOOM_CONFIG=bench/loom-failover.yaml SECOND_UPSTREAM="18001 5" bench/instructions.sh
#                                  (a second upstream, here failing one call in five)
#   LOOM_CONFIG=bench/loom-guardrails.yaml CHAT_LUA=bench/chat-2k.lua bench/instructions.sh
#                                  (every guardrail on, a 2 KB prompt; compare with
#                                   CHAT_LUA=bench/chat-2k.lua alone)
#   LOOM_BIN_DIR=/some/dir bench/instructions.sh   (profiling binaries built earlier, for A/B)
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"
if [ -n "${LOOM_BIN_DIR:-}" ]; then
  BIN="$LOOM_BIN_DIR"
else
  cargo build --profile profiling -q -p loom-gateway -p loom-bench-upstream
  BIN="$CARGO_TARGET_DIR/profiling"
fi
OUT=$(mktemp -d)
"$BIN/loom-bench-upstream" 18000 & UP=$!
UP2=
# shellcheck disable=SC2086
[ -n "${SECOND_UPSTREAM:-}" ] && { "$BIN/loom-bench-upstream" $SECOND_UPSTREAM & UP2=$!; }
LOOM_WORKER_THREADS=1 valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file="$OUT/cg.%p" \
  "$BIN/loom" serve --config "${LOOM_CONFIG:-bench/loom-bench.yaml}" >"$OUT/vg.log" 2>&1 & VG=$!
trap 'kill $UP $UP2 $VG 2>/dev/null || true; rm -rf "$OUT"' EXIT
for _ in $(seq 200); do curl -sf http://127.0.0.1:19091/ready >/dev/null && break; sleep 0.1; done

measure() { # label url [lua]
  local label=$1 url=$2 lua=${3:-}
  local hdr=(); [ -n "${WRK_HEADER:-}" ] && hdr=(-H "$WRK_HEADER")
  wrk -t1 -c4 -d2s "${hdr[@]}" ${lua:+-s "$lua"} "$url" >/dev/null  # warm-up
  callgrind_control -z "$VG" >/dev/null 2>&1
  callgrind_control -i on "$VG" >/dev/null 2>&1
  local reqs
  reqs=$(wrk -t1 -c4 -d5s "${hdr[@]}" ${lua:+-s "$lua"} "$url" | awk '/requests in/ {print $1}')
  callgrind_control -i off "$VG" >/dev/null 2>&1
  callgrind_control -d "$VG" >/dev/null 2>&1
  local file total
  # Sum every dump of this window (one file per dump, per thread part).
  total=$(for f in "$OUT"/cg.*; do callgrind_annotate "$f" 2>/dev/null; done \
    | awk '/PROGRAM TOTALS/ {gsub(",", "", $1); s += $1} END {print s + 0}')
  echo "| $label | $reqs | $((total / reqs)) |"
  [ -n "${KEEP_PROFILE:-}" ] && mkdir -p "$KEEP_PROFILE/${label// /_}" && cp "$OUT"/cg.* "$KEEP_PROFILE/${label// /_}/" 2>/dev/null
  rm -f "$OUT"/cg.*
}

echo "| workload | requests | instructions per request |"
echo "|---|---|---|"
measure "chat completion (non-stream)" http://127.0.0.1:18080/v1/chat/completions "${CHAT_LUA:-bench/chat.lua}"
measure "chat completion (stream, 24 events)" http://127.0.0.1:18080/v1/chat/completions bench/chat-stream.lua
measure "proxy route GET" http://127.0.0.1:18080/plain/hello
