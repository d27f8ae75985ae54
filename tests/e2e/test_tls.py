"""HTTPS listeners through the real binary: certificates chosen by SNI
(wildcards included, a default for other names), ALPN for HTTP/2 and
HTTP/1.1, the OpenAI SDK over TLS, X-Forwarded-Proto on proxy routes, and
certificates reloaded with the configuration (a bad file keeps the old)."""

import json
import signal
import socket
import ssl
import subprocess
from pathlib import Path

import httpx
import openai
import pytest

from harness import Loom, metric_value, wait_until


def make_cert(dir: Path, name: str, *sans: str, ca: bool = True) -> tuple[Path, Path]:
    """A self-signed EC certificate for `sans` (DNS names, or IP addresses
    written `IP:...`), and its key. With `ca` it may also act as its own
    trust anchor for curl and OpenSSL; webpki (rustls) refuses such a
    certificate as an end entity, so servers Loom connects to use `ca=False`."""
    cert, key = dir / f"{name}.pem", dir / f"{name}.key"
    alt = ",".join(s if s.startswith("IP:") else f"DNS:{s}" for s in sans)
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
         "-nodes", "-keyout", str(key), "-out", str(cert), "-days", "2", "-subj", f"/CN={sans[0]}",
         "-addext", f"subjectAltName={alt}",
         "-addext", "basicConstraints=critical,CA:TRUE" if ca else "basicConstraints=critical,CA:FALSE"],
        check=True, capture_output=True,
    )
    return cert, key


def der(cert: Path) -> bytes:
    return ssl.PEM_cert_to_DER_cert(cert.read_text())


def presented(port: int, name: str) -> tuple[bytes, str | None]:
    """The certificate the listener presents for SNI `name`, and the ALPN protocol."""
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.set_alpn_protocols(["h2", "http/1.1"])
    with socket.create_connection(("127.0.0.1", port)) as raw:
        with ctx.wrap_socket(raw, server_hostname=name) as tls:
            return tls.getpeercert(binary_form=True), tls.selected_alpn_protocol()


def curl(port: int, name: str, ca: Path, path: str, *extra: str) -> tuple[str, str]:
    """(HTTP version, body) of a GET through curl with SNI `name`, verified against `ca`."""
    out = subprocess.run(
        ["curl", "-sS", "--resolve", f"{name}:{port}:127.0.0.1", "--cacert", str(ca),
         "-w", "\n%{http_version}", *extra, f"https://{name}:{port}{path}"],
        capture_output=True, text=True, check=True,
    ).stdout
    body, version = out.rsplit("\n", 1)
    return version, body


def config(dir: Path, backend_url: str, upstream: str) -> str:
    return f"""
listeners:
  - name: tls
    address: "127.0.0.1:{{port}}"
    protocol: https
    tls:
      cert_file: {dir}/a.pem
      key_file: {dir}/a.key
      sni:
        - {{cert_file: {dir}/b.pem, key_file: {dir}/b.key}}
admin:
  address: "127.0.0.1:{{admin_port}}"
upstreams:
  - name: backend
    endpoints: ["{backend_url}"]
routes:
  - id: ai
    path: /v1/*
    ai_gateway: true
  - id: plain
    path: /echo*
    upstream: backend
ai_gateway:
  enabled: true
  providers:
    - name: upstream
      type: openai
      api_key: sk-upstream-secret-123
      base_url: {upstream}
      models: [gpt-4o]
"""


@pytest.fixture
def certs(tmp_path):
    make_cert(tmp_path, "a", "a.test", "IP:127.0.0.1")
    make_cert(tmp_path, "b", "*.b.test", "b.test")
    return tmp_path


def test_certificates_are_chosen_by_sni_and_alpn_offers_h2(certs, backend, fake_openai):
    loom = Loom(config(certs, f"http://127.0.0.1:{backend.port}", fake_openai.url))
    try:
        assert presented(loom.port, "a.test") == (der(certs / "a.pem"), "h2")
        assert presented(loom.port, "api.b.test")[0] == der(certs / "b.pem")
        assert presented(loom.port, "b.test")[0] == der(certs / "b.pem")
        # A name no certificate covers gets the default one.
        assert presented(loom.port, "other.test")[0] == der(certs / "a.pem")
        # curl verifies the chain and the name, over HTTP/2 and HTTP/1.1.
        version, body = curl(loom.port, "api.b.test", certs / "b.pem", "/v1/models")
        assert version == "2" and json.loads(body)["data"][0]["id"] == "gpt-4o"
        version, _ = curl(loom.port, "a.test", certs / "a.pem", "/v1/models", "--http1.1")
        assert version == "1.1"
        # Proxy routes tell the upstream the client came over TLS.
        _, body = curl(loom.port, "a.test", certs / "a.pem", "/echo")
        headers = json.loads(body)["headers"]
        assert headers["x-forwarded-proto"] == "https" and headers["x-forwarded-host"].startswith("a.test")
        # The OpenAI SDK, unchanged but for its base URL and trust (no SNI
        # for an address: the default certificate, which covers it).
        sdk = openai.OpenAI(base_url=f"https://127.0.0.1:{loom.port}/v1", api_key="x", max_retries=0,
                            http_client=httpx.Client(verify=ssl.create_default_context(cafile=str(certs / "a.pem"))))
        answer = sdk.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "hi"}])
        assert answer.choices[0].message.content
    finally:
        loom.stop()


def test_tls_connections_count_while_they_are_open(certs, backend, fake_openai):
    """TLS clients hold a place under `max_connections` and show in the
    connection gauges for as long as they stay connected."""
    loom = Loom(config(certs, f"http://127.0.0.1:{backend.port}", fake_openai.url))
    held = []
    try:
        ctx = ssl.create_default_context(cafile=str(certs / "a.pem"))
        for _ in range(2):
            tls = ctx.wrap_socket(socket.create_connection(("127.0.0.1", loom.port)), server_hostname="a.test")
            tls.sendall(b"GET /v1/models HTTP/1.1\r\nHost: a.test\r\n\r\n")
            assert tls.recv(4096).startswith(b"HTTP/1.1 200")
            held.append(tls)
        text = loom.metrics()
        assert metric_value(text, "loom_http_active_connections") == 2
        assert sum(metric_value(text, "loom_worker_connections", worker=str(w)) for w in range(64)) == 2
        for tls in held:
            tls.close()
        wait_until(lambda: metric_value(loom.metrics(), "loom_http_active_connections") == 0,
                   what="closed TLS connections leave the gauge")
    finally:
        for tls in held:
            tls.close()
        loom.stop()


def test_plain_http_to_a_tls_listener_gets_no_answer(certs, backend, fake_openai):
    loom = Loom(config(certs, f"http://127.0.0.1:{backend.port}", fake_openai.url))
    try:
        with pytest.raises(httpx.HTTPError):
            httpx.get(f"http://127.0.0.1:{loom.port}/v1/models", timeout=5)
        # The listener still serves TLS clients afterwards.
        assert curl(loom.port, "a.test", certs / "a.pem", "/v1/models")[0] == "2"
    finally:
        loom.stop()


def test_certificates_reload_with_the_configuration(certs, backend, fake_openai):
    loom = Loom(config(certs, f"http://127.0.0.1:{backend.port}", fake_openai.url))
    try:
        old = der(certs / "a.pem")
        assert presented(loom.port, "a.test")[0] == old
        # A renewed certificate in place of the old one, then SIGHUP.
        make_cert(certs, "a", "a.test", "IP:127.0.0.1")
        assert der(certs / "a.pem") != old
        before = loom.generation()
        loom.signal(signal.SIGHUP)
        wait_until(lambda: loom.generation() > before, what="reload")
        assert presented(loom.port, "a.test")[0] == der(certs / "a.pem")
        # A broken file: the reload is refused and the current certificate stays.
        current = der(certs / "a.pem")
        (certs / "b.key").write_text("not a key")
        before = loom.generation()
        loom.signal(signal.SIGHUP)
        wait_until(lambda: metric_value(loom.metrics(), "loom_config_reloads_total", result="failure") >= 1,
                   what="the refused reload")
        assert loom.generation() == before
        assert presented(loom.port, "a.test")[0] == current
        assert "b.key" in loom.log()
    finally:
        loom.stop()


def test_an_https_listener_without_certificates_is_refused(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text('listeners: [{address: "127.0.0.1:0", protocol: https}]\n')
    from harness import loom_bin

    out = subprocess.run([loom_bin(), "validate", str(cfg)], capture_output=True, text=True)
    assert out.returncode != 0 and "listeners[0].tls" in out.stdout


def tls_service(cert: Path, key: Path, client_ca: Path | None = None):
    """An HTTPS service answering `secure`; with `client_ca`, it requires a
    client certificate signed by it."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args):
            pass

        def do_GET(self):
            body = b"secure"
            self.send_response(200)
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    if client_ca:
        ctx.verify_mode = ssl.CERT_REQUIRED
        ctx.load_verify_locations(client_ca)
    server.socket = ctx.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def upstream_config(url: str, tls: str) -> str:
    return f"""
listeners:
  - address: "127.0.0.1:{{port}}"
admin:
  address: "127.0.0.1:{{admin_port}}"
upstreams:
  - name: secure
    endpoints: ["{url}"]
{tls}
routes:
  - id: plain
    path: /*
    upstream: secure
"""


def test_tls_to_upstreams_verifies_and_presents_client_certificates(tmp_path):
    make_cert(tmp_path, "srv", "localhost", "IP:127.0.0.1", ca=False)
    make_cert(tmp_path, "cli", "loom-client")
    server = tls_service(tmp_path / "srv.pem", tmp_path / "srv.key", client_ca=tmp_path / "cli.pem")
    url = f"https://127.0.0.1:{server.server_address[1]}"
    try:
        good = (f"    tls: {{ca_file: {tmp_path}/srv.pem, client_cert_file: {tmp_path}/cli.pem, "
                f"client_key_file: {tmp_path}/cli.key}}")
        loom = Loom(upstream_config(url, good))
        try:
            r = httpx.get(loom.base + "/x")
            assert r.status_code == 200 and r.text == "secure"
        finally:
            loom.stop()
        # Without the client certificate the upstream refuses: 502.
        loom = Loom(upstream_config(url, f"    tls: {{ca_file: {tmp_path}/srv.pem}}"))
        try:
            assert httpx.get(loom.base + "/x").status_code == 502
        finally:
            loom.stop()
        # The system's roots do not trust a self-signed certificate: 502.
        loom = Loom(upstream_config(url, ""))
        try:
            assert httpx.get(loom.base + "/x").status_code == 502
        finally:
            loom.stop()
    finally:
        server.shutdown()
