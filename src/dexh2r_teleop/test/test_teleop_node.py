"""teleop_node over DDS: tracked hand in, controller targets out; clutch, deadman and bad input."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest

pytestmark = pytest.mark.ros


def test_teleop_node_follows_the_clutched_hand_and_stops_on_deadman_release(node_launcher, ros_node):
    from geometry_msgs.msg import Point, Pose, PoseArray, PoseStamped
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import JointState
    from std_msgs.msg import Bool, String
    from std_srvs.srv import Trigger

    from dexh2r_control.ik import ArmIk
    from dexh2r_core import msgs
    from dexh2r_core.robot.description import RobotDescription
    from dexh2r_core.testing import wait_for_topic_match
    from dexh2r_sim.giver import hand_keypoints_from_angles

    robot = RobotDescription.load("ur5_shadow")
    home = robot.home()
    palm = ArmIk(robot, robot.config.hand.palm_link).frame_pose(home)
    proc = node_launcher.start(
        "dexh2r_teleop.teleop_node:main", params={"finger_scale": 1.0, "engage_after_frames": 2}
    )
    reliable = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
    pubs = {
        "js": ros_node.create_publisher(JointState, "/joint_states", reliable),
        "kp": ros_node.create_publisher(PoseArray, "/perception/human_hand/keypoints", reliable),
        "wrist": ros_node.create_publisher(PoseStamped, "/perception/human_hand/wrist", reliable),
        "deadman": ros_node.create_publisher(Bool, "/teleop/deadman", reliable),
    }
    got: dict[str, list] = {"wrist": [], "fingers": [], "state": []}
    ros_node.create_subscription(PoseStamped, "/policy/hand_target/wrist", got["wrist"].append, reliable)
    ros_node.create_subscription(JointState, "/policy/hand_target/fingers", got["fingers"].append, reliable)
    ros_node.create_subscription(String, "/teleop/state", got["state"].append, reliable)
    for topic in ("/perception/human_hand/keypoints", "/perception/human_hand/wrist", "/teleop/deadman"):
        wait_for_topic_match(ros_node, topic, "subscriber", timeout=60, processes=[proc])
    op = {"y": 0.0, "pressed": True, "kp": hand_keypoints_from_angles({})}

    def publish():
        pubs["js"].publish(msgs.joint_state_msg(robot.joint_names, home))
        pubs["deadman"].publish(Bool(data=op["pressed"]))
        W = np.eye(4)
        W[:3, 3] = [0.9, op["y"], 0.4]
        stamp = time.time()
        pubs["wrist"].publish(msgs.pose_stamped_msg(W, stamp))
        arr = PoseArray(header=msgs.header(stamp, "world"))
        kp = op["kp"] + W[:3, 3]
        arr.poses = [Pose(position=Point(x=float(x), y=float(y), z=float(z))) for x, y, z in kp]
        pubs["kp"].publish(arr)

    ros_node.create_timer(0.05, publish)
    executor = SingleThreadedExecutor(context=ros_node.context)
    executor.add_node(ros_node)

    def spin(seconds):
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            executor.spin_once(timeout_sec=0.01)

    def call(name):
        client = ros_node.create_client(Trigger, name)
        assert client.wait_for_service(timeout_sec=20), name
        future = client.call_async(Trigger.Request())
        executor.spin_until_future_complete(future, timeout_sec=10)
        return future.result()

    try:
        spin(0.5)
        assert not got["wrist"], "nothing is sent before the clutch is engaged"
        assert call("/teleop/engage").success
        spin(0.5)
        assert got["wrist"], proc.log_tail()
        first = msgs.pose_matrix(got["wrist"][0].pose)
        np.testing.assert_allclose(first[:3, 3], palm[:3, 3], atol=1e-6)  # clutch in: no jump
        assert got["fingers"][-1].name == robot.hand_joint_names
        op["y"] = 0.05  # the operator moves 5 cm: the palm target follows 1:1
        spin(0.5)
        moved = msgs.pose_matrix(got["wrist"][-1].pose)
        np.testing.assert_allclose(moved[:3, 3] - palm[:3, 3], [0.0, 0.05, 0.0], atol=1e-6)
        op["pressed"] = False
        spin(0.3)
        n = len(got["wrist"])
        spin(0.5)
        assert len(got["wrist"]) == n, "deadman released: no more targets"
        assert json.loads(got["state"][-1].data)["reason"] == "deadman released"
        op["pressed"] = True
        spin(0.3)
        assert len(got["wrist"]) == n, "pressing it again needs an explicit engage"
        assert call("/teleop/engage").success
        op["kp"] = np.full((21, 3), np.nan)  # bad input: nothing sent, the reason says why
        spin(0.5)
        assert len(got["wrist"]) == n
        assert "NaN" in json.loads(got["state"][-1].data)["reason"]
    finally:
        executor.remove_node(ros_node)
        executor.shutdown(timeout_sec=1.0)
