"""`dexh2r demo`: the main job on a laptop: simulated handovers with a run folder to look at.

Runs a few easy and hard scenarios in the MuJoCo cell with a progress bar and writes a run folder:

    runs/demo-<time>/
      config.json, episodes.jsonl, summary.json    results (summary is computed from the other two)
      report.md, report.html                       outcomes, time-to-handover, timing, plots
      distance.png                                 hand-to-object distance over time, per episode
      timing.png                                   per-stage compute time histogram
      handover.mp4                                 camera_0 view of the first episode

The robot is driven by the privileged scripted expert (`dexh2r_sim.scripted`, it reads the object's
true pose) through the same JointTrajectory interface a controller uses. The report says so: the
perception + DynamicGrasp + safe-control stack replaces it as those parts land.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from datetime import datetime
from pathlib import Path

import numpy as np


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="dexh2r demo", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--out", type=Path, default=None, help="run folder (default runs/demo-<time>)")
    p.add_argument("--easy", type=int, default=2, help="easy scenarios to run (default 2)")
    p.add_argument("--hard", type=int, default=2, help="hard scenarios to run (default 2)")
    p.add_argument("--no-video", action="store_true", help="skip rendering the video")
    p.add_argument("--fps", type=float, default=15.0, help="video frame rate in sim time")
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(sys.argv[1:] if argv is None else argv)
    os.environ.setdefault("MUJOCO_GL", "egl")
    from tqdm import tqdm

    from dexh2r_core.paths import config_path, repo_root
    from dexh2r_sim.cell import CellConfig, HandoverCell
    from dexh2r_sim.cli import summarize
    from dexh2r_sim.scenario import load_scenarios
    from dexh2r_sim.scripted import ScriptedHandover

    out = args.out or (repo_root() or Path.cwd()) / "runs" / f"demo-{datetime.now():%Y%m%d-%H%M%S}"
    out.mkdir(parents=True, exist_ok=True)
    easy = load_scenarios(config_path("scenarios/easy.yaml"))[: args.easy]
    hard = load_scenarios(config_path("scenarios/hard.yaml"))[: args.hard]
    scenarios = easy + hard
    if not scenarios:
        print("dexh2r demo: nothing to run (--easy 0 --hard 0)", file=sys.stderr)
        return 2
    config = CellConfig(cameras=not args.no_video)
    cell = HandoverCell(config)
    (out / "config.json").write_text(
        json.dumps(
            {
                "job": "demo",
                "controller": "scripted expert (privileged: true object pose)",
                "robot": config.robot,
                "physics_hz": config.physics_hz,
                "scenarios": [s.name for s in scenarios],
            },
            indent=2,
        )
        + "\n"
    )
    (out / "episodes.jsonl").write_text("")
    traces: dict[str, dict[str, list[float]]] = {}
    timing: dict[str, list[float]] = {"physics step (10 ms)": [], "controller": [], "render (2 cameras)": []}
    writer = None
    if not args.no_video:
        import imageio.v2 as imageio

        writer = imageio.get_writer(
            out / "handover.mp4", fps=args.fps, codec="libx264", quality=7, macro_block_size=8
        )
    print(f"dexh2r demo: {len(easy)} easy + {len(hard)} hard simulated handovers -> {out}")
    try:
        for episode, scenario in enumerate(tqdm(scenarios, desc="handovers", unit="episode")):
            cell.load_scenario(scenario)
            controller = ScriptedHandover(cell, "grasp")
            trace = {"t": [], "distance": []}
            next_frame = 0.0
            t_wall = time.perf_counter()
            while cell.outcome is None:
                t0 = time.perf_counter()
                controller.update()
                t1 = time.perf_counter()
                cell.step_until(cell.time + 0.01)
                t2 = time.perf_counter()
                timing["controller"].append((t1 - t0) * 1e3)
                timing["physics step (10 ms)"].append((t2 - t1) * 1e3)
                palm = cell.body_pose(cell.robot.config.hand.palm_link)[:3, 3]
                trace["t"].append(cell.time)
                trace["distance"].append(float(np.linalg.norm(palm - cell.object_pose()[:3, 3])))
                if writer is not None and episode == 0 and cell.time >= next_frame:
                    t3 = time.perf_counter()
                    frames = cell.render()
                    timing["render (2 cameras)"].append((time.perf_counter() - t3) * 1e3)
                    writer.append_data(frames[0].rgb)
                    next_frame += 1.0 / args.fps
            o = cell.outcome
            record = cell.episode_record(episode, wall_s=time.perf_counter() - t_wall)
            with (out / "episodes.jsonl").open("a") as f:
                f.write(json.dumps(record) + "\n")
            traces[f"{scenario.name} ({o.outcome})"] = trace
            tqdm.write(f"  {scenario.name:24s} {o.outcome:10s} {o.detail}")
    finally:
        if writer is not None:
            writer.close()
        cell.close()
    summary = summarize(out)
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    _plots(out, traces, timing)
    _report(out, summary, timing, has_video=writer is not None)
    rate, n = summary["success_rate"], summary["episodes"]
    print(f"success rate {rate:.2f} over {n} episodes; report: {out / 'report.html'}")
    return 0


def _plots(out: Path, traces: dict, timing: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 3.5))
    for label, trace in traces.items():
        ax.plot(trace["t"], np.array(trace["distance"]) * 100, label=label)
    ax.set_xlabel("time [s]")
    ax.set_ylabel("palm to object [cm]")
    ax.set_title("Hand-to-object distance")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "distance.png", dpi=110)
    plt.close(fig)
    fig, ax = plt.subplots(figsize=(7, 3.0))
    for label, values in timing.items():
        if values:
            ax.hist(values, bins=40, alpha=0.6, label=f"{label}: p50 {np.median(values):.2f} ms")
    ax.set_xlabel("compute time per call [ms]")
    ax.set_ylabel("count")
    ax.set_yscale("log")
    ax.legend(fontsize=7)
    ax.set_title("Per-stage compute time")
    fig.tight_layout()
    fig.savefig(out / "timing.png", dpi=110)
    plt.close(fig)


def _report(out: Path, summary: dict, timing: dict, has_video: bool) -> None:
    records = [json.loads(line) for line in (out / "episodes.jsonl").read_text().splitlines() if line.strip()]
    for r in records:
        r["tth"] = "" if r["time_to_handover_s"] is None else f"{r['time_to_handover_s']:.2f}"
    columns = ("scenario", "difficulty", "object_id", "outcome", "tth", "detail")
    rows = "\n".join("| " + " | ".join(str(r[c]) for c in columns) + " |" for r in records)
    stages = "\n".join(
        f"| {k} | {np.median(v):.2f} | {np.percentile(v, 95):.2f} |" for k, v in timing.items() if v
    )
    tth = summary["time_to_handover_s_mean"]
    rates = [f"{summary[k]:.2f}" for k in ("success_rate", "hit_human_rate", "drop_rate", "timeout_rate")]
    rates.append(f"{summary['safety_stop_rate']:.2f}")
    totals = " | ".join([str(summary["episodes"]), *rates, "" if tth is None else f"{tth:.2f}"])
    md = f"""# dexh2r demo report

Simulated handovers in the MuJoCo cell (UR5 + Shadow hand). **Controller: the privileged scripted
expert** (reads the object's true pose); perception, DynamicGrasp and the safe controller replace
it as those parts of the stack land.

| episodes | success | hit-human | drop | timeout | safety-stop | mean time-to-handover [s] |
|---|---|---|---|---|---|---|
| {totals} |

| scenario | mode | object | outcome | time-to-handover [s] | detail |
|---|---|---|---|---|---|
{rows}

## Compute per stage

| stage | p50 [ms] | p95 [ms] |
|---|---|---|
{stages}

![distance](distance.png)

![timing](timing.png)
"""
    if has_video:
        md += "\nVideo of the first handover from camera_0: [handover.mp4](handover.mp4)\n"
    (out / "report.md").write_text(md)
    video = '<video src="handover.mp4" controls width="424"></video>' if has_video else ""
    html_rows = "".join(
        f"<tr><td>{r['scenario']}</td><td>{r['difficulty']}</td><td>{r['object_id']}</td><td>{r['outcome']}</td>"
        f"<td>{r['tth']}</td><td>{r['detail']}</td></tr>"
        for r in records
    )
    (out / "report.html").write_text(
        f"""<!doctype html><html><head><meta charset="utf-8"><title>dexh2r demo</title>
<style>body{{font-family:sans-serif;max-width:900px;margin:2em auto}}
td,th{{padding:2px 8px;border-bottom:1px solid #ddd}}</style>
</head><body><h1>dexh2r demo report</h1>
<p>Simulated handovers (UR5 + Shadow). Controller: <b>privileged scripted expert</b>.</p>
<p>success rate {summary["success_rate"]:.2f} over {summary["episodes"]} episodes;
mean time-to-handover {"" if tth is None else f"{tth:.2f} s"}</p>
<table><tr><th>scenario</th><th>mode</th><th>object</th><th>outcome</th>
<th>time-to-handover [s]</th><th>detail</th></tr>
{html_rows}</table>{video}<img src="distance.png"><img src="timing.png"></body></html>
"""
    )


if __name__ == "__main__":
    sys.exit(main())
