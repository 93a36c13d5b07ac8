"""The report schemas shipped in fleet/schemas: valid Draft 2020-12 schemas, loaded from the
installed package, packed into the wheel; real reports captured on the lab conform, and a
report that lost a key, gained an unknown one or carries a result fleet does not know is
refused (so the schemas can fail the tests that use them)."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import jsonschema
import pytest

from fleet.schemas import NAMES, load, validate, validator
from tests import reportschema

DATA = Path(__file__).resolve().parents[1] / "data" / "reports"
ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("name", [*NAMES, "common"])
def test_each_schema_is_a_valid_2020_12_schema(name):
    schema = load(name)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["$id"] == f"urn:fleet:schema:{name}"
    jsonschema.Draft202012Validator.check_schema(schema)
    if name != "common":
        validator(name)  # its references resolve


@pytest.mark.parametrize("file,name", [
    ("deploy-report.json", "deploy-report"), ("rollback-report.json", "deploy-report"),
    ("check-report.json", "deploy-report"), ("verify-report.json", "verify-report"),
    ("history-json.json", "history-json"), ("probe-json.json", "probe-json"),
])
def test_captured_reports_conform(file, name):
    validate(json.loads((DATA / file).read_text()), name)


def _deploy() -> dict:
    return json.loads((DATA / "deploy-report.json").read_text())


@pytest.mark.parametrize("mutate,where", [
    (lambda d: d["devices"][0].pop("result"), "devices/0"),
    (lambda d: d["devices"][0].update(surprise=1), "devices/0"),
    (lambda d: d["devices"][0].update(result="fine"), "devices/0/result"),
    (lambda d: d.update(index_digest="f13db92c3c6f"), "index_digest"),
    (lambda d: d["plan"]["devices"][0].update(platform="arm64"), "plan/devices/0/platform"),
    (lambda d: d.pop("summary"), ""),
])
def test_a_changed_report_is_refused(mutate, where):
    doc = _deploy()
    mutate(doc)
    with pytest.raises(jsonschema.ValidationError) as e:
        validate(doc, "deploy-report")
    assert "/".join(map(str, e.value.absolute_path)) == where


def test_json_outputs_are_the_reports_device_rows():
    """deploy --json prints each device row plus the run's deployment and index digest;
    verify --json the rows plus the index digest (what the lab tests read)."""
    doc = _deploy()
    rows = [{**d, "deployment": doc["deployment"], "index_digest": doc["index_digest"]} for d in doc["devices"]]
    validate(rows, "deploy-json")
    with pytest.raises(jsonschema.ValidationError):
        validate([{**r, "extra": True} for r in rows], "deploy-json")
    v = json.loads((DATA / "verify-report.json").read_text())
    validate([{**d, "index_digest": v["index_digest"]} for d in v["devices"]], "verify-json")


def test_helper_takes_the_error_document_of_a_failed_command():
    err = {"error": "x.yaml: cannot read", "kind": "usage:UsageError", "exit_status": 2}
    assert reportschema.check(err, "deploy-json") == err
    with pytest.raises(jsonschema.ValidationError):
        reportschema.check({"error": "x", "kind": "usage", "exit_status": "2"}, "probe-json")


def test_unknown_schema_name():
    with pytest.raises(ValueError, match="no schema named 'deploy'"):
        load("deploy")


def test_the_package_data_ships_the_schemas():
    """pyproject's package-data puts every schema file into the wheel (setuptools matches
    these globs relative to the package folder; a wheel build would need the network for a
    newer setuptools, so the globs are checked here the same way)."""
    import tomllib

    patterns = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["fleet"]
    shipped = {p.relative_to(ROOT / "fleet").as_posix() for pat in patterns for p in (ROOT / "fleet").glob(pat)}
    assert {f"schemas/{n}.json" for n in (*NAMES, "common")} <= shipped
    assert {p.name for p in (ROOT / "fleet" / "schemas").glob("*.json")} == {f"{n}.json" for n in (*NAMES, "common")}
