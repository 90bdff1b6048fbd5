"""`dexh2r demo` writes a complete run folder (results, report, plots, video, bags).

The main test runs what `./run demo` runs, on one easy scenario: the whole node graph of
launch/handover_sim.launch.xml (sim cameras -> trackers -> MotionNet -> controller) over DDS.
"""

import json
import subprocess
import sys

import pytest

RUN_FOLDER = ("config.json", "episodes.jsonl", "summary.json", "report.md", "report.html", "distance.png")
OUTCOMES = ("success", "hit-human", "drop", "timeout", "safety-stop")


def _check_run_folder(out, extra=()):
    for name in (*RUN_FOLDER, *extra):
        assert (out / name).stat().st_size > 0, name
    summary = json.loads((out / "summary.json").read_text())
    assert summary["episodes"] == 1
    record = json.loads((out / "episodes.jsonl").read_text().splitlines()[0])
    assert record["outcome"] in OUTCOMES, record
    assert record["outcome"] in (out / "report.md").read_text()
    return summary, record


# ~75 s: the node graph with two 640x360 cameras at a third of real time. On the replay tests'
# worker, so that it never runs beside a real-time replay gate.
@pytest.mark.ros
@pytest.mark.slow
@pytest.mark.xdist_group("replay")
def test_demo_runs_the_stack_over_dds_and_writes_a_run_folder(tmp_path):
    out = tmp_path / "demo"
    cmd = [sys.executable, "-m", "dexh2r_core.cli", "demo", "--out", str(out), "--easy", "1", "--hard", "0"]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=400)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    summary, record = _check_run_folder(out, ("timing.png", "handover.mp4"))
    assert "the stack over DDS" in summary["controller"] and record["crashed"] == []
    assert record["limit_violations"] == 0
    # The per-stage compute of the nodes made it into the report.
    report = (out / "report.md").read_text()
    assert "hand tracker" in report and "object tracker" in report and "policy step" in report
    # One MCAP bag, closed as complete, with the camera, the commands and the outcome.
    (bag,) = [p for p in (out / "bags").iterdir() if p.is_dir()]
    episode = json.loads((bag / "episode.json").read_text())
    assert episode["status"] == "complete" and list(bag.glob("*.mcap"))
    received = {t for t, v in episode["report"]["topics"].items() if v["received"] > 0}
    assert {"/camera_0/color/image_raw", "/arm_controller/joint_trajectory", "/sim/outcome"} <= received
    assert (out / "logs").is_dir() and list((out / "logs").glob("*.log"))


def test_demo_with_the_scripted_expert(tmp_path):
    out = tmp_path / "demo"
    cmd = [sys.executable, "-m", "dexh2r_core.cli", "demo", "--out", str(out), "--easy", "1", "--hard", "0"]
    result = subprocess.run([*cmd, "--expert", "--no-video"], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    summary, _ = _check_run_folder(out, ("timing.png",))
    assert "scripted expert" in summary["controller"]


def test_demo_refuses_a_bad_rtf(tmp_path):
    cmd = [sys.executable, "-m", "dexh2r_core.cli", "demo", "--out", str(tmp_path / "d"), "--rtf", "0"]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and "--rtf" in result.stderr
