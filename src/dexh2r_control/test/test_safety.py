"""Safety filter: each limit, input rejection, e-stop latch, watchdog, separation scaling, workspace."""

from dataclasses import replace

import numpy as np
import pytest

from dexh2r_control.safety import InvalidTargetError, SafetyConfig, SafetyFilter, ssm_scale
from dexh2r_core.robot.description import RobotDescription

DT = 0.004


@pytest.fixture(scope="module")
def robot() -> RobotDescription:
    return RobotDescription.load("ur5_shadow")


def make(robot, **overrides) -> SafetyFilter:
    sf = SafetyFilter(robot, replace(SafetyConfig(), **overrides))
    sf.reset(robot.home())
    return sf


def run(sf, q_des, ticks, t0=0.0, fresh=True):
    """Step toward a fixed desired position; returns positions, velocities, accelerations."""
    qs, vs, acc = [], [], []
    for k in range(ticks):
        now = t0 + (k + 1) * DT
        cmd = sf.step(q_des, now, DT, target_stamp=now if fresh else t0)
        qs.append(cmd.positions)
        vs.append(cmd.velocities)
        acc.append(cmd.accelerations)
    return np.array(qs), np.array(vs), np.array(acc)


def test_position_limits_hold(robot):
    sf = make(robot)
    q_des = robot.home()
    q_des[2] = robot.upper[2] + 1.0  # elbow beyond its limit
    q_des[10] = robot.upper[10] + 1.0  # a finger beyond its limit
    qs, _, _ = run(sf, q_des, 600)
    assert np.all(qs <= sf.upper + 1e-9) and np.all(qs >= sf.lower - 1e-9)
    assert qs[-1, 10] == pytest.approx(sf.upper[10], abs=1e-6)
    assert sf.status.position_limited


WIDE = {"workspace_min": (-9.0, -9.0, -9.0), "workspace_max": (9.0, 9.0, 9.0)}


def test_velocity_and_acceleration_limits(robot):
    sf = make(robot, **WIDE)
    q_des = robot.home()
    q_des[:6] += 2.0  # far away: saturates velocity after ramping at the acceleration limit
    q_des[6:] = robot.upper[6:]
    _, vs, acc = run(sf, q_des, 500)
    assert np.all(np.abs(vs) <= sf.v_max + 1e-9)
    assert np.all(np.abs(acc) <= sf.a_max + 1e-6)
    assert np.max(np.abs(vs[:, 0])) == pytest.approx(sf.v_max[0], rel=1e-6)  # reaches the limit


def test_velocity_bounded_near_joint_limit(robot):
    """Braking bound: arriving at a limit at speed never overshoots it."""
    sf = make(robot, **WIDE)
    q_des = robot.home()
    q_des[0] = 10.0  # beyond +2 pi
    sf.q[0] = sf.upper[0] - 0.5
    qs, _, acc = run(sf, q_des, 800)
    assert np.all(qs[:, 0] <= sf.upper[0] + 1e-9)
    assert np.all(np.abs(acc[:, 0]) <= sf.a_max[0] + 1e-6)


@pytest.mark.parametrize(
    "bad, match",
    [
        (lambda q: np.where(np.arange(len(q)) == 3, np.nan, q), "NaN or Inf at index \\[3\\]"),
        (lambda q: np.where(np.arange(len(q)) == 0, np.inf, q), "NaN or Inf"),
        (lambda q: q[:-1], "expected 30 values"),
        (lambda q: np.stack([q, q]), "expected 30 values"),
    ],
)
def test_rejects_invalid_targets(robot, bad, match):
    sf = make(robot)
    before = sf.command()
    with pytest.raises(InvalidTargetError, match=match):
        sf.step(bad(robot.home()), 0.004, DT, 0.004)
    after = sf.command()
    np.testing.assert_array_equal(before.positions, after.positions)
    np.testing.assert_array_equal(before.velocities, after.velocities)


def test_estop_latches_until_reset(robot):
    sf = make(robot, **WIDE)
    q_des = robot.home()
    q_des[:6] += 1.0
    _, vs, _ = run(sf, q_des, 100)
    assert np.max(np.abs(vs[-1])) > 0.3
    sf.estop("test")
    qs, vs, acc = run(sf, q_des, 200, t0=0.4)
    assert np.all(np.abs(acc) <= sf.a_max + 1e-6)  # a controlled (synchronised) stop
    assert np.all(vs[-1] == 0.0) and sf.status.estop
    np.testing.assert_array_equal(qs[-1], qs[-50])  # stays stopped however long targets keep coming
    qs2, _, _ = run(sf, q_des, 50, t0=1.2)
    np.testing.assert_array_equal(qs2[-1], qs[-1])
    sf.reset_estop()
    qs3, _, _ = run(sf, q_des, 50, t0=1.4)
    assert np.linalg.norm(qs3[-1] - qs[-1]) > 0.01


def test_watchdog_decelerates_to_hold_within_limits(robot):
    sf = make(robot, watchdog_timeout_s=0.1, **WIDE)
    q_des = robot.home()
    q_des[:6] += 1.0
    run(sf, q_des, 60)  # moving at ~0.24 s
    t0 = 60 * DT
    moving = np.max(np.abs(sf.v))
    assert moving > 0.5
    # Targets stop: the last one arrived at t0; keep calling with that stamp.
    qs, acc = [], []
    stopped_at = v_at_timeout = None
    for k in range(1, 200):
        now = t0 + k * DT
        v_before = sf.v.copy()
        cmd = sf.step(q_des, now, DT, target_stamp=t0)
        if v_at_timeout is None and sf.status.watchdog:
            v_at_timeout = v_before
        qs.append(cmd.positions)
        acc.append(cmd.accelerations)
        if stopped_at is None and cmd.holding:
            stopped_at = now - t0
    acc = np.array(acc)
    assert np.all(np.abs(acc) <= sf.a_max + 1e-6)
    # Moving until the timeout, then a synchronised brake: max(v / a_max) seconds.
    expected = 0.1 + np.max(np.abs(v_at_timeout) / sf.a_max)
    assert stopped_at is not None and stopped_at <= expected + 2 * DT
    assert sf.status.watchdog
    np.testing.assert_array_equal(qs[-1], qs[-20])


def test_ssm_scale_function():
    assert ssm_scale(1.0, 0.3, 0.1) == 1.0
    assert ssm_scale(0.2, 0.3, 0.1) == pytest.approx(0.5)
    assert ssm_scale(0.1, 0.3, 0.1) == 0.0
    assert ssm_scale(float("inf"), 0.3, 0.1) == 1.0


def _keypoints_at(sf, q, distance):
    """21 keypoints with the nearest exactly `distance` above the palm, plus unseen (NaN) ones."""
    palm = sf.points.palm(q)
    kp = np.full((21, 3), np.nan)
    kp[:5] = palm + np.array([0.0, 0.0, distance]) + np.arange(5)[:, None] * [0.0, 0.0, 0.02]
    return kp


def test_ssm_scales_arm_speed_with_distance(robot):
    sf = make(robot)
    q = sf.q.copy()
    sf.set_keypoints(_keypoints_at(sf, q, 0.20), stamp=0.0)
    scale, d = sf.speed_scale(q, now=0.01)
    assert d <= 0.20 + 1e-9  # another robot point may be closer than the palm
    assert 0.0 < scale < 1.0
    q_des = q.copy()
    q_des[:6] += 1.0
    kp = _keypoints_at(sf, q, 0.20)
    scales = []
    for k in range(150):
        now = (k + 1) * DT
        sf.set_keypoints(kp, stamp=now)  # the giver's hand stays where it is
        cmd = sf.step(q_des, now, DT, target_stamp=now)
        scales.append(cmd.status.speed_scale)
        assert np.all(np.abs(cmd.velocities[:6]) <= sf.v_max[:6] * cmd.status.speed_scale + 1e-9)
    assert 0.0 < min(scales) < 0.6 < max(scales)  # the scale follows the distance as the arm moves


def test_ssm_protective_stop_outside_grasp_phase_only(robot):
    sf = make(robot)
    q = sf.q.copy()
    q_des = q.copy()
    q_des[:6] += 0.5
    sf.set_keypoints(_keypoints_at(sf, q, 0.05), stamp=0.0)
    qs, vs, _ = run(sf, q_des, 50)
    assert sf.status.protective_stop and np.all(vs == 0.0)
    np.testing.assert_array_equal(qs[-1], q)
    sf.grasp_phase = True  # reaching into the giver's hand is allowed, slowly
    cmd = sf.step(q_des, 0.3, DT, target_stamp=0.3)
    assert not cmd.status.protective_stop
    assert cmd.status.speed_scale == pytest.approx(sf.config.grasp_min_scale)
    _, vs, _ = run(sf, q_des, 40, t0=0.3)
    assert 0 < np.max(np.abs(vs[:, :6])) <= sf.v_max[0] * sf.config.grasp_min_scale + 1e-9


def test_ssm_ignores_nan_and_stale_keypoints(robot):
    sf = make(robot)
    sf.set_keypoints(np.full((21, 3), np.nan), stamp=0.0)
    assert sf.speed_scale(sf.q, now=0.01) == (1.0, float("inf"))
    sf.set_keypoints(_keypoints_at(sf, sf.q, 0.05), stamp=0.0)
    assert sf.speed_scale(sf.q, now=0.01)[0] == 0.0
    assert sf.speed_scale(sf.q, now=sf.config.keypoint_max_age_s + 0.1)[0] == 1.0


def test_workspace_box_stops_palm_at_face(robot):
    from dexh2r_control.ik import ArmIk

    home = robot.home()
    ik = ArmIk(robot, robot.config.hand.palm_link)
    palm = ik.frame_pose(home)
    z_min = palm[2, 3] - 0.05
    sf = make(robot, workspace_min=(-1.0, -1.0, z_min))
    target = palm.copy()
    target[2, 3] -= 0.25  # 20 cm below the box floor
    q_des = home.copy()
    q_des[:6] = ik.solve(target, home).q_arm
    qs, vs, _ = run(sf, q_des, 500)
    zs = np.array([sf.points.palm(q)[2] for q in qs[::5]])
    assert zs.min() >= z_min - 2e-3  # joint-space stop prediction: mm-level error
    assert sf.status.workspace_stop and np.all(vs[-1] == 0.0)
    # Motion back into the box is allowed.
    qs2, _, _ = run(sf, home, 300, t0=2.0)
    assert np.linalg.norm(qs2[-1] - home) < 0.05
