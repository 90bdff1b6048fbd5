"""The robot hand's surface points posed by its finger joints (forward kinematics, ROS-free).

    hs = HandSurface.for_robot("ur5_shadow", n_points=225)
    P = hs.points(finger_q)            # [S, 3] in the hand root frame, finger_q [22]
    P = hs.points_batch(Q)             # [B, S, 3], Q [B, 22]

The points are a subset of the robot description's hand surface sample (`hand_surface_points`),
spread evenly over the links (the paper's MotionNet uses 225 points, about 10 per link); `n_points`
None keeps all of them (the penetration metric). The kinematics are MuJoCo's on the hand-only
model of the grasp testbed (`build_hand_spec`: hand root on a mocap body at the identity, wrist
joints removed), so points come out in the hand root frame, the frame of the grasp pools.
"""

from __future__ import annotations

from functools import lru_cache

import mujoco
import numpy as np


def _spread(points: np.ndarray, link_index: np.ndarray, n: int, seed: int) -> np.ndarray:
    """Indices of n points spread over the links (equal shares, farthest-point within a link)."""
    links = [k for k in np.unique(link_index)]
    counts = {k: int((link_index == k).sum()) for k in links}
    share = {k: 0 for k in links}
    left = n
    while left > 0:  # round robin over links that still have points
        progressed = False
        for k in links:
            if left and share[k] < counts[k]:
                share[k] += 1
                left -= 1
                progressed = True
        if not progressed:
            break
    out = []
    rng = np.random.default_rng(seed)
    for k in links:
        idx = np.flatnonzero(link_index == k)
        if share[k] == 0:
            continue
        if share[k] >= len(idx):
            out.append(idx)
            continue
        p = points[idx]
        sel = [int(rng.integers(len(idx)))]  # farthest point sampling within the link
        dist = np.full(len(idx), np.inf)
        for _ in range(share[k] - 1):
            dist = np.minimum(dist, ((p - p[sel[-1]]) ** 2).sum(1))
            sel.append(int(np.argmax(dist)))
        out.append(idx[np.array(sel)])
    return np.sort(np.concatenate(out))


class HandSurface:
    """Surface points of the hand in its root frame for finger joint vectors."""

    def __init__(self, robot, n_points: int | None = 225, seed: int = 0) -> None:
        from dexh2r_policy.grasps.stability import HAND_PREFIX, build_hand_spec, finger_joint_names

        self.robot = robot
        self.model = build_hand_spec(robot).compile()
        self.data = mujoco.MjData(self.model)
        self.finger_names = finger_joint_names(robot)
        self.n_fingers = len(self.finger_names)
        m = self.model
        self.qadr = np.array([m.jnt_qposadr[m.joint(HAND_PREFIX + n).id] for n in self.finger_names])
        couplings = robot.config.hand.couplings
        names = self.finger_names
        self.couplings = [
            (names.index(c.joint), names.index(c.follows), c.ratio, c.offset) for c in couplings
        ]
        sp = robot.hand_surface_points
        idx = np.arange(len(sp.points))
        if n_points is not None and n_points < len(idx):
            idx = _spread(sp.points, sp.link_index, n_points, seed)
        self.local = sp.points[idx].astype(np.float64)
        self.normals_local = sp.normals[idx].astype(np.float64)
        self.body = np.array([m.body(HAND_PREFIX + sp.links[k]).id for k in sp.link_index[idx]])
        self.n_points = len(idx)

    @classmethod
    def for_robot(
        cls, robot_name: str = "ur5_shadow", n_points: int | None = 225, seed: int = 0
    ) -> HandSurface:
        """Cached per (robot, n_points, seed): building the model takes ~0.1 s."""
        return _cached(robot_name, n_points, seed)

    def _pose(self, finger_q: np.ndarray) -> None:
        q = np.array(finger_q, dtype=np.float64, copy=True)
        if q.shape != (self.n_fingers,):
            raise ValueError(f"finger_q: expected shape ({self.n_fingers},), got {q.shape}")
        for joint, follows, ratio, offset in self.couplings:
            q[joint] = ratio * q[follows] + offset
        self.data.qpos[self.qadr] = q
        mujoco.mj_kinematics(self.model, self.data)

    def points(self, finger_q: np.ndarray) -> np.ndarray:
        """[S, 3] hand surface points in the hand root frame."""
        self._pose(finger_q)
        R = self.data.xmat[self.body].reshape(-1, 3, 3)
        return self.data.xpos[self.body] + np.einsum("nij,nj->ni", R, self.local)

    def points_normals(self, finger_q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        self._pose(finger_q)
        R = self.data.xmat[self.body].reshape(-1, 3, 3)
        return (
            self.data.xpos[self.body] + np.einsum("nij,nj->ni", R, self.local),
            np.einsum("nij,nj->ni", R, self.normals_local),
        )

    def points_batch(self, finger_q: np.ndarray) -> np.ndarray:
        """[B, S, 3] for finger_q [B, 22]."""
        finger_q = np.asarray(finger_q, dtype=np.float64).reshape(-1, self.n_fingers)
        return (
            np.stack([self.points(q) for q in finger_q]) if len(finger_q) else np.zeros((0, self.n_points, 3))
        )


@lru_cache(maxsize=8)
def _cached(robot_name: str, n_points: int | None, seed: int) -> HandSurface:
    from dexh2r_core.robot.description import RobotDescription

    return HandSurface(RobotDescription.load(robot_name), n_points, seed)
