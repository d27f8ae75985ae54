"""Real agent clients through Loom: the Codex CLI (`@openai/codex`, pinned in
tests/e2e/node/package.json) runs `codex exec` with Loom as its Responses
API provider, relayed natively to an OpenAI provider and translated for a
chat-only one. Each fake answers its first call with a tool call the agent
does not have (Codex reports it back as a tool output) and the second with
text, so every run is a full tool round trip."""

import json
import os
import subprocess
from pathlib import Path

import pytest

from harness import FakeOpenAI, Loom, fixture

CODEX = Path(__file__).parent / "node" / "node_modules" / ".bin" / "codex"

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
    - name: upstream
      type: {kind}
      api_key: sk-upstream
      base_url: {url}
      models: [gpt-4.1]
"""


def streamed_chat_text() -> str:
    text = ""
    for line in fixture("openai_chat_stream.sse").decode().splitlines():
        if line.startswith("data: {"):
            for c in json.loads(line[len("data: "):]).get("choices") or []:
                text += (c.get("delta") or {}).get("content") or ""
    return text


@pytest.mark.parametrize("kind, answer", [
    ("openai", json.loads(fixture("responses/text.json"))["output"][0]["content"][0]["text"]),
    ("openai_compatible", streamed_chat_text()),
])
def test_codex_exec_through_loom(tmp_path, kind, answer):
    if not CODEX.exists():
        if os.environ.get("CI"):
            pytest.fail("tests/e2e/node/node_modules/.bin/codex missing (scripts/test runs npm ci)")
        pytest.skip("codex not installed (scripts/test runs npm ci in tests/e2e/node)")
    fake = FakeOpenAI()
    loom = Loom(CONFIG.format(kind=kind, url=fake.url))
    try:
        home, work = tmp_path / "codex-home", tmp_path / "work"
        home.mkdir()
        work.mkdir()
        (home / "config.toml").write_text(f'''
model = "gpt-4.1"
model_provider = "loom"
check_for_update_on_startup = false

[analytics]
enabled = false

[model_providers.loom]
name = "Loom"
base_url = "{loom.base}/v1"
wire_api = "responses"
env_key = "LOOM_API_KEY"
''')
        env = dict(os.environ, CODEX_HOME=str(home), LOOM_API_KEY="client-key")
        out = subprocess.run([str(CODEX), "exec", "--skip-git-repo-check", "Say hello"], cwd=work, env=env,
                             capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, out.stderr[-3000:]
        assert answer and answer in out.stdout, (out.stdout, out.stderr[-2000:])
        assert len(fake.requests) == 2, [r["path"] for r in fake.requests]
        first, second = (r["body"] for r in fake.requests)
        if kind == "openai":
            # Natively: Codex's own request, hosted tools and all.
            assert all(r["path"] == "/v1/responses" for r in fake.requests)
            assert {"web_search", "function"} <= {t["type"] for t in first["tools"]}
            assert first["store"] is False and first["include"] == ["reasoning.encrypted_content"]
            outputs = [i for i in second["input"] if i.get("type") == "function_call_output"]
        else:
            # Translated: Codex's function tools, as chat tools.
            assert all(r["path"] == "/v1/chat/completions" for r in fake.requests)
            assert first["tools"] and all(t["type"] == "function" for t in first["tools"])
            assert "exec_command" in {t["function"]["name"] for t in first["tools"]}
            outputs = [m for m in second["messages"] if m["role"] == "tool"]
        assert len(outputs) == 1
        assert "sk-upstream" not in loom.log() and "client-key" not in loom.log()
    finally:
        loom.stop()
        fake.close()


CLAUDE = Path(__file__).parent / "node" / "node_modules" / ".bin" / "claude"

CLAUDE_CONFIG = """
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
    - name: upstream
      type: {kind}
      api_key: sk-upstream
      base_url: {url}
"""


@pytest.mark.parametrize("kind", ["anthropic", "openai_compatible"])
def test_claude_code_print_mode_through_loom(tmp_path, kind):
    """`claude -p` with ANTHROPIC_BASE_URL at Loom (telemetry, updates and
    non-essential traffic off): natively to an Anthropic provider, and
    translated for an OpenAI-compatible one."""
    from harness import FakeAnthropic

    if not CLAUDE.exists():
        if os.environ.get("CI"):
            pytest.fail("tests/e2e/node/node_modules/.bin/claude missing (scripts/test runs npm ci)")
        pytest.skip("claude not installed (scripts/test runs npm ci in tests/e2e/node)")
    fake = FakeAnthropic() if kind == "anthropic" else FakeOpenAI()
    loom = Loom(CLAUDE_CONFIG.format(kind=kind, url=fake.url))
    try:
        home, work = tmp_path / "home", tmp_path / "work"
        home.mkdir()
        work.mkdir()
        env = dict(os.environ, HOME=str(home), ANTHROPIC_BASE_URL=loom.base, ANTHROPIC_API_KEY="client-key",
                   DISABLE_TELEMETRY="1", DISABLE_AUTOUPDATER="1", DISABLE_ERROR_REPORTING="1",
                   CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC="1")
        out = subprocess.run([str(CLAUDE), "-p", "Say hello", "--max-turns", "3"], cwd=work, env=env,
                             capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, out.stderr[-3000:]
        if kind == "anthropic":
            answer = json.loads(fixture("anthropic_message.json"))["content"][0]["text"]
            paths = {r["path"] for r in fake.requests}
            assert paths == {"/v1/messages"}
            # Claude Code's own request (its tools, its thinking setting) as sent.
            assert fake.requests[0]["body"]["tools"] and fake.requests[0]["headers"]["x-api-key"] == "sk-upstream"
        else:
            answer = streamed_chat_text()
            assert {r["path"] for r in fake.requests} == {"/v1/chat/completions"}
            assert any(m["role"] == "tool" for m in fake.requests[-1]["body"]["messages"])
        assert answer in out.stdout, (out.stdout, out.stderr[-2000:])
        assert len(fake.requests) == 2
        assert "sk-upstream" not in loom.log() and "client-key" not in loom.log()
    finally:
        loom.stop()
        fake.close()
