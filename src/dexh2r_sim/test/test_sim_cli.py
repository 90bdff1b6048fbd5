"""`dexh2r sim`: scripted episodes end as success / hit-human / drop; bad scenarios fail clearly."""

import json
import subprocess
import sys

import pytest


def _sim(*args: str, timeout: float = 300):
    cmd = [sys.executable, "-m", "dexh2r_core.cli", "sim", "--quiet", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)


@pytest.mark.parametrize(
    ("controller", "outcome"),
    [("scripted", "success"), ("scripted-ram", "hit-human"), ("scripted-drop", "drop")],
)
def test_one_easy_episode_ends_with_the_expected_outcome(tmp_path, controller, outcome):
    results = tmp_path / "results"
    run = _sim(
        "--scenario",
        "config/scenarios/easy.yaml",
        "--episodes",
        "1",
        "--results",
        str(results),
        "--controller",
        controller,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    record = json.loads((results / "episodes.jsonl").read_text().splitlines()[0])
    assert record["outcome"] == outcome, record
    summary = json.loads((results / "summary.json").read_text())
    assert summary["episodes"] == 1 and summary[f"{outcome.replace('-', '_')}_rate"] == 1.0
    assert json.loads((results / "config.json").read_text())["controller"] == controller
    if outcome == "success":
        assert record["time_to_handover_s"] > 0


def _scenario_file(tmp_path, **changes):
    entry = {
        "name": "bad",
        "object_id": "prim/box_small",
        "start_pose": {"xyz": [1.1, 0.05, 0.2], "rpy_deg": [-100, 0, 90]},
        "offer_pose": {"xyz": [0.62, 0.0, 0.35], "rpy_deg": [-120, 0, 90]},
    }
    entry.update(changes)
    path = tmp_path / "scenario.yaml"
    path.write_text(json.dumps({"name": "bad", "scenarios": [entry]}))
    return path


def test_unknown_object_id_fails_with_the_id_named(tmp_path):
    run = _sim("--scenario", str(_scenario_file(tmp_path, object_id="prim/box_smal")), "--episodes", "1")
    assert run.returncode == 2
    assert "prim/box_smal" in run.stderr


def test_unreachable_offer_pose_fails_with_the_key_named(tmp_path):
    far = {"xyz": [1.6, 0.0, 0.35], "rpy_deg": [-120, 0, 90]}
    run = _sim("--scenario", str(_scenario_file(tmp_path, offer_pose=far)), "--episodes", "1")
    assert run.returncode == 2
    assert "offer_pose" in run.stderr
