"""Feeding a perception node rendered frames over DDS at camera rate: the node-latency benches' core.

    clip, cameras = render_clip("hard_random_walk_box", "scenarios/hard.yaml", grab=lambda cell, frames: ...)
    sent = paced_feed(ros_node, clip, camera_hz, seconds, publish=lambda item, stamp: ...)
    figures = latency_figures(latencies)

The clip is rendered once in this process, then published ping-pong (forward, then backward, so the
motion stays continuous) at the camera rate, stamped with the wall clock at publication. Latency =
wall clock when the node's output arrives here - its stamp: camera stamp -> output published plus
one more DDS hop (conservative). The first second of outputs is warm-up and not counted.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

WARM_UP_S = 1.0


def render_clip(
    scenario: str,
    scenarios_file: str,
    grab: Callable[[Any, list], Any],
    *,
    width: int = 424,
    height: int = 240,
    camera_hz: float = 30.0,
    start_s: float = 1.5,
    clip_s: float = 2.5,
    cell_options: dict[str, Any] | None = None,
) -> tuple[list[Any], list[tuple[str, str]], Any]:
    """(`grab(cell, frames)` for each frame of the clip, [(camera name, frame id)], the scenario)."""
    os.environ.setdefault("MUJOCO_GL", "egl")
    from dexh2r_perception.bench_common import scenario_list
    from dexh2r_sim.cell import CellConfig, HandoverCell

    chosen = next((s for s in scenario_list(scenarios_file) if s.name == scenario), None)
    if chosen is None:
        raise ValueError(f"no scenario '{scenario}' in {scenarios_file}")
    cell = HandoverCell(
        CellConfig(cameras=True, resolution=(width, height), camera_hz=camera_hz, **(cell_options or {}))
    )
    clip = []
    try:
        cell.load_scenario(chosen)
        for k in range(round(clip_s * camera_hz)):
            cell.step_until(start_s + k / camera_hz)
            clip.append(grab(cell, cell.render()))
        cameras = [(c.name, c.frame_id) for c in cell.calibration.cameras]
    finally:
        cell.close()
    return clip, cameras, chosen


def paced_feed(
    ros_node: Any,
    clip: Sequence[Any],
    camera_hz: float,
    seconds: float,
    publish: Callable[[Any, float], None],
    drain_s: float = 0.5,
) -> int:
    """Publish the clip ping-pong for `seconds` at `camera_hz`, serving `ros_node`'s callbacks
    between frames (absolute deadlines); returns the number of frames sent."""
    from rclpy.executors import SingleThreadedExecutor

    executor = SingleThreadedExecutor(context=ros_node.context)
    executor.add_node(ros_node)
    period = max(1, 2 * len(clip) - 2)
    sent = 0
    try:
        t_next = time.monotonic()
        t_end = t_next + seconds
        while time.monotonic() < t_end:
            i = sent % period
            publish(clip[i if i < len(clip) else period - i], time.time())
            sent += 1
            t_next += 1.0 / camera_hz
            while time.monotonic() < t_next:  # pacing at the camera rate, serving callbacks
                executor.spin_once(timeout_sec=max(0.0, t_next - time.monotonic()))
        drain = time.monotonic() + drain_s
        while time.monotonic() < drain:
            executor.spin_once(timeout_sec=0.05)
    finally:
        executor.remove_node(ros_node)
        executor.shutdown(timeout_sec=1.0)
    return sent


def latency_figures(latencies: Sequence[tuple[float, float]]) -> dict[str, float | None]:
    """Output rate and latency percentiles from (arrival wall time, latency s) pairs, warm-up cut."""
    start = latencies[0][0] + WARM_UP_S if latencies else 0.0
    kept = [(t, lat) for t, lat in latencies if t >= start]
    arrivals = np.array([t for t, _ in kept])
    lat_ms = np.array([lat for _, lat in kept]) * 1e3
    rate = (len(arrivals) - 1) / (arrivals[-1] - arrivals[0]) if len(arrivals) > 1 else 0.0
    return {
        "node_output_rate_hz": float(rate),
        "node_latency_ms_p50": float(np.median(lat_ms)) if len(lat_ms) else None,
        "node_latency_ms_p95": float(np.percentile(lat_ms, 95)) if len(lat_ms) else None,
    }
