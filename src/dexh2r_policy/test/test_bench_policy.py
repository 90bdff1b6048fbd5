"""`dexh2r bench policy`: every part runs and the report carries the issue's keys and checks."""

from __future__ import annotations

import json

from dexh2r_policy.bench_policy import TARGETS, main


def test_bench_policy_writes_every_target_key(tmp_path) -> None:
    out = tmp_path / "policy.json"
    assert main(["--json", str(out), "--steps", "20"]) == 0
    report = json.loads(out.read_text())
    for key in TARGETS:
        assert report[key] > 0, key
        assert report["checks"][key]["target"] == f"<= {TARGETS[key]}"
    assert report["cvae_pool_grasps"] == 500
    assert report["motionnet_checkpoint"].endswith("motionnet_small.pt")
    assert isinstance(report["pass"], bool)
