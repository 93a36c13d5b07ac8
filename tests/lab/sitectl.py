"""What the lab sites tests run INSIDE the controller's namespace (``ip netns exec
fleetlab-ctl python -m tests.lab.sitectl ...``), with the controller's settings in the
environment (``LABDIR/sites/controller/env``: broker URL, signing identity):

* ``probe INVENTORY``: every host's ``probe`` job through :class:`fleet.executor.CeleryExecutor`
  (the sites' workers do the SSH), the controller deciding each platform
  (:func:`fleet.detect.detect`); prints one JSON list ``[{"host", "site", "worker",
  "redelivered", "error", "platform"}]``.
* ``inject INVENTORY HOST JOB``: what an intruder with write access to the broker can do:
  put a well-formed ``fleet.device_work`` task message for HOST's probe on its site's queue,
  serialized as plain JSON (unsigned), with kombu; prints ``{"job", "queue"}``.
"""

from __future__ import annotations

import json
import os
import sys


def _hosts(inventory: str, limit: str | None = None):
    from fleet.selection import DeviceSelection
    from fleet.ssh import SSHSettings

    return DeviceSelection((inventory,), limit, 10, SSHSettings(connect_timeout=10.0)).hosts()


def probe(inventory: str) -> list[dict]:
    from fleet.detect import detect
    from fleet.executor import CeleryExecutor, work_for

    works = [work_for(h, "probe", deadline=180) for h in _hosts(inventory)]
    ex = CeleryExecutor(os.environ["FLEET_BROKER_URL"], result_backend=os.environ.get("FLEET_RESULT_BACKEND"))
    rows = []
    for o in ex.map(works, forks=10, label="probing"):
        facts = (o.value or {}).get("facts") if o.ok else None
        platform = detect(facts).platform if facts else None
        rows.append({"host": o.item.host, "site": o.site, "worker": o.worker, "redelivered": o.redelivered,
                     "error": None if o.ok else str(o.error), "platform": str(platform) if platform else None})
    return rows


def inject(inventory: str, host: str, job: str) -> dict:
    from kombu import Connection, Exchange, Producer, Queue

    from fleet.executor import queue_for, work_for
    from fleet.executor.app import TASK_NAME
    from fleet.executor.jobs import make_envelope

    work = work_for(_hosts(inventory, host)[0], "probe", deadline=120)
    queue = queue_for(work.site)
    headers = {"lang": "py", "task": TASK_NAME, "id": job, "root_id": job, "parent_id": None, "group": None,
               "retries": 0, "eta": None, "expires": None, "timelimit": [None, None], "argsrepr": "",
               "kwargsrepr": "", "origin": "intruder@broker", "ignore_result": False}
    body = [[make_envelope(job, work)], {}, {"callbacks": None, "errbacks": None, "chain": None, "chord": None}]
    q = Queue(queue, Exchange(queue), routing_key=queue)
    with Connection(os.environ["FLEET_BROKER_URL"]) as conn:
        Producer(conn).publish(body, exchange=q.exchange, routing_key=queue, serializer="json", headers=headers,
                               declare=[q])
    return {"job": job, "queue": queue}


def main(argv: list[str]) -> int:
    if argv[:1] == ["probe"] and len(argv) == 2:
        print(json.dumps(probe(argv[1])))
        return 0
    if argv[:1] == ["inject"] and len(argv) == 4:
        print(json.dumps(inject(*argv[1:])))
        return 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
