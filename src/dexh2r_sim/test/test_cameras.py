"""Virtual RealSense cameras: geometry (pose, K, flips), metric depth, noise model, calibration files.

Rendering runs off-screen on the CPU (EGL). The geometry tests compare rendered pixels with the
pinhole projection u = fx x/z + cx, v = fy y/z + cy of known world points, so a wrong frame
convention, principal point sign, image flip or depth linearisation fails here.
"""

from __future__ import annotations

import os

os.environ.setdefault("MUJOCO_GL", "egl")

import dataclasses
import math
import threading
import time

import mujoco
import numpy as np
import pytest
import yaml

from dexh2r_core.calibration import (
    CalibrationSet,
    CameraCalibration,
    CameraIntrinsics,
    CameraPose,
    d455_intrinsics,
    load_calibration,
    look_at,
    save_calibration,
)
from dexh2r_core.config import ConfigError
from dexh2r_core.paths import config_path
from dexh2r_core.transforms import invert, transform_points
from dexh2r_sim.cameras import (
    DepthNoise,
    RgbdRenderer,
    add_cameras,
    camera_info_dict,
    gl_frustum,
)

NOISE_OFF = DepthNoise(enabled=False)
RESOLUTIONS = [(424, 240), (640, 480)]
RED = (1.0, 0.0, 0.0, 1.0)


def _calibration(intr: CameraIntrinsics, T: np.ndarray, name: str = "camera_0") -> CalibrationSet:
    cam = CameraCalibration(name=name, intrinsics=intr, T_world_camera=CameraPose.from_matrix(T))
    return CalibrationSet(cameras=[cam], source="test")


def _scene(calibration: CalibrationSet, geoms: list[dict]) -> tuple[mujoco.MjModel, mujoco.MjData]:
    spec = mujoco.MjSpec()
    spec.worldbody.add_light(pos=[0, 0, 4], dir=[0, 0, -1], diffuse=[0.8, 0.8, 0.8])
    for geom in geoms:
        spec.worldbody.add_geom(**geom)
    add_cameras(spec, calibration)
    model = spec.compile()
    data = mujoco.MjData(model)
    mujoco.mj_forward(model, data)
    return model, data


def _render(calibration: CalibrationSet, geoms: list[dict], noise: DepthNoise = NOISE_OFF):
    model, data = _scene(calibration, geoms)
    with RgbdRenderer(model, calibration, noise) as renderer:
        return renderer.render(data, frame_index=0)


def _pixel_rays(intr: CameraIntrinsics) -> np.ndarray:
    """Optical-frame ray directions with z = 1 through every pixel centre, [H, W, 3]."""
    v, u = np.mgrid[0 : intr.height, 0 : intr.width]
    return np.stack([(u - intr.cx) / intr.fx, (v - intr.cy) / intr.fy, np.ones(u.shape)], axis=-1)


def _plane_z_depth(intr: CameraIntrinsics, T: np.ndarray, height: float = 0.0):
    """Analytic z-depth of the horizontal plane z = height per pixel, and the hit points (world)."""
    rays_world = _pixel_rays(intr) @ T[:3, :3].T
    t = (height - T[2, 3]) / rays_world[..., 2]  # rays have optical z = 1: t is the z-depth
    return t, T[:3, 3] + t[..., None] * rays_world


# --- (a) metric depth -------------------------------------------------------------------------


@pytest.mark.parametrize(("width", "height"), RESOLUTIONS)
def test_depth_of_a_box_face_straight_ahead(width, height):
    distance = 1.25
    T = look_at((0.0, 0.0, distance), (0.0, 0.0, 0.0), up=(1.0, 0.0, 0.0))
    cal = _calibration(d455_intrinsics(width, height), T)
    box = {"type": mujoco.mjtGeom.mjGEOM_BOX, "size": [3, 3, 0.05], "pos": [0, 0, -0.05]}
    frame = _render(cal, [box])[0]
    assert frame.depth_mm.shape == (height, width) and frame.depth_mm.dtype == np.uint16
    assert frame.rgb.shape == (height, width, 3) and frame.rgb.dtype == np.uint8
    # z-depth, not ray length: the same everywhere on a plane facing the camera.
    centre = frame.depth_m[height // 2, width // 2]
    assert abs(centre - distance) < 0.001
    assert np.abs(frame.depth_m - distance).max() < 0.002
    assert np.abs(frame.depth_mm.astype(float) / 1000.0 - distance).max() <= 0.0015


@pytest.mark.parametrize(("width", "height"), RESOLUTIONS)
def test_depth_of_a_plane_seen_at_an_angle(width, height):
    intr = d455_intrinsics(width, height)
    T = look_at((1.1, 0.6, 0.9), (0.0, 0.0, 0.0))
    cal = _calibration(intr, T)
    plane = {"type": mujoco.mjtGeom.mjGEOM_PLANE, "size": [2.5, 2.5, 0.1]}
    frame = _render(cal, [plane])[0]
    truth, points = _plane_z_depth(intr, T)
    inside = (truth > 0) & (np.abs(points[..., 0]) < 2.4) & (np.abs(points[..., 1]) < 2.4)
    assert inside.mean() > 0.5
    err = np.abs(frame.depth_m - truth)[inside]
    centre = (intr.height // 2, intr.width // 2)
    assert inside[centre] and abs(frame.depth_m[centre] - truth[centre]) < 0.001
    assert err.max() < 0.003, f"max depth error {err.max() * 1e3:.2f} mm"
    # No surface beyond the plane's edge: depth 0 (invalid), like RealSense.
    outside = (truth < 0) | (np.abs(points[..., 0]) > 2.6) | (np.abs(points[..., 1]) > 2.6)
    assert outside.any() and np.all(frame.depth_m[outside] == 0) and np.all(frame.depth_mm[outside] == 0)


# --- (b) projection: pose + intrinsics + flips -------------------------------------------------


@pytest.mark.parametrize(("width", "height"), RESOLUTIONS)
@pytest.mark.parametrize("centred", [True, False])
def test_sphere_projects_through_k(width, height, centred):
    intr = d455_intrinsics(width, height)
    if not centred:  # off-centre principal point and fx != fy: checks MuJoCo's principal point
        intr = dataclasses.replace(
            intr, fx=intr.fx * 1.04, cx=intr.cx - 0.11 * width, cy=intr.cy + 0.07 * height
        )
    T = look_at((1.2, 0.7, 1.0), (0.6, 0.0, 0.35))
    radius = 0.012
    # Points left/right/up/down of the optical axis catch any mirrored axis.
    points_cam = np.array([[0.0, 0.0, 1.1], [0.25, -0.12, 1.0], [-0.3, 0.15, 1.3], [0.1, 0.2, 0.8]])
    for p_cam in points_cam:
        p_world = transform_points(T, p_cam)
        sphere = {"type": mujoco.mjtGeom.mjGEOM_SPHERE, "size": [radius, 0, 0], "pos": p_world, "rgba": RED}
        frame = _render(_calibration(intr, T), [sphere])[0]
        u = intr.fx * p_cam[0] / p_cam[2] + intr.cx
        v = intr.fy * p_cam[1] / p_cam[2] + intr.cy
        # Silhouette from depth (only the sphere is in the scene): shading does not bias it.
        hit = frame.depth_m > 0
        assert hit.sum() > 10, f"sphere at {p_cam} not visible"
        rows, cols = np.nonzero(hit)
        assert abs(cols.mean() - u) < 0.3 and abs(rows.mean() - v) < 0.3, (cols.mean(), rows.mean(), u, v)
        ui, vi = round(u), round(v)
        r, g, b = (int(c) for c in frame.rgb[vi, ui])
        assert r > 60 and r > g + 40 and r > b + 40, (p_cam, (r, g, b))
        # The pixel looks at the sphere's near surface: ray length |p| - r, as z-depth.
        expected = (np.linalg.norm(p_cam) - radius) * p_cam[2] / np.linalg.norm(p_cam)
        assert abs(frame.depth_m[vi, ui] - expected) < 0.001
        assert abs(frame.depth_mm[vi, ui] / 1000.0 - expected) <= 0.0011


def test_mujoco_camera_intrinsics_match_k():
    """The model's own camera (MuJoCo viewer, camprojection sensor) has the calibrated frustum."""
    intr = CameraIntrinsics(640, 480, 390.0, 386.0, 301.3, 255.8)
    cal = _calibration(intr, look_at((1.0, 0.5, 0.8), (0.0, 0.0, 0.3)))
    model, data = _scene(cal, [{"type": mujoco.mjtGeom.mjGEOM_PLANE, "size": [1, 1, 0.1]}])
    assert model.vis.global_.offwidth >= 640 and model.vis.global_.offheight >= 480
    scene = mujoco.MjvScene(model, maxgeom=100)
    camera = mujoco.MjvCamera()
    camera.type = mujoco.mjtCamera.mjCAMERA_FIXED
    camera.fixedcamid = 0
    mujoco.mjv_updateScene(model, data, mujoco.MjvOption(), None, camera, mujoco.mjtCatBit.mjCAT_ALL, scene)
    glcam = scene.camera[0]
    expected = gl_frustum(intr, glcam.frustum_near)
    got = (glcam.frustum_center, glcam.frustum_width, glcam.frustum_bottom, glcam.frustum_top)
    np.testing.assert_allclose(got, expected, rtol=1e-5)
    # Camera pose: MuJoCo's camera looks along its -z; the optical frame along +z.
    T = cal.cameras[0].T
    np.testing.assert_allclose(data.cam_xpos[0], T[:3, 3], atol=1e-9)
    np.testing.assert_allclose(data.cam_xmat[0].reshape(3, 3), T[:3, :3] @ np.diag([1, -1, -1]), atol=1e-9)


def test_add_cameras_rejects_duplicates_and_renderer_needs_cameras():
    cal = _calibration(d455_intrinsics(), look_at((1, 0, 1), (0, 0, 0)))
    spec = mujoco.MjSpec()
    add_cameras(spec, cal)
    with pytest.raises(ValueError, match="camera_0"):
        add_cameras(spec, cal)
    bare = mujoco.MjSpec()
    bare.visual.global_.offwidth = 640
    with pytest.raises(ValueError, match="add_cameras"):
        RgbdRenderer(bare.compile(), cal)


def test_renderer_refuses_other_threads_and_closes():
    cal = _calibration(d455_intrinsics(), look_at((1, 0, 1), (0, 0, 0)))
    model, data = _scene(cal, [{"type": mujoco.mjtGeom.mjGEOM_PLANE, "size": [1, 1, 0.1]}])
    renderer = RgbdRenderer(model, cal)
    errors: list[BaseException] = []

    def other_thread() -> None:
        try:
            renderer.render(data)
        except RuntimeError as exc:
            errors.append(exc)

    worker = threading.Thread(target=other_thread)
    worker.start()
    worker.join()
    assert errors and "thread" in str(errors[0])
    assert len(renderer.render(data)) == 1
    renderer.close()
    renderer.close()  # idempotent
    with pytest.raises(RuntimeError, match="closed"):
        renderer.render(data)


def test_two_cameras_from_the_sim_calibration_see_the_offered_object():
    cal = load_calibration(config_path("calibration/sim_two_cameras.yaml"))
    target = np.array([0.62, 0.0, 0.35])
    sphere = {"type": mujoco.mjtGeom.mjGEOM_SPHERE, "size": [0.03, 0, 0], "pos": target, "rgba": RED}
    frames = _render(cal, [sphere])
    assert [f.name for f in frames] == ["camera_0", "camera_1"]
    for frame, cam in zip(frames, cal.cameras, strict=True):
        p = transform_points(invert(cam.T), target)
        u, v = (
            cam.intrinsics.fx * p[0] / p[2] + cam.intrinsics.cx,
            cam.intrinsics.fy * p[1] / p[2] + cam.intrinsics.cy,
        )
        assert frame.rgb[round(v), round(u), 0] > 80 and frame.rgb[round(v), round(u), 1] < 40
        assert abs(frame.depth_m[round(v), round(u)] - (p[2] - 0.03)) < 0.01


# --- (c) noise model ------------------------------------------------------------------------


def _noise_stats(noise: DepthNoise, z: float, frames: int = 4) -> float:
    truth = np.full((240, 424), z, dtype=np.float32)
    errors = [noise.apply(truth, k).astype(float) / 1000.0 - z for k in range(frames)]
    return float(np.std(np.concatenate([e.ravel() for e in errors])))


@pytest.mark.parametrize("z", [0.5, 1.0, 2.5])
def test_noise_std_follows_sigma_of_z(z):
    noise = DepthNoise(seed=3, invalid_fraction=0.0, edge_dropout_prob=0.0)
    measured = _noise_stats(noise, z)
    expected = math.sqrt(noise.sigma(z) ** 2 + 0.001**2 / 12)  # + 1 mm quantisation
    assert abs(measured - expected) < 0.05 * expected, (measured, expected)
    if z == 0.5:
        assert 0.0008 < noise.sigma(z) < 0.0012  # ~1 mm at 0.5 m
    if z == 2.5:
        assert 0.008 < noise.sigma(z) < 0.012  # ~1 cm at 2.5 m


def test_noise_is_deterministic_per_seed_frame_and_camera():
    truth = np.random.default_rng(1).uniform(0.5, 3.0, (240, 424)).astype(np.float32)
    noise = DepthNoise(seed=7)
    a = noise.apply(truth, frame_index=5, stream=0)
    assert np.array_equal(a, noise.apply(truth, frame_index=5, stream=0))
    assert np.array_equal(a, DepthNoise(seed=7).apply(truth.copy(), frame_index=5, stream=0))
    assert (a != noise.apply(truth, frame_index=6, stream=0)).mean() > 0.5
    assert (a != noise.apply(truth, frame_index=5, stream=1)).mean() > 0.5
    assert (a != DepthNoise(seed=8).apply(truth, frame_index=5)).mean() > 0.5


def test_noise_drops_far_side_of_edges_and_out_of_range():
    truth = np.full((240, 424), 2.0, dtype=np.float32)
    truth[:, :200] = 1.0  # near surface on the left, a 1 m jump at column 200
    truth[:10, :] = 0.3  # closer than the D455 minimum range
    truth[-10:, :] = 7.0  # beyond the maximum range
    truth[100:110, 300:310] = 0.0  # nothing hit
    noise = DepthNoise(edge_dropout_prob=1.0, edge_width_px=2, invalid_fraction=0.0, sigma_b_per_m=0.0)
    out = noise.apply(truth, 0)
    rows = slice(20, 220)
    assert np.all(out[rows, 200:202] == 0)  # far (background) side of the edge: dropped
    assert np.all(out[rows, 196:200] > 0) and np.all(out[rows, 203:210] > 0)  # near side kept
    assert np.all(out[:10] == 0) and np.all(out[-10:] == 0)
    assert np.all(out[100:110, 300:310] == 0)
    # The range limits and "no surface" apply with the random parts off too.
    clean = NOISE_OFF.apply(truth, 0)
    assert np.all(clean[:10] == 0) and np.all(clean[-10:] == 0) and np.all(clean[rows, 200] == 2000)


def test_random_invalid_fraction():
    truth = np.full((480, 640), 1.0, dtype=np.float32)
    out = DepthNoise(invalid_fraction=0.05, edge_dropout_prob=0.0).apply(truth, 2)
    assert 0.04 < (out == 0).mean() < 0.06


def test_rendered_noise_is_reproducible():
    T = look_at((0.0, 0.0, 1.0), (0.0, 0.0, 0.0), up=(1.0, 0.0, 0.0))
    cal = _calibration(d455_intrinsics(), T)
    model, data = _scene(
        cal, [{"type": mujoco.mjtGeom.mjGEOM_BOX, "size": [2, 2, 0.05], "pos": [0, 0, -0.05]}]
    )
    with RgbdRenderer(model, cal, DepthNoise(seed=11)) as renderer:
        a, b, c = (renderer.render(data, k)[0] for k in (4, 4, 5))
    assert np.array_equal(a.depth_mm, b.depth_mm) and not np.array_equal(a.depth_mm, c.depth_mm)
    valid = a.depth_mm > 0
    assert 0.99 < valid.mean() < 1.0
    assert abs(np.std(a.depth_mm[valid] / 1000.0 - 1.0) - DepthNoise().sigma(1.0)) < 0.0005


def test_noise_config_rejects_bad_values():
    with pytest.raises(ValueError, match="invalid_fraction"):
        DepthNoise(invalid_fraction=1.5)
    with pytest.raises(ValueError, match="max_range_m"):
        DepthNoise(min_range_m=2.0, max_range_m=1.0)


# --- (d) calibration store ------------------------------------------------------------------


def _awkward_set() -> CalibrationSet:
    intr = dataclasses.replace(
        d455_intrinsics(640, 480), fx=0.1 + 0.2 + 383.0, D=[1e-17, -0.3, 0.0, 2.5e-5, 0.1]
    )
    cams = [
        CameraCalibration(
            name="camera_0",
            serial="123456789012",
            intrinsics=intr,
            T_world_camera=CameraPose.from_matrix(look_at((0.9, 0.85, 1.0), (0.62, 0.0, 0.35))),
            reprojection_error_px=0.123456789,
        ),
        CameraCalibration(
            name="camera_1", T_world_camera=CameraPose.from_matrix(look_at((1, -1, 1), (0, 0, 0)))
        ),
    ]
    return CalibrationSet(cameras=cams, created="2025-01-01T12:00:00+00:00", source="dexh2r calibrate")


def test_calibration_yaml_round_trip_is_exact(tmp_path):
    original = _awkward_set()
    path = save_calibration(original, tmp_path / "cal.yaml")
    loaded = load_calibration(path)
    assert loaded == original
    assert loaded.cameras[1].frame_id == "camera_1_color_optical_frame"
    assert loaded.cameras[0].intrinsics.fx == 0.1 + 0.2 + 383.0
    np.testing.assert_array_equal(loaded.cameras[0].T, original.cameras[0].T)
    save_calibration(loaded, tmp_path / "again.yaml")
    assert (tmp_path / "again.yaml").read_text() == path.read_text()


def _write_bad(tmp_path, edit) -> str:
    data = yaml.safe_load(save_calibration(_awkward_set(), tmp_path / "good.yaml").read_text())
    edit(data)
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return str(path)


@pytest.mark.parametrize(
    ("edit", "keys"),
    [
        (
            lambda d: d["cameras"][1]["T_world_camera"].update(xyz=[0.0, float("nan"), 1.0]),
            ["camera_1", "T_world_camera.xyz"],
        ),
        (
            lambda d: d["cameras"][0]["T_world_camera"].update(quat_xyzw=[0.5, 0.5, 0.5, 0.9]),
            ["camera_0", "quat_xyzw", "orthonormal"],
        ),
        (lambda d: d["cameras"][0]["intrinsics"].update(fx=-383.0), ["camera_0", "intrinsics.fx"]),
        (lambda d: d["cameras"][1]["intrinsics"].update(fy=0), ["camera_1", "intrinsics.fy"]),
        (lambda d: d["cameras"][0]["intrinsics"].update(cx=float("inf")), ["camera_0", "intrinsics.cx"]),
        (lambda d: d["cameras"][0]["intrinsics"].update(width=0), ["camera_0", "intrinsics.width"]),
        (lambda d: d["cameras"][1].update(depth_scale_m=0.0), ["camera_1", "depth_scale_m"]),
        (
            lambda d: d["cameras"][0]["intrinsics"].update(fxx=1.0),
            ["cameras[0].intrinsics.fxx", "did you mean 'fx'"],
        ),
        (lambda d: d["cameras"][1].update(name="camera_0"), ["cameras[1].name", "duplicate"]),
    ],
)
def test_bad_calibration_values_name_camera_and_key(tmp_path, edit, keys):
    path = _write_bad(tmp_path, edit)
    with pytest.raises(ConfigError) as err:
        load_calibration(path)
    message = str(err.value)
    assert path in message
    for key in keys:
        assert key in message, message


def test_look_at_gives_an_optical_frame():
    eye, target = np.array([0.9, 0.85, 1.0]), np.array([0.62, 0.0, 0.35])
    T = look_at(eye, target)
    R = T[:3, :3]
    np.testing.assert_allclose(R.T @ R, np.eye(3), atol=1e-12)
    assert np.linalg.det(R) == pytest.approx(1.0)
    np.testing.assert_allclose(R[:, 2], (target - eye) / np.linalg.norm(target - eye))
    assert abs(R[2, 0]) < 1e-12  # image x is horizontal (no roll)
    assert R[2, 1] < 0  # image y points down in the world
    assert transform_points(invert(T), target)[:2] == pytest.approx([0.0, 0.0], abs=1e-12)
    with pytest.raises(ValueError, match="parallel"):
        look_at((0, 0, 1), (0, 0, 0))


def test_d455_intrinsics_and_scaling():
    vga = d455_intrinsics(640, 480)
    assert vga.fx == vga.fy == pytest.approx(384.0) and (vga.cx, vga.cy) == (319.5, 239.5)
    small = d455_intrinsics(424, 240)
    assert small.fx == pytest.approx(212.0) and (small.cx, small.cy) == (211.5, 119.5)
    assert 85 < math.degrees(2 * math.atan(424 / 2 / small.fx)) < 95  # D455 colour HFOV ~90 deg
    half = vga.scaled(320, 240)
    assert (half.fx, half.fy, half.cx, half.cy) == pytest.approx((192.0, 192.0, 159.5, 119.5))
    np.testing.assert_allclose(vga.K, [[384, 0, 319.5], [0, 384, 239.5], [0, 0, 1]])


def test_sim_calibration_file_frames_the_handover_region():
    cal = load_calibration(config_path("calibration/sim_two_cameras.yaml"))
    assert cal.frame == "world" and cal.names == ["camera_0", "camera_1"]
    corners = np.array([[x, y, z] for x in (0.55, 0.7) for y in (-0.2, 0.2) for z in (0.25, 0.45)])
    sides = []
    for cam in cal.cameras:
        assert (cam.intrinsics.width, cam.intrinsics.height) == (424, 240)
        p = transform_points(invert(cam.T), corners)
        assert np.all((p[:, 2] > 0.8) & (p[:, 2] < 1.45))  # ~1.1 m to the middle
        u = cam.intrinsics.fx * p[:, 0] / p[:, 2] + cam.intrinsics.cx
        v = cam.intrinsics.fy * p[:, 1] / p[:, 2] + cam.intrinsics.cy
        assert np.all((u > 20) & (u < 404) & (v > 20) & (v < 220))
        sides.append(np.sign(cam.T[1, 3]))
    assert sorted(sides) == [-1, 1]  # one camera on each side of the workspace


def test_camera_info_dict():
    cam = _awkward_set().cameras[0]
    info = camera_info_dict(cam)
    assert info["frame_id"] == "camera_0_color_optical_frame"
    assert (info["width"], info["height"], info["distortion_model"]) == (640, 480, "plumb_bob")
    assert info["k"] == pytest.approx(cam.intrinsics.K.ravel().tolist())
    assert info["r"] == [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0]
    K = cam.intrinsics.K
    assert info["p"] == pytest.approx([K[0, 0], 0, K[0, 2], 0, 0, K[1, 1], K[1, 2], 0, 0, 0, 1, 0])
    assert info["d"] == cam.intrinsics.D and len(info["d"]) == 5


# --- (e) speed (printed only; timing belongs to benchmarks) ----------------------------------


def test_print_render_speed():
    cal = load_calibration(config_path("calibration/sim_two_cameras.yaml"))
    geoms = [
        {"type": mujoco.mjtGeom.mjGEOM_PLANE, "size": [2, 2, 0.1]},
        {"type": mujoco.mjtGeom.mjGEOM_BOX, "size": [0.05, 0.04, 0.03], "pos": [0.62, 0, 0.35], "rgba": RED},
    ]
    model, data = _scene(cal, geoms)
    with RgbdRenderer(model, cal) as renderer:
        renderer.render(data, 0)
        n = 10
        start = time.perf_counter()
        for k in range(n):
            renderer.render(data, k)
        elapsed = (time.perf_counter() - start) / n
    print(f"\n2 cameras 424x240 rgb+depth+noise: {1 / elapsed:.1f} sets/s ({elapsed * 1e3:.1f} ms per set)")
