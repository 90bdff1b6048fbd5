"""Pose geometry of the motion policies (numpy + torch, ROS-free).

Conventions (as `dexh2r_core.transforms`): `T_a_b` [4, 4] maps points of frame b to frame a.
A *hand state* is (`T_world_hand` [4, 4], `finger_q` [22]); the hand frame is the hand's root
(wrist mount, the hand's own wrist joints at zero), as in the grasp pools.

6-D rotation: the first two **rows** of R (pytorch3d's `matrix_to_rotation_6d`), recovered by
Gram-Schmidt on those rows (`rotation_6d_to_matrix`), as the official DexH2R code does.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy.spatial.transform import Rotation

from dexh2r_core.transforms import interpolate_pose  # noqa: F401  (re-exported: the policy's callers)

QPOS_FINGERS = slice(8, 30)  # DexH2R qpos [30]: t 3, axis-angle 3, WRJ2, WRJ1, 22 finger joints


def matrix_to_rot6d(R: np.ndarray) -> np.ndarray:
    """[..., 3, 3] -> [..., 6] (first two rows, row-major)."""
    R = np.asarray(R)
    return R[..., :2, :].reshape(*R.shape[:-2], 6)


def rot6d_to_matrix(d6: np.ndarray) -> np.ndarray:
    """[..., 6] -> [..., 3, 3] by Gram-Schmidt (numpy twin of `rot6d_to_matrix_torch`)."""
    d6 = np.asarray(d6, dtype=np.float64)
    a1, a2 = d6[..., :3], d6[..., 3:]
    b1 = a1 / np.maximum(np.linalg.norm(a1, axis=-1, keepdims=True), 1e-9)
    b2 = a2 - (b1 * a2).sum(-1, keepdims=True) * b1
    b2 = b2 / np.maximum(np.linalg.norm(b2, axis=-1, keepdims=True), 1e-9)
    b3 = np.cross(b1, b2)
    return np.stack([b1, b2, b3], axis=-2)


def rot6d_to_matrix_torch(d6: torch.Tensor) -> torch.Tensor:
    """[..., 6] -> [..., 3, 3], rows b1, b2, b3 (pytorch3d's `rotation_6d_to_matrix`)."""
    a1, a2 = d6[..., :3], d6[..., 3:]
    b1 = torch.nn.functional.normalize(a1, dim=-1)
    b2 = a2 - (b1 * a2).sum(-1, keepdim=True) * b1
    b2 = torch.nn.functional.normalize(b2, dim=-1)
    b3 = torch.cross(b1, b2, dim=-1)
    return torch.stack([b1, b2, b3], dim=-2)


def qpos_to_poses(qpos: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """DexH2R qpos [T, 30] -> (T_world_hand [T, 4, 4], finger_q [T, 22]); the wrist joints dropped."""
    qpos = np.asarray(qpos, dtype=np.float64)
    T = np.repeat(np.eye(4)[None], len(qpos), axis=0)
    T[:, :3, :3] = Rotation.from_rotvec(qpos[:, 3:6]).as_matrix()
    T[:, :3, 3] = qpos[:, :3]
    return T, qpos[:, QPOS_FINGERS].copy()


def poses_to_qpos(T_world_hand: np.ndarray, finger_q: np.ndarray) -> np.ndarray:
    """(T [T, 4, 4], finger_q [T, 22]) -> DexH2R qpos [T, 30] (wrist joints 0)."""
    T_world_hand = np.asarray(T_world_hand).reshape(-1, 4, 4)
    out = np.zeros((len(T_world_hand), 30))
    out[:, :3] = T_world_hand[:, :3, 3]
    out[:, 3:6] = Rotation.from_matrix(T_world_hand[:, :3, :3]).as_rotvec()
    out[:, QPOS_FINGERS] = np.asarray(finger_q).reshape(len(T_world_hand), -1)
    return out


def inverse(T: np.ndarray) -> np.ndarray:
    """Inverse of rigid transforms [..., 4, 4]."""
    T = np.asarray(T, dtype=np.float64)
    out = np.zeros_like(T)
    Rt = np.swapaxes(T[..., :3, :3], -1, -2)
    out[..., :3, :3] = Rt
    out[..., :3, 3] = -(Rt @ T[..., :3, 3:4])[..., 0]
    out[..., 3, 3] = 1.0
    return out


def to_frame(T_world_frame: np.ndarray, points_world: np.ndarray) -> np.ndarray:
    """Points [..., N, 3] (world) expressed in the frame T_world_frame [..., 4, 4]: R^T (p - t)."""
    R = T_world_frame[..., :3, :3]
    t = T_world_frame[..., None, :3, 3]
    return (points_world - t) @ R


def from_frame(T_world_frame: np.ndarray, points_frame: np.ndarray) -> np.ndarray:
    """Points [..., N, 3] of the frame -> world: R p + t."""
    R = T_world_frame[..., :3, :3]
    return points_frame @ np.swapaxes(R, -1, -2) + T_world_frame[..., None, :3, 3]


def rotation_angles(R_a: np.ndarray, R_b: np.ndarray) -> np.ndarray:
    """Geodesic angles (rad) between rotations [..., 3, 3] (broadcast)."""
    rel = np.swapaxes(R_a, -1, -2) @ R_b
    cos = (np.trace(rel, axis1=-2, axis2=-1) - 1.0) / 2.0
    return np.arccos(np.clip(cos, -1.0, 1.0))


def is_rigid(T: np.ndarray, tol: float = 1e-4) -> bool:
    """A finite 4x4 with an orthonormal, right-handed rotation block and last row [0, 0, 0, 1]."""
    T = np.asarray(T)
    if T.shape != (4, 4) or not np.isfinite(T).all():
        return False
    R = T[:3, :3]
    return bool(
        np.allclose(R.T @ R, np.eye(3), atol=tol)
        and abs(np.linalg.det(R) - 1.0) < tol
        and np.allclose(T[3], [0.0, 0.0, 0.0, 1.0], atol=tol)
    )
