"""Pure parts of the deploy benchmark (bench/deploybench.py): the per-rep playbook copy
(checked with fleet's own playbook loader) and the per-device byte accounting. The deploy
benchmark itself needs the lab and is not part of the test suite (bench/README.md)."""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "bench"))
import deploybench  # noqa: E402

from fleet.playbook import load_playbook  # noqa: E402


def test_bench_playbook_new_tag_and_content(tmp_path):
    src = ROOT / "playbooks" / "hello.yaml"
    pb = deploybench.bench_playbook(src, tmp_path, "bench-t-1", "bench run t rep 1", "hello.sh")
    p = load_playbook(pb, environ={})
    assert p.image == "198.18.0.1:5443/fleet/hello:bench-t-1"
    assert p.container_spec.name == "hello"
    ctx = tmp_path / "ctx-bench-t-1"
    assert (ctx / "hello.sh").read_text() == (ROOT / "examples/hello/hello.sh").read_text() + "\n# bench run t rep 1\n"
    assert (ctx / "Dockerfile").read_text() == (ROOT / "examples/hello/Dockerfile").read_text()
    assert str(ctx) in pb.read_text()


def test_veth_name_matches_the_lab():
    from fleet.lab.net import veth_name

    assert deploybench.veth("198.18.0.14") == veth_name(14) == "flab14"


def test_per_device_bytes_and_ratio():
    report = {"publish": {"entries": [{"platform": "linux/arm/v6", "size": 1000},
                                      {"platform": "linux/amd64", "size": 2000}]},
              "devices": [{"host": "a", "entry_platform": "linux/arm/v6", "result": "verified", "seconds": 3.0},
                          {"host": "b", "entry_platform": "linux/amd64", "result": "unchanged", "seconds": 1.0}]}
    rows = deploybench._per_device(report, {"a": (100, 10), "b": (0, 0)}, {"a": (1350, 60), "b": (500, 70)})
    assert rows[0] == {"device": "a", "entry_platform": "linux/arm/v6", "child_size": 1000,
                       "rx_by_device_bytes": 1250, "tx_by_device_bytes": 50, "ratio": 1.25,
                       "result": "verified", "device_seconds": 3.0, "actions": None, "cost": None}
    assert rows[1]["ratio"] == 0.25 and rows[1]["tx_by_device_bytes"] == 70
    # no report (deploy crashed): bytes still counted, no ratio
    assert deploybench._per_device(None, {"a": (0, 0)}, {"a": (5, 1)})[0]["ratio"] is None
