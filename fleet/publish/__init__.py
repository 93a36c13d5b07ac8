"""Publish one multi-arch tag: get each planned platform's image into the target repository
(:mod:`fleet.publish.sources`), check every child, then push ONE index under the playbook's tag.

Checks before the index is pushed (each refusal raises :class:`fleet.publish.index.IndexRefused`,
exit 1, and nothing is tagged):

* every child is an image manifest whose config declares the entry's os/architecture/
  variant (:func:`fleet.publish.index.check_config`: the "arm tag holding an amd64 image" of
  pi-hole/docker-pi-hole#735);
* its content agrees: the layer tars are streamed from the registry and the ELF files are
  checked with :func:`fleet.publish.index.check_elf` (class, byte order, e_machine; for 32-bit ARM
  the ``Tag_CPU_arch`` build attribute must not exceed the entry's variant, so an ARMv7
  binary labelled arm/v6 is refused: mpromonet/v4l2rtspserver#335). Checked: the
  entrypoint/cmd target resolved through the layers' symlinks, plus up to
  :data:`MAX_EXECUTABLES` other executable ELF files (the header of every executable ELF is
  checked anyway, since the layer is read through); non-ELF files are skipped;
* the index itself: no duplicate platforms, no malformed variants, one media type family
  (:func:`fleet.publish.index.build_index`).

The index media type follows the children (Docker manifest list for Docker v2 schema2
children, OCI index for OCI ones; mixing refused), unless ``media_type`` overrides it.
The index bytes are deterministic (entries in plan order, compact JSON), so re-publishing
unchanged images gives the same index digest, and blobs already present are not uploaded.
"""

from __future__ import annotations

import io
import json
import posixpath
import tarfile
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Iterator, Mapping, Sequence

from fleet.errors import FleetError, UsageError
from fleet.publish.index import (
    INDEX_TYPES,
    OCI_INDEX,
    MANIFEST_TYPES,
    IndexEntry,
    IndexRefused,
    Problem,
    build_index,
    check_config,
    check_elf,
    check_pull_path,
    parse_index,
)
from fleet.platform import Platform
from fleet.playbook import BuildSource, NativeSource, PickSource, Playbook, RegistrySettings
from fleet.plan import Plan
from fleet.registry import Credentials, NotFound, Reference, RegistryClient, resolve_credentials
from fleet.publish.sources import Child, build_local, build_native, pick_index, pick_refs

__all__ = ["PublishedEntry", "PublishResult", "publish", "read_published", "registry_client",
           "registry_credentials", "check_child", "ContentReport", "MAX_EXECUTABLES"]

#: Executable ELF files fully checked per child besides the entrypoint/cmd target.
MAX_EXECUTABLES = 16
#: Largest ELF file read whole for the ARM build-attribute check (bytes).
MAX_ELF_BYTES = 64 * 1024 * 1024


@dataclass
class PublishedEntry:
    """One platform of a published index: ``manifest_digest``/``manifest_media_type``/
    ``manifest_size`` of the child, ``config_digest``, ``diff_ids`` (the config's
    ``rootfs.diff_ids``), ``size`` (config + compressed layers, bytes: what a device pulls
    at most), ``source`` (who provided it), ``checked`` (content check summary)."""

    platform: Platform
    manifest_digest: str
    manifest_media_type: str
    manifest_size: int
    config_digest: str
    diff_ids: tuple[str, ...]
    size: int
    source: str = ""
    checked: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"platform": str(self.platform), "manifest_digest": self.manifest_digest,
                "manifest_media_type": self.manifest_media_type, "manifest_size": self.manifest_size,
                "config_digest": self.config_digest, "diff_ids": list(self.diff_ids),
                "size": self.size, "source": self.source, "checked": self.checked}


@dataclass
class PublishResult:
    """A published (or read back) multi-arch tag.

    ``reference``: ``registry/repo:tag``; ``repository``: ``registry/repo``; ``index_digest``
    and ``media_type`` of the index; ``entries``: one per platform in index order
    (attestation entries are counted in ``attestations``, not listed); ``uploads``: blobs
    uploaded by this publish (0 when re-publishing unchanged images).
    """

    reference: str
    repository: str
    index_digest: str
    media_type: str
    entries: list[PublishedEntry]
    attestations: int = 0
    uploads: int = 0
    index_size: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {"reference": self.reference, "repository": self.repository,
                "index_digest": self.index_digest, "media_type": self.media_type,
                "index_size": self.index_size, "attestations": self.attestations,
                "uploads": self.uploads, "entries": [e.to_dict() for e in self.entries]}


# --------------------------------------------------------------------------- registry


def registry_credentials(settings: RegistrySettings, registry: str) -> Credentials | None:
    """The credentials for ``registry`` under the playbook's settings: the one resolver,
    :func:`fleet.registry.resolve_credentials` (the environment variables the playbook
    names, else the Docker config with its credential helpers). None when there are none.
    Raises UsageError naming an unset variable or a bad config file (never a value)."""
    return resolve_credentials(settings, registry)


def registry_client(settings: RegistrySettings, registry: str) -> RegistryClient:
    """A :class:`RegistryClient` for ``registry`` with the playbook's settings (``insecure``,
    ``ca``; else the Docker engine's ``/etc/docker/certs.d/REGISTRY/*.crt`` plus the system
    CAs) and credentials (:func:`registry_credentials`)."""
    creds = registry_credentials(settings, registry)
    return RegistryClient(registry, insecure=settings.insecure, ca=settings.ca, credentials=creds,
                          docker_config=settings.docker_config)


def _target(playbook: Playbook) -> Reference:
    ref = Reference.parse(playbook.image)
    if ref.digest:
        raise UsageError(f"{playbook.path}: image {playbook.image!r} must be a tag, not a digest")
    if not ref.tag:
        ref = Reference(ref.registry, ref.repository, "latest")
    return ref


# --------------------------------------------------------------------------- content check


class _IterReader(io.RawIOBase):
    """A read-only file over an iterator of byte chunks (for tarfile's stream mode)."""

    def __init__(self, chunks: Iterable[bytes]):
        self._it: Iterator[bytes] = iter(chunks)
        self._buf = b""

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:
        while not self._buf:
            try:
                self._buf = next(self._it)
            except StopIteration:
                return 0
        n = min(len(b), len(self._buf))
        b[:n] = self._buf[:n]
        self._buf = self._buf[n:]
        return n


@dataclass
class ContentReport:
    """What the content check saw: ``target`` (entrypoint/cmd file resolved, or None),
    ``checked`` (paths whose ELF was checked in full), ``headers`` (executable ELF files
    whose header was checked), ``notes`` (what could not be verified)."""

    target: str | None = None
    checked: list[str] = field(default_factory=list)
    headers: int = 0
    notes: list[str] = field(default_factory=list)
    descriptions: dict[str, str] = field(default_factory=dict)

    def summary(self) -> str:
        """``"entrypoint /bin/busybox: ELF64 little-endian x86-64; 1 of 1 executable ELF
        checked in full"`` plus notes."""
        head = (f"entrypoint {self.target}: {self.descriptions.get(self.target, 'ELF')}; "
                if self.target else "no ELF entrypoint; ")
        text = head + f"{len(self.checked)} of {self.headers} executable ELF checked in full"
        return text + ("; " + "; ".join(self.notes) if self.notes else "")


def _norm(path: str) -> str:
    """A tar member name or link target as an absolute, normalized path
    (``./bin/sh`` -> ``/bin/sh``)."""
    while path.startswith("./"):
        path = path[2:]
    p = posixpath.normpath("/" + path.lstrip("/"))
    return "/" if p in ("//", "/.") else p


def _run_targets(config: Mapping[str, Any]) -> list[str]:
    """Absolute paths the entrypoint/cmd may run: the first word of ENTRYPOINT, else CMD
    (``/bin/sh`` for a shell-form ``["/bin/sh", "-c", ...]``); a bare name is looked up in
    the config's PATH."""
    c = config.get("config") or {}
    argv = list(c.get("Entrypoint") or []) or list(c.get("Cmd") or [])
    if not argv or not isinstance(argv[0], str):
        return []
    first = argv[0]
    if first.startswith("/"):
        return [_norm(first)]
    path = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
    for env in c.get("Env") or []:
        if isinstance(env, str) and env.startswith("PATH="):
            path = env[5:]
    return [_norm(posixpath.join(d, first)) for d in path.split(":") if d]


def _resolve(path: str, links: Mapping[str, str], limit: int = 16) -> str:
    """Follow symlinks (absolute or relative, also in parent folders) through ``links``."""
    for _ in range(limit):
        parts = path.strip("/").split("/")
        changed = False
        for i in range(1, len(parts) + 1):
            prefix = "/" + "/".join(parts[:i])
            if prefix in links:
                target = links[prefix]
                base = target if target.startswith("/") else posixpath.join(posixpath.dirname(prefix), target)
                path = _norm(posixpath.join(base, *parts[i:]))
                changed = True
                break
        if not changed:
            return path
    return path


def _walk_layers(client: RegistryClient, repo: str, layers: Sequence[Mapping[str, Any]],
                 visit: Callable[[str, tarfile.TarInfo, Any], None]) -> list[str]:
    """Stream every layer in order, calling ``visit(path, info, tar)`` per member; returns
    notes for layers that could not be read (unknown compression)."""
    notes = []
    for layer in layers:
        mt = str(layer.get("mediaType", ""))
        if "zstd" in mt:
            notes.append(f"layer {layer.get('digest', '')[:19]} is zstd-compressed: not inspected")
            continue
        if "foreign" in mt or "nondistributable" in mt:
            continue
        with client.get_blob(repo, layer["digest"]) as stream:
            raw = io.BufferedReader(_IterReader(stream), buffer_size=1024 * 1024)
            try:
                with tarfile.open(fileobj=raw, mode="r|*") as tar:
                    for info in tar:
                        visit(_norm(info.name), info, tar)
            except tarfile.TarError as e:
                notes.append(f"layer {layer.get('digest', '')[:19]} unreadable as tar ({e})")
            finally:
                # drain so the digest of the whole blob is verified (BlobStream raises at the end)
                for _ in iter(lambda: raw.read(1024 * 1024), b""):
                    pass
    return notes


def check_content(client: RegistryClient, repo: str, platform: Platform, manifest: Mapping[str, Any],
                  config: Mapping[str, Any], max_executables: int = MAX_EXECUTABLES) -> ContentReport:
    """Check the ELF files ``manifest``'s layers hold against ``platform`` (see the module
    docstring). Raises :class:`IndexRefused` (``elf-mismatch``) naming the file."""
    report = ContentReport()
    targets = _run_targets(config)
    links: dict[str, str] = {}
    full: dict[str, str] = {}  # path -> description of a fully checked ELF
    headers_only: set[str] = set()
    problems: list[Problem] = []
    arm = platform.architecture == "arm"

    def check(path: str, data: bytes, whole: bool) -> None:
        try:
            info = check_elf(platform, data)
        except IndexRefused as e:
            problems.append(Problem("elf-mismatch", f"entry {platform}: {path}: {e.problems[0].reason}"))
            return
        if whole or not arm:
            full[path] = info.description
            headers_only.discard(path)
            if info.notes:
                report.notes.append(f"{path}: {info.notes[0]}")
        else:
            headers_only.add(path)

    def visit(path: str, info: tarfile.TarInfo, tar: tarfile.TarFile) -> None:
        base = posixpath.basename(path)
        if base.startswith(".wh."):
            gone = posixpath.join(posixpath.dirname(path), base[4:])
            for d in (links, full):
                d.pop(gone, None)
            headers_only.discard(gone)
            return
        if info.issym():
            links[path] = info.linkname
            return
        if info.islnk():
            links[path] = _norm(info.linkname)
            return
        if not info.isfile():
            return
        wanted = path in targets
        if not (info.mode & 0o111 or wanted):
            return
        f = tar.extractfile(info)
        if f is None:
            return
        head = f.read(64)
        if head[:4] != b"\x7fELF":
            return
        report.headers += 1
        whole = wanted or len(full) < max_executables
        if arm and whole and info.size <= MAX_ELF_BYTES:
            check(path, head + f.read(), True)
        else:
            check(path, head, not arm)

    notes = _walk_layers(client, repo, manifest.get("layers") or [], visit)
    report.notes += notes
    if problems:
        raise IndexRefused(problems[:5])
    resolved = [_resolve(t, links) for t in targets]
    hit = next((r for r in resolved if r in full or r in headers_only), None)
    if targets and hit is None:
        report.notes.append(f"entrypoint/cmd target {targets[0]} is not an ELF file in the layers")
    if hit is not None:
        report.target = hit
        if hit in headers_only:
            # the target was passed before we knew it was the target: read it again
            def again(path: str, info: tarfile.TarInfo, tar: tarfile.TarFile) -> None:
                if path == hit and info.isfile() and info.size <= MAX_ELF_BYTES:
                    f = tar.extractfile(info)
                    if f is not None:
                        check(path, f.read(), True)
            _walk_layers(client, repo, manifest.get("layers") or [], again)
            if problems:
                raise IndexRefused(problems[:5])
    report.checked = sorted(full)
    report.descriptions = dict(full)
    return report


def check_child(client: RegistryClient, repo: str, platform: Platform, digest: str,
                *, content: bool = True) -> tuple[PublishedEntry, ContentReport | None]:
    """Fetch child ``digest`` of ``repo`` and check it against ``platform`` (manifest type,
    config platform, and with ``content`` the ELF files). Returns its
    :class:`PublishedEntry` and the content report. Raises :class:`IndexRefused`."""
    m = client.get_manifest(repo, digest)
    if m.media_type not in MANIFEST_TYPES:
        raise IndexRefused([Problem("bad-descriptor", f"entry {platform}: {digest} is a "
                                                      f"{m.media_type}, not an image manifest")])
    cfg_desc = m.json.get("config") or {}
    config_raw = client.read_blob(repo, cfg_desc["digest"])
    config = json.loads(config_raw)
    try:
        check_config(platform, config)
    except IndexRefused as e:
        raise IndexRefused([Problem(p.kind, f"{client.registry}/{repo}@{digest}: {p.reason}")
                            for p in e.problems]) from None
    report = check_content(client, repo, platform, m.json, config) if content else None
    layers = m.json.get("layers") or []
    size = int(cfg_desc.get("size") or len(config_raw)) + sum(int(l.get("size") or 0) for l in layers)
    entry = PublishedEntry(platform, m.digest, m.media_type, m.size, cfg_desc["digest"],
                           tuple((config.get("rootfs") or {}).get("diff_ids") or ()), size,
                           checked=report.summary() if report else "")
    return entry, report


# --------------------------------------------------------------------------- publish


def _gather_children(playbook: Playbook, plan: Plan, target: Reference, client: RegistryClient,
                     creds: Credentials | None, log: Callable[[str], None],
                     native_session: Callable[[str], Any] | None) -> list[Child]:
    src = playbook.source
    platforms = list(plan.platforms)
    clients: dict[str, RegistryClient] = {target.registry: client}

    def client_for(registry: str) -> RegistryClient:
        if registry not in clients:
            clients[registry] = registry_client(RegistrySettings(), registry)
        return clients[registry]

    if isinstance(src, BuildSource):
        return [build_local(src.context, src.dockerfile, src.args, p, target, client, creds, log=log,
                            stage=src.stage) for p in platforms]
    if isinstance(src, NativeSource):
        if native_session is None:
            raise UsageError("a native source needs the inventory (-i) to reach its builder devices")
        out = []
        for p in platforms:
            device = src.builders[p]
            with native_session(device) as session:
                out.append(build_native(session, device, src.context, src.dockerfile, src.args, p,
                                        target, client, creds, log=log))
        return out
    assert isinstance(src, PickSource)
    if src.index:
        return pick_index(src.index, platforms, client, target.repository, client_for, log)
    return pick_refs(src.refs, platforms, client, target.repository, client_for, log)


def publish(playbook: Playbook, plan: Plan, *, media_type: str | None = None,
            log: Callable[[str], None] = lambda s: None,
            native_session: Callable[[str], Any] | None = None,
            client: RegistryClient | None = None) -> PublishResult:
    """Publish ``plan`` for ``playbook``: per-platform images, checks, one index, one tag.

    ``media_type``: force the index media type (else it follows the children).
    ``native_session(device)``: opens an SSH session (context manager) to a builder device
    (native sources). ``client``: the target registry client (default: from the playbook's
    registry settings). Raises FleetError (exit 1) when the plan has errors, a source fails
    (:class:`fleet.publish.sources.SourceError`), a check refuses (:class:`IndexRefused`) or the
    registry refuses (:class:`fleet.registry.RegistryError`, AuthError for bad credentials).
    """
    if plan.errors:
        raise FleetError("nothing published; the plan has errors: " + "; ".join(plan.errors))
    if media_type is not None and media_type not in INDEX_TYPES:
        raise UsageError(f"--media-type {media_type!r} is not an index media type "
                         f"({' or '.join(INDEX_TYPES)})")
    target = _target(playbook)
    creds = registry_credentials(playbook.registry, target.registry)
    own = client is None
    if client is None:
        client = RegistryClient(target.registry, insecure=playbook.registry.insecure,
                                ca=playbook.registry.ca, credentials=creds,
                                docker_config=playbook.registry.docker_config)
    try:
        client.ping()
        children = _gather_children(playbook, plan, target, client, creds, log, native_session)
        return assemble(client, target, children, media_type=media_type, log=log)
    finally:
        if own:
            client.close()


def assemble(client: RegistryClient, target: Reference, children: Sequence[Child], *,
             media_type: str | None = None, log: Callable[[str], None] = lambda s: None,
             content: bool = True) -> PublishResult:
    """Check ``children`` (all already in ``target``'s repository) and push the index under
    ``target.tag``. Raises :class:`IndexRefused` before pushing anything when a check fails."""
    seen: dict[Platform, int] = {}
    problems = []
    for i, c in enumerate(children):
        if c.platform in seen:
            problems.append(Problem("duplicate-platform", f"duplicate platform {c.platform} (entries "
                                                          f"{seen[c.platform]} and {i}): refuse to publish", i))
        seen.setdefault(c.platform, i)
    if problems:
        raise IndexRefused(problems)
    entries: list[IndexEntry] = []
    published: list[PublishedEntry] = []
    for c in children:
        log(f"{c.platform}: checking {c.digest[:19]} (config, ELF content)")
        pe, _ = check_child(client, target.repository, c.platform, c.digest, content=content)
        pe.source = c.how
        published.append(pe)
        entries.append(IndexEntry(c.platform, c.digest, c.size, c.media_type))
        entries.extend(c.attestations)
    if media_type is None and any(c.attestations for c in children):
        # attestation entries exist only in OCI indexes (a Docker manifest list has no
        # annotations); the engines that read Docker lists read OCI indexes too
        media_type = OCI_INDEX
    raw, mt = build_index(entries, media_type)
    digest = client.put_manifest(target.repository, target.tag or "latest", raw, mt)
    log(f"pushed {target} -> {digest}")
    check_served(client, target.repository, digest, mt)
    return PublishResult(str(target), target.name, digest, mt, published,
                         attestations=sum(len(c.attestations) for c in children),
                         uploads=sum(c.uploads for c in children), index_size=len(raw))


def check_served(client: RegistryClient, repository: str, digest: str, media_type: str) -> None:
    """Ask the registry for the pushed index by digest accepting only its own media type,
    as an engine that knows only that type pulls it: a registry or mirror that stores
    the bytes but does not serve that type (project-zot/zot#2836) is refused now, with the
    other index type to publish instead, not at every device's pull. Raises
    :class:`fleet.publish.index.IndexRefused` (``pull-path``)."""
    try:
        served = client.head_manifest(repository, digest, accept=[media_type]).media_type
    except NotFound:
        # stored (the full Accept list finds it) but not served for its own type: the
        # other index type is the way out; not found at all: the pull path is broken
        other = [m for m in INDEX_TYPES if m != media_type]
        found = client.manifest_exists(repository, digest)
        check_pull_path(media_type, serves=other if found else [], fails=[media_type])
        return
    check_pull_path(media_type, serves=[served] if served else None)


def read_published(reference: str, settings: RegistrySettings | None = None, *,
                   client: RegistryClient | None = None, content: bool = False) -> PublishResult:
    """Read a multi-arch tag (or ``repo@digest``) back from its registry.

    Every non-attestation entry is fetched and checked (manifest type and config platform;
    with ``content`` also the ELF files). Raises :class:`IndexRefused` when the index or an
    entry is wrong, :class:`fleet.registry.NotFound` when the reference does not exist,
    :class:`FleetError` when it is a single image manifest, not an index.
    """
    ref = Reference.parse(reference)
    own = client is None
    if client is None:
        client = registry_client(settings or RegistrySettings(), ref.registry)
    try:
        m = client.get_manifest(ref.repository, ref.ref)
        if m.media_type not in INDEX_TYPES:
            raise FleetError(f"{ref}: a single image manifest ({m.media_type}), not an image index")
        entries = parse_index(m.raw)
        from fleet.publish.index import check_index
        check_index(entries)
        published = []
        for e in entries:
            if e.is_attestation:
                continue
            assert e.platform is not None
            pe, _ = check_child(client, ref.repository, e.platform, e.digest, content=content)
            if e.media_type and e.media_type != pe.manifest_media_type:
                raise IndexRefused([Problem("bad-descriptor", f"entry {e.platform}: descriptor says "
                                                              f"{e.media_type}, the manifest is {pe.manifest_media_type}")])
            if e.size != pe.manifest_size:
                raise IndexRefused([Problem("bad-descriptor", f"entry {e.platform}: descriptor size "
                                                              f"{e.size}, the manifest has {pe.manifest_size} bytes")])
            published.append(pe)
        return PublishResult(str(ref), ref.name, m.digest, m.media_type, published,
                             attestations=sum(1 for e in entries if e.is_attestation), index_size=m.size)
    finally:
        if own:
            client.close()
