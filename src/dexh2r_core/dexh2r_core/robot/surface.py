"""Points on the hand's collision surface, fixed in link frames (policies, penetration metrics).

Sampling is area-weighted over every collision geom of the hand (primitives and meshes, as MuJoCo
compiled them), deterministic for a seed, so the same points are used in training and at run time.
"""

from __future__ import annotations

import mujoco
import numpy as np
import trimesh

from dexh2r_core.robot.description import SurfacePoints


def _geom_mesh(model: mujoco.MjModel, g: int) -> trimesh.Trimesh | None:
    kind = int(model.geom_type[g])
    size = model.geom_size[g]
    T = mujoco.mjtGeom
    if kind == T.mjGEOM_BOX:
        return trimesh.creation.box(extents=2 * size)
    if kind == T.mjGEOM_SPHERE:
        return trimesh.creation.icosphere(subdivisions=2, radius=size[0])
    if kind == T.mjGEOM_CAPSULE:
        return trimesh.creation.capsule(height=2 * size[1], radius=size[0], count=[16, 16])
    if kind == T.mjGEOM_CYLINDER:
        return trimesh.creation.cylinder(radius=size[0], height=2 * size[1], sections=24)
    if kind == T.mjGEOM_ELLIPSOID:
        mesh = trimesh.creation.icosphere(subdivisions=2, radius=1.0)
        mesh.apply_scale(size[:3])
        return mesh
    if kind == T.mjGEOM_MESH:
        m = model.geom_dataid[g]
        va, vn = model.mesh_vertadr[m], model.mesh_vertnum[m]
        fa, fn = model.mesh_faceadr[m], model.mesh_facenum[m]
        return trimesh.Trimesh(model.mesh_vert[va : va + vn], model.mesh_face[fa : fa + fn], process=False)
    return None


def sample_hand_surface(
    model: mujoco.MjModel, hand_bodies: list[int], n: int, seed: int = 0
) -> SurfacePoints:
    meshes, bodies = [], []
    for g in range(model.ngeom):
        b = int(model.geom_bodyid[g])
        if b not in hand_bodies or (model.geom_contype[g] == 0 and model.geom_conaffinity[g] == 0):
            continue
        mesh = _geom_mesh(model, g)
        if mesh is None or mesh.area <= 0:
            continue
        R = np.zeros(9)
        mujoco.mju_quat2Mat(R, model.geom_quat[g])
        T = np.eye(4)
        T[:3, :3] = R.reshape(3, 3)
        T[:3, 3] = model.geom_pos[g]
        mesh.apply_transform(T)  # geom frame -> body (link) frame
        meshes.append(mesh)
        bodies.append(b)
    if not meshes:
        raise ValueError("the hand has no collision geoms to sample surface points from")
    areas = np.array([m.area for m in meshes])
    rng = np.random.default_rng(seed)
    counts = rng.multinomial(n, areas / areas.sum())
    link_names = tuple(dict.fromkeys(model.body(b).name for b in bodies))
    points, normals, index = [], [], []
    for mesh, b, k in zip(meshes, bodies, counts, strict=True):
        if k == 0:
            continue
        pts, faces = trimesh.sample.sample_surface(mesh, int(k), seed=int(rng.integers(2**31)))
        points.append(pts)
        normals.append(mesh.face_normals[faces])
        index.append(np.full(int(k), link_names.index(model.body(b).name)))
    return SurfacePoints(
        links=link_names,
        link_index=np.concatenate(index),
        points=np.concatenate(points),
        normals=np.concatenate(normals),
    )
