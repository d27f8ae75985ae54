#!/usr/bin/env bash
# Proxy-Wasm overhead end to end, in one run: the same proxy route without
# plugins, with a filter that does nothing, and with the header filter
# (adds a request and a response header), 64 connections each. Prints a
# Markdown table for docs/benchmarks.md.
#
#   bench/plugins.sh [DURATION_SECONDS]      (needs wrk: apt-get install wrk)
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION="${1:-15}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"
command -v wrk >/dev/null || { echo "wrk is needed: apt-get install wrk" >&2; exit 1; }

cargo build --release -q -p loom-gateway -p loom-bench-upstream
BIN="$CARGO_TARGET_DIR/release"
"$BIN/loom-bench-upstream" 18000 & UP=$!
"$BIN/loom" serve --config bench/loom-plugins.yaml & LOOM=$!
trap 'kill $UP $LOOM 2>/dev/null || true' EXIT
for _ in $(seq 200); do curl -sf http://127.0.0.1:19091/ready >/dev/null && break; sleep 0.05; done
curl -sf -D - -o /dev/null http://127.0.0.1:18080/hdr/hello | grep -qi '^x-plugin: add-header' ||
  { echo "the header plugin is not answering" >&2; exit 1; }

ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
hz=$(getconf CLK_TCK)

# run URL -> "rps p50 p99 requests ticks"
run() {
  wrk -t2 -c64 -d2s "$1" >/dev/null  # warm-up
  local before after out
  before=$(ticks "$LOOM")
  out=$(wrk -t2 -c64 -d"${DURATION}s" --latency "$1")
  after=$(ticks "$LOOM")
  echo "$(awk '/Requests\/sec/ {print $2}' <<<"$out") $(awk '$1=="50%" {print $2}' <<<"$out") \
$(awk '$1=="99%" {print $2}' <<<"$out") $(awk '/requests in/ {print $1}' <<<"$out") $((after - before))"
}

echo
echo "| route | requests/s | p50 | p99 | Loom CPU µs/request | throughput vs none |"
echo "|---|---|---|---|---|---|"
base=""
for r in plain noop hdr; do
  read -r rps p50 p99 reqs t <<<"$(run "http://127.0.0.1:18080/$r/hello")"
  [ -z "$base" ] && base=$rps
  cpu=$(awk -v t="$t" -v hz="$hz" -v n="$reqs" 'BEGIN {printf "%.1f", t / hz * 1e6 / n}')
  ratio=$(awk -v a="$rps" -v b="$base" 'BEGIN {printf "%.0f%%", a / b * 100}')
  label=$([ "$r" = plain ] && echo "no plugin" || echo "$r")
  echo "| $label | $rps | $p50 | $p99 | $cpu | $ratio |"
done
