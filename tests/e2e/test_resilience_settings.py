"""Resilience settings through the real binary.

1. The provider circuit breaker judges a provider on its failure share: one
   provider whose streams are cut one time in five (in bursts longer than
   `consecutive_failures`) keeps all its traffic, while a provider that
   refuses everything still has its circuit opened.
2. One vocabulary for retries, failover and breakers (`attempts`,
   `attempt_timeout`, `deadline`, `failure_percent`, `min_requests`,
   `consecutive_failures`, `open_for`): the old spellings still load, with a
   warning naming the field and its replacement (from `loom validate` and in
   the gateway's log at start); both spellings at once are refused; and the
   old and new spellings of the failover's tries behave the same.
"""

from __future__ import annotations

import json
import re
import socket
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler

import httpx
import openai
import pytest

from conftest import LISTEN
from harness import ChunkedWriter, FakeOpenAI, Loom, _Server, closed_port, loom_bin


# --------------------------------------------------------------------------
# 1. The provider circuit breaker under cut streams
# --------------------------------------------------------------------------

REQUESTS = 100
# Arrival numbers (0-based) of the streams the provider cuts: two bursts of
# five in a row, as a backend restart cuts every stream it carries, and ten
# scattered ones. 20 of 100: a 20% cut rate.
BURSTS = [range(10, 15), range(60, 65)]
CUT = {i for burst in BURSTS for i in burst} | {3, 23, 28, 33, 43, 53, 73, 83, 88, 93}
assert len(CUT) == REQUESTS // 5


class _QuietServer(_Server):
    def handle_error(self, request, client_address):
        # Loom closing an idle pooled connection at shutdown is not an error.
        if not isinstance(sys.exc_info()[1], (ConnectionResetError, BrokenPipeError)):
            super().handle_error(request, client_address)


class CuttingProvider:
    """An OpenAI-format provider on loopback that streams chat completions
    and cuts the streams whose arrival number is in `cut` after their first
    chunks (the connection closes without the terminating chunk or [DONE]).

    Cut streams end sooner than whole ones, so they bunch up. The fake makes
    that bunching certain rather than likely: the streams of one burst are
    held until the whole burst has arrived, every whole stream already sent
    has reached its client, and then they are cut together; whole streams
    wait before their last bytes until every cut stream has reached its
    client and each of the burst's clients has made its next request (it
    arrived here, or Loom refused it). The clients report what they saw
    (`client_saw`); Loom settles a call with the provider's statistics
    before it relays the call's end, so the provider's breaker sees the
    burst as failures in a row, and the requests that follow it meet
    whatever the breaker made of it.
    """

    def __init__(self, cut: set[int], bursts: list[range]):
        self.cut, self.bursts = cut, bursts
        self.cond = threading.Condition()
        self.arrivals = 0
        self.whole_sent = 0
        self.cuts_sent = 0
        self.client_whole = 0
        self.client_cut = 0
        self.client_refused = 0
        self.cutting = False
        self.waits_given_up = 0
        self.arrived_in_burst = {b.start: 0 for b in bursts}
        self.burst_go = {b.start: False for b in bursts}
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True

            def log_message(self, *args):
                pass

            def do_POST(self):
                raw = self.rfile.read(int(self.headers.get("content-length", "0")))
                body = json.loads(raw or b"{}")
                if self.path.split("?")[0] != "/v1/chat/completions" or not body.get("stream"):
                    payload = b'{"error":{"message":"streams only","type":"invalid_request_error","param":null,"code":null}}'
                    self.send_response(400)
                    self.send_header("content-type", "application/json")
                    self.send_header("content-length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                    return
                with fake.cond:
                    n = fake.arrivals
                    fake.arrivals += 1
                    fake.cond.notify_all()
                self.send_response(200)
                self.send_header("content-type", "text/event-stream; charset=utf-8")
                self.send_header("transfer-encoding", "chunked")
                self.end_headers()
                out = ChunkedWriter(self.wfile)
                usage = (body.get("stream_options") or {}).get("include_usage", False)
                events = fake.events(n, body.get("model", "gpt-4o"), usage)
                # The first chunks go out at once, cut or not.
                for e in events[:3]:
                    out.write(e)
                if n in fake.cut:
                    fake.before_cut(n)
                    self.wfile.flush()
                    self.connection.shutdown(socket.SHUT_RDWR)
                    self.close_connection = True
                    fake.after_cut(n)
                    return
                fake.before_last_bytes()
                for e in events[3:]:
                    out.write(e)
                out.close()

        self.server = _QuietServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @staticmethod
    def events(n: int, model: str, usage: bool) -> list[bytes]:
        def chunk(choices, extra=None):
            doc = {"id": f"chatcmpl-cut{n:04d}", "object": "chat.completion.chunk", "created": 1741570283,
                   "model": "gpt-4o-2024-08-06", "system_fingerprint": "fp_eb9dce56a8", "choices": choices}
            doc.update(extra or {})
            return b"data: " + json.dumps(doc, separators=(",", ":")).encode() + b"\n\n"

        def delta(d, finish=None):
            return chunk([{"index": 0, "delta": d, "logprobs": None, "finish_reason": finish}])

        out = [delta({"role": "assistant", "content": "", "refusal": None})]
        out += [delta({"content": w}) for w in ["The", " sky", " is", " blue", "."]]
        out.append(delta({}, "stop"))
        if usage:
            out.append(chunk([], {"usage": {"prompt_tokens": 14, "completion_tokens": 5, "total_tokens": 19}}))
        out.append(b"data: [DONE]\n\n")
        return out

    def _wait(self, predicate) -> None:
        """Waits (holding `cond`) until `predicate` holds; counts a wait that
        gave up, which would mean the cuts were not bunched as designed."""
        if not self.cond.wait_for(predicate, timeout=8):
            self.waits_given_up += 1

    def burst_of(self, n: int):
        return next((b for b in self.bursts if n in b), None)

    def before_cut(self, n: int) -> None:
        burst = self.burst_of(n)
        with self.cond:
            if burst is None:
                self.cuts_sent += 1
                return
            self.arrived_in_burst[burst.start] += 1
            if self.arrived_in_burst[burst.start] < len(burst):
                self.cond.notify_all()
                self._wait(lambda: self.burst_go[burst.start])
                self.cuts_sent += 1
                return
            # The burst is complete: hold the whole streams' ends, let every
            # whole stream already sent reach its client, then cut them all.
            self.cutting = True
            self._wait(lambda: self.client_whole >= self.whole_sent)
            self.burst_go[burst.start] = True
            self.next_mark = self.arrivals + self.client_refused
            self.cuts_sent += 1
            self.cond.notify_all()

    def after_cut(self, n: int) -> None:
        burst = self.burst_of(n)
        if burst is None or n != burst.start:
            return
        # The burst's first stream releases the whole streams once every cut
        # so far has reached its client.
        with self.cond:
            self._wait(lambda: self.burst_go[burst.start])
            self._wait(lambda: self.client_cut >= self.cuts_sent)
            # The whole streams held meanwhile are the only other requests in
            # flight: what arrives or is refused now are the burst's clients'
            # next requests.
            self._wait(lambda: self.arrivals + self.client_refused >= self.next_mark + len(burst))
            self.cutting = False
            self.cond.notify_all()

    def before_last_bytes(self) -> None:
        with self.cond:
            self._wait(lambda: not self.cutting)
            self.whole_sent += 1

    def client_saw(self, outcome: str) -> None:
        with self.cond:
            if outcome == "whole":
                self.client_whole += 1
            elif outcome == "cut":
                self.client_cut += 1
            else:
                self.client_refused += 1
            self.cond.notify_all()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def one_provider(url: str) -> str:
    # Default breaker settings: 5 refusals in a row, 50%, 20 requests.
    return LISTEN + f"""routes:
  - id: ai
    path: /v1/*
    ai_gateway: true
ai_gateway:
  enabled: true
  providers:
    - name: flaky
      type: openai
      api_key: sk-flaky
      base_url: {url}
      models: [gpt-4o]
"""


def provider(loom, name: str) -> dict:
    doc = httpx.get(loom.admin + "/ai/providers", timeout=5).json()
    return next(p for p in doc["providers"] if p["name"] == name)


def test_the_only_provider_keeps_its_traffic_when_a_fifth_of_its_streams_are_cut():
    fake = CuttingProvider(CUT, BURSTS)
    loom = Loom(one_provider(fake.url))
    try:
        client = openai.OpenAI(base_url=loom.base + "/v1", api_key="client-key", max_retries=0, timeout=20)

        def one(_):
            try:
                stream = client.chat.completions.create(
                    model="gpt-4o", messages=[{"role": "user", "content": "What colour is the sky?"}], stream=True)
            except openai.APIStatusError as e:
                code = ((e.body or {}).get("code") if isinstance(e.body, dict) else None)
                fake.client_saw("refused")
                return ("refused", e.status_code, code)
            text = ""
            try:
                for ch in stream:
                    if ch.choices:
                        text += ch.choices[0].delta.content or ""
            except openai.APIError:
                fake.client_saw("cut")
                return ("cut", text)
            fake.client_saw("whole")
            return ("whole", text)

        with ThreadPoolExecutor(8) as pool:
            outcomes = list(pool.map(one, range(REQUESTS)))

        refused = [o for o in outcomes if o[0] == "refused"]
        assert not refused, (
            f"{len(refused)} of {REQUESTS} clients were refused without the provider being tried "
            f"(first: {refused[0]}); the provider's circuit: {provider(loom, 'flaky')['circuit']}")
        assert fake.arrivals == REQUESTS, f"the provider received {fake.arrivals} of {REQUESTS} requests"
        assert fake.waits_given_up == 0, "the fake could not bunch the cut streams as designed"
        assert all(fake.burst_go.values()), "a burst of cuts never came"
        whole = [o for o in outcomes if o[0] == "whole"]
        cut = [o for o in outcomes if o[0] == "cut"]
        assert len(whole) == REQUESTS - len(CUT) and all(t == "The sky is blue." for _, t in whole)
        assert len(cut) == len(CUT)
        p = provider(loom, "flaky")
        assert p["circuit"] == "closed", p
        assert p["errors"] == len(CUT), p
    finally:
        loom.stop()
        fake.close()


def test_a_provider_that_refuses_everything_still_has_its_circuit_opened():
    down, up = FakeOpenAI(), FakeOpenAI()
    down.fail_next = [(500, {})] * 1000
    loom = Loom(LISTEN + f"""routes:
  - id: ai
    path: /v1/*
    ai_gateway: true
ai_gateway:
  enabled: true
  providers:
    - {{name: down, type: openai, api_key: sk-a, base_url: {down.url}, models: [gpt-4o], priority: 1}}
    - {{name: up, type: openai, api_key: sk-b, base_url: {up.url}, models: [gpt-4o], priority: 2}}
  routing:
    strategy: priority
    failover: {{enabled: true}}
""")
    try:
        client = openai.OpenAI(base_url=loom.base + "/v1", api_key="client-key", max_retries=0)

        def ask():
            r = client.chat.completions.with_raw_response.create(
                model="gpt-4o", messages=[{"role": "user", "content": "x"}])
            assert r.http_response.status_code == 200
            return r.headers.get("x-loom-provider")

        served = []
        for _ in range(30):
            served.append(ask())
            if provider(loom, "down")["circuit"] == "open":
                break
        assert provider(loom, "down")["circuit"] == "open", provider(loom, "down")
        assert set(served) == {"up"}
        tried = len(down.requests)
        assert tried >= 5
        # Open: the refusing provider is no longer called; the healthy one serves.
        assert [ask() for _ in range(10)] == ["up"] * 10
        assert len(down.requests) == tried
        assert provider(loom, "up")["circuit"] == "closed"
    finally:
        loom.stop()
        down.close()
        up.close()


# --------------------------------------------------------------------------
# 2. One vocabulary of resilience settings
# --------------------------------------------------------------------------

def resilience_config(upstream_breaker: str, retry: str, provider_breaker: str, failover: str) -> str:
    return LISTEN + f"""upstreams:
  - name: web
    endpoints: [http://127.0.0.1:{closed_port()}]
    circuit_breaker: {{{upstream_breaker}}}
routes:
  - id: web
    path: /web/*
    upstream: web
    retry: {{{retry}}}
  - id: ai
    path: /v1/*
    ai_gateway: true
ai_gateway:
  enabled: true
  providers:
    - {{name: a, type: openai, api_key: sk-a, base_url: "http://127.0.0.1:{closed_port()}/v1", models: [gpt-4o]}}
  routing:
    strategy: priority
    circuit_breaker: {{{provider_breaker}}}
    failover: {{{failover}}}
"""


NEW = resilience_config(
    "failure_percent: 50, min_requests: 10, open_for: 30s",
    "attempts: 3, attempt_timeout: 2s, deadline: 5s",
    "consecutive_failures: 5, open_for: 30s, failure_percent: 50, min_requests: 20",
    "enabled: true, attempts: 3, attempt_timeout: 5s, deadline: 20s",
)
# The same settings in the spellings used before (each in its old unit).
OLD = resilience_config(
    "failure_rate: 50, min_requests: 10, open_for: 30s",
    "attempts: 3, per_try_timeout: 2s, timeout: 5s",
    "failure_threshold: 5, cooldown: 30s, failure_rate: 0.5, min_requests: 20",
    "enabled: true, max_retries: 2, timeout: 5s, deadline: 20s",
)
# (field written, key that replaces it), one warning each.
DEPRECATED = [
    ("upstreams[0].circuit_breaker.failure_rate", "failure_percent"),
    ("routes[0].retry.per_try_timeout", "attempt_timeout"),
    ("routes[0].retry.timeout", "deadline"),
    ("ai_gateway.routing.circuit_breaker.failure_threshold", "consecutive_failures"),
    ("ai_gateway.routing.circuit_breaker.cooldown", "open_for"),
    ("ai_gateway.routing.circuit_breaker.failure_rate", "failure_percent"),
    ("ai_gateway.routing.failover.max_retries", "attempts"),
    ("ai_gateway.routing.failover.timeout", "attempt_timeout"),
]


def validate(tmp_path, text: str) -> subprocess.CompletedProcess:
    path = tmp_path / "loom.yaml"
    path.write_text(text.replace("{port}", "18080").replace("{admin_port}", "19091"))
    return subprocess.run([loom_bin(), "validate", str(path)], capture_output=True, text=True, timeout=30)


def warning_lines(out: str) -> list[str]:
    return [l for l in out.splitlines() if l.startswith("warning:")]


def test_validate_accepts_the_canonical_keys_without_warnings(tmp_path):
    out = validate(tmp_path, NEW)
    assert out.returncode == 0, out.stdout + out.stderr
    assert warning_lines(out.stdout + out.stderr) == []
    assert "OK" in out.stdout


def test_validate_accepts_the_old_spellings_with_one_warning_each(tmp_path):
    out = validate(tmp_path, OLD)
    assert out.returncode == 0, out.stdout + out.stderr
    warnings = warning_lines(out.stdout + out.stderr)
    for field, new in DEPRECATED:
        old = field.rsplit(".", 1)[1]
        naming = [w for w in warnings if re.search(re.escape(field) + r"\b", w)
                  and f"`{old}`" in w and f"`{new}`" in w and "deprecated" in w]
        assert len(naming) == 1, f"no single warning names {field} and `{new}`:\n{out.stdout}{out.stderr}"
    assert len(warnings) == len(DEPRECATED), "\n".join(warnings)


BOTH = [
    ("ai_gateway.routing.circuit_breaker", "open_for", "cooldown",
     OLD.replace("cooldown: 30s,", "cooldown: 30s, open_for: 10s,")),
    ("ai_gateway.routing.circuit_breaker", "failure_percent", "failure_rate",
     OLD.replace("failure_rate: 0.5,", "failure_rate: 0.5, failure_percent: 40,")),
    ("ai_gateway.routing.failover", "attempts", "max_retries",
     OLD.replace("max_retries: 2,", "max_retries: 2, attempts: 3,")),
    ("routes[0].retry", "attempt_timeout", "per_try_timeout",
     OLD.replace("per_try_timeout: 2s,", "per_try_timeout: 2s, attempt_timeout: 1s,")),
    ("upstreams[0].circuit_breaker", "failure_percent", "failure_rate",
     OLD.replace("failure_rate: 50,", "failure_rate: 50, failure_percent: 50,")),
]


@pytest.mark.parametrize("field,new,old,text", BOTH, ids=[f"{f}.{n}" for f, n, _, _ in BOTH])
def test_both_spellings_of_one_setting_are_refused(tmp_path, field, new, old, text):
    assert text != OLD
    out = validate(tmp_path, text)
    said = out.stdout + out.stderr
    assert out.returncode != 0, said
    assert field in said, said
    assert f"`{new}` and its deprecated spelling `{old}` are both set" in said, said


def three_refusing_providers(failover: str):
    fakes = [FakeOpenAI() for _ in range(3)]
    for f in fakes:
        f.fail_next = [(503, {})] * 10
    providers = "\n".join(
        f"    - {{name: p{i}, type: openai, api_key: sk-{i}, base_url: {f.url}, models: [gpt-4o], priority: {i + 1}}}"
        for i, f in enumerate(fakes))
    loom = Loom(LISTEN + f"""routes:
  - id: ai
    path: /v1/*
    ai_gateway: true
ai_gateway:
  enabled: true
  providers:
{providers}
  routing:
    strategy: priority
    failover: {{enabled: true, {failover}}}
""")
    return fakes, loom


@pytest.mark.parametrize("failover,tries", [
    ("max_retries: 1", 2),
    ("attempts: 2", 2),
    ("attempts: 1", 1),
])
def test_old_and_new_spellings_of_the_failover_tries_behave_the_same(failover, tries):
    fakes, loom = three_refusing_providers(failover)
    try:
        client = openai.OpenAI(base_url=loom.base + "/v1", api_key="client-key", max_retries=0)
        with pytest.raises(openai.APIStatusError) as e:
            client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "x"}])
        assert e.value.status_code == 503
        assert [len(f.requests) for f in fakes] == [1] * tries + [0] * (3 - tries)
        assert e.value.response.headers.get("x-loom-attempts") == str(tries)
    finally:
        loom.stop()
        for f in fakes:
            f.close()


def test_the_gateway_logs_the_deprecated_spellings_at_start():
    loom = Loom(OLD)
    try:
        logged = [l for l in loom.log().splitlines() if "WARN" in l and "deprecated" in l]
        for field, new in DEPRECATED:
            assert any(field in l and f"`{new}`" in l for l in logged), \
                f"the log at start does not name {field} and `{new}`:\n{loom.log()}"
    finally:
        loom.stop()
