"""`sim_node`: the MuJoCo handover cell over the topics real hardware uses (thin rclpy shell).

Publishes `/clock`, `/joint_states`, realsense-ros-style camera topics
(`/camera_<i>/color/image_raw`, `/camera_<i>/aligned_depth_to_color/image_raw`,
`/camera_<i>/color/camera_info`, `/camera_<i>/aligned_depth_to_color/camera_info`) and ground truth
under `/sim/...` (object pose, the robot's palm pose, giver wrist and keypoints, robot-giver
contacts and the episode outcome as JSON). Accepts
ros2_control joint_trajectory_controller commands on `/arm_controller/joint_trajectory` and
`/hand_controller/joint_trajectory`. Services: `/sim/reset` and `/sim/next_scenario`
(std_srvs/Trigger); parameter `scenario` (a name in the scenario file) selects the next episode.

Bad commands (NaN, unknown joints, non-increasing times) are logged with their cause; the robot
holds its position and the node keeps running.

The closed loop over DDS (`launch/handover_sim.launch.xml`, `dexh2r eval closed-loop --ros`) sets
`antialias` / `rgb_blur_px` (the in-process loop's camera images), `actuation_delay_s` (commands
act this late), `camera_latency_s` (each camera frame is published this long, in sim time, after
its stamp, as a real camera's reach the host; the launch file's default 0.04 s is a RealSense
D435's 30 Hz colour stream, docs/closed_loop.md), `arm_servo` (the arm's servos,
`CellConfig.arm_servo`: `drive`, the closed loop's default, or `damped`), `wait_for_publishers`
(the episode's clock starts once each of these topics has a publisher: the stack is up;
`wait_timeout_s`, then exit 2 naming the missing ones) and, as a diagnostic, `truth_perception`
(the true object pose, its model's surface points and the giver's true keypoints on
`/perception/object/pose`, `.../points` and `/perception/human_hand/keypoints`: the trackers are
then not run). Each episode record (on `/sim/outcome` and in `results_dir/episodes.jsonl`) counts
`limit_violations`: commands received with a point outside the robot description's position or
velocity limits.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections import deque
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("MUJOCO_GL", "egl")
    import rclpy
    from geometry_msgs.msg import Point, Pose, PoseArray, PoseStamped
    from rclpy.executors import ExternalShutdownException
    from rclpy.node import Node
    from rclpy.qos import QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
    from rosgraph_msgs.msg import Clock
    from sensor_msgs.msg import CameraInfo, Image, JointState, PointCloud2
    from std_msgs.msg import String
    from std_srvs.srv import Trigger
    from trajectory_msgs.msg import JointTrajectory as JointTrajectoryMsg

    from dexh2r_core import msgs
    from dexh2r_core.node_runtime import stopping
    from dexh2r_core.paths import config_path
    from dexh2r_core.ros_env import apply_ros_defaults
    from dexh2r_core.trajectory import TrajectoryError
    from dexh2r_sim.cameras import camera_info_dict
    from dexh2r_sim.cell import CellConfig, HandoverCell
    from dexh2r_sim.scenario import load_scenarios, repeat_scenario

    apply_ros_defaults()
    rclpy.init(args=sys.argv if argv is None else argv)
    node = Node("sim")
    p = node.declare_parameter
    robot = p("robot", "ur5_shadow").value
    hand = p("hand", "").value or None
    scenarios_path = p("scenarios", "scenarios/easy.yaml").value
    scenario_name = p("scenario", "").value
    # Repeat r of the scenario: its random motion drawn from seed + 1000 r (`repeat_scenario`).
    repeat = int(p("repeat", 0).value)
    physics_hz = float(p("physics_hz", 500.0).value)
    camera_hz = float(p("camera_hz", 30.0).value)
    joint_state_hz = float(p("joint_state_hz", 250.0).value)
    cameras = bool(p("cameras", True).value)
    width = int(p("width", 424).value)
    height = int(p("height", 240).value)
    rtf = float(p("real_time_factor", 1.0).value)
    episodes = int(p("episodes", 0).value)  # 0: keep cycling through the scenarios
    results = p("results_dir", "").value
    exit_when_done = bool(p("exit_when_done", False).value)
    antialias = bool(p("antialias", False).value)
    rgb_blur_px = float(p("rgb_blur_px", 0.0).value)
    actuation_delay_s = float(p("actuation_delay_s", 0.0).value)
    camera_latency_s = float(p("camera_latency_s", 0.0).value)
    # CellConfig.arm_servo: drive | damped; the closed loop's (closed_loop.ARM_SERVO)
    arm_servo = p("arm_servo", "drive").value
    # A diagnostic, as `dexh2r eval closed-loop --perception truth`: the true object pose, its
    # model's surface points and the giver's true keypoints on the perception topics (no trackers).
    truth_perception = bool(p("truth_perception", False).value)
    # Hold the episode at t = 0 until each of these topics has a publisher (the stack is up).
    wait_for = [t for t in p("wait_for_publishers", [""]).value if t]
    wait_timeout_s = float(p("wait_timeout_s", 120.0).value)
    arm_topic = p("arm_topic", "/arm_controller/joint_trajectory").value
    hand_topic = p("hand_topic", "/hand_controller/joint_trajectory").value

    scenarios = load_scenarios(config_path(scenarios_path))
    by_name = {s.name: s for s in scenarios}
    if scenario_name and scenario_name not in by_name:
        node.get_logger().fatal(
            f"scenario '{scenario_name}' not in {scenarios_path}; known: {sorted(by_name)}"
        )
        return 2
    if repeat < 0:
        node.get_logger().fatal(f"repeat: must be >= 0, got {repeat}")
        return 2
    if not 0.0 <= camera_latency_s < 1.0:
        node.get_logger().fatal(f"camera_latency_s: must be in [0, 1) s, got {camera_latency_s}")
        return 2
    try:  # CellConfig checks its values (e.g. arm_servo): a wrong parameter is named, exit 2
        config = CellConfig(
            robot=robot,
            hand=hand,
            physics_hz=physics_hz,
            camera_hz=camera_hz,
            cameras=cameras,
            resolution=(width, height),
            antialias=antialias,
            rgb_blur_px=rgb_blur_px,
            actuation_delay_s=actuation_delay_s,
            arm_servo=arm_servo,
        )
    except ValueError as exc:
        node.get_logger().fatal(f"sim_node: {exc}")
        return 2
    cell = HandoverCell(config)
    order = [s.name for s in scenarios]
    state = {
        "index": order.index(scenario_name) if scenario_name else 0,
        "episode": 0,
        "pending": None,
        "violations": 0,  # commands of this episode outside the robot's position/velocity limits
        "model": None,  # truth_perception: the object model's surface points (object frame)
    }
    known_joints = set(cell.robot.joint_names)
    results_dir = Path(results) if results else None
    if results_dir is not None:
        results_dir.mkdir(parents=True, exist_ok=True)

    reliable = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
    clock_pub = node.create_publisher(Clock, "/clock", 10)
    joint_pub = node.create_publisher(JointState, "/joint_states", reliable)
    outcome_pub = node.create_publisher(String, "/sim/outcome", reliable)
    state_pub = node.create_publisher(String, "/sim/state", reliable)
    object_pub = node.create_publisher(PoseStamped, "/sim/object/pose", reliable)
    wrist_pub = node.create_publisher(PoseStamped, "/sim/giver/wrist", reliable)
    keypoint_pub = node.create_publisher(PoseArray, "/sim/giver/keypoints", reliable)
    contact_pub = node.create_publisher(String, "/sim/contacts", reliable)
    palm_pub = node.create_publisher(PoseStamped, "/sim/robot/palm", reliable)
    if truth_perception:
        from dexh2r_perception.object_tracker_node import pointcloud2_msg

        truth_pose_pub = node.create_publisher(PoseStamped, "/perception/object/pose", reliable)
        truth_points_pub = node.create_publisher(PointCloud2, "/perception/object/points", reliable)
        truth_kp_pub = node.create_publisher(PoseArray, "/perception/human_hand/keypoints", reliable)
    cam_pubs = []
    if cell.calibration is not None:
        for cal in cell.calibration.cameras:
            ns = f"/{cal.name}"
            cam_pubs.append(
                (
                    cal,
                    node.create_publisher(Image, f"{ns}/color/image_raw", qos_profile_sensor_data),
                    node.create_publisher(
                        Image, f"{ns}/aligned_depth_to_color/image_raw", qos_profile_sensor_data
                    ),
                    node.create_publisher(CameraInfo, f"{ns}/color/camera_info", qos_profile_sensor_data),
                    node.create_publisher(
                        CameraInfo, f"{ns}/aligned_depth_to_color/camera_info", qos_profile_sensor_data
                    ),
                    camera_info_dict(cal),
                )
            )

    def out_of_limits(traj) -> bool:
        # The in-process loop's `limit_violations` rule (RobotDescription.out_of_limits) on every
        # point of the command; unknown joints: the cell rejects the trajectory itself.
        if any(n not in known_joints for n in traj.joint_names):
            return False
        return any(cell.robot.out_of_limits(p.positions, p.velocities, traj.joint_names) for p in traj.points)

    def on_trajectory(kind: str):
        def callback(msg: JointTrajectoryMsg) -> None:
            try:
                traj = msgs.joint_trajectory(msg)
                state["violations"] += int(out_of_limits(traj))
                (cell.command_arm if kind == "arm" else cell.command_hand)(traj)
            except (TrajectoryError, msgs.MessageError) as exc:
                node.get_logger().error(f"rejected {kind} trajectory: {exc}; holding position")
                cell.hold_position()

        return callback

    node.create_subscription(JointTrajectoryMsg, arm_topic, on_trajectory("arm"), reliable)
    node.create_subscription(JointTrajectoryMsg, hand_topic, on_trajectory("hand"), reliable)

    def start_episode(name: str | None = None) -> None:
        if name is None:
            name = order[state["index"] % len(order)]
        cell.load_scenario(repeat_scenario(by_name[name], repeat))
        state["violations"] = 0
        if truth_perception:
            from dexh2r_perception.object_tracking import ObjectModel, TrackerConfig

            state["model"] = ObjectModel.from_sim_object(
                cell.sim_object, n=TrackerConfig().model_points, seed=0
            ).points
        node.get_logger().info(
            f"episode {state['episode']}: scenario '{name}' ({cell.scenario.difficulty}), "
            f"{arm_servo} arm servos"
        )

    def wait_for_stack() -> bool:
        # The episode's clock starts once the stack is up (every topic in `wait_for_publishers`
        # has a publisher): the nodes load models for seconds, and a giver who has been offering
        # for that long is not the scenario. Meanwhile /clock stays at 0 and /joint_states goes
        # out, so a controller can initialise.
        names, q, qd, effort = cell.joint_state()
        t_end = time.monotonic() + wait_timeout_s
        missing = list(wait_for)
        while rclpy.ok() and time.monotonic() < t_end:
            missing = [t for t in wait_for if node.count_publishers(t) == 0]
            if not missing:
                node.get_logger().info(f"stack up ({', '.join(wait_for)}): starting the episode")
                return True
            clock_pub.publish(Clock(clock=msgs.to_time(0.0)))
            joint_pub.publish(msgs.joint_state_msg(names, q, qd, effort, stamp_s=0.0))
            rclpy.spin_once(node, timeout_sec=0.02)
        node.get_logger().fatal(
            f"no publisher on {missing} after {wait_timeout_s:g} s: a node of the stack did not come up "
            "(see its log above), or wait_for_publishers names a wrong topic"
        )
        return False

    def reset_cb(_req, res):
        state["pending"] = order[state["index"] % len(order)]
        res.success, res.message = True, f"reset to '{state['pending']}'"
        return res

    def next_cb(_req, res):
        state["index"] += 1
        state["pending"] = order[state["index"] % len(order)]
        res.success, res.message = True, f"next scenario '{state['pending']}'"
        return res

    node.create_service(Trigger, "/sim/reset", reset_cb)
    node.create_service(Trigger, "/sim/next_scenario", next_cb)
    start_episode()
    if wait_for and not wait_for_stack():
        cell.close()
        node.destroy_node()
        rclpy.try_shutdown()
        return 2

    camera_period = 1.0 / camera_hz
    joint_period = 1.0 / joint_state_hz
    next_camera = next_joint = 0.0
    sim_origin = cell.time
    wall_origin = time.monotonic()
    outcome_time: float | None = None
    offset = 0.0  # sim time keeps increasing across episodes: /clock must be monotonic
    # Camera frames on their way to the host (camera_latency_s): (release time, [(publisher, msg)])
    in_flight: deque[tuple[float, list]] = deque()
    done = False
    try:
        while rclpy.ok() and not done:
            rclpy.spin_once(node, timeout_sec=0.0)
            if state["pending"] is not None:
                offset += cell.time
                start_episode(state["pending"])
                state["pending"] = None
                in_flight.clear()
                next_camera = next_joint = 0.0
                sim_origin, wall_origin = offset + cell.time, time.monotonic()
            cell.step()
            now = offset + cell.time
            clock_pub.publish(Clock(clock=msgs.to_time(now)))
            if cell.time >= next_joint - 1e-9:
                next_joint += joint_period
                names, q, qd, effort = cell.joint_state()
                joint_pub.publish(msgs.joint_state_msg(names, q, qd, effort, stamp_s=now))
            if (cam_pubs or truth_perception) and cell.time >= next_camera - 1e-9:
                next_camera += camera_period
                frame_msgs = []
                for (cal, rgb_pub, depth_pub, info_pub, dinfo_pub, info), frame in zip(
                    cam_pubs, cell.render() if cam_pubs else [], strict=True
                ):
                    frame_msgs += [
                        (rgb_pub, msgs.image_msg(frame.rgb, "rgb8", now, cal.frame_id)),
                        (depth_pub, msgs.image_msg(frame.depth_mm, "16UC1", now, cal.frame_id)),
                        (info_pub, msgs.camera_info_msg(info, now)),
                        (dinfo_pub, msgs.camera_info_msg(info, now)),
                    ]
                if frame_msgs:
                    in_flight.append((cell.time + camera_latency_s, frame_msgs))
                object_pub.publish(msgs.pose_stamped_msg(cell.object_pose(), now))
                palm_pub.publish(msgs.pose_stamped_msg(cell.body_pose(cell.robot.config.hand.palm_link), now))
                wrist_pub.publish(msgs.pose_stamped_msg(cell.giver.wrist_pose(cell.data), now))
                kp = PoseArray(header=msgs.header(now, "world"))
                kp.poses = [
                    Pose(position=Point(x=float(x), y=float(y), z=float(z)))
                    for x, y, z in cell.giver_keypoints()
                ]
                keypoint_pub.publish(kp)
                if truth_perception:
                    T_obj = cell.object_pose()
                    truth_pose_pub.publish(msgs.pose_stamped_msg(T_obj, now))
                    points = state["model"] @ T_obj[:3, :3].T + T_obj[:3, 3]
                    truth_points_pub.publish(pointcloud2_msg(points, now))
                    truth_kp_pub.publish(kp)
                contacts = cell.robot_giver_contacts()
                if contacts:  # robot touching the giver's hand: reported every camera frame it lasts
                    contact_pub.publish(String(data=json.dumps({"time": now, "contacts": contacts})))
                state_pub.publish(
                    String(
                        data=json.dumps(
                            {
                                "scenario": cell.scenario.name,
                                "giver": cell.giver.state.value,
                                # share of the object's weight the giver carries (null: released)
                                "giver_support": cell.giver.support_load(cell.data),
                                # its hold on the object in weights, world frame (null: released)
                                "giver_force": cell.giver.hold_force_row(cell.data),
                                "time": cell.time,
                            }
                        )
                    )
                )
            while in_flight and cell.time >= in_flight[0][0] - 1e-9:
                for pub, msg in in_flight.popleft()[1]:
                    pub.publish(msg)
            if cell.outcome is not None and outcome_time is None:
                outcome_time = cell.time
                record = cell.episode_record(
                    state["episode"],
                    limit_violations=state["violations"],
                    actuation_delay_s=actuation_delay_s,
                )
                outcome_pub.publish(String(data=json.dumps(record)))
                node.get_logger().info(
                    f"episode {state['episode']} outcome: {record['outcome']} ({record['detail']})"
                )
                if results_dir is not None:
                    with (results_dir / "episodes.jsonl").open("a") as f:
                        f.write(json.dumps(record) + "\n")
            if outcome_time is not None and cell.time - outcome_time >= 1.0:
                outcome_time = None
                state["episode"] += 1
                if episodes and state["episode"] >= episodes:
                    done = exit_when_done
                    if not done:
                        outcome_time = float("inf")  # hold the final state until reset
                else:
                    state["index"] += 1
                    state["pending"] = order[state["index"] % len(order)]
            if rtf > 0:
                ahead = (now - sim_origin) / rtf - (time.monotonic() - wall_origin)
                if ahead > 0.002:
                    time.sleep(ahead)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    except Exception:
        if not stopping():  # a signal racing a spin is a stop, anything else a crash
            raise
    finally:
        cell.close()
        node.destroy_node()
        rclpy.try_shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
