"""Rotational symmetries of an object model, and pose continuity across them (ROS-free).

    sym = Symmetry.of_object(sim_object)          # from two samplings of the model's surface
    sym.error_deg(R_gt, R_est)                    # rotation error modulo the symmetries (bench)
    R = sym.nearest(R_prev, R_new)                # R_new's symmetric equivalent nearest R_prev

A tracker may report a symmetric object in any of its symmetric poses, and a can's pose about its
axis is not observable at all: the object tracker's estimate spins about it between frames. A
consumer that attaches object-frame things to the pose (DynamicGrasp's grasp pool) keeps them
still with `nearest`: the equivalent pose closest to the one it used last.
"""

from __future__ import annotations

import numpy as np
from scipy.spatial import cKDTree
from scipy.spatial.transform import Rotation

_CUBE = Rotation.create_group("O").as_matrix()


def rotation_error_deg(R_gt: np.ndarray, R_est: np.ndarray) -> float:
    return float(np.degrees(Rotation.from_matrix(R_gt.T @ R_est).magnitude()))


def near_symmetry_axes(
    points_a: np.ndarray, points_b: np.ndarray, min_fraction: float = 0.85, tol_m: float = 0.0005
) -> list[np.ndarray]:
    """Object-frame axes (x, y, z through the origin) about which turning the surface leaves at
    least `min_fraction` of it in place (within the sampling gap) but not all of it: a mug's body
    with its handle. A tracker sees such an object's turn about the axis only through the small
    part that breaks the symmetry (the handle, often held or half hidden), and point-to-plane ICP
    settles in the body's local minima; `ObjectTracker` searches the turn about these axes."""
    tree = cKDTree(points_a)
    gap = np.percentile(tree.query(points_b, k=1)[0], [90, 98])  # the sampling gap: most, the tail
    out = []
    for axis in np.eye(3):
        turned = [points_b @ Rotation.from_rotvec(axis * np.radians(a)).as_matrix().T for a in (37.0, 71.0)]
        dist = [tree.query(p, k=1)[0] for p in turned]
        fractions = [float(np.mean(d <= 1.3 * gap[0] + tol_m)) for d in dist]
        whole = all(np.percentile(d, 98) <= 1.3 * gap[1] + tol_m for d in dist)  # Symmetry.axes' test
        if min(fractions) >= min_fraction and not whole:
            out.append(axis)
    return out


class Symmetry:
    """Proper rotational symmetries of an object, detected from two samplings of its surface.

    `discrete`: [S, 3, 3] rotations of the cube group (object frame) that map the surface onto
    itself (identity included); `axes`: object-frame axes with continuous symmetry (the axes
    symmetric but for a small part: `near_symmetry_axes`).
    """

    def __init__(self, points_a: np.ndarray, points_b: np.ndarray, tol_m: float = 0.0005) -> None:
        tree = cKDTree(points_a)

        def spread(points: np.ndarray) -> np.ndarray:  # median and 98th percentile NN distance
            return np.percentile(tree.query(points, k=1)[0], [50, 98])

        baseline = spread(points_b)  # two samplings of one surface: the sampling gap

        def invariant(R: np.ndarray) -> bool:
            # The tail matters: an upside-down mug differs only in its small bottom disc.
            return bool(np.all(spread(points_b @ R.T) <= 1.3 * baseline + tol_m))

        self.discrete = np.array([R for R in _CUBE if invariant(R)])
        self.axes = []
        for axis in np.eye(3):
            if all(invariant(Rotation.from_rotvec(axis * np.radians(a)).as_matrix()) for a in (37.0, 71.0)):
                self.axes.append(axis)

    def error_deg(self, R_gt: np.ndarray, R_est: np.ndarray) -> float:
        if len(self.axes) >= 2:
            return 0.0
        if len(self.axes) == 1:
            a = self.axes[0]
            est = R_est @ a
            return min(
                float(np.degrees(np.arccos(np.clip((R_gt @ S @ a) @ est, -1.0, 1.0)))) for S in self.discrete
            )
        return min(rotation_error_deg(R_gt @ S, R_est) for S in self.discrete)

    @classmethod
    def of_object(cls, sim_object, n: int = 2048) -> Symmetry:
        """From two samplings (seeds 1, 2) of a `dexh2r_sim.objects` model's surface."""
        from dexh2r_sim.objects import sample_surface_points

        a, _ = sample_surface_points(sim_object, n, seed=1)
        b, _ = sample_surface_points(sim_object, n, seed=2)
        return cls(a, b)

    @property
    def trivial(self) -> bool:
        return len(self.discrete) <= 1 and not self.axes

    def distinct_rotations(self) -> np.ndarray:
        """[K, 3, 3]: the discrete symmetries that are not the same rotation about a continuous
        axis (identity first): a can's {identity, end-for-end flip}, a box's identity and half
        turns; only the identity with two or more axes (a ball: every rotation)."""
        if len(self.axes) >= 2 or not len(self.discrete):
            return np.eye(3)[None]
        out: list[np.ndarray] = [np.eye(3)]
        for S in self.discrete:
            if len(self.axes) == 1:  # equivalent if it sends the axis where a kept one does
                a = self.axes[0]
                if any(np.allclose(S @ a, R @ a, atol=1e-6) for R in out):
                    continue
            elif any(np.allclose(S, R, atol=1e-6) for R in out):
                continue
            out.append(S)
        return np.array(out)

    def nearest(self, R_prev: np.ndarray, R_new: np.ndarray) -> np.ndarray:
        """R_new times the symmetry (object frame) that brings it nearest R_prev: among the discrete
        ones, and about a continuous axis by the angle that best aligns the two (closed form)."""
        if len(self.axes) >= 2:  # every rotation is a symmetry (a ball)
            return np.array(R_prev, dtype=np.float64, copy=True)
        best, best_err = R_new, np.inf
        for S in self.discrete if len(self.discrete) else np.eye(3)[None]:
            R = R_new @ S
            if len(self.axes) == 1:
                a = self.axes[0]
                M = R.T @ R_prev  # the rotation still to go, object frame
                w = np.array([M[2, 1] - M[1, 2], M[0, 2] - M[2, 0], M[1, 0] - M[0, 1]])
                theta = np.arctan2(a @ w, np.trace(M) - a @ M @ a)
                R = R @ Rotation.from_rotvec(theta * a).as_matrix()
            err = rotation_error_deg(R_prev, R)
            if err < best_err:
                best, best_err = R, err
        return best
