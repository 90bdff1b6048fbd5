"""`dexh2r teleop --source sim`: the whole teleop path, closed in the sim, with a report.

The cell's giver hand plays the operator: it reaches in and then moves as its scenario says while
its fingers follow a scripted open/close sequence (`bench_teleop.operator_angles`). Each 30 Hz
frame set of the cell's two cameras goes through the real chain, in-process: MediaPipe
(`HandTracker`) -> dex-retargeting and the clutch-relative arm mapping (`TeleopSession`) ->
`ArmHandController` (IK, smoothing, the safety filter) at `control_hz` -> the cell's JTC-style
arm and hand controllers. The operator's deadman is held for the whole run.

The run folder gets `report.json` (per-frame and summary figures), `teleop.png` (operator wrist
displacement vs robot palm displacement since clutch-in, and the fingertip error over time) and
`teleop.mp4` (camera_0: the operator's hand and the robot hand side by side).

Figures: `palm_tracking_mm_median` (robot palm displacement vs the operator's, both since
clutch-in: what relative teleop promises), `fingertip_error_mm_mean` (robot fingertips from the
simulated joints vs scale x the operator's true fingertips, palm frame), `camera_to_command_ms`.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

TIPS = [4, 8, 12, 16, 20]


def run_sim_teleop(
    out: str | Path,
    seconds: float = 6.0,
    scenario: str = "hard_drift_slow_box",
    scenarios_file: str = "scenarios/hard.yaml",
    control_hz: float = 100.0,
    video: bool = True,
    quiet: bool = False,
    follow_rotation: bool = False,
) -> dict[str, Any]:
    os.environ.setdefault("MUJOCO_GL", "egl")
    from tqdm import tqdm

    from dexh2r_control.controller import ArmHandController, ControllerConfig, command_trajectories
    from dexh2r_core.paths import config_path
    from dexh2r_perception.hand_tracking import HandTracker
    from dexh2r_sim.cell import CellConfig, HandoverCell
    from dexh2r_sim.scenario import load_scenarios
    from dexh2r_teleop.bench_teleop import operator_angles
    from dexh2r_teleop.teleop import TeleopConfig, TeleopSession

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    chosen = next((s for s in load_scenarios(config_path(scenarios_file)) if s.name == scenario), None)
    if chosen is None:
        raise ValueError(f"no scenario '{scenario}' in {scenarios_file}")
    cell = HandoverCell(CellConfig(cameras=True, resolution=(424, 240), antialias=True, rgb_blur_px=1.0))
    rows: list[dict[str, Any]] = []
    writer = None
    try:
        cell.load_scenario(chosen)
        robot = cell.robot
        t_start = cell.giver.trajectory.reach_end_s
        cell.step_until(t_start)
        controller = ArmHandController(robot, ControllerConfig(rate_hz=control_hz))
        _, q, _, _ = cell.joint_state()
        controller.reset(np.asarray(q), cell.time)
        config = TeleopConfig(finger_scale=1.0, follow_rotation=follow_rotation)
        session = TeleopSession(robot, controller, config)
        session.heartbeat(cell.time)
        session.engage(cell.time)
        if video:
            import imageio.v2 as imageio

            writer = imageio.get_writer(
                out / "teleop.mp4", fps=30, codec="libx264", quality=7, macro_block_size=8
            )
        period = 1.0 / (30 * max(1, round(control_hz / 30)))  # whole ticks per camera frame
        W0 = P0 = None
        n_frames = round(seconds * 30)
        with HandTracker(cell.calibration) as tracker:
            for k in tqdm(range(n_frames), desc="teleop (sim)", disable=quiet):
                t_frame = t_start + k / 30
                cell.giver.set_hand_angles(operator_angles(k / 30))
                frames = cell.render()
                if writer is not None:
                    writer.append_data(frames[0].rgb)
                start = time.perf_counter()
                est = tracker.process(cell.time, {f.name: (f.rgb, f.depth_mm) for f in frames})
                target = None
                if est is not None and est.wrist_valid:
                    target = session.update(cell.time, est.keypoints, est.wrist)
                chain_ms = (time.perf_counter() - start) * 1e3
                W = cell.giver.wrist_pose(cell.data)
                P = controller.palm_pose(np.asarray(cell.joint_state()[1]))
                if target is not None and W0 is None:
                    W0, P0 = W.copy(), P.copy()
                row: dict[str, Any] = {
                    "t": cell.time - t_start,
                    "tracked": est is not None,
                    "chain_ms": chain_ms,
                }
                if W0 is not None:
                    row["operator_disp_mm"] = ((W[:3, 3] - W0[:3, 3]) * 1e3).tolist()
                    row["robot_disp_mm"] = ((P[:3, 3] - P0[:3, 3]) * 1e3).tolist()
                    truth = cell.giver_keypoints()
                    human = (truth[TIPS] - W[:3, 3]) @ W[:3, :3] * session.fingers.scaling
                    q_hand = np.asarray(cell.joint_state()[1])[robot.n_arm :]
                    robot_tips = session.fingers.fingertips_in_palm(q_hand)
                    row["fingertip_error_mm"] = float(np.linalg.norm(robot_tips - human, axis=1).mean() * 1e3)
                rows.append(row)
                # Control ticks until the next camera frame; the giver moves meanwhile.
                # Control ticks on their own schedule until the next frame (the cell steps whole
                # physics steps, so its clock is not the loop condition).
                ticks = max(1, round(control_hz / 30))
                for i in range(ticks):
                    t_tick = t_frame + i / (30 * ticks)
                    session.heartbeat(t_tick)
                    session.check_deadman(t_tick)
                    cmd = controller.step(t_tick, period)
                    arm, hand = command_trajectories(robot, cmd, period)
                    cell.command_arm(arm)
                    cell.command_hand(hand)
                    cell.step_until(t_frame + (i + 1) / (30 * ticks))
    finally:
        if writer is not None:
            writer.close()
        cell.close()
    report = summarize(rows)
    report["settings"] = {
        "seconds": seconds,
        "scenario": scenario,
        "control_hz": control_hz,
        "follow_rotation": follow_rotation,
    }
    (out / "report.json").write_text(json.dumps({**report, "frames": rows}, indent=1) + "\n")
    _plot(out / "teleop.png", rows)
    return report


def summarize(rows: list[dict[str, Any]]) -> dict[str, Any]:
    following = [r for r in rows if "operator_disp_mm" in r]
    # After 0.5 s of following (the controller's ~0.12 s lag and the start-up transient excluded).
    settled = [r for r in following if r["t"] >= (following[0]["t"] + 0.5 if following else 0)]
    palm = [np.linalg.norm(np.subtract(r["robot_disp_mm"], r["operator_disp_mm"])) for r in settled]
    tips = [r["fingertip_error_mm"] for r in settled]
    chain = [r["chain_ms"] for r in rows]
    return {
        "frames": len(rows),
        "tracked_fraction": sum(r["tracked"] for r in rows) / max(1, len(rows)),
        "palm_tracking_mm_median": float(np.median(palm)) if palm else None,
        "palm_tracking_mm_p95": float(np.percentile(palm, 95)) if palm else None,
        "operator_travel_mm": float(np.max([np.linalg.norm(r["operator_disp_mm"]) for r in following]))
        if following
        else None,
        "fingertip_error_mm_mean": float(np.mean(tips)) if tips else None,
        "camera_to_command_ms_p50": float(np.median(chain)) if chain else None,
        "camera_to_command_ms_p95": float(np.percentile(chain, 95)) if chain else None,
    }


def _plot(path: Path, rows: list[dict[str, Any]]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    following = [r for r in rows if "operator_disp_mm" in r]
    fig, axes = plt.subplots(2, 1, figsize=(8, 6), sharex=True)
    if following:
        t = [r["t"] for r in following]
        op = np.array([r["operator_disp_mm"] for r in following])
        rb = np.array([r["robot_disp_mm"] for r in following])
        for i, axis in enumerate("xyz"):
            axes[0].plot(t, op[:, i], f"C{i}--", label=f"operator {axis}")
            axes[0].plot(t, rb[:, i], f"C{i}-", label=f"robot palm {axis}")
        axes[1].plot(t, [r["fingertip_error_mm"] for r in following], "k-")
    axes[0].set_ylabel("displacement since clutch-in (mm)")
    axes[0].legend(ncol=3, fontsize=7)
    axes[1].set_ylabel("fingertip error (mm)")
    axes[1].set_xlabel("time (s)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="dexh2r teleop", description=__doc__.split("\n")[0])
    parser.add_argument("--source", choices=["sim"], default="sim", help="sim: the cell's scripted operator")
    parser.add_argument("--seconds", type=float, default=6.0)
    parser.add_argument("--scenario", default="hard_drift_slow_box")
    parser.add_argument("--scenarios", default="scenarios/hard.yaml")
    parser.add_argument("--out", default=None, help="run folder (default runs/teleop-<time>)")
    parser.add_argument("--no-video", action="store_true")
    parser.add_argument("--rotation", action="store_true", help="follow the tracked wrist rotation too")
    args = parser.parse_args(argv)
    out = Path(args.out or f"runs/teleop-{time.strftime('%Y%m%d-%H%M%S')}")
    report = run_sim_teleop(
        out,
        args.seconds,
        args.scenario,
        args.scenarios,
        video=not args.no_video,
        follow_rotation=args.rotation,
    )
    print(json.dumps(report, indent=2))
    print(f"run folder: {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
