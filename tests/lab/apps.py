"""Versions of the lab's sample app for the rollout and transaction tests, and what those
tests ask the devices (over the system ssh client, host keys verified).

Every version is a different image (its own VERSION, served by the app: ``hello <version>
from <machine>``); a broken version either exits at once (``exit``) or serves on the
wrong port so its HTTP health check never passes (``wrong-port``). Each test module uses
its own container name, port and repository, so modules never disturb each other.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import textwrap
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable, Iterable

from fleet.lab.hello import EXAMPLE_DIR, prepare_context
from fleet.lab.state import LabPaths
from tests import reportschema
from tests.labfixture import FLEET, Lab

HELLO = """bb=/bin/busybox
machine=$($bb uname -m)
$bb mkdir -p /www
echo "hello $($bb cat /VERSION) from $machine" > /www/index.html
exec $bb httpd -f -p "{port}" -h /www
"""


class Apps:
    """Builds contexts and playbooks of app ``name`` (repository ``repo``, HTTP ``port``)
    under ``root``, and looks at it on the lab's devices."""

    def __init__(self, lab: Lab, root: Path, name: str, port: int, repo: str):
        self.lab, self.root, self.name, self.port, self.repo = lab, root, name, port, repo
        self.registry = lab.status["registry"]["address"]

    # -- releases ---------------------------------------------------------------------------

    def context(self, version: str, mode: str = "ok") -> Path:
        ctx = self.root / f"ctx-{version}-{mode}"
        if ctx.exists():
            return ctx
        prepare_context(LabPaths(self.lab.dir), ctx)
        dockerfile = (EXAMPLE_DIR / "Dockerfile").read_text().replace(
            "COPY hello.sh /hello.sh", "COPY hello.sh /hello.sh\nCOPY VERSION /VERSION")
        (ctx / "Dockerfile").write_text(dockerfile)
        (ctx / "VERSION").write_text(version + "\n")
        if mode == "exit":
            (ctx / "hello.sh").write_text(f'echo "{version} cannot start: missing configuration" >&2\nexit 3\n')
        else:
            port = self.port + 1 if mode == "wrong-port" else self.port
            (ctx / "hello.sh").write_text(HELLO.format(port=port))
        return ctx

    def playbook(self, version: str, *, mode: str = "ok", rollout: str = "", running: int = 2, timeout: int = 60,
                 tag: str | None = None) -> Path:
        ctx = self.context(version, mode)
        path = self.root / f"{self.name}-{version}-{mode}-{tag or version}.yaml"
        path.write_text(textwrap.dedent(f"""\
            name: {self.name}
            image: {self.registry}/{self.repo}:{tag or version}
            source:
              build:
                context: {ctx}
            platforms: auto
            container:
              name: {self.name}
              restart: unless-stopped
              network_mode: host
            health:
              running: {running}
              http: http://127.0.0.1:{self.port}/
              timeout: {timeout}
              interval: 1
            """) + textwrap.dedent(rollout))
        return path

    # -- fleet ------------------------------------------------------------------------------

    def env(self, reports: Path) -> dict[str, str]:
        return dict(os.environ, FLEET_REPORT_DIR=str(reports), FLEET_HISTORY=str(self.root / "history.sqlite"),
                    COLUMNS="250")

    def fleet(self, *args: str, reports: Path | None = None, timeout: float = 900) -> subprocess.CompletedProcess:
        return subprocess.run([*FLEET, *args], capture_output=True, text=True, timeout=timeout,
                              env=self.env(reports or self.root / "reports"))

    def start(self, *args: str, reports: Path | None = None) -> subprocess.Popen:
        """``fleet ARGS`` in the background (its own process group), stdout/stderr to
        files under ``root`` (``.out``/``.err`` of the returned process's ``log`` path)."""
        log = self.root / f"run-{time.monotonic_ns()}"
        p = subprocess.Popen([*FLEET, *args], stdout=open(f"{log}.out", "w"), stderr=open(f"{log}.err", "w"),
                             env=self.env(reports or self.root / "reports"), start_new_session=True)
        p.log = log  # type: ignore[attr-defined]
        return p

    @staticmethod
    def kill(p: subprocess.Popen, sig: int = signal.SIGKILL) -> None:
        """Kill the controller (its whole process group: no child survives it)."""
        os.killpg(p.pid, sig)
        p.wait(30)

    def deploy(self, playbook: Path, *limit: str, extra: tuple[str, ...] = ()) -> list[dict]:
        args = ["deploy", str(playbook), "-i", self.lab.inventory, "--json", *extra]
        if limit:
            args += ["--limit", ",".join(limit)]
        cp = self.fleet(*args)
        assert cp.stdout.strip(), cp.stderr
        return reportschema.loads(cp.stdout, "deploy-json")

    # -- devices ----------------------------------------------------------------------------

    def sh(self, device: str, command: str, timeout: float = 120) -> str:
        cp = self.lab.ssh(device, command, timeout=timeout)
        return cp.stdout.decode(errors="replace")

    def container(self, device: str, name: str | None = None) -> dict | None:
        out = self.sh(device, f"docker container inspect {name or self.name} 2>/dev/null")
        found = json.loads(out) if out.strip().startswith("[") else []
        return found[0] if found else None

    def serves(self, device: str) -> str:
        """What the app answers on the device ("" when nothing answers)."""
        return self.sh(device, f"wget -q -O- http://127.0.0.1:{self.port}/ 2>/dev/null || true", timeout=30).strip()

    def status(self, device: str) -> str:
        """The phase of the device-side transaction of the app (its status file)."""
        return self.sh(device, f'cat "$HOME/.fleet/apps/{self.name}/status" 2>/dev/null || true').strip()

    def audit(self, device: str) -> list[str]:
        return self.sh(device, f'cat "$HOME/.fleet/apps/{self.name}/audit.log" 2>/dev/null || true').splitlines()

    def wait(self, pred, timeout: float, what: str, every: float = 0.5, device: str | None = None):
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            got = pred()
            if got:
                return got
            time.sleep(every)
        raise AssertionError(f"timed out after {timeout:g} s waiting for {what}"
                             + (f"\n{self.records(device)}" if device else ""))

    def records(self, device: str) -> str:
        """The app's transaction records on ``device`` (for a failure message)."""
        return self.sh(device, f'cd "$HOME/.fleet/apps/{self.name}" 2>/dev/null || exit 0; for f in status outcome '
                               f'collected lock/info steps; do echo "== $f"; cat $f 2>/dev/null; done; '
                               f'echo "== txn.log"; tail -20 txn.log 2>/dev/null; echo "== audit.log"; '
                               f'tail -3 audit.log; docker ps -a --format "{{{{.Names}}}} {{{{.Status}}}}"')

    def clean(self, devices) -> None:
        repo = f"{self.registry}/{self.repo}"
        on_each(devices, lambda d: self.sh(
            d, f"docker rm -f {self.name} {self.name}.previous {self.name}.new {self.name}.failed "
               f">/dev/null 2>&1; ids=$(docker images -q {repo}); [ -z \"$ids\" ] || "
               f"docker rmi -f $ids >/dev/null 2>&1; rm -rf \"$HOME/.fleet/apps/{self.name}\"; true"))


def on_each(devices: Iterable[str], fn: Callable[[str], object]) -> None:
    """``fn(device)`` for every device at once (each emulated board's docker CLI takes
    seconds; one after another they added up in every module's setup and teardown).
    Raises the first device's exception."""
    devices = list(devices)
    with ThreadPoolExecutor(max(1, len(devices))) as pool:
        for f in [pool.submit(fn, d) for d in devices]:
            f.result()
