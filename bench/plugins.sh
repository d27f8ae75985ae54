#!/usr/bin/env bash
# Proxy-Wasm overhead end to end, in one run: the same proxy route without
# plugins, with a filter that does nothing, and with the header filter
# (adds a request and a response header), 64 connections each. Prints a
# Markdown table for docs/benchmarks.md.
#
# Routes are measured in rounds (no plugin, noop, header filter, then again),
# and each plugin is compared with the no-plugin run of its own round: on a
# shared 2-core machine throughput drifts by more than the 10% being
# measured over a minute, so a ratio taken minutes apart says little. The
# last lines give the median over rounds.
#
#   bench/plugins.sh [DURATION_SECONDS]      (needs wrk: apt-get install wrk)
#   ROUNDS=5 bench/plugins.sh 10             (more rounds; default 3)
#   LOOM_BIN_DIR=/some/dir bench/plugins.sh  (binaries built earlier, for A/B runs)
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION="${1:-15}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"
command -v wrk >/dev/null || { echo "wrk is needed: apt-get install wrk" >&2; exit 1; }

ROUNDS="${ROUNDS:-3}"
if [ -n "${LOOM_BIN_DIR:-}" ]; then
  BIN="$LOOM_BIN_DIR"
else
  cargo build --release -q -p loom-gateway -p loom-bench-upstream
  BIN="$CARGO_TARGET_DIR/release"
fi
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
echo "| round | route | requests/s | p50 | p99 | Loom CPU µs/request | throughput vs none (same round) |"
echo "|---|---|---|---|---|---|---|"
ratios_noop=() ratios_hdr=() added_noop=() added_hdr=()
for round in $(seq "$ROUNDS"); do
  base="" base_cpu=""
  for r in plain noop hdr; do
    read -r rps p50 p99 reqs t <<<"$(run "http://127.0.0.1:18080/$r/hello")"
    cpu=$(awk -v t="$t" -v hz="$hz" -v n="$reqs" 'BEGIN {printf "%.1f", t / hz * 1e6 / n}')
    [ -z "$base" ] && { base=$rps; base_cpu=$cpu; }
    ratio=$(awk -v a="$rps" -v b="$base" 'BEGIN {printf "%.0f", a / b * 100}')
    added=$(awk -v a="$cpu" -v b="$base_cpu" 'BEGIN {printf "%.1f", a - b}')
    case $r in
      noop) ratios_noop+=("$ratio"); added_noop+=("$added") ;;
      hdr) ratios_hdr+=("$ratio"); added_hdr+=("$added") ;;
    esac
    label=$([ "$r" = plain ] && echo "no plugin" || echo "$r")
    echo "| $round | $label | $rps | $p50 | $p99 | $cpu | $ratio% |"
  done
done
median() { printf '%s\n' "$@" | sort -n | awk '{v[NR] = $1} END {print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2}'; }
echo
echo "Median over $ROUNDS rounds: noop $(median "${ratios_noop[@]}")% of no-plugin throughput" \
  "(+$(median "${added_noop[@]}") µs CPU/request), header filter $(median "${ratios_hdr[@]}")%" \
  "(+$(median "${added_hdr[@]}") µs CPU/request)."
