"""Does a pool grasp hold the object's weight when the closed loop closes it? (ROS-free)

The pool's stability test (`grasps.stability`, the paper's) closes each candidate until its
links touch and pushes with 500 N/m^3 x the object's volume: 0.06 N on a 5 cm box, far below the
object's weight, with the fingers already on the surface. The closed loop closes differently:
DynamicGrasp's pregrasp style arrives with the grasp opened (`DynamicGrasp.open_hand`) and drives
the fingers to the grasp squeezed past contact (`DynamicGrasp.squeezed`) whatever they meet. Some
grasps that pass the paper's test end that close without a hold, and in the closed loop they
never handed over: the can grasp that `hard_drift_fast_can` always chose timed out in all 57 of
its closes, the mug grasp of `hard_arc_mug_fast` in 15 (docs/closed_loop.md, session 17).

    bed = GraspTestbed(robot, obj)
    d = close_hold_displacement(bed, T_obj_hand, q_open, q_squeezed)   # [6] m
    holds = (d < CloseHoldConfig().max_move).all()

The test, on the floating hand of `GraspTestbed` (object frame = world, gravity off): the hand
at the grasp with the opened fingers; the fingers ramp to the squeezed grasp over `close_s`
while the object is held where the grasp has it (the giver still holds it), then settle for
`settle_s`; then the object is let go and pushed with its own weight (m g) along each of +-x,
+-y, +-z of its frame for `hold_s`, each from the settled state. A direction passes when the
object's centre ends within `max_move` of where the grasp put it. All six are tested because the
direction of gravity in the object frame depends on how the giver holds the object, and a
handover adds the pull and the giver's motion.

Results are kept next to each pool file (`<pool>.hold.npz`: the displacements of every row of
the pool, the settings and a digest of the pool's grasps, so a regenerated pool is not matched
with stale results); `dexh2r datagen hold` writes them.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path

import mujoco
import numpy as np

from dexh2r_policy.grasps.stability import DIRECTIONS, GraspTestbed

HOLD_VERSION = 1
GRAVITY = 9.81


@dataclass(frozen=True)
class CloseHoldConfig:
    close_s: float = 0.5  # DynamicGraspConfig.close_frames (5) at the loop's 10 Hz
    settle_s: float = 0.5
    hold_s: float = 0.5
    max_move: float = 0.02  # m, as the paper's test

    def __post_init__(self) -> None:
        for name in ("close_s", "hold_s", "max_move"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name}: must be positive, got {getattr(self, name)}")
        if self.settle_s < 0:
            raise ValueError(f"settle_s: must be >= 0, got {self.settle_s}")


def close_hold_displacement(
    bed: GraspTestbed,
    T_obj_hand: np.ndarray,
    q_open: np.ndarray,
    q_squeezed: np.ndarray,
    config: CloseHoldConfig | None = None,
) -> np.ndarray:
    """[6] m: the object's displacement after its weight pushed along each of `DIRECTIONS`
    (object frame), once the fingers closed from `q_open` to `q_squeezed` (finger joints in the
    pool's order, `finger_joint_names`) with the hand root at `T_obj_hand`."""
    c = config or CloseHoldConfig()
    m, d = bed.model, bed.data
    q_open = bed.couple(np.asarray(q_open, dtype=float))
    q_squeezed = bed.couple(np.asarray(q_squeezed, dtype=float))
    bed.reset(T_obj_hand, bed.full(q_open))
    n_close = max(round(c.close_s * bed.steps_per_s), 1)
    for k in range(n_close + round(c.settle_s * bed.steps_per_s)):
        f = min(1.0, (k + 1) / n_close)
        bed.set_targets(q_open + f * (q_squeezed - q_open))
        bed._hold_object()
        mujoco.mj_step(m, d)
    bed._hold_object()
    mujoco.mj_forward(m, d)
    return bed.push(float(m.body_mass[bed.object_body]) * GRAVITY, c.hold_s)  # the object's weight


def pool_digest(T_obj_hand: np.ndarray, finger_q: np.ndarray) -> str:
    """A digest of a pool file's grasps (float32, as stored): ties hold results to them."""
    h = hashlib.sha1()
    h.update(np.ascontiguousarray(T_obj_hand, dtype=np.float32).tobytes())
    h.update(np.ascontiguousarray(finger_q, dtype=np.float32).tobytes())
    return h.hexdigest()


def hold_path(pool_path: str | Path) -> Path:
    """`prim__mug.npz` -> `prim__mug.hold.npz`, `prim__mug.pinch.npz` -> `prim__mug.pinch.hold.npz`."""
    p = Path(pool_path)
    return p.with_name(p.name[: -len(".npz")] + ".hold.npz")


@dataclass
class HoldResults:
    """Close-hold displacements [N, 6] (m) of every row of one pool file."""

    displacement: np.ndarray
    digest: str
    settings: dict

    def holds(self) -> np.ndarray:
        """[N] bool: the object stayed within the run's `max_move` in all six directions (a row
        not tested, NaN, does not hold)."""
        return (self.displacement < self.settings.get("max_move", CloseHoldConfig().max_move)).all(axis=1)

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        tmp = path.with_name(path.name + ".tmp.npz")
        np.savez_compressed(
            tmp,
            version=HOLD_VERSION,
            displacement=self.displacement.astype(np.float32),
            digest=self.digest,
            settings=json.dumps(self.settings),
        )
        tmp.replace(path)
        return path

    @classmethod
    def load(cls, path: str | Path) -> HoldResults:
        with np.load(path, allow_pickle=False) as z:
            version = int(z["version"]) if "version" in z else -1
            if version != HOLD_VERSION:
                raise ValueError(f"{path}: hold results version {version}, this code reads {HOLD_VERSION}")
            return cls(z["displacement"].astype(float), str(z["digest"]), json.loads(str(z["settings"])))


def load_holds(pool_path: str | Path, pool) -> np.ndarray | None:
    """[N] bool for the rows of `pool` (the `GraspPool` loaded from `pool_path`), or None when
    there are no hold results next to it. ValueError when they belong to other grasps (the pool
    was regenerated: run `dexh2r datagen hold` again) or are unreadable."""
    path = hold_path(pool_path)
    if not path.exists():
        return None
    try:
        res = HoldResults.load(path)
    except (OSError, KeyError, ValueError) as exc:
        raise ValueError(
            f"{path}: unreadable close-hold results ({exc}); rerun `dexh2r datagen hold`"
        ) from exc
    if res.digest != pool_digest(pool.T_obj_hand, pool.finger_q) or len(res.displacement) != len(pool):
        raise ValueError(
            f"{path}: close-hold results of other grasps than {Path(pool_path).name} (regenerated "
            f"pool?): rerun `dexh2r datagen hold --pools {Path(pool_path).parent}`"
        )
    return res.holds()


def run_pool(
    robot,
    obj,
    pool,
    config: CloseHoldConfig | None = None,
    policy_config=None,
    progress=None,
    rows: np.ndarray | None = None,
) -> HoldResults:
    """Close-hold results of the rows of `pool` (a `GraspPool` of `obj`; `rows` [N] bool, default
    all; the others are NaN, which never holds), closed the way DynamicGrasp with
    `policy_config` (default: its defaults) opens and squeezes them (a pinch pool, `info`'s
    family, as a pinch)."""
    from dexh2r_policy.dynamic_grasp import DynamicGrasp, DynamicGraspConfig, ObjectGraspPool

    c = config or CloseHoldConfig()
    policy_config = policy_config or DynamicGraspConfig()
    shaper = DynamicGrasp(None, None, policy_config)
    names = list(shaper.hand_surface.finger_names)
    if tuple(names) != tuple(pool.finger_joint_names):
        raise ValueError(f"pool finger joints {pool.finger_joint_names} differ from the hand's {names}")
    bed = GraspTestbed(robot, obj)
    family = pool.info.get("family", "power")
    pinch = np.full(len(pool), family == "pinch")
    q_open = shaper.open_hand(pool.finger_q, pinch)
    shaper.pool = ObjectGraspPool(pool.T_obj_hand, pool.finger_q, pool.object_id, pinch)  # for squeezed()
    out = np.full((len(pool), len(DIRECTIONS)), np.nan)
    for i in np.flatnonzero(np.ones(len(pool), bool) if rows is None else rows):
        out[i] = close_hold_displacement(bed, pool.T_obj_hand[i], q_open[i], shaper.squeezed(i), c)
        if progress is not None:
            progress(1)
    settings = {
        **asdict(c),
        "open_rad": policy_config.open_rad,
        "squeeze_rad": policy_config.squeeze_rad,
        "pinch_thumb_open": [list(x) for x in policy_config.pinch_thumb_open],
        "family": family,
    }
    return HoldResults(out, pool_digest(pool.T_obj_hand, pool.finger_q), settings)
