"""The ways fleet reaches a device's engine, on the lab: probe, deploy, verify and rollback
through the Engine API over a ``direct-streamlocal`` channel (x86), through the
``docker system dial-stdio`` fallback (pi3-32, whose sshd refuses streamlocal channels:
fleet/lab/profiles.py), and with become (``sudo -n``) on x86.

Become. The x86 board's login may use its engine (the socket is root:fleetlab 0660). A
second login that may not, and that is allowed the engine through sudo only, is made for
the test and undone after it (tests/labsshd.py ``DeviceSshd`` serves it, so the board's
own sshd is never restarted):

- a host account (sshd resolves users before it enters the board's chroot) and its line
  in the board's ``/etc/passwd``/``/etc/group``, home ``/home/NAME`` in the board's root
  filesystem;
- the host's sudo in the board's root filesystem (the board's userland is busybox and
  the docker CLI: no sudo of its own): the setuid binary, its policy plugin, the shared
  libraries they load that the board lacks, a PAM service ``sudo`` of ``pam_permit``
  lines (the drop-in says NOPASSWD: nothing to authenticate), ``/etc/sudoers`` including
  ``/etc/sudoers.d``;
- the drop-in. ``fleet`` needs, through ``sudo -n``: ``docker system dial-stdio`` (every
  Engine API request of probe, deploy, verify, rollback), and the docker CLI commands the
  device-side transaction runs with ``$DK`` (fleet/deploy/devicetxn.py: ``container
  inspect``, ``rename``, ``start``, ``stop``, ``rm -f``, ``exec``), because the transaction
  runs detached from the SSH session with the device's own CLI. The probe's engine facts
  use ``sudo -n docker version``/``info`` when the socket channel is refused (the script's
  docker section). The test first allows ``docker system dial-stdio`` alone and shows
  what that gives (probe without engine facts, verify through dial-stdio, a deploy that
  cannot swap), then the full list.

Every file, line, account and process added is removed in ``finally``.
"""

from __future__ import annotations

import json
import os
import pwd
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from fleet.lab.profiles import PROFILES
from tests.lab.apps import Apps
from tests.labfixture import Lab
from tests.labsshd import DeviceSshd

pytestmark = pytest.mark.lab

NAME, PORT, REPO = "api-paths", 18494, "api-paths/hello"
PAIR = ["x86", "pi3-32"]
BECOME_USER = "fleet-api-sudo"
BECOME_PORT = 2202
DOCKER = "/usr/bin/docker"  # the board's CLI (fleet/lab/devices.py copies it there)
#: The docker CLI commands the device-side transaction runs through ``$DK`` (devicetxn.py).
TXN_COMMANDS = ("container inspect *", "rename *", "start *", "stop *", "rm -f *", "exec *")
#: The probe script's docker section (facts.py) when the socket channel is refused.
PROBE_COMMANDS = ("version --format *", "info --format *")


#: The sample app with a SIGTERM handler: as PID 1 busybox httpd ignores SIGTERM, so each
#: swap would wait out the stop timeout (10 s) before the engine's SIGKILL.
HELLO = """bb=/bin/busybox
machine=$($bb uname -m)
$bb mkdir -p /www
echo "hello $($bb cat /VERSION) from $machine" > /www/index.html
$bb httpd -f -p "{port}" -h /www &
trap '$bb kill $!; exit 0' TERM
wait
"""


class QuickApps(Apps):
    def context(self, version: str, mode: str = "ok") -> Path:
        ctx = super().context(version, mode)
        if mode == "ok":
            (ctx / "hello.sh").write_text(HELLO.format(port=self.port))
        return ctx


@pytest.fixture(scope="module")
def apps(lab: Lab, tmp_path_factory) -> Apps:
    a = QuickApps(lab, tmp_path_factory.mktemp("paths"), NAME, PORT, REPO)
    a.clean(PAIR)
    yield a
    a.clean(PAIR)


def _json(cp: subprocess.CompletedProcess) -> list[dict]:
    assert cp.stdout.strip(), cp.stderr
    return json.loads(cp.stdout)


def _results(rows: list[dict]) -> list[tuple[str, str, str]]:
    return [(r["host"], r["result"], r["reason"]) for r in rows]


def _by_host(rows: list[dict]) -> dict[str, dict]:
    return {r["host"]: r for r in rows}


def test_api_path_on_x86_and_dial_stdio_on_pi3_32(apps: Apps):
    inv = apps.lab.inventory
    probe = _by_host(_json(apps.fleet("probe", "-i", inv, "--limit", ",".join(PAIR), "--json")))
    assert probe["x86"]["engine_via"] == "api" and probe["x86"]["cost"]["path"] == "streamlocal"
    assert probe["x86"]["cost"]["api_calls"] == {"GET /info": 1, "GET /version": 1}
    assert probe["x86"]["cost"]["remote_processes"] == 1  # the probe script; no docker CLI
    # pi3-32's sshd refuses the channel: the probe script's docker section reads the engine
    assert probe["pi3-32"]["engine_via"] == "cli" and probe["pi3-32"]["cost"]["api_call_total"] == 0
    assert probe["pi3-32"]["detection"]["platform"] == "linux/arm/v7"

    def paths(rows: list[dict]) -> dict[str, str]:
        return {h: r["cost"]["path"] for h, r in _by_host(rows).items()}

    v1 = _json(apps.fleet("deploy", str(apps.playbook("1")), "-i", inv, "--limit", ",".join(PAIR), "--json"))
    assert [r["result"] for r in v1] == ["verified", "verified"], _results(v1)
    assert paths(v1) == {"x86": "streamlocal", "pi3-32": "dial-stdio"}
    d1 = _by_host(v1)
    assert "refused a direct-streamlocal@openssh.com channel" in d1["pi3-32"]["cost"]["path_reason"]
    for h in PAIR:
        assert d1[h]["cost"]["api_calls"]["POST /images/create"] == 1, d1[h]["cost"]
        assert apps.serves(h).startswith("hello 1 "), h

    v2 = _json(apps.fleet("deploy", str(apps.playbook("2")), "-i", inv, "--limit", ",".join(PAIR), "--json"))
    assert [r["result"] for r in v2] == ["verified", "verified"], _results(v2)
    assert paths(v2) == {"x86": "streamlocal", "pi3-32": "dial-stdio"}

    ver = _json(apps.fleet("verify", str(apps.playbook("2")), "-i", inv, "--limit", ",".join(PAIR), "--json"))
    assert [r["result"] for r in ver] == ["verified", "verified"], _results(ver)
    assert paths(ver) == {"x86": "streamlocal", "pi3-32": "dial-stdio"}
    # verify asks only the engine: on the streamlocal path no process starts on the device,
    # on the fallback one dial-stdio carries every call
    dv = _by_host(ver)
    assert dv["x86"]["cost"]["remote_processes"] == 0 and dv["x86"]["cost"]["api_call_total"] >= 3, dv["x86"]
    assert dv["pi3-32"]["cost"]["remote_processes"] == 1, dv["pi3-32"]

    back = _json(apps.fleet("rollback", str(apps.playbook("2")), "-i", inv, "--limit", ",".join(PAIR), "--json"))
    assert [r["result"] for r in back] == ["verified", "verified"], _results(back)
    assert paths(back) == {"x86": "streamlocal", "pi3-32": "dial-stdio"}
    for h in PAIR:
        assert apps.serves(h).startswith("hello 1 "), h


# ----------------------------------------------------------------------------- become


class BecomeLogin:
    """The second login on the x86 board and sudo in its root filesystem (module
    docstring); :meth:`allow` writes the drop-in; :meth:`undo` removes everything."""

    def __init__(self, lab: Lab, root: Path):
        self.lab, self.root = lab, root
        self.rootfs = lab.dir / "devices" / "x86" / "rootfs"
        self.created: list[Path] = []  # files and folders made, in order
        self.lines: list[Path] = []  # board files a line was appended to
        self.user_made = False
        self.dropin = self.rootfs / "etc" / "sudoers.d" / "fleet-api-become"  # sudo skips names with a dot
        self.sshd: DeviceSshd | None = None

    def _put(self, dest: Path, data: bytes | None = None, src: Path | None = None, mode: int = 0o644) -> None:
        """Create ``dest`` in the board's root filesystem (never over an existing file)."""
        for parent in reversed(dest.relative_to(self.rootfs).parents[:-1]):
            d = self.rootfs / parent
            if not d.exists():
                d.mkdir(mode=0o755)
                self.created.append(d)
        if dest.exists() or dest.is_symlink():
            return
        if src is not None:
            shutil.copyfile(src, dest)
        else:
            dest.write_bytes(data or b"")
        self.created.append(dest)
        os.chown(dest, 0, 0)
        os.chmod(dest, mode)

    def _libs(self, *elfs: str) -> set[str]:
        out = set()
        for elf in elfs:
            for ln in subprocess.run(["ldd", elf], capture_output=True, text=True, check=True).stdout.splitlines():
                parts = ln.split("=>")
                if len(parts) == 2 and parts[1].strip().startswith("/"):
                    out.add(parts[1].split()[0])
        return out

    def make(self) -> None:
        self.undo_user_lines()
        if subprocess.run(["getent", "passwd", BECOME_USER], capture_output=True).returncode != 0:
            subprocess.run(["useradd", "--system", "--no-create-home", "--home-dir", f"/home/{BECOME_USER}",
                            "--shell", "/bin/sh", BECOME_USER], check=True, capture_output=True)
            subprocess.run(["usermod", "-p", "*", BECOME_USER], check=True, capture_output=True)
            self.user_made = True
        pw = pwd.getpwnam(BECOME_USER)
        for f, line in (("passwd", f"{BECOME_USER}:x:{pw.pw_uid}:{pw.pw_gid}:fleet test:/home/{BECOME_USER}:/bin/sh"),
                        ("group", f"{BECOME_USER}:x:{pw.pw_gid}:")):
            path = self.rootfs / "etc" / f
            with open(path, "a") as fh:
                fh.write(line + "\n")
            self.lines.append(path)
        home = self.rootfs / "home" / BECOME_USER
        if not home.exists():
            home.mkdir(mode=0o700)
            self.created.append(home)
        os.chown(home, pw.pw_uid, pw.pw_gid)
        sudo = shutil.which("sudo") or "/usr/bin/sudo"
        plugin, pam = "/usr/libexec/sudo/sudoers.so", "/lib/x86_64-linux-gnu/security/pam_permit.so"
        self._put(self.rootfs / "usr/bin/sudo", src=Path(sudo), mode=0o4755)
        self._put(self.rootfs / plugin.lstrip("/"), src=Path(plugin))
        self._put(self.rootfs / pam.lstrip("/"), src=Path(pam))
        for lib in sorted(self._libs(sudo, plugin, pam)):
            self._put(self.rootfs / lib.lstrip("/"), src=Path(lib).resolve())
        self._put(self.rootfs / "etc/pam.d/sudo",
                  b"auth sufficient pam_permit.so\naccount required pam_permit.so\nsession required pam_permit.so\n")
        self._put(self.rootfs / "etc/sudoers", b"Defaults env_reset\nDefaults !fqdn\nroot ALL=(ALL:ALL) ALL\n"
                                                b"@includedir /etc/sudoers.d\n", mode=0o440)
        self._put(self.rootfs / "etc/sudoers.d" / ".keep", b"", mode=0o440)
        self.sshd = DeviceSshd(self.lab.dir, "x86", BECOME_PORT, [BECOME_USER],
                               authorized_keys=Path(self.lab.key + ".pub").read_text()).start()

    def allow(self, commands: tuple[str, ...]) -> None:
        """The drop-in: ``BECOME_USER`` may run exactly these docker commands as root,
        without a password."""
        text = f"{BECOME_USER} ALL=(root) NOPASSWD: " + ", ".join(f"{DOCKER} {c}" for c in commands) + "\n"
        self.dropin.write_text(text)
        os.chown(self.dropin, 0, 0)
        os.chmod(self.dropin, 0o440)
        if self.dropin not in self.created:
            self.created.append(self.dropin)
        check = subprocess.run(["visudo", "-cq", "-f", str(self.dropin)], capture_output=True, text=True)
        assert check.returncode == 0, check.stderr

    def inventory(self) -> Path:
        kh = self.root / "become-known_hosts"
        kh.write_text(self.sshd.host_key_line + "\n")
        inv = self.root / "become-inventory.yaml"
        inv.write_text(
            "all:\n  hosts:\n    x86-become:\n"
            f"      ansible_host: {self.sshd.address}\n      ansible_port: {BECOME_PORT}\n"
            f"      ansible_user: {BECOME_USER}\n      ansible_become: true\n"
            f"      ansible_ssh_private_key_file: {self.lab.key}\n"
            f"      ansible_ssh_common_args: -o UserKnownHostsFile={kh} -o StrictHostKeyChecking=yes\n")
        return inv

    def undo_user_lines(self) -> None:
        for f in ("passwd", "group"):
            path = self.rootfs / "etc" / f
            text = path.read_text()
            kept = "".join(ln for ln in text.splitlines(keepends=True) if not ln.startswith(BECOME_USER + ":"))
            if kept != text:
                path.write_text(kept)

    def undo(self) -> None:
        if self.sshd is not None:
            self.sshd.stop()
        for p in reversed(self.created):
            if p.is_dir() and not p.is_symlink():
                shutil.rmtree(p, ignore_errors=True)
            else:
                p.unlink(missing_ok=True)
        self.undo_user_lines()
        if self.user_made:
            subprocess.run(["userdel", BECOME_USER], capture_output=True)


def test_become_through_sudo_dial_stdio(lab: Lab, tmp_path):
    apps = QuickApps(lab, tmp_path, "api-become", PORT + 2, "api-become/hello")
    apps.clean(["x86"])
    login = BecomeLogin(lab, tmp_path)
    try:
        login.make()
        inv = str(login.inventory())
        playbook = str(apps.playbook("1"))

        # the engine through sudo for dial-stdio alone
        login.allow(("system dial-stdio",))
        r = _json(apps.fleet("probe", "-i", inv, "--json"))[0]
        assert r["engine_via"] == "cli", r  # the socket channel is refused to this login
        # its docker section's `sudo -n docker version` is not allowed: no engine facts
        assert "a password is required" in r["facts"]["engine_error"], r
        assert r["detection"]["platform"] == "linux/amd64", r
        rows = _json(apps.fleet("deploy", playbook, "-i", inv, "--json"))
        r = rows[0]
        assert r["cost"]["path"] == "dial-stdio" and "through sudo -n" in r["cost"]["path_reason"], r
        # pulled and created through the API, but the transaction's `sudo -n docker ...` is refused
        assert r["cost"]["api_calls"].get("POST /images/create") == 1, r
        assert r["result"] != "verified" and apps.serves("x86") == "", r

        # and with the transaction's docker commands too: deploy, verify
        login.allow(("system dial-stdio", *TXN_COMMANDS, *PROBE_COMMANDS))
        rows = _json(apps.fleet("deploy", playbook, "-i", inv, "--json"))
        r = rows[0]
        assert r["result"] == "verified", r
        assert r["cost"]["path"] == "dial-stdio" and "through sudo -n" in r["cost"]["path_reason"]
        assert apps.serves("x86").startswith("hello 1 ")
        rows = _json(apps.fleet("verify", playbook, "-i", inv, "--json"))
        r = rows[0]
        assert r["result"] == "verified", r
        assert r["cost"]["path"] == "dial-stdio" and "through sudo -n" in r["cost"]["path_reason"]
        assert r["cost"]["remote_processes"] == 1  # one `sudo -n docker system dial-stdio` for every call
        # the app ran as the engine runs it, its container owned by no login: the transaction's
        # records are the become login's
        assert apps.sh("x86", "docker inspect -f '{{.State.Running}}' api-become").strip() == "true"
    finally:
        login.undo()
        apps.clean(["x86"])
    assert not (lab.dir / "devices/x86/rootfs/usr/bin/sudo").exists()
    assert BECOME_USER not in (lab.dir / "devices/x86/rootfs/etc/passwd").read_text()
