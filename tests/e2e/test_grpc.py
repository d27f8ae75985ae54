"""gRPC through a proxy route of the real binary (HTTP/2 both ways, the
upstream spoken to with prior knowledge): unary and bidirectional
streaming calls, status codes carried in trailers, and gateway errors
answered as gRPC statuses."""

from concurrent import futures

import grpc
import pytest

from conftest import LISTEN
from harness import closed_port, Loom


@pytest.fixture
def echo():
    def unary(request, context):
        if request == b"missing":
            context.abort(grpc.StatusCode.NOT_FOUND, "no such thing")
        return b"echo:" + request

    def chat(requests, context):
        for r in requests:
            yield r.upper()

    handler = grpc.method_handlers_generic_handler("test.Echo", {
        "Unary": grpc.unary_unary_rpc_method_handler(unary),
        "Chat": grpc.stream_stream_rpc_method_handler(chat),
    })
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
    server.add_generic_rpc_handlers((handler,))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield f"http://127.0.0.1:{port}"
    server.stop(None)


def start(url: str) -> Loom:
    return Loom(LISTEN + f"""upstreams:
  - name: grpc
    protocol: h2
    timeout: 5s
    endpoints: ["{url}"]
routes:
  - id: grpc
    path: /*
    upstream: grpc
""")


def test_unary_and_streaming_calls_go_through(echo):
    loom = start(echo)
    try:
        with grpc.insecure_channel(f"127.0.0.1:{loom.port}") as ch:
            unary = ch.unary_unary("/test.Echo/Unary")
            assert unary(b"hello", timeout=5) == b"echo:hello"
            chat = ch.stream_stream("/test.Echo/Chat")
            replies = list(chat(iter([b"a", b"bc", b"def"] * 100), timeout=10))
            assert replies == [b"A", b"BC", b"DEF"] * 100
            # A status in the trailers reaches the client unchanged.
            with pytest.raises(grpc.RpcError) as e:
                unary(b"missing", timeout=5)
            assert e.value.code() == grpc.StatusCode.NOT_FOUND
            assert e.value.details() == "no such thing"
    finally:
        loom.stop()


def test_gateway_errors_are_grpc_statuses():
    closed = closed_port()
    loom = start(f"http://127.0.0.1:{closed}")
    try:
        with grpc.insecure_channel(f"127.0.0.1:{loom.port}") as ch:
            with pytest.raises(grpc.RpcError) as e:
                ch.unary_unary("/test.Echo/Unary")(b"x", timeout=5)
            assert e.value.code() == grpc.StatusCode.UNAVAILABLE
            assert "refused" in e.value.details()
    finally:
        loom.stop()


def frames(body: bytes) -> list[tuple[int, bytes]]:
    """The (flag, payload) frames of a gRPC(-Web) body."""
    out, i = [], 0
    while i < len(body):
        flag, n = body[i], int.from_bytes(body[i + 1:i + 5], "big")
        out.append((flag, body[i + 5:i + 5 + n]))
        i += 5 + n
    return out


def message(payload: bytes) -> bytes:
    return b"\x00" + len(payload).to_bytes(4, "big") + payload


def test_grpc_web_binary_and_text_from_a_browser(echo):
    import base64

    import httpx

    loom = start(echo)
    try:
        # Binary, over HTTP/1.1 as a browser sends it.
        r = httpx.post(f"{loom.base}/test.Echo/Unary", content=message(b"hello"),
                       headers={"content-type": "application/grpc-web+proto", "x-grpc-web": "1"})
        assert r.status_code == 200 and r.headers["content-type"] == "application/grpc-web+proto"
        got = frames(r.content)
        assert got[0] == (0, b"echo:hello")
        assert got[-1][0] == 0x80 and b"grpc-status:0" in got[-1][1]
        # Text: base64 both ways.
        r = httpx.post(f"{loom.base}/test.Echo/Unary", content=base64.b64encode(message(b"text")),
                       headers={"content-type": "application/grpc-web-text", "x-grpc-web": "1"})
        assert r.headers["content-type"] == "application/grpc-web-text+proto"
        raw = b"".join(base64.b64decode(chunk + b"=" * (-len(chunk) % 4))
                       for chunk in r.content.split(b"=") if chunk)
        got = frames(raw)
        assert got[0] == (0, b"echo:text") and got[-1][0] == 0x80
        # An error status arrives in the trailer frame.
        r = httpx.post(f"{loom.base}/test.Echo/Unary", content=message(b"missing"),
                       headers={"content-type": "application/grpc-web+proto"})
        trailer = frames(r.content)[-1]
        assert trailer[0] == 0x80 and b"grpc-status:5" in trailer[1] and b"no such thing" in trailer[1]
    finally:
        loom.stop()
