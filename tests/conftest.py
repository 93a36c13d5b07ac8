"""Shared pytest fixtures. Each support module's fixtures live in their own marked block."""

from __future__ import annotations

import os

import pytest


# ======================================================= state (history, reports) ====
@pytest.fixture(scope="session", autouse=True)
def _private_state(tmp_path_factory):
    """Every test, and every fleet process a test starts, keeps its history and reports
    under a private folder of the session, never the user's own state folder."""
    state = tmp_path_factory.mktemp("state")
    state.chmod(0o700)
    saved = {k: os.environ.get(k) for k in ("XDG_STATE_HOME",)}
    os.environ["XDG_STATE_HOME"] = str(state)
    yield state
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v
# ================================================================ end state ==========

# ============================================================ ssh (tests/sshd.py) ====
from tests.sshd import SshdServer, start_sshd


@pytest.fixture(scope="session")
def sshd(tmp_path_factory) -> SshdServer:
    """One real OpenSSH sshd on a random 127.0.0.x for the session (read-only use:
    tests that need a special server config start their own with ``start_sshd``)."""
    server = start_sshd(tmp_path_factory.mktemp("sshd"))
    yield server
    server.stop()


@pytest.fixture
def ssh_home(tmp_path, monkeypatch):
    """Isolate the SSH client from the real user: HOME -> tmp (so ~/.ssh/config,
    ~/.ssh/known_hosts and ~/.ssh/id_* are the test's), no ssh-agent."""
    home = tmp_path / "home"
    (home / ".ssh").mkdir(parents=True, mode=0o700)
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("SSH_AUTH_SOCK", raising=False)
    return home
# ======================================================== end ssh fixtures ==========


# ============================================ registry (tests/registry_fixtures.py) ====
# Real `docker-registry serve` processes on 127.0.0.x (TLS+htpasswd, token auth, plain).
from tests.registry_fixtures import (  # noqa: E402,F401 - fixtures
    plain_registry,
    registry_ca,
    tls_registry,
    tls_registry_2,
    token_registry,
)
# =================================================== end registry fixtures ==========


# ==================================================== lab (tests/labfixture.py) ====
# One session-scoped `lab` fixture for every lab test module (defined once, so pytest
# keeps one instance for the whole session).
from tests.labfixture import lab  # noqa: E402,F401 - fixture
# ======================================================== end lab fixtures ==========


# ============================================== two workers (pytest-xdist) ==========
# The README's test command runs two pytest-xdist workers (`-n 2`). The lab is one shared
# set of boards: every test on it (tests/lab/, the only tests that use the `lab` fixture)
# is one scope, run in order by one worker, while the other worker runs the unit and
# integration tests module by module (they bring up their own sshd, engines, registries
# and brokers on loopback). The lab tests are put first so their worker starts on them
# at once (they are the longest part). xdist's own `--dist loadgroup` did not group here
# (pytest 9.2, xdist 3.8: tests marked with one `xdist_group` ran on both workers, and
# the workers' node ids had no `@group` suffix), so the grouping is this scheduler's,
# given through xdist's documented `pytest_xdist_make_scheduler` hook.
def _is_lab(nodeid: str) -> bool:
    return nodeid.startswith("tests/lab/")


def pytest_collection_modifyitems(config, items):
    items.sort(key=lambda item: not _is_lab(item.nodeid))  # stable: each part keeps its order


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config, log):
    from xdist.scheduler import LoadScopeScheduling

    class LabFirst(LoadScopeScheduling):
        """One scope for every lab test (the lab tests come first in the collection),
        one per module for the rest."""

        def _split_scope(self, nodeid: str) -> str:
            return "lab" if _is_lab(nodeid) else nodeid.split("::", 1)[0]

    return LabFirst(config, log)
