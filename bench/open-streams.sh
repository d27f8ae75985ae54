#!/usr/bin/env bash
# Memory per open, idle SSE stream: N concurrent streamed chat completions
# through one Loom, against a fake provider that drips one event per second,
# all held open at once. Prints Loom's RSS before and with the streams open,
# and the difference per stream.
#
#   bench/open-streams.sh [STREAMS]          (default 10000)
#   LOOM_BIN_DIR=/some/dir bench/open-streams.sh
set -euo pipefail
cd "$(dirname "$0")/.."
STREAMS="${1:-10000}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"
# Loom holds two sockets per stream (client and provider): raise the open
# files limit as far as this machine allows, and fit the streams in it.
ulimit -n 200000 2>/dev/null || ulimit -n "$(ulimit -Hn)"
fit=$(( ($(ulimit -n) - 500) / 2 ))
if [ "$STREAMS" -gt "$fit" ]; then
  echo "note: the open files limit is $(ulimit -n); measuring $fit streams instead of $STREAMS" >&2
  STREAMS=$fit
fi
if [ -n "${LOOM_BIN_DIR:-}" ]; then
  BIN="$LOOM_BIN_DIR"
else
  cargo build --release -q -p loom-gateway -p loom-bench-upstream
  BIN="$CARGO_TARGET_DIR/release"
fi
# One event a second, for far longer than the measurement.
"$BIN/loom-bench-upstream" 18000 0 0 1000 100000 & UP=$!
"$BIN/loom" serve --config bench/loom-bench.yaml & LOOM=$!
trap 'kill $UP $LOOM 2>/dev/null || true' EXIT
for _ in $(seq 100); do curl -sf http://127.0.0.1:19091/ready >/dev/null && break; sleep 0.05; done
rss_kb() { awk '/VmRSS/ {print $2}' "/proc/$1/status"; }

python3 - "$STREAMS" "$LOOM" <<'PY'
import asyncio, sys, time

streams, loom = int(sys.argv[1]), int(sys.argv[2])
BODY = b'{"model":"gpt-4o","stream":true,"messages":[{"role":"user","content":"Tell me a long story."}]}'
REQ = (b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
       b"Content-Length: %d\r\n\r\n" % len(BODY)) + BODY

def rss_kb():
    for line in open(f"/proc/{loom}/status"):
        if line.startswith("VmRSS"):
            return int(line.split()[1])

async def one(started, failed):
    try:
        r, w = await asyncio.open_connection("127.0.0.1", 18080)
        w.write(REQ)
        head = await r.readuntil(b"\r\n\r\n")
        if not head.startswith(b"HTTP/1.1 200"):
            failed.append(head[:40]); return
        await r.readuntil(b"\n\n")  # the first event: the stream is open
        started.append(1)
        while await r.read(65536):   # keep reading the drip
            pass
    except Exception as e:
        failed.append(repr(e)[:60])

async def main():
    # A few requests first, so allocator pools and the connection pool exist.
    warm_s, warm_f = [], []
    tasks = [asyncio.create_task(one(warm_s, warm_f)) for _ in range(50)]
    while len(warm_s) + len(warm_f) < 50:
        await asyncio.sleep(0.1)
    for t in tasks: t.cancel()
    await asyncio.sleep(2)
    base = rss_kb()
    started, failed = [], []
    t0 = time.time()
    tasks = []
    for i in range(streams):
        tasks.append(asyncio.create_task(one(started, failed)))
        if i % 500 == 499:
            await asyncio.sleep(0.05)
    while len(started) + len(failed) < streams and time.time() - t0 < 120:
        await asyncio.sleep(0.5)
    opened = time.time() - t0
    # Idle a while: each stream receives one event a second meanwhile.
    samples = []
    for _ in range(10):
        await asyncio.sleep(1)
        samples.append(rss_kb())
    held = max(samples)
    per = (held - base) * 1024 / max(len(started), 1)
    print(f"streams open: {len(started)} of {streams} (failed {len(failed)}{', e.g. ' + str(failed[0]) if failed else ''}) in {opened:.1f} s")
    print(f"Loom RSS: {base/1024:.1f} MiB before, {held/1024:.1f} MiB with the streams open (max of 10 samples over 10 s)")
    print(f"per open idle stream: {per/1024:.1f} KiB")
    for t in tasks: t.cancel()

asyncio.run(main())
PY
