"""The node-latency benches' feeder: ping-pong pacing and the latency figures."""

from __future__ import annotations

import pytest

from dexh2r_perception.bench_feed import WARM_UP_S, latency_figures, paced_feed


def test_latency_figures_cut_the_warm_up_and_measure_rate():
    # 10 s of outputs at 30 Hz, 20 ms late, plus slow ones during the first second.
    lat = [(k / 30, 0.5 if k / 30 < WARM_UP_S else 0.02) for k in range(300)]
    fig = latency_figures(lat)
    assert fig["node_output_rate_hz"] == pytest.approx(30.0, rel=1e-6)
    assert fig["node_latency_ms_p95"] == pytest.approx(20.0)
    assert latency_figures([])["node_latency_ms_p95"] is None


@pytest.mark.ros
def test_paced_feed_plays_the_clip_ping_pong_at_the_camera_rate(ros_node):
    import time

    sent = []
    t0 = time.monotonic()
    n = paced_feed(ros_node, [0, 1, 2, 3], 30.0, 0.5, lambda item, stamp: sent.append(item), drain_s=0.0)
    assert n == len(sent) and 14 <= n <= 16
    assert sent[:8] == [0, 1, 2, 3, 2, 1, 0, 1], "forward, then backward: the motion stays continuous"
    assert time.monotonic() - t0 < 0.7
