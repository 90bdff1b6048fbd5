"""`hand_tracker_node`: 3D human hand keypoints and wrist pose from N RGB-D cameras (thin rclpy shell).

Subscribes (best effort, depth 1: only the newest message of each stream is kept)
`/<camera>/color/image_raw` (rgb8/bgr8) and `/<camera>/aligned_depth_to_color/image_raw` (16UC1
in the calibration's depth unit, or 32FC1 metres) of every camera in the calibration file. Colour
and depth are paired by header stamp; a frame set is the newest pair of every live camera with
stamps within `sync_tolerance_s` of each other (a camera silent for `stale_after_s` is left out; a
set still incomplete `max_wait_s` after its first pair goes ahead with the cameras it has). Each
set is processed once, newest first, by `HandTracker` (see `hand_tracking.py`); sets superseded
before processing are dropped, never queued, so latency stays bounded.

Publishes, stamped with the frame set's stamp (the newest of its cameras, like
`object_tracker_node`, so both nodes' outputs of one frame carry the same stamp), reliable,
depth 5:

- `/perception/human_hand/keypoints` (geometry_msgs/PoseArray, `world`): 21 poses, positions in
  MediaPipe order, identity orientations; a landmark that could not be placed has NaN position.
  Published only when some camera sees a hand: no message = no hand (never an invented one).
- `/perception/human_hand/wrist` (geometry_msgs/PoseStamped, `world`): the wrist frame (origin at
  WRIST, +z toward the fingers, -y palm normal, +x thumb side of a right hand), when computable.
- `/perception/human_hand/state` (std_msgs/String, JSON) every processed set: stamp, detected,
  handedness (geometric) + score, handedness_mediapipe, cameras_used, per-keypoint confidence,
  compute_ms.
- `/diagnostics` (diagnostic_msgs/DiagnosticArray, every `diagnostics_period_s`): output rate,
  latency (node clock now - frame stamp at publication) p50/p95, compute ms, no-hand fraction,
  dropped sets, bad messages.

Parameters: `calibration` (YAML path, absolute or under config/; missing or invalid: error and
exit code 2), `cameras` (names, default all in the calibration), `workspace_min`/`workspace_max`
(world box where a hand is searched first, m), `model_complexity` (0/1), `sync_tolerance_s`,
`max_wait_s`, `stale_after_s`, `frame_id`, topic templates, `diagnostics_period_s`.
"""

from __future__ import annotations

import json
import math
import sys
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any


@dataclass
class _CameraStreams:
    colour: dict[int, Any] = field(default_factory=dict)  # stamp (ns) -> payload
    depth: dict[int, Any] = field(default_factory=dict)
    pair: tuple[int, Any, Any, float] | None = None  # newest (stamp ns, colour, depth, arrival)
    heard: float = -math.inf  # arrival time of the newest message of either stream


class FramePairer:
    """Pairs colour and depth by stamp per camera and groups cameras into frame sets (ROS-free).

    `add(camera, "colour" | "depth", stamp_ns, payload, now)` returns a frame set
    (stamp_ns, {camera: (colour, depth)}) when one is ready, else None; `poll(now)` releases an
    incomplete set that has waited `max_wait_s`. Stamps are integer nanoseconds so that pairing is
    exact. A set is emitted at most once and only if newer than the last one; pairs that never
    made it into a set are counted in `dropped`.
    """

    def __init__(
        self,
        cameras: list[str],
        sync_tolerance_s: float = 0.016,
        max_wait_s: float = 0.05,
        stale_after_s: float = 0.5,
        keep: int = 4,
    ) -> None:
        if not cameras:
            raise ValueError("FramePairer: no cameras")
        self.cameras = list(cameras)
        self.tolerance_ns = int(sync_tolerance_s * 1e9)
        self.max_wait_s = max_wait_s
        self.stale_after_s = stale_after_s
        self.keep = keep
        self.streams = {c: _CameraStreams() for c in self.cameras}
        self.last_emitted_ns = -1
        self.dropped = 0
        self._pending_since: float | None = None

    def add(self, camera: str, kind: str, stamp_ns: int, payload: Any, now: float) -> Any:
        s = self.streams[camera]
        s.heard = now
        if stamp_ns <= self.last_emitted_ns:
            return None  # older than what was already processed
        mine, other = (s.colour, s.depth) if kind == "colour" else (s.depth, s.colour)
        mine[stamp_ns] = payload
        for book in (mine, other):  # bounded memory: only the newest few stamps
            while len(book) > self.keep:
                del book[min(book)]
        if stamp_ns in other:
            colour, depth = (payload, other[stamp_ns]) if kind == "colour" else (other[stamp_ns], payload)
            if s.pair is not None and s.pair[0] < stamp_ns:
                self.dropped += 1  # the previous pair of this camera never made it into a set
            if s.pair is None or s.pair[0] < stamp_ns:
                s.pair = (stamp_ns, colour, depth, now)
                if self._pending_since is None:
                    self._pending_since = now
            for book in (s.colour, s.depth):
                for old in [t for t in book if t <= stamp_ns]:
                    del book[old]
        return self._try_emit(now, force=False)

    def poll(self, now: float) -> Any:
        return self._try_emit(now, force=True)

    def _try_emit(self, now: float, force: bool) -> Any:
        fresh = {
            c: s.pair
            for c, s in self.streams.items()
            if s.pair is not None and s.pair[0] > self.last_emitted_ns
        }
        if not fresh:
            return None
        newest = max(p[0] for p in fresh.values())
        in_sync = {c: p for c, p in fresh.items() if newest - p[0] <= self.tolerance_ns}
        live = [c for c, s in self.streams.items() if now - s.heard <= self.stale_after_s]
        complete = all(c in in_sync for c in live)
        waited = self._pending_since is not None and now - self._pending_since >= self.max_wait_s
        if not complete and not (force and waited):
            return None
        self.last_emitted_ns = newest
        self._pending_since = None
        for c in fresh:
            if c not in in_sync:
                self.dropped += 1  # too old to join this set and now superseded
            self.streams[c].pair = None
        return newest, {c: (p[1], p[2]) for c, p in in_sync.items()}


def keypoints_pose_array(keypoints, stamp_s: float, frame_id: str = "world"):
    """[21, 3] world keypoints (NaN rows allowed) -> geometry_msgs/PoseArray in MediaPipe order."""
    from geometry_msgs.msg import Point, Pose, PoseArray

    from dexh2r_core import msgs

    out = PoseArray(header=msgs.header(stamp_s, frame_id))
    out.poses = [Pose(position=Point(x=float(x), y=float(y), z=float(z))) for x, y, z in keypoints]
    return out


def main(argv: list[str] | None = None) -> int:
    import numpy as np
    import rclpy
    from builtin_interfaces.msg import Time
    from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
    from geometry_msgs.msg import PoseArray, PoseStamped
    from rclpy.node import Node
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import Image
    from std_msgs.msg import String

    from dexh2r_core import msgs
    from dexh2r_core.calibration import load_camera_rig
    from dexh2r_core.config import ConfigError
    from dexh2r_core.node_runtime import exit_with_error, spin_until_shutdown
    from dexh2r_core.paths import config_path
    from dexh2r_core.ros_env import apply_ros_defaults
    from dexh2r_perception.hand_tracking import HandTracker, HandTrackerConfig

    apply_ros_defaults()
    rclpy.init(args=sys.argv if argv is None else argv)
    node = Node("hand_tracker")
    log = node.get_logger()
    defaults = HandTrackerConfig()
    p = node.declare_parameter
    calibration_param = p("calibration", "calibration/sim_two_cameras.yaml").value
    camera_names = [c for c in p("cameras", [""]).value if c]
    workspace_min = list(p("workspace_min", list(defaults.workspace_min)).value)
    workspace_max = list(p("workspace_max", list(defaults.workspace_max)).value)
    model_complexity = int(p("model_complexity", defaults.model_complexity).value)
    sync_tolerance_s = float(p("sync_tolerance_s", 0.016).value)  # half a 30 Hz frame period
    max_wait_s = float(p("max_wait_s", 0.05).value)
    stale_after_s = float(p("stale_after_s", 0.5).value)
    colour_topic = p("color_topic", "/{camera}/color/image_raw").value
    depth_topic = p("depth_topic", "/{camera}/aligned_depth_to_color/image_raw").value
    keypoints_topic = p("keypoints_topic", "/perception/human_hand/keypoints").value
    wrist_topic = p("wrist_topic", "/perception/human_hand/wrist").value
    state_topic = p("state_topic", "/perception/human_hand/state").value
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
    path = config_path(calibration_param)
    try:
        names = camera_names or calibration.names
        for name in names:
            calibration.camera(name)  # KeyError naming the known cameras
        config = HandTrackerConfig(
            workspace_min=tuple(float(v) for v in workspace_min),  # type: ignore[arg-type]
            workspace_max=tuple(float(v) for v in workspace_max),  # type: ignore[arg-type]
            model_complexity=model_complexity,
        )
        tracker = HandTracker(calibration, config, cameras=names)
    except (ConfigError, ValueError, KeyError, OSError) as exc:
        return fail(f"cannot start: {exc}")

    reliable = QoSProfile(depth=5, reliability=ReliabilityPolicy.RELIABLE)
    latest_only = QoSProfile(depth=1, reliability=ReliabilityPolicy.BEST_EFFORT)
    kp_pub = node.create_publisher(PoseArray, keypoints_topic, reliable)
    wrist_pub = node.create_publisher(PoseStamped, wrist_topic, reliable)
    state_pub = node.create_publisher(String, state_topic, reliable)
    diag_pub = node.create_publisher(DiagnosticArray, "/diagnostics", reliable)

    pairer = FramePairer(names, sync_tolerance_s, max_wait_s, stale_after_s)
    stats = {"latency": deque(maxlen=300), "compute": deque(maxlen=300), "out": deque(maxlen=300)}
    counts = {"sets": 0, "no_hand": 0, "bad": 0, "no_depth": 0}
    warned: set[str] = set()

    def decode(name: str, colour: Image, depth: Image) -> tuple[np.ndarray, np.ndarray | None]:
        rgb = msgs.image_array(colour)
        if colour.encoding == "bgr8":
            rgb = rgb[..., ::-1]
        elif colour.encoding != "rgb8":
            raise msgs.MessageError(f"colour encoding '{colour.encoding}' (expected rgb8 or bgr8)")
        d: np.ndarray | None = msgs.image_array(depth)
        if d.shape[:2] != rgb.shape[:2] or not np.any(np.isfinite(d) & (d > 0)):
            counts["no_depth"] += 1
            if name not in warned:  # once per camera: it may last the whole run
                warned.add(name)
                log.warning(
                    f"{name}: depth image {d.shape} has no valid pixel or is not aligned to colour "
                    f"{rgb.shape[:2]}; using the colour rays only"
                )
            d = None
        return rgb, d

    def process(ready: tuple[int, dict[str, tuple[Image, Image]]]) -> None:
        stamp_ns, pairs = ready
        stamp = stamp_ns * 1e-9
        frames = {}
        for name, (colour, depth) in pairs.items():
            try:
                frames[name] = decode(name, colour, depth)
            except (msgs.MessageError, ValueError) as exc:
                counts["bad"] += 1
                log.warning(f"{name}: skipping a frame: {exc}")
        if not frames:
            return
        t0 = time.perf_counter()
        try:
            est = tracker.process(stamp, frames)
        except ValueError as exc:  # e.g. depth not aligned to colour
            counts["bad"] += 1
            log.error(f"frame set skipped: {exc}")
            return
        compute_ms = (time.perf_counter() - t0) * 1e3
        counts["sets"] += 1
        state: dict[str, Any] = {
            "stamp": stamp,
            "detected": est is not None,
            "compute_ms": round(compute_ms, 2),
        }
        if est is None:
            counts["no_hand"] += 1
        else:
            # The source frames' stamp exactly (float seconds would lose ~100 ns at today's epoch).
            exact = Time(sec=stamp_ns // 1_000_000_000, nanosec=stamp_ns % 1_000_000_000)
            kp_msg = keypoints_pose_array(est.keypoints, stamp, frame_id)
            kp_msg.header.stamp = exact
            kp_pub.publish(kp_msg)
            if est.wrist_valid:
                wrist_msg = msgs.pose_stamped_msg(est.wrist, stamp, frame_id)
                wrist_msg.header.stamp = exact
                wrist_pub.publish(wrist_msg)
            state.update(
                handedness=est.handedness,
                handedness_score=round(est.handedness_score, 3),
                handedness_mediapipe=est.handedness_mediapipe,
                cameras_used=est.cameras_used,
                confidence=[round(float(c), 3) for c in est.confidence],
                wrist_valid=est.wrist_valid,
            )
            now = node.get_clock().now().nanoseconds * 1e-9
            stats["latency"].append(now - stamp)
            stats["out"].append(time.monotonic())
        stats["compute"].append(compute_ms)
        state_pub.publish(String(data=json.dumps(state)))

    def on_image(name: str, kind: str):
        def callback(msg: Image) -> None:
            stamp_ns = msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec
            ready = pairer.add(name, kind, stamp_ns, msg, time.monotonic())
            if ready is not None:
                process(ready)

        return callback

    for name in names:
        node.create_subscription(
            Image, colour_topic.format(camera=name), on_image(name, "colour"), latest_only
        )
        node.create_subscription(Image, depth_topic.format(camera=name), on_image(name, "depth"), latest_only)

    def poll() -> None:  # an incomplete set (a camera late or gone) goes ahead after max_wait_s
        ready = pairer.poll(time.monotonic())
        if ready is not None:
            process(ready)

    node.create_timer(max(0.005, max_wait_s / 2), poll)

    def publish_diagnostics() -> None:
        out = list(stats["out"])
        window = [t for t in out if t >= out[-1] - 5.0] if out else []
        rate = (len(window) - 1) / (window[-1] - window[0]) if len(window) > 1 else 0.0
        lat = np.array(stats["latency"]) * 1e3
        comp = np.array(stats["compute"])
        values = {
            "rate_hz": rate,
            "latency_ms_p50": float(np.median(lat)) if len(lat) else math.nan,
            "latency_ms_p95": float(np.percentile(lat, 95)) if len(lat) else math.nan,
            "compute_ms_p50": float(np.median(comp)) if len(comp) else math.nan,
            "compute_ms_p95": float(np.percentile(comp, 95)) if len(comp) else math.nan,
            "frame_sets": counts["sets"],
            "no_hand_fraction": counts["no_hand"] / max(1, counts["sets"]),
            "dropped_sets": pairer.dropped,
            "bad_messages": counts["bad"],
            "frames_without_depth": counts["no_depth"],
        }
        level = DiagnosticStatus.OK if counts["sets"] else DiagnosticStatus.WARN
        status = DiagnosticStatus(
            level=level,
            name="hand_tracker",
            message="tracking" if counts["sets"] else "waiting for camera frames",
            hardware_id=",".join(names),
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
    log.info(f"hand tracker ready: cameras {names}, calibration {path}")
    return spin_until_shutdown(node, cleanup=tracker.close)


if __name__ == "__main__":
    sys.exit(main())
