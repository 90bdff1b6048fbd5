"""`dexh2r <verb> ...`: the single command-line entry of the stack.

Each verb lives in its own module and is imported only when used, so `dexh2r --help` stays fast
and a verb whose optional dependencies are missing does not break the others. A verb's `main`
takes the remaining argv and returns an exit code.
"""

from __future__ import annotations

import importlib
import sys

# verb -> ("module:function", one-line help)
VERBS: dict[str, tuple[str, str]] = {
    "demo": ("dexh2r_sim.demo:main", "the main job: simulated handovers, with a run folder and report"),
    "smoke": ("dexh2r_core.smoke:main", "DDS health check: the smoke launch graph (talker -> listener)"),
    "launch": ("dexh2r_core.launch.cli:main", "run a ROS 2 XML launch file: one process per node"),
    "robot": ("dexh2r_core.robot.cli:main", "inspect, export and check the robot description"),
    "sim": ("dexh2r_sim.cli:main", "run handover episodes in the MuJoCo cell (or --ros: the sim node)"),
    "calibrate": (
        "dexh2r_perception.calibrate:main",
        "camera extrinsics in the world frame from a ChArUco board",
    ),
    "datagen": ("dexh2r_policy.datagen:main", "sim data: grasp pools, their close-hold results, episodes"),
    "eval": ("dexh2r_policy.eval_cli:main", "policy evaluations: grasp table (grasps), replay (offline)"),
    "train": ("dexh2r_policy.train:main", "train a policy from config/policy/<name>.yaml (torchrun for DDP)"),
    "teleop": ("dexh2r_teleop.sim_teleop:main", "teleoperation (--source sim: the whole chain, in the cell)"),
    "record": ("dexh2r_teleop.recorder_node:cli", "record episodes to rosbag2 MCAP (or --recover/--check)"),
    "replay": ("dexh2r_teleop.replay:main", "play a rosbag2 MCAP bag with original timing and /clock"),
    "dataset": ("dexh2r_teleop.dataset_convert:main", "recorded episodes -> DexH2R layout (convert)"),
    "bench": ("dexh2r_core.bench:main", "benchmarks that write JSON (transport, sim, perception, ...)"),
}


def _usage() -> str:
    width = max(len(v) for v in VERBS)
    lines = ["usage: dexh2r <verb> [args...]", "", "verbs:"]
    lines += [f"  {verb:<{width}}  {help_}" for verb, (_, help_) in VERBS.items()]
    lines += ["", "`dexh2r <verb> --help` shows a verb's options."]
    return "\n".join(lines)


def resolve(target: str):
    module, _, func = target.partition(":")
    return getattr(importlib.import_module(module), func)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(_usage())
        return 0
    verb, rest = argv[0], argv[1:]
    if verb not in VERBS:
        print(f"dexh2r: unknown verb '{verb}'\n\n{_usage()}", file=sys.stderr)
        return 2
    return int(resolve(VERBS[verb][0])(rest) or 0)


if __name__ == "__main__":
    sys.exit(main())
