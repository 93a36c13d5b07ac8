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
from fleet.engine.objects import NetworkState, VolumeState, parse_network, parse_volume
from fleet.platform import Platform

if TYPE_CHECKING:
    from fleet.compose import ServiceSpec
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


def create_args(spec: "ContainerSpec | ServiceSpec", image: str, name: str, labels: Mapping[str, str], *,
                env_from_stdin: bool, platform: Platform | None = None) -> list[str]:
    """``docker create`` arguments for ``spec`` (a :class:`fleet.compose.ServiceSpec`, or a
    playbook's :class:`~fleet.playbook.ContainerSpec`, converted by
    :func:`fleet.compose.as_service`); Docker CLI flags, ``docker run`` reference. The
    same settings as :func:`fleet.engine.wire.create_body` (docs/compose.md lists each
    flag beside its API field).

    A multi-word ``entrypoint`` becomes ``--entrypoint FIRST`` plus the rest in front of the
    command, as ``--entrypoint`` takes one executable. With ``env_from_stdin`` the
    environment is read from ``--env-file /proc/self/fd/0`` (sent on the SSH channel) so that
    values never appear in a process's arguments on the device. Only the first of
    ``spec.networks`` is joined here (``--network``, ``--network-alias``): Docker before 25
    takes one network at create time; :meth:`CliEngine.create_container` connects the
    others. A health check test in exec form (``CMD``) cannot be given to the CLI: it
    becomes ``--health-cmd`` with each argument shell-quoted, run by ``/bin/sh`` in the
    container (``CMD-SHELL``).
    """
    from fleet.compose import as_service
    from fleet.engine.wire import go_duration

    s = as_service(spec)
    args = ["--name", name]
    if platform is not None:
        args += ["--platform", str(platform)]
    if s.env and env_from_stdin:
        args += ["--env-file", "/proc/self/fd/0"]
    for p in s.ports:
        args += ["-p", p]
    for e in s.expose:
        args += ["--expose", e]
    for m in s.mounts:
        args += ["-v", m.bind_string()]
    for path, opts in s.tmpfs.items():
        args += ["--tmpfs", f"{path}:{opts}" if opts else path]
    for d in s.devices:
        args += ["--device", d]
    for flag, values in (("--cap-add", s.cap_add), ("--cap-drop", s.cap_drop), ("--group-add", s.group_add),
                         ("--add-host", s.extra_hosts), ("--security-opt", s.security_opt), ("--dns", s.dns)):
        for v in values:
            args += [flag, v]
    for k, v in s.sysctls.items():
        args += ["--sysctl", f"{k}={v}"]
    for u in s.ulimits:
        args += ["--ulimit", f"{u.name}={u.soft}:{u.hard}"]
    if s.restart:
        args += ["--restart", s.restart]
    if s.privileged:
        args.append("--privileged")
    if s.read_only:
        args.append("--read-only")
    if s.init is not None:
        args.append("--init" if s.init else "--init=false")
    for flag, value in (("--user", s.user), ("--workdir", s.working_dir), ("--hostname", s.hostname),
                        ("--stop-signal", s.stop_signal), ("--memory", s.mem_limit),
                        ("--memory-reservation", s.mem_reservation), ("--memory-swap", s.memswap_limit),
                        ("--shm-size", s.shm_size), ("--pids-limit", s.pids_limit), ("--cpus", s.cpus)):
        if value is not None and value != "":
            args += [flag, str(value)]
    if s.stop_grace_period is not None:
        args += ["--stop-timeout", str(int(s.stop_grace_period))]
    if s.logging is not None:
        if s.logging.driver:
            args += ["--log-driver", s.logging.driver]
        for k, v in s.logging.options.items():
            args += ["--log-opt", f"{k}={v}"]
    h = s.healthcheck
    if h is not None:
        if h.test and h.test[0] == "NONE":
            args.append("--no-healthcheck")
        elif h.test:
            args += ["--health-cmd", h.test[1] if h.test[0] == "CMD-SHELL" else shlex.join(h.test[1:])]
        for flag, value in (("--health-interval", h.interval), ("--health-timeout", h.timeout),
                            ("--health-start-period", h.start_period), ("--health-start-interval", h.start_interval)):
            if value is not None:
                args += [flag, go_duration(value)]
        if h.retries is not None:
            args += ["--health-retries", str(h.retries)]
    if s.network_mode:
        args += ["--network", s.network_mode]
    elif s.networks:
        args += ["--network", s.networks[0].network]
        for alias in s.networks[0].aliases:
            args += ["--network-alias", alias]
    for k, v in {**s.labels, **labels}.items():
        args += ["--label", f"{k}={v}"]
    tail: list[str] = []
    if s.entrypoint:
        args += ["--entrypoint", s.entrypoint[0]]
        tail = list(s.entrypoint[1:])
    return args + [image] + tail + list(s.command or ())


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

    def create_container(self, name: str, image: str, spec: "ContainerSpec | ServiceSpec",
                         labels: Mapping[str, str], *, platform: Platform | None = None) -> str:
        """``docker create`` container ``name`` from ``image`` with ``spec`` (a
        :class:`fleet.compose.ServiceSpec` or a playbook's ContainerSpec) and ``labels``;
        the environment goes on stdin. A service on several networks is connected to the
        others right after (``docker network connect --alias``). Returns the container ID."""
        from fleet.compose import as_service

        s = as_service(spec)
        args = create_args(s, image, name, labels, env_from_stdin=bool(s.env), platform=platform)
        _, out, _ = self.run(["create", *args], stdin=env_file(s.env) if s.env else None)
        cid = out.strip().splitlines()[-1] if out.strip() else ""
        if not s.network_mode:
            for net in s.networks[1:]:
                self.connect_network(net.network, name, net.aliases)
        return cid

    # -- networks and volumes ---------------------------------------------------------------

    def network(self, name: str) -> NetworkState | None:
        """``docker network inspect NAME``, or None when there is no network of that exact
        name (the engine also matches ID prefixes: those are not this network)."""
        status, out, err = self.run(["network", "inspect", name], check=False)
        if status != 0:
            text = (err + out).lower()
            if "no such network" in text or "not found" in text:
                return None
            raise EngineError(self.device, f"docker network inspect {name}", status, err or out)
        state = parse_network(out)
        return state if name in (state.name, state.id) else None

    def create_network(self, name: str, *, driver: str | None = None, options: Mapping[str, str] | None = None,
                       labels: Mapping[str, str] | None = None, internal: bool = False) -> str:
        """``docker network create`` (labels, driver and its options); returns its ID."""
        args = ["network", "create"] + (["--driver", driver] if driver else [])
        for k, v in (options or {}).items():
            args += ["--opt", f"{k}={v}"]
        for k, v in (labels or {}).items():
            args += ["--label", f"{k}={v}"]
        if internal:
            args.append("--internal")
        _, out, _ = self.run(args + [name])
        return out.strip().splitlines()[-1] if out.strip() else ""

    def connect_network(self, network: str, container: str, aliases: Sequence[str] = ()) -> None:
        """``docker network connect [--alias A]... NETWORK CONTAINER``."""
        args = ["network", "connect"]
        for a in aliases:
            args += ["--alias", a]
        self.run(args + [network, container])

    def volume(self, name: str) -> VolumeState | None:
        """``docker volume inspect NAME``, or None when there is no such volume."""
        status, out, err = self.run(["volume", "inspect", name], check=False)
        if status != 0:
            text = (err + out).lower()
            if "no such volume" in text or "not found" in text:
                return None
            raise EngineError(self.device, f"docker volume inspect {name}", status, err or out)
        state = parse_volume(out)
        return state if state.name == name else None

    def create_volume(self, name: str, *, driver: str | None = None, options: Mapping[str, str] | None = None,
                      labels: Mapping[str, str] | None = None) -> str:
        """``docker volume create`` (labels, driver and its options); returns its name.
        fleet never removes a volume."""
        args = ["volume", "create"] + (["--driver", driver] if driver else [])
        for k, v in (options or {}).items():
            args += ["--opt", f"{k}={v}"]
        for k, v in (labels or {}).items():
            args += ["--label", f"{k}={v}"]
        _, out, _ = self.run(args + [name])
        return out.strip().splitlines()[-1] if out.strip() else name

    # -- containers (continued) ------------------------------------------------------------

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
