"""The in-process closed loop: rendered cameras -> trackers -> DynamicGrasp -> controller -> cell."""

from __future__ import annotations

import json
import os

os.environ.setdefault("MUJOCO_GL", "egl")

import pytest

from dexh2r_policy.closed_loop import main, summarize

OUTCOMES = {"success", "hit-human", "drop", "timeout", "safety-stop"}


def test_one_episode_runs_the_whole_stack_and_the_cell_decides(tmp_path):
    from dexh2r_policy.datagen import main as datagen

    # A small pool for the first easy scenario's object (the full pools are data, made by command).
    pools = tmp_path / "pools"
    assert datagen(["grasps", "--objects", "prim/box_small", "--candidates", "20", "--out", str(pools)]) == 0
    out = tmp_path / "cl.json"
    args = ["--scenarios", "config/scenarios/easy.yaml", "--episodes", "1", "--pools", str(pools)]
    assert main([*args, "--json", str(out)]) == 0
    summary = json.loads(out.read_text())
    assert summary["episodes"] == 1 and summary["limit_violations"] == 0
    assert sum(summary[f"{k.replace('-', '_')}_rate"] for k in OUTCOMES) == pytest.approx(1.0)
    row = json.loads((tmp_path / "cl" / "episodes.jsonl").read_text().splitlines()[0])
    assert row["outcome"] in OUTCOMES
    assert row["last_phase"] is not None, "the policy produced targets from tracked perception"
    assert row["perception_ms_p95"] is not None and row["policy_ms_p95"] < 100


def test_summary_rates_and_bad_checkpoint(tmp_path, capsys):
    rows = [
        {"outcome": "success", "time_to_handover_s": 2.0, "limit_violations": 0},
        {"outcome": "hit-human", "time_to_handover_s": None, "limit_violations": 0},
    ]
    s = summarize(rows)
    assert s["success_rate"] == 0.5 and s["hit_human_rate"] == 0.5 and s["time_to_handover_s_median"] == 2.0
    args = ["--checkpoint", str(tmp_path / "none.pt"), "--json", str(tmp_path / "x.json")]
    assert main(args) == 2
    assert "checkpoint not found" in capsys.readouterr().err
