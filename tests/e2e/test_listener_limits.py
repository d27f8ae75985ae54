"""Listener limits through the real binary: an oversized request head is
refused with 431, and past `max_connections` a new client waits until a
connection ends."""

import socket

import httpx

from harness import Loom, Named, metric_value, wait_until


def config(url: str, server: str) -> str:
    return f"""
listeners:
  - address: "127.0.0.1:{{port}}"
admin:
  address: "127.0.0.1:{{admin_port}}"
server:
{server}
upstreams:
  - {{name: svc, endpoints: ["{url}"]}}
routes:
  - {{id: app, path: /*, upstream: svc}}
"""


def get(sock: socket.socket) -> bytes:
    sock.sendall(b"GET /who HTTP/1.1\r\nHost: x\r\n\r\n")
    data = b""
    while b"\r\n\r\n" not in data or not data.endswith(b"svc"):
        chunk = sock.recv(4096)
        if not chunk:
            break
        data += chunk
    return data


def test_an_oversized_request_head_gets_431():
    svc = Named("svc")
    loom = Loom(config(svc.url, "  max_header_size: 16KB"))
    try:
        assert httpx.get(loom.base + "/who", headers={"X-Small": "a" * 1000}).text == "svc"
        r = httpx.get(loom.base + "/who", headers={"X-Big": "a" * 40_000})
        assert r.status_code == 431
        assert svc.requests == 1
    finally:
        loom.stop()
        svc.close()


def test_clients_past_max_connections_wait_for_a_free_slot():
    svc = Named("svc")
    loom = Loom(config(svc.url, "  max_connections: 2\n  workers: 1"))
    try:
        a = socket.create_connection(("127.0.0.1", loom.port))
        b = socket.create_connection(("127.0.0.1", loom.port))
        assert get(a).endswith(b"svc") and get(b).endswith(b"svc")
        assert metric_value(loom.metrics(), "loom_http_active_connections") == 2
        c = socket.create_connection(("127.0.0.1", loom.port))
        c.sendall(b"GET /who HTTP/1.1\r\nHost: x\r\n\r\n")
        c.settimeout(1.0)
        try:
            early = c.recv(4096)
        except socket.timeout:
            early = b""
        assert early == b"", "the third client is not served while two are connected"
        a.close()
        c.settimeout(10)
        data = b""
        while not data.endswith(b"svc"):
            chunk = c.recv(4096)
            assert chunk, "connection closed"
            data += chunk
        assert data.startswith(b"HTTP/1.1 200")
        b.close()
        c.close()
    finally:
        loom.stop()
        svc.close()


def test_an_idle_keep_alive_connection_is_closed_after_the_header_timeout():
    svc = Named("svc")
    loom = Loom(config(svc.url, "  header_read_timeout: 1s"))
    try:
        s = socket.create_connection(("127.0.0.1", loom.port))
        assert get(s).endswith(b"svc")
        s.settimeout(10)
        # No new request: the server closes the connection (recv sees EOF).
        assert s.recv(4096) == b""
        s.close()
    finally:
        loom.stop()
        svc.close()


def test_connections_are_spread_evenly_over_the_workers():
    """Every worker accepts on the same socket and the first one the kernel
    wakes takes the connection; Loom then hands it to the worker serving the
    fewest, so nine clients on three workers are served three by three."""
    svc = Named("svc")
    loom = Loom(config(svc.url, "  workers: 3"))
    clients = []
    try:
        for _ in range(9):
            s = socket.create_connection(("127.0.0.1", loom.port))
            assert get(s).endswith(b"svc"), "a handed-over connection is served"
            clients.append(s)
        text = loom.metrics()
        per_worker = [metric_value(text, "loom_worker_connections", worker=str(w)) for w in range(3)]
        assert per_worker == [3, 3, 3]
        assert metric_value(text, "loom_http_active_connections") == 9
        # Keep-alive requests stay on the worker that serves the connection.
        for s in clients:
            assert get(s).endswith(b"svc")
        assert svc.requests == 18
        for s in clients[:6]:
            s.close()
        wait_until(
            lambda: sum(
                metric_value(loom.metrics(), "loom_worker_connections", worker=str(w)) for w in range(3)
            )
            == 3,
            what="closed connections leave their workers' counts",
        )
        s = socket.create_connection(("127.0.0.1", loom.port))
        assert get(s).endswith(b"svc")
        clients.append(s)
    finally:
        for s in clients:
            s.close()
        loom.stop()
        svc.close()
