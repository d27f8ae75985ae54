#!/usr/bin/env bash
# End-to-end latency of the semantic cache: misses (the upstream takes
# 300 ms), exact hits, and similar hits (the paraphrases of the evaluation
# set), one request at a time through the release binary; then hit
# throughput with wrk. Prints Markdown rows for docs/benchmarks.md.
#
#   bench/cache.sh      (needs the local model: scripts/fetch-models; wrk)
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"
cargo build --release -q -p loom-gateway -p loom-bench-upstream
BIN="$CARGO_TARGET_DIR/release"
"$BIN/loom-bench-upstream" 18000 0 300 & UP=$!
"$BIN/loom" serve --config bench/loom-cache.yaml & LOOM=$!
trap 'kill $UP $LOOM 2>/dev/null || true' EXIT
for _ in $(seq 200); do curl -sf http://127.0.0.1:19091/ready >/dev/null && break; sleep 0.05; done

python3 - <<'PY'
import json, subprocess, statistics

def ask(prompt):
    body = json.dumps({"model": "gpt-4o", "messages": [{"role": "user", "content": prompt}]})
    out = subprocess.run(
        ["curl", "-s", "-o", "/dev/null", "-D", "-", "-w", "TIME %{time_total}\n",
         "http://127.0.0.1:18080/v1/chat/completions", "-H", "content-type: application/json", "-d", body],
        capture_output=True, text=True).stdout
    status = next((l.split(":", 1)[1].strip() for l in out.splitlines() if l.lower().startswith("x-loom-cache:")), "-")
    return status, float(out.rsplit("TIME ", 1)[1]) * 1000

pairs = [json.loads(l) for l in open("semantic-cache/eval/pairs.jsonl")]
paraphrases = [p for p in pairs if p["kind"] == "paraphrase"]
times = {"miss": [], "exact hit": [], "similar hit": [], "similar miss": []}
for p in paraphrases:
    s, t = ask(p["a"])
    times["miss"].append(t)
    s, t = ask(p["a"])
    times["exact hit" if s == "hit" else "miss"].append(t)
    s, t = ask(p["b"])
    times["similar hit" if s == "hit" else "similar miss"].append(t)

def pct(v, q):
    v = sorted(v)
    return v[min(len(v) - 1, round(q * (len(v) - 1)))]

print("| request | count | p50 ms | p99 ms |")
print("|---|---|---|---|")
for k, v in times.items():
    if v:
        print(f"| {k} | {len(v)} | {pct(v, .5):.2f} | {pct(v, .99):.2f} |")
PY

cat > /tmp/loom-cache-hit.lua <<'LUA'
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{"model":"gpt-4o","messages":[{"role":"user","content":"What is the capital of France?"}]}'
LUA
echo
wrk -t2 -c64 -d10s --latency -s /tmp/loom-cache-hit.lua http://127.0.0.1:18080/v1/chat/completions | grep -E "Requests/sec|50%|99%"
