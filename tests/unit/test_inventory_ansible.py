"""fleet's reading of inventories against ansible-core's own answers, case by case.

tests/data/inventory/cases/ holds the inventories, cases.json the sources and
``--limit`` patterns of each case, expected.json what ansible-core answered
(``ansible-inventory --list`` and ``ansible all --list-hosts --limit PATTERN``, captured
by tests/data/inventory/capture.py; the version is recorded in the file and the README).

For every case fleet must give the same groups (direct hosts and children, in order),
the same variables for every host and, for every pattern, the same hosts in the same
order. The only differences allowed are fleet's documented refusals (README.md there):

* a pattern that matches no host or group is an error in fleet, a warning in Ansible;
* a ``--limit @FILE`` whose file names no host is an error in fleet; Ansible then
  selects every host;
* a pattern that Ansible's ``:`` split silently truncates (``~[`` becomes ``~``, which
  selects every host) is refused by fleet as malformed.

ansible-core walks the groups below the first level of a group as a Python ``set`` of
Group objects (``Group._walk_relationship``), whose iteration order follows memory
addresses: when two or more groups of one level have child groups, the order of those
children's hosts changes from run to run. For such groups the hosts are compared as
sets, and a subscript on them by the number of hosts it selects.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from fleet.errors import FleetError, InputFileError, UsageError
from fleet.inventory import VARIABLE_ALIASES, load_inventory, split_host_pattern

DATA = Path(__file__).resolve().parents[1] / "data" / "inventory"
MANIFEST: dict[str, dict] = json.loads((DATA / "cases.json").read_text())
EXPECTED: dict[str, Any] = json.loads((DATA / "expected.json").read_text())

NO_MATCH_WARNING = "Could not match supplied host pattern"


def _json(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))


def _port(value: Any) -> Any:
    return int(value) if isinstance(value, str) and value.strip().isdigit() else value


def _fleet_vars(vars_: dict[str, Any], ansible: dict[str, Any]) -> dict[str, Any]:
    out = dict(vars_)
    for old, new in VARIABLE_ALIASES.items():
        # fleet also copies the old spelling over the new name for its SSH layer (the
        # ssh connection plugin lets the old spelling win); Ansible's variables keep both.
        if old in out and out.get(new) == out[old]:
            if new in ansible:
                out[new] = ansible[new]
            else:
                del out[new]
    if "ansible_port" in out:
        out["ansible_port"] = _port(out["ansible_port"])
    return _json(out)


def _ansible_vars(vars_: dict[str, Any]) -> dict[str, Any]:
    # ansible-inventory encodes !unsafe strings as {"__ansible_unsafe": text}.
    out = {k: v["__ansible_unsafe"] if isinstance(v, dict) and list(v) == ["__ansible_unsafe"] else v for k, v in vars_.items()}
    if "ansible_port" in out:
        out["ansible_port"] = _port(out["ansible_port"])
    return out


def _order_unspecified(inv: Any, group: str) -> bool:
    """True when ansible-core's host order for ``group`` depends on set iteration:
    below the first level, two or more groups of one level bring in new child groups."""
    seen, level, depth = {group}, [group], 0
    while level:
        nxt: list[str] = []
        contributing = 0
        for g in level:
            new = [c for c in inv.groups[g].children if c not in seen and c not in nxt]
            contributing += bool(new)
            nxt.extend(new)
        if depth >= 1 and contributing >= 2:
            return True
        seen.update(nxt)
        level, depth = nxt, depth + 1
    return False


_SUBSCRIPTED = re.compile(r"^[&!]?(.+)\[-?[0-9]+(?:[:-][0-9]*)?\]$")


def _subscript_unspecified(inv: Any, pattern: str) -> bool:
    import fnmatch

    for part in split_host_pattern(pattern):
        m = _SUBSCRIPTED.match(part)
        if m and any(fnmatch.fnmatchcase(g, m.group(1)) and _order_unspecified(inv, g) for g in inv.groups):
            return True
    return False


def compare_case(name: str, monkeypatch: pytest.MonkeyPatch) -> tuple[str, list[str]]:
    """('agree' | 'deliberate' | 'disagree', differences) for case ``name``."""
    spec, expected = MANIFEST[name], EXPECTED["cases"][name]
    monkeypatch.chdir(DATA / "cases" / name)  # sources and @FILE limits are relative
    diffs: list[str] = []
    deliberate: list[str] = []
    try:
        inv = load_inventory(spec["sources"])
    except FleetError as exc:
        if not expected["ok"]:
            assert isinstance(exc, InputFileError), exc
            return "agree", []
        return "disagree", [f"fleet refused the inventory ansible-core reads: {exc}"]
    if not expected["ok"]:
        return "disagree", [f"fleet read an inventory ansible-core refuses: {expected['error'][:200]}"]

    # groups: direct hosts and children, in order (ansible-inventory drops empty groups)
    for gname, group in inv.groups.items():
        hosts = [] if gname == "all" else list(group.hosts)
        mine = {"hosts": hosts, "children": list(group.children)}
        theirs = expected["groups"].get(gname, {"hosts": [], "children": []})
        if mine != theirs:
            diffs.append(f"group {gname}: fleet {mine}, ansible {theirs}")
    for gname in expected["groups"]:
        if gname not in inv.groups:
            diffs.append(f"group {gname} missing in fleet")

    hostvars = expected["hostvars"]  # hosts without variables are left out
    listed = {h for g in expected["groups"].values() for h in g["hosts"]} | set(hostvars)
    if set(inv.hosts) != listed:
        diffs.append(f"hosts: fleet {sorted(inv.hosts)}, ansible {sorted(listed)}")
    for hname, host in inv.hosts.items():
        theirs = _ansible_vars(hostvars.get(hname, {}))
        mine = _fleet_vars(dict(host.vars), theirs)
        if mine != theirs:
            diffs.append(f"vars of {hname}: fleet {mine}, ansible {theirs}")

    for pattern, answer in expected["limits"].items():
        try:
            got = [h.name for h in inv.select(pattern)]
        except UsageError as exc:  # InputFileError included (@FILE)
            if "error" in answer or not answer["hosts"]:
                continue  # both select nothing / both refuse
            if any(NO_MATCH_WARNING in w for w in answer["warnings"]):
                deliberate.append(f"--limit {pattern!r}: fleet refuses a pattern matching nothing ({exc})")
                continue
            if pattern.startswith("@") and "names no hosts" in str(exc):
                deliberate.append(f"--limit {pattern!r}: fleet refuses an empty limit file")
                continue
            if "malformed host pattern" in str(exc):
                deliberate.append(f"--limit {pattern!r}: fleet refuses what Ansible truncates ({exc})")
                continue
            diffs.append(f"--limit {pattern!r}: fleet refused ({exc}), ansible {answer['hosts']}")
            continue
        if "error" in answer:
            diffs.append(f"--limit {pattern!r}: fleet {got}, ansible refused: {answer['error'][:200]}")
        elif got != answer["hosts"]:
            if _subscript_unspecified(inv, pattern):
                if len(got) == len(answer["hosts"]):
                    continue
            elif _order_unspecified(inv, "all") and sorted(got) == sorted(answer["hosts"]):
                continue
            diffs.append(f"--limit {pattern!r}: fleet {got}, ansible {answer['hosts']}")
    if diffs:
        return "disagree", diffs
    return ("deliberate", deliberate) if deliberate else ("agree", [])


def test_expected_answers_cover_every_case():
    assert EXPECTED["ansible_version"].startswith("ansible [core ")
    assert list(EXPECTED["cases"]) == list(MANIFEST)
    assert len(MANIFEST) >= 60
    # The data would be worthless if ansible-core had refused everything.
    assert sum(1 for c in EXPECTED["cases"].values() if c["ok"]) >= 50


@pytest.mark.parametrize("name", list(MANIFEST))
def test_fleet_answers_as_ansible_core(name, monkeypatch):
    verdict, details = compare_case(name, monkeypatch)
    assert verdict != "disagree", "\n".join(details)


def test_agreement_count(monkeypatch, capsys):
    verdicts: dict[str, list[str]] = {"agree": [], "deliberate": [], "disagree": []}
    for name in MANIFEST:
        with monkeypatch.context() as m:
            verdict, _ = compare_case(name, m)
        verdicts[verdict].append(name)
    with capsys.disabled():
        print(
            f"\ninventory cases vs {EXPECTED['ansible_version']}: {len(verdicts['agree'])} agree, "
            f"{len(verdicts['deliberate'])} differ only by fleet's documented refusals "
            f"({', '.join(verdicts['deliberate'])}), {len(verdicts['disagree'])} disagree"
        )
    assert not verdicts["disagree"], verdicts["disagree"]
