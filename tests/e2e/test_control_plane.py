"""Run-time keys through the real binary against the real PostgreSQL: created,
listed, changed, rotated and revoked over the authenticated admin API, used
with the official OpenAI SDK, followed by a second replica through
LISTEN/NOTIFY, audited; bad input refused by field with nothing written;
and PostgreSQL away (killed while serving, or down at start): keys keep
working, admin writes answer 503, and it catches up when the database
returns."""

import json
import subprocess
import time
import urllib.request
import uuid

import openai
import pytest

from harness import Loom, OwnPostgres, loom_bin, need_postgres, psql, wait_until

ADMIN = "keys-admin-token-5f2c9e1a"
YAML_KEY = "sk-yaml-consumer-0123456789"

CONFIG = """
listeners:
  - address: "127.0.0.1:{{port}}"
admin:
  address: "127.0.0.1:{{admin_port}}"
  open: [ready, metrics]
  tokens:
    - {{name: platform-team, token: {admin}, scopes: [admin]}}
routes:
  - id: ai
    path: /v1/*
    ai_gateway: true
    middleware:
      auth:
        type: api_key
consumers:
  - name: yaml-app
    keys: [{yaml_key}]
control_plane:
  postgres: "{url}"
  snapshot: "{snapshot}"
  timeout: 1s
ai_gateway:
  enabled: true
  providers:
    - {{name: mock, type: mock, models: [gpt-4o, gpt-4.1]}}
  token_accounting:
    enabled: true
  rate_limit:
    consumers:
      gold: {{request_rate: 1000}}
"""


def config(url: str, snapshot: str) -> str:
    return CONFIG.format(admin=ADMIN, yaml_key=YAML_KEY, url=url, snapshot=snapshot)


def admin(loom, method: str, path: str, body=None, raw: bytes | None = None, token: str = ADMIN):
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    req = urllib.request.Request(loom.admin + path, data=data, method=method)
    req.add_header("Authorization", f"Bearer {token}")
    if data is not None:
        req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, json.loads(r.read() or b"null")
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"null")


def chat(loom, key: str, model: str = "gpt-4o"):
    c = openai.OpenAI(base_url=loom.base + "/v1", api_key=key, max_retries=0)
    return c.chat.completions.create(model=model, messages=[{"role": "user", "content": "hi"}])


@pytest.fixture
def db(tmp_path):
    need_postgres()
    name = f"loomtest_{uuid.uuid4().hex[:10]}"
    psql(f"CREATE DATABASE {name}")
    yield f"postgres://postgres@127.0.0.1:5432/{name}"
    psql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def test_a_key_made_at_run_time_works_until_revoked_on_every_replica(db, tmp_path):
    one = Loom(config(db, str(tmp_path / "one.json")))
    two = Loom(config(db, str(tmp_path / "two.json")))
    try:
        status, made = admin(one, "POST", "/ai/keys", {"consumer": "mobile-app", "name": "ios", "models": ["gpt-4o"],
                                                       "tier": "gold", "metadata": {"owner": "ios-team"}})
        assert status == 201, made
        secret = made["key"]
        assert secret.startswith("sk-loom-") and made["id"].startswith("key_")
        # Stored as a hash only: never in the database, listings or the audit log.
        assert psql(f"SELECT count(*) FROM loom_keys WHERE secret_hash::text LIKE '%{secret}%'", db.rsplit('/', 1)[1]) == "0"
        status, got = admin(one, "GET", f"/ai/keys/{made['id']}")
        assert status == 200 and "key" not in got and got["consumer"] == "mobile-app" and got["source"] == "store"
        assert secret not in json.dumps(admin(one, "GET", "/ai/keys")[1])
        # The OpenAI SDK with the new key, on this replica and the other.
        assert chat(one, secret).choices[0].message.content
        wait_until(lambda: admin(two, "GET", f"/ai/keys/{made['id']}")[0] == 200, what="the other replica follows")
        assert chat(two, secret).choices[0].message.content
        # Usage is kept under the key's consumer.
        with urllib.request.urlopen(urllib.request.Request(one.admin + "/ai/usage/mobile-app",
                                                           headers={"Authorization": f"Bearer {ADMIN}"})) as r:
            assert json.loads(r.read())["requests"] >= 1
        # Its allow-list holds.
        with pytest.raises(openai.PermissionDeniedError) as e:
            chat(one, secret, model="gpt-4.1")
        assert "gpt-4.1" in e.value.message
        # Configured keys are listed, read-only.
        status, listed = admin(one, "GET", "/ai/keys?consumer=yaml-app")
        assert [k["source"] for k in listed["data"]] == ["config"] and listed["data"][0]["read_only"]
        assert admin(one, "DELETE", f"/ai/keys/{listed['data'][0]['id']}")[0] == 409
        assert chat(one, YAML_KEY).choices[0].message.content
        # Revoked: 401 at once here, and on the other replica within a second.
        status, _ = admin(one, "DELETE", f"/ai/keys/{made['id']}")
        assert status == 200
        revoked = time.monotonic()
        with pytest.raises(openai.AuthenticationError):
            chat(one, secret)

        def refused_there():
            try:
                chat(two, secret)
                return False
            except openai.AuthenticationError:
                return True
        wait_until(refused_there, timeout=5, what="revoked on the other replica")
        assert time.monotonic() - revoked < 1.0
        # Unknown and revoked keys answer the same (no oracle).
        with pytest.raises(openai.AuthenticationError) as unknown:
            chat(one, "sk-loom-never-issued-000000000000")
        with pytest.raises(openai.AuthenticationError) as gone:
            chat(one, secret)
        assert unknown.value.body == gone.value.body
    finally:
        one.stop()
        two.stop()


def test_patch_rotate_and_the_audit_log(db, tmp_path):
    loom = Loom(config(db, str(tmp_path / "s.json")))
    try:
        _, made = admin(loom, "POST", "/ai/keys", {"consumer": "web"})
        old = made["key"]
        status, patched = admin(loom, "PATCH", f"/ai/keys/{made['id']}", {"name": "renamed", "models": ["gpt-4.1"]})
        assert status == 200 and patched["name"] == "renamed" and patched["models"] == ["gpt-4.1"]
        with pytest.raises(openai.PermissionDeniedError):
            chat(loom, old, model="gpt-4o")
        # Rotation: the new secret works, and the old one through the grace period.
        status, rotated = admin(loom, "POST", f"/ai/keys/{made['id']}/rotate", {"grace": "1h"})
        assert status == 200 and rotated["key"] != old and rotated["previous_valid_until"]
        assert chat(loom, rotated["key"], model="gpt-4.1").choices
        assert chat(loom, old, model="gpt-4.1").choices
        # With no grace the previous secret stops at once.
        status, again = admin(loom, "POST", f"/ai/keys/{made['id']}/rotate", {"grace": "0s"})
        assert status == 200
        with pytest.raises(openai.AuthenticationError):
            chat(loom, rotated["key"], model="gpt-4.1")
        assert chat(loom, again["key"], model="gpt-4.1").choices
        admin(loom, "DELETE", f"/ai/keys/{made['id']}")
        status, audit = admin(loom, "GET", "/ai/audit?limit=10")
        assert status == 200
        actions = [e["action"] for e in audit["data"]]
        assert actions == ["key.delete", "key.rotate", "key.rotate", "key.update", "key.create"]
        assert {e["actor"] for e in audit["data"]} == {"platform-team"}
        update = audit["data"][3]
        assert "name" not in update["before"]
        assert update["after"]["name"] == "renamed"
        text = json.dumps(audit)
        for secret in (old, rotated["key"], again["key"]):
            assert secret not in text
        assert "secret_hash" not in text and "previous_hash" not in text
    finally:
        loom.stop()


@pytest.mark.parametrize("body, field", [
    (b"{not json", None),
    (json.dumps({"consumer": "a", "colour": "blue"}).encode(), None),
    (json.dumps({"consumer": "a", "expires_at": "2001-01-01T00:00:00Z"}).encode(), "expires_at"),
    (json.dumps({"consumer": "a", "expires_at": "next tuesday"}).encode(), "expires_at"),
    (json.dumps({"consumer": "a", "models": ["gpt-4o", "no-such-model"]}).encode(), "models[1]"),
    (json.dumps({"consumer": "a", "tier": "platinum"}).encode(), "tier"),
    (json.dumps({"consumer": "a" * 200}).encode(), "consumer"),
    (json.dumps({"name": "no consumer"}).encode(), None),
])
def test_bad_input_is_a_400_naming_the_field_and_writes_nothing(db, tmp_path, body, field):
    loom = Loom(config(db, str(tmp_path / "s.json")))
    try:
        status, err = admin(loom, "POST", "/ai/keys", raw=body)
        assert status == 400, err
        assert err["error"]["type"] == "invalid_request_error"
        if field:
            assert err["error"]["param"] == field and field.split("[")[0] in err["error"]["message"]
        assert admin(loom, "GET", "/ai/audit")[1]["data"] == []
        assert psql("SELECT count(*) FROM loom_keys", db.rsplit("/", 1)[1]) == "0"
    finally:
        loom.stop()


def test_keys_outlive_a_postgres_outage_and_a_start_without_it(tmp_path):
    own = OwnPostgres()
    snapshot = str(tmp_path / "keys.json")
    loom = Loom(config(own.url, snapshot))
    later = None
    try:
        _, made = admin(loom, "POST", "/ai/keys", {"consumer": "web"})
        secret = made["key"]
        wait_until(lambda: json.loads(open(snapshot).read() or "[]") != [], what="snapshot written")
        own.kill()
        # Away while serving: the key keeps working, readiness says degraded
        # (still 200), admin writes answer 503 and change nothing.
        assert chat(loom, secret).choices
        wait_until(lambda: json.loads(urllib.request.urlopen(loom.admin + "/ready").read())["status"] == "degraded",
                   what="degraded")
        status, err = admin(loom, "POST", "/ai/keys", {"consumer": "web"})
        assert status == 503 and err["error"]["code"] == "store_unavailable"
        assert admin(loom, "DELETE", f"/ai/keys/{made['id']}")[0] == 503
        assert chat(loom, secret).choices, "a failed revoke changed nothing"
        # A replica starting now serves the keys of the snapshot.
        later = Loom(config(own.url, snapshot))
        assert chat(later, secret).choices
        ready = json.loads(urllib.request.urlopen(later.admin + "/ready").read())
        assert ready["status"] == "degraded" and ready["control_plane"]["loaded_from"] == "snapshot"
        # Back: writes work again and both replicas follow.
        own.start()
        wait_until(lambda: admin(loom, "POST", "/ai/keys", {"consumer": "after"})[0] == 201, timeout=20,
                   what="admin writes after PostgreSQL returns")
        wait_until(lambda: json.loads(urllib.request.urlopen(later.admin + "/ready").read())["status"] == "ready",
                   timeout=20, what="the late replica follows PostgreSQL")
        admin(loom, "DELETE", f"/ai/keys/{made['id']}")

        def refused():
            try:
                chat(later, secret)
                return False
            except openai.AuthenticationError:
                return True
        wait_until(refused, what="revoked on the late replica")
    finally:
        loom.stop()
        if later:
            later.stop()
        own.close()


def test_loom_migrate_applies_the_schema_once(db, tmp_path):
    path = tmp_path / "loom.yaml"
    path.write_text(config(db, str(tmp_path / "s.json")).replace("{port}", "0").replace("{admin_port}", "0"))
    first = subprocess.run([loom_bin(), "migrate", "--config", str(path)], capture_output=True, text=True, timeout=30)
    assert first.returncode == 0, first.stderr
    assert "applied" in first.stdout and "keys_and_audit" in first.stdout
    again = subprocess.run([loom_bin(), "migrate", "--config", str(path)], capture_output=True, text=True, timeout=30)
    assert again.returncode == 0 and again.stdout.strip() == "up to date"
    assert psql("SELECT count(*) FROM loom_keys", db.rsplit("/", 1)[1]) == "0"


def test_concurrent_rotations_are_serialised_and_none_half_written(db, tmp_path):
    """Five rotations of one key at once: each is applied whole, one after
    another (versions 2..6 in the audit log); the last one's secret is the
    key's, the one before it works through the grace period, earlier ones
    (superseded in turn) do not."""
    from concurrent.futures import ThreadPoolExecutor
    loom = Loom(config(db, str(tmp_path / "s.json")))
    try:
        _, made = admin(loom, "POST", "/ai/keys", {"consumer": "web"})
        with ThreadPoolExecutor(5) as pool:
            results = list(pool.map(lambda _: admin(loom, "POST", f"/ai/keys/{made['id']}/rotate", {"grace": "1h"}),
                                    range(5)))
        assert [s for s, _ in results] == [200] * 5
        secrets = {r["key"] for _, r in results}
        assert len(secrets) == 5
        audit = admin(loom, "GET", "/ai/audit?limit=10")[1]["data"]
        rotations = [e for e in audit if e["action"] == "key.rotate"]
        assert sorted(e["after"]["version"] for e in rotations) == [2, 3, 4, 5, 6]
        working = set()
        for s in secrets | {made["key"]}:
            try:
                chat(loom, s)
                working.add(s)
            except openai.AuthenticationError:
                pass
        assert len(working) == 2, "the current secret and the one it replaced"
    finally:
        loom.stop()
