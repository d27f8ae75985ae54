"""Anthropic prompt caching through the OpenAI format: `cache_control`
markers on system parts, content parts, messages and tools reach Claude;
cache reads and writes come back in usage in the client's format and are
priced apart in the ledger (reads at the cached price, writes at 1.25× the
input price)."""

import json

import openai

from harness import FakeAnthropic, Loom, http_get

KEY = "sk-team-0123456789"

CONFIG = """
listeners:
  - address: "127.0.0.1:{{port}}"
admin:
  address: "127.0.0.1:{{admin_port}}"
routes:
  - id: ai
    path: /v1/*
    ai_gateway: true
    middleware:
      auth:
        type: api_key
        header: X-API-Key
consumers:
  - name: team
    keys: ["{key}"]
ai_gateway:
  enabled: true
  providers:
    - name: claude
      type: anthropic
      api_key: sk-ant-provider
      base_url: {anthropic}
      models: [claude-sonnet-4-5-20250929]
  token_accounting:
    enabled: true
"""

EPH = {"type": "ephemeral"}


def test_markers_reach_claude_and_cache_tokens_are_reported_and_priced():
    a = FakeAnthropic()
    loom = Loom(CONFIG.format(anthropic=a.url, key=KEY))
    try:
        c = openai.OpenAI(base_url=loom.base + "/v1", api_key=KEY, default_headers={"X-API-Key": KEY}, max_retries=0)
        r = c.chat.completions.create(
            model="claude-sonnet-4-5-20250929",
            messages=[
                {"role": "system", "content": [{"type": "text", "text": "A long style guide.", "cache_control": EPH}]},
                {"role": "user", "content": [{"type": "text", "text": "A long document.", "cache_control": EPH},
                                             {"type": "text", "text": "Summarise it."}]},
            ],
            tools=[{"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}, "cache_control": EPH}],
            tool_choice="none",
        )
        sent = a.requests[-1]["body"]
        assert sent["system"] == [{"type": "text", "text": "A long style guide.", "cache_control": EPH}]
        assert sent["messages"][0]["content"][0]["cache_control"] == EPH
        assert "cache_control" not in sent["messages"][0]["content"][1]
        assert sent["tools"][0]["cache_control"] == EPH
        u = r.usage
        assert (u.prompt_tokens, u.completion_tokens) == (3010, 50)
        assert u.prompt_tokens_details.cached_tokens == 2000
        # (OpenAI's own SDK names the field too.)
        assert u.prompt_tokens_details.cache_write_tokens == 1000
        # $3/M input, $0.30/M cache reads, $3.75/M cache writes, $15/M output.
        pico = 10 * 3_000_000 + 2000 * 300_000 + 1000 * 3_750_000 + 50 * 15_000_000
        status, body = http_get(loom.admin + "/ai/usage/team")
        assert status == 200
        report = json.loads(body)
        assert report["cost_estimate"] == "$" + f"{pico / 1e12:.6f}".rstrip("0")
        assert report["tokens"]["prompt"] == 3010
    finally:
        loom.stop()
        a.close()
