"""Plain reverse-proxy routes through the real binary."""

import hashlib

import httpx
import pytest

from harness import Loom, free_port, metric_value


def proxy_config(endpoint: str, extra: str = "") -> str:
    return f"""
listeners:
  - name: http
    address: "127.0.0.1:{{port}}"
admin:
  address: "127.0.0.1:{{admin_port}}"
upstreams:
  - name: backend
    endpoints: ["{endpoint}"]
    connect_timeout: 1s
    timeout: 1s
routes:
  - id: api
    path: /*
    upstream: backend
{extra}
"""


@pytest.fixture
def loom_proxy(backend):
    loom = Loom(proxy_config(backend.url))
    yield loom
    loom.stop()


def test_request_and_response_are_preserved_with_forwarded_headers(loom_proxy):
    r = httpx.get(
        loom_proxy.base + "/echo/a%20b?x=1&y=2",
        headers={"x-custom": "kept", "connection": "keep-alive, x-drop-me", "x-drop-me": "gone", "host": "public.example.com"},
    )
    assert r.status_code == 200
    doc = r.json()
    assert doc["path"] == "/echo/a%20b?x=1&y=2"
    h = doc["headers"]
    assert h["x-custom"] == "kept"
    assert "x-drop-me" not in h  # named in Connection: hop-by-hop
    assert h["x-forwarded-for"] == "127.0.0.1"
    assert h["x-forwarded-proto"] == "http"
    assert h["x-forwarded-host"] == "public.example.com"
    assert h["x-request-id"] == r.headers["x-request-id"]
    # Response headers come back, hop-by-hop ones removed.
    assert r.headers["x-backend"] == "yes"
    assert "x-hop" not in r.headers
    m = loom_proxy.metrics()
    assert metric_value(m, "loom_http_requests_total", route="api", method="GET", status="200") == 1


def test_streamed_50mb_upload(loom_proxy):
    block = bytes(range(256)) * 4096  # 1 MiB
    digest = hashlib.sha256()

    def body():
        for _ in range(50):
            digest.update(block)
            yield block

    r = httpx.post(loom_proxy.base + "/upload", content=body(), timeout=60)
    assert r.status_code == 201
    assert r.json() == {"length": 50 << 20, "sha256": digest.hexdigest()}


def test_streamed_50mb_download(loom_proxy):
    block = bytes(range(256)) * 4096
    expected = hashlib.sha256(block * 50).hexdigest()
    h = hashlib.sha256()
    n = 0
    with httpx.stream("GET", loom_proxy.base + "/download?mb=50", timeout=60) as r:
        assert r.status_code == 200
        for part in r.iter_raw():
            h.update(part)
            n += len(part)
    assert n == 50 << 20
    assert h.hexdigest() == expected


def test_refused_upstream_is_502():
    loom = Loom(proxy_config(f"http://127.0.0.1:{free_port()}"))
    try:
        r = httpx.get(loom.base + "/echo")
        assert r.status_code == 502
        assert "refused" in r.json()["error"]["message"]
    finally:
        loom.stop()


def test_slow_upstream_is_504(loom_proxy):
    r = httpx.get(loom_proxy.base + "/hang", timeout=10)
    assert r.status_code == 504


def test_http2_cleartext_client(loom_proxy):
    with httpx.Client(http1=False, http2=True) as c:
        r = c.get(loom_proxy.base + "/echo")
    assert r.status_code == 200
    assert r.http_version == "HTTP/2"


def test_unmatched_path_and_method_on_a_restricted_route(backend):
    loom = Loom(
        f"""
listeners:
  - address: "127.0.0.1:{{port}}"
admin:
  address: "127.0.0.1:{{admin_port}}"
upstreams:
  - name: backend
    endpoints: ["{backend.url}/base"]
routes:
  - id: echo
    path: /echo
    methods: [GET]
    upstream: backend
"""
    )
    try:
        assert httpx.get(loom.base + "/nothing").status_code == 404
        assert httpx.delete(loom.base + "/echo").status_code == 405
        # The endpoint's path is prepended.
        assert httpx.get(loom.base + "/echo").json()["path"] == "/base/echo"
    finally:
        loom.stop()


class RawUpstream:
    """An HTTP/1.1 upstream on raw sockets, for answers a framework would
    not send: a chunked body with trailers, a body that ends with the
    connection, and a connection closed right after its answer without a
    word (an idle timeout that fired)."""

    def __init__(self):
        import socket
        import threading

        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.url = "http://127.0.0.1:%d" % self.sock.getsockname()[1]
        self.connections = 0
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        import threading

        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn):
        buf = b""
        with conn:
            while True:
                while b"\r\n\r\n" not in buf:
                    data = conn.recv(65536)
                    if not data:
                        return
                    buf += data
                head, buf = buf.split(b"\r\n\r\n", 1)
                path = head.split(b" ")[1].decode()
                if path == "/chunked":
                    conn.sendall(
                        b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ntransfer-encoding: chunked\r\n\r\n"
                        b"6\r\nhello \r\n5;ext=1\r\nworld\r\n0\r\nx-checksum: 11\r\n\r\n"
                    )
                elif path == "/until-close":
                    conn.sendall(b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\n\r\nread to the end")
                    return
                elif path == "/then-close":
                    conn.sendall(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                    return
                else:
                    conn.sendall(b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n")

    def close(self):
        self.sock.close()


def test_upstream_framings_and_closed_keepalive_connections():
    up = RawUpstream()
    loom = Loom(proxy_config(up.url))
    try:
        with httpx.Client(base_url=loom.base) as client:
            for _ in range(3):
                r = client.get("/chunked")
                assert r.status_code == 200
                assert r.text == "hello world"
            for _ in range(3):
                r = client.get("/until-close")
                assert r.status_code == 200
                assert r.text == "read to the end"
            # The upstream closes each connection after its answer, without
            # saying so: every GET still gets its answer.
            for _ in range(5):
                r = client.get("/then-close")
                assert r.status_code == 200
                assert r.text == "ok"
        # The chunked answers shared one connection, which the first
        # until-close answer then ended; every later answer ended its own.
        assert up.connections == 1 + 2 + 5
    finally:
        loom.stop()
        up.close()
