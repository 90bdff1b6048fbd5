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


def test_extra_joints_reach_a_pose_with_a_joint_at_its_limit():
    """Extra IK joints (the hand's wrist) move within their limits; a joint at its limit is left
    out of the step instead of being clipped: clipped, its share of the step (and of the posture
    task) was lost every iteration and the IK stalled 30 mrad off (a closed-loop case)."""
    from dexh2r_control.ik import IkConfig

    robot = RobotDescription.load("ur5_shadow")
    ik = ArmIk(robot, "rh_palm", IkConfig(extra_joints=("rh_WRJ2", "rh_WRJ1"), max_iterations=50))
    seed = robot.home()
    # closed loop, easy_box_center: wrist 2 near the singularity, rh_WRJ2 at its upper limit (0.14)
    seed[:8] = [0.1732, -1.6552, 1.4835, 0.3405, -3.6728, -0.3805, 0.14, -0.2499]
    target = np.eye(4)
    R = np.array([[0.49953, 0.24771, 0.83013], [0.7262, 0.40275, -0.55717], [-0.47235, 0.88116, 0.0213]])
    u, _, vt = np.linalg.svd(R)
    target[:3, :3] = u @ vt
    target[:3, 3] = [0.39086, 0.07688, 0.47668]
    result = ik.solve(target, seed)
    assert result.success, (result.position_error_m, result.rotation_error_rad)
    assert result.q_extra.shape == (2,)
    lo, hi = robot.lower[6:8], robot.upper[6:8]
    assert np.all(result.q_extra >= lo - 1e-9) and np.all(result.q_extra <= hi + 1e-9)
    with pytest.raises(KeyError):
        ArmIk(robot, "rh_palm", IkConfig(extra_joints=("shoulder_pan_joint",)))
