import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from dexh2r_core.transforms import (
    from_xyz_rpy,
    invert,
    is_finite_transform,
    make_transform,
    quat_wxyz,
    quat_xyzw,
    rotation_angle,
    to_position_quat,
    transform_points,
)


def test_round_trips():
    rng = np.random.default_rng(0)
    for _ in range(20):
        q = Rotation.random(random_state=rng).as_quat()
        p = rng.normal(size=3)
        T = make_transform(p, q)
        p2, q2 = to_position_quat(T)
        np.testing.assert_allclose(p2, p)
        assert rotation_angle(T[:3, :3], make_transform(p2, q2)[:3, :3]) < 1e-9
        np.testing.assert_allclose(invert(T) @ T, np.eye(4), atol=1e-12)
        np.testing.assert_allclose(quat_xyzw(quat_wxyz(q)), q)


def test_rpy_matches_urdf_convention():
    T = from_xyz_rpy([1, 2, 3], [0.0, 0.0, np.pi / 2])
    np.testing.assert_allclose(transform_points(T, np.array([[1.0, 0, 0]])), [[1, 3, 3]], atol=1e-12)


@pytest.mark.parametrize(
    "bad",
    [np.full((4, 4), np.nan), np.eye(3), np.diag([2.0, 1.0, 1.0, 1.0]), np.diag([-1.0, 1.0, 1.0, 1.0])],
)
def test_rejects_invalid_transforms(bad):
    assert not is_finite_transform(bad)
    assert is_finite_transform(np.eye(4))
