"""Typed robot-description config: one YAML per arm+hand combination (`config/robot/*.yaml`).

The YAML names installed assets (never copies of them), how the hand is mounted on the arm's
flange, how the hand's source names map to the standard names, which distal joints are coupled,
and the limits that the assets do not carry. Everything else (kinematics, joint ranges, inertias,
collision geometry) is read from the assets themselves.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal

from dexh2r_core.config import load_config
from dexh2r_core.paths import config_path

HUMAN_FINGERS = ("thumb", "index", "middle", "ring", "little")


@dataclass(frozen=True)
class AssetRef:
    """A file inside an installed distribution: a Python package dir or a cmeel/ament share dir."""

    package: str
    path: str


@dataclass(frozen=True)
class Pose:
    """A rigid transform: translation in metres, roll-pitch-yaw in radians (URDF convention)."""

    xyz: tuple[float, float, float] = (0.0, 0.0, 0.0)
    rpy: tuple[float, float, float] = (0.0, 0.0, 0.0)


@dataclass(frozen=True)
class Coupling:
    """`joint = ratio * follows + offset` (Shadow: distal J1 follows middle J2 through a tendon)."""

    joint: str
    follows: str
    ratio: float = 1.0
    offset: float = 0.0


@dataclass(frozen=True)
class TipFrame:
    """A fingertip point: a link of the hand and an offset in that link's frame."""

    link: str
    offset: tuple[float, float, float] = (0.0, 0.0, 0.0)


@dataclass(frozen=True)
class ArmConfig:
    name: str
    urdf: AssetRef
    base_link: str
    flange_link: str
    # Links dropped from the asset (e.g. a `world` link: the cell provides the world).
    drop_links: list[str] = field(default_factory=list)
    velocity_limit_scale: float = 1.0
    acceleration_limit: float = 4.0  # rad/s^2, for every arm joint
    home: list[float] = field(default_factory=list)
    kp: float = 2000.0  # position-actuator stiffness in simulation, N m / rad
    damping: float = 80.0
    armature: float = 0.1


@dataclass(frozen=True)
class HandConfig:
    name: str
    format: Literal["mjcf", "urdf"]
    file: AssetRef
    root_body: str
    # Source joint name -> standard joint name; its order is the hand joint order everywhere.
    joints: dict[str, str]
    # Prefix rewrite for bodies (e.g. "robot0:" -> "rh_"); joints use `joints` above.
    body_prefix: tuple[str, str] = ("", "")
    couplings: list[Coupling] = field(default_factory=list)
    palm_link: str = ""
    fingertips: dict[str, TipFrame] = field(default_factory=dict)
    # From the hand's mounting face (what bolts to the adapter) to its root body.
    root_offset: Pose = field(default_factory=Pose)
    velocity_limit: float = 2.0  # rad/s for every hand joint (the assets carry none)
    acceleration_limit: float = 20.0
    home: dict[str, float] = field(default_factory=dict)
    kp: float = 5.0
    damping: float = 0.2
    # Vector retargeting: human hand is smaller than most robot hands.
    retarget_scaling: float = 1.2
    retarget_low_pass_alpha: float = 0.2
    drop_links: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        unknown = set(self.fingertips) - set(HUMAN_FINGERS)
        if unknown:
            raise ValueError(f"fingertips: unknown finger(s) {sorted(unknown)}; use {list(HUMAN_FINGERS)}")
        if len(set(self.joints.values())) != len(self.joints):
            raise ValueError("joints: two source joints map to the same standard name")
        names = set(self.joints.values())
        for c in self.couplings:
            if c.joint not in names or c.follows not in names:
                raise ValueError(f"couplings: {c.joint} / {c.follows} is not one of the hand joints")


@dataclass(frozen=True)
class SurfaceConfig:
    points_per_hand: int = 2048
    seed: int = 0


@dataclass(frozen=True)
class RobotConfig:
    """An arm, a hand, and the adapter between them.

    `arm` and `hand` are either inline mappings or names of files in config/robot/arms/ and
    config/robot/hands/ (so `--hand allegro_right` swaps the hand and nothing else).
    """

    name: str
    arm: ArmConfig | str
    hand: HandConfig | str
    # Flange -> hand mounting face (the adapter plate).
    mount: Pose = field(default_factory=Pose)
    surface: SurfaceConfig = field(default_factory=SurfaceConfig)


def _find(kind: str, name_or_path: str | Path) -> Path:
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml"):
        return path
    folder = config_path(Path("robot") / kind) if kind else config_path("robot")
    exact = folder / f"{name_or_path}.yaml"
    if exact.exists():
        return exact
    matches = sorted(folder.glob(f"{name_or_path}*.yaml"))
    if len(matches) == 1:  # `allegro` -> allegro_right.yaml
        return matches[0]
    available = sorted(p.stem for p in folder.glob("*.yaml"))
    raise FileNotFoundError(
        f"{kind or 'robot'} config '{name_or_path}' not found in {folder}; available: {available}"
    )


def load_robot_config(
    name_or_path: str | Path, overrides: dict | None = None, *, hand: str | None = None
) -> RobotConfig:
    """`ur5_shadow` (a file in config/robot/) or a path to a robot YAML; `hand` swaps the hand."""
    overrides = dict(overrides or {})
    if hand is not None:
        overrides["hand"] = hand
    config = load_config(RobotConfig, _find("", name_or_path), overrides)
    arm = (
        config.arm if isinstance(config.arm, ArmConfig) else load_config(ArmConfig, _find("arms", config.arm))
    )
    hand_cfg = (
        config.hand
        if isinstance(config.hand, HandConfig)
        else load_config(HandConfig, _find("hands", config.hand))
    )
    name = config.name if hand is None else f"{arm.name}_{hand_cfg.name}"
    return replace(config, name=name, arm=arm, hand=hand_cfg)
