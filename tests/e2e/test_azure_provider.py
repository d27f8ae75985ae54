"""Azure OpenAI behind the OpenAI API: deployment URLs, api-version, api-key."""

import openai

from harness import Loom


def config(fake_url: str, api_version: str) -> str:
    endpoint = fake_url.removesuffix("/v1")
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
    - name: azure
      type: azure
      api_key: ${{AZURE_API_KEY}}
      endpoint: {endpoint}
      api_version: "{api_version}"
      models: [gpt-4, text-embedding-3-small]
      deployments:
        gpt-4: my-gpt4-deployment
"""


def test_chat_goes_to_the_deployment_with_api_key(fake_openai):
    loom = Loom(config(fake_openai.url, "2024-02-15-preview"), env={"AZURE_API_KEY": "azure-secret"})
    try:
        c = openai.OpenAI(base_url=loom.base + "/v1", api_key="x", max_retries=0)
        resp = c.chat.completions.create(model="gpt-4", messages=[{"role": "user", "content": "hi"}])
        assert resp.choices[0].message.content == "Hello! How can I assist you today?"
        sent = fake_openai.requests[-1]
        assert sent["path"] == "/openai/deployments/my-gpt4-deployment/chat/completions?api-version=2024-02-15-preview"
        assert sent["headers"]["api-key"] == "azure-secret"
        assert "authorization" not in sent["headers"]

        # An API version older than 2024-09-01 rejects stream_options: Loom does not send it.
        chunks = list(c.chat.completions.create(model="gpt-4", messages=[{"role": "user", "content": "x"}], stream=True))
        assert "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices) == "The sky is blue."
        assert "stream_options" not in fake_openai.requests[-1]["body"]

        # A model without a deployment entry uses its own name as the deployment.
        c.embeddings.create(model="text-embedding-3-small", input="x", encoding_format="float")
        assert fake_openai.requests[-1]["path"] == "/openai/deployments/text-embedding-3-small/embeddings?api-version=2024-02-15-preview"
    finally:
        loom.stop()


def test_responses_go_to_azures_v1_surface_with_the_deployment_as_model(fake_openai):
    loom = Loom(config(fake_openai.url, "2024-10-21"), env={"AZURE_API_KEY": "azure-secret"})
    try:
        c = openai.OpenAI(base_url=loom.base + "/v1", api_key="x", max_retries=0)
        r = c.responses.create(model="gpt-4", input="hi")
        assert r.output_text == "Hi there! How can I help you today?"
        sent = fake_openai.requests[-1]
        assert sent["path"] == "/openai/v1/responses?api-version=preview"
        assert sent["body"]["model"] == "my-gpt4-deployment" and sent["body"]["input"] == "hi"
        assert sent["headers"]["api-key"] == "azure-secret"
        events = list(c.responses.create(model="gpt-4", input="hi", stream=True))
        assert events[-1].type == "response.completed"
        assert events[-1].response.output_text == "Hi there! How can I help you today?"
    finally:
        loom.stop()


def test_recent_api_version_asks_for_stream_usage(fake_openai):
    loom = Loom(config(fake_openai.url, "2024-10-21"), env={"AZURE_API_KEY": "k"})
    try:
        c = openai.OpenAI(base_url=loom.base + "/v1", api_key="x", max_retries=0)
        list(c.chat.completions.create(model="gpt-4", messages=[{"role": "user", "content": "x"}], stream=True))
        assert fake_openai.requests[-1]["body"]["stream_options"] == {"include_usage": True}
    finally:
        loom.stop()


WEATHER_TOOL = {
    "type": "function",
    "function": {"name": "get_weather", "parameters": {"type": "object", "properties": {"location": {"type": "string"}}}},
}


def test_tools_images_json_mode_and_errors(fake_openai):
    import json

    import pytest

    cfg = config(fake_openai.url, "2024-10-21").replace(
        "models: [gpt-4, text-embedding-3-small]", "models: [gpt-4, text-embedding-3-small, fake-error-429]"
    )
    loom = Loom(cfg, env={"AZURE_API_KEY": "k"})
    try:
        c = openai.OpenAI(base_url=loom.base + "/v1", api_key="x", max_retries=0)
        messages = [{"role": "user", "content": [
            {"type": "text", "text": "Weather where this photo was taken?"},
            {"type": "image_url", "image_url": {"url": "https://example.com/p.jpg"}},
        ]}]
        first = c.chat.completions.create(model="gpt-4", messages=messages, tools=[WEATHER_TOOL], response_format={"type": "json_object"})
        (call,) = first.choices[0].message.tool_calls
        sent = fake_openai.requests[-1]["body"]
        assert sent["response_format"] == {"type": "json_object"}
        assert sent["messages"][0]["content"][1]["image_url"]["url"] == "https://example.com/p.jpg"
        messages += [first.choices[0].message.model_dump(exclude_none=True), {"role": "tool", "tool_call_id": call.id, "content": "18C"}]
        second = c.chat.completions.create(model="gpt-4", messages=messages, tools=[WEATHER_TOOL])
        assert second.usage.total_tokens == 29
        chunks = list(c.chat.completions.create(model="gpt-4", messages=messages[:1], tools=[WEATHER_TOOL], stream=True))
        args = "".join(tc.function.arguments or "" for ch in chunks if ch.choices for tc in (ch.choices[0].delta.tool_calls or []))
        assert json.loads(args) == {"location": "Paris, France"}
        with pytest.raises(openai.RateLimitError) as err:
            c.chat.completions.create(model="fake-error-429", messages=[{"role": "user", "content": "x"}])
        assert err.value.code == "rate_limit_exceeded"
    finally:
        loom.stop()
