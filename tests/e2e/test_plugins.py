"""Proxy-Wasm plugins through the real binary: the example filters of
plugins/examples (built by scripts/build-plugins, or their prebuilt copies) on
proxy routes and on AI routes driven by the OpenAI SDK."""

import json
import os
import pathlib
import subprocess
import threading
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import openai
import pytest

from conftest import LISTEN
from harness import Loom, Named, loom_bin, metric_value, wait_until

ROOT = pathlib.Path(__file__).resolve().parents[2]


def plugin(name: str) -> str:
    folder = os.environ.get("LOOM_PLUGINS") or str(ROOT / "plugins" / "examples" / "dist")
    path = pathlib.Path(folder) / f"{name}.wasm"
    assert path.exists(), f"{path} is missing: run scripts/build-plugins"
    return str(path)


def config(backend_url: str, plugins: str, chain: str, ai_chain: str | None = None, extra: str = "") -> str:
    ai = ""
    if ai_chain is not None:
        ai = f"""  - id: ai
    path: /v1/*
    ai_gateway: true
    middleware: {{plugins: [{ai_chain}]}}
"""
    return LISTEN + f"""upstreams:
  - {{name: svc, endpoints: ["{backend_url}"]}}
{extra}
plugins:
{plugins}
routes:
{ai}  - id: app
    path: /*
    upstream: svc
    middleware: {{plugins: [{chain}]}}
ai_gateway:
  enabled: true
  providers:
    - {{name: upstream, type: openai, api_key: sk-upstream, base_url: "{{openai}}", models: [gpt-4o]}}
"""


def with_openai(text: str, url: str) -> str:
    return text.replace("{openai}", url)


def sdk(loom: Loom, key: str = "sk-client") -> openai.OpenAI:
    return openai.OpenAI(base_url=loom.base + "/v1", api_key=key, max_retries=0)


CHAT = {"model": "gpt-4o", "messages": [{"role": "user", "content": "Say hello"}]}


def test_header_plugin_on_a_proxy_route_and_an_ai_route(backend, fake_openai):
    plugins = f"""  - name: hdr
    path: {plugin("add_header")}
    config: {{request: {{x-team: ml}}, response: {{x-plugin: add-header}}}}"""
    loom = Loom(with_openai(config(backend.url, plugins, "hdr", "hdr"), fake_openai.url))
    try:
        r = httpx.get(loom.base + "/echo")
        assert r.status_code == 200
        assert r.json()["headers"]["x-team"] == "ml"
        assert r.headers["x-plugin"] == "add-header"
        assert r.headers["x-backend"] == "yes"

        raw = sdk(loom).chat.completions.with_raw_response.create(**CHAT)
        assert raw.headers["x-plugin"] == "add-header"
        assert raw.parse().choices[0].message.content
        # A stream goes through the response filter event by event.
        chunks = list(sdk(loom).chat.completions.create(**CHAT, stream=True))
        assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        # The admin API does not show plugin configuration (it may hold credentials).
        shown = httpx.get(loom.admin + "/config").json()["plugins"][0]
        assert shown["config"] == "[REDACTED]" and shown["name"] == "hdr"
    finally:
        loom.stop()


def test_block_plugin_answers_in_place_of_the_upstream(fake_openai):
    svc = Named("svc")
    plugins = f"""  - name: block
    path: {plugin("block")}
    config: {{header: x-block, status: 403, body: "blocked by policy"}}"""
    loom = Loom(with_openai(config(svc.url, plugins, "block", "block"), fake_openai.url))
    try:
        r = httpx.get(loom.base + "/x", headers={"x-block": "1"})
        assert r.status_code == 403
        assert r.text == "blocked by policy"
        assert r.headers["x-blocked-by"] == "block-plugin"
        assert svc.requests == 0
        assert httpx.get(loom.base + "/x").text == "svc"
        assert svc.requests == 1

        before = len(fake_openai.requests)
        with pytest.raises(openai.PermissionDeniedError):
            sdk(loom).chat.completions.create(**CHAT, extra_headers={"x-block": "yes"})
        assert len(fake_openai.requests) == before
        sdk(loom).chat.completions.create(**CHAT)
        assert len(fake_openai.requests) == before + 1
    finally:
        loom.stop()
        svc.close()


def test_body_rewrite_of_a_chat_request_and_its_answer(backend, fake_openai):
    plugins = f"""  - name: rewrite
    path: {plugin("rewrite_body")}
    config:
      request: {{set: {{temperature: 0.25, user: rewritten}}}}
      response: {{set: {{system_fingerprint: fp_plugin}}}}"""
    loom = Loom(with_openai(config(backend.url, plugins, "rewrite", "rewrite"), fake_openai.url))
    try:
        answer = sdk(loom).chat.completions.create(**CHAT, temperature=1.5)
        sent = json.loads(fake_openai.requests[-1]["raw"])
        assert sent["temperature"] == 0.25
        assert sent["user"] == "rewritten"
        assert sent["messages"][0]["content"] == "Say hello"
        assert answer.system_fingerprint == "fp_plugin"
        assert answer.choices[0].message.content

        # On a proxy route: the JSON body the service receives is rewritten.
        r = httpx.post(loom.base + "/echo", json={"temperature": 2, "keep": "me"})
        seen = json.loads(r.json()["body"])
        assert seen == {"temperature": 0.25, "keep": "me", "user": "rewritten"}
        assert "content-length" not in r.json()["headers"]
        # Not JSON: untouched.
        r = httpx.post(loom.base + "/echo", content=b"plain text", headers={"content-type": "text/plain"})
        assert r.json()["body"] == "plain text"
    finally:
        loom.stop()


class AuthService:
    """Allows `Bearer good` (as user alice); refuses anything else with 401."""

    def __init__(self):
        self.calls = 0
        me = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_GET(self):
                me.calls += 1
                ok = self.headers.get("authorization") == "Bearer good"
                body = b"" if ok else b"bad credentials"
                self.send_response(200 if ok else 401)
                if ok:
                    self.send_header("x-user", "alice")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def test_http_callout_decides_the_request(backend, fake_openai):
    auth = AuthService()
    plugins = f"""  - name: auth
    path: {plugin("auth_callout")}
    config: {{upstream: authz, path: /check, timeout_ms: 2000}}"""
    extra = f"""  - {{name: authz, endpoints: ["{auth.url}"]}}"""
    text = config(backend.url, plugins, "auth", "auth").replace("\n\nplugins:", "\n" + extra + "\nplugins:", 1)
    loom = Loom(with_openai(text, fake_openai.url))
    try:
        ok = httpx.get(loom.base + "/echo", headers={"authorization": "Bearer good"})
        assert ok.status_code == 200
        assert ok.json()["headers"]["x-user"] == "alice"
        bad = httpx.get(loom.base + "/echo", headers={"authorization": "Bearer nope"})
        assert bad.status_code == 403
        assert bad.headers["x-auth-status"] == "401"
        assert bad.text == "bad credentials"
        assert auth.calls == 2

        before = len(fake_openai.requests)
        assert sdk(loom, key="good").chat.completions.create(**CHAT).choices
        with pytest.raises(openai.PermissionDeniedError):
            sdk(loom, key="wrong").chat.completions.create(**CHAT)
        assert len(fake_openai.requests) == before + 1
        assert auth.calls == 4
    finally:
        loom.stop()
        auth.close()


def test_callout_to_a_service_that_is_down_is_refused(backend, fake_openai):
    from harness import closed_port

    plugins = f"""  - name: auth
    path: {plugin("auth_callout")}
    config: {{upstream: authz, timeout_ms: 500}}"""
    extra = f"""  - {{name: authz, endpoints: ["http://127.0.0.1:{closed_port()}"]}}"""
    text = config(backend.url, plugins, "auth").replace("\n\nplugins:", "\n" + extra + "\nplugins:", 1)
    loom = Loom(with_openai(text, fake_openai.url))
    try:
        r = httpx.get(loom.base + "/echo", headers={"authorization": "Bearer good"})
        assert r.status_code == 403
        assert r.headers["x-auth-status"] == "none"
    finally:
        loom.stop()


def test_shared_data_counts_every_request_across_workers(backend, fake_openai):
    plugins = f"""  - name: count
    path: {plugin("counter")}"""
    loom = Loom(with_openai(config(backend.url, plugins, "count", "count"), fake_openai.url))
    try:
        def one(_):
            with httpx.Client() as c:
                r = c.get(loom.base + "/echo/a?b=1")
                return int(r.headers["x-request-count"]), r.headers["x-seen-path"]

        with ThreadPoolExecutor(8) as pool:
            seen = list(pool.map(one, range(40)))
        counts = sorted(c for c, _ in seen)
        # Compare-and-swap: every request got its own number.
        assert counts == list(range(1, 41))
        assert {p for _, p in seen} == {"/echo/a?b=1"}
        raw = sdk(loom).chat.completions.with_raw_response.create(**CHAT)
        assert raw.headers["x-request-count"] == "41"
        assert raw.headers["x-seen-path"] == "/v1/chat/completions"
        assert metric_value(loom.metrics(), "loom_plugin_requests_seen_total", plugin="count") == 41
    finally:
        loom.stop()


def test_tick_driven_plugin(backend, fake_openai):
    plugins = f"""  - name: tick
    path: {plugin("tick")}
    config: {{period_ms: 20}}"""
    loom = Loom(with_openai(config(backend.url, plugins, "tick", "tick"), fake_openai.url))
    try:
        first = int(httpx.get(loom.base + "/echo").headers["x-ticks"])
        # The ticks go on without traffic; the count only grows.
        wait_until(lambda: int(httpx.get(loom.base + "/echo").headers["x-ticks"]) >= first + 3, what="ticks")
        raw = sdk(loom).chat.completions.with_raw_response.create(**CHAT)
        assert int(raw.headers["x-ticks"]) >= first + 3
    finally:
        loom.stop()


def faulty_config(backend_url: str, fake_url: str, fail_open: bool = False) -> str:
    plugins = f"""  - name: faulty
    path: {plugin("faulty")}
    max_cpu_time: 200ms
    max_memory: 32MB
    fail_open: {"true" if fail_open else "false"}"""
    return with_openai(config(backend_url, plugins, "faulty", "faulty"), fake_url)


@pytest.mark.parametrize("fault,logged", [
    ("trap", "trapped"),
    ("loop", "over its CPU time budget"),
    ("hog", "over its memory limit"),
])
def test_a_failing_plugin_fails_only_that_request(backend, fake_openai, fault, logged):
    loom = Loom(faulty_config(backend.url, fake_openai.url))
    try:
        r = httpx.get(loom.base + "/echo", headers={"x-fault": fault}, timeout=10)
        assert r.status_code == 500
        assert r.json()["error"]["code"] == "plugin_failed"
        assert logged in loom.log()
        # The instance was replaced: the next requests work, on both routes.
        for _ in range(3):
            ok = httpx.get(loom.base + "/echo")
            assert ok.status_code == 200
            assert ok.json()["headers"]["x-faulty"] == "passed"
        with pytest.raises(openai.InternalServerError):
            sdk(loom).chat.completions.create(**CHAT, extra_headers={"x-fault": fault})
        assert sdk(loom).chat.completions.create(**CHAT).choices
    finally:
        loom.stop()


def test_fail_open_lets_the_request_through_untouched(backend, fake_openai):
    loom = Loom(faulty_config(backend.url, fake_openai.url, fail_open=True))
    try:
        r = httpx.get(loom.base + "/echo", headers={"x-fault": "trap"})
        assert r.status_code == 200
        assert "x-faulty" not in r.json()["headers"]
        assert httpx.get(loom.base + "/echo").json()["headers"]["x-faulty"] == "passed"
    finally:
        loom.stop()


def test_hot_reload_swaps_a_plugin_under_load(backend, fake_openai):
    def text(tag):
        plugins = f"""  - name: hdr
    path: {plugin("add_header")}
    config: {{response: {{x-version: {tag}}}}}"""
        return with_openai(config(backend.url, plugins, "hdr"), fake_openai.url)

    loom = Loom(text("v1"))
    stop = threading.Event()
    seen: list[tuple[int, str]] = []

    def load():
        with httpx.Client() as c:
            while not stop.is_set():
                r = c.get(loom.base + "/echo")
                seen.append((r.status_code, r.headers.get("x-version", "")))

    workers = [threading.Thread(target=load) for _ in range(4)]
    try:
        for w in workers:
            w.start()
        wait_until(lambda: len(seen) > 50, what="traffic")
        loom.write_config(text("v2"))
        wait_until(lambda: seen[-1][1] == "v2" and seen[-20:].count((200, "v2")) == 20, what="the new plugin")
        stop.set()
        for w in workers:
            w.join()
        assert {s for s, _ in seen} == {200}
        versions = [v for _, v in seen]
        assert set(versions) == {"v1", "v2"}
        # Once swapped, new requests never see the old plugin again.
        first_v2 = versions.index("v2")
        assert versions[first_v2 + 20:].count("v1") == 0
    finally:
        stop.set()
        loom.stop()


def test_plugin_errors_are_configuration_errors(tmp_path, backend):
    bad = tmp_path / "bad.yaml"
    bad.write_text(LISTEN.format(port=1, admin_port=2) + f"""upstreams:
  - {{name: svc, endpoints: ["{backend.url}"]}}
routes:
  - id: app
    path: /*
    upstream: svc
    middleware: {{plugins: [missing]}}
""")
    out = subprocess.run([loom_bin(), "validate", str(bad)], capture_output=True, text=True)
    assert out.returncode != 0
    assert "routes[0].middleware.plugins[0]" in out.stdout + out.stderr
    assert "missing" in out.stdout + out.stderr


def wasm_importing(name: str) -> bytes:
    """A minimal Proxy-Wasm-looking module that imports `env.<name>`."""

    def vec(items: list[bytes]) -> bytes:
        return bytes([len(items)]) + b"".join(items)

    def string(s: str) -> bytes:
        return bytes([len(s)]) + s.encode()

    def section(sid: int, body: bytes) -> bytes:
        return bytes([sid, len(body)]) + body

    types = section(1, vec([b"\x60\x00\x00"]))
    imports = section(2, vec([string("env") + string(name) + b"\x00\x00"]))
    funcs = section(3, vec([b"\x00"]))
    memory = section(5, vec([b"\x00\x01"]))
    exports = section(7, vec([string("proxy_abi_version_0_2_1") + b"\x00\x01", string("memory") + b"\x02\x00"]))
    code = section(10, vec([b"\x02\x00\x0b"]))
    return b"\x00asm\x01\x00\x00\x00" + types + imports + funcs + memory + exports + code


def test_unknown_imports_and_broken_files_are_refused_at_load(tmp_path, backend, fake_openai):
    odd = tmp_path / "odd.wasm"
    odd.write_bytes(wasm_importing("proxy_mystery_call"))
    junk = tmp_path / "junk.wasm"
    junk.write_bytes(b"not wasm at all")
    for path, expected in [(odd, "env.proxy_mystery_call"), (junk, "not a valid WebAssembly module")]:
        plugins = f"""  - name: odd
    path: {path}"""
        loom = Loom(with_openai(config(backend.url, plugins, "odd"), fake_openai.url), wait_ready=False)
        try:
            code = loom.proc.wait(timeout=30)
            assert code != 0
            assert expected in loom.log()
            assert "plugin odd" in loom.log()
        finally:
            loom.stop()


@pytest.mark.parametrize("phase,unauthenticated", [("before_auth", 403), ("after_auth", 401)])
def test_phase_places_a_plugin_before_or_after_authentication(backend, phase, unauthenticated):
    loom = Loom(LISTEN + f"""upstreams:
  - {{name: svc, endpoints: ["{backend.url}"]}}
plugins:
  - name: block
    path: {plugin("block")}
    phase: {phase}
    config: {{header: x-block, status: 403}}
consumers:
  - {{name: app, keys: ["sk-app-0123456789"]}}
routes:
  - id: app
    path: /*
    upstream: svc
    middleware: {{auth: {{type: api_key}}, plugins: [block]}}
""")
    try:
        # No key: before authentication the plugin answers first.
        assert httpx.get(loom.base + "/echo", headers={"x-block": "1"}).status_code == unauthenticated
        key = {"x-api-key": "sk-app-0123456789"}
        assert httpx.get(loom.base + "/echo", headers={"x-block": "1", **key}).status_code == 403
        assert httpx.get(loom.base + "/echo", headers=key).status_code == 200
    finally:
        loom.stop()
