"""The chat fields only some providers take (`max_completion_tokens`,
`reasoning_effort`, `service_tier`, `store`, `metadata`,
`parallel_tool_calls`, `logprobs`/`top_logprobs`, `prediction`,
`modalities`/`audio`), sent with the official OpenAI SDK: passed as they
are to providers that speak OpenAI's API, translated for Anthropic where it
has an equivalent, and otherwise refused with a 400 that names the field,
the provider never called. (Gemini's side is in test_gemini_provider.py.)"""

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
      models: [claude-sonnet-4-5]
    - name: compat
      type: openai_compatible
      api_key: sk-compat
      base_url: {openai}
      models: [gpt-4o]
"""

TOOL = {"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object", "properties": {}}}}
ALL = dict(
    max_completion_tokens=300,
    reasoning_effort="low",
    service_tier="auto",
    store=True,
    metadata={"app": "checkout"},
    parallel_tool_calls=False,
    tools=[TOOL],
    logprobs=True,
    top_logprobs=2,
    prediction={"type": "content", "content": "def main(): pass"},
    modalities=["text", "audio"],
    audio={"voice": "alloy", "format": "wav"},
)


@pytest.fixture
def setup():
    a, o = FakeAnthropic(), FakeOpenAI()
    l = Loom(CONFIG.format(anthropic=a.url, openai=o.url))
    yield l, a, o
    l.stop()
    a.close()
    o.close()


def client(loom):
    return openai.OpenAI(base_url=loom.base + "/v1", api_key="client-key", max_retries=0)


def test_openai_speaking_providers_get_every_field_as_sent(setup):
    loom, _, o = setup
    client(loom).chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "hi"}], **ALL)
    body = o.requests[-1]["body"]
    for field, value in ALL.items():
        assert body[field] == value, field


@pytest.mark.parametrize("field,value", [
    ("logprobs", True),
    ("top_logprobs", 3),
    ("store", True),
    ("service_tier", "flex"),
    ("modalities", ["text", "audio"]),
    ("audio", {"voice": "alloy", "format": "wav"}),
])
def test_anthropic_refuses_what_it_cannot_honour_by_name(setup, field, value):
    loom, a, _ = setup
    with pytest.raises(openai.BadRequestError) as e:
        client(loom).chat.completions.create(model="claude-sonnet-4-5", messages=[{"role": "user", "content": "hi"}],
                                             **{field: value})
    assert f"`{field}`" in e.value.message and "anthropic" in e.value.message
    assert e.value.body["type"] == "invalid_request_error"
    assert a.requests == [], "the provider is not called"


def test_anthropic_gets_the_fields_it_has_equivalents_for(setup):
    loom, a, _ = setup
    client(loom).chat.completions.create(
        model="claude-sonnet-4-5", messages=[{"role": "user", "content": "hi"}],
        max_completion_tokens=300, reasoning_effort="low", service_tier="default", store=False,
        metadata={"app": "checkout"}, parallel_tool_calls=False, tools=[TOOL], logprobs=False,
        prediction={"type": "content", "content": "def main(): pass"}, modalities=["text"], user="u-42",
    )
    body = a.requests[-1]["body"]
    assert body["max_tokens"] == 300 + 1024, "the thinking budget comes on top of the answer's"
    assert body["thinking"] == {"type": "enabled", "budget_tokens": 1024}
    assert body["service_tier"] == "standard_only"
    assert body["tool_choice"] == {"type": "auto", "disable_parallel_tool_use": True}
    assert body["metadata"] == {"user_id": "u-42"}
    # Hints that leave the answer the same are not sent.
    for gone in ("prediction", "store", "logprobs", "modalities", "reasoning_effort", "max_completion_tokens"):
        assert gone not in body, gone
