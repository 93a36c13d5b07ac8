"""Hostile or careless input that must end in a clear error or be shown as plain data
(issue "Hardening"): device text as rich markup or terminal control, report files in
shared directories, non-finite numbers, names with a trailing newline, ports out of range."""

from __future__ import annotations

import io
import os
import stat
import textwrap
from pathlib import Path

import pytest
from rich.console import Console

from fleet import output
from fleet.errors import InputFileError, UsageError
from fleet.playbook import load_playbook
from fleet.reports import save_report, usable_report_dir

HOSTILE = ("This account is currently not available. [/usr/sbin/nologin] [link=http://evil.example]x[/link] "
           "[bold red]\x1b[2J\x1b]8;;http://evil.example\x07click\x1b]8;;\x07 \u202etxt.exe")


def _render(renderable) -> str:
    buf = io.StringIO()
    Console(file=buf, width=400, force_terminal=True, color_system="truecolor").print(renderable)
    return buf.getvalue()


def test_device_text_in_a_table_is_data_not_markup_nor_terminal_control():
    text = _render(output.table("host [/x]", ["host", "error"], [("pi[/x]", HOSTILE)]))
    assert "[/usr/sbin/nologin]" in text and "[link=http://evil.example]x[/link]" in text
    assert "[bold red]" in text and "pi[/x]" in text and "host [/x]" in text
    assert "\\x1b[2J" in text and "\\x07" in text and "\\u202e" in text
    # the only escape sequences are rich's own styling (SGR "...m"), none from the device
    assert "\x1b[2J" not in text and "\x1b]8" not in text and "\u202e" not in text and "\x07" not in text


def test_lines_errors_and_warnings_escape_too(monkeypatch):
    buf = io.StringIO()
    monkeypatch.setattr(output, "err", Console(file=buf, width=400, force_terminal=True))
    output.error(HOSTILE)
    output.warn(HOSTILE)
    output.line(HOSTILE, output.err)
    text = buf.getvalue()
    assert text.count("[/usr/sbin/nologin]") == 3 and "\x1b[2J" not in text and "\\x1b[2J" in text


def test_visible_keeps_newlines_and_tabs_and_plain_unicode():
    assert output.visible("a\tb\nc é ✓") == "a\tb\nc é ✓"
    assert output.visible("\x00\x7f\x9b") == "\\x00\\x7f\\x9b"


# --------------------------------------------------------------------------- reports


def test_report_is_0600_in_a_0700_directory_and_replaces_a_planted_symlink(tmp_path):
    directory = usable_report_dir(tmp_path / "state" / "reports")
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    victim = tmp_path / "victim"
    victim.write_text("precious\n")
    (directory / "deploy-x.json").symlink_to(victim)
    (directory / "deploy-x.json.tmp").symlink_to(victim)  # the old predictable temporary name
    path = save_report({"ok": True}, directory, "deploy-x.json")
    assert victim.read_text() == "precious\n"  # never written through the symlink
    assert not path.is_symlink() and stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.read_text().strip().startswith("{")


def test_group_or_world_writable_report_directory_is_refused(tmp_path):
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    with pytest.raises(UsageError, match="writable by other users .* no sticky bit"):
        usable_report_dir(shared)
    shared.chmod(0o1777)  # /tmp-style: the sticky bit stops others from replacing our files
    assert usable_report_dir(shared) == shared
    shared.chmod(0o770)
    with pytest.raises(UsageError):
        usable_report_dir(shared)


# --------------------------------------------------------------------------- playbooks


def _playbook(tmp_path: Path, body: str) -> Path:
    ctx = tmp_path / "app"
    ctx.mkdir(exist_ok=True)
    (ctx / "Dockerfile").write_text("FROM scratch\nCOPY x /x\n")
    p = tmp_path / "p.yaml"
    p.write_text("name: hello\nimage: 127.0.0.1:5000/hello:1\nsource: {build: {context: app}}\n"
                 + textwrap.dedent(body))
    return p


@pytest.mark.parametrize("value", [".nan", ".inf", "-.inf", ".NaN"])
@pytest.mark.parametrize("key", ["timeout", "interval", "running"])
def test_non_finite_health_numbers_are_refused(tmp_path, key, value):
    with pytest.raises(InputFileError, match=rf"p.yaml:5: key 'health.{key}': must be a finite number"):
        load_playbook(_playbook(tmp_path, f"health:\n  {key}: {value}\n"))


@pytest.mark.parametrize("body, needle", [
    ('name: "hello\\n"\n', "name"),
    ('container:\n  name: "hello\\n"\n', "container.name"),
    ('container:\n  env: {"PATH\\n": x}\n', "container.env.PATH\\n"),
    ('container:\n  restart: "always\\n"\n', "container.restart"),
    ('container:\n  network_mode: "host\\n"\n', "container.network_mode"),
    ('container:\n  env: {A: "1\\nB=2"}\n', "container.env.A"),
    ('container:\n  ports: ["70000:80"]\n', "container.ports.0"),
    ('container:\n  ports: ["8080:0"]\n', "container.ports.0"),
    ('container:\n  ports: ["9000-8000:80"]\n', "container.ports.0"),
])
def test_trailing_newlines_line_breaks_and_bad_ports_are_refused(tmp_path, body, needle):
    text = _playbook(tmp_path, "").read_text()
    if body.startswith("name:"):
        text = text.replace("name: hello\n", body)
        p = tmp_path / "p.yaml"
        p.write_text(text)
    else:
        p = _playbook(tmp_path, body)
    with pytest.raises(InputFileError) as ei:
        load_playbook(p)
    assert f"key '{needle}'" in str(ei.value), str(ei.value)


def test_good_ports_still_pass(tmp_path):
    pb = load_playbook(_playbook(tmp_path, 'container:\n  ports: ["8080:80", "127.0.0.1:9000-9001:9000-9001/udp", "53"]\n'))
    assert pb.container_spec.ports == ("8080:80", "127.0.0.1:9000-9001:9000-9001/udp", "53")


def test_reports_dir_env_and_option(monkeypatch, tmp_path):
    from fleet.reports import report_dir

    monkeypatch.setenv("FLEET_REPORT_DIR", str(tmp_path / "env"))
    assert report_dir(None) == tmp_path / "env"
    assert report_dir(str(tmp_path / "opt")) == tmp_path / "opt"
    monkeypatch.delenv("FLEET_REPORT_DIR")
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "xdg"))
    assert report_dir(None) == tmp_path / "xdg" / "fleet" / "reports"
    assert os.environ.get("FLEET_REPORT_DIR") is None
