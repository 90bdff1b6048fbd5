"""`teleop_node`: the operator's tracked hand -> hand targets for `controller_node` (thin rclpy shell).

Subscribes `/perception/human_hand/keypoints` (PoseArray, 21 points, world) and
`/perception/human_hand/wrist` (PoseStamped) from `hand_tracker_node` (paired by their identical
stamps), `/joint_states` (the robot's palm pose at clutch-in, by forward kinematics) and the
deadman topic (std_msgs/Bool). Publishes the same targets a policy would, so the controller's
safety filter applies unchanged: `/policy/hand_target/wrist` (PoseStamped, the palm) and
`/policy/hand_target/fingers` (JointState, the hand's joints by name), plus `/teleop/state`
(String, JSON: engaged, reason, retargeting ms).

Services (std_srvs/Trigger): `/teleop/engage` (clutch in: the operator's next pose is the
reference; needs the deadman pressed), `/teleop/disengage` (clutch out: nothing is sent, the
controller holds; re-centre and engage again). Releasing the deadman disengages too, so pressing
it again never makes the robot jump to where the operator's hand went meanwhile. The deadman's
braking itself is `controller_node`'s (`deadman_topic`): it works even if this node dies.

Parameters: `robot`, `hand` (e.g. `allegro_right`: retargeting follows the hand by config),
`retargeting` (vector | dexpilot | position), `finger_scale` (0: the hand YAML's), `arm_scale`,
`workspace_min` / `workspace_max`, `deadman_topic` (default `/teleop/deadman`), topic names.
"""

from __future__ import annotations

import json
import sys


def main(argv: list[str] | None = None) -> int:
    import numpy as np
    import rclpy
    from geometry_msgs.msg import PoseArray, PoseStamped
    from rclpy.node import Node
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import JointState
    from std_msgs.msg import Bool, String
    from std_srvs.srv import Trigger

    from dexh2r_control.ik import ArmIk
    from dexh2r_core import msgs
    from dexh2r_core.node_runtime import exit_with_error, spin_until_shutdown
    from dexh2r_core.robot.config import load_robot_config
    from dexh2r_core.robot.description import RobotDescription
    from dexh2r_core.ros_env import apply_ros_defaults
    from dexh2r_teleop.teleop import (
        ArmMapper,
        FingerRetargeter,
        TeleopConfig,
        TeleopInputError,
        keypoints_in_wrist_frame,
    )

    apply_ros_defaults()
    rclpy.init(args=sys.argv if argv is None else argv)
    node = Node("teleop")
    log = node.get_logger()
    p = node.declare_parameter
    defaults = TeleopConfig()
    robot_name = p("robot", "ur5_shadow").value
    hand = p("hand", "").value or None
    finger_scale = float(p("finger_scale", 0.0).value)
    engage_after = int(p("engage_after_frames", defaults.engage_after_frames).value)
    try:
        config = TeleopConfig(
            retargeting=p("retargeting", defaults.retargeting).value,
            finger_scale=finger_scale if finger_scale > 0 else None,
            arm_scale=float(p("arm_scale", defaults.arm_scale).value),
            engage_after_frames=engage_after,
            workspace_min=tuple(float(v) for v in p("workspace_min", list(defaults.workspace_min)).value),
            workspace_max=tuple(float(v) for v in p("workspace_max", list(defaults.workspace_max)).value),
        )
        robot = RobotDescription(load_robot_config(robot_name, hand=hand))
        fingers = FingerRetargeter(robot, config.retargeting, config.finger_scale)
    except (ValueError, FileNotFoundError) as exc:
        return exit_with_error(node, f"cannot start: {exc}")
    arm = ArmMapper(config)
    fk = ArmIk(robot, robot.config.hand.palm_link)
    frame_id = p("frame_id", "world").value
    keypoints_topic = p("keypoints_topic", "/perception/human_hand/keypoints").value
    wrist_topic = p("wrist_topic", "/perception/human_hand/wrist").value
    deadman_topic = p("deadman_topic", "/teleop/deadman").value
    reliable = QoSProfile(depth=5, reliability=ReliabilityPolicy.RELIABLE)
    wrist_pub = node.create_publisher(
        PoseStamped, p("wrist_target_topic", "/policy/hand_target/wrist").value, reliable
    )
    fingers_pub = node.create_publisher(
        JointState, p("finger_target_topic", "/policy/hand_target/fingers").value, reliable
    )
    state_pub = node.create_publisher(String, "/teleop/state", reliable)
    st = {
        "want": False,
        "stable": 0,
        "q": None,
        "deadman": False,
        "kp": {},
        "wrist": {},
        "reason": "not engaged",
    }

    def publish_state(extra: dict | None = None) -> None:
        state = {"engaged": arm.engaged, "want_engage": st["want"], "reason": st["reason"], **(extra or {})}
        state_pub.publish(String(data=json.dumps(state)))

    def disengage(reason: str) -> None:
        st["want"] = False
        arm.disengage()
        st["reason"] = reason
        publish_state()

    def on_joint_states(msg: JointState) -> None:
        pos = dict(zip(msg.name, msg.position, strict=False))
        if all(n in pos for n in robot.joint_names):
            st["q"] = np.array([pos[n] for n in robot.joint_names])

    def on_deadman(msg: Bool) -> None:
        if st["deadman"] and not msg.data and (arm.engaged or st["want"]):
            disengage("deadman released")
        st["deadman"] = bool(msg.data)

    def process(key: int) -> None:
        kp, W = st["kp"].pop(key), st["wrist"].pop(key)
        for book in (st["kp"], st["wrist"]):  # drop anything older than the pair just used
            for old in [k for k in book if k < key]:
                del book[old]
        if not st["want"]:
            return
        try:
            hand_q = fingers(keypoints_in_wrist_frame(kp, W))
        except TeleopInputError as exc:
            st["reason"] = str(exc)
            st["stable"] = 0
            publish_state()
            return
        if not arm.engaged:
            if st["q"] is None:
                st["reason"] = "waiting for /joint_states to clutch in"
                return
            st["stable"] += 1
            if st["stable"] < config.engage_after_frames:
                st["reason"] = "engaging: waiting for a steady hand"
                return
            arm.engage(W, fk.frame_pose(st["q"]))
            log.info("clutch in: following the operator's hand")
        stamp = node.get_clock().now().nanoseconds * 1e-9
        wrist_pub.publish(msgs.pose_stamped_msg(arm.target(W, stamp), stamp, frame_id))
        fingers_pub.publish(msgs.joint_state_msg(robot.hand_joint_names, hand_q, stamp_s=stamp))
        st["reason"] = ""
        publish_state({"retarget_ms": round(fingers.last_seconds * 1e3, 3)})

    def stamp_key(header) -> int:
        return header.stamp.sec * 1_000_000_000 + header.stamp.nanosec

    def on_keypoints(msg: PoseArray) -> None:
        key = stamp_key(msg.header)
        st["kp"][key] = np.array([[m.position.x, m.position.y, m.position.z] for m in msg.poses], dtype=float)
        if key in st["wrist"]:
            process(key)

    def on_wrist(msg: PoseStamped) -> None:
        try:
            W = msgs.pose_matrix(msg.pose)
        except msgs.MessageError as exc:
            log.error(f"bad wrist pose: {exc}", throttle_duration_sec=1.0)
            return
        key = stamp_key(msg.header)
        st["wrist"][key] = W
        if key in st["kp"]:
            process(key)

    node.create_subscription(JointState, "/joint_states", on_joint_states, reliable)
    node.create_subscription(Bool, deadman_topic, on_deadman, reliable)
    node.create_subscription(PoseArray, keypoints_topic, on_keypoints, reliable)
    node.create_subscription(PoseStamped, wrist_topic, on_wrist, reliable)

    def engage_cb(_req, res):
        if not st["deadman"]:
            res.success, res.message = False, f"press the deadman ({deadman_topic}) first"
            return res
        st["want"] = True
        st["stable"] = 0
        fingers.reset()
        res.success, res.message = True, "engaging on the next hand frame"
        return res

    def disengage_cb(_req, res):
        disengage("clutch released")
        res.success, res.message = True, "disengaged: the robot holds"
        return res

    node.create_service(Trigger, "/teleop/engage", engage_cb)
    node.create_service(Trigger, "/teleop/disengage", disengage_cb)
    log.info(f"teleop for {robot.config.name} ({config.retargeting} retargeting); call /teleop/engage")
    return spin_until_shutdown(node)


if __name__ == "__main__":
    sys.exit(main())
