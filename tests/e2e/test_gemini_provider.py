"""Gemini (API key) and Vertex AI (bearer token) behind the OpenAI API."""

import json

import openai
import pytest

from harness import FakeGemini, Loom, fixture

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
    - name: gemini
      type: gemini
      api_key: ${{GEMINI_API_KEY}}
      base_url: {url}/v1beta
      models: [gemini-2.0-flash, text-embedding-004, gemini-error-429, gemini-error-400]
    - name: vertex
      type: vertex
      api_key: ${{VERTEX_TOKEN}}
      base_url: {url}/v1/projects/my-project/locations/us-central1/publishers/google
      models: [gemini-1.5-pro]
"""

WEATHER_TOOL = {
    "type": "function",
    "function": {"name": "get_weather", "parameters": {"type": "object", "properties": {"location": {"type": "string"}}}},
}


@pytest.fixture
def fake_gemini():
    f = FakeGemini()
    yield f
    f.close()


@pytest.fixture
def loom(fake_gemini):
    l = Loom(CONFIG.format(url=fake_gemini.url), env={"GEMINI_API_KEY": "gem-key-1", "VERTEX_TOKEN": "ya29.token"})
    yield l
    l.stop()


def client(loom):
    return openai.OpenAI(base_url=loom.base + "/v1", api_key="x", max_retries=0)


def test_chat_with_api_key(loom, fake_gemini):
    resp = client(loom).chat.completions.create(
        model="gemini-2.0-flash",
        messages=[{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Weather?"}],
        max_tokens=64,
        response_format={"type": "json_object"},
    )
    assert resp.choices[0].message.content == "Hello! It's 18°C in Paris — sunny ☀️."
    assert resp.choices[0].finish_reason == "stop"
    assert (resp.usage.prompt_tokens, resp.usage.completion_tokens, resp.usage.total_tokens) == (9, 13, 22)
    assert resp.model == "gemini-2.0-flash"
    sent = fake_gemini.requests[-1]
    assert sent["path"] == "/v1beta/models/gemini-2.0-flash:generateContent"
    assert sent["headers"]["x-goog-api-key"] == "gem-key-1"
    assert sent["body"]["systemInstruction"] == {"parts": [{"text": "Be brief."}]}
    assert sent["body"]["generationConfig"] == {"maxOutputTokens": 64, "responseMimeType": "application/json"}


def test_vertex_uses_a_bearer_token(loom, fake_gemini):
    client(loom).chat.completions.create(model="gemini-1.5-pro", messages=[{"role": "user", "content": "x"}])
    sent = fake_gemini.requests[-1]
    assert sent["path"] == "/v1/projects/my-project/locations/us-central1/publishers/google/models/gemini-1.5-pro:generateContent"
    assert sent["headers"]["authorization"] == "Bearer ya29.token"
    assert "x-goog-api-key" not in sent["headers"]


def test_stream_with_usage(loom, fake_gemini):
    chunks = list(
        client(loom).chat.completions.create(
            model="gemini-2.0-flash", messages=[{"role": "user", "content": "Weather?"}], stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert fake_gemini.requests[-1]["path"] == "/v1beta/models/gemini-2.0-flash:streamGenerateContent?alt=sse"
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "Hello! It's 18°C in Paris — sunny ☀️."
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == ["stop"]
    assert chunks[-1].usage.total_tokens == 22


def test_tool_call_round_trip(loom, fake_gemini):
    c = client(loom)
    messages = [{"role": "user", "content": "Weather in Paris?"}]
    first = c.chat.completions.create(model="gemini-2.0-flash", messages=messages, tools=[WEATHER_TOOL], tool_choice="required")
    choice = first.choices[0]
    assert choice.finish_reason == "tool_calls"
    (call,) = choice.message.tool_calls
    assert call.function.name == "get_weather"
    assert json.loads(call.function.arguments) == {"location": "Paris, France"}
    assert fake_gemini.requests[-1]["body"]["toolConfig"] == {"functionCallingConfig": {"mode": "ANY"}}

    messages += [choice.message.model_dump(exclude_none=True), {"role": "tool", "tool_call_id": call.id, "content": '{"temp_c": 18}'}]
    second = c.chat.completions.create(model="gemini-2.0-flash", messages=messages, tools=[WEATHER_TOOL])
    assert second.choices[0].message.content.startswith("Hello!")
    contents = fake_gemini.requests[-1]["body"]["contents"]
    # A call the model made without thinking has no signature: the first
    # of a turn goes back with the value Gemini 3 accepts in its place.
    assert contents[1] == {"role": "model", "parts": [{"functionCall": {"name": "get_weather", "args": {"location": "Paris, France"}},
                                                       "thoughtSignature": "skip_thought_signature_validator"}]}
    assert contents[2] == {"role": "user", "parts": [{"functionResponse": {"name": "get_weather", "response": {"temp_c": 18}}}]}


def test_streamed_tool_call(loom):
    chunks = list(
        client(loom).chat.completions.create(
            model="gemini-2.0-flash", messages=[{"role": "user", "content": "Weather?"}], tools=[WEATHER_TOOL], stream=True
        )
    )
    calls = [tc for c in chunks if c.choices for tc in (c.choices[0].delta.tool_calls or [])]
    assert len(calls) == 1 and calls[0].function.name == "get_weather" and calls[0].id
    assert json.loads(calls[0].function.arguments) == {"location": "Paris, France"}
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == ["tool_calls"]


def test_image_message(loom, fake_gemini):
    client(loom).chat.completions.create(
        model="gemini-2.0-flash",
        messages=[{"role": "user", "content": [
            {"type": "text", "text": "What is this?"},
            {"type": "image_url", "image_url": {"url": "data:image/webp;base64,UklGRg=="}},
        ]}],
    )
    parts = fake_gemini.requests[-1]["body"]["contents"][0]["parts"]
    assert parts[1] == {"inlineData": {"mimeType": "image/webp", "data": "UklGRg=="}}


def test_embeddings(loom, fake_gemini):
    resp = client(loom).embeddings.create(model="text-embedding-004", input=["a", "b"], encoding_format="float")
    assert len(resp.data) == 2
    assert resp.data[1].embedding[0] == pytest.approx(-0.0015103577)
    sent = fake_gemini.requests[-1]
    assert sent["path"] == "/v1beta/models/text-embedding-004:batchEmbedContents"
    assert sent["body"]["requests"][0] == {"model": "models/text-embedding-004", "content": {"parts": [{"text": "a"}]}}
    # The SDK's default base64 encoding decodes to the same vector.
    resp = client(loom).embeddings.create(model="text-embedding-004", input=["a", "b"])
    assert resp.data[0].embedding[0] == pytest.approx(0.013168517)


def test_errors_keep_status_and_message(loom):
    c = client(loom)
    with pytest.raises(openai.RateLimitError) as err:
        c.chat.completions.create(model="gemini-error-429", messages=[{"role": "user", "content": "x"}])
    assert "Resource has been exhausted" in err.value.message
    assert err.value.body["code"] == "RESOURCE_EXHAUSTED"
    with pytest.raises(openai.BadRequestError) as err:
        c.chat.completions.create(model="gemini-error-400", messages=[{"role": "user", "content": "x"}])
    assert "exceeds the maximum number of tokens" in err.value.message


def test_streaming_several_choices_is_a_clear_400(loom, fake_gemini):
    with pytest.raises(openai.BadRequestError) as err:
        list(client(loom).chat.completions.create(model="gemini-2.0-flash", messages=[{"role": "user", "content": "x"}], n=2, stream=True))
    assert "`n` must be 1" in err.value.message
    assert fake_gemini.requests == []


# --- thinking, signatures and log probabilities --------------------------------

THINKING = json.loads(fixture("gemini_thinking.json"))["candidates"][0]["content"]["parts"][0]["text"]
CALL = json.loads(fixture("gemini_thinking_function_call.json"))["candidates"][0]["content"]["parts"]


def test_reasoning_effort_becomes_a_thinking_budget_and_thoughts_come_back(loom, fake_gemini):
    c = client(loom)
    r = c.chat.completions.create(model="gemini-2.0-flash", reasoning_effort="high",
                                  messages=[{"role": "user", "content": "Weather in Paris?"}])
    sent = fake_gemini.requests[-1]["body"]
    assert sent["generationConfig"]["thinkingConfig"] == {"thinkingBudget": 24576, "includeThoughts": True}
    msg = r.choices[0].message
    assert msg.content == "It's 18°C and sunny in Paris."
    assert msg.model_extra["reasoning_content"] == THINKING
    # Thought tokens are output tokens, counted (and priced) as reasoning.
    assert r.usage.completion_tokens == 9 + 54
    assert r.usage.completion_tokens_details.reasoning_tokens == 54

    chunks = list(c.chat.completions.create(model="gemini-2.0-flash", reasoning_effort="low", stream=True,
                                            stream_options={"include_usage": True},
                                            messages=[{"role": "user", "content": "Weather in Paris?"}]))
    deltas = [ch.choices[0].delta for ch in chunks if ch.choices]
    reasoning = "".join((d.model_extra or {}).get("reasoning_content") or "" for d in deltas)
    text = "".join(d.content or "" for d in deltas)
    assert reasoning.startswith("**Weighing the forecast**") and text == "It's 18°C and sunny in Paris."
    first_text = next(i for i, d in enumerate(deltas) if d.content)
    assert all(not (d.model_extra or {}).get("reasoning_content") for d in deltas[first_text:]), "thoughts come first"
    assert chunks[-1].usage.completion_tokens_details.reasoning_tokens == 54
    assert fake_gemini.requests[-1]["body"]["generationConfig"]["thinkingConfig"]["thinkingBudget"] == 1024


def test_a_signed_function_call_goes_back_with_its_signature(loom, fake_gemini):
    c = client(loom)
    messages = [{"role": "user", "content": "Weather in Paris?"}]
    first = c.chat.completions.create(model="gemini-2.0-flash", reasoning_effort="medium", messages=messages,
                                      tools=[WEATHER_TOOL])
    msg = first.choices[0].message
    (call,) = msg.tool_calls
    signature = CALL[1]["thoughtSignature"]
    assert call.model_extra["extra_content"] == {"google": {"thought_signature": signature}}
    assert msg.model_extra["reasoning_content"].startswith("**Checking the weather tool**")
    # The SDK's own message object, sent back as the next turn.
    messages += [msg.model_dump(exclude_none=True), {"role": "tool", "tool_call_id": call.id, "content": '{"temp_c": 18}'}]
    c.chat.completions.create(model="gemini-2.0-flash", reasoning_effort="medium", messages=messages, tools=[WEATHER_TOOL])
    model_turn = fake_gemini.requests[-1]["body"]["contents"][1]
    assert model_turn == {"role": "model", "parts": [
        {"functionCall": {"name": "get_weather", "args": {"city": "Paris"}}, "thoughtSignature": signature}]}, \
        "the reasoning text stays behind; the signature goes back on its call"


def test_responses_clients_get_geminis_thoughts_as_a_reasoning_item(loom, fake_gemini):
    r = client(loom).responses.create(model="gemini-2.0-flash", input="Weather in Paris?",
                                      reasoning={"effort": "high"})
    assert fake_gemini.requests[-1]["body"]["generationConfig"]["thinkingConfig"]["thinkingBudget"] == 24576
    kinds = [i.type for i in r.output]
    assert kinds == ["reasoning", "message"]
    assert r.output[0].summary[0].text == THINKING
    assert r.output_text == "It's 18°C and sunny in Paris."
    assert r.usage.output_tokens_details.reasoning_tokens == 54


def test_log_probabilities_are_asked_for_and_returned_in_openai_shape(loom, fake_gemini):
    r = client(loom).chat.completions.create(model="gemini-2.0-flash", logprobs=True, top_logprobs=2,
                                             messages=[{"role": "user", "content": "Capital of France?"}])
    g = fake_gemini.requests[-1]["body"]["generationConfig"]
    assert g["responseLogprobs"] is True and g["logprobs"] == 2
    tokens = r.choices[0].logprobs.content
    assert [t.token for t in tokens] == ["Paris", "."]
    assert tokens[0].logprob == pytest.approx(-0.0012)
    assert tokens[0].bytes == list(b"Paris")
    assert [t.token for t in tokens[0].top_logprobs] == ["Paris", "The"]


def test_audio_output_is_refused_by_name_and_gemini_not_called(loom, fake_gemini):
    before = len(fake_gemini.requests)
    with pytest.raises(openai.BadRequestError) as e:
        client(loom).chat.completions.create(model="gemini-2.0-flash", modalities=["text", "audio"],
                                             audio={"voice": "alloy", "format": "wav"},
                                             messages=[{"role": "user", "content": "Say hi"}])
    assert "`modalities`" in e.value.message
    assert len(fake_gemini.requests) == before


def test_the_python_sdk_streams_reads_back_and_continues_a_gemini_response(loom, fake_gemini):
    c = client(loom)
    with c.responses.stream(model="gemini-2.0-flash", input="Weather?") as s:
        kinds = [e.type for e in s]
        final = s.get_final_response()
    assert kinds[0] == "response.created" and kinds[-1] == "response.completed"
    assert final.output_text and "response.output_text.delta" in kinds
    got = c.responses.retrieve(final.id)
    assert got.id == final.id and got.output_text == final.output_text
    c.responses.create(model="gemini-2.0-flash", input="And tomorrow?", previous_response_id=final.id)
    contents = fake_gemini.requests[-1]["body"]["contents"]
    assert [x["role"] for x in contents] == ["user", "model", "user"]
    assert contents[1]["parts"][0]["text"] == final.output_text
