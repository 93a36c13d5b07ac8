"""The one reader of ELF headers and ARM build attributes. Pure: reads only the bytes or
the stream it is given.

Used by the probe's userland summary and :mod:`fleet.detect` (the ``elf_header`` fact: hex
of a userland executable's first 20 bytes) and by the publish content check
(:func:`fleet.publish.index.check_elf`: the binaries inside an image's layers).

Sources: ELF gABI (``e_ident`` EI_CLASS/EI_DATA, ``e_machine`` at offset 18) and the
System V ``elf.h`` machine numbers; ARM ``Tag_CPU_arch`` from the ``.ARM.attributes``
section, "Addenda to, and Errata in, the ABI for the Arm Architecture" (ARM IHI 0045),
read with pyelftools.
"""

from __future__ import annotations

import re
import struct
from dataclasses import dataclass
from typing import BinaryIO

__all__ = ["EM_NAMES", "ARM_CPU_ARCH", "ElfError", "ElfHeader", "parse_header", "parse_header_hex",
           "arm_cpu_arch"]

#: ELF e_machine numbers (System V ABI / elf.h) that matter here -> name.
EM_NAMES = {
    2: "SPARC", 3: "x86 (i386)", 8: "MIPS", 20: "PowerPC", 21: "PowerPC64", 22: "IBM S/390",
    40: "ARM", 43: "SPARC V9", 62: "x86-64", 183: "AArch64", 243: "RISC-V", 258: "LoongArch",
}

#: ARM IHI 0045 Tag_CPU_arch codes -> (name, OCI arm variant level a CPU needs to run it).
ARM_CPU_ARCH = {
    0: ("pre-v4", 5), 1: ("v4", 5), 2: ("v4T", 5), 3: ("v5T", 5), 4: ("v5TE", 5),
    5: ("v5TEJ", 5), 6: ("v6", 6), 7: ("v6KZ", 6), 8: ("v6T2", 6), 9: ("v6K", 6),
    10: ("v7", 7), 11: ("v6-M", 6), 12: ("v6S-M", 6), 13: ("v7E-M", 7), 14: ("v8-A", 8),
    15: ("v8-R", 8), 16: ("v8-M.baseline", 8), 17: ("v8-M.mainline", 8), 18: ("v8.1-A", 8),
    19: ("v8.2-A", 8), 20: ("v8.3-A", 8), 21: ("v8.1-M.mainline", 8), 22: ("v9-A", 9),
}

#: Bytes of an ELF file this module needs for the header (e_ident + e_type + e_machine).
HEADER_BYTES = 20


class ElfError(ValueError):
    """Not an ELF header: too short, no ``\\x7fELF`` magic, or an invalid class/encoding.
    ``str()`` says which."""


@dataclass(frozen=True)
class ElfHeader:
    """``bits`` 32|64 (EI_CLASS), ``endianness`` "little"|"big" (EI_DATA), ``machine``
    (e_machine number)."""

    bits: int
    endianness: str
    machine: int

    @property
    def machine_name(self) -> str:
        """``"AArch64"``, ``"ARM"``, ... or ``"e_machine N"`` for an unknown number."""
        return EM_NAMES.get(self.machine, f"e_machine {self.machine}")

    @property
    def description(self) -> str:
        """``"ELF32 little-endian ARM"``."""
        return f"ELF{self.bits} {self.endianness}-endian {self.machine_name}"


def parse_header(data: bytes) -> ElfHeader:
    """Read the ELF header at the start of ``data`` (at least :data:`HEADER_BYTES` bytes).
    Raises :class:`ElfError`."""
    if len(data) < HEADER_BYTES:
        raise ElfError(f"{len(data)} bytes, an ELF header needs {HEADER_BYTES}")
    if data[:4] != b"\x7fELF":
        raise ElfError("no ELF magic (7f 45 4c 46)")
    bits = {1: 32, 2: 64}.get(data[4])
    endian = {1: "little", 2: "big"}.get(data[5])
    if bits is None or endian is None:
        raise ElfError(f"invalid EI_CLASS {data[4]} or EI_DATA {data[5]}")
    (machine,) = struct.unpack("<H" if endian == "little" else ">H", data[18:20])
    return ElfHeader(bits, endian, machine)


def parse_header_hex(text: str) -> ElfHeader:
    """The ``elf_header`` probe fact (hex digits, spaces and an ``0x`` prefix allowed).
    Raises :class:`ElfError` (also for text that is not hex)."""
    hexstr = re.sub(r"\s+", "", text).lower()
    if hexstr.startswith("0x"):
        hexstr = hexstr[2:]
    if not re.fullmatch(r"[0-9a-f]*", hexstr) or len(hexstr) % 2:
        raise ElfError(f"not hex ({text[:40]!r})")
    return parse_header(bytes.fromhex(hexstr[: 2 * HEADER_BYTES]) if len(hexstr) >= 2 * HEADER_BYTES
                        else bytes.fromhex(hexstr))


def arm_cpu_arch(stream: BinaryIO) -> tuple[int | None, str | None]:
    """``(Tag_CPU_arch code, None)`` from a 32-bit ARM ELF file's ``.ARM.attributes``
    section, or ``(None, note)`` saying why it could not be read (no section, no tag,
    unreadable sections). ``stream``: the whole file, seekable."""
    from elftools.common.exceptions import ELFError
    from elftools.elf.elffile import ELFFile

    try:
        elf = ELFFile(stream)
        section = elf.get_section_by_name(".ARM.attributes")
        if section is None:
            return None, "no .ARM.attributes section: ARM architecture level not verified"
        code = None
        for sub in section.iter_subsections():
            for subsub in sub.iter_subsubsections():
                for attr in subsub.iter_attributes():
                    if attr.tag == "TAG_CPU_ARCH":
                        code = int(attr.value)
        if code is None:
            return None, "no Tag_CPU_arch build attribute: ARM architecture level not verified"
        return code, None
    except (ELFError, struct.error, ValueError) as e:
        return None, f"ELF sections unreadable ({e}): ARM architecture level not verified"
