"""Grasp pools per object: 25 approach directions x 20 spins, fingers closed to contact, each
candidate checked by the paper's stability test (ROS-free).

    pool = generate_pool(robot, obj)               # 500 candidates, tested
    pool.save("pools/prim__mug.npz"); GraspPool.load(...)
    pool.succ6.mean(), pool.succ1.mean()
    good = pool.select(pool.succ6)                 # the stable grasps

Candidates (DexH2R's pool layout, `gen_final_pose/`): approach directions are a Fibonacci lattice
of `n_directions` points on the sphere (the paper: 25 farthest-point samples, near-uniform
either way) about the object's long axis; each is spun `n_spins` times about that axis in equal
steps (the paper's 0..342 deg in 18 deg steps). For each, the palm faces the object (its normal
along -direction, the palm's across axis along the long axis, alternate directions rolled 90 deg),
the hand's grasp centre on the line through the object's box centre, backed off until no hand
point in the open pre-shape is within `standoff` of the object; then the fingers close in MuJoCo
(`GraspTestbed.close`: every joint stops where its link touches). Everything is in the object
frame (origin = the object's centre of mass); the hand pose is that of the hand's root frame
(the wrist mount, hand wrist joints at zero, as the paper's learned models keep them).
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np
from scipy.spatial.transform import Rotation

from dexh2r_core.robot.description import RobotDescription
from dexh2r_policy.grasps.stability import (
    DIRECTION_NAMES,
    HAND_PREFIX,
    GraspTestbed,
    StabilityConfig,
    finger_joint_names,
)

POOL_VERSION = 1


@dataclass(frozen=True)
class PoolConfig:
    n_directions: int = 25
    n_spins: int = 20
    standoff: float = 0.006  # m between the open hand and the object before closing
    rolls_deg: tuple[float, ...] = (0.0, 90.0)  # palm roll of direction i: rolls_deg[i % len]
    # Shadow hand geometry in the hand root frame (wrist joints 0): the palm faces -y, the
    # fingers run along +z, +x points to the thumb; the grasp centre sits in front of the palm
    # below the finger bases, where a power grasp holds an object.
    palm_normal: tuple[float, float, float] = (0.0, -1.0, 0.0)
    palm_across: tuple[float, float, float] = (1.0, 0.0, 0.0)
    grasp_centre: tuple[float, float, float] = (0.01, -0.011, 0.105)
    # Pre-shape (open) and closed postures, hand joint name -> angle; others 0. The thumb starts
    # opposed (out of the palm plane) and sweeps across the palm while it flexes.
    open_pose: dict[str, float] = field(default_factory=lambda: {"rh_THJ4": 1.22, "rh_THJ5": -0.6})
    closed_pose: dict[str, float] = field(
        default_factory=lambda: {
            **{f"rh_{f}J{j}": 1.5 for f in ("FF", "MF", "RF", "LF") for j in (3, 2)},
            "rh_LFJ5": 0.3,
            "rh_THJ4": 1.22,
            "rh_THJ5": 1.0,
            "rh_THJ2": 0.5,
            "rh_THJ1": -0.6,
        }
    )
    clearance_points: int = 512  # hand surface points used to back the hand off
    seed: int = 0

    def __post_init__(self) -> None:
        if self.n_directions < 1 or self.n_spins < 1:
            raise ValueError("n_directions and n_spins must be at least 1")
        if self.standoff < 0:
            raise ValueError(f"standoff: must be >= 0, got {self.standoff}")

    @property
    def n_candidates(self) -> int:
        return self.n_directions * self.n_spins


@dataclass
class GraspPool:
    """Grasps of one object, in its frame. Row i: hand root pose `T_obj_hand[i]` (4x4), finger
    joints `finger_q[i]` (`finger_joint_names` order), and its stability test results."""

    object_id: str
    object_scale: float
    finger_joint_names: tuple[str, ...]
    T_obj_hand: np.ndarray  # [N, 4, 4]
    finger_q: np.ndarray  # [N, F]
    stable: np.ndarray  # [N, 6] bool, DIRECTION_NAMES order
    displacement: np.ndarray  # [N, 6] m
    pen_depth: np.ndarray  # [N] m, deepest hand surface point inside the object
    contacts: np.ndarray  # [N] hand-object contacts at the start of the test
    candidate: np.ndarray  # [N] index in the direction x spin grid (direction * n_spins + spin)
    info: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        n = len(self.T_obj_hand)
        shapes = {
            "T_obj_hand": (self.T_obj_hand, (n, 4, 4)),
            "finger_q": (self.finger_q, (n, len(self.finger_joint_names))),
            "stable": (self.stable, (n, 6)),
            "displacement": (self.displacement, (n, 6)),
            "pen_depth": (self.pen_depth, (n,)),
            "contacts": (self.contacts, (n,)),
            "candidate": (self.candidate, (n,)),
        }
        for name, (value, shape) in shapes.items():
            if np.shape(value) != shape:
                raise ValueError(f"GraspPool.{name}: expected shape {shape}, got {np.shape(value)}")

    def __len__(self) -> int:
        return len(self.T_obj_hand)

    @property
    def succ6(self) -> np.ndarray:
        return self.stable.all(axis=1)

    @property
    def succ1(self) -> np.ndarray:
        return self.stable.any(axis=1)

    def select(self, mask: np.ndarray) -> GraspPool:
        mask = np.asarray(mask)
        return GraspPool(
            self.object_id,
            self.object_scale,
            self.finger_joint_names,
            self.T_obj_hand[mask],
            self.finger_q[mask],
            self.stable[mask],
            self.displacement[mask],
            self.pen_depth[mask],
            self.contacts[mask],
            self.candidate[mask],
            dict(self.info),
        )

    def pose9(self) -> np.ndarray:
        """[N, 9]: translation + 6-D rotation (first two rows of R, pytorch3d's convention)."""
        return np.concatenate(
            [self.T_obj_hand[:, :3, 3], self.T_obj_hand[:, :2, :3].reshape(len(self), 6)], axis=1
        )

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp.npz")
        np.savez_compressed(
            tmp,
            version=POOL_VERSION,
            object_id=self.object_id,
            object_scale=self.object_scale,
            finger_joint_names=np.array(self.finger_joint_names),
            T_obj_hand=self.T_obj_hand.astype(np.float32),
            finger_q=self.finger_q.astype(np.float32),
            stable=self.stable,
            displacement=self.displacement.astype(np.float32),
            pen_depth=self.pen_depth.astype(np.float32),
            contacts=self.contacts.astype(np.int32),
            candidate=self.candidate.astype(np.int32),
            info=json.dumps(self.info),
        )
        tmp.replace(path)  # atomic: parallel workers write side by side
        return path

    @classmethod
    def load(cls, path: str | Path) -> GraspPool:
        path = Path(path)
        if not path.exists():
            raise FileNotFoundError(f"grasp pool {path} does not exist")
        with np.load(path, allow_pickle=False) as z:
            version = int(z["version"]) if "version" in z else -1
            if version != POOL_VERSION:
                raise ValueError(f"{path}: grasp pool version {version}, this code reads {POOL_VERSION}")
            return cls(
                object_id=str(z["object_id"]),
                object_scale=float(z["object_scale"]),
                finger_joint_names=tuple(str(n) for n in z["finger_joint_names"]),
                T_obj_hand=z["T_obj_hand"].astype(float),
                finger_q=z["finger_q"].astype(float),
                stable=z["stable"].astype(bool),
                displacement=z["displacement"].astype(float),
                pen_depth=z["pen_depth"].astype(float),
                contacts=z["contacts"].astype(int),
                candidate=z["candidate"].astype(int),
                info=json.loads(str(z["info"])),
            )


# Grasp families of a pool folder: the paper's whole-hand grasps (this module) and fingertip
# pinches on the object's free part (`grasps/pinch.py`). One file per object and family.
FAMILIES = ("power", "pinch")


def pool_filename(object_id: str, scale: float = 1.0, family: str = "power") -> str:
    """`prim/mug` -> `prim__mug.npz`, its pinches `prim__mug.pinch.npz` (ids contain a slash)."""
    if family not in FAMILIES:
        raise ValueError(f"grasp family '{family}': expected one of {', '.join(FAMILIES)}")
    stem = object_id.replace("/", "__")
    stem = stem if scale == 1.0 else f"{stem}@{scale:g}"
    return f"{stem}.npz" if family == "power" else f"{stem}.{family}.npz"


# ---- candidates --------------------------------------------------------------------------------


def fibonacci_sphere(n: int) -> np.ndarray:
    """n near-uniform unit vectors; the first is +z (the long axis itself)."""
    if n == 1:
        return np.array([[0.0, 0.0, 1.0]])
    k = np.arange(n)
    z = 1.0 - 2.0 * k / (n - 1)
    r = np.sqrt(np.clip(1.0 - z * z, 0.0, 1.0))
    phi = k * np.pi * (3.0 - np.sqrt(5.0))
    return np.stack([r * np.cos(phi), r * np.sin(phi), z], axis=1)


def _frame_from_z(axis: np.ndarray) -> np.ndarray:
    """A rotation whose third column is `axis`."""
    a = axis / np.linalg.norm(axis)
    helper = np.array([1.0, 0.0, 0.0]) if abs(a[0]) < 0.9 else np.array([0.0, 1.0, 0.0])
    x = np.cross(helper, a)
    x /= np.linalg.norm(x)
    return np.column_stack([x, np.cross(a, x), a])


def candidate_rotations(long_axis: np.ndarray, config: PoolConfig) -> tuple[np.ndarray, np.ndarray]:
    """(hand rotations [N, 3, 3] in the object frame, approach directions [N, 3] object -> hand),
    row = direction * n_spins + spin."""
    L = np.asarray(long_axis, float)
    L = L / np.linalg.norm(L)
    to_obj = _frame_from_z(L)
    dirs = fibonacci_sphere(config.n_directions) @ to_obj.T  # lattice about the long axis
    n_p = np.asarray(config.palm_normal, float)
    a_p = np.asarray(config.palm_across, float)
    hand_frame = np.column_stack([n_p, a_p, np.cross(n_p, a_p)])
    rotations, approaches = [], []
    for i, d in enumerate(dirs):
        ref = L - (L @ d) * d  # palm across along the long axis, where it is not the approach
        if np.linalg.norm(ref) < 0.2:
            ref = to_obj[:, 0] - (to_obj[:, 0] @ d) * d
        ref /= np.linalg.norm(ref)
        roll = np.deg2rad(config.rolls_deg[i % len(config.rolls_deg)])
        ref = Rotation.from_rotvec(roll * d).apply(ref)
        target = np.column_stack([-d, ref, np.cross(-d, ref)])
        R_i = target @ hand_frame.T  # maps palm normal -> -d, across -> ref
        for j in range(config.n_spins):
            spin = Rotation.from_rotvec(2.0 * np.pi * j / config.n_spins * L).as_matrix()
            rotations.append(spin @ R_i)
            approaches.append(spin @ d)
    return np.array(rotations), np.array(approaches)


def subset_indices(n_total: int, n: int) -> np.ndarray:
    """n candidate indices spread evenly over the grid (all of them when n >= n_total)."""
    if n >= n_total:
        return np.arange(n_total)
    return np.unique(np.round(np.linspace(0, n_total - 1, n)).astype(int))


def hand_vector(robot: RobotDescription, pose: dict[str, float]) -> np.ndarray:
    q = np.zeros(robot.n_hand)
    for name, value in pose.items():
        if name not in robot.hand_joint_names:
            raise KeyError(f"pose names '{name}', which is not a hand joint of {robot.config.name}")
        q[robot.hand_joint_names.index(name)] = value
    return robot.apply_couplings(q)


class HandPoints:
    """The description's hand surface points posed by the testbed's forward kinematics."""

    def __init__(self, bed: GraspTestbed, n: int | None = None, seed: int = 0) -> None:
        sp = bed.robot.hand_surface_points
        idx = np.arange(len(sp.points))
        if n is not None and n < len(idx):
            idx = np.sort(np.random.default_rng(seed).choice(idx, n, replace=False))
        self.bed = bed
        self.points = sp.points[idx]
        self.body = np.array([bed.model.body(HAND_PREFIX + sp.links[k]).id for k in sp.link_index[idx]])

    def world(self) -> np.ndarray:
        """Points in the testbed's world (= object) frame for its current state."""
        d = self.bed.data
        R = d.xmat[self.body].reshape(-1, 3, 3)
        return d.xpos[self.body] + np.einsum("nij,nj->ni", R, self.points)

    def at(self, T_obj_hand: np.ndarray, q_hand: np.ndarray) -> np.ndarray:
        self.bed.reset(T_obj_hand, q_hand)
        return self.world()


def penetration_depth(points: HandPoints, sdf, T_obj_hand: np.ndarray, q_hand: np.ndarray) -> float:
    """Deepest hand surface point inside the object (m, 0 if none): the paper's pen_depth."""
    return float(max(0.0, -sdf(points.at(T_obj_hand, q_hand)).min()))


def _place(
    sdf, P_hand: np.ndarray, R: np.ndarray, d: np.ndarray, centre: np.ndarray, c_hand: np.ndarray, gap: float
) -> np.ndarray:
    """Hand root translation: grasp centre on the line centre + s*d, smallest s >= 0 (bisection)
    with every hand point at least `gap` outside the object."""
    P = P_hand @ R.T

    def clear(s: float) -> bool:
        t = centre + s * d - R @ c_hand
        return bool(sdf(P + t).min() >= gap)

    lo, hi = 0.0, 0.05
    while not clear(hi):
        lo, hi = hi, 2 * hi
        if hi > 2.0:
            raise RuntimeError("cannot back the hand off the object (is the object larger than 2 m?)")
    if clear(lo):
        hi = lo
    for _ in range(14):  # ~ 0.01 mm
        mid = 0.5 * (lo + hi)
        lo, hi = (lo, mid) if clear(mid) else (mid, hi)
    return centre + hi * d - R @ c_hand


# ---- generators ----------------------------------------------------------------------------------


class GraspGenerator(Protocol):
    """Something that proposes grasps for an object (this pool synthesis, later the grasp CVAE)."""

    name: str

    def generate(self, obj, n: int) -> tuple[np.ndarray, np.ndarray]:
        """(T_obj_hand [n, 4, 4], finger_q [n, F]) in the object frame, F = finger_joint_names."""
        ...


class PoolGenerator:
    """Geometric synthesis: approach grid + physics closure (no test; `generate_pool` adds it)."""

    name = "pool"

    def __init__(
        self,
        robot: RobotDescription,
        config: PoolConfig | None = None,
        stability: StabilityConfig | None = None,
    ) -> None:
        self.robot = robot
        self.config = config or PoolConfig()
        self.stability = stability or StabilityConfig()
        self.fingers = finger_joint_names(robot)
        self.finger_idx = np.array([robot.hand_joint_names.index(n) for n in self.fingers])
        self.q_open = hand_vector(robot, self.config.open_pose)
        self.q_closed = hand_vector(robot, self.config.closed_pose)
        self.last_candidates: np.ndarray = np.zeros(0, dtype=int)

    def testbed(self, obj) -> GraspTestbed:
        return GraspTestbed(self.robot, obj, self.stability)

    def generate(
        self, obj, n: int, bed: GraspTestbed | None = None, progress=None
    ) -> tuple[np.ndarray, np.ndarray]:
        from dexh2r_sim.scripted import ObjectSdf  # the sim's object signed distance

        c = self.config
        bed = bed or self.testbed(obj)
        sdf = ObjectSdf(obj)
        points = HandPoints(bed, c.clearance_points, c.seed)
        P_open = points.at(np.eye(4), self.q_open)  # root frame (identity pose)
        c_hand = np.asarray(c.grasp_centre, float)
        rotations, approaches = candidate_rotations(obj.long_axis, c)
        idx = subset_indices(len(rotations), n)
        centre = obj.bounds.mean(axis=0)
        T_all = np.repeat(np.eye(4)[None], len(idx), axis=0)
        q_all = np.zeros((len(idx), len(self.fingers)))
        for k, i in enumerate(idx):
            R = rotations[i]
            T_all[k, :3, :3] = R
            T_all[k, :3, 3] = _place(sdf, P_open, R, approaches[i], centre, c_hand, c.standoff)
            q = bed.close(T_all[k], self.q_open, self.q_closed)
            q_all[k] = q[self.finger_idx]
            if progress is not None:
                progress(1)
        self.last_candidates = idx
        return T_all, q_all

    def full_q(self, finger_q: np.ndarray) -> np.ndarray:
        """Finger joints -> all hand joints (wrist joints 0, couplings applied)."""
        q = np.zeros((*np.shape(finger_q)[:-1], self.robot.n_hand))
        q[..., self.finger_idx] = finger_q
        return self.robot.apply_couplings(q)


def evaluate_grasps(
    robot: RobotDescription,
    obj,
    T_obj_hand: np.ndarray,
    finger_q: np.ndarray,
    stability: StabilityConfig | None = None,
    bed: GraspTestbed | None = None,
    progress=None,
) -> dict[str, np.ndarray]:
    """Stability test and penetration depth of each grasp: stable [N, 6], displacement [N, 6],
    pen_depth [N] (m), contacts [N]."""
    from dexh2r_sim.scripted import ObjectSdf

    bed = bed or GraspTestbed(robot, obj, stability)
    fingers = finger_joint_names(robot)
    finger_idx = np.array([robot.hand_joint_names.index(n) for n in fingers])
    sdf = ObjectSdf(obj)
    points = HandPoints(bed)
    n = len(T_obj_hand)
    out = {
        "stable": np.zeros((n, 6), dtype=bool),
        "displacement": np.zeros((n, 6)),
        "pen_depth": np.zeros(n),
        "contacts": np.zeros(n, dtype=int),
    }
    for k in range(n):
        q = np.zeros(robot.n_hand)
        q[finger_idx] = finger_q[k]
        q = robot.apply_couplings(q)
        out["pen_depth"][k] = penetration_depth(points, sdf, T_obj_hand[k], q)
        result = bed.test(T_obj_hand[k], q)
        out["stable"][k] = result.stable
        out["displacement"][k] = result.displacement
        out["contacts"][k] = result.contacts
        if progress is not None:
            progress(1)
    return out


def generate_pool(
    robot: RobotDescription,
    obj,
    n: int | None = None,
    config: PoolConfig | None = None,
    stability: StabilityConfig | None = None,
    progress=None,
    generator=None,
) -> GraspPool:
    """The tested grasp pool of `obj` (all `n` candidates, default the full grid, with results).

    progress: optional callable(k) called as candidates are synthesised and as they are tested
    (2 n calls in all), e.g. a tqdm bar's `update`. generator: the candidates' source (default
    `PoolGenerator(robot, config, stability)`, the paper's whole-hand grasps; `grasps.pinch.
    PinchGenerator` for fingertip pinches).
    """
    generator = generator or PoolGenerator(robot, config, stability)
    c = generator.config
    n = c.n_candidates if n is None else int(n)
    if n < 1:
        raise ValueError(f"n: need at least one candidate, got {n}")
    bed = generator.testbed(obj)
    t0 = time.perf_counter()
    T, q = generator.generate(obj, n, bed=bed, progress=progress)
    t1 = time.perf_counter()
    results = evaluate_grasps(robot, obj, T, q, bed=bed, progress=progress)
    t2 = time.perf_counter()
    info = {
        "requested": n,  # candidates asked for (a generator may drop some it cannot place)
        "family": "pinch" if generator.name == "pinch" else "power",
        "robot": robot.config.name,
        "directions": list(DIRECTION_NAMES),
        "pool_config": asdict(c),  # PoolConfig or PinchConfig
        "stability_config": asdict(generator.stability),
        "object_volume_m3": float(obj.volume),
        "object_mass_kg": float(obj.mass),
        "push_force_n": float(bed.force),
        "synthesis_s": t1 - t0,
        "test_s": t2 - t1,
        "seconds_per_candidate": (t2 - t0) / max(len(T), 1),
    }
    if hasattr(generator, "last_costs"):
        info["plan_costs"] = [round(float(v), 5) for v in generator.last_costs]
    return GraspPool(
        object_id=obj.id,
        object_scale=float(obj.scale),
        finger_joint_names=tuple(generator.fingers),
        T_obj_hand=T,
        finger_q=q,
        candidate=generator.last_candidates,
        info=info,
        **results,
    )
