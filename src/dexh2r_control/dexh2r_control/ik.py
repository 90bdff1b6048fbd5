"""Arm inverse kinematics on the robot description's pinocchio model (ROS-free).

Damped least squares on the 6-D pose error of one frame (the hand's palm or any named frame) over
the arm joints (and, optionally, `extra_joints`: e.g. the hand's own wrist joints, which move the
palm too), with a posture task in the null space (home for the arm, the description's home for
the extra joints), joint limits enforced by clamping each step, warm start from the previous
solution and a bounded number of iterations, so the cost per call is predictable inside a 100+ Hz
control loop. `joint_costs` weight the joints (a costly joint moves less): slow arm wrists can
leave a rotation to the hand's fast wrist joints.

`interpolate_pose` is the SE(3) path the controller steps along when a full IK solution would be
a far branch (docs/control.md).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from dexh2r_core.robot.description import RobotDescription


@dataclass(frozen=True)
class IkConfig:
    max_iterations: int = 50
    damping: float = 1e-3
    step_scale: float = 1.0
    max_step_rad: float = 0.2  # per iteration and joint: keeps the linearisation honest
    position_tolerance_m: float = 1e-4
    rotation_tolerance_rad: float = 1e-3
    rotation_weight: float = 0.5  # metres per radian in the error norm
    posture_gain: float = 0.05
    # Joints solved besides the arm's (robot joint names, e.g. the hand's "rh_WRJ2", "rh_WRJ1").
    extra_joints: tuple[str, ...] = ()
    # Cost of moving each solved joint (arm joints, then extra_joints; empty = all 1): weighted DLS.
    joint_costs: tuple[float, ...] = ()
    limit_margin_rad: float = 0.0  # solve this far inside the joint limits (the safety filter's)


@dataclass
class IkResult:
    q_arm: np.ndarray
    success: bool
    iterations: int
    position_error_m: float
    rotation_error_rad: float
    q_extra: np.ndarray = field(default_factory=lambda: np.zeros(0))  # IkConfig.extra_joints


class ArmIk:
    def __init__(self, robot: RobotDescription, frame: str, config: IkConfig | None = None) -> None:
        import pinocchio as pin

        self._pin = pin
        self.robot = robot
        self.config = config or IkConfig()
        self.model = robot.pinocchio_model()
        self.data = self.model.createData()
        if not self.model.existFrame(frame):
            raise KeyError(f"IK frame '{frame}' is not a frame of the robot model")
        self.frame_id = self.model.getFrameId(frame)
        names = list(robot.arm_joint_names)
        self.extra_joints = tuple(self.config.extra_joints)
        for n in self.extra_joints:
            if n not in robot.joint_names or n in names:
                raise KeyError(f"IK extra joint '{n}' is not a non-arm joint of the robot")
        self.arm_q_idx = np.array(
            [self.model.joints[self.model.getJointId(n)].idx_q for n in robot.arm_joint_names]
        )
        self.arm_v_idx = np.array(
            [self.model.joints[self.model.getJointId(n)].idx_v for n in robot.arm_joint_names]
        )
        # Solved joints: the arm's, then the extra ones (pinocchio q/v indices, robot indices).
        solved = names + list(self.extra_joints)
        self._sq_idx = np.array([self.model.joints[self.model.getJointId(n)].idx_q for n in solved])
        self._sv_idx = np.array([self.model.joints[self.model.getJointId(n)].idx_v for n in solved])
        self.extra_index = np.array([robot.joint_names.index(n) for n in self.extra_joints], dtype=int)
        robot_idx = np.r_[np.arange(robot.n_arm), self.extra_index].astype(int)
        costs = np.asarray(self.config.joint_costs, dtype=float)
        if costs.size == 0:
            costs = np.ones(len(solved))
        if costs.shape != (len(solved),) or np.any(costs <= 0):
            raise ValueError(f"joint_costs: expected {len(solved)} positive values")
        self._w_inv = 1.0 / costs
        # pinocchio q index of every `joint_names` entry: one gather per call instead of a name loop.
        self._q_index = np.array(
            [self.model.joints[self.model.getJointId(n)].idx_q for n in robot.joint_names]
        )
        self.lower = robot.lower[: robot.n_arm]
        self.upper = robot.upper[: robot.n_arm]
        self.posture = robot.home()[: robot.n_arm]
        self._lo = robot.lower[robot_idx] + self.config.limit_margin_rad
        self._hi = robot.upper[robot_idx] - self.config.limit_margin_rad
        self._posture = robot.home()[robot_idx]

    def _pin_q(self, q: np.ndarray) -> np.ndarray:
        out = np.zeros(self.model.nq)
        out[self._q_index] = q
        return out

    def frame_pose(self, q: np.ndarray) -> np.ndarray:
        """World pose (4x4) of the IK frame for a full joint vector (arm + hand)."""
        pin = self._pin
        pin.framesForwardKinematics(self.model, self.data, self._pin_q(q))
        return self.data.oMf[self.frame_id].homogeneous.copy()

    def _step(self, Jw: np.ndarray, ew: np.ndarray, w_inv: np.ndarray, q: np.ndarray) -> np.ndarray:
        """One weighted DLS step (W = I: the plain DLS) with the posture task in the null space."""
        cfg = self.config
        # dq = W^-1 J^T (J W^-1 J^T + lambda I)^-1 e; a joint with w_inv 0 does not move.
        JWi = Jw * w_inv[None, :]
        JJt = JWi @ Jw.T + cfg.damping * np.eye(6)
        dq = JWi.T @ np.linalg.solve(JJt, ew)
        # Null-space posture task: drift toward the home posture without disturbing the pose
        # (undamped weighted projector: with W = I it is I - pinv(Jw) Jw).
        N = np.eye(len(q)) - JWi.T @ np.linalg.pinv(JWi @ Jw.T) @ Jw
        return dq + N @ (cfg.posture_gain * (self._posture - q) * (w_inv > 0))

    def solve(self, target: np.ndarray, q_seed: np.ndarray) -> IkResult:
        """Arm (and extra) joints putting the frame at `target` (4x4, world); the other joints of
        `q_seed` (a full joint vector) are kept."""
        pin = self._pin
        cfg = self.config
        if target.shape != (4, 4) or not np.all(np.isfinite(target)):
            raise ValueError("IK target must be a finite 4x4 transform")
        q_full = self._pin_q(np.asarray(q_seed, dtype=float))
        target_se3 = pin.SE3(target[:3, :3], target[:3, 3])
        weights = np.array([1.0, 1.0, 1.0, cfg.rotation_weight, cfg.rotation_weight, cfg.rotation_weight])
        qi, vi, w_inv = self._sq_idx, self._sv_idx, self._w_inv
        pos_err = rot_err = np.inf
        it = 0
        for it in range(1, cfg.max_iterations + 1):  # noqa: B007 - `it` is reported
            pin.framesForwardKinematics(self.model, self.data, q_full)
            current = self.data.oMf[self.frame_id]
            # Error in the local frame (pinocchio's log6 convention), as in pinocchio's IK example.
            err = pin.log6(current.actInv(target_se3)).vector
            pos_err = float(np.linalg.norm(target[:3, 3] - current.translation))
            rot_err = float(np.linalg.norm(err[3:]))
            if pos_err < cfg.position_tolerance_m and rot_err < cfg.rotation_tolerance_rad:
                break
            J = pin.computeFrameJacobian(self.model, self.data, q_full, self.frame_id, pin.LOCAL)[:, vi]
            Jw = J * weights[:, None]
            ew = err * weights
            dq = self._step(Jw, ew, w_inv, q_full[qi])
            blocked = ((q_full[qi] <= self._lo + 1e-9) & (dq < 0)) | (
                (q_full[qi] >= self._hi - 1e-9) & (dq > 0)
            )
            if np.any(blocked):
                # A joint at its limit would be clipped, and the step (and its "null-space" posture
                # part) computed with it would move the frame off: solve again without it.
                dq = self._step(Jw, ew, np.where(blocked, 0.0, w_inv), q_full[qi])
            dq = np.clip(cfg.step_scale * dq, -cfg.max_step_rad, cfg.max_step_rad)
            q_full[qi] = np.clip(q_full[qi] + dq, self._lo, self._hi)
        success = pos_err < cfg.position_tolerance_m * 10 and rot_err < cfg.rotation_tolerance_rad * 10
        n = len(self.arm_q_idx)
        return IkResult(q_full[qi[:n]].copy(), bool(success), it, pos_err, rot_err, q_full[qi[n:]].copy())
