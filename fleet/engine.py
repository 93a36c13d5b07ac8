"""A device's Docker engine, driven through its own ``docker`` CLI over an SSH session.

Two halves, kept apart as in pyinfra's facts (style.md):

* pure parsers of what the engine prints - :func:`parse_version`, :func:`parse_info`,
  :func:`parse_image`, :func:`parse_container`, :func:`parse_df` - tested on JSON captured
  from real engines (``tests/data/engine/``), for both image stores:

  - the classic ("graphdriver") store, default up to Docker 28: ``image inspect`` ``Id`` is
    the image's CONFIG digest;
  - the containerd image store (experimental in 24.0, default on fresh 29.0 installs):
    ``Id`` is the digest of the image's target, i.e. the INDEX digest after a pull of a
    multi-arch reference, and the child is only identified by its layers (``RootFS.Layers``)
    or, from API 1.48, by ``Descriptor``/``Manifests`` and the container's
    ``ImageManifestDescriptor`` (library-notes.md section 1.7; moby
    ``daemon/containerd/image_inspect.go``, moby#48855). Its ``docker info`` carries
    ``["driver-type", "io.containerd.snapshotter.v1"]`` in ``DriverStatus``
    (moby ``daemon/containerd/service.go``).

* :class:`Engine`: the commands, run through the device's shell (``sudo -n`` first when
  the host has ``ansible_become``), every argument quoted with :func:`shlex.quote`.
  Registry credentials for a pull travel on the SSH channel's stdin into a temporary
  ``DOCKER_CONFIG`` folder (umask 077) that the same remote command removes: they never
  appear in a process's arguments, in the device's environment listing or in a log.
"""

from __future__ import annotations

import json
import re
import shlex
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

from fleet.errors import FleetError
from fleet.platform import Platform, PlatformError, normalize
from fleet.registry.credentials import Credentials, docker_config_json

__all__ = [
    "EngineError",
    "EngineVersion",
    "EngineInfo",
    "ImageState",
    "ContainerState",
    "DiskSpace",
    "parse_version",
    "parse_info",
    "parse_image",
    "parse_container",
    "parse_df",
    "docker_auth_config",
    "Engine",
    "CONTAINERD_SNAPSHOTTER",
]

#: ``DriverStatus`` entry of an engine on the containerd image store.
CONTAINERD_SNAPSHOTTER = "io.containerd.snapshotter.v1"


class EngineError(FleetError):
    """A docker command on a device failed; ``str()`` names the device, the command and the
    engine's own message. ``command`` (without secrets), ``exit_status``, ``output``."""

    def __init__(self, device: str, command: str, exit_status: int, output: str):
        self.device = device
        self.command = command
        self.exit_status = exit_status
        self.output = output.strip()
        detail = _last_lines(self.output, 3) or f"exit status {exit_status}"
        super().__init__(f"{device}: `{command}` failed: {detail}")


def _last_lines(text: str, n: int) -> str:
    lines = [ln for ln in text.strip().splitlines() if ln.strip()]
    return " | ".join(lines[-n:])


def _load(raw: bytes | str | Mapping[str, Any] | Sequence[Any]) -> Any:
    if isinstance(raw, (bytes, bytearray)):
        raw = raw.decode("utf-8", "replace")
    if isinstance(raw, str):
        raw = json.loads(raw)
    return raw


def _single(raw: Any, what: str) -> Mapping[str, Any]:
    """``docker X inspect`` prints a list; ``--format '{{json .}}'`` one object."""
    doc = _load(raw)
    if isinstance(doc, list):
        if len(doc) != 1:
            raise ValueError(f"{what}: expected one object, got a list of {len(doc)}")
        doc = doc[0]
    if not isinstance(doc, Mapping):
        raise ValueError(f"{what}: expected a JSON object")
    return doc


def _platform(os_: str | None, arch: str | None, variant: str | None) -> Platform | None:
    if not os_ or not arch:
        return None
    try:
        return normalize(os_, arch, variant or "")
    except PlatformError:
        return None


# --------------------------------------------------------------------------- version


@dataclass(frozen=True)
class EngineVersion:
    """``docker version``: ``server_version`` (``"20.10.24+dfsg1"``), ``api_version``
    (``"1.41"``), ``min_api_version``, ``os``/``arch`` (dockerd's GOOS/GOARCH: what its pulls
    select by, moby ``daemon/info.go``), ``client_version``, ``client_api_version``."""

    server_version: str
    api_version: str
    os: str
    arch: str
    min_api_version: str = ""
    client_version: str = ""
    client_api_version: str = ""

    @property
    def major(self) -> int | None:
        m = re.match(r"^\s*v?(\d+)", self.server_version)
        return int(m.group(1)) if m else None

    def api_at_least(self, version: str) -> bool:
        """True when the server's API version is >= ``version`` (``"1.48"``)."""
        def t(v: str) -> tuple[int, ...]:
            return tuple(int(x) for x in re.findall(r"\d+", v)[:2]) or (0,)
        return t(self.api_version) >= t(version)


def parse_version(raw: bytes | str | Mapping[str, Any]) -> EngineVersion:
    """Parse ``docker version --format '{{json .}}'`` (``{"Client": {...}, "Server": {...}}``).

    Works for engines 20.10 through 29 (``Server.Version``/``ApiVersion``/``Os``/``Arch``
    have been there since API 1.24). Raises ValueError when the document has no Server part
    (the CLI could not reach the engine).
    """
    doc = _load(raw)
    server = doc.get("Server") if isinstance(doc, Mapping) else None
    if not isinstance(server, Mapping):
        raise ValueError("docker version: no Server section (the engine did not answer)")
    client = doc.get("Client") or {}
    return EngineVersion(
        server_version=str(server.get("Version") or ""),
        api_version=str(server.get("ApiVersion") or ""),
        os=str(server.get("Os") or ""),
        arch=str(server.get("Arch") or ""),
        min_api_version=str(server.get("MinAPIVersion") or ""),
        client_version=str(client.get("Version") or ""),
        client_api_version=str(client.get("ApiVersion") or ""),
    )


# --------------------------------------------------------------------------- info


@dataclass(frozen=True)
class EngineInfo:
    """``docker info``: ``server_version``; ``architecture`` (the KERNEL's ``uname -m``,
    not an OCI name: ``aarch64`` under a 32-bit engine on a Pi 4); ``os_type``;
    ``docker_root_dir`` (its data root, where pulled layers go); ``driver`` (storage
    driver); ``containerd_store`` (True on the containerd image store); ``images`` and
    ``containers`` counts."""

    server_version: str
    architecture: str
    os_type: str
    docker_root_dir: str
    driver: str
    containerd_store: bool
    images: int = 0
    containers: int = 0

    @property
    def store(self) -> str:
        """``"containerd"`` or ``"classic"``."""
        return "containerd" if self.containerd_store else "classic"


def parse_info(raw: bytes | str | Mapping[str, Any]) -> EngineInfo:
    """Parse ``docker info --format '{{json .}}'``. The containerd image store is recognised
    by ``["driver-type", "io.containerd.snapshotter.v1"]`` in ``DriverStatus`` (moby
    ``daemon/containerd/service.go``). Raises ValueError on a non-object."""
    doc = _load(raw)
    if not isinstance(doc, Mapping):
        raise ValueError("docker info: expected a JSON object")
    status = doc.get("DriverStatus") or []
    c8d = any(isinstance(p, (list, tuple)) and len(p) == 2 and p[0] == "driver-type"
              and p[1] == CONTAINERD_SNAPSHOTTER for p in status)
    return EngineInfo(
        server_version=str(doc.get("ServerVersion") or ""),
        architecture=str(doc.get("Architecture") or ""),
        os_type=str(doc.get("OSType") or ""),
        docker_root_dir=str(doc.get("DockerRootDir") or ""),
        driver=str(doc.get("Driver") or ""),
        containerd_store=c8d,
        images=int(doc.get("Images") or 0),
        containers=int(doc.get("Containers") or 0),
    )


# --------------------------------------------------------------------------- image


@dataclass(frozen=True)
class ImageState:
    """``docker image inspect``.

    ``id``: classic store - the config digest; containerd store - the target's digest (the
    index digest after a pull by index). ``os``/``architecture``/``variant`` from the image
    config (containerd store: of the host-preferred child, possibly empty when that child
    was never pulled). ``diff_ids``: ``RootFS.Layers`` (uncompressed layer digests, the same
    on every store). ``descriptor``: ``Descriptor`` (API >= 1.48, containerd store) or
    None. ``manifests``: ``Manifests`` (``?manifests=1``) as given, else empty.
    """

    id: str
    repo_digests: tuple[str, ...]
    repo_tags: tuple[str, ...]
    os: str
    architecture: str
    variant: str
    diff_ids: tuple[str, ...]
    size: int = 0
    labels: Mapping[str, str] = field(default_factory=dict)
    descriptor: Mapping[str, Any] | None = None
    manifests: tuple[Mapping[str, Any], ...] = ()

    @property
    def platform(self) -> Platform | None:
        return _platform(self.os, self.architecture, self.variant)

    @property
    def platform_text(self) -> str:
        parts = [self.os or "?", self.architecture or "?"] + ([self.variant] if self.variant else [])
        return "/".join(parts)


def parse_image(raw: bytes | str | Mapping[str, Any] | Sequence[Any]) -> ImageState:
    """Parse ``docker image inspect REF`` (a one-element list) or its ``{{json .}}`` form.
    Raises ValueError when it is not one image object."""
    doc = _single(raw, "docker image inspect")
    rootfs = doc.get("RootFS") or {}
    config = doc.get("Config") or {}
    return ImageState(
        id=str(doc.get("Id") or ""),
        repo_digests=tuple(doc.get("RepoDigests") or ()),
        repo_tags=tuple(doc.get("RepoTags") or ()),
        os=str(doc.get("Os") or ""),
        architecture=str(doc.get("Architecture") or ""),
        variant=str(doc.get("Variant") or ""),
        diff_ids=tuple(rootfs.get("Layers") or ()),
        size=int(doc.get("Size") or 0),
        labels=dict(config.get("Labels") or {}),
        descriptor=doc.get("Descriptor"),
        manifests=tuple(doc.get("Manifests") or ()),
    )


# --------------------------------------------------------------------------- container


@dataclass(frozen=True)
class ContainerState:
    """``docker container inspect``.

    ``name`` without the leading ``/``; ``image_id``: ``.Image`` (the image's ID: config
    digest on the classic store, target digest on the containerd store); ``image_ref``:
    ``.Config.Image`` as created; ``labels``; ``status`` (created, running, restarting,
    exited, ...), ``running``, ``restarting``, ``exit_code``, ``oom_killed``, ``error``
    (``State.Error``: why it could not start), ``started_at``/``finished_at`` (RFC 3339),
    ``restart_count``, ``health`` (``State.Health.Status`` or None), ``manifest_digest``
    (``ImageManifestDescriptor.digest``, API >= 1.48 on the containerd store, else None),
    ``network_mode``.
    """

    id: str
    name: str
    image_id: str
    image_ref: str
    labels: Mapping[str, str]
    status: str
    running: bool
    restarting: bool
    exit_code: int
    oom_killed: bool
    error: str
    started_at: str
    finished_at: str
    restart_count: int
    health: str | None = None
    manifest_digest: str | None = None
    network_mode: str = ""


def parse_container(raw: bytes | str | Mapping[str, Any] | Sequence[Any]) -> ContainerState:
    """Parse ``docker container inspect NAME`` (list or single object). Raises ValueError."""
    doc = _single(raw, "docker container inspect")
    state = doc.get("State") or {}
    config = doc.get("Config") or {}
    host = doc.get("HostConfig") or {}
    health = state.get("Health") or None
    mdesc = doc.get("ImageManifestDescriptor") or None
    return ContainerState(
        id=str(doc.get("Id") or ""),
        name=str(doc.get("Name") or "").lstrip("/"),
        image_id=str(doc.get("Image") or ""),
        image_ref=str(config.get("Image") or ""),
        labels=dict(config.get("Labels") or {}),
        status=str(state.get("Status") or ""),
        running=bool(state.get("Running")),
        restarting=bool(state.get("Restarting")),
        exit_code=int(state.get("ExitCode") or 0),
        oom_killed=bool(state.get("OOMKilled")),
        error=str(state.get("Error") or ""),
        started_at=str(state.get("StartedAt") or ""),
        finished_at=str(state.get("FinishedAt") or ""),
        restart_count=int(doc.get("RestartCount") or 0),
        health=str(health.get("Status")) if isinstance(health, Mapping) and health.get("Status") else None,
        manifest_digest=str(mdesc.get("digest")) if isinstance(mdesc, Mapping) and mdesc.get("digest") else None,
        network_mode=str(host.get("NetworkMode") or ""),
    )


# --------------------------------------------------------------------------- df


@dataclass(frozen=True)
class DiskSpace:
    """One ``df -Pk PATH`` row: ``filesystem``, ``total_kib``, ``used_kib``,
    ``available_kib`` (what an unprivileged writer may still use), ``mount``, and ``path``
    (what was measured)."""

    filesystem: str
    total_kib: int
    used_kib: int
    available_kib: int
    mount: str
    path: str = ""

    @property
    def available_bytes(self) -> int:
        return self.available_kib * 1024


# Filesystem, 1024-blocks, Used, Available, Capacity ("24%" or "-"), Mounted on; names and
# mount points may contain spaces, so the numbers are anchored on the capacity column.
_DF_ROW = re.compile(r"^(.*?)\s+(\d+)\s+(\d+)\s+(\d+)\s+(\d+%|-)\s+(.+)$")


def parse_df(text: str, path: str = "") -> DiskSpace:
    """Parse POSIX ``df -Pk`` output (GNU coreutils and busybox print the same columns:
    Filesystem, 1024-blocks, Used, Available, Capacity, Mounted on). A long filesystem name
    never wraps with ``-P`` (POSIX.1 df "-P"). Raises ValueError when no data row parses."""
    for ln in text.splitlines():
        m = _DF_ROW.match(ln.strip())
        if m:
            fs, total, used, avail, _, mount = m.groups()
            return DiskSpace(fs, int(total), int(used), int(avail), mount, path)
    raise ValueError(f"df -Pk: no data row in {text.strip()[:200]!r}")


# --------------------------------------------------------------------------- credentials


def docker_auth_config(registry: str, username: str, password: str) -> bytes:
    """The Docker CLI ``config.json`` holding one registry's credentials
    (``{"auths": {REGISTRY: {"auth": base64("user:password")}}}``, docker/cli
    ``cli/config/configfile``). Sent to the device on stdin, never as an argument.
    A thin wrapper of :func:`fleet.registry.docker_config_json`, the one encoder."""
    return docker_config_json(Credentials(username, password), registry)


# --------------------------------------------------------------------------- engine


_DF_SCRIPT = r"""
p=$1
# The data root may be invisible to the login (a chroot, another mount namespace): measure
# the nearest folder that exists, and say which one.
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


class Engine:
    """The Docker engine of one device, reached through an open :class:`fleet.ssh.Session`.

    ``device``: inventory name (for messages); ``become``: run docker through ``sudo -n``
    (``ansible_become``); ``timeout``: default seconds per command (pulls get their own).
    Every method raises :class:`EngineError` when docker fails (except the lookups, which
    return None for "no such image/container") and :class:`fleet.ssh.SSHError` when the
    connection fails.
    """

    def __init__(self, session: Any, device: str, *, become: bool = False, timeout: float = 120.0):
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
        command = self._cmd(args)
        res = self.session.run(command, stdin=stdin, timeout=timeout or self.timeout)
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
        status, out, err = self.shell(_DF_SCRIPT, path or "/")
        if status != 0:
            raise EngineError(self.device, f"df -Pk {path}", status, err or out)
        first, _, rest = out.partition("\n")
        try:
            return parse_df(rest, first.strip())
        except ValueError as e:
            raise EngineError(self.device, f"df -Pk {path}", status, str(e)) from None

    # -- images ---------------------------------------------------------------------------

    def image(self, ref: str) -> ImageState | None:
        """``docker image inspect REF``, or None when the engine has no such image."""
        status, out, err = self.run(["image", "inspect", ref], check=False)
        if status != 0:
            if "no such image" in (err + out).lower():
                return None
            raise EngineError(self.device, f"docker image inspect {ref}", status, err or out)
        return parse_image(out)

    def pull(self, ref: str, *, platform: Platform | None = None, auth_config: bytes | None = None,
             timeout: float = 1800.0) -> str:
        """``docker pull [--platform P] REF``; returns the pull's output.

        ``auth_config``: a Docker ``config.json`` (:func:`docker_auth_config`) sent on stdin
        into a temporary ``DOCKER_CONFIG`` folder removed by the same command; None pulls
        with the device's own configuration.
        """
        args = ["pull"] + (["--platform", str(platform)] if platform else []) + [ref]
        shown = "docker " + " ".join(args)
        if auth_config is None:
            status, out, err = self.run(args, timeout=timeout, check=False)
        else:
            status, out, err = self.shell(_PULL_SCRIPT, "1" if self.become else "0", *args,
                                          stdin=auth_config, timeout=timeout)
        if status != 0:
            raise EngineError(self.device, shown, status, err or out)
        return out

    # -- containers -----------------------------------------------------------------------

    def container(self, name: str) -> ContainerState | None:
        """``docker container inspect NAME``, or None when there is no such container."""
        status, out, err = self.run(["container", "inspect", name], check=False)
        if status != 0:
            if "no such container" in (err + out).lower() or "no such object" in (err + out).lower():
                return None
            raise EngineError(self.device, f"docker container inspect {name}", status, err or out)
        return parse_container(out)

    def create(self, args: Sequence[str]) -> str:
        """``docker create ARGS`` (options, image, command); returns the container ID."""
        _, out, _ = self.run(["create", *args])
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
