"""WebSocket through a proxy route of the real binary: the upgrade is
forwarded, 10,000 messages go back and forth, ping/pong and close frames
pass, and an idle tunnel is closed by the upstream's idle timeout."""

import threading

import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect
from websockets.sync.server import serve

from conftest import LISTEN
from harness import Loom


@pytest.fixture
def echo():
    def handler(ws):
        try:
            for message in ws:
                ws.send(message)
        except ConnectionClosed:
            pass

    server = serve(handler, "127.0.0.1", 0)
    port = server.socket.getsockname()[1]
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{port}"
    server.shutdown()


def start(echo_url: str, idle: str = "5m") -> Loom:
    return Loom(LISTEN + f"""upstreams:
  - name: ws
    endpoints: ["{echo_url}"]
    tunnel_idle_timeout: {idle}
routes:
  - id: ws
    path: /*
    upstream: ws
""")


def test_ten_thousand_messages_round_trip(echo):
    loom = start(echo)
    try:
        with connect(f"ws://127.0.0.1:{loom.port}/chat") as ws:
            for i in range(10_000):
                ws.send(f"message {i}")
                assert ws.recv() == f"message {i}"
            big = b"\x00\xff" * 50_000
            ws.send(big)
            assert ws.recv() == big
            # Ping and pong cross the tunnel (answered by the echo server).
            assert ws.ping().wait(5)
            ws.close()
            assert ws.close_code == 1000
    finally:
        loom.stop()


def test_an_idle_tunnel_is_closed(echo):
    loom = start(echo, idle="300ms")
    try:
        with connect(f"ws://127.0.0.1:{loom.port}/") as ws:
            ws.send("hi")
            assert ws.recv() == "hi"
            with pytest.raises(ConnectionClosed):
                ws.recv(timeout=10)
    finally:
        loom.stop()
