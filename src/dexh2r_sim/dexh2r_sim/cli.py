"""`dexh2r sim`: run handover episodes in the simulated cell.

    dexh2r sim --scenario config/scenarios/easy.yaml --episodes 5 --results runs/sim_easy
    dexh2r sim --scenario config/scenarios/easy.yaml --controller scripted --results runs/expert
    dexh2r sim --ros [--ros-args ...]      # the sim_node: topics for the rest of the stack

In-process runs are deterministic and fast (no DDS). `--controller` picks who drives the robot:
`none` (it holds its home pose: every episode times out), or the privileged scripted expert
(`scripted`, or `scripted-ram` / `scripted-drop` to exercise the failure outcomes). The results
folder holds `config.json` (the run's settings) and `episodes.jsonl` (one record per episode);
`summary.json` is computed from those two files only.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections import Counter
from pathlib import Path

CONTROLLERS = ("none", "scripted", "scripted-ram", "scripted-drop")


def summarize(results: Path) -> dict:
    """Metrics as a pure function of the results folder."""
    records = [
        json.loads(line) for line in (results / "episodes.jsonl").read_text().splitlines() if line.strip()
    ]
    counts = Counter(r["outcome"] for r in records)
    n = len(records)
    tth = [
        r["time_to_handover_s"]
        for r in records
        if r["outcome"] == "success" and r["time_to_handover_s"] is not None
    ]
    summary = {"episodes": n}
    for outcome in ("success", "hit-human", "drop", "timeout", "safety-stop"):
        summary[f"{outcome.replace('-', '_')}_rate"] = counts.get(outcome, 0) / n if n else 0.0
    summary["time_to_handover_s_mean"] = sum(tth) / len(tth) if tth else None
    return summary


def run_episodes(args) -> int:
    os.environ.setdefault("MUJOCO_GL", "egl")
    from dexh2r_core.paths import config_path
    from dexh2r_sim.cell import CellConfig, HandoverCell
    from dexh2r_sim.objects import UnknownObjectError
    from dexh2r_sim.scenario import load_scenarios, validate_objects

    try:
        scenarios = load_scenarios(config_path(args.scenario))
    except (ValueError, FileNotFoundError) as exc:
        print(f"dexh2r sim: {exc}", file=sys.stderr)
        return 2
    config = CellConfig(robot=args.robot, hand=args.hand, cameras=False, physics_hz=args.physics_hz)
    cell = HandoverCell(config)
    try:
        validate_objects(scenarios, cell.objects.ids())
    except (ValueError, UnknownObjectError) as exc:
        print(f"dexh2r sim: {exc}", file=sys.stderr)
        return 2
    results = Path(args.results) if args.results else None
    if results is not None:
        results.mkdir(parents=True, exist_ok=True)
        (results / "episodes.jsonl").write_text("")
        (results / "config.json").write_text(
            json.dumps(
                {
                    "scenarios": str(args.scenario),
                    "episodes": args.episodes,
                    "controller": args.controller,
                    "robot": args.robot,
                    "hand": args.hand,
                    "physics_hz": args.physics_hz,
                },
                indent=2,
            )
            + "\n"
        )
    from tqdm import tqdm

    n = args.episodes or len(scenarios)
    exit_code = 0
    for episode in tqdm(range(n), desc="episodes", disable=args.quiet):
        scenario = scenarios[episode % len(scenarios)]
        cell.load_scenario(scenario)
        controller = None
        if args.controller != "none":
            from dexh2r_sim.scripted import ScriptedHandover

            mode = {"scripted": "grasp", "scripted-ram": "ram", "scripted-drop": "drop"}[args.controller]
            controller = ScriptedHandover(cell, mode)
        t0 = time.perf_counter()
        while cell.outcome is None:
            if controller is not None:
                controller.update()
            cell.step_until(cell.time + args.control_period)
        o = cell.outcome
        record = cell.episode_record(episode, wall_s=time.perf_counter() - t0)
        if results is not None:
            with (results / "episodes.jsonl").open("a") as f:
                f.write(json.dumps(record) + "\n")
        if not args.quiet:
            tqdm.write(f"{scenario.name}: {o.outcome} at {o.time_s:.2f} s ({o.detail})")
    cell.close()
    if results is not None:
        summary = summarize(results)
        (results / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
        print(json.dumps(summary, indent=2))
    return exit_code


def main(argv: list[str]) -> int:
    if "--ros" in argv:
        from dexh2r_sim.sim_node import main as node_main

        rest = [a for a in argv if a != "--ros"]
        return node_main(["sim_node", *rest])
    parser = argparse.ArgumentParser(
        prog="dexh2r sim", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--scenario", default="scenarios/easy.yaml", help="scenario or scenario-set YAML")
    parser.add_argument("--episodes", type=int, default=0, help="0: one per scenario in the file")
    parser.add_argument("--results", help="results folder (config.json, episodes.jsonl, summary.json)")
    parser.add_argument("--controller", choices=CONTROLLERS, default="none")
    parser.add_argument("--robot", default="ur5_shadow")
    parser.add_argument("--hand", default=None)
    parser.add_argument("--physics-hz", type=float, default=500.0)
    parser.add_argument("--control-period", type=float, default=0.01, help="controller update period (sim s)")
    parser.add_argument("--quiet", action="store_true")
    return run_episodes(parser.parse_args(argv))
