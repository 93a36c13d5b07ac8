"""Deploy benchmark on the simulated lab (issue "Benchmarks", deploy part): ``bench/run --deploy``.

Per repetition k (1..reps), against the lab's default fleet (``fleet lab status --json``):

1. **new content**: the playbook's build context is copied to ``OUT/deploy/ctx-k`` and one
   comment line naming the run and rep is appended to ``--deploy-touch`` (default
   ``hello.sh``, which the sample Dockerfile copies into every platform's image), so every
   platform's child has a new layer and a new digest; the playbook is copied with its image
   tag set to ``bench-<run>-k`` and its build context made absolute.
2. **clear the devices**: over SSH with the lab's key and known_hosts (host keys checked),
   on every device: ``docker rm -f`` the container and its ``.new``/``.previous``/``.failed``
   companions, then ``docker rmi -f`` every image of the playbook's repository. The device
   then holds nothing of the app: the deploy is a real first deploy.
3. **first deploy**: ``fleet deploy PLAYBOOK -i INVENTORY --json --report-dir DIR``, timed as a
   whole process (wall, controller CPU, RSS: ``measure`` of bench/run). Around it, per device,
   the host-side veth counters ``/sys/class/net/flab<octet>/statistics/{tx,rx}_bytes``: tx of
   the host end = bytes the device received (its pull from the registry over TLS, plus the
   controller's SSH session: both included, nothing subtracted), rx = bytes it sent.
4. **no-change re-deploy**: the same command again, measured the same way.
5. **probe of the same devices**: ``fleet probe -i INVENTORY --json`` right after, whole
   process too: the issue's "no-change re-deploy within 2x of a probe" compares 4 and 5.

During the first deploy, :class:`capture.VethCapture` sorts each device's received frames
by TCP source port (SSH 22, registry 5443, other) and counts the registry's TCP
connections; :func:`capture.tls_handshake_bytes` measures one TLS handshake with the lab
registry. With the sizes of the index and the child manifest from the deploy report, the
received bytes split into: the child (config + layers), the index and manifest bodies,
TLS handshakes, the rest of the registry traffic (HTTP headers, TLS records, TCP/IP
headers), the SSH session, other frames.

Then **the emulated Pi Zero's probe vs a bare SSH round trip**, interleaved, ``--probe-reps``
samples each: ``ssh true`` (the OpenSSH client, whole process), ``fleet probe --limit
pi-zero`` (whole process), and in this process with fleet's own SSH layer:
``connect`` + :func:`fleet.engine.probe.gather_with_api` against ``connect`` +
``Session.run("true")`` (start-up of the Python process excluded from both).

Then the publish check: a new-content playbook is published twice with ``fleet publish
--json``; the ``uploads`` field of each result (blobs the sources uploaded: the engine push's
``Pushed`` layers plus blobs fleet copied; ``Layer already exists`` and mounts are not
uploads) is recorded, and, independently, the number of blobs that appeared in the lab
registry's filesystem store (layers, configs, manifests and the index are all blobs there).
Goal: 0 on the second publish.

The child size a device is compared with is the ``size`` of its planned entry in the deploy
report's publish result (config + compressed layers: what a registry client downloads).
"""

from __future__ import annotations

import json
import os
import shlex
import socket
import shutil
import statistics
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable

import yaml

from capture import OwnPorts, VethCapture, tls_handshake_bytes

ROOT = Path(__file__).resolve().parent.parent
FLEET = ROOT / ".venv/bin/fleet"


def lab_status() -> dict:
    """``fleet lab status --json``; raises SystemExit when the lab is not fully up."""
    r = subprocess.run([str(FLEET), "lab", "status", "--json"], capture_output=True, text=True, timeout=120)
    try:
        doc = json.loads(r.stdout)
    except ValueError:
        raise SystemExit(f"fleet lab status --json gave no JSON (exit {r.returncode}): {r.stderr.strip()[-300:]}")
    if not doc.get("ok"):
        down = [d["name"] for d in doc.get("devices", []) if d.get("state") != "running"]
        raise SystemExit(f"the lab is not up (devices not running: {', '.join(down) or '-'}, registry "
                         f"{doc.get('registry', {}).get('state')}); run `fleet lab up` and "
                         f"`fleet lab hello-context examples/hello` first")
    return doc


def veth(address: str) -> str:
    """Host end of a lab device's veth pair: ``flab<last octet>`` (fleet/lab/net.py veth_name)."""
    return f"flab{int(address.rsplit('.', 1)[1])}"


def counters(devices: list[dict]) -> dict[str, tuple[int, int]]:
    """{device: (tx_bytes, rx_bytes)} of the host end of each device's veth."""
    out = {}
    for d in devices:
        base = Path("/sys/class/net") / veth(d["address"]) / "statistics"
        out[d["name"]] = (int((base / "tx_bytes").read_text()), int((base / "rx_bytes").read_text()))
    return out


def registry_blobs(status: dict) -> set[str]:
    """Blob digests the lab registry's filesystem store holds (``registry/data/.../blobs``):
    layers, configs, manifests and indexes are all stored as blobs there, each once."""
    root = Path(status["lab_dir"]) / "registry" / "data" / "docker" / "registry" / "v2" / "blobs" / "sha256"
    return {p.parent.name for p in root.glob("*/*/data")}


def ssh(status: dict, address: str, command: str, timeout: float = 300) -> subprocess.CompletedProcess:
    """Run ``command`` on a lab device as the lab's login user, host key checked against the
    lab's known_hosts (never accepted blindly)."""
    argv = ["ssh", "-i", status["ssh_key"], "-o", f"UserKnownHostsFile={status['known_hosts']}",
            "-o", "GlobalKnownHostsFile=/dev/null", "-o", "StrictHostKeyChecking=yes", "-o", "BatchMode=yes",
            "-o", "IdentitiesOnly=yes", "-o", "ConnectTimeout=30", f"{status['ssh_user']}@{address}", command]
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout)


def clear_device(status: dict, dev: dict, container: str, repository_suffix: str) -> dict:
    """Remove the app's containers and every image of its repository from one device.

    Returns {"device", "removed_images", "left_images", "seconds"}; raises RuntimeError if
    the device's engine cannot be listed.
    """
    t0 = time.monotonic()
    names = " ".join(shlex.quote(f"{container}{s}") for s in ("", ".new", ".previous", ".failed"))
    ssh(status, dev["address"], f"docker rm -f {names} >/dev/null 2>&1; true")

    def images() -> list[str]:
        r = ssh(status, dev["address"], "docker images --no-trunc --format '{{.ID}} {{.Repository}}'")
        if r.returncode != 0:
            raise RuntimeError(f"{dev['name']}: docker images failed: {r.stderr.strip()[-300:]}")
        ids = []
        for line in r.stdout.splitlines():
            parts = line.split()
            if len(parts) == 2 and parts[1].endswith(repository_suffix) and parts[0] not in ids:
                ids.append(parts[0])
        return ids

    ids = images()
    if ids:
        ssh(status, dev["address"], "docker rmi -f " + " ".join(shlex.quote(i) for i in ids) + " >/dev/null")
    left = images()
    return {"device": dev["name"], "removed_images": len(ids), "left_images": len(left),
            "seconds": round(time.monotonic() - t0, 1)}


def bench_playbook(src: Path, outdir: Path, tag: str, note: str, touch: str, app: str = "", port: int = 0) -> Path:
    """Copy ``src`` (a playbook with a ``source.build`` context) to ``outdir`` with image tag
    ``tag``, its context copied to ``outdir/ctx-<tag>`` with ``note`` appended to ``touch``.
    ``app``: the container name and the repository's last component instead of the
    playbook's (a bench app of its own never touches the playbook's app on a shared lab);
    ``port``: the app's ``PORT`` and the health check's URL port instead of the playbook's."""
    doc = yaml.safe_load(src.read_text())
    ctx_src = (src.parent / doc["source"]["build"]["context"]).resolve()
    ctx = outdir / f"ctx-{tag}"
    shutil.rmtree(ctx, ignore_errors=True)
    shutil.copytree(ctx_src, ctx, symlinks=True)
    with open(ctx / touch, "a") as f:
        f.write(f"\n# {note}\n")
    image = doc["image"]
    head, _, last = image.rpartition("/")
    doc["image"] = f"{head}/{app or last.split(':', 1)[0]}:{tag}"
    doc["source"]["build"]["context"] = str(ctx)
    if app:
        doc["name"] = app
        doc["container"]["name"] = app
    if port:
        old = str(doc["container"].get("env", {}).get("PORT", "8080"))
        doc["container"].setdefault("env", {})["PORT"] = str(port)
        if doc.get("health", {}).get("http"):
            doc["health"]["http"] = doc["health"]["http"].replace(f":{old}/", f":{port}/")
    out = outdir / f"playbook-{tag}.yaml"
    out.write_text("# generated by bench/deploybench.py from " + str(src) + "\n" + yaml.safe_dump(doc, sort_keys=False))
    return out


def five_devices(status: dict, inventory: Path, outdir: Path) -> tuple[list[dict], Path]:
    """The lab's default boards (fleet/lab/profiles.py DEFAULT_PROFILES: the issue's five)
    among the running ones, and ``inventory`` restricted to them (written to ``outdir``)."""
    from fleet.lab.profiles import DEFAULT_PROFILES

    devices = [d for d in status["devices"] if d["name"] in DEFAULT_PROFILES]
    doc = yaml.safe_load(Path(inventory).read_text())
    names = {d["name"] for d in devices}

    def prune(group: dict) -> None:
        hosts = group.get("hosts") or {}
        for h in [h for h in hosts if h not in names]:
            del hosts[h]
        for child in (group.get("children") or {}).values():
            if isinstance(child, dict):
                prune(child)

    prune(doc["all"])
    out = outdir / "inventory-five.yaml"
    out.write_text("# generated by bench/deploybench.py: the lab's default boards\n" + yaml.safe_dump(doc, sort_keys=False))
    return devices, out


def _deploy_ok(stdout: str, n: int) -> int:
    doc, _ = json.JSONDecoder().raw_decode(stdout.lstrip())
    return sum(1 for d in doc if isinstance(d, dict) and d.get("ok"))


def _one_report(d: Path) -> dict | None:
    files = sorted(d.glob("deploy-*.json"))
    return json.loads(files[-1].read_text()) if files else None


def image_pulls(status: dict, dev: dict, since: int, until: int) -> list[str]:
    """References the device's engine pulled between ``since`` and ``until`` (epoch s):
    ``docker events`` image ``pull`` events. A pull of another session's image in a
    measured window means the window's registry bytes are not the run's alone."""
    r = ssh(status, dev["address"], f"docker events --since {since} --until {until} --filter type=image "
                                     f"--filter event=pull --format '{{{{.ID}}}}'", timeout=120)
    return [ln.strip() for ln in r.stdout.splitlines() if ln.strip()] if r.returncode == 0 else [f"? {r.stderr[-200:]}"]


def _per_device(report: dict | None, before: dict, after: dict, captured: dict | None = None,
                handshake: int = 0, pulls: dict | None = None, repo_suffix: str = "") -> list[dict]:
    sizes, manifests, index_size = {}, {}, 0
    if report and report.get("publish"):
        sizes = {e["platform"]: e["size"] for e in report["publish"]["entries"]}
        manifests = {e["platform"]: e.get("manifest_size") or 0 for e in report["publish"]["entries"]}
        index_size = report["publish"].get("index_size") or 0
    devs = {d["host"]: d for d in (report or {}).get("devices", [])}
    rows = []
    for name in before:
        tx = after[name][0] - before[name][0]
        rx = after[name][1] - before[name][1]
        d = devs.get(name, {})
        size = sizes.get(d.get("entry_platform"))
        row = {"device": name, "entry_platform": d.get("entry_platform"), "child_size": size,
               "rx_by_device_bytes": tx, "tx_by_device_bytes": rx,
               "ratio": round(tx / size, 3) if size else None, "result": d.get("result"),
               "device_seconds": d.get("seconds"), "actions": d.get("actions"), "cost": d.get("cost")}
        cap = (captured or {}).get(name)
        foreign = [p for p in (pulls or {}).get(name, [])
                   if not (repo_suffix + "@" in p or repo_suffix + ":" in p or p.endswith(repo_suffix))]
        if cap is not None and size:
            reg, ssh_, own = cap["registry"], cap["ssh"], cap["ssh_this_run"]
            pulled = bool(d.get("actions") and any(a.startswith("pull ") for a in d["actions"]))
            bodies = size + (index_size + manifests.get(d.get("entry_platform"), 0) if pulled else 0)
            tls = cap["registry_connections"] * handshake
            row["split"] = {
                "captured_bytes": cap["total_bytes"], "ssh_bytes": ssh_["bytes"], "ssh_frames": ssh_["frames"],
                "ssh_this_run_bytes": own["bytes"], "ssh_this_run_connections": own["connections"],
                "ssh_other_sessions_bytes": cap["ssh_other_sessions"]["bytes"],
                "ssh_other_sessions_connections": cap["ssh_other_sessions"]["connections"],
                "foreign_pulls": foreign, "pulls": (pulls or {}).get(name, []),
                "registry_bytes": reg["bytes"], "registry_payload": reg["payload"], "registry_frames": reg["frames"],
                "registry_connections": cap["registry_connections"], "other_bytes": cap["other"]["bytes"],
                "child_bytes": size if pulled else 0, "index_manifest_bytes": bodies - (size if pulled else 0),
                "tls_handshakes_bytes": tls,
                "registry_rest_bytes": reg["bytes"] - bodies - tls if pulled else reg["bytes"],
                "ratio_registry_only": round(reg["bytes"] / size, 4),
                "ratio_this_run": round((reg["bytes"] + own["bytes"]) / size, 4),
                "ratio_without_ssh": round((cap["total_bytes"] - ssh_["bytes"]) / size, 4),
            }
        rows.append(row)
    return rows


def _fleet_probe_ok(stdout: str, n: int) -> int:
    doc, _ = json.JSONDecoder().raw_decode(stdout.lstrip())
    return sum(1 for d in doc if isinstance(d, dict) and not d.get("error") and d.get("ok") is not False)


def _ssh_ok(stdout: str, n: int) -> int:
    return n


def pizero_vs_ssh(status: dict, inventory: Path, reps: int, measure: Callable, tool_cls: Callable, env: dict,
                  outdir: Path, timeout: float, device: str = "pi-zero") -> dict:
    """The probe of ``device`` against a bare SSH round trip to it, ``reps`` interleaved
    samples of each (module docstring)."""
    from fleet.engine.probe import gather_with_api
    from fleet.ssh import SSHSettings, Target, connect

    dev = next(d for d in status["devices"] if d["name"] == device)
    ssh_argv = ["ssh", "-F", "/dev/null", "-i", status["ssh_key"], "-o", f"UserKnownHostsFile={status['known_hosts']}",
                "-o", "GlobalKnownHostsFile=/dev/null", "-o", "StrictHostKeyChecking=yes", "-o", "BatchMode=yes",
                "-o", "IdentitiesOnly=yes", "-o", "ControlMaster=no", f"{status['ssh_user']}@{dev['address']}", "true"]
    probe_argv = [str(FLEET), "probe", "-i", str(inventory), "--limit", device, "--json"]
    target = Target(name=device, hostname=dev["address"], port=22, user=status["ssh_user"],
                    key_files=(Path(status["ssh_key"]),), known_hosts_files=(Path(status["known_hosts"]),))
    settings = SSHSettings(retries=1, command_timeout=120)
    rows: dict[str, list] = {"ssh true": [], "fleet probe": [], "connect + run(true)": [], "connect + probe": []}
    via = []
    for k in range(1, reps + 1):
        m = measure(tool_cls("ssh-true", ssh_argv, env, None, _ssh_ok), 1, outdir / "runs", f"{device}-ssh-true-{k}",
                    timeout, [])
        rows["ssh true"].append({"wall_s": m["wall_s"], "rc": m["rc"], "load1": m["load_before"][0]})
        m = measure(tool_cls("fleet-probe", probe_argv, env, None, _fleet_probe_ok), 1, outdir / "runs",
                    f"{device}-probe-{k}", timeout, [])
        rows["fleet probe"].append({"wall_s": m["wall_s"], "rc": m["rc"], "load1": m["load_before"][0]})
        t0 = time.perf_counter()
        with connect(target, settings) as s:
            r = s.run("true")
        rows["connect + run(true)"].append({"wall_s": round(time.perf_counter() - t0, 3), "rc": r.exit_status,
                                            "load1": os.getloadavg()[0]})
        t0 = time.perf_counter()
        with connect(target, settings) as s:
            p = gather_with_api(s, False)
            if p.engine is not None:
                p.engine.close()
        rows["connect + probe"].append({"wall_s": round(time.perf_counter() - t0, 3), "rc": 0 if p.facts else 1,
                                        "load1": os.getloadavg()[0]})
        via.append(p.engine_via)
        # where the probe's time goes, on one open connection
        with connect(target, settings) as s:
            for label, work in parts(s):
                t0 = time.perf_counter()
                work()
                rows.setdefault(label, []).append({"wall_s": round(time.perf_counter() - t0, 3), "rc": 0,
                                                   "load1": os.getloadavg()[0]})
    med = {k: round(statistics.median(r["wall_s"] for r in v), 3) for k, v in rows.items()}
    return {"device": device, "samples": rows, "median_s": med, "engine_via": via,
            "ratio_whole_process": round(med["fleet probe"] / med["ssh true"], 2),
            "ratio_in_process": round(med["connect + probe"] / med["connect + run(true)"], 2)}


def parts(session) -> list[tuple[str, Callable]]:
    """The pieces of a probe, each timed alone on an open connection: an exec whose
    command is a shell builtin (the login shell's start), one that starts one program,
    the probe script without its engine section, the engine's ``/version`` + ``/info`` on
    a new streamlocal channel, and the probe as fleet runs it (script and API calls
    overlapping)."""
    from fleet.engine.api import ApiEngine
    from fleet.engine.probe import gather_with_api
    from fleet.facts import new_boundary, probe_command

    def api() -> None:
        with ApiEngine(session, session.target.name) as eng:
            eng.version()
            eng.info()

    def probe() -> None:
        p = gather_with_api(session, False)
        if p.engine is not None:
            p.engine.close()

    return [("open session: run(true), a shell builtin", lambda: session.run("true")),
            ("open session: run(/bin/true), one program", lambda: session.run("/bin/true")),
            ("open session: the probe script alone (no engine section)",
             lambda: session.run(probe_command(False, new_boundary(), engine_cli=False))),
            ("open session: /version + /info alone (new streamlocal channel)", api),
            ("open session: the probe (script and API overlapping)", probe)]


def run(outdir: Path, reps: int, measure: Callable, tool_cls: Callable, env: dict, log: Callable,
        playbook: Path, inventory: Path, touch: str = "hello.sh", timeout: float = 900,
        started: str = "", app: str = "", port: int = 0, probe_reps: int = 5, cost_port: int = 2201) -> dict:
    """The deploy benchmark (module docstring). Returns the result document (also written
    into results.json by bench/run). ``app``/``port``: see :func:`bench_playbook`."""
    status = lab_status()
    outdir = outdir / "deploy"
    outdir.mkdir(parents=True, exist_ok=True)
    devices, inventory = five_devices(status, inventory, outdir)
    src = yaml.safe_load(bench_playbook(playbook, outdir, "shape", "shape", touch, app, port).read_text())
    container = src["container"]["name"]
    repo_suffix = "/" + src["image"].rpartition("/")[0].rpartition("/")[2] + "/" + \
        src["image"].rpartition("/")[2].split(":", 1)[0]
    registry_host, _, port_text = status["registry"]["address"].rpartition(":")
    registry_port = int(port_text)
    handshake = tls_handshake_bytes(registry_host, registry_port, Path(status["lab_dir"]) / "registry" / "ca.crt")
    log(f"one TLS handshake with the lab registry: {handshake['handshake_received']} bytes received, "
        f"{handshake['handshake_sent']} sent ({handshake['tls_version']}, {handshake['cipher']})")
    result: dict[str, Any] = {"inventory": str(inventory), "playbook": str(playbook), "devices":
                              [{k: d[k] for k in ("name", "address", "profile", "arch")} for d in devices],
                              "reps": [], "publish": [], "tls_handshake": handshake}
    for k in range(1, reps + 1):
        tag = f"bench-{started}-{k}"
        pb = bench_playbook(playbook, outdir, tag, f"bench run {started} rep {k}", touch, app, port)
        log(f"deploy rep {k}: clearing {len(devices)} devices")
        with ThreadPoolExecutor(len(devices)) as ex:
            cleared = list(ex.map(lambda d: clear_device(status, d, container, repo_suffix), devices))
        rep: dict[str, Any] = {"rep": k, "tag": tag, "playbook": str(pb), "cleared": cleared}
        for phase in ("first", "again"):
            rdir = outdir / f"reports-{tag}-{phase}"
            argv = [str(FLEET), "deploy", str(pb), "-i", str(inventory), "--json", "--report-dir", str(rdir)]
            own = OwnPorts(str(pb))
            caps = {d["name"]: VethCapture(veth(d["address"]), registry_port, own=own) for d in devices}
            before = counters(devices)
            blobs0 = registry_blobs(status)
            t0 = int(time.time()) - 1
            own.start()
            for c in caps.values():
                c.start()
            try:
                m = measure(tool_cls(f"deploy-{phase}", argv, env, None, _deploy_ok), len(devices),
                            outdir / "runs", f"{tag}-{phase}", timeout, [])
                time.sleep(0.3)  # the last frames of the closing connections
            finally:
                own.stop()
                for c in caps.values():
                    c.stop()
            after = counters(devices)
            t1 = int(time.time()) + 1
            with ThreadPoolExecutor(len(devices)) as ex:
                pulls = dict(zip((d["name"] for d in devices),
                                 ex.map(lambda d: image_pulls(status, d, t0, t1), devices)))
            m["new_registry_blobs"] = len(registry_blobs(status) - blobs0)
            report = _one_report(rdir)
            m["devices"] = _per_device(report, before, after, {n: c.result() for n, c in caps.items()},
                                       handshake["handshake_received"], pulls, repo_suffix)
            m["publish_uploads"] = (report or {}).get("publish", {}).get("uploads") if report else None
            m["summary"] = (report or {}).get("summary")
            rep[phase] = m
            log(f"deploy rep {k} {phase}: {m['wall_s']:.1f}s rc {m['rc']} {m['summary']}; received bytes "
                + ", ".join(f"{d['device']} {d['rx_by_device_bytes']} ({d['ratio']}x)" for d in m["devices"]))
        argv = [str(FLEET), "probe", "-i", str(inventory), "--json"]
        m = measure(tool_cls("probe", argv, env, None, _fleet_probe_ok), len(devices), outdir / "runs",
                    f"{tag}-probe", timeout, [])
        rep["probe"] = m
        log(f"deploy rep {k} probe of the same {len(devices)}: {m['wall_s']:.1f}s rc {m['rc']}; no-change re-deploy "
            f"{rep['again']['wall_s']:.1f}s = {rep['again']['wall_s'] / m['wall_s']:.2f}x the probe")
        result["reps"].append(rep)
        (outdir / "deploy.json").write_text(json.dumps(result, indent=1))
    # publishing unchanged inputs again: blob uploads must be 0 the second time
    tag = f"bench-{started}-pub"
    pb = bench_playbook(playbook, outdir, tag, f"bench run {started} publish", touch, app, port)
    for i in (1, 2):
        argv = [str(FLEET), "publish", str(pb), "-i", str(inventory), "--json"]
        blobs0 = registry_blobs(status)
        m = measure(tool_cls(f"publish-{i}", argv, env, None, lambda s, n: 1 if '"index_digest"' in s else 0), 1,
                    outdir / "runs", f"{tag}-{i}", timeout, [])
        try:
            doc, _ = json.JSONDecoder().raw_decode((outdir / "runs" / f"{tag}-{i}.out").read_text().lstrip())
        except ValueError:
            doc = {}
        m["uploads"] = doc.get("uploads")
        m["new_registry_blobs"] = len(registry_blobs(status) - blobs0)
        m["index_digest"] = doc.get("index_digest")
        m["entries"] = [(e["platform"], e["manifest_digest"]) for e in doc.get("entries", [])]
        result["publish"].append(m)
        log(f"publish {i}: {m['wall_s']:.1f}s rc {m['rc']} uploads {m['uploads']} new registry blobs "
            f"{m['new_registry_blobs']} index {m['index_digest']}")
    (outdir / "deploy.json").write_text(json.dumps(result, indent=1))
    if probe_reps:
        log(f"pi-zero: probe vs ssh true, {probe_reps} interleaved samples")
        result["pizero"] = pizero_vs_ssh(status, inventory, probe_reps, measure, tool_cls, env, outdir, timeout)
        pz = result["pizero"]
        log(f"pi-zero medians: {pz['median_s']}; whole process {pz['ratio_whole_process']}x, in process "
            f"{pz['ratio_in_process']}x")
        (outdir / "deploy.json").write_text(json.dumps(result, indent=1))
    if cost_port:
        import costbench

        name = f"{app or container}-count"
        pbs = tuple(bench_playbook(playbook, outdir, f"count-{started}-{v}", f"bench run {started} count v{v}",
                                   touch, name, (port or 8080) + 1) for v in (1, 2))
        image = yaml.safe_load(pbs[0].read_text())["image"]
        result["costs"] = costbench.run(status, outdir, log, pbs, name, image.rpartition(":")[0], cost_port, timeout)
        (outdir / "deploy.json").write_text(json.dumps(result, indent=1))
    return result


def render(result: dict) -> str:
    """Markdown tables of a :func:`run` result."""
    L = ["### Deploy benchmark (lab: " + ", ".join(f"{d['name']} {d['arch']}" for d in result["devices"]) + ")", "",
         f"Playbook {result['playbook']} (copied per rep with new content and tag), inventory {result['inventory']}.",
         "", "| rep | phase | wall s | ctl CPU s | max RSS MB | rc | summary | load1 before | publish uploads "
         "| new registry blobs |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in result["reps"]:
        for ph in ("first", "again"):
            m = r[ph]
            L.append(f"| {r['rep']} | {'first deploy' if ph == 'first' else 'no-change re-deploy'} | {m['wall_s']:.1f} "
                     f"| {m['cpu_s']:.2f} | {m['maxrss_mb']} | {m['rc']} | {m['summary']} | {m['load_before'][0]:.2f} "
                     f"| {m['publish_uploads']} | {m['new_registry_blobs']} |")
        if "probe" in r:
            m = r["probe"]
            L.append(f"| {r['rep']} | probe of the same devices | {m['wall_s']:.1f} | {m['cpu_s']:.2f} | {m['maxrss_mb']} "
                     f"| {m['rc']} | {m['answered']}/{len(result['devices'])} answered | {m['load_before'][0]:.2f} | - | - |")
    for ph, label in (("first", "first deploy"), ("again", "no-change re-deploy"), ("probe", "probe of the same devices")):
        ws = [r[ph]["wall_s"] for r in result["reps"] if ph in r]
        if ws:
            L.append(f"\n{label}: median {statistics.median(ws):.1f} s (min {min(ws):.1f}, max {max(ws):.1f}, "
                     f"{len(ws)} reps)")
    pairs = [(r["again"]["wall_s"], r["probe"]["wall_s"]) for r in result["reps"] if "probe" in r]
    if pairs:
        a, p = statistics.median(x for x, _ in pairs), statistics.median(y for _, y in pairs)
        L.append(f"\nno-change re-deploy / probe of the same devices (medians, same run): {a:.1f} / {p:.1f} s = "
                 f"**{a / p:.2f}x** (target <= 2x: {'MET' if a / p <= 2 else 'NOT MET'})")
    L += ["", "Bytes each device received (host-side veth tx; TLS registry pull + SSH sessions included, "
          "nothing subtracted) vs the size of its own platform's child (config + compressed layers):", "",
          "| rep | phase | device | entry | child bytes | received bytes | ratio | sent bytes | result |",
          "|---|---|---|---|---|---|---|---|---|"]
    for r in result["reps"]:
        for ph in ("first", "again"):
            for d in r[ph]["devices"]:
                L.append(f"| {r['rep']} | {ph} | {d['device']} | {d['entry_platform']} | {d['child_size']} "
                         f"| {d['rx_by_device_bytes']} | {d['ratio']} | {d['tx_by_device_bytes']} | {d['result']} |")
    hs = result.get("tls_handshake")
    splits = [(r["rep"], d) for r in result["reps"] for d in r["first"]["devices"] if d.get("split")]
    if splits:
        L += ["", f"Where the first deploy's received bytes went (frames captured on each device's veth, sorted by TCP "
              f"source port; one TLS handshake with the registry = {hs['handshake_received'] if hs else '?'} bytes "
              f"received, {hs['tls_version'] if hs else ''}):", "",
              "| rep | device | child | index + manifest | TLS handshakes (connections) | rest of the registry traffic "
              "(HTTP, TLS records, TCP/IP) | SSH, this run (connections) | SSH, other sessions | other frames | total "
              "captured (veth counter) | raw ratio | this run's ratio (registry + own SSH) | registry only | pulls by "
              "other sessions in the window |", "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
        for rep, d in splits:
            x = d["split"]
            L.append(f"| {rep} | {d['device']} | {x['child_bytes']} | {x['index_manifest_bytes']} | {x['tls_handshakes_bytes']} "
                     f"({x['registry_connections']}) | {x['registry_rest_bytes']} | {x['ssh_this_run_bytes']} "
                     f"({x['ssh_this_run_connections']}) | {x['ssh_other_sessions_bytes']} | {x['other_bytes']} "
                     f"| {x['captured_bytes']} ({d['rx_by_device_bytes']}) | {d['ratio']} | {x['ratio_this_run']} "
                     f"| {x['ratio_registry_only']} | {', '.join(x['foreign_pulls']) or 'none'} |")
    pz = result.get("pizero")
    if pz:
        L += ["", f"Probe of the emulated {pz['device']} vs a bare SSH round trip, {len(pz['samples']['ssh true'])} "
              f"interleaved samples each (engine facts via {', '.join(sorted(set(pz['engine_via'])))}):", "",
              "| what | median s | min-max s | load1 during |", "|---|---|---|---|"]
        for k, rows in pz["samples"].items():
            ws = [r["wall_s"] for r in rows]
            L.append(f"| {k} | {pz['median_s'][k]:.3f} | {min(ws):.3f}-{max(ws):.3f} | "
                     f"{min(r['load1'] for r in rows):.1f}-{max(r['load1'] for r in rows):.1f} |")
        L.append(f"\nfleet probe / ssh true (whole processes): **{pz['ratio_whole_process']}x**; connect + probe / "
                 f"connect + run(true) (fleet's SSH layer, in one process): **{pz['ratio_in_process']}x** (target <= 2x)")
    if result.get("costs"):
        import costbench

        L += ["", costbench.render(result["costs"])]
    L += ["", "| publish of unchanged inputs | wall s | uploads (publish JSON) | new registry blobs | index digest |",
          "|---|---|---|---|---|"]
    for i, m in enumerate(result["publish"], 1):
        L.append(f"| {'first (new content)' if i == 1 else 'again (unchanged)'} | {m['wall_s']:.1f} | {m['uploads']} "
                 f"| {m['new_registry_blobs']} | {m['index_digest']} |")
    return "\n".join(L) + "\n"
