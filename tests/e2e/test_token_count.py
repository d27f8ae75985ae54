"""Token counting: Anthropic's `messages.count_tokens` (Claude Code calls it)
and OpenAI's `responses.input_tokens.count`, with the official SDKs —
answered by the provider where it has the endpoint, estimated locally
otherwise, and marked as one or the other."""

import anthropic
import httpx
import openai
import pytest

from harness import FakeAnthropic, FakeOpenAI, Loom

CONFIG = """
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
    - name: claude
      type: anthropic
      api_key: sk-ant-provider
      base_url: {anthropic}
      models: [claude-3-opus-20240229, claude-error-529]
    - name: compat
      type: openai_compatible
      api_key: sk-compat
      base_url: {openai}
      models: [gpt-4o]
    - name: native
      type: openai
      api_key: sk-native
      base_url: {native}
      models: [gpt-4.1]
"""

TOOL = {
    "name": "get_weather",
    "description": "Current weather in a city, with temperature and conditions",
    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}, "unit": {"type": "string", "enum": ["c", "f"]}}},
}


@pytest.fixture
def setup():
    a, o, n = FakeAnthropic(), FakeOpenAI(), FakeOpenAI()
    l = Loom(CONFIG.format(anthropic=a.url, openai=o.url, native=n.url))
    yield l, a, o, n
    l.stop()
    a.close()
    o.close()
    n.close()


def ant(loom):
    return anthropic.Anthropic(base_url=loom.base, api_key="client-key", max_retries=0)


def test_an_anthropic_provider_counts_itself(setup):
    loom, a, _, _ = setup
    msgs = [{"role": "user", "content": "Hello, Claude"}]
    raw = ant(loom).messages.with_raw_response.count_tokens(model="claude-3-opus-20240229", messages=msgs, tools=[TOOL])
    assert raw.parse().input_tokens == 1234
    assert raw.headers["x-loom-token-count"] == "provider"
    sent = a.requests[-1]
    assert sent["path"] == "/v1/messages/count_tokens"
    assert sent["body"]["messages"] == msgs and sent["body"]["tools"] == [TOOL]
    assert sent["headers"]["x-api-key"] == "sk-ant-provider"


def test_other_providers_get_an_estimate_marked_as_one(setup):
    loom, _, o, _ = setup
    c = ant(loom)
    msgs = [{"role": "user", "content": "Hello, what is the weather like in Lisbon in May?"}]
    raw = c.messages.with_raw_response.count_tokens(model="gpt-4o", messages=msgs)
    base = raw.parse().input_tokens
    assert raw.headers["x-loom-token-count"] == "estimated"
    assert 10 < base < 40
    with_system = c.messages.count_tokens(model="gpt-4o", messages=msgs, system="You are a concise travel assistant.").input_tokens
    with_tools = c.messages.count_tokens(model="gpt-4o", messages=msgs, tools=[TOOL]).input_tokens
    assert with_system > base and with_tools > base + 10
    assert o.requests == []


def test_a_failing_provider_count_falls_back_to_an_estimate(setup):
    loom, a, _, _ = setup
    raw = ant(loom).messages.with_raw_response.count_tokens(model="claude-error-529", messages=[{"role": "user", "content": "Hi"}])
    assert raw.headers["x-loom-token-count"] == "estimated" and raw.parse().input_tokens > 0
    assert a.requests[-1]["path"] == "/v1/messages/count_tokens"


def test_the_providers_verdict_on_a_bad_request_stands(setup):
    loom, _, _, _ = setup
    with pytest.raises(anthropic.BadRequestError):
        ant(loom).messages.count_tokens(model="claude-3-opus-20240229", messages=[])


def test_an_unknown_model_is_a_404_in_anthropics_shape(setup):
    loom, _, _, _ = setup
    r = httpx.post(loom.base + "/v1/messages/count_tokens", json={"model": "nope", "messages": [{"role": "user", "content": "x"}]}, timeout=10)
    assert r.status_code == 404 and r.json()["type"] == "error" and "nope" in r.json()["error"]["message"]
    r = httpx.post(loom.base + "/v1/messages/count_tokens", content=b"{not json", headers={"content-type": "application/json"}, timeout=10)
    assert r.status_code == 400 and r.json()["error"]["type"] == "invalid_request_error"


def test_responses_input_tokens_with_the_openai_sdk(setup):
    loom, _, o, n = setup
    c = openai.OpenAI(base_url=loom.base + "/v1", api_key="client-key", max_retries=0)
    native = c.responses.input_tokens.with_raw_response.count(model="gpt-4.1", input="Hello there")
    assert native.parse().input_tokens == 777 and native.headers["x-loom-token-count"] == "provider"
    assert n.requests[-1]["path"] == "/v1/responses/input_tokens"
    estimated = c.responses.input_tokens.with_raw_response.count(model="gpt-4o", input="Hello there", instructions="Be brief.")
    assert estimated.headers["x-loom-token-count"] == "estimated"
    assert 3 < estimated.parse().input_tokens < 30
    assert o.requests == []
