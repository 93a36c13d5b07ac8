"""Probe: collect a device's raw platform facts in ONE remote command.

Gathering and interpreting are separate (as pyinfra's facts are, pyinfra/facts/server.py):
this module only runs :data:`PROBE_SCRIPT` on a device and returns the text the device
printed, one string per fact; :func:`fleet.detect.detect` decides the platform from it.

Facts (every key optional; each value is the exact text the device printed, minus the one
trailing newline; a key is absent when its tool is missing, fails, or prints nothing):

==================  ==========================================================================
``uname_s``         ``uname -s`` (kernel name)
``uname_r``         ``uname -r`` (kernel release)
``uname_m``         ``uname -m`` (kernel machine: the KERNEL's architecture, e.g. ``aarch64``
                    under a 32-bit userland)
``getconf_long_bit`` ``getconf LONG_BIT`` (userland word size, ``32``/``64``)
``page_size``       ``getconf PAGESIZE`` (or ``PAGE_SIZE``), bytes
``elf_header``      lowercase hex of the first 20 bytes of a userland executable (``od`` /
                    ``hexdump`` reading its own ``/proc/self/exe``): class, byte order and
                    ``e_machine`` of the USERLAND (ELF gABI ``e_ident``/``e_machine``)
``dpkg_arch``       ``dpkg --print-architecture`` (busybox's ``dpkg`` applet rejects the option
                    with a usage text: that counts as missing)
``apk_arch``        ``apk --print-arch``
``opkg_arch``       ``opkg print-architecture`` (several ``arch NAME PRIORITY`` lines)
``rpm_arch``        ``rpm --eval '%{_arch}'``
``cpuinfo``         ``/proc/cpuinfo``
``os_release``      ``/etc/os-release`` or else ``/usr/lib/os-release`` (os-release(5))
``lscpu``           ``lscpu``
``engine_arch``     ``docker version`` Server.Arch: dockerd's GOARCH, what the engine pulls
``engine_os``       ``docker version`` Server.Os
``engine_version``  ``docker version`` Server.Version
``engine_info_arch`` ``docker info`` Architecture: the kernel machine as the engine sees it
                    (moby ``daemon/info.go``), NOT an OCI architecture
``fleet_apps``      one line per app fleet deployed on the device, from its transaction
                    records (:mod:`fleet.deploy.devicetxn`): ``NAME lock=DEPLOYMENT|-
                    outcome=DEPLOYMENT OUTCOME|- collected=DEPLOYMENT|-``: what holds the
                    app's lock, how its last transaction ended, and whether a controller
                    read that outcome (read with shell builtins, no process)
``engine_error``    present instead of the engine facts when a docker CLI exists but the engine
                    cannot be reached (the CLI's own error text, e.g. permission denied on
                    its socket; with become, also why ``sudo -n`` failed), or when no CLI is on
                    PATH but the engine socket ``/var/run/docker.sock`` exists
==================  ==========================================================================

No docker CLI and no socket: no engine key at all (the device has no engine).

Engine access: docker runs as the login user. With ``become`` (the host's
``ansible_become``) it runs as ``sudo -n docker`` when the login user cannot reach the
engine: at once when ``DOCKER_HOST`` is unset and ``/var/run/docker.sock`` exists but is
not writable for the login user (a builtin ``test -w``: no doomed CLI start), else after a
failed plain call. ``sudo -n`` never prompts; its refusal ("a password is required") or a
missing sudo is then the ``engine_error``. A call counts as reaching the engine only when
the CLI exits 0 AND its ``{{with .Server}}`` template printed the boundary token; the
values are what follows the token's last occurrence (stderr warnings come first).

Device-side cost: the script is POSIX sh (busybox ash, dash, bash), needs no Python, and
uses shell builtins wherever one does the job (tool presence with ``command -v``, values
split with parameter expansion, one ``uname`` for three facts), so it execs only uname, od,
getconf (twice), cat (twice), the package tools present, lscpu and docker. docker's CLI is
the costly part (a Go process start): it runs at most twice, ``docker version``
(Server.Arch/Os/Version in one template) and ``docker info`` (Architecture; no
``docker version`` field carries the kernel machine and no ``docker info`` field carries
the engine's GOARCH, so one template cannot give both), the second only when the first
reached the engine. Measured on the project's machine (2 cores, CPU time per probe run
locally as a non-root login under dash; the docker CLI failing on the socket's
permission): 27 ms in all, of which docker 17 ms and lscpu 2 ms; ``uname -m`` alone costs
2.5 ms. With the engine reachable, each docker call costs about 30 ms wall (20.10 and 28.x
clients, ``version`` and ``info`` alike). An arm64 busybox under QEMU user emulation:
about 160 ms CPU per probe. Reading files with ``cat`` measured cheaper than a ``read``
loop in every shell (dash's ``read`` costs a syscall per byte).

Output framing: the client picks a random 128-bit boundary token per probe and passes it as
an argument. The script prints a header ``FLEET-PROBE/1 <token>`` and, per fact,
``<token> <key>\\n<text>\\n<token> =<exit status>\\n``, then ``<token> end``. Device text
can contain the token only by echoing the command's arguments; the one fact made of such
text, ``engine_error`` (docker names e.g. its DOCKER_HOST socket path), has the token
replaced by ``<boundary>`` on the device, so arbitrary device text (including the framing
of an earlier probe) cannot break parsing. Text before the header (login banners) and
after the end marker is ignored.
"""

from __future__ import annotations

import re
import secrets
import shlex
from typing import TYPE_CHECKING

from fleet.errors import FleetError
from fleet.labels import STATE_DIR

if TYPE_CHECKING:  # fleet.ssh imports paramiko; keep this module importable without it
    from fleet.ssh import Session

__all__ = [
    "FACT_KEYS",
    "PROBE_SCRIPT",
    "ProbeError",
    "probe_command",
    "parse_probe_output",
    "gather",
]

#: Every key a probe can return, in the order the script prints them.
FACT_KEYS: tuple[str, ...] = (
    "uname_s",
    "uname_r",
    "uname_m",
    "getconf_long_bit",
    "page_size",
    "elf_header",
    "dpkg_arch",
    "apk_arch",
    "opkg_arch",
    "rpm_arch",
    "cpuinfo",
    "os_release",
    "lscpu",
    "engine_arch",
    "engine_os",
    "engine_version",
    "engine_info_arch",
    "engine_error",
    "fleet_apps",
)

#: First line of the probe's output; the version lets a future parser read older devices.
HEADER = "FLEET-PROBE/1"

# The script. Arguments: $1 boundary token, $2 become ("1": docker through `sudo -n`),
# optional $3 "0": skip the engine section (the caller reads the engine through its API on
# the same SSH connection, fleet.engine.probe, so no docker CLI starts on the device).
# Conventions: f KEY CMD... prints one framed fact with CMD's exit status (the parser drops
# facts whose status is not 0 or whose text is empty); `command -v` (a builtin) skips
# missing tools without a fork. Files are copied with `cat` (measured: cheaper in CPU than
# a `read` loop under dash, bash and busybox ash, natively and under QEMU, where `read`
# costs a syscall per byte); the `read` loop `r` is only the fallback for a device without
# cat. LC_ALL=C keeps lscpu/getconf/docker output untranslated; `set -f` keeps the
# unquoted `set -- $(...)` splits of uname/od output from glob expansion.
PROBE_SCRIPT = r"""B=$1 S=$2 E=${3:-1}
set -f
LC_ALL=C
export LC_ALL
nl='
'
f() { printf '%s %s\n' "$B" "$1"; shift; "$@" 2>/dev/null; printf '\n%s =%s\n' "$B" "$?"; }
v() { printf '%s %s\n%s\n%s =0\n' "$B" "$1" "$2" "$B"; }
r() { while IFS= read -r l; do printf '%s\n' "$l"; done; printf %s "$l"; }
h() { [ $# -eq 20 ] && printf %s "$@"; }
c() { command -v "$1" >/dev/null 2>&1; }
printf '%s %s\n' FLEET-PROBE/1 "$B"
set -- $(uname -s -r -m 2>/dev/null)
if [ $# -eq 3 ]; then v uname_s "$1"; v uname_r "$2"; v uname_m "$3"
else f uname_s uname -s; f uname_r uname -r; f uname_m uname -m; fi
if c getconf; then
 f getconf_long_bit getconf LONG_BIT
 if p=$(getconf PAGESIZE 2>/dev/null); then v page_size "$p"; else f page_size getconf PAGE_SIZE; fi
fi
if c od; then set -- $(od -An -tx1 -N20 /proc/self/exe 2>/dev/null)
elif c hexdump; then set -- $(hexdump -n20 -ve '1/1 " %02x"' /proc/self/exe 2>/dev/null)
else set --; fi
f elf_header h "$@"
c dpkg && f dpkg_arch dpkg --print-architecture
c apk && f apk_arch apk --print-arch
c opkg && f opkg_arch opkg print-architecture
c rpm && f rpm_arch rpm --eval '%{_arch}'
if c cat; then R=cat; else R=r; fi
[ -r /proc/cpuinfo ] && f cpuinfo $R </proc/cpuinfo
if [ -r /etc/os-release ]; then f os_release $R </etc/os-release
elif [ -r /usr/lib/os-release ]; then f os_release $R </usr/lib/os-release; fi
c lscpu && f lscpu lscpu
if [ "$E" = 0 ]; then :
elif c docker; then
 T="{{with .Server}}$B{{.Arch}}$nl{{.Os}}$nl{{.Version}}{{end}}"
 q() {
  ok=; o=$("$@" version --format "$T" </dev/null 2>&1) && case $o in *"$B"*) ok=1; o=${o##*"$B"}; return;; esac
  while :; do case $o in "$nl"*) o=${o#"$nl"};; *) break;; esac; done
 }
 D= e= ok=
 if [ "$S" = 1 ] && [ -z "${DOCKER_HOST-}" ] && [ -S /var/run/docker.sock ] && ! [ -w /var/run/docker.sock ]; then D="sudo -n"
 else q docker; [ -z "$ok" ] && { e=$o; [ "$S" = 1 ] && D="sudo -n"; }
 fi
 if [ -n "$D" ]; then
  if c sudo; then q sudo -n docker; [ -z "$ok" ] && e="$e${e:+$nl}sudo -n docker: $o"
  else e="$e${e:+$nl}become: sudo not found"; D=; fi
 fi
 if [ -n "$ok" ]; then
  v engine_arch "${o%%"$nl"*}"; o=${o#*"$nl"}
  v engine_os "${o%%"$nl"*}"; v engine_version "${o#*"$nl"}"
  i=$($D docker info --format "$B{{.Architecture}}" </dev/null 2>/dev/null) &&
   case $i in *"$B"*) v engine_info_arch "${i##*"$B"}";; esac
 else
  while :; do case $e in *"$B"*) e="${e%%"$B"*}<boundary>${e#*"$B"}";; *) break;; esac; done
  v engine_error "$e"
 fi
elif [ -S /var/run/docker.sock ]; then
 v engine_error "no docker CLI on PATH, but the engine socket /var/run/docker.sock exists"
fi
a=
set +f
for p in "@STATE_DIR@"/apps/*/; do
 [ -d "$p" ] || continue
 n=${p%/}; n=${n##*/}; l=- o=- c=-
 [ -r "$p/lock/info" ] && { read -r l < "$p/lock/info"; l=${l#deployment=}; }
 [ -r "$p/outcome" ] && { { read -r o; read -r x; } < "$p/outcome"; o="${o#deployment=} ${x#outcome=}"; }
 [ -r "$p/collected" ] && read -r c < "$p/collected"
 a="$a${a:+$nl}$n lock=$l outcome=$o collected=$c"
done
set -f
[ -n "$a" ] && v fleet_apps "$a"
printf '%s end\n' "$B"
"""

PROBE_SCRIPT = PROBE_SCRIPT.replace("@STATE_DIR@", STATE_DIR)

_TOKEN = re.compile(r"[0-9a-f]{32}")
_HEADER = re.compile(rb"(?:^|\n)" + re.escape(HEADER.encode()) + rb" ([0-9a-f]{32})\n")


class ProbeError(FleetError):
    """The probe's output could not be read (no header, truncated); exit status 1."""


def new_boundary() -> str:
    """A fresh random boundary token: 32 lowercase hex digits (128 bits)."""
    return secrets.token_hex(16)


def probe_command(become: bool, boundary: str | None = None, *, engine_cli: bool = True) -> str:
    """The one shell command that probes a device, ready for ``Session.run``.

    ``become`` (the host's ``ansible_become``) runs the docker calls through ``sudo -n``
    when the login user cannot reach the engine. ``boundary`` is the framing token (32 hex
    digits; a fresh random one when None); pass the same one to
    :func:`parse_probe_output`. ``engine_cli=False`` leaves out the engine section (no
    ``docker`` CLI start; :func:`fleet.engine.probe.gather_with_api` asks the engine's API
    instead). Every value is quoted with :func:`shlex.quote`, so the command is safe for
    any POSIX login shell. Raises ValueError on a malformed boundary.
    """
    token = new_boundary() if boundary is None else boundary
    if not _TOKEN.fullmatch(token):
        raise ValueError(f"probe boundary must be 32 lowercase hex digits, got {token!r}")
    return " ".join(
        ["sh", "-c", shlex.quote(PROBE_SCRIPT), "fleet-probe", token, "1" if become else "0"]
        + ([] if engine_cli else ["0"])
    )


def parse_probe_output(data: bytes, boundary: str | None = None) -> dict[str, str]:
    """Turn the probe's stdout into ``{fact key: text}`` (keys from :data:`FACT_KEYS`).

    Each value loses exactly one trailing newline and is otherwise the device's text
    (decoded as UTF-8, invalid bytes replaced). Facts whose command failed (non-zero exit
    status) or printed nothing are left out. ``boundary``: the token the command was built
    with; when None, the first probe header in ``data`` names it. Output before the header
    (a login banner) is ignored. Raises :class:`ProbeError` when the header or the end
    marker is missing (the script did not run, or its output was cut short).
    """
    if boundary is None:
        m = _HEADER.search(data)
        if m is None:
            raise ProbeError(f"no {HEADER} header in the probe output: {_excerpt(data)}")
        token = m.group(1)
        start = m.end()
    else:
        token = boundary.encode()
        head = f"{HEADER} {boundary}\n".encode()
        at = data.find(head)
        if at < 0 or (at > 0 and data[at - 1 : at] != b"\n"):
            raise ProbeError(f"no {HEADER} header in the probe output: {_excerpt(data)}")
        start = at + len(head)
    end_marker = token + b" end\n"
    end = data.find(end_marker, start)
    if end < 0 or data[end - 1 : end] != b"\n" and end != start:
        raise ProbeError("the probe output was cut short (no end marker)")
    body = data[start:end]
    facts: dict[str, str] = {}
    t = re.escape(token)
    record = re.compile(rb"" + t + rb" ([a-z_]+)\n(.*?)\n" + t + rb" =(\d+)\n", re.DOTALL)
    pos = 0
    while pos < len(body):
        m = record.match(body, pos)
        if m is None:
            raise ProbeError(f"malformed probe output at byte {start + pos}")
        pos = m.end()
        key, text, status = m.group(1).decode(), m.group(2), int(m.group(3))
        if text.endswith(b"\n"):
            text = text[:-1]
        if status != 0 or not text or key not in FACT_KEYS:
            continue
        facts[key] = text.decode("utf-8", errors="replace")
    return facts


def gather(session: "Session", become: bool) -> dict[str, str]:
    """Run the probe over ``session`` (one ``Session.run``) and return its facts.

    Shape as :func:`parse_probe_output`. Raises the session's SSHError subclasses
    (unreachable, timeout, ...) and :class:`ProbeError` when the device's shell did not
    run the script (exit status and stderr in the message).
    """
    token = new_boundary()
    result = session.run(probe_command(become, token), timeout=session.target.probe_timeout, max_output=4 << 20)
    try:
        return parse_probe_output(result.stdout, token)
    except ProbeError as exc:
        detail = result.stderr.decode("utf-8", errors="replace").strip()
        raise ProbeError(
            f"{exc} (exit status {result.exit_status}{'; ' + _short(detail) if detail else ''})"
        ) from None


def _short(text: str, limit: int = 300) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _excerpt(data: bytes) -> str:
    return repr(_short(data.decode("utf-8", errors="replace"), 120)) if data else "(empty)"
