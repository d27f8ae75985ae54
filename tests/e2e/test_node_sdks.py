"""The official OpenAI Node SDK (tests/e2e/node, installed by scripts/test
with `npm ci`) against Loom's `/v1/responses`, to an OpenAI-format fake
upstream (natively and translated), to an Anthropic one and to a Gemini one:
create, stream, tool call, retrieve, input items, previous_response_id."""

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from harness import FakeAnthropic, FakeGemini, FakeOpenAI, Loom, fixture

NODE_DIR = Path(__file__).parent / "node"

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
      api_key: sk-openai-provider
      base_url: {openai}
      models: [gpt-4o]
    - name: native
      type: openai
      api_key: sk-native-provider
      base_url: {openai}
      models: [gpt-4.1]
    - name: claude
      type: anthropic
      api_key: sk-ant-provider
      base_url: {anthropic}
      models: [claude-3-opus-20240229]
    - name: gemini
      type: gemini
      api_key: gem-key
      base_url: {gemini}/v1beta
      models: [gemini-2.0-flash]
"""


@pytest.fixture
def loom():
    if shutil.which("node") is None or not (NODE_DIR / "node_modules" / "openai").is_dir():
        # scripts/test installs them; CI must not pass by skipping.
        if os.environ.get("CI"):
            pytest.fail("node or tests/e2e/node/node_modules missing")
        pytest.skip("node or tests/e2e/node/node_modules missing (scripts/test runs npm ci)")
    o, a, g = FakeOpenAI(), FakeAnthropic(), FakeGemini()
    l = Loom(CONFIG.format(openai=o.url, anthropic=a.url, gemini=g.url))
    yield l
    l.stop()
    o.close()
    a.close()
    g.close()


def run(loom, model):
    out = subprocess.run(
        ["node", str(NODE_DIR / "responses.mjs"), loom.base, model],
        capture_output=True, text=True, timeout=60, cwd=NODE_DIR,
    )
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def streamed(name: str) -> str:
    """The text a recorded stream carries."""
    text = ""
    for block in fixture(name).decode().split("\n\n"):
        for line in block.splitlines():
            if not line.startswith("data: {"):
                continue
            doc = json.loads(line[len("data: "):])
            for c in doc.get("choices") or []:
                text += (c.get("delta") or {}).get("content") or ""
            if doc.get("type") == "content_block_delta":
                text += doc["delta"].get("text", "")
            for c in doc.get("candidates") or []:
                text += "".join(p.get("text", "") for p in c["content"]["parts"] if not p.get("thought"))
    return text


NATIVE_TEXT = json.loads(fixture("responses/text.json"))["output"][0]["content"][0]["text"]


@pytest.mark.parametrize("model, text, stream_text", [
    # translated for a chat-only OpenAI-compatible server
    ("gpt-4o", json.loads(fixture("openai_chat.json"))["choices"][0]["message"]["content"], streamed("openai_chat_stream.sse")),
    # translated for Anthropic
    ("claude-3-opus-20240229", json.loads(fixture("anthropic_message.json"))["content"][0]["text"], streamed("anthropic_stream.sse")),
    # translated for Gemini
    ("gemini-2.0-flash", json.loads(fixture("gemini_generate.json"))["candidates"][0]["content"]["parts"][0]["text"],
     streamed("gemini_stream.sse")),
    # relayed natively to OpenAI
    ("gpt-4.1", NATIVE_TEXT, NATIVE_TEXT),
])
def test_the_node_sdk_speaks_responses_through_loom(loom, model, text, stream_text):
    r = run(loom, model)
    assert r["whole"]["text"] == text and r["whole"]["status"] == "completed"
    assert r["whole"]["usage"]["total_tokens"] > 0
    types = [e["type"] for e in r["events"]]
    assert types[0] == "response.created" and types[-1] == "response.completed"
    assert [e["seq"] for e in r["events"]] == list(range(len(types)))
    assert stream_text and r["streamedText"] == stream_text
    assert r["call"]["name"] == "get_weather"
    assert r["argDeltas"] == r["call"]["arguments"] and json.loads(r["call"]["arguments"])
    # Read back (from Loom's keeping, or from OpenAI's for a native one),
    # its input listed, and continued.
    assert r["retrieved"]["id"] == r["retrieved"]["wholeId"] and r["retrieved"]["text"] == text
    assert r["inputTypes"] == ["message"]
    assert r["continued"] == "completed"
    if model == "gpt-4.1":
        # OpenAI keeps responses itself: the request goes through.
        assert r["refused"] is None
    else:
        # Not a response Loom kept: 404, as OpenAI answers.
        assert r["refused"]["status"] == 404 and "resp_x" in r["refused"]["message"]
