"""`dexh2r bench sim` runs and writes the figures the acceptance reads (timing itself is not asserted)."""

import json
import subprocess
import sys


def test_bench_sim_writes_its_figures(tmp_path):
    out = tmp_path / "sim.json"
    cmd = [sys.executable, "-m", "dexh2r_core.cli", "bench", "sim", "--json", str(out), "--seconds", "0.5"]
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout + run.stderr
    report = json.loads(out.read_text())
    assert report["cameras"] == 2 and (report["width"], report["height"]) == (424, 240)
    assert report["rtf_physics"] > 0 and report["rtf_with_cameras"] > 0
    assert report["frames_rendered"] >= 14  # 0.5 s at 30 Hz
    assert report["antialias"] is False
