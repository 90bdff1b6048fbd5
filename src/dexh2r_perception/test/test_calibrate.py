"""`dexh2r calibrate` on sim-rendered ChArUco views with known truth.

The sim cell's two D455-like cameras (config/calibration/sim_two_cameras.yaml) render a textured
board at known poses (MuJoCo, off-screen on the CPU); the recovered T_world_camera must be within
2 mm / 0.2 deg of the truth (acceptance). The crux is that the rendered board matches its 3D model:
`test_rendered_corners_match_board_model` projects the known corners into the rendered images.
"""

from __future__ import annotations

import os

os.environ.setdefault("MUJOCO_GL", "egl")

import dataclasses
import json
import math

import cv2
import mujoco
import numpy as np
import pytest
import yaml
from scipy.spatial.transform import Rotation

from dexh2r_core.calibration import (
    CalibrationSet,
    CameraCalibration,
    CameraIntrinsics,
    CameraPose,
    d455_intrinsics,
    load_calibration,
    save_calibration,
)
from dexh2r_core.config import ConfigError
from dexh2r_core.paths import config_path
from dexh2r_core.transforms import invert, transform_points
from dexh2r_perception import calibrate as cal
from dexh2r_sim.cameras import DepthNoise, RgbdRenderer

TRUTH_FILE = config_path("calibration/sim_two_cameras.yaml")
BOARD_FILE = config_path("calibration/charuco_board.yaml")
MAX_TRANS_MM = 2.0
MAX_ROT_DEG = 0.2


@pytest.fixture(scope="module")
def config() -> cal.CalibrateConfig:
    return cal.load_board_config(BOARD_FILE)


@pytest.fixture(scope="module")
def truth() -> CalibrationSet:
    return load_calibration(TRUTH_FILE)


@pytest.fixture(scope="module", params=[(424, 240), (640, 480)], ids=["424x240", "640x480"])
def sim_run(request, config, truth, tmp_path_factory):
    """8 robot-held board poses rendered in both cameras, calibrated from the written PNGs."""
    rig = cal.with_resolution(truth, request.param)
    work = tmp_path_factory.mktemp(f"sim{request.param[0]}")
    report, summary = cal.run_sim(rig, config, work, n_views=8, seed=0, image_noise=2.0)
    return rig, work, report, summary


def _project(cam: CameraCalibration, T_world_board: np.ndarray, points: np.ndarray) -> np.ndarray:
    p = transform_points(invert(cam.T) @ T_world_board, points)
    intr = cam.intrinsics
    return (p[:, :2] / p[:, 2:]) * [intr.fx, intr.fy] + [intr.cx, intr.cy]


def _pose(T: np.ndarray) -> dict:
    pose = CameraPose.from_matrix(T)
    return {"xyz": list(pose.xyz), "quat_xyzw": list(pose.quat_xyzw)}


# ---- the crux: the rendered board is the board model ------------------------------------------------


@pytest.mark.parametrize("resolution", [(640, 480), (1280, 720)])
def test_rendered_corners_match_board_model(config, resolution):
    """Detected ChArUco corners land where the board model projects them (ids, orientation, scale).

    A flipped or rotated texture puts the ids in the wrong places (errors of whole squares); a
    scale or offset error shows as a mean error or a scale about the board's centre.
    """
    board = cal.Board(config.board)
    intr = d455_intrinsics(*resolution)
    T_cam = np.eye(4)
    T_cam[:3, :3] = np.diag([1.0, -1.0, -1.0])  # looking straight down, image x = world x
    T_cam[:3, 3] = [0.0, 0.0, 1.0]
    rig = CalibrationSet(
        cameras=[CameraCalibration(name="top", intrinsics=intr, T_world_camera=CameraPose.from_matrix(T_cam))]
    )
    model, data = cal.build_board_scene(rig, config.board)
    poses = []
    for rpy in [(0.0, 0.0, 0.0), (0.5, -0.3, 0.4), (-0.4, 0.5, -0.6)]:
        T = np.eye(4)
        # Print facing the camera (z_board down), off-centre, then tilted.
        T[:3, :3] = Rotation.from_euler("xyz", rpy).as_matrix() @ np.diag([1.0, -1.0, -1.0])
        T[:3, 3] = [-0.15, 0.2, 0.45]
        poses.append(T)
    with RgbdRenderer(model, rig, DepthNoise(enabled=False)) as renderer:
        for T in poses:
            data.mocap_pos[0] = T[:3, 3]
            q = Rotation.from_matrix(T[:3, :3]).as_quat()
            data.mocap_quat[0] = [q[3], q[0], q[1], q[2]]
            mujoco.mj_forward(model, data)
            gray = cv2.cvtColor(renderer.render(data)[0].rgb, cv2.COLOR_RGB2GRAY)
            det = cal.detect_in_image(board, "render", "top", "v", gray)
            assert len(det.ids) >= 18, f"only {len(det.ids)} corners detected"
            expected = _project(rig.cameras[0], T, det.board_points)
            raw = np.linalg.norm(det.corners_px - expected, axis=1)
            refined = cal.refine_corners(board, gray, det, intr)
            assert refined is not None
            err = refined - expected
            fine = np.linalg.norm(err, axis=1)
            centred = expected - expected.mean(axis=0)
            scale = float(np.sum(centred * err) / np.sum(centred**2))
            tilt = np.degrees(Rotation.from_matrix(T[:3, :3] @ np.diag([1, -1, -1])).magnitude())
            print(
                f"{resolution} tilt {tilt:.0f} deg: "
                f"detector median {np.median(raw):.3f} px max {raw.max():.3f}; refined median "
                f"{np.median(fine):.3f} px max {fine.max():.3f}, mean {err.mean(axis=0).round(4)}, "
                f"scale {scale:+.5f}"
            )
            assert raw.max() < 2.5  # ids are where the model says (a flip would be >= 1 square off)
            assert np.median(raw) < 0.5
            assert fine.max() < 0.15
            assert np.all(np.abs(err.mean(axis=0)) < 0.05)
            assert abs(scale) < 2e-4  # e.g. mipmaps of odd texture sizes gave +1.3e-3


def test_refinement_ignores_occluder_and_glare(sim_run, config):
    """A dark blob (finger, cable) and a bright one (glare) over the board barely move the corners."""
    rig, work, _, _ = sim_run
    board = cal.Board(config.board)
    checked = 0
    for view in cal.load_views(work / "views.yaml"):
        for cam, path in view.images.items():
            gray = cal.read_gray(path)
            det = cal.detect_in_image(board, path, cam, view.name, gray)
            if len(det.ids) < 12:
                continue
            intr = rig.camera(cam).intrinsics
            expected = _project(rig.camera(cam), view.T_world_board, det.board_points)
            square = float(np.median(np.linalg.norm(np.diff(expected, axis=0), axis=1)))
            spoiled = gray.copy()
            cv2.circle(spoiled, tuple(int(v) for v in expected.mean(axis=0)), int(1.2 * square), 40, -1)
            cv2.circle(spoiled, tuple(int(v) for v in expected[0]), int(0.6 * square), 250, -1)
            refined = cal.refine_corners(board, spoiled, det, intr)
            assert refined is not None
            rms = float(np.sqrt(np.mean(np.sum((refined - expected) ** 2, axis=1))))
            assert rms < 0.02, f"{view.name}/{cam}: {rms:.4f} px"
            checked += 1
    assert checked >= 4


def test_board_back_is_blank(config):
    """A camera behind the board sees no markers (MuJoCo textures every box face; a backing hides it)."""
    board = cal.Board(config.board)
    intr = d455_intrinsics(640, 480)
    T_cam = np.eye(4)
    T_cam[:3, :3] = np.diag([1.0, -1.0, -1.0])
    T_cam[:3, 3] = [0.0, 0.0, 1.0]
    rig = CalibrationSet(
        cameras=[CameraCalibration(name="top", intrinsics=intr, T_world_camera=CameraPose.from_matrix(T_cam))]
    )
    model, data = cal.build_board_scene(rig, config.board)
    data.mocap_pos[0] = [-0.21, -0.15, 0.45]  # z_board up: the camera looks at the back
    data.mocap_quat[0] = [1.0, 0.0, 0.0, 0.0]
    mujoco.mj_forward(model, data)
    with RgbdRenderer(model, rig, DepthNoise(enabled=False)) as renderer:
        gray = cv2.cvtColor(renderer.render(data)[0].rgb, cv2.COLOR_RGB2GRAY)
    assert len(board.detect(gray)[0]) == 0
    assert gray[240, 320] < 200  # the grey backing, not white paper


# ---- acceptance: camera poses from robot-held views ------------------------------------------------


def test_sim_calibration_within_tolerance(sim_run):
    _, _, report, summary = sim_run
    res = summary["resolution"]["camera_0"]
    for name in summary["trans_mm"]:
        r = report.results[name]
        print(
            f"{res[0]}x{res[1]} {name}: error {summary['trans_mm'][name]:.3f} mm / "
            f"{summary['rot_deg'][name]:.4f} deg, "
            f"reprojection RMS {r.rms_px:.4f} px, {r.corners} corners in {len(r.views_used)} views, "
            f"1-sigma {r.position_std_mm:.3f} mm / {r.rotation_std_deg:.4f} deg"
        )
    assert summary["cameras"] == 2
    assert summary["calibration_trans_mm"] <= MAX_TRANS_MM
    assert summary["calibration_rot_deg"] <= MAX_ROT_DEG
    for name, r in report.results.items():
        assert len(r.views_used) >= 3, f"{name}: too few views: {r.views_used}"
        assert 0.0 <= r.rms_px < 0.5
        assert math.isfinite(r.position_std_mm) and r.position_std_mm < 2.0
        # The views meant for the other camera show it the back or too oblique: rejected, named.
        for view, reason in report.rejected[name].items():
            assert "ChArUco corners" in reason, (view, reason)


def test_written_yaml_round_trips(sim_run, tmp_path):
    rig, _, report, _ = sim_run
    path = save_calibration(report.calibration, tmp_path / "calib.yaml")
    loaded = load_calibration(path)
    assert loaded == report.calibration
    assert loaded.source == "dexh2r calibrate" and loaded.created
    for cam in loaded.cameras:
        assert cam.reprojection_error_px is not None and cam.reprojection_error_px >= 0
        assert cam.intrinsics == rig.camera(cam.name).intrinsics
        assert cam.frame_id == f"{cam.name}_color_optical_frame"


def test_cli_on_rendered_views(sim_run, tmp_path, capsys):
    """`dexh2r calibrate --images views.yaml --intrinsics rig.yaml` on the written images."""
    rig, work, _, _ = sim_run
    rig_file = save_calibration(rig, tmp_path / "rig.yaml")
    out, js = tmp_path / "out.yaml", tmp_path / "out.json"
    argv = ["--images", str(work / "views.yaml"), "--intrinsics", str(rig_file), "--board", str(BOARD_FILE)]
    assert cal.main([*argv, "--out", str(out), "--json", str(js)]) == 0
    written = load_calibration(out)
    errors = cal.pose_errors(written, rig)
    assert max(e[0] for e in errors.values()) <= MAX_TRANS_MM
    summary = json.loads(js.read_text())
    assert summary["cameras"] == 2
    assert set(summary["reprojection_rms_px"]) == {"camera_0", "camera_1"}
    assert "camera_0" in capsys.readouterr().out


def test_inconsistent_view_is_rejected(sim_run, config, tmp_path):
    """A view whose board pose is wrong (bad FK sample, slipped board) is dropped, the rest agree."""
    rig, work, _, _ = sim_run
    views = cal.load_views(work / "views.yaml")
    bad = views[0]
    bad.T_world_board = bad.T_world_board.copy()
    bad.T_world_board[:3, 3] += [0.03, 0.0, 0.0]
    intrinsics = {c.name: cal.CameraIdentity(c.intrinsics) for c in rig.cameras}
    report = cal.calibrate(views, intrinsics, config)
    assert any(
        bad.name in r.rejected and "does not agree" in r.rejected[bad.name] for r in report.results.values()
    )
    errors = cal.pose_errors(report.calibration, rig)
    assert max(e[0] for e in errors.values()) <= MAX_TRANS_MM
    assert max(e[1] for e in errors.values()) <= MAX_ROT_DEG


def test_board_pose_errors_show_in_rms_and_uncertainty(sim_run, config, tmp_path):
    """Robot FK / mount errors (0.5 mm, 0.05 deg per axis) raise the RMS, and the 1-sigma covers them."""
    rig, work, _, _ = sim_run
    data = yaml.safe_load((work / "views.yaml").read_text())
    for view in data["views"]:
        view["images"] = {k: str(work / v) for k, v in view["images"].items()}
    path = tmp_path / "views.yaml"
    path.write_text(yaml.safe_dump(data))
    cal.perturb_views_file(path, 0.5, 0.05, seed=0)
    intrinsics = {c.name: cal.CameraIdentity(c.intrinsics) for c in rig.cameras}
    report = cal.calibrate(cal.load_views(path), intrinsics, config)
    errors = cal.pose_errors(report.calibration, rig)
    for name, r in report.results.items():
        trans, rot = errors[name]
        print(
            f"{name} with board-pose noise: error {trans:.2f} mm / {rot:.3f} deg, RMS {r.rms_px:.3f} px, "
            f"1-sigma {r.position_std_mm:.2f} mm / {r.rotation_std_deg:.3f} deg"
        )
        assert r.rms_px > 0.05  # the disagreement between views is visible
        assert trans < 3.0 * r.position_std_mm and rot < 3.0 * r.rotation_std_deg


def test_flange_pose_views_equal_board_pose_views(sim_run, config, tmp_path):
    """Robot-held form: flange poses x T_flange_board give the same answer as board poses."""
    rig, work, report, _ = sim_run
    data = yaml.safe_load((work / "views.yaml").read_text())
    T_flange_board = np.eye(4)
    T_flange_board[:3, :3] = Rotation.from_euler("xyz", [180, 0, 90], degrees=True).as_matrix()
    T_flange_board[:3, 3] = [-0.21, -0.15, 0.12]
    for view in data["views"]:
        T_world_board = CameraPose(**{k: tuple(v) for k, v in view.pop("board_pose").items()}).as_matrix()
        view["flange_pose"] = _pose(T_world_board @ invert(T_flange_board))
        view["images"] = {k: str(work / v) for k, v in view["images"].items()}
    data["T_flange_board"] = _pose(T_flange_board)
    path = tmp_path / "flange_views.yaml"
    path.write_text(yaml.safe_dump(data))
    intrinsics = {c.name: cal.CameraIdentity(c.intrinsics) for c in rig.cameras}
    again = cal.calibrate(cal.load_views(path), intrinsics, config)
    for name, res in again.results.items():
        np.testing.assert_allclose(res.T_world_camera, report.results[name].T_world_camera, atol=1e-6)


# ---- fixed board --------------------------------------------------------------------------------


def test_fixed_board_single_pose(config, truth, tmp_path):
    """One fixed board pose seen by both cameras (640x480: at 424x240 it is too oblique/small here)."""
    rig = cal.with_resolution(truth, (640, 480))
    _, summary = cal.run_sim(rig, config, tmp_path, fixed=True, seed=0)
    print(
        f"fixed board 640x480: {summary['calibration_trans_mm']:.3f} mm / "
        f"{summary['calibration_rot_deg']:.4f} deg, "
        f"RMS {summary['reprojection_rms_px']}"
    )
    assert summary["views"] == 1
    assert summary["calibration_trans_mm"] <= MAX_TRANS_MM
    assert summary["calibration_rot_deg"] <= MAX_ROT_DEG
    # The image-directory form of the same data: DIR/<camera>.png with --board-pose.
    views = cal.load_views(tmp_path / "views.yaml")
    folder = tmp_path / "fixed"
    folder.mkdir()
    for cam, image in views[0].images.items():
        (folder / f"{cam}.png").write_bytes(image.read_bytes())
    pose = CameraPose.from_matrix(views[0].T_world_board)
    rig_file = save_calibration(rig, tmp_path / "rig.yaml")
    out = tmp_path / "fixed.yaml"
    argv = ["--images", str(folder), "--intrinsics", str(rig_file), "--board", str(BOARD_FILE)]
    assert (
        cal.main([*argv, "--board-pose", " ".join(map(str, [*pose.xyz, *pose.quat_xyzw])), "--out", str(out)])
        == 0
    )
    assert max(e[0] for e in cal.pose_errors(load_calibration(out), rig).values()) <= MAX_TRANS_MM
    assert cal.main(argv) == 2  # no --board-pose and no fixed_pose in the board file


def test_cli_sim_json(tmp_path, capsys):
    """`dexh2r calibrate --sim --json`: the acceptance numbers."""
    js = tmp_path / "calib.json"
    assert cal.main(["--sim", "--views", "6", "--json", str(js), "--save-images", str(tmp_path / "img")]) == 0
    summary = json.loads(js.read_text())
    print(
        json.dumps(
            {k: summary[k] for k in ("calibration_trans_mm", "calibration_rot_deg", "reprojection_rms_px")}
        )
    )
    assert summary["cameras"] == 2
    assert summary["calibration_trans_mm"] <= MAX_TRANS_MM
    assert summary["calibration_rot_deg"] <= MAX_ROT_DEG
    assert set(summary["reprojection_rms_px"]) == {"camera_0", "camera_1"}
    assert "max error vs truth" in capsys.readouterr().out
    assert (tmp_path / "img" / "views.yaml").exists()


# ---- clear errors -------------------------------------------------------------------------------


def test_board_missing_from_one_camera_names_it(sim_run, config, tmp_path):
    rig, work, _, _ = sim_run
    views = cal.load_views(work / "views.yaml")
    w, h = rig.camera("camera_1").intrinsics.width, rig.camera("camera_1").intrinsics.height
    blank = tmp_path / "blank.png"
    cv2.imwrite(str(blank), np.full((h, w, 3), 90, np.uint8))  # the cell without the board
    for view in views:
        view.images["camera_1"] = blank
    intrinsics = {c.name: cal.CameraIdentity(c.intrinsics) for c in rig.cameras}
    with pytest.raises(cal.CalibrationError, match=r"camera 'camera_1': board not found in any view") as exc:
        cal.calibrate(views, intrinsics, config)
    assert "0 ChArUco corners" in str(exc.value) and "camera_0" not in str(exc.value)


def test_wrong_board_key_names_it(tmp_path):
    text = BOARD_FILE.read_text().replace("squares_x:", "squares_xx:")
    path = tmp_path / "board.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=r"board\.squares_xx: unknown key \(did you mean 'squares_x'\?\)"):
        cal.load_board_config(path)
    path.write_text(BOARD_FILE.read_text().replace("marker_length_m: 0.045", "marker_length_m: 0.07"))
    with pytest.raises(ConfigError, match=r"board: marker_length_m: must be smaller than square_length_m"):
        cal.load_board_config(path)
    path.write_text(BOARD_FILE.read_text().replace("DICT_5X5_100", "DICT_5X5_10"))
    with pytest.raises(ConfigError, match=r"dictionary: unknown ArUco dictionary 'DICT_5X5_10'"):
        cal.load_board_config(path)
    path.write_text(BOARD_FILE.read_text().replace("min_corners: 6", "min_corners: 3"))
    with pytest.raises(ConfigError, match=r"board.yaml: min_corners: PnP needs at least 4"):
        cal.load_board_config(path)


def test_missing_intrinsics_file(tmp_path, capsys):
    missing = tmp_path / "nope.yaml"
    with pytest.raises(ConfigError, match=r"intrinsics file not found: .*nope\.yaml"):
        cal.load_intrinsics([str(missing)])
    with pytest.raises(ConfigError, match=r"intrinsics file not found"):
        cal.load_intrinsics([f"camera_0={missing}"])
    views = tmp_path / "views.yaml"
    views.write_text(
        yaml.safe_dump({"views": [{"board_pose": _pose(np.eye(4)), "images": {"camera_0": "a.png"}}]})
    )
    argv = ["--images", str(views), "--intrinsics", str(missing), "--board", str(BOARD_FILE)]
    assert cal.main(argv) == 2
    assert "intrinsics file not found" in capsys.readouterr().err


def test_camera_without_intrinsics_is_named(config, tmp_path):
    views = [cal.View(name="v", T_world_board=np.eye(4), images={"camera_9": tmp_path / "x.png"})]
    with pytest.raises(cal.CalibrationError, match=r"camera\(s\) \['camera_9'\]: no intrinsics"):
        cal.calibrate(views, {"camera_0": cal.CameraIdentity(d455_intrinsics())}, config)


def test_views_file_errors(tmp_path):
    path = tmp_path / "views.yaml"
    path.write_text(yaml.safe_dump({"views": [{"flange_pose": _pose(np.eye(4)), "images": {"c": "a.png"}}]}))
    with pytest.raises(ConfigError, match="T_flange_board: required"):
        cal.load_views(path)
    both = {"board_pose": _pose(np.eye(4)), "flange_pose": _pose(np.eye(4)), "images": {"c": "a.png"}}
    path.write_text(yaml.safe_dump({"views": [both]}))
    with pytest.raises(ConfigError, match=r"views\[0\]: give exactly one of"):
        cal.load_views(path)
    path.write_text(yaml.safe_dump({"views": [{"board_pos": _pose(np.eye(4)), "images": {}}]}))
    with pytest.raises(
        ConfigError, match=r"views\[0\]\.board_pos: unknown key \(did you mean 'board_pose'\?\)"
    ):
        cal.load_views(path)
    bad = {"xyz": [0, 0, 0], "quat_xyzw": [0, 0, 0, 2]}
    path.write_text(yaml.safe_dump({"views": [{"board_pose": bad, "images": {"c": "a.png"}}]}))
    with pytest.raises(ConfigError, match=r"views\[0\]\.board_pose\.quat_xyzw: must be a unit quaternion"):
        cal.load_views(path)


def test_arm_joint_views_use_forward_kinematics(tmp_path):
    """Views given by arm joints: T_world_board = FK(q) (flange site) x T_flange_board."""
    from dexh2r_core.robot.description import RobotDescription

    q = [0.3, -1.2, 1.4, -1.6, -1.5, 0.2]
    T_flange_board = np.eye(4)
    T_flange_board[:3, 3] = [0.0, 0.0, 0.1]
    data = {
        "robot": "ur5_shadow",
        "T_flange_board": _pose(T_flange_board),
        "views": [{"arm_joints": q, "images": {"c": "a.png"}}],
    }
    path = tmp_path / "views.yaml"
    path.write_text(yaml.safe_dump(data))
    view = cal.load_views(path)[0]
    desc = RobotDescription.load("ur5_shadow")
    model = desc.mujoco_model()
    mj = mujoco.MjData(model)
    mj.qpos[desc.mujoco_qpos_index(model)[: desc.n_arm]] = q
    mujoco.mj_kinematics(model, mj)
    site = model.site(desc.flange_frame)
    expected = np.eye(4)
    expected[:3, :3] = mj.site_xmat[site.id].reshape(3, 3)
    expected[:3, 3] = mj.site_xpos[site.id]
    np.testing.assert_allclose(view.T_world_board, expected @ T_flange_board, atol=1e-12)
    data["views"][0]["arm_joints"] = q[:5]
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(ConfigError, match=r"views\[0\]\.arm_joints: ur5_shadow has 6 arm joints, got 5"):
        cal.load_views(path)


# ---- intrinsics formats and distortion -----------------------------------------------------------


def test_camera_info_formats(tmp_path):
    ros_yaml = {
        "image_width": 640,
        "image_height": 480,
        "camera_name": "cam",
        "camera_matrix": {"rows": 3, "cols": 3, "data": [385.0, 0, 321.0, 0, 384.0, 241.0, 0, 0, 1]},
        "distortion_model": "plumb_bob",
        "distortion_coefficients": {"rows": 1, "cols": 5, "data": [-0.05, 0.06, 0.0, 0.001, -0.02]},
    }
    message = {
        "width": 424,
        "height": 240,
        "k": [212.0, 0, 211.5, 0, 212.0, 119.5, 0, 0, 1],
        "d": [],
        "distortion_model": "plumb_bob",
    }
    (tmp_path / "a.yaml").write_text(yaml.safe_dump(ros_yaml))
    (tmp_path / "b.yaml").write_text(yaml.safe_dump(message))
    out = cal.load_intrinsics([f"left={tmp_path / 'a.yaml'}", f"right={tmp_path / 'b.yaml'}"])
    assert out["left"].intrinsics == CameraIntrinsics(
        640, 480, 385.0, 384.0, 321.0, 241.0, "plumb_bob", [-0.05, 0.06, 0.0, 0.001, -0.02]
    )
    assert out["right"].intrinsics == d455_intrinsics(424, 240)
    (tmp_path / "c.yaml").write_text(yaml.safe_dump({"width": 10}))
    with pytest.raises(ConfigError, match="not a camera_info file"):
        cal.load_intrinsics([f"x={tmp_path / 'c.yaml'}"])


@pytest.mark.parametrize(
    "model, D",
    [("plumb_bob", [-0.06, 0.07, 0.001, -0.0005, -0.02]), ("equidistant", [0.1, -0.05, 0.01, -0.002])],
)
def test_distortion_round_trip(model, D):
    intr = dataclasses.replace(d455_intrinsics(640, 480), distortion_model=model, D=D)
    ideal = np.array([[10.0, 12.0], [320.0, 240.0], [600.0, 50.0], [100.0, 460.0]])
    raw = cal._distort_points(ideal, intr)
    assert np.abs(raw - ideal).max() > 0.5  # the model does something
    np.testing.assert_allclose(cal._undistort_points(raw, intr), ideal, atol=1e-3)
