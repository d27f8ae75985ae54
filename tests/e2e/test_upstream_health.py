"""Upstream health through the real binary: active checks take an endpoint
out and back, outlier detection ejects an endpoint that fails real
requests, a wholly unhealthy upstream still answers, and the admin API and
metrics report it all."""

import json
from collections import Counter

import httpx

from conftest import LISTEN
from harness import Loom, http_get, metric_value, wait_until


def start(services, extra: str) -> Loom:
    endpoints = "\n".join(f"      - {s.url}" for s in services)
    return Loom(LISTEN + f"""upstreams:
  - name: pool
{extra}    endpoints:
{endpoints}
routes:
  - id: plain
    path: /*
    upstream: pool
""")


def states(loom) -> dict:
    _, body = http_get(loom.admin + "/health")
    return {e["endpoint"]: e for e in json.loads(body)["upstreams"]["pool"]}


def hits(loom, n: int) -> Counter:
    with httpx.Client(base_url=loom.base) as c:
        return Counter(c.get("/who").text for _ in range(n))


CHECKS = """    health_check: {path: /health, interval: 100ms, timeout: 500ms, healthy_threshold: 2, unhealthy_threshold: 2}
"""


def test_active_checks_take_an_endpoint_out_and_back(pair):
    a, b = pair
    loom = start(pair, CHECKS)
    try:
        wait_until(lambda: a.health_checks >= 2 and b.health_checks >= 2, what="the first checks")
        assert hits(loom, 10) == Counter({"a": 5, "b": 5})
        b.health_status = 503
        wait_until(lambda: not states(loom)[b.url]["healthy"], what="b marked down")
        assert states(loom)[b.url]["down"] and states(loom)[a.url]["healthy"]
        assert hits(loom, 10) == Counter({"a": 10})
        assert metric_value(loom.metrics(), "loom_upstream_health", upstream="pool", endpoint=b.url) == 0
        assert metric_value(loom.metrics(), "loom_upstream_health", upstream="pool", endpoint=a.url) == 1
        b.health_status = 200
        wait_until(lambda: states(loom)[b.url]["healthy"], what="b back up")
        assert hits(loom, 10)["b"] == 5
        assert "endpoint failed its health checks" in loom.log() and "endpoint healthy again" in loom.log()
    finally:
        loom.stop()


def test_outlier_detection_ejects_an_endpoint_that_fails_requests(pair):
    a, b = pair
    b.status = 500
    loom = start(pair, "    outlier_detection: {consecutive_failures: 3, base_ejection_time: 1m}\n")
    try:
        first = hits(loom, 6)
        assert first == Counter({"a": 3, "b": 3})
        # b failed three requests in a row: ejected, so everything goes to a.
        assert states(loom)[b.url]["ejected"]
        before = b.requests
        assert hits(loom, 20) == Counter({"a": 20})
        assert b.requests == before
        assert "endpoint ejected" in loom.log()
    finally:
        loom.stop()


def test_an_upstream_with_no_healthy_endpoint_still_answers(pair):
    a, b = pair
    a.health_status = b.health_status = 503
    loom = start(pair, CHECKS)
    try:
        wait_until(lambda: not any(e["healthy"] for e in states(loom).values()), what="both down")
        got = hits(loom, 10)
        assert sum(got.values()) == 10 and set(got) <= {"a", "b"}
    finally:
        loom.stop()


def test_max_ejection_percent_keeps_part_of_the_upstream(pair):
    for s in pair:
        s.status = 500
    loom = start(pair, "    outlier_detection: {consecutive_failures: 2, base_ejection_time: 1m, max_ejection_percent: 50}\n")
    try:
        with httpx.Client(base_url=loom.base) as c:
            statuses = [c.get("/who").status_code for _ in range(12)]
        assert set(statuses) == {500}
        ejected = [e for e in states(loom).values() if e["ejected"]]
        assert len(ejected) == 1
    finally:
        loom.stop()


def test_the_circuit_breaker_opens_on_failures_and_bounds_pending_requests(pair):
    a, _ = pair
    a.status = 500
    loom = start([a], "    circuit_breaker: {failure_rate: 50, min_requests: 4, open_for: 1m}\n")
    try:
        with httpx.Client(base_url=loom.base) as c:
            assert [c.get("/who").status_code for _ in range(4)] == [500] * 4
            before = a.requests
            refused = [c.get("/who") for _ in range(5)]
        assert all(r.status_code == 503 and "circuit open" in r.text for r in refused)
        assert a.requests == before
    finally:
        loom.stop()
    a.status, a.delay = 200, 1.0
    loom = start([a], "    circuit_breaker: {max_pending: 2}\n")
    try:
        from concurrent.futures import ThreadPoolExecutor

        with httpx.Client(base_url=loom.base, timeout=10) as c, ThreadPoolExecutor(4) as pool:
            codes = sorted(pool.map(lambda _: c.get("/who").status_code, range(4)))
        assert codes == [200, 200, 503, 503]
    finally:
        loom.stop()
