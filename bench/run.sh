#!/usr/bin/env bash
# Measures Loom against direct-to-upstream on this machine, in one run:
# non-stream chat completions, streamed chat completions (24 content events
# each, the upstream sending them at once) and a plain proxy route, 64
# connections each.
# Prints a Markdown table for docs/benchmarks.md.
#
#   bench/run.sh [DURATION_SECONDS]      (needs wrk: apt-get install wrk)
#   ROUNDS=5 bench/run.sh 10             (several rounds, each direct then
#                                         through Loom; the median ratio is
#                                         printed: one round on a shared
#                                         2-core machine varies by ±5 points)
#   LOOM_BIN_DIR=/some/dir bench/run.sh  (binaries built earlier, for A/B runs)
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION="${1:-15}"
CONNS=64
THREADS=2
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"
command -v wrk >/dev/null || { echo "wrk is needed: apt-get install wrk" >&2; exit 1; }

if [ -n "${LOOM_BIN_DIR:-}" ]; then
  BIN="$LOOM_BIN_DIR"
else
  cargo build --release -q -p loom-gateway -p loom-bench-upstream
  BIN="$CARGO_TARGET_DIR/release"
fi
"$BIN/loom-bench-upstream" 18000 & UP=$!
"$BIN/loom" serve --config bench/loom-bench.yaml & LOOM=$!
trap 'kill $UP $LOOM 2>/dev/null || true' EXIT
for _ in $(seq 100); do curl -sf http://127.0.0.1:19091/ready >/dev/null && break; sleep 0.05; done

ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
rss_kb() { awk '/VmRSS/ {print $2}' "/proc/$1/status"; }
hz=$(getconf CLK_TCK)
idle_rss=$(rss_kb "$LOOM")

# run NAME URL [LUA] -> "rps p50 p99 requests"
run() {
  local url=$2 lua=${3:-}
  local args=(-t"$THREADS" -c"$CONNS" -d"${DURATION}s" --latency)
  [ -n "$lua" ] && args+=(-s "$lua")
  wrk -t"$THREADS" -c"$CONNS" -d2s ${lua:+-s "$lua"} "$url" >/dev/null  # warm-up
  local before after out
  before=$(ticks "$LOOM")
  out=$(wrk "${args[@]}" "$url")
  after=$(ticks "$LOOM")
  local rps p50 p99 reqs
  rps=$(awk '/Requests\/sec/ {print $2}' <<<"$out")
  p50=$(awk '$1=="50%" {print $2}' <<<"$out")
  p99=$(awk '$1=="99%" {print $2}' <<<"$out")
  reqs=$(awk '/requests in/ {print $1}' <<<"$out")
  echo "$rps $p50 $p99 $reqs $((after - before))"
}

row() { # label direct-result loom-result
  read -r drps dp50 dp99 _ _ <<<"$2"
  read -r lrps lp50 lp99 lreqs lticks <<<"$3"
  local cpu_us ratio
  cpu_us=$(awk -v t="$lticks" -v hz="$hz" -v n="$lreqs" 'BEGIN {printf "%.1f", t / hz * 1e6 / n}')
  ratio=$(awk -v a="$lrps" -v b="$drps" 'BEGIN {printf "%.0f%%", a / b * 100}')
  echo "| $1 | $drps | $dp50 | $dp99 | $lrps | $lp50 | $lp99 | $ratio | $cpu_us |"
}

ROUNDS="${ROUNDS:-1}"
echo
echo "$(date -u +%Y-%m-%d) · $(nproc) cores · wrk -t$THREADS -c$CONNS -d${DURATION}s · $ROUNDS round(s) · $(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
echo
echo "| workload | direct req/s | direct p50 | direct p99 | Loom req/s | Loom p50 | Loom p99 | Loom/direct | Loom CPU µs/req |"
echo "|---|---|---|---|---|---|---|---|---|"
chat_ratios=() stream_ratios=() plain_ratios=()
ratio_of() { read -r d _ <<<"$1"; read -r l _ <<<"$2"; awk -v a="$l" -v b="$d" 'BEGIN {printf "%.1f", a / b * 100}'; }
for _ in $(seq "$ROUNDS"); do
  chat_direct=$(run chat http://127.0.0.1:18000/v1/chat/completions bench/chat.lua)
  chat_loom=$(run chat http://127.0.0.1:18080/v1/chat/completions bench/chat.lua)
  stream_direct=$(run stream http://127.0.0.1:18000/v1/chat/completions bench/chat-stream.lua)
  stream_loom=$(run stream http://127.0.0.1:18080/v1/chat/completions bench/chat-stream.lua)
  plain_direct=$(run plain http://127.0.0.1:18000/plain/hello)
  plain_loom=$(run plain http://127.0.0.1:18080/plain/hello)
  row "chat completion (non-stream)" "$chat_direct" "$chat_loom"
  row "chat completion (stream, 24 events)" "$stream_direct" "$stream_loom"
  row "proxy route GET" "$plain_direct" "$plain_loom"
  chat_ratios+=("$(ratio_of "$chat_direct" "$chat_loom")")
  stream_ratios+=("$(ratio_of "$stream_direct" "$stream_loom")")
  plain_ratios+=("$(ratio_of "$plain_direct" "$plain_loom")")
done
load_rss=$(awk '/VmHWM/ {print $2}' "/proc/$LOOM/status")
median() { printf '%s\n' "$@" | sort -n | awk '{v[NR] = $1} END {print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2}'; }
echo
if [ "$ROUNDS" -gt 1 ]; then
  echo "Loom/direct by round: chat ${chat_ratios[*]} (median $(median "${chat_ratios[@]}")%), stream ${stream_ratios[*]} (median $(median "${stream_ratios[@]}")%), proxy route ${plain_ratios[*]} (median $(median "${plain_ratios[@]}")%)"
  echo
fi
echo "Loom RSS: idle $((idle_rss / 1024)) MB, peak under load $((load_rss / 1024)) MB"
