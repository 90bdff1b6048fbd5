"""Giver-hand trajectories: pure functions of time and a seed (no MuJoCo, no ROS).

A giver trajectory has two phases. The *reach* brings the wrist from a start pose outside the
workspace to the offer pose along a straight minimum-jerk path (Flash & Hogan 1985: the profile of
human point-to-point arm movements), with the orientation slerped on the same profile. The
*offer* phase then adds a motion about the offer pose:

- `hold` (Easy): physiological tremor, a slow sway plus an 8–12 Hz tremor, bounded by `tremor_mm`;
- `drift` (Hard): constant speed along a line, turning back smoothly at the edge of `box`;
- `arc` (Hard): the same back-and-forth at constant speed along a circular arc of `radius`;
- `random_walk` (Hard): a smooth random path inside `box`, followed at a band-limited random
  speed in `speed_range` (5–25 cm/s for the shipped Hard set).

Every moving type also turns the hand by a few degrees (`rotation_deg`, smooth sums of sines).
Withdrawal after the release is another minimum-jerk segment (`min_jerk_pose`), built at run time
from the pose at the moment of release.

Determinism: all randomness comes from `numpy.random.default_rng(seed)` at construction; `pose(t)`
is a pure function of `t` afterwards (the offer-phase offsets are tabulated on a 5 ms grid and
interpolated with a C2 cubic spline).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np
from scipy.interpolate import CubicSpline
from scipy.spatial.transform import Rotation

MotionType = Literal["hold", "drift", "arc", "random_walk"]
MOTION_TYPES: tuple[str, ...] = ("hold", "drift", "arc", "random_walk")
HARD_MOTIONS: tuple[str, ...] = ("drift", "arc", "random_walk")

_GRID_DT = 0.005  # s, tabulation step of the offer-phase motion
_MAX_SPEED = 0.5  # m/s, sanity bound for any configured offer-phase speed


@dataclass(frozen=True)
class Pose:
    """A rigid pose: position (m) and unit quaternion (x, y, z, w), like ROS messages."""

    position: np.ndarray
    quat: np.ndarray

    def __post_init__(self) -> None:
        q = np.asarray(self.quat, dtype=float)
        object.__setattr__(self, "position", np.asarray(self.position, dtype=float).reshape(3))
        object.__setattr__(self, "quat", q / np.sqrt(q @ q))

    @property
    def rotation(self) -> Rotation:
        return Rotation.from_quat(self.quat)

    def matrix(self) -> np.ndarray:
        """4x4 homogeneous transform (world <- wrist)."""
        T = np.eye(4)
        T[:3, :3] = self.rotation.as_matrix()
        T[:3, 3] = self.position
        return T

    @classmethod
    def from_matrix(cls, T: np.ndarray) -> Pose:
        return cls(np.asarray(T)[:3, 3], Rotation.from_matrix(np.asarray(T)[:3, :3]).as_quat())

    @classmethod
    def from_xyz_rpy_deg(cls, xyz, rpy_deg=(0.0, 0.0, 0.0)) -> Pose:
        """Fixed-axis roll, pitch, yaw in degrees (URDF order) -> Pose."""
        return cls(np.asarray(xyz, dtype=float), Rotation.from_euler("xyz", rpy_deg, degrees=True).as_quat())


def quat_multiply(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Hamilton product of (x, y, z, w) quaternions (numpy only: the giver calls it every step)."""
    ax, ay, az, aw = a
    bx, by, bz, bw = b
    return np.array(
        [
            aw * bx + ax * bw + ay * bz - az * by,
            aw * by - ax * bz + ay * bw + az * bx,
            aw * bz + ax * by - ay * bx + az * bw,
            aw * bw - ax * bx - ay * by - az * bz,
        ]
    )


def quat_from_rotvec(rv: np.ndarray) -> np.ndarray:
    """(x, y, z, w) quaternion of a rotation vector."""
    angle = float(np.linalg.norm(rv))
    if angle < 1e-12:
        return np.array([0.5 * rv[0], 0.5 * rv[1], 0.5 * rv[2], 1.0]) / np.sqrt(1.0 + 0.25 * angle**2)
    return np.concatenate([np.sin(0.5 * angle) / angle * np.asarray(rv), [np.cos(0.5 * angle)]])


def rotvec_between(qa: np.ndarray, qb: np.ndarray) -> np.ndarray:
    """Rotation vector (world axes) of qb * qa^-1."""
    qa_inv = np.array([-qa[0], -qa[1], -qa[2], qa[3]])
    d = quat_multiply(qb, qa_inv)
    if d[3] < 0:
        d = -d
    n = float(np.linalg.norm(d[:3]))
    if n < 1e-12:
        return 2.0 * d[:3]
    return 2.0 * np.arctan2(n, d[3]) / n * d[:3]


def slerp(q0: np.ndarray, q1: np.ndarray, s: float) -> np.ndarray:
    """Spherical linear interpolation of (x, y, z, w) quaternions along the shorter arc."""
    dot = float(np.dot(q0, q1))
    if dot < 0.0:
        q1, dot = -q1, -dot
    if dot > 0.9995:
        q = q0 + s * (q1 - q0)
        return q / np.linalg.norm(q)
    theta = np.arccos(dot)
    return (np.sin((1.0 - s) * theta) * q0 + np.sin(s * theta) * q1) / np.sin(theta)


@dataclass(frozen=True)
class MotionSpec:
    """How the giver moves: reach timing plus the offer-phase motion type and its parameters.

    Units: metres, seconds, m/s, degrees (rotations), millimetres (tremor). `box` is the half-size
    (x, y, z, world axes) of the region around the offer pose that Hard motions stay inside.
    `rotation_deg` defaults by type: 1° for `hold`, 5° for moving types.
    """

    type: MotionType = "hold"
    reach_s: float = 1.2
    start_delay_s: float = 0.0
    speed: float = 0.10
    speed_range: tuple[float, float] = (0.05, 0.25)
    direction: tuple[float, float, float] | None = None
    radius: float = 0.12
    box: tuple[float, float, float] = (0.10, 0.12, 0.06)
    max_accel: float = 0.8
    rotation_deg: float | None = None
    tremor_mm: float = 2.5

    def __post_init__(self) -> None:
        if self.type not in MOTION_TYPES:
            raise ValueError(f"type: unknown motion type {self.type!r} (known: {', '.join(MOTION_TYPES)})")
        if self.reach_s <= 0:
            raise ValueError(f"reach_s: must be > 0, got {self.reach_s}")
        if self.start_delay_s < 0:
            raise ValueError(f"start_delay_s: must be >= 0, got {self.start_delay_s}")
        if not 0 < self.speed <= _MAX_SPEED:
            raise ValueError(f"speed: must be in (0, {_MAX_SPEED}] m/s, got {self.speed}")
        lo, hi = self.speed_range
        if not 0 < lo <= hi <= _MAX_SPEED:
            raise ValueError(f"speed_range: need 0 < min <= max <= {_MAX_SPEED} m/s, got {self.speed_range}")
        if min(self.box) <= 0:
            raise ValueError(f"box: half-sizes must be > 0, got {self.box}")
        if self.radius <= 0:
            raise ValueError(f"radius: must be > 0, got {self.radius}")
        if self.max_accel <= 0:
            raise ValueError(f"max_accel: must be > 0, got {self.max_accel}")
        if self.direction is not None and np.linalg.norm(self.direction) < 1e-9:
            raise ValueError("direction: must be a non-zero vector")
        if self.tremor_mm < 0 or self.tremor_mm > 10:
            raise ValueError(f"tremor_mm: must be in [0, 10], got {self.tremor_mm}")
        if self.rotation_deg is None:
            object.__setattr__(self, "rotation_deg", 1.0 if self.type == "hold" else 5.0)
        elif not 0 <= self.rotation_deg <= 30:
            raise ValueError(f"rotation_deg: must be in [0, 30], got {self.rotation_deg}")

    @property
    def moving(self) -> bool:
        """True for the Hard motions (the hand keeps moving while offering)."""
        return self.type != "hold"


# --- minimum jerk -----------------------------------------------------------------------------


def min_jerk(tau: float | np.ndarray) -> np.ndarray:
    """Minimum-jerk progress s(tau) = 10 tau^3 - 15 tau^4 + 6 tau^5, tau clipped to [0, 1]."""
    t = np.clip(tau, 0.0, 1.0)
    return t**3 * (10.0 - 15.0 * t + 6.0 * t**2)


def min_jerk_derivatives(tau: float | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(ds/dtau, d2s/dtau2) of the minimum-jerk profile; zero outside [0, 1]."""
    t = np.asarray(tau, dtype=float)
    inside = (t >= 0.0) & (t <= 1.0)
    ds = np.where(inside, 30.0 * t**2 * (1.0 - t) ** 2, 0.0)
    dds = np.where(inside, 60.0 * t * (1.0 - t) * (1.0 - 2.0 * t), 0.0)
    return ds, dds


def interpolate_pose(a: Pose, b: Pose, s: float) -> Pose:
    """Straight-line position and slerped orientation at fraction s in [0, 1]."""
    s = float(np.clip(s, 0.0, 1.0))
    return Pose(a.position + s * (b.position - a.position), slerp(a.quat, b.quat, s))


def min_jerk_pose(start: Pose, end: Pose, t: float, duration: float) -> Pose:
    """Pose at time t of a minimum-jerk move from start to end over duration (clamped at both ends)."""
    if duration <= 0:
        return end if t >= 0 else start
    return interpolate_pose(start, end, float(min_jerk(t / duration)))


def min_jerk_peak_speed(distance: float, duration: float) -> float:
    """Peak speed of a minimum-jerk move: 1.875 * distance / duration."""
    return 1.875 * distance / duration


# --- offer-phase motions ----------------------------------------------------------------------


def _random_direction(rng: np.random.Generator, vertical_weight: float = 0.3) -> np.ndarray:
    """A unit vector, mostly horizontal (people sway sideways and back/forth more than up/down)."""
    v = rng.normal(size=3)
    v[2] *= vertical_weight
    return v / np.linalg.norm(v)


def _sum_of_sines(
    rng: np.random.Generator, t: np.ndarray, freq_range: tuple[float, float], n: int, dims: int
) -> np.ndarray:
    """[len(t), dims] band-limited signal, each column bounded by 1 in absolute value."""
    freqs = rng.uniform(*freq_range, size=(n, dims))
    phases = rng.uniform(0.0, 2.0 * np.pi, size=(n, dims))
    weights = rng.uniform(0.5, 1.0, size=(n, dims))
    weights /= weights.sum(axis=0, keepdims=True)
    out = np.zeros((len(t), dims))
    for k in range(n):
        out += weights[k] * np.sin(2.0 * np.pi * freqs[k] * t[:, None] + phases[k])
    return out


def _smooth_ramp(t: np.ndarray, duration: float) -> np.ndarray:
    """0 -> 1 minimum-jerk ramp over duration: blends offer-phase motions in from rest."""
    return min_jerk(t / duration) if duration > 0 else np.ones_like(t)


def _back_and_forth(
    t: np.ndarray, speed: float, limit_neg: float, limit_pos: float, max_accel: float
) -> np.ndarray:
    """Path coordinate s(t) moving at `speed`, reversing with bounded acceleration within limits.

    Starts at rest at s = 0 heading to +; the braking distance v^2 / (2 a) is accounted for, so s
    stays inside [-limit_neg, limit_pos].
    """
    s = np.zeros_like(t)
    v, pos, direction = 0.0, 0.0, 1.0
    brake = speed**2 / (2.0 * max_accel)
    for i in range(1, len(t)):
        dt = t[i] - t[i - 1]
        edge = limit_pos if direction > 0 else limit_neg
        if direction * pos >= edge - brake - 1e-9 and direction * v >= 0:
            direction = -direction
        target = direction * speed
        dv = np.clip(target - v, -max_accel * dt, max_accel * dt)
        v_new = v + dv
        pos += 0.5 * (v + v_new) * dt
        v = v_new
        s[i] = pos
    return s


def _line_limits(direction: np.ndarray, box: np.ndarray, margin: float = 0.9) -> tuple[float, float]:
    """How far one may go along ±direction from the box centre and stay inside (times margin)."""
    with np.errstate(divide="ignore"):
        reach = np.where(np.abs(direction) > 1e-9, box / np.abs(direction), np.inf)
    lim = float(np.min(reach)) * margin
    return lim, lim


def _arc_points(s: np.ndarray, center: np.ndarray, u: np.ndarray, v: np.ndarray, radius: float) -> np.ndarray:
    """Points on a circle through the origin: p(0) = 0, arc length s, tangent v at s = 0."""
    ang = s / radius
    return center + radius * (-np.cos(ang)[:, None] * u + np.sin(ang)[:, None] * v)


def _arc_limits(center, u, v, radius, box, margin: float = 0.9) -> tuple[float, float]:
    """Arc length one may travel each way (at most half a circle) before leaving the box."""
    grid = np.linspace(0.0, np.pi * radius, 400)
    limits = []
    for sign in (-1.0, 1.0):
        pts = _arc_points(sign * grid, center, u, v, radius)
        inside = np.all(np.abs(pts) <= box * margin, axis=1)
        out = np.nonzero(~inside)[0]
        limits.append(float(grid[out[0] - 1]) if len(out) else float(grid[-1]))
    return limits[0], limits[1]


def _steered_path(
    rng: np.random.Generator, box: np.ndarray, length: float, min_radius: float, step: float = 0.002
) -> tuple[np.ndarray, np.ndarray]:
    """A smooth random path from 0 that stays inside ±box, as (arc_length[N], points[N, 3]).

    A unit heading turns (at most 1/min_radius rad per metre, so the path's curvature is bounded)
    toward a band-limited random direction (wavelengths 0.15–0.6 m, mostly horizontal) plus an
    inward push that grows near the box walls; a final per-axis scale (<= 1) guarantees the bound.
    """
    n = int(np.ceil(length / step)) + 2
    s = np.arange(n) * step
    target = _sum_of_sines(rng, s, (1.0 / 0.6, 1.0 / 0.15), 3, 3)
    target[:, 2] *= 0.4
    heading = target[0] / max(np.linalg.norm(target[0]), 1e-9)
    max_turn = step / min_radius
    pts = np.zeros((n, 3))
    x = np.zeros(3)
    for i in range(1, n):
        depth = np.clip((np.abs(x) / box - 0.4) / 0.6, 0.0, 1.0)
        desired = target[i] - 4.0 * np.sign(x) * depth**2
        desired /= max(np.linalg.norm(desired), 1e-9)
        cos = float(np.clip(heading @ desired, -1.0, 1.0))
        angle = np.arccos(cos)
        if angle > 1e-9:
            # Rotate heading toward desired by min(angle, max_turn) within their common plane.
            ortho = desired - cos * heading
            norm = np.linalg.norm(ortho)
            if norm < 1e-9:  # exactly opposite: turn within any plane containing heading
                ortho = np.cross(heading, [0.0, 0.0, 1.0] if abs(heading[2]) < 0.9 else [1.0, 0.0, 0.0])
                norm = np.linalg.norm(ortho)
            turn = min(angle, max_turn)
            heading = np.cos(turn) * heading + np.sin(turn) * ortho / norm
        x = x + heading * step
        pts[i] = x
    peak = np.max(np.abs(pts), axis=0)
    pts *= np.minimum(1.0, box / np.maximum(peak, 1e-12))
    arclen = np.concatenate([[0.0], np.cumsum(np.linalg.norm(np.diff(pts, axis=0), axis=1))])
    return arclen, pts


@dataclass
class GiverTrajectory:
    """Wrist pose of the giver as a function of episode time t (s): reach, then offer motion.

    `t < start_delay_s`: at the start pose; then a minimum-jerk reach of `reach_s` seconds to the
    offer pose; from `reach_end_s` on the offer-phase motion, tabulated until `horizon_s` (held at
    its last value after that).
    """

    start: Pose
    offer: Pose
    motion: MotionSpec
    seed: int = 0
    horizon_s: float = 30.0
    _t: np.ndarray = field(init=False, repr=False)
    _spline: CubicSpline = field(init=False, repr=False)

    def __post_init__(self) -> None:
        rng = np.random.default_rng(self.seed)
        m = self.motion
        duration = max(self.horizon_s - self.reach_end_s, 1.0)
        t = np.arange(0.0, duration + _GRID_DT, _GRID_DT)
        box = np.asarray(m.box, dtype=float)
        ramp = _smooth_ramp(t, 0.5)
        if m.type == "hold":
            sway = _sum_of_sines(rng, t, (0.1, 0.5), 3, 3)
            tremor = _sum_of_sines(rng, t, (8.0, 12.0), 2, 3)
            bound = m.tremor_mm * 1e-3 / np.sqrt(3.0)
            offsets = ramp[:, None] * bound * (0.8 * sway + 0.2 * tremor)
        elif m.type == "drift":
            d = np.asarray(m.direction, dtype=float) if m.direction is not None else _random_direction(rng)
            d = d / np.linalg.norm(d)
            lo, hi = _line_limits(d, box)
            s = _back_and_forth(t, m.speed, lo, hi, m.max_accel)
            offsets = s[:, None] * d
        elif m.type == "arc":
            u = _random_direction(rng)
            v = np.cross(u, _random_direction(rng, vertical_weight=1.0))
            v /= np.linalg.norm(v)
            radius = m.radius
            center = radius * u
            lo, hi = _arc_limits(center, u, v, radius, box)
            s = _back_and_forth(t, m.speed, lo, hi, m.max_accel)
            offsets = _arc_points(s, center, u, v, radius)
        else:  # random_walk
            vmin, vmax = m.speed_range
            length = vmax * duration * 1.05 + 0.1
            min_radius = max(vmax**2 / m.max_accel, 0.02)
            arclen, pts = _steered_path(rng, box * 0.95, length, min_radius)
            path = CubicSpline(arclen, pts, axis=0)
            level = 0.5 + 0.5 * _sum_of_sines(rng, t, (0.05, 0.25), 2, 1)[:, 0]
            speed = (vmin + (vmax - vmin) * level) * ramp
            s = np.concatenate([[0.0], np.cumsum(0.5 * (speed[1:] + speed[:-1]) * _GRID_DT)])
            offsets = path(np.minimum(s, arclen[-1]))
        rot_bound = np.deg2rad(m.rotation_deg) / np.sqrt(3.0)
        freq = (0.2, 1.0) if m.type == "hold" else (0.1, 0.4)
        rotvec = ramp[:, None] * rot_bound * _sum_of_sines(rng, t, freq, 2, 3)
        self._t = t
        self._spline = CubicSpline(t, np.concatenate([offsets, rotvec], axis=1), axis=0)

    @property
    def reach_end_s(self) -> float:
        """Episode time at which the wrist arrives at the offer pose."""
        return self.motion.start_delay_s + self.motion.reach_s

    def offer_offset(self, t: float) -> tuple[np.ndarray, np.ndarray]:
        """(position offset in world axes, rotation vector in wrist axes) of the offer phase."""
        tau = float(np.clip(t - self.reach_end_s, 0.0, self._t[-1]))
        v = self._spline(tau)
        return v[:3], v[3:]

    def pose(self, t: float) -> Pose:
        """Wrist pose (world) at episode time t."""
        if t < self.reach_end_s:
            return min_jerk_pose(self.start, self.offer, t - self.motion.start_delay_s, self.motion.reach_s)
        dp, rv = self.offer_offset(t)
        return Pose(self.offer.position + dp, quat_multiply(self.offer.quat, quat_from_rotvec(rv)))

    def velocity(self, t: float, dt: float = 1e-3) -> tuple[np.ndarray, np.ndarray]:
        """(linear m/s, angular rad/s in world axes) by central differences."""
        a, b = self.pose(t - dt), self.pose(t + dt)
        return (b.position - a.position) / (2.0 * dt), rotvec_between(a.quat, b.quat) / (2.0 * dt)

    def sample(self, times: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Positions [N, 3] and quaternions xyzw [N, 4] at the given times."""
        poses = [self.pose(float(t)) for t in times]
        return np.array([p.position for p in poses]), np.array([p.quat for p in poses])


def withdraw_target(release_pose: Pose, start: Pose, distance: float) -> Pose:
    """Where the giver retreats to: `distance` back toward its start, hand slightly lowered."""
    back = start.position - release_pose.position
    back[2] = 0.0
    norm = np.linalg.norm(back)
    direction = back / norm if norm > 1e-6 else np.array([1.0, 0.0, 0.0])
    target = release_pose.position + distance * direction + np.array([0.0, 0.0, -0.05])
    return Pose(target, release_pose.quat)
