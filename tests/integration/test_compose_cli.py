"""Compose playbooks through the real `fleet` command, against two real sshd "devices"
(this machine seen through its login user, tests/sshd.py): every mistake is exit 2 with
the file:line or device:variable, as ONE JSON document with --json, before any device or
registry is touched; `fleet plan` shows each device's values with secrets masked."""

from __future__ import annotations

import json
import textwrap

import pytest

from tests.integration.test_cli_probe import devices, env, fleet  # noqa: F401 - fixtures

REGISTRY = "127.0.0.1:9"  # nothing listens: a mistake must be caught before any registry is asked


def _write(tmp_path, compose: str, inventory_extra: str = "", devices_=None):
    servers, inv, kh = devices_
    (tmp_path / "docker-compose.yml").write_text(textwrap.dedent(compose))
    pb = tmp_path / "app.yaml"
    pb.write_text("name: capp\ncompose: docker-compose.yml\nplatforms: [linux/amd64]\n")
    extra = tmp_path / "vars.ini"
    extra.write_text(textwrap.dedent(inventory_extra))
    return pb, ["-i", str(inv), "-i", str(extra), "--known-hosts", str(kh)]


GOOD = f"""\
services:
  web:
    image: {REGISTRY}/capp/web:1
    environment:
      SITE: ${{SITE:?each device needs a SITE}}
      API_TOKEN: ${{API_TOKEN:-}}
"""


def test_a_schema_error_names_file_line_and_key(tmp_path, devices, env):
    pb, inv = _write(tmp_path, f"""\
        services:
          web:
            image: {REGISTRY}/capp/web:1
            ports: "8080:80"
        """, "", devices)
    cp = fleet("deploy", str(pb), *inv, "--json", env=env)
    assert cp.returncode == 2, cp.stdout + cp.stderr
    doc = json.loads(cp.stdout)
    assert "docker-compose.yml:4: key 'services.web.ports'" in doc["error"], doc


def test_an_unknown_key_is_refused_not_ignored(tmp_path, devices, env):
    pb, inv = _write(tmp_path, f"""\
        services:
          web:
            image: {REGISTRY}/capp/web:1
            deploy: {{replicas: 2}}
        """, "", devices)
    cp = fleet("plan", str(pb), *inv, env=env)
    assert cp.returncode == 2 and "Traceback" not in cp.stderr, cp.stderr
    assert "docker-compose.yml:4: key 'services.web.deploy'" in cp.stderr


def test_a_value_missing_for_one_device_names_it(tmp_path, devices, env):
    pb, inv = _write(tmp_path, GOOD, "[boards]\ndev-a SITE=north\n", devices)
    cp = fleet("deploy", str(pb), *inv, "--json", env=env)
    assert cp.returncode == 2, cp.stdout + cp.stderr
    err = json.loads(cp.stdout)["error"]
    assert "device dev-b: required variable SITE is missing a value: each device needs a SITE" in err
    assert "dev-a" not in err


def test_a_jinja_value_is_an_error_naming_host_and_variable(tmp_path, devices, env):
    pb, inv = _write(tmp_path, GOOD, "[boards]\ndev-a SITE=north\ndev-b SITE=\"{{ site_name }}\"\n", devices)
    cp = fleet("plan", str(pb), *inv, env=env)
    assert cp.returncode == 2, cp.stdout + cp.stderr
    assert "dev-b" in cp.stderr and "SITE" in cp.stderr and "Jinja" in cp.stderr, cp.stderr


def test_plan_shows_each_devices_values_with_secrets_masked(tmp_path, devices, env):
    pb, inv = _write(tmp_path, GOOD, "[boards]\ndev-a SITE=north API_TOKEN=s3cr3t-a\ndev-b SITE=south\n", devices)
    cp = fleet("plan", str(pb), *inv, "--json", env=env)
    # the picked image's registry does not answer: a plan error (exit 1), values still shown
    assert cp.returncode == 1, cp.stdout + cp.stderr
    doc = json.loads(cp.stdout)
    values = {v["host"]: {x["name"]: x["value"] for x in v["values"]} for v in doc["values"]}
    assert values["dev-a"]["SITE"] == "north" and values["dev-b"]["SITE"] == "south"
    assert values["dev-a"]["API_TOKEN"] not in (None, "s3cr3t-a")
    assert "s3cr3t-a" not in cp.stdout + cp.stderr
    assert any(REGISTRY in e for e in doc["errors"]), doc["errors"]
