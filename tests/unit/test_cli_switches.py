"""The switches Ansible and OpenSSH users reach for first: ``-h`` as ``--help`` on every
command, shell completion (the script and a real completion answer), ``-v`` counted, and
``--platform`` comma lists as buildx takes them. The real console script, no network."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from fleet.errors import UsageError
from fleet.pipeline.stages import parse_platforms
from fleet.platform import Platform

FLEET = Path(sys.executable).with_name("fleet")
ROOT = Path(__file__).resolve().parents[2]
COMMANDS = ["detect", "probe", "facts", "plan", "publish", "deploy", "rollback", "history", "status", "prune",
            "verify", "worker", "lab", "lab up"]


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    cmd = [str(FLEET)] if FLEET.exists() else [sys.executable, "-c", "from fleet.cli import main; main()"]
    e = dict(os.environ, COLUMNS="120", **(env or {}))
    return subprocess.run([*cmd, *args], capture_output=True, text=True, timeout=60, env=e, cwd=ROOT)


@pytest.mark.parametrize("command", ["", *COMMANDS])
def test_h_is_help(command):
    words = command.split()
    short, long = run(*words, "-h"), run(*words, "--help")
    assert short.returncode == 0 and long.returncode == 0, short.stderr
    assert short.stdout == long.stdout and "Usage: fleet" in short.stdout


@pytest.mark.parametrize("command", [c for c in COMMANDS if c not in ("lab", "lab up")])
def test_every_command_takes_v(command):
    assert "--verbose" in run(command, "-h").stdout and "-v" in run(command, "-h").stdout


def test_completion_script_and_a_real_completion():
    script = run("--show-completion", env={"SHELL": "/bin/bash"})
    assert script.returncode == 0
    assert "_FLEET_COMPLETE=complete_bash" in script.stdout and "complete " in script.stdout
    for shell, marker in (("bash", "complete -o default -F _fleet_completion fleet"),
                          ("zsh", "#compdef fleet"), ("fish", "complete --command fleet")):
        s = run(env={"_FLEET_COMPLETE": f"source_{shell}"})
        assert s.returncode == 0 and marker in s.stdout, (shell, s.stdout[:300])
    # what bash asks the script when the user types `fleet pro<TAB>` and `fleet probe --acc<TAB>`
    words = run(env={"_FLEET_COMPLETE": "complete_bash", "COMP_WORDS": "fleet pro", "COMP_CWORD": "1"})
    assert words.stdout.split() == ["probe"]
    opts = run(env={"_FLEET_COMPLETE": "complete_bash", "COMP_WORDS": "fleet probe --acc", "COMP_CWORD": "2"})
    assert opts.stdout.split() == ["--accept-new"]


def test_platform_comma_lists():
    assert parse_platforms(["linux/arm/v6,linux/arm64", "linux/amd64"]) == [
        Platform.parse("linux/arm/v6"), Platform.parse("linux/arm64"), Platform.parse("linux/amd64")]
    assert parse_platforms([" linux/arm/v7 , linux/386"]) == [Platform.parse("linux/arm/v7"),
                                                             Platform.parse("linux/386")]
    with pytest.raises(UsageError, match="empty platform"):
        parse_platforms(["linux/arm64,"])
    with pytest.raises(UsageError, match="duplicate platform linux/arm64"):
        parse_platforms(["linux/arm64", "linux/amd64,linux/arm64"])
    with pytest.raises(UsageError, match="nonsense"):
        parse_platforms(["linux/arm64,nonsense/"])


def test_platform_comma_list_on_the_command_line(tmp_path):
    facts = tmp_path / "facts.json"
    facts.write_text(json.dumps([{"host": "pi-zero", "facts": {"uname_m": "armv6l", "dpkg_arch": "armel"}}]))
    r = run("plan", "playbooks/hello.yaml", "--facts", str(facts), "--platform", "linux/arm/v6,linux/arm64",
            "--json")
    doc = json.loads(r.stdout)
    assert doc["platforms"] == ["linux/arm/v6", "linux/arm64"] and doc["mode"] == "explicit (--platform)", doc
    bad = run("plan", "playbooks/hello.yaml", "--facts", str(facts), "--platform", "linux/arm/v6,,linux/arm64")
    assert bad.returncode == 2 and "empty platform" in bad.stderr and "Traceback" not in bad.stderr
