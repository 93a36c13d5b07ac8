"""A device's Docker engine driven through its Engine API over the run's SSH connection.

:class:`ApiEngine` implements :class:`fleet.engine.Engine` as
:class:`fleet.engine.cli.CliEngine` does (the ``docker`` CLI over SSH), but each step is one
HTTP request on a channel of the SSH connection the run already holds
(:mod:`fleet.engine.transport`): no Go CLI start on the device, which on a single-core
ARMv6 costs far more than the request itself. The answers are the JSON ``docker inspect``
prints (the CLI prints what the API returns), parsed by the same
:mod:`fleet.engine.state` functions.

Differences a caller may notice:

* ``pull(auth=...)`` sends the credentials in the ``X-Registry-Auth`` header of the
  request (Engine API "Authentication"), on the encrypted channel: nothing is written on
  the device and no process sees them. Without ``auth`` the pull is anonymous: the
  engine never reads the login's ``~/.docker/config.json`` (the CLI does, and sends it
  the same way), so a registry that needs credentials needs them from fleet.
* ``exec`` takes the connection it runs on (the engine hijacks it for the output stream,
  moby ``api/server/router/container/exec.go``): on the dial-stdio path that is one more
  ``docker system dial-stdio`` process per exec.
* :meth:`ApiEngine.free_space` and :meth:`ApiEngine.http_check` have no API: they run the
  same POSIX scripts as :class:`~fleet.engine.cli.CliEngine`, one exec channel each.
"""

from __future__ import annotations

import json
import re
import threading
import time
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, Callable, Mapping, Sequence
from urllib.parse import urlsplit

import docker
import docker.auth
import docker.errors
import docker.utils
import requests
import urllib3.exceptions
from docker.auth import AuthConfig
from docker.utils.proxy import ProxyConfig
from paramiko.ssh_exception import SSHException

from fleet.engine import PullAuth
from fleet.engine.cli import CliEngine
from fleet.engine.state import (
    ContainerState,
    DiskSpace,
    EngineError,
    EngineInfo,
    EngineVersion,
    ImageState,
    ImageSummary,
    parse_container,
    parse_image,
    parse_info,
)
from fleet.engine.transport import (
    DEFAULT_SOCKET,
    ChannelAdapter,
    EngineConnector,
    EngineCounters,
)
from fleet.engine.wire import (
    MIN_API_VERSION,
    _api_tuple,
    create_body,
    demux_tail,
    negotiate_api_version,
    parse_api_version,
    parse_pull_progress,
    registry_auth,
    scrub,
    split_lines,
)
from fleet.log import TRACE, logger, redact_headers
from fleet.platform import Platform
from fleet.engine.objects import NetworkState, VolumeState, parse_network, parse_volume
from fleet.registry import Reference
from fleet.ssh import CommandTimeout, SSHError

if TYPE_CHECKING:
    from fleet.compose import ServiceSpec
    from fleet.playbook import ContainerSpec

__all__ = ["ApiEngine", "DeviceAPIClient", "EngineCounters", "EXEC_OUTPUT_MAX"]

log = logger("engine")

#: Output of one ``exec`` or ``logs`` kept (the tail), bytes.
EXEC_OUTPUT_MAX = 1024 * 1024

# ------------------------------------------------------------------- docker-py client


_ID_TEMPLATE = re.compile(r"\{0\}")


def _template(pathfmt: str) -> str:
    """docker-py's path format (``/containers/{0}/json``) as a readable key
    (``/containers/{id}/json``; images are addressed by ``{name}``)."""
    return _ID_TEMPLATE.sub("{name}" if pathfmt.startswith(("/images/", "/distribution/")) else "{id}", pathfmt)


class DeviceAPIClient(docker.APIClient):
    """docker-py's :class:`docker.APIClient` whose every request goes to ``connector``.

    ``version``: the API version to speak (e.g. ``"1.41"``); every request counts in
    ``counters.api_calls`` and is logged at DEBUG (``-vv``), headers at TRACE with
    credentials redacted. Nothing of the controller's own Docker configuration is used:
    docker-py's constructor reads ``~/.docker/config.json`` (proxies it would inject into
    containers' environment, credentials it would send to the device's engine), so those
    are emptied, and requests' ``trust_env`` (proxy variables, ``~/.netrc``) is off.
    """

    def __init__(self, connector: EngineConnector, *, version: str, timeout: float):
        super().__init__(base_url="http+unix://" + DEFAULT_SOCKET, version=version, timeout=timeout,
                         max_pool_size=1, user_agent=f"fleet docker-sdk-python/{docker.__version__}")
        self._custom_adapter = ChannelAdapter(connector, timeout)
        self.mount("http+docker://", self._custom_adapter)
        self.base_url = "http+docker://localhost"
        self.trust_env = False
        self._general_configs = {}
        self._proxy_configs = ProxyConfig()
        self._auth_configs = AuthConfig({})
        self._connector = connector
        self._local = threading.local()

    def _url(self, pathfmt: str, *args: Any, **kwargs: Any) -> str:
        self._local.template = pathfmt
        return super()._url(pathfmt, *args, **kwargs)

    def request(self, method: str, url: str, *args: Any, **kwargs: Any):  # type: ignore[override]
        pathfmt = getattr(self._local, "template", None)
        self._local.template = None
        path = urlsplit(url).path
        key = _template(re.sub(r"^/v[0-9.]+", "", pathfmt or path))
        self._connector.counters.call(f"{method} {key}")
        log.debug("%s: engine API %s %s%s", self._connector.device, method, path,
                  f" {kwargs['params']}" if kwargs.get("params") else "")
        if log.isEnabledFor(TRACE):
            log.log(TRACE, "%s: engine API headers %s", self._connector.device,
                    redact_headers({**self.headers, **(kwargs.get("headers") or {})}))
        return super().request(method, url, *args, **kwargs)


# --------------------------------------------------------------------------- engine


class _CountingSession:
    """``session`` whose ``run`` (one exec channel, one remote process) is counted."""

    def __init__(self, session: Any, counters: EngineCounters):
        self._session, self._counters = session, counters

    def run(self, command: str, **kw: Any):
        self._counters.add(channels_opened=1, remote_processes=1)
        return self._session.run(command, **kw)


class ApiEngine:
    """The Docker engine of one device through its Engine API, over ``session`` (a
    :class:`fleet.ssh.Session`; its ``transport`` carries the channels); implements
    :class:`fleet.engine.Engine`.

    ``device``: inventory name (messages); ``become``: the dial-stdio fallback and the
    ``df`` script run through ``sudo -n`` (``ansible_become``); ``timeout``: seconds per
    request (pulls and stops get their own); ``api_version``: the engine's ``ApiVersion``
    when already known (the probe knows it: no ``/version`` round trip), else negotiated
    on first use (:func:`negotiate_api_version`); ``socket_path``: the engine's socket
    (default ``/var/run/docker.sock``; from a device's ``DOCKER_HOST=unix://...``, see
    :func:`fleet.engine.transport.socket_path_from_docker_host`); ``counters``: an
    :class:`EngineCounters` to add to (a fresh one by default; read ``.counters``);
    ``connector``: an :class:`EngineConnector` that already holds an open channel (the
    probe's, :func:`fleet.engine.probe.gather_with_api`; its counters are used).

    Errors: :class:`EngineError` with the engine's own message (``exit_status`` is the
    HTTP status, -1 when a dial-stdio process ended early: its stderr is the message);
    :class:`fleet.ssh.CommandTimeout` when a request outlives its timeout;
    :class:`fleet.ssh.SSHError` when the SSH connection fails. Lookups return None for
    "no such image/container", as :class:`fleet.engine.cli.CliEngine`'s do.
    """

    way = "api"

    def __init__(self, session: Any, device: str, *, become: bool = False, timeout: float = 120.0,
                 api_version: str | None = None, socket_path: str | None = None,
                 counters: EngineCounters | None = None, connector: EngineConnector | None = None):
        self.session = session
        self.device = device
        self.become = become
        self.timeout = timeout
        self.counters = connector.counters if connector else (counters or EngineCounters())
        settings = getattr(session, "settings", None)
        open_timeout = float(getattr(settings, "connect_timeout", 10.0))
        self.connector = connector or EngineConnector(
            session.transport, device, self.counters, socket_path=socket_path or DEFAULT_SOCKET,
            become=become, open_timeout=open_timeout)
        self._api_version = negotiate_api_version(api_version) if api_version else None
        self._client = DeviceAPIClient(self.connector, version=self._api_version or MIN_API_VERSION,
                                       timeout=timeout)
        self._version: EngineVersion | None = None
        self._info: EngineInfo | None = None
        self._cli = CliEngine(_CountingSession(session, self.counters), device, become=become, timeout=timeout)

    # -- plumbing -------------------------------------------------------------------------

    @property
    def path(self) -> str:
        """``"streamlocal"`` or ``"dial-stdio"`` (empty before the first request)."""
        return self.counters.path

    @property
    def path_reason(self) -> str:
        return self.counters.path_reason

    @property
    def api_version(self) -> str:
        """The API version spoken (negotiates on first use)."""
        self._negotiate()
        return self._api_version or MIN_API_VERSION

    def close(self) -> None:
        """Close the engine connections (the SSH session stays open)."""
        self._client.close()

    def __enter__(self) -> "ApiEngine":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def _call(self, what: str, fn: Callable[..., Any], *args: Any, auth: Mapping[str, str] | None = None,
              **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except docker.errors.APIError as e:
            text = str(e.explanation or (e.response.reason if e.response is not None else "") or e)
            raise EngineError(self.device, what, int(e.status_code or 0), scrub(text, auth)) from None
        except requests.exceptions.Timeout:
            raise CommandTimeout(self.device, f"engine API call timed out: {what}") from None
        except requests.exceptions.ConnectionError as e:
            # requests reports a read timeout inside a streamed body as a ConnectionError
            if any(isinstance(a, urllib3.exceptions.ReadTimeoutError) for a in e.args):
                raise CommandTimeout(self.device, f"engine API call timed out: {what}") from None
            self._connection_failed(what, e)
        except urllib3.exceptions.ReadTimeoutError:  # read from a raw stream (exec)
            raise CommandTimeout(self.device, f"engine API call timed out: {what}") from None
        except (requests.exceptions.ChunkedEncodingError, urllib3.exceptions.HTTPError, SSHException, EOFError,
                OSError) as e:
            self._connection_failed(what, e)

    def _connection_failed(self, what: str, e: BaseException) -> None:
        # The SSH connection first: when it drops, a dial-stdio channel ends too, without
        # an exit status ("exited -1"), and the device is unreachable, not its engine faulty.
        if not self.session.transport.is_active():
            raise SSHError(self.device, f"connection lost during {what}") from None
        why = self.connector.failure()
        if why:  # a dial-stdio process that ended: its own words (sudo, docker CLI)
            raise EngineError(self.device, what, -1, why) from None
        raise SSHError(self.device, f"engine API call {what} failed: {_short(e)}") from None

    def _negotiate(self) -> None:
        if self._api_version is None:
            self.version()

    def _json(self, what: str, method: str, pathfmt: str, *args: str, params: Mapping[str, Any] | None = None,
              timeout: float | None = None, versioned: bool = True) -> Any:
        if versioned:
            self._negotiate()
        c = self._client
        url = c._url(pathfmt, *args, versioned_api=versioned)
        def go():
            res = c.request(method, url, params=params, timeout=timeout or self.timeout)
            return c._result(res, json=True)
        return self._call(what, go)

    # -- facts ----------------------------------------------------------------------------

    def version(self) -> EngineVersion:
        """``GET /version`` (unversioned: it is how the version is learnt). The
        ``client_*`` fields are empty: no CLI is involved."""
        if self._version is None:
            doc = self._json("GET /version", "GET", "/version", versioned=False)
            self._version = parse_api_version(doc)
            if self._api_version is None:
                try:
                    self._api_version = negotiate_api_version(self._version.api_version,
                                                              self._version.min_api_version)
                except ValueError as e:
                    raise EngineError(self.device, "GET /version", 0, str(e)) from None
                self._client._version = self._api_version
        return self._version

    def info(self) -> EngineInfo:
        """``GET /info``, asked once per engine object: what a run reads of it (the data
        root, the image store) does not change while it runs."""
        if self._info is None:
            self._info = parse_info(self._json("GET /info", "GET", "/info"))
        return self._info

    def seed(self, version: EngineVersion | None, info: EngineInfo | None) -> None:
        """Answers the run already has (the probe asked them): not asked again."""
        self._version = version or self._version
        self._info = info or self._info

    def free_space(self, path: str) -> DiskSpace:
        """As :meth:`fleet.engine.cli.CliEngine.free_space` (``df -Pk`` on an exec channel)."""
        return self._cli.free_space(path)

    def http_check(self, url: str, timeout: float = 30.0) -> tuple[bool, str]:
        """As :meth:`fleet.engine.cli.CliEngine.http_check` (wget or curl on the device, one
        exec channel): the URL is fetched from the device's own network view."""
        return self._cli.http_check(url, timeout)

    # -- images ---------------------------------------------------------------------------

    def image(self, ref: str, platform: Platform | None = None) -> ImageState | None:
        """``GET /images/{ref}/json``, or None when the engine has no such image.
        ``platform`` (``?platform=`` a JSON OCI platform, Engine API 1.49, containerd image
        store) describes that child of a multi-platform image; an older engine refuses it
        with :class:`EngineError`, as ``docker image inspect --platform`` does."""
        params = None
        if platform is not None:
            self._negotiate()
            if _api_tuple(self.api_version) < (1, 49):
                raise EngineError(self.device, f"GET /images/{ref}/json?platform={platform}", 0,
                                  f"the platform filter needs Engine API 1.49; this engine speaks {self.api_version}")
            params = {"platform": json.dumps({"os": platform.os, "architecture": platform.architecture,
                                              **({"variant": platform.variant} if platform.variant else {})})}
        try:
            return parse_image(self._json(f"GET /images/{ref}/json", "GET", "/images/{0}/json", ref, params=params))
        except EngineError as e:
            if e.exit_status == 404:
                return None
            raise

    def images(self) -> list[ImageSummary]:
        """``GET /images/json?digests=1``: every image the engine holds, newest first."""
        rows = self._json("GET /images/json", "GET", "/images/json", params={"digests": "1"}) or []
        out = []
        for row in rows if isinstance(rows, list) else []:
            if not isinstance(row, Mapping) or not row.get("Id"):
                continue
            created = datetime.fromtimestamp(int(row.get("Created") or 0), timezone.utc)
            refs = [r for r in (row.get("RepoTags") or []) + (row.get("RepoDigests") or [])
                    if isinstance(r, str) and not r.startswith("<none>")]
            out.append(ImageSummary(str(row["Id"]), created.strftime("%Y-%m-%d %H:%M:%S +0000 UTC"),
                                    tuple(dict.fromkeys(refs))))
        return sorted(out, key=lambda i: i.created, reverse=True)

    def remove_image(self, ref: str) -> bool:
        """``DELETE /images/{ref}``; False when the engine refused (in use, absent)."""
        try:
            self._json(f"DELETE /images/{ref}", "DELETE", "/images/{0}", ref)
        except EngineError:
            return False
        return True

    def pull(self, ref: str, *, platform: Platform | None = None, auth: PullAuth | None = None,
             timeout: float = 1800.0) -> None:
        """``POST /images/create?fromImage=REPO&tag=TAG|DIGEST[&platform=P]``, the progress
        stream read to its end.

        ``auth``: the registry credentials, sent in the ``X-Registry-Auth`` header only
        (nothing on the device, no process argument). None pulls anonymously (the engine
        never reads the login's Docker config). The engine's refusal (HTTP status, e.g.
        ``unauthorized: authentication required``) or the stream's error object
        (``errorDetail``: ``unknown blob``, ``no matching manifest for linux/arm/v6``...)
        raises :class:`EngineError` naming the registry and user; ``timeout`` bounds the
        whole pull. The last progress lines are logged at DEBUG.
        """
        self._negotiate()
        registry = Reference.parse(ref).registry
        header = registry_auth(auth) if auth is not None else None
        who = f"registry {registry}" + (f", user {auth.credentials.username!r}" if auth is not None else ", anonymous")
        what = f"pull {ref}"
        repo, tag = docker.utils.parse_repository_tag(ref)
        params = {"fromImage": repo, "tag": tag or "latest"}
        if platform is not None:
            params["platform"] = str(platform)
        headers = {"X-Registry-Auth": docker.auth.encode_header(header)} if header else {}
        deadline = time.monotonic() + timeout
        c = self._client

        def go() -> tuple[list[str], dict[str, Any] | None]:
            res = c._post(c._url("/images/create"), params=params, headers=headers, stream=True,
                          timeout=(self.connector.open_timeout, max(1.0, timeout)))
            try:
                c._raise_for_status(res)
                chunks = _until(res.iter_content(8192), deadline, self.device, what)
                return parse_pull_progress(split_lines(chunks))
            finally:
                res.close()

        try:
            kept, error = self._call(f"POST /images/create ({what})", go, auth=header)
        except EngineError as e:
            raise EngineError(self.device, what, e.exit_status, f"{who}: {e.output}") from None
        if error is not None:
            detail = (error.get("errorDetail") or {}).get("message") or error.get("error") or "unknown error"
            raise EngineError(self.device, what, 1, scrub(f"{who}: {detail}", header))
        log.debug("%s: %s: %s", self.device, what, " | ".join(kept[-3:]))

    # -- containers -----------------------------------------------------------------------

    def container(self, name: str) -> ContainerState | None:
        """``GET /containers/{name}/json``, or None when there is no such container."""
        try:
            return parse_container(self._json(f"GET /containers/{name}/json", "GET", "/containers/{0}/json", name))
        except EngineError as e:
            if e.exit_status == 404:
                return None
            raise

    def create_container(self, name: str, image: str, spec: "ContainerSpec | ServiceSpec",
                         labels: Mapping[str, str], *, platform: Platform | None = None) -> str:
        """``POST /containers/create?name=NAME[&platform=P]`` with the body
        :func:`fleet.engine.wire.create_body` makes of ``spec`` (a
        :class:`fleet.compose.ServiceSpec`, or a playbook's ContainerSpec: the settings
        :func:`fleet.engine.cli.create_args` gives the CLI), ``spec.labels`` overlaid with
        ``labels``; a service on several networks is connected to the others right after
        (``POST /networks/{id}/connect``). Returns the container ID. The environment travels
        in the request body, never in a process's arguments."""
        from fleet.compose import as_service

        self._negotiate()
        c = self._client
        s = as_service(spec)
        try:
            body = create_body(s, image, labels)
        except ValueError as e:
            raise EngineError(self.device, f"create {name}", 0, str(e)) from None
        params = {"name": name, **({"platform": str(platform)} if platform else {})}

        def go() -> dict[str, Any]:
            return c._result(c._post_json(c._url("/containers/create"), data=body, params=params), True)

        res = self._call(f"POST /containers/create ({name})", go)
        for w in res.get("Warnings") or ():
            log.info("%s: engine warning creating %s: %s", self.device, name, w)
        if not s.network_mode:
            for net in s.networks[1:]:
                self.connect_network(net.network, name, net.aliases)
        return str(res.get("Id") or "")

    # -- networks and volumes ---------------------------------------------------------------

    def network(self, name: str) -> NetworkState | None:
        """``GET /networks/{name}``, or None when there is no network of that exact name
        (the engine also matches ID prefixes: those are not this network)."""
        try:
            state = parse_network(self._json(f"GET /networks/{name}", "GET", "/networks/{0}", name))
        except EngineError as e:
            if e.exit_status == 404:
                return None
            raise
        return state if name in (state.name, state.id) else None

    def create_network(self, name: str, *, driver: str | None = None, options: Mapping[str, str] | None = None,
                       labels: Mapping[str, str] | None = None, internal: bool = False) -> str:
        """``POST /networks/create`` (``CheckDuplicate``: an existing name is refused);
        returns its ID."""
        self._negotiate()
        c = self._client
        body = {"Name": name, "CheckDuplicate": True, "Driver": driver or "bridge", "Options": dict(options or {}),
                "Labels": dict(labels or {}), "Internal": bool(internal)}
        res = self._call(f"POST /networks/create ({name})",
                         lambda: c._result(c._post_json(c._url("/networks/create"), data=body), True))
        return str(res.get("Id") or "")

    def connect_network(self, network: str, container: str, aliases: Sequence[str] = ()) -> None:
        """``POST /networks/{network}/connect`` with the container's aliases there."""
        self._negotiate()
        c = self._client
        body = {"Container": container, "EndpointConfig": {"Aliases": list(aliases)}}
        self._call(f"POST /networks/{network}/connect",
                   lambda: c._raise_for_status(c._post_json(c._url("/networks/{0}/connect", network), data=body)))

    def volume(self, name: str) -> VolumeState | None:
        """``GET /volumes/{name}``, or None when there is no such volume."""
        try:
            state = parse_volume(self._json(f"GET /volumes/{name}", "GET", "/volumes/{0}", name))
        except EngineError as e:
            if e.exit_status == 404:
                return None
            raise
        return state if state.name == name else None

    def create_volume(self, name: str, *, driver: str | None = None, options: Mapping[str, str] | None = None,
                      labels: Mapping[str, str] | None = None) -> str:
        """``POST /volumes/create``; returns its name. fleet never removes a volume."""
        self._negotiate()
        c = self._client
        body = {"Name": name, "Driver": driver or "local", "DriverOpts": dict(options or {}),
                "Labels": dict(labels or {})}
        res = self._call(f"POST /volumes/create ({name})",
                         lambda: c._result(c._post_json(c._url("/volumes/create"), data=body), True))
        return str(res.get("Name") or name)

    # -- containers (continued) ------------------------------------------------------------

    def start(self, name: str) -> None:
        self._negotiate()
        self._call(f"POST /containers/{name}/start", self._client.start, name)

    def stop(self, name: str, timeout_s: int = 10) -> None:
        self._negotiate()
        self._call(f"POST /containers/{name}/stop", self._client.stop, name, timeout=timeout_s)

    def rename(self, old: str, new: str) -> None:
        self._negotiate()
        self._call(f"POST /containers/{old}/rename", self._client.rename, old, new)

    def remove(self, name: str, force: bool = True) -> None:
        self._negotiate()
        self._call(f"DELETE /containers/{name}", self._client.remove_container, name, force=force)

    def logs(self, name: str, tail: int = 20) -> str:
        """Last ``tail`` lines of the container's output (stdout and stderr interleaved, at
        most :data:`EXEC_OUTPUT_MAX` bytes); empty when unavailable."""
        self._negotiate()
        c = self._client

        def go() -> bytes:
            res = c._get(c._url("/containers/{0}/logs", name), params={"stdout": 1, "stderr": 1, "tail": tail},
                         stream=True)
            try:
                c._raise_for_status(res)
                return demux_tail(res.iter_content(8192), EXEC_OUTPUT_MAX)
            finally:
                res.close()

        try:
            return self._call(f"GET /containers/{name}/logs", go).decode("utf-8", "replace").strip()
        except (EngineError, SSHError):
            return ""

    def exec(self, name: str, argv: Sequence[str], timeout: float = 30.0) -> tuple[int, str]:
        """Run ``argv`` in the container (``POST /containers/{name}/exec``, then
        ``/exec/{id}/start`` read to its end, then ``/exec/{id}/json`` for the exit code);
        returns (exit code, combined output). An engine refusal (no such container, not
        running) is (1, its message), as the CLI's exit status 1 with that message."""
        self._negotiate()
        c = self._client
        deadline = time.monotonic() + timeout
        what = f"exec {name} {' '.join(argv)[:80]}"
        try:
            exec_id = self._call(f"POST /containers/{name}/exec", c.exec_create, name, list(argv))["Id"]
        except EngineError as e:
            return 1, e.output

        def run() -> bytes:
            # Without "Upgrade: tcp" the engine answers 200 and streams until the process
            # ends, then closes the connection: plain HTTP, read to EOF.
            res = c._post_json(c._url("/exec/{0}/start", exec_id), data={"Detach": False, "Tty": False},
                               stream=True, timeout=(self.connector.open_timeout, max(1.0, timeout)))
            try:
                c._raise_for_status(res)
                chunks = _until(res.raw.stream(8192, decode_content=False), deadline, self.device, what)
                return demux_tail(chunks, EXEC_OUTPUT_MAX)
            finally:
                res.close()

        try:
            out = self._call(f"POST /exec/{exec_id[:12]}/start", run)
        except EngineError as e:
            return 1, e.output
        text = out.decode("utf-8", "replace").strip()
        code = self._call(f"GET /exec/{exec_id[:12]}/json", c.exec_inspect, exec_id).get("ExitCode")
        return (int(code) if code is not None else -1), text

    def names(self, prefix: str) -> list[str]:
        """Names of all containers (any state) whose name starts with ``prefix``."""
        docs = self._json("GET /containers/json", "GET", "/containers/json", params={"all": 1})
        out = []
        for d in docs or ():
            for n in d.get("Names") or ():
                n = str(n)
                if n.count("/") == 1 and n[1:].startswith(prefix):  # "/other/alias" are links
                    out.append(n[1:])
        return out


def _until(chunks: Any, deadline: float, device: str, what: str):
    for chunk in chunks:
        if time.monotonic() > deadline:
            raise CommandTimeout(device, f"{what}: timed out")
        yield chunk


def _short(e: BaseException) -> str:
    text = " ".join(str(e).split()) or type(e).__name__
    return text[:300]
