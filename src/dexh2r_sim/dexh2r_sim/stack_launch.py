"""One episode of the whole stack on the sim cell: `launch/handover_sim.launch.xml`, set up for a
scenario (what `dexh2r eval closed-loop --ros` and `dexh2r demo` launch, one launch per episode:
the object, so the policy's pool and the tracker's model, changes between scenarios)."""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Any

LAUNCH_FILE = "handover_sim.launch.xml"


def launch_file() -> Path:
    """The sim handover launch file (the dexh2r_core package's launch/ folder)."""
    from dexh2r_core.paths import share_dir

    return share_dir("dexh2r_core") / "launch" / LAUNCH_FILE


def episode_launch(
    scenario: Any,
    *,
    scenarios_file: str,
    mode: str,
    repeat: int = 0,
    perception: str = "cameras",
    rtf: float = 0.3,
    resolution: tuple[int, int] = (640, 360),
    checkpoint: str | None = None,
    pools: str | None = None,
    results_dir: Path | None = None,
    record_dir: Path | None = None,
    actuation_delay_s: float = 0.0,
    camera_latency_s: float | None = None,
    arm_servo: str = "drive",
    policy_set: str = "",
    env: dict[str, str] | None = None,
    timeout_s: float | None = None,
    startup_s: float = 60.0,
) -> tuple[Any, io.StringIO]:
    """(LaunchRunner, its output) for one episode of `scenario`; call `runner.run()` (blocking).

    `scenarios_file` is under config/ (e.g. scenarios/easy.yaml); `repeat` selects the scenario's
    repeat (`dexh2r_sim.scenario.repeat_scenario`); `policy_set` is dynamic_grasp_node's
    DynamicGrasp overrides (`KEY=VALUE[,KEY=VALUE...]`). The launch ends when sim_node has decided the
    outcome (its record in `results_dir/episodes.jsonl`), or after `timeout_s`
    (default: the scenario's time limit at `rtf` plus `startup_s` for the nodes to load)."""
    from dexh2r_core.launch.parser import load_launch
    from dexh2r_core.launch.runner import LaunchRunner

    overrides = {
        "scenarios": scenarios_file,
        "scenario": scenario.name,
        "repeat": str(int(repeat)),
        "object_id": scenario.object_id,
        "object_scale": repr(float(scenario.object_scale)),
        "mode": mode,
        "perception": perception,
        "rtf": repr(float(rtf)),
        "width": str(resolution[0]),
        "height": str(resolution[1]),
        "results_dir": "" if results_dir is None else str(results_dir),
        "record_dir": "" if record_dir is None else str(record_dir),
        "actuation_delay_s": repr(float(actuation_delay_s)),
        "arm_servo": arm_servo,
        "policy_set": policy_set,
        "pools": pools or "",
    }
    if checkpoint:
        overrides["checkpoint"] = checkpoint
    if camera_latency_s is not None:  # None: the launch file's default
        overrides["camera_latency_s"] = repr(float(camera_latency_s))
    limit = timeout_s or (scenario.time_limit_s + 2.0) / max(rtf, 1e-3) + startup_s
    log = io.StringIO()
    runner = LaunchRunner(
        load_launch(launch_file(), overrides),
        timeout=limit,
        base_env=env or dict(os.environ),
        out=log,
        err=log,
        color=False,
    )
    return runner, log
