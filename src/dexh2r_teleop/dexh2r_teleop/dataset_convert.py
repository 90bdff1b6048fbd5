"""`dexh2r dataset convert`: recorded episodes (rosbag2 MCAP) -> the DexH2R layout the policies train on.

    dexh2r dataset convert episodes/ -o data/teleop             # every bag folder under episodes/
    dexh2r dataset convert BAG [BAG ...] -o OUT --rate 10 --max-gap 0.5 [--allow-incomplete]

ROS-free: bags are read with the recorder's MCAP reader (`recorder.open_bag` / `iter_messages`) and
deserialised with the pure-Python `rosbags` typestore. Per episode (one bag folder written by
`recorder_node` / `dexh2r record`):

1. **Checks** (a `BagError` naming the bag, the topic and the time): the MCAP file is complete (a
   truncated file: `dexh2r record --recover` first), the episode status is `complete` (else
   `--allow-incomplete`), every required stream of `STREAMS` is in the bag with its type, every
   message of the used topics deserialises and makes sense (joint names, finite poses), the
   message counts match metadata.yaml, and no required stream is silent for more than `--max-gap`
   seconds inside the converted window.
2. **Alignment**: times are header stamps (sim time for sim bags, camera time for perception),
   the log (receive) time for messages without a stamp. The window is where every required stream
   has data (the latest first stamp to the earliest last stamp); frames every 1 / `--rate` s in it.
   Joints and keypoints are interpolated linearly, object poses with a lerp + slerp, the object
   cloud is the latest one at or before the frame carried along by the object's motion since.
3. **Records** (the layout of `dexh2r_policy.data.dexh2r_layout`, as `dexh2r datagen episodes`
   writes the sim's expert episodes): `qpos` [T, 30] = the hand root pose in world (forward
   kinematics of the measured joints: palm pose x inverse(palm in the hand mount at wrist 0), the
   grasp pools' frame) + the 24 hand joints with the two wrist joints zeroed; `obj_pose` [T, 4, 4];
   `real_obj_pcd_xyz` [T, N, 3] (`dexh2r_core.pointcloud.sample_fixed` of the recorded object cloud,
   or, without one, of the object model's surface samples facing a camera, posed by `obj_pose`);
   `giver_keypoints` [T, 21, 3]; `motion_info.yaml` `grasp_begin_frame_index` (the controller's
   first `close` state on `/handover/state`, else the first frame with the palm within
   `--grasp-distance` of the object, else T); plus `robot_joints.pt` and `episode_info.json`.
   The dataset root gets `dataset_split.json`, `objects.json`, `obj_surface_pcd_4096/` and
   `object_model/` for the objects of the written sequences.

Nothing half-written is left: the dataset is built in a temporary folder next to `-o` and renamed
at the end; on an error it is deleted. `convert_report.json` (in the output, and at `--report`
even when the conversion failed) lists every episode with what served each stream.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from scipy.spatial.transform import Rotation

from dexh2r_teleop.recorder import (
    BagError,
    BagInfo,
    deserialize,
    has_header,
    header_stamp_ns,
    iter_messages,
    normalize_type,
    open_bag,
)

# --------------------------------------------------------------------------------------------
# What a conversion reads: the one place that says which topics are required
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class StreamSpec:
    key: str
    topics: tuple[str, ...]  # candidates, in order of preference: the first one in the bag serves
    msgtype: str
    required: bool
    use: str


STREAMS: tuple[StreamSpec, ...] = (
    StreamSpec(
        "joints",
        ("/joint_states",),
        "sensor_msgs/msg/JointState",
        True,
        "qpos.pt (FK of the hand root + 24 hand joints), robot_joints.pt",
    ),
    StreamSpec(
        "object_pose",
        ("/perception/object/pose", "/sim/object/pose"),
        "geometry_msgs/msg/PoseStamped",
        True,
        "obj_pose.pt (the object tracker's pose, else the sim's ground truth)",
    ),
    StreamSpec(
        "giver_keypoints",
        ("/perception/human_hand/keypoints", "/sim/giver/keypoints"),
        "geometry_msgs/msg/PoseArray",
        True,
        "giver_keypoints.pt (the layout needs a giver hand and no MANO is recorded)",
    ),
    StreamSpec(
        "object_points",
        ("/perception/object/points",),
        "sensor_msgs/msg/PointCloud2",
        False,
        "real_obj_pcd_xyz.pt (else the object model's camera-facing surface samples)",
    ),
    StreamSpec(
        "handover_state",
        ("/handover/state",),
        "std_msgs/msg/String",
        False,
        "grasp_begin_frame_index (the first 'close' state)",
    ),
)
STREAM_KEYS = tuple(s.key for s in STREAMS)


@dataclass
class ConvertOptions:
    rate_hz: float = 10.0
    max_gap_s: float = 0.5
    allow_incomplete: bool = False
    n_points: int = 1024  # the object tracker's output size, as `datagen episodes`
    robot: str = "ur5_shadow"
    subject: str = ""  # default: the episode's `subject`, else its `operator`, else "teleop"
    subject_split: str = "train"  # train | val | test: the split of the converted subjects
    object_id: str = ""  # default: the episode's `object`
    topics: dict[str, str] = field(default_factory=dict)  # stream key -> topic (overrides STREAMS)
    grasp_distance_m: float = 0.08  # palm-object distance that starts the grasp (0: off)
    calibration: str = "calibration/sim_two_cameras.yaml"  # camera positions for the surface cloud
    pools: str = "data/pools"  # written into objects.json (pool_file)

    def __post_init__(self) -> None:
        if not self.rate_hz > 0:
            raise ValueError(f"--rate must be > 0, got {self.rate_hz}")
        if not self.max_gap_s > 0:
            raise ValueError(f"--max-gap must be > 0, got {self.max_gap_s}")
        if self.n_points < 1:
            raise ValueError(f"--points must be >= 1, got {self.n_points}")
        if self.subject_split not in ("train", "val", "test"):
            raise ValueError(f"--split must be train, val or test, got {self.subject_split!r}")
        unknown = sorted(set(self.topics) - set(STREAM_KEYS))
        if unknown:
            raise ValueError(f"--topic: unknown stream(s) {unknown} (known: {', '.join(STREAM_KEYS)})")


# --------------------------------------------------------------------------------------------
# Reading one bag
# --------------------------------------------------------------------------------------------


def _when(info: BagInfo, log_ns: int, stamp_ns: int | None = None) -> str:
    into = (log_ns - info.start_ns) * 1e-9
    stamp = f", stamp {stamp_ns * 1e-9:.3f} s" if stamp_ns is not None else ""
    return f"log time {log_ns} ns ({into:.3f} s into the bag{stamp})"


@dataclass
class Stream:
    """One stream's usable samples, sorted by time: stamps (ns) and parsed values."""

    spec: StreamSpec
    topic: str
    stamps: list[int | None] = field(default_factory=list)  # None: no header stamp (mapped later)
    logs: list[int] = field(default_factory=list)  # receive times
    values: list[Any] = field(default_factory=list)
    messages: int = 0
    skipped: int = 0  # messages that carry no observation (e.g. the hand was not seen)

    def sorted(self) -> tuple[np.ndarray, list[Any]]:
        order = np.argsort(np.asarray(self.stamps, np.int64), kind="stable")
        stamps = np.asarray(self.stamps, np.int64)[order]
        values = [self.values[i] for i in order]
        keep = np.ones(len(stamps), bool)
        keep[:-1] = stamps[1:] != stamps[:-1]  # equal stamps: the last one received wins
        return stamps[keep], [v for v, k in zip(values, keep, strict=True) if k]


def choose_topics(info: BagInfo, opts: ConvertOptions) -> dict[str, str]:
    """Stream key -> bag topic; BagError for a required stream with no topic or a wrong type."""
    chosen: dict[str, str] = {}
    for spec in STREAMS:
        candidates = (opts.topics[spec.key],) if spec.key in opts.topics else spec.topics
        topic = next((t for t in candidates if t in info.topics), None)
        if topic is None:
            if spec.required:
                raise BagError(
                    f"bag {info.path}: required topic missing for {spec.key}: none of {list(candidates)} "
                    f"is in the bag (has: {sorted(info.topics)})"
                )
            continue
        if normalize_type(info.topics[topic]) != spec.msgtype:
            raise BagError(
                f"bag {info.path}: topic {topic} has type {info.topics[topic]}, "
                f"{spec.key} needs {spec.msgtype}"
            )
        chosen[spec.key] = topic
    return chosen


def _parse(key: str, msg: Any, joint_names: Sequence[str]) -> Any:
    """A deserialised message -> the stream's value; ValueError for a malformed one, None for a
    message without an observation."""
    from dexh2r_core.transforms import make_transform

    if key == "joints":
        pos = dict(zip(msg.name, np.asarray(msg.position, float).tolist(), strict=False))
        missing = [n for n in joint_names if n not in pos]
        if missing:
            raise ValueError(f"joint state lacks {len(missing)} robot joint(s), e.g. {missing[:3]}")
        q = np.array([pos[n] for n in joint_names], float)
        if not np.isfinite(q).all():
            raise ValueError("joint positions contain NaN or inf")
        return q
    if key == "object_pose":
        p, o = msg.pose.position, msg.pose.orientation
        v = np.array([p.x, p.y, p.z, o.x, o.y, o.z, o.w], float)
        if not np.isfinite(v).all() or np.linalg.norm(v[3:]) < 1e-6:
            raise ValueError("object pose is not finite or its quaternion is zero")
        return make_transform(v[:3], v[3:] / np.linalg.norm(v[3:]))
    if key == "giver_keypoints":
        from dexh2r_perception.object_tracker_node import keypoints_array

        return keypoints_array(msg)  # None: not 21 poses or no landmark seen
    if key == "object_points":
        from dexh2r_perception.object_tracker_node import pointcloud2_array

        pts = pointcloud2_array(msg)
        pts = pts[np.isfinite(pts).all(axis=1)]
        return pts if len(pts) else None
    if key == "handover_state":
        try:
            return str(json.loads(msg.data).get("state", ""))
        except (ValueError, AttributeError):
            return str(msg.data)
    raise KeyError(key)


def read_streams(info: BagInfo, chosen: dict[str, str], joint_names: Sequence[str]) -> dict[str, Stream]:
    """Every message of the chosen topics, deserialised, checked and parsed (BagError names the
    bag, topic and time of the first bad one)."""
    by_topic = {topic: key for key, topic in chosen.items()}
    specs = {s.key: s for s in STREAMS}
    streams = {key: Stream(specs[key], topic) for key, topic in chosen.items()}
    for raw in iter_messages(info, list(by_topic)):
        key = by_topic[raw.topic]
        stream = streams[key]
        stamp = header_stamp_ns(raw.data, raw.type) if has_header(raw.type) else None
        try:
            msg = deserialize(raw.data, raw.type)
        except Exception as exc:
            raise BagError(
                f"bag {info.path}: corrupt message on {raw.topic} ({raw.type}) at "
                f"{_when(info, raw.log_time_ns)}: {type(exc).__name__}: {exc}"
            ) from exc
        try:
            value = _parse(key, msg, joint_names)
        except ValueError as exc:  # dexh2r_core.msgs.MessageError is one
            raise BagError(
                f"bag {info.path}: bad message on {raw.topic} ({raw.type}) at "
                f"{_when(info, raw.log_time_ns, stamp)}: {exc}"
            ) from exc
        stream.messages += 1
        if value is None:
            stream.skipped += 1
            continue
        stream.stamps.append(stamp or None)
        stream.logs.append(raw.log_time_ns)
        stream.values.append(value)
    # Messages without a header stamp (a String state, an unset stamp) go onto the stamp clock
    # through /joint_states' (receive time -> stamp) pairs: in a sim bag the stamps are sim time,
    # which runs at its own pace; without stamps there, receive time is the clock.
    ref = streams["joints"]
    ref_pairs = sorted((log, st) for log, st in zip(ref.logs, ref.stamps, strict=True) if st is not None)
    for stream in streams.values():
        if any(st is None for st in stream.stamps):
            logs = np.asarray(stream.logs, np.int64)
            if ref_pairs:
                rl, rs = (np.asarray(v, np.float64) for v in zip(*ref_pairs, strict=True))
                mapped = np.interp(logs.astype(np.float64), rl, rs).astype(np.int64)
            else:
                mapped = logs
            stream.stamps = [
                int(m) if st is None else st for st, m in zip(stream.stamps, mapped.tolist(), strict=True)
            ]
    for key, stream in streams.items():
        expected = info.counts.get(stream.topic)
        if expected is not None and stream.messages != expected:
            raise BagError(
                f"bag {info.path}: {stream.topic} has {stream.messages} readable messages, metadata.yaml "
                f"says {expected} (truncated or damaged file)"
            )
        if stream.spec.required and not stream.stamps:
            what = "no message" if not stream.messages else f"{stream.messages} messages, none usable"
            raise BagError(f"bag {info.path}: required topic {stream.topic} ({key}): {what}")
    return streams


# --------------------------------------------------------------------------------------------
# Alignment and resampling
# --------------------------------------------------------------------------------------------


def _bracket(ts: np.ndarray, t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(index i, weight w) with value(t) = (1 - w) v[i] + w v[i + 1], clamped at both ends."""
    if len(ts) == 1:
        return np.zeros(len(t), int), np.zeros(len(t))
    i = np.clip(np.searchsorted(ts, t, side="right") - 1, 0, len(ts) - 2)
    w = np.clip((t - ts[i]) / (ts[i + 1] - ts[i]), 0.0, 1.0)
    return i, w


def interp_linear(ts: np.ndarray, values: np.ndarray, t: np.ndarray) -> np.ndarray:
    values = np.asarray(values, float)
    if len(ts) == 1:
        return np.repeat(values[:1], len(t), axis=0)
    i, w = _bracket(ts, t)
    w = w.reshape(-1, *([1] * (values.ndim - 1)))
    return values[i] * (1.0 - w) + values[i + 1] * w


def interp_poses(ts: np.ndarray, poses: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Poses [M, 4, 4] at times ts -> [len(t), 4, 4]: translation lerp, rotation slerp."""
    poses = np.asarray(poses, float)
    out = np.repeat(np.eye(4)[None], len(t), axis=0)
    if len(ts) == 1:
        out[:] = poses[0]
        return out
    i, w = _bracket(ts, t)
    out[:, :3, 3] = poses[i, :3, 3] * (1.0 - w)[:, None] + poses[i + 1, :3, 3] * w[:, None]
    ra, rb = Rotation.from_matrix(poses[i, :3, :3]), Rotation.from_matrix(poses[i + 1, :3, :3])
    out[:, :3, :3] = (ra * Rotation.from_rotvec((ra.inv() * rb).as_rotvec() * w[:, None])).as_matrix()
    return out


def fill_keypoints(values: list[np.ndarray]) -> tuple[list[int], np.ndarray]:
    """Keypoint sets [21, 3] with NaN rows (landmarks not placed) -> each NaN row held from the
    last set where it was seen; (indices of the sets that are complete after that, [K, 21, 3])."""
    last = np.full((21, 3), np.nan)
    keep, out = [], []
    for k, kp in enumerate(values):
        kp = np.where(np.isfinite(kp), kp, last)
        last = kp
        if np.isfinite(kp).all():
            keep.append(k)
            out.append(kp)
    return keep, np.asarray(out, float).reshape(-1, 21, 3)


def check_gaps(
    info: BagInfo, stream: Stream, stamps: np.ndarray, t0: int, t1: int, max_gap_s: float
) -> float:
    """Largest interval between samples that touches the window [t0, t1] (ns); BagError over max."""
    if len(stamps) < 2:
        return 0.0
    a, b = stamps[:-1], stamps[1:]
    inside = (b > t0) & (a < t1)
    dt = (b - a) * 1e-9
    dt[~inside] = 0.0
    k = int(np.argmax(dt))
    if dt[k] > max_gap_s:
        raise BagError(
            f"bag {info.path}: gap of {dt[k]:.3f} s on {stream.topic} ({stream.spec.key}) between stamps "
            f"{a[k] * 1e-9:.3f} s and {b[k] * 1e-9:.3f} s ({(a[k] - t0) * 1e-9:.3f} s into the converted "
            f"window), longer than --max-gap {max_gap_s} s"
        )
    return float(dt.max())


# --------------------------------------------------------------------------------------------
# One episode
# --------------------------------------------------------------------------------------------


class Kinematics:
    """The hand root of the layout from joint vectors (the frame `datagen episodes` writes)."""

    def __init__(self, robot_name: str) -> None:
        from dexh2r_control.ik import ArmIk
        from dexh2r_core.robot.description import RobotDescription
        from dexh2r_policy.episodes import root_to_palm_at_zero
        from dexh2r_policy.grasps.stability import wrist_joint_names

        self.robot = RobotDescription.load(robot_name)
        self.fk = ArmIk(self.robot, self.robot.config.hand.palm_link)
        self.T_palm_root = np.linalg.inv(root_to_palm_at_zero(self.robot))
        wrist = set(wrist_joint_names(self.robot))
        self.wrist_idx = [i for i, n in enumerate(self.robot.hand_joint_names) if n in wrist]

    def qpos(self, q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(qpos [30], palm position [3]) of one joint vector (arm + hand)."""
        T_palm = self.fk.frame_pose(q)
        T_root = T_palm @ self.T_palm_root
        hand = np.array(q[self.robot.n_arm :], float)
        hand[self.wrist_idx] = 0.0
        root = np.concatenate([T_root[:3, 3], Rotation.from_matrix(T_root[:3, :3]).as_rotvec()])
        return np.concatenate([root, hand]), T_palm[:3, 3]


class SurfaceCloud:
    """The object model's surface samples facing a camera, posed: the cloud when none was recorded
    (as `dexh2r_policy.episodes.ObjectCloudRecorder` with `--cloud surface`)."""

    def __init__(self, object_id: str, scale: float, calibration: str) -> None:
        from dexh2r_perception.object_tracking import ObjectModel, TrackerConfig

        self.model = ObjectModel.from_library(object_id, scale, n=TrackerConfig().model_points)
        self.cameras: list[np.ndarray] = []
        if calibration:
            from dexh2r_core.calibration import load_camera_rig

            self.cameras = [cam.T[:3, 3].copy() for cam in load_camera_rig(calibration).cameras]

    def __call__(self, T: np.ndarray) -> np.ndarray:
        from dexh2r_policy.episodes import facing_points

        return facing_points(self.model.points, self.model.normals, T, self.cameras)


@dataclass
class Episode:
    row: dict[str, Any]
    sequence: Any  # DexH2RSequence
    robot_joints: np.ndarray
    info: dict[str, Any]


def _sanitize(name: str) -> str:
    out = "".join(c if c.isalnum() or c in "-_" else "_" for c in name.strip())
    return out.strip("_") or "teleop"


def convert_episode(bag: str | os.PathLike[str], opts: ConvertOptions, kin: Kinematics) -> Episode:
    """One bag -> (sequence, extras). BagError for bad input."""
    from dexh2r_core.pointcloud import EmptyCloudError, sample_fixed
    from dexh2r_perception.object_tracking import TrackerConfig
    from dexh2r_policy.data.dexh2r_layout import DatasetError, DexH2RSequence, SequenceId
    from dexh2r_policy.episodes import object_name
    from dexh2r_sim.objects import ObjectLibrary, UnknownObjectError

    t_start = time.perf_counter()
    info = open_bag(bag, allow_incomplete=opts.allow_incomplete)
    episode = info.episode
    object_id = opts.object_id or str(episode.get("object") or "")
    scale = float(episode.get("object_scale") or 1.0)
    if not object_id:
        raise BagError(
            f"bag {info.path}: the episode metadata names no object (record with --object, or pass --object)"
        )
    try:
        ObjectLibrary().get(object_id, scale=scale)
    except (UnknownObjectError, ValueError) as exc:
        raise BagError(f"bag {info.path}: episode object {object_id!r}: {exc}") from exc
    chosen = choose_topics(info, opts)
    robot = kin.robot
    streams = read_streams(info, chosen, robot.joint_names)

    # Sorted samples per stream; keypoints with landmarks held over short dropouts.
    data: dict[str, tuple[np.ndarray, list[Any]]] = {k: s.sorted() for k, s in streams.items()}
    if "giver_keypoints" in data:
        ts, vals = data["giver_keypoints"]
        keep, kp = fill_keypoints(vals)
        if not keep:
            raise BagError(
                f"bag {info.path}: {streams['giver_keypoints'].topic}: "
                "no message with all 21 keypoints placed"
            )
        data["giver_keypoints"] = (ts[keep], list(kp))
    required = [s.key for s in STREAMS if s.required]
    t0 = max(int(data[k][0][0]) for k in required)
    t1 = min(int(data[k][0][-1]) for k in required)
    if t1 - t0 < 1e9 / opts.rate_hz:
        spans = {
            streams[k].topic: f"{data[k][0][0] * 1e-9:.3f}-{data[k][0][-1] * 1e-9:.3f} s" for k in required
        }
        raise BagError(
            f"bag {info.path}: the required streams overlap for {max(t1 - t0, 0) * 1e-9:.3f} s only "
            f"(less than one frame at {opts.rate_hz:g} Hz): stamps {spans}"
        )
    max_gaps = {
        streams[k].topic: round(check_gaps(info, streams[k], data[k][0], t0, t1, opts.max_gap_s), 4)
        for k in required
    }
    n = int(np.floor((t1 - t0) * 1e-9 * opts.rate_hz + 1e-9)) + 1
    t_rel = np.arange(n) / opts.rate_hz  # s after t0
    rel = {k: (ts - t0) * 1e-9 for k, (ts, _) in data.items()}

    joints = interp_linear(rel["joints"], np.asarray(data["joints"][1]), t_rel)
    obj_pose = interp_poses(rel["object_pose"], np.asarray(data["object_pose"][1]), t_rel)
    keypoints = interp_linear(rel["giver_keypoints"], np.asarray(data["giver_keypoints"][1]), t_rel)
    qpos = np.empty((n, 30))
    palm = np.empty((n, 3))
    for k in range(n):
        qpos[k], palm[k] = kin.qpos(joints[k])

    # The object cloud: the latest recorded one carried by the object's motion, else the surface.
    tracker = TrackerConfig()
    surface = None
    clouds, sources = [], {"points": 0, "surface": 0}
    pts_times = rel.get("object_points")
    if pts_times is not None and len(pts_times) == 0:  # every recorded cloud was empty
        pts_times = None
    pts_poses = (
        interp_poses(rel["object_pose"], np.asarray(data["object_pose"][1]), pts_times)
        if pts_times is not None
        else None
    )
    for k in range(n):
        cloud = None
        if pts_times is not None:
            j = int(np.searchsorted(pts_times, t_rel[k] + 1e-9, side="right")) - 1
            if j >= 0 and t_rel[k] - pts_times[j] <= opts.max_gap_s:
                carry = obj_pose[k] @ np.linalg.inv(pts_poses[j])
                cloud = data["object_points"][1][j] @ carry[:3, :3].T + carry[:3, 3]
                sources["points"] += 1
        if cloud is None:
            if surface is None:
                surface = SurfaceCloud(object_id, scale, opts.calibration)
            cloud = surface(obj_pose[k])
            sources["surface"] += 1
        try:
            clouds.append(sample_fixed(cloud, opts.n_points, tracker.sample_method, tracker.sample_seed))
        except EmptyCloudError as exc:
            raise BagError(f"bag {info.path}: frame {k}: empty object cloud ({exc})") from exc

    # grasp_begin_frame_index
    begin, begin_source = n, "none (approach only)"
    if "handover_state" in data:
        ts, states = data["handover_state"]
        hits = [t for t, s in zip(rel["handover_state"], states, strict=True) if s == "close"]
        if hits:
            begin = int(np.clip(np.ceil(hits[0] * opts.rate_hz - 1e-6), 0, n))
            begin_source = f"{streams['handover_state'].topic} 'close' at {hits[0]:.3f} s"
    if begin_source.startswith("none") and opts.grasp_distance_m > 0:
        near = np.linalg.norm(palm - obj_pose[:, :3, 3], axis=1) < opts.grasp_distance_m
        if near.any():
            begin = int(np.argmax(near))
            begin_source = f"palm within {opts.grasp_distance_m} m of the object"

    subject = _sanitize(opts.subject or str(episode.get("subject") or episode.get("operator") or "teleop"))
    seq_id = SequenceId(subject, object_name(object_id, scale), _sanitize(info.path.name))
    try:
        seq = DexH2RSequence(
            id=seq_id,
            qpos=qpos.astype(np.float32),
            obj_pose=obj_pose.astype(np.float32),
            obj_pcd=np.asarray(clouds, np.float32),
            mano=None,
            mano_side=None,
            grasp_begin_frame=begin,
            giver_keypoints=keypoints.astype(np.float32),
        )
    except DatasetError as exc:
        raise BagError(f"bag {info.path}: the converted sequence is not valid: {exc}") from exc
    topics = {k: s.topic for k, s in streams.items()}
    row = {
        "bag": str(info.path),
        "status": info.status,
        "ok": True,
        "sequence": str(seq_id),
        "object_id": object_id,
        "object_scale": scale,
        "frames": n,
        "rate_hz": opts.rate_hz,
        "window_s": round((t1 - t0) * 1e-9, 4),
        "window_stamps_s": [round(t0 * 1e-9, 6), round(t1 * 1e-9, 6)],
        "topics": topics,
        "messages": {s.topic: s.messages for s in streams.values()},
        "skipped_messages": {s.topic: s.skipped for s in streams.values() if s.skipped},
        "max_gap_s": max_gaps,
        "cloud": sources,
        "grasp_begin_frame_index": begin,
        "grasp_begin_source": begin_source,
        "seconds": round(time.perf_counter() - t_start, 3),
    }
    seq_info = {
        "source": "recorded episode (dexh2r dataset convert)",
        "bag": str(info.path),
        "episode": episode,
        "status": info.status,
        "object_id": object_id,
        "object_scale": scale,
        "subject": subject,
        "rate_hz": opts.rate_hz,
        "frames": n,
        "grasp_begin_frame_index": begin,
        "grasp_begin_source": begin_source,
        "topics": topics,
        "cloud_sources": sources,
        "robot_joint_names": list(robot.joint_names),
        "qpos_root_frame": "hand mount (rh_wrist) with the hand's wrist joints folded in; qpos[6:8] = 0",
    }
    return Episode(row, seq, joints.astype(np.float32), seq_info)


# --------------------------------------------------------------------------------------------
# A dataset from many bags
# --------------------------------------------------------------------------------------------


def find_bags(inputs: Sequence[str | os.PathLike[str]]) -> list[Path]:
    """Bag folders: each input is a bag folder (metadata.yaml) or a folder of them."""
    bags: list[Path] = []
    for item in inputs:
        path = Path(item)
        if (path / "metadata.yaml").exists():
            bags.append(path)
        elif path.is_dir():
            found = sorted(p.parent for p in path.glob("*/metadata.yaml"))
            if not found:
                raise BagError(f"{path}: neither a bag folder (metadata.yaml) nor a folder of bags")
            bags += found
        else:
            raise BagError(f"bag {path}: not found")
    return bags


def _write_dataset(root: Path, episodes: list[Episode], opts: ConvertOptions) -> None:
    import torch

    from dexh2r_policy.data.dexh2r_layout import EPISODE_INFO_FILE, write_sequence, write_split
    from dexh2r_policy.episodes import object_entry, write_objects
    from dexh2r_sim.objects import ObjectLibrary

    library = ObjectLibrary()
    held_out = set(library.ids("test"))
    objects: dict[str, dict[str, Any]] = {}
    for ep in episodes:
        folder = write_sequence(root, ep.sequence)
        torch.save(torch.from_numpy(ep.robot_joints), folder / "robot_joints.pt")
        (folder / EPISODE_INFO_FILE).write_text(json.dumps(ep.info, indent=2, default=str))
        oid, scale = ep.row["object_id"], ep.row["object_scale"]
        objects[ep.sequence.id.object] = object_entry(oid, scale, held_out, opts.pools)
    # As `dexh2r datagen episodes`: surface samples, meshes, objects.json, the split file.
    write_objects(root, objects, opts.pools, library)
    subjects = sorted({ep.sequence.id.subject for ep in episodes})
    write_split(
        root,
        {
            "train_sub_names": subjects if opts.subject_split == "train" else [],
            "val_sub_names": subjects if opts.subject_split == "val" else [],
            "test_sub_names": subjects if opts.subject_split == "test" else [],
            "train_obj": sorted(n for n, o in objects.items() if o["split"] == "train"),
            "val_obj": [],
            "test_obj": sorted(n for n, o in objects.items() if o["split"] == "test"),
        },
    )


def convert(
    inputs: Sequence[str | os.PathLike[str]],
    out: str | os.PathLike[str],
    opts: ConvertOptions | None = None,
    *,
    overwrite: bool = False,
    skip_bad: bool = False,
    log=print,
) -> dict[str, Any]:
    """Convert bags into a DexH2R dataset at `out` (all or nothing). Returns the report; raises
    BagError (with the report as `exc.report`) when an episode fails and `skip_bad` is off, or when
    nothing could be converted."""
    opts = opts or ConvertOptions()
    out = Path(out)
    t_start = time.perf_counter()
    report: dict[str, Any] = {
        "out": str(out),
        "ok": False,
        "settings": {
            "rate_hz": opts.rate_hz,
            "max_gap_s": opts.max_gap_s,
            "allow_incomplete": opts.allow_incomplete,
            "points": opts.n_points,
            "robot": opts.robot,
            "subject_split": opts.subject_split,
            "grasp_distance_m": opts.grasp_distance_m,
            "streams": {
                s.key: {
                    "topics": [opts.topics[s.key]] if s.key in opts.topics else list(s.topics),
                    "type": s.msgtype,
                    "required": s.required,
                    "use": s.use,
                }
                for s in STREAMS
            },
        },
        "episodes": [],
    }

    def fail(exc: BagError) -> BagError:
        report["error"] = str(exc)
        exc.report = report  # type: ignore[attr-defined]
        return exc

    if out.exists() and not overwrite:
        raise fail(BagError(f"output {out} exists (pass --overwrite to replace it)"))
    try:
        bags = find_bags(inputs)
    except BagError as exc:
        raise fail(exc) from None
    kin = Kinematics(opts.robot)
    episodes: list[Episode] = []
    for bag in bags:
        try:
            ep = convert_episode(bag, opts, kin)
        except BagError as exc:
            report["episodes"].append({"bag": str(bag), "ok": False, "error": str(exc)})
            log(f"{bag}: FAILED: {exc}")
            if not skip_bad:
                raise fail(exc) from None
            continue
        if any(e.sequence.id == ep.sequence.id for e in episodes):
            exc = BagError(f"bag {bag}: sequence {ep.sequence.id} comes from two bags (same folder name)")
            report["episodes"].append({"bag": str(bag), "ok": False, "error": str(exc)})
            if not skip_bad:
                raise fail(exc)
            continue
        episodes.append(ep)
        report["episodes"].append(ep.row)
        r = ep.row
        log(
            f"{bag}: {r['frames']} frames at {r['rate_hz']:g} Hz ({r['window_s']:.2f} s), object "
            f"{r['object_id']}, pose {r['topics']['object_pose']}, "
            f"keypoints {r['topics']['giver_keypoints']}, "
            f"cloud {r['cloud']}, grasp begins at frame {r['grasp_begin_frame_index']} "
            f"({r['grasp_begin_source']}) -> {r['sequence']}"
        )
    if not episodes:
        raise fail(BagError(f"no episode could be converted ({len(bags)} bag(s))"))
    # All or nothing: build next to `out`, rename at the end.
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.partial-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        _write_dataset(tmp, episodes, opts)
        report.update(
            ok=True,
            written=len(episodes),
            failed=len(bags) - len(episodes),
            frames=sum(e.row["frames"] for e in episodes),
            seconds=round(time.perf_counter() - t_start, 3),
        )
        (tmp / "convert_report.json").write_text(json.dumps(report, indent=2, default=str) + "\n")
        if out.exists():
            old = out.parent / f".{out.name}.old-{os.getpid()}"
            os.replace(out, old)
            os.replace(tmp, out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return report


# --------------------------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------------------------


def _convert_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="dexh2r dataset convert",
        description="Recorded episodes (rosbag2 MCAP) -> the DexH2R layout (docs/record_replay.md).",
    )
    p.add_argument("bags", nargs="+", help="bag folders, or folders of bag folders")
    p.add_argument("-o", "--out", required=True, type=Path, help="dataset root to write (DexH2R layout)")
    p.add_argument("--rate", type=float, default=10.0, help="frames per second of the sequences (default 10)")
    p.add_argument(
        "--max-gap", type=float, default=0.5, help="longest silence of a required stream, s (default 0.5)"
    )
    p.add_argument("--allow-incomplete", action="store_true", help="convert episodes not stopped as complete")
    p.add_argument("--points", type=int, default=1024, help="object cloud points per frame (default 1024)")
    p.add_argument("--robot", default="ur5_shadow")
    p.add_argument("--subject", default="", help="subject name (default: the episode's subject/operator)")
    p.add_argument("--split", default="train", choices=("train", "val", "test"), help="the subjects' split")
    p.add_argument("--object", default="", help="object id (default: the episode metadata's `object`)")
    p.add_argument(
        "--topic",
        action="append",
        default=[],
        metavar="STREAM=TOPIC",
        help=f"use this topic for a stream ({', '.join(STREAM_KEYS)})",
    )
    p.add_argument(
        "--grasp-distance",
        type=float,
        default=0.08,
        help="palm-object distance that marks the grasp's start when /handover/state has none (0: off)",
    )
    p.add_argument(
        "--calibration",
        default="calibration/sim_two_cameras.yaml",
        help="cameras whose view the surface cloud keeps ('' = all samples)",
    )
    p.add_argument("--pools", default="data/pools", help="grasp pool folder named in objects.json")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output")
    p.add_argument("--skip-bad", action="store_true", help="skip episodes that fail instead of stopping")
    p.add_argument("--report", type=Path, help="also write the convert report here (even on failure)")
    return p


def convert_main(argv: list[str]) -> int:
    args = _convert_parser().parse_args(argv)
    report: dict[str, Any] | None = None
    try:
        topics = {}
        for item in args.topic:
            key, sep, topic = item.partition("=")
            if not sep or not topic.startswith("/"):
                raise ValueError(f"--topic: expected STREAM=/topic, got {item!r}")
            topics[key] = topic
        opts = ConvertOptions(
            rate_hz=args.rate, max_gap_s=args.max_gap, allow_incomplete=args.allow_incomplete,
            n_points=args.points, robot=args.robot, subject=args.subject, subject_split=args.split,
            object_id=args.object, topics=topics, grasp_distance_m=args.grasp_distance,
            calibration=args.calibration, pools=args.pools,
        )  # fmt: skip
        report = convert(args.bags, args.out, opts, overwrite=args.overwrite, skip_bad=args.skip_bad)
        code = 0
    except BagError as exc:
        report = getattr(exc, "report", None)
        print(f"dexh2r dataset convert: {exc}", file=sys.stderr)
        code = 2
    except ValueError as exc:
        print(f"dexh2r dataset convert: {exc}", file=sys.stderr)
        code = 2
    if args.report and report is not None:
        args.report.parent.mkdir(parents=True, exist_ok=True)
        args.report.write_text(json.dumps(report, indent=2, default=str) + "\n")
    if code == 0 and report is not None:
        print(
            f"{report['written']} sequence(s), {report['frames']} frames, {report['failed']} failed "
            f"-> {args.out} ({args.out / 'convert_report.json'})"
        )
    return code


SUBCOMMANDS = {"convert": (convert_main, "recorded episodes (rosbag2 MCAP) -> DexH2R layout")}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in SUBCOMMANDS:
        lines = ["usage: dexh2r dataset <what> [args...]", "", "what:"]
        lines += [f"  {name:<8} {text}" for name, (_, text) in SUBCOMMANDS.items()]
        helping = bool(argv) and argv[0] in ("-h", "--help")
        print("\n".join(lines), file=sys.stdout if helping else sys.stderr)
        return 0 if helping else 2
    return SUBCOMMANDS[argv[0]][0](argv[1:])


if __name__ == "__main__":
    sys.exit(main())
