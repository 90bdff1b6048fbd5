"""numpy <-> ROS 2 message conversion (standard message types only; no cv_bridge needed).

Every function that reads a message validates it and raises `MessageError` naming the field, so a
node can log the cause and keep its last good state instead of crashing on a malformed message.
"""

from __future__ import annotations

import numpy as np
from builtin_interfaces.msg import Time
from geometry_msgs.msg import Point, Pose, PoseStamped, Quaternion
from sensor_msgs.msg import CameraInfo, Image, JointState
from std_msgs.msg import Header
from trajectory_msgs.msg import JointTrajectory as JointTrajectoryMsg
from trajectory_msgs.msg import JointTrajectoryPoint

from dexh2r_core.trajectory import JointTrajectory, TrajectoryPoint
from dexh2r_core.transforms import make_transform, to_position_quat


class MessageError(ValueError):
    pass


# ---- time -------------------------------------------------------------------------------------
def _sec_nsec(seconds: float) -> tuple[int, int]:
    sec, nsec = divmod(round(seconds * 1e9), 1_000_000_000)
    return int(sec), int(nsec)


def to_time(seconds: float) -> Time:
    sec, nsec = _sec_nsec(seconds)
    return Time(sec=sec, nanosec=nsec)


def from_time(stamp: Time) -> float:
    return stamp.sec + stamp.nanosec * 1e-9


def header(stamp_s: float, frame_id: str) -> Header:
    return Header(stamp=to_time(stamp_s), frame_id=frame_id)


# ---- images -----------------------------------------------------------------------------------
# 32FC1: depth in metres as REP 118 has it (NaN = no measurement).
_ENCODINGS = {
    "rgb8": (np.uint8, 3),
    "bgr8": (np.uint8, 3),
    "mono8": (np.uint8, 1),
    "16UC1": (np.uint16, 1),
    "32FC1": (np.float32, 1),
}


def image_msg(array: np.ndarray, encoding: str, stamp_s: float, frame_id: str) -> Image:
    dtype, channels = _ENCODINGS[encoding]
    array = np.ascontiguousarray(array, dtype=dtype)
    h, w = array.shape[:2]
    msg = Image(header=header(stamp_s, frame_id), height=h, width=w, encoding=encoding, is_bigendian=0)
    msg.step = w * channels * np.dtype(dtype).itemsize
    msg.data = array.tobytes()
    return msg


def image_array(msg: Image) -> np.ndarray:
    """The image as an array (H, W[, C]); copies nothing more than needed."""
    if msg.encoding not in _ENCODINGS:
        raise MessageError(f"image encoding '{msg.encoding}' is not supported ({', '.join(_ENCODINGS)})")
    dtype, channels = _ENCODINGS[msg.encoding]
    itemsize = np.dtype(dtype).itemsize
    if msg.step < msg.width * channels * itemsize or len(msg.data) < msg.step * msg.height:
        raise MessageError(
            f"image data is {len(msg.data)} bytes, expected {msg.step} x {msg.height} for {msg.width} px"
        )
    rows = np.frombuffer(bytes(msg.data), dtype=np.uint8, count=msg.step * msg.height).reshape(
        msg.height, msg.step
    )
    pixels = rows[:, : msg.width * channels * itemsize].copy().view(dtype)
    if msg.is_bigendian and itemsize > 1:
        pixels = pixels.byteswap()
    return (
        pixels.reshape(msg.height, msg.width, channels)
        if channels > 1
        else pixels.reshape(msg.height, msg.width)
    )


def camera_info_msg(info: dict, stamp_s: float) -> CameraInfo:
    """From `dexh2r_sim.cameras.camera_info_dict`-style plain data (CameraInfo field names)."""
    msg = CameraInfo(
        header=header(stamp_s, info["frame_id"]), width=int(info["width"]), height=int(info["height"])
    )
    msg.distortion_model = info.get("distortion_model", "plumb_bob")
    msg.d = [float(v) for v in info.get("d", [0.0] * 5)]
    msg.k = [float(v) for v in info["k"]]
    msg.r = [float(v) for v in info.get("r", [1, 0, 0, 0, 1, 0, 0, 0, 1])]
    msg.p = [float(v) for v in info["p"]]
    return msg


# ---- poses ------------------------------------------------------------------------------------
def pose_msg(T: np.ndarray) -> Pose:
    p, q = to_position_quat(T)
    return Pose(
        position=Point(x=float(p[0]), y=float(p[1]), z=float(p[2])),
        orientation=Quaternion(x=float(q[0]), y=float(q[1]), z=float(q[2]), w=float(q[3])),
    )


def pose_stamped_msg(T: np.ndarray, stamp_s: float, frame_id: str = "world") -> PoseStamped:
    return PoseStamped(header=header(stamp_s, frame_id), pose=pose_msg(T))


def pose_matrix(pose: Pose) -> np.ndarray:
    """4x4 from a Pose; NaN/Inf or a zero quaternion raise MessageError."""
    p, o = pose.position, pose.orientation
    values = np.array([p.x, p.y, p.z, o.x, o.y, o.z, o.w], dtype=float)
    if not np.all(np.isfinite(values)):
        raise MessageError("pose contains NaN or Inf")
    q = values[3:]
    norm = np.linalg.norm(q)
    if norm < 1e-6:
        raise MessageError("pose orientation is a zero quaternion")
    return make_transform(values[:3], q / norm)


# ---- joints -----------------------------------------------------------------------------------
def joint_state_msg(names, positions, velocities=None, efforts=None, stamp_s: float = 0.0) -> JointState:
    msg = JointState(header=header(stamp_s, ""), name=list(names))
    msg.position = [float(v) for v in positions]
    msg.velocity = [float(v) for v in velocities] if velocities is not None else []
    msg.effort = [float(v) for v in efforts] if efforts is not None else []
    return msg


def joint_trajectory_msg(
    names, times, positions, velocities=None, stamp_s: float = 0.0, frame_id: str = ""
) -> JointTrajectoryMsg:
    msg = JointTrajectoryMsg(header=header(stamp_s, frame_id), joint_names=list(names))
    for i, t in enumerate(times):
        point = JointTrajectoryPoint(positions=[float(v) for v in positions[i]])
        if velocities is not None:
            point.velocities = [float(v) for v in velocities[i]]
        point.time_from_start.sec, point.time_from_start.nanosec = _sec_nsec(t)
        msg.points.append(point)
    return msg


def joint_trajectory(msg: JointTrajectoryMsg) -> JointTrajectory:
    """ROS JointTrajectory -> ROS-free JointTrajectory (validated later against the controlled joints)."""
    points = []
    for p in msg.points:
        points.append(
            TrajectoryPoint(
                time_from_start=p.time_from_start.sec + p.time_from_start.nanosec * 1e-9,
                positions=np.asarray(p.positions, dtype=float),
                velocities=np.asarray(p.velocities, dtype=float) if len(p.velocities) else None,
                accelerations=np.asarray(p.accelerations, dtype=float) if len(p.accelerations) else None,
            )
        )
    return JointTrajectory(
        joint_names=list(msg.joint_names), points=points, start_time=from_time(msg.header.stamp)
    )
