"""controller_node over DDS: targets in, JointTrajectory on both controllers; NaN holds; e-stop latches."""

import json
import time

import numpy as np
import pytest

pytestmark = pytest.mark.ros

ARM = "/arm_controller/joint_trajectory"
HAND = "/hand_controller/joint_trajectory"


def _collect(node, topic, seconds, msg_type):
    """Spin `node` for `seconds` (its timers keep publishing) and return what arrived on `topic`."""
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.qos import QoSProfile, ReliabilityPolicy

    got = []
    sub = node.create_subscription(
        msg_type, topic, got.append, QoSProfile(depth=500, reliability=ReliabilityPolicy.RELIABLE)
    )
    executor = SingleThreadedExecutor(context=node.context)
    executor.add_node(node)
    try:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            executor.spin_once(timeout_sec=0.01)
    finally:
        executor.remove_node(node)
        executor.shutdown(timeout_sec=1.0)
        node.destroy_subscription(sub)
    return got


def test_controller_node_streams_holds_on_nan_and_latches_estop(node_launcher, ros_node):
    from geometry_msgs.msg import PoseStamped
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import JointState
    from std_msgs.msg import String
    from trajectory_msgs.msg import JointTrajectory

    from dexh2r_control.ik import ArmIk
    from dexh2r_core import msgs
    from dexh2r_core.robot.description import RobotDescription
    from dexh2r_core.testing import call_trigger, wait_for_messages

    robot = RobotDescription.load("ur5_shadow")
    home = robot.home()
    palm = ArmIk(robot, robot.config.hand.palm_link).frame_pose(home)
    proc = node_launcher.start("controller_node", params={"rate_hz": 100.0})

    reliable = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
    js_pub = ros_node.create_publisher(JointState, "/joint_states", reliable)
    wrist_pub = ros_node.create_publisher(PoseStamped, "/policy/hand_target/wrist", reliable)
    fingers_pub = ros_node.create_publisher(JointState, "/policy/hand_target/fingers", reliable)
    state = {"wrist": None}

    def publish():
        js_pub.publish(msgs.joint_state_msg(robot.joint_names, home))
        if state["wrist"] is not None:
            wrist_pub.publish(state["wrist"])

    ros_node.create_timer(0.02, publish)

    # 1. Only NaN targets: commands stream on both topics, and nothing moves.
    bad = PoseStamped()
    bad.pose.position.x = float("nan")
    bad.pose.orientation.w = 1.0
    state["wrist"] = bad
    first = wait_for_messages(
        ros_node, ARM, JointTrajectory, count=1, timeout=60, processes=[proc], qos=reliable
    )
    assert first[0].joint_names == robot.arm_joint_names
    hand = wait_for_messages(ros_node, HAND, JointTrajectory, count=1, timeout=10, processes=[proc])
    assert hand[0].joint_names == robot.hand_joint_names
    held = _collect(ros_node, ARM, 0.5, JointTrajectory)
    assert len(held) > 10
    for m in held:
        np.testing.assert_allclose(m.points[0].positions, home[:6], atol=1e-9)
        assert np.all(np.array(m.points[0].velocities) == 0.0)
    assert "rejected wrist target" in proc.log_text()

    # 2. A valid target 5 cm away plus a finger target: arm and hand move.
    target = palm.copy()
    target[0, 3] += 0.05
    state["wrist"] = msgs.pose_stamped_msg(target, 0.0)
    fingers_pub.publish(msgs.joint_state_msg(["rh_FFJ2"], [0.6]))
    moving = _collect(ros_node, ARM, 1.0, JointTrajectory)
    last = np.array(moving[-1].points[0].positions)
    assert np.max(np.abs(last - home[:6])) > 0.01
    hand_msgs = _collect(ros_node, HAND, 0.5, JointTrajectory)
    ff1 = robot.hand_joint_names.index("rh_FFJ1")
    assert hand_msgs[-1].points[0].positions[ff1] > 0.1  # coupled distal joint follows rh_FFJ2

    # 3. E-stop: latched, the command comes to rest although targets keep coming.
    call_trigger(ros_node, "/controller/estop", timeout=10.0)  # raises unless success
    stopped = _collect(ros_node, ARM, 1.5, JointTrajectory)
    tail = stopped[-20:]
    assert all(np.all(np.array(m.points[0].velocities) == 0.0) for m in tail)
    assert all(m.points[0].positions == tail[0].points[0].positions for m in tail)
    states = _collect(ros_node, "/handover/state", 0.4, String)
    assert states and json.loads(states[-1].data)["estop"] is True

    # 4. Reset: the latch clears, and fresh targets move the robot again.
    call_trigger(ros_node, "/controller/reset", timeout=10.0)
    target[0, 3] += 0.05
    state["wrist"] = msgs.pose_stamped_msg(target, 0.0)
    resumed = _collect(ros_node, ARM, 1.0, JointTrajectory)
    assert np.max(np.abs(np.array(resumed[-1].points[0].positions) - tail[-1].points[0].positions)) > 0.005


def test_deadman_loss_brakes_and_its_return_needs_a_new_target(node_launcher, ros_node):
    from geometry_msgs.msg import PoseStamped
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import JointState
    from std_msgs.msg import Bool, String
    from trajectory_msgs.msg import JointTrajectory

    from dexh2r_control.ik import ArmIk
    from dexh2r_core import msgs
    from dexh2r_core.robot.description import RobotDescription
    from dexh2r_core.testing import wait_for_messages

    robot = RobotDescription.load("ur5_shadow")
    home = robot.home()
    palm = ArmIk(robot, robot.config.hand.palm_link).frame_pose(home)
    proc = node_launcher.start(
        "controller_node", params={"rate_hz": 100.0, "deadman_topic": "/teleop/deadman"}
    )
    reliable = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
    js_pub = ros_node.create_publisher(JointState, "/joint_states", reliable)
    wrist_pub = ros_node.create_publisher(PoseStamped, "/policy/hand_target/wrist", reliable)
    deadman_pub = ros_node.create_publisher(Bool, "/teleop/deadman", reliable)
    state = {"pressed": True, "t0": time.monotonic()}

    def publish():
        js_pub.publish(msgs.joint_state_msg(robot.joint_names, home))
        if state["pressed"]:
            deadman_pub.publish(Bool(data=True))
        # The operator's hand keeps moving: a target 0.05 m/s along +y.
        target = palm.copy()
        target[1, 3] += 0.05 * (time.monotonic() - state["t0"])
        wrist_pub.publish(msgs.pose_stamped_msg(target, 0.0))

    ros_node.create_timer(0.05, publish)  # the deadman's 20 Hz
    wait_for_messages(ros_node, ARM, JointTrajectory, count=1, timeout=60, processes=[proc], qos=reliable)
    moving = _collect(ros_node, ARM, 1.0, JointTrajectory)
    assert np.max(np.abs(moving[-1].points[0].velocities)) > 1e-3, "following the operator"
    state["pressed"] = False
    stopped = _collect(ros_node, ARM, 1.0, JointTrajectory)
    tail = stopped[-20:]
    assert all(np.all(np.array(m.points[0].velocities) == 0.0) for m in tail), "braked to a hold"
    states = [json.loads(m.data) for m in _collect(ros_node, "/handover/state", 0.4, String)]
    assert states and states[-1]["estop"] is True
    assert "deadman released" in proc.log_text()
    state["pressed"] = True  # back: the latch clears and the fresh targets move the robot again
    resumed = _collect(ros_node, ARM, 1.0, JointTrajectory)
    assert np.max(np.abs(np.array(resumed[-1].points[0].positions) - tail[-1].points[0].positions)) > 1e-3


def test_dry_run_publishes_commands_on_dry_run_topics_only(node_launcher, ros_node):
    from geometry_msgs.msg import PoseStamped
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import JointState
    from trajectory_msgs.msg import JointTrajectory

    from dexh2r_control.ik import ArmIk
    from dexh2r_core import msgs
    from dexh2r_core.robot.description import RobotDescription
    from dexh2r_core.testing import wait_for_messages

    robot = RobotDescription.load("ur5_shadow")
    home = robot.home()
    target = ArmIk(robot, robot.config.hand.palm_link).frame_pose(home)
    target[0, 3] += 0.05
    proc = node_launcher.start("controller_node", params={"rate_hz": 100.0, "dry_run": True})
    reliable = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
    js_pub = ros_node.create_publisher(JointState, "/joint_states", reliable)
    wrist_pub = ros_node.create_publisher(PoseStamped, "/policy/hand_target/wrist", reliable)

    def publish():
        js_pub.publish(msgs.joint_state_msg(robot.joint_names, home))
        wrist_pub.publish(msgs.pose_stamped_msg(target, 0.0))

    ros_node.create_timer(0.02, publish)
    wait_for_messages(
        ros_node, ARM + "/dry_run", JointTrajectory, count=1, timeout=60, processes=[proc], qos=reliable
    )
    moving = _collect(ros_node, ARM + "/dry_run", 1.0, JointTrajectory)
    assert np.max(np.abs(np.array(moving[-1].points[0].positions) - home[:6])) > 0.01, "commands follow"
    assert _collect(ros_node, HAND + "/dry_run", 0.3, JointTrajectory)
    # Nothing is offered on the actuator topics.
    assert ros_node.count_publishers(ARM) == 0 and ros_node.count_publishers(HAND) == 0
    assert "DRY RUN" in proc.log_text()


def test_brake_tail_stops_within_the_joint_limits():
    """The synchronised brake takes as long as its slowest joint: a joint braking over that
    time from near its limit would stop past it (seen over DDS: rh_WRJ2 commanded 0.143 rad,
    limit 0.14). The tail's stop position stays inside the limits; a still robot has no tail."""
    from dexh2r_control.controller_node import brake_tail

    q, v, a_max = np.array([0.0, 0.139]), np.array([2.0, 0.1]), np.array([1.0, 1.0])
    lower, upper = np.array([-3.0, -0.489]), np.array([3.0, 0.14])
    t_stop, stop = brake_tail(q, v, a_max, lower, upper)
    assert t_stop == 2.0  # the first joint's 2 s
    assert stop[0] == 2.0 and stop[1] == 0.14  # unclipped: 0.139 + 0.5 * 0.1 * 2 = 0.239
    assert brake_tail(q, np.zeros(2), a_max, lower, upper) is None
