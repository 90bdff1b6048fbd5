"""Arm + hand controller (ROS-free): targets in, one safe joint command per control tick out.

    ctrl = ArmHandController(RobotDescription.load("ur5_shadow"))
    ctrl.reset(q_measured, now)
    ctrl.set_hand_target(HandTarget(stamp=now, palm_pose=T_world_palm, hand_q=q_hand))
    cmd = ctrl.step(now + 0.004)            # positions, velocities, accelerations + safety status

Each tick (250 Hz by default):
1. **IK** (`ArmIk`, warm-started from the previous tick's solution, at most `ik_iterations`
   iterations): the arm joints that put the palm frame at the target pose, with the target's hand
   joints (the hand's wrist joints move the palm too). A target far away converges over a few
   ticks instead of stalling one tick. The target position is first clamped into the safety
   filter's workspace box, so an out-of-box target drives the palm to the box's face.
2. **Hand**: finger targets (all hand joints, or only the actuated ones) get the coupled-joint rule
   (`RobotDescription.apply_couplings`) and the joint limits.
3. **Interpolation** toward that goal, per joint: a braking-curve velocity profile
   (`v = min(v_max * speed_scale, sqrt(2 * braking * a_max * |e|), kp * |e|)`, with the error `e`
   taken where the joint will be after one acceleration ramp `a_max / j_max`, so braking starts
   early enough for the jerk limit), a velocity loop (`kv`), acceleration clipped to the limit and
   a **jerk limit**, so a target that jumps (a new action chunk) changes the acceleration
   gradually instead of in one tick.
4. **SafetyFilter** (`safety.py`): limits, workspace, separation, watchdog, e-stop. The
   interpolator starts every tick from the filter's output, so the two never diverge.

A new hand target's IK is seeded with the current command (`ik_seed_from_command`), so it stays
on the arm's present branch. With measured joints (`set_measured`), the arm goal the interpolator
brakes toward is kept within `max_following_error_rad` of them: a robot slower than the
description's velocity limits (the sim's UR5 wrists: ~0.35 rad/s against 3.2) is waited for
instead of being run away from (in the closed loop the command was 1.3 rad ahead of the robot);
`following_error_uniform` scales the arm's step as a whole instead of clipping each joint.

With `ik_max_jump_rad` > 0, an IK solution farther than that from the current command (a far
branch: the home posture is ~10 deg from the UR5 wrist singularity) is not tracked; the goal is
the solution for a pose part of the way along the straight Cartesian path from the commanded palm
to the target (the fraction halved until the solution stays within the bound) and the path is
followed on later ticks. `ik_extra_joints` (the hand's wrist joints) let the IK absorb palm
rotations with the hand's fast wrist; their IK values replace the target's.

Direct joint targets (`set_joint_target`, e.g. teleop or a retreat/place configuration) bypass
IK and go through steps 2-4. Invalid targets raise `InvalidTargetError` and are not stored (the
previous target stays; if none arrives the watchdog brings the robot to a hold).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from dexh2r_control.ik import ArmIk, IkConfig
from dexh2r_control.safety import (
    InvalidTargetError,
    SafeCommand,
    SafetyConfig,
    SafetyFilter,
    check_vector,
)
from dexh2r_core.robot.description import RobotDescription
from dexh2r_core.transforms import interpolate_pose

# The e-stop reason of a teleoperation deadman stop: the one latch that clears itself when the
# deadman is back (an operator's e-stop needs its explicit reset).
DEADMAN_REASON = "deadman released"


# The closed loop's controller options near the UR5's wrist singularity (docs/control.md, "Near
# the wrist singularity"): the hand's own wrist joints in the IK, no far IK branches, the
# following-error bound as a whole. The in-process closed loop and controller_node's
# `wrist_ik:=true` (the sim and real launch files) both use exactly these.
WRIST_IK_OPTIONS: dict = {
    "ik_max_jump_rad": 0.3,
    "ik_extra_joints": ("rh_WRJ2", "rh_WRJ1"),
    "following_error_uniform": True,
}


@dataclass(frozen=True)
class ControllerConfig:
    rate_hz: float = 250.0
    ik_frame: str = ""  # "" = the hand's palm link
    ik_iterations: int = 8  # per tick; warm start carries the rest to the next tick
    # Tuned on steps of 0.01-2 rad at the UR5/Shadow limits: no overshoot, 0.3 rad in ~0.65 s.
    position_gain: float = 12.0  # 1/s: velocity per radian of error near the goal
    velocity_gain: float = 30.0  # 1/s: velocity loop
    braking_fraction: float = 0.7  # of a_max used by the braking curve: margin for the jerk ramp
    arm_jerk_limit: float = 100.0  # rad/s^3 (a_max 4 reached in 40 ms)
    hand_jerk_limit: float = 600.0  # rad/s^3 (a_max 20 reached in 33 ms)
    clamp_target_to_workspace: bool = True
    goal_tolerance_rad: float = 2e-3  # `at_goal` when every joint is this close and slow
    # A new hand target's IK starts from the current command (the nearest solution on the arm's
    # present branch), not from the previous target's solution, which may have run ahead of it.
    ik_seed_from_command: bool = True
    # Following-error bound: with measured joints (`set_measured`, newer than
    # `measured_max_age_s`), the arm command stays within this of them, so a robot slower than
    # the description's velocity limits is waited for instead of being run away from (0: off).
    max_following_error_rad: float = 0.15
    measured_max_age_s: float = 0.1
    # The bound scales the arm's step toward the goal as a whole (its direction kept) instead of
    # clipping each joint.
    following_error_uniform: bool = False
    # No far-branch jumps: an IK solution more than this (max abs joint change) from the current
    # command is not tracked; the controller solves for a pose part of the way along the straight
    # Cartesian path from the commanded palm to the target instead (halving the fraction up to
    # `ik_max_halvings` times per tick) and goes on along that path on later ticks (0: off, the
    # raw solution is tracked whatever its distance).
    ik_max_jump_rad: float = 0.0
    ik_max_halvings: int = 2
    # Extra IK joints besides the arm's, e.g. ("rh_WRJ2", "rh_WRJ1"): the hand's own (fast) wrist
    # joints absorb palm rotations; their IK values replace the target's for those joints.
    ik_extra_joints: tuple[str, ...] = ()
    # Cost of moving each IK joint (arm, then extra; empty = all 1): see IkConfig.joint_costs.
    ik_joint_costs: tuple[float, ...] = ()
    safety: SafetyConfig = field(default_factory=SafetyConfig)

    def __post_init__(self) -> None:
        if self.rate_hz <= 0:
            raise ValueError("rate_hz must be > 0")
        if self.ik_iterations < 1:
            raise ValueError("ik_iterations must be >= 1")
        if self.max_following_error_rad < 0:
            raise ValueError("max_following_error_rad must be >= 0")
        if self.ik_max_jump_rad < 0 or self.ik_max_halvings < 0:
            raise ValueError("ik_max_jump_rad and ik_max_halvings must be >= 0")


@dataclass
class HandTarget:
    """A wrist/palm pose (4x4, world) and hand joints, received at `stamp` (controller clock).

    `hand_q`: all hand joints (`robot.hand_joint_names`), or only the actuated ones
    (`robot.hand_actuated_joint_names`), or None to keep the current hand command.
    """

    stamp: float
    palm_pose: np.ndarray
    hand_q: np.ndarray | None = None


@dataclass
class ControllerState:
    goal: np.ndarray | None  # the joint position the interpolator is heading to
    ik_success: bool
    ik_position_error_m: float
    ik_iterations: int
    ik_seconds: float
    target_stamp: float


def controller_ik(robot: RobotDescription, cfg: ControllerConfig) -> ArmIk:
    """The IK the controller runs for `cfg` (its frame, iterations, extra joints, costs and
    limit margin): also for planners that must know what it can reach."""
    return ArmIk(
        robot,
        cfg.ik_frame or robot.config.hand.palm_link,
        IkConfig(
            max_iterations=cfg.ik_iterations,
            extra_joints=tuple(cfg.ik_extra_joints),
            joint_costs=tuple(cfg.ik_joint_costs),
            limit_margin_rad=cfg.safety.position_margin_rad,
        ),
    )


class ArmHandController:
    def __init__(self, robot: RobotDescription, config: ControllerConfig | None = None) -> None:
        self.robot = robot
        self.config = cfg = config or ControllerConfig()
        self.dt = 1.0 / cfg.rate_hz
        self.n = len(robot.joint_names)
        self.n_arm = robot.n_arm
        self.safety = SafetyFilter(robot, cfg.safety)
        self.ik = controller_ik(robot, cfg)
        # Robot indices of the IK's joints: the arm's, then the extra ones.
        self._extra_idx = self.ik.extra_index
        self._ik_idx = np.r_[np.arange(self.n_arm), self._extra_idx].astype(int)
        self.jerk_max = np.array([cfg.arm_jerk_limit] * self.n_arm + [cfg.hand_jerk_limit] * robot.n_hand)
        self._ramp_s = self.safety.a_max / self.jerk_max  # time to build up a_max
        self._actuated_idx = np.array(
            [robot.hand_joint_names.index(n) for n in robot.hand_actuated_joint_names]
        )
        self._hand_target: HandTarget | None = None
        self._joint_goal: np.ndarray | None = None
        self._q_ik: np.ndarray | None = None  # warm start: last IK solution (arm)
        self._q_ik_extra = np.zeros(len(self._extra_idx))  # and of the extra IK joints
        self._ik_done = False
        self._path_from = np.eye(4)  # Cartesian path start: the commanded palm at the target
        self._path_s = 0.0  # fraction of that path the current IK goal reaches
        self._path_step = 1.0  # fraction increment tried first on the next tick
        self._measured: np.ndarray | None = None
        self._measured_stamp = -np.inf
        self._last_now: float | None = None
        self.state = ControllerState(None, False, float("nan"), 0, 0.0, -np.inf)

    # ---- set-up and inputs ---------------------------------------------------------------------
    def reset(self, q_measured: np.ndarray, now: float) -> None:
        """(Re)start from the measured joints at rest; targets received before are dropped."""
        self.safety.reset(q_measured)
        self._hand_target = None
        self._joint_goal = None
        self._q_ik = self.safety.q[: self.n_arm].copy()
        self._q_ik_extra = self.safety.q[self._extra_idx].copy()
        self._last_now = now
        self.state = ControllerState(None, False, float("nan"), 0, 0.0, -np.inf)

    @property
    def ready(self) -> bool:
        return self.safety.ready

    def _hand_vector(self, hand_q: np.ndarray | None, base: np.ndarray) -> np.ndarray:
        if hand_q is None:
            return base[self.n_arm :].copy()
        hand_q = np.asarray(hand_q, dtype=float)
        if hand_q.shape == (len(self._actuated_idx),) and len(self._actuated_idx) != self.robot.n_hand:
            full = base[self.n_arm :].copy()
            full[self._actuated_idx] = check_vector(hand_q, len(self._actuated_idx), "hand target")
            return full
        return check_vector(hand_q, self.robot.n_hand, "hand target")

    def set_hand_target(self, target: HandTarget) -> None:
        """Track a palm pose + hand joints (validated; InvalidTargetError leaves the old target)."""
        T = np.asarray(target.palm_pose, dtype=float)
        if T.shape != (4, 4):
            raise InvalidTargetError(f"palm pose: expected a 4x4 transform, got shape {T.shape}")
        if not np.all(np.isfinite(T)):
            raise InvalidTargetError("palm pose: NaN or Inf")
        R = T[:3, :3]
        if not np.allclose(R @ R.T, np.eye(3), atol=1e-3) or np.linalg.det(R) < 0.5:
            raise InvalidTargetError("palm pose: rotation part is not a rotation matrix")
        if not np.isfinite(target.stamp):
            raise InvalidTargetError("target stamp is NaN or Inf")
        base = self._joint_goal if self._joint_goal is not None else self._current()
        hand = self._hand_vector(target.hand_q, base)
        T = T.copy()
        if self.config.clamp_target_to_workspace:
            T[:3, 3] = np.clip(T[:3, 3], self.safety.box_lo, self.safety.box_hi)
        # The same pose again (a refreshed target): go on along the same Cartesian path.
        same_pose = self._hand_target is not None and np.array_equal(T, self._hand_target.palm_pose)
        self._hand_target = HandTarget(float(target.stamp), T, hand)
        self._joint_goal = None
        self._ik_done = False
        on_path = same_pose and self.config.ik_max_jump_rad > 0
        # (On the same path the last accepted solution stays: it is within the bound of the
        # command, and re-seeding would drop the goal to the command while no stride is found.)
        if self.config.ik_seed_from_command and not on_path:
            self._q_ik = self.safety.q[: self.n_arm].copy()
            self._q_ik_extra = self.safety.q[self._extra_idx].copy()
        if self.config.ik_max_jump_rad > 0 and not on_path:
            self._path_from = self.ik.frame_pose(self.safety.q)
            self._path_s = 0.0
            self._path_step = 1.0
        self.state.target_stamp = float(target.stamp)

    def set_joint_target(self, q: np.ndarray, stamp: float) -> None:
        """Track a full joint vector (arm + hand) directly, without IK."""
        q = check_vector(q, self.n, "joint target")
        if not np.isfinite(stamp):
            raise InvalidTargetError("target stamp is NaN or Inf")
        self._joint_goal = self._limit(q)
        self._hand_target = None
        self.state.target_stamp = float(stamp)

    def hold(self, stamp: float) -> None:
        """Track the current command (a soft hold that still counts as a fresh target)."""
        self.set_joint_target(self._current(), stamp)

    def set_keypoints(self, keypoints: np.ndarray, stamp: float) -> None:
        self.safety.set_keypoints(keypoints, stamp)

    def set_measured(self, q_measured: np.ndarray, stamp: float) -> None:
        """The measured joint positions (all joints) at `stamp`: bounds the following error."""
        self._measured = check_vector(q_measured, self.n, "measured joint position").copy()
        self._measured_stamp = float(stamp)

    def set_grasp_phase(self, active: bool) -> None:
        self.safety.grasp_phase = bool(active)

    def estop(self, reason: str = "e-stop") -> None:
        self.safety.estop(reason)

    def reset_estop(self, now: float) -> None:
        """Clear the latch; the robot stays where it stopped until a new target arrives."""
        self.safety.reset_estop()
        self._hand_target = None
        self._joint_goal = None
        self.state.target_stamp = -np.inf
        self._last_now = now

    # ---- internals -----------------------------------------------------------------------------
    def _current(self) -> np.ndarray:
        if not self.safety.ready:
            raise RuntimeError("controller not initialised: call reset(q_measured, now)")
        return self.safety.q.copy()

    def _limit(self, q: np.ndarray) -> np.ndarray:
        q = self.robot.apply_couplings(q)
        return np.clip(q, self.safety.lower, self.safety.upper)

    def _solve_ik(self) -> np.ndarray:
        """Goal joints for the hand target: a bounded, warm-started IK step (skipped once converged)."""
        t = self._hand_target
        goal = np.concatenate([self._q_ik, t.hand_q])
        goal[self._extra_idx] = self._q_ik_extra
        if not self._ik_done:
            import time

            t0 = time.perf_counter()
            if self.config.ik_max_jump_rad > 0:
                res, iterations, success = self._solve_on_path(t.palm_pose, goal)
            else:
                res = self.ik.solve(t.palm_pose, goal)
                iterations, success = res.iterations, res.success
            self.state.ik_seconds = time.perf_counter() - t0
            self.state.ik_iterations = iterations
            self.state.ik_success = success
            if res is not None:
                self.state.ik_position_error_m = res.position_error_m
                self._q_ik = res.q_arm
                self._q_ik_extra = res.q_extra
                # Converged on the target itself: reuse the solution until the target changes.
                self._ik_done = res.iterations < self.ik.config.max_iterations and success
            goal[: self.n_arm] = self._q_ik
            goal[self._extra_idx] = self._q_ik_extra
        else:
            self.state.ik_seconds = 0.0
            self.state.ik_iterations = 0
        return self._limit(goal)

    def _solve_on_path(self, target: np.ndarray, seed: np.ndarray) -> tuple[Any, int, bool]:
        """IK for the farthest pose on the Cartesian path (commanded palm -> target) whose solution
        stays within `ik_max_jump_rad` of the current command: near the wrist singularity a
        nearby palm pose can have its IK solution on a far branch (or radians of wrist motion
        away), and the straight joint-space line to it sweeps the palm away from the target. The
        stride along the path halves on a rejection and doubles after a success, over ticks.
        Returns (accepted result or None, iterations, reached the target itself)."""
        cfg = self.config
        q_cmd = self.safety.q[self._ik_idx]
        s_lo = self._path_s
        step = self._path_step  # the path fraction to try first: adapts over ticks
        fallback = None
        iterations = 0
        for _ in range(cfg.ik_max_halvings + 1):
            s_try = min(1.0, s_lo + step)
            T = target if s_try >= 1.0 else interpolate_pose(self._path_from, target, s_try)
            res = self.ik.solve(T, seed)
            iterations += res.iterations
            jump = float(np.max(np.abs(np.r_[res.q_arm, res.q_extra] - q_cmd)))
            if jump <= cfg.ik_max_jump_rad:
                if res.success:
                    self._path_s = s_try
                    self._path_step = min(1.0, 2.0 * step)  # try a longer stride next tick
                    return res, iterations, s_try >= 1.0
                if fallback is None:
                    fallback = res  # not converged yet: progress for the next tick's warm start
            step *= 0.5
        # Nothing converged within the bound: keep the old goal (or warm-start from a bounded
        # partial solution) and go on halving from here next tick, as the command moves on.
        self._path_step = max(step, 1e-4)
        return fallback, iterations, False

    def _interpolate(self, goal: np.ndarray, dt: float, scale: float) -> np.ndarray:
        """Next desired position: braking-curve velocity, velocity loop, accel and jerk limits."""
        cfg = self.config
        sf = self.safety
        q, v, a = sf.q, sf.v, sf.a
        tau = self._ramp_s
        # Anticipate the acceleration ramp: without it the jerk limit makes the joint overshoot.
        e = goal - q - (v * tau + 0.5 * a * tau * tau)
        ae = np.abs(e)
        v_lim = sf.velocity_limits(scale)
        v_brake = np.sqrt(2.0 * cfg.braking_fraction * sf.a_max * ae)
        v_des = np.sign(e) * np.minimum(np.minimum(v_lim, v_brake), cfg.position_gain * ae)
        a_des = np.clip(cfg.velocity_gain * (v_des - v), -sf.a_max, sf.a_max)
        da = self.jerk_max * dt
        a_new = np.clip(a_des, a - da, a + da)
        v_new = v + a_new * dt
        return q + v_new * dt

    # ---- one tick ------------------------------------------------------------------------------
    def step(self, now: float, dt: float | None = None) -> SafeCommand:
        """The command for this tick (`dt` defaults to the configured period)."""
        if not self.safety.ready:
            raise RuntimeError("controller not initialised: call reset(q_measured, now)")
        dt = self.dt if dt is None else float(dt)
        self._last_now = now
        if self._hand_target is not None:
            goal = self._solve_ik()
        elif self._joint_goal is not None:
            goal = self._joint_goal
        else:
            goal = self.safety.q
        self.state.goal = goal
        scale, _ = self.safety.speed_scale(self.safety.q, now)
        e = self.config.max_following_error_rad
        if (
            e > 0
            and self._measured is not None
            and now - self._measured_stamp <= self.config.measured_max_age_s
        ):
            # The goal the interpolator brakes toward, not its output: no overshoot at the bound.
            m = self._measured[: self.n_arm]
            goal = goal.copy()
            if self.config.following_error_uniform:
                # Scale the whole arm step, keeping its joint-space direction: clipping each joint
                # lets the fast joints run on while a slow one lags, off the path to the goal.
                d = goal[: self.n_arm] - m
                goal[: self.n_arm] = m + d * min(1.0, e / max(float(np.max(np.abs(d))), 1e-12))
            else:
                goal[: self.n_arm] = np.clip(goal[: self.n_arm], m - e, m + e)
        q_des = self._interpolate(goal, dt, scale)
        return self.safety.step(q_des, now, dt, self.state.target_stamp)

    def at_goal(self) -> bool:
        """Command within tolerance of the goal and nearly still (e.g. 'grasp target reached')."""
        if self.state.goal is None or not self.safety.ready:
            return False
        tol = self.config.goal_tolerance_rad
        close = np.max(np.abs(self.state.goal - self.safety.q)) < tol
        still = np.max(np.abs(self.safety.v)) < 10 * tol
        ik_ok = self._hand_target is None or self.state.ik_success
        return bool(close and still and ik_ok)

    def palm_pose(self, q: np.ndarray | None = None) -> np.ndarray:
        """World pose of the IK frame at q (default: the current command)."""
        return self.ik.frame_pose(self._current() if q is None else q)


def command_trajectories(robot: RobotDescription, cmd: SafeCommand, period: float) -> tuple[Any, Any]:
    """One tick's command as (arm, hand) JTC trajectories: a single point one period ahead with
    positions, velocities and accelerations (the in-process twin of what controller_node streams;
    executed by the sim cell's JTC-style followers)."""
    from dexh2r_core.trajectory import JointTrajectory, TrajectoryPoint

    n = robot.n_arm
    parts = []
    for names, sl in ((robot.arm_joint_names, slice(0, n)), (robot.hand_joint_names, slice(n, None))):
        point = TrajectoryPoint(period, cmd.positions[sl], cmd.velocities[sl], cmd.accelerations[sl])
        parts.append(JointTrajectory(list(names), [point]))
    return parts[0], parts[1]
