"""Reasoning across formats: Anthropic's extended thinking reaches chat
clients as `reasoning_content` (the widespread OpenAI-compatible field) and
Responses clients as reasoning items, signed so that it can go back; effort
maps to Anthropic's thinking budget; an Anthropic client's thinking goes to
an Anthropic provider untouched and is dropped (text kept) for others."""

import json

import anthropic
import openai
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
      models: [claude-3-7-sonnet-20250219]
    - name: compat
      type: openai_compatible
      api_key: sk-compat
      base_url: {openai}
      models: [gpt-4o]
"""

RECORDED = json.loads(fixture("anthropic_thinking.json"))
THINKING = RECORDED["content"][0]["thinking"]
SIGNATURE = RECORDED["content"][0]["signature"]
MODEL = "claude-3-7-sonnet-20250219"


@pytest.fixture
def setup():
    a, o = FakeAnthropic(), FakeOpenAI()
    l = Loom(CONFIG.format(anthropic=a.url, openai=o.url))
    yield l, a, o
    l.stop()
    a.close()
    o.close()


def oai(loom):
    return openai.OpenAI(base_url=loom.base + "/v1", api_key="client-key", max_retries=0)


def test_a_chat_client_gets_claudes_thinking_as_reasoning_content(setup):
    loom, a, _ = setup
    r = oai(loom).chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "27 × 453?"}], reasoning_effort="medium", temperature=0.3, max_tokens=800
    )
    sent = a.requests[-1]["body"]
    assert sent["thinking"] == {"type": "enabled", "budget_tokens": 4096}
    assert sent["max_tokens"] == 4896 and "temperature" not in sent
    m = r.choices[0].message
    assert m.content == "27 × 453 = 12,231."
    assert m.model_extra["reasoning_content"] == THINKING
    assert m.model_extra["reasoning_signature"] == SIGNATURE


def test_a_streamed_chat_answer_carries_reasoning_deltas(setup):
    loom, _, _ = setup
    chunks = list(oai(loom).chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "27 × 453?"}], reasoning_effort="low", stream=True,
        stream_options={"include_usage": True},
    ))
    deltas = [c.choices[0].delta for c in chunks if c.choices]
    assert "".join((d.model_extra or {}).get("reasoning_content", "") for d in deltas) == THINKING
    assert "".join(d.content or "" for d in deltas) == "27 × 453 = 12,231."
    assert chunks[-1].usage.completion_tokens == 112


def test_a_responses_client_gets_a_reasoning_item_that_goes_back_signed(setup):
    loom, a, _ = setup
    c = oai(loom)
    r = c.responses.create(model=MODEL, input="27 × 453?", reasoning={"effort": "high"})
    assert a.requests[-1]["body"]["thinking"]["budget_tokens"] == 16384
    reasoning = [i for i in r.output if i.type == "reasoning"]
    assert len(reasoning) == 1 and reasoning[0].summary[0].text == THINKING
    assert reasoning[0].encrypted_content == "loom.anthropic." + SIGNATURE
    assert r.output_text == "27 × 453 = 12,231."
    events = list(c.responses.create(model=MODEL, input="27 × 453?", reasoning={"effort": "high"}, stream=True))
    streamed = "".join(e.delta for e in events if e.type == "response.reasoning_summary_text.delta")
    assert streamed == THINKING
    done = [i for i in events[-1].response.output if i.type == "reasoning"]
    assert done[0].encrypted_content == "loom.anthropic." + SIGNATURE
    # The next turn sends the items back: Claude gets its signed thinking.
    c.responses.create(
        model=MODEL,
        reasoning={"effort": "high"},
        input=[{"role": "user", "content": "27 × 453?"}] + [i.model_dump(exclude_none=True) for i in r.output] + [{"role": "user", "content": "And doubled?"}],
    )
    assistant = [m for m in a.requests[-1]["body"]["messages"] if m["role"] == "assistant"]
    assert assistant[0]["content"][0] == {"type": "thinking", "thinking": THINKING, "signature": SIGNATURE}


def test_an_anthropic_client_with_thinking(setup):
    loom, a, o = setup
    c = anthropic.Anthropic(base_url=loom.base, api_key="client-key", max_retries=0)
    r = c.messages.create(model=MODEL, max_tokens=2000, thinking={"type": "enabled", "budget_tokens": 1024},
                          messages=[{"role": "user", "content": "27 × 453?"}])
    # Natively to Anthropic: the thinking block and its signature as sent.
    assert r.content[0].type == "thinking" and r.content[0].signature == SIGNATURE
    assert a.requests[-1]["body"]["thinking"] == {"type": "enabled", "budget_tokens": 1024}
    # To another provider: thinking blocks in the history are dropped, the
    # budget becomes an effort, and the request is not refused.
    history = [{"role": "user", "content": "27 × 453?"},
               {"role": "assistant", "content": [b.model_dump() for b in r.content]},
               {"role": "user", "content": "And doubled?"}]
    c.messages.create(model="gpt-4o", max_tokens=2000, thinking={"type": "enabled", "budget_tokens": 10000}, messages=history)
    sent = o.requests[-1]["body"]
    assert sent["reasoning_effort"] == "high"
    assert sent["messages"][1] == {"role": "assistant", "content": "27 × 453 = 12,231."}
