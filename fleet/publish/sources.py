"""Where each platform's image comes from: ``build`` (local engine), ``native`` (a device
of that platform builds it over SSH) or ``pick`` (existing images in a registry).

Every source ends with a per-platform manifest present in the TARGET repository, described
by a :class:`Child`; :mod:`fleet.publish` then checks the children and pushes the index.

* build: ``docker buildx build --platform P --push`` when the ``docker`` CLI has buildx
  (not on the project's machines: that path is not exercised by the tests here), else the
  Engine API's classic builder through docker-py (``APIClient.build(platform=P)``; foreign
  RUN steps run under binfmt_misc emulation). BuildKit's automatic platform arguments
  (``TARGETPLATFORM``, ``TARGETOS``, ``TARGETARCH``, ``TARGETVARIANT`` and the ``BUILD*``
  ones) are passed as build args, because the classic builder does not set them (seen
  with engine 20.10: ``ARG TARGETARCH`` stays empty unless passed).
  After the build the image's Os/Architecture/Variant must equal P (the classic builder
  can leave amd64 on a ``FROM scratch`` image, moby#46294). Each image is pushed as
  ``REPO:TAG-<os>-<arch>[-<variant>]``; push errors come inside the progress stream
  (docker-py's ``push(stream=True)`` returns the engine's JSON lines and raises nothing
  for an ``error`` in them) and are raised here. The
  registry credentials go to the engine as ``auth_config`` (an HTTP header), never in a
  log line or a process argument.
* native: ONE ssh command on the builder device receives ``[docker config JSON][build
  context tar]`` on stdin: the shell writes the first N bytes (``dd bs=1 count=N``: exact,
  never reads ahead) to ``config.json`` in a fresh ``mktemp -d`` folder under ``umask 077``,
  runs ``docker build -t REF -`` on the rest (a tar context on stdin) and ``docker push``
  with ``DOCKER_CONFIG`` pointing at that folder, and removes the folder on exit (``trap``).
  The password is in neither the command line nor a file that outlives the command. The
  device's engine must trust the registry itself (the lab installs its CA in
  ``/etc/docker/certs.d/ADDR/ca.crt``, which every engine reads per connection).
* pick: per-platform references (``app:1.2-arm64``; if a reference is an index, its entry
  for that platform) or the needed subset of one index; manifests and blobs are copied
  into the target repository (cross-repository mount on the same registry, streamed copy
  across registries: :meth:`fleet.registry.RegistryClient.copy_blob`). Attestation entries
  of a picked index that describe a picked child are kept.
"""

from __future__ import annotations

import functools
import os
import re
import shlex
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from fleet.errors import FleetError, UsageError
from fleet.publish.index import (
    INDEX_TYPES,
    IndexEntry,
    MANIFEST_TYPES,
    parse_index,
)
from fleet.platform import Platform
from fleet.registry import Credentials, Manifest, Reference, RegistryClient, docker_config_json, engine_auth_config

__all__ = [
    "Child", "SourceError", "platform_tag", "build_args_for", "build_local", "build_native",
    "pick_refs", "pick_index", "push_stream_errors", "classic_builder_hint",
]

ATTESTATION_DIGEST = "vnd.docker.reference.digest"


class SourceError(FleetError):
    """A source could not provide a platform's image (exit 1); the message names the
    platform and what failed (build log excerpt, push error, missing entry)."""


@dataclass
class Child:
    """A per-platform image now present in the target repository.

    ``platform`` (the index entry it fills), ``digest``/``media_type``/``size`` of its
    manifest, ``how`` (human: "built locally", "built on pi-zero", "picked from REF"),
    ``attestations``: attestation entries (of a picked index) to keep next to it,
    ``uploads``: blobs the source had to upload (0 when everything was already there).
    """

    platform: Platform
    digest: str
    media_type: str
    size: int
    how: str
    attestations: list[IndexEntry] = field(default_factory=list)
    uploads: int = 0


def platform_tag(tag: str, platform: Platform) -> str:
    """``"1.0"``, linux/arm/v6 -> ``"1.0-linux-arm-v6"`` (the per-platform tag; at most 128
    characters as the distribution tag grammar requires)."""
    suffix = "-".join(p for p in (platform.os, platform.architecture, platform.variant) if p)
    text = f"{tag}-{suffix}"
    if len(text) > 128:
        raise UsageError(f"tag {tag!r} is too long to derive the per-platform tag {text!r}")
    return text


def build_args_for(target: Platform, build: Platform) -> dict[str, str]:
    """BuildKit's automatic platform ARGs (Dockerfile reference "Automatic platform ARGs in
    the global scope") for building ``target`` on a ``build`` host."""
    return {
        "TARGETPLATFORM": str(target), "TARGETOS": target.os, "TARGETARCH": target.architecture,
        "TARGETVARIANT": target.variant,
        "BUILDPLATFORM": str(build), "BUILDOS": build.os, "BUILDARCH": build.architecture,
        "BUILDVARIANT": build.variant,
    }


_SCRATCH_TRAP = re.compile(r"does not match the specified platform|failed to get destination image", re.I)


def classic_builder_hint(log_text: str) -> str:
    """Advice for a known classic-builder failure in ``log_text``, else ``""``.

    The trap (seen with Debian's engine 20.10.24): in a ``FROM scratch`` stage whose first
    instruction only sets metadata (``ARG``/``ENV``/``LABEL``), the classic builder fails
    for a foreign ``--platform`` with "image ... was found but does not match the specified
    platform: wanted linux/arm64, actual: linux/amd64".
    """
    if _SCRATCH_TRAP.search(log_text):
        return (" -- classic builder trap: in a FROM scratch stage the first instruction must "
                "add content (COPY/ADD); move ARG/ENV/LABEL lines after the first COPY, or build "
                "with BuildKit (docker buildx). If it already does, a cached layer of another "
                "platform was reused: build with --cache-from of this platform's image or --no-cache")
    return ""


def push_stream_errors(stream: Any) -> tuple[str | None, int, list[str]]:
    """Consume a docker-py push stream (decoded dicts).

    Returns ``(digest or None, layers uploaded, errors)``: the engine answers HTTP 200 and
    puts failures inside the stream as ``error``/``errorDetail`` (docker/docker-py#3161,
    #2226), so they are collected here; ``aux.Digest`` is the pushed manifest's digest.
    ``layers uploaded`` counts ``Pushed`` statuses (``Layer already exists`` is not one).
    """
    digest, pushed, errors = None, 0, []
    for item in stream:
        if not isinstance(item, dict):
            continue
        if item.get("error") or item.get("errorDetail"):
            detail = item.get("errorDetail") or {}
            errors.append(str(detail.get("message") or item.get("error")))
        if item.get("status") == "Pushed":
            pushed += 1
        aux = item.get("aux")
        if isinstance(aux, dict) and aux.get("Digest"):
            digest = aux["Digest"]
    return digest, pushed, errors


def _engine_platform(info: Mapping[str, Any]) -> Platform:
    return Platform(info.get("Os") or "linux", info.get("Arch") or "amd64")


@functools.lru_cache(maxsize=None)
def _has_buildx(docker_cli: str | None = None) -> bool:
    cli = docker_cli or shutil.which("docker")
    if not cli:
        return False
    try:
        cp = subprocess.run([cli, "buildx", "version"], capture_output=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return cp.returncode == 0


def _docker_client():
    import docker

    base = os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock"
    try:
        return docker.DockerClient(base_url=base, timeout=900)
    except Exception as e:  # docker.errors.DockerException and connection errors
        raise SourceError(f"cannot reach the local Docker engine at {base}: {e}") from None


def _head_child(client: RegistryClient, repo: str, tag: str, platform: Platform, how: str,
                uploads: int) -> Child:
    desc = client.head_manifest(repo, tag)
    if desc.media_type not in MANIFEST_TYPES:
        raise SourceError(f"{platform}: {client.registry}/{repo}:{tag} is a {desc.media_type}, "
                          f"not an image manifest")
    return Child(platform, desc.digest, desc.media_type, desc.size, how, uploads=uploads)


def build_local(context: Path, dockerfile: str, args: Mapping[str, str], platform: Platform,
                target: Reference, client: RegistryClient, credentials: Credentials | tuple[str, str] | None,
                *, log: Callable[[str], None] = lambda s: None, use_buildx: bool | None = None,
                stage: str | None = None) -> Child:
    """Build ``context`` for ``platform`` on the local engine, push ``TARGET:TAG-<platform>``.

    Raises :class:`SourceError` with the build error (and the classic-builder hint), a
    platform mismatch of the built image, or the push stream's error.
    """
    tag = platform_tag(target.tag or "latest", platform)
    ref = f"{target.name}:{tag}"
    if use_buildx is None:
        use_buildx = _has_buildx()
    if use_buildx:
        return _build_buildx(context, dockerfile, args, platform, target, client, tag, log, stage)
    dc = _docker_client()
    try:
        api = dc.api
        build_platform = _engine_platform(api.version())
        buildargs = {**build_args_for(platform, build_platform), **dict(args)}
        log(f"{platform}: building {ref} (classic builder, --platform {platform})")
        lines: list[str] = []
        errors: list[str] = []
        image_id = None
        try:
            # cache_from = this platform's own previous image only: the classic builder's
            # local cache ignores the platform, so a FROM scratch stage's first COPY would
            # reuse another platform's cached layer and fail ("was found but does not match
            # the specified platform"); restricted this way, rebuilding unchanged sources
            # gives the same image (same digests, nothing re-uploaded).
            for item in api.build(path=str(context), dockerfile=dockerfile, tag=ref, platform=str(platform),
                                  buildargs=buildargs, rm=True, forcerm=True, pull=False, decode=True,
                                  cache_from=[ref], target=stage):
                if "stream" in item:
                    lines.append(str(item["stream"]))
                if item.get("error") or item.get("errorDetail"):
                    errors.append(str((item.get("errorDetail") or {}).get("message") or item.get("error")))
                aux = item.get("aux")
                if isinstance(aux, dict) and aux.get("ID"):
                    image_id = aux["ID"]
        except Exception as e:  # docker.errors.APIError: e.g. a bad Dockerfile path
            errors.append(str(getattr(e, "explanation", None) or e))
        if errors:
            text = "; ".join(e.strip() for e in errors)
            raise SourceError(f"{platform}: build of {context} failed: {text}"
                              f"{classic_builder_hint(text + ''.join(lines))}")
        attrs = api.inspect_image(image_id or ref)
        got_written = "/".join(x for x in (attrs.get("Os"), attrs.get("Architecture"), attrs.get("Variant")) if x)
        try:
            got = Platform.parse(got_written)
        except UsageError:
            got = None
        if got != platform:
            raise SourceError(
                f"{platform}: the engine built an image for {got_written or 'no platform'} "
                f"(image {attrs.get('Id', '')[:19]}), not {platform}: refusing to push it "
                f"(classic builder platform bug moby#46294; build with BuildKit or add content "
                f"before metadata in FROM scratch stages)")
        log(f"{platform}: pushing {ref}")
        stream = api.push(target.name, tag=tag, stream=True, decode=True,
                          auth_config=engine_auth_config(Credentials.of(credentials), target.registry))
        digest, pushed, perrors = push_stream_errors(stream)
        if perrors:
            raise SourceError(f"{platform}: push of {ref} failed: {'; '.join(perrors)}")
    finally:
        dc.close()
    child = _head_child(client, target.repository, tag, platform, "built locally (classic builder)", pushed)
    if digest and digest != child.digest:
        raise SourceError(f"{platform}: the engine pushed {digest} but {ref} is {child.digest}")
    return child


def _build_buildx(context: Path, dockerfile: str, args: Mapping[str, str], platform: Platform,
                  target: Reference, client: RegistryClient, tag: str,
                  log: Callable[[str], None], stage: str | None = None) -> Child:
    """``docker buildx build --platform P --push`` (no provenance/SBOM so the push is one
    image manifest, docker/buildx#1509). Not available on this project's machines: this
    path is not covered by the tests. Credentials come from the Docker config, as for any
    docker CLI command."""
    ref = f"{target.name}:{tag}"
    cmd = ["docker", "buildx", "build", "--platform", str(platform), "--provenance=false",
           "--sbom=false", "-f", str(Path(context) / dockerfile), "-t", ref, "--push"]
    if stage:
        cmd += ["--target", stage]
    for k, v in args.items():
        cmd += ["--build-arg", f"{k}={v}"]
    cmd.append(str(context))
    log(f"{platform}: docker buildx build --platform {platform} -t {ref} --push")
    cp = subprocess.run(cmd, capture_output=True, text=True, timeout=3600)
    if cp.returncode != 0:
        tail = "\n".join(cp.stderr.strip().splitlines()[-5:])
        raise SourceError(f"{platform}: docker buildx build failed: {tail}")
    return _head_child(client, target.repository, tag, platform, "built locally (buildx)", 0)


# --------------------------------------------------------------------------- native


def _context_tar(context: Path) -> bytes:
    """The build context as a gzip-compressed tar, honouring ``.dockerignore`` (docker-py's
    own ``docker.utils.tar``, the same rules the local build uses).

    Compressed on purpose: ``docker build -`` decides "tar or Dockerfile" from the first
    1024 bytes (docker/cli ``build.IsArchive``), and an uncompressed tar whose first member
    is a PAX extended header (Python's default format) does not parse in 1024 bytes, so the
    CLI would send the tar as a Dockerfile ("unknown instruction: ././@PAXHEADER"). A gzip
    magic number is always recognised."""
    from docker.utils import tar

    ignore = context / ".dockerignore"
    patterns: list[str] = []
    if ignore.is_file():
        patterns = [ln.strip() for ln in ignore.read_text().splitlines()
                    if ln.strip() and not ln.startswith("#")]
    with tar(str(context), exclude=patterns, gzip=True) as f:
        return f.read()


def native_command(ref: str, dockerfile: str, buildargs: Mapping[str, str], config_len: int,
                   platform: Platform) -> str:
    """The remote shell command of a native build (see the module docstring). Every value
    is shell-quoted; no secret is part of it."""
    q = shlex.quote
    args = " ".join(f"--build-arg {q(f'{k}={v}')}" for k, v in buildargs.items())
    return (
        "umask 077; d=$(mktemp -d) || exit 90; trap 'rm -rf \"$d\"' EXIT; "
        f"dd bs=1 count={int(config_len)} of=\"$d/config.json\" 2>/dev/null || exit 91; "
        f"DOCKER_CONFIG=\"$d\" DOCKER_BUILDKIT=0 docker build -q --platform {q(str(platform))} "
        f"-f {q(dockerfile)} {args} -t {q(ref)} - >&2 || exit 92; "
        f"DOCKER_CONFIG=\"$d\" docker push {q(ref)} || exit 93"
    )


def build_native(session: Any, device: str, context: Path, dockerfile: str, args: Mapping[str, str],
                 platform: Platform, target: Reference, client: RegistryClient,
                 credentials: Credentials | tuple[str, str] | None, *, timeout: float = 1800,
                 log: Callable[[str], None] = lambda s: None) -> Child:
    """Build on ``device`` (an open :class:`fleet.ssh.Session`) with its own engine and push
    ``TARGET:TAG-<platform>`` from there. Raises :class:`SourceError` naming the device."""
    tag = platform_tag(target.tag or "latest", platform)
    ref = f"{target.name}:{tag}"
    creds = Credentials.of(credentials)
    config = docker_config_json(creds, target.registry) if creds else b'{"auths": {}}'
    buildargs = {**build_args_for(platform, platform), **dict(args)}
    command = native_command(ref, dockerfile, buildargs, len(config), platform)
    log(f"{platform}: building {ref} on {device} (its own engine)")
    result = session.run(command, stdin=config + _context_tar(context), timeout=timeout)
    if result.exit_status != 0:
        stage = {90: "mktemp", 91: "receiving the registry credentials", 92: "docker build",
                 93: "docker push"}.get(result.exit_status, f"exit status {result.exit_status}")
        text = (result.stderr or result.stdout).decode(errors="replace").strip()
        tail = " ".join(text.splitlines()[-4:])
        raise SourceError(f"{device}: native build of {platform} failed at {stage}: {tail}"
                          f"{classic_builder_hint(text)}")
    return _head_child(client, target.repository, tag, platform, f"built on {device}", 0)


# --------------------------------------------------------------------------- pick


def _copy_manifest(src: RegistryClient, src_repo: str, manifest: Manifest, dst: RegistryClient,
                   dst_repo: str) -> int:
    """Copy one image manifest (config + layers) into ``dst_repo``; returns blobs uploaded."""
    doc = manifest.json
    uploads = 0
    blobs = [doc.get("config", {})] + list(doc.get("layers", []))
    same = src.base_url == dst.base_url
    for d in blobs:
        digest = d.get("digest")
        if not digest:
            continue
        if same and src_repo == dst_repo:
            continue  # already there: the manifest was read from this repository
        # Same registry: ask for the mount straight away (201 whether or not the blob was
        # already in dst_repo), one request instead of HEAD + POST; every request costs a
        # password check on htpasswd registries.
        if same and dst.mount_blob(dst_repo, digest, src_repo):
            continue
        if dst.copy_blob(src, src_repo, dst_repo, digest) == "uploaded":
            uploads += 1
    if not (same and src_repo == dst_repo):
        # PUT is idempotent: same bytes, same digest
        dst.put_manifest(dst_repo, manifest.digest, manifest.raw, manifest.media_type)
    return uploads


def _resolve_platform_manifest(src: RegistryClient, ref: Reference, platform: Platform) -> Manifest:
    m = src.get_manifest(ref.repository, ref.ref)
    if m.media_type in INDEX_TYPES or (isinstance(m.json, dict) and "manifests" in m.json):
        entries = parse_index(m.raw)
        hits = [e for e in entries if not e.is_attestation and e.platform == platform]
        if not hits:
            held = ", ".join(e.label for e in entries if not e.is_attestation) or "nothing"
            raise SourceError(f"{platform}: {ref} is an index without a {platform} entry (it holds {held})")
        return src.get_manifest(ref.repository, hits[0].digest)
    return m


def pick_refs(refs: Mapping[Platform, str], platforms: Sequence[Platform], dst: RegistryClient,
              dst_repo: str, client_for: Callable[[str], RegistryClient],
              log: Callable[[str], None] = lambda s: None) -> list[Child]:
    """Copy each platform's referenced image into ``dst_repo``.

    ``client_for(registry)`` returns a client for a source registry (the same object as
    ``dst`` for the target registry, so blobs are mounted, not copied). A reference that is
    an index contributes its entry for that platform.
    """
    children = []
    for p in platforms:
        ref = Reference.parse(refs[p])
        src = client_for(ref.registry)
        log(f"{p}: picking {ref}")
        m = _resolve_platform_manifest(src, ref, p)
        if m.media_type not in MANIFEST_TYPES:
            raise SourceError(f"{p}: {ref} resolves to {m.media_type}, not an image manifest")
        uploads = _copy_manifest(src, ref.repository, m, dst, dst_repo)
        children.append(Child(p, m.digest, m.media_type, m.size, f"picked from {ref}", uploads=uploads))
    return children


def pick_index(index_ref: str, platforms: Sequence[Platform], dst: RegistryClient, dst_repo: str,
               client_for: Callable[[str], RegistryClient],
               log: Callable[[str], None] = lambda s: None) -> list[Child]:
    """Copy the ``platforms`` entries (exact platform match) of an existing index into
    ``dst_repo``, with the attestation entries that describe them (BuildKit's
    ``vnd.docker.reference.digest`` annotation) kept intact."""
    ref = Reference.parse(index_ref)
    src = client_for(ref.registry)
    m = src.get_manifest(ref.repository, ref.ref)
    if m.media_type not in INDEX_TYPES:
        raise SourceError(f"{ref} is not an index ({m.media_type}): use per-platform references")
    entries = parse_index(m.raw)
    children = []
    for p in platforms:
        hits = [e for e in entries if not e.is_attestation and e.platform == p]
        if not hits:
            held = ", ".join(e.label for e in entries if not e.is_attestation) or "nothing"
            raise SourceError(f"{p}: the index {ref} has no {p} entry (it holds {held})")
        e = hits[0]
        log(f"{p}: picking {ref.name}@{e.digest}")
        child_m = src.get_manifest(ref.repository, e.digest)
        uploads = _copy_manifest(src, ref.repository, child_m, dst, dst_repo)
        atts = []
        for a in entries:
            if a.is_attestation and a.annotations.get(ATTESTATION_DIGEST) == e.digest:
                am = src.get_manifest(ref.repository, a.digest)
                uploads += _copy_manifest(src, ref.repository, am, dst, dst_repo)
                atts.append(a)
        children.append(Child(p, child_m.digest, child_m.media_type, child_m.size,
                              f"picked from {ref}", atts, uploads))
    return children
