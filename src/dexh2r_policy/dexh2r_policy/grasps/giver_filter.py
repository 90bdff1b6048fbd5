"""MANO-free giver filter: drop pool grasps whose hand would collide with the giver's hand.

    keep = giver_free_mask(pool.T_obj_hand, pool.finger_q, T_world_obj, keypoints)   # bool [G]
    pool_t = filter_pool(pool, T_world_obj, keypoints)                            # GraspPool

The paper's geometric filter (method doc §3.1, `mano_collision/filter_mano_collision.py`) drops a
grasp when a Shadow mesh vertex lies inside the axis-aligned box of the giver's MANO mesh. The sim
(and a keypoint hand tracker) gives 21 hand keypoints (MediaPipe order: 0 wrist, 1-4 thumb CMC to
tip, 5-8 index MCP to tip, 9-12 middle, 13-16 ring, 17-20 little) and no MANO mesh, so the giver's
hand here is a union of capsules around the keypoint skeleton: the 20 finger bones (radius
`finger_radius`, the thumb's `thumb_radius`) and the palm (wrist to every MCP and across the
knuckles, `palm_radius`, about half a palm's thickness). A grasp collides when any of the robot
hand's surface points (`models.hand_surface.HandSurface`, posed by the object pose and the grasp)
lies within `margin` of that volume. This is tighter than an axis-aligned box (which also holds the
space between spread fingers) and works with any keypoint source.

If fewer than `min_keep` grasps survive, the `min_keep` grasps with the largest clearance are kept
(the paper re-adds random grasps until 10 remain; the clearest ones are a better fallback).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np

# (a, b) keypoint index pairs of the finger bones (MediaPipe order) and the palm.
FINGER_BONES: tuple[tuple[int, int], ...] = tuple(
    (a, b)
    for chain in ((0, 1, 2, 3, 4), (5, 6, 7, 8), (9, 10, 11, 12), (13, 14, 15, 16), (17, 18, 19, 20))
    for a, b in itertools.pairwise(chain)
)
THUMB_BONES: tuple[tuple[int, int], ...] = ((0, 1), (1, 2), (2, 3), (3, 4))
PALM_SEGMENTS: tuple[tuple[int, int], ...] = (
    (0, 5),
    (0, 9),
    (0, 13),
    (0, 17),
    (5, 9),
    (9, 13),
    (13, 17),
    (1, 5),
    (2, 5),  # thumb MCP -> index MCP: the web between thumb and palm
)


@dataclass(frozen=True)
class GiverHandModel:
    """Capsule radii (m) of the giver's hand volume around its keypoint skeleton."""

    finger_radius: float = 0.009
    thumb_radius: float = 0.011
    palm_radius: float = 0.015
    margin: float = 0.0  # extra clearance (m) a robot hand point must keep
    min_keep: int = 10  # the paper keeps at least 10 grasps

    def __post_init__(self) -> None:
        for name in ("finger_radius", "thumb_radius", "palm_radius"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name}: must be positive, got {getattr(self, name)}")
        if self.margin < 0 or self.min_keep < 0:
            raise ValueError("margin and min_keep must be >= 0")


def giver_capsules(
    keypoints: np.ndarray, model: GiverHandModel | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Capsules of the giver's hand: segment ends A [K, 3], B [K, 3] and radii [K] (world)."""
    m = model or GiverHandModel()
    kp = np.asarray(keypoints, dtype=np.float64)
    if kp.shape != (21, 3) or not np.isfinite(kp).all():
        raise ValueError(f"giver keypoints: expected a finite [21, 3] array, got shape {list(kp.shape)}")
    pairs, radii = [], []
    for bone in FINGER_BONES:
        pairs.append(bone)
        radii.append(m.thumb_radius if bone in THUMB_BONES else m.finger_radius)
    for seg in PALM_SEGMENTS:
        pairs.append(seg)
        radii.append(m.palm_radius)
    idx = np.array(pairs)
    return kp[idx[:, 0]], kp[idx[:, 1]], np.array(radii)


def capsule_clearance(points: np.ndarray, A: np.ndarray, B: np.ndarray, radii: np.ndarray) -> np.ndarray:
    """Signed distance of points [..., 3] to the union of capsules (negative inside) [...]."""
    P = np.asarray(points, dtype=np.float64)[..., None, :]  # [..., 1, 3]
    AB = B - A
    denom = np.maximum((AB * AB).sum(-1), 1e-12)
    s = np.clip(((P - A) * AB).sum(-1) / denom, 0.0, 1.0)  # [..., K]
    closest = A + s[..., None] * AB
    return (np.linalg.norm(P - closest, axis=-1) - radii).min(axis=-1)


def grasp_clearance(
    T_obj_hand: np.ndarray,
    finger_q: np.ndarray,
    T_world_obj: np.ndarray,
    keypoints: np.ndarray,
    model: GiverHandModel | None = None,
    hand_surface=None,
    hand_points: np.ndarray | None = None,
) -> np.ndarray:
    """Per grasp [G]: the smallest signed distance (m) of its robot hand surface points to the
    giver's hand volume (negative: the hands overlap). `hand_points` [G, S, 3] (hand root frame)
    skips the forward kinematics (e.g. cached per pool)."""
    from dexh2r_policy.models.geometry import from_frame

    T_obj_hand = np.asarray(T_obj_hand, dtype=np.float64).reshape(-1, 4, 4)
    if hand_points is None:
        if hand_surface is None:
            from dexh2r_policy.models.hand_surface import HandSurface

            hand_surface = HandSurface.for_robot("ur5_shadow", 256, 0)
        hand_points = hand_surface.points_batch(np.asarray(finger_q).reshape(len(T_obj_hand), -1))
    A, B, r = giver_capsules(keypoints, model)
    T_world_hand = np.asarray(T_world_obj, dtype=np.float64)[None] @ T_obj_hand
    P = from_frame(T_world_hand, hand_points)  # [G, S, 3] world
    # Only hand points near the giver matter: a cheap bounding-sphere test first.
    centre = (A.mean(0) + B.mean(0)) / 2
    reach = np.linalg.norm(np.concatenate([A, B]) - centre, axis=1).max() + r.max()
    out = np.full(len(P), np.inf)
    near = np.linalg.norm(P - centre, axis=-1) < reach + 0.05
    for g in np.flatnonzero(near.any(axis=1)):
        out[g] = capsule_clearance(P[g, near[g]], A, B, r).min()
    far = ~near.any(axis=1)
    if far.any():  # a lower bound that never triggers the filter
        out[far] = np.linalg.norm(P[far] - centre, axis=-1).min(axis=1) - reach
    return out


def giver_free_mask(
    T_obj_hand: np.ndarray,
    finger_q: np.ndarray,
    T_world_obj: np.ndarray,
    keypoints: np.ndarray,
    model: GiverHandModel | None = None,
    hand_surface=None,
    hand_points: np.ndarray | None = None,
) -> np.ndarray:
    """bool [G]: grasps to keep (clearance >= margin; at least `min_keep`, the clearest)."""
    m = model or GiverHandModel()
    gap = grasp_clearance(T_obj_hand, finger_q, T_world_obj, keypoints, m, hand_surface, hand_points)
    keep = gap >= m.margin
    k = min(m.min_keep, len(gap))
    if keep.sum() < k:
        keep = np.zeros(len(gap), bool)
        keep[np.argsort(-gap, kind="stable")[:k]] = True
    return keep


def filter_pool(pool, T_world_obj: np.ndarray, keypoints: np.ndarray, model: GiverHandModel | None = None,
                hand_surface=None):  # fmt: skip
    """The `GraspPool` without the grasps that collide with the giver's hand (object frame kept;
    `info['giver_filter']` counts the dropped ones)."""
    keep = giver_free_mask(pool.T_obj_hand, pool.finger_q, T_world_obj, keypoints, model, hand_surface)
    out = pool.select(keep)
    out.info["giver_filter"] = {"kept": int(keep.sum()), "dropped": int((~keep).sum())}
    return out


__all__ = [
    "GiverHandModel",
    "capsule_clearance",
    "filter_pool",
    "giver_capsules",
    "giver_free_mask",
    "grasp_clearance",
]
