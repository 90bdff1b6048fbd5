"""RealSense RGB-D capture, ROS-free: live devices or librealsense recordings through `rs.pipeline`.

`realsense_node` is a thin rclpy shell around `CaptureSession` (one thread per camera); the bench
and the tests use the same classes without ROS.

Sources
- `live`: a pyrealsense2 device selected by serial number; colour rgb8 + depth z16, depth aligned to
  colour with `rs.align`; optional hardware sync (first camera or `sync_master` drives the others
  through the sync cable, `inter_cam_sync_mode` 1/2); a camera that goes silent or is unplugged is
  closed and reopened every `reconnect_interval_s` (a devices-changed callback wakes it early).
- `file`: a librealsense recording (`.db3` as written by 2.59, or `.bag`) played through the same
  `rs.pipeline` code path (`config.enable_device_from_file`). `playback: paced` (default) reads
  it losslessly (non-real-time player) and spaces framesets by their device times; `real_time`
  lets librealsense's player emit at the recorded wall-clock pace (as realsense-viewer replays;
  on a CPU-starved machine its syncer then loses framesets); `fast` does not space them.
  `write_test_recordings` makes such files with `rs.software_device` + `rs.recorder`.

Timestamps. Each frameset carries the colour frame's device timestamp (`device_time_s`; the depth
frame of a synchronised frameset has the same exposure). `ClockMapper` maps it to host (= ROS)
time as `stamp = device_time + offset`, one mapper per time base (`ClockRegistry`: a private one
per camera in `hardware_clock` domain; one shared by all cameras whose timestamps librealsense
already puts on the host clock, `global_time` - the D4xx default - or `system_time`, so their
relative timing is kept exactly). The offset is the *minimum* of
`host_arrival - device_time` over the first `clock_warmup_frames` framesets (the least-delayed
frame is the best estimate of the constant part of the transfer delay: larger values are queueing
jitter) and afterwards follows the minimum, allowed to creep up by at most `clock_max_drift_ppm`
of elapsed device time (device crystal vs host clock drift). Every camera is mapped by the same
rule onto the same host clock, so stamps of different cameras are comparable: the residual error
is the difference of the cameras' minimum transfer delays (same model and bus: ~1 ms) plus the
bounded drift, and with hardware sync the frames of one trigger get stamps within that error.
(For cameras sharing a mapper the error is only the offset's change between two map() calls.)
Stamps are strictly increasing per camera; a device clock jump (reconnect, playback restart)
restarts the estimate. File playback starts all cameras at the same instant (they open paused
and resume together), so recordings made together keep their relative timing.

Drops are counted from colour frame-number gaps (the device numbers every frame it captures, so a
gap is a frame lost anywhere between the sensor and this process, our own queue included).
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import math
import re
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

import numpy as np

from dexh2r_core.calibration import CameraIntrinsics
from dexh2r_core.config import ConfigError, load_config

DEFAULT_WIDTH, DEFAULT_HEIGHT, DEFAULT_FPS = 640, 480, 30
DEPTH_SCALE_MM = 0.001  # published 16UC1 depth is millimetres (realsense-ros / calibration convention)
_NAME_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")


class CaptureError(RuntimeError):
    """A camera cannot be opened or read; the message names the camera and the cause."""


class DeviceNotFoundError(CaptureError):
    """No connected device has the configured serial number (live source; retried)."""


class DeviceLostError(CaptureError):
    """A streaming device failed or was unplugged (live source; reconnected)."""


class EndOfRecordingError(CaptureError):
    """A recording has been played to its end (file source)."""


# --------------------------------------------------------------------------------------------
# Config
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CameraConfig:
    """One RGB-D camera. width/height/fps 0: live 640x480@30, file: whatever the recording has."""

    name: str
    serial: str = ""
    file: str = ""
    width: int = 0
    height: int = 0
    fps: int = 0
    depth_width: int = 0  # 0: same as colour (live D4xx modes such as 848x480 depth + 640x480 colour)
    depth_height: int = 0

    def __post_init__(self) -> None:
        if not _NAME_RE.match(self.name):
            raise ConfigError(f"name: must be a ROS name token ([A-Za-z][A-Za-z0-9_]*), got {self.name!r}")
        for key in ("width", "height", "fps", "depth_width", "depth_height"):
            if getattr(self, key) < 0:
                raise ConfigError(f"{key}: must be >= 0 (0 = default), got {getattr(self, key)}")
        if (self.depth_width == 0) != (self.depth_height == 0):
            raise ConfigError("depth_width/depth_height: set both or neither")

    @property
    def frame_id(self) -> str:
        return f"{self.name}_color_optical_frame"

    def stream_size(self, source: str) -> tuple[int, int, int]:
        """(width, height, fps) to request; zeros stay zero for files (= any)."""
        if source == "live":
            return (self.width or DEFAULT_WIDTH, self.height or DEFAULT_HEIGHT, self.fps or DEFAULT_FPS)
        return (self.width, self.height, self.fps)


@dataclass(frozen=True)
class CaptureConfig:
    """Cameras and capture behaviour (YAML: config/perception/realsense.yaml)."""

    source: Literal["live", "file"] = "live"
    cameras: list[CameraConfig] = field(default_factory=list)
    align: bool = True  # depth aligned to colour (skipped when the two already share geometry)
    hardware_sync: bool = False
    sync_master: str = ""  # camera name driving the sync cable; "" = the first camera
    # file: paced = librealsense's player waits for each read (lossless) and framesets are spaced
    # by their device times (camera rate); real_time = the player emits at the recorded wall-clock
    # pace itself (on a CPU-starved machine its syncer then loses framesets); fast = no spacing.
    playback: Literal["paced", "real_time", "fast"] = "paced"
    queue_size: int = 16  # framesets buffered between librealsense and our thread
    frame_timeout_s: float = 1.0  # silent this long: stale (ERROR); live: pipeline restarted
    reconnect_interval_s: float = 1.0
    clock_warmup_frames: int = 30
    clock_max_drift_ppm: float = 200.0
    calibration: str = ""  # optional calibration YAML: frame ids and an intrinsics cross-check

    def __post_init__(self) -> None:
        if not self.cameras:
            raise ConfigError("cameras: at least one camera is required")
        names = [c.name for c in self.cameras]
        for i, cam in enumerate(self.cameras):
            if names.count(cam.name) > 1:
                raise ConfigError(f"cameras[{i}].name: duplicate camera name '{cam.name}'")
            if self.source == "file" and not cam.file:
                raise ConfigError(f"cameras[{i}].file: required for source 'file' (camera '{cam.name}')")
            if self.source == "live" and not cam.serial and len(self.cameras) > 1:
                raise ConfigError(
                    f"cameras[{i}].serial: required when several live cameras are used (camera '{cam.name}')"
                )
        serials = [c.serial for c in self.cameras if c.serial]
        if self.source == "live" and len(set(serials)) != len(serials):
            raise ConfigError("cameras: two cameras have the same serial number")
        if self.sync_master and self.sync_master not in names:
            raise ConfigError(f"sync_master: no camera named '{self.sync_master}' (cameras: {names})")
        if self.queue_size < 1:
            raise ConfigError(f"queue_size: must be >= 1, got {self.queue_size}")
        for key in ("frame_timeout_s", "reconnect_interval_s"):
            value = getattr(self, key)
            if not math.isfinite(value) or value <= 0:
                raise ConfigError(f"{key}: must be a positive number of seconds, got {value}")
        if self.clock_warmup_frames < 1:
            raise ConfigError(f"clock_warmup_frames: must be >= 1, got {self.clock_warmup_frames}")
        if not math.isfinite(self.clock_max_drift_ppm) or self.clock_max_drift_ppm < 0:
            raise ConfigError(f"clock_max_drift_ppm: must be >= 0, got {self.clock_max_drift_ppm}")

    def camera(self, name: str) -> CameraConfig:
        for cam in self.cameras:
            if cam.name == name:
                return cam
        raise KeyError(f"no camera '{name}' (cameras: {[c.name for c in self.cameras]})")


def load_capture_config(path: str | Path, overrides: dict[str, Any] | None = None) -> CaptureConfig:
    """Load a capture YAML; relative `file:` paths are taken from the YAML's folder (`calibration:` too
    when the file is there; otherwise the node looks it up under config/).

    ConfigError names the file and the key (a missing file: "<path>: config file not found").
    """
    path = Path(path)
    cfg = load_config(CaptureConfig, path, overrides)
    base = path.resolve().parent

    def recording(p: str) -> str:
        return str(base / p) if p and not Path(p).is_absolute() else p

    # A relative calibration path that is not next to the YAML is left for config_path() (config/).
    calibration = cfg.calibration
    if calibration and not Path(calibration).is_absolute() and (base / calibration).exists():
        calibration = str(base / calibration)
    cams = [dataclasses.replace(c, file=recording(c.file)) for c in cfg.cameras]
    return dataclasses.replace(cfg, cameras=cams, calibration=calibration)


# --------------------------------------------------------------------------------------------
# Framesets, clock mapping, statistics
# --------------------------------------------------------------------------------------------


@dataclass
class Frameset:
    """One synchronised colour + aligned depth pair of one camera."""

    name: str
    rgb: np.ndarray  # (H, W, 3) uint8
    depth: np.ndarray  # (H, W) uint16 millimetres, aligned to colour, 0 = invalid
    intrinsics: CameraIntrinsics  # of the colour stream (= of the aligned depth)
    device_time_s: float  # colour frame timestamp (device clock, or librealsense global time)
    frame_number: int
    stamp_s: float = 0.0  # device time mapped to host/ROS time (ClockMapper)
    host_time_s: float = 0.0  # host time when librealsense handed the frameset over
    timestamp_domain: str = ""


@dataclass
class _ClockKey:
    last_device: float | None = None
    last_stamp: float | None = None
    late: int = 0


class ClockMapper:
    """Device time -> host time for one time base: `stamp = device_time + offset` (module doc).

    Thread-safe. Several cameras may share one mapper (`key` = camera name) when their device
    times are on one clock already (librealsense global/system time); the offset is then common,
    so their stamps keep the device times' relative timing exactly.
    """

    def __init__(self, warmup_frames: int = 30, max_drift_ppm: float = 200.0, jump_s: float = 0.5):
        self.warmup_frames = warmup_frames
        self.max_drift = max_drift_ppm * 1e-6
        self.jump_s = jump_s
        self.resyncs = 0
        self._lock = threading.Lock()
        self._keys: dict[str, _ClockKey] = {}
        self.offset: float | None = None
        self._n = 0
        self._max_device: float | None = None

    def reset(self) -> None:
        """Forget the offset (a new time base); stamps stay increasing per key."""
        with self._lock:
            self._restart()

    def forget(self, key: str) -> None:
        """A camera reopened: its device time may restart (the offset is kept)."""
        with self._lock:
            state = self._keys.get(key)
            if state is not None:
                state.last_device, state.late = None, 0

    def map(self, device_time_s: float, host_time_s: float, key: str = "") -> float:
        with self._lock:
            state = self._keys.setdefault(key, _ClockKey())
            d = host_time_s - device_time_s
            if self.offset is not None and state.last_device is not None:
                if device_time_s < state.last_device - 1e-9:
                    self._restart()  # device clock went backwards: reset or a new recording
                elif d - self.offset > self.jump_s:
                    # Persistently later than any queueing explains: the clock jumped back. A
                    # short stall (a few late frames) must not move the offset, hence the count.
                    state.late += 1
                    if state.late >= 5:
                        self._restart()
                else:
                    state.late = 0
            if self.offset is None:
                self.offset = d
            elif self._n < self.warmup_frames:
                self.offset = min(self.offset, d)
            else:
                # Creep is bounded by elapsed device time; the max over keys counts it once.
                elapsed = max(0.0, device_time_s - (self._max_device or device_time_s))
                self.offset = min(d, self.offset + self.max_drift * elapsed)
            self._n += 1
            self._max_device = max(self._max_device or device_time_s, device_time_s)
            state.last_device = device_time_s
            stamp = device_time_s + self.offset
            if state.last_stamp is not None and stamp <= state.last_stamp:
                stamp = state.last_stamp + 1e-6  # warm-up may lower the offset: keep increasing
            state.last_stamp = stamp
            return stamp

    def _restart(self) -> None:
        self.resyncs += 1
        self.offset, self._n, self._max_device = None, 0, None
        for state in self._keys.values():  # last_stamp kept: published stamps stay monotonic
            state.last_device, state.late = None, 0


class ClockRegistry:
    """One ClockMapper per time base: a private one per camera for hardware clocks, one shared
    by all cameras whose timestamps librealsense already puts on the host clock (global time,
    the default of D4xx devices and of their recordings, or system time)."""

    def __init__(self, warmup_frames: int = 30, max_drift_ppm: float = 200.0):
        self.warmup_frames = warmup_frames
        self.max_drift_ppm = max_drift_ppm
        self._lock = threading.Lock()
        self.mappers: dict[str, ClockMapper] = {}

    def get(self, domain: str, camera: str) -> ClockMapper:
        key = f"hardware:{camera}" if domain == "hardware_clock" else "host"
        with self._lock:
            if key not in self.mappers:
                self.mappers[key] = ClockMapper(self.warmup_frames, self.max_drift_ppm)
            return self.mappers[key]


class CameraStats:
    """Thread-safe per-camera figures for /diagnostics and the bench."""

    def __init__(self, name: str, expected_fps: float = 0.0, window_s: float = 2.0, keep: int = 2000):
        self.name = name
        self.expected_fps = expected_fps
        self.window_s = window_s
        self._lock = threading.Lock()
        self.frames = 0
        self.dropped = 0
        self.reconnects = 0
        self.unpaired = 0  # framesets skipped because depth did not match colour in time
        self.sink_errors = 0  # framesets the consumer (publisher) failed on
        self.state = "starting"  # starting, streaming, stale, reconnecting, ended, failed, stopped
        self.detail = ""
        self.source_id = ""  # serial or file
        self.last_frame_number: int | None = None
        self.last_host_time: float | None = None
        self.first_host_time: float | None = None
        self._times: collections.deque[float] = collections.deque()
        self._window_drops: collections.deque[tuple[float, int]] = collections.deque()
        self.latencies: collections.deque[float] = collections.deque(maxlen=keep)
        self.processing: collections.deque[float] = collections.deque(maxlen=keep)

    def set_state(self, state: str, detail: str = "") -> None:
        with self._lock:
            self.state, self.detail = state, detail

    def record(self, frame_number: int, host_time: float, latency_s: float, processing_s: float) -> int:
        """Count one delivered frameset; returns the frames dropped just before it."""
        with self._lock:
            gap = 0
            last = self.last_frame_number
            if last is not None and frame_number > last + 1:
                gap = frame_number - last - 1
            # frame_number <= last: counter restarted (reconnect / playback restart): no drop.
            self.dropped += gap
            self.last_frame_number = frame_number
            self.frames += 1
            self.first_host_time = self.first_host_time or host_time
            self.last_host_time = host_time
            self._times.append(host_time)
            if gap:
                self._window_drops.append((host_time, gap))
            self.latencies.append(latency_s)
            self.processing.append(processing_s)
            self.state, self.detail = "streaming", ""
            return gap

    def snapshot(self, now: float) -> dict[str, Any]:
        with self._lock:
            while self._times and self._times[0] < now - self.window_s:
                self._times.popleft()
            while self._window_drops and self._window_drops[0][0] < now - self.window_s:
                self._window_drops.popleft()
            n = len(self._times)
            span = min(self.window_s, now - self.first_host_time) if self.first_host_time else 0.0
            rate = n / span if span > 0.2 else 0.0
            lat = np.asarray(self.latencies, dtype=float) * 1e3
            proc = np.asarray(self.processing, dtype=float) * 1e3
            recent_drops = sum(g for _, g in self._window_drops)
            return {
                "name": self.name,
                "state": self.state,
                "detail": self.detail,
                "source": self.source_id,
                "frames": self.frames,
                "dropped": self.dropped,
                "drop_fraction": self.dropped / max(1, self.frames + self.dropped),
                "recent_drops": recent_drops,
                "rate_hz": rate,
                "expected_hz": self.expected_fps,
                "age_s": (now - self.last_host_time) if self.last_host_time is not None else None,
                "reconnects": self.reconnects,
                "unpaired": self.unpaired,
                "sink_errors": self.sink_errors,
                "latency_ms_p50": float(np.median(lat)) if lat.size else None,
                "latency_ms_p95": float(np.percentile(lat, 95)) if lat.size else None,
                "latency_ms_max": float(lat.max()) if lat.size else None,
                "processing_ms_p50": float(np.median(proc)) if proc.size else None,
            }


def health(snapshot: dict[str, Any], stale_s: float) -> tuple[int, str]:
    """(level 0 OK / 1 WARN / 2 ERROR, message) for one camera's snapshot (DiagnosticStatus levels)."""
    state, name = snapshot["state"], snapshot["name"]
    age = snapshot["age_s"]
    if state in ("failed", "ended", "reconnecting", "stopped"):
        detail = snapshot["detail"] or state
        return 2, f"{name} {'stopped' if state == 'ended' else state}: {detail}"
    if age is None:
        return (2, f"{name} stale: no frames yet") if state == "stale" else (1, f"{name} starting")
    if age > stale_s:
        return 2, f"{name} stale: no frames for {age:.1f} s"
    expected = snapshot["expected_hz"]
    if expected and snapshot["rate_hz"] < 0.8 * expected:
        return 1, f"{name} slow: {snapshot['rate_hz']:.1f} Hz of {expected:.0f} Hz"
    if snapshot["recent_drops"]:
        return 1, f"{name} dropping frames: {snapshot['recent_drops']} in the last window"
    return 0, f"{name} streaming {snapshot['rate_hz']:.1f} Hz"


# --------------------------------------------------------------------------------------------
# Camera
# --------------------------------------------------------------------------------------------


def _rs() -> Any:
    import pyrealsense2 as rs  # lazy: importing this module must not need the SDK

    return rs


def _camera_intrinsics(intr: Any) -> CameraIntrinsics:
    """pyrealsense2 intrinsics -> CameraIntrinsics with the model realsense-ros publishes."""
    rs = _rs()
    coeffs = [float(c) for c in intr.coeffs]
    if intr.model in (rs.distortion.kannala_brandt4, rs.distortion.ftheta):
        model, D = "equidistant", coeffs[:4]
    else:  # brown_conrady and its inverse/modified forms: realsense-ros reports plumb_bob, 5 coeffs
        model, D = "plumb_bob", coeffs[:5]
    return CameraIntrinsics(
        width=int(intr.width),
        height=int(intr.height),
        fx=float(intr.fx),
        fy=float(intr.fy),
        cx=float(intr.ppx),
        cy=float(intr.ppy),
        distortion_model=model,
        D=D,
    )


def _same_geometry(depth_profile: Any, color_profile: Any) -> bool:
    """True when depth already is in the colour camera's pixels (rs.align would only add holes)."""
    di = depth_profile.as_video_stream_profile().get_intrinsics()
    ci = color_profile.as_video_stream_profile().get_intrinsics()
    same_intr = (
        (di.width, di.height) == (ci.width, ci.height)
        and np.allclose([di.fx, di.fy, di.ppx, di.ppy], [ci.fx, ci.fy, ci.ppx, ci.ppy], atol=1e-4)
        and np.allclose(list(di.coeffs), list(ci.coeffs), atol=1e-6)
    )
    if not same_intr:
        return False
    try:
        ext = depth_profile.get_extrinsics_to(color_profile)
    except RuntimeError:
        return False
    return bool(
        np.allclose(np.asarray(ext.rotation).reshape(3, 3), np.eye(3), atol=1e-6)
        and np.allclose(ext.translation, 0.0, atol=1e-6)
    )


class PlaybackPacer:
    """Spaces the framesets of a non-real-time playback by their device times ('paced' mode).

    One pacer is shared by the cameras of a session, so recordings made together stay in step.
    A reader more than `max_lag_s` behind re-anchors instead of bursting to catch up.
    """

    def __init__(self, max_lag_s: float = 0.5):
        self.max_lag_s = max_lag_s
        self._lock = threading.Lock()
        self._anchor: tuple[float, float] | None = None  # (monotonic time, device time)

    def wait(self, device_time_s: float) -> None:
        with self._lock:
            now = time.monotonic()
            if self._anchor is None or device_time_s < self._anchor[1] - 1.0:
                self._anchor = (now, device_time_s)  # first frameset, or a new recording
            target = self._anchor[0] + (device_time_s - self._anchor[1])
            if now - target > self.max_lag_s:
                self._anchor = (now, device_time_s)
                target = now
        delay = target - time.monotonic()
        if delay > 0:
            time.sleep(min(delay, 1.0))  # pacing playback to the recorded frame times


class _PipelineReader:
    """frame_queue-like `try_wait_for_frame` over a pipeline started without a queue."""

    def __init__(self, pipeline: Any):
        self.pipeline = pipeline

    def try_wait_for_frame(self, timeout_ms: int) -> tuple[bool, Any]:
        return self.pipeline.try_wait_for_frames(timeout_ms)


class RealSenseCamera:
    """One camera through `rs.pipeline` (+ `rs.align` to colour): a live device or a recording.

    `open()` starts streaming (for files: paused until `resume()`), `read()` returns the next
    Frameset or None on timeout; DeviceLostError / EndOfRecordingError end the stream.
    """

    def __init__(
        self,
        cam: CameraConfig,
        config: CaptureConfig,
        *,
        host_clock: Callable[[], float] = time.time,
        sync_role: int = 0,
        clocks: ClockRegistry | None = None,
        pacer: PlaybackPacer | None = None,
    ):
        self.cam = cam
        self.config = config
        self.source = config.source
        self.host_clock = host_clock
        self.sync_role = sync_role  # inter_cam_sync_mode: 0 default, 1 master, 2 slave
        self.clocks = clocks or ClockRegistry(config.clock_warmup_frames, config.clock_max_drift_ppm)
        self._reopened = True
        self.pacer = pacer or PlaybackPacer()
        self.pipeline: Any = None
        self.queue: Any = None
        self.playback: Any = None
        self.aligner: Any = None
        self.intrinsics: CameraIntrinsics | None = None
        self.depth_scale = DEPTH_SCALE_MM
        self.serial = cam.serial
        self.fps = 0
        self.device_name = ""
        self._resumed_at: float | None = None
        self.duplicates = 0  # framesets repeating an already delivered colour frame (skipped)
        self.unpaired = 0  # framesets whose depth is not the colour frame's partner (skipped)
        self._last_number: int | None = None
        self._last_color_ts: float | None = None

    @property
    def source_id(self) -> str:
        return self.cam.file if self.source == "file" else (self.serial or "<any>")

    def describe(self) -> str:
        where = f"file {self.cam.file}" if self.source == "file" else f"serial {self.cam.serial or '<any>'}"
        return f"camera '{self.cam.name}' ({where})"

    # ---- opening ------------------------------------------------------------------------------
    def _rs_config(self) -> Any:
        rs = _rs()
        cfg = rs.config()
        w, h, fps = self.cam.stream_size(self.source)
        dw, dh = (self.cam.depth_width, self.cam.depth_height) if self.cam.depth_width else (w, h)
        if self.source == "file":
            path = Path(self.cam.file)
            if not path.is_file():
                raise CaptureError(f"{self.describe()}: recording not found: {path}")
            cfg.enable_device_from_file(str(path), repeat_playback=False)
        elif self.cam.serial:
            cfg.enable_device(self.cam.serial)
        cfg.enable_stream(rs.stream.color, w, h, rs.format.rgb8, fps)
        cfg.enable_stream(rs.stream.depth, dw, dh, rs.format.z16, fps)
        return cfg

    def probe(self) -> dict[str, Any]:
        """Resolve the configuration without streaming: serial, name, stream modes (clear errors)."""
        rs = _rs()
        cfg = self._rs_config()
        try:
            profile = cfg.resolve(rs.pipeline_wrapper(rs.pipeline()))
        except RuntimeError as exc:
            raise self._open_error(exc) from exc
        dev = profile.get_device()
        streams = {}
        for sp in profile.get_streams():
            v = sp.as_video_stream_profile()
            streams[sp.stream_type().name] = (v.width(), v.height(), sp.fps(), sp.format().name)
        return {
            "serial": dev.get_info(rs.camera_info.serial_number),
            "name": dev.get_info(rs.camera_info.name),
            "streams": streams,
        }

    def _open_error(self, exc: Exception) -> CaptureError:
        w, h, fps = self.cam.stream_size(self.source)
        want = f"colour rgb8 + depth z16 at {w or 'any'}x{h or 'any'}@{fps or 'any'}"
        if self.source == "live":
            return DeviceNotFoundError(f"{self.describe()}: cannot open ({want}): {exc}")
        return CaptureError(f"{self.describe()}: cannot play the recording ({want}): {exc}")

    def open(self) -> None:
        rs = _rs()
        self.close()
        cfg = self._rs_config()
        pipeline = rs.pipeline()
        try:
            profile = cfg.resolve(rs.pipeline_wrapper(pipeline))
        except RuntimeError as exc:
            raise self._open_error(exc) from exc
        device = profile.get_device()
        if self.source == "file":
            # librealsense caches the playback device per file, so this is the device that
            # pipeline.start() will stream. Its sensors are started one after another; playing
            # already then loses frameset 0 in most runs, so start paused and resume when ready.
            self.playback = device.as_playback()
            self.playback.pause()
            self.playback.set_real_time(self.config.playback == "real_time")
        elif self.sync_role:
            try:
                device.first_depth_sensor().set_option(rs.option.inter_cam_sync_mode, float(self.sync_role))
            except RuntimeError as exc:
                raise DeviceNotFoundError(f"{self.describe()}: cannot set hardware sync: {exc}") from exc
        try:
            if self.playback is not None and self.config.playback != "real_time":
                # Non-real-time playback paces itself on our reads (lossless); into a frame_queue
                # it stalls after two framesets (librealsense 2.59), so read the pipeline itself.
                profile = pipeline.start(cfg)
                self.queue = _PipelineReader(pipeline)
            else:
                # A frame_queue filled by librealsense's own thread: Python (GIL) jitter in our
                # thread drops nothing while the queue has room (the pipeline's own holds one).
                self.queue = rs.frame_queue(self.config.queue_size, keep_frames=True)
                profile = pipeline.start(cfg, self.queue)
        except RuntimeError as exc:
            raise self._open_error(exc) from exc
        self.pipeline = pipeline
        device = profile.get_device()
        self.serial = device.get_info(rs.camera_info.serial_number)
        self.device_name = device.get_info(rs.camera_info.name)
        color = profile.get_stream(rs.stream.color)
        depth = profile.get_stream(rs.stream.depth)
        self.fps = color.fps()
        self.intrinsics = _camera_intrinsics(color.as_video_stream_profile().get_intrinsics())
        try:
            self.depth_scale = float(device.first_depth_sensor().get_depth_scale())
        except RuntimeError:
            self.depth_scale = DEPTH_SCALE_MM
        needs_align = self.config.align and not _same_geometry(depth, color)
        self.aligner = rs.align(rs.stream.color) if needs_align else None
        if not self.config.align and (depth.as_video_stream_profile().width() != self.intrinsics.width):
            raise CaptureError(f"{self.describe()}: align: false needs depth and colour of the same size")
        self._reopened = True
        self._last_number = self._last_color_ts = None
        self._resumed_at = None if self.playback is not None else time.monotonic()

    def resume(self) -> None:
        """Start the (paused) playback; no-op for live devices."""
        if self.playback is not None and self._resumed_at is None:
            self.playback.resume()
            self._resumed_at = time.monotonic()

    def close(self) -> None:
        if self.pipeline is not None:
            with contextlib.suppress(RuntimeError):  # already stopped (device gone)
                self.pipeline.stop()
        self.pipeline = self.queue = self.playback = self.aligner = None
        self._resumed_at = None

    # ---- reading ------------------------------------------------------------------------------
    def _ended(self) -> bool:
        rs = _rs()
        if self.playback is None or self._resumed_at is None:
            return False
        # Right after resume() the status may still read 'stopped' for a moment.
        return self.playback.current_status() == rs.playback_status.stopped and (
            time.monotonic() - self._resumed_at > 0.5
        )

    def read(self, timeout_s: float = 0.1) -> Frameset | None:
        """The next frameset, or None when none arrived within `timeout_s`."""
        if self.queue is None:
            raise CaptureError(f"{self.describe()}: not open")
        try:
            ok, frame = self.queue.try_wait_for_frame(max(1, int(timeout_s * 1000)))
        except RuntimeError as exc:
            raise DeviceLostError(f"{self.describe()}: {exc}") from exc
        if not ok:
            if self._ended():
                raise EndOfRecordingError(f"{self.describe()}: end of recording")
            return None
        fs = frame.as_frameset()
        if self.playback is not None and self.config.playback == "paced":
            color = fs.get_color_frame()
            if color:
                self.pacer.wait(color.get_timestamp() * 1e-3)
        host = self.host_clock()
        return self._convert(fs, host)

    def _convert(self, fs: Any, host_time: float) -> Frameset | None:
        color = fs.get_color_frame()
        depth = fs.get_depth_frame()
        if not color or not depth:
            return None  # partial frameset (librealsense start-up); never published
        # The pipeline emits a frameset whenever either stream delivers, completed with the other
        # stream's latest frame: when depth i comes before colour i that gives (depth i, colour
        # i-1), a colour frame already published. Publish each colour frame once, and only with
        # the depth frame nearest in time (within half a frame period).
        number = int(color.get_frame_number())
        t_color = color.get_timestamp()
        if number == self._last_number and t_color == self._last_color_ts:
            self.duplicates += 1
            return None
        if self.fps and abs(depth.get_timestamp() - t_color) > 500.0 / self.fps:
            self.unpaired += 1
            return None
        self._last_number, self._last_color_ts = number, t_color
        if self.aligner is not None:
            fs = self.aligner.process(fs)
            color = fs.get_color_frame()
            depth = fs.get_depth_frame()
        # Copies: the frames' buffers go back to librealsense's pool when released.
        rgb = np.array(color.get_data(), dtype=np.uint8, copy=True)
        dep = np.array(depth.get_data(), dtype=np.uint16, copy=True)
        if abs(self.depth_scale - DEPTH_SCALE_MM) > 1e-9:
            scaled = np.rint(dep.astype(np.float64) * (self.depth_scale / DEPTH_SCALE_MM))
            dep = np.clip(scaled, 0, 65535).astype(np.uint16)
        device_time = color.get_timestamp() * 1e-3
        domain = color.get_frame_timestamp_domain().name
        clock = self.clocks.get(domain, self.cam.name)
        if self._reopened:
            self._reopened = False
            if domain == "hardware_clock":
                clock.reset()  # a reopened device restarts its own clock
            else:
                clock.forget(self.cam.name)
        assert self.intrinsics is not None
        return Frameset(
            name=self.cam.name,
            rgb=rgb,
            depth=dep,
            intrinsics=self.intrinsics,
            device_time_s=device_time,
            frame_number=number,
            stamp_s=clock.map(device_time, host_time, self.cam.name),
            host_time_s=host_time,
            timestamp_domain=domain,
        )

    def __iter__(self) -> Iterator[Frameset]:
        """All framesets until the end of a recording (opens and resumes if needed)."""
        if self.pipeline is None:
            self.open()
        self.resume()
        while True:
            try:
                fs = self.read(0.1)
            except EndOfRecordingError:
                return
            if fs is not None:
                yield fs


class DeviceWatcher:
    """librealsense hot-plug events -> per-serial flags, so a capture thread reacts at once."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self.removed: set[str] = set()
        self.generation = 0
        self._known: dict[str, Any] = {}
        self._ctx: Any = None
        try:
            rs = _rs()
            self._ctx = rs.context()
            for dev in self._ctx.query_devices():
                self._known[dev.get_info(rs.camera_info.serial_number)] = dev
            self._ctx.set_devices_changed_callback(self._on_change)
        except Exception:  # no USB backend (containers): silence timeouts still detect a loss
            self._ctx = None

    def _on_change(self, info: Any) -> None:
        rs = _rs()
        with self._cond:
            # was_removed() needs the device object of before the event, hence the known list.
            for serial, dev in list(self._known.items()):
                if info.was_removed(dev):
                    self.removed.add(serial)
                    del self._known[serial]
            for dev in info.get_new_devices():
                serial = dev.get_info(rs.camera_info.serial_number)
                self._known[serial] = dev
                self.removed.discard(serial)
            self.generation += 1
            self._cond.notify_all()

    def was_removed(self, serial: str) -> bool:
        with self._cond:
            return serial in self.removed

    def wait_for_change(self, timeout: float, stop: threading.Event) -> None:
        """Return after `timeout`, at a plug/unplug event, or soon after `stop` is set."""
        deadline = time.monotonic() + timeout
        with self._cond:
            start = self.generation
            while self.generation == start and not stop.is_set():
                left = deadline - time.monotonic()
                if left <= 0:
                    return
                self._cond.wait(min(left, 0.1))


# --------------------------------------------------------------------------------------------
# Session: one thread per camera
# --------------------------------------------------------------------------------------------


class CameraLike(Protocol):
    cam: CameraConfig
    source: str
    intrinsics: CameraIntrinsics | None
    fps: int
    serial: str

    @property
    def source_id(self) -> str: ...

    def describe(self) -> str: ...
    def open(self) -> None: ...
    def resume(self) -> None: ...
    def read(self, timeout_s: float = 0.1) -> Frameset | None: ...
    def close(self) -> None: ...


Sink = Callable[[Frameset], None]


class CameraWorker(threading.Thread):
    """Capture thread of one camera: open, read, hand framesets to `sink`, reconnect (live)."""

    def __init__(
        self,
        camera: CameraLike,
        config: CaptureConfig,
        sink: Sink,
        stats: CameraStats,
        *,
        stop: threading.Event,
        go: threading.Event,
        opened: threading.Barrier | None = None,
        watcher: DeviceWatcher | None = None,
        host_clock: Callable[[], float] = time.time,
        log: Callable[[str], None] | None = None,
    ):
        super().__init__(name=f"capture-{camera.cam.name}", daemon=True)
        self.camera = camera
        self.config = config
        self.sink = sink
        self.stats = stats
        self.stop_event = stop
        self.go = go
        self.opened = opened
        self.watcher = watcher
        self.host_clock = host_clock
        self.log = log or (lambda _msg: None)
        self.error: Exception | None = None

    def _wait(self, seconds: float) -> None:
        if self.watcher is not None:
            self.watcher.wait_for_change(seconds, self.stop_event)  # a plug event ends it early
        else:
            self.stop_event.wait(seconds)

    def _arrive(self) -> None:
        if self.opened is not None:
            # BrokenBarrierError: another camera failed to open; this one plays anyway.
            with contextlib.suppress(threading.BrokenBarrierError):
                self.opened.wait(timeout=30.0)
            self.opened = None

    def run(self) -> None:
        name = self.camera.cam.name
        self.stats.source_id = self.camera.source_id
        live = self.camera.source == "live"
        attempt = 0
        try:
            while not self.stop_event.is_set():
                try:
                    self.camera.open()
                except CaptureError as exc:
                    if not live:
                        self.error = exc
                        self.stats.set_state("failed", str(exc))
                        self.log(f"{exc}")
                        if self.opened is not None:
                            self.opened.abort()
                        return
                    attempt += 1
                    self.stats.set_state("reconnecting", f"not connected (attempt {attempt}): {exc}")
                    if attempt == 1 or attempt % 10 == 0:
                        self.log(f"{name}: waiting for the device: {exc}")
                    self._wait(self.config.reconnect_interval_s)
                    continue
                if self.stats.frames:
                    self.stats.reconnects += 1
                    self.log(f"{name}: reconnected (serial {self.camera.serial})")
                attempt = 0
                if self.camera.intrinsics is not None:
                    self.stats.expected_fps = float(self.camera.fps)
                self._arrive()
                while not self.go.wait(0.1):
                    if self.stop_event.is_set():
                        return
                self.camera.resume()
                self.stats.set_state("streaming" if self.stats.frames else "starting")
                if not self._stream(live):
                    return
        finally:
            self.camera.close()
            if self.stats.state not in ("ended", "failed"):
                self.stats.set_state("stopped", "capture stopped")

    def _stream(self, live: bool) -> bool:
        """Read until stop/end (returns False) or a lost device (returns True: reconnect)."""
        name = self.camera.cam.name
        last_frame = time.monotonic()
        while not self.stop_event.is_set():
            try:
                fs = self.camera.read(0.1)
            except EndOfRecordingError:
                self.stats.set_state("ended", f"recording ended after {self.stats.frames} framesets")
                self.log(f"{name}: recording ended after {self.stats.frames} framesets")
                return False
            except DeviceLostError as exc:
                self.stats.set_state("reconnecting", f"device lost: {exc}")
                self.log(f"{name}: device lost ({exc}); reconnecting")
                self.camera.close()
                return live
            self.stats.unpaired = int(getattr(self.camera, "unpaired", 0))
            silent = time.monotonic() - last_frame
            if fs is None:
                if silent > self.config.frame_timeout_s:
                    gone = live and self.watcher is not None and self.watcher.was_removed(self.camera.serial)
                    if live and (gone or silent > 2 * self.config.frame_timeout_s):
                        # Unplugged, or silent well past the timeout: restart the pipeline.
                        self.stats.set_state("reconnecting", f"no frames for {silent:.1f} s")
                        self.log(f"{name}: no frames for {silent:.1f} s; reopening")
                        self.camera.close()
                        return True
                    self.stats.set_state("stale", f"no frames for {silent:.1f} s")
                continue
            last_frame = time.monotonic()
            try:
                self.sink(fs)
            except Exception as exc:  # a failing consumer must not kill capture; report it
                self.stats.sink_errors += 1
                if self.stats.sink_errors == 1 or self.stats.sink_errors % 100 == 0:
                    self.log(f"{name}: sink failed ({self.stats.sink_errors} times): {exc!r}")
            done = self.host_clock()
            self.stats.record(fs.frame_number, done, done - fs.stamp_s, done - fs.host_time_s)
        return False


class CaptureSession:
    """All cameras of a CaptureConfig, each in its own thread, feeding `sink(frameset)`.

    File cameras open paused, wait for each other, and start playing together once `release()`
    is called (the node waits for subscribers first); live cameras stream as soon as they open.
    """

    def __init__(
        self,
        config: CaptureConfig,
        sink: Sink,
        *,
        host_clock: Callable[[], float] = time.time,
        log: Callable[[str], None] | None = None,
        camera_factory: Callable[[CameraConfig, CaptureConfig, int], CameraLike] | None = None,
    ):
        self.config = config
        self.sink = sink
        self.host_clock = host_clock
        self.log = log or (lambda _msg: None)
        self.stop_event = threading.Event()
        self.go = threading.Event()
        if config.source == "live":
            self.go.set()
        master = config.sync_master or config.cameras[0].name
        self.clocks = ClockRegistry(config.clock_warmup_frames, config.clock_max_drift_ppm)
        self.pacer = PlaybackPacer()
        factory = camera_factory or (
            lambda cam, cfg, role: RealSenseCamera(
                cam, cfg, host_clock=host_clock, sync_role=role, clocks=self.clocks, pacer=self.pacer
            )
        )
        self.cameras: list[CameraLike] = []
        for cam in config.cameras:
            role = 0
            if config.hardware_sync and config.source == "live":
                role = 1 if cam.name == master else 2
            self.cameras.append(factory(cam, config, role))
        self.stats = {c.name: CameraStats(c.name, float(c.fps)) for c in config.cameras}
        self.workers: list[CameraWorker] = []

    def probe(self) -> dict[str, dict[str, Any]]:
        """Check every recording (file source) before streaming; CaptureError names the camera."""
        out = {}
        for camera in self.cameras:
            if camera.source == "file" and isinstance(camera, RealSenseCamera):
                out[camera.cam.name] = camera.probe()
        return out

    def start(self) -> None:
        watcher = DeviceWatcher() if self.config.source == "live" else None
        barrier = threading.Barrier(len(self.cameras)) if self.config.source == "file" else None
        for camera in self.cameras:
            worker = CameraWorker(
                camera,
                self.config,
                self.sink,
                self.stats[camera.cam.name],
                stop=self.stop_event,
                go=self.go,
                opened=barrier,
                watcher=watcher,
                host_clock=self.host_clock,
                log=self.log,
            )
            self.workers.append(worker)
            worker.start()

    def release(self) -> None:
        """Let paused recordings play (no-op for live cameras)."""
        self.go.set()

    def stop(self, timeout: float = 5.0) -> None:
        self.stop_event.set()
        for worker in self.workers:
            worker.join(timeout)

    def finished(self) -> bool:
        """All capture threads have ended (recordings at their end, or failed)."""
        return bool(self.workers) and not any(w.is_alive() for w in self.workers)

    def errors(self) -> list[Exception]:
        return [w.error for w in self.workers if w.error is not None]

    def snapshots(self, now: float | None = None) -> list[dict[str, Any]]:
        now = self.host_clock() if now is None else now
        return [self.stats[c.name].snapshot(now) for c in self.config.cameras]

    def __enter__(self) -> CaptureSession:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


# --------------------------------------------------------------------------------------------
# Synthetic recordings (tests and the bench)
# --------------------------------------------------------------------------------------------

_SYN_CACHE: dict[tuple[int, int, int], tuple[np.ndarray, np.ndarray]] = {}


def _synthetic_base(width: int, height: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-(size, seed) base images; frames only add a per-frame constant (cheap at 30 Hz x N)."""
    key = (width, height, seed)
    if key not in _SYN_CACHE:
        x, y = np.arange(width)[None, :], np.arange(height)[:, None]
        rgb = np.empty((height, width, 3), np.uint8)
        rgb[..., 0] = x & 0xFF
        rgb[..., 1] = (y + 3 * seed) & 0xFF
        rgb[..., 2] = (x + y + 5 * seed) & 0xFF
        depth = np.broadcast_to(500 + 40 * ((x // 16 + y // 16 + seed) % 16), (height, width))
        _SYN_CACHE[key] = (rgb, depth.astype(np.uint16))
    return _SYN_CACHE[key]


def synthetic_frame(
    frame_number: int, width: int, height: int, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """(rgb uint8 HxWx3, depth uint16 HxW mm) with known content for frame `frame_number`.

    Colour pixel (0, 0) encodes the frame number (R + 256 G) and the seed (B), depth pixel (0, 0)
    the frame number (mod 65536), so a received image can be checked against the frame it claims
    to be. Colour: gradients shifted by the frame number; depth: 16-px tiles (500-1150 mm) plus
    7 * (i % 50) mm, with an invalid (0) 12x12 square that moves with the frame number.
    """
    i = int(frame_number)
    base_rgb, base_depth = _synthetic_base(width, height, seed)
    rgb = base_rgb.copy()
    rgb[..., 0] += np.uint8((2 * i) & 0xFF)  # uint8 arithmetic wraps modulo 256 by design
    rgb[..., 1] += np.uint8(i & 0xFF)
    rgb[0, 0] = (i & 0xFF, (i >> 8) & 0xFF, seed & 0xFF)
    depth = base_depth + np.uint16(7 * (i % 50))
    sx = (3 * i) % max(1, width - 12)
    sy = height // 3
    depth[sy : sy + 12, sx : sx + 12] = 0
    depth[0, 0] = i & 0xFFFF
    return rgb, depth


def synthetic_frame_number(rgb: np.ndarray) -> tuple[int, int]:
    """(frame_number, seed byte) encoded in a synthetic colour frame's pixel (0, 0)."""
    r, g, b = (int(v) for v in rgb[0, 0])
    return r + 256 * g, b


def synthetic_depth_number(depth: np.ndarray) -> int:
    """The frame number (mod 65536) encoded in a synthetic depth frame's pixel (0, 0)."""
    return int(depth[0, 0])


def synthetic_intrinsics(width: int, height: int) -> CameraIntrinsics:
    """D455-like colour intrinsics used by the synthetic recordings (fx = fy = width / 2)."""
    f = width / 2.0
    return CameraIntrinsics(
        width=width, height=height, fx=f, fy=f, cx=(width - 1) / 2.0, cy=(height - 1) / 2.0
    )


def _rs_intrinsics(intr: CameraIntrinsics) -> Any:
    rs = _rs()
    out = rs.intrinsics()
    out.width, out.height = intr.width, intr.height
    out.fx, out.fy, out.ppx, out.ppy = intr.fx, intr.fy, intr.cx, intr.cy
    out.model = rs.distortion.brown_conrady
    out.coeffs = [float(v) for v in intr.D] + [0.0] * (5 - len(intr.D))
    return out


class _SyntheticDevice:
    """An rs.software_device with a depth and a colour sensor, recorded by rs.recorder."""

    def __init__(
        self,
        path: Path,
        width: int,
        height: int,
        fps: int,
        serial: str,
        depth_size: tuple[int, int] | None,
        domain: str = "global_time",
    ):
        rs = _rs()
        self.rs = rs
        self.domain = getattr(rs.timestamp_domain, domain)
        self.fps = fps
        self.width, self.height = width, height
        self.depth_size = depth_size or (width, height)
        self.dev = rs.software_device()
        self.dev.register_info(rs.camera_info.serial_number, serial)
        self.dev.register_info(rs.camera_info.name, "Intel RealSense D455 (dexh2r synthetic)")
        self.depth_sensor = self.dev.add_sensor("Stereo Module")
        self.color_sensor = self.dev.add_sensor("RGB Camera")
        color_intr = synthetic_intrinsics(width, height)
        dw, dh = self.depth_size
        depth_intr = color_intr.scaled(dw, dh) if (dw, dh) != (width, height) else color_intr

        def stream(kind: Any, uid: int, intr: CameraIntrinsics, fmt: Any, bpp: int) -> Any:
            vs = rs.video_stream()
            vs.type, vs.index, vs.uid = kind, 0, uid
            vs.width, vs.height, vs.fps, vs.bpp, vs.fmt = intr.width, intr.height, fps, bpp, fmt
            vs.intrinsics = _rs_intrinsics(intr)
            return vs

        self.depth_profile = self.depth_sensor.add_video_stream(
            stream(rs.stream.depth, 0, depth_intr, rs.format.z16, 2)
        )
        self.color_profile = self.color_sensor.add_video_stream(
            stream(rs.stream.color, 1, color_intr, rs.format.rgb8, 3)
        )
        self.depth_sensor.add_read_only_option(rs.option.depth_units, DEPTH_SCALE_MM)
        ext = rs.extrinsics()
        ext.rotation = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0]  # default-constructed is all zeros
        ext.translation = [0.0, 0.0, 0.0]
        self.depth_profile.register_extrinsics_to(self.color_profile, ext)
        self.recorder = rs.recorder(str(path), self.dev)
        self.depth_sensor.open(self.depth_profile)
        self.color_sensor.open(self.color_profile)
        self.depth_sensor.start(lambda _f: None)
        self.color_sensor.start(lambda _f: None)
        self.closed = False

    def write(self, frame_number: int, timestamp_ms: float, rgb: np.ndarray, depth: np.ndarray) -> None:
        rs = self.rs
        for sensor, profile, pixels, bpp in (
            (self.depth_sensor, self.depth_profile, depth, 2),
            (self.color_sensor, self.color_profile, rgb, 3),
        ):
            # Without actual_fps metadata librealsense derives ~1 fps from the software frames and
            # the pipeline's syncer then pairs depth i with colour i-1 (found by experiment).
            sensor.set_metadata(rs.frame_metadata_value.actual_fps, int(self.fps * 1000))
            sensor.set_metadata(rs.frame_metadata_value.frame_counter, int(frame_number))
            frame = rs.software_video_frame()
            frame.pixels = np.ascontiguousarray(pixels)
            frame.bpp = bpp
            frame.stride = pixels.shape[1] * bpp
            frame.timestamp = timestamp_ms
            frame.domain = self.domain
            frame.frame_number = int(frame_number)
            frame.profile = profile.as_video_stream_profile()
            if sensor is self.depth_sensor:
                frame.depth_units = DEPTH_SCALE_MM
            sensor.on_video_frame(frame)

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        for sensor in (self.depth_sensor, self.color_sensor):
            sensor.stop()
            sensor.close()
        self.recorder.pause()
        self.recorder = None  # the file is finalised when the recorder is released
        self.dev = None


def write_test_recordings(
    paths: Sequence[str | Path],
    n_frames: int | Sequence[int] = 60,
    width: int = 424,
    height: int = 240,
    fps: int = 30,
    seed: int = 0,
    *,
    serials: Sequence[str] | None = None,
    depth_size: tuple[int, int] | None = None,
    skip_frames: Sequence[int] = (),
    start_time_s: float = 1000.0,
    timestamp_domain: Literal["global_time", "hardware_clock", "system_time"] = "global_time",
    pace: bool = True,
) -> list[Path]:
    """Record synthetic RGB-D streams, one librealsense file per path, all in one paced loop.

    Camera k gets seed `seed + k` (content: `synthetic_frame`), serial `serials[k]` (default
    "99" + 10 digits of the seed), device timestamps `start_time_s + i / fps` shared by all files
    (as if hardware-synchronised) and colour intrinsics `synthetic_intrinsics`. `n_frames` may differ
    per file (a camera that stops early). Frames in `skip_frames` are left out (a gap in the frame
    numbers, as a dropped frame leaves). `timestamp_domain`: global_time is what D4xx devices (and
    so their recordings) report by default; hardware_clock gives each file its own clock mapper.
    `depth_size` records depth at another resolution, so that
    playback has to run rs.align. rs.recorder stamps messages with the wall clock, which only
    `playback: real_time` follows: `pace=True` (default) writes at `fps` (n / fps seconds) so
    that it plays at camera pace; `paced`/`fast` playback needs no pacing (`pace=False`).
    """
    rs = _rs()  # noqa: F841 - fail early with the import error if the SDK is missing
    paths = [Path(p) for p in paths]
    counts = [int(n_frames)] * len(paths) if isinstance(n_frames, int) else [int(n) for n in n_frames]
    if len(counts) != len(paths):
        raise ValueError(f"n_frames has {len(counts)} entries for {len(paths)} paths")
    if serials is not None and len(serials) != len(paths):
        raise ValueError(f"serials has {len(serials)} entries for {len(paths)} paths")
    skip = set(skip_frames)
    devices = []
    for k, path in enumerate(paths):
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.exists():
            path.unlink()
        serial = serials[k] if serials is not None else f"99{seed + k:010d}"
        devices.append(_SyntheticDevice(path, width, height, fps, serial, depth_size, timestamp_domain))

    def write(k: int, i: int) -> None:
        if i in skip:
            return
        rgb, depth = synthetic_frame(i, width, height, seed + k)
        if depth_size is not None and depth_size != (width, height):
            depth = _resample_nearest(depth, depth_size)
        devices[k].write(i, start_time_s * 1e3 + i * 1e3 / fps, rgb, depth)

    try:
        # rs.recorder times each file from its own first frame and stamps messages with the wall
        # clock. Frame i of file k is therefore written at base_k + i / fps (base_k: when its
        # frame 0 was written), so all files get the same timeline even if one write is slow.
        bases = []
        for k in range(len(devices)):
            bases.append(time.monotonic())
            write(k, 0)
        due = [(bases[k] + 1.0 / fps, k, 1) for k in range(len(devices)) if counts[k] > 1]
        for k in range(len(devices)):
            if counts[k] <= 1:
                devices[k].close()
        while due:
            due.sort()
            when, k, i = due.pop(0)
            delay = when - time.monotonic()
            if pace and delay > 0:
                time.sleep(delay)  # pacing a recording, not waiting for readiness
            write(k, i)
            if i + 1 < counts[k]:
                due.append((bases[k] + (i + 1) / fps, k, i + 1))
            else:
                devices[k].close()  # a shorter file ends here (a camera that stops mid-run)
    finally:
        for dev in devices:
            dev.close()
    return paths


def write_test_recording(
    path: str | Path,
    n_frames: int = 60,
    width: int = 424,
    height: int = 240,
    fps: int = 30,
    seed: int = 0,
    *,
    serial: str | None = None,
    **kwargs: Any,
) -> Path:
    """One synthetic recording (see `write_test_recordings`; `serial` default "99" + seed)."""
    serials = [serial] if serial is not None else None
    return write_test_recordings([path], n_frames, width, height, fps, seed, serials=serials, **kwargs)[0]


def _resample_nearest(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Nearest-neighbour resample to (width, height) by pixel centres."""
    h, w = image.shape[:2]
    dw, dh = size
    xs = np.minimum(((np.arange(dw) + 0.5) * w / dw).astype(int), w - 1)
    ys = np.minimum(((np.arange(dh) + 0.5) * h / dh).astype(int), h - 1)
    return image[ys[:, None], xs[None, :]]


# --------------------------------------------------------------------------------------------
# Bench: delivered fraction and latency of the capture path
# --------------------------------------------------------------------------------------------


def file_capture_config(
    files: Sequence[str | Path], names: Sequence[str] | None = None, **kwargs: Any
) -> CaptureConfig:
    """A file-source CaptureConfig for `files` (cameras camera_0, camera_1, ... unless named)."""
    names = list(names) if names is not None else [f"camera_{i}" for i in range(len(files))]
    cams = [CameraConfig(name=n, file=str(f)) for n, f in zip(names, files, strict=True)]
    return CaptureConfig(source="file", cameras=cams, **kwargs)


def _percentiles(values: Sequence[float]) -> dict[str, float | None]:
    a = np.asarray(values, dtype=float)
    if not a.size:
        return {"p50": None, "p95": None, "max": None}
    return {"p50": float(np.median(a)), "p95": float(np.percentile(a, 95)), "max": float(a.max())}


def measure_capture(
    out_dir: str | Path,
    *,
    cameras: int = 2,
    n_frames: int = 300,
    width: int = 424,
    height: int = 240,
    fps: int = 30,
    seed: int = 0,
    playback: Literal["paced", "real_time", "fast"] = "paced",
    timestamp_domain: Literal["global_time", "hardware_clock", "system_time"] = "global_time",
    timeout_s: float | None = None,
) -> dict[str, Any]:
    """Record `cameras` synthetic files of `n_frames` framesets and play them through CaptureSession.

    This is realsense_node's capture path (rs.pipeline per camera, one thread each, same sink
    contract) without the ROS publishing. Every delivered frameset is checked pixel-exactly
    against `synthetic_frame`. Returns plain data:
      capture_delivered_fraction: min over cameras of distinct valid framesets / n_frames
      latency_ms: stamp -> end of sink (p50/p95/max over all cameras); processing_ms: librealsense
      hand-over -> end of sink; per_camera: delivered, duplicates, invalid, dropped (frame-number
      gaps), stamp monotonicity; stamp_skew_ms: |stamp difference| of the same frame number across
      cameras (recordings share device time, so this is the cross-camera consistency).
    `playback` (CaptureConfig.playback): paced (default) isolates this capture path from
    librealsense's player, which can lose framesets on a CPU-starved machine in real_time mode;
    real_time records at camera pace (n / fps seconds), paced and fast record unpaced.
    """
    out = Path(out_dir)
    files = [out / f"camera_{k}.db3" for k in range(cameras)]
    t0 = time.monotonic()
    write_test_recordings(
        files,
        n_frames,
        width,
        height,
        fps,
        seed,
        timestamp_domain=timestamp_domain,
        pace=playback == "real_time",
    )
    record_s = time.monotonic() - t0
    config = file_capture_config(files, playback=playback)
    lock = threading.Lock()
    seen: dict[str, dict[int, float]] = {c.name: {} for c in config.cameras}
    bad: dict[str, int] = {c.name: 0 for c in config.cameras}
    dup: dict[str, int] = {c.name: 0 for c in config.cameras}
    monotonic = {c.name: True for c in config.cameras}
    last_stamp: dict[str, float] = {}
    seeds = {c.name: seed + k for k, c in enumerate(config.cameras)}

    def sink(fs: Frameset) -> None:
        number, seed_byte = synthetic_frame_number(fs.rgb)
        rgb, depth = synthetic_frame(number, width, height, seeds[fs.name])
        ok = (
            number == fs.frame_number
            and seed_byte == seeds[fs.name] & 0xFF
            and np.array_equal(fs.rgb, rgb)
            and np.array_equal(fs.depth, depth)
        )
        with lock:
            if not ok:
                bad[fs.name] += 1
            elif number in seen[fs.name]:
                dup[fs.name] += 1
            else:
                seen[fs.name][number] = fs.stamp_s
            if fs.name in last_stamp and fs.stamp_s <= last_stamp[fs.name]:
                monotonic[fs.name] = False
            last_stamp[fs.name] = fs.stamp_s

    session = CaptureSession(config, sink)
    session.probe()
    t1 = time.monotonic()
    session.start()
    session.release()
    deadline = t1 + (timeout_s if timeout_s is not None else n_frames / fps * 3 + 20)
    while not session.finished() and time.monotonic() < deadline:
        time.sleep(0.05)  # polling the threads' state
    session.stop()
    play_s = time.monotonic() - t1
    if session.errors():
        raise CaptureError("; ".join(str(e) for e in session.errors()))
    per_camera = {}
    latencies: list[float] = []
    processing: list[float] = []
    for cam in config.cameras:
        st = session.stats[cam.name]
        latencies += [v * 1e3 for v in st.latencies]
        processing += [v * 1e3 for v in st.processing]
        per_camera[cam.name] = {
            "expected": n_frames,
            "delivered": len(seen[cam.name]),
            "delivered_fraction": len(seen[cam.name]) / n_frames,
            "invalid": bad[cam.name],
            "duplicates": dup[cam.name],
            "dropped": st.dropped,
            "unpaired": st.unpaired,
            "stamps_increasing": monotonic[cam.name],
            "latency_ms": _percentiles([v * 1e3 for v in st.latencies]),
        }
    names = [c.name for c in config.cameras]
    common = set.intersection(*(set(seen[n]) for n in names)) if names else set()
    skew = [(max(seen[n][i] for n in names) - min(seen[n][i] for n in names)) * 1e3 for i in sorted(common)]
    return {
        "capture_delivered_fraction": min(p["delivered_fraction"] for p in per_camera.values()),
        "content_ok": all(p["invalid"] == 0 for p in per_camera.values()),
        "latency_ms": _percentiles(latencies),
        "processing_ms": _percentiles(processing),
        "stamp_skew_ms": _percentiles(skew),
        "per_camera": per_camera,
        "setup": {
            "cameras": cameras,
            "n_frames": n_frames,
            "width": width,
            "height": height,
            "fps": fps,
            "playback": playback,
            "timestamp_domain": timestamp_domain,
            "record_s": round(record_s, 2),
            "play_s": round(play_s, 2),
        },
    }
