"""An OpenAI-compatible server (vLLM, Ollama, llama.cpp…) with custom headers."""

import openai

from harness import Loom


def test_custom_base_url_and_headers(fake_openai):
    loom = Loom(
        f"""
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
    - name: local
      type: openai_compatible
      base_url: {fake_openai.url}
      headers:
        X-Tenant: team-a
        HTTP-Referer: https://loom.example
"""
    )
    try:
        c = openai.OpenAI(base_url=loom.base + "/v1", api_key="x", max_retries=0)
        # No `models:` list: the provider serves any model.
        resp = c.chat.completions.create(model="llama3.1:8b", messages=[{"role": "user", "content": "hi"}])
        assert resp.choices[0].message.content == "Hello! How can I assist you today?"
        sent = fake_openai.requests[-1]
        assert sent["body"]["model"] == "llama3.1:8b"
        assert sent["headers"]["x-tenant"] == "team-a"
        assert sent["headers"]["http-referer"] == "https://loom.example"
        assert "authorization" not in sent["headers"]
        chunks = list(c.chat.completions.create(model="llama3.1:8b", messages=[{"role": "user", "content": "x"}], stream=True))
        assert "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices) == "The sky is blue."
        # Header values are secrets: never shown by the admin API.
        import httpx

        config = httpx.get(loom.admin + "/config").text
        assert "team-a" not in config
    finally:
        loom.stop()
