"""The JSON Schema that `loom schema` prints (and docs/loom.schema.json
holds) accepts the configurations Loom accepts and refuses what it refuses:
checked with the `jsonschema` validator against the shipped example, the
benchmark configurations, and broken variants that `loom validate` refuses
too."""

from __future__ import annotations

import json
import pathlib
import subprocess

import jsonschema
import pytest
import yaml

from harness import loom_bin

ROOT = pathlib.Path(__file__).resolve().parents[2]
# Every configuration file of the repository that Loom accepts as written
# (the overload one takes numbers from the environment).
CONFIGS = [ROOT / "examples" / "quickstart.yaml"] + sorted(
    p for p in (ROOT / "bench").glob("*.yaml") if p.name != "loom-overload.yaml"
)


@pytest.fixture(scope="module")
def schema() -> dict:
    out = subprocess.run([loom_bin(), "schema"], capture_output=True, text=True, timeout=30, check=True)
    printed = json.loads(out.stdout)
    committed = json.loads((ROOT / "docs" / "loom.schema.json").read_text())
    assert printed == committed, "docs/loom.schema.json is out of date: run `loom schema > docs/loom.schema.json`"
    jsonschema.Draft202012Validator.check_schema(printed)
    return printed


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_every_shipped_configuration_validates(schema, path):
    out = subprocess.run([loom_bin(), "validate", str(path)], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stdout
    jsonschema.validate(yaml.safe_load(path.read_text()), schema)


@pytest.mark.parametrize(
    "change",
    [
        ("an unknown top-level key", lambda c: c.update(listners=[])),
        ("a misspelt listener key", lambda c: c["listeners"][0].update(adress=":1")),
        ("a provider without a type", lambda c: c["ai_gateway"]["providers"][0].pop("type")),
        ("an unknown provider type", lambda c: c["ai_gateway"]["providers"][0].update(type="openia")),
        ("a breaker key that never existed", lambda c: c["ai_gateway"].update(routing={"circuit_breaker": {"open_four": "1s"}})),
    ],
    ids=lambda c: c[0] if isinstance(c, tuple) else None,
)
def test_what_loom_refuses_the_schema_refuses(schema, tmp_path, change):
    config = yaml.safe_load((ROOT / "examples" / "quickstart.yaml").read_text())
    change[1](config)
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(config))
    out = subprocess.run([loom_bin(), "validate", str(path)], capture_output=True, text=True, timeout=30)
    assert out.returncode != 0, out.stdout
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(config, schema)


def test_old_and_new_spellings_both_validate(schema):
    config = yaml.safe_load((ROOT / "examples" / "quickstart.yaml").read_text())
    config["ai_gateway"]["routing"] = {"circuit_breaker": {"cooldown": "10s", "failure_rate": 0.5}}
    jsonschema.validate(config, schema)
    config["ai_gateway"]["routing"] = {"circuit_breaker": {"open_for": "10s", "failure_percent": 50}}
    jsonschema.validate(config, schema)
