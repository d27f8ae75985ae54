"""Loom's own HTTP/1.1 server connection, spoken to over raw sockets through
the real binary: keep-alive and pipelining, HTTP/1.0 clients, Expect:
100-continue, HEAD, answers of unknown length (chunked, or close-delimited
for HTTP/1.0), malformed heads, and the requests it hands to hyper (a
chunked request body) on a connection that then goes on serving."""

import hashlib
import socket

import pytest

from harness import Loom


def config(url: str) -> str:
    return f"""
listeners:
  - address: "127.0.0.1:{{port}}"
admin:
  address: "127.0.0.1:{{admin_port}}"
upstreams:
  - {{name: svc, endpoints: ["{url}"]}}
routes:
  - {{id: app, path: /*, upstream: svc}}
"""


@pytest.fixture
def loom(backend):
    loom = Loom(config(backend.url))
    yield loom
    loom.stop()


class Reader:
    """Reads HTTP/1.1 answers off a socket, one after another."""

    def __init__(self, sock: socket.socket):
        self.sock = sock
        self.buf = b""

    def _more(self) -> bool:
        data = self.sock.recv(65536)
        self.buf += data
        return bool(data)

    def line(self) -> bytes:
        while b"\r\n" not in self.buf:
            assert self._more(), "connection closed in the middle of a line"
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def exactly(self, n: int) -> bytes:
        while len(self.buf) < n:
            assert self._more(), "connection closed in the middle of a body"
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def head(self) -> tuple[int, dict]:
        status = int(self.line().split(b" ")[1])
        headers = {}
        while line := self.line():
            k, v = line.split(b":", 1)
            headers[k.decode().lower()] = v.strip().decode()
        return status, headers

    def answer(self, head_request: bool = False) -> tuple[int, dict, bytes]:
        status, headers = self.head()
        if head_request or status in (204, 304):
            return status, headers, b""
        if "content-length" in headers:
            return status, headers, self.exactly(int(headers["content-length"]))
        if headers.get("transfer-encoding") == "chunked":
            body = b""
            while (size := int(self.line().split(b";")[0], 16)) != 0:
                body += self.exactly(size)
                assert self.exactly(2) == b"\r\n"
            while self.line():
                pass
            return status, headers, body
        while self._more():  # close-delimited
            pass
        body, self.buf = self.buf, b""
        return status, headers, body

    def closed(self) -> bool:
        return not self.buf and not self._more()


def connect(loom) -> tuple[socket.socket, Reader]:
    s = socket.create_connection(("127.0.0.1", loom.port), timeout=10)
    return s, Reader(s)


def test_pipelined_requests_are_answered_in_order_on_one_connection(loom):
    s, r = connect(loom)
    s.sendall(b"".join(f"GET /echo/{i} HTTP/1.1\r\nHost: x\r\n\r\n".encode() for i in range(3)))
    for i in range(3):
        status, headers, body = r.answer()
        assert status == 200
        assert f'"/echo/{i}"' in body.decode()
        assert headers["date"].endswith("GMT")
    s.close()


def test_http10_clients_get_close_or_keep_alive_as_asked(loom):
    s, r = connect(loom)
    s.sendall(b"GET /echo/a HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
    status, headers, body = r.answer()
    assert status == 200 and headers["connection"] == "keep-alive"
    s.sendall(b"GET /echo/b HTTP/1.0\r\n\r\n")
    status, headers, body = r.answer()
    assert status == 200 and b"/echo/b" in body
    assert r.closed(), "an HTTP/1.0 request without keep-alive ends the connection"


def test_answers_of_unknown_length_are_chunked_or_close_delimited(loom):
    expected = hashlib.sha256(bytes(range(256)) * 4096 * 2).hexdigest()
    s, r = connect(loom)
    s.sendall(b"GET /download?mb=2 HTTP/1.1\r\nHost: x\r\n\r\n")
    status, headers, body = r.answer()
    assert headers["transfer-encoding"] == "chunked"
    assert hashlib.sha256(body).hexdigest() == expected
    # The connection carries on after a chunked answer.
    s.sendall(b"GET /echo/next HTTP/1.1\r\nHost: x\r\n\r\n")
    assert r.answer()[0] == 200
    s.close()

    s, r = connect(loom)
    s.sendall(b"GET /download?mb=2 HTTP/1.0\r\n\r\n")
    status, headers, body = r.answer()
    assert "transfer-encoding" not in headers and "content-length" not in headers
    assert hashlib.sha256(body).hexdigest() == expected
    s.close()


def test_expect_100_continue_and_head(loom):
    s, r = connect(loom)
    s.sendall(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n")
    assert r.head() == (100, {})
    s.sendall(b"hello")
    status, headers, body = r.answer()
    assert status == 200 and '"body": "hello"' in body.decode()
    s.sendall(b"HEAD /echo/h HTTP/1.1\r\nHost: x\r\n\r\n")
    status, headers, body = r.answer(head_request=True)
    assert status == 200 and headers["content-length"] == "123"
    # Nothing of a body follows a HEAD answer: the next answer is whole.
    s.sendall(b"GET /echo/after-head HTTP/1.1\r\nHost: x\r\n\r\n")
    status, _, body = r.answer()
    assert status == 200 and b"/echo/after-head" in body
    s.close()


def test_a_chunked_request_body_is_served_and_the_connection_goes_on(loom):
    s, r = connect(loom)
    s.sendall(
        b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"
    )
    status, _, body = r.answer()
    assert status == 200 and '"body": "hello world"' in body.decode()
    s.sendall(b"GET /echo/again HTTP/1.1\r\nHost: x\r\n\r\n")
    status, _, body = r.answer()
    assert status == 200 and b"/echo/again" in body
    s.close()


@pytest.mark.parametrize(
    "head",
    [
        b"GARBAGE\r\n\r\n",
        b"GET /x HTTP/1.1\r\nBad Header\r\n\r\n",
        b"POST /echo HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd",
        b"POST /echo HTTP/1.1\r\nContent-Length: -1\r\n\r\n",
    ],
)
def test_malformed_heads_get_400_and_the_connection_closes(loom, head):
    s, r = connect(loom)
    s.sendall(head)
    status, headers, _ = r.answer()
    assert status == 400 and headers["connection"] == "close"
    assert r.closed()
