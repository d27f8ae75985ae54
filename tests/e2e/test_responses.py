"""`/v1/responses` (OpenAI's Responses API) through Loom with the official
OpenAI SDK and the OpenAI Agents SDK: relayed natively to an OpenAI provider,
translated for an OpenAI-compatible (chat-only) upstream and for an Anthropic
upstream (fakes speaking their recorded wire formats)."""

import json
import os

import httpx
import openai
import pytest

from harness import FakeAnthropic, FakeOpenAI, Loom, fixture, metric_value

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
    - name: compat
      type: openai_compatible
      api_key: sk-openai-provider-secret
      base_url: {openai}
      models: [gpt-4o, fake-broken-stream]
    - name: native
      type: openai
      api_key: sk-native-provider-secret
      base_url: {native}
      models: [gpt-4.1]
    - name: claude
      type: anthropic
      api_key: sk-ant-provider-secret
      base_url: {anthropic}
      models: [claude-3-opus-20240229]
  model_mapping:
    native-broken: {{native: fake-broken-stream}}
"""

WEATHER = {
    "type": "function",
    "name": "get_weather",
    "description": "Current weather in a city",
    "parameters": {
        "type": "object",
        "properties": {"location": {"type": "string"}},
        "required": ["location"],
        "additionalProperties": False,
    },
    "strict": True,
}


@pytest.fixture
def fakes():
    o, a, n = FakeOpenAI(), FakeAnthropic(), FakeOpenAI()
    yield o, a, n
    o.close()
    a.close()
    n.close()


@pytest.fixture
def loom(fakes):
    o, a, n = fakes
    l = Loom(CONFIG.format(openai=o.url, anthropic=a.url, native=n.url))
    yield l
    l.stop()


def client(loom) -> openai.OpenAI:
    return openai.OpenAI(base_url=loom.base + "/v1", api_key="client-key", max_retries=0)


def chat_answer():
    return json.loads(fixture("openai_chat.json"))


def test_a_text_answer_through_the_sdk(loom, fakes):
    o, _, _ = fakes
    r = client(loom).responses.create(
        model="gpt-4o", instructions="Be brief.", input="Hello", metadata={"team": "a"}, max_output_tokens=64
    )
    chat = chat_answer()
    assert r.status == "completed"
    assert r.output_text == chat["choices"][0]["message"]["content"]
    assert r.id.startswith("resp_") and r.output[0].type == "message"
    assert (r.usage.input_tokens, r.usage.output_tokens, r.usage.total_tokens) == (19, 10, 29)
    assert r.usage.input_tokens_details.cached_tokens == 0
    assert r.metadata == {"team": "a"} and r.max_output_tokens == 64
    sent = o.requests[-1]
    assert sent["path"].endswith("/chat/completions")
    assert sent["body"]["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hello"},
    ]
    assert sent["body"]["max_tokens"] == 64
    assert "sk-openai-provider-secret" not in r.model_dump_json()
    m = loom.metrics()
    assert metric_value(m, "loom_ai_tokens_total", provider="compat", type="prompt") == 19
    assert metric_value(m, "loom_ai_tokens_total", provider="compat", type="completion") == 10


def test_a_stream_is_the_typed_event_sequence(loom):
    events = list(client(loom).responses.create(model="gpt-4o", input="Hello", stream=True))
    types = [e.type for e in events]
    assert types[:2] == ["response.created", "response.in_progress"]
    assert types[-1] == "response.completed"
    assert [e.sequence_number for e in events] == list(range(len(events)))
    for required in (
        "response.output_item.added",
        "response.content_part.added",
        "response.output_text.delta",
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
    ):
        assert required in types, types
    deltas = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    final = events[-1].response
    assert deltas == final.output_text and deltas
    assert final.usage is not None and final.usage.total_tokens > 0
    # The stream helper accumulates the same answer.
    with client(loom).responses.stream(model="gpt-4o", input="Hello") as s:
        helper = s.get_final_response()
    assert helper.output_text == deltas


def test_a_tool_round_trip(loom, fakes):
    o, _, _ = fakes
    c = client(loom)
    first = c.responses.create(model="gpt-4o", input="Weather in Paris?", tools=[WEATHER])
    calls = [i for i in first.output if i.type == "function_call"]
    recorded = json.loads(fixture("openai_chat_tool_call.json"))["choices"][0]["message"]["tool_calls"][0]
    assert len(calls) == 1
    assert (calls[0].call_id, calls[0].name) == (recorded["id"], "get_weather")
    assert json.loads(calls[0].arguments) == {"location": "Paris, France"}
    sent_tools = o.requests[-1]["body"]["tools"]
    assert sent_tools[0]["function"]["name"] == "get_weather" and sent_tools[0]["function"]["strict"] is True
    second = c.responses.create(
        model="gpt-4o",
        tools=[WEATHER],
        input=[
            {"role": "user", "content": "Weather in Paris?"},
            {"type": "function_call", "call_id": calls[0].call_id, "name": calls[0].name, "arguments": calls[0].arguments},
            {"type": "function_call_output", "call_id": calls[0].call_id, "output": "18C and sunny"},
        ],
    )
    assert second.output_text == chat_answer()["choices"][0]["message"]["content"]
    msgs = o.requests[-1]["body"]["messages"]
    assert msgs[1]["role"] == "assistant" and msgs[1]["tool_calls"][0]["id"] == calls[0].call_id
    assert msgs[2] == {"role": "tool", "content": "18C and sunny", "tool_call_id": calls[0].call_id}


def test_a_streamed_tool_call(loom):
    with client(loom).responses.stream(model="gpt-4o", input="Weather in Paris?", tools=[WEATHER]) as s:
        arg_deltas = [e.delta for e in s if e.type == "response.function_call_arguments.delta"]
        final = s.get_final_response()
    call = [i for i in final.output if i.type == "function_call"][0]
    assert call.name == "get_weather" and "".join(arg_deltas) == call.arguments
    assert json.loads(call.arguments)["location"]


def test_an_anthropic_provider_answers_the_responses_api(loom):
    c = client(loom)
    r = c.responses.create(model="claude-3-opus-20240229", input="Weather?", max_output_tokens=100)
    recorded = json.loads(fixture("anthropic_message.json"))
    assert r.output_text == recorded["content"][0]["text"]
    # The same usage as the chat endpoint reports for the same answer.
    chat = c.chat.completions.create(
        model="claude-3-opus-20240229", messages=[{"role": "user", "content": "Weather?"}], max_tokens=100
    )
    assert r.usage.input_tokens == chat.usage.prompt_tokens
    assert r.usage.output_tokens == chat.usage.completion_tokens
    events = list(c.responses.create(model="claude-3-opus-20240229", input="Weather?", max_output_tokens=100, stream=True))
    assert events[-1].type == "response.completed"
    assert events[-1].response.output_text == recorded["content"][0]["text"]


@pytest.mark.parametrize(
    "body, status, needle",
    [
        ({"model": "gpt-4o", "input": "hi", "previous_response_id": "resp_123"}, 404, "resp_123"),
        ({"model": "gpt-4o", "input": [{"role": "user", "content": "x"}, {"type": "function_call_output", "call_id": "call_nope", "output": "1"}]}, 400, "call_nope"),
        ({"model": "gpt-4o", "input": [{"type": "local_shell_call", "call_id": "c"}]}, 400, "local_shell_call"),
        ({"model": "gpt-4o"}, 400, "input"),
        ({"model": "no-such-model", "input": "hi"}, 404, "no-such-model"),
    ],
)
def test_bad_requests_get_openai_errors_and_reach_no_provider(loom, fakes, body, status, needle):
    o, a, n = fakes
    r = httpx.post(loom.base + "/v1/responses", json=body, timeout=10)
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert needle in err["message"], err
    assert err["type"]
    assert o.requests == [] and a.requests == [] and n.requests == []


def test_hosted_tools_are_left_out_for_a_translating_provider(loom, fakes):
    o, _, _ = fakes
    r = client(loom).responses.create(
        model="gpt-4o",
        input="Weather in Paris?",
        tools=[{"type": "web_search"}, WEATHER],
        include=["reasoning.encrypted_content"],
        store=False,
        extra_body={"prompt_cache_key": "thread-7", "client_metadata": {"x": "y"}},
    )
    assert [i.type for i in r.output] == ["function_call"]
    sent = o.requests[-1]["body"]
    assert [t["function"]["name"] for t in sent["tools"]] == ["get_weather"]
    assert sent["prompt_cache_key"] == "thread-7"
    assert "client_metadata" not in sent and "include" not in sent and "store" not in sent


def test_malformed_json_is_a_400_and_the_sdk_raises_it(loom):
    r = httpx.post(loom.base + "/v1/responses", content=b'{"model": "gpt-4o", "input": ', headers={"content-type": "application/json"}, timeout=10)
    assert r.status_code == 400 and r.json()["error"]["type"] == "invalid_request_error"
    with pytest.raises(openai.NotFoundError) as e:
        client(loom).responses.create(model="gpt-4o", input="hi", previous_response_id="resp_1")
    assert "resp_1" in str(e.value)


def test_a_stream_cut_by_the_provider_ends_with_error_then_response_failed(loom):
    body = {"model": "fake-broken-stream", "input": "hi", "stream": True}
    with httpx.stream("POST", loom.base + "/v1/responses", json=body, timeout=10) as r:
        assert r.status_code == 200
        text = r.read().decode()
    events = []
    for block in text.split("\n\n"):
        if not block.strip():
            continue
        head, data = block.split("\ndata: ", 1)
        doc = json.loads(data)
        assert head == "event: " + doc["type"]
        events.append(doc)
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    assert events[0]["type"] == "response.created"
    assert [e["type"] for e in events[-2:]] == ["error", "response.failed"]
    failed = events[-1]["response"]
    assert failed["status"] == "failed" and failed["error"]["message"]
    assert "[DONE]" not in text


def test_the_openai_agents_sdk_runs_a_tool_loop_through_loom(loom, fakes):
    agents = pytest.importorskip("agents") if not os.environ.get("CI") else __import__("agents")
    o, _, _ = fakes
    agents.set_tracing_disabled(True)
    seen = []

    @agents.function_tool
    def get_weather(location: str) -> str:
        """Current weather in a city."""
        seen.append(location)
        return "18C and sunny"

    def make_agent():
        # A client per event loop: its connections belong to the loop.
        model = agents.OpenAIResponsesModel(model="gpt-4o", openai_client=openai.AsyncOpenAI(base_url=loom.base + "/v1", api_key="client-key", max_retries=0))
        return agents.Agent(name="weather", instructions="Answer with the tool.", tools=[get_weather], model=model)

    result = agents.Runner.run_sync(make_agent(), "Weather in Paris?")
    assert seen == ["Paris, France"]
    assert result.final_output == chat_answer()["choices"][0]["message"]["content"]
    # The second call carried the tool's output back as a tool message.
    assert any(m.get("role") == "tool" and m.get("content") == "18C and sunny" for m in o.requests[-1]["body"]["messages"])

    async def streamed():
        run = agents.Runner.run_streamed(make_agent(), "Weather in Paris?")
        async for _ in run.stream_events():
            pass
        return run.final_output

    import asyncio

    recorded = "".join(
        (c.get("delta") or {}).get("content") or ""
        for line in fixture("openai_chat_stream.sse").decode().splitlines()
        if line.startswith("data: {")
        for c in json.loads(line[len("data: "):]).get("choices") or []
    )
    assert recorded and asyncio.run(streamed()) == recorded
    assert seen == ["Paris, France", "Paris, France"]


def test_openai_gets_the_clients_request_as_it_is_and_its_answer_comes_back(loom, fakes):
    _, _, n = fakes
    # What only OpenAI can serve passes through: server-side state, hosted
    # tools, includes.
    body = json.dumps({
        "model": "gpt-4.1", "input": "Weather in Paris?", "previous_response_id": "resp_prev",
        "tools": [{"type": "web_search"}, {"type": "function", "name": "get_weather", "parameters": {"type": "object"}}],
        "include": ["reasoning.encrypted_content"], "store": True,
    }, separators=(",", ":")).encode()
    r = httpx.post(loom.base + "/v1/responses", content=body, headers={"content-type": "application/json"}, timeout=10)
    assert r.status_code == 200, r.text
    assert r.content == fixture("responses/function_call.json")
    assert n.requests[-1]["path"] == "/v1/responses" and n.requests[-1]["raw"] == body
    assert n.requests[-1]["headers"]["authorization"] == "Bearer sk-native-provider-secret"
    usage = json.loads(fixture("responses/function_call.json"))["usage"]
    m = loom.metrics()
    assert metric_value(m, "loom_ai_tokens_total", provider="native", type="prompt") == usage["input_tokens"]
    assert metric_value(m, "loom_ai_tokens_total", provider="native", type="completion") == usage["output_tokens"]


def test_a_native_stream_is_relayed_event_for_event(loom, fakes):
    _, _, n = fakes
    with httpx.stream("POST", loom.base + "/v1/responses", json={"model": "gpt-4.1", "input": "hi", "stream": True}, timeout=10) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        text = r.read()
    assert text == fixture("responses/text.sse")
    events = list(client(loom).responses.create(model="gpt-4.1", input="hi", stream=True))
    assert events[-1].type == "response.completed"
    assert events[-1].response.output_text == "Hi there! How can I help you today?"
    usage = json.loads(fixture("responses/text.json"))["usage"]
    m = loom.metrics()
    assert metric_value(m, "loom_ai_tokens_total", provider="native", type="completion") == 2 * usage["output_tokens"]


def test_a_native_stream_cut_by_the_provider_ends_with_an_error_event(loom, fakes):
    _, _, n = fakes
    with httpx.stream("POST", loom.base + "/v1/responses", json={"model": "native-broken", "input": "hi", "stream": True}, timeout=10) as r:
        text = r.read().decode()
    assert n.requests[-1]["body"]["model"] == "fake-broken-stream"
    blocks = [b for b in text.split("\n\n") if b.strip()]
    recorded = [b for b in fixture("responses/text.sse").decode().split("\n\n") if b.strip()]
    assert blocks[:3] == recorded[:3]
    assert blocks[-1].startswith("event: error\n")
    err = json.loads(blocks[-1].split("data: ", 1)[1])
    assert err["type"] == "error" and err["error"]["message"] and "sk-native" not in text
    with pytest.raises(openai.APIError):
        for _ in client(loom).responses.create(model="native-broken", input="hi", stream=True):
            pass


def test_the_agents_sdk_against_a_native_openai_provider(loom, fakes):
    agents = pytest.importorskip("agents") if not os.environ.get("CI") else __import__("agents")
    _, _, n = fakes
    agents.set_tracing_disabled(True)
    seen = []

    @agents.function_tool
    def get_weather(city: str) -> str:
        """Current weather in a city."""
        seen.append(city)
        return "18C and sunny"

    model = agents.OpenAIResponsesModel(model="gpt-4.1", openai_client=openai.AsyncOpenAI(base_url=loom.base + "/v1", api_key="client-key", max_retries=0))
    agent = agents.Agent(name="weather", instructions="Answer with the tool.", tools=[get_weather], model=model)
    result = agents.Runner.run_sync(agent, "Weather in Paris?")
    assert seen == ["Paris"]
    assert result.final_output == "Hi there! How can I help you today?"
    outputs = [i for i in n.requests[-1]["body"]["input"] if i.get("type") == "function_call_output"]
    assert outputs and outputs[0]["output"] == "18C and sunny"


@pytest.mark.parametrize("model, tools", [("gpt-4o", False), ("gpt-4o", True), ("claude-3-opus-20240229", False), ("claude-3-opus-20240229", True)])
def test_translated_answers_validate_against_the_sdk_types(loom, model, tools):
    """Strictly (pydantic validation, which the SDK itself skips at run
    time): every field the SDK's types require is there, with its type."""
    import pydantic
    from openai.types.responses import Response, ResponseStreamEvent

    body = {"model": model, "input": "Weather in Paris?", "max_output_tokens": 200}
    if tools:
        body["tools"] = [WEATHER]
    r = httpx.post(loom.base + "/v1/responses", json=body, timeout=10)
    assert r.status_code == 200, r.text
    Response.model_validate(r.json())
    adapter = pydantic.TypeAdapter(ResponseStreamEvent)
    with httpx.stream("POST", loom.base + "/v1/responses", json={**body, "stream": True}, timeout=10) as s:
        text = s.read().decode()
    events = [json.loads(b.split("\ndata: ", 1)[1]) for b in text.split("\n\n") if b.strip()]
    for e in events:
        adapter.validate_python(e)
    assert events[-1]["type"] == "response.completed"
    Response.model_validate(events[-1]["response"])


def test_the_agents_sdk_against_an_anthropic_provider(loom, fakes):
    agents = pytest.importorskip("agents") if not os.environ.get("CI") else __import__("agents")
    _, a, _ = fakes
    agents.set_tracing_disabled(True)
    seen = []

    @agents.function_tool
    def get_weather(location: str, unit: str) -> str:
        """Current weather in a city."""
        seen.append((location, unit))
        return "18C and sunny"

    model = agents.OpenAIResponsesModel(
        model="claude-3-opus-20240229",
        openai_client=openai.AsyncOpenAI(base_url=loom.base + "/v1", api_key="client-key", max_retries=0),
    )
    agent = agents.Agent(name="weather", instructions="Answer with the tool.", tools=[get_weather], model=model)
    result = agents.Runner.run_sync(agent, "Weather in Paris?")
    assert seen == [("Paris, France", "celsius")]
    assert result.final_output == json.loads(fixture("anthropic_message.json"))["content"][0]["text"]
    last = a.requests[-1]["body"]
    assert last["system"] == "Answer with the tool."
    results = [b for m in last["messages"] if isinstance(m["content"], list) for b in m["content"] if b.get("type") == "tool_result"]
    assert results and results[0]["tool_use_id"] == "toolu_01A09q90qw90lq917835lq9"


def test_responses_openai_keeps_are_read_and_deleted_through_loom(loom, fakes):
    """An id Loom did not keep is OpenAI's: GET, input items and DELETE go to
    the OpenAI provider (with its key, not the client's) and its answer comes
    back; one OpenAI does not know either is OpenAI's 404."""
    _, _, n = fakes
    c = client(loom)
    made = c.responses.create(model="gpt-4.1", input="Hello")
    got = c.responses.retrieve(made.id)
    assert got.id == made.id and got.output_text == made.output_text
    sent = n.requests[-1]
    assert sent["method"] == "GET" and sent["path"] == f"/v1/responses/{made.id}"
    assert sent["headers"]["authorization"] == "Bearer sk-native-provider-secret"
    items = c.responses.input_items.list(made.id, limit=5, order="asc")
    assert [i.type for i in items.data] == ["message"]
    assert n.requests[-1]["path"] == f"/v1/responses/{made.id}/input_items?limit=5&order=asc"
    c.responses.delete(made.id)
    assert n.requests[-1]["method"] == "DELETE"
    with pytest.raises(openai.NotFoundError) as e:
        c.responses.retrieve("resp_nobody_has")
    assert "resp_nobody_has" in e.value.message
    # Not a path: refused before any provider is called.
    calls = len(n.requests)
    r = httpx.get(loom.base + "/v1/responses/..%2f..%2fadmin", timeout=10)
    assert r.status_code in (400, 404) and len(n.requests) == calls
