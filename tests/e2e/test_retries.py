"""Retries of proxy routes through the real binary: retried statuses,
connect failures and per-try timeouts go to another endpoint; methods
that are not idempotent are not retried unless configured; the retry
budget caps retries; the metrics count them."""


import httpx

from conftest import LISTEN
from harness import Loom, closed_port, metric_value


def start(urls, retry: str) -> Loom:
    endpoints = "\n".join(f"      - {u}" for u in urls)
    return Loom(LISTEN + f"""upstreams:
  - name: pool
    timeout: 10s
    endpoints:
{endpoints}
routes:
  - id: plain
    path: /*
    upstream: pool
    retry: {retry}
""")


def test_a_retried_status_is_answered_by_another_endpoint(pair):
    a, b = pair
    a.status = 503
    loom = start([a.url, b.url], "{attempts: 2, budget_percent: 100}")
    try:
        with httpx.Client(base_url=loom.base) as c:
            answers = [c.get("/who") for _ in range(10)]
            assert all(r.status_code == 200 and r.text == "b" for r in answers)
            # POST is not idempotent: its 503 comes back as it is.
            posts = [c.post("/who", content=b"x").status_code for _ in range(4)]
        assert 503 in posts
        assert metric_value(loom.metrics(), "loom_proxy_retries_total", route="plain", outcome="retried") >= 5
    finally:
        loom.stop()


def test_connect_failures_and_slow_tries_are_retried(pair):
    a, b = pair
    closed = f"http://127.0.0.1:{closed_port()}"
    loom = start([closed, b.url], "{attempts: 3, budget_percent: 100}")
    try:
        with httpx.Client(base_url=loom.base) as c:
            assert all(c.get("/who").text == "b" for _ in range(6))
    finally:
        loom.stop()
    a.delay = 3
    loom = start([a.url, b.url], "{attempts: 2, on: [timeout], per_try_timeout: 300ms}")
    try:
        with httpx.Client(base_url=loom.base, timeout=10) as c:
            r = c.get("/who")
        assert r.status_code == 200 and r.text == "b"
        assert r.elapsed.total_seconds() < 2
    finally:
        loom.stop()


def test_the_budget_caps_retries(pair):
    a, b = pair
    a.status = 503
    loom = start([a.url, b.url], "{attempts: 2, budget_percent: 0, min_retries: 2}")
    try:
        with httpx.Client(base_url=loom.base) as c:
            codes = [c.get("/who").status_code for _ in range(12)]
        # Two retries are allowed in the window: the first two requests on a
        # are retried on b; then every other request lands on a and keeps its 503.
        assert codes[:2] == [200, 200] and codes.count(503) == 5 and codes.count(200) == 7
        m = loom.metrics()
        assert metric_value(m, "loom_proxy_retries_total", route="plain", outcome="retried") == 2
        assert metric_value(m, "loom_proxy_retries_total", route="plain", outcome="budget_exhausted") == 5
    finally:
        loom.stop()


def test_retry_settings_are_checked(tmp_path):
    from harness import loom_bin
    import subprocess

    cfg = tmp_path / "c.yaml"
    cfg.write_text("""upstreams: [{name: u, endpoints: [http://127.0.0.1:1]}]
routes:
  - {id: r, path: /*, upstream: u, retry: {attempts: 20, on: [sometimes]}}
""")
    out = subprocess.run([loom_bin(), "validate", str(cfg)], capture_output=True, text=True)
    assert out.returncode != 0
    assert "routes[0].retry.attempts" in out.stdout and "routes[0].retry.on[0]" in out.stdout
