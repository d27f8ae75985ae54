"""Load balancing of proxy routes through the real binary: round robin,
smooth weights, random by weight, least request (a slow endpoint gets
less), and consistent hashing by header, cookie and client IP."""

from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from conftest import LISTEN
from harness import Loom, Named


@pytest.fixture
def services():
    s = [Named("a"), Named("b"), Named("c")]
    yield s
    for x in s:
        x.close()


def start(services, balancer: str, weights=(1, 1, 1), extra: str = "") -> Loom:
    endpoints = "\n".join(f"      - {{url: \"{s.url}\", weight: {w}}}" for s, w in zip(services, weights))
    return Loom(LISTEN + f"""upstreams:
  - name: pool
    load_balancer: {balancer}
{extra}    endpoints:
{endpoints}
routes:
  - id: plain
    path: /*
    upstream: pool
""")


def hits(loom, n: int, **kw) -> Counter:
    with httpx.Client(base_url=loom.base) as c:
        return Counter(c.get("/who", **kw).text for _ in range(n))


def test_round_robin_takes_turns(services):
    loom = start(services, "round_robin")
    try:
        assert hits(loom, 300) == Counter({"a": 100, "b": 100, "c": 100})
    finally:
        loom.stop()


def test_weights_split_traffic_exactly_and_smoothly(services):
    loom = start(services, "weighted", (3, 2, 1))
    try:
        with httpx.Client(base_url=loom.base) as c:
            order = [c.get("/who").text for _ in range(12)]
        assert Counter(order) == Counter({"a": 6, "b": 4, "c": 2})
        # Smooth: never three of the same in a row.
        assert all(len({*order[i:i + 3]}) > 1 for i in range(len(order) - 2)), order
    finally:
        loom.stop()


def test_random_follows_the_weights(services):
    loom = start(services, "random", (6, 3, 1))
    try:
        c = hits(loom, 2000)
        for name, share in [("a", 0.6), ("b", 0.3), ("c", 0.1)]:
            assert abs(c[name] / 2000 - share) < 0.05, c
    finally:
        loom.stop()


def test_least_request_sends_less_to_a_slow_endpoint(services):
    services[0].delay = 0.2
    loom = start(services, "least_request")
    try:
        with httpx.Client(base_url=loom.base, timeout=10) as c:
            with ThreadPoolExecutor(16) as pool:
                names = list(pool.map(lambda _: c.get("/who").text, range(240)))
        got = Counter(names)
        # Round robin would give each 80; the slow one holds its requests longer.
        assert got["a"] < 40 and got["b"] + got["c"] > 200, got
    finally:
        loom.stop()


def test_consistent_hashing_keeps_a_key_on_one_endpoint(services):
    loom = start(services, "consistent_hash", extra="    hash_on: {header: X-User}\n")
    try:
        with httpx.Client(base_url=loom.base) as c:
            owner = {u: c.get("/who", headers={"X-User": u}).text for u in (f"user-{i}" for i in range(60))}
            for u, name in owner.items():
                assert c.get("/who", headers={"X-User": u}).text == name
        # Keys spread over every endpoint.
        assert set(owner.values()) == {"a", "b", "c"}
    finally:
        loom.stop()
    # By cookie, and by client IP when the cookie is absent.
    loom = start(services, "consistent_hash", extra="    hash_on: {cookie: session}\n")
    try:
        with httpx.Client(base_url=loom.base) as c:
            for s in ("s1", "s2", "s3", "s4"):
                first = c.get("/who", headers={"Cookie": f"theme=dark; session={s}"}).text
                assert all(c.get("/who", headers={"Cookie": f"session={s}"}).text == first for _ in range(5))
            anonymous = {c.get("/who").text for _ in range(10)}
            assert len(anonymous) == 1
    finally:
        loom.stop()
