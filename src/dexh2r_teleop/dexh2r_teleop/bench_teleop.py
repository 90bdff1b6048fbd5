"""`dexh2r bench teleop --json OUT`: retargeting cost and fidelity, camera-to-command time, deadman stop.

The operator is scripted: the sim giver's hand model (Shadow proportions, so `finger_scale` 1.0)
opening and closing its fingers and thumb (`operator_angles`). Measured in-process, on this CPU:

- `retarget_ms_p95`: dex-retargeting's solve per frame (`FingerRetargeter`), over the sequence.
- `fingertip_error_mm_mean`: mean over frames and fingers of |robot fingertip - scale x operator
  fingertip|, both relative to the palm (robot FK of the retargeted joints vs the operator's
  true keypoints): what retargeting itself achieves. `fingertip_error_tracked_mm_mean`: the same
  with the operator's keypoints from `HandTracker` on rendered frames (MediaPipe's error included).
- `camera_to_command_ms_p95`: wall time from a rendered two-camera frame set to the controller
  command that uses it (hand tracking + retargeting + IK + safety filter), rendering excluded.
- `deadman_stop_ms`: the arm follows the operator at `--speed` m/s, heartbeats (20 Hz) stop; time
  from the deadman being declared lost (`deadman_timeout_s` after the last beat) to a still command
  (every joint < 1e-3 rad/s). `deadman_stop_from_last_beat_ms` adds the timeout.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path
from typing import Any

import numpy as np

TARGETS = {
    "retarget_ms_p95": 2.0,
    "camera_to_command_ms_p95": 50.0,
    "fingertip_error_mm_mean": 15.0,
    "deadman_stop_ms": 100.0,
}
STANDSTILL_RAD_S = 1e-3
FINGERS = ("FF", "MF", "RF", "LF")


def operator_angles(t: float) -> dict[str, float]:
    """A scripted operator: fingers curl and open (0-1.2 rad) out of phase, the thumb opposes."""
    from dexh2r_sim.giver import OPEN_HAND

    angles = dict(OPEN_HAND)
    for i, f in enumerate(FINGERS):
        s = 0.5 + 0.5 * np.sin(2 * np.pi * 0.25 * t + 0.7 * i)
        for j in (1, 2, 3):
            angles[f"{f}J{j}"] = OPEN_HAND[f"{f}J{j}"] + 1.0 * s
    angles["THJ5"] = 0.3 + 0.4 * np.sin(2 * np.pi * 0.2 * t)
    angles["THJ4"] = 0.3 + 0.6 * (0.5 + 0.5 * np.sin(2 * np.pi * 0.15 * t))
    return angles


def measure_retargeting(
    seconds: float = 10.0, rate_hz: float = 30.0, robot: str = "ur5_shadow"
) -> dict[str, Any]:
    from dexh2r_core.robot.description import RobotDescription
    from dexh2r_sim.giver import hand_keypoints_from_angles
    from dexh2r_teleop.teleop import FingerRetargeter

    desc = RobotDescription.load(robot)
    fingers = FingerRetargeter(desc, "vector", scaling=1.0)
    tips = [4, 8, 12, 16, 20]
    ms, err = [], []
    for k in range(round(seconds * rate_hz)):
        kp = hand_keypoints_from_angles(operator_angles(k / rate_hz))
        q = fingers(kp)
        ms.append(fingers.last_seconds * 1e3)
        robot_tips = fingers.fingertips_in_palm(q)
        err.append(np.linalg.norm(robot_tips - fingers.scaling * (kp[tips] - kp[0]), axis=1))
    e = np.asarray(err) * 1e3
    return {
        "retarget_ms_p50": float(np.median(ms)),
        "retarget_ms_p95": float(np.percentile(ms, 95)),
        "fingertip_error_mm_mean": float(e.mean()),
        "fingertip_error_mm_per_finger": e.mean(axis=0).round(1).tolist(),
        "frames": len(ms),
    }


def measure_camera_chain(seconds: float = 4.0, width: int = 424, height: int = 240) -> dict[str, Any]:
    """The giver's hand as the operator in the cell: render -> HandTracker -> teleop -> controller."""
    os.environ.setdefault("MUJOCO_GL", "egl")
    from dexh2r_control.controller import ArmHandController
    from dexh2r_core.paths import config_path
    from dexh2r_perception.hand_tracking import HandTracker
    from dexh2r_sim.cell import CellConfig, HandoverCell
    from dexh2r_sim.scenario import load_scenarios
    from dexh2r_teleop.teleop import TeleopConfig, TeleopSession

    cell = HandoverCell(CellConfig(cameras=True, resolution=(width, height), antialias=True, rgb_blur_px=1.0))
    scenario = next(
        s for s in load_scenarios(config_path("scenarios/easy.yaml")) if s.name == "easy_box_center"
    )
    chain_ms: list[float] = []
    tracked_err: list[float] = []
    try:
        cell.load_scenario(scenario)
        t0 = cell.giver.trajectory.reach_end_s
        cell.step_until(t0)
        controller = ArmHandController(cell.robot)
        _, q, _, _ = cell.joint_state()
        controller.reset(np.asarray(q), 0.0)
        session = TeleopSession(cell.robot, controller, TeleopConfig(finger_scale=1.0))
        tips = [4, 8, 12, 16, 20]
        with HandTracker(cell.calibration) as tracker:
            for k in range(round(seconds * 30)):
                now = k / 30
                cell.giver.set_hand_angles(operator_angles(now))
                cell.step_until(t0 + now)
                frames = {f.name: (f.rgb, f.depth_mm) for f in cell.render()}
                session.heartbeat(now)
                if k == 0:
                    session.engage(now)
                start = time.perf_counter()
                est = tracker.process(now, frames)
                target = None
                if est is not None and est.wrist_valid:
                    target = session.update(now, est.keypoints, est.wrist)
                controller.step(now)
                chain_ms.append((time.perf_counter() - start) * 1e3)
                if target is not None:
                    truth = cell.giver_keypoints()
                    W = cell.giver.wrist_pose(cell.data)
                    human = (truth[tips] - W[:3, 3]) @ W[:3, :3]
                    robot_tips = session.fingers.fingertips_in_palm(target.hand_q)
                    tracked_err.append(float(np.linalg.norm(robot_tips - human, axis=1).mean() * 1e3))
    finally:
        cell.close()
    return {
        "camera_to_command_ms_p50": float(np.median(chain_ms)),
        "camera_to_command_ms_p95": float(np.percentile(chain_ms, 95)),
        "fingertip_error_tracked_mm_mean": float(np.mean(tracked_err)) if tracked_err else None,
        "chain_frames": len(chain_ms),
        "frames_with_target": len(tracked_err),
    }


def measure_deadman(
    speed_m_s: float = 0.1, robot: str = "ur5_shadow", rate_hz: float = 250.0
) -> dict[str, Any]:
    """Simulated time (the controller's own clock): follow, stop the heartbeat, time to standstill."""
    from dexh2r_control.controller import ArmHandController
    from dexh2r_core.robot.description import RobotDescription
    from dexh2r_teleop.teleop import TeleopConfig, TeleopSession

    desc = RobotDescription.load(robot)
    controller = ArmHandController(desc)
    controller.reset(desc.home(), 0.0)
    config = TeleopConfig(finger_scale=1.0)
    session = TeleopSession(desc, controller, config)
    from dexh2r_sim.giver import hand_keypoints_from_angles

    kp_hand = hand_keypoints_from_angles({})
    W0 = np.eye(4)
    W0[:3, 3] = [0.6, 0.0, 0.4]
    dt = 1.0 / rate_hz
    session.heartbeat(0.0)
    session.engage(0.0)
    cut = 1.5  # seconds of following before the heartbeat stops
    last_beat = 0.0
    declared = stopped = None
    speed_at_cut = 0.0
    t = 0.0
    tick = 0
    every = max(1, round(rate_hz / 30.0))  # hand tracker frames at ~30 Hz
    while t < cut + 1.0:
        if t <= cut and t - last_beat >= 0.05 - 1e-9:
            session.heartbeat(t)
            last_beat = t
        W = W0.copy()
        W[1, 3] += speed_m_s * t  # the operator's hand moves sideways
        if tick % every == 0:
            session.update(t, kp_hand @ W[:3, :3].T + W[:3, 3], W)
        alive = session.check_deadman(t)
        cmd = controller.step(t, dt)
        v = float(np.max(np.abs(cmd.velocities)))
        if t <= cut:
            speed_at_cut = float(v)
        if declared is None and not alive:
            declared = t
        if declared is not None and stopped is None and v < STANDSTILL_RAD_S:
            stopped = t
            break
        t += dt
        tick += 1
    return {
        "deadman_stop_ms": None if stopped is None or declared is None else (stopped - declared) * 1e3,
        "deadman_stop_from_last_beat_ms": None if stopped is None else (stopped - last_beat) * 1e3,
        "deadman_timeout_ms": config.deadman_timeout_s * 1e3,
        "deadman_speed_at_cut_rad_s": speed_at_cut,
        "deadman_operator_speed_m_s": speed_m_s,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="dexh2r bench teleop", description=__doc__.split("\n")[0])
    parser.add_argument("--json", type=Path, required=True)
    parser.add_argument("--seconds", type=float, default=10.0, help="retargeting sequence length")
    parser.add_argument("--camera-seconds", type=float, default=4.0, help="rendered operator sequence")
    parser.add_argument("--speed", type=float, default=0.1, help="operator hand speed for the deadman test")
    parser.add_argument("--check", action="store_true", help="exit 1 when a target is missed")
    args = parser.parse_args(argv)
    t0 = time.perf_counter()
    report: dict[str, Any] = {}
    report.update(measure_retargeting(args.seconds))
    report.update(measure_camera_chain(args.camera_seconds))
    report.update(measure_deadman(args.speed))
    checks = {
        k: {"value": report.get(k), "target": f"<= {v}", "ok": report.get(k) is not None and report[k] <= v}
        for k, v in TARGETS.items()
    }
    report["checks"] = checks
    report["pass"] = all(c["ok"] for c in checks.values())
    report["wall_s"] = round(time.perf_counter() - t0, 1)
    report["machine"] = {
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "load_average_1min": os.getloadavg()[0],
    }
    for key, c in checks.items():
        print(f"  {'ok  ' if c['ok'] else 'MISS'} {key:<28} {c['value']} (target {c['target']})")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=2) + "\n")
    return 1 if args.check and not report["pass"] else 0


if __name__ == "__main__":
    raise SystemExit(main())
