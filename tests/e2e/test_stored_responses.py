"""The Responses API's state for translated providers: a response created
with `store` (the default) is continued with `previous_response_id`, read
back, listed and deleted, per consumer, with the official OpenAI SDK."""

import openai
import pytest

from harness import FakeOpenAI, Loom

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
consumers:
  - name: team-a
    keys: [key-team-a-0123]
  - name: team-b
    keys: [key-team-b-4567]
ai_gateway:
  enabled: true
  providers:
    - name: compat
      type: openai_compatible
      api_key: sk-compat
      base_url: {openai}
      models: [gpt-4o]
"""


@pytest.fixture
def setup():
    o = FakeOpenAI()
    l = Loom(CONFIG.format(openai=o.url))
    yield l, o
    l.stop()
    o.close()


def client(loom, key):
    return openai.OpenAI(base_url=loom.base + "/v1", api_key=key, max_retries=0)


def test_a_conversation_continues_from_a_kept_response(setup):
    loom, o = setup
    a = client(loom, "key-team-a-0123")
    first = a.responses.create(model="gpt-4o", instructions="Be brief.", input="Hello")
    second = a.responses.create(model="gpt-4o", input="And again?", previous_response_id=first.id)
    msgs = o.requests[-1]["body"]["messages"]
    assert [m["role"] for m in msgs] == ["user", "assistant", "user"]
    assert msgs[0]["content"] == "Hello"
    assert msgs[1]["content"] == first.output_text
    assert msgs[2]["content"] == "And again?"
    # A streamed answer is kept too, once it completes.
    with a.responses.stream(model="gpt-4o", input="Third", previous_response_id=second.id) as s:
        third = s.get_final_response()
    a.responses.create(model="gpt-4o", input="Fourth", previous_response_id=third.id)
    assert len(o.requests[-1]["body"]["messages"]) == 7


def test_read_list_and_delete_per_consumer(setup):
    loom, _ = setup
    a, b = client(loom, "key-team-a-0123"), client(loom, "key-team-b-4567")
    r = a.responses.create(model="gpt-4o", input="Hello", metadata={"k": "v"})
    got = a.responses.retrieve(r.id)
    assert got.id == r.id and got.output_text == r.output_text and got.metadata == {"k": "v"}
    items = a.responses.input_items.list(r.id)
    assert [i.type for i in items.data] == ["message"]
    # Another consumer cannot see it, continue it or delete it.
    with pytest.raises(openai.NotFoundError):
        b.responses.retrieve(r.id)
    with pytest.raises(openai.NotFoundError):
        b.responses.create(model="gpt-4o", input="x", previous_response_id=r.id)
    with pytest.raises(openai.NotFoundError):
        b.responses.delete(r.id)
    a.responses.delete(r.id)
    with pytest.raises(openai.NotFoundError):
        a.responses.retrieve(r.id)


def test_store_false_keeps_nothing(setup):
    loom, o = setup
    a = client(loom, "key-team-a-0123")
    r = a.responses.create(model="gpt-4o", input="Hello", store=False)
    with pytest.raises(openai.NotFoundError):
        a.responses.retrieve(r.id)
    calls = len(o.requests)
    with pytest.raises(openai.NotFoundError):
        a.responses.create(model="gpt-4o", input="x", previous_response_id=r.id)
    assert len(o.requests) == calls, "the provider is not called for an unknown previous response"
