"""An Anthropic upstream behind the OpenAI API, driven by the official OpenAI SDK."""

import json

import httpx
import openai
import pytest

from harness import FakeAnthropic, Loom, fixture

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
    - name: anthropic
      type: anthropic
      api_key: ${{ANTHROPIC_API_KEY}}
      base_url: {url}
      models: [claude-3-opus-20240229, claude-error-529, claude-error-400, claude-error-429]
  model_mapping:
    gpt-4:
      anthropic: claude-3-opus-20240229
"""

WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather in a city",
        "parameters": {"type": "object", "properties": {"location": {"type": "string"}}, "required": ["location"]},
    },
}


@pytest.fixture
def fake_anthropic():
    f = FakeAnthropic()
    yield f
    f.close()


@pytest.fixture
def loom(fake_anthropic):
    l = Loom(CONFIG.format(url=fake_anthropic.url), env={"ANTHROPIC_API_KEY": "sk-ant-secret-1"})
    yield l
    l.stop()


def client(loom):
    return openai.OpenAI(base_url=loom.base + "/v1", api_key="client-key", max_retries=0)


def test_plain_chat_through_model_mapping(loom, fake_anthropic):
    resp = client(loom).chat.completions.create(
        model="gpt-4",
        messages=[{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Weather in Paris?"}],
        max_tokens=100,
        temperature=0.3,
    )
    assert resp.choices[0].message.content == "Hello! It's 18°C in Paris — sunny ☀️."
    assert resp.choices[0].finish_reason == "stop"
    # The response says which model actually served it.
    assert resp.model == "claude-3-opus-20240229"
    # Cache reads count as prompt tokens and are reported as cached.
    assert resp.usage.prompt_tokens == 25 and resp.usage.completion_tokens == 17 and resp.usage.total_tokens == 42
    assert resp.usage.prompt_tokens_details.cached_tokens == 4

    sent = fake_anthropic.requests[-1]
    assert sent["headers"]["x-api-key"] == "sk-ant-secret-1"
    assert sent["headers"]["anthropic-version"] == "2023-06-01"
    assert "authorization" not in sent["headers"]
    body = sent["body"]
    assert body["model"] == "claude-3-opus-20240229"
    assert body["system"] == "Be brief."
    assert body["messages"] == [{"role": "user", "content": [{"type": "text", "text": "Weather in Paris?"}]}]
    assert body["max_tokens"] == 100 and body["temperature"] == 0.3


def test_stream_with_split_multibyte_characters(loom):
    chunks = list(
        client(loom).chat.completions.create(
            model="gpt-4", messages=[{"role": "user", "content": "Weather?"}], stream=True,
            stream_options={"include_usage": True},
        )
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "Hello! It's 18°C in Paris — sunny ☀️."
    finish = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finish == ["stop"]
    assert chunks[-1].usage.prompt_tokens == 25 and chunks[-1].usage.completion_tokens == 15


def test_tool_call_round_trip(loom, fake_anthropic):
    c = client(loom)
    messages = [{"role": "user", "content": "What's the weather in Paris?"}]
    first = c.chat.completions.create(model="gpt-4", messages=messages, tools=[WEATHER_TOOL], tool_choice="auto")
    choice = first.choices[0]
    assert choice.finish_reason == "tool_calls"
    (call,) = choice.message.tool_calls
    assert call.id == "toolu_01A09q90qw90lq917835lq9"
    assert call.function.name == "get_weather"
    assert json.loads(call.function.arguments) == {"location": "Paris, France", "unit": "celsius"}
    sent = fake_anthropic.requests[-1]["body"]
    assert sent["tools"][0]["name"] == "get_weather"
    assert sent["tools"][0]["input_schema"]["required"] == ["location"]
    assert sent["tool_choice"] == {"type": "auto"}

    messages += [choice.message.model_dump(exclude_none=True), {"role": "tool", "tool_call_id": call.id, "content": "18C, sunny"}]
    second = c.chat.completions.create(model="gpt-4", messages=messages, tools=[WEATHER_TOOL])
    assert second.choices[0].message.content.startswith("Hello!")
    sent = fake_anthropic.requests[-1]["body"]["messages"]
    assert sent[1]["role"] == "assistant"
    assert sent[1]["content"][-1] == {
        "type": "tool_use", "id": call.id, "name": "get_weather", "input": {"location": "Paris, France", "unit": "celsius"},
    }
    assert sent[2] == {"role": "user", "content": [{"type": "tool_result", "tool_use_id": call.id, "content": "18C, sunny"}]}


def test_streamed_tool_call(loom):
    chunks = list(
        client(loom).chat.completions.create(
            model="gpt-4", messages=[{"role": "user", "content": "Weather in Paris?"}], tools=[WEATHER_TOOL], stream=True
        )
    )
    calls = [tc for c in chunks if c.choices for tc in (c.choices[0].delta.tool_calls or [])]
    assert calls[0].id == "toolu_01T1x1fJ34qAmk2tNTrN7Up6" and calls[0].function.name == "get_weather"
    assert all(tc.index == 0 for tc in calls)
    args = "".join(tc.function.arguments or "" for tc in calls)
    assert json.loads(args) == {"location": "Paris, France"}
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "Let me check."
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == ["tool_calls"]
    assert all(c.usage is None for c in chunks)


def test_image_message(loom, fake_anthropic):
    client(loom).chat.completions.create(
        model="gpt-4",
        messages=[{"role": "user", "content": [
            {"type": "text", "text": "What is this?"},
            {"type": "image_url", "image_url": {"url": "data:image/jpeg;base64,/9j/4AAQSkZJRg=="}},
            {"type": "image_url", "image_url": {"url": "https://upload.example.org/cat.jpg"}},
        ]}],
    )
    content = fake_anthropic.requests[-1]["body"]["messages"][0]["content"]
    assert content[1] == {"type": "image", "source": {"type": "base64", "media_type": "image/jpeg", "data": "/9j/4AAQSkZJRg=="}}
    assert content[2] == {"type": "image", "source": {"type": "url", "url": "https://upload.example.org/cat.jpg"}}


def test_what_anthropic_cannot_do_is_a_clear_400(loom, fake_anthropic):
    c = client(loom)
    with pytest.raises(openai.BadRequestError) as err:
        c.chat.completions.create(model="gpt-4", messages=[{"role": "user", "content": "x"}], n=2)
    assert "`n` must be 1" in err.value.message
    with pytest.raises(openai.BadRequestError) as err:
        c.chat.completions.create(
            model="gpt-4", messages=[{"role": "user", "content": "x"}], response_format={"type": "json_object"}
        )
    assert "response_format" in err.value.message
    with pytest.raises(openai.BadRequestError):
        c.embeddings.create(model="gpt-4", input="x")
    assert fake_anthropic.requests == []


def test_provider_errors_keep_status_and_message(loom):
    c = client(loom)
    with pytest.raises(openai.InternalServerError) as err:
        c.chat.completions.create(model="claude-error-529", messages=[{"role": "user", "content": "x"}])
    assert err.value.status_code == 503
    assert err.value.message.startswith("Overloaded") or "Overloaded" in err.value.message
    with pytest.raises(openai.BadRequestError) as err:
        c.chat.completions.create(model="claude-error-400", messages=[{"role": "user", "content": "x"}])
    assert "prompt is too long" in err.value.message
    assert err.value.body["type"] == "invalid_request_error"
    with pytest.raises(openai.RateLimitError) as err:
        c.chat.completions.create(model="claude-error-429", messages=[{"role": "user", "content": "x"}])
    assert err.value.body["type"] == "rate_limit_error"
