"""Teleop -> record -> `dexh2r dataset convert` -> MotionNet fine-tuning, end to end.

A short `dexh2r teleop --source sim` session (`sim_teleop.run_sim_teleop`: the cell's giver plays
the operator, MediaPipe -> retargeting -> the controller -> the cell) publishes what the live
stack would over DDS: `/joint_states` after every control tick, the controller's JTC commands, the
hand tracker's `/perception/human_hand/keypoints` and `/perception/human_hand/wrist`, and the
sim's ground truth `/sim/object/pose` and `/sim/giver/keypoints` (teleop runs no object tracker, so
the object pose comes from the sim and the cloud from the object's surface samples). The real
`recorder_node` (a separate process, started and stopped through its services) records them; the
bag is converted and `checkpoints/motionnet_small.pt` is fine-tuned on it for a few steps.

The chain is observed, not changed: the cell and the hand tracker that `run_sim_teleop` builds are
replaced by subclasses that publish after doing exactly what the originals do.
"""

from __future__ import annotations

import csv
import json
import math
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

pytestmark = [pytest.mark.ros, pytest.mark.slow]

RECORDER = "dexh2r_teleop.recorder_node:main"
TOPICS = {
    "/joint_states": ("sensor_msgs/msg/JointState", 90),
    "/arm_controller/joint_trajectory": ("trajectory_msgs/msg/JointTrajectory", 0),
    "/hand_controller/joint_trajectory": ("trajectory_msgs/msg/JointTrajectory", 0),
    "/perception/human_hand/keypoints": ("geometry_msgs/msg/PoseArray", 30),
    "/perception/human_hand/wrist": ("geometry_msgs/msg/PoseStamped", 0),
    "/sim/object/pose": ("geometry_msgs/msg/PoseStamped", 30),
    "/sim/giver/keypoints": ("geometry_msgs/msg/PoseArray", 30),
}
SCENARIO = ("scenarios/hard.yaml", "hard_drift_slow_box", "prim/box_small")


def _wait_counts(node, proc, want: dict[str, int], timeout: float) -> dict:
    """Spin on /recorder/status until every topic's recorded count reaches `want`."""
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
    from std_msgs.msg import String

    latest: dict = {}
    qos = QoSProfile(
        depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL
    )
    sub = node.create_subscription(
        String, "/recorder/status", lambda m: latest.update(json.loads(m.data)), qos
    )
    executor = SingleThreadedExecutor(context=node.context)
    executor.add_node(node)
    deadline = time.monotonic() + timeout
    try:
        while not all(latest.get("counts", {}).get(k, 0) >= v for k, v in want.items()):
            assert proc.alive, f"recorder died:\n{proc.log_tail()}"
            assert time.monotonic() < deadline, f"recorder counts {latest.get('counts')} never reached {want}"
            executor.spin_once(timeout_sec=0.05)
    finally:
        executor.remove_node(node)
        executor.shutdown(timeout_sec=1.0)
        node.destroy_subscription(sub)
    return latest


def test_teleop_recording_converts_and_fine_tunes_motionnet(tmp_path, ros_node, node_launcher, monkeypatch):
    from geometry_msgs.msg import PoseArray, PoseStamped
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import JointState
    from trajectory_msgs.msg import JointTrajectory as JointTrajectoryMsg

    import dexh2r_perception.hand_tracking as hand_tracking
    import dexh2r_sim.cell as sim_cell
    from dexh2r_core import msgs
    from dexh2r_core.paths import config_path
    from dexh2r_core.testing import call_trigger, wait_for_topic_match
    from dexh2r_perception.hand_tracker_node import keypoints_pose_array
    from dexh2r_policy.data.dexh2r_layout import DexH2RDataset
    from dexh2r_policy.motionnet import read_checkpoint
    from dexh2r_policy.train import main as train_main
    from dexh2r_teleop import dataset_convert, recorder
    from dexh2r_teleop.sim_teleop import run_sim_teleop

    t_test = time.perf_counter()
    # ---- the real recorder, driven by its services --------------------------------------------
    config = tmp_path / "record_teleop.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "output_dir": str(tmp_path / "episodes"),
                "episode_prefix": "teleop",
                "topics": [{"name": n, "type": t, "rate_hz": hz} for n, (t, hz) in TOPICS.items()],
            }
        )
    )
    proc = node_launcher.start(
        RECORDER,
        params={
            "config": str(config),
            "output_dir": str(tmp_path / "episodes"),
            "operator": "sim_operator",
            "object": SCENARIO[2],
            "scenario": SCENARIO[1],
            "status_period_s": 0.1,
        },
    )
    reliable = QoSProfile(depth=200, reliability=ReliabilityPolicy.RELIABLE)
    types = {
        "sensor_msgs/msg/JointState": JointState,
        "trajectory_msgs/msg/JointTrajectory": JointTrajectoryMsg,
        "geometry_msgs/msg/PoseArray": PoseArray,
        "geometry_msgs/msg/PoseStamped": PoseStamped,
    }
    pubs = {n: ros_node.create_publisher(types[t], n, reliable) for n, (t, _) in TOPICS.items()}
    sent = dict.fromkeys(TOPICS, 0)

    def publish(topic: str, msg) -> None:
        pubs[topic].publish(msg)
        sent[topic] += 1

    for topic in TOPICS:  # the recorder subscribes once it sees the publishers
        wait_for_topic_match(ros_node, topic, "subscriber", timeout=60, processes=[proc])

    # ---- the teleop chain, observed: what the live nodes would publish --------------------------
    class RecordedCell(sim_cell.HandoverCell):
        def step_until(self, t: float) -> None:
            super().step_until(t)
            names, q, qd, effort = self.joint_state()
            publish("/joint_states", msgs.joint_state_msg(names, q, qd, effort, stamp_s=self.time))

        def render(self):
            frames = super().render()
            publish("/sim/object/pose", msgs.pose_stamped_msg(self.object_pose(), self.time))
            publish("/sim/giver/keypoints", keypoints_pose_array(self.giver_keypoints(), self.time))
            return frames

        def command_arm(self, trajectory) -> None:
            super().command_arm(trajectory)
            publish("/arm_controller/joint_trajectory", _jtc(trajectory))

        def command_hand(self, trajectory) -> None:
            super().command_hand(trajectory)
            publish("/hand_controller/joint_trajectory", _jtc(trajectory))

    def _jtc(trajectory) -> JointTrajectoryMsg:
        points = trajectory.points
        return msgs.joint_trajectory_msg(
            trajectory.joint_names,
            [p.time_from_start for p in points],
            [p.positions for p in points],
            [p.velocities for p in points],
        )

    class RecordedTracker(hand_tracking.HandTracker):
        def process(self, stamp, frames):
            est = super().process(stamp, frames)
            if est is not None:
                publish("/perception/human_hand/keypoints", keypoints_pose_array(est.keypoints, stamp))
                if np.isfinite(est.wrist).all():
                    publish("/perception/human_hand/wrist", msgs.pose_stamped_msg(est.wrist, stamp))
            return est

    monkeypatch.setattr(sim_cell, "HandoverCell", RecordedCell)
    monkeypatch.setattr(hand_tracking, "HandTracker", RecordedTracker)

    bag = Path(call_trigger(ros_node, "/recorder/start"))
    t_sim = time.perf_counter()
    teleop = run_sim_teleop(
        tmp_path / "teleop",
        seconds=2.5,
        scenario=SCENARIO[1],
        scenarios_file=SCENARIO[0],
        video=False,
        quiet=True,
    )
    sim_s = time.perf_counter() - t_sim
    assert teleop["tracked_fraction"] > 0.8, teleop
    _wait_counts(ros_node, proc, sent, timeout=30)
    summary = json.loads(call_trigger(ros_node, "/recorder/stop"))
    assert summary["status"] == recorder.COMPLETE and summary["bag"] == str(bag)
    info = recorder.bag_info(bag)
    assert info.counts == sent, "every published message is in the bag"
    assert info.episode["object"] == SCENARIO[2]

    # ---- dataset convert ----------------------------------------------------------------------
    data = tmp_path / "dataset"
    report_path = tmp_path / "convert_report.json"
    t_convert = time.perf_counter()
    code = dataset_convert.main(
        [
            "convert",
            str(tmp_path / "episodes"),
            "-o",
            str(data),
            "--points",
            "256",
            "--report",
            str(report_path),
        ]
    )
    convert_s = time.perf_counter() - t_convert
    assert code == 0, report_path.read_text() if report_path.exists() else "no report"
    report = json.loads(report_path.read_text())
    (row,) = report["episodes"]
    assert row["topics"]["object_pose"] == "/sim/object/pose"  # no object tracker in teleop
    assert row["topics"]["giver_keypoints"] == "/perception/human_hand/keypoints"  # MediaPipe's
    assert row["cloud"]["surface"] == row["frames"]
    # ~2.5 s of tracked teleop (tracking starts a few frames in) at 10 Hz.
    assert 18 <= row["frames"] <= 26, row
    ds = DexH2RDataset(data)
    (sid,) = ds.sequence_ids("motionnet_train")
    seq = ds.load(sid)
    assert str(sid) == f"sim_operator/prim__box_small/{bag.name}"
    assert seq.qpos.shape == (row["frames"], 30) and seq.giver_keypoints.shape == (row["frames"], 21, 3)
    assert seq.grasp_begin_frame >= 8, "enough approach frames for MotionNet windows"
    # The converted hand root follows the robot: frame-to-frame moves of a teleoperated palm.
    steps = np.linalg.norm(np.diff(seq.qpos[:, :3], axis=0), axis=1)
    assert steps.max() < 0.1 and steps.sum() > 0.005

    # ---- MotionNet fine-tuned from the committed checkpoint -------------------------------------
    run = tmp_path / "run"
    init = Path(__file__).resolve().parents[3] / "checkpoints" / "motionnet_small.pt"
    # A synthetic grasp pool: a fresh clone has no data/pools, and this test is about the data path.
    from dexh2r_policy.models.synthetic import synthetic_pool

    pools = tmp_path / "pools"
    pools.mkdir()
    synthetic_pool(SCENARIO[2], n_grasps=24, seed=0).save(pools / f"{SCENARIO[2].replace('/', '__')}.npz")
    t_train = time.perf_counter()
    code = train_main(
        [
            "--config", str(config_path("policy/motionnet_small.yaml")),
            "--data", str(data), "--pools", str(pools), "--out", str(run), "--steps", "3",
            "--init", str(init),
            "--set", "run.batch_size=8", "--set", "run.log_every=1", "--no-progress",
        ]
    )  # fmt: skip
    train_s = time.perf_counter() - t_train
    assert code == 0
    rows = list(csv.DictReader((run / "log.csv").open()))
    losses = [float(r["train_loss"]) for r in rows]
    assert len(losses) == 3 and all(math.isfinite(v) for v in losses), losses
    ckpt = read_checkpoint(run / "last.pt")
    assert ckpt["step"] == 3
    # Started from the committed weights: 3 Adam steps (lr 5e-4) move no weight by more than 1e-2.
    start = read_checkpoint(init)["model"]
    moved = max(
        float((ckpt["model"][k].float() - v.float()).abs().max())
        for k, v in start.items()
        if v.is_floating_point() and "running" not in k and "num_batches" not in k
    )
    assert moved < 1e-2, moved
    print(
        f"e2e: teleop {sim_s:.1f} s, convert {convert_s:.1f} s, train {train_s:.1f} s, "
        f"total {time.perf_counter() - t_test:.1f} s; {row['frames']} frames, losses {losses}"
    )
