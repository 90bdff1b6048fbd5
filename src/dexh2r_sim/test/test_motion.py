"""Giver trajectories: minimum-jerk reach, hold tremor, Hard motions' speed/box bounds, determinism."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from dexh2r_sim.motion import (
    GiverTrajectory,
    MotionSpec,
    Pose,
    min_jerk,
    min_jerk_derivatives,
    min_jerk_peak_speed,
    min_jerk_pose,
    withdraw_target,
)

START = Pose.from_xyz_rpy_deg([1.10, 0.05, 0.20], [-100, 0, 90])
OFFER = Pose.from_xyz_rpy_deg([0.62, 0.00, 0.35], [-120, 0, 90])
DT = 0.005


def _sample(traj: GiverTrajectory, t0: float, t1: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    times = np.arange(t0, t1, DT)
    pos, quat = traj.sample(times)
    return times, pos, quat


def _speeds(pos: np.ndarray) -> np.ndarray:
    return np.linalg.norm(np.diff(pos, axis=0), axis=1) / DT


def test_min_jerk_profile_endpoints():
    assert min_jerk(0.0) == pytest.approx(0.0)
    assert min_jerk(1.0) == pytest.approx(1.0)
    assert min_jerk(0.5) == pytest.approx(0.5)
    assert min_jerk(-1.0) == pytest.approx(0.0) and min_jerk(2.0) == pytest.approx(1.0)
    ds, dds = min_jerk_derivatives(np.array([0.0, 1.0]))
    np.testing.assert_allclose(ds, 0.0, atol=1e-12)
    np.testing.assert_allclose(dds, 0.0, atol=1e-12)
    tau = np.linspace(0, 1, 101)
    assert np.all(np.diff(min_jerk(tau)) >= 0)  # monotone: no overshoot


def test_min_jerk_pose_endpoints_and_zero_end_velocities():
    T = 1.2
    a, b = min_jerk_pose(START, OFFER, 0.0, T), min_jerk_pose(START, OFFER, T, T)
    np.testing.assert_allclose(a.position, START.position, atol=1e-12)
    np.testing.assert_allclose(b.position, OFFER.position, atol=1e-12)
    assert (b.rotation.inv() * OFFER.rotation).magnitude() < 1e-9
    eps = 1e-4
    for t in (0.0, T):
        v = (
            min_jerk_pose(START, OFFER, t + eps, T).position
            - min_jerk_pose(START, OFFER, t - eps, T).position
        ) / (2 * eps)
        assert np.linalg.norm(v) < 1e-3
    times = np.arange(0.0, T, 1e-3)
    pos = np.array([min_jerk_pose(START, OFFER, t, T).position for t in times])
    peak = np.max(np.linalg.norm(np.diff(pos, axis=0), axis=1) / 1e-3)
    expected = min_jerk_peak_speed(float(np.linalg.norm(OFFER.position - START.position)), T)
    assert peak == pytest.approx(expected, rel=1e-3)


def test_reach_phase_of_trajectory():
    m = MotionSpec(type="hold", reach_s=1.3, start_delay_s=0.2)
    traj = GiverTrajectory(START, OFFER, m, seed=3, horizon_s=6.0)
    assert traj.reach_end_s == pytest.approx(1.5)
    np.testing.assert_allclose(traj.pose(0.0).position, START.position, atol=1e-12)
    np.testing.assert_allclose(traj.pose(0.1).position, START.position, atol=1e-12)  # still waiting
    np.testing.assert_allclose(traj.pose(traj.reach_end_s).position, OFFER.position, atol=1e-9)
    for t in (0.2, traj.reach_end_s):
        lin, ang = traj.velocity(t)
        assert np.linalg.norm(lin) < 0.01 and np.linalg.norm(ang) < 0.05
    # Continuous across the reach -> offer boundary.
    before, after = traj.pose(traj.reach_end_s - 1e-4), traj.pose(traj.reach_end_s + 1e-4)
    assert np.linalg.norm(after.position - before.position) < 1e-4


def test_hold_is_small_tremor():
    m = MotionSpec(type="hold", tremor_mm=2.5)
    traj = GiverTrajectory(START, OFFER, m, seed=0, horizon_s=10.0)
    _, pos, quat = _sample(traj, traj.reach_end_s, 10.0)
    dev = np.linalg.norm(pos - OFFER.position, axis=1)
    assert dev.max() <= 2.5e-3 + 1e-9
    assert dev.max() > 0.3e-3  # it does move a little
    angles = (Rotation.from_quat(quat) * OFFER.rotation.inv()).magnitude()
    assert np.degrees(angles.max()) <= m.rotation_deg + 1e-6
    assert _speeds(pos).max() < 0.05


@pytest.mark.parametrize("mtype", ["drift", "arc", "random_walk"])
@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_hard_motions_respect_speed_box_and_rotation(mtype, seed):
    m = MotionSpec(type=mtype, speed=0.2, speed_range=(0.05, 0.25), box=(0.10, 0.12, 0.06), rotation_deg=5.0)
    traj = GiverTrajectory(START, OFFER, m, seed=seed, horizon_s=12.0)
    times, pos, quat = _sample(traj, traj.reach_end_s, 12.0)
    offset = pos - OFFER.position
    assert np.all(np.abs(offset) <= np.asarray(m.box) + 1e-6), "left the motion box"
    speed = _speeds(pos)
    vmax = m.speed if mtype != "random_walk" else m.speed_range[1]
    assert speed.max() <= vmax * 1.02
    assert speed.max() >= 0.8 * vmax if mtype != "random_walk" else speed.max() > m.speed_range[0]
    if mtype == "random_walk":  # after the 0.5 s blend-in it never drops below the minimum speed
        settled = times[1:] > traj.reach_end_s + 0.55
        assert speed[settled].min() >= m.speed_range[0] * 0.98
    accel = np.linalg.norm(np.diff(pos, n=2, axis=0), axis=1) / DT**2
    assert accel.max() < 5.0
    angles = (Rotation.from_quat(quat) * OFFER.rotation.inv()).magnitude()
    assert np.degrees(angles.max()) <= 5.0 + 1e-6
    assert np.linalg.norm(offset, axis=1).max() > 0.02  # really moves


def test_trajectories_are_deterministic_for_a_seed():
    m = MotionSpec(type="random_walk")
    a = GiverTrajectory(START, OFFER, m, seed=42, horizon_s=8.0)
    b = GiverTrajectory(START, OFFER, m, seed=42, horizon_s=8.0)
    c = GiverTrajectory(START, OFFER, m, seed=43, horizon_s=8.0)
    times = np.linspace(0.0, 8.0, 200)
    pa, qa = a.sample(times)
    pb, qb = b.sample(times)
    pc, _ = c.sample(times)
    np.testing.assert_array_equal(pa, pb)
    np.testing.assert_array_equal(qa, qb)
    assert np.abs(pa - pc).max() > 1e-3


def test_drift_direction_is_used():
    m = MotionSpec(type="drift", speed=0.1, direction=(0.0, 1.0, 0.0))
    traj = GiverTrajectory(START, OFFER, m, seed=0, horizon_s=6.0)
    _, pos, _ = _sample(traj, traj.reach_end_s, traj.reach_end_s + 0.8)
    d = pos[-1] - pos[0]
    assert d[1] > 0.05 and abs(d[0]) < 1e-6 and abs(d[2]) < 1e-6


@pytest.mark.parametrize(
    ("kwargs", "key"),
    [
        ({"type": "teleport"}, "type"),
        ({"type": "drift", "speed": 0.0}, "speed"),
        ({"speed_range": (0.3, 0.1)}, "speed_range"),
        ({"box": (0.1, 0.0, 0.1)}, "box"),
        ({"reach_s": 0.0}, "reach_s"),
    ],
)
def test_motion_spec_validation_names_the_key(kwargs, key):
    with pytest.raises(ValueError, match=key):
        MotionSpec(**kwargs)


def test_withdraw_target_goes_back_toward_start():
    target = withdraw_target(OFFER, START, 0.3)
    back = START.position - OFFER.position
    back[2] = 0
    step = target.position - OFFER.position
    assert np.linalg.norm(step[:2]) == pytest.approx(0.3, abs=1e-9)
    assert step[:2] @ back[:2] > 0
    assert step[2] < 0
