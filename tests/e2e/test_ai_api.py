"""The OpenAI-compatible API through the real binary, driven by the official SDK."""

import json

import httpx
import openai
import pytest

from conftest import ai_config
from harness import Loom, fixture, metric_value


def client(loom, **kw) -> openai.OpenAI:
    return openai.OpenAI(base_url=loom.base + "/v1", api_key="sk-client-key", max_retries=0, **kw)


def test_chat_completion_round_trip(loom_ai, fake_openai):
    resp = client(loom_ai).chat.completions.create(
        model="gpt-4o",
        messages=[{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hello!"}],
        temperature=0,
        extra_body={"some_future_parameter": {"x": [1, 2]}},
    )
    expected = json.loads(fixture("openai_chat.json"))
    assert resp.id == expected["id"]
    assert resp.choices[0].message.content == expected["choices"][0]["message"]["content"]
    assert resp.usage.prompt_tokens == 19 and resp.usage.total_tokens == 29
    assert resp.system_fingerprint == "fp_fc9f1d7035"

    sent = fake_openai.requests[-1]
    assert sent["path"] == "/v1/chat/completions"
    # Loom authenticates upstream with the provider key, never the client's.
    assert sent["headers"]["authorization"] == "Bearer sk-upstream-secret-123"
    assert sent["body"]["messages"][0] == {"role": "system", "content": "Be brief."}
    assert sent["body"]["temperature"] == 0
    # Unknown parameters pass through untouched.
    assert sent["body"]["some_future_parameter"] == {"x": [1, 2]}

    m = loom_ai.metrics()
    assert metric_value(m, "loom_ai_requests_total", provider="upstream", model="gpt-4o", status="200") == 1
    assert metric_value(m, "loom_ai_tokens_total", provider="upstream", type="prompt") == 19
    assert metric_value(m, "loom_ai_tokens_total", provider="upstream", type="completion") == 10


def test_model_mapping_rewrites_the_upstream_model(loom_ai, fake_openai):
    client(loom_ai).chat.completions.create(model="smart", messages=[{"role": "user", "content": "hi"}])
    assert fake_openai.requests[-1]["body"]["model"] == "gpt-4o"


def test_stream_first_chunk_arrives_before_upstream_finishes(loom_ai, fake_openai):
    stream = client(loom_ai).chat.completions.create(
        model="fake-gated-stream", messages=[{"role": "user", "content": "sky?"}], stream=True
    )
    chunks = []
    for chunk in stream:
        if not chunks:
            # The upstream is holding its remaining events until we release it,
            # so this chunk was relayed before the upstream sent its last one.
            assert not fake_openai.last_event_sent.is_set()
            fake_openai.release.set()
        chunks.append(chunk)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "The sky is blue."
    assert chunks[-1].choices[0].finish_reason == "stop"
    # The client did not ask for usage: Loom asked upstream for it, then removed it.
    assert all(c.usage is None for c in chunks)
    assert fake_openai.requests[-1]["body"]["stream_options"] == {"include_usage": True}
    m = loom_ai.metrics()
    assert metric_value(m, "loom_ai_tokens_total", provider="upstream", type="completion") == 5


def test_stream_with_usage_requested(loom_ai):
    chunks = list(
        client(loom_ai).chat.completions.create(
            model="gpt-4o",
            messages=[{"role": "user", "content": "sky?"}],
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert chunks[-1].choices == []
    assert chunks[-1].usage.total_tokens == 19


def test_stream_is_relayed_event_by_event_with_done(loom_ai):
    with httpx.stream(
        "POST",
        loom_ai.base + "/v1/chat/completions",
        json={"model": "gpt-4o", "messages": [{"role": "user", "content": "x"}], "stream": True},
    ) as r:
        assert r.status_code == 200
        assert r.headers["content-type"] == "text/event-stream"
        lines = [line for line in r.iter_lines() if line]
    assert lines[-1] == "data: [DONE]"
    first = json.loads(lines[0][len("data: "):])
    # Unknown chunk fields (here `obfuscation`) pass through.
    assert first["obfuscation"] == "yW2k"


def test_broken_upstream_stream_ends_with_an_error_event(loom_ai):
    stream = client(loom_ai).chat.completions.create(
        model="fake-broken-stream", messages=[{"role": "user", "content": "x"}], stream=True
    )
    got = []
    with pytest.raises(openai.APIError) as err:
        for chunk in stream:
            got.append(chunk)
    assert len(got) == 2
    assert "stream" in str(err.value).lower()


def test_embeddings_float_and_base64(loom_ai):
    expected = json.loads(fixture("openai_embeddings.json"))["data"][0]["embedding"]
    c = client(loom_ai)
    # The SDK asks for base64 by default and decodes it.
    resp = c.embeddings.create(model="text-embedding-3-small", input="The food was delicious")
    assert resp.data[0].embedding == pytest.approx(expected, rel=1e-6)
    resp = c.embeddings.create(model="text-embedding-3-small", input=["a"], encoding_format="float")
    assert resp.data[0].embedding == pytest.approx(expected)
    assert resp.usage.prompt_tokens == 5


def test_legacy_completions(loom_ai):
    resp = client(loom_ai).completions.create(model="gpt-3.5-turbo-instruct", prompt="Say this is a test")
    assert resp.choices[0].text == "\n\nThis is indeed a test"
    assert resp.usage.total_tokens == 12


def test_models_list_and_retrieve(loom_ai):
    c = client(loom_ai)
    ids = {m.id for m in c.models.list()}
    assert {"gpt-4o", "text-embedding-3-small", "smart"} <= ids
    assert c.models.retrieve("gpt-4o").owned_by == "upstream"
    with pytest.raises(openai.NotFoundError):
        c.models.retrieve("no-such-model")


def post(loom, body: bytes, content_type: str = "application/json"):
    return httpx.post(loom.base + "/v1/chat/completions", content=body, headers={"content-type": content_type})


def assert_envelope(resp, status: int, param=None):
    assert resp.status_code == status, resp.text
    err = resp.json()["error"]
    assert set(err) == {"message", "type", "param", "code"}
    assert err["message"]
    if param:
        assert err["param"] == param
    return err


def test_malformed_json_is_400(loom_ai):
    assert_envelope(post(loom_ai, b'{"model": "gpt-4o", "messages": ['), 400)


def test_body_that_is_not_utf8_is_400(loom_ai):
    body = b'{"model": "gpt-4o", "messages": [{"role": "user", "content": "caf\xe9"}]}'
    err = assert_envelope(post(loom_ai, body), 400)
    assert "not UTF-8" in err["message"] and str(body.index(b"\xe9")) in err["message"]
    # UTF-8 text, escaped or not, still passes.
    ok = post(loom_ai, '{"model": "gpt-4o", "messages": [{"role": "user", "content": "café \\u00e9 ✓"}]}'.encode())
    assert ok.status_code == 200, ok.text


def test_unchanged_chat_is_relayed_byte_for_byte(loom_ai, fake_openai):
    # Odd spacing, key order, content parts, and a parameter Loom does not
    # read (mistyped, so the provider would refuse it): the body goes upstream
    # exactly as sent, and the provider is the one to check it.
    raw = (
        b'{ "messages" : [ {"role":"user","content":[{"type":"text","text":"hi \\u00e9"}]} ],\n'
        b'  "temperature": "warm", "model":"gpt-4o", "max_tokens": 7 }'
    )
    resp = post(loom_ai, raw)
    assert resp.status_code == 200, resp.text
    assert fake_openai.requests[-1]["raw"] == raw
    assert resp.json()["usage"]["total_tokens"] == 29


def test_what_loom_reads_is_checked_before_anything_is_sent(loom_ai, fake_openai):
    before = len(fake_openai.requests)
    for body, param in [
        (b'{"model":"gpt-4o","messages":[{"role":"user","content":"x"}],"stream":"yes"}', None),
        (b'{"model":"gpt-4o","messages":[{"content":"x"}]}', "role"),
        (b'{"model":"gpt-4o","messages":[{"role":"user","content":5}]}', None),
        (b'{"model":"gpt-4o","messages":[{"role":"user","content":"x"}],"max_tokens":-1}', None),
        (b'{"model":7,"messages":[{"role":"user","content":"x"}]}', None),
    ]:
        assert_envelope(post(loom_ai, body), 400, param=param)
    # A mapped model is rewritten, so the whole request is read and checked.
    err = assert_envelope(post(loom_ai, b'{"model":"smart","messages":[{"role":"user","content":"x"}],"temperature":"warm"}'), 400)
    assert "warm" in err["message"]
    assert len(fake_openai.requests) == before


def test_missing_fields_are_400_naming_the_parameter(loom_ai):
    assert_envelope(post(loom_ai, b'{"model": "gpt-4o"}'), 400, param="messages")
    assert_envelope(post(loom_ai, b'{"messages": [{"role":"user","content":"x"}]}'), 400, param="model")
    assert_envelope(post(loom_ai, b'{"model": "gpt-4o", "messages": []}'), 400, param="messages")


def test_unknown_model_is_404(loom_ai):
    with pytest.raises(openai.NotFoundError) as err:
        client(loom_ai).chat.completions.create(model="gpt-99", messages=[{"role": "user", "content": "x"}])
    assert err.value.code == "model_not_found"
    assert "available models: " in err.value.message and "gpt-4o" in err.value.message


def test_oversized_body_is_413(loom_ai):
    big = json.dumps({"model": "gpt-4o", "messages": [{"role": "user", "content": "x" * 70_000}]}).encode()
    assert_envelope(post(loom_ai, big), 413)


def test_wrong_content_type_is_415(loom_ai):
    assert_envelope(post(loom_ai, b"model=gpt-4o", "application/x-www-form-urlencoded"), 415)


def test_upstream_4xx_body_passes_through_unchanged(loom_ai):
    resp = post(loom_ai, b'{"model": "fake-error-400", "messages": [{"role":"user","content":"x"}]}')
    assert resp.status_code == 400
    assert resp.content == fixture("openai_error_400.json")


def test_upstream_5xx_is_502_with_the_provider_message(loom_ai):
    with pytest.raises(openai.APIStatusError) as err:
        client(loom_ai).chat.completions.create(model="fake-error-500", messages=[{"role": "user", "content": "x"}])
    assert err.value.status_code == 502
    assert "The server had an error" in err.value.message


def test_upstream_timeout_is_504(loom_ai):
    resp = post(loom_ai, b'{"model": "fake-hang", "messages": [{"role":"user","content":"x"}]}')
    assert_envelope(resp, 504)


def test_unreachable_upstream_is_502(tmp_path):
    from harness import Loom, free_port
    from conftest import ai_config

    loom = Loom(ai_config(f"http://127.0.0.1:{free_port()}/v1"), env={"UPSTREAM_KEY": "k"})
    try:
        resp = post(loom, b'{"model": "gpt-4o", "messages": [{"role":"user","content":"x"}]}')
        err = assert_envelope(resp, 502)
        assert err["code"] == "upstream_unreachable"
    finally:
        loom.stop()


def test_secrets_never_reach_admin_responses_or_logs(loom_ai):
    client(loom_ai).chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "x"}])
    config = httpx.get(loom_ai.admin + "/config").text
    assert "sk-upstream-secret-123" not in config
    assert "[REDACTED]" in config
    assert "sk-upstream-secret-123" not in loom_ai.metrics()
    assert "sk-upstream-secret-123" not in loom_ai.log()
    assert "sk-client-key" not in loom_ai.log()


def test_admin_providers_shape(loom_ai):
    client(loom_ai).chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "x"}])
    doc = httpx.get(loom_ai.admin + "/ai/providers").json()
    (p,) = doc["providers"]
    assert {"name", "status", "requests", "tokens_in", "tokens_out", "avg_latency_ms"} <= set(p)
    assert {"errors", "circuit", "ttfb_ms", "ttfb_p50_ms", "ttfb_p99_ms"} <= set(p)
    assert p["ttfb_p50_ms"] > 0 and p["ttfb_p99_ms"] >= p["ttfb_p50_ms"] and p["circuit"] == "closed"
    assert p["name"] == "upstream" and p["status"] == "healthy"
    assert p["requests"] == 1 and p["tokens_in"] == 19 and p["tokens_out"] == 10


def test_access_log_line_per_request(loom_ai):
    resp = httpx.post(
        loom_ai.base + "/v1/chat/completions",
        json={"model": "gpt-4o", "messages": [{"role": "user", "content": "x"}]},
        headers={"x-request-id": "trace-abc-1"},
    )
    assert resp.headers["x-request-id"] == "trace-abc-1"
    lines = [l for l in loom_ai.log().splitlines() if "request_id=trace-abc-1" in l]
    assert len(lines) == 1
    line = lines[0]
    for part in ["route=ai", "status=200", 'provider="upstream"', 'model="gpt-4o"', "tokens_in=19", "tokens_out=10", "duration_ms="]:
        assert part in line, line


def test_client_disconnect_cancels_the_upstream_request(loom_ai, fake_openai):
    with httpx.stream(
        "POST",
        loom_ai.base + "/v1/chat/completions",
        json={"model": "fake-gated-stream", "messages": [{"role": "user", "content": "x"}], "stream": True},
    ) as r:
        first = next(r.iter_lines())
        assert first.startswith("data: ")
    # The client is gone while the upstream is silent. Loom notices, ends the
    # exchange and drops its upstream connection, so the upstream's next
    # write fails.
    from harness import wait_until

    wait_until(lambda: "status=499" in loom_ai.log(), what="Loom to notice the client leaving")
    fake_openai.release.set()
    wait_until(fake_openai.cancelled.is_set, what="the upstream to see the cancellation")
    line = next(l for l in loom_ai.log().splitlines() if "status=499" in l)
    assert 'error="client_closed"' in line


def test_legacy_completions_stream(loom_ai, fake_openai):
    chunks = list(
        client(loom_ai).completions.create(model="gpt-3.5-turbo-instruct", prompt="Say this is a test", stream=True)
    )
    assert "".join(c.choices[0].text for c in chunks if c.choices) == "\n\nThis is indeed a test"
    assert fake_openai.requests[-1]["body"]["stream_options"] == {"include_usage": True}
    assert all(c.usage is None for c in chunks)


WEATHER_TOOL = {
    "type": "function",
    "function": {"name": "get_weather", "parameters": {"type": "object", "properties": {"location": {"type": "string"}}}},
}


def test_tool_call_round_trip_and_stream(loom_ai, fake_openai):
    c = client(loom_ai)
    messages = [{"role": "user", "content": "Weather in Paris?"}]
    first = c.chat.completions.create(model="gpt-4o", messages=messages, tools=[WEATHER_TOOL])
    (call,) = first.choices[0].message.tool_calls
    assert first.choices[0].finish_reason == "tool_calls"
    assert json.loads(call.function.arguments) == {"location": "Paris, France"}
    messages += [first.choices[0].message.model_dump(exclude_none=True), {"role": "tool", "tool_call_id": call.id, "content": "18C"}]
    second = c.chat.completions.create(model="gpt-4o", messages=messages, tools=[WEATHER_TOOL])
    assert second.choices[0].message.content == "Hello! How can I assist you today?"
    assert fake_openai.requests[-1]["body"]["messages"][2] == {"role": "tool", "tool_call_id": call.id, "content": "18C"}

    chunks = list(c.chat.completions.create(model="gpt-4o", messages=messages[:1], tools=[WEATHER_TOOL], stream=True))
    calls = [tc for ch in chunks if ch.choices for tc in (ch.choices[0].delta.tool_calls or [])]
    assert calls[0].id == "call_DdmO9pD3xa9XTPNJ32zg2hcA"
    assert json.loads("".join(tc.function.arguments or "" for tc in calls)) == {"location": "Paris, France"}


def test_image_and_json_mode_pass_through(loom_ai, fake_openai):
    client(loom_ai).chat.completions.create(
        model="gpt-4o",
        response_format={"type": "json_schema", "json_schema": {"name": "w", "schema": {"type": "object"}, "strict": True}},
        messages=[{"role": "user", "content": [
            {"type": "text", "text": "Describe as JSON"},
            {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo=", "detail": "low"}},
        ]}],
    )
    body = fake_openai.requests[-1]["body"]
    assert body["messages"][0]["content"][1] == {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo=", "detail": "low"}}
    assert body["response_format"]["json_schema"]["strict"] is True


def test_context_length_and_rate_limit_errors_pass_through(loom_ai):
    c = client(loom_ai)
    with pytest.raises(openai.BadRequestError) as err:
        c.chat.completions.create(model="fake-error-context", messages=[{"role": "user", "content": "x"}])
    assert err.value.code == "context_length_exceeded"
    assert err.value.param == "messages"
    with pytest.raises(openai.RateLimitError) as err:
        c.chat.completions.create(model="fake-error-429", messages=[{"role": "user", "content": "x"}])
    assert err.value.code == "rate_limit_exceeded"
    assert "Rate limit reached" in err.value.message


def test_max_tokens_per_request_caps_budgets_and_prompts(fake_openai):
    cfg = ai_config(fake_openai.url) + "  security:\n    max_tokens_per_request: 50\n"
    loom = Loom(cfg, env={"UPSTREAM_KEY": "k"})
    try:
        client = openai.OpenAI(base_url=loom.base + "/v1", api_key="x", max_retries=0)
        msgs = [{"role": "user", "content": "hi"}]
        with pytest.raises(openai.BadRequestError) as big:
            client.chat.completions.create(model="gpt-4o", messages=msgs, max_tokens=51)
        assert big.value.param == "max_tokens" and "limit of 50" in big.value.message
        long_prompt = [{"role": "user", "content": "word " * 200}]
        with pytest.raises(openai.BadRequestError) as long:
            client.chat.completions.create(model="gpt-4o", messages=long_prompt, max_tokens=5)
        assert "prompt has about" in long.value.message
        assert fake_openai.requests == [], "refused requests never reach the provider"
        # Within the cap: served; without a budget, the cap becomes the budget.
        client.chat.completions.create(model="gpt-4o", messages=msgs, max_tokens=50)
        assert fake_openai.requests[-1]["body"]["max_tokens"] == 50
        client.chat.completions.create(model="gpt-4o", messages=msgs)
        assert fake_openai.requests[-1]["body"]["max_tokens"] == 50
        client.completions.create(model="gpt-3.5-turbo-instruct", prompt="Say hi")
        assert fake_openai.requests[-1]["body"]["max_tokens"] == 50
    finally:
        loom.stop()
