"""`/v1/messages` with the official Anthropic SDK: natively to an Anthropic
upstream, and translated to an OpenAI upstream."""

import json

import anthropic
import pytest

from harness import FakeAnthropic, FakeOpenAI, Loom, fixture

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
    - name: openai
      type: openai
      api_key: sk-openai-provider
      base_url: {openai}
      models: [gpt-4o]
"""

WEATHER = {
    "name": "get_weather",
    "description": "Current weather",
    "input_schema": {"type": "object", "properties": {"location": {"type": "string"}}, "required": ["location"]},
}


@pytest.fixture
def fakes():
    a, o = FakeAnthropic(), FakeOpenAI()
    yield a, o
    a.close()
    o.close()


@pytest.fixture
def loom(fakes):
    a, o = fakes
    l = Loom(CONFIG.format(anthropic=a.url, openai=o.url))
    yield l
    l.stop()


def client(loom):
    return anthropic.Anthropic(base_url=loom.base, api_key="client-key", max_retries=0)


def test_native_message_passes_through(loom, fakes):
    fake_anthropic, _ = fakes
    resp = client(loom).messages.create(
        model="claude-3-opus-20240229", max_tokens=100, system="Be brief.",
        messages=[{"role": "user", "content": "Weather in Paris?"}],
    )
    expected = json.loads(fixture("anthropic_message.json"))
    assert resp.id == expected["id"]
    assert resp.content[0].text == expected["content"][0]["text"]
    assert resp.usage.input_tokens == 21 and resp.usage.output_tokens == 17
    sent = fake_anthropic.requests[-1]
    assert sent["headers"]["x-api-key"] == "sk-ant-provider"
    assert sent["body"] == {
        "model": "claude-3-opus-20240229", "max_tokens": 100, "system": "Be brief.",
        "messages": [{"role": "user", "content": "Weather in Paris?"}],
    }


def test_native_stream(loom):
    with client(loom).messages.stream(
        model="claude-3-opus-20240229", max_tokens=100, messages=[{"role": "user", "content": "Weather?"}]
    ) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == "Hello! It's 18°C in Paris — sunny ☀️."
    assert final.stop_reason == "end_turn"
    assert final.usage.output_tokens == 15


def test_native_tools(loom):
    resp = client(loom).messages.create(
        model="claude-3-opus-20240229", max_tokens=200, tools=[WEATHER],
        messages=[{"role": "user", "content": "Weather in Paris?"}],
    )
    assert resp.stop_reason == "tool_use"
    tool = next(b for b in resp.content if b.type == "tool_use")
    assert tool.name == "get_weather" and tool.input == {"location": "Paris, France", "unit": "celsius"}


def test_translated_message(loom, fakes):
    _, fake_openai = fakes
    resp = client(loom).messages.create(
        model="gpt-4o", max_tokens=100, system="Be brief.", messages=[{"role": "user", "content": "Hello!"}],
    )
    assert resp.type == "message" and resp.role == "assistant"
    assert resp.content[0].text == "Hello! How can I assist you today?"
    assert resp.stop_reason == "end_turn"
    assert resp.usage.input_tokens == 19 and resp.usage.output_tokens == 10
    assert resp.model == "gpt-4o-2024-08-06"
    sent = fake_openai.requests[-1]
    assert sent["path"] == "/v1/chat/completions"
    assert sent["headers"]["authorization"] == "Bearer sk-openai-provider"
    assert sent["body"]["messages"][0] == {"role": "system", "content": "Be brief."}
    assert sent["body"]["max_tokens"] == 100


def test_translated_stream(loom):
    with client(loom).messages.stream(
        model="gpt-4o", max_tokens=100, messages=[{"role": "user", "content": "Sky?"}]
    ) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == "The sky is blue."
    assert final.stop_reason == "end_turn"
    assert final.usage.output_tokens == 5


def test_translated_tool_round_trip(loom, fakes):
    _, fake_openai = fakes
    c = client(loom)
    messages = [{"role": "user", "content": "Weather in Paris?"}]
    resp = c.messages.create(model="gpt-4o", max_tokens=100, tools=[WEATHER], messages=messages)
    assert resp.stop_reason == "tool_use"
    (tool,) = [b for b in resp.content if b.type == "tool_use"]
    assert tool.id == "call_abc123" and tool.input == {"location": "Paris, France"}
    assert fake_openai.requests[-1]["body"]["tools"][0]["function"]["parameters"]["required"] == ["location"]

    messages += [
        {"role": "assistant", "content": [b.model_dump() for b in resp.content]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": tool.id, "content": "18C"}]},
    ]
    final = c.messages.create(model="gpt-4o", max_tokens=100, tools=[WEATHER], messages=messages)
    assert final.content[0].text == "Hello! How can I assist you today?"
    sent = fake_openai.requests[-1]["body"]["messages"]
    assert sent[1]["tool_calls"][0]["id"] == "call_abc123"
    assert sent[2] == {"role": "tool", "tool_call_id": "call_abc123", "content": "18C"}


def test_translated_streamed_tool_call(loom):
    with client(loom).messages.stream(
        model="gpt-4o", max_tokens=100, tools=[WEATHER], messages=[{"role": "user", "content": "Weather?"}]
    ) as stream:
        final = stream.get_final_message()
    assert final.stop_reason == "tool_use"
    (tool,) = [b for b in final.content if b.type == "tool_use"]
    assert tool.id == "call_DdmO9pD3xa9XTPNJ32zg2hcA"
    assert tool.input == {"location": "Paris, France"}
    assert final.usage.output_tokens == 17


def test_errors_in_anthropic_shape(loom):
    c = client(loom)
    with pytest.raises(anthropic.NotFoundError) as err:
        c.messages.create(model="no-such-model", max_tokens=10, messages=[{"role": "user", "content": "x"}])
    assert err.value.body["error"]["type"] == "not_found_error"
    with pytest.raises(anthropic.APIStatusError) as err:
        c.messages.create(model="claude-error-529", max_tokens=10, messages=[{"role": "user", "content": "x"}])
    # Anthropic's own error answer passes through unchanged, 529 included.
    assert err.value.status_code == 529
    assert err.value.body == json.loads(fixture("anthropic_error_overloaded.json"))
    with pytest.raises(anthropic.BadRequestError) as err:
        c.messages.create(model="gpt-4o", max_tokens=10, messages=[])
    assert err.value.body["error"]["type"] == "invalid_request_error"


def test_native_streamed_tool_use(loom):
    with client(loom).messages.stream(
        model="claude-3-opus-20240229", max_tokens=200, tools=[WEATHER],
        messages=[{"role": "user", "content": "Weather in Paris?"}],
    ) as stream:
        final = stream.get_final_message()
    assert final.stop_reason == "tool_use"
    (tool,) = [b for b in final.content if b.type == "tool_use"]
    assert tool.id == "toolu_01T1x1fJ34qAmk2tNTrN7Up6" and tool.input == {"location": "Paris, France"}
    assert final.usage.output_tokens == 89
