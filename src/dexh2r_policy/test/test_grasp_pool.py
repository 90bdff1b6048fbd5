"""Grasp pools: the stability test discriminates, a tiny pool end to end, the CLIs on tiny input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from dexh2r_core.robot.description import RobotDescription
from dexh2r_policy import datagen, eval_cli
from dexh2r_policy.grasps.pool import (
    GraspPool,
    PoolConfig,
    candidate_rotations,
    generate_pool,
    hand_vector,
)
from dexh2r_policy.grasps.stability import GraspTestbed, finger_joint_names
from dexh2r_sim.objects import ObjectLibrary


@pytest.fixture(scope="module")
def robot() -> RobotDescription:
    return RobotDescription.load("ur5_shadow")


@pytest.fixture(scope="module")
def ball():
    return ObjectLibrary().get("prim/sphere_ball")


@pytest.fixture(scope="module")
def bed(robot, ball) -> GraspTestbed:
    return GraspTestbed(robot, ball)


def _palm_on_ball(robot: RobotDescription, radius: float, back: float = 0.0) -> np.ndarray:
    """Hand root pose (object frame) whose palm faces the ball, grasp centre on the ball's centre."""
    c = np.asarray(PoolConfig().grasp_centre)
    T = np.eye(4)
    T[:3, 3] = [-c[0], radius - c[1] + 0.008 + back, -c[2]]  # palm surface 8 mm off the ball
    return T


def test_finger_joints_are_the_22_shadow_fingers(robot) -> None:
    names = finger_joint_names(robot)
    assert len(names) == 22
    assert names[0] == "rh_FFJ4" and names[-1] == "rh_THJ1"
    assert "rh_WRJ1" not in names and "rh_WRJ2" not in names


def test_candidates_cover_directions_and_spins(ball) -> None:
    R, d = candidate_rotations(ball.long_axis, PoolConfig())
    assert R.shape == (500, 3, 3) and d.shape == (500, 3)
    np.testing.assert_allclose(R @ R.transpose(0, 2, 1), np.broadcast_to(np.eye(3), R.shape), atol=1e-9)
    # the palm (its -y axis) faces the object along every approach direction
    np.testing.assert_allclose(R @ np.array([0.0, -1.0, 0.0]), -d, atol=1e-9)
    assert len(np.unique(np.round(d, 6), axis=0)) > 400


def test_stability_test_discriminates(robot, ball, bed) -> None:
    r = float(ball.extents.max()) / 2
    T = _palm_on_ball(robot, r)
    q_open = hand_vector(robot, PoolConfig().open_pose)
    q_closed = hand_vector(robot, PoolConfig().closed_pose)
    q = bed.close(T, q_open, q_closed)
    enveloping = bed.test(T, q)
    assert enveloping.succ6, enveloping.displacement
    far = T.copy()
    far[1, 3] += 0.15  # the same closed hand 15 cm away: nothing holds the ball
    away = bed.test(far, q)
    assert not away.succ1, away.displacement
    assert (away.displacement > 0.02).all()


def test_tiny_pool_end_to_end(robot, ball, tmp_path: Path) -> None:
    pool = generate_pool(robot, ball, n=4)
    assert len(pool) == 4 and pool.finger_q.shape == (4, 22)
    assert pool.succ1.any()
    assert (pool.pen_depth < 0.005).all()
    R = pool.T_obj_hand[:, :3, :3]
    np.testing.assert_allclose(np.linalg.det(R), 1.0, atol=1e-6)
    path = pool.save(tmp_path / "pool.npz")
    back = GraspPool.load(path)
    assert back.object_id == "prim/sphere_ball" and back.finger_joint_names == pool.finger_joint_names
    np.testing.assert_allclose(back.T_obj_hand, pool.T_obj_hand, atol=1e-6)
    np.testing.assert_array_equal(back.stable, pool.stable)
    assert back.pose9().shape == (4, 9)
    assert len(back.select(back.succ6)) == int(pool.succ6.sum())


def test_pool_load_errors(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="does not exist"):
        GraspPool.load(tmp_path / "none.npz")
    np.savez(tmp_path / "old.npz", version=0)
    with pytest.raises(ValueError, match="version 0"):
        GraspPool.load(tmp_path / "old.npz")


def test_datagen_cli(tmp_path: Path, capsys) -> None:
    out = tmp_path / "pools"
    args = ["grasps", "--objects", "prim/box_small", "--out", str(out), "--candidates", "2"]
    assert datagen.main(args) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["total"]["candidates"] == 2 and summary["per_object"][0]["object_id"] == "prim/box_small"
    assert GraspPool.load(out / "prim__box_small.npz").finger_q.shape == (2, 22)
    # a second run finds the pool and skips it
    assert datagen.main(args) == 0
    assert json.loads((out / "summary.json").read_text())["per_object"][0]["skipped"] is True
    assert datagen.main(["grasps", "--objects", "prim/nope", "--out", str(out)]) == 2
    assert "unknown object id" in capsys.readouterr().err


def test_eval_grasps_cli(tmp_path: Path, capsys) -> None:
    out = tmp_path / "grasps.json"
    rc = eval_cli.main(["grasps", "--json", str(out), "--objects", "prim/sphere_small", "--grasps", "2"])
    assert rc == 0
    result = json.loads(out.read_text())
    for key in ("succ6", "succ1", "pen_depth_mm", "diversity"):
        assert key in result
    assert result["generator"] == "pool" and result["grasps"] == 2
    assert 0.0 <= result["succ6"] <= result["succ1"] <= 1.0
    assert eval_cli.main(["nonsense"]) == 2
    assert "unknown evaluation" in capsys.readouterr().err
