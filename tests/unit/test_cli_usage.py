"""Usage errors caught before any device or registry is contacted: exit 2, one line, no traceback."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests import reportschema

REPO = Path(__file__).resolve().parents[2]
FLEET = [str(Path(sys.executable).with_name("fleet"))]


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*FLEET, *args], capture_output=True, text=True, timeout=60, cwd=REPO)


def inventory(tmp_path: Path) -> Path:
    # 127.0.0.1:9 (discard) is never contacted: every case fails before the fan-out.
    p = tmp_path / "inv.yaml"
    p.write_text("all:\n  hosts:\n    d1:\n      ansible_host: 127.0.0.1\n      ansible_port: 9\n")
    return p


def test_known_hosts_directory_is_a_usage_error(tmp_path):
    cp = run("probe", "-i", str(inventory(tmp_path)), "--known-hosts", str(tmp_path), "--json")
    assert cp.returncode == 2
    assert f"--known-hosts {tmp_path}: is a directory" in cp.stderr
    assert "Traceback" not in cp.stderr
    doc = reportschema.loads(cp.stdout, "error-json")  # --json: one JSON document also when the command fails
    assert doc == {"error": f"--known-hosts {tmp_path}: is a directory (give a known_hosts file)",
                   "kind": "usage:UsageError", "exit_status": 2}


def test_unusable_report_dir_is_refused_before_any_work(tmp_path):
    not_a_dir = tmp_path / "file"
    not_a_dir.write_text("x")
    for command in (["verify", "playbooks/hello.yaml"], ["deploy", "playbooks/hello.yaml", "--check"]):
        cp = run(*command, "-i", str(inventory(tmp_path)), "--report-dir", str(not_a_dir / "reports"))
        assert cp.returncode == 2, (command, cp.stderr)
        assert "cannot create the report directory" in cp.stderr
        assert "Traceback" not in cp.stderr


def test_verify_reads_the_inventory_before_the_registry(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("all:\n  hosts:\n    a: [\n")
    cp = run("verify", "playbooks/hello.yaml", "-i", str(bad))
    assert cp.returncode == 2
    assert cp.stderr.startswith(f"fleet: error: {bad}:"), cp.stderr


def test_connection_variables_must_be_single_values(tmp_path):
    for var, value in (("ansible_user", "[a, b]"), ("ansible_host", "[1]"), ("ansible_connection", "winrm")):
        inv = tmp_path / f"{var}.yaml"
        inv.write_text(f"all:\n  hosts:\n    d1:\n      {var}: {value}\n")
        cp = run("probe", "-i", str(inv))
        assert cp.returncode == 2, (var, cp.stdout, cp.stderr)
        assert cp.stderr.startswith(f"fleet: error: d1: {var}"), cp.stderr


def test_executor_options_are_checked_before_any_device(tmp_path):
    """--executor takes local or celery; celery-only options with local are usage errors;
    --executor celery needs a broker; the signing identity is checked before the broker is
    asked (its files do not exist here)."""
    inv = str(inventory(tmp_path))
    env_free = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}

    def fleet(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([*FLEET, *args], capture_output=True, text=True, timeout=60, cwd=REPO, env=env_free)

    cases = [
        (["probe", "-i", inv, "--executor", "ssh"], "--executor 'ssh': choose one of local, celery"),
        (["probe", "-i", inv, "--executor", "local", "--broker", "redis://127.0.0.1:9/0"],
         "--broker: for --executor celery"),
        (["status", "playbooks/hello.yaml", "-i", inv, "--local-fallback", "--key", "k.pem"],
         "--local-fallback, --key: for --executor celery"),
        (["deploy", "playbooks/hello.yaml", "-i", inv, "--executor", "celery"],
         "--executor celery needs --broker URL (or FLEET_BROKER_URL)"),
        (["verify", "playbooks/hello.yaml", "-i", inv, "--broker", "http://127.0.0.1:9/"],
         "--broker http://127.0.0.1:9/: not a broker URL fleet supports"),
        (["rollback", "playbooks/hello.yaml", "-i", inv, "--broker", "redis://127.0.0.1:9/0",
          "--key", str(tmp_path / "no.key"), "--cert", str(tmp_path / "no.pem"), "--cert-store", str(tmp_path)],
         "no.key"),
    ]
    for args, message in cases:
        cp = fleet(*args, "--json")
        assert cp.returncode == 2, (args, cp.stderr)
        assert message in cp.stderr, (args, cp.stderr)
        assert json.loads(cp.stdout)["exit_status"] == 2
        assert "Traceback" not in cp.stderr
