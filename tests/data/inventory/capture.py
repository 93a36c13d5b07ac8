#!/usr/bin/env python3
"""Record ansible-core's answers for every case in cases.json into expected.json.

Usage (ansible-core installed in a scratch virtualenv outside the repository)::

    python3 -m venv /tmp/ansible-venv && /tmp/ansible-venv/bin/pip install ansible-core
    python3 tests/data/inventory/capture.py --ansible-bin /tmp/ansible-venv/bin

For each case it runs, in the case's directory, ``ansible-inventory -i SRC... --list``
(groups, their direct hosts and children, every host's variables) and, for each limit
pattern, ``ansible all -i SRC... --list-hosts --limit PATTERN`` (the selected hosts in
Ansible's order, or its error). Unparsable sources are made fatal
(ANSIBLE_INVENTORY_UNPARSED_FAILED, ANSIBLE_INVENTORY_ANY_UNPARSED_IS_FAILED) so that a
broken inventory is recorded as an error rather than as an empty inventory.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent


def _env(home: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ANSIBLE_")}
    env.update(
        ANSIBLE_HOME=home,
        ANSIBLE_LOCAL_TEMP=home,
        ANSIBLE_NOCOLOR="1",
        ANSIBLE_INVENTORY_UNPARSED_FAILED="1",
        ANSIBLE_INVENTORY_ANY_UNPARSED_IS_FAILED="1",
        ANSIBLE_CONFIG=os.path.join(home, "none.cfg"),
    )
    return env


def _error_text(stderr: str) -> str:
    lines = [ln for ln in stderr.splitlines() if ln.strip() and not ln.startswith("[WARNING]") and not ln.startswith("[DEPRECATION")]
    return "\n".join(lines)[:2000]


def _warnings(stderr: str) -> list[str]:
    return [ln for ln in stderr.splitlines() if ln.startswith("[WARNING]")]


def capture_case(case_dir: Path, spec: dict, bindir: Path, env: dict[str, str]) -> dict:
    sources = [a for s in spec["sources"] for a in ("-i", s)]
    result: dict = {}
    cp = subprocess.run(
        [str(bindir / "ansible-inventory"), *sources, "--list"], cwd=case_dir, env=env, capture_output=True, text=True, timeout=120
    )
    if cp.returncode != 0:
        return {"ok": False, "error": _error_text(cp.stderr)}
    listing = json.loads(cp.stdout)
    meta = listing.pop("_meta", {})
    result["ok"] = True
    result["hostvars"] = meta.get("hostvars", {})
    result["groups"] = {name: {"hosts": g.get("hosts", []), "children": g.get("children", [])} for name, g in listing.items()}
    result["warnings"] = _warnings(cp.stderr)
    limits = {}
    for pattern in spec["limits"]:
        cp = subprocess.run(
            [str(bindir / "ansible"), "all", *sources, "--list-hosts", "--limit", pattern],
            cwd=case_dir, env=env, capture_output=True, text=True, timeout=120,
        )
        if cp.returncode != 0:
            limits[pattern] = {"error": _error_text(cp.stderr), "warnings": _warnings(cp.stderr)}
            continue
        lines = cp.stdout.splitlines()
        start = next(i for i, ln in enumerate(lines) if re.match(r"\s*hosts \(\d+\):", ln))
        hosts = [ln.strip() for ln in lines[start + 1 :] if ln.strip()]
        limits[pattern] = {"hosts": hosts, "warnings": _warnings(cp.stderr)}
    result["limits"] = limits
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ansible-bin", required=True, type=Path, help="directory holding ansible and ansible-inventory")
    parser.add_argument("--only", nargs="*", help="capture only these cases (merged into expected.json)")
    args = parser.parse_args()
    version = subprocess.run([str(args.ansible_bin / "ansible"), "--version"], capture_output=True, text=True).stdout.splitlines()[0]
    manifest = json.loads((HERE / "cases.json").read_text())
    out_path = HERE / "expected.json"
    expected = json.loads(out_path.read_text()) if args.only and out_path.exists() else {}
    expected["ansible_version"] = version
    expected.setdefault("cases", {})
    with tempfile.TemporaryDirectory() as home:
        env = _env(home)
        for name, spec in manifest.items():
            if args.only and name not in args.only:
                continue
            expected["cases"][name] = capture_case(HERE / "cases" / name, spec, args.ansible_bin, env)
            print(name, "ok" if expected["cases"][name]["ok"] else "error")
    expected["cases"] = {k: expected["cases"][k] for k in manifest if k in expected["cases"]}
    out_path.write_text(json.dumps(expected, indent=1, ensure_ascii=False, sort_keys=False) + "\n")


if __name__ == "__main__":
    main()
