"""Teleoperation core (ROS-free): the operator's tracked hand drives the robot hand and arm.

    session = TeleopSession(robot, controller)            # controller: dexh2r_control ArmHandController
    session.heartbeat(now)                                 # deadman, e.g. 20 Hz from a pedal or key
    session.engage(now)                                    # clutch in: relative arm motion from here
    target = session.update(now, keypoints, wrist)         # hand tracker output (world) -> HandTarget
    command = controller.step(now)                         # the controller's safety filter as always

- **Fingers** (`FingerRetargeter`): dex-retargeting (vector, DexPilot or position; the robot
  description's config, scaling and low-pass) on the operator's 21 keypoints expressed in the
  operator's wrist frame. That frame (+z wrist -> fingers, -y palm normal, +x thumb side of a right
  hand: `dexh2r_perception.hand_tracking`) has the axes of the Shadow palm frame, so the human
  vectors need no further rotation. The Allegro hand works by config (`--hand allegro`).
- **Arm** (`ArmMapper`): relative motion with a clutch. On engage, the operator's wrist pose W0 and
  the robot's palm pose P0 are latched; afterwards the palm target is
  p = P0.p + scale * (W.p - W0.p) and R = (W.R W0.R^T) P0.R (the operator's motion in world
  applied to the palm), its position clipped to the teleop workspace box. Disengaging (a clutch
  release) holds the robot and lets the operator re-centre.
- **Deadman** (`Deadman`): without a heartbeat for `deadman_timeout_s`, the session stops sending
  targets and brakes the controller to a hold at the acceleration limits (`estop`-strength
  braking without the latch); a new heartbeat resumes only after `engage` (never a jump back to
  where the operator's hand went meanwhile).

No keypoints (the hand left the view), NaN keypoints or an invalid wrist pose: no target, the
robot holds what it has (the controller's watchdog takes over if this lasts).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from dexh2r_control.controller import DEADMAN_REASON
from dexh2r_core.robot.description import RobotDescription


@dataclass(frozen=True)
class TeleopConfig:
    retargeting: str = "vector"  # vector | dexpilot | position (dex-retargeting optimisers)
    # Robot hand size / operator hand size (None: the hand YAML's `retarget_scaling`, 1.2 for the
    # Shadow hand and an average adult). The sim's scripted operator has Shadow proportions: 1.0.
    finger_scale: float | None = None
    arm_scale: float = 1.0  # robot palm metres per operator wrist metre
    workspace_min: tuple[float, float, float] = (0.25, -0.45, 0.10)
    workspace_max: tuple[float, float, float] = (0.85, 0.45, 0.75)
    deadman_timeout_s: float = 0.06  # a 20 Hz heartbeat may be one period late
    # The tracked wrist rotation is the noisiest output of the hand tracker (~20 deg, with jumps
    # when a view mistakes the palm side). Followed (through a low-pass, time constant in s), it
    # drives the arm through large IK reconfigurations: in the sim teleop run the palm strayed
    # 18 cm (median) from the operator's path with it and 3 cm without. Off by default: the palm
    # keeps its clutch-in orientation; opt in once the wrist rotation is better.
    follow_rotation: bool = False
    rotation_time_constant_s: float = 0.3
    # Clutch in only after this many consecutive tracked frames: the tracker's first frames of a
    # hand (filter start-up, a crop still converging) are centimetres off, and the reference
    # pose taken there would offset the whole session.
    engage_after_frames: int = 10
    min_valid_keypoints: int = 21  # retargeting needs every landmark it uses

    def __post_init__(self) -> None:
        if self.retargeting not in ("vector", "dexpilot", "position"):
            raise ValueError(f"retargeting: vector, dexpilot or position, got '{self.retargeting}'")
        if not self.arm_scale > 0:
            raise ValueError(f"arm_scale: must be > 0, got {self.arm_scale}")
        if not self.deadman_timeout_s > 0:
            raise ValueError(f"deadman_timeout_s: must be > 0, got {self.deadman_timeout_s}")
        if any(lo >= hi for lo, hi in zip(self.workspace_min, self.workspace_max, strict=True)):
            raise ValueError("workspace_min must be below workspace_max on every axis")


class TeleopInputError(ValueError):
    """Operator input that cannot drive the robot (NaN keypoints, a bad wrist pose)."""


def keypoints_in_wrist_frame(keypoints: np.ndarray, wrist: np.ndarray) -> np.ndarray:
    """[21, 3] world keypoints -> the operator's wrist frame (the robot palm frame's axes)."""
    kp = np.asarray(keypoints, dtype=float)
    W = np.asarray(wrist, dtype=float)
    if kp.shape != (21, 3):
        raise TeleopInputError(f"keypoints: expected [21, 3], got {list(kp.shape)}")
    if W.shape != (4, 4) or not np.all(np.isfinite(W)):
        raise TeleopInputError("wrist pose: expected a finite 4x4 transform")
    return (kp - W[:3, 3]) @ W[:3, :3]


class FingerRetargeter:
    """Operator keypoints -> the robot hand's joints (all of `robot.hand_joint_names`, coupled)."""

    def __init__(
        self,
        robot: RobotDescription,
        kind: str = "vector",
        scaling: float | None = None,
        ftol_abs: float | None = 1e-5,
    ) -> None:
        self.robot = robot
        self.retargeting = robot.retargeting(kind)
        opt = self.retargeting.optimizer
        if ftol_abs is not None and hasattr(opt, "opt"):
            # NLopt stops when the objective improves by less than this (dex-retargeting: 1e-6).
            # Measured on the bench sequence: 2.2 -> 1.3 ms median, 3.1 -> 1.5 ms p95, fingertip
            # error 8.7 -> 9.3 mm: the last micro-improvements are not worth a 30 Hz frame's time.
            opt.opt.set_ftol_abs(float(ftol_abs))
        if scaling is not None and hasattr(opt, "scaling"):
            opt.scaling = float(scaling)  # per operator: robot hand size / operator hand size
        self.scaling = float(getattr(opt, "scaling", 1.0))
        self.kind = kind
        self._indices = np.asarray(opt.target_link_human_indices)
        names = list(self.retargeting.joint_names)
        self._hand_index = {n: robot.hand_joint_names.index(n) for n in names if n in robot.hand_joint_names}
        self._src = [names.index(n) for n in self._hand_index]
        self._dst = list(self._hand_index.values())
        self.last_seconds = 0.0

    def reset(self) -> None:
        self.retargeting.reset()

    def reference(self, kp_hand: np.ndarray) -> np.ndarray:
        """dex-retargeting's reference value from keypoints in the wrist frame."""
        if self.kind == "position":
            return kp_hand[self._indices]
        return kp_hand[self._indices[1]] - kp_hand[self._indices[0]]

    def __call__(self, kp_hand: np.ndarray, base: np.ndarray | None = None) -> np.ndarray:
        used = np.unique(self._indices)
        if not np.all(np.isfinite(kp_hand[used])):
            raise TeleopInputError("keypoints: a landmark retargeting needs is missing (NaN)")
        t0 = time.perf_counter()
        q_rt = self.retargeting.retarget(self.reference(kp_hand))
        self.last_seconds = time.perf_counter() - t0
        q = np.zeros(self.robot.n_hand) if base is None else np.array(base, dtype=float)
        q[self._dst] = np.asarray(q_rt)[self._src]
        full = np.concatenate([np.zeros(self.robot.n_arm), q])
        return self.robot.apply_couplings(full)[self.robot.n_arm :]

    def fingertips_in_palm(self, hand_q: np.ndarray) -> np.ndarray:
        """[n_fingers, 3] robot fingertip positions relative to the palm link (palm frame)."""
        rrobot = self.retargeting.optimizer.robot
        q = np.zeros(rrobot.dof)
        names = list(rrobot.dof_joint_names)
        for n, v in zip(self.robot.hand_joint_names, hand_q, strict=True):
            if n in names:
                q[names.index(n)] = v
        rrobot.compute_forward_kinematics(q)
        palm = rrobot.get_link_pose(rrobot.get_link_index(self.robot.config.hand.palm_link))
        inv = np.linalg.inv(palm)
        return np.array(
            [(inv @ rrobot.get_link_pose(rrobot.get_link_index(t)))[:3, 3] for t in self.robot.tip_frames]
        )


class ArmMapper:
    """Operator wrist motion -> palm target, relative to a clutch point, scaled and box-limited."""

    def __init__(self, config: TeleopConfig) -> None:
        self.config = config
        self._W0: np.ndarray | None = None
        self._P0: np.ndarray | None = None
        self._R: np.ndarray | None = None  # low-passed operator rotation
        self._t: float | None = None

    @property
    def engaged(self) -> bool:
        return self._W0 is not None

    def engage(self, operator_wrist: np.ndarray, robot_palm: np.ndarray) -> None:
        self._W0 = np.array(operator_wrist, dtype=float)
        self._P0 = np.array(robot_palm, dtype=float)
        self._R = self._W0[:3, :3].copy()
        self._t = None

    def disengage(self) -> None:
        self._W0 = self._P0 = self._R = None

    def _smoothed_rotation(self, R: np.ndarray, now: float | None) -> np.ndarray:
        from scipy.spatial.transform import Rotation, Slerp

        tau = self.config.rotation_time_constant_s
        if now is None or tau <= 0 or self._t is None or self._R is None:
            self._R, self._t = R.copy(), now
            return R
        alpha = 1.0 - math.exp(-max(0.0, now - self._t) / tau)
        key = Rotation.from_matrix(np.stack([self._R, R]))
        self._R = Slerp([0.0, 1.0], key)(alpha).as_matrix()
        self._t = now
        return self._R

    def target(self, operator_wrist: np.ndarray, now: float | None = None) -> np.ndarray:
        """The palm target; `now` (s) drives the rotation low-pass (None: no filtering)."""
        if self._W0 is None or self._P0 is None:
            raise RuntimeError("ArmMapper: not engaged")
        W = np.asarray(operator_wrist, dtype=float)
        T = np.eye(4)
        if self.config.follow_rotation:
            R = self._smoothed_rotation(W[:3, :3], now)
            T[:3, :3] = R @ self._W0[:3, :3].T @ self._P0[:3, :3]
        else:
            T[:3, :3] = self._P0[:3, :3]
        p = self._P0[:3, 3] + self.config.arm_scale * (W[:3, 3] - self._W0[:3, 3])
        T[:3, 3] = np.clip(p, self.config.workspace_min, self.config.workspace_max)
        return T


class Deadman:
    """Heartbeat watchdog: alive while the last beat is at most `timeout_s` old."""

    def __init__(self, timeout_s: float) -> None:
        self.timeout_s = timeout_s
        self.last_beat = -math.inf

    def beat(self, now: float) -> None:
        self.last_beat = float(now)

    def alive(self, now: float) -> bool:
        return now - self.last_beat <= self.timeout_s


class TeleopSession:
    """Fingers + arm + deadman in front of an `ArmHandController` (which applies all safety)."""

    def __init__(self, robot: RobotDescription, controller: Any, config: TeleopConfig | None = None) -> None:
        self.robot = robot
        self.controller = controller
        self.config = config or TeleopConfig()
        self.fingers = FingerRetargeter(robot, self.config.retargeting, self.config.finger_scale)
        self.arm = ArmMapper(self.config)
        self.deadman = Deadman(self.config.deadman_timeout_s)
        self._want_engage = False
        self._stable = 0  # consecutive valid frames while waiting to clutch in
        self._stopped = True
        self.last_hand_q: np.ndarray | None = None
        self.stop_reason = "not engaged"

    def heartbeat(self, now: float) -> None:
        self.deadman.beat(now)

    def engage(self, now: float) -> None:
        """Clutch in: the next valid operator pose becomes the reference (needs a live deadman)."""
        self._want_engage = True
        self._stable = 0
        self.fingers.reset()

    def disengage(self, now: float, reason: str = "clutch released") -> None:
        """Clutch out: the robot holds (normal braking) while the operator re-centres."""
        self._want_engage = False
        self.arm.disengage()
        if not self._stopped:
            self.controller.hold(now)
        self._stopped = True
        self.stop_reason = reason

    def check_deadman(self, now: float) -> bool:
        """Call every control tick: brakes to a hold the moment the deadman is lost."""
        if self.deadman.alive(now):
            return True
        if not self._stopped or self.arm.engaged:
            # The safety filter's e-stop braking (a_max, all joints together); cleared by the next
            # engage with a live deadman, unlike an operator's e-stop, which needs its own reset.
            self.controller.estop(DEADMAN_REASON)
            self.arm.disengage()
            self._want_engage = False
            self._stopped = True
            self.stop_reason = DEADMAN_REASON
        return False

    def update(self, now: float, keypoints: np.ndarray | None, wrist: np.ndarray | None) -> Any | None:
        """One hand-tracker frame -> the HandTarget sent to the controller (None: nothing sent)."""
        from dexh2r_control.controller import HandTarget

        if not self.check_deadman(now):
            return None
        if keypoints is None or wrist is None:
            self._stable = 0
            return None  # hand out of view: hold what we have
        try:
            kp_hand = keypoints_in_wrist_frame(keypoints, wrist)
            hand_q = self.fingers(kp_hand)
        except TeleopInputError as exc:
            self.stop_reason = str(exc)
            self._stable = 0
            return None
        if not self.arm.engaged:
            if not self._want_engage:
                return None
            self._stable += 1
            if self._stable < self.config.engage_after_frames:
                self.stop_reason = "engaging: waiting for a steady hand"
                return None
            if self.controller.safety.estopped:
                if self.controller.safety.estop_reason != DEADMAN_REASON:
                    self.stop_reason = (
                        f"e-stop latched ({self.controller.safety.estop_reason}): reset it first"
                    )
                    return None
                self.controller.reset_estop(now)
            self.arm.engage(wrist, self.controller.palm_pose())
        target = HandTarget(stamp=now, palm_pose=self.arm.target(wrist, now), hand_q=hand_q)
        self.controller.set_hand_target(target)
        self.last_hand_q = hand_q
        self._stopped = False
        self.stop_reason = ""
        return target
