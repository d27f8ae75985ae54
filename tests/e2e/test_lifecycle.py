"""Configuration, hot reload and shutdown of the real binary."""

import os
import signal
import subprocess
from pathlib import Path

import httpx
import openai
import pytest

from conftest import ai_config
from harness import Loom, free_port, http_get, loom_bin, metric_value, wait_until

SEEDS = Path(__file__).resolve().parents[3] / "shared" / "seeds"


def chat(loom, model="gpt-4o"):
    return httpx.post(
        loom.base + "/v1/chat/completions",
        json={"model": model, "messages": [{"role": "user", "content": "x"}]},
    )


def test_hot_reload_keeps_a_stream_in_flight_on_its_config(fake_openai):
    loom = Loom(ai_config(fake_openai.url), env={"UPSTREAM_KEY": "k"})
    try:
        assert chat(loom, "brand-new").status_code == 404
        c = openai.OpenAI(base_url=loom.base + "/v1", api_key="x", max_retries=0)
        stream = c.chat.completions.create(
            model="fake-gated-stream", messages=[{"role": "user", "content": "x"}], stream=True
        )
        it = iter(stream)
        first = next(it)
        assert first.choices[0].delta.role == "assistant"

        # New config: the upstream provider no longer serves the stream's model.
        new = ai_config(fake_openai.url).replace("fake-gated-stream, ", "brand-new, ")
        loom.write_config(new)
        wait_until(lambda: loom.generation() == 2, what="reload to generation 2")
        assert chat(loom, "brand-new").status_code == 200
        assert chat(loom, "fake-gated-stream").status_code == 404

        # The stream started before the reload finishes on the old config.
        fake_openai.release.set()
        rest = list(it)
        text = "".join(ch.choices[0].delta.content or "" for ch in [first, *rest] if ch.choices)
        assert text == "The sky is blue."
    finally:
        loom.stop()


def test_bad_config_reload_keeps_the_old_config(fake_openai):
    loom = Loom(ai_config(fake_openai.url), env={"UPSTREAM_KEY": "k"})
    try:
        loom.write_config(ai_config(fake_openai.url).replace("    path: /v1/*", "    pathh: /v1/*"))
        wait_until(
            lambda: metric_value(loom.metrics(), "loom_config_reloads_total", result="failure") >= 1,
            what="the failed reload to be counted",
        )
        assert loom.generation() == 1
        assert chat(loom).status_code == 200
        log = loom.log()
        assert "configuration rejected" in log
        assert "routes[0]" in log and "did you mean `path`?" in log
    finally:
        loom.stop()


def test_sighup_reloads(fake_openai):
    loom = Loom(ai_config(fake_openai.url), env={"UPSTREAM_KEY": "k"})
    try:
        loom.signal(signal.SIGHUP)
        wait_until(lambda: loom.generation() == 2, what="reload after SIGHUP")
        assert chat(loom).status_code == 200
    finally:
        loom.stop()


def test_sigterm_drains_a_stream_then_exits_zero(fake_openai):
    loom = Loom(ai_config(fake_openai.url), env={"UPSTREAM_KEY": "k"})
    c = openai.OpenAI(base_url=loom.base + "/v1", api_key="x", max_retries=0)
    stream = c.chat.completions.create(
        model="fake-gated-stream", messages=[{"role": "user", "content": "x"}], stream=True
    )
    it = iter(stream)
    next(it)
    loom.signal(signal.SIGTERM)
    # Draining: readiness goes down and new connections are refused ...
    wait_until(lambda: http_get(loom.admin + "/ready")[0] == 503, what="/ready to report draining")
    wait_until(lambda: _refused(loom.base), what="the listener to close")
    # ... while the stream in flight runs to its end.
    fake_openai.release.set()
    rest = list(it)
    assert rest[-1].choices[0].finish_reason == "stop"
    assert loom.proc.wait(10) == 0
    loom.stop()


def _refused(base: str) -> bool:
    try:
        httpx.get(base + "/v1/models", timeout=1)
        return False
    except httpx.ConnectError:
        return True


def test_validate_reports_file_line_column_and_field(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("listeners:\n  - name: http\n    adress: ':8080'\nroutes:\n  - id: a\n    path: /x\n")
    out = subprocess.run([loom_bin(), "validate", str(bad)], capture_output=True, text=True)
    assert out.returncode == 1
    assert f"{bad}:3:5: listeners[0]" in out.stdout
    assert "did you mean `address`?" in out.stdout

    good = tmp_path / "good.yaml"
    good.write_text("routes:\n  - id: ai\n    path: /v1/*\n    ai_gateway: true\nai_gateway:\n  enabled: true\n  providers: [{name: m, type: mock}]\n")
    out = subprocess.run([loom_bin(), "validate", str(good)], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout
    assert out.stdout.strip() == f"{good}: OK"


def test_an_http3_listener_without_certificates_is_refused_at_startup(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(
        'listeners:\n  - address: "127.0.0.1:0"\n    protocol: http3\n'
    )
    out = subprocess.run([loom_bin(), "serve", "--config", str(cfg)], capture_output=True, text=True, timeout=10)
    assert out.returncode == 2
    assert "listeners[0].tls" in out.stderr
    assert "needs tls" in out.stderr


def seed_text(marker: str) -> str:
    """The seed page that contains `marker`, from the marker on."""
    for page in SEEDS.glob("*.txt"):
        text = page.read_text(errors="replace")
        if marker in text:
            return text[text.index(marker) + len(marker):]
    pytest.skip(f"no seed page with {marker!r} next to the project")


def test_seed_getting_started_config_serves_with_the_go_style_flag(tmp_path):
    # The announcement's getting-started config, as written.
    block = seed_text("cat > loom.yaml << 'EOF'\n").split("\nEOF\n")[0]
    port, admin = free_port(), free_port()
    cfg = tmp_path / "loom.yaml"
    # Only the listen address changes, so the test can run beside others.
    cfg.write_text(block.replace('":8080"', f'"127.0.0.1:{port}"') + f"\nadmin:\n  address: 127.0.0.1:{admin}\n")
    env = {"OPENAI_API_KEY": "sk-x"}
    out = subprocess.run([loom_bin(), "validate", str(cfg)], capture_output=True, text=True, env=env)
    assert out.returncode == 0, out.stdout
    proc = subprocess.Popen([loom_bin(), "-config", str(cfg)], env=env, stderr=subprocess.DEVNULL)
    try:
        wait_until(lambda: http_get(f"http://127.0.0.1:{admin}/ready")[0] == 200, what="ready")
        models = httpx.get(f"http://127.0.0.1:{port}/v1/models").json()
        assert {m["id"] for m in models["data"]} == {"gpt-4", "gpt-3.5-turbo"}
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 0


def test_seed_usage_example_validates_and_serves(tmp_path):
    block = "# loom.yaml\n" + seed_text("# loom.yaml\n").split("```")[0]
    port, admin = free_port(), free_port()
    cfg = tmp_path / "loom.yaml"
    # Only the listen address changes, so the test can run beside others.
    cfg.write_text(block.replace('":8080"', f'"127.0.0.1:{port}"') + f"\nadmin:\n  address: 127.0.0.1:{admin}\n")
    env = {**os.environ, "OPENAI_API_KEY": "a", "ANTHROPIC_API_KEY": "b"}
    out = subprocess.run([loom_bin(), "validate", str(cfg)], capture_output=True, text=True, env=env)
    # Every section it enables, the semantic cache included, is implemented.
    assert out.returncode == 0, out.stdout
    proc = subprocess.Popen([loom_bin(), "-config", str(cfg)], env=env, stderr=subprocess.DEVNULL)
    try:
        wait_until(lambda: http_get(f"http://127.0.0.1:{admin}/ready")[0] == 200, what="ready")
        # The route requires a consumer's key, and the seed names no consumers.
        r = httpx.post(f"http://127.0.0.1:{port}/v1/chat/completions",
                       json={"model": "gpt-4", "messages": [{"role": "user", "content": "Hello!"}]})
        assert r.status_code == 401
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 0


def test_json_logs_carry_the_access_line(fake_openai):
    cfg = ai_config(fake_openai.url) + "\nlogging:\n  format: json\n"
    loom = Loom(cfg, env={"UPSTREAM_KEY": "k"})
    try:
        assert chat(loom).status_code == 200
        wait_until(lambda: "loom::access" in loom.log(), what="the access line")
        import json as _json

        lines = [_json.loads(l) for l in loom.log().splitlines() if l.startswith("{")]
        access = [l for l in lines if l.get("target") == "loom::access"]
        assert len(access) == 1
        fields = access[0]["fields"]
        assert fields["status"] == 200 and fields["provider"] == "upstream" and fields["tokens_in"] == 19
    finally:
        loom.stop()
