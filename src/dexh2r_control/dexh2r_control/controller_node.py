"""`controller_node`: the only node that commands actuators (thin rclpy shell around controller.py).

Subscribes (all world frame, stamps kept for latency, receipt time on the node clock drives the
watchdog, since perception + policy latency may legitimately exceed the watchdog timeout):
- `/policy/hand_target/wrist` (geometry_msgs/PoseStamped): the palm (IK frame, `rh_palm`) pose.
  Each message is one hand target: the wrist pose plus the latest finger target.
- `/policy/hand_target/fingers` (sensor_msgs/JointState): hand joints by name (all or some of
  them, the actuated ones suffice: couplings fill the rest). Kept until replaced; on its own it
  also refreshes the current wrist target. (Two standard messages instead of one custom one:
  the stack uses standard message types only.)
- `/controller/joint_target` (sensor_msgs/JointState): direct joint targets by name (teleop);
  joints left out keep their current command.
- `/joint_states` (sensor_msgs/JointState): the first complete message initialises the command.
- `/perception/human_hand/keypoints` (geometry_msgs/PoseArray, 21 positions, NaN = unseen):
  separation monitoring.
- `/perception/object/pose` (geometry_msgs/PoseStamped), `/handover/contact` and
  `/handover/hold_confirmed` (std_msgs/Bool): inputs of the handover state machine.

Publishes, every tick (`rate_hz`, default 250, on the node clock so `use_sim_time` works):
- `/arm_controller/joint_trajectory` and `/hand_controller/joint_trajectory`
  (trajectory_msgs/JointTrajectory, header stamp 0 = "start on receipt"): the next command one
  period ahead (positions, velocities, accelerations) and, while moving, a second point where a
  synchronised brake at the acceleration limits would stop. A ros2_control JTC replaces the
  trajectory on every message; if messages stop coming (this node died), it executes that tail
  and stops within limits instead of holding abruptly.
- `/handover/state` (std_msgs/String, JSON: state, mode, reason, grasp_phase, estop, safety flags),
  on change and at 10 Hz.

Parameter `dry_run` (false): publish the commands on `<arm_topic>/dry_run` and
`<hand_topic>/dry_run` instead, so recorded input (`dexh2r replay`) can drive the controller with
no actuator listening; the log line at start-up says so.

Parameters for the closed loop (all off by default; `launch/handover_sim.launch.xml` and the
real launch file set them): `wrist_ik` (the hand's wrist joints in the IK, no far IK branches:
`controller.WRIST_IK_OPTIONS`, the in-process closed loop's options), `follow_measured` (every
`/joint_states` bounds the command's following error; ignored in a dry run), `handover`
(`state_machine`, the default, or `policy`: the policy's phases from `/policy/state` set the
safety filter's grasp phase, `policy_grasp_phase` with `grasp_zone_m`, its targets are
tracked as they come and, the object lost for `object_lost_s` while approaching, the hand
retreats `retreat_up_m` up: `state_machine.PolicyHandover`, as in `dexh2r eval closed-loop`;
`/handover/state` then says `"policy"` and the policy's phase; the robot holds until
`/handover/start`, or from the start with `autostart`, and again after `/handover/stop`).

Services (std_srvs/Trigger): `/controller/estop` (latched), `/controller/reset` (clears the latch;
the robot stays still until a new target arrives), `/handover/start`, `/handover/stop`.
"""

from __future__ import annotations

import json
import sys
import threading

import numpy as np


def brake_tail(
    q: np.ndarray, v: np.ndarray, a_max: np.ndarray, lower: np.ndarray, upper: np.ndarray
) -> tuple[float, np.ndarray] | None:
    """(duration, stop position) of a synchronised brake from (q, v); None when already still.

    The stop position is kept within the joint limits: the slowest joint to stop sets the
    duration, and a joint braking over that longer time can stop past a limit its own a_max
    would have stopped it short of (a demo over DDS commanded rh_WRJ2 0.143 rad, limit 0.14)."""
    t_stop = float(np.max(np.abs(v) / a_max))
    if t_stop <= 1e-6:
        return None
    return t_stop, np.clip(q + 0.5 * v * t_stop, lower, upper)


def main(argv: list[str] | None = None) -> int:
    import rclpy
    from geometry_msgs.msg import PoseArray, PoseStamped
    from rclpy.node import Node
    from rclpy.qos import QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
    from sensor_msgs.msg import JointState
    from std_msgs.msg import Bool, String
    from std_srvs.srv import Trigger
    from trajectory_msgs.msg import JointTrajectory as JointTrajectoryMsg
    from trajectory_msgs.msg import JointTrajectoryPoint

    from dexh2r_control.controller import (
        DEADMAN_REASON,
        WRIST_IK_OPTIONS,
        ArmHandController,
        ControllerConfig,
        HandTarget,
    )
    from dexh2r_control.safety import InvalidTargetError, SafetyConfig
    from dexh2r_control.state_machine import (
        HandoverConfig,
        HandoverStateMachine,
        Observation,
        Output,
        PolicyHandover,
        State,
    )
    from dexh2r_core import msgs
    from dexh2r_core.node_runtime import exit_with_error, spin_until_shutdown
    from dexh2r_core.robot.config import load_robot_config
    from dexh2r_core.robot.description import RobotDescription
    from dexh2r_core.ros_env import apply_ros_defaults

    apply_ros_defaults()
    rclpy.init(args=sys.argv if argv is None else argv)
    node = Node("controller")
    p = node.declare_parameter
    robot_name = p("robot", "ur5_shadow").value
    hand = p("hand", "").value or None
    rate_hz = float(p("rate_hz", 250.0).value)
    arm_topic = p("arm_topic", "/arm_controller/joint_trajectory").value
    hand_topic = p("hand_topic", "/hand_controller/joint_trajectory").value
    # Dry run (e.g. fed by `dexh2r replay`): the same commands, on `<topic>/dry_run` instead of the
    # actuator topics, so nothing moves; everything else (state machine, safety) runs as usual.
    dry_run = bool(p("dry_run", False).value)
    if dry_run:
        arm_topic, hand_topic = f"{arm_topic}/dry_run", f"{hand_topic}/dry_run"
    wrist_topic = p("wrist_target_topic", "/policy/hand_target/wrist").value
    fingers_topic = p("finger_target_topic", "/policy/hand_target/fingers").value
    joint_target_topic = p("joint_target_topic", "/controller/joint_target").value
    keypoints_topic = p("keypoints_topic", "/perception/human_hand/keypoints").value
    object_topic = p("object_topic", "/perception/object/pose").value
    contact_topic = p("contact_topic", "/handover/contact").value
    hold_topic = p("hold_confirmed_topic", "/handover/hold_confirmed").value
    retreat_up_m = float(p("retreat_up_m", 0.15).value)
    # Teleoperation deadman (std_msgs/Bool, e.g. 20 Hz from a pedal): "" = not used. Without a
    # True within the timeout (or on False) the robot brakes at the e-stop rate; the latch clears
    # itself when the deadman is back (the robot then holds until a new target arrives).
    deadman_topic = p("deadman_topic", "").value
    deadman_timeout_s = float(p("deadman_timeout_s", 0.06).value)
    safety = SafetyConfig(
        watchdog_timeout_s=float(p("watchdog_timeout_s", 0.1).value),
        slowdown_distance_m=float(p("slowdown_distance_m", SafetyConfig.slowdown_distance_m).value),
        stop_distance_m=float(p("stop_distance_m", SafetyConfig.stop_distance_m).value),
    )

    # The closed loop's options near the wrist singularity (WRIST_IK_OPTIONS, docs/control.md).
    wrist_ik = bool(p("wrist_ik", False).value)
    # Every /joint_states bounds the command's following error (ControllerConfig.
    # max_following_error_rad): a robot slower than its limits is waited for. Off for a dry run
    # fed by a bag, whose recorded robot does not follow the commands.
    follow_measured = bool(p("follow_measured", False).value) and not dry_run
    # Who drives the handover: "state_machine" (HandoverStateMachine: /handover/start, offer,
    # approach, align, close, confirm hold, retreat, place) or "policy": the policy's own phases
    # (`/policy/state`) set the safety filter's grasp phase and its targets are tracked as they
    # come, exactly as in the in-process closed loop (dexh2r eval closed-loop --ros).
    handover = p("handover", "state_machine").value
    policy_state_topic = p("policy_state_topic", "/policy/state").value
    grasp_zone_m = float(p("grasp_zone_m", HandoverConfig().grasp_zone_m).value)
    # handover:=policy: the policy's targets move the robot only after /handover/start (and until
    # /handover/stop), as an operator arms a real robot; `autostart` arms it at once (the sim).
    autostart = bool(p("autostart", False).value)
    if handover not in ("state_machine", "policy"):
        return exit_with_error(node, f"handover: 'state_machine' or 'policy', got '{handover}'")

    robot = RobotDescription(load_robot_config(robot_name, hand=hand))
    options = WRIST_IK_OPTIONS if wrist_ik else {}
    ctrl = ArmHandController(robot, ControllerConfig(rate_hz=rate_hz, safety=safety, **options))
    place_q = np.asarray(p("place_joints", robot.home().tolist()).value, dtype=float)
    sm = HandoverStateMachine()
    log = node.get_logger()
    names = robot.joint_names
    index = {n: i for i, n in enumerate(names)}
    n_arm = robot.n_arm
    period = 1.0 / rate_hz
    lock = threading.Lock()  # callbacks and the tick share `inputs`
    inputs: dict = {
        "wrist": None,  # (pose 4x4, receipt time)
        "fingers": None,  # full hand vector
        "new_target": None,  # ("hand", HandTarget) | ("joints", q, stamp)
        "object": None,  # (position, receipt time)
        "contact": False,
        "hold": False,
        "last_tick": None,
        "last_state_pub": -np.inf,
        "last_state": None,
        "deadman_beat": -np.inf,  # receipt time of the last True
        "policy_phase": None,  # handover:=policy: the policy's phase (/policy/state)
        "object_seen": None,  # handover:=policy: receipt time of the newest valid object pose
        "armed": autostart,  # handover:=policy: /handover/start was called (or autostart)
    }
    policy_handover = PolicyHandover(HandoverConfig(grasp_zone_m=grasp_zone_m), retreat_up_m=retreat_up_m)

    def now_s() -> float:
        return node.get_clock().now().nanoseconds * 1e-9

    # ---- subscriptions -------------------------------------------------------------------------
    def on_joint_states(msg: JointState) -> None:
        if ctrl.ready and not follow_measured:
            return
        pos = dict(zip(msg.name, msg.position, strict=False))
        if ctrl.ready:
            if all(n in pos for n in names):
                q = np.array([pos[n] for n in names])
                if np.all(np.isfinite(q)):
                    with lock:
                        ctrl.set_measured(q, now_s())
            return
        missing = [n for n in names if n not in pos]
        if missing:
            log.warn(f"/joint_states lacks {missing[:4]}...; waiting for a complete message", once=True)
            return
        try:
            ctrl.reset(np.array([pos[n] for n in names]), now_s())
            log.info("initialised from /joint_states; streaming commands")
        except InvalidTargetError as exc:
            log.error(f"bad /joint_states: {exc}")

    def on_wrist(msg: PoseStamped) -> None:
        try:
            T = msgs.pose_matrix(msg.pose)
        except msgs.MessageError as exc:
            log.error(f"rejected wrist target: {exc}; holding the previous target", throttle_duration_sec=1.0)
            return
        with lock:
            inputs["wrist"] = T
            inputs["new_target"] = ("hand", HandTarget(now_s(), T, inputs["fingers"]))

    def on_fingers(msg: JointState) -> None:
        if not ctrl.ready:
            return
        with lock:
            base = inputs["fingers"]
            hand_q = np.array(base) if base is not None else ctrl.safety.q[n_arm:].copy()
            for name, value in zip(msg.name, msg.position, strict=False):
                if name not in index or index[name] < n_arm:
                    log.error(f"finger target names '{name}', not a hand joint; ignored")
                    return
                hand_q[index[name] - n_arm] = value
            inputs["fingers"] = hand_q
            if inputs["wrist"] is not None:
                inputs["new_target"] = ("hand", HandTarget(now_s(), inputs["wrist"], hand_q))

    def on_joint_target(msg: JointState) -> None:
        if not ctrl.ready:
            return
        with lock:
            q = ctrl.state.goal.copy() if ctrl.state.goal is not None else ctrl.safety.q.copy()
            for name, value in zip(msg.name, msg.position, strict=False):
                if name not in index:
                    log.error(f"joint target names unknown joint '{name}'; ignored")
                    return
                q[index[name]] = value
            inputs["new_target"] = ("joints", q, now_s())

    def on_keypoints(msg: PoseArray) -> None:
        kp = np.array([[m.position.x, m.position.y, m.position.z] for m in msg.poses], dtype=float)
        with lock:
            ctrl.set_keypoints(kp.reshape(-1, 3), now_s())

    def on_object(msg: PoseStamped) -> None:
        pos = np.array([msg.pose.position.x, msg.pose.position.y, msg.pose.position.z])
        with lock:
            inputs["object"] = (pos, now_s()) if np.all(np.isfinite(pos)) else None

    def on_policy_state(msg: String) -> None:
        try:
            phase = json.loads(msg.data).get("phase")
        except (ValueError, AttributeError):
            log.error("unreadable /policy/state; keeping the last phase", throttle_duration_sec=1.0)
            return
        if isinstance(phase, str):
            inputs["policy_phase"] = phase

    def on_bool(key: str):
        def callback(msg: Bool) -> None:
            inputs[key] = bool(msg.data)

        return callback

    reliable = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
    node.create_subscription(JointState, "/joint_states", on_joint_states, reliable)
    node.create_subscription(PoseStamped, wrist_topic, on_wrist, reliable)
    node.create_subscription(JointState, fingers_topic, on_fingers, reliable)
    node.create_subscription(JointState, joint_target_topic, on_joint_target, reliable)
    node.create_subscription(PoseArray, keypoints_topic, on_keypoints, qos_profile_sensor_data)
    node.create_subscription(PoseStamped, object_topic, on_object, qos_profile_sensor_data)

    def on_deadman(msg: Bool) -> None:
        with lock:
            inputs["deadman_beat"] = now_s() if msg.data else -np.inf

    if deadman_topic:
        node.create_subscription(Bool, deadman_topic, on_deadman, reliable)
    if handover == "policy":
        node.create_subscription(String, policy_state_topic, on_policy_state, reliable)
    node.create_subscription(Bool, contact_topic, on_bool("contact"), reliable)
    node.create_subscription(Bool, hold_topic, on_bool("hold"), reliable)
    arm_pub = node.create_publisher(JointTrajectoryMsg, arm_topic, reliable)
    hand_pub = node.create_publisher(JointTrajectoryMsg, hand_topic, reliable)
    state_pub = node.create_publisher(String, "/handover/state", reliable)

    # ---- services ------------------------------------------------------------------------------
    def estop_cb(_req, res):
        with lock:
            ctrl.estop("service /controller/estop")
        log.warn("E-STOP latched (call /controller/reset to clear)")
        res.success, res.message = True, "e-stop latched"
        return res

    def reset_cb(_req, res):
        with lock:
            ctrl.reset_estop(now_s())
            inputs["new_target"] = None
        log.info("e-stop reset; holding until a new target arrives")
        res.success, res.message = True, "e-stop cleared; holding until a new target"
        return res

    def start_cb(_req, res):
        if handover == "policy":
            inputs["armed"] = True
            res.success, res.message = True, "armed: tracking the policy"
            return res
        with lock:
            sm.start(now_s())
        res.success, res.message = sm.state.value == "wait_for_offer", f"state {sm.state.value}"
        return res

    def stop_cb(_req, res):
        with lock:
            inputs["armed"] = False
            sm.stop(now_s())
        res.success, res.message = True, "idle"
        return res

    node.create_service(Trigger, "/controller/estop", estop_cb)
    node.create_service(Trigger, "/controller/reset", reset_cb)
    node.create_service(Trigger, "/handover/start", start_cb)
    node.create_service(Trigger, "/handover/stop", stop_cb)

    # ---- the control tick ----------------------------------------------------------------------
    def observation(now: float) -> Observation:
        obj = inputs["object"]
        kp = ctrl.safety.fresh_keypoints(now)
        kp_fresh = len(kp) > 0
        obs = Observation(
            now=now,
            hand_keypoints_seen=kp_fresh,
            target_reached=ctrl.at_goal(),
            contact=inputs["contact"],
            hold_confirmed=inputs["hold"],
            estop=ctrl.safety.estopped,
        )
        if obj is not None:
            pos, stamp = obj
            obs.object_valid = True
            obs.object_age_s = now - stamp
            obs.robot_hand_to_object_m = float(np.linalg.norm(ctrl.palm_pose()[:3, 3] - pos))
            if kp_fresh:
                obs.giver_hand_to_object_m = float(np.min(np.linalg.norm(kp - pos, axis=1)))
        return obs

    def policy_output(now: float) -> Output:
        # The policy drives (PolicyHandover, as in the in-process closed loop): track its targets,
        # grasp phase from its phase and the palm's distance to the object, retreat when the
        # object is lost while approaching.
        obj = inputs["object"]
        distance = (
            float(np.linalg.norm(ctrl.palm_pose()[:3, 3] - obj[0])) if obj is not None else float("inf")
        )
        if obj is not None:
            inputs["object_seen"] = obj[1]
        if not inputs["armed"]:
            return Output(State.IDLE, "hold", False, "waiting for /handover/start")
        return policy_handover.update(
            now, inputs["policy_phase"], inputs["object_seen"], distance, ctrl.safety.estopped
        )

    def apply_mode(mode: str, now: float) -> None:
        new = inputs["new_target"]
        inputs["new_target"] = None
        if mode != "retreat":
            policy_handover.retreat_from = None  # the next retreat starts from where the hand is then
        if mode in ("manual", "track"):
            if new is None:
                return
            try:
                if new[0] == "hand":
                    ctrl.set_hand_target(new[1])
                else:
                    ctrl.set_joint_target(new[1], new[2])
            except InvalidTargetError as exc:
                log.error(f"rejected target: {exc}; holding the previous one", throttle_duration_sec=1.0)
        elif mode == "hold":
            ctrl.hold(now)
        elif mode == "retreat":  # either handover: `retreat_up_m` up from where the retreat began
            ctrl.set_hand_target(HandTarget(now, policy_handover.retreat_pose(ctrl.palm_pose()), None))
        elif mode == "place":
            ctrl.set_joint_target(place_q, now)

    def trajectory(joint_names, sl, cmd, a_max) -> JointTrajectoryMsg:
        msg = JointTrajectoryMsg(joint_names=list(joint_names))
        first = JointTrajectoryPoint(
            positions=cmd.positions[sl].tolist(),
            velocities=cmd.velocities[sl].tolist(),
            accelerations=cmd.accelerations[sl].tolist(),
        )
        first.time_from_start.sec, first.time_from_start.nanosec = 0, int(period * 1e9)
        msg.points.append(first)
        safety = ctrl.safety
        tail = brake_tail(
            cmd.positions[sl], cmd.velocities[sl], a_max[sl], safety.lower[sl], safety.upper[sl]
        )
        if tail is not None:
            t_end = period + tail[0]
            last = JointTrajectoryPoint(
                positions=tail[1].tolist(), velocities=[0.0] * len(joint_names), accelerations=[]
            )
            last.time_from_start.sec = int(t_end)
            last.time_from_start.nanosec = int((t_end - int(t_end)) * 1e9)
            msg.points.append(last)
        return msg

    def tick() -> None:
        if not ctrl.ready:
            return
        now = now_s()
        with lock:
            last = inputs["last_tick"]
            inputs["last_tick"] = now
            dt = period if last is None else float(np.clip(now - last, 0.25 * period, 4 * period))
            if deadman_topic:
                alive = now - inputs["deadman_beat"] <= deadman_timeout_s
                if not alive and not ctrl.safety.estopped:
                    ctrl.estop(DEADMAN_REASON)
                    log.warn(f"deadman released ({deadman_topic}): braking to a hold")
                elif alive and ctrl.safety.estopped and ctrl.safety.estop_reason == DEADMAN_REASON:
                    ctrl.reset_estop(now)
                    inputs["new_target"] = None  # only targets sent after the deadman came back
            if handover == "policy":
                out = policy_output(now)
            else:
                out = sm.update(observation(now)) if sm.state.value != "idle" else sm.output()
            ctrl.set_grasp_phase(out.grasp_phase)
            apply_mode(out.mode, now)
            cmd = ctrl.step(now, dt)
        arm_pub.publish(trajectory(names[:n_arm], slice(0, n_arm), cmd, ctrl.safety.a_max))
        hand_pub.publish(trajectory(names[n_arm:], slice(n_arm, None), cmd, ctrl.safety.a_max))
        st = cmd.status
        summary = (out.state.value, out.mode, st.estop, st.watchdog, st.protective_stop, st.workspace_stop)
        if summary != inputs["last_state"] or now - inputs["last_state_pub"] >= 0.1:
            inputs["last_state"], inputs["last_state_pub"] = summary, now
            state = {
                "state": out.state.value if handover == "state_machine" else "policy",
                "policy_phase": inputs["policy_phase"],
                "mode": out.mode,
                "reason": out.reason,
                "grasp_phase": out.grasp_phase,
                "estop": st.estop,
                "watchdog": st.watchdog,
                "protective_stop": st.protective_stop,
                "workspace_stop": st.workspace_stop,
                "speed_scale": st.speed_scale,
                "min_distance_m": st.min_distance_m if np.isfinite(st.min_distance_m) else None,
            }
            state_pub.publish(String(data=json.dumps(state)))

    node.create_timer(period, tick)
    log.info(
        f"controller for {robot.config.name}: {rate_hz:g} Hz -> {arm_topic}, {hand_topic}; "
        f"targets on {wrist_topic} + {fingers_topic}" + (" (DRY RUN: no actuator topic)" if dry_run else "")
    )
    return spin_until_shutdown(node)


if __name__ == "__main__":
    sys.exit(main())
