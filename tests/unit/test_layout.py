"""The package's shape, as the architecture (docs/architecture.md) promises it: command
modules render and parse only, and never import one another; modules stay readable in one
sitting; the repository stands alone (no text points at files outside it)."""

from __future__ import annotations

import ast
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
CLI = REPO / "fleet" / "cli"
#: Modules of fleet/cli that the commands share (options, rendering): not commands.
SHARED = {"__init__", "options", "render"}


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{a.name}" for a in node.names)
        elif isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
    return names


def test_no_command_module_imports_another():
    commands = {p.stem for p in CLI.glob("*.py")} - SHARED
    assert {"deploy", "probe", "verify"} <= commands
    for name in sorted(commands):
        others = {f"fleet.cli.{c}" for c in commands - {name}}
        assert not _imports(CLI / f"{name}.py") & others, f"fleet/cli/{name}.py imports another command module"


def test_modules_stay_about_600_lines():
    long = {str(p.relative_to(REPO)): n for p in (REPO / "fleet").rglob("*.py")
            if (n := len(p.read_text().splitlines())) > 620}
    assert not long, long


def test_no_text_refers_to_files_outside_the_repository():
    files = subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True, check=True).stdout.split()
    if not files:  # not a git checkout (an sdist): nothing to check against
        return
    # a folder beside the checkout and the machine's work folder (spelled in two parts so
    # that this file does not name them itself)
    outside = ("../" + "shared", "/" + "work/")
    found = []
    for f in files:
        p = REPO / f
        if p == Path(__file__).resolve():
            continue
        if p.suffix not in {".py", ".md", ".yaml", ".yml", ".toml", ".cfg", ".txt", ".json", ""} or not p.is_file():
            continue
        text = p.read_text(errors="replace")
        found += [f"{f}: {o}" for o in outside if o in text]
    assert not found, found
