"""Hand-in-object penetration, one definition for the metric and the runtime guard.

The object is a surface sample with outward normals in its own frame (the dataset's
`obj_surface_pcd_4096`, or the object library's mesh sampled). A hand surface point p is inside
when, for its nearest object surface point s with normal n, (s - p) . n > 0; that value is its
depth (the official evaluator's test, method doc §5.2).

- `Penetration.depth`: the deepest hand point (the offline benchmark's metric);
- `CollisionGuard.apply`: moves a network hand target out along the object's normals until every
  hand point is at least `margin_m` outside (DynamicGrasp's approach frames; the alignment and
  the close, which are meant to touch, are not guarded).
"""

from __future__ import annotations

import math

import numpy as np

from dexh2r_policy.models.geometry import from_frame, to_frame


class Penetration:
    """Penetration depth of the hand in an object (object-frame surface points with normals)."""

    def __init__(self, obj_points: np.ndarray, obj_normals: np.ndarray, hand_surface) -> None:
        from scipy.spatial import cKDTree

        self.points = np.asarray(obj_points, dtype=np.float64)
        self.normals = np.asarray(obj_normals, dtype=np.float64)
        self.tree = cKDTree(self.points)
        self.hs = hand_surface

    def signed_depths(self, hand_points_obj: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Per hand point (object frame): signed depth (m, > 0 inside) and the normal used."""
        _, idx = self.tree.query(hand_points_obj)
        n = self.normals[idx]
        return ((self.points[idx] - hand_points_obj) * n).sum(axis=1), n

    def depth(self, T_world_hand: np.ndarray, finger_q: np.ndarray, T_world_obj: np.ndarray) -> float:
        """Deepest hand surface point inside the object (m, 0 when none)."""
        P = to_frame(T_world_obj, from_frame(T_world_hand, self.hs.points(finger_q)))
        dist, idx = self.tree.query(P)
        inside = ((self.points[idx] - P) * self.normals[idx]).sum(axis=1) > 0
        return float(dist[inside].max()) if inside.any() else 0.0


class CollisionGuard(Penetration):
    """Pushes a hand target out of the object: see the module doc.

    The push is a line search along the ray from the object's centre through the hand's root, in
    `step_m` steps up to `max_push_m`: robust where a normal-based push is not (a hand deep in a
    thin object has its nearest surface on the far side), and it keeps the approach direction.
    """

    def __init__(
        self,
        obj_points: np.ndarray,
        obj_normals: np.ndarray,
        hand_surface,
        margin_m: float = 0.005,
        step_m: float = 0.004,
        max_push_m: float = 0.25,
    ) -> None:
        super().__init__(obj_points, obj_normals, hand_surface)
        self.margin_m = float(margin_m)
        self.step_m = float(step_m)
        self.max_push_m = float(max_push_m)
        self.centre = self.points.mean(axis=0)

    def clear(self, T_world_hand: np.ndarray, local: np.ndarray, T_world_obj: np.ndarray) -> bool:
        """Every hand point at least `margin_m` outside the object."""
        P = to_frame(T_world_obj, from_frame(T_world_hand, local))
        d, _ = self.signed_depths(P)
        return bool(np.all(d <= -self.margin_m))

    def apply(
        self, T_world_hand: np.ndarray, finger_q: np.ndarray, T_world_obj: np.ndarray
    ) -> tuple[np.ndarray, float]:
        """(the target moved out of the object, how far in m); rotation and fingers are kept: the
        network's posture, only clear of the object. Returns the farthest try if nothing within
        `max_push_m` clears it."""
        T = np.array(T_world_hand, dtype=np.float64, copy=True)
        local = self.hs.points(finger_q)
        if self.clear(T, local, T_world_obj):
            return T, 0.0
        centre = T_world_obj[:3, :3] @ self.centre + T_world_obj[:3, 3]
        u = T[:3, 3] - centre
        norm = float(np.linalg.norm(u))
        u = u / norm if norm > 1e-9 else T_world_obj[:3, 2]
        # The linear search (the first of step, 2 step, ... that clears), 16 steps per KD-tree
        # query: only the translation changes, so the object-frame points of a push are those
        # of no push plus push * u. One query per step took up to 6 ms on a deep push.
        P0 = to_frame(T_world_obj, from_frame(T, local))
        u_obj = T_world_obj[:3, :3].T @ u
        n = max(1, math.ceil(self.max_push_m / self.step_m - 1e-9))
        pushes = self.step_m * np.arange(1, n + 1)
        for chunk in np.array_split(pushes, math.ceil(n / 16)):
            P = (P0[None] + chunk[:, None, None] * u_obj).reshape(-1, 3)
            d, _ = self.signed_depths(P)
            ok = np.all(d.reshape(len(chunk), -1) <= -self.margin_m, axis=1)
            if ok.any():
                push = float(chunk[int(np.argmax(ok))])
                break
        else:
            push = float(pushes[-1])
        T[:3, 3] = T[:3, 3] + push * u
        return T, push
