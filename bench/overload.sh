#!/usr/bin/env bash
# Load far above capacity: CONNS closed-loop connections (default 4000) of
# non-stream chat completions against Loom's two workers, once per CASE:
# `BOUND` (`server.max_requests_per_worker`, 0 for none) or `BOUND:DELAY`
# (with `server.shed_at_loop_delay: DELAY` too).
# Prints per run: answers per second, the share shed (503), latency of the
# admitted (200) and of the shed answers, Loom's peak RSS and CPU.
#
#   bench/overload.sh [SECONDS] [CONNS] [CASES...]   (default 15 4000 0 256 0:50ms)
#   DELAY_MS=1000 bench/overload.sh 15 4000 0 256     (a provider that takes
#                                                      1 s per answer: requests
#                                                      pile up in flight)
#   LOOM_BIN_DIR=/some/dir bench/overload.sh
set -euo pipefail
cd "$(dirname "$0")/.."
SECS="${1:-15}"
CONNS="${2:-4000}"
shift 2 2>/dev/null || shift $#
BOUNDS=("$@")
[ ${#BOUNDS[@]} -gt 0 ] || BOUNDS=(0 256 0:50ms)
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"
ulimit -n 200000 2>/dev/null || ulimit -n "$(ulimit -Hn)"
if [ -n "${LOOM_BIN_DIR:-}" ]; then
  BIN="$LOOM_BIN_DIR"
else
  cargo build --release -q -p loom-gateway -p loom-bench-upstream
  BIN="$CARGO_TARGET_DIR/release"
fi
BODY='{"model":"gpt-4o","messages":[{"role":"user","content":"Hello!"}]}'
"$BIN/loom-bench-upstream" 18000 0 "${DELAY_MS:-0}" & UP=$!
trap 'kill $UP 2>/dev/null || true' EXIT
hz=$(getconf CLK_TCK)
echo "| bound per worker | loop delay that sheds | answers/s | 200/s | shed | 200 p50 | 200 p99 | 200 p99.9 | 503 p99 | Loom peak RSS | Loom CPU |"
echo "|---|---|---|---|---|---|---|---|---|---|---|"
for case in "${BOUNDS[@]}"; do
  bound=${case%%:*}
  delay=""; [ "$case" != "$bound" ] && delay=${case#*:}
  LOOM_BOUND="$bound" LOOM_LOOP_DELAY="$delay" "$BIN/loom" serve --config bench/loom-overload.yaml & LOOM=$!
  for _ in $(seq 100); do curl -sf http://127.0.0.1:19091/ready >/dev/null && break; sleep 0.05; done
  peak=0
  t0=$(awk '{print $14 + $15}' "/proc/$LOOM/stat")
  out="$(mktemp)"
  "$BIN/loom-bench-load" http://127.0.0.1:18080/v1/chat/completions "$CONNS" "$SECS" "$BODY" >"$out" &
  GEN=$!
  while kill -0 "$GEN" 2>/dev/null; do
    rss=$(awk '/VmRSS/ {print $2}' "/proc/$LOOM/status")
    [ "$rss" -gt "$peak" ] && peak=$rss
    sleep 0.25
  done
  wait "$GEN"
  t1=$(awk '{print $14 + $15}' "/proc/$LOOM/stat")
  kill "$LOOM"; wait "$LOOM" 2>/dev/null || true
  read -r _ _ _ rps _ _ _ _ _ shed_pct _ _ _ ok_rps < <(sed -n 1p "$out" | tr -d '()%')
  read -r _ _ p50 _ p99 _ p999 _ _ _ _ _ _ _ s99 < <(sed -n 2p "$out")
  cpu=$(awk -v t=$((t1 - t0)) -v hz="$hz" -v s="$SECS" 'BEGIN {printf "%.0f%%", t / hz / s * 100}')
  label=$bound; [ "$bound" = 0 ] && label="none"
  echo "| $label | ${delay:-off} | $rps | $ok_rps | ${shed_pct}% | $p50 ms | $p99 ms | $p999 ms | $s99 ms | $((peak / 1024)) MiB | $cpu |"
  rm -f "$out"
done
