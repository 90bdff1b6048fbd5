"""`dexh2r demo`: the main job on a laptop: simulated handovers through the whole stack.

Each handover brings up the deployed node graph on the MuJoCo cell with one launch file,
`launch/handover_sim.launch.xml` (the same file `dexh2r eval closed-loop --ros` runs): `sim_node`
(virtual RealSense cameras) -> `hand_tracker_node` (MediaPipe) + `object_tracker_node` ->
`dynamic_grasp_node` (the committed MotionNet checkpoint) -> `controller_node` (IK + safety
filter) -> `sim_node`, every node its own process over DDS on the sim's /clock, plus
`recorder_node`. A few easy and hard scenarios run with a progress bar, then a run folder:

    runs/demo-<time>/
      config.json, episodes.jsonl, summary.json    results (summary is computed from the other two)
      report.md, report.html                       outcomes, time-to-handover, timing, plots
      distance.png                                 palm-to-object distance over time, per episode
      timing.png                                   per-stage compute time histogram (perception, policy)
      handover.mp4                                 camera_0 view of the first episode
      bags/<episode>/                              rosbag2 MCAP of each episode (opens in Foxglove)
      logs/<k>-<scenario>.log                      each launch's output

`--expert` runs the privileged scripted expert in-process instead (it reads the object's true pose;
no perception, no policy): the cell's reference, in a fraction of the time.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
from datetime import datetime
from pathlib import Path

import numpy as np

OUTCOMES = ("success", "hit-human", "drop", "timeout", "safety-stop")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="dexh2r demo", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--out", type=Path, default=None, help="run folder (default runs/demo-<time>)")
    p.add_argument("--easy", type=int, default=2, help="easy scenarios to run (default 2)")
    p.add_argument("--hard", type=int, default=2, help="hard scenarios to run (default 2)")
    p.add_argument("--no-video", action="store_true", help="skip the video")
    p.add_argument("--no-bag", action="store_true", help="skip recording the MCAP bags")
    p.add_argument("--fps", type=float, default=15.0, help="video frame rate in sim time")
    p.add_argument(
        "--rtf",
        type=float,
        default=0.3,
        help="the sim's real-time factor (every node follows its /clock): 0.3 leaves a 2-core machine "
        "time for two 640x360 cameras, MediaPipe, the trackers and the recorder",
    )
    p.add_argument(
        "--perception",
        choices=["cameras", "truth"],
        default="cameras",
        help="truth: the sim's true poses on the perception topics (no trackers, a diagnostic)",
    )
    p.add_argument(
        "--expert", action="store_true", help="the scripted expert in-process instead of the stack"
    )
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(sys.argv[1:] if argv is None else argv)
    os.environ.setdefault("MUJOCO_GL", "egl")
    from dexh2r_core.paths import config_path, repo_root
    from dexh2r_sim.scenario import load_scenarios

    if not args.rtf > 0.0:
        print(f"dexh2r demo: --rtf must be > 0, got {args.rtf}", file=sys.stderr)
        return 2
    out = args.out or (repo_root() or Path.cwd()) / "runs" / f"demo-{datetime.now():%Y%m%d-%H%M%S}"
    out.mkdir(parents=True, exist_ok=True)
    easy = [("easy", s) for s in load_scenarios(config_path("scenarios/easy.yaml"))[: args.easy]]
    hard = [("hard", s) for s in load_scenarios(config_path("scenarios/hard.yaml"))[: args.hard]]
    scenarios = easy + hard
    if not scenarios:
        print("dexh2r demo: nothing to run (--easy 0 --hard 0)", file=sys.stderr)
        return 2
    (out / "episodes.jsonl").write_text("")
    print(f"dexh2r demo: {len(easy)} easy + {len(hard)} hard simulated handovers -> {out}")
    if args.expert:
        traces, timing, has_video = _run_expert(args, out, scenarios)
        controller = "scripted expert (privileged: true object pose), in-process"
    else:
        traces, timing, has_video = _run_stack(args, out, scenarios)
        controller = (
            f"the stack over DDS (launch/handover_sim.launch.xml, perception {args.perception}, "
            f"MotionNet + DynamicGrasp, controller_node), real-time factor {args.rtf:g}"
        )
    from dexh2r_sim.cli import summarize

    summary = summarize(out)
    summary["controller"] = controller
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    _plots(out, traces, timing)
    _report(out, summary, timing, has_video=has_video, controller=controller)
    rate, n = summary["success_rate"], summary["episodes"]
    print(f"success rate {rate:.2f} over {n} episodes; report: {out / 'report.html'}")
    errors = [r for r in _records(out) if r["outcome"] not in OUTCOMES]
    return 1 if errors else 0


def _records(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "episodes.jsonl").read_text().splitlines() if line.strip()]


def _append(out: Path, record: dict) -> None:
    with (out / "episodes.jsonl").open("a") as f:
        f.write(json.dumps(record) + "\n")


class _Monitor:
    """The demo's own node: what the report shows, read off the graph's topics (ground truth from
    `/sim/...`, compute time from the nodes' status JSON, the first episode's camera_0 images)."""

    def __init__(self, node, video_writer, fps: float) -> None:
        from geometry_msgs.msg import PoseStamped
        from rclpy.qos import QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
        from rosgraph_msgs.msg import Clock
        from sensor_msgs.msg import Image
        from std_msgs.msg import String

        self.node = node
        self.video = video_writer
        self.frame_period = 1.0 / fps
        self.lock = threading.Lock()
        self.reset()
        reliable = QoSProfile(depth=50, reliability=ReliabilityPolicy.RELIABLE)
        node.create_subscription(Clock, "/clock", self._on_clock, 10)
        node.create_subscription(String, "/sim/outcome", self._on_outcome, reliable)
        node.create_subscription(PoseStamped, "/sim/robot/palm", self._pose("palm"), reliable)
        node.create_subscription(PoseStamped, "/sim/object/pose", self._pose("object"), reliable)
        node.create_subscription(String, "/policy/state", self._on_status("policy step", "step_ms"), reliable)
        node.create_subscription(
            String, "/perception/object/status", self._on_status("object tracker", "compute_ms"), reliable
        )
        node.create_subscription(
            String, "/perception/human_hand/state", self._on_status("hand tracker", "compute_ms"), reliable
        )
        node.create_subscription(Image, "/camera_0/color/image_raw", self._on_image, qos_profile_sensor_data)

    def reset(self) -> None:
        with self.lock:
            self.clock = 0.0
            self.outcome: dict | None = None
            self.latest: dict[str, np.ndarray] = {}
            self.trace = {"t": [], "distance": []}
            self.timing: dict[str, list[float]] = {
                "hand tracker": [],
                "object tracker": [],
                "policy step": [],
            }
            self.record_video = False
            self.next_frame = 0.0

    def _on_clock(self, msg) -> None:
        self.clock = msg.clock.sec + msg.clock.nanosec * 1e-9

    def _on_outcome(self, msg) -> None:
        self.outcome = json.loads(msg.data)

    def _pose(self, key: str):
        def callback(msg) -> None:
            p = msg.pose.position
            with self.lock:
                self.latest[key] = np.array([p.x, p.y, p.z])
                if key == "palm" and "object" in self.latest and self.outcome is None:
                    t = msg.header.stamp.sec + msg.header.stamp.nanosec * 1e-9
                    self.trace["t"].append(t)
                    self.trace["distance"].append(
                        float(np.linalg.norm(self.latest["palm"] - self.latest["object"]))
                    )

        return callback

    def _on_status(self, stage: str, key: str):
        def callback(msg) -> None:
            value = json.loads(msg.data).get(key)
            if isinstance(value, (int, float)):
                with self.lock:
                    self.timing[stage].append(float(value))

        return callback

    def _on_image(self, msg) -> None:
        if not self.record_video or self.video is None:
            return
        t = msg.header.stamp.sec + msg.header.stamp.nanosec * 1e-9
        if t + 1e-6 < self.next_frame:
            return
        from dexh2r_core import msgs

        self.next_frame = t + self.frame_period
        self.video.append_data(np.asarray(msgs.image_array(msg)))


def _run_stack(args, out: Path, scenarios: list) -> tuple[dict, dict, bool]:
    """Each scenario through launch/handover_sim.launch.xml; the sim_node record per episode."""
    from rclpy.executors import SingleThreadedExecutor
    from std_srvs.srv import Trigger
    from tqdm import tqdm

    from dexh2r_core.ros_env import apply_run_defaults
    from dexh2r_core.testing import ros_test_node
    from dexh2r_sim.stack_launch import episode_launch, launch_file

    # Localhost only, and a domain of this run's own unless the user chose one.
    env = apply_run_defaults()
    launch = launch_file()
    (out / "config.json").write_text(
        json.dumps(
            {
                "job": "demo",
                "launch": str(launch),
                "perception": args.perception,
                "rtf": args.rtf,
                "scenarios": [s.name for _, s in scenarios],
                "ros_domain_id": env.get("ROS_DOMAIN_ID"),
            },
            indent=2,
        )
        + "\n"
    )
    (out / "logs").mkdir(exist_ok=True)
    writer = None
    if not args.no_video and args.perception == "cameras":
        import imageio.v2 as imageio

        writer = imageio.get_writer(
            out / "handover.mp4", fps=args.fps, codec="libx264", quality=7, macro_block_size=8
        )
    traces: dict[str, dict] = {}
    timing: dict[str, list[float]] = {"hand tracker": [], "object tracker": [], "policy step": []}
    try:
        with ros_test_node("dexh2r_demo") as node:
            monitor = _Monitor(node, writer, args.fps)
            stop_recorder = node.create_client(Trigger, "/recorder/stop")
            executor = SingleThreadedExecutor(context=node.context)
            executor.add_node(node)
            for k, (mode, scenario) in enumerate(scenarios):
                monitor.reset()
                monitor.record_video = k == 0
                runner, log = episode_launch(
                    scenario,
                    scenarios_file=f"scenarios/{mode}.yaml",
                    mode=mode,
                    perception=args.perception,
                    rtf=args.rtf,
                    record_dir=None if args.no_bag else out / "bags",
                    env=env,
                    startup_s=90.0,
                )
                result: dict = {}
                thread = threading.Thread(
                    target=lambda r=runner, box=result: box.setdefault("r", r.run()), daemon=True
                )
                thread.start()
                stopped = False
                label = f"{k + 1}/{len(scenarios)} {scenario.name}"
                with tqdm(
                    total=scenario.time_limit_s,
                    desc=label,
                    unit="sim s",
                    bar_format="{l_bar}{bar}| {n:.1f}/{total:.0f} sim s",
                ) as bar:
                    while thread.is_alive():
                        executor.spin_once(timeout_sec=0.05)
                        bar.n = min(monitor.clock, scenario.time_limit_s)
                        bar.refresh()
                        if monitor.outcome is not None and not stopped and not args.no_bag:
                            stopped = True  # close the bag while the graph still runs: status complete
                            if stop_recorder.service_is_ready():
                                stop_recorder.call_async(Trigger.Request())
                (out / "logs" / f"{k:02d}-{scenario.name}.log").write_text(log.getvalue())
                record = monitor.outcome
                r = result.get("r")
                if record is None:
                    reason = r.reason if r is not None else "launch did not finish"
                    record = {
                        "episode": k,
                        "scenario": scenario.name,
                        "object_id": scenario.object_id,
                        "difficulty": mode,
                        "outcome": "error",
                        "time_to_handover_s": None,
                        "detail": f"no outcome: {reason} (logs/{k:02d}-{scenario.name}.log)",
                    }
                record = {**record, "episode": k, "crashed": [x.node.label for x in r.crashed] if r else []}
                _append(out, record)
                traces[f"{scenario.name} ({record['outcome']})"] = monitor.trace
                for stage, values in monitor.timing.items():
                    timing[stage].extend(values)
                tqdm.write(f"  {scenario.name:24s} {record['outcome']:10s} {record['detail']}")
            executor.remove_node(node)
            executor.shutdown(timeout_sec=1.0)
    finally:
        if writer is not None:
            writer.close()
    return traces, timing, writer is not None


def _run_expert(args, out: Path, scenarios: list) -> tuple[dict, dict, bool]:
    """The privileged scripted expert in-process (the cell's reference)."""
    from tqdm import tqdm

    from dexh2r_sim.cell import CellConfig, HandoverCell
    from dexh2r_sim.scripted import ScriptedHandover

    config = CellConfig(cameras=not args.no_video)
    cell = HandoverCell(config)
    (out / "config.json").write_text(
        json.dumps(
            {
                "job": "demo",
                "controller": "scripted expert (privileged: true object pose)",
                "robot": config.robot,
                "physics_hz": config.physics_hz,
                "scenarios": [s.name for _, s in scenarios],
            },
            indent=2,
        )
        + "\n"
    )
    traces: dict[str, dict[str, list[float]]] = {}
    timing: dict[str, list[float]] = {"physics step (10 ms)": [], "controller": [], "render (2 cameras)": []}
    writer = None
    if not args.no_video:
        import imageio.v2 as imageio

        writer = imageio.get_writer(
            out / "handover.mp4", fps=args.fps, codec="libx264", quality=7, macro_block_size=8
        )
    try:
        for episode, (_, scenario) in enumerate(tqdm(scenarios, desc="handovers", unit="episode")):
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
            _append(out, cell.episode_record(episode, wall_s=time.perf_counter() - t_wall))
            traces[f"{scenario.name} ({o.outcome})"] = trace
            tqdm.write(f"  {scenario.name:24s} {o.outcome:10s} {o.detail}")
    finally:
        if writer is not None:
            writer.close()
        cell.close()
    return traces, timing, writer is not None


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


def _report(out: Path, summary: dict, timing: dict, has_video: bool, controller: str) -> None:
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
    bag_dirs = sorted(p for p in (out / "bags").iterdir() if p.is_dir()) if (out / "bags").is_dir() else []
    bags = (
        "MCAP bags of the episodes (open in Foxglove): "
        + ", ".join(f"[{p.name}](bags/{p.name})" for p in bag_dirs)
        + "; each launch's output in `logs/`."
        if bag_dirs
        else ""
    )
    bags_html = (
        "MCAP bags (open in Foxglove) in bags/: " + ", ".join(p.name for p in bag_dirs) if bag_dirs else ""
    )
    md = f"""# dexh2r demo report

Simulated handovers in the MuJoCo cell (UR5 + Shadow hand). **Robot driven by: {controller}.**
{bags}

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
<p>Simulated handovers (UR5 + Shadow). Robot driven by: <b>{controller}</b>.</p>
<p>{bags_html}</p>
<p>success rate {summary["success_rate"]:.2f} over {summary["episodes"]} episodes;
mean time-to-handover {"" if tth is None else f"{tth:.2f} s"}</p>
<table><tr><th>scenario</th><th>mode</th><th>object</th><th>outcome</th>
<th>time-to-handover [s]</th><th>detail</th></tr>
{html_rows}</table>{video}<img src="distance.png"><img src="timing.png"></body></html>
"""
    )


if __name__ == "__main__":
    sys.exit(main())
