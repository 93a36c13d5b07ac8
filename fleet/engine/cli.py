"""A device's Docker engine driven through its own ``docker`` CLI over an SSH session.

The fallback way to reach an engine (:mod:`fleet.engine.api` is the first choice): every
step is one SSH exec of ``docker ...`` (``sudo -n docker`` when the host has
``ansible_become``), every argument quoted with :func:`shlex.quote`, and the output parsed
by :mod:`fleet.engine.state`. Registry credentials for a pull travel on the SSH channel's
stdin into a temporary ``DOCKER_CONFIG`` folder (umask 077) that the same remote command
removes: they never appear in a process's arguments, in the device's environment listing
or in a log. Container environment values go through ``--env-file`` on stdin for the same
reason.
"""

from __future__ import annotations

import shlex
from typing import TYPE_CHECKING, Mapping, Sequence

from fleet.engine.state import (
    ContainerState,
    DiskSpace,
    EngineError,
    EngineInfo,
    EngineVersion,
    ImageState,
    ImageSummary,
    parse_container,
    parse_df,
    parse_image,
    parse_image_list,
    parse_info,
    parse_version,
)
from fleet.platform import Platform

if TYPE_CHECKING:
    from fleet.engine import PullAuth
    from fleet.playbook import ContainerSpec
    from fleet.ssh import Session

__all__ = ["CliEngine", "create_args", "env_file", "DF_SCRIPT", "HTTP_CHECK_SCRIPT"]

#: Measure the free space of the engine's data root. The data root may be invisible to the
#: login (a chroot, another mount namespace): measure the nearest folder that exists, and
#: say which one.
DF_SCRIPT = r"""
p=$1
while [ -n "$p" ] && [ "$p" != / ] && [ ! -e "$p" ]; do p=${p%/*}; done
[ -n "$p" ] || p=/
echo "$p"
LC_ALL=C df -Pk "$p"
"""

# Pull with a throw-away Docker config read from stdin: the credentials are written by the
# shell's own redirection (no argument, no environment entry of another process), only the
# login user can read the folder (umask 077), and it is removed whatever the pull did.
_PULL_SCRIPT = r"""
umask 077
d=$(mktemp -d "${TMPDIR:-/tmp}/fleet-pull.XXXXXX") || exit 125
trap 'rm -rf "$d"' EXIT HUP INT TERM
cat > "$d/config.json" || exit 125
if [ "$1" = 1 ]; then shift; sudo -n env DOCKER_CONFIG="$d" docker "$@"
else shift; DOCKER_CONFIG="$d" docker "$@"; fi
"""

#: Fetch a URL on the device (a health check). `timeout` bounds wget instead of its own -T,
#: which makes Debian's static busybox 1.35 wget segfault (seen on every lab device).
HTTP_CHECK_SCRIPT = r"""
if command -v wget >/dev/null 2>&1; then
  if command -v timeout >/dev/null 2>&1; then timeout 10 wget -q -O /dev/null "$1"
  else wget -q -O /dev/null "$1"; fi
elif command -v curl >/dev/null 2>&1; then curl -fsS -m 10 -o /dev/null "$1"
else echo "neither wget nor curl on the device" >&2; exit 127; fi
"""


def create_args(spec: "ContainerSpec", image: str, name: str, labels: Mapping[str, str], *,
                env_from_stdin: bool, platform: Platform | None = None) -> list[str]:
    """``docker create`` arguments for ``spec`` (Docker CLI flags; ``docker run`` reference).

    A multi-word ``entrypoint`` becomes ``--entrypoint FIRST`` plus the rest in front of the
    command, as ``--entrypoint`` takes one executable. With ``env_from_stdin`` the
    environment is read from ``--env-file /proc/self/fd/0`` (sent on the SSH channel) so that
    values never appear in a process's arguments on the device.
    """
    args = ["--name", name]
    if platform is not None:
        args += ["--platform", str(platform)]
    if spec.env and env_from_stdin:
        args += ["--env-file", "/proc/self/fd/0"]
    for p in spec.ports:
        args += ["-p", p]
    for v in spec.volumes:
        args += ["-v", v]
    for d in spec.devices:
        args += ["--device", d]
    if spec.restart:
        args += ["--restart", spec.restart]
    if spec.privileged:
        args.append("--privileged")
    if spec.network_mode:
        args += ["--network", spec.network_mode]
    for k, v in {**spec.labels, **labels}.items():
        args += ["--label", f"{k}={v}"]
    tail: list[str] = []
    if spec.entrypoint:
        args += ["--entrypoint", spec.entrypoint[0]]
        tail = list(spec.entrypoint[1:])
    return args + [image] + tail + list(spec.command or ())


def env_file(env: Mapping[str, str]) -> bytes:
    """The ``--env-file`` text for ``env`` (``NAME=value`` lines). Raises ValueError for a
    value with a line break, which that format cannot carry (the playbook refuses such
    values when it is read)."""
    lines = []
    for k, v in env.items():
        if "\n" in v or "\r" in v:
            raise ValueError(f"environment value of {k}: a line break cannot be passed to docker")
        lines.append(f"{k}={v}")
    return ("\n".join(lines) + "\n").encode()


class CliEngine:
    """The Docker engine of one device, reached through an open :class:`fleet.ssh.Session`.

    ``device``: inventory name (for messages); ``become``: run docker through ``sudo -n``
    (``ansible_become``); ``timeout``: default seconds per command (pulls get their own).
    Every method raises :class:`EngineError` when docker fails (except the lookups, which
    return None for "no such image/container") and :class:`fleet.ssh.SSHError` when the
    connection fails.
    """

    way = "cli"

    def __init__(self, session: "Session", device: str, *, become: bool = False, timeout: float = 120.0):
        self.session = session
        self.device = device
        self.become = become
        self.timeout = timeout

    # -- plumbing -------------------------------------------------------------------------

    def _cmd(self, args: Sequence[str]) -> str:
        prefix = ["sudo", "-n", "docker"] if self.become else ["docker"]
        return " ".join(shlex.quote(a) for a in [*prefix, *args])

    def run(self, args: Sequence[str], *, timeout: float | None = None, check: bool = True,
            stdin: bytes | None = None) -> tuple[int, str, str]:
        """Run ``docker ARGS`` on the device; returns ``(exit status, stdout, stderr)``.
        With ``check`` a non-zero status raises :class:`EngineError`."""
        res = self.session.run(self._cmd(args), stdin=stdin, timeout=timeout or self.timeout)
        out = res.stdout.decode("utf-8", "replace")
        err = res.stderr.decode("utf-8", "replace")
        if check and res.exit_status != 0:
            raise EngineError(self.device, "docker " + " ".join(args), res.exit_status, err or out)
        return res.exit_status, out, err

    def shell(self, script: str, *args: str, stdin: bytes | None = None,
              timeout: float | None = None) -> tuple[int, str, str]:
        """Run a POSIX sh ``script`` with positional ``args`` (each quoted)."""
        command = "sh -c " + shlex.quote(script) + " fleet " + " ".join(shlex.quote(a) for a in args)
        res = self.session.run(command, stdin=stdin, timeout=timeout or self.timeout)
        return res.exit_status, res.stdout.decode("utf-8", "replace"), res.stderr.decode("utf-8", "replace")

    # -- facts ----------------------------------------------------------------------------

    def version(self) -> EngineVersion:
        _, out, _ = self.run(["version", "--format", "{{json .}}"])
        return parse_version(out)

    def info(self) -> EngineInfo:
        _, out, _ = self.run(["info", "--format", "{{json .}}"])
        return parse_info(out)

    def free_space(self, path: str) -> DiskSpace:
        """Free space of the filesystem holding ``path`` (the engine's data root), measured
        with the device's ``df -Pk`` (busybox's works). When ``path`` is not visible to the
        login, the nearest existing parent is measured (``DiskSpace.path`` says which)."""
        status, out, err = self.shell(DF_SCRIPT, path or "/")
        if status != 0:
            raise EngineError(self.device, f"df -Pk {path}", status, err or out)
        first, _, rest = out.partition("\n")
        try:
            return parse_df(rest, first.strip())
        except ValueError as e:
            raise EngineError(self.device, f"df -Pk {path}", status, str(e)) from None

    def http_check(self, url: str, timeout: float = 30.0) -> tuple[bool, str]:
        """Fetch ``url`` ON the device (wget or curl there); ``(ok, detail)``."""
        status, out, err = self.shell(HTTP_CHECK_SCRIPT, url, timeout=timeout)
        return status == 0, (err or out).strip()[-160:] or f"exit status {status}"

    # -- images ---------------------------------------------------------------------------

    def image(self, ref: str, platform: Platform | None = None) -> ImageState | None:
        """``docker image inspect [--platform P] REF``, or None when the engine has no such
        image. ``platform`` (containerd image store, API >= 1.49, docker/cli#5934) makes
        the fields describe that child of a multi-platform image."""
        args = ["image", "inspect"] + (["--platform", str(platform)] if platform else []) + [ref]
        status, out, err = self.run(args, check=False)
        if status != 0:
            if "no such image" in (err + out).lower():
                return None
            raise EngineError(self.device, "docker " + " ".join(args), status, err or out)
        return parse_image(out)

    def pull(self, ref: str, *, platform: Platform | None = None, auth: "PullAuth | None" = None,
             timeout: float = 1800.0) -> None:
        """``docker pull [--platform P] REF``.

        ``auth``: the registry credentials, written from stdin into a temporary
        ``DOCKER_CONFIG`` folder removed by the same command; None pulls with the device's
        own configuration.
        """
        args = ["pull"] + (["--platform", str(platform)] if platform else []) + [ref]
        shown = "docker " + " ".join(args)
        if auth is None:
            status, out, err = self.run(args, timeout=timeout, check=False)
        else:
            status, out, err = self.shell(_PULL_SCRIPT, "1" if self.become else "0", *args,
                                          stdin=auth.docker_config_json(), timeout=timeout)
        if status != 0:
            raise EngineError(self.device, shown, status, err or out)

    def images(self) -> list[ImageSummary]:
        """Every image the engine holds (:func:`fleet.engine.state.parse_image_list`)."""
        _, out, _ = self.run(["image", "ls", "--no-trunc", "--digests", "--format", "{{json .}}"])
        return parse_image_list(out)

    def remove_image(self, ref: str) -> bool:
        """``docker image rm REF``; False when the engine refused (in use, absent)."""
        status, _, _ = self.run(["image", "rm", ref], check=False)
        return status == 0

    # -- containers -----------------------------------------------------------------------

    def container(self, name: str) -> ContainerState | None:
        """``docker container inspect NAME``, or None when there is no such container."""
        status, out, err = self.run(["container", "inspect", name], check=False)
        if status != 0:
            text = (err + out).lower()
            if "no such container" in text or "no such object" in text:
                return None
            raise EngineError(self.device, f"docker container inspect {name}", status, err or out)
        return parse_container(out)

    def create_container(self, name: str, image: str, spec: "ContainerSpec", labels: Mapping[str, str], *,
                         platform: Platform | None = None) -> str:
        """``docker create`` container ``name`` from ``image`` with ``spec`` and ``labels``;
        the environment goes on stdin. Returns the container ID."""
        args = create_args(spec, image, name, labels, env_from_stdin=bool(spec.env), platform=platform)
        _, out, _ = self.run(["create", *args], stdin=env_file(spec.env) if spec.env else None)
        return out.strip().splitlines()[-1] if out.strip() else ""

    def start(self, name: str) -> None:
        self.run(["start", name])

    def stop(self, name: str, timeout_s: int = 10) -> None:
        self.run(["stop", "-t", str(timeout_s), name], timeout=timeout_s + self.timeout)

    def rename(self, old: str, new: str) -> None:
        self.run(["rename", old, new])

    def remove(self, name: str, force: bool = True) -> None:
        self.run(["rm", *(["-f"] if force else []), name])

    def logs(self, name: str, tail: int = 20) -> str:
        """Last ``tail`` lines of the container's output (stdout and stderr interleaved);
        empty when unavailable."""
        status, out, err = self.run(["logs", "--tail", str(tail), name], check=False)
        if status != 0:
            return ""
        return (out + err).strip()

    def exec(self, name: str, argv: Sequence[str], timeout: float = 30.0) -> tuple[int, str]:
        """``docker exec NAME ARGV...``; returns (exit status, combined output)."""
        status, out, err = self.run(["exec", name, *argv], timeout=timeout, check=False)
        return status, (out + err).strip()

    def names(self, prefix: str) -> list[str]:
        """Names of all containers (any state) whose name starts with ``prefix``."""
        _, out, _ = self.run(["ps", "-a", "--format", "{{.Names}}"])
        return [n for n in out.split() if n.startswith(prefix)]
