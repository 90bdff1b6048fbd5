"""The closed loop over DDS (`dexh2r eval closed-loop --ros`, launch/handover_sim.launch.xml).

- The node graph (sim_node, dynamic_grasp_node, controller_node, each its own process on the
  sim's /clock) and the in-process loop agree on a small set: the same outcome per scenario and
  time-to-handover within 1.5 s, no limit violations on either path.
- The policy process killed mid-approach (SIGKILL): the controller's watchdog brings the arm
  command to a hold and it stays there, the launcher reports the death and the sim and the
  controller keep running (the policy node is not required in the sim launch file).

True perception (`perception:=truth`): the trackers are covered by the perception and replay
tests; here the graph between perception and the actuators is under test, and true poses keep
both paths' inputs the same. The pools are made here, small (the full pools are data made by
command): the whole-hand pool and 48 pinches of each object, enough for both scenarios to be
taken in-process.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time

import numpy as np
import pytest

from dexh2r_core.testing import ros_test_node
from dexh2r_policy.closed_loop import main

# ~3 min: pools, then one launch per episode at half real time. On the replay tests' worker, so
# that these node graphs never run beside the real-time replay gates.
pytestmark = [pytest.mark.ros, pytest.mark.slow, pytest.mark.xdist_group("replay")]

SCENARIOS = "config/scenarios/easy.yaml"  # the first two: easy_box_center, easy_can_right
RTF = 0.5


@pytest.fixture(scope="module")
def pools(tmp_path_factory):
    from dexh2r_policy.datagen import main as datagen

    out = tmp_path_factory.mktemp("pools")
    objects = "prim/box_small,prim/cylinder_can"
    assert datagen(["grasps", "--objects", objects, "--candidates", "20", "--out", str(out)]) == 0
    pinch = ["grasps", "--family", "pinch", "--objects", objects, "--candidates", "48", "--out", str(out)]
    assert datagen(pinch) == 0
    return out


def _rows(folder) -> dict[str, dict]:
    rows = [json.loads(line) for line in (folder / "episodes.jsonl").read_text().splitlines()]
    return {r["scenario"]: r for r in rows}


def test_node_graph_agrees_with_the_in_process_loop(pools, tmp_path):
    common = ["--scenarios", SCENARIOS, "--episodes", "2", "--perception", "truth", "--pools", str(pools)]
    common += ["--actuation-delay", "0"]
    assert main([*common, "--json", str(tmp_path / "inproc.json")]) == 0
    assert main([*common, "--ros", "--rtf", str(RTF), "--json", str(tmp_path / "ros.json")]) == 0
    inproc, ros = _rows(tmp_path / "inproc"), _rows(tmp_path / "ros")
    summary = json.loads((tmp_path / "ros.json").read_text())
    assert summary["path"] == "ros" and summary["errors"] == 0 and summary["limit_violations"] == 0
    assert json.loads((tmp_path / "inproc.json").read_text())["limit_violations"] == 0
    assert set(inproc) == set(ros) == {"easy_box_center", "easy_can_right"}
    for name, a in inproc.items():
        b = ros[name]
        assert b["ros"]["crashed"] == [], b["ros"]
        assert a["outcome"] == b["outcome"], (
            f"{name}: in-process {a['outcome']}, ros {b['outcome']} ({b['detail']})"
        )
        if a["outcome"] == "success":
            assert abs(a["time_to_handover_s"] - b["time_to_handover_s"]) <= 1.5, (name, a, b)


def test_killed_policy_process_watchdog_holds_and_the_launcher_reports_it(pools, tmp_path):
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from rosgraph_msgs.msg import Clock
    from std_msgs.msg import String
    from trajectory_msgs.msg import JointTrajectory

    from dexh2r_sim.scenario import load_scenarios
    from dexh2r_sim.stack_launch import episode_launch

    scenario = {s.name: s for s in load_scenarios(SCENARIOS)}["easy_can_right"]
    runner, log = episode_launch(
        scenario,
        scenarios_file="scenarios/easy.yaml",
        mode="easy",
        perception="truth",
        rtf=RTF,
        pools=str(pools),
        results_dir=tmp_path / "results",
        timeout_s=90.0,
    )
    result: dict = {}
    thread = threading.Thread(target=lambda: result.setdefault("r", runner.run()), daemon=True)
    # (wall time, sim time of the newest /clock, positions, velocities): the watchdog and the brake
    # act in sim time, which a loaded machine slows below RTF (a wall-time bound failed that way).
    commands: list[tuple[float, float, np.ndarray, np.ndarray]] = []
    phases: list[str] = []
    sim_now = [0.0]
    reliable = QoSProfile(depth=50, reliability=ReliabilityPolicy.RELIABLE)
    with ros_test_node() as node:
        node.create_subscription(
            Clock, "/clock", lambda m: sim_now.__setitem__(0, m.clock.sec + 1e-9 * m.clock.nanosec), 10
        )
        node.create_subscription(
            JointTrajectory,
            "/arm_controller/joint_trajectory",
            lambda m: commands.append(
                (
                    time.monotonic(),
                    sim_now[0],
                    np.array(m.points[0].positions),
                    np.array(m.points[0].velocities),
                )
            ),
            reliable,
        )
        node.create_subscription(
            String, "/policy/state", lambda m: phases.append(json.loads(m.data).get("phase", "")), reliable
        )
        executor = SingleThreadedExecutor(context=node.context)
        executor.add_node(node)
        thread.start()
        policy = next(r for r in runner.runs if r.node.label == "dynamic_grasp")
        deadline = time.monotonic() + 90.0
        # Kill it once the arm is moving on its targets, in the approach.
        moving = 0
        while time.monotonic() < deadline:
            executor.spin_once(timeout_sec=0.05)
            moving = sum(1 for *_, v in commands[-20:] if np.abs(v).max() > 1e-3)
            if phases and phases[-1] == "approach" and moving >= 10:
                break
        assert phases and phases[-1] == "approach" and moving >= 10, (phases[-5:], len(commands))
        killed_at, killed_sim = time.monotonic(), sim_now[0]
        os.kill(policy.process.pid, signal.SIGKILL)
        # 0.1 s watchdog + the brake, in sim time, at RTF; then watch the hold for 2 s of sim time.
        while time.monotonic() < killed_at + 3.0 / RTF:
            executor.spin_once(timeout_sec=0.05)
        executor.remove_node(node)
        executor.shutdown(timeout_sec=1.0)
    thread.join(timeout=120.0)
    after = [(sim, q, v) for t, sim, q, v in commands if t > killed_at]
    assert len(after) > 100, "the controller kept publishing after the policy died"
    still = next((k for k, (_, _, v) in enumerate(after) if np.abs(v).max() == 0.0), None)
    assert still is not None, "the arm command never came to a hold"
    held = after[still:]
    # Watchdog 0.1 s + brake well under 0.5 s, in sim time (+ one /clock period of slack).
    assert killed_sim > 0 and held[0][0] - killed_sim <= 0.6 + 0.1, (killed_sim, held[0][0])
    assert len(held) > 50 and max(np.abs(q - held[0][1]).max() for _, q, _ in held) < 1e-6
    text = log.getvalue()
    assert "node 'dynamic_grasp' died with exit" in text and "SIGKILL" in text, text[-2000:]
    r = result["r"]
    assert [x.node.label for x in r.crashed] == ["dynamic_grasp"]
    sim = next(x for x in r.runs if x.node.label == "sim")
    assert sim.returncode == 0, "the sim ran the episode to its end"
    record = json.loads((tmp_path / "results" / "episodes.jsonl").read_text().splitlines()[0])
    assert record["outcome"] in ("timeout", "hit-human", "drop", "success", "safety-stop")
    assert record["outcome"] != "hit-human", record
    assert record["limit_violations"] == 0
