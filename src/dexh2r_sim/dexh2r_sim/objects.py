"""The library of graspable objects for the simulated handover cell.

Every object has an id (``prim/mug``, ``pb/duck``, ``pbr/042``, ``gym/pen``), a triangle mesh for
perception, convex collision parts for MuJoCo, a mass, a friction coefficient and a long axis. Four
sources, all installed packages (nothing is downloaded, nothing is copied into the repository):

* ``prim/*``: procedural primitives and compounds of primitives (a mug is a ring of boxes, a bottom
  disc and a capsule handle), built here;
* ``pb/*``: hand-sized objects of ``pybullet_data`` (URDF + OBJ); the URDF's own collision shapes are
  used (a box, a sphere, a ``*_vhacd.obj`` set of convex pieces), a non-convex mesh without one is
  decomposed with CoACD;
* ``pbr/000`` .. ``pbr/999``: ``pybullet_data/random_urdfs``, procedurally made blobs whose OBJ is
  already a set of convex pieces (``o convex_<i>``); blobs with more than ``max_parts`` pieces are
  merged down greedily (see `_merge_convex_parts`);
* ``gym/*``: objects of gymnasium-robotics' MuJoCo scenes (the Shadow-hand block/egg/pen, Adroit's
  ball/pen/hammer, the kitchen kettle), read from the compiled source model.

Object frame: the origin is the centre of mass of the object as a solid of uniform density (so
the MuJoCo free joint moves the COM and ``inertia`` is about the origin); the axes are the source's
axes (an upright mug stays upright along +z). ``long_axis`` is the principal axis of inertia along
which the object is longest (the grasp generator spins grasps about it).

Sizing rule (canonical size, ``scale=1``): an object keeps its source size (URDF mesh scale
applied) if its largest extent is within ``[0.04, 0.20]`` m; otherwise it is scaled uniformly so
that its largest extent equals its catalogue ``target_extent`` (default 0.10 m). ``get(id,
scale)`` multiplies that canonical size; scaled objects must stay within 0.02-0.30 m.

Mass rule: ``density * volume`` (a per-object density, 500 kg/m^3 unless the catalogue says
otherwise) or a source mass where the source gives a sensible one (times ``scale**3``), clamped to
``[0.02, 0.5]`` kg. Inertia is that of the uniform solid with that mass.

Decomposition and caching: CoACD runs with a fixed seed and bounded effort and its result is
stored under ``cache_dir()/objects/`` keyed by the object id and a hash of the input geometry,
the parameters and the CoACD version. Decomposition happens once per object at its canonical size:
uniform scaling keeps a part convex, so scaled objects reuse it. The train/test split is
``config/objects/split.yaml`` (see docs/objects.md).
"""

from __future__ import annotations

import colorsys
import dataclasses
import difflib
import fnmatch
import hashlib
import json
import math
import os
import time
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Literal

import mujoco
import numpy as np
import trimesh
from scipy.spatial import ConvexHull, QhullError
from scipy.spatial.transform import Rotation

from dexh2r_core.config import ConfigError, load_config
from dexh2r_core.paths import cache_dir, config_path
from dexh2r_core.robot.assets import resolve_asset

Source = Literal["primitive", "pybullet", "pybullet_random", "gym"]
Split = Literal["all", "train", "test"]

#: Largest extent (m) of every object at canonical size; outside it the sizing rule rescales.
HAND_SIZE_RANGE = (0.04, 0.20)
#: Smallest extent (m) a canonical object may have (thinner plates are not handed over here).
MIN_THICKNESS = 0.01
#: Largest extent (m) allowed after a user `scale`.
SCALED_SIZE_RANGE = (0.02, 0.30)
#: Mass clamp (kg).
MASS_RANGE = (0.02, 0.5)
DEFAULT_DENSITY = 500.0
DEFAULT_TARGET_EXTENT = 0.10
#: Voxels per axis of the grid that measures the volume/COM/inertia of a union of convex parts.
_GRID = 40


class UnknownObjectError(KeyError):
    """An object id the library does not have; the message lists close matches."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class ExcludedObjectError(UnknownObjectError):
    """An id that exists in a source but is excluded in split.yaml (the reason is in the message)."""


class ObjectValidationError(ValueError):
    """A degenerate mesh, an object that is not hand-sized or an invalid scale."""


# --------------------------------------------------------------------------------------------
# Geometry: primitives and convex parts
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Primitive:
    """A MuJoCo primitive collision shape in the object frame.

    ``size`` follows MuJoCo's convention: box half-extents; sphere (r,); capsule/cylinder
    (r, half-length along local z); ellipsoid semi-axes.
    """

    kind: Literal["box", "sphere", "capsule", "cylinder", "ellipsoid"]
    size: tuple[float, ...]
    pos: tuple[float, float, float] = (0.0, 0.0, 0.0)
    quat_wxyz: tuple[float, float, float, float] = (1.0, 0.0, 0.0, 0.0)

    @staticmethod
    def capsule_between(p0: Sequence[float], p1: Sequence[float], radius: float) -> Primitive:
        """A capsule whose segment runs from p0 to p1 (MuJoCo's ``fromto``)."""
        return _segment_primitive("capsule", p0, p1, radius)

    @staticmethod
    def cylinder_between(p0: Sequence[float], p1: Sequence[float], radius: float) -> Primitive:
        """A cylinder whose axis runs from p0 to p1."""
        return _segment_primitive("cylinder", p0, p1, radius)

    @property
    def mujoco_type(self) -> mujoco.mjtGeom:
        return {
            "box": mujoco.mjtGeom.mjGEOM_BOX,
            "sphere": mujoco.mjtGeom.mjGEOM_SPHERE,
            "capsule": mujoco.mjtGeom.mjGEOM_CAPSULE,
            "cylinder": mujoco.mjtGeom.mjGEOM_CYLINDER,
            "ellipsoid": mujoco.mjtGeom.mjGEOM_ELLIPSOID,
        }[self.kind]

    def transform(self) -> np.ndarray:
        """4x4 pose of the primitive in the object frame."""
        T = np.eye(4)
        T[:3, :3] = Rotation.from_quat(self.quat_wxyz, scalar_first=True).as_matrix()
        T[:3, 3] = self.pos
        return T

    def to_mesh(self, fine: bool = False) -> trimesh.Trimesh:
        """A closed triangle mesh of the primitive, in the object frame."""
        s = self.size
        sub, sec = (3, 48) if fine else (2, 24)
        if self.kind == "box":
            mesh = trimesh.creation.box(extents=2 * np.asarray(s[:3]))
        elif self.kind == "sphere":
            mesh = trimesh.creation.icosphere(subdivisions=sub, radius=s[0])
        elif self.kind == "capsule":
            mesh = trimesh.creation.capsule(height=2 * s[1], radius=s[0], count=[sec, sec])
        elif self.kind == "cylinder":
            mesh = trimesh.creation.cylinder(radius=s[0], height=2 * s[1], sections=sec)
        else:
            mesh = trimesh.creation.icosphere(subdivisions=sub, radius=1.0)
            mesh.apply_scale(np.asarray(s[:3]))
        mesh.apply_transform(self.transform())
        return mesh

    def scaled(self, factor: float) -> Primitive:
        return dataclasses.replace(
            self,
            size=tuple(float(v) * factor for v in self.size),
            pos=tuple(float(v) * factor for v in self.pos),
        )

    def translated(self, offset: Sequence[float]) -> Primitive:
        return dataclasses.replace(
            self, pos=tuple(float(a + b) for a, b in zip(self.pos, offset, strict=True))
        )


def _segment_primitive(kind: str, p0: Sequence[float], p1: Sequence[float], radius: float) -> Primitive:
    a, b = np.asarray(p0, float), np.asarray(p1, float)
    axis = b - a
    length = float(np.linalg.norm(axis))
    if length <= 0:
        raise ObjectValidationError(f"{kind} from {tuple(a)} to {tuple(b)} has zero length")
    rot, _ = Rotation.align_vectors([axis / length], [[0.0, 0.0, 1.0]])
    quat = rot.as_quat(scalar_first=True)
    return Primitive(kind, (radius, length / 2), tuple((a + b) / 2), tuple(float(q) for q in quat))  # type: ignore[arg-type]


CollisionPart = trimesh.Trimesh | Primitive


def _part_mesh(part: CollisionPart) -> trimesh.Trimesh:
    return part.to_mesh() if isinstance(part, Primitive) else part


def _hull_equations(part: CollisionPart) -> np.ndarray:
    """Half-spaces [n, d] (n.x + d <= 0 inside) of a convex part."""
    points = _part_mesh(part).vertices
    return ConvexHull(points).equations


def _inside(
    part: CollisionPart, points: np.ndarray, margin: float = 0.0, eq: np.ndarray | None = None
) -> np.ndarray:
    """Mask of `points` inside the convex `part` by more than `margin` (exact for primitives).

    `eq` may pass the part's precomputed `_hull_equations` (meshes only).
    """
    if not isinstance(part, Primitive):
        eq = _hull_equations(part) if eq is None else eq
        return (points @ eq[:, :3].T + eq[:, 3] <= -margin).all(1)
    R = Rotation.from_quat(part.quat_wxyz, scalar_first=True).as_matrix()
    q = (points - np.asarray(part.pos)) @ R  # into the primitive's frame
    s = np.asarray(part.size, float)
    if part.kind == "box":
        return (np.abs(q) <= s[:3] - margin).all(1)
    if part.kind == "sphere":
        return np.linalg.norm(q, axis=1) <= s[0] - margin
    if part.kind == "capsule":
        z = np.clip(q[:, 2], -s[1], s[1])
        return np.linalg.norm(q - np.stack([0 * z, 0 * z, z], 1), axis=1) <= s[0] - margin
    if part.kind == "cylinder":
        return (np.hypot(q[:, 0], q[:, 1]) <= s[0] - margin) & (np.abs(q[:, 2]) <= s[1] - margin)
    return ((q / (s[:3] - margin)) ** 2).sum(1) <= 1.0  # ellipsoid


def _hull_mesh(points: np.ndarray) -> trimesh.Trimesh:
    return trimesh.convex.convex_hull(np.asarray(points, float))  # outward-facing, closed


def _hull_volume(points: np.ndarray) -> float:
    try:
        return float(ConvexHull(points).volume)
    except (QhullError, ValueError):
        return 0.0


# --------------------------------------------------------------------------------------------
# The object
# --------------------------------------------------------------------------------------------


@dataclass
class SimObject:
    """One graspable object, in its object frame (origin = centre of mass, metres, kg).

    ``mesh`` is the visual/perception surface; ``collision`` the convex parts MuJoCo collides
    (trimesh convex hulls or `Primitive` shapes); ``inertia`` the 3x3 inertia tensor about the
    origin; ``scale`` the factor applied to the canonical (library) size and ``native_scale`` the
    factor from the source's units to the canonical size.
    """

    id: str
    source: Source
    mesh: trimesh.Trimesh
    collision: list[CollisionPart]
    mass: float
    friction: float
    scale: float
    volume: float
    inertia: np.ndarray
    long_axis: np.ndarray
    native_scale: float = 1.0
    density: float = DEFAULT_DENSITY
    rgba: tuple[float, float, float, float] = (0.8, 0.5, 0.2, 1.0)
    decomposition: str = "none"
    info: dict[str, object] = field(default_factory=dict)

    @property
    def extents(self) -> np.ndarray:
        """Axis-aligned size (m) of the perception mesh in the object frame."""
        return np.asarray(self.mesh.extents, float)

    @property
    def max_extent(self) -> float:
        return float(self.extents.max())

    @property
    def bounds(self) -> np.ndarray:
        return np.asarray(self.mesh.bounds, float)


# --------------------------------------------------------------------------------------------
# Catalogue
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _PrimEntry:
    parts: tuple[Primitive, ...]
    density: float
    friction: float
    rgba: tuple[float, float, float, float]


def _mug_parts() -> tuple[Primitive, ...]:
    """A mug: 16 wall boxes around a ring, a bottom disc and a C-shaped capsule handle on +x."""
    r_out, wall, height, n = 0.040, 0.006, 0.095, 16
    r_mid = r_out - wall / 2
    half_chord = r_out * math.tan(math.pi / n) + 0.0005  # neighbours overlap slightly: no gaps
    parts = []
    for i in range(n):
        a = 2 * math.pi * (i + 0.5) / n
        quat = Rotation.from_euler("z", a).as_quat(scalar_first=True)
        parts.append(
            Primitive(
                "box",
                (wall / 2, half_chord, height / 2),
                (r_mid * math.cos(a), r_mid * math.sin(a), 0.0),
                tuple(float(q) for q in quat),  # type: ignore[arg-type]
            )
        )
    parts.append(Primitive("cylinder", (r_out - 0.001, 0.004), (0.0, 0.0, -height / 2 + 0.004)))
    x0, x1, r = r_out - 0.003, r_out + 0.028, 0.006
    parts += [
        Primitive.capsule_between((x0, 0, 0.030), (x1, 0, 0.030), r),
        Primitive.capsule_between((x0, 0, -0.022), (x1, 0, -0.022), r),
        Primitive.capsule_between((x1, 0, -0.022), (x1, 0, 0.030), r),
    ]
    return tuple(parts)


_Y_TO_Z = (math.sqrt(0.5), 0.0, math.sqrt(0.5), 0.0)  # rotates local z onto object x

_PRIMITIVES: dict[str, _PrimEntry] = {
    "box_small": _PrimEntry((Primitive("box", (0.025, 0.025, 0.035)),), 500.0, 0.8, (0.85, 0.3, 0.2, 1)),
    "box_long": _PrimEntry((Primitive("box", (0.08, 0.02, 0.02)),), 600.0, 0.8, (0.3, 0.6, 0.85, 1)),
    "box_flat": _PrimEntry((Primitive("box", (0.06, 0.04, 0.0125)),), 700.0, 0.7, (0.2, 0.2, 0.25, 1)),
    "cylinder_can": _PrimEntry((Primitive("cylinder", (0.033, 0.06)),), 700.0, 0.6, (0.8, 0.1, 0.1, 1)),
    "cylinder_thin": _PrimEntry((Primitive("cylinder", (0.015, 0.09)),), 600.0, 0.8, (0.9, 0.8, 0.2, 1)),
    "sphere_ball": _PrimEntry((Primitive("sphere", (0.035,)),), 400.0, 0.9, (0.2, 0.7, 0.3, 1)),
    "sphere_small": _PrimEntry((Primitive("sphere", (0.025,)),), 700.0, 0.9, (0.9, 0.5, 0.1, 1)),
    "capsule_bar": _PrimEntry(
        (Primitive("capsule", (0.02, 0.06), quat_wxyz=_Y_TO_Z),), 600.0, 0.8, (0.5, 0.35, 0.2, 1)
    ),
    "ellipsoid_egg": _PrimEntry(
        (Primitive("ellipsoid", (0.028, 0.028, 0.038)),), 600.0, 0.7, (0.95, 0.9, 0.8, 1)
    ),
    "mug": _PrimEntry(_mug_parts(), 1800.0, 0.8, (0.95, 0.95, 0.95, 1)),
    "bottle": _PrimEntry(
        (
            Primitive("cylinder", (0.035, 0.06), (0.0, 0.0, -0.025)),
            Primitive("cylinder", (0.02, 0.012), (0.0, 0.0, 0.045)),
            Primitive("cylinder", (0.013, 0.025), (0.0, 0.0, 0.075)),
        ),
        300.0,
        0.6,
        (0.2, 0.5, 0.9, 1),
    ),
    "l_block": _PrimEntry(
        (
            Primitive("box", (0.06, 0.02, 0.02), (0.0, 0.0, 0.0)),
            Primitive("box", (0.02, 0.02, 0.04), (0.04, 0.0, 0.06)),
        ),
        600.0,
        0.8,
        (0.6, 0.3, 0.8, 1),
    ),
}


@dataclass(frozen=True)
class _PbEntry:
    """A pybullet_data object: a URDF (visual + collision), or an OBJ with a collision mode."""

    urdf: str | None = None
    obj: str | None = None
    mesh_scale: tuple[float, float, float] = (1.0, 1.0, 1.0)
    # "urdf": the URDF's collision shapes; "hull": convex hull of the visual; "coacd": decompose.
    collision: Literal["urdf", "hull", "coacd"] = "urdf"
    density: float = DEFAULT_DENSITY
    mass: float | None = None
    friction: float | None = None
    target_extent: float = DEFAULT_TARGET_EXTENT
    rgba: tuple[float, float, float, float] | None = None


_PYBULLET: dict[str, _PbEntry] = {
    "duck": _PbEntry(urdf="duck_vhacd.urdf", density=400.0, rgba=(0.95, 0.8, 0.1, 1)),
    "teddy": _PbEntry(urdf="teddy_vhacd.urdf", density=250.0, rgba=(0.6, 0.4, 0.25, 1)),
    "lego": _PbEntry(urdf="lego/lego.urdf", target_extent=0.064, density=300.0, rgba=(0.9, 0.1, 0.1, 1)),
    "cube_small": _PbEntry(urdf="cube_small.urdf", density=600.0, rgba=(0.3, 0.5, 0.9, 1)),
    "sphere_small": _PbEntry(urdf="sphere_small.urdf", density=500.0, rgba=(0.9, 0.4, 0.6, 1)),
    "soccerball": _PbEntry(urdf="soccerball.urdf", density=150.0, friction=0.9, rgba=(0.95, 0.95, 0.95, 1)),
    "mug": _PbEntry(urdf="objects/mug.urdf", density=600.0, friction=0.8),
    "jenga": _PbEntry(urdf="jenga/jenga.urdf", density=600.0, friction=0.7, rgba=(0.85, 0.7, 0.45, 1)),
    "block": _PbEntry(urdf="block.urdf", density=600.0, rgba=(0.4, 0.8, 0.4, 1)),
    "torus": _PbEntry(obj="torus/torus_textured.obj", collision="coacd", density=500.0, friction=0.8),
    "bunny": _PbEntry(obj="bunny.obj", collision="coacd", target_extent=0.12, density=400.0, friction=0.8),
    "stone": _PbEntry(obj="stone.obj", collision="hull", density=1200.0, friction=0.9),
    "toy_cube": _PbEntry(obj="toys/cube.obj", collision="hull", density=400.0, friction=0.8),
    "toy_cylinder": _PbEntry(obj="toys/cylinder.obj", collision="hull", density=400.0, friction=0.8),
    "toy_prism": _PbEntry(obj="toys/prism.obj", collision="hull", density=400.0, friction=0.8),
}


@dataclass(frozen=True)
class _GymEntry:
    """A body of a gymnasium-robotics MuJoCo scene."""

    xml: str  # under gymnasium_robotics/envs/assets
    body: str
    visual: Literal["collision", "noncolliding", "all"] = "collision"
    density: float = DEFAULT_DENSITY
    mass: float | None = None
    target_extent: float = DEFAULT_TARGET_EXTENT
    rgba: tuple[float, float, float, float] = (0.7, 0.7, 0.7, 1)


_GYM: dict[str, _GymEntry] = {
    "block": _GymEntry("hand/manipulate_block.xml", "object", density=567.0, rgba=(0.9, 0.6, 0.2, 1)),
    "egg": _GymEntry("hand/manipulate_egg.xml", "object", density=600.0, rgba=(0.95, 0.9, 0.75, 1)),
    "pen": _GymEntry(
        "hand/manipulate_pen.xml", "object", density=800.0, target_extent=0.20, rgba=(0.46, 0.81, 0.88, 1)
    ),
    "adroit_ball": _GymEntry(
        "adroit_hand/adroit_relocate.xml", "Object", mass=0.179594, rgba=(0.6, 0.4, 0.2, 1)
    ),
    "adroit_pen": _GymEntry(
        "adroit_hand/adroit_pen.xml", "Object", visual="all", density=1500.0, rgba=(0.3, 0.6, 1, 1)
    ),
    "hammer": _GymEntry(
        "adroit_hand/adroit_hammer.xml",
        "Object",
        density=700.0,
        target_extent=0.20,
        rgba=(0.55, 0.4, 0.25, 1),
    ),
    "kettle": _GymEntry(
        "kitchen_franka/kitchen_assets/kitchen_env_model.xml",
        "kettleroot",
        visual="noncolliding",
        density=250.0,
        target_extent=0.18,
        rgba=(0.9, 0.9, 0.9, 1),
    ),
}

N_RANDOM_URDFS = 1000


def catalogue_ids() -> list[str]:
    """Every id any source offers (before split.yaml's exclusions), sorted within each source."""
    return (
        [f"prim/{k}" for k in _PRIMITIVES]
        + [f"pb/{k}" for k in _PYBULLET]
        + [f"gym/{k}" for k in _GYM]
        + [f"pbr/{i:03d}" for i in range(N_RANDOM_URDFS)]
    )


# --------------------------------------------------------------------------------------------
# Split config
# --------------------------------------------------------------------------------------------


@dataclass
class ObjectSplitConfig:
    """config/objects/split.yaml: held-out (test) ids and excluded ids; train is the rest.

    ``test`` entries are ids or fnmatch patterns (``pbr/9??``); each must match at least one id.
    ``excluded`` maps an id to the reason it is not in the library at all.
    """

    test: list[str]
    excluded: dict[str, str] = field(default_factory=dict)


# --------------------------------------------------------------------------------------------
# Decomposition
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DecompositionParams:
    """CoACD settings (bounded effort, fixed seed) and the limits on provided decompositions."""

    threshold: float = 0.08
    max_convex_hull: int = 8
    preprocess_resolution: int = 30
    resolution: int = 1000
    mcts_nodes: int = 10
    mcts_iterations: int = 60
    mcts_max_depth: int = 3
    seed: int = 0
    #: Provided convex sets (random_urdfs, *_vhacd.obj) with more parts are merged down to this.
    max_parts: int = 16
    #: Parts smaller than this fraction of the total part volume are merged into a neighbour.
    min_part_fraction: float = 0.002

    def coacd_kwargs(self) -> dict[str, object]:
        return {
            "threshold": self.threshold,
            "max_convex_hull": self.max_convex_hull,
            "preprocess_resolution": self.preprocess_resolution,
            "resolution": self.resolution,
            "mcts_nodes": self.mcts_nodes,
            "mcts_iterations": self.mcts_iterations,
            "mcts_max_depth": self.mcts_max_depth,
            "seed": self.seed,
        }


@dataclass
class DecompositionStats:
    """Counters of decompositions computed vs read from the disk cache (tests, benchmarks)."""

    computed: int = 0
    cache_hits: int = 0
    seconds: float = 0.0


def _geometry_hash(*arrays: np.ndarray, extra: object = None) -> str:
    h = hashlib.sha256()
    for a in arrays:
        a = np.ascontiguousarray(np.round(a, 9) if a.dtype.kind == "f" else a)
        h.update(str(a.shape).encode())
        h.update(a.tobytes())
    h.update(json.dumps(extra, sort_keys=True, default=str).encode())
    return h.hexdigest()


def _cache_file(object_id: str, key: str) -> Path:
    folder = cache_dir() / "objects"
    folder.mkdir(parents=True, exist_ok=True)
    return folder / f"{object_id.replace('/', '__')}-{key[:20]}.npz"


def _save_parts(path: Path, parts: list[np.ndarray]) -> None:
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp.npz")
    np.savez_compressed(tmp, **{f"p{i}": p for i, p in enumerate(parts)}, n=np.array(len(parts)))
    os.replace(tmp, path)  # atomic: parallel test workers never read a half-written file


def _load_parts(path: Path) -> list[np.ndarray] | None:
    try:
        with np.load(path) as data:
            return [np.asarray(data[f"p{i}"], float) for i in range(int(data["n"]))]
    except (OSError, KeyError, ValueError):
        return None


def _run_coacd(mesh: trimesh.Trimesh, params: DecompositionParams) -> list[np.ndarray]:
    import coacd  # imported lazily: only objects that need decomposition pay for it

    coacd.set_log_level("error")
    parts = coacd.run_coacd(
        coacd.Mesh(np.asarray(mesh.vertices, float), np.asarray(mesh.faces, int)), **params.coacd_kwargs()
    )
    return [np.asarray(v, float) for v, _ in parts]


def _merge_convex_parts(parts: list[np.ndarray], max_parts: int, min_fraction: float) -> list[np.ndarray]:
    """Greedily merge convex point sets until at most `max_parts` remain and none is tiny.

    The cost of merging two parts is the volume their joint hull adds to their own volumes (the
    concavity the merge introduces); only each part's 8 nearest neighbours are candidates. This is
    the merge stage of V-HACD/CoACD, applied to a decomposition a source already provides.
    """
    pts = [np.asarray(p, float) for p in parts]
    vols = [_hull_volume(p) for p in pts]
    alive = list(range(len(pts)))

    def cost(i: int, j: int) -> float:
        return _hull_volume(np.vstack([pts[i], pts[j]])) - vols[i] - vols[j]

    def neighbours(i: int, k: int = 8) -> list[int]:
        others = [j for j in alive if j != i]
        c = pts[i].mean(0)
        others.sort(key=lambda j: (float(np.linalg.norm(pts[j].mean(0) - c)), j))
        return others[:k]

    pair_cost: dict[tuple[int, int], float] = {}

    def best_pair(candidates: list[int]) -> tuple[int, int]:
        best, best_c = None, math.inf
        for i in candidates:
            for j in neighbours(i):
                key = (min(i, j), max(i, j))
                if key not in pair_cost:
                    pair_cost[key] = cost(*key)
                if pair_cost[key] < best_c - 1e-15:
                    best, best_c = key, pair_cost[key]
        assert best is not None
        return best

    while len(alive) > 1:
        total = sum(vols[i] for i in alive)
        tiny = [i for i in alive if vols[i] < min_fraction * total]
        if len(alive) > max_parts:
            i, j = best_pair(alive)
        elif tiny:
            i, j = best_pair([min(tiny, key=lambda t: (vols[t], t))])
        else:
            break
        pts.append(np.vstack([pts[i], pts[j]]))
        pts[-1] = pts[-1][ConvexHull(pts[-1]).vertices] if vols[i] + vols[j] > 0 else pts[-1]
        vols.append(_hull_volume(pts[-1]))
        alive = [a for a in alive if a not in (i, j)] + [len(pts) - 1]
    return [pts[i] for i in alive]


# --------------------------------------------------------------------------------------------
# Source readers
# --------------------------------------------------------------------------------------------


def _read_obj(path: Path) -> tuple[np.ndarray, list[np.ndarray]]:
    """Vertices and the triangles of each ``o`` object of a Wavefront OBJ (polygons fanned)."""
    verts: list[list[float]] = []
    parts: list[list[list[int]]] = []
    current: list[list[int]] | None = None
    with open(path, encoding="utf-8", errors="replace") as fh:
        for line in fh:
            tok = line.split()
            if not tok:
                continue
            if tok[0] == "v":
                verts.append([float(x) for x in tok[1:4]])
            elif tok[0] == "o":
                current = []
                parts.append(current)
            elif tok[0] == "f":
                if current is None:
                    current = []
                    parts.append(current)
                idx = [int(t.split("/")[0]) for t in tok[1:]]
                idx = [i - 1 if i > 0 else len(verts) + i for i in idx]
                current.extend([idx[0], idx[k], idx[k + 1]] for k in range(1, len(idx) - 1))
    V = np.asarray(verts, float).reshape(-1, 3)
    return V, [np.asarray(p, int).reshape(-1, 3) for p in parts if p]


def _validate_mesh(vertices: np.ndarray, faces: np.ndarray, what: str) -> None:
    if vertices.size == 0 or faces.size == 0:
        raise ObjectValidationError(f"{what}: degenerate mesh (no vertices or no faces)")
    if not np.isfinite(vertices).all():
        bad = int((~np.isfinite(vertices).all(1)).sum())
        raise ObjectValidationError(f"{what}: degenerate mesh ({bad} vertices are NaN/inf)")
    if faces.min() < 0 or faces.max() >= len(vertices):
        raise ObjectValidationError(f"{what}: faces index vertices that do not exist")
    ext = np.ptp(vertices[np.unique(faces)], axis=0)
    if (ext <= 1e-9).any():
        raise ObjectValidationError(f"{what}: degenerate mesh (flat: extents {ext.tolist()})")


def _mesh_from_obj(path: Path, what: str) -> tuple[trimesh.Trimesh, list[np.ndarray]]:
    """The whole OBJ as one mesh, plus each ``o`` part's vertices."""
    V, parts = _read_obj(path)
    F = np.vstack(parts) if parts else np.zeros((0, 3), int)
    _validate_mesh(V, F, what)
    mesh = trimesh.Trimesh(V, F, process=True)
    return mesh, [V[np.unique(p)] for p in parts]


def _xyz_rpy_transform(elem: ET.Element | None) -> np.ndarray:
    T = np.eye(4)
    if elem is None:
        return T
    xyz = [float(v) for v in elem.get("xyz", "0 0 0").split()]
    rpy = [float(v) for v in elem.get("rpy", "0 0 0").split()]
    T[:3, :3] = Rotation.from_euler("xyz", rpy).as_matrix()
    T[:3, 3] = xyz
    return T


def _floats(text: str | None, n: int, default: float = 1.0) -> np.ndarray:
    if text is None:
        return np.full(n, default)
    vals = [float(v) for v in text.split()]
    return np.asarray(vals if len(vals) == n else vals[:1] * n, float)


@dataclass
class _Raw:
    """Geometry in source units/frames before sizing: visual mesh + convex parts (or to decompose)."""

    mesh: trimesh.Trimesh
    parts: list[CollisionPart]
    decompose: bool = False  # parts empty: CoACD the visual mesh
    friction: float = 0.8
    mass: float | None = None
    rgba: tuple[float, float, float, float] | None = None


def _read_urdf(path: Path, what: str) -> _Raw:
    """A single-link pybullet URDF: visual mesh, collision shapes, lateral friction, colour."""
    link = ET.parse(path).getroot().find("link")
    if link is None:
        raise ObjectValidationError(f"{what}: {path} has no <link>")
    visual = link.find("visual")
    meshes = []
    rgba = None
    if visual is not None:
        geom = visual.find("geometry")
        T = _xyz_rpy_transform(visual.find("origin"))
        for node in geom if geom is not None else []:
            meshes.append(_urdf_shape_mesh(node, path.parent, T, what, pieces=False)[0])
        color = visual.find("material/color")
        if color is not None:
            rgba = tuple(_floats(color.get("rgba"), 4))
    parts: list[CollisionPart] = []
    for col in link.findall("collision"):
        geom = col.find("geometry")
        T = _xyz_rpy_transform(col.find("origin"))
        for node in geom if geom is not None else []:
            _, pieces, prim = _urdf_shape_mesh(node, path.parent, T, what)
            if prim is not None:
                parts.append(prim)
            else:
                parts.extend(pieces)
    if not meshes:
        raise ObjectValidationError(f"{what}: {path} has no visual mesh")
    friction = link.find("contact/lateral_friction")
    mass = link.find("inertial/mass")
    return _Raw(
        mesh=trimesh.util.concatenate(meshes),
        parts=parts,
        friction=float(friction.get("value", 0.8)) if friction is not None else 0.8,
        mass=float(mass.get("value")) if mass is not None else None,
        rgba=rgba,  # type: ignore[arg-type]
    )


def _urdf_shape_mesh(
    node: ET.Element, folder: Path, T: np.ndarray, what: str, pieces: bool = True
) -> tuple[trimesh.Trimesh, list[trimesh.Trimesh], Primitive | None]:
    """(mesh, convex pieces, primitive) of one URDF geometry element, in the link frame.

    A mesh's pieces are the convex hulls of its OBJ ``o`` objects (pybullet's convention for
    ``*_vhacd.obj`` and random_urdfs), computed only when `pieces` is asked for.
    """
    rot = Rotation.from_matrix(T[:3, :3]).as_quat(scalar_first=True)
    quat = tuple(float(q) for q in rot)
    pos = tuple(float(p) for p in T[:3, 3])
    if node.tag == "mesh":
        scale = _floats(node.get("scale"), 3)
        mesh, obj_pieces = _mesh_from_obj(folder / node.get("filename", ""), what)
        mesh.apply_transform(np.diag([*scale, 1.0]))
        mesh.apply_transform(T)
        hulls = []
        for p in obj_pieces if pieces else []:
            q = (p * scale) @ T[:3, :3].T + T[:3, 3]
            if len(p) >= 4 and _hull_volume(q) > 0:
                hulls.append(_hull_mesh(q))
        return mesh, hulls, None
    if node.tag == "box":
        prim = Primitive("box", tuple(_floats(node.get("size"), 3) / 2), pos, quat)  # type: ignore[arg-type]
    elif node.tag == "sphere":
        prim = Primitive("sphere", (float(node.get("radius", 0)),), pos, quat)  # type: ignore[arg-type]
    elif node.tag == "cylinder":
        prim = Primitive(
            "cylinder", (float(node.get("radius", 0)), float(node.get("length", 0)) / 2), pos, quat
        )  # type: ignore[arg-type]
    else:
        raise ObjectValidationError(f"{what}: unsupported URDF geometry <{node.tag}>")
    return prim.to_mesh(fine=True), [], prim


@lru_cache(maxsize=16)
def _compiled_gym_model(xml: str) -> mujoco.MjModel:
    return mujoco.MjModel.from_xml_path(str(resolve_asset(f"package://gymnasium_robotics/envs/assets/{xml}")))


def _read_gym(entry: _GymEntry, what: str) -> _Raw:
    """Geoms of a body of a compiled gymnasium-robotics model (defaults/includes resolved)."""
    model = _compiled_gym_model(entry.xml)
    try:
        body = model.body(entry.body).id
    except KeyError as exc:
        raise ObjectValidationError(f"{what}: body '{entry.body}' not in {entry.xml}") from exc
    collide, visual_only = [], []
    friction = None
    G = mujoco.mjtGeom
    kinds = {G.mjGEOM_BOX: "box", G.mjGEOM_SPHERE: "sphere", G.mjGEOM_CAPSULE: "capsule"}
    kinds |= {G.mjGEOM_CYLINDER: "cylinder", G.mjGEOM_ELLIPSOID: "ellipsoid"}
    for g in np.flatnonzero(model.geom_bodyid == body):
        kind = int(model.geom_type[g])
        pos = tuple(float(v) for v in model.geom_pos[g])
        quat = tuple(float(v) for v in model.geom_quat[g])
        part: CollisionPart
        if kind in kinds:
            n = {"box": 3, "sphere": 1, "capsule": 2, "cylinder": 2, "ellipsoid": 3}[kinds[kind]]
            part = Primitive(kinds[kind], tuple(float(v) for v in model.geom_size[g][:n]), pos, quat)  # type: ignore[arg-type]
        elif kind == G.mjGEOM_MESH:
            m = model.geom_dataid[g]
            va, vn = model.mesh_vertadr[m], model.mesh_vertnum[m]
            fa, fn = model.mesh_faceadr[m], model.mesh_facenum[m]
            part = trimesh.Trimesh(
                model.mesh_vert[va : va + vn].astype(float), model.mesh_face[fa : fa + fn], process=True
            )
            T = np.eye(4)
            T[:3, :3] = Rotation.from_quat(quat, scalar_first=True).as_matrix()
            T[:3, 3] = pos
            part.apply_transform(T)
        else:
            continue
        if model.geom_contype[g] or model.geom_conaffinity[g]:
            collide.append(part)
            friction = float(model.geom_friction[g][0]) if friction is None else friction
        elif model.geom_rgba[g][3] > 0 and model.geom_group[g] < 3:
            visual_only.append(part)
    if not collide:
        raise ObjectValidationError(f"{what}: body '{entry.body}' has no colliding geoms")
    shown = {"collision": collide, "noncolliding": visual_only or collide, "all": collide + visual_only}[
        entry.visual
    ]
    if any(isinstance(p, trimesh.Trimesh) for p in shown):  # a (non-convex) visual mesh: just join
        mesh = trimesh.util.concatenate(
            [p.to_mesh(fine=True) if isinstance(p, Primitive) else p for p in shown]
        )
    else:  # convex primitives: their union's outer surface
        mesh = _union_surface(shown)
    # MuJoCo collides mesh geoms as their convex hulls: keep exactly that
    parts = [p if isinstance(p, Primitive) else _hull_mesh(p.vertices) for p in collide]
    return _Raw(mesh=mesh, parts=parts, friction=friction or 1.0)


# --------------------------------------------------------------------------------------------
# Solid properties, surfaces, axes
# --------------------------------------------------------------------------------------------


def _union_surface(parts: Sequence[CollisionPart]) -> trimesh.Trimesh:
    """The parts' surfaces without the faces that lie inside another part (face granularity)."""
    meshes = [_part_mesh(p) if isinstance(p, Primitive) else p for p in parts]
    if len(meshes) == 1:
        return meshes[0].copy()
    eqs = [None if isinstance(p, Primitive) else _hull_equations(p) for p in parts]
    boxes = [m.bounds for m in meshes]
    kept = []
    for i, m in enumerate(meshes):
        centres = m.triangles_center
        inside = np.zeros(len(centres), bool)
        for j, other in enumerate(parts):
            lo, hi = boxes[j]
            if j == i or (boxes[i][0] > hi).any() or (boxes[i][1] < lo).any():
                continue  # itself, or bounding boxes apart
            inside |= _inside(other, centres, margin=1e-7, eq=eqs[j])
        if (~inside).any():
            kept.append(m.submesh([np.flatnonzero(~inside)], append=True))
    return trimesh.util.concatenate(kept)


def _solid_properties(
    mesh: trimesh.Trimesh, parts: Sequence[CollisionPart]
) -> tuple[float, np.ndarray, np.ndarray]:
    """Volume, centre and inertia per unit density of the object as a uniform solid.

    A watertight visual mesh gives exact values; a single convex part its exact hull values; a
    union of (overlapping) convex parts is measured on a _GRID^3 voxel grid of its bounding box.
    """
    if mesh.is_watertight and mesh.is_winding_consistent and mesh.volume > 0:
        return float(mesh.volume), np.asarray(mesh.center_mass), np.asarray(mesh.moment_inertia)
    if len(parts) == 1:
        m = parts[0].to_mesh(fine=True) if isinstance(parts[0], Primitive) else parts[0]
        m = m if m.is_watertight and m.volume > 0 else _hull_mesh(m.vertices)
        return float(m.volume), np.asarray(m.center_mass), np.asarray(m.moment_inertia)
    boxes = [_part_mesh(p).bounds for p in parts]
    lo = np.min([b[0] for b in boxes], 0)
    hi = np.max([b[1] for b in boxes], 0)
    cell = (hi - lo) / _GRID
    axes = [lo[k] + cell[k] * (np.arange(_GRID) + 0.5) for k in range(3)]
    P = np.stack(np.meshgrid(*axes, indexing="ij"), -1).reshape(-1, 3)
    inside = np.zeros(len(P), bool)
    for part, (blo, bhi) in zip(parts, boxes, strict=True):
        cand = np.flatnonzero(~inside & (blo <= P).all(1) & (bhi >= P).all(1))
        if cand.size:
            inside[cand[_inside(part, P[cand])]] = True
    Q = P[inside]
    if len(Q) < 8:
        raise ObjectValidationError("degenerate collision parts: no measurable volume")
    dv = float(np.prod(cell))
    volume = len(Q) * dv
    com = Q.mean(0)
    r = Q - com
    inertia = dv * (np.eye(3) * (r * r).sum() - r.T @ r)
    a, b, c = cell
    inertia += volume / 12.0 * np.diag([b * b + c * c, a * a + c * c, a * a + b * b])  # voxel self-inertia
    return volume, com, inertia


def _long_axis(inertia: np.ndarray, vertices: np.ndarray) -> np.ndarray:
    """The principal axis of inertia along which the object is longest (unit, object frame).

    Within a (near) repeated eigenvalue (gap < 10 %) the principal axes are arbitrary, so that
    eigenspace is spanned by the object's own z, x, y axes projected into it instead (a cube gets
    its edges, not its diagonals). Extents within 2 % of each other count as equal; the axis closest
    to the object's z, then x, then y, wins such a tie. The sign makes the largest component positive.
    """
    w, V = np.linalg.eigh(inertia)
    scale = max(float(np.abs(w).max()), 1e-30)
    frame = [np.array([0.0, 0.0, 1.0]), np.array([1.0, 0.0, 0.0]), np.array([0.0, 1.0, 0.0])]
    axes: list[np.ndarray] = []
    k = 0
    while k < 3:
        group = [k]
        while group[-1] + 1 < 3 and w[group[-1] + 1] - w[group[-1]] < 0.10 * scale:
            group.append(group[-1] + 1)
        if len(group) == 1:
            axes.append(V[:, k])
        else:
            space = V[:, group]
            basis: list[np.ndarray] = []
            for f in frame:  # Gram-Schmidt of the frame axes projected into the eigenspace
                v = space @ (space.T @ f)
                for b in basis:
                    v = v - (v @ b) * b
                if np.linalg.norm(v) > 1e-6 and len(basis) < len(group):
                    basis.append(v / np.linalg.norm(v))
            axes += basis
        k = group[-1] + 1
    ext = np.array([float(np.ptp(vertices @ a)) for a in axes])
    best = [a for a, e in zip(axes, ext, strict=True) if e >= ext.max() * 0.98]
    axis = max(best, key=lambda a: (round(abs(a[2]), 3), round(abs(a[0]), 3), round(abs(a[1]), 3)))
    axis = axis / np.linalg.norm(axis)
    return axis if axis[np.argmax(np.abs(axis))] > 0 else -axis


def _palette(object_id: str) -> tuple[float, float, float, float]:
    h = int(hashlib.sha1(object_id.encode()).hexdigest()[:6], 16)
    hue = (h % 360) / 360.0
    r, g, b = colorsys.hsv_to_rgb(hue, 0.55, 0.85)
    return (r, g, b, 1.0)


# --------------------------------------------------------------------------------------------
# Library
# --------------------------------------------------------------------------------------------


def _scale_part(part: CollisionPart, factor: float, offset: np.ndarray | None = None) -> CollisionPart:
    if isinstance(part, Primitive):
        p = part.translated(offset) if offset is not None else part
        return p.scaled(factor)
    m = part.copy()
    if offset is not None:
        m.apply_translation(offset)
    m.apply_scale(factor)
    return m


class ObjectLibrary:
    """The graspable objects: ids, the train/test split, cached loading.

    ``ObjectLibrary()`` reads ``config/objects/split.yaml``; objects are built on first `get`
    and kept in memory; CoACD results are kept on disk (see the module docstring).
    """

    def __init__(
        self,
        split_path: str | os.PathLike[str] | None = None,
        decomposition: DecompositionParams | None = None,
    ) -> None:
        self.split_path = Path(split_path) if split_path is not None else config_path("objects/split.yaml")
        self.split = load_config(ObjectSplitConfig, self.split_path)
        self.params = decomposition or DecompositionParams()
        self.stats = DecompositionStats()
        self._canonical: dict[str, SimObject] = {}
        self._scaled: dict[tuple[str, float], SimObject] = {}
        catalogue = catalogue_ids()
        known = set(catalogue)
        for oid in self.split.excluded:
            if oid not in known:
                raise ConfigError(f"{self.split_path}: excluded.{oid}: no such object id")
        self._all = [i for i in catalogue if i not in self.split.excluded]
        self._known = set(self._all)
        test: set[str] = set()
        for k, pattern in enumerate(self.split.test):
            hits = fnmatch.filter(self._all, pattern)
            if not hits:
                close = difflib.get_close_matches(pattern, self._all, n=3)
                hint = f" (did you mean {', '.join(close)}?)" if close else ""
                raise ConfigError(f"{self.split_path}: test[{k}]: '{pattern}' matches no object id{hint}")
            test.update(hits)
        self._test = [i for i in self._all if i in test]
        self._train = [i for i in self._all if i not in test]

    # -- ids ----------------------------------------------------------------------------------

    def ids(self, split: Split = "all") -> list[str]:
        """Object ids of the library (``all``), the training split or the held-out ``test`` split."""
        if split == "all":
            return list(self._all)
        if split == "train":
            return list(self._train)
        if split == "test":
            return list(self._test)
        raise ValueError(f"split must be 'all', 'train' or 'test', got {split!r}")

    def _check_id(self, object_id: str) -> None:
        if not isinstance(object_id, str):
            raise UnknownObjectError(f"object ids are strings like 'prim/mug', got {object_id!r}")
        if object_id in self.split.excluded:
            raise ExcludedObjectError(
                f"object '{object_id}' is excluded from the library ({self.split.excluded[object_id]}); "
                f"see {self.split_path}"
            )
        if object_id not in self._known:
            close = difflib.get_close_matches(object_id, self._all, n=5, cutoff=0.5)
            hint = f"; close matches: {', '.join(close)}" if close else ""
            raise UnknownObjectError(
                f"unknown object id '{object_id}'{hint} (ids are prim/<name>, pb/<name>, pbr/000..999, "
                f"gym/<name>; ObjectLibrary().ids() lists them)"
            )

    # -- loading ------------------------------------------------------------------------------

    def get(self, object_id: str, scale: float = 1.0) -> SimObject:
        """The object at its canonical size times `scale` (cached)."""
        self._check_id(object_id)
        given = scale
        try:
            scale = float(scale)
        except (TypeError, ValueError):
            scale = math.nan
        if not (math.isfinite(scale) and scale > 0):
            raise ObjectValidationError(f"{object_id}: scale must be a positive finite number, got {given!r}")
        obj = self._canonical.get(object_id)
        if obj is None:
            obj = self._build(object_id)
            self._canonical[object_id] = obj
        if scale == 1.0:
            return obj
        key = (object_id, round(float(scale), 9))
        if key not in self._scaled:
            self._scaled[key] = _rescaled(obj, float(scale))
        return self._scaled[key]

    def _build(self, object_id: str) -> SimObject:
        source, _, name = object_id.partition("/")
        what = f"object '{object_id}'"
        density = DEFAULT_DENSITY
        mass: float | None = None
        target = DEFAULT_TARGET_EXTENT
        rgba: tuple[float, float, float, float] | None = None
        friction: float | None = None
        kind: Source
        if source == "prim":
            kind = "primitive"
            e = _PRIMITIVES[name]
            raw = _Raw(mesh=_union_surface(e.parts), parts=list(e.parts), friction=e.friction)
            density, rgba = e.density, e.rgba
        elif source == "pb":
            kind = "pybullet"
            pb = _PYBULLET[name]
            if pb.urdf is not None:
                raw = _read_urdf(resolve_asset(f"package://pybullet_data/{pb.urdf}"), what)
            else:
                mesh, _ = _mesh_from_obj(resolve_asset(f"package://pybullet_data/{pb.obj}"), what)
                mesh.apply_transform(np.diag([*pb.mesh_scale, 1.0]))
                raw = _Raw(mesh=mesh, parts=[])
            if pb.collision == "hull":
                raw.parts = [_hull_mesh(raw.mesh.vertices)]
            elif pb.collision == "coacd" or not raw.parts:
                raw.parts, raw.decompose = [], True
            density, mass, target, friction = pb.density, pb.mass, pb.target_extent, pb.friction
            rgba = pb.rgba or raw.rgba
        elif source == "pbr":
            kind = "pybullet_random"
            raw = _read_urdf(resolve_asset(f"package://pybullet_data/random_urdfs/{name}/{name}.urdf"), what)
            raw.mesh = _union_surface(raw.parts) if len(raw.parts) > 1 else raw.mesh
            raw.mass = None  # the URDFs' 0.1 kg is a placeholder
            rgba = raw.rgba
        elif source == "gym":
            kind = "gym"
            g = _GYM[name]
            raw = _read_gym(g, what)
            density, mass, target, rgba = g.density, g.mass, g.target_extent, g.rgba
        else:  # pragma: no cover - ids are checked first
            raise UnknownObjectError(f"unknown object source in '{object_id}'")
        return self._finish(object_id, kind, raw, density, mass, target, friction, rgba)

    def _finish(
        self,
        object_id: str,
        kind: Source,
        raw: _Raw,
        density: float,
        mass: float | None,
        target: float,
        friction: float | None,
        rgba: tuple[float, float, float, float] | None,
    ) -> SimObject:
        what = f"object '{object_id}'"
        mesh = raw.mesh
        _validate_mesh(np.asarray(mesh.vertices), np.asarray(mesh.faces), what)
        # sizing rule
        native = float(mesh.extents.max())
        lo, hi = HAND_SIZE_RANGE
        factor = 1.0 if lo <= native <= hi else target / native
        mesh = mesh.copy()
        mesh.apply_scale(factor)
        parts = [_scale_part(p, factor) for p in raw.parts]
        solid_parts = parts
        decomposition = "primitive" if parts and all(isinstance(p, Primitive) for p in parts) else "convex"
        if raw.decompose:
            parts = [_hull_mesh(v) for v in self._decompose(object_id, mesh)]
            solid_parts, decomposition = parts, "coacd"
        elif len([p for p in parts if isinstance(p, trimesh.Trimesh)]) > 1:
            # a provided convex set (random_urdfs, *_vhacd.obj): bound the count, fold in slivers
            meshes = [p for p in parts if isinstance(p, trimesh.Trimesh)]
            prims = [p for p in parts if isinstance(p, Primitive)]
            merged = self._merge(object_id, [np.asarray(m.vertices) for m in meshes])
            parts = [*prims, *(_hull_mesh(v) for v in merged)]
            decomposition = "provided" if len(merged) == len(meshes) else "provided+merged"
        if not parts:
            raise ObjectValidationError(f"{what}: no collision geometry")
        volume, com, inertia_unit = _solid_properties(mesh, solid_parts)
        # object frame: origin at the centre of mass
        mesh.apply_translation(-com)
        parts = [_scale_part(p, 1.0, -com) for p in parts]
        nominal = float(mass if mass is not None else density * volume)
        m = float(np.clip(nominal, *MASS_RANGE))
        obj = SimObject(
            id=object_id,
            source=kind,
            mesh=mesh,
            collision=parts,
            mass=m,
            friction=float(friction if friction is not None else raw.friction),
            scale=1.0,
            volume=volume,
            inertia=inertia_unit * (m / volume),
            long_axis=_long_axis(inertia_unit, np.asarray(mesh.vertices)),
            native_scale=factor,
            density=m / volume,
            rgba=tuple(float(c) for c in (rgba or _palette(object_id))),  # type: ignore[arg-type]
            decomposition=decomposition,
            info={"native_max_extent": native, "n_parts": len(parts), "nominal_mass": nominal},
        )
        _validate_object(obj, canonical=True)
        return obj

    def _decompose(self, object_id: str, mesh: trimesh.Trimesh) -> list[np.ndarray]:
        import coacd

        key = _geometry_hash(
            np.asarray(mesh.vertices),
            np.asarray(mesh.faces),
            extra={
                "method": "coacd",
                "version": getattr(coacd, "__version__", "?"),
                **self.params.coacd_kwargs(),
            },
        )
        path = _cache_file(object_id, key)
        cached = _load_parts(path) if path.exists() else None
        if cached is not None:
            self.stats.cache_hits += 1
            return cached
        t0 = time.perf_counter()
        parts = _run_coacd(mesh, self.params)
        parts = _merge_convex_parts(parts, self.params.max_parts, self.params.min_part_fraction)
        self.stats.computed += 1
        self.stats.seconds += time.perf_counter() - t0
        _save_parts(path, parts)
        return parts

    def _merge(self, object_id: str, parts: list[np.ndarray]) -> list[np.ndarray]:
        total = sum(_hull_volume(p) for p in parts)
        needs = len(parts) > self.params.max_parts or any(
            _hull_volume(p) < self.params.min_part_fraction * total for p in parts
        )
        if not needs:
            return parts
        key = _geometry_hash(
            *parts,
            extra={"method": "merge", "max": self.params.max_parts, "min": self.params.min_part_fraction},
        )
        path = _cache_file(object_id, key)
        cached = _load_parts(path) if path.exists() else None
        if cached is not None:
            self.stats.cache_hits += 1
            return cached
        t0 = time.perf_counter()
        merged = _merge_convex_parts(parts, self.params.max_parts, self.params.min_part_fraction)
        self.stats.computed += 1
        self.stats.seconds += time.perf_counter() - t0
        _save_parts(path, merged)
        return merged


def _rescaled(obj: SimObject, scale: float) -> SimObject:
    """`obj` (canonical) times `scale`: geometry scaled about the COM, mass re-derived and clamped."""
    mesh = obj.mesh.copy()
    mesh.apply_scale(scale)
    volume = obj.volume * scale**3
    nominal = float(obj.info.get("nominal_mass", obj.mass)) * scale**3  # type: ignore[arg-type]
    m = float(np.clip(nominal, *MASS_RANGE))
    new = dataclasses.replace(
        obj,
        mesh=mesh,
        collision=[_scale_part(p, scale) for p in obj.collision],
        mass=m,
        scale=scale,
        volume=volume,
        inertia=obj.inertia / obj.mass * m * scale**2,
        density=m / volume,
        info={**obj.info, "nominal_mass": nominal},
    )
    _validate_object(new, canonical=False)
    return new


def _validate_object(obj: SimObject, canonical: bool) -> None:
    ext = obj.extents
    lo, hi = HAND_SIZE_RANGE if canonical else SCALED_SIZE_RANGE
    if not (lo - 1e-6 <= ext.max() <= hi + 1e-6):
        raise ObjectValidationError(
            f"object '{obj.id}' at scale {obj.scale:g} is {ext.max() * 100:.1f} cm long; hand-sized objects "
            f"are {lo * 100:.0f}-{hi * 100:.0f} cm (wrong scale?)"
        )
    if canonical and ext.min() < MIN_THICKNESS:
        raise ObjectValidationError(
            f"object '{obj.id}' is {ext.min() * 1000:.1f} mm thin; objects need >= "
            f"{MIN_THICKNESS * 1000:.0f} mm (exclude it in split.yaml)"
        )
    if not (obj.volume > 0 and obj.mass > 0 and np.isfinite(obj.inertia).all()):
        raise ObjectValidationError(f"object '{obj.id}': non-positive volume/mass or invalid inertia")


# --------------------------------------------------------------------------------------------
# MuJoCo and surface sampling
# --------------------------------------------------------------------------------------------

#: Contact parameters for grasping: stiff (5x a 2 ms step), damped, little penetration.
CONTACT_SOLREF = (0.01, 1.0)
CONTACT_SOLIMP = (0.95, 0.99, 0.001, 0.5, 2.0)


def add_object_body(
    spec: mujoco.MjSpec,
    obj: SimObject,
    name: str = "object",
    pos: Sequence[float] = (0.0, 0.0, 0.0),
    quat_wxyz: Sequence[float] = (1.0, 0.0, 0.0, 0.0),
    *,
    condim: int = 6,
    torsional_friction: float = 0.005,
    rolling_friction: float = 0.002,
    rgba: Sequence[float] | None = None,
) -> mujoco.MjsBody:
    """Add `obj` to `spec` as a free body `name` (freejoint ``{name}_freejoint``).

    Collision geoms: group 3; ``condim`` 6 = sliding, torsional and rolling friction (rolling
    friction lets round objects such as eggs come to rest and resists fingertips rolling over the
    object; 4 drops it); priority 1 so the object's friction and contact parameters (`CONTACT_SOLREF`,
    `CONTACT_SOLIMP`) apply to all its contacts. One visual mesh geom: group 2, no contacts.
    Meshes and geoms are named ``{name}_col<i>`` / ``{name}_visual``, so several objects can share
    a spec. The inertial is explicit (mass, inertia about the COM = the body origin).
    """
    if condim not in (1, 3, 4, 6):
        raise ValueError(f"condim must be 1, 3, 4 or 6, got {condim}")
    body = spec.worldbody.add_body(name=name, pos=list(pos), quat=list(quat_wxyz))
    body.add_freejoint(name=f"{name}_freejoint")
    body.mass = obj.mass
    body.ipos = [0.0, 0.0, 0.0]
    J = obj.inertia
    body.fullinertia = [J[0, 0], J[1, 1], J[2, 2], J[0, 1], J[0, 2], J[1, 2]]
    body.explicitinertial = True
    friction = [obj.friction, torsional_friction, rolling_friction]
    for i, part in enumerate(obj.collision):
        common = {
            "name": f"{name}_col{i}",
            "group": 3,
            "condim": condim,
            "friction": friction,
            "priority": 1,
            "solref": list(CONTACT_SOLREF),
            "solimp": list(CONTACT_SOLIMP),
            "rgba": [*obj.rgba[:3], 0.4],
        }
        if isinstance(part, Primitive):
            size = [*part.size, 0.0, 0.0][:3]
            body.add_geom(
                type=part.mujoco_type, size=size, pos=list(part.pos), quat=list(part.quat_wxyz), **common
            )
        else:
            mesh = spec.add_mesh(name=f"{name}_col{i}")
            mesh.uservert = np.asarray(part.vertices, float).ravel().tolist()
            mesh.userface = np.asarray(part.faces, int).ravel().tolist()
            mesh.inertia = mujoco.mjtMeshInertia.mjMESH_INERTIA_SHELL  # inertia is explicit anyway
            body.add_geom(type=mujoco.mjtGeom.mjGEOM_MESH, meshname=f"{name}_col{i}", **common)
    visual = spec.add_mesh(name=f"{name}_visual")
    visual.uservert = np.asarray(obj.mesh.vertices, float).ravel().tolist()
    visual.userface = np.asarray(obj.mesh.faces, int).ravel().tolist()
    visual.inertia = mujoco.mjtMeshInertia.mjMESH_INERTIA_SHELL  # visual meshes need not be closed
    body.add_geom(
        name=f"{name}_visual",
        type=mujoco.mjtGeom.mjGEOM_MESH,
        meshname=f"{name}_visual",
        group=2,
        contype=0,
        conaffinity=0,
        mass=0.0,
        rgba=list(rgba if rgba is not None else obj.rgba),
    )
    return body


def sample_surface_points(obj: SimObject, n: int = 1024, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``n`` points on `obj.mesh` (object frame), area-weighted, with their face normals.

    Deterministic for (object, n, seed): the same points in training and at run time.
    """
    if n <= 0:
        raise ValueError(f"n must be positive, got {n}")
    mesh = obj.mesh
    areas = np.asarray(mesh.area_faces, float)
    if not np.isfinite(areas).all() or areas.sum() <= 0:
        raise ObjectValidationError(f"object '{obj.id}': mesh has no surface area to sample")
    rng = np.random.default_rng(seed)
    faces = rng.choice(len(areas), size=n, p=areas / areas.sum())
    u, v = rng.random(n), rng.random(n)
    flip = u + v > 1.0
    u[flip], v[flip] = 1.0 - u[flip], 1.0 - v[flip]
    tri = np.asarray(mesh.triangles)[faces]
    points = tri[:, 0] + u[:, None] * (tri[:, 1] - tri[:, 0]) + v[:, None] * (tri[:, 2] - tri[:, 0])
    normals = np.asarray(mesh.face_normals)[faces]
    return points, normals
