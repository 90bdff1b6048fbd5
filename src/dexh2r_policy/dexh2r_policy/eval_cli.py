"""`dexh2r eval <what>`: evaluations of the policy stack (sub-dispatcher).

    dexh2r eval grasps --json OUT        # the paper's grasp table for a grasp generator
    dexh2r eval offline --policy motionnet --mode easy --split test --json OUT   # replay benchmark
    dexh2r eval closed-loop --scenarios config/scenarios/easy.yaml --episodes 50 --json OUT
    dexh2r eval compare RUN_A RUN_B      # two closed-loop runs: what changed, and is it noise

Each prints its options with --help.
"""

from __future__ import annotations

import importlib
import sys

# name -> ("module:function", help)
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "grasps": ("dexh2r_policy.eval_grasps:main", "succ6, succ1, pen_depth, diversity of a grasp generator"),
    "offline": (
        "dexh2r_policy.eval_offline:main",
        "the paper's replay benchmark (success, safety, penetration)",
    ),
    "closed-loop": (
        "dexh2r_policy.closed_loop:main",
        "handovers in the sim cell through perception, DynamicGrasp and the controller",
    ),
    "compare": (
        "dexh2r_policy.eval_compare:main",
        "two closed-loop runs: rates with 95 % intervals, changed episodes, an exact test",
    ),
}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    asked_help = bool(argv) and argv[0] in ("-h", "--help")
    if not argv or asked_help or argv[0] not in SUBCOMMANDS:
        lines = ["usage: dexh2r eval <what> [args...]", "", "what:"]
        width = max(map(len, SUBCOMMANDS))
        lines += [f"  {name:<{width}}  {text}" for name, (_, text) in SUBCOMMANDS.items()]
        if argv and not asked_help:
            lines.insert(0, f"dexh2r eval: unknown evaluation '{argv[0]}'")
        print("\n".join(lines), file=sys.stdout if asked_help else sys.stderr)
        return 0 if asked_help else 2
    module, _, func = SUBCOMMANDS[argv[0]][0].partition(":")
    return int(getattr(importlib.import_module(module), func)(argv[1:]) or 0)
