"""Hand tracking bench (ROS-free): `HandTracker` against the simulated cell's ground truth.

`evaluate_hand_tracking(scenarios, seconds)` runs each scenario in the cell in-process with the
robot idle at home, renders every camera at 30 Hz of simulated time from `lead_in_s` before the
end of the giver's reach until `seconds` after it or until the giver gives up (the scenario's
`release.timeout_s`: with the robot idle nobody takes the object, and from then on the giver
withdraws its hand out of the workspace; that is not a handover), i.e. the offer phase (Hard
scenarios keep moving), feeds
the frames to `HandTracker` exactly as `hand_tracker_node` does and compares with
`cell.giver_keypoints()` and `cell.giver.wrist_pose(cell.data)` at the same instant (the
One-Euro filter's lag therefore counts as error).

Metrics, over all frames of all scenarios (per scenario too):

- `hand_wrist_mm`: distance of the WRIST keypoint (= origin of the wrist pose) from the truth.
- `hand_mpjpe_mm`: mean over the valid keypoints of the per-keypoint distance (MPJPE).
- `hand_wrist_rot_deg`: angle of R_gt^T R_est of the wrist frame (giver hand-frame convention).
- `hand_detection_rate`: frames with an estimate (the giver is in view in every evaluated frame).
- `hand_handedness_accuracy`: estimates whose geometric handedness is the giver's side;
  `hand_handedness_mediapipe_accuracy`: the same for MediaPipe's (un-mirrored) vote.
- `hand_compute_ms`: wall time of `HandTracker.process` per multi-camera frame (MediaPipe on
  every camera included), p50/p95; `hand_cpu_ms`: process CPU time over the same interval (all
  MediaPipe threads; less sensitive to other load on a shared machine, can exceed the wall time).

`evaluate_hand_node_latency` measures `hand_tracker_node` over DDS (output rate, camera stamp ->
keypoints received latency).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from dexh2r_perception.bench_common import scenario_list as _load_scenarios
from dexh2r_perception.bench_common import summary_stats as _stats

if TYPE_CHECKING:
    from dexh2r_perception.hand_tracking import HandTrackerConfig
    from dexh2r_sim.scenario import Scenario

TARGETS = {
    "hand_wrist_mm_median": 15.0,
    "hand_mpjpe_mm_median": 25.0,
}
NODE_TARGETS = {"node_output_rate_hz": 30.0, "node_latency_ms_p95": 30.0}


def frame_errors(estimate: Any, keypoints_gt: np.ndarray, wrist_gt: np.ndarray) -> dict[str, float]:
    """Per-frame errors of a HandEstimate against ground truth (NaN where not computable)."""
    from dexh2r_core.transforms import rotation_angle

    err = np.linalg.norm(estimate.keypoints - keypoints_gt, axis=1)
    valid = np.isfinite(err)
    rot = (
        math.degrees(rotation_angle(wrist_gt[:3, :3], estimate.wrist[:3, :3]))
        if estimate.wrist_valid
        else math.nan
    )
    return {
        "wrist_mm": 1e3 * float(err[0]) if valid[0] else math.nan,
        "mpjpe_mm": 1e3 * float(err[valid].mean()) if valid.any() else math.nan,
        "rot_deg": rot,
        "per_keypoint_mm": (1e3 * err).tolist(),
    }


def evaluate_hand_tracking(
    scenarios: str | Path | Sequence[Scenario] = "scenarios/easy.yaml",
    seconds: float = 3.0,
    width: int = 424,
    height: int = 240,
    *,
    config: HandTrackerConfig | None = None,
    cameras: Sequence[str] | None = None,
    lead_in_s: float = 0.5,
    robot: str = "ur5_shadow",
    camera_hz: float = 30.0,
    keep_frames: bool = False,
    cell_options: dict[str, Any] | None = None,
    offer_phase_only: bool = True,
) -> dict[str, Any]:
    """Run the hand tracker on each scenario; metrics as in the module doc.

    `scenarios`: a scenario file (path, or relative to config/) or Scenario objects. `cameras`:
    the calibrated cameras to use (default all). `offer_phase_only=False` keeps going after the
    giver gives up (`seconds` after the reach whatever happens). `keep_frames` adds the per-frame rows to each
    scenario's summary; `cell_options`: extra `CellConfig` fields (e.g. the camera optics).
    Returns {"scenarios": [...], "hand_*": aggregates, "settings", "targets",
    "pass"}.
    """
    os.environ.setdefault("MUJOCO_GL", "egl")
    from dexh2r_perception.hand_tracking import HandTracker, HandTrackerConfig
    from dexh2r_sim.cell import CellConfig, HandoverCell

    config = config or HandTrackerConfig()
    cell = HandoverCell(
        CellConfig(
            robot=robot,
            cameras=True,
            resolution=(width, height),
            camera_hz=camera_hz,
            **(cell_options or {}),
        )
    )
    per_scenario: list[dict[str, Any]] = []
    agg: dict[str, list[float]] = {k: [] for k in ("wrist", "mpjpe", "rot", "ms", "cpu")}
    per_kp: list[list[float]] = []
    counts = {"frames": 0, "detected": 0, "hand_ok": 0, "mp_ok": 0}
    try:
        for scenario in _load_scenarios(scenarios):
            cell.load_scenario(scenario)
            names = list(cameras) if cameras is not None else cell.calibration.names
            tracker = HandTracker(cell.calibration, config, cameras=names)
            index = {c.name: i for i, c in enumerate(cell.calibration.cameras)}
            reach_end = cell.giver.trajectory.reach_end_s
            t0 = max(0.0, reach_end - lead_in_s)
            t_end = (
                min(reach_end + seconds, scenario.release.timeout_s)
                if offer_phase_only
                else reach_end + seconds
            )
            rows: list[dict[str, Any]] = []
            try:
                for k in range(round((t_end - t0) * camera_hz) + 1):
                    cell.step_until(t0 + k / camera_hz)
                    frames = cell.render()
                    inputs = {n: (frames[index[n]].rgb, frames[index[n]].depth_mm) for n in names}
                    wall0, cpu0 = time.perf_counter(), time.process_time()
                    est = tracker.process(cell.time, inputs)
                    ms = (time.perf_counter() - wall0) * 1e3
                    cpu = (time.process_time() - cpu0) * 1e3
                    row: dict[str, Any] = {"t": cell.time, "detected": est is not None, "ms": ms, "cpu": cpu}
                    if est is not None:
                        row.update(
                            frame_errors(est, cell.giver_keypoints(), cell.giver.wrist_pose(cell.data))
                        )
                        row["handedness"] = est.handedness
                        row["handedness_mediapipe"] = est.handedness_mediapipe
                        row["cameras_used"] = list(est.cameras_used)
                    rows.append(row)
            finally:
                tracker.close()
            det = [r for r in rows if r["detected"]]
            side = scenario.giver_side
            summary = {
                "scenario": scenario.name,
                "object_id": scenario.object_id,
                "giver_side": side,
                "motion": scenario.motion.type,
                "frames": len(rows),
                "detection_rate": len(det) / max(1, len(rows)),
                "handedness_accuracy": sum(r["handedness"] == side for r in det) / max(1, len(det)),
                "handedness_mediapipe_accuracy": sum(r["handedness_mediapipe"] == side for r in det)
                / max(1, len(det)),
                **_stats([r["wrist_mm"] for r in det], "wrist_mm"),
                **_stats([r["mpjpe_mm"] for r in det], "mpjpe_mm"),
                **_stats([r["rot_deg"] for r in det], "rot_deg"),
                **_stats([r["ms"] for r in rows], "compute_ms"),
            }
            if keep_frames:
                summary["rows"] = rows
            per_scenario.append(summary)
            agg["wrist"] += [r["wrist_mm"] for r in det]
            agg["mpjpe"] += [r["mpjpe_mm"] for r in det]
            agg["rot"] += [r["rot_deg"] for r in det]
            agg["ms"] += [r["ms"] for r in rows]
            agg["cpu"] += [r["cpu"] for r in rows]
            per_kp += [r["per_keypoint_mm"] for r in det]
            counts["frames"] += len(rows)
            counts["detected"] += len(det)
            counts["hand_ok"] += sum(r["handedness"] == side for r in det)
            counts["mp_ok"] += sum(r["handedness_mediapipe"] == side for r in det)
    finally:
        cell.close()

    def pick(values: list[float], key: str) -> float | None:
        return _stats(values, "x")[f"x_{key}"]

    result: dict[str, Any] = {
        "hand_wrist_mm_median": pick(agg["wrist"], "median"),
        "hand_wrist_mm_p95": pick(agg["wrist"], "p95"),
        "hand_mpjpe_mm_median": pick(agg["mpjpe"], "median"),
        "hand_mpjpe_mm_p95": pick(agg["mpjpe"], "p95"),
        "hand_wrist_rot_deg_median": pick(agg["rot"], "median"),
        "hand_wrist_rot_deg_p95": pick(agg["rot"], "p95"),
        "hand_detection_rate": counts["detected"] / max(1, counts["frames"]),
        "hand_handedness_accuracy": counts["hand_ok"] / max(1, counts["detected"]),
        "hand_handedness_mediapipe_accuracy": counts["mp_ok"] / max(1, counts["detected"]),
        "hand_compute_ms_p50": pick(agg["ms"], "median"),
        "hand_compute_ms_p95": pick(agg["ms"], "p95"),
        "hand_cpu_ms_p50": pick(agg["cpu"], "median"),
        "hand_cpu_ms_p95": pick(agg["cpu"], "p95"),
        "hand_frames": counts["frames"],
        "hand_per_keypoint_mm_median": (
            np.nanmedian(np.asarray(per_kp, float), axis=0).round(1).tolist() if per_kp else None
        ),
    }
    ms = result["hand_compute_ms_p50"]
    result["hand_compute_rate_hz"] = 1e3 / ms if ms else None
    passed = all(result[k] is not None and result[k] <= v for k, v in TARGETS.items())
    return {
        **result,
        "scenarios": per_scenario,
        "settings": {
            "seconds": seconds,
            "lead_in_s": lead_in_s,
            "offer_phase_only": offer_phase_only,
            "width": width,
            "height": height,
            "camera_hz": camera_hz,
            "cameras": list(cameras) if cameras is not None else "all",
            "robot": robot,
            "model_complexity": config.model_complexity,
            "cell_options": dict(cell_options or {}),
        },
        "targets": TARGETS,
        "pass": passed,
    }


def evaluate_hand_node_latency(
    scenario: str = "hard_random_walk_box",
    scenarios_file: str = "scenarios/hard.yaml",
    seconds: float = 10.0,
    width: int = 424,
    height: int = 240,
    camera_hz: float = 30.0,
    start_s: float = 1.5,
    clip_s: float = 2.5,
    cell_options: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """`hand_tracker_node` as a separate process over DDS: output rate and latency.

    Renders `clip_s` of the scenario from `start_s` in this process, starts the node, and publishes
    the clip ping-pong (forward then backward, so the motion stays continuous) at `camera_hz` for
    `seconds`: colour and aligned depth of every camera, stamped with the wall clock at
    publication. Latency = wall clock when the keypoints arrive here - their stamp, i.e. camera
    stamp -> keypoints published plus one more DDS hop (conservative). The first second is
    warm-up and not counted. Uses a private ROS domain unless ROS_DOMAIN_ID is set.
    """
    from dexh2r_core.ros_env import apply_ros_defaults, private_domain_id

    domain = os.environ.get("ROS_DOMAIN_ID")
    apply_ros_defaults(os.environ, domain_id=int(domain) if domain else private_domain_id())
    from geometry_msgs.msg import PoseArray
    from rclpy.qos import QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
    from sensor_msgs.msg import Image
    from std_msgs.msg import String

    from dexh2r_core import msgs
    from dexh2r_core.testing import ros_test_node, start_node, wait_for_topic_match
    from dexh2r_perception.bench_feed import latency_figures, paced_feed, render_clip

    clip, cameras, _ = render_clip(
        scenario,
        scenarios_file,
        lambda cell, frames: [(f.rgb, f.depth_mm) for f in frames],
        width=width,
        height=height,
        camera_hz=camera_hz,
        start_s=start_s,
        clip_s=clip_s,
        cell_options=cell_options,
    )
    node = start_node("dexh2r_perception.hand_tracker_node:main", name="hand_tracker_bench")
    latencies: list[tuple[float, float]] = []  # (arrival, latency)
    states: list[dict] = []
    try:
        with ros_test_node("hand_tracker_latency") as rn:
            reliable = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
            topics = []
            pubs = []
            for name, _ in cameras:
                for suffix in ("color/image_raw", "aligned_depth_to_color/image_raw"):
                    topics.append(f"/{name}/{suffix}")
                    pubs.append(rn.create_publisher(Image, topics[-1], qos_profile_sensor_data))

            def on_keypoints(m: PoseArray) -> None:
                now = time.time()
                latencies.append((now, now - msgs.from_time(m.header.stamp)))

            rn.create_subscription(PoseArray, "/perception/human_hand/keypoints", on_keypoints, reliable)
            rn.create_subscription(
                String, "/perception/human_hand/state", lambda m: states.append(json.loads(m.data)), reliable
            )
            for topic in topics:
                wait_for_topic_match(rn, topic, "subscriber", timeout=60, processes=[node])

            def publish(images, stamp: float) -> None:
                for c, ((rgb, depth), (_, frame_id)) in enumerate(zip(images, cameras, strict=True)):
                    pubs[2 * c].publish(msgs.image_msg(rgb, "rgb8", stamp, frame_id))
                    pubs[2 * c + 1].publish(msgs.image_msg(depth, "16UC1", stamp, frame_id))

            sent = paced_feed(rn, clip, camera_hz, seconds, publish)
    finally:
        node.stop()
    compute = np.array([s["compute_ms"] for s in states if s.get("compute_ms") is not None])
    figures = latency_figures(latencies)
    rate = figures["node_output_rate_hz"]
    result = {
        "scenario": scenario,
        "frames_sent": sent,
        "keypoints_received": len(latencies),
        "no_hand_frames": sum(not s.get("detected", False) for s in states),
        **figures,
        "node_compute_ms_p50": float(np.median(compute)) if len(compute) else None,
        "node_compute_ms_p95": float(np.percentile(compute, 95)) if len(compute) else None,
        "camera_hz": camera_hz,
        "width": width,
        "height": height,
        "load_average_1min": os.getloadavg()[0],
    }
    result["pass"] = (
        result["node_latency_ms_p95"] is not None
        and rate >= NODE_TARGETS["node_output_rate_hz"] * 0.97  # 30 Hz input, timing jitter
        and result["node_latency_ms_p95"] <= NODE_TARGETS["node_latency_ms_p95"]
    )
    return result


def _fmt(value: float | None) -> str:
    return "   n/a" if value is None else f"{value:6.1f}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench_hand", description=__doc__.split("\n")[0])
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--scenarios", nargs="+", default=["scenarios/easy.yaml", "scenarios/hard.yaml"])
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--width", type=int, default=424)
    parser.add_argument("--height", type=int, default=240)
    parser.add_argument("--cameras", nargs="*", default=None, help="camera names (default: all)")
    parser.add_argument("--check", action="store_true", help="exit 1 when a target is missed")
    parser.add_argument("--node", action="store_true", help="also measure the node over DDS (10 s)")
    args = parser.parse_args(argv)
    t0 = time.perf_counter()
    report: dict[str, Any] = {"sets": {}}
    passed = True
    for path in args.scenarios:
        res = evaluate_hand_tracking(path, args.seconds, args.width, args.height, cameras=args.cameras)
        report["sets"][Path(path).stem] = res
        passed &= res["pass"]
        for s in res["scenarios"]:
            print(
                f"{s['scenario']:<28} det {s['detection_rate']:.2f}  wrist {_fmt(s['wrist_mm_median'])} mm "
                f"(p95 {_fmt(s['wrist_mm_p95'])})  MPJPE {_fmt(s['mpjpe_mm_median'])} mm  "
                f"rot {_fmt(s['rot_deg_median'])} deg  hand {s['handedness_accuracy']:.2f}  "
                f"{_fmt(s['compute_ms_median'])}/{_fmt(s['compute_ms_p95'])} ms"
            )
        for k, v in res.items():
            if k.startswith("hand_"):
                print(f"  {Path(path).stem}: {k:<36} {v}")
    if args.node:
        report["node"] = evaluate_hand_node_latency(width=args.width, height=args.height)
        passed &= report["node"]["pass"]
        print(json.dumps(report["node"], indent=1))
    report["pass"] = passed
    report["wall_s"] = time.perf_counter() - t0
    report["machine"] = {
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "load_average_1min": os.getloadavg()[0],
    }
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return 1 if args.check and not passed else 0


if __name__ == "__main__":
    raise SystemExit(main())
