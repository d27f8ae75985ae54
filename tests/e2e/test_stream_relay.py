"""The one stream relay of AI routes (gateway/src/ai/relay.rs), end to end.

Through the real binary, with one scripted upstream on loopback that speaks
OpenAI's and Anthropic's exact stream formats (chunked `text/event-stream`):

- one usage count: a stream cut before the provider reports usage is counted
  from everything it generated (text, tool-call arguments, reasoning), and
  the count is the same whichever format the client speaks (OpenAI chat,
  Anthropic messages) and whether an Anthropic stream is relayed natively or
  translated;
- pass-through: an OpenAI-format provider's events reach an OpenAI-format
  client (chat and legacy completions) as the provider wrote them (spacing,
  unknown fields, key order); the usage chunk is removed unless the client
  asked for it, and usage beside choices is stripped with the choices kept;
- broken streams: data that is not JSON, a mid-stream error object, or a
  close before any finish end the client's stream with one error event in
  its own format, logged as 502; events split across tiny TCP writes are
  still relayed whole and in order.

Token counts and statuses are read from the JSON access log line.
"""

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import anthropic
import httpx
import openai
import pytest

from conftest import LISTEN
from harness import ChunkedWriter, Loom, fixture, wait_until

CLAUDE = "claude-3-opus-20240229"
CONFIG = LISTEN + """routes:
  - id: ai
    path: /v1/*
    ai_gateway: true
ai_gateway:
  enabled: true
  providers:
    - name: openai
      type: openai
      api_key: sk-openai-provider
      base_url: URL/v1
      models: [gpt-4o, gpt-3.5-turbo-instruct]
    - name: claude
      type: anthropic
      api_key: sk-ant-provider
      base_url: URL
      models: [claude-3-opus-20240229]
logging:
  format: json
"""


class Scripted:
    """An upstream answering every POST with the events a test scripted
    (whole SSE events, as bytes), written `piece` bytes at a time with a
    flush after each (0: one write per event), then ended cleanly. A script
    without its end (finish, usage, [DONE] / message_stop) is a stream the
    provider cut."""

    def __init__(self):
        self.events: list[bytes] = []
        self.piece = 0
        self.requests: list[dict] = []
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True

            def log_message(self, *args):
                pass

            def do_POST(self):
                raw = self.rfile.read(int(self.headers.get("content-length", "0")))
                fake.requests.append({"path": self.path, "body": json.loads(raw or b"{}")})
                self.send_response(200)
                self.send_header("content-type", "text/event-stream; charset=utf-8")
                self.send_header("transfer-encoding", "chunked")
                self.end_headers()
                out, data, n = ChunkedWriter(self.wfile), b"".join(fake.events), fake.piece
                writes = [data[i : i + n] for i in range(0, len(data), n)] if n else fake.events
                try:
                    for w in writes:
                        out.write(w)
                    out.close()
                except (BrokenPipeError, ConnectionResetError):
                    pass  # Loom gave up on a broken stream

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def fake():
    f = Scripted()
    yield f
    f.close()


@pytest.fixture
def loom(fake):
    l = Loom(CONFIG.replace("URL", fake.url))
    yield l
    l.stop()


# --- the wire formats -----------------------------------------------------------

DONE = b"data: [DONE]\n\n"


def sse(doc: dict) -> bytes:
    """One OpenAI event, as Python's json.dumps writes it (", " and ": ")."""
    return b"data: " + json.dumps(doc).encode() + b"\n\n"


def recorded(name: str) -> list[str]:
    return [e for e in fixture(name).decode().split("\n\n") if e.strip()]


def recorded_docs(name: str) -> list[dict]:
    return [json.loads(e[len("data: "):]) for e in recorded(name) if e.startswith("data: {")]


CHAT = recorded_docs("openai_chat_stream.sse")  # role, 5 contents, finish, usage
COMPLETION = recorded_docs("openai_completion_stream.sse")  # 3 texts (last finishes), usage


def chunk(delta: dict, finish=None) -> dict:
    """A chat chunk shaped as the recorded ones."""
    return {**CHAT[0], "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]}


def respaced(docs: list[dict]) -> list[bytes]:
    """Recorded events rewritten with spaces and a vendor field placed first."""
    return [sse({"x_vendor_trace": "t-42", **d}) for d in docs]


def anthropic_events(body: bytes) -> list[tuple[str, dict]]:
    out = []
    for e in events(body):
        lines = dict(l.split(": ", 1) for l in e.decode().splitlines())
        out.append((lines["event"], json.loads(lines["data"])))
    return out


def events(body: bytes) -> list[bytes]:
    return [e for e in body.replace(b"\r\n", b"\n").split(b"\n\n") if e.strip()]


TEXT = ["The forecast", " for Paris", " is mild", " with light wind."]
ARGS = ['{"location": ', '"Paris, France", ', '"unit": "celsius"}']
THOUGHT = ["The user wants", " the weather in Paris;", " I should check the forecast first."]


def cut_stream(extra: str | None) -> list[bytes]:
    """A chat stream cut before its finish and usage: text, plus tool-call
    arguments or reasoning."""
    docs = [chunk({"role": "assistant", "content": ""})]
    if extra == "reasoning":
        docs += [chunk({"reasoning_content": t}) for t in THOUGHT]
    docs += [chunk({"content": t}) for t in TEXT]
    if extra == "tool_call":
        start = {"index": 0, "id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": ""}}
        docs.append(chunk({"tool_calls": [start]}))
        docs += [chunk({"tool_calls": [{"index": 0, "function": {"arguments": a}}]}) for a in ARGS]
    return [sse(d) for d in docs]


# --- the client side ------------------------------------------------------------

ASK = [{"role": "user", "content": "Weather in Paris?"}]


def chat(loom, model="gpt-4o", **extra) -> httpx.Response:
    body = {"model": model, "stream": True, "messages": ASK, **extra}
    return httpx.post(loom.base + "/v1/chat/completions", json=body, timeout=10)


def completions(loom, **extra) -> httpx.Response:
    body = {"model": "gpt-3.5-turbo-instruct", "prompt": "Say this is a test", "stream": True, **extra}
    return httpx.post(loom.base + "/v1/completions", json=body, timeout=10)


def messages(loom, model="gpt-4o") -> httpx.Response:
    body = {"model": model, "max_tokens": 100, "stream": True, "messages": ASK}
    return httpx.post(loom.base + "/v1/messages", json=body, headers={"anthropic-version": "2023-06-01"}, timeout=10)


def access_lines(loom) -> list[dict]:
    out = []
    for line in loom.log().splitlines():
        if line.startswith("{") and '"loom::access"' in line:
            out.append(json.loads(line)["fields"])
    return out


def through(loom, send) -> tuple[httpx.Response, dict]:
    """Sends one request; its answer and its access-log fields."""
    before = len(access_lines(loom))
    resp = send()
    wait_until(lambda: len(access_lines(loom)) > before, what="the access line")
    return resp, access_lines(loom)[before]


# --- 1. one usage count ---------------------------------------------------------


@pytest.mark.parametrize("extra", ["tool_call", "reasoning"])
def test_cut_stream_is_estimated_from_all_it_generated_alike_for_every_client_format(fake, loom, extra):
    fake.events = cut_stream(None)
    _, text_only = through(loom, lambda: chat(loom))
    fake.events = cut_stream(extra)
    _, openai_client = through(loom, lambda: chat(loom))
    _, anthropic_client = through(loom, lambda: messages(loom))
    for line in (text_only, openai_client, anthropic_client):
        assert (line["status"], line["error"]) == (502, "stream"), line
    out = {name: l["tokens_out"] for name, l in
           [("text_only", text_only), ("openai_client", openai_client), ("anthropic_client", anthropic_client)]}
    assert out["openai_client"] == out["anthropic_client"], out
    # The tool-call arguments or the reasoning are counted, not only the text.
    assert out["openai_client"] > out["text_only"] > 0, out


def test_native_anthropic_stream_cut_before_message_delta_is_estimated_like_a_translated_one(fake, loom):
    # The recorded stream up to its message_delta: message_start has reported
    # only the provisional output_tokens (1), the text has been generated.
    cut = [e for e in recorded("anthropic_stream.sse") if "message_delta" not in e and "message_stop" not in e]
    fake.events = [(e + "\n\n").encode() for e in cut]
    resp, native = through(loom, lambda: messages(loom, CLAUDE))
    assert "Hello! It's 18°C" in resp.text
    # The same stream for an OpenAI client, translated to canonical chunks.
    _, translated = through(loom, lambda: chat(loom, CLAUDE))
    assert native["status"] == translated["status"] == 502
    out = {"native": native["tokens_out"], "translated": translated["tokens_out"]}
    assert out["translated"] > 1, out
    assert out["native"] == out["translated"], out


# --- 2. pass-through ------------------------------------------------------------


@pytest.mark.parametrize("asks_usage", [False, True], ids=["usage_not_asked", "usage_asked"])
@pytest.mark.parametrize("endpoint", ["chat", "completions"])
def test_openai_events_reach_an_openai_client_as_the_provider_wrote_them(fake, loom, endpoint, asks_usage):
    docs, send, reported = {
        "chat": (CHAT, chat, 5),
        "completions": (COMPLETION, completions, 7),
    }[endpoint]
    sent = respaced(docs)
    fake.events = sent + [DONE]
    extra = {"stream_options": {"include_usage": True}} if asks_usage else {}
    resp, line = through(loom, lambda: send(loom, **extra))
    assert resp.status_code == 200 and resp.headers["content-type"].startswith("text/event-stream")
    # The provider is always asked for usage; the client gets it only if it asked.
    assert fake.requests[-1]["body"]["stream_options"] == {"include_usage": True}
    expected = b"".join(sent if asks_usage else sent[:-1]) + DONE
    assert resp.content == expected
    assert (line["status"], line["tokens_out"]) == (200, reported)


def test_usage_beside_choices_is_removed_and_the_choices_delivered(fake, loom):
    *body, finish, _usage = CHAT
    last = {**finish, "usage": {"prompt_tokens": 14, "completion_tokens": 6, "total_tokens": 20}}
    sent = respaced(body + [last])
    fake.events = sent + [DONE]
    resp, line = through(loom, lambda: chat(loom))
    got = events(resp.content)
    assert b"".join(e + b"\n\n" for e in got[:-2]) == b"".join(sent[:-1])
    delivered = json.loads(got[-2][len("data: "):])
    assert "usage" not in delivered
    assert delivered == {k: v for k, v in json.loads(sent[-1][len("data: "):]).items() if k != "usage"}
    assert delivered["choices"][0]["finish_reason"] == "stop"
    assert got[-1] + b"\n\n" == DONE
    assert (line["status"], line["tokens_out"]) == (200, 6)


# --- 3. broken streams ----------------------------------------------------------

UPSTREAM_ERROR = {"message": "The server had an error while processing your request.", "type": "server_error",
                  "param": None, "code": None}
BREAKS = {
    "not_json": [b'data: {"id": "chatcmpl-x", "choices": [\n\n'],
    "error_event": [sse({"error": UPSTREAM_ERROR})],
    "closed_early": [],
}


def start(fmt: str) -> list[bytes]:
    """The events before the break: an OpenAI-format provider's start."""
    if fmt == "completions":
        return [sse(COMPLETION[0]), sse(COMPLETION[1])]
    return [sse(CHAT[0]), sse(CHAT[1]), sse(CHAT[2])]


def after(fmt: str) -> list[bytes]:
    """What a provider might still send after the break: never relayed."""
    return [sse(COMPLETION[2] if fmt == "completions" else CHAT[6]), DONE]


@pytest.mark.parametrize("brk", list(BREAKS))
@pytest.mark.parametrize("fmt", ["chat", "completions", "messages"])
def test_a_broken_stream_ends_with_one_error_event_in_the_clients_format(fake, loom, fmt, brk):
    fake.events = start(fmt) + BREAKS[brk] + (after(fmt) if BREAKS[brk] else [])
    send = {"chat": chat, "completions": completions, "messages": messages}[fmt]
    resp, line = through(loom, lambda: send(loom))
    assert resp.status_code == 200  # the stream had started
    assert (line["status"], line["error"]) == (502, "stream"), line
    if fmt == "messages":
        evs = anthropic_events(resp.content)
        names = [name for name, _ in evs]
        assert names[0] == "message_start" and "message_stop" not in names, names
        text = "".join(d["delta"].get("text", "") for n, d in evs if n == "content_block_delta")
        assert text == "The sky"
        assert names.count("error") == 1 and names[-1] == "error", names
        err = evs[-1][1]
        assert err["type"] == "error" and err["error"]["type"] == "api_error", err
        message = err["error"]["message"]
    else:
        got = events(resp.content)
        assert b"[DONE]" not in resp.content
        # What came before the break is relayed, then exactly one error event.
        docs = [json.loads(e[len("data: "):]) for e in got]
        assert [d for d in docs if "error" in d] == [docs[-1]], docs
        assert len(docs) == len(start(fmt)) + 1
        assert docs[-1]["error"]["type"], docs[-1]
        message = docs[-1]["error"]["message"]
    assert message
    if brk == "error_event":
        assert UPSTREAM_ERROR["message"] in message


@pytest.mark.parametrize("piece", [1, 3])
def test_events_split_across_tiny_writes_are_relayed_whole_and_in_order(fake, loom, piece):
    fake.piece = piece
    fake.events = respaced(CHAT) + [DONE]
    # Relayed as they are, through the official OpenAI SDK: every chunk, in order.
    oai = openai.OpenAI(base_url=loom.base + "/v1", api_key="client-key", max_retries=0)
    got = list(oai.chat.completions.create(model="gpt-4o", messages=ASK, stream=True,
                                           stream_options={"include_usage": True}))
    seen = [(c.choices[0].delta.content, c.choices[0].finish_reason) if c.choices else c.usage.completion_tokens
            for c in got]
    sent = [(d["choices"][0]["delta"].get("content"), d["choices"][0]["finish_reason"]) if d["choices"]
            else d["usage"]["completion_tokens"] for d in CHAT]
    assert seen == sent
    # Translated for an Anthropic client, through the official SDK.
    client = anthropic.Anthropic(base_url=loom.base, api_key="client-key", max_retries=0)
    with client.messages.stream(model="gpt-4o", max_tokens=100, messages=ASK) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == "The sky is blue."
    assert final.stop_reason == "end_turn" and final.usage.output_tokens == 5
