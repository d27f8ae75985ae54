"""Admin authentication through the real binary: bearer tokens with scopes,
plain (from the environment) or hashed in the file; 401 and 403 in one JSON
shape and counted; probes left open by setting; tokens never in the log or
the configuration the API shows; a non-loopback admin address without
tokens refused at start; no tokens on loopback keeps the API open (the
seed pages' `curl http://localhost:9091/ai/usage/...`)."""

import json
import subprocess
import urllib.request

import pytest

from harness import Loom, loom_bin, metric_value

OPS = "ops-token-7d1c2b9a0e"
READER = "grafana-token-4f8e1a"
KEYS = "keys-token-93c0d7b2a1"

CONFIG = """
listeners:
  - address: "127.0.0.1:{{port}}"
admin:
  address: "127.0.0.1:{{admin_port}}"
  open: [ready, metrics]
  tokens:
    - name: ops
      token: ${{LOOM_OPS_TOKEN}}
      scopes: [admin]
    - name: grafana
      token: "{reader_hash}"
      scopes: [read]
    - name: key-manager
      token: {keys}
      scopes: [keys]
routes:
  - id: ai
    path: /v1/*
    ai_gateway: true
ai_gateway:
  enabled: true
  providers:
    - name: mock
      type: mock
      models: [gpt-4o]
"""


def hashed(token: str) -> str:
    return subprocess.run([loom_bin(), "hash-key"], input=token, capture_output=True, text=True,
                          check=True).stdout.strip()


def call(loom, path: str, token: str | None = None, method: str = "GET"):
    req = urllib.request.Request(loom.admin + path, method=method)
    if token is not None:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            return r.status, {k.lower(): v for k, v in r.headers.items()}, r.read()
    except urllib.error.HTTPError as e:
        return e.code, {k.lower(): v for k, v in e.headers.items()}, e.read()


@pytest.fixture(scope="module")
def loom():
    l = Loom(CONFIG.format(reader_hash=hashed(READER), keys=KEYS), env={"LOOM_OPS_TOKEN": OPS})
    yield l
    l.stop()


def test_no_token_or_a_wrong_one_is_401_in_one_shape(loom):
    for token, code in [(None, "missing_token"), ("", "missing_token"), ("nope-not-a-token", "invalid_token"),
                        (OPS + "x", "invalid_token")]:
        status, headers, body = call(loom, "/ai/usage", token)
        assert status == 401, (token, status)
        err = json.loads(body)["error"]
        assert err["type"] == "authentication_error" and err["code"] == code
        assert headers["www-authenticate"].startswith("Bearer")


def test_each_scope_reaches_what_it_names(loom):
    for token in (OPS, READER, KEYS):
        for path in ("/ai/usage", "/ai/providers", "/config", "/health"):
            assert call(loom, path, token)[0] == 200, (token, path)
    # Key management needs `keys` (or `admin`); the audit log needs `admin`.
    status, _, body = call(loom, "/ai/keys", READER)
    assert status == 403
    err = json.loads(body)["error"]
    assert err["type"] == "permission_error" and err["code"] == "insufficient_scope" and "keys" in err["message"]
    assert call(loom, "/ai/keys", KEYS)[0] != 403
    assert call(loom, "/ai/keys", OPS)[0] != 403
    assert call(loom, "/ai/audit", KEYS)[0] == 403
    assert call(loom, "/ai/audit", OPS)[0] != 403


def test_probes_are_open_only_as_configured(loom):
    assert call(loom, "/metrics")[0] == 200
    assert call(loom, "/ready")[0] == 200
    assert call(loom, "/health")[0] == 401


def test_refusals_are_counted_and_tokens_never_shown(loom):
    before = {r: metric_value(loom.metrics(), "loom_admin_auth_failures_total", reason=r) or 0
              for r in ("missing", "invalid", "scope")}
    call(loom, "/config")
    call(loom, "/config", "wrong-token-value")
    call(loom, "/ai/audit", READER)
    after = {r: metric_value(loom.metrics(), "loom_admin_auth_failures_total", reason=r) for r in before}
    assert {r: after[r] - before[r] for r in before} == {"missing": 1, "invalid": 1, "scope": 1}
    config = call(loom, "/config", OPS)[2].decode()
    log = loom.log()
    for secret in (OPS, READER, KEYS, "wrong-token-value"):
        assert secret not in config and secret not in log, secret


def test_a_non_loopback_admin_address_needs_tokens(tmp_path):
    path = tmp_path / "loom.yaml"
    path.write_text("""
listeners:
  - address: "127.0.0.1:0"
admin:
  address: "0.0.0.0:9091"
routes:
  - id: ai
    path: /v1/*
    ai_gateway: true
ai_gateway:
  enabled: true
  providers:
    - {name: mock, type: mock, models: [gpt-4o]}
""")
    for args in (["validate", str(path)], ["serve", "--config", str(path)]):
        out = subprocess.run([loom_bin(), *args], capture_output=True, text=True, timeout=30)
        assert out.returncode != 0
        assert "admin.tokens" in out.stderr + out.stdout and "0.0.0.0:9091" in out.stderr + out.stdout


def test_bad_tokens_are_config_errors_naming_the_field(tmp_path):
    path = tmp_path / "loom.yaml"
    path.write_text("""
listeners:
  - address: "127.0.0.1:0"
admin:
  tokens:
    - {name: short, token: abc, scopes: [read]}
    - {name: bad-hash, token: "sha256:zz", scopes: []}
routes:
  - id: ai
    path: /v1/*
    ai_gateway: true
""")
    out = subprocess.run([loom_bin(), "validate", str(path)], capture_output=True, text=True, timeout=30)
    text = out.stderr + out.stdout
    assert out.returncode != 0
    for field in ("admin.tokens[0].token", "admin.tokens[1].token", "admin.tokens[1].scopes"):
        assert field in text, text
