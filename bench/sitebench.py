#!/usr/bin/env python3
"""Site workers benchmark: probe N loopback devices split over S sites through Celery site
workers, against the controller's own thread pool, on the same fleet (bench/README.md,
"Site workers").

    bench/sitebench.py [--n 1000] [--sites 4] [--concurrency 50] [--forks 50] [--reps 1]

Sets up (and tears down) everything on this machine, on loopback only: a loopback fleet of N
sshd devices (bench/loopfleet.py) whose inventory gives each device a ``fleet_site``
(site01..siteS, in blocks), a Redis broker (Debian redis-server, its own directory), signing
identities made with openssl (docs/sites.md), S ``fleet worker`` processes (one per site,
``--concurrency`` each). Each measured run is a separate controller process (this script's
``controller`` mode) timed as a whole: wall, CPU (os.wait4), its own peak RSS (VmHWM);
plus the site workers' CPU and the devices' (sshd) CPU over the run.

Runs (repetitions interleaved): ``probe`` local (LocalExecutor, ``--forks`` at once) and
celery (CeleryExecutor, ``--forks`` outstanding per site); ``noop`` local and celery (the
``noop`` handler touches no device: what is left is the dispatch path itself); and the
celery probe at N/4 devices, for the controller's memory per device. Results in
bench/results/sites-<timestamp>/ (results.json, report.md, each run's output).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
PROJECT_VENV = ROOT / ".venv"
if Path(sys.prefix).resolve() != PROJECT_VENV.resolve() and (PROJECT_VENV / "bin/python").exists():
    os.execv(str(PROJECT_VENV / "bin/python"), [str(PROJECT_VENV / "bin/python"), __file__, *sys.argv[1:]])

import argparse  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import resource  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import time  # noqa: E402
from collections import Counter  # noqa: E402

sys.path.insert(0, str(BENCH))
sys.path.insert(0, str(ROOT))

HZ = os.sysconf("SC_CLK_TCK")


def _vm(key: str) -> float:
    for line in open("/proc/self/status"):
        if line.startswith(key + ":"):
            return int(line.split()[1]) / 1024.0
    return 0.0


# ------------------------------------------------------------------ controller (child process)


def controller(a: argparse.Namespace) -> int:
    """One measured run: build the work items from the inventory, map them, print JSON."""
    from fleet.executor import CeleryExecutor, LocalExecutor, Signing, work_for
    from fleet.pipeline import Run
    from fleet.selection import DeviceSelection
    from fleet.ssh import SSHSettings

    t0 = time.perf_counter()
    sel = DeviceSelection((a.inventory,), a.limit, a.forks, SSHSettings(connect_timeout=30.0))
    works = [work_for(h, a.kind, deadline=a.deadline) for h in sel.hosts()]
    built = time.perf_counter() - t0
    rss_before = _vm("VmRSS")
    done_at: list[float] = []
    t1 = time.perf_counter()
    c1 = time.process_time()
    with Run(sel) as run:
        if a.executor == "local":
            ex = LocalExecutor(run.connections)
        else:
            ex = CeleryExecutor(a.broker, signing=Signing.from_options(a.key, a.cert, a.cert_store))
        outs = ex.map(works, forks=a.forks, on_done=lambda o: done_at.append(time.perf_counter() - t1))
    mapped = time.perf_counter() - t1
    map_cpu = time.process_time() - c1
    ok = [o for o in outs if o.ok]
    errors = Counter(str(o.error)[:160] for o in outs if not o.ok)
    handler_s = [o.seconds for o in ok]
    doc = {
        "executor": a.executor, "kind": a.kind, "n": len(works), "forks": a.forks, "ok": len(ok),
        "failed": len(outs) - len(ok), "errors": errors.most_common(5), "build_s": round(built, 3),
        "map_s": round(mapped, 3), "map_cpu_s": round(map_cpu, 3),
        "first_done_s": round(min(done_at), 3) if done_at else None,
        "handler_median_s": round(statistics.median(handler_s), 4) if handler_s else None,
        "handler_sum_s": round(sum(handler_s), 2),
        "workers": dict(Counter(o.worker for o in outs)), "redelivered": sum(1 for o in outs if o.redelivered),
        "rss_before_mb": round(rss_before, 1), "rss_after_mb": round(_vm("VmRSS"), 1),
        "hwm_mb": round(_vm("VmHWM"), 1),
    }
    print(json.dumps(doc))
    return 0 if doc["failed"] == 0 else 1


# ------------------------------------------------------------------ parent: set-up and runs


def _proc_cpu(pid: int, children: bool = True) -> float:
    try:
        f = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    ticks = int(f[11]) + int(f[12]) + ((int(f[13]) + int(f[14])) if children else 0)
    return ticks / HZ


def _sites_inventory(fl, n: int, sites: int) -> Path:
    import yaml

    base = fl.write_inventories(n)["yaml"]
    doc = yaml.safe_load(base.read_text())
    hosts = doc["all"]["children"]["loopback"]["hosts"]
    per = -(-n // sites)
    for i, name in enumerate(hosts):
        hosts[name]["fleet_site"] = f"site{i // per + 1:02d}"
    out = fl.dir / f"inventory-sites-{n}.yml"
    out.write_text(f"# generated by bench/sitebench.py: {n} loopback devices over {sites} sites\n"
                   + yaml.safe_dump(doc, sort_keys=False))
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="mode")
    c = sub.add_parser("controller")
    c.add_argument("--inventory", required=True)
    c.add_argument("--limit")
    c.add_argument("--executor", choices=("local", "celery"), required=True)
    c.add_argument("--kind", default="probe")
    c.add_argument("--forks", type=int, default=50)
    c.add_argument("--deadline", type=float, default=300.0)
    c.add_argument("--broker")
    c.add_argument("--key")
    c.add_argument("--cert")
    c.add_argument("--cert-store")
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--sites", type=int, default=4)
    ap.add_argument("--concurrency", type=int, default=50, help="each site worker's --concurrency")
    ap.add_argument("--forks", type=int, default=50, help="local: devices at once; celery: outstanding per site")
    ap.add_argument("--reps", type=int, default=1)
    ap.add_argument("--first", default="127.0.40.1", help="first device address")
    ap.add_argument("--timeout", type=float, default=900)
    ap.add_argument("--out", type=Path, default=BENCH / "results")
    a = ap.parse_args()
    if a.mode == "controller":
        return controller(a)
    return parent(a)


def parent(a: argparse.Namespace) -> int:
    import loopfleet
    from tests.celery_fixtures import cert_store, make_identity, start_redis

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    started = time.strftime("%Y%m%d-%H%M%S")
    out = (a.out / f"sites-{started}").resolve()
    (out / "runs").mkdir(parents=True)

    def log(msg: str) -> None:
        print(f"[sitebench {time.strftime('%H:%M:%S')} load {os.getloadavg()[0]:.2f}] {msg}", file=sys.stderr,
              flush=True)

    fl = loopfleet.LoopFleet(out / "loopfleet", a.n, port=loopfleet.free_port(a.first), first=a.first)
    redis = None
    workers: list[subprocess.Popen] = []
    runs: list[dict] = []
    try:
        log(f"starting {a.n} loopback devices ({-(-a.n // 16)} sshd processes) from {a.first}")
        fl.start()
        inv = _sites_inventory(fl, a.n, a.sites)
        redis = start_redis()
        log(f"redis {redis.url}; identities with openssl")
        ids = out / "ids"
        ctl = make_identity(ids, "fleet-controller", days=2)
        site_names = [f"site{i + 1:02d}" for i in range(a.sites)]
        site_ids = {s: make_identity(ids, f"fleet-{s}", days=2) for s in site_names}
        ctl_store = cert_store(out / "controller-trusts", *(i.cert for i in site_ids.values()))
        wrk_store = cert_store(out / "worker-trusts", ctl.cert)
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LANG": "C.UTF-8", "PYTHONUNBUFFERED": "1"}
        fleet_bin = str(PROJECT_VENV / "bin" / "fleet")
        for s in site_names:
            home = out / f"home-{s}"
            (home / ".ssh").mkdir(parents=True)
            logf = open(out / f"worker-{s}.log", "wb")
            workers.append(subprocess.Popen(
                [fleet_bin, "worker", "--broker", redis.url, "--site", s, "--concurrency", str(a.concurrency),
                 "--key", str(site_ids[s].key), "--cert", str(site_ids[s].cert), "--cert-store", str(wrk_store),
                 "--known-hosts", str(fl.known_hosts), "--timeout", "30", "--name", f"fleet-{s}@bench"],
                env={**env, "HOME": str(home)}, stdout=logf, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL))
        deadline = time.monotonic() + 60
        while not all(" ready" in (out / f"worker-{s}.log").read_text(errors="replace") for s in site_names):
            if time.monotonic() > deadline or any(w.poll() is not None for w in workers):
                raise RuntimeError(f"site workers did not start; see {out}/worker-*.log")
            time.sleep(0.2)
        log(f"{a.sites} site workers ready (concurrency {a.concurrency} each)")
        listeners = fl.pids()
        base = [sys.executable, __file__, "controller", "--inventory", str(inv), "--broker", redis.url,
                "--key", str(ctl.key), "--cert", str(ctl.cert), "--cert-store", str(ctl_store)]

        def measure(tag: str, executor: str, kind: str, n: int) -> dict:
            limit = ["--limit", f"loopback[0:{n - 1}]"] if n < a.n else []
            cmd = [*base, "--executor", executor, "--kind", kind, "--forks", str(a.forks), *limit]
            w_before = sum(_proc_cpu(w.pid, children=False) for w in workers)
            d_before = sum(_proc_cpu(p) for p in listeners)
            r_before = _proc_cpu(redis.proc.pid, children=False)
            load = os.getloadavg()[0]
            t0 = time.perf_counter()
            with open(out / "runs" / f"{tag}.out", "wb") as so, open(out / "runs" / f"{tag}.err", "wb") as se:
                p = subprocess.Popen(cmd, stdout=so, stderr=se, env={**os.environ, "HOME": str(out)})
                _, status, ru = os.wait4(p.pid, 0)
            wall = time.perf_counter() - t0
            try:
                doc = json.loads((out / "runs" / f"{tag}.out").read_text().strip().splitlines()[-1])
            except (ValueError, IndexError):
                doc = {"ok": 0, "failed": n, "errors": [["no output", 1]]}
            doc.update(tag=tag, n=n, wall_s=round(wall, 2), cpu_s=round(ru.ru_utime + ru.ru_stime, 2),
                       cpu_ms_per_device=round(1000 * (ru.ru_utime + ru.ru_stime) / n, 2),
                       workers_cpu_s=round(sum(_proc_cpu(w.pid, children=False) for w in workers) - w_before, 2),
                       device_cpu_s=round(sum(_proc_cpu(p) for p in listeners) - d_before, 2),
                       redis_cpu_s=round(_proc_cpu(redis.proc.pid, children=False) - r_before, 2),
                       load1_before=round(load, 2), rc=os.waitstatus_to_exitcode(status))
            runs.append(doc)
            log(f"{tag}: {doc['wall_s']} s, answered {doc['ok']}/{n}, controller CPU {doc['cpu_s']} s, "
                f"workers CPU {doc['workers_cpu_s']} s, peak RSS {doc.get('hwm_mb')} MB")
            (out / "results.json").write_text(json.dumps({"runs": runs}, indent=1))
            return doc

        for executor in ("celery", "local"):  # warm-up: page cache, .pyc, sessions' first costs
            measure(f"warmup-{executor}", executor, "probe", 20)
        for rep in range(1, a.reps + 1):
            measure(f"probe-local-r{rep}", "local", "probe", a.n)
            measure(f"probe-celery-r{rep}", "celery", "probe", a.n)
            measure(f"noop-local-r{rep}", "local", "noop", a.n)
            measure(f"noop-celery-r{rep}", "celery", "noop", a.n)
        measure("probe-celery-quarter", "celery", "probe", max(1, a.n // 4))
    finally:
        for w in workers:
            if w.poll() is None:
                w.terminate()
        for w in workers:
            try:
                w.wait(timeout=30)
            except subprocess.TimeoutExpired:
                w.kill()
        if redis is not None:
            redis.stop()
        fl.stop()
    report = render(runs, a, started)
    (out / "report.md").write_text(report + "\n")
    print(report)
    log(f"results in {out}")
    return 0 if all(r.get("failed", 1) == 0 for r in runs) else 1


def render(runs: list[dict], a: argparse.Namespace, started: str) -> str:
    def med(tag: str, key: str) -> float:
        vals = [r[key] for r in runs if r["tag"].startswith(tag + "-r") and r.get(key) is not None]
        return statistics.median(vals) if vals else float("nan")

    L = [f"Site workers benchmark {started}: N={a.n} loopback devices over {a.sites} sites, one `fleet worker` "
         f"per site (--concurrency {a.concurrency}, threads), forks {a.forks} (local: at once; celery: outstanding "
         f"per site), {a.reps} rep(s); machine: {os.cpu_count()} CPUs, Python {platform.python_version()}", "",
         "| run | N | wall s | answered | ctl CPU s | ctl CPU ms/device | ctl peak RSS MB | workers CPU s | "
         "devices CPU s | redis CPU s | load1 before |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in runs:
        L.append(f"| {r['tag']} | {r['n']} | {r['wall_s']} | {r.get('ok')}/{r['n']} | {r['cpu_s']} | "
                 f"{r['cpu_ms_per_device']} | {r.get('hwm_mb')} | {r['workers_cpu_s']} | {r['device_cpu_s']} | "
                 f"{r['redis_cpu_s']} | {r['load1_before']} |")
    n = a.n
    noop_c, noop_l = med("noop-celery", "map_s"), med("noop-local", "map_s")
    L += ["", "Dispatch overhead (medians; `map` time inside the controller, start-up excluded):", "",
          f"- noop, celery: {1000 * noop_c / n:.2f} ms/device of wall, "
          f"{1000 * med('noop-celery', 'map_cpu_s') / n:.2f} ms/device of controller CPU, "
          f"{1000 * med('noop-celery', 'workers_cpu_s') / n:.2f} ms/device of worker CPU, "
          f"{1000 * med('noop-celery', 'redis_cpu_s') / n:.2f} ms/device of Redis CPU",
          f"- noop, local: {1000 * noop_l / n:.3f} ms/device of wall, "
          f"{1000 * med('noop-local', 'map_cpu_s') / n:.2f} ms/device of controller CPU",
          f"- probe: celery {med('probe-celery', 'map_s'):.2f} s vs local {med('probe-local', 'map_s'):.2f} s "
          f"for {n} devices: {1000 * (med('probe-celery', 'map_s') - med('probe-local', 'map_s')) / n:+.2f} "
          f"ms/device of wall; controller CPU in map {1000 * med('probe-celery', 'map_cpu_s') / n:.2f} vs "
          f"{1000 * med('probe-local', 'map_cpu_s') / n:.2f} ms/device"]
    q = next((r for r in runs if r["tag"] == "probe-celery-quarter"), None)
    full = [r for r in runs if r["tag"].startswith("probe-celery-r")]
    if q and full and q.get("hwm_mb") and full[0].get("hwm_mb"):
        slope = (full[0]["hwm_mb"] - q["hwm_mb"]) / (full[0]["n"] - q["n"]) * 1024
        L.append(f"- controller peak RSS: {q['hwm_mb']} MB at N={q['n']}, {full[0]['hwm_mb']} MB at N={full[0]['n']}: "
                 f"{slope:.1f} KiB/device")
    return "\n".join(L)


if __name__ == "__main__":
    sys.exit(main())
