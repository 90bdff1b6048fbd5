"""Arm inverse kinematics on the robot description's pinocchio model (ROS-free).

Damped least squares on the 6-D pose error of one frame (the hand's palm or any named frame) over
the arm joints only, with a posture task in the null space, joint limits enforced by clamping each
step, warm start from the previous solution and a bounded number of iterations, so the cost per
call is predictable inside a 100+ Hz control loop.
"""

from __future__ import annotations

from dataclasses import dataclass

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


@dataclass
class IkResult:
    q_arm: np.ndarray
    success: bool
    iterations: int
    position_error_m: float
    rotation_error_rad: float


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
        self.arm_q_idx = np.array(
            [self.model.joints[self.model.getJointId(n)].idx_q for n in robot.arm_joint_names]
        )
        self.arm_v_idx = np.array(
            [self.model.joints[self.model.getJointId(n)].idx_v for n in robot.arm_joint_names]
        )
        # pinocchio q index of every `joint_names` entry: one gather per call instead of a name loop.
        self._q_index = np.array(
            [self.model.joints[self.model.getJointId(n)].idx_q for n in robot.joint_names]
        )
        self.lower = robot.lower[: robot.n_arm]
        self.upper = robot.upper[: robot.n_arm]
        self.posture = robot.home()[: robot.n_arm]

    def _pin_q(self, q: np.ndarray) -> np.ndarray:
        out = np.zeros(self.model.nq)
        out[self._q_index] = q
        return out

    def frame_pose(self, q: np.ndarray) -> np.ndarray:
        """World pose (4x4) of the IK frame for a full joint vector (arm + hand)."""
        pin = self._pin
        pin.framesForwardKinematics(self.model, self.data, self._pin_q(q))
        return self.data.oMf[self.frame_id].homogeneous.copy()

    def solve(self, target: np.ndarray, q_seed: np.ndarray) -> IkResult:
        """Arm joints putting the frame at `target` (4x4, world); hand joints of `q_seed` are kept."""
        pin = self._pin
        cfg = self.config
        if target.shape != (4, 4) or not np.all(np.isfinite(target)):
            raise ValueError("IK target must be a finite 4x4 transform")
        q_full = self._pin_q(np.asarray(q_seed, dtype=float))
        target_se3 = pin.SE3(target[:3, :3], target[:3, 3])
        weights = np.array([1.0, 1.0, 1.0, cfg.rotation_weight, cfg.rotation_weight, cfg.rotation_weight])
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
            J = pin.computeFrameJacobian(self.model, self.data, q_full, self.frame_id, pin.LOCAL)[
                :, self.arm_v_idx
            ]
            Jw = J * weights[:, None]
            ew = err * weights
            JJt = Jw @ Jw.T + cfg.damping * np.eye(6)
            dq = Jw.T @ np.linalg.solve(JJt, ew)
            # Null-space posture task: drift toward the home posture without disturbing the pose.
            N = np.eye(len(self.arm_v_idx)) - np.linalg.pinv(Jw) @ Jw
            dq += N @ (cfg.posture_gain * (self.posture - q_full[self.arm_q_idx]))
            dq = np.clip(cfg.step_scale * dq, -cfg.max_step_rad, cfg.max_step_rad)
            q_full[self.arm_q_idx] = np.clip(q_full[self.arm_q_idx] + dq, self.lower, self.upper)
        success = pos_err < cfg.position_tolerance_m * 10 and rot_err < cfg.rotation_tolerance_rad * 10
        return IkResult(q_full[self.arm_q_idx].copy(), bool(success), it, pos_err, rot_err)
