"""Routing strategies, failover, Retry-After and circuit breakers, against two
fake providers whose behaviour each test sets."""

import json

import httpx
import openai
import pytest

from harness import FakeOpenAI, Loom, metric_value


def config(a: str, b: str, routing: str) -> str:
    return f"""
listeners:
  - address: "127.0.0.1:{{port}}"
admin:
  address: "127.0.0.1:{{admin_port}}"
routes:
  - id: ai
    path: /v1/*
    ai_gateway: true
ai_gateway:
  enabled: true
  providers:
    - name: primary
      type: openai
      base_url: {a}
      models: [gpt-4o, text-embedding-3-small, gpt-3.5-turbo-instruct]
      priority: 1
    - name: backup
      type: openai
      base_url: {b}
      models: [gpt-4o, text-embedding-3-small, gpt-3.5-turbo-instruct]
      priority: 2
  routing:
{routing}
"""


FAILOVER = """    strategy: priority
    failover:
      enabled: true
      retry_codes: [429, 500, 502, 503]
      max_retries: 2
      timeout: 5s
"""


@pytest.fixture
def fakes():
    a, b = FakeOpenAI(), FakeOpenAI()
    yield a, b
    a.close()
    b.close()


def start(fakes, routing):
    a, b = fakes
    return Loom(config(a.url, b.url, routing))


def chat(loom, **extra):
    return httpx.post(
        loom.base + "/v1/chat/completions",
        json={"model": "gpt-4o", "messages": [{"role": "user", "content": "x"}], **extra},
        timeout=30,
    )


def test_priority_fails_over_on_503_and_says_so(fakes):
    a, b = fakes
    loom = start(fakes, FAILOVER)
    try:
        a.fail_next = [(503, {})]
        r = chat(loom)
        assert r.status_code == 200
        assert r.headers["x-loom-provider"] == "backup"
        assert r.headers["x-loom-attempts"] == "2"
        assert r.headers["x-loom-model"] == "gpt-4o"
        assert (len(a.requests), len(b.requests)) == (1, 1)
        m = loom.metrics()
        assert metric_value(m, "loom_ai_failovers_total", **{"from": "primary", "to": "backup"}) == 1
        # Healthy again: the primary serves the next request.
        assert chat(loom).headers["x-loom-provider"] == "primary"
    finally:
        loom.stop()


def test_no_retry_on_a_client_error(fakes):
    a, b = fakes
    loom = start(fakes, FAILOVER)
    try:
        a.fail_next = [(400, {})]
        r = chat(loom)
        assert r.status_code == 400
        assert r.headers["x-loom-attempts"] == "1"
        assert len(b.requests) == 0
    finally:
        loom.stop()


def test_max_retries_is_respected_exactly(fakes):
    a, b = fakes
    loom = start(fakes, FAILOVER)
    try:
        a.fail_next = [(503, {})] * 10
        b.fail_next = [(503, {})] * 10
        r = chat(loom)
        assert r.status_code == 503
        # 1 attempt + max_retries 2, alternating between the candidates.
        assert len(a.requests) + len(b.requests) == 3
        assert r.headers["x-loom-attempts"] == "3"
    finally:
        loom.stop()


def test_retry_after_is_honoured(fakes):
    a, b = fakes
    loom = start(fakes, FAILOVER)
    try:
        a.fail_next = [(429, {"retry-after": "60"})]
        assert chat(loom).headers["x-loom-provider"] == "backup"
        # The primary asked for 60 s: it is skipped, not retried.
        for _ in range(3):
            assert chat(loom).headers["x-loom-provider"] == "backup"
        assert len(a.requests) == 1
    finally:
        loom.stop()


def test_stream_cut_before_the_first_byte_fails_over(fakes):
    a, b = fakes
    loom = start(fakes, FAILOVER)
    try:
        a.fail_next = ["cut"]
        c = openai.OpenAI(base_url=loom.base + "/v1", api_key="x", max_retries=0)
        chunks = list(c.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "x"}], stream=True))
        assert "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices) == "The sky is blue."
        assert (len(a.requests), len(b.requests)) == (1, 1)
    finally:
        loom.stop()


def test_breaker_opens_then_all_down_fails_fast(fakes):
    a, b = fakes
    loom = start(fakes, "    strategy: priority\n")
    try:
        a.fail_next = [(503, {})] * 5
        for _ in range(5):
            assert chat(loom).status_code == 503
        doc = httpx.get(loom.admin + "/ai/providers").json()
        primary = next(p for p in doc["providers"] if p["name"] == "primary")
        assert primary["status"] == "open" and primary["circuit"] == "open" and primary["errors"] == 5
        assert metric_value(loom.metrics(), "loom_ai_circuit_state", provider="primary") == 2
        assert metric_value(loom.metrics(), "loom_ai_circuit_state", provider="backup") == 0
        # Open circuit: the primary is skipped, the backup serves.
        r = chat(loom)
        assert r.status_code == 200 and r.headers["x-loom-provider"] == "backup"
        assert len(a.requests) == 5
        b.fail_next = [(503, {})] * 5
        for _ in range(5):
            chat(loom)
        # Every provider open: a fast 503 that says why, no upstream call.
        before = len(a.requests) + len(b.requests)
        r = chat(loom)
        assert r.status_code == 503
        assert "unavailable" in r.json()["error"]["message"]
        assert len(a.requests) + len(b.requests) == before
    finally:
        loom.stop()


def test_round_robin_alternates(fakes):
    a, b = fakes
    loom = start(fakes, "    strategy: round_robin\n")
    try:
        with httpx.Client() as c:
            body = {"model": "gpt-4o", "messages": [{"role": "user", "content": "x"}]}
            for _ in range(200):
                assert c.post(loom.base + "/v1/chat/completions", json=body).status_code == 200
        assert (len(a.requests), len(b.requests)) == (100, 100)
    finally:
        loom.stop()


def test_weighted_split_is_exact_over_1000_requests(fakes):
    a, b = fakes
    loom = start(fakes, "    strategy: weighted\n    providers:\n      - {name: primary, weight: 70}\n      - {name: backup, weight: 30}\n")
    try:
        with httpx.Client() as c:
            body = {"model": "gpt-4o", "messages": [{"role": "user", "content": "x"}]}
            firsts = []
            for _ in range(1000):
                r = c.post(loom.base + "/v1/chat/completions", json=body)
                assert r.status_code == 200
                firsts.append(r.headers["x-loom-provider"])
        assert (len(a.requests), len(b.requests)) == (700, 300)
        # Smooth: never more than three primaries in a row at 70/30.
        runs = "".join("p" if f == "primary" else "b" for f in firsts)
        assert "pppp" not in runs
    finally:
        loom.stop()


def test_cost_picks_the_cheaper_and_follows_a_price_change_on_reload(fakes):
    a, b = fakes
    prices = "    strategy: cost\n    providers:\n      - {{name: primary, cost_per_1k_input: {pa}, cost_per_1k_output: {pa}}}\n      - {{name: backup, cost_per_1k_input: {pb}, cost_per_1k_output: {pb}}}\n"
    loom = start(fakes, prices.format(pa=0.01, pb=0.002))
    try:
        assert chat(loom).headers["x-loom-provider"] == "backup"
        loom.write_config(config(a.url, b.url, prices.format(pa=0.001, pb=0.002)))
        from harness import wait_until

        wait_until(lambda: loom.generation() == 2, what="reload")
        assert chat(loom).headers["x-loom-provider"] == "primary"
    finally:
        loom.stop()


def test_cost_without_configured_prices_uses_the_built_in_price_table(fakes):
    a, b = fakes
    # One requested name, two models: gpt-4o at the primary, gpt-4o-mini (cheaper
    # by list price) at the backup. No prices are configured.
    text = config(a.url, b.url, "    strategy: cost\n").replace(
        "      models: [gpt-4o, text-embedding-3-small, gpt-3.5-turbo-instruct]\n      priority: 2",
        "      models: [gpt-4o-mini]\n      priority: 2",
    ) + "  model_mapping:\n    smart:\n      primary: gpt-4o\n      backup: gpt-4o-mini\n"
    loom = Loom(text)
    try:
        r = httpx.post(loom.base + "/v1/chat/completions",
                       json={"model": "smart", "messages": [{"role": "user", "content": "x"}], "max_tokens": 100})
        assert r.status_code == 200, r.text
        assert (r.headers["x-loom-provider"], r.headers["x-loom-model"]) == ("backup", "gpt-4o-mini")
        assert b.requests[-1]["body"]["model"] == "gpt-4o-mini"
    finally:
        loom.stop()


def test_latency_moves_traffic_to_the_faster_provider_and_back(fakes):
    a, b = fakes
    loom = start(fakes, "    strategy: latency\n")
    try:
        a.delay = 0.06
        with httpx.Client() as c:
            body = {"model": "gpt-4o", "messages": [{"role": "user", "content": "x"}]}

            def run(n):
                return [c.post(loom.base + "/v1/chat/completions", json=body).headers["x-loom-provider"] for _ in range(n)]

            # Within 50 requests the fast backup takes the traffic ...
            first = run(50)
            assert first[-20:].count("backup") >= 18, first
            # ... and after the primary recovers and the backup slows down,
            # probes find the primary again and the traffic moves back.
            a.delay, b.delay = 0.0, 0.06
            second = run(60)
            assert second[-20:].count("primary") >= 18, second
    finally:
        loom.stop()


def test_embeddings_and_completions_fail_over_too(fakes):
    a, b = fakes
    loom = start(fakes, FAILOVER)
    try:
        c = openai.OpenAI(base_url=loom.base + "/v1", api_key="x", max_retries=0)
        a.fail_next = [(502, {})]
        raw = c.embeddings.with_raw_response.create(model="text-embedding-3-small", input="x", encoding_format="float")
        assert raw.headers["x-loom-provider"] == "backup" and raw.headers["x-loom-attempts"] == "2"
        assert len(raw.parse().data[0].embedding) == 7
        a.fail_next = [(500, {})]
        raw = c.completions.with_raw_response.create(model="gpt-3.5-turbo-instruct", prompt="x")
        assert raw.headers["x-loom-provider"] == "backup"
        assert raw.parse().choices[0].text == "\n\nThis is indeed a test"
    finally:
        loom.stop()


def test_200_concurrent_streams_while_one_provider_fails_lose_nothing(fakes):
    from concurrent.futures import ThreadPoolExecutor

    a, b = fakes
    loom = start(fakes, FAILOVER.replace("max_retries: 2", "max_retries: 3"))
    try:
        # The primary fails half of what it gets: errors and streams cut before their first event.
        a.fail_next = [(503, {}), "cut"] * 60
        body = {"model": "gpt-4o", "messages": [{"role": "user", "content": "x"}], "stream": True}
        limits = httpx.Limits(max_connections=250, max_keepalive_connections=250)
        with httpx.Client(limits=limits, timeout=60) as c:

            def one(_):
                with c.stream("POST", loom.base + "/v1/chat/completions", json=body) as r:
                    lines = [l for l in r.iter_lines() if l.startswith("data: ")]
                    text = "".join(
                        (json.loads(l[6:])["choices"] or [{}])[0].get("delta", {}).get("content") or ""
                        for l in lines[:-1]
                    )
                    return r.status_code, text, lines[-1] if lines else ""

            with ThreadPoolExecutor(max_workers=200) as pool:
                results = list(pool.map(one, range(200)))
        assert all(status == 200 for status, _, _ in results), [r for r in results if r[0] != 200][:3]
        assert all(text == "The sky is blue." and last == "data: [DONE]" for _, text, last in results)
        assert len(b.requests) + len(a.requests) >= 200
    finally:
        loom.stop()


def test_anthropic_ingress_fails_over_too(fakes):
    import anthropic

    a, b = fakes
    loom = start(fakes, FAILOVER)
    try:
        a.fail_next = [(503, {})]
        c = anthropic.Anthropic(base_url=loom.base, api_key="x", max_retries=0)
        raw = c.messages.with_raw_response.create(model="gpt-4o", max_tokens=50, messages=[{"role": "user", "content": "hi"}])
        assert raw.headers["x-loom-provider"] == "backup" and raw.headers["x-loom-attempts"] == "2"
        assert raw.parse().content[0].text == "Hello! How can I assist you today?"
        a.fail_next = ["cut"]
        with c.messages.stream(model="gpt-4o", max_tokens=50, messages=[{"role": "user", "content": "sky?"}]) as s:
            assert "".join(s.text_stream) == "The sky is blue."
    finally:
        loom.stop()


def test_breaker_half_opens_after_its_cooldown_and_closes_on_success(fakes):
    from harness import wait_until

    a, b = fakes
    loom = start(fakes, "    strategy: priority\n    circuit_breaker:\n      failure_threshold: 2\n      cooldown: 1s\n")
    try:
        a.fail_next = [(503, {})] * 2
        assert [chat(loom).status_code for _ in range(2)] == [503, 503]
        assert chat(loom).headers["x-loom-provider"] == "backup"

        def primary():
            doc = httpx.get(loom.admin + "/ai/providers").json()
            return next(p for p in doc["providers"] if p["name"] == "primary")

        assert primary()["circuit"] == "open"
        wait_until(lambda: primary()["circuit"] == "half_open", timeout=5, what="the cool-down to end")
        # One trial goes to the primary; it succeeds and the circuit closes.
        r = chat(loom)
        assert r.headers["x-loom-provider"] == "primary"
        assert primary()["circuit"] == "closed" and primary()["status"] == "healthy"
    finally:
        loom.stop()


def test_overall_deadline_stops_new_attempts(fakes):
    a, b = fakes
    loom = Loom(config(a.url, a.url, "    failover:\n      enabled: true\n      timeout: 300ms\n      max_retries: 5\n      deadline: 500ms\n"))
    try:
        a.delay = 0.45
        r = chat(loom)
        assert r.status_code == 504
        assert r.headers["x-loom-attempts"] == "2"
    finally:
        a.delay = 0
        loom.stop()


def test_a_route_can_override_the_strategy(fakes):
    a, b = fakes
    cfg = config(a.url, b.url, "    strategy: priority\n").replace(
        "routes:\n  - id: ai\n    path: /v1/*\n    ai_gateway: true\n",
        "routes:\n  - id: spread\n    path: /spread/v1/*\n    ai_gateway: true\n    strategy: round_robin\n"
        "  - id: ai\n    path: /v1/*\n    ai_gateway: true\n",
    )
    loom = Loom(cfg)
    try:
        with httpx.Client() as c:
            body = {"model": "gpt-4o", "messages": [{"role": "user", "content": "x"}]}
            ordered = {c.post(loom.base + "/v1/chat/completions", json=body).headers["x-loom-provider"] for _ in range(4)}
            spread = [c.post(loom.base + "/spread/v1/chat/completions", json=body).headers["x-loom-provider"] for _ in range(4)]
        assert ordered == {"primary"}
        assert sorted(spread) == ["backup", "backup", "primary", "primary"]
    finally:
        loom.stop()


def test_a_high_failure_share_opens_the_circuit(fakes):
    a, b = fakes
    loom = start(
        fakes,
        "    strategy: priority\n    circuit_breaker:\n      failure_threshold: 100\n      failure_rate: 0.5\n      min_requests: 10\n",
    )
    try:
        # Every other call fails: never two in a row, but half of them.
        a.fail_next = [(503, {}), "ok"] * 20
        providers = [chat(loom).headers.get("x-loom-provider") for _ in range(14)]
        assert providers[:10] == ["primary"] * 10
        assert providers[-3:] == ["backup"] * 3
        doc = httpx.get(loom.admin + "/ai/providers").json()
        assert next(p for p in doc["providers"] if p["name"] == "primary")["circuit"] == "open"
    finally:
        loom.stop()


def test_a_failing_model_opens_its_own_circuit_and_spares_the_others(fakes):
    a, _ = fakes
    text = config(a.url, a.url, "    strategy: priority\n    circuit_breaker:\n      failure_threshold: 3\n      cooldown: 30s\n")
    # One provider serves a healthy model and one that fails.
    text = text.replace("models: [gpt-4o, text-embedding-3-small, gpt-3.5-turbo-instruct]\n      priority: 1",
                        "models: [gpt-4o, fake-error-500]\n      priority: 1")
    text = text.replace("models: [gpt-4o, text-embedding-3-small, gpt-3.5-turbo-instruct]\n      priority: 2",
                        "models: [gpt-4o]\n      priority: 2")
    loom = Loom(text)
    try:
        for _ in range(3):
            assert chat(loom, model="fake-error-500").status_code == 502
            # The provider keeps answering its other model, so its own run of failures resets.
            assert chat(loom).headers["x-loom-provider"] == "primary"
        calls = len(a.requests)
        refused = chat(loom, model="fake-error-500")
        assert refused.status_code == 503 and "unavailable" in refused.json()["error"]["message"]
        assert len(a.requests) == calls, "an open model circuit sends nothing upstream"
        assert chat(loom).headers["x-loom-provider"] == "primary"
        providers = {p["name"]: p for p in httpx.get(loom.admin + "/ai/providers").json()["providers"]}
        assert providers["primary"]["circuit"] == "closed"
        assert providers["primary"]["models"] == {"fake-error-500": "open"}
    finally:
        loom.stop()


def test_active_health_checks_open_and_close_the_circuit_without_traffic(fakes):
    a, b = fakes
    from harness import wait_until

    routing = ("    strategy: priority\n    circuit_breaker:\n      failure_threshold: 2\n      cooldown: 60s\n"
               "    health_check:\n      enabled: true\n      interval: 100ms\n      timeout: 1s\n")
    a.models_status = 503
    loom = start(fakes, routing)

    def circuit(name):
        providers = httpx.get(loom.admin + "/ai/providers").json()["providers"]
        return next(p["circuit"] for p in providers if p["name"] == name)

    try:
        wait_until(lambda: circuit("primary") == "open", what="the failing provider's circuit opens")
        assert circuit("backup") == "closed"
        assert a.requests == [], "no client request was needed"
        # Traffic goes around the open provider.
        assert chat(loom).headers["x-loom-provider"] == "backup"
        # The provider recovers: the next passing check closes its circuit
        # long before the 60 s cool-down would have.
        a.models_status = 200
        wait_until(lambda: circuit("primary") == "closed", what="the recovered provider's circuit closes")
        assert chat(loom).headers["x-loom-provider"] == "primary"
        assert a.models_calls >= 3 and b.models_calls >= 1
    finally:
        loom.stop()
