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
import shutil
import statistics
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable

import yaml

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


def bench_playbook(src: Path, outdir: Path, tag: str, note: str, touch: str) -> Path:
    """Copy ``src`` (a playbook with a ``source.build`` context) to ``outdir`` with image tag
    ``tag``, its context copied to ``outdir/ctx-<tag>`` with ``note`` appended to ``touch``."""
    doc = yaml.safe_load(src.read_text())
    ctx_src = (src.parent / doc["source"]["build"]["context"]).resolve()
    ctx = outdir / f"ctx-{tag}"
    shutil.rmtree(ctx, ignore_errors=True)
    shutil.copytree(ctx_src, ctx, symlinks=True)
    with open(ctx / touch, "a") as f:
        f.write(f"\n# {note}\n")
    image = doc["image"]
    head, _, last = image.rpartition("/")
    doc["image"] = f"{head}/{last.split(':', 1)[0]}:{tag}"
    doc["source"]["build"]["context"] = str(ctx)
    out = outdir / f"playbook-{tag}.yaml"
    out.write_text("# generated by bench/deploybench.py from " + str(src) + "\n" + yaml.safe_dump(doc, sort_keys=False))
    return out


def _deploy_ok(stdout: str, n: int) -> int:
    doc, _ = json.JSONDecoder().raw_decode(stdout.lstrip())
    return sum(1 for d in doc if isinstance(d, dict) and d.get("ok"))


def _one_report(d: Path) -> dict | None:
    files = sorted(d.glob("deploy-*.json"))
    return json.loads(files[-1].read_text()) if files else None


def _per_device(report: dict | None, before: dict, after: dict) -> list[dict]:
    sizes = {}
    if report and report.get("publish"):
        sizes = {e["platform"]: e["size"] for e in report["publish"]["entries"]}
    devs = {d["host"]: d for d in (report or {}).get("devices", [])}
    rows = []
    for name in before:
        tx = after[name][0] - before[name][0]
        rx = after[name][1] - before[name][1]
        d = devs.get(name, {})
        size = sizes.get(d.get("entry_platform"))
        rows.append({"device": name, "entry_platform": d.get("entry_platform"), "child_size": size,
                     "rx_by_device_bytes": tx, "tx_by_device_bytes": rx,
                     "ratio": round(tx / size, 3) if size else None, "result": d.get("result"),
                     "device_seconds": d.get("seconds"), "actions": d.get("actions")})
    return rows


def run(outdir: Path, reps: int, measure: Callable, tool_cls: Callable, env: dict, log: Callable,
        playbook: Path, inventory: Path, touch: str = "hello.sh", timeout: float = 900,
        started: str = "") -> dict:
    """The deploy benchmark (module docstring). Returns the result document (also written
    into results.json by bench/run)."""
    status = lab_status()
    devices = status["devices"]
    outdir = outdir / "deploy"
    outdir.mkdir(parents=True, exist_ok=True)
    src = yaml.safe_load(playbook.read_text())
    container = src["container"]["name"]
    repo_suffix = "/" + src["image"].rpartition("/")[0].rpartition("/")[2] + "/" + \
        src["image"].rpartition("/")[2].split(":", 1)[0]
    result: dict[str, Any] = {"inventory": str(inventory), "playbook": str(playbook), "devices":
                              [{k: d[k] for k in ("name", "address", "profile", "arch")} for d in devices],
                              "reps": [], "publish": []}
    for k in range(1, reps + 1):
        tag = f"bench-{started}-{k}"
        pb = bench_playbook(playbook, outdir, tag, f"bench run {started} rep {k}", touch)
        log(f"deploy rep {k}: clearing {len(devices)} devices")
        with ThreadPoolExecutor(len(devices)) as ex:
            cleared = list(ex.map(lambda d: clear_device(status, d, container, repo_suffix), devices))
        rep: dict[str, Any] = {"rep": k, "tag": tag, "playbook": str(pb), "cleared": cleared}
        for phase in ("first", "again"):
            rdir = outdir / f"reports-{tag}-{phase}"
            argv = [str(FLEET), "deploy", str(pb), "-i", str(inventory), "--json", "--report-dir", str(rdir)]
            before = counters(devices)
            blobs0 = registry_blobs(status)
            m = measure(tool_cls(f"deploy-{phase}", argv, env, None, _deploy_ok), len(devices),
                        outdir / "runs", f"{tag}-{phase}", timeout, [])
            after = counters(devices)
            m["new_registry_blobs"] = len(registry_blobs(status) - blobs0)
            report = _one_report(rdir)
            m["devices"] = _per_device(report, before, after)
            m["publish_uploads"] = (report or {}).get("publish", {}).get("uploads") if report else None
            m["summary"] = (report or {}).get("summary")
            rep[phase] = m
            log(f"deploy rep {k} {phase}: {m['wall_s']:.1f}s rc {m['rc']} {m['summary']}; received bytes "
                + ", ".join(f"{d['device']} {d['rx_by_device_bytes']} ({d['ratio']}x)" for d in m["devices"]))
        result["reps"].append(rep)
        (outdir / "deploy.json").write_text(json.dumps(result, indent=1))
    # publishing unchanged inputs again: blob uploads must be 0 the second time
    tag = f"bench-{started}-pub"
    pb = bench_playbook(playbook, outdir, tag, f"bench run {started} publish", touch)
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
    for ph, label in (("first", "first deploy"), ("again", "no-change re-deploy")):
        ws = [r[ph]["wall_s"] for r in result["reps"]]
        if ws:
            L.append(f"\n{label}: median {statistics.median(ws):.1f} s (min {min(ws):.1f}, max {max(ws):.1f}, "
                     f"{len(ws)} reps)")
    L += ["", "Bytes each device received (host-side veth tx; TLS registry pull + SSH sessions included, "
          "nothing subtracted) vs the size of its own platform's child (config + compressed layers):", "",
          "| rep | phase | device | entry | child bytes | received bytes | ratio | sent bytes | result |",
          "|---|---|---|---|---|---|---|---|---|"]
    for r in result["reps"]:
        for ph in ("first", "again"):
            for d in r[ph]["devices"]:
                L.append(f"| {r['rep']} | {ph} | {d['device']} | {d['entry_platform']} | {d['child_size']} "
                         f"| {d['rx_by_device_bytes']} | {d['ratio']} | {d['tx_by_device_bytes']} | {d['result']} |")
    L += ["", "| publish of unchanged inputs | wall s | uploads (publish JSON) | new registry blobs | index digest |",
          "|---|---|---|---|---|"]
    for i, m in enumerate(result["publish"], 1):
        L.append(f"| {'first (new content)' if i == 1 else 'again (unchanged)'} | {m['wall_s']:.1f} | {m['uploads']} "
                 f"| {m['new_registry_blobs']} | {m['index_digest']} |")
    return "\n".join(L) + "\n"
