"""Teleop core: retargeting fidelity, the clutch-relative arm mapping, the deadman, the bench."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from dexh2r_control.controller import ArmHandController
from dexh2r_core.robot.description import RobotDescription
from dexh2r_sim.giver import OPEN_HAND, hand_keypoints_from_angles
from dexh2r_teleop.bench_teleop import measure_deadman, measure_retargeting, operator_angles
from dexh2r_teleop.teleop import (
    DEADMAN_REASON,
    ArmMapper,
    FingerRetargeter,
    TeleopConfig,
    TeleopInputError,
    TeleopSession,
    keypoints_in_wrist_frame,
)

TIPS = [4, 8, 12, 16, 20]


@pytest.fixture(scope="module")
def robot():
    return RobotDescription.load("ur5_shadow")


def _pose(p, rotvec=(0.0, 0.0, 0.0)) -> np.ndarray:
    T = np.eye(4)
    T[:3, :3] = Rotation.from_rotvec(rotvec).as_matrix()
    T[:3, 3] = p
    return T


def test_keypoints_move_into_the_wrist_frame_and_bad_input_is_named():
    W = _pose([0.5, 0.1, 0.3], [0.3, -0.2, 1.0])
    kp = hand_keypoints_from_angles({})
    back = keypoints_in_wrist_frame(kp @ W[:3, :3].T + W[:3, 3], W)
    np.testing.assert_allclose(back, kp, atol=1e-12)
    with pytest.raises(TeleopInputError, match="keypoints"):
        keypoints_in_wrist_frame(kp[:20], W)
    bad = W.copy()
    bad[0, 0] = np.nan
    with pytest.raises(TeleopInputError, match="wrist"):
        keypoints_in_wrist_frame(kp, bad)


def test_retargeting_follows_the_operator_fingers(robot):
    fingers = FingerRetargeter(robot, "vector", scaling=1.0)
    open_q = fingers(hand_keypoints_from_angles({}))
    curled = {f"{f}J{j}": OPEN_HAND[f"{f}J{j}"] + 1.0 for f in ("FF", "MF", "RF", "LF") for j in (1, 2, 3)}
    for _ in range(5):  # the low-pass filter settles
        curled_q = fingers(hand_keypoints_from_angles(curled))
    names = robot.hand_joint_names
    for f in ("FF", "MF", "RF", "LF"):
        flex = [names.index(f"rh_{f}J{j}") for j in (1, 2, 3)]
        assert curled_q[flex].sum() > open_q[flex].sum() + 1.0, f"{f}: the robot finger curls too"
        # The description's coupling rule holds on the output (distal J1 follows J2).
        full = robot.apply_couplings(np.concatenate([np.zeros(robot.n_arm), curled_q]))[robot.n_arm :]
        np.testing.assert_allclose(full, curled_q)
    # Half-curled fingers (the middle of the bench's sequence) are reached within 15 mm; a fist
    # is not (the coupled distal joints cannot match the operator's independent ones).
    half = {k: OPEN_HAND[k] + 0.5 * (v - OPEN_HAND[k]) for k, v in curled.items()}
    kp = hand_keypoints_from_angles(half)
    for _ in range(5):
        half_q = fingers(kp)
    err = np.linalg.norm(fingers.fingertips_in_palm(half_q) - (kp[TIPS] - kp[0]), axis=1)
    assert err.mean() < 0.015
    kp[8] = np.nan
    with pytest.raises(TeleopInputError, match="NaN"):
        fingers(kp)


def test_retargeting_bench_meets_the_fidelity_target():
    result = measure_retargeting(seconds=2.0)
    assert result["fingertip_error_mm_mean"] < 15.0
    assert result["frames"] == 60 and result["retarget_ms_p95"] > 0


def test_allegro_retargets_by_config_alone():
    allegro = RobotDescription.load("ur5_allegro")
    fingers = FingerRetargeter(allegro, "vector")
    q = fingers(hand_keypoints_from_angles(operator_angles(1.0)))
    assert q.shape == (allegro.n_hand,) and np.all(np.isfinite(q))


def test_arm_mapping_is_relative_scaled_and_box_limited():
    cfg = TeleopConfig(arm_scale=0.5, follow_rotation=True)
    arm = ArmMapper(cfg)
    W0, P0 = _pose([1.0, 0.0, 0.5]), _pose([0.5, 0.0, 0.4], [np.pi, 0, 0])
    arm.engage(W0, P0)
    T = arm.target(_pose([1.0, 0.1, 0.5], [0, 0, 0.3]))
    np.testing.assert_allclose(T[:3, 3], [0.5, 0.05, 0.4])
    np.testing.assert_allclose(
        T[:3, :3], Rotation.from_rotvec([0, 0, 0.3]).as_matrix() @ P0[:3, :3], atol=1e-12
    )
    far = arm.target(_pose([1.0, 5.0, 0.5]))
    assert far[1, 3] == pytest.approx(cfg.workspace_max[1])
    arm.disengage()
    with pytest.raises(RuntimeError):
        arm.target(W0)
    # By default the palm keeps its clutch-in orientation (the tracked wrist rotation is too noisy).
    still = ArmMapper(TeleopConfig())
    still.engage(W0, P0)
    np.testing.assert_allclose(still.target(_pose([1.0, 0.1, 0.5], [0, 0, 0.3]))[:3, :3], P0[:3, :3])
    # Followed rotation goes through a low-pass: half-way after one time constant's log(2).
    smooth = ArmMapper(TeleopConfig(follow_rotation=True, rotation_time_constant_s=0.3))
    smooth.engage(W0, P0)
    smooth.target(W0, now=0.0)
    T = smooth.target(_pose([1.0, 0.0, 0.5], [0, 0, 0.4]), now=0.3 * np.log(2))
    angle = Rotation.from_matrix(T[:3, :3] @ P0[:3, :3].T).magnitude()
    assert angle == pytest.approx(0.2, abs=1e-6)


def _session(robot):
    controller = ArmHandController(robot)
    controller.reset(robot.home(), 0.0)
    return controller, TeleopSession(robot, controller, TeleopConfig(finger_scale=1.0, engage_after_frames=1))


def _operator(y: float) -> tuple[np.ndarray, np.ndarray]:
    W = _pose([0.6, y, 0.4])
    return hand_keypoints_from_angles({}) @ W[:3, :3].T + W[:3, 3], W


def test_no_deadman_no_motion_and_engage_needs_a_heartbeat(robot):
    _, session = _session(robot)
    session.engage(0.0)
    assert session.update(0.0, *_operator(0.0)) is None  # never a heartbeat
    session.heartbeat(0.1)
    assert session.update(0.1, *_operator(0.0)) is not None
    assert session.update(0.12, None, None) is None, "hand out of view: nothing sent"


def test_deadman_loss_brakes_to_a_hold_and_an_operator_estop_is_not_cleared(robot):
    result = measure_deadman(speed_m_s=0.1)
    assert result["deadman_speed_at_cut_rad_s"] > 0.01, "the arm was moving when the deadman went"
    assert result["deadman_stop_ms"] is not None and result["deadman_stop_ms"] <= 100.0
    controller, session = _session(robot)
    session.heartbeat(0.0)
    session.engage(0.0)
    session.update(0.0, *_operator(0.0))
    assert not session.check_deadman(1.0)
    assert controller.safety.estopped and controller.safety.estop_reason == DEADMAN_REASON
    session.heartbeat(1.1)
    assert session.update(1.1, *_operator(0.0)) is None, "no re-engage without an explicit engage"
    session.engage(1.1)
    assert session.update(1.15, *_operator(0.0)) is not None and not controller.safety.estopped
    controller.estop("operator e-stop")
    session.disengage(1.2)
    session.engage(1.2)
    session.heartbeat(1.2)
    assert session.update(1.2, *_operator(0.0)) is None and "reset it first" in session.stop_reason
    assert controller.safety.estopped


def test_clutch_in_waits_for_a_steady_hand(robot):
    controller = ArmHandController(robot)
    controller.reset(robot.home(), 0.0)
    session = TeleopSession(robot, controller, TeleopConfig(finger_scale=1.0, engage_after_frames=3))
    session.heartbeat(0.0)
    session.engage(0.0)
    assert session.update(0.0, *_operator(0.0)) is None
    assert session.update(0.01, None, None) is None  # the hand lost for a frame: count restarts
    assert session.update(0.02, *_operator(0.0)) is None
    assert session.update(0.03, *_operator(0.0)) is None
    assert session.update(0.04, *_operator(0.0)) is not None


def test_teleop_in_the_sim_closes_the_loop(tmp_path):
    from dexh2r_teleop.sim_teleop import run_sim_teleop

    report = run_sim_teleop(tmp_path, seconds=2.5, video=False, quiet=True)
    assert report["tracked_fraction"] > 0.9
    assert report["operator_travel_mm"] > 40, "the operator moved"
    assert report["palm_tracking_mm_median"] < 60, "the robot palm followed the operator's hand"
    assert report["fingertip_error_mm_mean"] < 80
    assert (tmp_path / "report.json").exists() and (tmp_path / "teleop.png").exists()
