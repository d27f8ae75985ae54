#!/usr/bin/env bash
# Run-time keys (control_plane) measured through the release binary against
# the machine's PostgreSQL (127.0.0.1:5432, trust auth):
#  - start-up with N keys in the table (default 1,000,000): time to ready
#    and the process's RSS, against the same process with an empty table;
#  - chat throughput (wrk, mock-like fast upstream) with a configured key
#    and no control plane, with a configured key and N run-time keys
#    loaded, and with one of the run-time keys;
#  - revocation: DELETE /ai/keys/{id} on one replica to 401 on another
#    (two processes, one PostgreSQL), over 20 keys.
# Prints Markdown for docs/benchmarks.md.
#
#   bench/control-plane.sh [KEYS] [DURATION_SECONDS]     (needs wrk, psql)
set -euo pipefail
cd "$(dirname "$0")/.."
KEYS="${1:-1000000}"
DURATION="${2:-15}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"
command -v wrk >/dev/null || { echo "wrk is needed: apt-get install wrk" >&2; exit 1; }
pg_isready -h 127.0.0.1 -p 5432 >/dev/null || { echo "PostgreSQL must run on 127.0.0.1:5432" >&2; exit 1; }

cargo build --release -q -p loom-gateway -p loom-bench-upstream
BIN="$CARGO_TARGET_DIR/release"
WORK=$(mktemp -d)
DB="loombench_cp_$$"
YAML_KEY="sk-bench-yaml-0123456789"
ADMIN="bench-admin-token-0123456789"
psql -h 127.0.0.1 -U postgres -qc "CREATE DATABASE $DB"
"$BIN/loom-bench-upstream" 18000 & UP=$!
PIDS=()
cleanup() {
  kill "$UP" "${PIDS[@]}" 2>/dev/null || true
  wait 2>/dev/null || true
  psql -h 127.0.0.1 -U postgres -qc "DROP DATABASE IF EXISTS $DB WITH (FORCE)" || true
  rm -rf "$WORK"
}
trap cleanup EXIT

config() { # PORT ADMIN_PORT CONTROL(yes|no)
  cat <<YAML
listeners:
  - address: "127.0.0.1:$1"
admin:
  address: "127.0.0.1:$2"
  open: [ready, metrics]
  tokens: [{name: bench, token: $ADMIN, scopes: [admin]}]
logging:
  level: warn
  access_log: false
routes:
  - id: ai
    path: /v1/*
    ai_gateway: true
    middleware:
      auth: {type: api_key}
consumers:
  - name: bench
    keys: ["$YAML_KEY"]
ai_gateway:
  enabled: true
  providers:
    - name: upstream
      type: openai_compatible
      base_url: http://127.0.0.1:18000/v1
      models: [gpt-4o]
YAML
  if [ "$3" = yes ]; then
    cat <<YAML
control_plane:
  postgres: "postgres://postgres@127.0.0.1:5432/$DB"
  snapshot: "$WORK/snapshot-$1.json"
YAML
  fi
}

start() { # PORT ADMIN_PORT CONTROL -> sets LOOM_PID, STARTUP_MS
  config "$1" "$2" "$3" > "$WORK/loom-$1.yaml"
  local t0; t0=$(date +%s%N)
  "$BIN/loom" serve --config "$WORK/loom-$1.yaml" 2>"$WORK/loom-$1.log" & LOOM_PID=$!
  PIDS+=("$LOOM_PID")
  until curl -sf "http://127.0.0.1:$2/ready" >/dev/null; do sleep 0.05; done
  STARTUP_MS=$(( ($(date +%s%N) - t0) / 1000000 ))
}
rss_mib() { awk '/VmRSS/ {printf "%.0f", $2/1024}' "/proc/$1/status"; }
rps() { # KEY PORT
  wrk -t2 -c64 -d"${DURATION}s" -s bench/chat.lua -H "Authorization: Bearer $1" "http://127.0.0.1:$2/v1/chat/completions" \
    | awk '/Requests\/sec/ {printf "%.0f", $2}'
}

config 0 0 yes > "$WORK/migrate.yaml"
"$BIN/loom" migrate --config "$WORK/migrate.yaml" >/dev/null

# Empty table.
start 18080 19091 yes
EMPTY_MS=$STARTUP_MS; EMPTY_RSS=$(rss_mib "$LOOM_PID")
kill "$LOOM_PID"; wait "$LOOM_PID" 2>/dev/null || true

# N keys, the secret of key i being sk-loom-bench-<i>.
psql -h 127.0.0.1 -U postgres -d "$DB" -qc "
  INSERT INTO loom_keys (id, consumer, secret_hash, created_at, updated_at)
  SELECT 'key_' || lpad(i::text, 8, '0'), 'consumer-' || (i % 1000),
         sha256(('sk-loom-bench-' || i)::bytea), 0, 0
  FROM generate_series(1, $KEYS) i"
start 18080 19091 yes
FULL_MS=$STARTUP_MS; FULL_RSS=$(rss_mib "$LOOM_PID")
LOADED=$(curl -s http://127.0.0.1:19091/ready | python3 -c 'import json,sys; print(json.load(sys.stdin)["control_plane"]["keys"])')

# Throughput: configured key with the table loaded, then a run-time key.
curl -s -o /dev/null -H "Authorization: Bearer $YAML_KEY" -H 'content-type: application/json' \
  -d '{"model":"gpt-4o","messages":[{"role":"user","content":"warm"}]}' http://127.0.0.1:18080/v1/chat/completions
RPS_YAML_LOADED=$(rps "$YAML_KEY" 18080)
RPS_RUNTIME=$(rps "sk-loom-bench-777777" 18080)
kill "$LOOM_PID"; wait "$LOOM_PID" 2>/dev/null || true
start 18080 19091 no
RPS_OFF=$(rps "$YAML_KEY" 18080)
kill "$LOOM_PID"; wait "$LOOM_PID" 2>/dev/null || true

# Revocation across replicas.
start 18080 19091 yes; A=$LOOM_PID
start 18081 19092 yes; B=$LOOM_PID
REVOKE=$(python3 - "$ADMIN" <<'PY'
import json, statistics, sys, time, urllib.request
admin = sys.argv[1]
def call(method, url, body=None, key=None):
    req = urllib.request.Request(url, data=json.dumps(body).encode() if body is not None else None, method=method)
    req.add_header("Authorization", f"Bearer {key or admin}")
    if body is not None:
        req.add_header("content-type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()
times = []
for _ in range(20):
    _, made = call("POST", "http://127.0.0.1:19091/ai/keys", {"consumer": "revoke-bench"})
    made = json.loads(made)
    while call("GET", "http://127.0.0.1:18081/v1/models", key=made["key"])[0] != 200:
        time.sleep(0.001)
    t0 = time.monotonic()
    call("DELETE", f"http://127.0.0.1:19091/ai/keys/{made['id']}")
    while call("GET", "http://127.0.0.1:18081/v1/models", key=made["key"])[0] != 401:
        pass
    times.append((time.monotonic() - t0) * 1000)
print(f"{statistics.median(times):.1f} {max(times):.1f}")
PY
)

cat <<MD
| run-time keys (\`control_plane\`), $KEYS keys | measured |
|---|---|
| start to ready, empty table / $LOADED keys | ${EMPTY_MS} ms / ${FULL_MS} ms |
| RSS, empty table / $LOADED keys | ${EMPTY_RSS} MiB / ${FULL_RSS} MiB |
| chat req/s, configured key, no control plane | $RPS_OFF |
| chat req/s, configured key, $LOADED run-time keys loaded | $RPS_YAML_LOADED |
| chat req/s, a run-time key | $RPS_RUNTIME |
| DELETE on one replica → 401 on the other, median / max of 20 | ${REVOKE% *} ms / ${REVOKE#* } ms |
MD
