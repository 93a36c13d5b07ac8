"""Load the real-device cases kept with the tests (``tests/data/cases/*.yaml``; each case
names its public source, see ``tests/data/cases/README.md``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

CASES_DIR = Path(__file__).resolve().parent / "data" / "cases"


def load_cases(name: str) -> list[dict[str, Any]]:
    """The list of cases in ``tests/data/cases/<name>``."""
    path = CASES_DIR / name
    cases = yaml.safe_load(path.read_text(encoding="utf-8"))
    assert isinstance(cases, list) and cases, f"{path}: expected a non-empty list of cases"
    return cases
