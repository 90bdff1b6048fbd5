"""`dexh2r bench transport`: a short run between two processes meets the transport targets."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from dexh2r_core.bench import transport


@pytest.mark.ros
def test_transport_bench_short_run_meets_targets(tmp_path, ros_env):
    out = tmp_path / "transport.json"
    cmd = [sys.executable, "-m", "dexh2r_core.cli", "bench", "transport", "--json", str(out)]
    cmd += ["--duration", "3", "--rate", "30", "--width", "640", "--height", "480"]
    run = subprocess.run(cmd, env=ros_env, capture_output=True, text=True, timeout=120)
    assert out.exists(), run.stderr
    result = json.loads(out.read_text())
    report = f"rc={run.returncode}\n{run.stdout}\n{run.stderr}\n{json.dumps(result, indent=1)[:3000]}"
    assert "error" not in result, report

    streams = result["streams"]
    assert set(streams) == {"rgb", "depth"}
    assert streams["rgb"]["message_bytes"] == 640 * 480 * 3
    assert streams["depth"]["message_bytes"] == 640 * 480 * 2
    for s in streams.values():
        assert s["published"] == 90, report  # 3 s at 30 Hz
        assert s["duplicates"] == 0
        assert 27.0 <= s["rate_published_hz"] <= 33.0, report
    # Headline figures are the worst stream's.
    assert result["delivered_fraction"] == min(s["delivered_fraction"] for s in streams.values())
    assert result["latency_p95_ms"] == max(s["latency_ms"]["p95"] for s in streams.values())
    env = result["environment"]
    assert env["ROS_AUTOMATIC_DISCOVERY_RANGE"] == "LOCALHOST"
    assert env["ROS_DOMAIN_ID"] == ros_env["ROS_DOMAIN_ID"]
    assert env["FASTDDS_DEFAULT_PROFILES_FILE"].endswith("fastdds_shm.xml") and env["profile_exists"]

    # Delivery is held to the target. Latency is a timing figure: the full 20 s bench on a quiet
    # machine is the evidence for the 10 ms target (p95 ~3 ms measured); here the other test worker
    # may saturate the second core, so the test only bounds it loosely.
    assert result["delivered_fraction"] >= transport.TARGET_DELIVERED_FRACTION, report
    assert result["latency_p95_ms"] <= 4 * transport.TARGET_LATENCY_P95_MS, report
    assert run.returncode == 0, report


def test_transport_bench_arguments(tmp_path, capsys):
    assert transport.main(["--duration", "1"]) == 2  # --json is required
    with pytest.raises(SystemExit, match="unknown"):
        transport.main(["--json", str(tmp_path / "x.json"), "--streams", "rgb,thermal"])
    assert not (tmp_path / "x.json").exists()
