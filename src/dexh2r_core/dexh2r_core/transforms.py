"""SE(3) helpers shared by every package (numpy only).

Conventions: 4x4 homogeneous matrices `T_a_b` map points in frame b to frame a
(`p_a = T_a_b @ p_b`). Quaternions are (x, y, z, w) like ROS messages and scipy; MuJoCo's
(w, x, y, z) order is converted only at the MuJoCo boundary with `quat_wxyz`/`quat_xyzw`.
"""

from __future__ import annotations

import numpy as np
from scipy.spatial.transform import Rotation


def make_transform(position=(0.0, 0.0, 0.0), quat_xyzw=(0.0, 0.0, 0.0, 1.0)) -> np.ndarray:
    T = np.eye(4)
    T[:3, :3] = Rotation.from_quat(np.asarray(quat_xyzw, dtype=float)).as_matrix()
    T[:3, 3] = position
    return T


def from_xyz_rpy(xyz, rpy) -> np.ndarray:
    """URDF-style pose (fixed-axis roll, pitch, yaw) -> 4x4."""
    T = np.eye(4)
    T[:3, :3] = Rotation.from_euler("xyz", np.asarray(rpy, dtype=float)).as_matrix()
    T[:3, 3] = xyz
    return T


def to_position_quat(T: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """4x4 -> (position, quaternion xyzw)."""
    return np.array(T[:3, 3]), Rotation.from_matrix(T[:3, :3]).as_quat()


def invert(T: np.ndarray) -> np.ndarray:
    out = np.eye(4)
    R = T[:3, :3]
    out[:3, :3] = R.T
    out[:3, 3] = -R.T @ T[:3, 3]
    return out


def transform_points(T: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Apply a 4x4 to [..., 3] points."""
    return points @ T[:3, :3].T + T[:3, 3]


def quat_wxyz(quat_xyzw) -> np.ndarray:
    x, y, z, w = quat_xyzw
    return np.array([w, x, y, z], dtype=float)


def quat_xyzw(quat_wxyz) -> np.ndarray:
    w, x, y, z = quat_wxyz
    return np.array([x, y, z, w], dtype=float)


def rotation_angle(R_a: np.ndarray, R_b: np.ndarray) -> float:
    """Angle (rad) of the rotation between two rotation matrices."""
    # Via the rotation vector: arccos of the trace loses precision near zero (~1e-8 rad).
    return float(Rotation.from_matrix(R_a.T @ R_b).magnitude())


def is_finite_transform(T: np.ndarray, tol: float = 1e-6) -> bool:
    """True for a 4x4 with finite entries and a proper rotation block (rejects NaN poses)."""
    T = np.asarray(T)
    if T.shape != (4, 4) or not np.all(np.isfinite(T)):
        return False
    R = T[:3, :3]
    return bool(np.allclose(R.T @ R, np.eye(3), atol=tol) and abs(np.linalg.det(R) - 1.0) < tol)


def interpolate_pose(T_a: np.ndarray, T_b: np.ndarray, s: float) -> np.ndarray:
    """SE(3) step from T_a towards T_b (4x4): straight line in position, geodesic (slerp) in
    rotation, fraction s clipped to [0, 1]. The controller's Cartesian path and the policy's
    alignment both use it."""
    from scipy.spatial.transform import Slerp

    s = float(np.clip(s, 0.0, 1.0))
    out = np.eye(4)
    out[:3, :3] = Slerp([0.0, 1.0], Rotation.from_matrix(np.stack([T_a[:3, :3], T_b[:3, :3]])))(
        [s]
    ).as_matrix()[0]
    out[:3, 3] = (1.0 - s) * T_a[:3, 3] + s * T_b[:3, 3]
    return out
