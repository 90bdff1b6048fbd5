"""3D hand tracking: geometry units, fusion, the real MediaPipe chain on rendered cell frames, the node.

The rendered-frame tests use the camera model of `dexh2r bench perception` (anti-aliasing and
1 px optical blur, see docs/perception_hand.md); the ground truth is the cell's giver hand.
"""

from __future__ import annotations

import os

os.environ.setdefault("MUJOCO_GL", "egl")

import json
import time

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from dexh2r_core.calibration import CameraIntrinsics
from dexh2r_core.paths import config_path
from dexh2r_perception.bench_hand import frame_errors
from dexh2r_perception.hand_tracker_node import FramePairer
from dexh2r_perception.hand_tracking import (
    NUM_LANDMARKS,
    CameraObservation,
    Detection2D,
    HandTracker,
    HandTrackerConfig,
    OneEuroFilter,
    chirality,
    fuse_observations,
    sample_depth,
    wrist_pose_from_keypoints,
)
from dexh2r_sim.cell import CellConfig, HandoverCell
from dexh2r_sim.giver import OPEN_HAND, hand_keypoints_from_angles
from dexh2r_sim.scenario import load_scenarios

BENCH_OPTICS = {"antialias": True, "rgb_blur_px": 1.0}
CURLED = {f"{f}J{j}": 0.9 for f in ("FF", "MF", "RF", "LF") for j in (1, 2, 3)} | {"THJ5": 0.6, "THJ4": 0.9}


def _scenario(file: str, name: str):
    return next(s for s in load_scenarios(config_path(f"scenarios/{file}.yaml")) if s.name == name)


def _posed(points: np.ndarray, T: np.ndarray) -> np.ndarray:
    return points @ T[:3, :3].T + T[:3, 3]


def _random_pose(seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    T = np.eye(4)
    T[:3, :3] = Rotation.random(random_state=seed).as_matrix()
    T[:3, 3] = rng.uniform(-0.5, 0.5, 3)
    return T


# ---- geometry ----------------------------------------------------------------------------------------
def test_one_euro_filter_smooths_noise_follows_steps_and_keeps_nan_state():
    f = OneEuroFilter(min_cutoff_hz=1.0, beta=0.0)
    rng = np.random.default_rng(0)
    out = [f(k / 30, np.array([1.0 + rng.normal(0, 0.01)])) for k in range(150)]
    assert np.std(np.array(out[50:])) < 0.5 * 0.01  # noise reduced
    assert abs(float(np.mean(out[50:])) - 1.0) < 0.005  # no bias
    fast = OneEuroFilter(min_cutoff_hz=1.0, beta=20.0)
    for k in range(30):
        fast(k / 30, np.array([0.0, 0.0]))
    y = [fast(1.0 + k / 30, np.array([0.1, np.nan])) for k in range(1, 16)]
    assert abs(y[-1][0] - 0.1) < 0.005, "a 10 cm step is followed within 0.5 s (speed-adaptive cutoff)"
    assert all(np.isnan(v[1]) for v in y), "a missing entry comes out missing, never invented"
    resumed = fast(1.6, np.array([0.1, 0.2]))[1]
    assert 0.0 < resumed <= 0.2, "a returning entry continues from its kept state"
    with pytest.raises(ValueError):
        OneEuroFilter(min_cutoff_hz=0.0)


def test_sample_depth_ignores_holes_and_the_background_behind_an_edge():
    depth = np.full((40, 40), 2.0, np.float32)
    depth[:, :20] = 1.0  # a near surface (the hand) left of column 20
    depth[10, 18] = 0.0  # a hole
    depth[11, 17] = np.nan
    uv = np.array([[19.0, 10.0], [30.0, 30.0], [-50.0, 5.0], [np.nan, 3.0]])
    d = sample_depth(depth, uv, 2, band_m=0.02)
    assert d[0] == pytest.approx(1.0), "a window straddling the edge measures the near surface"
    assert d[1] == pytest.approx(2.0)
    assert np.isnan(d[2]) and np.isnan(d[3]), "outside the image or non-finite pixel: no depth"
    assert np.all(np.isnan(sample_depth(np.zeros((40, 40)), uv[:2], 2)))


def _observation(name: str, origin: np.ndarray, points: np.ndarray, depth_bias: np.ndarray | None = None):
    rays = points - origin
    rng_m = np.linalg.norm(rays, axis=1)
    if depth_bias is not None:
        rng_m = rng_m + depth_bias
    det = Detection2D(name, np.zeros((NUM_LANDMARKS, 2)), np.zeros((NUM_LANDMARKS, 3)), "", 0.0, (0, 0, 1))
    return CameraObservation(
        camera=name,
        origin=origin,
        rays=rays / np.linalg.norm(rays, axis=1, keepdims=True),
        range_m=rng_m,
        depth_kind=np.full(NUM_LANDMARKS, 2),
        lateral_sigma_m=np.full(NUM_LANDMARKS, 0.005),
        depth_sigma_m=np.full(NUM_LANDMARKS, 0.01),
        detection=det,
    )


def test_fusion_triangulates_and_drops_a_depth_that_disagrees():
    truth = _posed(hand_keypoints_from_angles(CURLED), _random_pose(1)) + np.array([1.5, 0.0, 0.5])
    bias = np.zeros(NUM_LANDMARKS)
    bias[8] = 0.15  # the index tip's depth hits the background behind it
    obs = [
        _observation("a", np.array([0.0, -0.8, 1.2]), truth, bias),
        _observation("b", np.array([0.0, 0.8, 1.2]), truth),
    ]
    fused = fuse_observations(obs, HandTrackerConfig())
    assert fused.valid.all()
    assert np.max(np.linalg.norm(fused.points - truth, axis=1)) < 1e-3
    single = fuse_observations(obs[:1], HandTrackerConfig())
    assert np.linalg.norm(single.points[8] - truth[8]) > 0.1, "one camera alone cannot see its bad depth"
    rays_only = [_observation("a", o.origin, truth) for o in obs]
    for o in rays_only:
        o.range_m[:] = np.nan
        o.depth_sigma_m[:] = np.inf
    fused = fuse_observations(rays_only, HandTrackerConfig())
    assert np.max(np.linalg.norm(fused.points - truth, axis=1)) < 1e-3, (
        "two cameras without depth triangulate"
    )
    alone = fuse_observations(rays_only[:1], HandTrackerConfig())
    assert not alone.valid.any(), "one camera without depth places nothing: no invented hand"


@pytest.mark.parametrize("side", ["right", "left"])
@pytest.mark.parametrize("angles", [{}, CURLED], ids=["open", "curled"])
def test_wrist_pose_follows_the_giver_hand_frame_convention(side, angles):
    for seed in range(3):
        T = _random_pose(seed)
        kp = _posed(hand_keypoints_from_angles({**OPEN_HAND, **angles}, side=side), T)
        W = wrist_pose_from_keypoints(kp, side)
        assert np.allclose(W[:3, 3], T[:3, 3], atol=1e-9)
        angle = np.degrees(Rotation.from_matrix(T[:3, :3].T @ W[:3, :3]).magnitude())
        assert angle < 4.0, f"{side} {angles and 'curled'}: {angle:.1f} deg off the hand frame"


def test_chirality_tells_right_from_left_and_nan_is_unknown():
    for seed in range(3):
        T = _random_pose(seed)
        assert chirality(_posed(hand_keypoints_from_angles(CURLED, "right"), T)) > 0.005
        assert chirality(_posed(hand_keypoints_from_angles(CURLED, "left"), T)) < -0.005
    kp = hand_keypoints_from_angles(CURLED)
    kp[[5, 9, 13]] = np.nan
    assert np.isnan(chirality(kp))
    assert np.all(np.isnan(wrist_pose_from_keypoints(kp, "right")))


def test_frame_pairer_pairs_by_stamp_and_releases_late_sets():
    p = FramePairer(["a", "b"], sync_tolerance_s=0.01, max_wait_s=0.05, stale_after_s=0.5)
    assert p.add("b", "depth", 1000, "db", now=0.0) is None
    assert p.add("a", "colour", 1000, "ca", now=0.0) is None
    assert p.add("a", "depth", 1000, "da", now=0.0) is None  # camera b (heard from) not complete yet
    stamp, frames = p.add("b", "colour", 1000, "cb", now=0.0)
    assert stamp == 1000 and frames == {"a": ("ca", "da"), "b": ("cb", "db")}
    assert p.add("a", "colour", 1000, "old", now=0.0) is None, "a stamp already processed is ignored"
    # b goes quiet: the set with a alone goes out after max_wait_s, and once b is stale at once.
    p.add("a", "colour", 2_000_000_000, "c2", now=1.0)
    assert p.add("a", "depth", 2_000_000_000, "d2", now=1.0) is not None  # b silent for 1 s: stale
    p.add("b", "colour", 3_000_000_000, "c3", now=1.1)
    p.add("b", "depth", 3_000_000_000, "d3", now=1.1)  # b is back; a is now the late one
    assert p.poll(now=1.12) is None
    late = p.poll(now=1.2)
    assert late is not None and set(late[1]) == {"b"}


# ---- the real MediaPipe chain on rendered frames --------------------------------------------------------
@pytest.fixture(scope="module")
def cell():
    cell = HandoverCell(CellConfig(cameras=True, resolution=(424, 240), **BENCH_OPTICS))
    yield cell
    cell.close()


def _run(cell, scenario, seconds: float, depth: str = "sensor", cameras=None, lead_in_s: float = 0.3):
    """Track the giver's hand from `lead_in_s` before the end of its reach for `seconds`."""
    cell.load_scenario(scenario)
    names = cameras or cell.calibration.names
    t0 = cell.giver.trajectory.reach_end_s - lead_in_s
    rows = []
    with HandTracker(cell.calibration, HandTrackerConfig(), cameras=names) as tracker:
        for k in range(round(seconds * 30)):
            cell.step_until(t0 + k / 30)
            frames = {f.name: f for f in cell.render()}
            inputs = {}
            for n in names:
                d = frames[n].depth_mm
                if depth == "nan":
                    d = np.full(d.shape, np.nan, np.float32)
                elif depth == "zero":
                    d = np.zeros_like(d)
                inputs[n] = (frames[n].rgb, d)
            est = tracker.process(cell.time, inputs)
            rows.append(
                None
                if est is None
                else (est, frame_errors(est, cell.giver_keypoints(), cell.giver.wrist_pose(cell.data)))
            )
    return rows


def test_mediapipe_chain_places_the_giver_hand_in_3d(cell):
    rows = _run(cell, _scenario("easy", "easy_box_center"), 1.0)
    found = [r for r in rows if r is not None]
    assert len(found) >= 0.9 * len(rows)
    wrist = np.median([e["wrist_mm"] for _, e in found])
    mpjpe = np.median([e["mpjpe_mm"] for _, e in found])
    rot = np.nanmedian([e["rot_deg"] for _, e in found])
    assert wrist < 20.0 and mpjpe < 40.0 and rot < 35.0, (wrist, mpjpe, rot)
    est = found[-1][0]
    assert est.handedness == "right" and set(est.cameras_used) == {"camera_0", "camera_1"}
    assert est.keypoints.shape == (21, 3) and est.wrist_valid


@pytest.mark.parametrize("depth", ["nan", "zero"])
def test_empty_or_nan_depth_falls_back_to_triangulation(cell, depth):
    rows = _run(cell, _scenario("easy", "easy_box_center"), 0.5, depth=depth, lead_in_s=0.0)
    found = [r for r in rows if r is not None]
    assert len(found) >= 0.8 * len(rows)
    assert np.median([e["wrist_mm"] for _, e in found]) < 40.0


def test_one_camera_without_depth_reports_no_hand_rather_than_a_guess(cell):
    rows = _run(cell, _scenario("easy", "easy_box_center"), 0.3, depth="nan", cameras=["camera_0"])
    assert all(r is None for r in rows)


def test_no_hand_in_view_gives_none():
    from dexh2r_core.calibration import load_calibration

    calibration = load_calibration(config_path("calibration/sim_two_cameras.yaml"))
    with HandTracker(calibration) as tracker:
        grey = np.full((240, 424, 3), 90, np.uint8)
        depth = np.full((240, 424), 1500, np.uint16)
        assert tracker.process(0.0, {"camera_0": (grey, depth), "camera_1": (grey, depth)}) is None


def test_intrinsics_scale_with_the_image_size():
    intr = CameraIntrinsics(width=848, height=480, fx=420.0, fy=420.0, cx=424.0, cy=240.0)
    half = intr.scaled(424, 240)
    assert half.fx == pytest.approx(210.0) and half.cx == pytest.approx(212.0, abs=0.5)


# ---- the node ----------------------------------------------------------------------------------------
@pytest.mark.ros
def test_node_publishes_keypoints_and_wrist_with_the_frame_stamp(node_launcher, ros_node, cell):
    from geometry_msgs.msg import PoseArray, PoseStamped
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.qos import QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
    from sensor_msgs.msg import Image
    from std_msgs.msg import String

    from dexh2r_core import msgs
    from dexh2r_core.testing import wait_for_topic_match

    cell.load_scenario(_scenario("easy", "easy_box_center"))
    t0 = cell.giver.trajectory.reach_end_s
    recorded = []
    for k in range(10):
        cell.step_until(t0 + k / 30)
        recorded.append(([(f.rgb, f.depth_mm) for f in cell.render()], cell.giver_keypoints()))
    node = node_launcher.start("dexh2r_perception.hand_tracker_node:main")
    cams = cell.calibration.cameras
    pubs = []
    for c in cams:
        for suffix in ("color/image_raw", "aligned_depth_to_color/image_raw"):
            pubs.append(ros_node.create_publisher(Image, f"/{c.name}/{suffix}", qos_profile_sensor_data))
    reliable = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
    got: dict[str, list] = {"kp": [], "wrist": [], "state": []}
    ros_node.create_subscription(PoseArray, "/perception/human_hand/keypoints", got["kp"].append, reliable)
    ros_node.create_subscription(PoseStamped, "/perception/human_hand/wrist", got["wrist"].append, reliable)
    ros_node.create_subscription(String, "/perception/human_hand/state", got["state"].append, reliable)
    for c in cams:
        for suffix in ("color/image_raw", "aligned_depth_to_color/image_raw"):
            wait_for_topic_match(ros_node, f"/{c.name}/{suffix}", "subscriber", timeout=60, processes=[node])
    executor = SingleThreadedExecutor(context=ros_node.context)
    executor.add_node(ros_node)
    sent: dict[int, np.ndarray] = {}
    deadline = time.monotonic() + 60.0
    k = 0
    try:
        while len(got["wrist"]) < 5 and time.monotonic() < deadline:
            assert node.alive(), node.log_tail()
            images, truth = recorded[k % len(recorded)]
            k += 1
            stamp = time.time()
            for c, (rgb, depth), i in zip(cams, images, range(len(cams)), strict=True):
                pubs[2 * i].publish(msgs.image_msg(rgb, "rgb8", stamp, c.frame_id))
                pubs[2 * i + 1].publish(msgs.image_msg(depth, "16UC1", stamp, c.frame_id))
            t = msgs.to_time(stamp)
            sent[t.sec * 10**9 + t.nanosec] = truth
            end = time.monotonic() + 1 / 30
            while time.monotonic() < end:
                executor.spin_once(timeout_sec=max(0.0, end - time.monotonic()))
    finally:
        executor.remove_node(ros_node)
        executor.shutdown(timeout_sec=1.0)
    assert len(got["wrist"]) >= 5, f"{len(got['wrist'])} wrist poses; node log:\n{node.log_tail()}"
    for m in got["kp"]:
        key = m.header.stamp.sec * 10**9 + m.header.stamp.nanosec
        assert key in sent, f"keypoints carry their source frames' stamp: {key} not in {sorted(sent)}"
        assert m.header.frame_id == "world" and len(m.poses) == 21
        kp = np.array([[p.position.x, p.position.y, p.position.z] for p in m.poses])
        assert np.linalg.norm(kp[0] - sent[key][0]) < 0.03
    for m in got["wrist"]:
        assert m.header.stamp.sec * 10**9 + m.header.stamp.nanosec in sent
    state = json.loads(got["state"][-1].data)
    assert (
        state["detected"] and state["handedness"] in ("right", "unknown") and len(state["confidence"]) == 21
    )


@pytest.mark.ros
def test_node_without_calibration_exits_with_an_error(node_launcher, tmp_path):
    missing = tmp_path / "no_such_calibration.yaml"
    node = node_launcher.start(
        "dexh2r_perception.hand_tracker_node:main", params={"calibration": str(missing)}
    )
    assert node.popen.wait(timeout=60) == 2
    assert "calibration file not found" in node.log_text() and "no_such_calibration.yaml" in node.log_text()


# ---- single-view frames: the remembered shape ----------------------------------------------------
def _camera_view(cam, intrinsics, points: np.ndarray, depth_bias: np.ndarray | None = None):
    """A camera's observation of `points`: exact pixels, depths along the rays (+ bias)."""
    from dexh2r_perception.hand_tracking import project

    uv, _ = project(cam.T, intrinsics.K, points)
    obs = _observation(cam.name, cam.T[:3, 3].copy(), points, depth_bias)
    obs.detection = Detection2D(cam.name, uv, np.zeros((NUM_LANDMARKS, 3)), "", 0.0, (0, 0, 1))
    return obs


def _sim_cameras():
    from dexh2r_core.calibration import load_calibration

    calibration = load_calibration(config_path("calibration/sim_two_cameras.yaml"))
    return calibration, calibration.cameras


def test_rigid_fit_recovers_a_pose_and_ignores_nan_rows():
    from dexh2r_perception.hand_tracking import rigid_fit

    src = hand_keypoints_from_angles(CURLED)
    T = _random_pose(3)
    dst = _posed(src, T)
    dst[4] = np.nan
    R, t = rigid_fit(src, dst)
    assert np.allclose(R, T[:3, :3], atol=1e-9) and np.allclose(t, T[:3, 3], atol=1e-9)
    with pytest.raises(ValueError, match="fewer than 3"):
        rigid_fit(src[:2], dst[:2])


def test_a_remembered_shape_is_posed_to_one_view_despite_bad_depths():
    from dexh2r_perception.hand_tracking import pose_shape_to_view

    _, (cam, _) = _sim_cameras()
    shape = hand_keypoints_from_angles(CURLED)  # remembered, in some other pose
    T = _random_pose(5)
    T[:3, 3] = [0.62, 0.0, 0.35]  # where the giver offers
    truth = _posed(shape, T)
    bias = np.zeros(NUM_LANDMARKS)
    bias[[8, 12, 16]] = -0.06  # three fingertips' depths land on the held object in front
    obs = _camera_view(cam, cam.intrinsics, truth, bias)
    posed, residual_px = pose_shape_to_view(shape, obs, cam.intrinsics, cam.T, HandTrackerConfig())
    assert np.max(np.linalg.norm(posed - truth, axis=1)) < 2e-3
    assert residual_px < 0.1
    direct = fuse_observations([obs], HandTrackerConfig())
    assert np.linalg.norm(direct.points[12] - truth[12]) > 0.04, "the single view alone is misled"


def test_tracker_uses_the_multi_view_shape_when_one_camera_loses_the_hand():
    calibration, (cam0, cam1) = _sim_cameras()
    tracker = HandTracker(calibration, model_factory=lambda: None)
    T = _random_pose(7)
    T[:3, 3] = [0.62, 0.0, 0.35]
    truth = _posed(hand_keypoints_from_angles(CURLED), T)
    views = [_camera_view(c, c.intrinsics, truth) for c in (cam0, cam1)]
    intr = {c.name: c.intrinsics for c in (cam0, cam1)}
    both = fuse_observations(views, tracker.config)
    assert not tracker._apply_shape_memory(0.0, both, views, intr), "a multi-view frame is only remembered"
    # The hand moves 5 cm; camera_1 loses it, camera_0's fingertip depths hit the held object.
    moved = truth + np.array([0.0, 0.05, 0.0])
    bias = np.zeros(NUM_LANDMARKS)
    bias[[4, 8, 12, 16, 20]] = -0.05
    single_view = [_camera_view(cam0, cam0.intrinsics, moved, bias)]
    single = fuse_observations(single_view, tracker.config)
    direct_error = np.linalg.norm(single.points - moved, axis=1).mean()
    assert tracker._apply_shape_memory(0.5, single, single_view, intr)
    assert np.linalg.norm(single.points - moved, axis=1).max() < 3e-3 < direct_error
    # Too old a shape (another grasp by now) is not used; nor when the option is off.
    stale = fuse_observations(single_view, tracker.config)
    assert not tracker._apply_shape_memory(
        0.5 + tracker.config.shape_memory_max_age_s + 1, stale, single_view, intr
    )
    off = HandTracker(calibration, config_with_memory(False), model_factory=lambda: None)
    assert not off.config.shape_memory


def config_with_memory(enabled: bool) -> HandTrackerConfig:
    from dexh2r_perception.hand_tracking import config_with

    return config_with(HandTrackerConfig(), shape_memory=enabled)
