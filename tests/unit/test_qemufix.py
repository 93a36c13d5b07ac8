"""The lab's qemu netlink byte-order fix (fleet/lab/qemufix.py): only the immediates of
the listed ``cmp $0x4, reg`` instructions change, and only where the bytes are as expected."""

from __future__ import annotations

import pytest

from fleet.lab.qemufix import KNOWN_BUILDS, patch_bytes
from fleet.lab.util import LabError


def test_patch_sets_each_listed_immediate_to_3_and_nothing_else() -> None:
    data = bytes(16) + bytes.fromhex("4983ff04") + bytes(8) + bytes.fromhex("83fd04") + bytes(4)
    out = patch_bytes(data, ((16, "4983ff04"), (28, "83fd04")))
    assert out[16:20] == bytes.fromhex("4983ff03") and out[28:31] == bytes.fromhex("83fd03")
    assert [i for i in range(len(data)) if data[i] != out[i]] == [19, 30]


def test_patch_refuses_other_bytes() -> None:
    with pytest.raises(LabError, match="unexpected bytes at 0x4"):
        patch_bytes(bytes(4) + bytes.fromhex("4983ff05"), ((4, "4983ff04"),))
    with pytest.raises(LabError):
        patch_bytes(bytes(8), ((6, "4983ff04"),))  # past the end


def test_known_builds_list_cmp_imm4_instructions() -> None:
    for name, builds in KNOWN_BUILDS.items():
        for digest, patches in builds.items():
            assert len(digest) == 64 and len(patches) % 2 == 0, name  # entry check + back edge per loop
            for _, hexb in patches:
                b = bytes.fromhex(hexb)
                assert b[-1] == 4 and b[-3:-1] in {b"\x83\xfc", b"\x83\xff", b"\x83\xfd"}, hexb
