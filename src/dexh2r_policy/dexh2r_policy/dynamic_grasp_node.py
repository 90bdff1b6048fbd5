"""`dynamic_grasp_node`: DynamicGrasp on live perception -> hand targets for `controller_node`.

Subscribes `/perception/object/pose` (PoseStamped) and `/perception/object/points` (PointCloud2,
world) from `object_tracker_node`, `/perception/human_hand/keypoints` (PoseArray, optional: the
giver filter), `/perception/giver/points` (PointCloud2, optional: the giver's hand as the depth
sees it, which the goal clearance also keeps from) and `/joint_states` (the robot hand's
current pose, by forward kinematics). At the policy rate (`rate_hz`, the rate the checkpoint
was trained at: 10 Hz for the sim episodes) it runs one `DynamicGrasp.step` on the newest
observation and publishes its target at once; at
`publish_rate_hz` (30 Hz, what the controller's 0.1 s watchdog expects) it publishes it again
until the next one (`target_stream.TargetStream`; with `interpolate_targets:=true` the way from
the last published target to the newest one along its stamp, the observation stamp +
frame_dt_s: smoother, up to a policy period later; never past the newest target):
`/policy/hand_target/wrist` (PoseStamped, the palm: the policy's hand-root pose times the fixed
root -> palm transform) and `/policy/hand_target/fingers` (JointState, the 22 finger joints by
name), both stamped with the time their pose is for, plus `/policy/state` (String, JSON, once per
policy step: phase, frame, goal distance, step ms, the compute latency its lead covers, the giver
surface points used, step / published / stale / bad-input counts).

The pool of the configured object is posed by the tracked object pose every step (it follows
the object). Observations older than `stale_after_s` (receipt time) are not used: no new
target, and the stream stops once its newest target is two policy periods old (it never
extrapolates), so the controller's watchdog holds the robot. An empty cloud (the object
tracker's output for a lost frame) is no observation. A bad observation (NaN, too few points) or
an empty pool stops it at once and says why in the log and the state.

Start-up errors (exit code 2, the cause in the log): a checkpoint that is missing or not a
MotionNet checkpoint, no pool for `object_id`, an unknown robot, no object model for the
collision guard, a `policy_set` item that is not KEY=VALUE or names no DynamicGraspConfig key.
Parameters: `checkpoint` (default checkpoints/motionnet_small.pt), `pools` (default the
checkpoint's data.pools), `object_id`, `object_scale` (that scale's pools when there are any),
`mode` (easy | hard), `style` (checkpoint: the checkpoint's policy config | closed_loop: the
closed loop's, `closed_loop.loop_policy_config`, as `dexh2r eval closed-loop` runs in-process),
`reach_cost` (none | sim_arm: the committed goal ranked by the sim arm's joint travel time, and
checked for a way the controller's IK (`wrist_ik:=true`'s options) can follow),
`policy_set` (DynamicGraspConfig overrides applied last, `KEY=VALUE[,KEY=VALUE...]`, values as
YAML: what `dexh2r eval closed-loop --set` passes with `--ros`; default none),
`rate_hz` (10), `publish_rate_hz` (30), `interpolate_targets` (false),
`stale_after_s`, `collision_guard` (checkpoint | on | off: the approach targets' guard out of the
object, `DynamicGraspConfig.collision_guard`; default the checkpoint's policy config; on needs
the object's model in the object library), `robot`, `frame_id`, topic names.
"""

from __future__ import annotations

import json
import sys
import time
from collections import deque


def main(argv: list[str] | None = None) -> int:
    from dataclasses import replace

    import numpy as np
    import rclpy
    from geometry_msgs.msg import PoseArray, PoseStamped
    from rcl_interfaces.msg import ParameterDescriptor
    from rclpy.node import Node
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import JointState, PointCloud2
    from std_msgs.msg import String

    from dexh2r_control.controller import WRIST_IK_OPTIONS, ControllerConfig
    from dexh2r_control.ik import ArmIk
    from dexh2r_core import msgs
    from dexh2r_core.config import ConfigError, from_dict
    from dexh2r_core.node_runtime import exit_with_error, spin_until_shutdown
    from dexh2r_core.robot.description import RobotDescription
    from dexh2r_core.ros_env import apply_ros_defaults
    from dexh2r_perception.object_tracker_node import pointcloud2_array
    from dexh2r_policy.closed_loop import (
        MAX_ACTUATION_DELAY_S,
        apply_overrides,
        arm_reach_cost,
        arm_reach_path,
        loop_policy_config,
        parse_policy_set,
        sim_arm_speeds,
    )
    from dexh2r_policy.dynamic_grasp import (
        DynamicGrasp,
        DynamicGraspError,
        HandState,
        MotionNetPlanner,
        PoolLibrary,
    )
    from dexh2r_policy.episodes import root_to_palm_at_zero
    from dexh2r_policy.grasps.stability import finger_joint_names
    from dexh2r_policy.motionnet import CheckpointError, load_motionnet
    from dexh2r_policy.target_stream import TargetStream
    from dexh2r_policy.train import TrainConfig, resolve_data_path

    apply_ros_defaults()
    rclpy.init(args=sys.argv if argv is None else argv)
    node = Node("dynamic_grasp")
    log = node.get_logger()
    p = node.declare_parameter
    checkpoint = p("checkpoint", "checkpoints/motionnet_small.pt").value
    pools_param = p("pools", "").value
    object_id = p("object_id", "").value
    mode = p("mode", "easy").value
    rate_hz = float(p("rate_hz", 10.0).value)
    publish_rate_hz = float(p("publish_rate_hz", 30.0).value)
    interpolate_targets = bool(p("interpolate_targets", False).value)
    stale_after_s = float(p("stale_after_s", 0.3).value)
    robot_name = p("robot", "ur5_shadow").value
    frame_id = p("frame_id", "world").value
    # "checkpoint": the checkpoint's policy config (the paper's alignment); "closed_loop": the
    # closed loop's (closed_loop.loop_policy_config: committed pre-grasp alignment, slow pull,
    # lead), the same as `dexh2r eval closed-loop` in-process.
    style = p("style", "checkpoint").value
    # The committed goal's ranking by the arm's joint travel time: "none" or "sim_arm" (the sim
    # arm's joint speeds, closed_loop.sim_arm_speeds); only with style closed_loop.
    reach_cost_param = p("reach_cost", "none").value
    policy_set = str(p("policy_set", "").value)
    object_scale = float(p("object_scale", 1.0).value)  # the pools made for this scale, if any

    def fail(message: str) -> int:
        return exit_with_error(node, message)

    # "checkpoint" or a bool (ROS parses on/off/true/false as bool): typed dynamically
    guard_value = p("collision_guard", "checkpoint", ParameterDescriptor(dynamic_typing=True)).value
    guard_param = {True: "on", False: "off"}.get(guard_value, str(guard_value))
    if guard_param not in ("checkpoint", "on", "off"):
        return fail(f"collision_guard: 'checkpoint', 'on' or 'off', got '{guard_value}'")
    if mode not in ("easy", "hard"):
        return fail(f"mode: 'easy' or 'hard', got '{mode}'")
    if style not in ("checkpoint", "closed_loop"):
        return fail(f"style: 'checkpoint' or 'closed_loop', got '{style}'")
    if reach_cost_param not in ("none", "sim_arm"):
        return fail(f"reach_cost: 'none' or 'sim_arm', got '{reach_cost_param}'")
    if not (rate_hz > 0.0 and publish_rate_hz > 0.0):
        return fail(f"rate_hz and publish_rate_hz: > 0, got {rate_hz:g} and {publish_rate_hz:g}")
    if not object_id:
        return fail("object_id: required (the object being handed over, e.g. prim/box_small)")
    try:
        path = resolve_data_path(checkpoint)
        model, ckpt = load_motionnet(path)
        cfg = from_dict(TrainConfig, ckpt["config"], source=f"{path}:config")
        robot = RobotDescription.load(robot_name)
        pools = PoolLibrary(resolve_data_path(pools_param or cfg.data.pools), cfg.data.stable_only)
        pool = pools.get(object_id, scale=object_scale)
    except (CheckpointError, ConfigError, DynamicGraspError, FileNotFoundError, ValueError) as exc:
        return fail(f"cannot start: {exc}")
    torch_threads = 1  # one step is ~1 ms: more threads only contend with the trackers
    import torch

    torch.set_num_threads(torch_threads)
    guard = cfg.policy.collision_guard if guard_param == "checkpoint" else guard_param == "on"
    policy_config = replace(cfg.policy, mode=mode, collision_guard=guard)
    try:
        overrides = parse_policy_set(policy_set)
        if style == "closed_loop":
            policy_config = loop_policy_config(policy_config, mode)
        policy_config = apply_overrides(policy_config, overrides, source="policy_set")
    except ConfigError as exc:  # names policy_set and the item or key
        return fail(str(exc))
    if overrides:
        log.info(f"policy_set: {overrides}")
    policy = DynamicGrasp(MotionNetPlanner(model), pool, policy_config)
    # The object library's model: its symmetries (a tracked can spins about its axis) and the
    # guard's surface. Without a model the guard cannot run; the rest can.
    from dexh2r_sim.objects import ObjectLibrary, UnknownObjectError

    try:
        policy.set_object_model(ObjectLibrary().get(object_id, scale=object_scale))
    except (UnknownObjectError, DynamicGraspError, ValueError) as exc:
        if guard:
            return fail(
                f"cannot start: the collision guard needs the object model of '{object_id}': {exc} "
                "(add the object to the library, or collision_guard:=off)"
            )
        log.warning(f"no object model for '{object_id}' ({exc}): symmetric poses are not unified")
    fingers = finger_joint_names(robot)
    index = {n: i for i, n in enumerate(robot.joint_names)}
    finger_idx = [index[n] for n in fingers]
    T_root_palm = root_to_palm_at_zero(robot)
    fk = ArmIk(robot, robot.config.hand.palm_link)
    T_palm_root = np.linalg.inv(T_root_palm)
    measured: list = [robot.home()]  # the newest /joint_states, for the reach cost
    if reach_cost_param == "sim_arm" and style == "closed_loop":
        policy.reach_cost = arm_reach_cost(robot, T_root_palm, measured, sim_arm_speeds())
        # The controller's IK as the launch files run it (controller_node wrist_ik:=true).
        policy.reach_path = arm_reach_path(robot, T_root_palm, measured, ControllerConfig(**WRIST_IK_OPTIONS))

    reliable = QoSProfile(depth=5, reliability=ReliabilityPolicy.RELIABLE)
    wrist_pub = node.create_publisher(
        PoseStamped, p("wrist_target_topic", "/policy/hand_target/wrist").value, reliable
    )
    fingers_pub = node.create_publisher(
        JointState, p("finger_target_topic", "/policy/hand_target/fingers").value, reliable
    )
    state_pub = node.create_publisher(String, "/policy/state", reliable)
    obs: dict = {"pose": None, "points": None, "kp": None, "giver": None, "q": None}
    counts = {"steps": 0, "published": 0, "stale": 0, "bad": 0}
    # Two policy periods without a new target (a late step under load) and the stream stops too.
    stream = TargetStream(hold_s=2.0 / rate_hz, interpolate=interpolate_targets)
    # The compute latency the lead on a moving object covers (`DynamicGrasp.latency_s`): each
    # step's observation age (perception and transport, from the camera frame's stamp) plus the
    # step itself; the median over the last second, as in-process (`closed_loop.run_episode`).
    latencies: deque[float] = deque(maxlen=max(1, round(rate_hz)))

    def now_s() -> float:
        return node.get_clock().now().nanoseconds * 1e-9

    def on_pose(msg: PoseStamped) -> None:
        try:
            obs["pose"] = (msgs.pose_matrix(msg.pose), msgs.from_time(msg.header.stamp), now_s())
        except msgs.MessageError as exc:
            counts["bad"] += 1
            log.error(f"object pose rejected: {exc}", throttle_duration_sec=1.0)

    def on_points(msg: PointCloud2) -> None:
        points = pointcloud2_array(msg)
        if len(points) == 0:
            # The object tracker's lost frames: no pose and an empty cloud. Not an observation
            # (the newest pose would be paired with nothing and rejected as bad input, silencing
            # the stream); the last cloud ages out by `stale_after_s` like the pose.
            return
        obs["points"] = (points, now_s())

    def on_giver_points(msg: PointCloud2) -> None:
        obs["giver"] = (pointcloud2_array(msg), now_s())

    def on_keypoints(msg: PoseArray) -> None:
        kp = np.array([[m.position.x, m.position.y, m.position.z] for m in msg.poses], dtype=float)
        obs["kp"] = (kp if kp.shape == (21, 3) else None, now_s())

    def on_joint_states(msg: JointState) -> None:
        pos = dict(zip(msg.name, msg.position, strict=False))
        if all(n in pos for n in robot.joint_names):
            obs["q"] = np.array([pos[n] for n in robot.joint_names])
            measured[0] = obs["q"]

    node.create_subscription(
        PoseStamped, p("object_pose_topic", "/perception/object/pose").value, on_pose, reliable
    )
    node.create_subscription(
        PointCloud2, p("object_points_topic", "/perception/object/points").value, on_points, reliable
    )
    node.create_subscription(
        PoseArray, p("keypoints_topic", "/perception/human_hand/keypoints").value, on_keypoints, reliable
    )
    node.create_subscription(
        PointCloud2, p("giver_points_topic", "/perception/giver/points").value, on_giver_points, reliable
    )
    node.create_subscription(JointState, "/joint_states", on_joint_states, reliable)

    def publish_state(state: dict) -> None:
        state_pub.publish(String(data=json.dumps({**state, **counts})))

    def publish_target() -> None:
        sample = stream.sample(now_s())
        if sample is None:  # the policy is silent: so is the stream
            return
        counts["published"] += 1
        wrist_pub.publish(msgs.pose_stamped_msg(sample.T, sample.stamp, frame_id))
        fingers_pub.publish(msgs.joint_state_msg(fingers, sample.q, stamp_s=sample.stamp))

    def step() -> None:
        now = now_s()
        pose, points, q = obs["pose"], obs["points"], obs["q"]
        if pose is None or points is None or q is None:
            stream.silence()
            publish_state({"phase": policy.phase, "waiting": "object pose, points and /joint_states"})
            return
        if now - pose[2] > stale_after_s or now - points[1] > stale_after_s:
            counts["stale"] += 1
            # No new target. The stream keeps the newest one for at most `hold_s` (2 policy
            # periods) and then stops, so the controller's watchdog holds the robot: one late
            # frame set (a tracker's slow relocalisation) does not brake the arm, a dead camera
            # does within 0.3 s. Bad input (below) stops it at once.
            publish_state({"phase": policy.phase, "stale": True})
            return
        kp = obs["kp"]
        keypoints = kp[0] if kp is not None and now - kp[1] <= stale_after_s else None
        giver = obs["giver"]
        surface = giver[0] if giver is not None and now - giver[1] <= stale_after_s else None
        hand = HandState(fk.frame_pose(q) @ T_palm_root, q[finger_idx])
        age = max(0.0, now - pose[1])
        if latencies:
            policy.latency_s = min(float(np.median(latencies)), MAX_ACTUATION_DELAY_S)
        t0 = time.perf_counter()
        try:
            target = policy.step(pose[1], pose[0], points[0], keypoints, hand, giver_surface=surface)
        except DynamicGraspError as exc:
            counts["bad"] += 1
            stream.silence()
            log.error(f"no target this step: {exc}", throttle_duration_sec=1.0)
            publish_state({"phase": policy.phase, "error": str(exc)})
            return
        step_ms = (time.perf_counter() - t0) * 1e3
        latencies.append(age + step_ms * 1e-3)
        counts["steps"] += 1
        # Published at once (the timer repeats it): a target that waits for the timer acts up
        # to a publish period later.
        stream.push(now_s(), target.stamp, target.T_world_hand @ T_root_palm, target.finger_q)
        publish_target()
        publish_state(
            {
                "phase": target.phase,
                "frame": target.frame,
                "goal": target.goal,
                "distance_m": target.distance_m,
                "step_ms": round(step_ms, 3),
                "latency_s": round(policy.latency_s, 4),
                # the giver surface points the goal clearance kept from (0: keypoints only)
                "giver_points": 0 if policy.state.giver_surface is None else len(policy.state.giver_surface),
            }
        )

    node.create_timer(1.0 / rate_hz, step)
    node.create_timer(1.0 / publish_rate_hz, publish_target)
    log.info(
        f"DynamicGrasp ({mode}) for {object_id} from {path} ({style} style): {len(pool)} grasps, "
        f"policy {rate_hz:g} Hz, targets {publish_rate_hz:g} Hz"
    )
    return spin_until_shutdown(node)


if __name__ == "__main__":
    sys.exit(main())
