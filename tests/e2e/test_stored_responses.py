"""The Responses API's state for translated providers: a response created
with `store` (the default) is continued with `previous_response_id`, read
back, listed and deleted, per consumer, with the official OpenAI SDK; with
`responses.store: redis`, by any replica, and through a Redis outage."""

import subprocess
import uuid

import openai
import pytest

from harness import FakeOpenAI, Loom, OwnRedis, drop_prefix, need_redis, need_redis_server, wait_until

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


def redis_kept(prefix: str, port: int = 6379) -> str:
    return f"""  responses:
    store: redis
    redis:
      address: 127.0.0.1:{port}
      key_prefix: "{prefix}"
      timeout: 200ms
"""


def redis_get(key: str, port: int = 6379) -> str:
    return subprocess.run(["redis-cli", "-p", str(port), "--raw", "get", key],
                          capture_output=True, text=True).stdout.strip()


def test_replicas_share_kept_responses_through_redis():
    need_redis()
    prefix = f"loomtest-{uuid.uuid4().hex[:8]}:"
    o = FakeOpenAI()
    cfg = CONFIG.format(openai=o.url) + redis_kept(prefix)
    one, two = Loom(cfg), Loom(cfg)
    try:
        a1, a2 = client(one, "key-team-a-0123"), client(two, "key-team-a-0123")
        first = a1.responses.create(model="gpt-4o", input="Hello")
        wait_until(lambda: redis_get(f"{prefix}response:{first.id}") != "", what="written to Redis")
        assert "key-team-a-0123" not in redis_get(f"{prefix}response:{first.id}"), "no key in Redis"
        # The other replica continues it, reads it and lists its input.
        a2.responses.create(model="gpt-4o", input="And again?", previous_response_id=first.id)
        msgs = o.requests[-1]["body"]["messages"]
        assert [m["content"] for m in msgs] == ["Hello", first.output_text, "And again?"]
        assert a2.responses.retrieve(first.id).output_text == first.output_text
        assert [i.type for i in a2.responses.input_items.list(first.id).data] == ["message"]
        # Still per consumer there.
        with pytest.raises(openai.NotFoundError):
            client(two, "key-team-b-4567").responses.retrieve(first.id)
        # Deleted on one replica: gone on both.
        a2.responses.delete(first.id)
        for c in (a1, a2):
            with pytest.raises(openai.NotFoundError):
                c.responses.retrieve(first.id)
    finally:
        one.stop()
        two.stop()
        o.close()
        drop_prefix(prefix)


def test_kept_responses_survive_a_redis_outage_and_reach_redis_after_it():
    need_redis_server()
    own = OwnRedis()
    prefix = "loomtest-outage:"
    o = FakeOpenAI()
    cfg = CONFIG.format(openai=o.url) + redis_kept(prefix, own.port)
    loom = Loom(cfg)
    later = None
    try:
        a = client(loom, "key-team-a-0123")
        own.kill()
        # Redis is away: responses are created, continued and read all the same.
        first = a.responses.create(model="gpt-4o", input="Hello")
        with a.responses.stream(model="gpt-4o", input="More", previous_response_id=first.id) as s:
            second = s.get_final_response()
        assert [m["content"] for m in o.requests[-1]["body"]["messages"]][0] == "Hello"
        assert a.responses.retrieve(second.id).output_text == second.output_text
        # Back: what Redis missed is written to it, without a new request.
        own.start()
        for r in (first, second):
            wait_until(lambda r=r: redis_get(f"{prefix}response:{r.id}", own.port) != "",
                       timeout=20, what=f"{r.id} written once Redis is back")
        # A replica started afterwards continues the conversation.
        later = Loom(cfg)
        client(later, "key-team-a-0123").responses.create(
            model="gpt-4o", input="Last", previous_response_id=second.id)
        assert len(o.requests[-1]["body"]["messages"]) == 5
    finally:
        loom.stop()
        if later:
            later.stop()
        o.close()
        own.close()
