#!/usr/bin/env bash
# The general proxy against NGINX, in one run on this machine: a fast
# static upstream (loom-bench-upstream), reached directly, through Loom's
# proxy route, and through NGINX configured as the equivalent reverse proxy
# (keep-alive to the upstream, no access log). Small responses, 64
# connections: wrk for HTTP/1.1, h2load for HTTP/2 (h2c, prior knowledge).
# Prints Markdown rows for docs/benchmarks.md.
#
# HTTP/1.1 is measured in rounds (direct, Loom, NGINX, again), each
# comparison within its own round, and the median Loom/NGINX ratio printed
# last: on a shared 2-core machine throughput drifts between runs by more
# than the difference being measured.
#
#   bench/proxy.sh [DURATION_SECONDS]
#   ROUNDS=5 bench/proxy.sh 8                (more rounds; default 3)
#   LOOM_BIN_DIR=/some/dir bench/proxy.sh   (binaries built earlier, for A/B runs)
#   (needs wrk, nginx and h2load: apt-get install wrk nginx-light nghttp2-client)
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION="${1:-15}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"
for tool in wrk nginx h2load; do
  command -v "$tool" >/dev/null || { echo "$tool is needed: apt-get install wrk nginx-light nghttp2-client" >&2; exit 1; }
done
if [ -n "${LOOM_BIN_DIR:-}" ]; then
  BIN="$LOOM_BIN_DIR"
else
  cargo build --release -q -p loom-gateway -p loom-bench-upstream
  BIN="$CARGO_TARGET_DIR/release"
fi
WORK=$(mktemp -d)
cat > "$WORK/nginx.conf" <<NGINX
worker_processes 2;
pid $WORK/nginx.pid;
error_log $WORK/error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  upstream backend { server 127.0.0.1:18000; keepalive 256; }
  server {
    listen 127.0.0.1:18081;
    listen 127.0.0.1:18082 http2;
    location / {
      proxy_pass http://backend;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Host \$host;
      proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for;
      proxy_set_header X-Forwarded-Proto \$scheme;
    }
  }
}
NGINX
"$BIN/loom-bench-upstream" 18000 & UP=$!
"$BIN/loom" serve --config bench/loom-bench.yaml & LOOM=$!
nginx -c "$WORK/nginx.conf" -p "$WORK"
trap 'kill $UP $LOOM 2>/dev/null || true; nginx -c "$WORK/nginx.conf" -p "$WORK" -s stop 2>/dev/null || true' EXIT
for _ in $(seq 100); do curl -sf http://127.0.0.1:19091/ready >/dev/null && break; sleep 0.05; done
for _ in $(seq 100); do [ -s "$WORK/nginx.pid" ] && break; sleep 0.05; done
hz=$(getconf CLK_TCK)
ticks() { local t=0; for p in "$@"; do t=$((t + $(awk '{print $14 + $15}' "/proc/$p/stat"))); done; echo "$t"; }
rss_kb() { local t=0; for p in "$@"; do t=$((t + $(awk '/VmRSS/ {print $2}' "/proc/$p/status"))); done; echo "$t"; }
nginx_pids() { pgrep -f "nginx: (master|worker)" | tr '\n' ' '; }

# wrk1 URL PIDS... -> "rps p50 p99 cpu_us rss_kb"
wrk1() {
  local url=$1; shift
  wrk -t2 -c64 -d2s "$url" >/dev/null
  local before after out
  before=$(ticks "$@" 2>/dev/null || echo 0)
  out=$(wrk -t2 -c64 -d"${DURATION}s" --latency "$url")
  after=$(ticks "$@" 2>/dev/null || echo 0)
  local rps p50 p99 reqs
  rps=$(awk '/Requests\/sec/ {print $2}' <<<"$out")
  p50=$(awk '$1=="50%" {print $2}' <<<"$out")
  p99=$(awk '$1=="99%" {print $2}' <<<"$out")
  reqs=$(awk '/requests in/ {print $1}' <<<"$out")
  local cpu="-" rss="-"
  if [ $# -gt 0 ]; then
    cpu=$(awk -v t=$((after - before)) -v hz="$hz" -v n="$reqs" 'BEGIN {printf "%.1f", t / hz * 1e6 / n}')
    rss=$(rss_kb "$@")
  fi
  echo "$rps $p50 $p99 $cpu $rss"
}

# h2 URL -> "rps mean_ms"   (64 connections, 10 streams each)
h2() {
  local out
  h2load -n 20000 -c 64 -m 10 "$1" >/dev/null 2>&1 || true
  out=$(h2load -D "$DURATION" -c 64 -m 10 "$1" 2>/dev/null)
  echo "$(awk '/finished in/ {print $4}' <<<"$out" | tr -d ',') $(awk '/time for request/ {print $6}' <<<"$out")"
}

ROUNDS="${ROUNDS:-3}"
echo
echo "| round | HTTP/1.1, 64 connections | requests/s | p50 | p99 | CPU µs/request | RSS KB |"
echo "|---|---|---|---|---|---|---|"
ratios=() lower_p99=0
ms() { awk -v v="$1" 'BEGIN { if (v ~ /ms$/) print v + 0; else if (v ~ /us$/) print v / 1000; else print v * 1000 }'; }
for round in $(seq "$ROUNDS"); do
  direct=$(wrk1 http://127.0.0.1:18000/plain/hello)
  loom=$(wrk1 http://127.0.0.1:18080/plain/hello "$LOOM")
  ngx=$(wrk1 http://127.0.0.1:18081/plain/hello $(nginx_pids))
  read -r r a b c d <<<"$direct"; echo "| $round | direct | $r | $a | $b | - | - |"
  read -r lr a lp99 c d <<<"$loom"; echo "| $round | through Loom | $lr | $a | $lp99 | $c | $d |"
  read -r nr a np99 c d <<<"$ngx"; echo "| $round | through NGINX 1.22 (2 workers) | $nr | $a | $np99 | $c | $d |"
  ratios+=("$(awk -v a="$lr" -v b="$nr" 'BEGIN {printf "%.0f", a / b * 100}')")
  awk -v a="$(ms "$lp99")" -v b="$(ms "$np99")" 'BEGIN {exit !(a < b)}' && lower_p99=$((lower_p99 + 1))
done
median() { printf '%s\n' "$@" | sort -n | awk '{v[NR] = $1} END {print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2}'; }
echo
echo "Loom/NGINX HTTP/1.1 throughput by round: ${ratios[*]} (%); median $(median "${ratios[@]}")%." \
  "Loom's p99 lower than NGINX's in $lower_p99 of $ROUNDS rounds."

loom_h2=$(h2 http://127.0.0.1:18080/plain/hello)
ngx_h2=$(h2 http://127.0.0.1:18082/plain/hello)
echo
echo "| HTTP/2 (h2c), 64 connections × 10 streams | requests/s | mean request time |"
echo "|---|---|---|"
read -r r m <<<"$loom_h2"; echo "| through Loom | $r | $m |"
read -r r m <<<"$ngx_h2"; echo "| through NGINX | $r | $m |"
