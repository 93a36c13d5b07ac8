"""Fixtures of the lab tests: one lab for the whole session (registered in tests/conftest.py).

The ``lab`` fixture brings every profile up (``fleet lab up --profiles all``, the seven
boards: idempotent, it only adds what is not running to a lab that is already up and
leaves that lab up), or starts the lab from nothing and runs ``fleet lab down`` at the
end. It needs root and a machine where ``fleet lab setup`` ran (CI does that); otherwise
``up`` fails with its list of what is missing and every lab test errors (no skip).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from fleet.lab.profiles import DEFAULT_PROFILES
from fleet.lab.state import resolve_lab_dir

#: What the session's lab runs: every profile (the five defaults plus s390x and i386).
LAB_PROFILES = "all"

_SCRIPT = Path(sys.executable).with_name("fleet")
FLEET = [str(_SCRIPT)] if _SCRIPT.exists() else [sys.executable, "-c", "from fleet.cli import main; main()"]


def fleet(*args: str, check: bool = False, timeout: float = 300) -> subprocess.CompletedProcess:
    """Run the ``fleet`` console script; text output captured."""
    cp = subprocess.run([*FLEET, *args], capture_output=True, text=True, timeout=timeout)
    if check and cp.returncode != 0:
        raise AssertionError(f"fleet {' '.join(args)} -> {cp.returncode}\n{cp.stdout}\n{cp.stderr}")
    return cp


@dataclass
class Lab:
    dir: Path
    status: dict
    default_inventory: str = ""

    @property
    def key(self) -> str: return self.status["ssh_key"]
    @property
    def known_hosts(self) -> str: return self.status["known_hosts"]
    @property
    def inventory(self) -> str:
        """Inventory of the five default boards (DEFAULT_PROFILES), the fleet the deploy
        and publish tests' playbooks are written for; ``inventory_all`` has all seven."""
        return self.default_inventory or self.status["inventory"]
    @property
    def inventory_all(self) -> str: return self.status["inventory"]

    def device(self, name: str) -> dict:
        return next(d for d in self.status["devices"] if d["name"] == name)

    def ssh(self, name: str, command: str, stdin: bytes | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
        """Run ``command`` on device ``name`` as the lab user with the system ssh client,
        the lab key and the lab known_hosts (host key verified)."""
        addr = self.device(name)["address"]
        return subprocess.run(
            ["ssh", "-F", "/dev/null", "-i", self.key, "-o", f"UserKnownHostsFile={self.known_hosts}",
             "-o", "StrictHostKeyChecking=yes", "-o", "BatchMode=yes", "-o", "ConnectTimeout=10",
             f"{self.status['ssh_user']}@{addr}", command],
            input=stdin, capture_output=True, timeout=timeout)

    def refresh(self) -> dict:
        self.status = json.loads(fleet("lab", "status", "--json").stdout)
        return self.status


def default_inventory(full: str, dest: Path) -> str:
    """Write the lab inventory ``full`` restricted to the default profiles to ``dest``."""
    doc = yaml.safe_load(Path(full).read_text())
    children = doc["all"]["children"]
    for group in children.values():
        hosts = group.get("hosts") or {}
        for name in [h for h in hosts if h not in DEFAULT_PROFILES]:
            del hosts[name]
    doc["all"]["children"] = {g: v for g, v in children.items() if v.get("hosts")}
    dest.write_text(yaml.safe_dump(doc, sort_keys=False))
    return str(dest)


@pytest.fixture(scope="session")
def lab(tmp_path_factory) -> Lab:
    lab_dir = resolve_lab_dir(None)
    before = fleet("lab", "status", "--json")
    # Tear down at the end only a lab this session brought up from nothing: a lab that was
    # partly up (a device degraded under load) belongs to someone else and is only repaired.
    was_down = True
    try:
        doc = json.loads(before.stdout)
        was_down = not doc.get("bridge", {}).get("present") and not any(
            d.get("state") == "running" for d in doc.get("devices", []))
    except ValueError:
        pass
    up = fleet("lab", "up", "--profiles", LAB_PROFILES, "--json", timeout=600)
    assert up.returncode == 0, f"fleet lab up failed ({up.returncode}):\n{up.stderr}"
    status = json.loads(fleet("lab", "status", "--json", check=True).stdout)
    five = default_inventory(status["inventory"], tmp_path_factory.mktemp("lab-inventory") / "default.yaml")
    yield Lab(lab_dir, status, five)
    if was_down:
        fleet("lab", "down", timeout=300)
