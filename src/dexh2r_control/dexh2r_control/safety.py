"""Safety filter: the last stage before every joint command that leaves the controller (ROS-free).

`SafetyFilter` owns the commanded joint state (position, velocity, acceleration over all of
`RobotDescription.joint_names`) and advances it one control tick at a time toward the position the
controller asks for, enforcing, in this order:

1. **Input validation**: NaN/Inf or a wrong-length desired position raises `InvalidTargetError`
   (the filter state is untouched; the caller keeps sending the previous command, i.e. holds).
2. **Latched e-stop** (`estop()` / `reset_estop()`): once triggered, the command brakes to a stop
   and stays there until an explicit reset; nothing else clears it.
3. **Watchdog**: when the newest target is older than `watchdog_timeout_s` (default 100 ms), the
   desired position is ignored and the command brakes to a hold.
4. **Speed and separation monitoring** (in the spirit of ISO/TS 15066): the minimum distance
   from robot points (palm, fingertips, a few arm link origins) to the giver's 21 hand keypoints
   scales the arm's velocity limits: 1 beyond `slowdown_distance_m`, linearly down to 0 at
   `stop_distance_m`. Outside the grasp phase a distance below the stop distance is a protective
   stop (brake to a hold, resume when the separation is restored); in the grasp phase (the hand
   must reach into the giver's hand) the scale is floored at `grasp_min_scale` instead.
   NaN keypoints (not seen) are ignored; keypoints older than `keypoint_max_age_s` count as no hand.
5. **Joint position limits** (minus `position_margin_rad`) on the desired position, and a braking
   bound on the velocity so that every joint can still stop before its limit.
6. **Workspace box** (world frame) for the palm: a step whose stopping point would put the palm
   further outside the box than it is now brakes to a hold (motion back into the box is allowed).
7. **Velocity and acceleration limits** per joint (the robot description's, times the configured
   scales): the velocity toward the desired position is clipped, then its change per tick.

Every stop (e-stop, watchdog, protective, workspace) is a synchronised brake: all joints slow down
along the current joint-space direction (so the hand does not swerve) at the largest deceleration
that keeps every joint within its acceleration limit. Integration is explicit Euler on the tick
period, so an unconstrained desired position is passed through exactly.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from dexh2r_core.robot.description import RobotDescription


class SafetyError(ValueError):
    """A command the safety filter refuses; the message says why."""


class InvalidTargetError(SafetyError):
    """A target with NaN/Inf, or the wrong number of values, or the wrong shape."""


@dataclass(frozen=True)
class SafetyConfig:
    velocity_scale: float = 1.0  # fraction of the description's velocity limits
    acceleration_scale: float = 1.0  # fraction of the description's acceleration limits
    position_margin_rad: float = 0.005  # stay this far inside every joint limit
    watchdog_timeout_s: float = 0.1
    # Palm (IK frame) workspace in world: above the table top (z = 0) with finger clearance,
    # inside the UR5's reach, not behind the base where the cables run.
    workspace_min: tuple[float, float, float] = (-0.3, -0.75, 0.08)
    workspace_max: tuple[float, float, float] = (0.95, 0.75, 1.0)
    workspace_frame: str = ""  # "" = the hand's palm link
    # Speed and separation monitoring.
    slowdown_distance_m: float = 0.30
    stop_distance_m: float = 0.10
    grasp_min_scale: float = 0.25
    keypoint_max_age_s: float = 0.5
    # Arm links whose origins count as robot points for the separation (plus palm and fingertips).
    ssm_links: tuple[str, ...] = ("forearm_link", "wrist_1_link", "wrist_2_link", "wrist_3_link")
    # Scale the hand joints too? No by default: the fingers carry little energy and must close on
    # an object the giver still holds; a protective stop still stops them.
    ssm_scales_hand: bool = False

    def __post_init__(self) -> None:
        if not 0 < self.velocity_scale <= 1 or not 0 < self.acceleration_scale <= 1:
            raise ValueError("velocity_scale and acceleration_scale must be in (0, 1]")
        if self.watchdog_timeout_s <= 0:
            raise ValueError("watchdog_timeout_s must be > 0")
        if not 0 <= self.stop_distance_m < self.slowdown_distance_m:
            raise ValueError("need 0 <= stop_distance_m < slowdown_distance_m")
        if not 0 <= self.grasp_min_scale <= 1:
            raise ValueError("grasp_min_scale must be in [0, 1]")
        if any(lo >= hi for lo, hi in zip(self.workspace_min, self.workspace_max, strict=True)):
            raise ValueError("workspace_min must be below workspace_max on every axis")


@dataclass
class SafetyStatus:
    """Why the last command is what it is (for logs, diagnostics and tests)."""

    estop: bool = False
    watchdog: bool = False
    protective_stop: bool = False  # SSM: a person's hand closer than the stop distance
    workspace_stop: bool = False
    speed_scale: float = 1.0
    min_distance_m: float = float("inf")
    position_limited: bool = False
    velocity_limited: bool = False
    acceleration_limited: bool = False

    @property
    def stopping(self) -> bool:
        return self.estop or self.watchdog or self.protective_stop or self.workspace_stop


@dataclass
class SafeCommand:
    positions: np.ndarray
    velocities: np.ndarray
    accelerations: np.ndarray
    status: SafetyStatus = field(default_factory=SafetyStatus)

    @property
    def holding(self) -> bool:
        return bool(np.all(self.velocities == 0.0))


def check_vector(values: np.ndarray, n: int, what: str) -> np.ndarray:
    """`values` as a float vector of length n; InvalidTargetError on NaN/Inf or a wrong length."""
    arr = np.asarray(values, dtype=float)
    if arr.shape != (n,):
        raise InvalidTargetError(f"{what}: expected {n} values, got shape {arr.shape}")
    if not np.all(np.isfinite(arr)):
        bad = np.flatnonzero(~np.isfinite(arr)).tolist()
        raise InvalidTargetError(f"{what}: NaN or Inf at index {bad}")
    return arr


class RobotPoints:
    """World positions of the points used for separation and the workspace (pinocchio FK)."""

    def __init__(self, robot: RobotDescription, links: tuple[str, ...], palm_frame: str) -> None:
        import pinocchio as pin

        self._pin = pin
        self.robot = robot
        self.model = robot.pinocchio_model()
        self.data = self.model.createData()
        names = [palm_frame, *robot.tip_frames, *links]
        missing = [n for n in names if not self.model.existFrame(n)]
        if missing:
            raise KeyError(f"frames {missing} are not in the robot model")
        self.names = names
        self.frame_ids = [self.model.getFrameId(n) for n in names]
        # pinocchio q index of each joint_names entry: a gather instead of a Python loop per tick.
        self._q_index = np.array(
            [self.model.joints[self.model.getJointId(n)].idx_q for n in robot.joint_names]
        )

    def pin_q(self, q: np.ndarray) -> np.ndarray:
        out = np.zeros(self.model.nq)
        out[self._q_index] = q
        return out

    def points(self, q: np.ndarray) -> np.ndarray:
        """[K, 3] world positions; row 0 is the palm frame."""
        self._pin.framesForwardKinematics(self.model, self.data, self.pin_q(q))
        return np.array([self.data.oMf[i].translation for i in self.frame_ids])

    def palm(self, q: np.ndarray) -> np.ndarray:
        pin = self._pin
        pin.forwardKinematics(self.model, self.data, self.pin_q(q))
        return pin.updateFramePlacement(self.model, self.data, self.frame_ids[0]).translation.copy()


def box_violation(p: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> float:
    """Distance (m) from p to the box; 0 inside."""
    return float(np.linalg.norm(np.maximum(lo - p, 0.0) + np.maximum(p - hi, 0.0)))


def ssm_scale(distance: float, slowdown: float, stop: float) -> float:
    """1 beyond `slowdown`, 0 at or below `stop`, linear in between."""
    if not np.isfinite(distance) or distance >= slowdown:
        return 1.0
    if distance <= stop:
        return 0.0
    return (distance - stop) / (slowdown - stop)


class SafetyFilter:
    def __init__(self, robot: RobotDescription, config: SafetyConfig | None = None) -> None:
        self.robot = robot
        self.config = cfg = config or SafetyConfig()
        self.n = len(robot.joint_names)
        self.n_arm = robot.n_arm
        self.lower = robot.lower + cfg.position_margin_rad
        self.upper = robot.upper - cfg.position_margin_rad
        self.v_max = robot.velocity_limits * cfg.velocity_scale
        self.a_max = robot.acceleration_limits * cfg.acceleration_scale
        self.box_lo = np.asarray(cfg.workspace_min, dtype=float)
        self.box_hi = np.asarray(cfg.workspace_max, dtype=float)
        self.points = RobotPoints(robot, cfg.ssm_links, cfg.workspace_frame or robot.config.hand.palm_link)
        self._scaled = np.ones(self.n, dtype=bool)
        if not cfg.ssm_scales_hand:
            self._scaled[self.n_arm :] = False
        self._estop = False
        self._estop_reason = ""
        self._keypoints = np.zeros((0, 3))
        self._keypoints_stamp = -np.inf
        self.grasp_phase = False
        self.q = self.v = self.a = None  # set by reset()
        self.status = SafetyStatus()

    # ---- state ---------------------------------------------------------------------------------
    def reset(self, q: np.ndarray) -> None:
        """Start from a measured joint position at rest (clipped into the limits)."""
        q = check_vector(q, self.n, "initial joint position")
        self.q = np.clip(q, self.lower, self.upper)
        self.v = np.zeros(self.n)
        self.a = np.zeros(self.n)

    @property
    def ready(self) -> bool:
        return self.q is not None

    def command(self) -> SafeCommand:
        if self.q is None:
            raise SafetyError("safety filter not initialised: call reset(q) with the measured joints")
        return SafeCommand(self.q.copy(), self.v.copy(), self.a.copy(), self.status)

    # ---- e-stop --------------------------------------------------------------------------------
    def estop(self, reason: str = "e-stop") -> None:
        self._estop = True
        self._estop_reason = reason

    def reset_estop(self) -> None:
        self._estop = False
        self._estop_reason = ""

    @property
    def estopped(self) -> bool:
        return self._estop

    @property
    def estop_reason(self) -> str:
        return self._estop_reason

    # ---- separation ----------------------------------------------------------------------------
    def set_keypoints(self, keypoints: np.ndarray, stamp: float) -> None:
        """The giver's hand keypoints ([K, 3] world, NaN rows = not seen) at time `stamp`."""
        kp = np.asarray(keypoints, dtype=float).reshape(-1, 3)
        kp = kp[np.all(np.isfinite(kp), axis=1)]
        self._keypoints = kp
        self._keypoints_stamp = float(stamp)

    def fresh_keypoints(self, now: float) -> np.ndarray:
        """The seen keypoints ([K, 3]) if not older than `keypoint_max_age_s`, else an empty array."""
        if now - self._keypoints_stamp > self.config.keypoint_max_age_s:
            return np.zeros((0, 3))
        return self._keypoints

    def min_distance(self, q: np.ndarray, now: float) -> float:
        """Smallest robot-point to hand-keypoint distance (inf: no fresh keypoints)."""
        kp = self.fresh_keypoints(now)
        if len(kp) == 0:
            return float("inf")
        pts = self.points.points(q)
        d = np.linalg.norm(pts[:, None, :] - kp[None, :, :], axis=-1)
        return float(d.min())

    def speed_scale(self, q: np.ndarray, now: float) -> tuple[float, float]:
        """(scale, distance): the SSM velocity scale for the arm at q; 0 means a protective stop."""
        cfg = self.config
        d = self.min_distance(q, now)
        s = ssm_scale(d, cfg.slowdown_distance_m, cfg.stop_distance_m)
        if self.grasp_phase:
            s = max(s, cfg.grasp_min_scale)
        return s, d

    def velocity_limits(self, scale: float) -> np.ndarray:
        """Per-joint velocity limits under an SSM scale (hand joints unscaled unless configured)."""
        return np.where(self._scaled, self.v_max * scale, self.v_max)

    # ---- one tick ------------------------------------------------------------------------------
    def step(self, q_desired: np.ndarray, now: float, dt: float, target_stamp: float) -> SafeCommand:
        """Advance the command by `dt` toward `q_desired` (the next position the controller wants).

        `target_stamp`: when the newest target arrived (same clock as `now`), for the watchdog.
        Raises InvalidTargetError for NaN/Inf or a wrong length (state unchanged).
        """
        if self.q is None:
            raise SafetyError("safety filter not initialised: call reset(q) with the measured joints")
        q_des = check_vector(q_desired, self.n, "desired joint position")
        if not (np.isfinite(dt) and dt > 0):
            raise SafetyError(f"tick period must be > 0, got {dt}")
        cfg = self.config
        st = SafetyStatus(estop=self._estop)
        st.watchdog = not (now - target_stamp <= cfg.watchdog_timeout_s)
        scale, st.min_distance_m = self.speed_scale(self.q, now)
        st.speed_scale = scale
        st.protective_stop = scale <= 0.0
        if st.estop or st.watchdog or st.protective_stop:
            return self._brake(dt, st)

        clipped = np.clip(q_des, self.lower, self.upper)
        st.position_limited = bool(np.any(clipped != q_des))
        v_lim = self.velocity_limits(scale)
        v_want = (clipped - self.q) / dt
        v = np.clip(v_want, -v_lim, v_lim)
        st.velocity_limited = bool(np.any(v != v_want))
        q_new, v_new = self._feasible(v, dt)
        st.acceleration_limited = bool(np.any(np.abs(v_new - v) > 1e-9))
        if self._leaves_workspace(q_new, v_new):
            st.workspace_stop = True
            return self._brake(dt, st)
        return self._commit(q_new, v_new, dt, st)

    def _feasible(self, v: np.ndarray, dt: float) -> tuple[np.ndarray, np.ndarray]:
        """Closest velocity to `v` within the joint-limit braking bound and the acceleration limit."""
        # Every joint must still be able to stop before its limit at a_max: the largest v with
        # v^2 / 2a + v dt <= room (a tick of margin over the continuous braking distance, so the
        # discrete Euler stop ends inside the limit instead of on a rounding error past it).
        room_up = np.maximum(self.upper - self.q, 0.0)
        room_down = np.maximum(self.q - self.lower, 0.0)
        adt = self.a_max * dt
        v_up = np.sqrt(adt * adt + 2 * self.a_max * room_up) - adt
        v_down = np.sqrt(adt * adt + 2 * self.a_max * room_down) - adt
        v = np.clip(v, -v_down, v_up)
        v_new = np.clip(v, self.v - adt, self.v + adt)
        # Backstop against rounding: never command past a limit.
        q_new = np.clip(self.q + v_new * dt, np.minimum(self.q, self.lower), np.maximum(self.q, self.upper))
        return q_new, (q_new - self.q) / dt

    def _commit(self, q_new: np.ndarray, v_new: np.ndarray, dt: float, st: SafetyStatus) -> SafeCommand:
        self.a = (v_new - self.v) / dt
        self.q = q_new
        self.v = v_new
        self.status = st
        return self.command()

    def _leaves_workspace(self, q_new: np.ndarray, v_new: np.ndarray) -> bool:
        """Would the palm, at the point where a brake from q_new stops, be further outside the box?"""
        q_stop = q_new + 0.5 * v_new * self._stop_time(v_new)
        out_stop = box_violation(self.points.palm(q_stop), self.box_lo, self.box_hi)
        if out_stop <= 0.0:
            return False
        out_now = box_violation(self.points.palm(self.q), self.box_lo, self.box_hi)
        return out_stop > out_now + 1e-9

    def _stop_time(self, v: np.ndarray) -> float:
        return float(np.max(np.abs(v) / self.a_max))

    def _brake(self, dt: float, st: SafetyStatus) -> SafeCommand:
        """Synchronised stop: keep the joint-space direction, the tightest joint at its a_max.

        A joint that would reach its position limit first brakes harder (up to its own a_max).
        """
        t_stop = self._stop_time(self.v)
        v_new = np.zeros(self.n) if t_stop <= dt else self.v * (1.0 - dt / t_stop)
        q_new, v_new = self._feasible(v_new, dt)
        return self._commit(q_new, v_new, dt, st)
