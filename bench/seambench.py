#!/usr/bin/env python3
"""What the executor seam adds per device on the local path (bench/README.md, "Executor seam").

Every per-device step goes through an executor as a JSON work item, also when the work
runs on this machine: the controller encodes the device's job, the work item is checked
(JSON only, no secret-named key, size), the handler decodes it, and the device's report
comes back as JSON and is rebuilt. This times that round trip in-process, without any
device, for a one-container playbook's job and for a two-service Compose job with every
setting set:

    .venv/bin/python bench/seambench.py [--n 2000]

It prints milliseconds of CPU per device and the payload size. Whole-process figures of
the same change (``fleet probe`` and ``fleet deploy`` before and after, paired) are in
bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from fleet.compose.model import (Dependency, Healthcheck, Logging, Mount, NetworkAttachment,  # noqa: E402
                                 ServiceSpec, Ulimit)
from fleet.deploy import App, DeployOptions, DeviceJob, Unit  # noqa: E402
from fleet.deploy.jobs import AuthRef  # noqa: E402
from fleet.executor import DeviceWork  # noqa: E402
from fleet.executor.handlers_deploy import deploy_payload  # noqa: E402
from fleet.plan import DevicePlan  # noqa: E402
from fleet.platform import Platform  # noqa: E402
from fleet.playbook import HealthSpec  # noqa: E402
from fleet.results import DeviceReport, Result  # noqa: E402
from fleet.verify import Expected  # noqa: E402


def jobs() -> dict[str, DeviceJob]:
    amd64 = Platform.parse("linux/amd64")
    expected = Expected("reg.example:5000/app/web", "sha256:" + "1" * 64, amd64, "sha256:" + "2" * 64,
                        "sha256:" + "3" * 64, tuple("sha256:" + c * 64 for c in "456"))
    plan = DevicePlan("dev1", amd64, amd64, amd64, entry_index=0)
    auth = AuthRef("reg.example:5000", "REG_USER", "REG_PASSWORD")
    small = ServiceSpec(name="hello", env={"PORT": "8080"}, restart="unless-stopped", network_mode="host")
    web = ServiceSpec(
        name="web", image="reg.example:5000/app/web:1", command=("serve", "--port", "8080"), env={"MODE": "prod"},
        ports=("8080:8080",), mounts=(Mount("bind", "/srv/web", "/data", True), Mount("volume", "app_cache", "/c")),
        tmpfs={"/run": ""}, devices=("/dev/gpiomem",), cap_add=("NET_ADMIN",), mem_limit=2**28, cpus=1.5,
        logging=Logging("local", {"max-size": "10m"}), restart="unless-stopped",
        healthcheck=Healthcheck(("CMD", "wget", "-q", "http://127.0.0.1:8080/"), 5.0, 2.0, 10.0, None, 3),
        networks=(NetworkAttachment("app_front", ("web",)),), depends_on=(Dependency("db", "service_healthy"),),
        labels={"team": "iot"}, ulimits=(Ulimit("nofile", 1024, 2048),), stop_grace_period=10.0)
    db = ServiceSpec(name="db", env={"POSTGRES_DB": "app"}, mounts=(Mount("volume", "app_db", "/var/lib/db"),))
    return {
        "one-container playbook": DeviceJob("dev1", (Unit("hello", "hello", small, expected, plan, 10**6, auth),),
                                            "hello"),
        "two-service Compose stack": DeviceJob("dev1", (Unit("db", "app-db", db, expected, plan, 10**7, auth),
                                                        Unit("web", "app-web", web, expected, plan, 10**6, auth)),
                                               "app", healthy_before={"app-web": ("app-db",)}),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=2000, help="round trips per job (default 2000)")
    a = ap.parse_args()
    app, options = App("reg.example:5000/app/web:1", "app", HealthSpec()), DeployOptions(deployment="D1")
    report = DeviceReport("dev1", "linux/amd64", "linux/amd64", "linux/amd64", False, "sha256:" + "2" * 64,
                          "sha256:" + "3" * 64, Result.VERIFIED, "running 5 s", 7.5,
                          ["pull x", "create hello.new", "device transaction: committed"],
                          [{"name": "config digest", "ok": True, "detail": "sha256:333333333333"}] * 5, "",
                          {"deployment": "D0"}, 10**9, 10**7, {"channels_opened": 3}).to_dict()
    for name, job in jobs().items():
        t0 = time.process_time()
        for _ in range(a.n):
            work = DeviceWork("deploy", "dev1", None, {"ansible_host": "192.0.2.10", "ansible_user": "pi"},
                              deploy_payload(job, app, options), 2400.0, tuple(job.secret_names()))
            DeviceJob.from_dict(work.payload["job"])
            App.from_dict(work.payload["app"])
            DeployOptions.from_dict(work.payload["options"])
            DeviceReport.from_dict(json.loads(json.dumps(report)))
        per = (time.process_time() - t0) / a.n
        print(f"{name}: {per * 1000:.3f} ms CPU per device, work item {len(json.dumps(work.to_dict()))} bytes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
