"""capture (ROS-free): librealsense recordings through the real rs.pipeline, clocks, drops, reconnect.

The recordings are made with rs.software_device + rs.recorder (write_test_recordings) and played
with config.enable_device_from_file, i.e. the code path live cameras use, minus USB.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import pytest

from dexh2r_core.config import ConfigError
from dexh2r_perception.capture import (
    CameraConfig,
    CaptureConfig,
    CaptureError,
    CaptureSession,
    ClockMapper,
    DeviceLostError,
    DeviceNotFoundError,
    Frameset,
    RealSenseCamera,
    file_capture_config,
    health,
    load_capture_config,
    measure_capture,
    synthetic_frame,
    synthetic_intrinsics,
    write_test_recording,
)

pytest.importorskip("pyrealsense2")

W, H, FPS = 424, 240, 30
SKIPPED = (10, 11, 30)  # frames left out of the recording: the gaps a dropped frame leaves


@pytest.fixture(scope="module")
def recording(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("rec") / "camera_0.db3"
    # Unpaced: paced/fast playback follows device time, not the recorder's wall clock.
    return write_test_recording(
        path, 45, W, H, FPS, seed=3, serial="123456789012", skip_frames=SKIPPED, pace=False
    )


def _wait(predicate, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.02)  # polling interval


def test_recording_plays_back_losslessly_through_the_pipeline(recording: Path) -> None:
    cfg = file_capture_config([recording])  # playback: paced (lossless, at camera rate: 1.5 s)
    cam = RealSenseCamera(cfg.cameras[0], cfg)
    framesets = list(cam)
    cam.close()
    numbers = [f.frame_number for f in framesets]
    assert numbers == [i for i in range(45) if i not in SKIPPED]
    for fs in framesets:
        rgb, depth = synthetic_frame(fs.frame_number, W, H, seed=3)
        assert fs.rgb.dtype == np.uint8 and fs.rgb.shape == (H, W, 3)
        assert fs.depth.dtype == np.uint16 and fs.depth.shape == (H, W)
        assert np.array_equal(fs.rgb, rgb) and np.array_equal(fs.depth, depth), fs.frame_number
    assert cam.serial == "123456789012"
    expected = synthetic_intrinsics(W, H)
    got = framesets[0].intrinsics
    assert (got.width, got.height, got.distortion_model) == (W, H, "plumb_bob")
    assert np.allclose([got.fx, got.fy, got.cx, got.cy], [expected.fx, expected.fy, expected.cx, expected.cy])
    device = np.array([f.device_time_s for f in framesets])
    assert np.allclose(device - device[0], (np.array(numbers) - numbers[0]) / FPS, atol=1e-5)
    stamps = np.array([f.stamp_s for f in framesets])
    assert np.all(np.diff(stamps) > 0)
    hand_over = np.array([f.host_time_s for f in framesets])
    assert hand_over[-1] - hand_over[0] > 0.9 * (device[-1] - device[0])  # delivered at camera rate
    # Mapped to host time: stamps are near now, never after the frameset was handed over.
    assert abs(stamps[-1] - time.time()) < 5.0
    assert all(f.stamp_s <= f.host_time_s + 1e-6 for f in framesets)
    assert framesets[0].timestamp_domain == "global_time"


def test_real_time_playback_follows_the_recorded_pace(tmp_path: Path) -> None:
    path = write_test_recording(tmp_path / "paced.db3", 30, W, H, FPS, seed=5)  # written at 30 Hz
    cfg = file_capture_config([path], playback="real_time")
    cam = RealSenseCamera(cfg.cameras[0], cfg)
    start = time.monotonic()
    framesets = list(cam)
    cam.close()
    # librealsense's own player sets the pace; it may lose framesets on a starved CPU, and
    # what it delivers is exact and in order.
    assert len(framesets) >= 27
    assert 0.8 < time.monotonic() - start < 10.0
    numbers = [f.frame_number for f in framesets]
    assert numbers == sorted(set(numbers))
    for fs in framesets:
        rgb, depth = synthetic_frame(fs.frame_number, W, H, seed=5)
        assert np.array_equal(fs.rgb, rgb) and np.array_equal(fs.depth, depth)


def test_session_counts_dropped_frames(recording: Path) -> None:
    received: list[Frameset] = []
    cfg = file_capture_config([recording], playback="fast")  # lossless, as fast as we consume
    session = CaptureSession(cfg, received.append)
    session.start()
    session.release()
    _wait(session.finished)
    snap = session.snapshots()[0]
    assert [f.frame_number for f in received] == [i for i in range(45) if i not in SKIPPED]
    assert snap["frames"] == 45 - len(SKIPPED)
    assert snap["dropped"] == len(SKIPPED)
    assert snap["state"] == "ended"
    level, message = health(snap, stale_s=1.0)
    assert level == 2 and "camera_0 stopped" in message


def test_align_runs_when_depth_has_its_own_geometry(tmp_path: Path) -> None:
    path = write_test_recording(
        tmp_path / "hires_depth.db3", 8, W, H, FPS, depth_size=(2 * W, 2 * H), pace=False
    )
    cfg = file_capture_config([path], playback="fast")
    cam = RealSenseCamera(cfg.cameras[0], cfg)
    framesets = list(cam)
    assert cam.aligner is not None  # depth 848x480 -> colour 424x240 through rs.align
    cam.close()
    assert len(framesets) == 8
    for fs in framesets:
        _, depth = synthetic_frame(fs.frame_number, W, H, seed=0)
        assert fs.depth.shape == (H, W)
        assert np.mean(fs.depth == depth) > 0.99


def test_bad_recordings_and_configs_give_clear_errors(tmp_path: Path) -> None:
    missing = tmp_path / "missing.db3"
    with pytest.raises(CaptureError, match=r"camera_0.*recording not found.*missing\.db3"):
        CaptureSession(file_capture_config([missing]), lambda fs: None).probe()
    garbage = tmp_path / "garbage.db3"
    garbage.write_bytes(b"not a recording" * 100)
    with pytest.raises(CaptureError, match=r"camera_0.*garbage\.db3.*cannot play"):
        CaptureSession(file_capture_config([garbage]), lambda fs: None).probe()
    with pytest.raises(ConfigError, match=r"nope\.yaml: config file not found"):
        load_capture_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("source: file\ncameras:\n- {name: camera_0}\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml.*cameras\[0\]\.file"):
        load_capture_config(bad)
    bad.write_text(
        "source: live\ncameras:\n- {name: camera_0, serial: '1'}\n- {name: camera_0, serial: '2'}\n"
    )
    with pytest.raises(ConfigError, match="duplicate camera name"):
        load_capture_config(bad)
    good = tmp_path / "good.yaml"
    good.write_text("source: file\ncameras:\n- {name: camera_0, file: rec/a.db3}\n")
    assert load_capture_config(good).cameras[0].file == str(tmp_path / "rec" / "a.db3")


def test_clock_mapper_takes_the_least_delayed_frame_and_tracks_drift() -> None:
    rng = np.random.default_rng(0)
    mapper = ClockMapper(warmup_frames=30, max_drift_ppm=200.0)
    base, min_delay = 5000.0, 0.002
    errors, stamps = [], []
    for i in range(3000):  # 100 s at 30 Hz; host clock runs 50 ppm fast against the device's
        device = i / 30.0
        capture_host = base + device * (1 + 50e-6)
        host = capture_host + min_delay + rng.exponential(0.004)
        stamps.append(mapper.map(device, host))
        errors.append(stamps[-1] - (capture_host + min_delay))
    errors_ms = np.abs(errors[60:]) * 1e3
    assert errors_ms.max() < 2.0  # within the arrival jitter's lower tail, drift included
    assert np.all(np.diff(stamps) > 0)
    # A device clock that jumps back (reconnect) restarts the estimate; stamps stay increasing.
    after = [mapper.map(i / 30.0, time_s) for i, time_s in enumerate(base + 200 + np.arange(40) / 30.0)]
    assert mapper.resyncs == 1 and after[0] > stamps[-1] and np.all(np.diff(after) > 0)


def test_shared_clock_maps_equal_device_times_to_equal_stamps() -> None:
    mapper = ClockMapper(warmup_frames=10)
    rng = np.random.default_rng(1)
    pairs = []
    for i in range(100):
        device = 1000.0 + i / 30.0
        a = mapper.map(device, device + 7.0 + 0.002 + rng.exponential(0.003), "camera_0")
        b = mapper.map(device, device + 7.0 + 0.002 + rng.exponential(0.003), "camera_1")
        pairs.append(abs(a - b))
    assert max(pairs[20:]) < 1e-3


class _FakeCamera:
    """A live camera that streams 5 framesets, is unplugged, is missing once, then comes back."""

    source = "live"
    fps = 30
    serial = "fake"

    def __init__(self, cam: CameraConfig):
        self.cam = cam
        self.intrinsics = synthetic_intrinsics(8, 6)
        self.opens = 0
        self.pending: list[int] = []
        self.lost_after = False

    @property
    def source_id(self) -> str:
        return self.serial

    def describe(self) -> str:
        return f"camera '{self.cam.name}' (fake)"

    def open(self) -> None:
        self.opens += 1
        if self.opens == 2:
            raise DeviceNotFoundError("not plugged in")
        # The device's frame counter restarts after a replug; the third connection stays silent.
        self.pending = list(range(5)) if self.opens <= 3 else []
        self.lost_after = self.opens == 1

    def resume(self) -> None:
        pass

    def read(self, timeout_s: float = 0.1) -> Frameset | None:
        if self.pending:
            n = self.pending.pop(0)
            rgb, depth = synthetic_frame(n, 8, 6)
            now = time.time()
            return Frameset(self.cam.name, rgb, depth, self.intrinsics, n / 30, n, now, now)
        if self.lost_after:
            raise DeviceLostError("device removed")
        time.sleep(timeout_s)
        return None

    def close(self) -> None:
        pass


def test_live_camera_reconnects_after_unplug_and_stale_is_an_error() -> None:
    cfg = CaptureConfig(
        source="live",
        cameras=[CameraConfig(name="camera_0", serial="fake")],
        reconnect_interval_s=0.05,
        frame_timeout_s=0.3,
    )
    got: list[int] = []
    lock = threading.Lock()

    def sink(fs: Frameset) -> None:
        with lock:
            got.append(fs.frame_number)

    session = CaptureSession(cfg, sink, camera_factory=lambda cam, _cfg, _role: _FakeCamera(cam))
    session.start()
    try:
        _wait(lambda: len(got) >= 10)
        snap = session.snapshots()[0]
        assert snap["reconnects"] >= 1 and snap["dropped"] == 0
        _wait(lambda: health(session.snapshots()[0], stale_s=0.3)[0] == 2)
        _, message = health(session.snapshots()[0], stale_s=0.3)
        assert "camera_0" in message
    finally:
        session.stop()
    assert got[:10] == [0, 1, 2, 3, 4, 0, 1, 2, 3, 4]


def test_measure_capture_short(tmp_path: Path) -> None:
    result = measure_capture(tmp_path, cameras=2, n_frames=30, width=W, height=H, fps=FPS)
    assert result["capture_delivered_fraction"] >= 0.999, result
    assert result["content_ok"], result
    for cam in result["per_camera"].values():
        assert cam["stamps_increasing"] and cam["dropped"] == 0 and cam["duplicates"] == 0
    assert result["latency_ms"]["p50"] is not None
