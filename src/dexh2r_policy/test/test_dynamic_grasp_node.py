"""dynamic_grasp_node over DDS: tracked object in, a 30 Hz target stream out (the policy at
10 Hz); the stream stops on stale and bad input."""

from __future__ import annotations

import itertools
import json
import time

import numpy as np
import pytest

pytestmark = pytest.mark.ros

CKPT = "checkpoints/motionnet_small.pt"  # the committed one (docs/policy_motionnet.md)
PERCEPTION_S = 0.06  # the observations' age on arrival: their stamps are this much in the past


def test_node_streams_targets_at_30_hz_and_stops_on_stale_or_bad_input(node_launcher, ros_node, tmp_path):
    from geometry_msgs.msg import Point, Pose, PoseArray, PoseStamped
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import JointState, PointCloud2
    from std_msgs.msg import String

    from dexh2r_core import msgs
    from dexh2r_core.paths import repo_root
    from dexh2r_core.robot.description import RobotDescription
    from dexh2r_core.testing import wait_for_topic_match
    from dexh2r_perception.object_tracker_node import pointcloud2_msg
    from dexh2r_policy.models.synthetic import _sphere, synthetic_pool

    synthetic_pool("ball", n_grasps=12, seed=0).save(tmp_path / "ball.npz")
    proc = node_launcher.start(
        "dexh2r_policy.dynamic_grasp_node:main",
        params={
            "checkpoint": str(repo_root() / CKPT),
            "pools": str(tmp_path),
            "object_id": "ball",  # rate_hz 10, publish_rate_hz 30: the defaults
            "collision_guard": "off",  # "ball" is a synthetic object: no library model
        },
    )
    robot = RobotDescription.load("ur5_shadow")
    reliable = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
    pubs = {
        "pose": ros_node.create_publisher(PoseStamped, "/perception/object/pose", reliable),
        "points": ros_node.create_publisher(PointCloud2, "/perception/object/points", reliable),
        "js": ros_node.create_publisher(JointState, "/joint_states", reliable),
        "kp": ros_node.create_publisher(PoseArray, "/perception/human_hand/keypoints", reliable),
        "giver": ros_node.create_publisher(PointCloud2, "/perception/giver/points", reliable),
    }
    got: dict[str, list] = {"wrist": [], "fingers": [], "state": []}
    ros_node.create_subscription(PoseStamped, "/policy/hand_target/wrist", got["wrist"].append, reliable)
    ros_node.create_subscription(JointState, "/policy/hand_target/fingers", got["fingers"].append, reliable)
    ros_node.create_subscription(String, "/policy/state", got["state"].append, reliable)
    for topic in ("/perception/object/pose", "/perception/object/points", "/joint_states"):
        wait_for_topic_match(ros_node, topic, "subscriber", timeout=60, processes=[proc])
    ball, _ = _sphere(1024, np.random.default_rng(0))
    sim = {"on": True, "nan": False, "lost": False, "giver": False, "frame": 0, "t0": time.monotonic()}

    def publish():
        if not sim["on"]:
            return
        sim["frame"] += 1
        if sim["lost"] and sim["frame"] % 2:  # what the object tracker sends for a lost frame
            pubs["points"].publish(pointcloud2_msg(np.zeros((0, 3), np.float32), time.time()))
            pubs["js"].publish(msgs.joint_state_msg(robot.joint_names, robot.home()))
            return
        T = np.eye(4)
        T[:3, 3] = [0.65, -0.05 + 0.05 * (time.monotonic() - sim["t0"]), 0.35]  # the giver moves it
        stamp = time.time() - PERCEPTION_S  # the frame was seen this long ago
        pts = ball + T[:3, 3]
        if sim["nan"]:
            pts = np.full_like(pts, np.nan)
        pubs["pose"].publish(msgs.pose_stamped_msg(T, stamp))
        pubs["points"].publish(pointcloud2_msg(pts.astype(np.float32), stamp))
        pubs["js"].publish(msgs.joint_state_msg(robot.joint_names, robot.home()))
        if sim["giver"]:  # the giver's hand 12 cm to the side: keypoints and its surface (7 points)
            kp = PoseArray(header=msgs.header(stamp, "world"))
            kp.poses = [Pose(position=Point(x=0.65, y=-0.17, z=0.35 + 0.005 * i)) for i in range(21)]
            pubs["kp"].publish(kp)
            surface = T[:3, 3] + np.array([0.0, -0.12, 0.0]) + 0.01 * np.eye(3)[[0, 1, 2, 0, 1, 2, 0]]
            pubs["giver"].publish(pointcloud2_msg(surface.astype(np.float32), stamp))

    ros_node.create_timer(1 / 30, publish)
    executor = SingleThreadedExecutor(context=ros_node.context)
    executor.add_node(ros_node)

    def spin(seconds):
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            assert proc.alive(), proc.log_tail()
            executor.spin_once(timeout_sec=0.01)

    try:
        spin(2.0)
        assert len(got["wrist"]) >= 10, proc.log_tail()
        # Targets at ~30 Hz while the policy steps at 10 Hz (a loaded 2-core machine: >= 20 Hz).
        n0, steps0 = len(got["wrist"]), json.loads(got["state"][-1].data)["steps"]
        spin(1.0)
        recent = got["wrist"][n0:]
        steps = json.loads(got["state"][-1].data)["steps"] - steps0
        assert len(recent) >= 20, (len(recent), proc.log_tail())
        assert 5 <= steps <= 13, steps  # the policy itself still at 10 Hz
        assert len(got["fingers"]) >= len(got["wrist"]) - 2
        # Interpolated between policy targets: stamped with the time their pose is for (never
        # past the newest target: at most frame_dt_s = 0.1 s ahead), with more distinct stamps
        # than policy steps (each 10 Hz target repeated would give one stamp per step).
        stamps = [msgs.from_time(m.header.stamp) for m in recent]
        assert all(b >= a - 1e-6 for a, b in itertools.pairwise(stamps)), stamps
        assert max(stamps) <= time.time() + 0.1 + 0.02
        assert len(set(stamps)) > steps + 1, (steps, stamps)
        assert got["fingers"][-1].name == [n for n in robot.hand_joint_names if "WRJ" not in n]
        T = msgs.pose_matrix(got["wrist"][-1].pose)
        assert np.all(np.isfinite(T)) and 0.1 < np.linalg.norm(T[:3, 3]) < 2.0
        state = json.loads(got["state"][-1].data)
        assert state["steps"] >= 10 and state["step_ms"] < 50
        # The lead on the moving object covers the compute latency: observation age + step.
        assert PERCEPTION_S <= state["latency_s"] < PERCEPTION_S + 0.1, state
        assert state["giver_points"] == 0  # no keypoints, no giver surface
        sim["giver"] = True  # the giver's measured hand reaches the policy with its keypoints
        spin(0.6)
        assert json.loads(got["state"][-1].data)["giver_points"] == 7, proc.log_tail()
        sim["giver"] = False
        sim["nan"] = True  # bad input: no target, the state says why
        spin(0.5)
        n = len(got["wrist"])
        spin(0.5)
        assert len(got["wrist"]) == n
        assert "error" in json.loads(got["state"][-1].data)
        sim["nan"] = False  # perception back: the stream resumes
        spin(1.0)
        n = len(got["wrist"])
        spin(1.0)
        assert len(got["wrist"]) - n >= 20, proc.log_tail()
        # The tracker loses every other frame (no pose, an empty cloud): the empty clouds are no
        # observation, the stream goes on from the tracked frames, nothing is bad input.
        sim["lost"] = True
        spin(0.5)
        n, bad = len(got["wrist"]), json.loads(got["state"][-1].data)["bad"]
        spin(1.0)
        assert len(got["wrist"]) - n >= 20, proc.log_tail()
        assert json.loads(got["state"][-1].data)["bad"] == bad, proc.log_tail()
        sim["lost"] = False
        sim["on"] = False  # perception stops: stale, the stream stops (no old target repeated)
        spin(0.6)
        n, nf = len(got["wrist"]), len(got["fingers"])
        spin(0.5)
        assert len(got["wrist"]) == n and len(got["fingers"]) == nf
        assert json.loads(got["state"][-1].data).get("stale")
    finally:
        executor.remove_node(ros_node)
        executor.shutdown(timeout_sec=1.0)


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"checkpoint": "/nonexistent/model.pt", "object_id": "ball"}, "checkpoint not found"),
        ({}, "object_id: required"),
        ({"object_id": "no/such_object", "pools": "/tmp"}, "no grasp pool for object 'no/such_object'"),
        ({"object_id": "ball", "collision_guard": "maybe"}, "collision_guard: 'checkpoint', 'on' or 'off'"),
        ({"object_id": "ball", "collision_guard": "on"}, "needs the object model of 'ball'"),
        ({"object_id": "ball", "policy_set": "stall_radius_m=0.3,no_such_key=1"}, "policy_set: no_such_key"),
        (
            {"object_id": "ball", "style": "closed_loop", "policy_set": "lift_frames"},
            "policy_set lift_frames",
        ),
    ],
)
def test_start_up_errors_exit_with_the_cause(node_launcher, params, message, tmp_path):
    from dexh2r_policy.models.synthetic import synthetic_pool

    synthetic_pool("ball", n_grasps=4, seed=0).save(tmp_path / "ball.npz")
    params = {"pools": str(tmp_path), **params}
    proc = node_launcher.start("dexh2r_policy.dynamic_grasp_node:main", params=params)
    assert proc.popen.wait(timeout=60) == 2
    assert message in proc.log_text()
