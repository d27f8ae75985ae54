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

# The two runs alternate for ROUNDS rounds: noise on this shared machine
# moves single runs by more than the effect being measured.
ROUNDS="${ROUNDS:-3}"
rows=() ratios=() best0=0 best1=0 errors=0
for r in $(seq "$ROUNDS"); do
  read -r rps0 err0 fo0 <<<"$(run 0)"
  read -r rps1 err1 fo1 <<<"$(run 5)"
  ratio=$(awk -v a="$rps1" -v b="$rps0" 'BEGIN {printf "%.0f", a / b * 100}')
  ratios+=("$ratio")
  rows+=("| $r | $rps0 | $rps1 | $ratio% | $((err0 + err1)) | $fo1 |")
  errors=$((errors + err0 + err1))
  best0=$(awk -v a="$best0" -v b="$rps0" 'BEGIN {print (b > a) ? b : a}')
  best1=$(awk -v a="$best1" -v b="$rps1" 'BEGIN {print (b > a) ? b : a}')
done
echo
echo "$(date -u +%Y-%m-%d) · $(nproc) cores · wrk -t2 -c64 -d${DURATION}s, $ROUNDS alternating rounds · $(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
echo
echo "| round | healthy req/s | with faults req/s | ratio | client-visible errors | failovers |"
echo "|---|---|---|---|---|---|"
printf '%s\n' "${rows[@]}"
median=$(printf '%s\n' "${ratios[@]}" | sort -n | awk '{a[NR] = $1} END {print a[int((NR + 1) / 2)]}')
awk -v a="$best1" -v b="$best0" -v m="$median" -v e="$errors" 'BEGIN {
  printf "\nbest with faults / best healthy: %.0f%% · median of the rounds: %s%% · client-visible errors: %d\n", a / b * 100, m, e }'
