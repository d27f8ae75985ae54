import pytest

from harness import FakeBackend, FakeOpenAI, Loom, Named


@pytest.fixture
def fake_openai():
    fake = FakeOpenAI()
    yield fake
    fake.close()


@pytest.fixture
def pair():
    """Two services that answer their names, `a` and `b`."""
    s = [Named("a"), Named("b")]
    yield s
    for x in s:
        x.close()


@pytest.fixture
def backend():
    b = FakeBackend()
    yield b
    b.close()


# The listener and admin blocks every test configuration starts with; Loom
# (the harness) fills in free ports.
LISTEN = """
listeners:
  - name: http
    address: "127.0.0.1:{port}"
admin:
  address: "127.0.0.1:{admin_port}"
"""


def ai_config(upstream_url: str, extra_provider: str = "", streaming: str = "") -> str:
    return LISTEN + f"""routes:
  - id: ai
    path: /v1/*
    ai_gateway: true
    max_body_size: 64KB
ai_gateway:
  enabled: true
  providers:
    - name: upstream
      type: openai
      api_key: ${{UPSTREAM_KEY}}
      base_url: {upstream_url}
      timeout: 2s
      models: [gpt-4o, gpt-3.5-turbo-instruct, text-embedding-3-small, fake-error-400, fake-error-500, fake-error-context, fake-error-429, fake-gated-stream, fake-broken-stream, fake-hang]
{extra_provider}
  model_mapping:
    smart:
      upstream: gpt-4o
{streaming}
"""


@pytest.fixture
def loom_ai(fake_openai):
    loom = Loom(ai_config(fake_openai.url), env={"UPSTREAM_KEY": "sk-upstream-secret-123"})
    yield loom
    loom.stop()
