"""Object symmetries: detection from the model and the nearest symmetric equivalent of a pose."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from dexh2r_perception.symmetry import Symmetry, near_symmetry_axes, rotation_error_deg
from dexh2r_sim.objects import ObjectLibrary, sample_surface_points


@pytest.fixture(scope="module")
def symmetries() -> dict[str, Symmetry]:
    lib = ObjectLibrary()
    return {
        o: Symmetry.of_object(lib.get(f"prim/{o}"))
        for o in ("cylinder_can", "box_small", "mug", "sphere_ball")
    }


def spun(R: np.ndarray, axis, deg: float) -> np.ndarray:
    return R @ Rotation.from_rotvec(np.radians(deg) * np.asarray(axis, float)).as_matrix()


def test_detected_symmetries(symmetries) -> None:
    assert len(symmetries["cylinder_can"].axes) == 1 and len(symmetries["cylinder_can"].discrete) >= 2
    assert not symmetries["box_small"].axes and len(symmetries["box_small"].discrete) >= 4
    assert symmetries["mug"].trivial
    assert len(symmetries["sphere_ball"].axes) == 3


def test_near_symmetry_axes_find_the_mug_body_and_leave_out_whole_axes() -> None:
    """Symmetric but for a small part: the mug's body about its axis (the handle breaks it); a
    can's axis is a whole symmetry, a box has neither."""
    lib = ObjectLibrary()

    def near(name: str) -> list:
        obj = lib.get(f"prim/{name}")
        a, _ = sample_surface_points(obj, 2048, seed=1)
        b, _ = sample_surface_points(obj, 2048, seed=2)
        return [axis.tolist() for axis in near_symmetry_axes(a, b)]

    assert near("mug") == [[0.0, 0.0, 1.0]]
    assert near("cylinder_can") == [] and near("box_small") == []


def test_nearest_undoes_a_spin_about_the_axis_and_a_half_turn(symmetries) -> None:
    R_prev = Rotation.random(random_state=3).as_matrix()
    can = symmetries["cylinder_can"]
    axis = can.axes[0]
    for deg in (37.0, 100.0, -150.0):
        R_new = (
            spun(R_prev, axis, deg) @ Rotation.from_rotvec(np.radians(2.0) * np.array([1, 0, 0])).as_matrix()
        )
        R = can.nearest(R_prev, R_new)
        assert rotation_error_deg(R_prev, R) < 2.5  # only the 2 deg tilt (observable) remains
        assert can.error_deg(R, R_new) < 1e-6  # R is an equivalent of R_new, not R_prev itself
    box = symmetries["box_small"]
    R = box.nearest(R_prev, spun(R_prev, [0, 0, 1], 185.0))
    assert rotation_error_deg(R_prev, R) == pytest.approx(5.0, abs=1e-6)
    mug = symmetries["mug"]
    assert rotation_error_deg(R_prev, mug.nearest(R_prev, spun(R_prev, [0, 0, 1], 40.0))) == pytest.approx(
        40.0
    )
    ball = symmetries["sphere_ball"]
    assert (
        rotation_error_deg(R_prev, ball.nearest(R_prev, Rotation.random(random_state=4).as_matrix())) < 1e-9
    )


def test_distinct_rotations_leave_out_the_spins_about_an_axis(symmetries) -> None:
    """What a grasp pool is closed under (DynamicGraspConfig.symmetric_pool): a can's flip end for
    end (its spins about the axis are already every rotation about it), all of a box's discrete
    symmetries, nothing for a mug or a ball (the ball's pose is frozen instead)."""
    can = symmetries["cylinder_can"]
    rots = can.distinct_rotations()
    assert len(rots) == 2
    np.testing.assert_allclose(rots[0], np.eye(3))
    np.testing.assert_allclose(rots[1] @ can.axes[0], -can.axes[0], atol=1e-9)
    box = symmetries["box_small"]
    rots = box.distinct_rotations()
    assert len(rots) == len(box.discrete) >= 4
    np.testing.assert_allclose(rots[0], np.eye(3))
    for o in ("mug", "sphere_ball"):
        np.testing.assert_allclose(symmetries[o].distinct_rotations(), np.eye(3)[None])
