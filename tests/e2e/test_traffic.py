"""Traffic management of proxy routes through the real binary: routes that
match on headers, query and a path regex; path-prefix and header rewrites
in both directions; redirects; canary splits by share, header and cookie."""

from collections import Counter

import httpx
import pytest

from conftest import LISTEN
from harness import FakeBackend, Loom, Named


@pytest.fixture
def stable():
    s = Named("stable")
    yield s
    s.close()


@pytest.fixture
def canary():
    s = Named("canary")
    yield s
    s.close()


def test_routes_match_on_headers_query_and_path(stable, canary):
    loom = Loom(LISTEN + f"""upstreams:
  - {{name: stable, endpoints: ["{stable.url}"]}}
  - {{name: canary, endpoints: ["{canary.url}"]}}
routes:
  - id: tenant
    path: /*
    match: {{headers: {{x-tenant: beta}}}}
    upstream: canary
  - id: query
    path: /*
    match: {{query: {{version: "2"}}}}
    upstream: canary
  - id: regex
    path: /*
    match: {{path_regex: "^/users/[0-9]+$"}}
    upstream: canary
  - id: rest
    path: /*
    upstream: stable
""")
    try:
        with httpx.Client(base_url=loom.base) as c:
            assert c.get("/who").text == "stable"
            assert c.get("/who", headers={"X-Tenant": "beta"}).text == "canary"
            assert c.get("/who", headers={"X-Tenant": "gamma"}).text == "stable"
            assert c.get("/who?a=1&version=2").text == "canary"
            assert c.get("/who?version=3").text == "stable"
            assert c.get("/users/42").text == "canary"
            assert c.get("/users/me").text == "stable"
    finally:
        loom.stop()


def test_rewrites_change_the_path_and_headers_both_ways(backend):
    loom = Loom(LISTEN + f"""upstreams:
  - {{name: backend, endpoints: ["http://127.0.0.1:{backend.port}"]}}
routes:
  - id: api
    path: /api/*
    upstream: backend
    rewrite:
      prefix_from: /api
      prefix_to: /echo
      request_headers: {{set: {{x-env: prod}}, remove: [x-debug]}}
      response_headers: {{set: {{x-served-by: loom}}, remove: [x-backend]}}
""")
    try:
        r = httpx.get(loom.base + "/api/users?page=2", headers={"X-Debug": "1"})
        seen = r.json()
        assert seen["path"] == "/echo/users?page=2"
        assert seen["headers"]["x-env"] == "prod" and "x-debug" not in seen["headers"]
        assert r.headers["x-served-by"] == "loom" and "x-backend" not in r.headers
    finally:
        loom.stop()


def test_redirects(stable):
    loom = Loom(LISTEN + """routes:
  - id: moved
    path: /old/*
    redirect: {to: "https://example.com/new", status: 301}
  - id: kept
    path: /docs/*
    redirect: {to: "https://docs.example.com", status: 308, keep_path: true}
""")
    try:
        r = httpx.get(loom.base + "/old/page")
        assert r.status_code == 301 and r.headers["location"] == "https://example.com/new"
        r = httpx.get(loom.base + "/docs/a/b?x=1")
        assert r.status_code == 308 and r.headers["location"] == "https://docs.example.com/docs/a/b?x=1"
    finally:
        loom.stop()


def test_a_canary_takes_its_share_and_the_requests_that_ask_for_it(stable, canary):
    loom = Loom(LISTEN + f"""upstreams:
  - {{name: stable, endpoints: ["{stable.url}"]}}
  - {{name: canary, endpoints: ["{canary.url}"]}}
routes:
  - id: app
    path: /*
    upstream: stable
    canary: {{upstream: canary, weight: 20, headers: {{x-canary: "1"}}, cookies: {{beta: "yes"}}}}
""")
    try:
        with httpx.Client(base_url=loom.base) as c:
            got = Counter(c.get("/who").text for _ in range(2000))
            assert abs(got["canary"] / 2000 - 0.20) < 0.05, got
            assert all(c.get("/who", headers={"X-Canary": "1"}).text == "canary" for _ in range(20))
            assert all(c.get("/who", headers={"Cookie": "beta=yes"}).text == "canary" for _ in range(20))
    finally:
        loom.stop()


def test_shadowing_copies_requests_without_slowing_the_primary(stable, canary):
    canary.delay = 1.0  # a slow mirror must not slow the primary
    loom = Loom(LISTEN + f"""upstreams:
  - {{name: stable, endpoints: ["{stable.url}"]}}
  - {{name: mirror, endpoints: ["{canary.url}"]}}
routes:
  - id: app
    path: /*
    upstream: stable
    shadow: {{upstream: mirror, percent: 100}}
""")
    try:
        with httpx.Client(base_url=loom.base) as c:
            answers = [c.get("/who") for _ in range(5)]
            posted = c.post("/who", content=b"payload")
        assert all(r.text == "stable" and r.elapsed.total_seconds() < 0.5 for r in answers)
        assert posted.text == "stable"
        from harness import metric_value, wait_until

        wait_until(lambda: canary.requests >= 6, what="the copies at the mirror")
        wait_until(lambda: metric_value(loom.metrics(), "loom_proxy_shadowed_total", route="app", outcome="answered") == 6,
                   what="the shadow counter")
        assert stable.requests == 6
    finally:
        loom.stop()
