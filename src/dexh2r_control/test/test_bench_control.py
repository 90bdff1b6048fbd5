"""`dexh2r bench control`: a short run writes every figure the acceptance reads."""

import json

from dexh2r_control.bench import main


def test_bench_writes_figures(tmp_path):
    out = tmp_path / "control.json"
    assert main(["--json", str(out), "--seconds", "0.5", "--speeds", ""]) == 0
    report = json.loads(out.read_text())
    for key in ("rate_hz", "period_error_p99_ms", "ik_ms_p95", "watchdog_stop_ms", "pass", "targets"):
        assert key in report, key
    assert set(report["targets"]) == {"rate_hz", "period_error_p99_ms", "ik_ms_p95", "watchdog_stop_ms"}
    assert isinstance(report["pass"], bool)
    # Loose sanity bounds (a shared CI machine): the loop runs and the watchdog stops the robot.
    assert report["rate_hz"] > 100
    assert report["watchdog_timeout_ms"] <= report["watchdog_stop_ms"] < 400
