"""Locate and load the project's shared real-device cases (``shared/cases/*.yaml``).

The shared folder sits next to the repository (``<repo>/../shared``); set
``FLEET_SHARED_DIR`` to use another copy. A missing folder is a test failure, not a skip.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parent.parent


def shared_dir() -> Path:
    """The shared folder: ``$FLEET_SHARED_DIR`` or ``<repo>/../shared``."""
    env = os.environ.get("FLEET_SHARED_DIR")
    return Path(env) if env else REPO.parent / "shared"


def load_cases(name: str) -> list[dict[str, Any]]:
    """The list of cases in ``shared/cases/<name>`` (raises if the file is missing)."""
    path = shared_dir() / "cases" / name
    if not path.is_file():
        raise FileNotFoundError(f"shared case file {path} not found (set FLEET_SHARED_DIR)")
    cases = yaml.safe_load(path.read_text(encoding="utf-8"))
    assert isinstance(cases, list) and cases, f"{path}: expected a non-empty list of cases"
    return cases
