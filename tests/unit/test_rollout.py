"""The rollout decisions (fleet.deploy.decide) and the swap/commit/rollback sequences
(fleet.deploy.txn), pure: decisions on captured engine JSON, sequences on an in-memory
engine (tests/enginedouble.py). The same sequences run on real engines in tests/lab."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from fleet.deploy import txn
from fleet.deploy.container import LABEL, deployment_labels, parked_names, spec_digest
from fleet.deploy.decide import (PULL_EXPANSION, create_from, decide, pull_platform, space_needed,
                                 space_refusal)
from fleet.deploy.view import DeviceView, observe
from fleet.engine import DiskSpace, EngineError, parse_container, parse_image
from fleet.platform import Platform
from fleet.playbook import ContainerSpec
from fleet.verify import Expected
from tests.enginedouble import MemoryEngine, container

DATA = Path(__file__).resolve().parents[1] / "data" / "engine"
NAME = "hello"
NEW, PREV, FAILED = parked_names(NAME)
D_OLD, D_NEW = "20261201T000000Z-aaaaaa", "20261202T000000Z-bbbbbb"


def load(name: str):
    return json.loads((DATA / name).read_text())


# --------------------------------------------------------------------------- decisions


@pytest.fixture()
def deployed():
    """The real pi-zero container and image of a `fleet deploy` (engine 20.10) and the entry
    its labels name."""
    c = parse_container(load("container-20.10-deployed-pi-zero.json"))
    img = parse_image(load("image-20.10-deployed-pi-zero.json"))
    lab = c.labels
    exp = Expected(lab[LABEL["repository"]], lab[LABEL["index"]], Platform.parse(lab[LABEL["platform"]]),
                   lab[LABEL["manifest"]], lab[LABEL["config"]], img.diff_ids)
    view = DeviceView(NAME, MemoryEngine().info(), c, img, planned_image=img)
    return view, exp, lab[LABEL["spec"]]


def test_unchanged_when_labels_and_engine_agree(deployed):
    view, exp, spec_id = deployed
    d = decide(view, exp, spec_id)
    assert d.keep and not d.pull and "already runs deployment" in d.reason
    assert all(c.ok is not False for c in d.checks)


def test_changed_settings_redeploy_without_a_pull(deployed):
    view, exp, _ = deployed
    d = decide(view, exp, "another-spec-digest")
    assert not d.keep and not d.pull  # the planned image is on the device already


def test_a_container_that_no_longer_verifies_is_redeployed(deployed):
    view, exp, spec_id = deployed
    stopped = replace(view.current, running=False, status="exited", exit_code=139)
    d = decide(replace(view, current=stopped), exp, spec_id)
    assert not d.keep
    crashed = replace(view.current, image_id="sha256:" + "9" * 64)
    d = decide(replace(view, current=crashed), exp, spec_id)
    assert not d.keep and "does not verify" in d.reason and "redeploy" in d.reason


def test_pull_needed_when_the_planned_image_is_absent_or_another_child(deployed):
    view, exp, spec_id = deployed
    assert decide(replace(view, current=None, planned_image=None), exp, spec_id).pull
    other = replace(view.planned_image, architecture="arm64", variant="")
    assert decide(replace(view, current=None, planned_image=other), exp, spec_id).pull


def test_space_refusal_names_the_data_root_and_the_budget():
    space = DiskSpace("tmpfs", 1024, 0, 1024, "/var/lib/docker", "/var/lib/docker")
    why = space_refusal(space, "/var/lib/docker", 10 * 1048576, 32 * 1048576)
    assert "not enough space on the engine's data root /var/lib/docker" in why and "nothing pulled" in why
    assert f"{PULL_EXPANSION} x 10.0 MiB child" in why
    measured = DiskSpace("/dev/root", 10**9, 0, 10**9, "/", "/var")
    assert space_refusal(measured, "/var/lib/docker", 10, 0) is None
    tight = DiskSpace("/dev/root", 1, 0, 1, "/", "/var")
    assert "(measured at /var)" in space_refusal(tight, "/var/lib/docker", 10 * 1048576, 0)
    assert space_needed(10, 5) == PULL_EXPANSION * 10 + 5


def test_pull_platform_and_create_reference(deployed):
    view, exp, _ = deployed
    assert pull_platform(exp, False, Platform.parse("linux/arm/v6")) is None  # the engine picks it itself
    assert pull_platform(exp, True, Platform.parse("linux/arm/v8")) == exp.platform
    assert pull_platform(exp, False, None) == exp.platform  # engine platform unknown: say it
    assert create_from(exp, view.planned_image, "classic") == (view.planned_image.id, None)
    assert create_from(exp, view.planned_image, "containerd") == (exp.pull_reference, exp.platform)


def test_observe_collects_leftovers_of_an_earlier_swap():
    eng = MemoryEngine()
    for c in (container(NAME, deployment=D_OLD), container(PREV, running=False), container(NEW, running=False),
              container("hello-other")):
        eng.add(c)
    view = observe(eng, NAME, None)
    assert view.current.name == NAME and set(view.leftovers) == {PREV, NEW}


# --------------------------------------------------------------------------- sequences


def _device(*, old: bool = True) -> MemoryEngine:
    """A device running the old release (unless ``old`` is False) with the new one created
    as NAME.new, as the deploy leaves it right before the swap."""
    eng = MemoryEngine()
    if old:
        eng.add(container(NAME, deployment=D_OLD))
    eng.add(container(NEW, running=False, deployment=D_NEW))
    return eng


def _deployment(eng: MemoryEngine, name: str) -> str | None:
    c = eng.container(name)
    return c.labels.get(LABEL["deployment"]) if c else None


def test_swap_then_commit_leaves_only_the_new_release_running():
    eng = _device()
    done: list[str] = []
    txn.apply(eng, txn.swap_ops(NAME), done.append)
    assert done == [f"{NAME} -> {PREV}", f"stop {PREV}", f"{NEW} -> {NAME}", f"start {NAME}"]
    assert eng.running() == {NAME: True, PREV: False}
    txn.apply(eng, txn.commit_ops(NAME))
    assert eng.running() == {NAME: True} and _deployment(eng, NAME) == D_NEW


def test_swap_then_rollback_restores_the_previous_release_and_keeps_the_failed_one():
    eng = _device()
    txn.apply(eng, txn.swap_ops(NAME))
    txn.apply(eng, txn.rollback_ops(NAME, D_NEW))
    assert eng.running() == {NAME: True, FAILED: False}
    assert _deployment(eng, NAME) == D_OLD and _deployment(eng, FAILED) == D_NEW


@pytest.mark.parametrize("k", range(len(txn.swap_ops(NAME)) + 1))
def test_rollback_from_any_point_of_an_interrupted_swap_restores_the_old_release(k):
    """The controller or the link dies after the first k ops of the swap: the rollback run
    from there always ends with the old release running under its name."""
    eng = _device()
    txn.apply(eng, txn.swap_ops(NAME)[:k])
    txn.apply(eng, txn.rollback_ops(NAME, D_NEW))
    assert _deployment(eng, NAME) == D_OLD and eng.container(NAME).running
    txn.apply(eng, txn.rollback_ops(NAME, D_NEW))  # idempotent: a second run changes nothing
    assert _deployment(eng, NAME) == D_OLD and eng.container(NAME).running


@pytest.mark.parametrize("verb", ["stop", "start"])
def test_an_engine_error_mid_swap_is_undone_by_the_rollback(verb):
    eng = _device()
    eng.fail[verb] = 1
    with pytest.raises(EngineError, match="injected"):
        txn.apply(eng, txn.swap_ops(NAME))
    eng.fail.clear()
    txn.apply(eng, txn.rollback_ops(NAME, D_NEW))
    assert _deployment(eng, NAME) == D_OLD and eng.container(NAME).running


def test_first_deploy_rollback_keeps_the_failed_container_and_invents_nothing():
    eng = _device(old=False)
    txn.apply(eng, txn.swap_ops(NAME))
    assert eng.running() == {NAME: True}
    txn.apply(eng, txn.rollback_ops(NAME, D_NEW))
    assert eng.running() == {FAILED: False}


def test_rollback_before_the_swap_began_leaves_the_running_release_alone():
    eng = _device()
    txn.apply(eng, txn.rollback_ops(NAME, D_NEW))
    assert eng.running() == {NAME: True, NEW: False} and _deployment(eng, NAME) == D_OLD
    assert eng.calls == []


def test_prepare_recovers_what_an_interrupted_run_left():
    # Killed between "stop the old one" and "start the new one": NAME.previous (stopped) and
    # a created-but-never-started NAME.new, no NAME. The next deploy once failed here with
    # `docker rename ... name "/hello" is already in use`.
    eng = MemoryEngine()
    eng.add(container(PREV, running=False, deployment=D_OLD))
    eng.add(container(NEW, running=False, deployment="20261130T000000Z-cccccc"))
    eng.add(container(FAILED, running=False))
    txn.apply(eng, txn.prepare_ops(NAME))
    assert set(eng.containers) == {NAME} and _deployment(eng, NAME) == D_OLD
    eng.add(container(NEW, running=False, deployment=D_NEW))
    txn.apply(eng, txn.swap_ops(NAME))
    txn.apply(eng, txn.commit_ops(NAME))
    assert eng.running() == {NAME: True} and _deployment(eng, NAME) == D_NEW


def test_prepare_drops_a_stale_previous_when_the_app_runs():
    eng = MemoryEngine()
    eng.add(container(NAME, deployment=D_OLD))
    eng.add(container(PREV, running=False, deployment="20261101T000000Z-dddddd"))
    txn.apply(eng, txn.prepare_ops(NAME))
    assert eng.running() == {NAME: True}


# --------------------------------------------------------------------------- records


def test_labels_record_the_deployment_and_what_ran_before():
    old = container(NAME, deployment=D_OLD, labels={LABEL["index"]: "sha256:" + "1" * 64,
                                                   LABEL["config"]: "sha256:" + "2" * 64})
    labels = deployment_labels(deployment=D_NEW, playbook="hello", reference="r/hello:2", repository="r/hello",
                               index_digest="sha256:" + "3" * 64, manifest_digest="sha256:" + "4" * 64,
                               config_digest="sha256:" + "5" * 64, platform="linux/arm/v6",
                               spec_id=spec_digest(ContainerSpec(name=NAME)), previous=old)
    assert labels[LABEL["deployment"]] == D_NEW and labels[LABEL["previous_deployment"]] == D_OLD
    assert labels[LABEL["previous_index"]] == "sha256:" + "1" * 64
    assert labels[LABEL["previous_config"]] == "sha256:" + "2" * 64
