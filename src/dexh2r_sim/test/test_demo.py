"""`dexh2r demo` writes a complete run folder (results, report, plots, video)."""

import json
import subprocess
import sys


def test_demo_writes_a_run_folder(tmp_path):
    out = tmp_path / "demo"
    cmd = [sys.executable, "-m", "dexh2r_core.cli", "demo", "--out", str(out), "--easy", "1", "--hard", "0"]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    for name in (
        "config.json",
        "episodes.jsonl",
        "summary.json",
        "report.md",
        "report.html",
        "distance.png",
        "timing.png",
        "handover.mp4",
    ):
        assert (out / name).stat().st_size > 0, name
    summary = json.loads((out / "summary.json").read_text())
    assert summary["episodes"] == 1
    record = json.loads((out / "episodes.jsonl").read_text().splitlines()[0])
    assert record["outcome"] in ("success", "hit-human", "drop", "timeout", "safety-stop")
    assert record["outcome"] in (out / "report.md").read_text()
