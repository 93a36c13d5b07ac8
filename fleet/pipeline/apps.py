"""A playbook's app as images and units: one image and one container for ``container:``;
for ``compose:``, one image per service (built ones published by fleet as ONE multi-arch
tag each, picked ones read from their registry) and per device its resolved stack.

    images(playbook) -> [AppImage]        plan + publish/read each (stages)
    units(...) -> DeviceJob per device    what deploy, verify and rollback work on
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Callable, Sequence

from fleet.compose import ResolvedStack, resolve_fleet
from fleet.deploy.devicetxn import parse_app_records
from fleet.deploy.jobs import AuthRef, DeviceJob, Unit
from fleet.errors import FleetError
from fleet.pipeline.stages import Probed, Run, plan, publish
from fleet.plan import DevicePlan, Plan, plan_devices
from fleet.playbook import BuildSource, Playbook, RegistrySettings
from fleet.publish import PublishResult, read_published
from fleet.registry import Reference
from fleet.verify import UNPUBLISHED, Expected

__all__ = ["AppImage", "app_images", "app_name", "containers", "Planned", "plan_app", "publish_app", "device_jobs",
           "auth_for", "resolve_stacks", "stack_job"]


@dataclass
class AppImage:
    """One image of the app: ``service`` (its Compose service; None for ``container:``),
    ``reference`` (the tag), ``playbook`` (the playbook to plan and publish it with: for a
    built service the app's playbook with that service's image and build), ``built``
    (fleet builds and publishes it; False: picked from its registry as it is)."""

    service: str | None
    reference: str
    playbook: Playbook
    built: bool
    plan: Plan | None = None
    published: PublishResult | None = None


def app_name(playbook: Playbook) -> str:
    """The app's name on a device (its lock and records): the Compose project, else the
    container's name."""
    return playbook.compose.project if playbook.compose is not None else playbook.container_spec.name


def containers(playbook: Playbook) -> list[str]:
    """The app's container names on a device, in service order: ``PROJECT-SERVICE`` for a
    Compose stack, the container's name otherwise."""
    if playbook.compose is None:
        return [playbook.container_spec.name]
    return [f"{playbook.compose.project}-{svc}" for svc in playbook.compose.services]


def app_images(playbook: Playbook) -> list[AppImage]:
    """The images of ``playbook``'s app, in service order. A service with only ``image:``
    naming the tag another service builds runs that built image (as docker compose does
    when it builds it first): it is planned and published once, with the building service."""
    compose = playbook.compose
    if compose is None:
        return [AppImage(None, playbook.image, playbook, True)]
    out = []
    built = {compose.images[s]: s for s in compose.services if compose.builds.get(s) is not None}
    for svc in compose.services:
        ref = compose.images[svc]
        build = compose.builds.get(svc) or (compose.builds[built[ref]] if ref in built else None)
        if build is not None:
            pb = replace(playbook, image=ref, compose=None,
                         source=BuildSource(build.context, build.dockerfile, dict(build.args), build.target))
            out.append(AppImage(svc, ref, pb, True))
        else:
            out.append(AppImage(svc, ref, playbook, False))
    return out


@dataclass
class Planned:
    """The app planned for the probed devices: its ``images`` (each with its plan),
    ``stacks`` (per reachable device its resolved Compose stack; empty for
    ``container:``), ``errors`` (why nothing may be published or touched)."""

    images: list[AppImage]
    stacks: dict[str, ResolvedStack] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)

    @property
    def main(self) -> AppImage:
        return self.images[0]

    def to_dict(self) -> dict[str, Any]:
        return {"images": {i.reference: (i.plan.to_dict() if i.plan else None) for i in self.images},
                "values": [s.values.to_dict() for s in self.stacks.values()],
                "errors": list(self.errors)}


def plan_app(run: Run | None, playbook: Playbook, probed: Sequence[Probed] | None,
             explicit: Sequence = ()) -> Planned:
    """Resolve each device's stack (a missing required value or a Jinja value is a usage
    error naming the device and variable, before anything is touched), then plan every
    image: built ones as a publish (``platforms``), picked ones against the index in their
    registry (every device's platform must be covered). ``probed`` None: no devices (the
    explicit platforms or the playbook's list alone; no stacks resolved)."""
    images = app_images(playbook)
    out = Planned(images)
    reachable = [p for p in probed or () if p.facts is not None]
    if run is not None and probed is not None:
        out.stacks = resolve_stacks(run, playbook, reachable)
    first: dict[str, AppImage] = {}
    for img in images:
        if img.built and img.reference in first:  # the same tag built by another service
            img.plan = first[img.reference].plan
            continue
        first.setdefault(img.reference, img)
        if img.built:
            img.plan = plan(img.playbook, reachable if probed is not None else None, explicit)
            out.errors += [f"{img.reference}: {e}" if playbook.compose else e for e in img.plan.errors]
        else:
            try:
                img.published = read_published(img.reference, RegistrySettings(), content=True)
            except FleetError as exc:
                out.errors.append(f"{img.reference}: {exc}")
                continue
            platforms = [e.platform for e in img.published.entries]
            devices = plan_devices({p.host: p.detection for p in reachable}, platforms,
                                   {p.host: p.detection.engine_version if p.detection else None for p in reachable})
            img.plan = Plan(tuple(platforms), {pl: f"picked from {img.reference}" for pl in platforms}, devices,
                            mode="picked")
            out.errors += [f"{img.reference}: {e}" for e in img.plan.errors]
    return out


def resolve_stacks(run: Run, playbook: Playbook, probed: Sequence[Probed]) -> dict[str, ResolvedStack]:
    """Each device's resolved Compose stack (empty for ``container:``). Raises UsageError
    naming every device whose values fail (a missing required one, a Jinja value)."""
    if playbook.compose is None:
        return {}
    return dict(resolve_fleet(playbook.compose, [run.connections.host(p.host) for p in probed]))


def publish_app(run: Run | None, planned: Planned, log: Callable[[str], None], *,
                media_type: str | None = None) -> None:
    """Publish every built image of the app (one multi-arch tag each)."""
    done: dict[str, PublishResult] = {}
    for img in planned.images:
        if img.built and img.published is None:
            assert img.plan is not None
            if img.reference not in done:
                done[img.reference] = publish(img.playbook, img.plan, run, log=log, media_type=media_type)
            img.published = done[img.reference]


def auth_for(playbook: Playbook, repository: str) -> AuthRef:
    """Where the credentials devices pull ``repository`` with are found: the playbook's
    ``registry:`` settings (variable names, a Docker config path; the default Docker config
    when it names none), resolved where the device's work runs. Without any there, the
    device pulls with its own (anonymous, or its engine's login)."""
    registry = Reference.parse(repository).registry
    s = playbook.registry
    return AuthRef(registry, s.username_env, s.password_env,
                   str(s.docker_config) if s.docker_config is not None else None)


def device_jobs(playbook: Playbook, planned: Planned, probed: Sequence[Probed], *,
                check: bool = False) -> dict[str, DeviceJob]:
    """Per reachable device its :class:`DeviceJob`: one unit per image of the app, with the
    entry planned for the device in that image's (published) index."""
    name = app_name(playbook)
    auths: dict[str, AuthRef | None] = {}
    jobs: dict[str, DeviceJob] = {}
    for p in probed:
        if p.facts is None:
            continue
        units = []
        stack = planned.stacks.get(p.host)
        for img in planned.images:
            assert img.plan is not None
            dp = next(d for d in img.plan.devices if d.host == p.host)
            assert dp.entry_index is not None  # a plan without errors places every device
            expected, size, repo = _expected(img, dp, check)
            if repo not in auths:
                auths[repo] = None if check else auth_for(playbook, repo)
            if img.service is None:
                spec = playbook.container_spec.to_service()
                container = playbook.container_spec.name
            else:
                assert stack is not None
                spec = stack.services[img.service]
                container = f"{stack.project}-{img.service}"
            units.append(Unit(img.service or container, container, spec, expected, dp, size, auths[repo]))
        jobs[p.host] = stack_job(p.host, units, name, p.facts, stack)
    return jobs


def stack_job(host: str, units: list[Unit], name: str, facts: dict, stack: ResolvedStack | None) -> DeviceJob:
    """The :class:`DeviceJob` of ``units`` on ``host``: for a stack, its units in start
    order and which containers must be healthy before which (``depends_on`` with
    ``condition: service_healthy``); the app's last record from the probe's facts."""
    before: dict[str, tuple[str, ...]] = {}
    if stack is not None:
        rank = {svc: i for i, svc in enumerate(stack.order)}
        units = sorted(units, key=lambda u: rank.get(u.service, len(rank)))
        by_service = {u.service: u.container for u in units}
        before = {by_service[s]: tuple(by_service[d] for d in deps if d in by_service)
                  for s, deps in stack.healthy_before.items() if s in by_service}
    return DeviceJob(host, tuple(units), name, parse_app_records(facts.get("fleet_apps")).get(name), before, stack)


def _expected(img: AppImage, dp: DevicePlan, check: bool) -> tuple[Expected, int, str]:
    if img.published is not None:
        entry = img.published.entries[dp.entry_index]  # type: ignore[index]
        return Expected.from_entry(img.published.repository, img.published.index_digest, entry), entry.size, \
            img.published.repository
    repo = Reference.parse(img.reference).name
    assert dp.entry_platform is not None and check
    return Expected(repo, UNPUBLISHED, dp.entry_platform, "", "", ()), 0, repo
