"""Handover scenarios: typed YAML (one scenario or a seeded generator of many), checked at load time.

A scenario says what the giver hands over (`object_id`, `object_scale`), with which hand
(`giver_side`), where it comes from and where it offers (`start_pose`, `offer_pose`: the giver's
hand frame in world = robot base coordinates, see `giver.py`), how it moves while offering
(`motion`, see `motion.MotionSpec`), when it lets go (`release`), the episode `time_limit_s` and the
`seed` of its random motion. `hold` scenarios are Easy, moving ones Hard (DexH2R's modes).

A scenario-set file has either `scenarios:` (a list, with optional `defaults:` merged under every
entry) or `generator:` (N scenarios drawn from object x motion ranges, reproducible from its seed;
scenario i depends only on (seed, i), so growing N keeps the first scenarios unchanged).

Load-time checks raise `ConfigError` naming the file, the scenario and the key: unknown keys or
motion types, offers out of the UR5's reach (> 0.85 m from the shoulder at (0, 0, 0.089)) or below
the table top, moving boxes far outside the reach, reaches faster than a person moves. Object ids
are checked against the object library by the caller through `validate_objects`.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np
from scipy.spatial.transform import Rotation

from dexh2r_core.config import ConfigError, from_dict, load_yaml
from dexh2r_core.paths import config_path
from dexh2r_sim.motion import (
    MOTION_TYPES,
    GiverTrajectory,
    MotionSpec,
    MotionType,
    Pose,
    min_jerk_peak_speed,
)

Side = Literal["right", "left"]

SHOULDER = np.array([0.0, 0.0, 0.089])  # UR5 shoulder joint centre in the robot base frame
MAX_REACH = 0.85  # m, shoulder -> offer (giver wrist) distance the UR5 + hand can serve
MOTION_REACH_MARGIN = 0.10  # m, a moving box may reach this much beyond MAX_REACH
TABLE_TOP_Z = 0.0  # m, table top height in the robot base frame
MIN_OFFER_CLEARANCE = 0.10  # m, offer (wrist) height above the table top
MIN_MOTION_CLEARANCE = 0.06  # m, lowest point of a moving box above the table top
MAX_REACH_SPEED = 1.5  # m/s, peak speed of the giver's minimum-jerk reach

# Offer orientation of a right giver hand (fixed-axis roll, pitch, yaw, degrees): fingers toward the
# robot and 30 deg down, palm turned up and toward the robot (hand frame z = (-0.87, 0, -0.5),
# palm normal (-0.5, 0, 0.87)), the pinched object sticking up-forward; with the giver's default
# 30 deg wrist extension the forearm is level. Of 48 orientations tried (6 elevations x 12 rolls,
# +-10 deg jitter, +-15 cm offsets) this was among those MediaPipe found in every crop of both cell
# cameras. A left hand uses the mirror image (`mirror_pose`; the same rpy for this one).
OFFER_RPY_DEG_RIGHT: tuple[float, float, float] = (-120.0, 0.0, 90.0)


@dataclass(frozen=True)
class PoseSpec:
    """A giver hand pose in world: position (m) and fixed-axis roll, pitch, yaw (degrees)."""

    xyz: tuple[float, float, float]
    rpy_deg: tuple[float, float, float] = (0.0, 0.0, 0.0)

    def to_pose(self) -> Pose:
        return Pose.from_xyz_rpy_deg(self.xyz, self.rpy_deg)

    @classmethod
    def from_pose(cls, pose: Pose) -> PoseSpec:
        rpy = pose.rotation.as_euler("xyz", degrees=True)
        return cls(tuple(float(v) for v in pose.position), tuple(float(v) for v in rpy))


def mirror_pose(pose: PoseSpec) -> PoseSpec:
    """The mirror image through the world x-z plane (y -> -y), re-expressed for the other hand.

    World reflection W = diag(1, -1, 1), hand reflection H = diag(-1, 1, 1): R' = W R H (proper).
    """
    R = Rotation.from_euler("xyz", pose.rpy_deg, degrees=True).as_matrix()
    W, H = np.diag([1.0, -1.0, 1.0]), np.diag([-1.0, 1.0, 1.0])
    rpy = Rotation.from_matrix(W @ R @ H).as_euler("xyz", degrees=True)
    x, y, z = pose.xyz
    return PoseSpec((x, -y, z), tuple(round(float(v), 6) for v in rpy))


@dataclass(frozen=True)
class ReleaseSpec:
    """When the giver lets go and how it leaves.

    `supported`: release once the weld carries less than `support_fraction` of the object's weight
    for `confirm_s` (the robot holds it); give up and withdraw with the object at `timeout_s`.
    `timeout`: release at `timeout_s` whatever happens. Times are episode times (s).
    """

    rule: Literal["supported", "timeout"] = "supported"
    support_fraction: float = 0.3
    confirm_s: float = 0.3
    timeout_s: float = 10.0
    open_s: float = 0.4
    withdraw_s: float = 1.0
    withdraw_distance: float = 0.3

    def __post_init__(self) -> None:
        if not 0.0 < self.support_fraction < 1.0:
            raise ValueError(f"support_fraction: must be in (0, 1), got {self.support_fraction}")
        for key in ("confirm_s", "open_s", "withdraw_s"):
            if getattr(self, key) < 0:
                raise ValueError(f"{key}: must be >= 0, got {getattr(self, key)}")
        if self.timeout_s <= 0:
            raise ValueError(f"timeout_s: must be > 0, got {self.timeout_s}")
        if self.withdraw_distance < 0:
            raise ValueError(f"withdraw_distance: must be >= 0, got {self.withdraw_distance}")


@dataclass(frozen=True)
class Scenario:
    """One handover episode's setup (see the module docstring)."""

    name: str
    object_id: str
    start_pose: PoseSpec
    offer_pose: PoseSpec
    object_scale: float = 1.0
    giver_side: Side = "right"
    motion: MotionSpec = field(default_factory=MotionSpec)
    release: ReleaseSpec = field(default_factory=ReleaseSpec)
    time_limit_s: float = 12.0
    seed: int = 0

    def __post_init__(self) -> None:
        if not self.name:
            raise ValueError("name: must not be empty")
        if not 0.2 <= self.object_scale <= 5.0:
            raise ValueError(f"object_scale: must be in [0.2, 5], got {self.object_scale}")
        if self.time_limit_s <= 0:
            raise ValueError(f"time_limit_s: must be > 0, got {self.time_limit_s}")

    @property
    def difficulty(self) -> Literal["easy", "hard"]:
        """DexH2R mode: Easy when the giver holds still, Hard when it keeps moving."""
        return "hard" if self.motion.moving else "easy"

    def trajectory(self, horizon_s: float | None = None) -> GiverTrajectory:
        """The giver's wrist trajectory (deterministic for the scenario's seed)."""
        horizon = horizon_s or max(self.time_limit_s, self.release.timeout_s) + 2.0
        return GiverTrajectory(
            self.start_pose.to_pose(), self.offer_pose.to_pose(), self.motion, self.seed, horizon
        )


def scenario_problems(s: Scenario) -> list[tuple[str, str]]:
    """(key, reason) for every reachability/plausibility problem of a scenario (empty: fine)."""
    problems = []
    offer = np.asarray(s.offer_pose.xyz, dtype=float)
    dist = float(np.linalg.norm(offer - SHOULDER))
    if dist > MAX_REACH:
        problems.append(
            (
                "offer_pose.xyz",
                f"offer position {offer.round(3).tolist()} is {dist:.3f} m from the UR5 shoulder "
                f"{SHOULDER.tolist()}; the robot reaches at most {MAX_REACH} m",
            )
        )
    if offer[2] < TABLE_TOP_Z + MIN_OFFER_CLEARANCE:
        problems.append(
            (
                "offer_pose.xyz",
                f"offer height z={offer[2]:.3f} m is below the table top + {MIN_OFFER_CLEARANCE} m "
                f"(table top at z={TABLE_TOP_Z})",
            )
        )
    if s.motion.moving:
        box = np.asarray(s.motion.box, dtype=float)
        signs = np.array([[a, b, c] for a in (-1, 1) for b in (-1, 1) for c in (-1, 1)], dtype=float)
        corners = offer + signs * box
        far = float(np.max(np.linalg.norm(corners - SHOULDER, axis=1)))
        if far > MAX_REACH + MOTION_REACH_MARGIN:
            problems.append(
                (
                    "motion.box",
                    f"the motion box reaches {far:.3f} m from the UR5 shoulder "
                    f"(max {MAX_REACH + MOTION_REACH_MARGIN} m); shrink the box or move the offer closer",
                )
            )
        low = float(offer[2] - box[2])
        if low < TABLE_TOP_Z + MIN_MOTION_CLEARANCE:
            problems.append(
                ("motion.box", f"the motion box goes down to z={low:.3f} m, below the table top + clearance")
            )
    start, end = np.asarray(s.start_pose.xyz), offer
    peak = min_jerk_peak_speed(float(np.linalg.norm(end - start)), s.motion.reach_s)
    if peak > MAX_REACH_SPEED:
        problems.append(
            (
                "motion.reach_s",
                f"the reach peaks at {peak:.2f} m/s (max {MAX_REACH_SPEED}); make reach_s longer",
            )
        )
    return problems


def validate_scenario(s: Scenario, source: str = "") -> None:
    """Raise ConfigError naming the scenario and key of the first problem (see `scenario_problems`)."""
    problems = scenario_problems(s)
    if problems:
        key, reason = problems[0]
        where = f"{source}: " if source else ""
        raise ConfigError(f"{where}scenario '{s.name}': {key}: {reason}")


def validate_objects(scenarios: Iterable[Scenario], known_ids: Iterable[str]) -> None:
    """Raise ConfigError for scenarios whose object_id is not in the object library."""
    known = sorted(set(known_ids))
    bad = []
    for s in scenarios:
        if s.object_id not in known:
            close = difflib.get_close_matches(s.object_id, known, n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            bad.append(f"scenario '{s.name}': object_id: unknown object '{s.object_id}'{hint}")
    if bad:
        raise ConfigError("; ".join(bad) + f" (known: {', '.join(known) or 'none'})")


def scenario_from_dict(data: Mapping[str, Any], source: str = "") -> Scenario:
    """Build and validate one scenario from plain data."""
    scenario = from_dict(Scenario, data, source=source)
    validate_scenario(scenario, source)
    return scenario


# --- generator ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class GeneratorSpec:
    """N scenarios drawn from object x motion ranges; scenario i depends only on (seed, i).

    Objects come from `object_ids` or from the library's `split` (resolved by the caller's
    `split_objects`). Offers are drawn in the box [offer_min, offer_max] (redrawn until reachable),
    starts at x in `start_x` with y/z offsets from the offer, orientations around the side's offer
    orientation (`offer_rpy_deg` for a right hand, mirrored for a left one) +- `rpy_jitter_deg`.
    """

    n: int
    seed: int = 0
    name_prefix: str = "gen"
    object_ids: tuple[str, ...] = ()
    split: Literal["train", "test", "all"] | None = None
    object_scale: tuple[float, float] = (1.0, 1.0)
    sides: tuple[Side, ...] = ("right",)
    motion_types: tuple[MotionType, ...] = MOTION_TYPES
    speed: tuple[float, float] = (0.05, 0.25)
    offer_min: tuple[float, float, float] = (0.55, -0.20, 0.25)
    offer_max: tuple[float, float, float] = (0.70, 0.20, 0.45)
    start_x: tuple[float, float] = (1.0, 1.2)
    start_dy: tuple[float, float] = (-0.10, 0.10)
    start_dz: tuple[float, float] = (-0.25, -0.10)
    offer_rpy_deg: tuple[float, float, float] = OFFER_RPY_DEG_RIGHT
    rpy_jitter_deg: float = 10.0
    reach_s: tuple[float, float] = (1.0, 1.6)
    box: tuple[float, float, float] = (0.10, 0.12, 0.06)
    rotation_deg: tuple[float, float] = (2.0, 6.0)
    time_limit_s: float = 12.0
    release: ReleaseSpec = field(default_factory=ReleaseSpec)

    def __post_init__(self) -> None:
        if self.n < 1:
            raise ValueError(f"n: must be >= 1, got {self.n}")
        if bool(self.object_ids) == (self.split is not None):
            raise ValueError("give exactly one of object_ids (a list) or split (train/test/all)")
        if not self.sides:
            raise ValueError("sides: must not be empty")
        if not self.motion_types:
            raise ValueError("motion_types: must not be empty")
        for key in ("object_scale", "speed", "start_x", "start_dy", "start_dz", "reach_s", "rotation_deg"):
            lo, hi = getattr(self, key)
            if lo > hi:
                raise ValueError(f"{key}: min {lo} > max {hi}")
        if any(a > b for a, b in zip(self.offer_min, self.offer_max, strict=True)):
            raise ValueError(f"offer_min {self.offer_min} must be <= offer_max {self.offer_max}")


def _fit_box(offer: np.ndarray, box: np.ndarray) -> np.ndarray:
    """Shrink a motion box (uniformly) until it stays reachable and above the table."""
    signs = np.array([[a, b, c] for a in (-1, 1) for b in (-1, 1) for c in (-1, 1)], dtype=float)
    scale = 1.0
    for _ in range(40):
        b = box * scale
        far = np.max(np.linalg.norm(offer + signs * b - SHOULDER, axis=1))
        low = offer[2] - b[2]
        if far <= MAX_REACH + MOTION_REACH_MARGIN - 1e-3 and low >= TABLE_TOP_Z + MIN_MOTION_CLEARANCE:
            return b
        scale *= 0.9
    return box * scale


def generate_scenarios(gen: GeneratorSpec, object_ids: Sequence[str] | None = None) -> list[Scenario]:
    """Expand a generator deterministically (object_ids overrides/resolves `gen.split`)."""
    objects = list(object_ids if object_ids is not None else gen.object_ids)
    if not objects:
        raise ConfigError("generator: no object ids to draw from")
    out = []
    lo, hi = np.asarray(gen.offer_min, dtype=float), np.asarray(gen.offer_max, dtype=float)
    for i in range(gen.n):
        rng = np.random.default_rng([gen.seed, i])
        for _ in range(1000):
            offer = rng.uniform(lo, hi)
            if (
                np.linalg.norm(offer - SHOULDER) <= MAX_REACH
                and offer[2] >= TABLE_TOP_Z + MIN_OFFER_CLEARANCE
            ):
                break
        else:
            raise ConfigError(
                f"generator: offer_min/offer_max: no reachable offer position (within {MAX_REACH} m of "
                f"the shoulder and above the table) found in the box"
            )
        start = np.array(
            [
                rng.uniform(*gen.start_x),
                offer[1] + rng.uniform(*gen.start_dy),
                offer[2] + rng.uniform(*gen.start_dz),
            ]
        )
        start[2] = max(start[2], TABLE_TOP_Z + MIN_OFFER_CLEARANCE)
        jitter = rng.uniform(-gen.rpy_jitter_deg, gen.rpy_jitter_deg, size=3)
        offer_rpy = np.asarray(gen.offer_rpy_deg) + jitter
        start_rpy = offer_rpy + rng.uniform(-15.0, 15.0, size=3)
        side = gen.sides[int(rng.integers(len(gen.sides)))]
        mtype = gen.motion_types[int(rng.integers(len(gen.motion_types)))]
        speed = float(rng.uniform(*gen.speed))
        dist = float(np.linalg.norm(offer - start))
        reach_s = max(float(rng.uniform(*gen.reach_s)), min_jerk_peak_speed(dist, MAX_REACH_SPEED * 0.95))
        box = _fit_box(offer, np.asarray(gen.box, dtype=float))
        motion = MotionSpec(
            type=mtype,
            reach_s=round(reach_s, 3),
            speed=round(speed, 4),
            speed_range=(float(gen.speed[0]), float(gen.speed[1])),
            box=tuple(round(float(v), 4) for v in box),
            rotation_deg=None if mtype == "hold" else round(float(rng.uniform(*gen.rotation_deg)), 2),
        )
        start_pose = PoseSpec(
            tuple(round(float(v), 4) for v in start), tuple(round(float(v), 2) for v in start_rpy)
        )
        offer_pose = PoseSpec(
            tuple(round(float(v), 4) for v in offer), tuple(round(float(v), 2) for v in offer_rpy)
        )
        if side == "left":
            start_pose, offer_pose = mirror_pose(start_pose), mirror_pose(offer_pose)
        scenario = Scenario(
            name=f"{gen.name_prefix}_{i:04d}",
            object_id=objects[int(rng.integers(len(objects)))],
            object_scale=round(float(rng.uniform(*gen.object_scale)), 3),
            giver_side=side,
            start_pose=start_pose,
            offer_pose=offer_pose,
            motion=motion,
            release=gen.release,
            time_limit_s=gen.time_limit_s,
            seed=int(rng.integers(2**31 - 1)),
        )
        validate_scenario(scenario, "generator")
        out.append(scenario)
    return out


# --- scenario-set files ------------------------------------------------------------------------


@dataclass(frozen=True)
class ScenarioSet:
    """A loaded scenario-set file: its scenarios (generators expanded) and where they came from."""

    name: str
    scenarios: tuple[Scenario, ...]
    description: str = ""
    generator: GeneratorSpec | None = None
    source: str = ""


@dataclass(frozen=True)
class _SetFile:
    name: str = ""
    description: str = ""
    defaults: dict[str, Any] = field(default_factory=dict)
    scenarios: list[dict[str, Any]] | None = None
    generator: dict[str, Any] | None = None


@dataclass(frozen=True)
class _GeneratorFile:
    generator: GeneratorSpec


def _deep_merge(base: Mapping[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in over.items():
        if isinstance(v, Mapping) and isinstance(out.get(k), Mapping):
            out[k] = _deep_merge(out[k], v)
        else:
            out[k] = v
    return out


def load_scenario_set(
    path: str | Path, *, split_objects: Callable[[str], Sequence[str]] | None = None
) -> ScenarioSet:
    """Read a scenario-set YAML (relative paths are looked up under config/, e.g. 'scenarios/easy.yaml').

    `split_objects(split) -> object ids` resolves a generator's `split:` (the object library's
    job, e.g. `ObjectLibrary().ids`); without it a `split:` generator is an error.
    """
    file = config_path(path)
    src = str(file)
    raw = load_yaml(file)
    top = from_dict(_SetFile, raw, source=src)
    if (top.scenarios is None) == (top.generator is None):
        raise ConfigError(f"{src}: <root>: give exactly one of 'scenarios' (a list) or 'generator'")
    name = top.name or file.stem
    if top.generator is not None:
        gen = from_dict(_GeneratorFile, {"generator": top.generator}, source=src).generator
        ids = None
        if gen.split is not None:
            if split_objects is None:
                raise ConfigError(
                    f"{src}: generator.split: '{gen.split}' needs the object library to list its "
                    f"objects (pass split_objects=...) or give generator.object_ids"
                )
            ids = list(split_objects(gen.split))
        try:
            scenarios = generate_scenarios(gen, ids)
        except ConfigError as exc:
            raise ConfigError(f"{src}: {exc}") from exc
        return ScenarioSet(name, tuple(scenarios), top.description, gen, src)
    scenarios = []
    seen: dict[str, int] = {}
    for i, entry in enumerate(top.scenarios or []):
        merged = _deep_merge(top.defaults, entry)
        label = merged.get("name", f"#{i}")
        source = f"{src}: scenario '{label}' (scenarios[{i}])"
        scenario = from_dict(Scenario, merged, source=source)
        problems = scenario_problems(scenario)
        if problems:
            key, reason = problems[0]
            raise ConfigError(f"{source}: {key}: {reason}")
        if scenario.name in seen:
            raise ConfigError(
                f"{source}: name: '{scenario.name}' is already used by scenarios[{seen[scenario.name]}]"
            )
        seen[scenario.name] = i
        scenarios.append(scenario)
    if not scenarios:
        raise ConfigError(f"{src}: scenarios: the list is empty")
    return ScenarioSet(name, tuple(scenarios), top.description, None, src)


def load_scenarios(
    path: str | Path, *, split_objects: Callable[[str], Sequence[str]] | None = None
) -> list[Scenario]:
    """All scenarios of a scenario-set file, generators expanded deterministically."""
    return list(load_scenario_set(path, split_objects=split_objects).scenarios)


REPEAT_SEED_STRIDE = 1000


def repeat_scenario(s: Scenario, repeat: int) -> Scenario:
    """Repeat `repeat` of a scenario (0: itself): the same setup with another draw of its random
    motion (tremor, drift wobble, random walk), seed + 1000 x repeat, so that an evaluation of N
    episodes over a set of n scenarios runs N distinct episodes rather than n repeated ones."""
    if repeat < 0:
        raise ValueError(f"repeat: must be >= 0, got {repeat}")
    return replace(s, seed=s.seed + REPEAT_SEED_STRIDE * repeat) if repeat else s


def mirror_scenario(s: Scenario) -> Scenario:
    """The same scenario for the other hand, mirrored through the world x-z plane."""
    return replace(
        s,
        name=f"{s.name}_mirrored",
        giver_side="left" if s.giver_side == "right" else "right",
        start_pose=mirror_pose(s.start_pose),
        offer_pose=mirror_pose(s.offer_pose),
        motion=replace(
            s.motion, direction=None if s.motion.direction is None else _mirror_dir(s.motion.direction)
        ),
    )


def _mirror_dir(d: tuple[float, float, float]) -> tuple[float, float, float]:
    return (d[0], -d[1], d[2])
