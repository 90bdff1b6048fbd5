"""Joint trajectories as ros2_control's joint_trajectory_controller (JTC) executes them, ROS-free.

A trajectory is a list of points with `time_from_start`, positions and optional velocities and
accelerations. Execution follows JTC: the trajectory starts at its stamp (or "now" when the stamp
is zero), the segment before the first point starts from the current state, segments are
interpolated with a quintic (positions + velocities + accelerations), cubic (positions +
velocities) or linear-in-time smooth spline (positions only: JTC's default is cubic with the
velocities it estimates as zero at the ends; we use the same cubic with zero boundary velocities
at the first and last points and finite-difference velocities in between), and a new trajectory
replaces the active one from its start time. After the last point the last position is held.

Invalid input (NaN/Inf, names not matching the controlled joints, times not increasing, wrong
vector lengths) raises `TrajectoryError` with the reason; callers keep the previous command, so
the robot holds still.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


class TrajectoryError(ValueError):
    pass


@dataclass
class TrajectoryPoint:
    time_from_start: float
    positions: np.ndarray
    velocities: np.ndarray | None = None
    accelerations: np.ndarray | None = None


@dataclass
class JointTrajectory:
    joint_names: list[str]
    points: list[TrajectoryPoint] = field(default_factory=list)
    start_time: float = 0.0  # seconds on the executor's clock; 0 = start on receipt


def validate(traj: JointTrajectory, controlled: list[str]) -> None:
    """Raise TrajectoryError unless `traj` is executable on the `controlled` joints."""
    names = list(traj.joint_names)
    if not names:
        raise TrajectoryError("trajectory has no joint_names")
    if len(set(names)) != len(names):
        raise TrajectoryError(f"duplicate joint names in trajectory: {names}")
    unknown = [n for n in names if n not in controlled]
    if unknown:
        raise TrajectoryError(
            f"joint names {unknown} are not controlled here (expected a subset of {controlled})"
        )
    if not traj.points:
        raise TrajectoryError("trajectory has no points")
    previous = -np.inf
    for i, p in enumerate(traj.points):
        if not np.isfinite(p.time_from_start) or p.time_from_start < 0:
            raise TrajectoryError(f"point {i}: time_from_start {p.time_from_start} is not a finite time >= 0")
        if p.time_from_start <= previous:
            raise TrajectoryError(
                f"point {i}: time_from_start must increase ({p.time_from_start} <= {previous})"
            )
        previous = p.time_from_start
        for label, values in (
            ("positions", p.positions),
            ("velocities", p.velocities),
            ("accelerations", p.accelerations),
        ):
            if values is None or (label != "positions" and len(values) == 0):
                continue
            values = np.asarray(values, dtype=float)
            if values.shape != (len(names),):
                raise TrajectoryError(f"point {i}: {len(values)} {label} for {len(names)} joints")
            if not np.all(np.isfinite(values)):
                raise TrajectoryError(f"point {i}: {label} contain NaN or Inf")


def _quintic(q0, v0, a0, q1, v1, a1, T):
    """Coefficients of the quintic through (q, v, a) at 0 and T (per joint)."""
    T2, T3, T4, T5 = T * T, T**3, T**4, T**5
    c0, c1, c2 = q0, v0, a0 / 2.0
    h = q1 - q0 - v0 * T - a0 * T2 / 2.0
    dv = v1 - v0 - a0 * T
    da = a1 - a0
    c3 = (20 * h - 8 * dv * T + da * T2) / (2 * T3)
    c4 = (-30 * h + 14 * dv * T - 2 * da * T2) / (2 * T4)
    c5 = (12 * h - 6 * dv * T + da * T2) / (2 * T5)
    return np.stack([c0, c1, c2, c3, c4, c5])


class TrajectoryFollower:
    """Samples the commanded joint positions at any time, JTC style, for a fixed joint list."""

    def __init__(self, joint_names: list[str], initial: np.ndarray) -> None:
        self.joint_names = list(joint_names)
        initial = np.asarray(initial, dtype=float)
        self._hold = initial.copy()
        self._segments: list[tuple[float, float, np.ndarray, np.ndarray]] = []  # t0, t1, coeffs, index
        self._end_state = initial.copy()

    def hold(self, q: np.ndarray) -> None:
        """Drop any active trajectory and hold `q` (e.g. after an e-stop or a reset)."""
        self._segments = []
        self._hold = np.asarray(q, dtype=float).copy()
        self._end_state = self._hold.copy()

    @property
    def active(self) -> bool:
        return bool(self._segments)

    @property
    def end_time(self) -> float:
        return self._segments[-1][1] if self._segments else -np.inf

    def set_trajectory(self, traj: JointTrajectory, now: float) -> None:
        """Replace the active command from the trajectory's start (validated first)."""
        validate(traj, self.joint_names)
        start = traj.start_time if traj.start_time > 0 else now
        idx = np.array([self.joint_names.index(n) for n in traj.joint_names])
        q_now, v_now, a_now = self.sample(max(now, start))
        full_q = [q_now]
        full_v = [v_now]
        full_a = [a_now]
        times = [max(now, start)]
        n = len(traj.points)
        for i, p in enumerate(traj.points):
            t = start + p.time_from_start
            q = full_q[-1].copy()
            q[idx] = p.positions
            v = np.zeros_like(q)
            if p.velocities is not None and len(p.velocities):
                v[idx] = p.velocities
            elif 0 < i < n - 1:
                # Positions only: JTC-like smooth spline with finite-difference interior velocities.
                nxt, prv = traj.points[i + 1], traj.points[i - 1]
                v[idx] = (np.asarray(nxt.positions) - np.asarray(prv.positions)) / (
                    nxt.time_from_start - prv.time_from_start
                )
            a = np.zeros_like(q)
            if p.accelerations is not None and len(p.accelerations):
                a[idx] = p.accelerations
            if t <= times[-1]:
                # A point in the past (late message): jump the reference there, as JTC does.
                full_q[-1], full_v[-1], full_a[-1] = q, v, a
                continue
            full_q.append(q)
            full_v.append(v)
            full_a.append(a)
            times.append(t)
        segments = []
        for k in range(len(times) - 1):
            T = times[k + 1] - times[k]
            coeffs = _quintic(full_q[k], full_v[k], full_a[k], full_q[k + 1], full_v[k + 1], full_a[k + 1], T)
            segments.append((times[k], times[k + 1], coeffs))
        self._segments = segments
        self._hold = full_q[-1].copy()
        self._end_state = full_q[-1].copy()

    def sample(self, t: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Commanded (position, velocity, acceleration) at time t."""
        zeros = np.zeros_like(self._end_state)
        if not self._segments:
            return self._hold.copy(), zeros, zeros.copy()
        if t >= self._segments[-1][1]:
            return self._end_state.copy(), zeros, zeros.copy()
        t = max(t, self._segments[0][0])
        seg = next(s for s in self._segments if s[0] <= t < s[1])
        return self._evaluate(seg, t)

    def position(self, t: float) -> np.ndarray:
        return self.sample(t)[0]

    @staticmethod
    def _evaluate(seg, t: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        t0, _t1, c = seg
        s = t - t0
        q = c[0] + c[1] * s + c[2] * s**2 + c[3] * s**3 + c[4] * s**4 + c[5] * s**5
        v = c[1] + 2 * c[2] * s + 3 * c[3] * s**2 + 4 * c[4] * s**3 + 5 * c[5] * s**4
        a = 2 * c[2] + 6 * c[3] * s + 12 * c[4] * s**2 + 20 * c[5] * s**3
        return q, v, a
