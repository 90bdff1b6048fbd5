"""`dexh2r eval closed-loop`: handovers in the sim cell through the whole stack, in-process.

Per episode, on the cell's clock (the same code the nodes run, without DDS):

- every camera frame (30 Hz): the rendered RGB-D of both cameras -> `HandTracker` (giver hand
  keypoints) -> `ObjectTrackingPipeline` (object pose + fixed-N cloud, hand and robot removed);
  the keypoints also feed the controller's speed and separation monitoring;
- every policy frame (`rate_hz`, the checkpoint's 10 Hz): `DynamicGrasp.step` on the newest
  tracked object (MotionNet re-planning, goal alignment, close and lift) -> a palm target + finger
  joints (the hand-root target times the fixed root -> palm transform); a lost or stale object
  produces no target (the controller holds, then its watchdog stops it);
- every control tick (100 Hz): `ArmHandController` (IK, smoothing, the safety filter) -> the
  cell's JTC-style arm and hand followers; measured compute time can be applied as actuation
  delay (`CellConfig.actuation_delay_s`).

The cell decides the outcome (success / hit-human / drop / timeout / safety-stop) from contacts
and the giver's weld force; time-to-handover is release time minus the end of the reach. Results:
a folder with `episodes.jsonl`, `summary.json` (the issue's keys) and the JSON at `--json`.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

CAMERA_HZ = 30.0
CONTROL_HZ = 100.0
POLICY_HZ = 10.0  # the rate the committed checkpoint's episodes were recorded at
GRASP_PHASES = ("align", "close", "lift", "done")


def run_episode(cell: Any, scenario: Any, policy: Any, robot: Any, *, stale_after_s: float = 0.3) -> dict:
    """One handover through perception, DynamicGrasp and the controller; returns its record."""
    from dexh2r_control.controller import (
        ArmHandController,
        ControllerConfig,
        HandTarget,
        command_trajectories,
    )
    from dexh2r_perception.hand_tracking import HandTracker
    from dexh2r_perception.object_tracking import ObjectModel, ObjectTrackingPipeline, TrackerConfig
    from dexh2r_policy.dynamic_grasp import DynamicGraspError, HandState
    from dexh2r_policy.episodes import root_to_palm_at_zero
    from dexh2r_policy.grasps.stability import finger_joint_names

    cell.load_scenario(scenario)
    policy.reset()
    hand_tracker = HandTracker(cell.calibration)
    model = ObjectModel.from_sim_object(cell.sim_object, n=TrackerConfig().model_points, seed=0)
    tracker = ObjectTrackingPipeline(cell.calibration, TrackerConfig(), robot=robot, model=model)
    controller = ArmHandController(robot, ControllerConfig(rate_hz=CONTROL_HZ))
    _, q, _, _ = cell.joint_state()
    controller.reset(np.asarray(q), cell.time)
    T_root_palm = root_to_palm_at_zero(robot)
    T_palm_root = np.linalg.inv(T_root_palm)
    fingers = [robot.hand_joint_names.index(n) for n in finger_joint_names(robot)]
    policy_every = max(1, round(CAMERA_HZ / POLICY_HZ))
    ticks = round(CONTROL_HZ / CAMERA_HZ) or 1
    dt = 1.0 / (CAMERA_HZ * ticks)
    obj = None  # (stamp, pose, points)
    kp = None
    phases: list[str] = []
    trace: list[dict] = []  # per policy step: phase, goal distance, tracking error of the palm
    timing = {"perception_ms": [], "policy_ms": []}
    errors = 0
    violations = 0  # ticks whose command leaves the robot's position or velocity limits
    frame = 0
    try:
        while cell.outcome is None:
            t0 = cell.time
            frames = cell.render()
            names, q_now, _, _ = cell.joint_state()
            start = time.perf_counter()
            est = hand_tracker.process(t0, {f.name: (f.rgb, f.depth_mm) for f in frames})
            kp = None if est is None else est.keypoints
            o = tracker.process(
                t0, [f.depth_mm for f in frames], dict(zip(names, q_now.tolist(), strict=True)), kp
            )
            timing["perception_ms"].append((time.perf_counter() - start) * 1e3)
            if o.pose is not None and len(o.points):
                obj = (t0, o.pose, o.points)
            if kp is not None:
                controller.set_keypoints(kp, t0)
            if frame % policy_every == 0 and obj is not None and t0 - obj[0] <= stale_after_s:
                q_arr = np.asarray(q_now)
                hand = HandState(controller.palm_pose(q_arr) @ T_palm_root, q_arr[robot.n_arm :][fingers])
                start = time.perf_counter()
                try:
                    target = policy.step(t0, obj[1], obj[2], kp, hand)
                except DynamicGraspError:
                    errors += 1
                    target = None
                timing["policy_ms"].append((time.perf_counter() - start) * 1e3)
                if target is not None:
                    hand_q = np.zeros(robot.n_hand)
                    hand_q[fingers] = target.finger_q
                    controller.set_grasp_phase(target.phase in GRASP_PHASES)
                    controller.set_hand_target(HandTarget(t0, target.T_world_hand @ T_root_palm, hand_q))
                    phases.append(target.phase)
                    palm = controller.palm_pose(np.asarray(q_now))
                    trace.append(
                        {
                            "t": round(t0, 3),
                            "phase": target.phase,
                            "goal_distance_m": target.distance_m,
                            "palm_to_target_m": float(
                                np.linalg.norm(palm[:3, 3] - (target.T_world_hand @ T_root_palm)[:3, 3])
                            ),
                            "object_tracked": bool(o.pose is not None),
                            "hand_tracked": kp is not None,
                        }
                    )
            for i in range(ticks):
                t = t0 + i * dt
                cmd = controller.step(t, dt)
                pos, vel = cmd.positions, cmd.velocities
                violations += int(
                    np.any(pos < robot.lower - 1e-9)
                    or np.any(pos > robot.upper + 1e-9)
                    or np.any(np.abs(vel) > robot.velocity_limits + 1e-9)
                )
                arm, hand_traj = command_trajectories(robot, cmd, dt)
                cell.command_arm(arm)
                cell.command_hand(hand_traj)
                cell.step_until(t0 + (i + 1) * dt)
            frame += 1
    finally:
        hand_tracker.close()
    o = cell.outcome
    return {
        "scenario": scenario.name,
        "object_id": scenario.object_id,
        "outcome": o.outcome,
        "time_s": o.time_s,
        "time_to_handover_s": o.time_to_handover_s,
        "detail": o.detail,
        "last_phase": phases[-1] if phases else None,
        "policy_errors": errors,
        "limit_violations": violations,
        "perception_ms_p95": float(np.percentile(timing["perception_ms"], 95))
        if timing["perception_ms"]
        else None,
        "policy_ms_p95": float(np.percentile(timing["policy_ms"], 95)) if timing["policy_ms"] else None,
        "trace": trace,
    }


def summarize(rows: list[dict]) -> dict[str, Any]:
    n = max(1, len(rows))
    tth = [
        r["time_to_handover_s"]
        for r in rows
        if r["outcome"] == "success" and r["time_to_handover_s"] is not None
    ]
    return {
        "episodes": len(rows),
        **{
            f"{k.replace('-', '_')}_rate": sum(r["outcome"] == k for r in rows) / n
            for k in ("success", "hit-human", "drop", "timeout", "safety-stop")
        },
        "time_to_handover_s_median": float(np.median(tth)) if tth else None,
        "limit_violations": sum(r["limit_violations"] for r in rows),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="dexh2r eval closed-loop", description=__doc__.split("\n\n")[0])
    parser.add_argument("--policy", default="motionnet", choices=["motionnet"])
    parser.add_argument("--scenarios", default="config/scenarios/easy.yaml")
    parser.add_argument("--episodes", type=int, default=None, help="default: one per scenario")
    parser.add_argument("--checkpoint", default="checkpoints/motionnet_small.pt")
    parser.add_argument("--pools", default=None, help="default: the checkpoint's data.pools")
    parser.add_argument("--mode", choices=["easy", "hard"], default=None, help="default: from the file name")
    parser.add_argument("--json", required=True)
    parser.add_argument("--out", default=None)
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    os.environ.setdefault("MUJOCO_GL", "egl")
    import torch
    from tqdm import tqdm

    from dexh2r_core.config import ConfigError, from_dict
    from dexh2r_core.paths import config_path
    from dexh2r_policy.dynamic_grasp import DynamicGrasp, DynamicGraspError, MotionNetPlanner, PoolLibrary
    from dexh2r_policy.motionnet import CheckpointError, load_motionnet
    from dexh2r_policy.train import TrainConfig, resolve_data_path
    from dexh2r_sim.cell import CellConfig, HandoverCell
    from dexh2r_sim.scenario import load_scenarios

    torch.set_num_threads(1)
    try:
        model, ckpt = load_motionnet(resolve_data_path(args.checkpoint))
        cfg = from_dict(TrainConfig, ckpt["config"], source=f"{args.checkpoint}:config")
        scenarios = load_scenarios(config_path(args.scenarios))
    except (CheckpointError, ConfigError, FileNotFoundError, ValueError) as exc:
        print(f"dexh2r eval closed-loop: {exc}", file=sys.stderr)
        return 2
    mode = args.mode or ("hard" if "hard" in Path(args.scenarios).stem else "easy")
    pools = PoolLibrary(resolve_data_path(args.pools or cfg.data.pools), cfg.data.stable_only)
    planner = MotionNetPlanner(model)
    out = Path(args.out) if args.out else Path(args.json).with_suffix("")
    out.mkdir(parents=True, exist_ok=True)
    cell = HandoverCell(CellConfig(cameras=True, resolution=(424, 240), antialias=True, rgb_blur_px=1.0))
    rows = []
    n = args.episodes or len(scenarios)
    try:
        with (out / "episodes.jsonl").open("w") as f:
            for k in tqdm(range(n), desc=f"closed-loop {mode}", unit="ep"):
                scenario = scenarios[k % len(scenarios)]
                try:
                    policy = DynamicGrasp(
                        planner, pools.get(scenario.object_id), replace(cfg.policy, mode=mode)
                    )
                except DynamicGraspError as exc:
                    print(f"dexh2r eval closed-loop: {exc}", file=sys.stderr)
                    return 2
                row = run_episode(cell, scenario, policy, cell.robot)
                rows.append(row)
                f.write(json.dumps(row) + "\n")
                tqdm.write(
                    f"{scenario.name}: {row['outcome']} ({row['detail']}), last phase {row['last_phase']}"
                )
    finally:
        cell.close()
    summary = {**summarize(rows), "mode": mode, "scenarios": args.scenarios, "checkpoint": args.checkpoint}
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    Path(args.json).write_text(json.dumps(summary, indent=2) + "\n")
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
