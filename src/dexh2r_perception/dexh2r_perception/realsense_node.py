"""`realsense_node`: N RealSense cameras (live or recorded) on realsense-ros topics (thin rclpy shell).

Per camera `<name>` (camera_0, camera_1, ...), with sensor-data QoS (best effort, depth 5) as
sim_node's virtual cameras publish them:
  /<name>/color/image_raw                      sensor_msgs/Image rgb8
  /<name>/color/camera_info                    sensor_msgs/CameraInfo (colour intrinsics of the device)
  /<name>/aligned_depth_to_color/image_raw     sensor_msgs/Image 16UC1, millimetres, 0 = invalid
  /<name>/aligned_depth_to_color/camera_info   (the colour intrinsics: depth is in colour pixels)
all with frame id `<name>_color_optical_frame` and the colour frame's device time mapped to ROS
time (see dexh2r_perception.capture). `/diagnostics` (diagnostic_msgs/DiagnosticArray, 1 Hz): one
status per camera (rate, drops, latency, state; a stale, ended or unplugged camera is ERROR and
named in the message) and a summary status.

Parameters:
  config (str): capture YAML (default perception/realsense.yaml under config/); "" with
      `files`/`serials` set builds the cameras from those instead
  files / serials (string arrays): cameras camera_<i> from recordings / serial numbers
  source (str): override the YAML's source (live | file)
  width / height / fps (int): override every camera's mode (0 = keep)
  playback (str): override the YAML (real_time | paced | fast, file source)
  hardware_sync (bool): override the YAML
  calibration (str): calibration YAML (frame ids, intrinsics cross-check); must exist if set
  exit_on_end (bool): file source: exit once every recording has ended (tests, bench)
  wait_for_subscribers (int): file source: start playback when every topic has this many
      subscriptions (so a test or bench receives frame 0)
  diagnostics_period_s (float): default 1.0

Exit codes: 0 (clean, SIGINT or all recordings ended), 1 (a camera failed while running with
exit_on_end), 2 (bad config, missing config/calibration/recording file: the message names it).
"""

from __future__ import annotations

import dataclasses
import os
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from dexh2r_core.calibration import CameraIntrinsics
from dexh2r_core.config import ConfigError
from dexh2r_perception.capture import (
    CameraConfig,
    CaptureConfig,
    CaptureError,
    CaptureSession,
    Frameset,
    health,
    synthetic_depth_number,
    synthetic_frame,
    synthetic_frame_number,
    synthetic_intrinsics,
    write_test_recordings,
)

DEFAULT_CONFIG = "perception/realsense.yaml"
NODE_NAME = "realsense"
TOPIC_KINDS = (
    ("color/image_raw", "image"),
    ("aligned_depth_to_color/image_raw", "depth"),
    ("color/camera_info", "info"),
    ("aligned_depth_to_color/camera_info", "depth_info"),
)


def camera_topics(name: str) -> dict[str, str]:
    """kind (image, depth, info, depth_info) -> topic of camera `name` (realsense-ros names)."""
    return {kind: f"/{name}/{suffix}" for suffix, kind in TOPIC_KINDS}


def camera_info_dict(intr: CameraIntrinsics, frame_id: str) -> dict[str, Any]:
    """CameraInfo fields of an unrectified colour stream (R = I, P = [K | 0]), as realsense-ros."""
    K = intr.K
    P = np.zeros((3, 4))
    P[:, :3] = K
    return {
        "frame_id": frame_id,
        "width": intr.width,
        "height": intr.height,
        "distortion_model": intr.distortion_model,
        "d": [float(v) for v in intr.D],
        "k": [float(v) for v in K.ravel()],
        "r": [float(v) for v in np.eye(3).ravel()],
        "p": [float(v) for v in P.ravel()],
    }


def build_config(
    config: str,
    *,
    files: Sequence[str] = (),
    serials: Sequence[str] = (),
    source: str = "",
    width: int = 0,
    height: int = 0,
    fps: int = 0,
    overrides: Mapping[str, Any] | None = None,
) -> CaptureConfig:
    """The node's CaptureConfig from its parameters (ConfigError names the file/key)."""
    from dexh2r_core.paths import config_path
    from dexh2r_perception.capture import load_capture_config

    if files and serials:
        raise ConfigError("parameters: set either 'files' or 'serials', not both")
    data = dict(overrides or {})
    if source:
        data["source"] = source
    if config or not (files or serials):
        cfg = load_capture_config(config_path(config or DEFAULT_CONFIG), data)
    else:
        if files and "source" not in data:
            data["source"] = "file"
        if serials and "source" not in data:
            data["source"] = "live"
        names = [f"camera_{i}" for i in range(max(len(files), len(serials)))]
        cams = [CameraConfig(name=n, file=files[i] if files else "") for i, n in enumerate(names)]
        if serials:
            cams = [dataclasses.replace(c, serial=s) for c, s in zip(cams, serials, strict=True)]
        try:
            return _with_modes(CaptureConfig(cameras=cams, **data), width, height, fps)
        except TypeError as exc:
            raise ConfigError(f"parameters: {exc}") from exc
    if files or serials:
        cams = list(cfg.cameras)
        values = files or serials
        key = "file" if files else "serial"
        cams = [
            dataclasses.replace(cams[i] if i < len(cams) else CameraConfig(name=f"camera_{i}"), **{key: v})
            for i, v in enumerate(values)
        ]
        cfg = dataclasses.replace(cfg, cameras=cams)
    return _with_modes(cfg, width, height, fps)


def _with_modes(cfg: CaptureConfig, width: int, height: int, fps: int) -> CaptureConfig:
    if not (width or height or fps):
        return cfg
    cams = [
        dataclasses.replace(c, width=width or c.width, height=height or c.height, fps=fps or c.fps)
        for c in cfg.cameras
    ]
    return dataclasses.replace(cfg, cameras=cams)


def _frame_ids(cfg: CaptureConfig) -> tuple[dict[str, str], dict[str, CameraIntrinsics]]:
    """frame id (and calibrated intrinsics) per camera, from the calibration file when one is set."""
    ids = {c.name: c.frame_id for c in cfg.cameras}
    if not cfg.calibration:
        return ids, {}
    from dexh2r_core.calibration import load_calibration
    from dexh2r_core.paths import config_path

    path = config_path(cfg.calibration)
    if not Path(path).exists():
        raise ConfigError(f"{path}: calibration file not found (config key 'calibration')")
    calibration = load_calibration(path)
    intrinsics = {}
    for cam in cfg.cameras:
        try:
            cal = calibration.camera(cam.name)
        except KeyError as exc:
            raise ConfigError(f"{path}: {exc.args[0]}") from exc
        ids[cam.name] = cal.frame_id
        intrinsics[cam.name] = cal.intrinsics
    return ids, intrinsics


def _intrinsics_mismatch(device: CameraIntrinsics, calibrated: CameraIntrinsics) -> str:
    if (device.width, device.height) != (calibrated.width, calibrated.height):
        return f"size {device.width}x{device.height} vs calibrated {calibrated.width}x{calibrated.height}"
    if abs(device.fx - calibrated.fx) > 0.02 * calibrated.fx or abs(device.cx - calibrated.cx) > 10:
        return (
            f"fx {device.fx:.1f} cx {device.cx:.1f} vs calibrated fx {calibrated.fx:.1f} "
            f"cx {calibrated.cx:.1f}"
        )
    return ""


def _diagnostics(snapshots: list[dict[str, Any]], stale_s: float, stamp_s: float) -> Any:
    from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue

    from dexh2r_core import msgs

    def fmt(v: Any) -> str:
        if v is None:
            return ""
        return f"{v:.3f}" if isinstance(v, float) else str(v)

    array = DiagnosticArray(header=msgs.header(stamp_s, ""))
    worst, problems = 0, []
    for snap in snapshots:
        level, message = health(snap, stale_s)
        worst = max(worst, level)
        if level:
            problems.append(message)
        keys = (
            "state",
            "rate_hz",
            "expected_hz",
            "frames",
            "dropped",
            "drop_fraction",
            "unpaired",
            "sink_errors",
            "latency_ms_p50",
            "latency_ms_p95",
            "latency_ms_max",
            "processing_ms_p50",
            "age_s",
            "reconnects",
            "detail",
        )
        array.status.append(
            DiagnosticStatus(
                level=bytes([level]),
                name=f"{NODE_NAME}: {snap['name']}",
                message=message,
                hardware_id=snap["source"],
                values=[KeyValue(key=k, value=fmt(snap[k])) for k in keys],
            )
        )
    summary = "; ".join(problems) if problems else f"all {len(snapshots)} cameras streaming"
    array.status.append(
        DiagnosticStatus(level=bytes([worst]), name=f"{NODE_NAME}: cameras", message=summary, hardware_id="")
    )
    return array


def main(argv: list[str] | None = None) -> int:
    from dexh2r_core.ros_env import apply_ros_defaults

    apply_ros_defaults()
    import rclpy
    from diagnostic_msgs.msg import DiagnosticArray
    from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
    from rclpy.node import Node
    from rclpy.parameter import Parameter
    from rclpy.qos import QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
    from sensor_msgs.msg import CameraInfo, Image

    from dexh2r_core import msgs
    from dexh2r_core.node_runtime import stopping

    rclpy.init(args=sys.argv if argv is None else argv)
    node = Node(NODE_NAME)
    log = node.get_logger()
    p = node.declare_parameter
    config_param = p("config", "").value
    files = p("files", Parameter.Type.STRING_ARRAY).value or []
    serials = p("serials", Parameter.Type.STRING_ARRAY).value or []
    overrides = {}
    hardware_sync = p("hardware_sync", Parameter.Type.BOOL).value
    if hardware_sync is not None:
        overrides["hardware_sync"] = bool(hardware_sync)
    playback = p("playback", "").value
    if playback:
        overrides["playback"] = playback
    calibration = p("calibration", "").value
    if calibration:
        overrides["calibration"] = calibration
    exit_on_end = bool(p("exit_on_end", False).value)
    wait_subs = int(p("wait_for_subscribers", 0).value)
    period = float(p("diagnostics_period_s", 1.0).value)
    try:
        cfg = build_config(
            config_param,
            files=[str(f) for f in files],
            serials=[str(s) for s in serials],
            source=p("source", "").value,
            width=int(p("width", 0).value),
            height=int(p("height", 0).value),
            fps=int(p("fps", 0).value),
            overrides=overrides,
        )
        frame_ids, calibrated = _frame_ids(cfg)
    except ConfigError as exc:
        log.fatal(f"realsense_node: bad configuration: {exc}")
        node.destroy_node()
        rclpy.try_shutdown()
        return 2

    pubs: dict[str, dict[str, Any]] = {}
    for cam in cfg.cameras:
        topics = camera_topics(cam.name)
        pubs[cam.name] = {
            kind: node.create_publisher(
                Image if kind in ("image", "depth") else CameraInfo, topic, qos_profile_sensor_data
            )
            for kind, topic in topics.items()
        }
    diag_pub = node.create_publisher(
        DiagnosticArray, "/diagnostics", QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
    )
    infos: dict[str, tuple[CameraIntrinsics, dict[str, Any]]] = {}
    checked: set[str] = set()

    def host_clock() -> float:
        return node.get_clock().now().nanoseconds * 1e-9

    def sink(fs: Frameset) -> None:
        # Runs in the camera's capture thread: one stuck camera does not delay the others.
        frame_id = frame_ids[fs.name]
        cached = infos.get(fs.name)
        if cached is None or cached[0] != fs.intrinsics:
            cached = (fs.intrinsics, camera_info_dict(fs.intrinsics, frame_id))
            infos[fs.name] = cached
        if fs.name in calibrated and fs.name not in checked:
            checked.add(fs.name)
            mismatch = _intrinsics_mismatch(fs.intrinsics, calibrated[fs.name])
            if mismatch:
                log.warning(f"{fs.name}: device intrinsics differ from the calibration file: {mismatch}")
        out = pubs[fs.name]
        out["image"].publish(msgs.image_msg(fs.rgb, "rgb8", fs.stamp_s, frame_id))
        out["depth"].publish(msgs.image_msg(fs.depth, "16UC1", fs.stamp_s, frame_id))
        out["info"].publish(msgs.camera_info_msg(cached[1], fs.stamp_s))
        out["depth_info"].publish(msgs.camera_info_msg(cached[1], fs.stamp_s))

    session = CaptureSession(cfg, sink, host_clock=host_clock, log=lambda m: log.info(m))
    try:
        session.probe()
    except CaptureError as exc:
        log.fatal(f"realsense_node: {exc}")
        node.destroy_node()
        rclpy.try_shutdown()
        return 2
    if cfg.hardware_sync and cfg.source == "file":
        log.warning("hardware_sync applies to live cameras only; ignored for recordings")
    described = ", ".join(f"{c.name} ({c.file or c.serial or 'any'})" for c in cfg.cameras)
    log.info(f"realsense_node: {cfg.source} source, {len(cfg.cameras)} camera(s): {described}")
    session.start()

    state = {"released": cfg.source == "live" or wait_subs <= 0, "done": False}
    if state["released"]:
        session.release()
    else:
        log.info(f"waiting for {wait_subs} subscriber(s) on every camera topic before playing")

    def poll() -> None:
        if not state["released"]:
            counts = [pub.get_subscription_count() for cam in pubs.values() for pub in cam.values()]
            if min(counts) >= wait_subs:
                state["released"] = True
                log.info("subscribers matched: starting playback")
                session.release()
        if exit_on_end and session.finished():
            state["done"] = True

    def publish_diagnostics() -> None:
        now = host_clock()
        diag_pub.publish(_diagnostics(session.snapshots(now), cfg.frame_timeout_s, now))

    node.create_timer(0.05, poll)
    node.create_timer(period, publish_diagnostics)
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    rc = 0
    try:
        while rclpy.ok() and not state["done"]:
            executor.spin_once(timeout_sec=0.1)
        if state["done"]:
            publish_diagnostics()  # the final figures, for whoever listens
            failed = session.errors()
            rc = 1 if failed else 0
            summary = ", ".join(
                f"{s['name']}: {s['frames']} framesets, {s['dropped']} dropped" for s in session.snapshots()
            )
            log.info(f"all recordings ended ({summary})")
    except (KeyboardInterrupt, ExternalShutdownException):
        pass  # SIGINT: clean shutdown below
    except Exception:
        if not stopping():  # a signal racing a spin is a stop, anything else a crash
            raise
    finally:
        session.stop()
        executor.shutdown(timeout_sec=1.0)
        node.destroy_node()
        rclpy.try_shutdown()
    return rc


# --------------------------------------------------------------------------------------------
# Subscriber side: used by the node tests and the perception bench
# --------------------------------------------------------------------------------------------


def _stamp_ns(stamp: Any) -> int:
    return int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec)


class CameraTopicCollector:
    """Subscribes to every topic of the given cameras and checks synthetic-recording content.

    `cameras`: name -> seed of its recording (see capture.write_test_recordings). Images are
    checked pixel-exactly against the frame number they encode; CameraInfo against the synthetic
    intrinsics; the frame id everywhere. Per topic it keeps frame number -> stamp (ns) for images
    and the set of stamps for CameraInfo (counted when they equal a colour frame's stamp).
    """

    def __init__(self, node: Any, cameras: Mapping[str, int], width: int, height: int, depth: int = 200):
        from rclpy.qos import QoSProfile, ReliabilityPolicy
        from sensor_msgs.msg import CameraInfo, Image

        self.node = node
        self.cameras = dict(cameras)
        self.width, self.height = width, height
        self.expected_k = [float(v) for v in synthetic_intrinsics(width, height).K.ravel()]
        self.lock = threading.Lock()
        self.frames: dict[str, dict[int, int]] = {}  # image topic -> frame number -> stamp ns
        self.info_stamps: dict[str, set[int]] = {}  # camera_info topic -> stamps ns
        self.invalid: dict[str, list[str]] = {}
        self.latency_ms: list[float] = []
        self.last_message = time.monotonic()
        self.subscriptions = []
        qos = QoSProfile(depth=depth, reliability=ReliabilityPolicy.BEST_EFFORT)
        for name, seed in self.cameras.items():
            for kind, topic in camera_topics(name).items():
                self.invalid[topic] = []
                if kind in ("image", "depth"):
                    self.frames[topic] = {}
                    callback = self._image_cb(topic, name, seed, kind)
                    self.subscriptions.append(node.create_subscription(Image, topic, callback, qos))
                else:
                    self.info_stamps[topic] = set()
                    callback = self._info_cb(topic, name)
                    self.subscriptions.append(node.create_subscription(CameraInfo, topic, callback, qos))

    @property
    def topics(self) -> list[str]:
        return list(self.invalid)

    def _image_cb(self, topic: str, name: str, seed: int, kind: str) -> Any:
        from dexh2r_core import msgs

        def callback(msg: Any) -> None:
            received = time.time()
            stamp = _stamp_ns(msg.header.stamp)
            problem, number = "", -1
            try:
                array = msgs.image_array(msg)
            except msgs.MessageError as exc:
                array, problem = None, str(exc)
            if array is not None and msg.header.frame_id != f"{name}_color_optical_frame":
                problem = f"frame_id {msg.header.frame_id!r}"
            elif array is not None and kind == "image":
                number, seed_byte = synthetic_frame_number(array)
                rgb, _ = synthetic_frame(number, self.width, self.height, seed)
                if seed_byte != seed & 0xFF or msg.encoding != "rgb8" or not np.array_equal(array, rgb):
                    problem = f"colour content of frame {number}"
            elif array is not None:
                number = synthetic_depth_number(array)
                _, depth = synthetic_frame(number, self.width, self.height, seed)
                if msg.encoding != "16UC1" or not np.array_equal(array, depth):
                    problem = f"depth content of frame {number}"
            with self.lock:
                self.last_message = time.monotonic()
                self.latency_ms.append(received * 1e3 - stamp * 1e-6)
                if problem:
                    self.invalid[topic].append(problem)
                else:
                    self.frames[topic][number] = stamp

        return callback

    def _info_cb(self, topic: str, name: str) -> Any:
        def callback(msg: Any) -> None:
            ok = (
                msg.header.frame_id == f"{name}_color_optical_frame"
                and (msg.width, msg.height) == (self.width, self.height)
                and np.allclose(list(msg.k), self.expected_k)
            )
            with self.lock:
                self.last_message = time.monotonic()
                if ok:
                    self.info_stamps[topic].add(_stamp_ns(msg.header.stamp))
                else:
                    self.invalid[topic].append(f"camera_info k={list(msg.k)} frame_id={msg.header.frame_id}")

        return callback

    def counts(self) -> dict[str, int]:
        """Valid messages per topic (CameraInfo: those stamped like a received colour frame)."""
        with self.lock:
            out = {t: len(f) for t, f in self.frames.items()}
            for topic, stamps in self.info_stamps.items():
                colour = set(self.frames[camera_topics(topic.split("/")[1])["image"]].values())
                out[topic] = len(stamps & colour)
            return out

    def complete(self, expected: Mapping[str, int]) -> bool:
        """Every topic of camera `name` has `expected[name]` valid messages."""
        return all(n >= expected[t.split("/")[1]] for t, n in self.counts().items())

    def summary(self, expected: Mapping[str, int]) -> dict[str, Any]:
        counts = self.counts()
        with self.lock:
            per_topic = {
                t: {
                    "received": n,
                    "expected": expected[t.split("/")[1]],
                    "fraction": n / max(1, expected[t.split("/")[1]]),
                    "invalid": len(self.invalid[t]),
                    "first_invalid": self.invalid[t][:3],
                }
                for t, n in counts.items()
            }
            # Colour and depth of one frame must carry the same stamp.
            mismatched = 0
            for name in self.cameras:
                topics = camera_topics(name)
                colour, depth = self.frames[topics["image"]], self.frames[topics["depth"]]
                mismatched += sum(1 for i, s in depth.items() if i in colour and colour[i] != s)
            image_topics = [camera_topics(n)["image"] for n in self.cameras]
            common = set.intersection(*(set(self.frames[t]) for t in image_topics)) if image_topics else set()
            skew = [
                (max(self.frames[t][i] for t in image_topics) - min(self.frames[t][i] for t in image_topics))
                * 1e-6
                for i in sorted(common)
            ]
            lat = np.asarray(self.latency_ms, dtype=float)
        return {
            "capture_delivered_fraction": min(v["fraction"] for v in per_topic.values()),
            "content_ok": all(v["invalid"] == 0 for v in per_topic.values()) and mismatched == 0,
            "colour_depth_stamp_mismatches": mismatched,
            "receive_latency_ms": {
                "p50": float(np.median(lat)) if lat.size else None,
                "p95": float(np.percentile(lat, 95)) if lat.size else None,
                "max": float(lat.max()) if lat.size else None,
            },
            "stamp_skew_ms_max": max(skew) if skew else None,
            "per_topic": per_topic,
        }


def collect(
    node: Any,
    collector: CameraTopicCollector,
    expected: Mapping[str, int],
    process: Any,
    timeout: float,
    idle_s: float = 1.0,
) -> None:
    """Spin `node` until every topic is complete, or the node process exited and nothing arrived
    for `idle_s` (messages still in flight are drained), or `timeout` s passed."""
    from rclpy.executors import SingleThreadedExecutor

    executor = SingleThreadedExecutor(context=node.context)
    executor.add_node(node)
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            executor.spin_once(timeout_sec=0.05)
            if collector.complete(expected):
                return
            if not process.alive() and time.monotonic() - collector.last_message > idle_s:
                return
    finally:
        executor.remove_node(node)
        executor.shutdown(timeout_sec=1.0)


def write_file_config(path: str | Path, files: Sequence[str | Path], **kwargs: Any) -> Path:
    """A file-source capture YAML for `files` (cameras camera_0, camera_1, ...)."""
    import yaml

    data: dict[str, Any] = {"source": "file", **kwargs}
    data["cameras"] = [{"name": f"camera_{i}", "file": str(f)} for i, f in enumerate(files)]
    path = Path(path)
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def measure_node_capture(
    out_dir: str | Path,
    *,
    cameras: int = 2,
    n_frames: int = 300,
    width: int = 424,
    height: int = 240,
    fps: int = 30,
    seed: int = 0,
    playback: str = "paced",
    timeout_s: float | None = None,
) -> dict[str, Any]:
    """Record synthetic files, play them through a `realsense_node` process, receive every topic.

    The ROS counterpart of capture.measure_capture (bench: capture_delivered_fraction through
    DDS): the node runs with exit_on_end and wait_for_subscribers=1 on a private domain, this
    process subscribes to all 4 topics per camera and checks every image pixel-exactly.
    `playback`: the node's file playback mode (paced: lossless reading, camera-rate delivery).
    """
    from dexh2r_core.ros_env import apply_ros_defaults, private_domain_id
    from dexh2r_core.testing import ros_test_node, start_node, wait_for_topic_match

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    files = [out / f"camera_{k}.db3" for k in range(cameras)]
    write_test_recordings(files, n_frames, width, height, fps, seed, pace=playback == "real_time")
    config = write_file_config(out / "realsense_bench.yaml", files, playback=playback)
    domain = int(os.environ.get("ROS_DOMAIN_ID") or private_domain_id())
    apply_ros_defaults(domain_id=domain)
    proc = start_node(
        "dexh2r_perception.realsense_node:main",
        name="realsense_node",
        params={"config": str(config), "exit_on_end": True, "wait_for_subscribers": 1},
        env={"ROS_DOMAIN_ID": str(domain)},
        log_dir=out / "logs",
    )
    expected = {f"camera_{k}": n_frames for k in range(cameras)}
    try:
        with ros_test_node("realsense_bench", domain_id=domain) as node:
            collector = CameraTopicCollector(
                node, {f"camera_{k}": seed + k for k in range(cameras)}, width, height
            )
            for topic in collector.topics:
                wait_for_topic_match(node, topic, "publisher", timeout=30.0, processes=[proc])
            collect(node, collector, expected, proc, timeout_s or n_frames / fps * 2 + 30)
            result = collector.summary(expected)
        proc.popen.wait(timeout=15)
    finally:
        rc = proc.stop()
    result["node_exit_code"] = rc
    result["setup"] = {
        "cameras": cameras,
        "n_frames": n_frames,
        "width": width,
        "height": height,
        "fps": fps,
        "playback": playback,
    }
    return result
