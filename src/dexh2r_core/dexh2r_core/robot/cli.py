"""`dexh2r robot {info,check,export}`: look at, verify and export the robot description."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from dexh2r_core.paths import config_path


def _load(args):
    from dexh2r_core.robot.config import load_robot_config
    from dexh2r_core.robot.description import RobotDescription

    return RobotDescription(load_robot_config(args.robot, hand=args.hand))


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="dexh2r robot", description=__doc__)
    sub = parser.add_subparsers(dest="cmd", required=True)
    for name, help_ in (
        ("info", "print joints, limits and frames"),
        ("check", "load into MuJoCo, pinocchio and dex-retargeting and compare FK"),
        ("export", "write the generated URDFs (robot + hand) and print their paths"),
    ):
        p = sub.add_parser(name, help=help_)
        p.add_argument("--robot", default="ur5_shadow", help="config/robot/<name>.yaml or a path")
        p.add_argument(
            "--hand", default=None, help="swap the hand: a name in config/robot/hands/ (e.g. allegro)"
        )
        if name == "check":
            p.add_argument("--json", type=Path, help="write the report here")
            p.add_argument("--samples", type=int, default=1000)
            p.add_argument("--seed", type=int, default=0)
        if name == "export":
            p.add_argument("--all", action="store_true", help="every robot in config/robot/ with every hand")
            p.add_argument("--quiet", action="store_true")
    args = parser.parse_args(argv)

    if args.cmd == "info":
        robot = _load(args)
        info = robot.summary()
        info["limits"] = {
            n: {"lower": float(lo), "upper": float(hi), "velocity": float(v)}
            for n, lo, hi, v in zip(
                robot.joint_names, robot.lower, robot.upper, robot.velocity_limits, strict=True
            )
        }
        print(json.dumps(info, indent=2))
        return 0
    if args.cmd == "check":
        from dexh2r_core.robot.check import check_robot

        report = check_robot(_load(args), samples=args.samples, seed=args.seed)
        text = json.dumps(report, indent=2)
        if args.json:
            args.json.parent.mkdir(parents=True, exist_ok=True)
            args.json.write_text(text + "\n")
        print(text)
        if not report["pass"]:
            print("robot check FAILED: consumers disagree by more than 1e-6 m")
            return 1
        return 0
    # export
    from dexh2r_core.robot.config import load_robot_config
    from dexh2r_core.robot.description import RobotDescription

    if args.all:
        robots = sorted(p.stem for p in config_path("robot").glob("*.yaml"))
        hands = [None, *sorted(p.stem for p in config_path("robot/hands").glob("*.yaml"))]
        combos = [(r, h) for r in robots for h in hands]
    else:
        combos = [(args.robot, args.hand)]
    for robot_name, hand in combos:
        robot = RobotDescription(load_robot_config(robot_name, hand=hand))
        paths = [robot.urdf_path("robot"), robot.urdf_path("hand")]
        if not args.quiet:
            print(f"{robot.config.name}: " + " ".join(str(p) for p in paths))
    return 0
