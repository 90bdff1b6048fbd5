"""`RobotDescription`: the one robot description every consumer derives its model from.

    robot = RobotDescription.load("ur5_shadow")          # or "ur5_allegro", or a YAML path
    model = robot.mujoco_model()                          # MuJoCo (sim)
    pin_model = robot.pinocchio_model()                   # pinocchio (IK, FK), from the exported URDF
    retargeting = robot.retargeting()                     # dex-retargeting (teleop)
    q = robot.apply_couplings(q)                          # coupled distal joints, same rule everywhere

Joint order: `joint_names` = arm joints (URDF order) then hand joints (the order of `hand.joints`
in the YAML). Vectors named `q` in the stack use that order; `hand_actuated_joint_names` drops the
coupled followers (what a hand controller commands).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import mujoco
import numpy as np

from dexh2r_core.config import to_dict
from dexh2r_core.paths import cache_dir
from dexh2r_core.robot.assets import resolve_asset, urdf_velocity_limits
from dexh2r_core.robot.config import HUMAN_FINGERS, RobotConfig, load_robot_config
from dexh2r_core.robot.mujoco_model import FLANGE_SITE, build_robot_spec, spec_source_files, tip_site
from dexh2r_core.robot.urdf_export import export_urdf

# MediaPipe hand landmark indices of the fingertips (the human side of retargeting).
MEDIAPIPE_WRIST = 0
MEDIAPIPE_TIPS = {"thumb": 4, "index": 8, "middle": 12, "ring": 16, "little": 20}


@dataclass(frozen=True)
class SurfacePoints:
    """Points on the hand's collision surface, each fixed in a link frame.

    `links[i]` is the link of `points[i]` (metres, link frame); `normals[i]` is the outward normal.
    """

    links: tuple[str, ...]
    link_index: np.ndarray  # [N] index into `links`
    points: np.ndarray  # [N, 3]
    normals: np.ndarray  # [N, 3]


class RobotDescription:
    def __init__(self, config: RobotConfig) -> None:
        self.config = config
        self._spec = build_robot_spec(config)
        self._model = self._spec.compile()
        m = self._model
        arm_urdf = resolve_asset(config.arm.urdf)
        self.arm_joint_names: list[str] = [
            m.joint(j).name for j in range(m.njnt) if m.joint(j).name not in config.hand.joints.values()
        ]
        self.hand_joint_names: list[str] = list(config.hand.joints.values())
        self.joint_names: list[str] = self.arm_joint_names + self.hand_joint_names
        followers = {c.joint for c in config.hand.couplings}
        self.hand_actuated_joint_names = [n for n in self.hand_joint_names if n not in followers]
        self.fingers = [f for f in HUMAN_FINGERS if f in config.hand.fingertips]
        self.tip_frames = [tip_site(f) for f in self.fingers]
        self.flange_frame = FLANGE_SITE
        ids = [mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_JOINT, n) for n in self.joint_names]
        self.lower = np.array([m.jnt_range[j][0] if m.jnt_limited[j] else -np.pi for j in ids])
        self.upper = np.array([m.jnt_range[j][1] if m.jnt_limited[j] else np.pi for j in ids])
        urdf_vel = urdf_velocity_limits(arm_urdf)
        if config.hand.format == "urdf":
            urdf_vel.update(urdf_velocity_limits(resolve_asset(config.hand.file)))
        arm_vel = [urdf_vel.get(n, 1.0) * config.arm.velocity_limit_scale for n in self.arm_joint_names]
        hand_vel = [min(urdf_vel.get(n, np.inf), config.hand.velocity_limit) for n in self.hand_joint_names]
        self.velocity_limits = np.array(arm_vel + hand_vel)
        self.acceleration_limits = np.array(
            [config.arm.acceleration_limit] * len(self.arm_joint_names)
            + [config.hand.acceleration_limit] * len(self.hand_joint_names)
        )
        self._coupling_idx = [
            (self.joint_names.index(c.joint), self.joint_names.index(c.follows), c.ratio, c.offset)
            for c in config.hand.couplings
        ]

    @classmethod
    def load(cls, name_or_path: str | Path = "ur5_shadow", overrides: dict | None = None) -> RobotDescription:
        return cls(load_robot_config(name_or_path, overrides))

    # ---- joint vectors -------------------------------------------------------------------------
    @property
    def n_arm(self) -> int:
        return len(self.arm_joint_names)

    @property
    def n_hand(self) -> int:
        return len(self.hand_joint_names)

    def home(self) -> np.ndarray:
        """Arm home from config, hand at its configured pose (else clipped zero), couplings applied."""
        q = np.zeros(len(self.joint_names))
        if self.config.arm.home:
            if len(self.config.arm.home) != self.n_arm:
                raise ValueError(
                    f"arm.home has {len(self.config.arm.home)} values, the arm has {self.n_arm} joints"
                )
            q[: self.n_arm] = self.config.arm.home
        for name, value in self.config.hand.home.items():
            q[self.joint_names.index(name)] = value
        return self.apply_couplings(np.clip(q, self.lower, self.upper))

    def apply_couplings(self, q: np.ndarray) -> np.ndarray:
        """Set each coupled joint from the joint it follows (last axis is the joint axis)."""
        q = np.array(q, dtype=float, copy=True)
        offset = 0 if q.shape[-1] == len(self.joint_names) else self.n_arm
        if q.shape[-1] not in (len(self.joint_names), self.n_hand):
            raise ValueError(
                f"expected {len(self.joint_names)} (arm+hand) or {self.n_hand} (hand) values, "
                f"got {q.shape[-1]}"
            )
        for joint, follows, ratio, off in self._coupling_idx:
            q[..., joint - offset] = ratio * q[..., follows - offset] + off
        return q

    def expand_hand(self, q_actuated: np.ndarray) -> np.ndarray:
        """Hand command over actuated joints -> all hand joints (couplings filled in)."""
        q_actuated = np.asarray(q_actuated, dtype=float)
        q = np.zeros((*q_actuated.shape[:-1], self.n_hand))
        idx = [self.hand_joint_names.index(n) for n in self.hand_actuated_joint_names]
        q[..., idx] = q_actuated
        return self.apply_couplings(q)

    def sample_configurations(self, n: int, seed: int = 0) -> np.ndarray:
        """Uniform random joint vectors within limits (arm limited to +-pi), couplings applied."""
        rng = np.random.default_rng(seed)
        lower = np.maximum(self.lower, -np.pi)
        upper = np.minimum(self.upper, np.pi)
        return self.apply_couplings(rng.uniform(lower, upper, size=(n, len(self.joint_names))))

    def out_of_limits(
        self,
        positions: np.ndarray,
        velocities: np.ndarray | None = None,
        joints: list[str] | None = None,
        tol: float = 1e-9,
    ) -> bool:
        """Whether a command leaves the position or velocity limits (`tol` slack): positions
        (and velocities) of `joints` (default: all of `joint_names`, in that order). The closed
        loop's and sim_node's `limit_violations` count commands for which this is true."""
        idx = slice(None) if joints is None else [self.joint_names.index(n) for n in joints]
        q = np.asarray(positions, dtype=float)
        if np.any(q < self.lower[idx] - tol) or np.any(q > self.upper[idx] + tol):
            return True
        return velocities is not None and bool(np.any(np.abs(velocities) > self.velocity_limits[idx] + tol))

    # ---- MuJoCo --------------------------------------------------------------------------------
    def mujoco_spec(self) -> mujoco.MjSpec:
        """A fresh spec of the robot alone (the sim attaches it into its cell)."""
        return build_robot_spec(self.config)

    def mujoco_model(self) -> mujoco.MjModel:
        return self._model

    def mujoco_qpos_index(self, model: mujoco.MjModel | None = None) -> np.ndarray:
        """qpos address of each of `joint_names` in `model` (default: the robot model)."""
        model = model or self._model
        return np.array(
            [
                model.jnt_qposadr[mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_JOINT, n)]
                for n in self.joint_names
            ]
        )

    # ---- exported URDFs, pinocchio, dex-retargeting ----------------------------------------------
    @cached_property
    def _cache_key(self) -> str:
        h = hashlib.sha256(json.dumps(to_dict(self.config), sort_keys=True).encode())
        h.update(mujoco.__version__.encode())
        h.update(Path(__file__).with_name("urdf_export.py").read_bytes())
        h.update(Path(__file__).with_name("mujoco_model.py").read_bytes())
        for path in spec_source_files(self.config):
            h.update(path.read_bytes())
        return h.hexdigest()[:16]

    def urdf_path(self, part: str = "robot") -> Path:
        """Generated URDF of the whole robot (`robot`) or the hand alone (`hand`), cached on disk."""
        if part not in ("robot", "hand"):
            raise ValueError("part must be 'robot' or 'hand'")
        folder = cache_dir() / "robot" / f"{self.config.name}-{self._cache_key}"
        path = folder / f"{part}.urdf"
        if not path.exists():
            folder.mkdir(parents=True, exist_ok=True)
            root = "world" if part == "robot" else self._hand_root_name()
            text = export_urdf(
                self._model,
                name=f"{self.config.name}_{part}",
                root_body=root,
                couplings=self.config.hand.couplings,
                velocity_limits=dict(zip(self.joint_names, self.velocity_limits.tolist(), strict=True)),
            )
            tmp = path.with_suffix(".tmp")
            tmp.write_text(text)
            tmp.replace(path)  # atomic: parallel test workers may export at once
        return path

    def _root_joints(self) -> set[str]:
        m = self._model
        root = mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_BODY, self._hand_root_name())
        return {m.joint(j).name for j in range(m.njnt) if m.jnt_bodyid[j] == root}

    def _hand_root_name(self) -> str:
        old, new = self.config.hand.body_prefix
        root = self.config.hand.root_body
        return new + root[len(old) :] if old and root.startswith(old) else root

    def pinocchio_model(self, part: str = "robot"):
        """pinocchio Model of the exported URDF; coupled joints are ordinary joints (see apply_couplings)."""
        import pinocchio as pin

        return pin.buildModelFromUrdf(str(self.urdf_path(part)))

    def pinocchio_q(self, pin_model, q: np.ndarray) -> np.ndarray:
        """Reorder a `joint_names` vector into pinocchio's configuration vector."""
        out = np.zeros(pin_model.nq)
        for name, value in zip(self.joint_names, q, strict=True):
            jid = pin_model.getJointId(name)
            out[pin_model.joints[jid].idx_q] = value
        return out

    def retargeting_config(self, kind: str = "vector"):
        """A dex-retargeting RetargetingConfig for the hand alone (MediaPipe landmarks as input)."""
        from dex_retargeting.retargeting_config import RetargetingConfig

        hand = self.config.hand
        tips = self.tip_frames
        human_tips = [MEDIAPIPE_TIPS[f] for f in self.fingers]
        common = {
            "urdf_path": str(self.urdf_path("hand")),
            "low_pass_alpha": hand.retarget_low_pass_alpha,
            "add_dummy_free_joint": False,
            # Coupled followers are mimic joints in the URDF: dex-retargeting solves for the rest.
            # A joint on the hand's root body (a wrist mounted at the flange) is not in the hand URDF.
            "target_joint_names": [n for n in self.hand_actuated_joint_names if n not in self._root_joints()],
        }
        if kind == "vector":
            cfg = {
                "type": "vector",
                "target_origin_link_names": [hand.palm_link] * len(tips),
                "target_task_link_names": tips,
                "target_link_human_indices": [[MEDIAPIPE_WRIST] * len(tips), human_tips],
                "scaling_factor": hand.retarget_scaling,
            }
        elif kind == "position":
            cfg = {"type": "position", "target_link_names": tips, "target_link_human_indices": human_tips}
        elif kind == "dexpilot":
            cfg = {
                "type": "dexpilot",
                "wrist_link_name": hand.palm_link,
                "finger_tip_link_names": tips,
                "scaling_factor": hand.retarget_scaling,
            }
        else:
            raise ValueError(f"unknown retargeting kind '{kind}' (vector, position, dexpilot)")
        return RetargetingConfig.from_dict({**common, **cfg})

    def retargeting(self, kind: str = "vector"):
        """A ready dex-retargeting `SeqRetargeting` for this hand."""
        return self.retargeting_config(kind).build()

    # ---- surface points --------------------------------------------------------------------------
    @cached_property
    def hand_surface_points(self) -> SurfacePoints:
        from dexh2r_core.robot.surface import sample_hand_surface

        return sample_hand_surface(
            self._model,
            hand_bodies=self._hand_bodies(),
            n=self.config.surface.points_per_hand,
            seed=self.config.surface.seed,
        )

    def _hand_bodies(self) -> list[int]:
        root = mujoco.mj_name2id(self._model, mujoco.mjtObj.mjOBJ_BODY, self._hand_root_name())
        out = [root]
        for b in range(root + 1, self._model.nbody):
            if self._model.body_parentid[b] in out:
                out.append(b)
        return out

    def summary(self) -> dict:
        return {
            "name": self.config.name,
            "arm": self.config.arm.name,
            "hand": self.config.hand.name,
            "arm_joints": self.n_arm,
            "hand_joints": self.n_hand,
            "hand_actuated_joints": len(self.hand_actuated_joint_names),
            "couplings": [
                f"{c.joint} = {c.ratio} * {c.follows} + {c.offset}" for c in self.config.hand.couplings
            ],
            "joint_names": self.joint_names,
            "fingertips": self.tip_frames,
        }
