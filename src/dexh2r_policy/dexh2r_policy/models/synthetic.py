"""Tiny synthetic handovers in the DexH2R layout (tests and smoke runs; not training data).

    info = write_synthetic_handovers(root, pools_dir)      # split file, sequences, surfaces, pools

Each object is a sphere (radius 4 cm) carried along a smooth path; its pool holds `n_grasps`
object-frame grasps around it (hand palm towards the centre). The recorded hand starts ~35 cm away
and moves straight to one of the pool grasps (posed by the object, so it follows the object),
arriving at `grasp_begin` with the fingers interpolated to the grasp's joints, then stays on it.
Written with the layout's own writers (`write_sequence`, `write_split`, `write_object_surface`)
and `GraspPool.save`; one sequence in three also gets `giver_keypoints.pt` [T, 21, 3].
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from scipy.spatial.transform import Rotation

SPLIT = {
    "train_sub_names": ["s1"],
    "val_sub_names": ["s2"],
    "test_sub_names": ["s3"],
    "train_obj": ["ball"],
    "val_obj": ["cup"],
    "test_obj": ["duck"],
}
RADIUS = 0.04
GRASP_CENTRE = np.array([0.01, -0.07, 0.10])  # in the hand frame: in front of the palm (-y)


def _sphere(n: int, rng) -> tuple[np.ndarray, np.ndarray]:
    v = rng.normal(size=(n, 3))
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    return RADIUS * v, v


def synthetic_pool(name: str, n_grasps: int = 12, seed: int = 0):
    """A `GraspPool` of `n_grasps` grasps around the sphere (object frame), all marked stable."""
    from dexh2r_policy.grasps.pool import GraspPool

    rng = np.random.default_rng(seed)
    R = Rotation.random(n_grasps, random_state=seed).as_matrix()
    T = np.repeat(np.eye(4)[None], n_grasps, axis=0)
    T[:, :3, :3] = R
    T[:, :3, 3] = -(R @ GRASP_CENTRE)
    q = rng.uniform(0.2, 0.8, size=(n_grasps, 22))
    names = tuple(
        f"rh_{f}J{j}"
        for f, js in (("FF", "4321"), ("MF", "4321"), ("RF", "4321"), ("LF", "54321"), ("TH", "54321"))
        for j in js
    )
    return GraspPool(
        object_id=name,
        object_scale=1.0,
        finger_joint_names=names,
        T_obj_hand=T,
        finger_q=q,
        stable=np.ones((n_grasps, 6), bool),
        displacement=np.zeros((n_grasps, 6)),
        pen_depth=np.zeros(n_grasps),
        contacts=np.zeros(n_grasps, int),
        candidate=np.arange(n_grasps),
    )


def synthetic_sequence(
    subject: str,
    obj: str,
    seq: str,
    pool,
    T: int = 40,
    grasp_begin: int = 30,
    n_cloud: int = 128,
    seed: int = 0,
    moving: bool = True,
):
    """(DexH2RSequence, giver keypoints [T, 21, 3]) of one synthetic handover."""
    from dexh2r_policy.data.dexh2r_layout import DexH2RSequence, SequenceId
    from dexh2r_policy.models.geometry import interpolate_pose, poses_to_qpos

    rng = np.random.default_rng(seed)
    t = np.arange(T) / max(T - 1, 1)
    obj_pose = np.repeat(np.eye(4)[None], T, axis=0)
    start = np.array([0.0, 0.0, 0.35]) + rng.uniform(-0.05, 0.05, 3)
    amp = 0.08 if moving else 0.0
    obj_pose[:, :3, 3] = start + amp * np.stack([np.sin(2 * t), 0.5 * np.sin(3 * t + 1), 0.3 * t], axis=1)
    obj_pose[:, :3, :3] = Rotation.from_rotvec(np.outer(t, [0.0, 0.0, 0.6 if moving else 0.0])).as_matrix()
    g = int(rng.integers(len(pool)))
    goal = obj_pose @ pool.T_obj_hand[g]  # [T, 4, 4]
    T0 = goal[0].copy()
    offset = rng.normal(size=3)
    offset = 0.35 * offset / np.linalg.norm(offset)
    T0[:3, 3] += offset
    T0[:3, :3] = Rotation.from_rotvec(rng.normal(scale=0.3, size=3)).as_matrix() @ T0[:3, :3]
    hand = np.empty((T, 4, 4))
    q = np.empty((T, 22))
    for k in range(T):
        s = min(1.0, k / grasp_begin) if grasp_begin > 0 else 1.0
        s = s * s * (3 - 2 * s)  # smooth start and stop
        hand[k] = interpolate_pose(T0, goal[k], s)
        q[k] = s * pool.finger_q[g]
    local, _ = _sphere(n_cloud, rng)
    pcd = np.einsum("tij,nj->tni", obj_pose[:, :3, :3], local) + obj_pose[:, None, :3, 3]
    pcd += rng.normal(scale=0.001, size=pcd.shape)
    # Giver: a flat "hand" of 21 points on the far side of the object from the approach.
    away = -offset / np.linalg.norm(offset)
    kp = obj_pose[:, None, :3, 3] + (RADIUS + 0.03) * away + 0.01 * rng.normal(size=(1, 21, 3))
    sequence = DexH2RSequence(
        id=SequenceId(subject, obj, seq),
        qpos=poses_to_qpos(hand, q).astype(np.float32),
        obj_pose=obj_pose.astype(np.float32),
        obj_pcd=pcd.astype(np.float32),
        mano=np.zeros((T, 61), np.float32),
        mano_side="left",
        grasp_begin_frame=grasp_begin,
    )
    return sequence, kp.astype(np.float32)


def write_synthetic_handovers(
    root: str | Path,
    pools_dir: str | Path,
    seqs_per_pair: int = 1,
    T: int = 40,
    grasp_begin: int = 30,
    n_cloud: int = 128,
    seed: int = 0,
    split: dict | None = None,
) -> dict:
    """Every (subject, object) pair of `split` gets `seqs_per_pair` sequences; returns a summary."""
    import torch

    from dexh2r_policy.data.dexh2r_layout import write_object_surface, write_sequence, write_split

    split = split or SPLIT
    root, pools_dir = Path(root), Path(pools_dir)
    write_split(root, split)
    objects = split["train_obj"] + split["val_obj"] + split["test_obj"]
    subjects = split["train_sub_names"] + split["val_sub_names"] + split["test_sub_names"]
    rng = np.random.default_rng(seed)
    pools = {}
    for k, obj in enumerate(objects):
        pts, normals = _sphere(1024, rng)
        write_object_surface(root, obj, pts, normals)
        pools[obj] = synthetic_pool(obj, seed=seed + k)
        pools[obj].save(pools_dir / f"{obj}.npz")
    n = 0
    for subject in subjects:
        for obj in objects:
            for i in range(seqs_per_pair):
                seq, kp = synthetic_sequence(
                    subject,
                    obj,
                    str(i),
                    pools[obj],
                    T,
                    grasp_begin,
                    n_cloud,
                    seed=seed * 1000 + n,
                    moving=n % 2 == 0,
                )
                folder = write_sequence(root, seq)
                if n % 3 == 0:
                    torch.save(torch.from_numpy(kp), folder / "giver_keypoints.pt")
                n += 1
    return {"root": str(root), "pools": str(pools_dir), "sequences": n, "objects": objects}
