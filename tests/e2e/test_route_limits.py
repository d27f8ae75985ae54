"""Route rate limits through the real binary: per client address, per
header value, per consumer on an AI route; shared by two processes through
the machine's Redis; and what happens while Redis is away."""

import uuid

import httpx
import pytest

from conftest import LISTEN
from harness import closed_port, Loom, Named, drop_prefix, metric_value, need_redis


@pytest.fixture
def svc():
    s = Named("svc")
    yield s
    s.close()


def proxy_config(url: str, limit: str) -> str:
    return LISTEN + f"""upstreams:
  - {{name: svc, endpoints: ["{url}"]}}
routes:
  - id: app
    path: /*
    upstream: svc
    middleware:
      rate_limit: {limit}
"""


def test_a_client_over_its_limit_gets_429_with_retry_after(svc):
    loom = Loom(proxy_config(svc.url, "{limit: 5, window: 1m}"))
    try:
        with httpx.Client(base_url=loom.base) as c:
            codes = [c.get("/who").status_code for _ in range(7)]
            refused = c.get("/who")
        assert codes == [200] * 5 + [429] * 2
        assert refused.status_code == 429
        assert 1 <= int(refused.headers["retry-after"]) <= 12
        assert refused.headers["x-ratelimit-limit"] == "5"
        assert refused.json()["error"]["code"] == "rate_limit_exceeded"
        assert svc.requests == 5
        assert metric_value(loom.metrics(), "loom_http_rate_limited_total", route="app") == 3
    finally:
        loom.stop()


def test_limits_by_header_value(svc):
    loom = Loom(proxy_config(svc.url, "{limit: 2, window: 1m, key: 'header:x-user'}"))
    try:
        with httpx.Client(base_url=loom.base) as c:
            a = [c.get("/who", headers={"X-User": "alice"}).status_code for _ in range(3)]
            b = [c.get("/who", headers={"X-User": "bob"}).status_code for _ in range(3)]
        assert a == [200, 200, 429] and b == [200, 200, 429]
    finally:
        loom.stop()


def test_limits_by_consumer_on_an_ai_route():
    loom = Loom(LISTEN + """routes:
  - id: ai
    path: /v1/*
    ai_gateway: true
    middleware:
      auth: {type: api_key, header: X-API-Key}
      rate_limit: {limit: 2, window: 1m, key: consumer}
consumers:
  - {name: one, keys: ["sk-one-0123456789"]}
  - {name: two, keys: ["sk-two-0123456789"]}
ai_gateway:
  enabled: true
  providers: [{name: mock, type: mock}]
""")
    try:
        body = {"model": "mock", "messages": [{"role": "user", "content": "hi"}]}
        with httpx.Client(base_url=loom.base) as c:
            one = [c.post("/v1/chat/completions", json=body, headers={"X-API-Key": "sk-one-0123456789"}).status_code
                   for _ in range(3)]
            two = c.post("/v1/chat/completions", json=body, headers={"X-API-Key": "sk-two-0123456789"}).status_code
        assert one == [200, 200, 429] and two == 200
    finally:
        loom.stop()


def test_two_processes_share_a_limit_through_redis(svc):
    need_redis()
    prefix = f"loom-rl-{uuid.uuid4().hex[:8]}:"
    limit = f"{{limit: 10, window: 1m, store: redis, redis: {{address: '127.0.0.1:6379', key_prefix: '{prefix}'}}}}"
    a = Loom(proxy_config(svc.url, limit))
    b = Loom(proxy_config(svc.url, limit))
    try:
        codes = []
        with httpx.Client(base_url=a.base) as ca, httpx.Client(base_url=b.base) as cb:
            for _ in range(6):
                codes.append(ca.get("/who").status_code)
                codes.append(cb.get("/who").status_code)
        assert codes.count(200) == 10 and codes.count(429) == 2
    finally:
        a.stop()
        b.stop()
        drop_prefix(prefix)


def test_an_unreachable_redis_applies_the_failure_mode(svc):
    closed = closed_port()
    for mode, expected in [("open", 200), ("closed", 429)]:
        limit = (f"{{limit: 1, window: 1m, store: redis, failure_mode: {mode}, "
                 f"redis: {{address: '127.0.0.1:{closed}', timeout: 200ms}}}}")
        loom = Loom(proxy_config(svc.url, limit))
        try:
            with httpx.Client(base_url=loom.base) as c:
                codes = {c.get("/who").status_code for _ in range(3)}
            assert codes == {expected}, mode
        finally:
            loom.stop()
