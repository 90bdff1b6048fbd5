"""`object_tracker_node`: object 6D pose + segmented object cloud from N RGB-D cameras (thin rclpy shell).

Subscribes (best effort, depth 1: only the latest frame of each camera is kept)
`/<camera>/aligned_depth_to_color/image_raw` (16UC1 mm or 32FC1 m) of every camera in the
calibration file, `/joint_states` (robot removal with the joints stamped nearest the frame's
stamp: the robot moves on while a frame is on its way) and `/perception/human_hand/keypoints`
(geometry_msgs/PoseArray, 21 points in world; giver hand removal with the keypoints whose stamp
is nearest the frame's, if within `keypoints_max_age_s`). A frame set is the depth images of all
cameras whose stamps lie within `sync_tolerance_s` of each other; each set is processed once,
newest first, by `ObjectTrackingPipeline` (see `object_tracking.py`). Colour is not subscribed:
the pipeline is purely geometric, and two colour streams would cost deserialisation for nothing.

Publishes, with the source frames' stamp (reliable, depth 5):
- `/perception/object/pose` (geometry_msgs/PoseStamped, `world`): only while the object is
  tracked (or its centroid, for an unknown object); nothing is published when it is lost.
- `/perception/object/points` (sensor_msgs/PointCloud2, `world`, x/y/z float32, exactly
  `n_points` points, `pointcloud.sample_fixed` as in training); an empty cloud (width 0) when lost.
- `/perception/giver/points` (sensor_msgs/PointCloud2, `world`): the giver's hand surface the depth
  sees (`ObjectTracker.giver_surface`: near the keypoints' skeleton, off the robot and the
  tracked object; 1 cm voxels); empty without a pose or keypoints. The policy keeps its goals
  clear of it (the keypoints place fingers that wrap an object centimetres short).
- `/perception/object/status` (std_msgs/String, JSON: stamp, status tracking|lost|centroid_only,
  fitness, points, compute_ms, detail).
- `/diagnostics` (diagnostic_msgs/DiagnosticArray, every `diagnostics_period_s`): output rate,
  latency (node clock now - frame stamp) p50/p95, compute ms, lost fraction.

Parameters: `calibration` (YAML path, absolute or under config/; missing or invalid: error and
exit code 2), `object_id` (library id; "" = unknown object: segmented cloud + centroid pose),
`object_scale`, `robot`/`hand` (robot description for robot removal; `robot: ""` disables it),
`workspace_min`/`workspace_max` (world box, m), `n_points`, `sample_method` (fps|random),
`voxel_m`, `sync_tolerance_s`, `keypoints_max_age_s`, topic names.
"""

from __future__ import annotations

import json
import math
import sys
import time
from collections import deque
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from sensor_msgs.msg import PointCloud2


# ---- numpy <-> PointCloud2 (x, y, z float32) -------------------------------------------------------
def pointcloud2_msg(points: np.ndarray, stamp_s: float, frame_id: str = "world") -> PointCloud2:
    """[N, 3] points -> PointCloud2 with float32 x/y/z fields (N = 0 gives an empty cloud)."""
    from sensor_msgs.msg import PointCloud2, PointField

    from dexh2r_core import msgs

    p = np.ascontiguousarray(np.asarray(points, dtype=np.float32).reshape(-1, 3))
    msg = PointCloud2(header=msgs.header(stamp_s, frame_id), height=1, width=len(p))
    msg.fields = [
        PointField(name=name, offset=4 * i, datatype=PointField.FLOAT32, count=1)
        for i, name in enumerate("xyz")
    ]
    msg.is_bigendian = False
    msg.point_step = 12
    msg.row_step = 12 * len(p)
    msg.is_dense = bool(np.isfinite(p).all())
    msg.data = p.tobytes()
    return msg


def pointcloud2_array(msg: PointCloud2) -> np.ndarray:
    """PointCloud2 with float32 x/y/z fields (any point_step, other fields ignored) -> [N, 3] float32."""
    from dexh2r_core.msgs import MessageError

    offsets = {f.name: f.offset for f in msg.fields if f.datatype == 7 and f.count == 1}  # FLOAT32
    if not all(k in offsets for k in "xyz"):
        raise MessageError(f"PointCloud2 needs float32 x, y, z fields, has {[f.name for f in msg.fields]}")
    n = msg.width * msg.height
    if n == 0:
        return np.zeros((0, 3), np.float32)
    if len(msg.data) < n * msg.point_step:
        raise MessageError(f"PointCloud2 data is {len(msg.data)} bytes, expected {n * msg.point_step}")
    dtype = np.dtype(
        {
            "names": list("xyz"),
            "formats": [">f4" if msg.is_bigendian else "<f4"] * 3,
            "offsets": [offsets[k] for k in "xyz"],
            "itemsize": msg.point_step,
        }
    )
    raw = np.frombuffer(bytes(msg.data), dtype=dtype, count=n)
    return np.stack([raw["x"], raw["y"], raw["z"]], axis=1).astype(np.float32)


def keypoints_array(msg) -> np.ndarray | None:
    """geometry_msgs/PoseArray of 21 hand keypoints -> [21, 3] (NaN rows = landmarks the hand tracker
    could not place), or None if malformed or all missing."""
    if len(msg.poses) != 21:
        return None
    kp = np.array([[p.position.x, p.position.y, p.position.z] for p in msg.poses], dtype=np.float64)
    kp[~np.isfinite(kp).all(axis=1)] = np.nan
    return kp if np.isfinite(kp).all(axis=1).any() else None


class FrameSync:
    """Latest depth image per camera; yields a frame set once all stamps agree within a tolerance.

    ROS-free so that pairing is unit-testable. `add` returns (stamp, images) of a complete set not
    processed before (stamp = the newest of the set), else None.
    """

    def __init__(self, n_cameras: int, tolerance_s: float = 0.01) -> None:
        self.n = n_cameras
        self.tolerance_s = tolerance_s
        self.latest: list[tuple[float, np.ndarray] | None] = [None] * n_cameras
        self.last_emitted = -math.inf

    def add(self, index: int, stamp: float, image: np.ndarray) -> tuple[float, list[np.ndarray]] | None:
        self.latest[index] = (stamp, image)
        if any(entry is None for entry in self.latest):
            return None
        stamps = [entry[0] for entry in self.latest]  # type: ignore[index]
        newest = max(stamps)
        if newest - min(stamps) > self.tolerance_s or newest <= self.last_emitted:
            return None
        self.last_emitted = newest
        return newest, [entry[1] for entry in self.latest]  # type: ignore[index]


class StampedHistory:
    """Recent stamped values (ROS-free): `nearest(stamp)` is the value stamped closest to `stamp`,
    or None when none lies within `max_gap_s` of it.

    A camera frame reaches the node a camera's latency and a transport after its exposure, and the
    hand tracker's keypoints for it before or after it: the robot's joints and the giver's hand
    are matched to the frame's stamp, not taken as they are now (the robot moves on meanwhile, and
    its removal from the depth would cut where its hand no longer is).
    """

    def __init__(self, maxlen: int, max_gap_s: float) -> None:
        self.items: deque[tuple[float, Any]] = deque(maxlen=maxlen)
        self.max_gap_s = max_gap_s

    def add(self, stamp: float, value: Any) -> None:
        self.items.append((stamp, value))

    def nearest(self, stamp: float) -> Any | None:
        if not self.items:
            return None
        near_stamp, value = min(self.items, key=lambda item: abs(item[0] - stamp))
        return value if abs(near_stamp - stamp) <= self.max_gap_s else None


def main(argv: list[str] | None = None) -> int:
    import rclpy
    from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
    from geometry_msgs.msg import PoseArray, PoseStamped
    from rclpy.node import Node
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import Image, JointState, PointCloud2
    from std_msgs.msg import String

    from dexh2r_core import msgs
    from dexh2r_core.calibration import load_camera_rig
    from dexh2r_core.config import ConfigError
    from dexh2r_core.node_runtime import exit_with_error, spin_until_shutdown
    from dexh2r_core.ros_env import apply_ros_defaults
    from dexh2r_perception.object_tracking import ObjectTrackingPipeline, TrackerConfig

    apply_ros_defaults()
    rclpy.init(args=sys.argv if argv is None else argv)
    node = Node("object_tracker")
    log = node.get_logger()
    defaults = TrackerConfig()
    p = node.declare_parameter
    calibration_param = p("calibration", "calibration/sim_two_cameras.yaml").value
    object_id = p("object_id", "").value
    object_scale = float(p("object_scale", 1.0).value)
    robot_name = p("robot", "ur5_shadow").value
    hand_name = p("hand", "").value or None
    workspace_min = list(p("workspace_min", list(defaults.workspace_min)).value)
    workspace_max = list(p("workspace_max", list(defaults.workspace_max)).value)
    n_points = int(p("n_points", defaults.n_points).value)
    sample_method = p("sample_method", defaults.sample_method).value
    voxel_m = float(p("voxel_m", defaults.voxel_m).value)
    sync_tolerance_s = float(p("sync_tolerance_s", 0.016).value)  # half a 30 Hz frame period
    keypoints_max_age_s = float(p("keypoints_max_age_s", 0.2).value)
    depth_topic = p("depth_topic", "/{camera}/aligned_depth_to_color/image_raw").value
    joint_topic = p("joint_states_topic", "/joint_states").value
    keypoints_topic = p("hand_keypoints_topic", "/perception/human_hand/keypoints").value
    giver_points_topic = p("giver_points_topic", "/perception/giver/points").value
    frame_id = p("frame_id", "world").value
    diagnostics_period_s = float(p("diagnostics_period_s", 1.0).value)

    def fail(message: str) -> int:
        return exit_with_error(node, message)

    try:
        calibration = load_camera_rig(calibration_param)
    except FileNotFoundError as exc:
        return fail(str(exc))
    except (ConfigError, ValueError) as exc:
        return fail(f"cannot start: {exc}")
    try:
        config = TrackerConfig(
            workspace_min=tuple(float(v) for v in workspace_min),  # type: ignore[arg-type]
            workspace_max=tuple(float(v) for v in workspace_max),  # type: ignore[arg-type]
            n_points=n_points,
            sample_method=sample_method,
            voxel_m=voxel_m,
        )
        robot = None
        if robot_name:
            from dexh2r_core.robot.config import load_robot_config
            from dexh2r_core.robot.description import RobotDescription

            robot = RobotDescription(load_robot_config(robot_name, hand=hand_name))
        pipeline = ObjectTrackingPipeline(
            calibration, config, object_id=object_id or None, object_scale=object_scale, robot=robot
        )
    except (ConfigError, ValueError, KeyError, OSError) as exc:
        return fail(f"cannot start: {exc}")

    reliable = QoSProfile(depth=5, reliability=ReliabilityPolicy.RELIABLE)
    latest_only = QoSProfile(depth=1, reliability=ReliabilityPolicy.BEST_EFFORT)
    pose_pub = node.create_publisher(PoseStamped, "/perception/object/pose", reliable)
    points_pub = node.create_publisher(PointCloud2, "/perception/object/points", reliable)
    giver_pub = node.create_publisher(PointCloud2, giver_points_topic, reliable)
    status_pub = node.create_publisher(String, "/perception/object/status", reliable)
    diag_pub = node.create_publisher(DiagnosticArray, "/diagnostics", reliable)

    sync = FrameSync(len(calibration.cameras), sync_tolerance_s)
    state: dict = {"joints": None}
    # The robot's joints (1 s at 250 Hz) and the giver's keypoints as they were at a frame's stamp
    joint_history = StampedHistory(maxlen=250, max_gap_s=0.5)
    hand_history = StampedHistory(maxlen=8, max_gap_s=keypoints_max_age_s)
    stats = {"latency": deque(maxlen=300), "compute": deque(maxlen=300), "out": deque(maxlen=300)}
    counts = {"frames": 0, "lost": 0, "bad": 0}

    def process(stamp: float, images: list[np.ndarray]) -> None:
        # A stale hand (none near the frame's stamp): no hole cut where the hand used to be.
        kp = hand_history.nearest(stamp)
        # No joint state near the frame's stamp (e.g. unstamped ones): the newest.
        joints = joint_history.nearest(stamp) or state["joints"]
        est = pipeline.process(stamp, images, joints, kp)
        if est.pose is not None:
            pose_pub.publish(msgs.pose_stamped_msg(est.pose, stamp, frame_id))
        points_pub.publish(pointcloud2_msg(est.points, stamp, frame_id))
        giver_pub.publish(pointcloud2_msg(est.giver_points, stamp, frame_id))
        status = {
            "stamp": stamp,
            "status": est.status,
            "object_id": object_id,
            "fitness": round(float(est.fitness), 4),
            "points": len(est.points),
            "observed": int(est.n_observed),
            "relocalized": bool(est.relocalized),
            "compute_ms": round(est.compute_ms, 2),
            "detail": est.detail,
        }
        status_pub.publish(String(data=json.dumps(status)))
        now = node.get_clock().now().nanoseconds * 1e-9
        stats["latency"].append(now - stamp)
        stats["compute"].append(est.compute_ms)
        stats["out"].append(time.monotonic())
        counts["frames"] += 1
        counts["lost"] += est.status == "lost"

    def on_depth(index: int):
        def callback(msg: Image) -> None:
            try:
                image = msgs.image_array(msg)
            except msgs.MessageError as exc:
                counts["bad"] += 1
                log.warning(f"dropping depth image of {calibration.cameras[index].name}: {exc}")
                return
            ready = sync.add(index, msgs.from_time(msg.header.stamp), image)
            if ready is not None:
                try:
                    process(*ready)
                except ValueError as exc:  # e.g. an image size the calibration cannot be scaled to
                    counts["bad"] += 1
                    log.error(f"frame set skipped: {exc}")

        return callback

    def on_joints(msg: JointState) -> None:
        if len(msg.name) == len(msg.position):
            joints = dict(state["joints"] or {})  # a new dict: the history keeps the old ones
            joints.update(zip(msg.name, (float(v) for v in msg.position), strict=True))
            state["joints"] = joints
            joint_history.add(msgs.from_time(msg.header.stamp), joints)

    def on_keypoints(msg: PoseArray) -> None:
        kp = keypoints_array(msg)
        if kp is not None:
            hand_history.add(msgs.from_time(msg.header.stamp), kp)

    for i, cam in enumerate(calibration.cameras):
        node.create_subscription(Image, depth_topic.format(camera=cam.name), on_depth(i), latest_only)
    node.create_subscription(JointState, joint_topic, on_joints, reliable)
    node.create_subscription(PoseArray, keypoints_topic, on_keypoints, reliable)

    def publish_diagnostics() -> None:
        out = list(stats["out"])
        window = [t for t in out if out and t >= out[-1] - 5.0]
        rate = (len(window) - 1) / (window[-1] - window[0]) if len(window) > 1 else 0.0
        lat = np.array(stats["latency"]) * 1e3
        comp = np.array(stats["compute"])
        values = {
            "rate_hz": rate,
            "latency_ms_p50": float(np.median(lat)) if len(lat) else math.nan,
            "latency_ms_p95": float(np.percentile(lat, 95)) if len(lat) else math.nan,
            "compute_ms_p50": float(np.median(comp)) if len(comp) else math.nan,
            "compute_ms_p95": float(np.percentile(comp, 95)) if len(comp) else math.nan,
            "frames": counts["frames"],
            "lost_fraction": counts["lost"] / max(1, counts["frames"]),
            "bad_messages": counts["bad"],
        }
        level = DiagnosticStatus.OK if counts["frames"] else DiagnosticStatus.WARN
        status = DiagnosticStatus(
            level=level,
            name="object_tracker",
            message="tracking" if counts["frames"] else "waiting for camera frames",
            hardware_id=",".join(calibration.names),
            values=[
                KeyValue(key=k, value=f"{v:.4g}" if isinstance(v, float) else str(v))
                for k, v in values.items()
            ],
        )
        diag_pub.publish(
            DiagnosticArray(
                header=msgs.header(node.get_clock().now().nanoseconds * 1e-9, ""), status=[status]
            )
        )

    node.create_timer(diagnostics_period_s, publish_diagnostics)
    log.info(
        f"object tracker ready: object '{object_id or '(unknown: centroid only)'}', cameras "
        f"{calibration.names}, robot removal {'on' if robot else 'off'}, {n_points} points ({sample_method})"
    )
    return spin_until_shutdown(node)


if __name__ == "__main__":
    sys.exit(main())
