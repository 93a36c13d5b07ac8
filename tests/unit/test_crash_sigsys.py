"""SIGSYS (exit 159) in verify's crash reasons, on real ``docker container inspect`` output
captured on the lab's i386 board (tests/data/engine/README.md)."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from fleet.engine import parse_container
from fleet.platform import Platform
from fleet.verify import LABEL, Expected, check_container, crash_reason, verdict

DATA = Path(__file__).resolve().parents[1] / "data" / "engine"


def _load(name: str):
    return json.loads((DATA / name).read_text())


@pytest.mark.parametrize("sample", [
    # the amd64 child pulled by a 32-bit engine on an x86-64 kernel: what a real board shows
    "container-20.10-sigsys-amd64-on-i386.json",
    # the i386 child on the lab's former i386 board (i386 dockerd, the host's 64-bit runc)
    "container-20.10-sigsys-lab-host-runc.json",
])
def test_sigsys_exit_is_a_crash_with_its_cause(sample: str) -> None:
    c = parse_container(_load(sample))
    assert (c.running, c.status, c.exit_code) == (False, "exited", 159)
    reason = crash_reason(c, "")  # the process died before writing anything
    assert reason is not None
    assert reason.startswith("exited 159 = SIGSYS")
    assert "seccomp" in reason and "32-bit engine" in reason and "linux/386" in reason
    exp = Expected("r/x", "sha256:" + "1" * 64, Platform.parse("linux/386"), "sha256:" + "2" * 64, c.image_id, ())
    status, why = verdict(check_container(exp, replace(c, labels={LABEL["index"]: exp.index_digest}), None,
                                          "classic", ""))
    assert status == "crashed" and "SIGSYS" in why


def test_sigsys_needs_the_exit_status_not_a_running_container() -> None:
    c = parse_container(_load("container-20.10-sigsys-amd64-on-i386.json"))
    assert crash_reason(replace(c, running=True, status="running"), "") is None
    assert crash_reason(replace(c, exit_code=158), "") is None
