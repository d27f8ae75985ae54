"""Test harness: a fake OpenAI upstream, a plain HTTP upstream, and the real
`loom` binary started on a temporary configuration.

The fakes speak the exact wire formats on loopback and record what they
receive, so tests can assert on what Loom sent upstream. Nothing here mocks
Loom itself.
"""

from __future__ import annotations

import hashlib
import shutil
import json
import os
import signal
import socket
import subprocess
import tempfile
import threading
import time
import urllib.request

import pytest
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

FIXTURES = Path(__file__).parent / "fixtures"


def fixture(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


def closed_port() -> int:
    """A loopback port nothing listens on (a connection to it is refused)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def free_port() -> int:
    """A port free now, chosen below the kernel's ephemeral range: a port the
    kernel hands out (bind to 0) can be taken again by any outgoing
    connection before Loom binds it."""
    import random

    low = 32768
    try:
        low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        pass
    for _ in range(200):
        port = random.randrange(10_000, max(low, 10_001))
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True


class ChunkedWriter:
    """Writes an HTTP/1.1 chunked body, flushing each chunk."""

    def __init__(self, wfile):
        self.wfile = wfile

    def write(self, data: bytes) -> None:
        if data:
            self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
            self.wfile.flush()

    def close(self) -> None:
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()


class FakeOpenAI:
    """An OpenAI-compatible upstream serving recorded transcripts.

    The model name selects a behaviour:
      fake-error-400 / fake-error-500   answer with that recorded error
      fake-gated-stream                 send the first event, then wait for `release`
      fake-broken-stream                send two events, then drop the connection
      fake-hang                         never answer (until `release` or 30 s)
      anything else                     the recorded answer
    """

    def __init__(self):
        self.requests: list[dict] = []
        # Behaviour of the next calls, set by a test: (status, headers) to
        # answer with an error, or "cut" to open a stream and close it at once.
        self.fail_next: list = []
        # Seconds to wait before answering (a slow provider, for latency routing).
        self.delay = 0.0
        self.release = threading.Event()
        self.last_event_sent = threading.Event()
        self.cancelled = threading.Event()
        # When a list: every answer reports fresh usage numbers (as a real
        # provider's vary), and each (prompt, completion) reported is appended.
        self.usage_log: list | None = None
        self._usage_lock = threading.Lock()
        # Status of GET /models (what an active health check calls), and how many came.
        self.models_status = 200
        self.models_calls = 0
        # When a list of strings: chat answers say exactly this, streamed one
        # string per content delta (in the recorded stream's event shape).
        self.answer_chunks: list[str] | None = None
        # When true, embeddings depend on the text: a bag of its lowercased
        # words hashed into 64 dimensions (so equal word sets embed equally).
        self.embed_by_words = False
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True

            def log_message(self, *args):
                pass

            def do_GET(self):
                if self.path.split("?")[0].endswith("/models"):
                    fake.models_calls += 1
                    if fake.models_status != 200:
                        return self._send(fake.models_status, fixture("openai_error_500.json"))
                    return self._send(200, b'{"object":"list","data":[{"id":"gpt-4o","object":"model","created":1715367049,"owned_by":"system"}]}')
                if "/responses/" in self.path:
                    return self._kept("GET")
                return self._send(404, b'{"error":{"message":"Unknown URL","type":"invalid_request_error","param":null,"code":"unknown_url"}}')

            def do_DELETE(self):
                if "/responses/" in self.path:
                    return self._kept("DELETE")
                return self._send(404, b'{"error":{"message":"Unknown URL","type":"invalid_request_error","param":null,"code":"unknown_url"}}')

            def _kept(self, method):
                # OpenAI keeps the responses it created: the recorded one
                # (fixtures/responses/text.json) is found, others are not.
                fake.requests.append({"path": self.path, "method": method, "headers": {k.lower(): v for k, v in self.headers.items()}, "body": None})
                path, _, _query = self.path.partition("?")
                rest = path.split("/responses/", 1)[1]
                rid, _, items = rest.partition("/")
                kept = json.loads(fixture("responses/text.json"))
                if rid != kept["id"]:
                    msg = json.dumps({"error": {"message": f"Response with id '{rid}' not found.", "type": "invalid_request_error", "param": None, "code": None}})
                    return self._send(404, msg.encode())
                if method == "DELETE":
                    return self._send(200, json.dumps({"id": rid, "object": "response.deleted", "deleted": True}).encode())
                if items == "input_items":
                    item = {"id": "msg_in_1", "type": "message", "role": "user", "status": "completed",
                            "content": [{"type": "input_text", "text": "Hello"}]}
                    return self._send(200, json.dumps({"object": "list", "data": [item], "first_id": "msg_in_1",
                                                       "last_id": "msg_in_1", "has_more": False}).encode())
                return self._send(200, fixture("responses/text.json"))

            def do_POST(self):
                length = int(self.headers.get("content-length", "0"))
                raw = self.rfile.read(length)
                body = json.loads(raw) if raw else {}
                fake.requests.append({"path": self.path, "headers": {k.lower(): v for k, v in self.headers.items()}, "body": body, "raw": raw})
                model = body.get("model", "")
                path = self.path.split("?")[0]
                if fake.delay:
                    time.sleep(fake.delay)
                action = fake.fail_next.pop(0) if fake.fail_next else "ok"
                if action != "ok":
                    if action == "cut":
                        self.send_response(200)
                        self.send_header("content-type", "text/event-stream")
                        self.send_header("transfer-encoding", "chunked")
                        self.end_headers()
                        ChunkedWriter(self.wfile).close()
                        return
                    status, headers = action
                    payload = fixture("openai_error_400.json" if status < 500 else "openai_error_500.json")
                    self.send_response(status)
                    self.send_header("content-type", "application/json")
                    self.send_header("content-length", str(len(payload)))
                    for k, v in headers.items():
                        self.send_header(k, v)
                    self.end_headers()
                    self.wfile.write(payload)
                    return
                if model == "fake-error-400":
                    return self._send(400, fixture("openai_error_400.json"))
                if model == "fake-error-500":
                    return self._send(500, fixture("openai_error_500.json"))
                if model == "fake-error-context":
                    return self._send(400, fixture("openai_error_context_length.json"))
                if model == "fake-error-429":
                    self.send_response(429)
                    payload = fixture("openai_error_429.json")
                    self.send_header("content-type", "application/json")
                    self.send_header("content-length", str(len(payload)))
                    self.send_header("retry-after", "2")
                    self.end_headers()
                    self.wfile.write(payload)
                    return
                if model == "fake-hang":
                    fake.release.wait(30)
                    return self._send(200, fixture("openai_chat.json"))
                if path.endswith("/chat/completions") and fake.answer_chunks is not None:
                    return self._scripted(body)
                if path.endswith("/chat/completions"):
                    msgs = body.get("messages") or [{}]
                    wants_tool = bool(body.get("tools")) and msgs[-1].get("role") != "tool"
                    if body.get("stream"):
                        return self._stream(body, "openai_chat_tool_stream.sse" if wants_tool else "openai_chat_stream.sse")
                    payload = fixture("openai_chat_tool_call.json" if wants_tool else "openai_chat.json")
                    if fake.usage_log is not None:
                        doc = json.loads(payload)
                        doc["usage"].update(fake.next_usage())
                        payload = json.dumps(doc).encode()
                    return self._send(200, payload)
                if path.endswith("/responses/input_tokens"):
                    # OpenAI's count: its own number, told apart from an estimate.
                    return self._send(200, b'{"object":"response.input_tokens","input_tokens":777}')
                if path.endswith("/responses"):
                    return self._responses(body)
                if path.endswith("/completions"):
                    if body.get("stream"):
                        return self._completion_stream(body)
                    return self._send(200, fixture("openai_completion.json"))
                if path.endswith("/embeddings"):
                    return self._embeddings(body)
                return self._send(404, b'{"error":{"message":"Unknown URL","type":"invalid_request_error","param":null,"code":"unknown_url"}}')

            def _send(self, status: int, payload: bytes, ctype: str = "application/json"):
                self.send_response(status)
                self.send_header("content-type", ctype)
                self.send_header("content-length", str(len(payload)))
                self.send_header("x-request-id", "req_fake123")
                self.end_headers()
                self.wfile.write(payload)

            def _scripted(self, body):
                chunks = fake.answer_chunks
                if not body.get("stream"):
                    doc = json.loads(fixture("openai_chat.json"))
                    doc["choices"][0]["message"]["content"] = "".join(chunks)
                    return self._send(200, json.dumps(doc).encode())
                recorded = [e for e in fixture("openai_chat_stream.sse").decode().split("\n\n") if e.startswith("data: {")]
                first = json.loads(recorded[0][len("data: "):])

                def event(delta, finish=None):
                    doc = dict(first)
                    doc["choices"] = [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]
                    return "data: " + json.dumps(doc) + "\n\n"

                events = [event({"role": "assistant", "content": "", "refusal": None})]
                events += [event({"content": c}) for c in chunks]
                events.append(event({}, "stop"))
                if (body.get("stream_options") or {}).get("include_usage"):
                    doc = dict(first)
                    doc["choices"] = []
                    doc["usage"] = {"prompt_tokens": 20, "completion_tokens": 2 * len(chunks), "total_tokens": 20 + 2 * len(chunks)}
                    events.append("data: " + json.dumps(doc) + "\n\n")
                events.append("data: [DONE]\n\n")
                self.send_response(200)
                self.send_header("content-type", "text/event-stream; charset=utf-8")
                self.send_header("transfer-encoding", "chunked")
                self.end_headers()
                out = ChunkedWriter(self.wfile)
                for e in events:
                    out.write(e.encode())
                out.close()

            def _responses(self, body):
                # OpenAI's own Responses API, from the recorded transcripts in
                # fixtures/responses: a function call when tools are offered
                # and no tool output is in the input yet, else text; a
                # stream for model `fake-broken-stream` stops after three events.
                items = body.get("input") if isinstance(body.get("input"), list) else []
                answered = any(isinstance(i, dict) and i.get("type") == "function_call_output" for i in items)
                name = "function_call" if body.get("tools") and not answered else "text"
                if not body.get("stream"):
                    return self._send(200, fixture(f"responses/{name}.json"))
                events = [e for e in fixture(f"responses/{name}.sse").decode().split("\n\n") if e.strip()]
                self.send_response(200)
                self.send_header("content-type", "text/event-stream; charset=utf-8")
                self.send_header("transfer-encoding", "chunked")
                self.end_headers()
                out = ChunkedWriter(self.wfile)
                for i, event in enumerate(events):
                    if body.get("model") == "fake-broken-stream" and i == 3:
                        self.wfile.flush()
                        self.connection.shutdown(socket.SHUT_RDWR)
                        self.close_connection = True
                        return
                    out.write((event + "\n\n").encode())
                out.close()

            def _embeddings(self, body):
                doc = json.loads(fixture("openai_embeddings.json"))
                if fake.embed_by_words:
                    import hashlib
                    import math
                    import re

                    text = body["input"] if isinstance(body["input"], str) else body["input"][0]
                    vec = [0.0] * 64
                    for w in re.findall(r"[a-z0-9]+", text.lower()):
                        vec[hashlib.sha256(w.encode()).digest()[0] % 64] += 1.0
                    norm = math.sqrt(sum(x * x for x in vec)) or 1.0
                    doc["data"][0]["embedding"] = [x / norm for x in vec]
                if body.get("encoding_format") == "base64":
                    import base64
                    import struct

                    vec = doc["data"][0]["embedding"]
                    doc["data"][0]["embedding"] = base64.b64encode(struct.pack(f"<{len(vec)}f", *vec)).decode()
                self._send(200, json.dumps(doc).encode())

            def _completion_stream(self, body):
                include_usage = (body.get("stream_options") or {}).get("include_usage", False)
                events = [e for e in fixture("openai_completion_stream.sse").decode().split("\n\n") if e.strip()]
                if not include_usage:
                    events = [e for e in events if '"choices":[]' not in e]
                self.send_response(200)
                self.send_header("content-type", "text/event-stream; charset=utf-8")
                self.send_header("transfer-encoding", "chunked")
                self.end_headers()
                out = ChunkedWriter(self.wfile)
                for event in events:
                    out.write((event + "\n\n").encode())
                out.close()

            def _stream(self, body, name="openai_chat_stream.sse"):
                model = body.get("model")
                include_usage = (body.get("stream_options") or {}).get("include_usage", False)
                events = [e for e in fixture(name).decode().split("\n\n") if e.strip()]
                if not include_usage:
                    events = [e for e in events if '"choices":[]' not in e]
                elif fake.usage_log is not None and model != "fake-broken-stream":
                    for i, e in enumerate(events):
                        if '"choices":[]' in e:
                            doc = json.loads(e[len("data: "):])
                            doc["usage"].update(fake.next_usage())
                            events[i] = "data: " + json.dumps(doc)
                self.send_response(200)
                self.send_header("content-type", "text/event-stream; charset=utf-8")
                self.send_header("transfer-encoding", "chunked")
                self.end_headers()
                out = ChunkedWriter(self.wfile)
                try:
                    for i, event in enumerate(events):
                        if model == "fake-broken-stream" and i == 2:
                            # Drop the connection mid-answer, as a crashed upstream would.
                            self.wfile.flush()
                            self.connection.shutdown(socket.SHUT_RDWR)
                            self.close_connection = True
                            return
                        if i == len(events) - 1:
                            fake.last_event_sent.set()
                        out.write((event + "\n\n").encode())
                        if model == "fake-gated-stream" and i == 0:
                            fake.release.wait(30)
                    out.close()
                except (BrokenPipeError, ConnectionResetError):
                    fake.cancelled.set()

        self.server = _Server(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}/v1"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def next_usage(self) -> dict:
        """Fresh usage numbers for one answer, logged."""
        with self._usage_lock:
            n = len(self.usage_log)
            prompt, completion = 11 + (n * 37) % 401, 3 + (n * 53) % 257
            self.usage_log.append((prompt, completion))
        return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}

    def close(self):
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


class FakeBackend:
    """A plain HTTP service behind a proxy route.

    GET  /echo...       JSON of method, path, query and headers it received
    POST /upload        streams the body, answers its length and sha256
    GET  /download?mb=N streams N MiB of a known pattern
    GET  /hang          never answers (until close)
    HEAD /...           a JSON head (content-length 123) without a body
    """

    def __init__(self):
        self.hang = threading.Event()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True

            def log_message(self, *args):
                pass

            def _read_body(self) -> bytes:
                if self.headers.get("transfer-encoding", "").lower() != "chunked":
                    return self.rfile.read(int(self.headers.get("content-length", "0")))
                out = b""
                while True:
                    size = int(self.rfile.readline().strip().split(b";")[0], 16)
                    if size == 0:
                        self.rfile.readline()
                        return out
                    out += self.rfile.read(size)
                    self.rfile.readline()

            def _json(self, status, doc, extra_headers=()):
                payload = json.dumps(doc).encode()
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(payload)))
                for k, v in extra_headers:
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(payload)

            def do_GET(self):
                if self.path.startswith("/echo") or self.path.startswith("/base/echo"):
                    return self._json(
                        200,
                        {"method": "GET", "path": self.path, "headers": {k.lower(): v for k, v in self.headers.items()}},
                        [("x-backend", "yes"), ("connection", "keep-alive, x-hop"), ("x-hop", "secret")],
                    )
                if self.path.startswith("/download"):
                    mb = int(self.path.split("mb=")[1])
                    self.send_response(200)
                    self.send_header("content-type", "application/octet-stream")
                    self.send_header("transfer-encoding", "chunked")
                    self.end_headers()
                    out = ChunkedWriter(self.wfile)
                    block = bytes(range(256)) * 4096  # 1 MiB
                    for _ in range(mb):
                        out.write(block)
                    out.close()
                    return
                if self.path.startswith("/hang"):
                    fake.hang.wait(30)
                    return self._json(200, {})
                self._json(404, {"error": "not found"})

            def do_HEAD(self):
                # The head a GET of /echo would get, without its body.
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", "123")
                self.end_headers()

            def do_POST(self):
                if self.path.startswith("/echo"):
                    body = self._read_body()
                    return self._json(
                        200,
                        {"method": "POST", "path": self.path, "body": body.decode("utf-8", "replace"),
                         "headers": {k.lower(): v for k, v in self.headers.items()}},
                    )
                h = hashlib.sha256()
                n = 0
                if self.headers.get("transfer-encoding", "").lower() == "chunked":
                    while True:
                        size = int(self.rfile.readline().strip().split(b";")[0], 16)
                        if size == 0:
                            self.rfile.readline()
                            break
                        left = size
                        while left:
                            part = self.rfile.read(min(left, 1 << 16))
                            h.update(part)
                            n += len(part)
                            left -= len(part)
                        self.rfile.readline()
                else:
                    left = int(self.headers.get("content-length", "0"))
                    while left:
                        part = self.rfile.read(min(left, 1 << 16))
                        h.update(part)
                        n += len(part)
                        left -= len(part)
                self._json(201, {"length": n, "sha256": h.hexdigest()})

        self.server = _Server(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.hang.set()
        self.server.shutdown()
        self.server.server_close()


def loom_bin() -> str:
    path = os.environ.get("LOOM_BIN")
    if not path:
        target = os.environ.get("CARGO_TARGET_DIR", str(Path(__file__).resolve().parents[2] / "target"))
        path = str(Path(target) / "debug" / "loom")
    if not Path(path).exists():
        raise RuntimeError(f"loom binary not found at {path}: build it first (cargo build -p loom-gateway)")
    return path


def http_get(url: str, timeout: float = 5) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def wait_until(predicate, timeout: float = 10, what: str = "condition"):
    """Polls a condition (not a fixed sleep) until it holds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if predicate():
                return
        except OSError:
            pass
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


class Loom:
    """The real binary on a temporary configuration.

    The config text may use {port} and {admin_port}; they are filled in with
    free loopback ports.
    """

    def __init__(self, config: str, env: dict | None = None, wait_ready: bool = True):
        self.dir = tempfile.TemporaryDirectory(prefix="loom-e2e-")
        self.port = free_port()
        self.admin_port = free_port()
        self.config_path = Path(self.dir.name) / "loom.yaml"
        self.write_config(config)
        self.log_path = Path(self.dir.name) / "loom.log"
        self._log = open(self.log_path, "wb")
        full_env = dict(os.environ)
        full_env.setdefault("RUST_LOG", "info")
        full_env.update(env or {})
        self.proc = subprocess.Popen(
            [loom_bin(), "serve", "--config", str(self.config_path)],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=full_env,
        )
        self.base = f"http://127.0.0.1:{self.port}"
        self.admin = f"http://127.0.0.1:{self.admin_port}"
        if wait_ready:
            wait_until(self.is_ready, what="loom /ready")

    def write_config(self, text: str):
        text = text.replace("{port}", str(self.port)).replace("{admin_port}", str(self.admin_port))
        tmp = self.config_path.with_suffix(".tmp")
        tmp.write_text(text)
        os.replace(tmp, self.config_path)

    def is_ready(self) -> bool:
        if self.proc.poll() is not None:
            raise AssertionError(f"loom exited with {self.proc.returncode}:\n{self.log()}")
        status, _ = http_get(self.admin + "/ready", timeout=1)
        return status == 200

    def generation(self) -> int:
        _, body = http_get(self.admin + "/ready")
        return json.loads(body).get("config_generation", 0)

    def metrics(self) -> str:
        return http_get(self.admin + "/metrics")[1].decode()

    def log(self) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")

    def signal(self, sig):
        self.proc.send_signal(sig)

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
        code = self.proc.returncode
        self.dir.cleanup()
        return code


def metric_value(text: str, name: str, **labels) -> float:
    """The value of one sample in Prometheus text, 0 when absent."""
    for line in text.splitlines():
        if not line.startswith(name + "{") and not line.startswith(name + " "):
            continue
        if all(f'{k}="{v}"' in line for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


class FakeAnthropic:
    """An Anthropic Messages API upstream serving recorded transcripts.

    The model name selects errors (claude-error-529 / -400 / -429); a request
    that offers tools and does not yet carry a tool result gets the recorded
    tool_use answer; anything else gets the recorded text answer. Streams are
    written a few bytes at a time, so events and multi-byte characters are
    split across reads.
    """

    def __init__(self):
        self.requests: list[dict] = []
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True

            def log_message(self, *args):
                pass

            def do_POST(self):
                length = int(self.headers.get("content-length", "0"))
                body = json.loads(self.rfile.read(length) or b"{}")
                fake.requests.append({"path": self.path, "headers": {k.lower(): v for k, v in self.headers.items()}, "body": body})
                if self.path == "/v1/messages/count_tokens":
                    if body.get("model", "").startswith("claude-error"):
                        return self._send(529, fixture("anthropic_error_overloaded.json"))
                    if not body.get("messages"):
                        return self._send(400, fixture("anthropic_error_400.json"))
                    # Anthropic's own count: a number no estimate would give.
                    return self._send(200, b'{"input_tokens":1234}')
                if self.path != "/v1/messages":
                    return self._send(404, b'{"type":"error","error":{"type":"not_found_error","message":"Not found"}}')
                model = body.get("model", "")
                for code in (529, 400, 429):
                    if model == f"claude-error-{code}":
                        name = "overloaded" if code == 529 else str(code)
                        return self._send(code, fixture(f"anthropic_error_{name}.json"))
                last = body["messages"][-1]
                has_result = isinstance(last["content"], list) and any(
                    b.get("type") == "tool_result" for b in last["content"]
                )
                wants_tool = bool(body.get("tools")) and not has_result
                if (body.get("thinking") or {}).get("type") == "enabled" and not wants_tool:
                    if body.get("stream"):
                        return self._stream(fixture("anthropic_thinking_stream.sse"))
                    return self._send(200, fixture("anthropic_thinking.json"))
                if body.get("stream"):
                    return self._stream(fixture("anthropic_tool_stream.sse" if wants_tool else "anthropic_stream.sse"))
                if "cache_control" in json.dumps(body):
                    # A request with prompt-cache markers: the answer reports
                    # cache writes and reads, as Anthropic does.
                    doc = json.loads(fixture("anthropic_message.json"))
                    doc["usage"] = {"input_tokens": 10, "cache_creation_input_tokens": 1000,
                                    "cache_read_input_tokens": 2000, "output_tokens": 50}
                    return self._send(200, json.dumps(doc).encode())
                return self._send(200, fixture("anthropic_tool_use.json" if wants_tool else "anthropic_message.json"))

            def _send(self, status, payload):
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(payload)))
                self.send_header("request-id", "req_018EeWyXxfu5pfWkrYcMdjWG")
                self.end_headers()
                self.wfile.write(payload)

            def _stream(self, payload: bytes):
                self.send_response(200)
                self.send_header("content-type", "text/event-stream")
                self.send_header("transfer-encoding", "chunked")
                self.end_headers()
                out = ChunkedWriter(self.wfile)
                for i in range(0, len(payload), 7):
                    out.write(payload[i : i + 7])
                out.close()

        self.server = _Server(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


class FakeGemini:
    """A Gemini API / Vertex AI upstream serving recorded transcripts.

    Models gemini-error-429 / -400 answer those errors; a request with tools
    and no function response gets the recorded function call; one asking
    for thoughts (`thinkingConfig.includeThoughts`) gets the recorded
    thinking answers (thought summaries, signatures), one asking for log
    probabilities the recorded `logprobsResult`; streams are written a few
    bytes at a time.
    """

    def __init__(self):
        self.requests: list[dict] = []
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True

            def log_message(self, *args):
                pass

            def do_POST(self):
                length = int(self.headers.get("content-length", "0"))
                body = json.loads(self.rfile.read(length) or b"{}")
                fake.requests.append({"path": self.path, "headers": {k.lower(): v for k, v in self.headers.items()}, "body": body})
                path, _, query = self.path.partition("?")
                model, _, method = path.rsplit("/models/", 1)[-1].partition(":")
                for code in (429, 400):
                    if model == f"gemini-error-{code}":
                        return self._send(code, fixture(f"gemini_error_{code}.json"))
                if method == "batchEmbedContents":
                    return self._send(200, fixture("gemini_embeddings.json"))
                last = body["contents"][-1]["parts"]
                wants_tool = bool(body.get("tools")) and not any("functionResponse" in p for p in last)
                generation = body.get("generationConfig") or {}
                thinking = (generation.get("thinkingConfig") or {}).get("includeThoughts")
                if method == "streamGenerateContent":
                    assert query == "alt=sse", query
                    if thinking and not wants_tool:
                        return self._stream(fixture("gemini_thinking_stream.sse"))
                    return self._stream(fixture("gemini_tool_stream.sse" if wants_tool else "gemini_stream.sse"))
                if generation.get("responseLogprobs"):
                    return self._send(200, fixture("gemini_logprobs.json"))
                if thinking:
                    return self._send(200, fixture("gemini_thinking_function_call.json" if wants_tool else "gemini_thinking.json"))
                return self._send(200, fixture("gemini_function_call.json" if wants_tool else "gemini_generate.json"))

            def _send(self, status, payload):
                self.send_response(status)
                self.send_header("content-type", "application/json; charset=UTF-8")
                self.send_header("content-length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def _stream(self, payload: bytes):
                self.send_response(200)
                self.send_header("content-type", "text/event-stream")
                self.send_header("transfer-encoding", "chunked")
                self.end_headers()
                out = ChunkedWriter(self.wfile)
                for i in range(0, len(payload), 5):
                    out.write(payload[i : i + 5])
                out.close()

        self.server = _Server(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def redis_up(port: int = 6379) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
        return True
    except OSError:
        return False


def drop_prefix(prefix: str, port: int = 6379) -> None:
    """Deletes what a test wrote to the shared Redis."""
    keys = subprocess.run(["redis-cli", "-p", str(port), "--scan", "--pattern", prefix + "*"],
                          capture_output=True, text=True).stdout.split()
    for i in range(0, len(keys), 500):
        subprocess.run(["redis-cli", "-p", str(port), "del", *keys[i:i + 500]], capture_output=True)


class OwnRedis:
    """A redis-server of the test's own, persisting every write, that can be killed and restarted."""

    def __init__(self):
        self.port = free_port()
        self.dir = tempfile.mkdtemp(prefix="loom-redis-")
        self.proc = None
        self.start()

    def start(self):
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--dir", self.dir,
             "--appendonly", "yes", "--appendfsync", "always", "--save", ""],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_until(lambda: redis_up(self.port), what="own redis-server")

    def kill(self):
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def close(self):
        if self.proc and self.proc.poll() is None:
            self.kill()
        shutil.rmtree(self.dir, ignore_errors=True)


class OwnPostgres:
    """A PostgreSQL server of the test's own (initdb + pg_ctl on a temporary
    directory and a free port, trust auth), that can be killed and started
    again with its data."""

    def __init__(self):
        bindir = subprocess.run(["pg_config", "--bindir"], capture_output=True, text=True, check=True).stdout.strip()
        self.initdb, self.pg_ctl = os.path.join(bindir, "initdb"), os.path.join(bindir, "pg_ctl")
        self.port = free_port()
        self.dir = tempfile.mkdtemp(prefix="loom-pg-")
        # PostgreSQL refuses to run as root: as root, run it as `postgres`.
        self.as_pg = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        os.chmod(self.dir, 0o777)
        self.data = os.path.join(self.dir, "data")
        subprocess.run(self.as_pg + [self.initdb, "-D", self.data, "-A", "trust", "-U", "postgres"],
                       check=True, capture_output=True)
        self.url = f"postgres://postgres@127.0.0.1:{self.port}/postgres"
        self.start()

    def start(self):
        subprocess.run(self.as_pg + [self.pg_ctl, "-D", self.data, "-w", "-l", os.path.join(self.dir, "log"),
                                     "-o", f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1", "start"],
                       check=True, capture_output=True)

    def kill(self):
        subprocess.run(self.as_pg + [self.pg_ctl, "-D", self.data, "-m", "immediate", "stop"],
                       check=True, capture_output=True)

    def close(self):
        subprocess.run(self.as_pg + [self.pg_ctl, "-D", self.data, "-m", "immediate", "stop"], capture_output=True)
        shutil.rmtree(self.dir, ignore_errors=True)


def need_postgres():
    """The shared PostgreSQL on 127.0.0.1:5432 (trust auth)."""
    if not shutil.which("psql") or subprocess.run(["pg_isready", "-h", "127.0.0.1", "-p", "5432"],
                                                  capture_output=True).returncode != 0:
        if os.environ.get("CI"):
            raise AssertionError("PostgreSQL must be running on 127.0.0.1:5432 in CI")
        pytest.skip("SKIPPED: PostgreSQL is not reachable on 127.0.0.1:5432")


def psql(sql: str, db: str = "postgres", port: int = 5432) -> str:
    return subprocess.run(["psql", "-h", "127.0.0.1", "-p", str(port), "-U", "postgres", "-d", db, "-tAc", sql],
                          capture_output=True, text=True, check=True).stdout.strip()


def need_redis_server():
    """A test that starts and kills its own redis-server needs it installed."""
    if not shutil.which("redis-server"):
        if os.environ.get("CI"):
            raise AssertionError("redis-server must be installed in CI")
        pytest.skip("SKIPPED: redis-server is not installed")


def need_redis():
    if not redis_up():
        if os.environ.get("CI"):
            raise AssertionError("Redis must be running on 127.0.0.1:6379 in CI")
        pytest.skip("SKIPPED: Redis is not reachable on 127.0.0.1:6379")


class Named:
    """An HTTP service that answers its own name (optionally after a delay,
    or with another status), and `/health` with `health_status`."""

    def __init__(self, name: str, delay: float = 0.0):
        self.name, self.delay = name, delay
        self.status = 200
        self.health_status = 200
        self.health_checks = 0
        self.requests = 0
        me = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True

            def log_message(self, *args):
                pass

            def do_POST(self):
                self.rfile.read(int(self.headers.get("content-length", "0")))
                self.do_GET()

            def do_GET(self):
                if self.path == "/health":
                    me.health_checks += 1
                    self.send_response(me.health_status)
                    self.send_header("content-length", "0")
                    self.end_headers()
                    return
                me.requests += 1
                if me.delay:
                    time.sleep(me.delay)
                body = me.name.encode()
                self.send_response(me.status)
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()
