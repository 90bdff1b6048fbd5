"""`dexh2r eval closed-loop --ros`: each episode through the deployed node graph over DDS.

One launch of `launch/handover_sim.launch.xml` per episode (the object, and so the policy's pool
and the tracker's model, change between scenarios): `sim_node` -> `hand_tracker_node` +
`object_tracker_node` -> `dynamic_grasp_node` (`style:=closed_loop`) -> `controller_node`
(`wrist_ik`, `follow_measured`, `handover:=policy`) -> `sim_node`, every node its own process on
the sim's `/clock`. The nodes run the same modules with the same settings as the in-process loop
(`closed_loop.loop_policy_config`, `controller.WRIST_IK_OPTIONS`, `policy_grasp_phase`); what
differs is what deployment adds: DDS transport, separate processes, each node's own timers (the
policy's 30 Hz target stream, the controller at 100 Hz of sim time) and real compute latency
(which acts scaled by the real-time factor: `rtf` 0.3 makes 30 ms of compute 9 ms of sim time).

`sim_node` decides the outcome and writes the episode record (`results_dir`); its
`limit_violations` counts commands received outside the description's limits. The launcher's
output of each episode is kept in `<out>/ros/<k>-<scenario>.log`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from dexh2r_policy.closed_loop import ARM_SERVO


def run_episode_ros(
    scenario: Any,
    *,
    scenarios_file: str,
    mode: str,
    episode_dir: Path,
    repeat: int = 0,
    perception: str = "cameras",
    rtf: float = 0.3,
    resolution: tuple[int, int] = (640, 360),
    checkpoint: str = "checkpoints/motionnet_small.pt",
    pools: str | None = None,
    actuation_delay_s: float = 0.0,
    camera_latency_s: float | None = None,
    arm_servo: str = ARM_SERVO,
    policy_set: str = "",
    timeout_s: float | None = None,
    env: dict[str, str] | None = None,
    record: bool = False,
) -> dict:
    """One episode of `scenario` (its repeat `repeat`) through the node graph; returns the row
    `run_episode` returns (the fields the graph can tell: outcome, times, detail, limit
    violations) plus `ros`: the launch's exit code and reason and which nodes crashed. `env`:
    the nodes' environment (default os.environ, with the project's localhost-only DDS defaults
    applied by the launcher). `record`: `recorder_node` records the episode (config/record/demo.yaml)
    into `episode_dir/bag`, and the row's `bag` names the folder. `policy_set`: DynamicGrasp
    overrides for dynamic_grasp_node (`KEY=VALUE[,KEY=VALUE...]`, `--set`)."""
    from dexh2r_sim.stack_launch import episode_launch

    episode_dir.mkdir(parents=True, exist_ok=True)
    results = episode_dir / "results"
    runner, log = episode_launch(
        scenario,
        scenarios_file=scenarios_file,
        mode=mode,
        repeat=repeat,
        perception=perception,
        rtf=rtf,
        resolution=resolution,
        checkpoint=checkpoint,
        pools=pools,
        results_dir=results,
        actuation_delay_s=actuation_delay_s,
        camera_latency_s=camera_latency_s,
        arm_servo=arm_servo,
        policy_set=policy_set,
        env=env,
        timeout_s=timeout_s,
        record_dir=episode_dir / "bag" if record else None,
    )
    result = runner.run()
    (episode_dir / "launch.log").write_text(log.getvalue())
    records = (
        [json.loads(line) for line in (results / "episodes.jsonl").read_text().splitlines() if line.strip()]
        if (results / "episodes.jsonl").is_file()
        else []
    )
    ros = {
        "exit_code": result.exit_code,
        "reason": result.reason,
        "crashed": [r.node.label for r in result.crashed],
        "log": str(episode_dir / "launch.log"),
    }
    if not records:
        # No outcome: the graph failed (a node crashed at start-up, or the launch timed out).
        return {
            "scenario": scenario.name,
            "object_id": scenario.object_id,
            "outcome": "error",
            "time_s": None,
            "time_to_handover_s": None,
            "detail": f"no episode record: {result.reason} (see {episode_dir / 'launch.log'})",
            "limit_violations": 0,
            "ros": ros,
        }
    r = records[0]
    bags = sorted((episode_dir / "bag").glob("*/metadata.yaml")) if record else []
    return {
        "scenario": r["scenario"],
        "object_id": r["object_id"],
        "outcome": r["outcome"],
        "time_s": r["time_s"],
        "time_to_handover_s": r["time_to_handover_s"],
        "detail": r["detail"],
        "limit_violations": int(r.get("limit_violations", 0)),
        "actuation_delay_s": r.get("actuation_delay_s", actuation_delay_s),
        "ros": ros,
        **({"bag": str(bags[-1].parent) if bags else None} if record else {}),
    }
