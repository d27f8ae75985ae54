"""Overload protection: past `server.max_requests_per_worker` requests in
flight on a worker, a new request is answered 503 with `Retry-After` at
once, before its body is read, in its route's format; the admin listener
keeps answering; once requests finish, new ones are served again.

Fakes stand at the network boundary (an OpenAI-format provider and a plain
HTTP upstream that hold their answers until released); Loom is the real
binary."""

from __future__ import annotations

import socket
import threading

import httpx
import openai
import pytest

from conftest import LISTEN
from harness import FakeBackend, FakeOpenAI, Loom, http_get, metric_value, wait_until

LIMIT = 3


def config(ai_url: str, proxy_url: str) -> str:
    return LISTEN + f"""server:
  workers: 1
  max_requests_per_worker: {LIMIT}
routes:
  - id: ai
    path: /v1/*
    ai_gateway: true
  - id: slow
    path: /hang
    upstream: slow
upstreams:
  - name: slow
    endpoints: ["{proxy_url}"]
ai_gateway:
  enabled: true
  providers:
    - name: upstream
      type: openai
      api_key: sk-overload-test
      base_url: {ai_url}
"""


@pytest.fixture
def loaded():
    ai, proxy = FakeOpenAI(), FakeBackend()
    loom = Loom(config(ai.url, proxy.url))
    held: list[threading.Thread] = []

    def hold_ai():
        httpx.post(loom.base + "/v1/chat/completions", timeout=30,
                   json={"model": "fake-hang", "messages": [{"role": "user", "content": "wait"}]})

    def hold_proxy():
        httpx.get(loom.base + "/hang", timeout=30)

    # LIMIT requests in flight on the one worker: two at the provider, one
    # at the proxy upstream.
    for fn in (hold_ai, hold_ai, hold_proxy):
        t = threading.Thread(target=fn, daemon=True)
        t.start()
        held.append(t)
    wait_until(lambda: len(ai.requests) == 2, what="two AI requests at the provider")
    wait_until(lambda: metric_value(loom.metrics(), "loom_requests_in_flight") == LIMIT,
               what="the worker at its bound")
    try:
        yield loom, ai, proxy
    finally:
        ai.release.set()
        proxy.hang.set()
        for t in held:
            t.join(10)
        loom.stop()
        ai.close()
        proxy.close()


def test_an_ai_request_over_the_bound_gets_503_in_openai_shape_and_no_provider_call(loaded):
    loom, ai, _ = loaded
    client = openai.OpenAI(base_url=loom.base + "/v1", api_key="unused", max_retries=0)
    with pytest.raises(openai.InternalServerError) as caught:
        client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "hi"}])
    e = caught.value
    assert e.status_code == 503
    assert e.response.headers["retry-after"] == "1"
    assert e.response.json()["error"]["code"] == "overloaded"
    assert len(ai.requests) == 2, "the shed request never reached the provider"
    assert metric_value(loom.metrics(), "loom_requests_shed_total") == 1


def test_a_proxy_request_over_the_bound_gets_a_plain_503(loaded):
    loom, _, proxy = loaded
    r = httpx.get(loom.base + "/hang", timeout=5)
    assert r.status_code == 503
    assert r.headers["retry-after"] == "1"
    assert r.json()["error"]["type"] == "gateway_error"


def test_the_body_of_a_shed_request_is_never_read(loaded):
    loom, ai, _ = loaded
    # A head announcing 32 KiB, and no body: the answer must come anyway.
    with socket.create_connection(("127.0.0.1", loom.port), timeout=5) as s:
        s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n"
                  b"Content-Type: application/json\r\nContent-Length: 32768\r\n\r\n")
        answer = b""
        while b"\r\n\r\n" not in answer:
            chunk = s.recv(4096)
            assert chunk, f"closed without an answer: {answer!r}"
            answer += chunk
    head = answer.split(b"\r\n\r\n", 1)[0].decode().lower()
    assert head.startswith("http/1.1 503"), head
    assert "retry-after: 1" in head
    assert "connection: close" in head, "the unread body ends the connection"


def test_admin_keeps_answering_and_requests_are_served_after_the_load_ends(loaded):
    loom, ai, proxy = loaded
    status, _ = http_get(loom.admin + "/health")
    assert status == 200
    status, _ = http_get(loom.admin + "/ready")
    assert status == 200
    ai.release.set()
    proxy.hang.set()
    wait_until(lambda: metric_value(loom.metrics(), "loom_requests_in_flight") == 0,
               what="the held requests to finish")
    r = httpx.post(loom.base + "/v1/chat/completions", timeout=10,
                   json={"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]})
    assert r.status_code == 200, r.text
