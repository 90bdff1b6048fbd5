"""sim_node as a separate process over DDS: cameras, joint states, JTC commands, bad input."""

import time

import numpy as np
import pytest

pytestmark = pytest.mark.ros


def _joint_positions(ros_node, names, timeout=15.0):
    from sensor_msgs.msg import JointState

    from dexh2r_core.testing import wait_for_messages

    msg = wait_for_messages(ros_node, "/joint_states", JointState, count=1, timeout=timeout)[-1]
    index = {n: i for i, n in enumerate(msg.name)}
    return np.array([msg.position[index[n]] for n in names])


def _wait_until_close(ros_node, names, goal, tol, timeout=30.0):
    deadline = time.monotonic() + timeout
    q = None
    while time.monotonic() < deadline:
        q = _joint_positions(ros_node, names)
        if np.abs(q - goal).max() < tol:
            return q
    raise AssertionError(f"arm did not reach the goal: |q - goal| = {np.abs(q - goal).max():.4f} rad")


def test_sim_node_streams_cameras_and_follows_arm_trajectories(node_launcher, ros_node):
    from rclpy.qos import qos_profile_sensor_data
    from sensor_msgs.msg import CameraInfo, Image
    from trajectory_msgs.msg import JointTrajectory

    from dexh2r_core import msgs
    from dexh2r_core.robot.description import RobotDescription
    from dexh2r_core.testing import wait_for_messages, wait_for_topic_match

    sim = node_launcher.start(
        "sim_node", params={"real_time_factor": 1.0, "scenarios": "scenarios/easy.yaml"}
    )
    rgb = wait_for_messages(
        ros_node,
        "/camera_0/color/image_raw",
        Image,
        count=2,
        timeout=30,
        qos=qos_profile_sensor_data,
        processes=[sim],
    )
    depth = wait_for_messages(
        ros_node,
        "/camera_1/aligned_depth_to_color/image_raw",
        Image,
        count=2,
        timeout=15,
        qos=qos_profile_sensor_data,
    )
    info = wait_for_messages(
        ros_node, "/camera_0/color/camera_info", CameraInfo, count=1, qos=qos_profile_sensor_data
    )
    assert (rgb[0].width, rgb[0].height, rgb[0].encoding) == (424, 240, "rgb8")
    assert depth[0].encoding == "16UC1" and msgs.image_array(depth[0]).max() > 0
    assert info[0].header.frame_id == "camera_0_color_optical_frame" and info[0].k[0] > 0

    robot = RobotDescription.load("ur5_shadow")
    names = robot.arm_joint_names
    start = _joint_positions(ros_node, names)
    goal = start + np.array([0.15, -0.1, 0.1, 0.1, -0.1, 0.2])
    pub = ros_node.create_publisher(JointTrajectory, "/arm_controller/joint_trajectory", 10)
    wait_for_topic_match(ros_node, "/arm_controller/joint_trajectory", kind="subscriber", timeout=15)
    pub.publish(msgs.joint_trajectory_msg(names, [1.5], [goal]))
    q = _wait_until_close(ros_node, names, goal, tol=1e-3)
    assert np.abs(q - goal).max() < 1e-3

    # Bad input: NaN and unknown joint names are rejected, the robot holds, the node keeps running.
    pub.publish(msgs.joint_trajectory_msg(names, [1.0], [np.full(6, np.nan)]))
    pub.publish(msgs.joint_trajectory_msg(["elbow_joint", "no_such_joint"], [1.0], [[0.0, 0.0]]))
    sim.wait_for_log(r"rejected arm trajectory: .*NaN", timeout=15)
    sim.wait_for_log(r"rejected arm trajectory: .*no_such_joint", timeout=15)
    held = _joint_positions(ros_node, names)
    assert np.abs(held - goal).max() < 2e-3
    assert sim.alive()
    # ... and still obeys a valid command afterwards.
    back = goal - np.array([0.1, 0.0, 0.0, 0.0, 0.0, 0.1])
    pub.publish(msgs.joint_trajectory_msg(names, [1.0], [back]))
    _wait_until_close(ros_node, names, back, tol=1e-3)


def test_sim_node_refuses_unknown_arm_servos(node_launcher):
    """A wrong `arm_servo` is a start-up error naming the parameter (exit code 2), not a default."""
    sim = node_launcher.start("sim_node", params={"arm_servo": "velocity", "cameras": False})
    sim.wait_for_log(r"arm_servo: must be 'drive' or 'damped', got 'velocity'", timeout=60)
    deadline = time.monotonic() + 30
    while sim.alive() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert sim.returncode == 2, sim.log_tail()


def test_sim_node_holds_camera_frames_back_by_the_camera_latency(node_launcher, ros_node):
    """`camera_latency_s`: each frame is published that long (sim time) after its stamp, as a
    real camera's frames reach the host after their exposure (docs/closed_loop.md, session 13)."""
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.qos import qos_profile_sensor_data
    from rosgraph_msgs.msg import Clock
    from sensor_msgs.msg import Image

    from dexh2r_core import msgs

    sim = node_launcher.start(
        "sim_node",
        params={"real_time_factor": 1.0, "scenarios": "scenarios/easy.yaml", "camera_latency_s": 0.1},
    )
    clock = {"t": None}
    ages: list[float] = []

    def on_clock(m):
        clock["t"] = msgs.from_time(m.clock)

    def on_image(m):
        if clock["t"] is not None:
            ages.append(clock["t"] - msgs.from_time(m.header.stamp))

    subs = [
        # only the newest clock: a backlog of 500 Hz clock messages would read as too young frames
        ros_node.create_subscription(Clock, "/clock", on_clock, qos_profile_sensor_data),
        ros_node.create_subscription(Image, "/camera_0/color/image_raw", on_image, qos_profile_sensor_data),
    ]
    executor = SingleThreadedExecutor(context=ros_node.context)
    executor.add_node(ros_node)
    deadline = time.monotonic() + 60
    while len(ages) < 10 and time.monotonic() < deadline and sim.alive():
        executor.spin_once(timeout_sec=0.05)
    executor.remove_node(ros_node)
    executor.shutdown(timeout_sec=1.0)
    for s in subs:
        ros_node.destroy_subscription(s)
    assert len(ages) >= 10, sim.log_tail()
    # The newest /clock seen may trail the frame's release by a few physics steps (two topics).
    assert min(ages) >= 0.09 and np.median(ages) < 0.2
