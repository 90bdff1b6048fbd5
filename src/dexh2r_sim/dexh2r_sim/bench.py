"""`dexh2r bench sim --json OUT`: real-time factor of the handover cell, physics only and with cameras.

Runs the UR5 + Shadow cell with a moving giver (a hard scenario) and measures wall time for a fixed
stretch of simulated time: physics only at the configured rate (500 Hz), then the same with every
virtual camera rendering RGB-D at 30 Hz of simulated time. Real-time factor = sim s / wall s.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

TARGET_RTF_PHYSICS = 10.0
TARGET_RTF_CAMERAS = 1.0


def _run(cell, seconds: float, cameras: bool) -> tuple[float, int]:
    frames = 0
    camera_period = 1.0 / cell.config.camera_hz
    next_frame = cell.time
    end = cell.time + seconds
    t0 = time.perf_counter()
    while cell.time < end - 1e-9:
        if cameras and cell.time >= next_frame - 1e-9:
            cell.render()
            frames += 1
            next_frame += camera_period
        cell.step()
    return seconds / (time.perf_counter() - t0), frames


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="dexh2r bench sim", description=__doc__)
    parser.add_argument("--json", type=Path, required=True)
    parser.add_argument("--scenarios", default="config/scenarios/hard.yaml")
    parser.add_argument("--index", type=int, default=0, help="which scenario of the file")
    parser.add_argument("--seconds", type=float, default=4.0, help="simulated seconds per measurement")
    parser.add_argument("--robot", default="ur5_shadow")
    parser.add_argument("--width", type=int, default=424)
    parser.add_argument("--height", type=int, default=240)
    parser.add_argument("--physics-hz", type=float, default=500.0)
    parser.add_argument(
        "--antialias", action="store_true", help="render with MSAA (about half the camera speed)"
    )
    parser.add_argument("--check", action="store_true", help="exit 1 when a target is missed")
    args = parser.parse_args(argv)
    os.environ.setdefault("MUJOCO_GL", "egl")

    from dexh2r_core.paths import config_path
    from dexh2r_sim.cell import CellConfig, HandoverCell
    from dexh2r_sim.scenario import load_scenarios

    scenario = load_scenarios(config_path(args.scenarios))[args.index]
    config = CellConfig(
        robot=args.robot,
        physics_hz=args.physics_hz,
        resolution=(args.width, args.height),
        antialias=args.antialias,
    )
    cell = HandoverCell(config)
    try:
        t0 = time.perf_counter()
        cell.load_scenario(scenario)
        build_s = time.perf_counter() - t0
        cell.step_until(0.2)  # warm up (first steps allocate)
        rtf_physics, _ = _run(cell, args.seconds, cameras=False)
        cell.reset()
        cell.render()  # GL context creation is start-up cost, not per-frame cost
        rtf_cameras, frames = _run(cell, args.seconds, cameras=True)
    finally:
        cell.close()
    report = {
        "rtf_physics": rtf_physics,
        "rtf_with_cameras": rtf_cameras,
        "cameras": len(cell.calibration.cameras),
        "width": args.width,
        "height": args.height,
        "physics_hz": args.physics_hz,
        "camera_hz": config.camera_hz,
        "frames_rendered": frames,
        "sim_seconds": args.seconds,
        "scenario": scenario.name,
        "motion": scenario.motion.type,
        "robot": args.robot,
        "model_build_s": build_s,
        "antialias": config.antialias,
        "load_average_1min": os.getloadavg()[0],
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "gl": os.environ.get("MUJOCO_GL"),
        },
        "targets": {"rtf_physics": TARGET_RTF_PHYSICS, "rtf_with_cameras": TARGET_RTF_CAMERAS},
        "pass": rtf_physics >= TARGET_RTF_PHYSICS and rtf_cameras >= TARGET_RTF_CAMERAS,
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=2) + "\n")
    print(
        f"sim bench ({scenario.name}, {args.physics_hz:.0f} Hz physics, {report['cameras']} cameras "
        f"{args.width}x{args.height} at {config.camera_hz:.0f} Hz)"
    )
    print(f"  physics only : RTF {rtf_physics:6.2f}  (target >= {TARGET_RTF_PHYSICS})")
    print(f"  with cameras : RTF {rtf_cameras:6.2f}  (target >= {TARGET_RTF_CAMERAS})")
    return 1 if args.check and not report["pass"] else 0
