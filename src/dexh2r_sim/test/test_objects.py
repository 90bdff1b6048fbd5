"""Tests of the object library: sizes, masses, MuJoCo bodies that settle, split, cache, surface points.

The fast tests load every primitive and a sample of the pybullet, random_urdfs and gymnasium
objects; the one CoACD decomposition (pb/torus, about 2 s) runs into a temporary cache. The
`slow` test loads every catalogue id and checks split.yaml's exclusion list against what fails.
"""

from __future__ import annotations

import time
from pathlib import Path

import mujoco
import numpy as np
import pytest
import trimesh

from dexh2r_core.config import ConfigError
from dexh2r_sim.objects import (
    HAND_SIZE_RANGE,
    MASS_RANGE,
    MIN_THICKNESS,
    ExcludedObjectError,
    ObjectLibrary,
    ObjectValidationError,
    Primitive,
    SimObject,
    UnknownObjectError,
    _merge_convex_parts,
    _mesh_from_obj,
    add_object_body,
    catalogue_ids,
    sample_surface_points,
)

PRIMITIVES = [i for i in catalogue_ids() if i.startswith("prim/")]
SAMPLE = [
    "pb/cube_small",
    "pb/sphere_small",
    "pb/soccerball",
    "pb/jenga",
    "pb/block",
    "pb/lego",
    "pb/duck",
    "pb/teddy",
    "pb/mug",
    "pb/toy_prism",
    "pb/stone",
    "pbr/000",
    "pbr/038",  # a sliver part folded into a neighbour
    "pbr/232",  # 37 parts merged down to 16
    "pbr/500",
    "pbr/999",
    "gym/block",
    "gym/egg",
    "gym/pen",
    "gym/adroit_ball",
    "gym/adroit_pen",
    "gym/hammer",
    "gym/kettle",
]
LOADED = PRIMITIVES + SAMPLE


@pytest.fixture(scope="module")
def lib() -> ObjectLibrary:
    return ObjectLibrary()


def _part_bounds(obj: SimObject) -> np.ndarray:
    meshes = [p.to_mesh() if isinstance(p, Primitive) else p for p in obj.collision]
    return np.array([np.min([m.bounds[0] for m in meshes], 0), np.max([m.bounds[1] for m in meshes], 0)])


@pytest.mark.parametrize("object_id", LOADED)
def test_object_is_hand_sized_and_physical(lib: ObjectLibrary, object_id: str) -> None:
    obj = lib.get(object_id)
    assert obj.id == object_id and obj.scale == 1.0
    ext = obj.extents
    assert HAND_SIZE_RANGE[0] - 1e-6 <= ext.max() <= HAND_SIZE_RANGE[1] + 1e-6, ext
    assert ext.min() >= MIN_THICKNESS, ext
    assert MASS_RANGE[0] <= obj.mass <= MASS_RANGE[1]
    assert obj.volume > 0 and obj.friction > 0
    parts = _part_bounds(obj)
    box = np.maximum(parts[1], obj.bounds[1]) - np.minimum(parts[0], obj.bounds[0])
    assert obj.volume <= np.prod(box) * 1.01  # the solid fits in its bounding box
    # inertia: symmetric, positive, triangle inequality
    w = np.linalg.eigvalsh(obj.inertia)
    assert np.allclose(obj.inertia, obj.inertia.T) and (w > 0).all()
    assert w[0] + w[1] >= w[2] * (1 - 1e-6)
    assert np.isclose(np.linalg.norm(obj.long_axis), 1.0)
    # the collision parts and the visual mesh describe the same object in the same frame
    assert np.allclose(parts, obj.bounds, atol=0.15 * ext.max()), (parts, obj.bounds)
    # the origin is the centre of mass: inside the bounds, near the middle
    assert (obj.bounds[0] < 0).all() and (obj.bounds[1] > 0).all()
    for part in obj.collision:
        if isinstance(part, trimesh.Trimesh):
            assert part.is_convex, f"{object_id}: a collision part is not convex"
    assert lib.get(object_id) is obj  # cached


def _drop(obj: SimObject, seconds: float = 3.0) -> tuple[mujoco.MjModel, mujoco.MjData]:
    spec = mujoco.MjSpec()
    spec.option.timestep = 0.002  # 500 Hz, as the cell runs
    spec.worldbody.add_geom(name="floor", type=mujoco.mjtGeom.mjGEOM_PLANE, size=[2, 2, 0.1])
    quat = np.array([0.9, 0.2, 0.3, 0.1])
    add_object_body(spec, obj, name="obj", pos=(0.0, 0.0, 0.15), quat_wxyz=quat / np.linalg.norm(quat))
    model = spec.compile()
    data = mujoco.MjData(model)
    for _ in range(int(seconds / model.opt.timestep)):
        mujoco.mj_step(model, data)
    return model, data


@pytest.mark.parametrize("object_id", LOADED)
def test_dropped_object_comes_to_rest(lib: ObjectLibrary, object_id: str) -> None:
    obj = lib.get(object_id)
    model, data = _drop(obj)
    assert np.isfinite(data.qpos).all() and np.isfinite(data.qvel).all()
    assert np.linalg.norm(data.qvel[:3]) < 0.02, data.qvel
    assert np.linalg.norm(data.qvel[3:]) < 0.3, data.qvel
    assert np.linalg.norm(data.qpos[:2]) < 0.3  # did not bounce away or explode
    R = data.xmat[model.body("obj").id].reshape(3, 3)
    lowest = (obj.mesh.vertices @ R.T)[:, 2].min() + data.qpos[2]
    assert -0.003 < lowest < 0.01, lowest  # resting on the floor, little penetration
    assert np.isclose(model.body_mass[model.body("obj").id], obj.mass)


def test_mujoco_body_layout(lib: ObjectLibrary) -> None:
    spec = mujoco.MjSpec()
    a = add_object_body(spec, lib.get("prim/mug"), name="a", pos=(0, 0, 0.1))
    b = add_object_body(spec, lib.get("pbr/000"), name="b", pos=(0.3, 0, 0.1))
    model = spec.compile()
    assert a.name == "a" and b.name == "b"
    assert model.joint("a_freejoint").type == mujoco.mjtJoint.mjJNT_FREE
    assert model.joint("b_freejoint").type == mujoco.mjtJoint.mjJNT_FREE
    for name in ("a", "b"):
        body = model.body(name).id
        geoms = np.flatnonzero(model.geom_bodyid == body)
        visual = [g for g in geoms if model.geom_group[g] == 2]
        collide = [g for g in geoms if model.geom_group[g] == 3]
        assert (
            len(visual) == 1 and model.geom_contype[visual[0]] == 0 and model.geom_conaffinity[visual[0]] == 0
        )
        assert collide and all(model.geom_contype[g] == 1 and model.geom_condim[g] == 6 for g in collide)
        assert model.mesh(f"{name}_visual").id >= 0
    assert np.isclose(model.geom_friction[model.geom("a_col0").id][0], lib.get("prim/mug").friction)


def test_unknown_and_excluded_ids(lib: ObjectLibrary) -> None:
    with pytest.raises(KeyError) as err:
        lib.get("prim/mugg")
    assert isinstance(err.value, UnknownObjectError)
    assert "prim/mugg" in str(err.value) and "prim/mug" in str(err.value)
    with pytest.raises(UnknownObjectError, match="nothing/here"):
        lib.get("nothing/here")
    with pytest.raises(ExcludedObjectError, match="NaN"):
        lib.get("pbr/168")
    assert "pbr/168" not in lib.ids()


def test_split_partitions_the_library(lib: ObjectLibrary) -> None:
    all_ids, train, test = lib.ids("all"), lib.ids("train"), lib.ids("test")
    assert set(train).isdisjoint(test)
    assert set(train) | set(test) == set(all_ids)
    assert len(all_ids) == len(set(all_ids))
    assert {f"pbr/{i}" for i in range(900, 1000)} <= set(test)
    for source in ("prim/", "pb/", "gym/", "pbr/"):  # every source has training and held-out objects
        assert any(i.startswith(source) for i in train) and any(i.startswith(source) for i in test)
    assert len([i for i in all_ids if i.startswith("prim/")]) >= 8
    with pytest.raises(ValueError):
        lib.ids("val")  # type: ignore[arg-type]


def test_split_config_errors_name_the_key(tmp_path: Path) -> None:
    bad = tmp_path / "split.yaml"
    bad.write_text("test:\n  - prim/mugg\n")
    with pytest.raises(ConfigError, match=r"test\[0\].*prim/mugg.*prim/mug"):
        ObjectLibrary(split_path=bad)
    bad.write_text("test: [prim/mug]\nexclude: {}\n")
    with pytest.raises(ConfigError, match=r"exclude.*excluded"):
        ObjectLibrary(split_path=bad)
    bad.write_text("test: [prim/mug]\nexcluded: {pbr/1000: typo}\n")
    with pytest.raises(ConfigError, match="pbr/1000"):
        ObjectLibrary(split_path=bad)


def test_decomposition_is_cached_on_disk(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DEXH2R_CACHE", str(tmp_path))
    first = ObjectLibrary()
    t0 = time.perf_counter()
    a = first.get("pb/torus")
    t_first = time.perf_counter() - t0
    assert first.stats.computed == 1 and first.stats.cache_hits == 0
    assert a.decomposition == "coacd" and 2 <= len(a.collision) <= first.params.max_convex_hull
    assert list((tmp_path / "objects").glob("pb__torus-*.npz"))

    second = ObjectLibrary()  # a new process would see the same: nothing in memory
    t0 = time.perf_counter()
    b = second.get("pb/torus")
    t_second = time.perf_counter() - t0
    assert second.stats.computed == 0 and second.stats.cache_hits == 1
    assert t_second < t_first
    for pa, pb in zip(a.collision, b.collision, strict=True):
        assert np.allclose(pa.vertices, pb.vertices)
    # a scaled object reuses the canonical decomposition
    c = second.get("pb/torus", scale=1.5)
    assert second.stats.computed == 0 and len(c.collision) == len(a.collision)
    _, data = _drop(a)
    assert np.linalg.norm(data.qvel) < 0.3


@pytest.mark.parametrize("object_id", ["prim/mug", "pb/duck", "pbr/000", "gym/kettle"])
def test_surface_points_deterministic_and_on_the_mesh(lib: ObjectLibrary, object_id: str) -> None:
    obj = lib.get(object_id)
    p1, n1 = sample_surface_points(obj, n=256, seed=3)
    p2, n2 = sample_surface_points(obj, n=256, seed=3)
    p3, _ = sample_surface_points(obj, n=256, seed=4)
    assert p1.shape == (256, 3) and n1.shape == (256, 3)
    assert np.array_equal(p1, p2) and np.array_equal(n1, n2)
    assert not np.allclose(p1, p3)
    assert np.allclose(np.linalg.norm(n1, axis=1), 1.0)
    # exact point-triangle distance to every face (no rtree here); in millimetres because
    # trimesh.triangles.closest_point uses absolute tolerances that misjudge sub-mm triangles
    tris = np.asarray(obj.mesh.triangles) * 1000.0
    dist = np.empty(len(p1))
    for i, p in enumerate(p1 * 1000.0):
        closest = trimesh.triangles.closest_point(tris, np.repeat(p[None], len(tris), 0))
        dist[i] = np.linalg.norm(closest - p, axis=1).min() / 1000.0
    assert dist.max() < 1e-6


def test_scale(lib: ObjectLibrary) -> None:
    base = lib.get("prim/sphere_small")
    big = lib.get("prim/sphere_small", scale=1.5)
    assert big.scale == 1.5 and np.allclose(big.extents, base.extents * 1.5)
    assert np.isclose(big.mass, base.mass * 1.5**3) and np.isclose(big.volume, base.volume * 1.5**3)
    assert np.isclose(big.collision[0].size[0], base.collision[0].size[0] * 1.5)
    assert lib.get("prim/sphere_small", scale=1.5) is big
    heavy = lib.get("prim/cylinder_can", scale=1.5)
    assert heavy.mass == MASS_RANGE[1]  # clamped
    for scale in (0.0, -1.0, float("nan"), float("inf")):
        with pytest.raises(ObjectValidationError, match="scale"):
            lib.get("prim/mug", scale=scale)
    with pytest.raises(ObjectValidationError, match="wrong scale"):
        lib.get("prim/mug", scale=10.0)
    with pytest.raises(ObjectValidationError, match="wrong scale"):
        lib.get("prim/sphere_small", scale=0.2)


def test_long_axis(lib: ObjectLibrary) -> None:
    expected = {
        "prim/cylinder_thin": [0, 0, 1],
        "prim/cylinder_can": [0, 0, 1],
        "prim/box_long": [1, 0, 0],
        "prim/capsule_bar": [1, 0, 0],
        "prim/box_small": [0, 0, 1],
        "pb/cube_small": [0, 0, 1],  # a cube: ties go to z, never a diagonal
        "gym/pen": [0, 0, 1],
        "gym/hammer": [1, 0, 0],
    }
    for object_id, axis in expected.items():
        assert np.allclose(lib.get(object_id).long_axis, axis, atol=1e-3), object_id


def test_degenerate_meshes_fail_clearly(tmp_path: Path) -> None:
    nan = tmp_path / "nan.obj"
    nan.write_text("v nan nan nan\nv 0 0 0\nv 1 0 0\nf 1 2 3\n")
    with pytest.raises(ObjectValidationError, match="NaN"):
        _mesh_from_obj(nan, "test")
    flat = tmp_path / "flat.obj"
    flat.write_text("v 0 0 0\nv 1 0 0\nv 0 1 0\nv 1 1 0\nf 1 2 3\nf 2 4 3\n")
    with pytest.raises(ObjectValidationError, match="flat"):
        _mesh_from_obj(flat, "test")
    empty = tmp_path / "empty.obj"
    empty.write_text("# nothing\n")
    with pytest.raises(ObjectValidationError, match="degenerate"):
        _mesh_from_obj(empty, "test")


def test_merge_convex_parts() -> None:
    cube = trimesh.creation.box(extents=[0.01, 0.01, 0.01]).vertices
    parts = [cube + np.array([0.01 * i, 0.01 * j, 0.0]) for i in range(6) for j in range(5)]  # a slab
    parts.append(cube * 0.01 + np.array([0.0, 0.0, 0.006]))  # a sliver
    merged = _merge_convex_parts(parts, max_parts=8, min_fraction=0.002)
    assert len(merged) <= 8
    volume = sum(trimesh.convex.convex_hull(m).volume for m in merged)
    assert np.isclose(volume, 30 * 1e-6, rtol=0.02)  # merging neighbours of a slab adds no volume
    assert np.allclose(np.vstack(merged).min(0), np.vstack(parts).min(0))


@pytest.mark.slow
def test_every_catalogue_object_loads_or_is_excluded(lib: ObjectLibrary) -> None:
    """All ~1000 objects: split.yaml's exclusion list is exactly the set that fails validation."""
    failing = {}
    for object_id in catalogue_ids():
        if object_id in lib.split.excluded:
            continue
        try:
            obj = lib.get(object_id)
            spec = mujoco.MjSpec()
            add_object_body(spec, obj)
            spec.compile()
        except (ObjectValidationError, ValueError) as exc:
            failing[object_id] = str(exc)
    assert not failing, failing
    fresh = ObjectLibrary()
    for object_id in lib.split.excluded:
        fresh.split.excluded.pop(object_id, None)
        fresh._known.add(object_id)  # bypass the exclusion to check its reason
        with pytest.raises(ObjectValidationError):
            fresh.get(object_id)
