"""docs/tutorial.md, run on the lab: its commands, in order, as a reader types them.

The page marks what runs (see its "How this page is tested" section):

* a ```` ```console ```` block is a terminal: each line starting with ``$ `` is a command
  (a trailing backslash continues it on the next line), the other lines its output;
* ``<!-- tutorial: file=PATH -->`` just before a fenced block writes that block to PATH
  (relative to the tutorial's folder, ``~/fleet-tutorial``) before the commands that
  follow it run;
* ``<!-- tutorial: exit=N expect="TEXT" ... -->`` just before a console block: its last
  command must exit N (default 0; every other command must exit 0) and print each TEXT
  (also found when a table cell or a long line wraps it over several lines).

The one substitution: ``/var/lib/fleet-lab`` (the lab's default folder) becomes the lab's
real folder when ``$FLEET_LAB_DIR`` moved it. Commands run one after the other with bash
in the tutorial's folder, like one shell: what a command exports (``export NAME=...``)
and its working folder are kept for the next. ``HOME`` is an empty folder (no
``~/.ssh/known_hosts``, no Docker config, no history: the "empty controller"); ``fleet`` is
this checkout's; output is read as a terminal shows it (stdout and stderr together, 110
columns). So the marks' TEXT must not depend on the home folder's path.

``python -m tests.lab.test_tutorial --update`` runs the page the same way, with
:data:`UPDATE_HOME` as the home folder (made for the run and removed after it), and writes
every command's real output into the page (review the diff before committing).
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from fleet.lab.state import resolve_lab_dir

pytestmark = pytest.mark.lab

DOC = Path(__file__).resolve().parents[2] / "docs" / "tutorial.md"
LAB_DEFAULT = "/var/lib/fleet-lab"
#: The tutorial's devices, app and port (the lab tests' budget: x86 plus one emulated board).
DEVICES = ("x86", "pi4-64")
APP, PORT, REPO = "tut-hello", 8095, "tut/hello"
COLUMNS = 110
COMMAND_TIMEOUT = 300
#: The controller's home folder in the page's transcript (``--update``).
UPDATE_HOME = Path("/home/me")

_MARK = re.compile(r"<!--\s*tutorial:(?P<body>.*?)-->", re.S)
_FENCE = re.compile(r"^```(?P<lang>[\w-]*)\s*$")


@dataclass
class Command:
    text: str                     # as on the page, continuation lines joined with "\n"
    line: int                     # 1-based line of its "$ " in the page
    exit: int = 0
    expect: list[str] = field(default_factory=list)


@dataclass
class Block:
    """A fenced block of the page: ``start``/``end`` are the 0-based lines of its fences."""

    lang: str
    start: int
    end: int
    body: list[str]
    file: str | None = None
    commands: list[Command] = field(default_factory=list)


def parse(text: str) -> list[Block]:
    """The page's fenced blocks with their marks; console blocks get their commands."""
    lines = text.splitlines()
    blocks: list[Block] = []
    pending: dict[str, list[str]] = {}
    i = 0
    while i < len(lines):
        m = _MARK.search(lines[i])
        if m:
            pending = {}
            for key, value in (tok.split("=", 1) for tok in shlex.split(m.group("body"))):
                pending.setdefault(key, []).append(value)
            i += 1
            continue
        f = _FENCE.match(lines[i])
        if not f:
            if lines[i].strip():
                pending = {}  # a mark applies to the block right after it only
            i += 1
            continue
        start = i
        i += 1
        while i < len(lines) and not lines[i].startswith("```"):
            i += 1
        block = Block(f.group("lang"), start, i, lines[start + 1:i], (pending.get("file") or [None])[0])
        if block.lang == "console":
            block.commands = _commands(block, start)
            if block.commands:
                last = block.commands[-1]
                last.exit = int((pending.get("exit") or ["0"])[0])
                last.expect = pending.get("expect", [])
        blocks.append(block)
        pending = {}
        i += 1
    return blocks


def _commands(block: Block, start: int) -> list[Command]:
    out: list[Command] = []
    cont = False
    for n, line in enumerate(block.body):
        if cont:
            out[-1].text += "\n" + line
            cont = line.endswith("\\")
        elif line.startswith("$ "):
            out.append(Command(line[2:], start + n + 2))
            cont = line.endswith("\\")
    return out


def substitute(text: str, lab_dir: str) -> str:
    """The page's lab paths for this machine's lab."""
    return text.replace(LAB_DEFAULT, lab_dir.rstrip("/")) if lab_dir.rstrip("/") != LAB_DEFAULT else text


class Shell:
    """Runs the page's commands like one interactive bash: exports and the working folder
    carry over from one command to the next."""

    def __init__(self, home: Path, lab_dir: str):
        self.home = home
        self.lab_dir = lab_dir
        self.cwd = home / "fleet-tutorial"
        self.cwd.mkdir(parents=True)
        home.chmod(0o700)
        (home / ".ssh").mkdir(mode=0o700)
        bin_dir = str(Path(sys.executable).parent)
        drop = ("SSH_AUTH_SOCK", "DOCKER_CONFIG", "DOCKER_HOST", "XDG_STATE_HOME", "XDG_CONFIG_HOME",
                "FLEET_HISTORY", "FLEET_REPORT_DIR", "REGISTRY_USER", "REGISTRY_PASSWORD")
        self.env = {k: v for k, v in os.environ.items() if k not in drop}
        self.env.update(HOME=str(home), PATH=f"{bin_dir}:{os.environ.get('PATH', '/usr/bin:/bin')}",
                        COLUMNS=str(COLUMNS), TERM="dumb", PYTHONUNBUFFERED="1", LC_ALL="C.UTF-8")
        self.state = home / ".tutorial-state"

    def run(self, command: str) -> tuple[int, str]:
        script = (f"{substitute(command, self.lab_dir)}\n__rc=$?\n"
                  f"env -0 > {shlex.quote(str(self.state))}.env; pwd > {shlex.quote(str(self.state))}.pwd\n"
                  f"exit $__rc\n")
        cp = subprocess.run(["bash", "-c", script], cwd=self.cwd, env=self.env, stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=COMMAND_TIMEOUT)
        env_file = Path(f"{self.state}.env")
        if env_file.exists():
            self.env = dict(kv.split("=", 1) for kv in env_file.read_text().split("\0") if "=" in kv)
            for k in ("_", "SHLVL", "PWD", "OLDPWD", "__rc"):
                self.env.pop(k, None)
            self.cwd = Path(Path(f"{self.state}.pwd").read_text().strip())
        return cp.returncode, self.shown(cp.stdout.decode("utf-8", "replace"))

    def shown(self, output: str) -> str:
        """``output`` as the page shows it: no trailing blanks, the default lab folder."""
        text = output
        if self.lab_dir.rstrip("/") != LAB_DEFAULT:
            text = text.replace(self.lab_dir.rstrip("/"), LAB_DEFAULT)
        return "\n".join(line.rstrip() for line in text.splitlines())

    def write(self, block: Block) -> None:
        path = self.cwd / block.file
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(substitute("\n".join(block.body) + "\n", self.lab_dir))


def clean_devices() -> None:
    """No container, image or record of the tutorial's app on its devices (so the page's
    first deploy is a first one), over the system ssh client with the lab's key."""
    from tests.lab.apps import Apps
    from tests.labfixture import Lab, fleet
    import json

    status = json.loads(fleet("lab", "status", "--json", check=True).stdout)
    Apps(Lab(Path(resolve_lab_dir(None)), status), Path(tempfile.gettempdir()), APP, PORT, REPO).clean(DEVICES)


def run_page(text: str, home: Path, on_command=None) -> list[tuple[Command, int, str, float]]:
    """Run every file block and command of the page in order; returns (command, exit
    status, output, seconds) for each. ``on_command`` is called with each as it ends."""
    shell = Shell(home, str(resolve_lab_dir(None)))
    done = []
    for block in parse(text):
        if block.file:
            shell.write(block)
        for cmd in block.commands:
            t0 = time.monotonic()
            rc, out = shell.run(cmd.text)
            item = (cmd, rc, out, time.monotonic() - t0)
            done.append(item)
            if on_command:
                on_command(*item)
    return done


def test_the_tutorial_runs_as_written(lab, tmp_path):
    text = DOC.read_text()
    blocks = parse(text)
    commands = [c for b in blocks for c in b.commands]
    assert len(commands) >= 15 and any(b.file for b in blocks), "the page lost its runnable parts"
    clean_devices()
    failures: list[str] = []
    t0 = time.monotonic()

    def check(cmd: Command, rc: int, out: str, seconds: float) -> None:
        where = f"docs/tutorial.md:{cmd.line}: $ {cmd.text}"
        if rc != cmd.exit:
            failures.append(f"{where}\n  exit status {rc}, the page says {cmd.exit}\n{out[-3000:]}")
        flat = " ".join(re.sub(r"[│┃]", " ", out).split())  # a table cell wrapped over lines
        dense = re.sub(r"[\s│┃]", "", out)  # ... or a long path folded mid-word
        for want in cmd.expect:
            if want not in out and want not in flat and re.sub(r"\s", "", want) not in dense:
                failures.append(f"{where}\n  output lacks {want!r}\n{out[-3000:]}")

    try:
        run_page(text, tmp_path / "home", check)
    finally:
        clean_devices()
    assert not failures, "\n\n".join(failures)
    assert time.monotonic() - t0 < 600  # bounded; the budget (3 min) is measured, not asserted


def update(path: Path = DOC) -> None:
    """Rewrite every console block of ``path`` with the real output of its commands."""
    text = path.read_text()
    lines = text.splitlines()
    blocks = [b for b in parse(text) if b.commands]
    outputs: dict[int, tuple[int, str]] = {}

    def keep(cmd: Command, rc: int, out: str, seconds: float) -> None:
        outputs[cmd.line] = (rc, out)
        print(f"{seconds:6.1f}s exit {rc} (page: {cmd.exit})  $ {cmd.text.splitlines()[0]}", file=sys.stderr)

    if UPDATE_HOME.exists():
        sys.exit(f"{UPDATE_HOME} exists: the transcript's home must start empty")
    clean_devices()
    try:
        run_page(text, UPDATE_HOME, keep)
    finally:
        shutil.rmtree(UPDATE_HOME, ignore_errors=True)
        clean_devices()
    for block in reversed(blocks):
        body: list[str] = []
        for cmd in block.commands:
            body += ["$ " + cmd.text.splitlines()[0], *cmd.text.splitlines()[1:]]
            out = outputs.get(cmd.line, (None, ""))[1]
            if out:
                body += out.splitlines()
        lines[block.start + 1:block.end] = body
    path.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    if sys.argv[1:] != ["--update"]:
        sys.exit("usage: python -m tests.lab.test_tutorial --update")
    update()
