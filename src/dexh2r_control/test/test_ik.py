"""Arm IK: reaches poses produced by FK, respects limits, reports failure for unreachable targets."""

import time

import numpy as np
import pytest

from dexh2r_control.ik import ArmIk
from dexh2r_core.robot.description import RobotDescription


@pytest.fixture(scope="module")
def ik() -> ArmIk:
    return ArmIk(RobotDescription.load("ur5_shadow"), frame="rh_palm")


def test_round_trip_from_fk(ik):
    rng = np.random.default_rng(0)
    home = ik.robot.home()
    solved = 0
    for _ in range(20):
        q_goal = home.copy()
        q_goal[:6] += rng.uniform(-0.4, 0.4, size=6)
        target = ik.frame_pose(q_goal)
        result = ik.solve(target, home)
        q = home.copy()
        q[:6] = result.q_arm
        reached = ik.frame_pose(q)
        if result.success:
            solved += 1
            assert np.linalg.norm(reached[:3, 3] - target[:3, 3]) < 1e-3
        assert np.all(result.q_arm >= ik.lower - 1e-9) and np.all(result.q_arm <= ik.upper + 1e-9)
    assert solved >= 18


def test_unreachable_target_is_reported(ik):
    target = np.eye(4)
    target[:3, 3] = [3.0, 0.0, 0.5]
    result = ik.solve(target, ik.robot.home())
    assert not result.success and result.position_error_m > 1.0


def test_rejects_nan_target(ik):
    with pytest.raises(ValueError, match="finite"):
        ik.solve(np.full((4, 4), np.nan), ik.robot.home())


def test_warm_start_is_fast(ik):
    home = ik.robot.home()
    q_goal = home.copy()
    q_goal[:6] += 0.05
    target = ik.frame_pose(q_goal)
    first = ik.solve(target, home)
    q = home.copy()
    q[:6] = first.q_arm
    t0 = time.perf_counter()
    again = ik.solve(target, q)
    elapsed = time.perf_counter() - t0
    assert again.iterations <= 2
    print(f"warm-started IK: {again.iterations} iterations, {elapsed * 1e3:.3f} ms")
