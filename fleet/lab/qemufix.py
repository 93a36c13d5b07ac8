"""The lab's copy of qemu-user with the netlink byte-order fix a big-endian engine needs.

Why: qemu-user translates rtnetlink replies between the host's and the guest's byte order
(``linux-user/fd-trans.c``). Its attribute loop, ``host_to_target_for_each_rtattr()``,
runs ``while (len > sizeof(struct rtattr))``, so an attribute of exactly 4 bytes (an
empty nested one) at the very end of a message is never converted. Kernels with the DPLL
subsystem end every ``RTM_NEWLINK`` reply with one, the empty ``IFLA_DPLL_PIN`` nest
(``rtnl_fill_dpll_pin()``; seen on this machine kind's 6.18 kernel). A little-endian guest does not notice (nothing to convert);
a big-endian one (s390x) reads that attribute's length as 0x0400, and Go's netlink
parser (vishvananda/netlink ``ParseRouteAttr``) returns EINVAL. For dockerd that is
``LinkByName("lo")`` in libnetwork's ``osl.NewSandbox``, so every container start fails
with ``failed to create default sandbox: invalid argument`` (host networking) and the
engine cannot run anything. The same diagnosis, made independently on Fedora's s390x
builders under QEMU on a 6.18 kernel: facebook/time#506.

The fix is that one comparison (``>=``): the lab keeps a copy of Debian's static qemu
with the three top-level loops (route, address and link messages) patched, and starts
the device's engine through it (``qemu-s390x-static-netlinkfix dockerd ...``); the
binfmt_misc entry, which runs everything else (containers, the login), is not touched.
Only builds whose code was checked instruction by instruction are patched
(``KNOWN_BUILDS``: sha256 of the binary -> file offset and the ``cmp $0x4, reg`` bytes
whose immediate becomes 3); with any other build the lab warns and runs the stock
interpreter, and containers on that board cannot start. A real s390x board runs no
emulator and never meets this.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from fleet.lab.state import LabPaths
from fleet.lab.util import LabError, progress

#: interpreter name -> {sha256 of /usr/bin/NAME-static: ((file offset, bytes of the
#: ``cmp $0x4, reg`` whose last byte, the immediate, becomes 3), ...)}.
#: Debian 12 qemu-user-static 1:7.2+dfsg-7+deb12u18+b3, read with ``objdump -d``: the
#: loop entry check and the back edge of the route (0x2a2125, 0x2a21ad), address
#: (0x2a21d9, 0x2a2249) and link (0x2a22ac, 0x2a234f) attribute loops, all inlined into
#: ``host_to_target_data_route()``. The nested-attribute loops are left alone: their
#: callers pass the nest's length header included, so ``>=`` would run past the nest.
KNOWN_BUILDS: dict[str, dict[str, tuple[tuple[int, str], ...]]] = {
    "qemu-s390x": {
        "eaae13a250d6f10419de73f3a04ee11f6b27b4f1d05251ac74340a8f5d67dddb": (
            (0x2A2125, "4183fc04"), (0x2A21AD, "4983fc04"),
            (0x2A21D9, "4183fc04"), (0x2A2249, "4983fc04"),
            (0x2A22AC, "83fd04"), (0x2A234F, "4983ff04"),
        ),
    },
}

#: Where Debian's qemu-user-static puts the static interpreters.
QEMU_DIR = Path("/usr/bin")


def source_binary(name: str) -> Path:
    return QEMU_DIR / f"{name}-static"


def fixed_path(paths: LabPaths, name: str) -> Path:
    return paths.cache / "qemu" / f"{name}-static-netlinkfix"


def patch_bytes(data: bytes, patches: tuple[tuple[int, str], ...]) -> bytes:
    """``data`` with the immediate (last byte) of each ``cmp $0x4, reg`` at the given
    offsets set to 3. Raises LabError if the bytes there are not the expected ones."""
    out = bytearray(data)
    for off, want in patches:
        expect = bytes.fromhex(want)
        if bytes(out[off:off + len(expect)]) != expect or expect[-1] != 4:
            raise LabError(f"qemu netlink fix: unexpected bytes at {off:#x} "
                           f"({bytes(out[off:off + len(expect)]).hex()}, expected {want})")
        out[off + len(expect) - 1] = 3
    return bytes(out)


def ensure_fixed(paths: LabPaths, name: str) -> Path | None:
    """Path of the patched copy of ``/usr/bin/NAME-static`` (made or remade when the
    installed build changed), or None when that build is not in ``KNOWN_BUILDS`` or not
    installed (the caller then runs the stock interpreter)."""
    src = source_binary(name)
    if not src.exists():
        return None
    data = src.read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    patches = KNOWN_BUILDS.get(name, {}).get(digest)
    if patches is None:
        return None
    dst = fixed_path(paths, name)
    stamp = dst.with_name(dst.name + ".source-sha256")
    if dst.exists() and stamp.exists() and stamp.read_text().strip() == digest:
        return dst
    progress(f"{name}: writing the lab's copy with the netlink byte-order fix ({dst})")
    dst.parent.mkdir(parents=True, exist_ok=True, mode=0o755)
    tmp = dst.with_name(dst.name + ".tmp")
    tmp.write_bytes(patch_bytes(data, patches))
    os.chmod(tmp, 0o755)
    os.replace(tmp, dst)
    stamp.write_text(digest + "\n")
    return dst
