"""The semantic cache through the real binary, driven by the OpenAI SDK:
exact and similar hits, near-misses, consumer isolation, TTL (injected
clock) and snapshots across restarts, size-bound eviction, streamed replay
and streamed storage, client bypass, hot reload, usage savings and metrics.

Tests of similarity with the local model need `scripts/fetch-models`;
outside CI they skip when it has not run."""

import json
import os
import signal
import subprocess
import tempfile
import uuid
from pathlib import Path

import httpx
import openai
import pytest

from conftest import LISTEN
from harness import closed_port, FakeOpenAI, Loom, drop_prefix, http_get, metric_value, need_redis, wait_until

WEB_KEY = "sk-web-cache-0123456789"
MOBILE_KEY = "sk-mobile-cache-9876543210"
MODELS = Path(os.environ.get("LOOM_MODELS", Path.home() / ".cache/loom/models"))


def need_model():
    if not (MODELS / "all-MiniLM-L6-v2" / "model.onnx").exists():
        if os.environ.get("CI"):
            raise AssertionError(f"{MODELS}: the local model must be fetched in CI (scripts/fetch-models)")
        pytest.skip("SKIPPED: the local embedding model is missing; run scripts/fetch-models")


def config(upstream: str, cache: str, route_extra: str = "", auth: bool = False) -> str:
    auth_block = """
    middleware:
      auth:
        type: api_key
        header: X-API-Key""" if auth else ""
    consumers = f"""
consumers:
  - name: web-app
    keys: ["{WEB_KEY}"]
  - name: mobile-app
    keys: ["{MOBILE_KEY}"]
""" if auth else ""
    return LISTEN + f"""routes:
  - id: ai
    path: /v1/*
    ai_gateway: true{auth_block}
  - id: shared
    path: /shared/v1/*
    ai_gateway: true{auth_block}
{route_extra}
{consumers}
ai_gateway:
  enabled: true
  providers:
    - name: upstream
      type: openai
      api_key: sk-upstream-secret-123
      base_url: {upstream}
      timeout: 5s
      models: [gpt-4o, text-embedding-3-small, fake-broken-stream]
  token_accounting:
    enabled: true
  semantic_cache:
    enabled: true
{cache}
"""


LOCAL = """    absent_temperature_is_zero: true
    embedding:
      provider: local
"""


@pytest.fixture
def fake():
    f = FakeOpenAI()
    yield f
    f.close()


def client(loom, prefix="/v1", key=None) -> openai.OpenAI:
    headers = {"X-API-Key": key} if key else None
    return openai.OpenAI(base_url=loom.base + prefix, api_key="sk-client", max_retries=0, default_headers=headers)


def ask(c: openai.OpenAI, prompt: str, **kw):
    """One chat completion; returns (headers, completion)."""
    raw = c.chat.completions.with_raw_response.create(
        model="gpt-4o", messages=[{"role": "user", "content": prompt}], **kw
    )
    return raw.headers, raw.parse()


def chat_calls(fake) -> int:
    return sum(1 for r in fake.requests if r["path"].endswith("/chat/completions"))


def test_an_identical_request_is_answered_without_the_provider(fake):
    loom = Loom(config(fake.url, "    absent_temperature_is_zero: true\n"))
    try:
        c = client(loom)
        fake.answer_chunks = ["The first ", "answer."]
        h1, first = ask(c, "Name three prime numbers.")
        assert h1["x-loom-cache"] == "miss"
        fake.answer_chunks = ["A different answer."]
        h2, second = ask(c, "Name three prime numbers.")
        assert h2["x-loom-cache"] == "hit"
        assert h2["x-loom-cache-similarity"] == "1.0000"
        assert second.choices[0].message.content == "The first answer."
        assert second.id == first.id and second.usage.total_tokens == first.usage.total_tokens
        assert chat_calls(fake) == 1
        # Sampled requests are not cached: the client asked for variety.
        h3, _ = ask(c, "Name three prime numbers.", temperature=0.8)
        assert h3["x-loom-cache"] == "skip"
        assert chat_calls(fake) == 2
    finally:
        loom.stop()


def test_a_paraphrase_hits_and_near_misses_do_not(fake):
    need_model()
    loom = Loom(config(fake.url, LOCAL))
    try:
        c = client(loom)
        fake.answer_chunks = ["Paris."]
        assert ask(c, "What is the capital of France?")[0]["x-loom-cache"] == "miss"
        fake.answer_chunks = ["Madrid."]
        h, para = ask(c, "Which city is the capital of France?")
        assert h["x-loom-cache"] == "hit", h
        assert 0.88 <= float(h["x-loom-cache-similarity"]) < 1.0
        assert para.choices[0].message.content == "Paris."
        assert chat_calls(fake) == 1
        # Another country, a negation, another number: each goes upstream.
        for near in [
            "What is the capital of Spain?",
            "What is not the capital of France?",
        ]:
            h, answer = ask(c, near)
            assert h["x-loom-cache"] == "miss", near
            assert answer.choices[0].message.content == "Madrid."
        assert chat_calls(fake) == 3
        fake.answer_chunks = ["8.05 km"]
        ask(c, "Convert 5 miles to km")
        fake.answer_chunks = ["3.1 miles"]
        h, answer = ask(c, "Convert 5 km to miles")
        assert h["x-loom-cache"] == "miss"
        assert answer.choices[0].message.content == "3.1 miles"
        # A different system prompt is another conversation: no hit.
        raw = c.chat.completions.with_raw_response.create(
            model="gpt-4o",
            messages=[{"role": "system", "content": "Answer like a pirate."},
                      {"role": "user", "content": "What is the capital of France?"}],
        )
        assert raw.headers["x-loom-cache"] == "miss"
        m = loom.metrics()
        assert metric_value(m, "loom_ai_cache_hits_total") == 1
        assert metric_value(m, "loom_ai_cache_misses_total") == 6
        assert metric_value(m, "loom_ai_cache_requests_total", status="hit") == 1
        assert metric_value(m, "loom_ai_cache_entries") == 6
        assert metric_value(m, "loom_ai_cache_bytes") > 6 * 384 * 4
        assert metric_value(m, "loom_ai_cache_lookup_seconds_count", kind="similar") == 7
    finally:
        loom.stop()


def test_one_consumers_answers_never_serve_another_unless_global(fake):
    route = """  - id: global
    path: /global/v1/*
    ai_gateway: true
    middleware:
      auth:
        type: api_key
        header: X-API-Key
    semantic_cache:
      scope: global
  - id: nocache
    path: /nocache/v1/*
    ai_gateway: true
    semantic_cache:
      enabled: false"""
    loom = Loom(config(fake.url, "    absent_temperature_is_zero: true\n", route_extra=route, auth=True))
    try:
        web, mobile = client(loom, key=WEB_KEY), client(loom, key=MOBILE_KEY)
        ask(web, "Summarise our refund policy.")
        assert ask(web, "Summarise our refund policy.")[0]["x-loom-cache"] == "hit"
        assert ask(mobile, "Summarise our refund policy.")[0]["x-loom-cache"] == "miss"
        assert chat_calls(fake) == 2
        # A route with `scope: global` shares answers between consumers.
        gweb, gmobile = client(loom, "/global/v1", WEB_KEY), client(loom, "/global/v1", MOBILE_KEY)
        assert ask(gweb, "What are your opening hours?")[0]["x-loom-cache"] == "miss"
        assert ask(gmobile, "What are your opening hours?")[0]["x-loom-cache"] == "hit"
        # A route with the cache off neither looks up nor marks.
        h, _ = ask(client(loom, "/nocache/v1"), "Summarise our refund policy.")
        assert "x-loom-cache" not in h
        # Usage: hits are requests with no tokens and report what they saved.
        _, body = http_get(f"{loom.admin}/ai/usage/mobile-app")
        usage = json.loads(body)
        # One answered by the provider (the recorded answer: 29 tokens), one
        # from the cache: counted, with no tokens, saving the original's 29.
        assert usage["cache"]["hits"] == 1 and usage["cache"]["saved_tokens"] == 29
        assert usage["requests"] == 2 and usage["tokens"]["total"] == 29
        _, body = http_get(f"{loom.admin}/ai/usage/web-app")
        usage = json.loads(body)
        assert usage["cache"]["hits"] == 1 and usage["requests"] == 3
    finally:
        loom.stop()


def test_streams_are_replayed_and_stored_only_when_complete(fake):
    loom = Loom(config(fake.url, "    absent_temperature_is_zero: true\n"))
    try:
        c = client(loom)
        fake.answer_chunks = ["Rivers ", "flow ", "to ", "the sea."]
        first_usage = ask(c, "Where do rivers flow?")[1].usage.total_tokens
        # A whole answer replayed as a stream, with usage when asked.
        with c.chat.completions.with_streaming_response.create(
            model="gpt-4o", messages=[{"role": "user", "content": "Where do rivers flow?"}],
            stream=True, stream_options={"include_usage": True},
        ) as raw:
            assert raw.headers["x-loom-cache"] == "hit"
            assert raw.headers["content-type"].startswith("text/event-stream")
            chunks = list(raw.parse())
        text = "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices)
        assert text == "Rivers flow to the sea."
        assert [ch.choices[0].finish_reason for ch in chunks if ch.choices][-1] == "stop"
        assert chunks[-1].usage.total_tokens == first_usage
        # A streamed answer is stored once complete and serves whole requests.
        fake.answer_chunks = ["Because ", "of Rayleigh ", "scattering."]
        stream = c.chat.completions.create(
            model="gpt-4o", messages=[{"role": "user", "content": "Why is the sky blue?"}], stream=True)
        assert "".join(ch.choices[0].delta.content or "" for ch in stream if ch.choices) == \
            "Because of Rayleigh scattering."
        h, whole = ask(c, "Why is the sky blue?")
        assert h["x-loom-cache"] == "hit"
        assert whole.choices[0].message.content == "Because of Rayleigh scattering."
        calls = chat_calls(fake)
        # A stream cut by the provider is never stored.
        fake.answer_chunks = None
        broken = [{"role": "user", "content": "Tell me a long story."}]
        with pytest.raises(Exception):
            list(c.chat.completions.create(model="fake-broken-stream", messages=broken, stream=True))
        with pytest.raises(Exception):
            list(c.chat.completions.create(model="fake-broken-stream", messages=broken, stream=True))
        assert chat_calls(fake) == calls + 2
    finally:
        loom.stop()


def test_clients_can_bypass_and_refresh_the_cache(fake):
    loom = Loom(config(fake.url, "    absent_temperature_is_zero: true\n"))
    try:
        c = client(loom)
        fake.answer_chunks = ["old"]
        ask(c, "What is new?")
        # no-cache: answered by the provider, and the fresh answer replaces the old.
        fake.answer_chunks = ["new"]
        h, a = ask(c, "What is new?", extra_headers={"Cache-Control": "no-cache"})
        assert h["x-loom-cache"] == "bypass" and a.choices[0].message.content == "new"
        assert ask(c, "What is new?")[1].choices[0].message.content == "new"
        # no-store and x-loom-cache: bypass keep nothing.
        fake.answer_chunks = ["secret"]
        for headers in [{"Cache-Control": "no-store"}, {"x-loom-cache": "bypass"}]:
            h, _ = ask(c, "Something private", extra_headers=headers)
            assert h["x-loom-cache"] == "bypass"
        assert ask(c, "Something private")[0]["x-loom-cache"] == "miss"
        assert chat_calls(fake) == 5
        assert metric_value(loom.metrics(), "loom_ai_cache_requests_total", status="bypass") == 3
    finally:
        loom.stop()


def test_entries_expire_and_survive_restarts_through_the_snapshot(fake):
    snap = Path(tempfile.mkdtemp(prefix="loom-cache-")) / "cache.jsonl"
    cache = f"    absent_temperature_is_zero: true\n    ttl: 10m\n    snapshot: {snap}\n"
    loom = Loom(config(fake.url, cache))
    try:
        fake.answer_chunks = ["kept"]
        ask(client(loom), "Remember this answer.")
    finally:
        assert loom.stop() == 0
    assert snap.exists()
    # Restarted: the answer is served from the snapshot.
    loom = Loom(config(fake.url, cache))
    try:
        h, a = ask(client(loom), "Remember this answer.")
        assert h["x-loom-cache"] == "hit" and a.choices[0].message.content == "kept"
    finally:
        loom.stop()
    # Eleven minutes later (the clock moved on), the entry has expired.
    loom = Loom(config(fake.url, cache), env={"LOOM_CLOCK_OFFSET": "660"})
    try:
        assert ask(client(loom), "Remember this answer.")[0]["x-loom-cache"] == "miss"
        assert chat_calls(fake) == 2
    finally:
        loom.stop()


def test_the_size_bound_evicts_the_least_recently_used(fake):
    loom = Loom(config(fake.url, "    absent_temperature_is_zero: true\n    max_size: 8KB\n"))
    try:
        c = client(loom)
        fake.answer_chunks = ["x" * 1500]
        for i in range(8):
            ask(c, f"Question number {i}?")
        m = loom.metrics()
        entries, size = metric_value(m, "loom_ai_cache_entries"), metric_value(m, "loom_ai_cache_bytes")
        assert 2 <= entries < 8 and size <= 8 * 1024
        assert ask(c, "Question number 7?")[0]["x-loom-cache"] == "hit"
        assert ask(c, "Question number 0?")[0]["x-loom-cache"] == "miss"
    finally:
        loom.stop()


def test_the_cache_survives_a_reload(fake):
    loom = Loom(config(fake.url, "    absent_temperature_is_zero: true\n"))
    try:
        ask(client(loom), "Will you remember me?")
        before = loom.generation()
        loom.write_config(config(fake.url, "    absent_temperature_is_zero: true\n    ttl: 2h\n"))
        loom.signal(signal.SIGHUP)
        wait_until(lambda: loom.generation() > before, what="reload")
        assert ask(client(loom), "Will you remember me?")[0]["x-loom-cache"] == "hit"
    finally:
        loom.stop()


def test_a_provider_can_embed_for_the_cache(fake):
    fake.embed_by_words = True
    cache = """    absent_temperature_is_zero: true
    similarity_threshold: 0.85
    embedding:
      provider: upstream
      model: text-embedding-3-small
"""
    loom = Loom(config(fake.url, cache))
    try:
        c = client(loom)
        ask(c, "how are rainbows formed")
        # Nearly the same words (the fake embeds bags of words): a similar hit.
        h, _ = ask(c, "Rainbows: how are they formed")
        assert h["x-loom-cache"] == "hit" and float(h["x-loom-cache-similarity"]) < 1.0
        assert ask(c, "how are clouds formed")[0]["x-loom-cache"] == "miss"
        embeds = [r for r in fake.requests if r["path"].endswith("/embeddings")]
        assert len(embeds) == 3 and embeds[0]["body"]["model"] == "text-embedding-3-small"
    finally:
        loom.stop()


def test_tool_calls_are_not_cached_unless_configured(fake):
    tools = [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object", "properties": {}}}}]
    for configured, second in [(False, "miss"), (True, "hit")]:
        extra = "    cache_tool_calls: true\n" if configured else ""
        loom = Loom(config(fake.url, "    absent_temperature_is_zero: true\n" + extra))
        try:
            c = client(loom)
            ask(c, "Weather in Oslo?", tools=tools)
            h, answer = ask(c, "Weather in Oslo?", tools=tools)
            assert h["x-loom-cache"] == second
            assert answer.choices[0].message.tool_calls
        finally:
            loom.stop()


def test_bad_cache_settings_are_refused_at_start(fake):
    cache = "    similarity_threshold: 1.5\n    embedding: {provider: upstrem}\n"
    loom = Loom(config(fake.url, cache), wait_ready=False)
    code = loom.proc.wait(20)
    log = loom.log()
    loom.stop()
    assert code != 0
    assert "similarity_threshold" in log and 'did you mean "upstream"' in log


def redis_cache(prefix: str, address: str = "127.0.0.1:6379") -> str:
    return f"""    absent_temperature_is_zero: true
    backend: redis
    redis:
      address: "{address}"
      key_prefix: "{prefix}"
      timeout: 200ms
"""


def test_replicas_share_exact_answers_through_redis(fake):
    need_redis()
    prefix = f"loom-test-{uuid.uuid4().hex[:8]}:"
    a = Loom(config(fake.url, redis_cache(prefix)))
    b = Loom(config(fake.url, redis_cache(prefix)))
    try:
        fake.answer_chunks = ["from replica a"]
        assert ask(client(a), "Shared question?")[0]["x-loom-cache"] == "miss"
        # The store is written in the background: wait for the key.
        wait_until(lambda: bool(subprocess.run(["redis-cli", "--scan", "--pattern", prefix + "cache:*"],
                                               capture_output=True, text=True).stdout.strip()),
                   what="the shared entry in Redis")
        fake.answer_chunks = ["from replica b"]
        h, answer = ask(client(b), "Shared question?")
        assert h["x-loom-cache"] == "hit" and h["x-loom-cache-similarity"] == "1.0000"
        assert answer.choices[0].message.content == "from replica a"
        assert chat_calls(fake) == 1
        ttl = int(subprocess.run(["redis-cli", "ttl", subprocess.run(
            ["redis-cli", "--scan", "--pattern", prefix + "cache:*"], capture_output=True, text=True
        ).stdout.split()[0]], capture_output=True, text=True).stdout.strip())
        assert 3500 < ttl <= 3600
    finally:
        a.stop()
        b.stop()
        drop_prefix(prefix)


def test_an_unreachable_redis_only_costs_shared_hits(fake):
    closed = closed_port()
    loom = Loom(config(fake.url, redis_cache("loom-x:", f"127.0.0.1:{closed}")))
    try:
        c = client(loom)
        assert ask(c, "Is Redis needed?")[0]["x-loom-cache"] == "miss"
        # This replica's memory still answers.
        assert ask(c, "Is Redis needed?")[0]["x-loom-cache"] == "hit"
        wait_until(lambda: "Redis unreachable" in loom.log(), what="the warning")
    finally:
        loom.stop()


def qdrant_cache(url: str, collection: str) -> str:
    return LOCAL + f"""    backend: qdrant
    qdrant:
      url: "{url}"
      collection: "{collection}"
      timeout: 2s
"""


def test_replicas_share_similar_answers_through_qdrant(fake):
    url = os.environ.get("QDRANT_URL")
    if not url:
        pytest.skip("SKIPPED: QDRANT_URL is not set (a Qdrant gRPC URL, e.g. http://127.0.0.1:6334)")
    need_model()
    collection = f"loom_test_{uuid.uuid4().hex[:8]}"
    a = Loom(config(fake.url, qdrant_cache(url, collection)))
    b = Loom(config(fake.url, qdrant_cache(url, collection)))
    try:
        fake.answer_chunks = ["Paris."]
        assert ask(client(a), "What is the capital of France?")[0]["x-loom-cache"] == "miss"
        # The point is written in the background: replica b sees it once it lands.
        def shared():
            h, answer = ask(client(b), "Which city is the capital of France?")
            return h["x-loom-cache"] == "hit" and answer.choices[0].message.content == "Paris."
        wait_until(shared, what="the paraphrase answered from Qdrant by the other replica")
        assert ask(client(b), "What is the capital of Spain?")[0]["x-loom-cache"] == "miss"
        # An identical request finds the point by its id.
        assert ask(client(b), "What is the capital of France?")[0]["x-loom-cache-similarity"] == "1.0000"
    finally:
        a.stop()
        b.stop()


def test_an_unreachable_qdrant_only_costs_shared_hits(fake):
    need_model()
    closed = closed_port()
    loom = Loom(config(fake.url, qdrant_cache(f"http://127.0.0.1:{closed}", "loom_cache")))
    try:
        c = client(loom)
        assert ask(c, "Is Qdrant needed?")[0]["x-loom-cache"] == "miss"
        assert ask(c, "Is Qdrant needed?")[0]["x-loom-cache"] == "hit"
        assert ask(c, "Is Qdrant really needed?")[0]["x-loom-cache"] == "miss"
        wait_until(lambda: "Qdrant unreachable" in loom.log(), what="the warning")
    finally:
        loom.stop()


@pytest.mark.parametrize("kind", ["openai", "openai_compatible"])
def test_the_responses_api_is_cached_as_chat_is(fake, kind):
    """`/v1/responses` through the same cache stage: an OpenAI provider
    answering natively, or a chat-only one through translation; whole and
    streamed, stored from either, and a hit is a response of its own."""
    cfg = config(fake.url, "    absent_temperature_is_zero: true\n").replace("type: openai\n", f"type: {kind}\n")
    loom = Loom(cfg)

    def upstream() -> int:
        return sum(1 for r in fake.requests if r["path"].endswith(("/responses", "/chat/completions")))

    try:
        c = client(loom)
        raw = c.responses.with_raw_response.create(model="gpt-4o", input="Name three prime numbers.")
        assert raw.headers["x-loom-cache"] == "miss"
        first = raw.parse()
        fake.answer_chunks = ["A different answer."]
        raw = c.responses.with_raw_response.create(model="gpt-4o", input="Name three prime numbers.")
        assert raw.headers["x-loom-cache"] == "hit"
        second = raw.parse()
        assert second.output_text == first.output_text and second.output_text
        assert second.id != first.id, "each answer served is a response of its own"
        assert second.usage.output_tokens == first.usage.output_tokens
        assert upstream() == 1
        with c.responses.stream(model="gpt-4o", input="Name three prime numbers.") as s:
            kinds = [e.type for e in s]
            final = s.get_final_response()
        assert final.output_text == first.output_text
        assert kinds[0] == "response.created" and kinds[-1] == "response.completed"
        assert "response.output_text.delta" in kinds
        assert upstream() == 1
        # A streamed answer is stored too, and serves a whole request.
        with c.responses.stream(model="gpt-4o", input="Name two even numbers.") as s:
            streamed = s.get_final_response()
        assert upstream() == 2
        raw = c.responses.with_raw_response.create(model="gpt-4o", input="Name two even numbers.")
        assert raw.headers["x-loom-cache"] == "hit"
        assert raw.parse().output_text == streamed.output_text
        assert upstream() == 2
        # The hit can be continued: Loom kept it.
        c.responses.create(model="gpt-4o", input="And two more?", previous_response_id=second.id)
        assert upstream() == 3
        msgs = fake.requests[-1]["body"]["messages"]
        assert [m["role"] for m in msgs] == ["user", "assistant", "user"]
        assert msgs[1]["content"] == first.output_text
    finally:
        loom.stop()
