#!/usr/bin/env bash
# Throughput and client-visible errors with one of two providers failing 20%
# of its calls, against the same setup with both healthy.
#
#   bench/failover.sh [DURATION_SECONDS]      (needs wrk)
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION="${1:-15}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"
cargo build --release -q -p loom-gateway -p loom-bench-upstream
BIN="$CARGO_TARGET_DIR/release"

run() { # fail_every -> "rps non2xx failovers"
  "$BIN/loom-bench-upstream" 18000 & local s=$!
  "$BIN/loom-bench-upstream" 18001 "$1" & local f=$!
  "$BIN/loom" serve --config bench/loom-failover.yaml & local l=$!
  for _ in $(seq 100); do curl -sf http://127.0.0.1:19091/ready >/dev/null && break; sleep 0.05; done
  wrk -t2 -c64 -d2s -s bench/chat.lua http://127.0.0.1:18080/v1/chat/completions >/dev/null
  local out
  out=$(wrk -t2 -c64 -d"${DURATION}s" -s bench/chat.lua http://127.0.0.1:18080/v1/chat/completions)
  local failovers
  failovers=$(curl -s http://127.0.0.1:19091/metrics | awk '/^loom_ai_failovers_total/ {s += $2} END {print s + 0}')
  kill "$s" "$f" "$l"; wait "$s" "$f" "$l" 2>/dev/null || true
  local rps non2xx
  rps=$(awk '/Requests\/sec/ {print $2}' <<<"$out")
  non2xx=$(awk '/Non-2xx/ {print $5}' <<<"$out")
  echo "$rps ${non2xx:-0} $failovers"
}

read -r rps0 err0 fo0 <<<"$(run 0)"
read -r rps1 err1 fo1 <<<"$(run 5)"
echo
echo "$(date -u +%Y-%m-%d) · $(nproc) cores · wrk -t2 -c64 -d${DURATION}s · $(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
echo
echo "| run | req/s | client-visible errors | failovers |"
echo "|---|---|---|---|"
echo "| both providers healthy | $rps0 | $err0 | $fo0 |"
echo "| flaky provider: 503 on 20% of its calls | $rps1 | $err1 | $fo1 |"
awk -v a="$rps1" -v b="$rps0" 'BEGIN {printf "\nthroughput with faults: %.0f%% of the healthy run\n", a / b * 100}'
