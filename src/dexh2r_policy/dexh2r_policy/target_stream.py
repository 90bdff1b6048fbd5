"""Policy targets at the policy rate -> a faster target stream for the controller (ROS-free).

The policy steps at its training rate (10 Hz for MotionNet) but the controller's watchdog expects
a target every few tens of milliseconds (0.1 s: a 30 Hz stream). `TargetStream` fills the gap.
By default (`interpolate=False`) it hands the newest policy target over as soon as it is pushed
and repeats it until the next one: the controller's own interpolation smooths the steps, and a
step later than the policy period (a slower compute step) does not starve its watchdog. With
`interpolate=True` each policy target is stamped for when the hand should be there
(`observation stamp + frame_dt_s`), and `sample(now)` returns the pose on the way from the last
sample to the newest target at time `now` (translation lerp + rotation slerp for the wrist,
linear for the fingers): smoother, but the target is reached only at its stamp, up to a policy
period later (in the closed loop: hard-set success 0.18 -> 0.10 with true poses, 50 episodes,
docs/closed_loop.md). Neither extrapolates: once `now` passes the target's stamp it holds the
target, stamped `now` (the pose for now: the controller's watchdog measures the stream's
freshness, and a held target ends `hold_s` after its push). When the policy goes silent
(`silence()`, or no new target for `hold_s`) it returns None, so the caller stops publishing
and the controller's watchdog holds the robot.

    stream = TargetStream(hold_s=0.2)
    stream.push(now, target.stamp, T_world_palm, finger_q)   # each policy step with a target
    publish(stream.sample(now))                               # at once, then on the publish timer
    stream.silence()                                          # each policy step without one
    sample = stream.sample(now)                               # each publish tick; None: publish nothing
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from dexh2r_policy.models.geometry import interpolate_pose


@dataclass(frozen=True)
class StreamSample:
    stamp: float  # s: the time this pose is for
    T: np.ndarray  # 4x4 wrist (palm) pose
    q: np.ndarray  # finger joints


def interpolate(a: StreamSample, b: StreamSample, t: float) -> StreamSample:
    """The pose at time t between a (at a.stamp) and b (at b.stamp), clamped to [a, b]."""
    span = b.stamp - a.stamp
    s = 1.0 if span <= 0.0 else float(np.clip((t - a.stamp) / span, 0.0, 1.0))
    if s >= 1.0:
        return b
    return StreamSample(a.stamp + s * span, interpolate_pose(a.T, b.T, s), (1.0 - s) * a.q + s * b.q)


class TargetStream:
    """The newest policy target (or the way to it, `interpolate`) at any time; silent without one."""

    def __init__(self, hold_s: float, interpolate: bool = False) -> None:
        if not hold_s > 0.0:
            raise ValueError(f"hold_s must be > 0, got {hold_s}")
        self.hold_s = float(hold_s)
        self.interpolate = bool(interpolate)
        self._start: StreamSample | None = None  # where the current segment starts
        self._goal: StreamSample | None = None  # the newest policy target
        self._pushed_at = 0.0  # caller's clock when the goal arrived
        self._last: StreamSample | None = None  # the last sample handed out

    @property
    def active(self) -> bool:
        return self._goal is not None

    def push(self, now: float, stamp: float, T: np.ndarray, q: np.ndarray) -> None:
        """A new policy target for time `stamp` (the caller's clock), received at `now`."""
        # A stamp far ahead (clock offset between perception and this node) would freeze the
        # stream near its start: no target is due later than one hold period from now.
        goal = StreamSample(min(float(stamp), now + self.hold_s), np.array(T, float), np.array(q, float))
        # Interpolating: continue from what was last published, so the stream has no jump; after a
        # silence there is nothing to continue from (the robot braked somewhere else): start at
        # the goal. Not interpolating: the goal at once.
        self._start = self._last if self._last is not None and self.interpolate else goal
        self._goal = goal
        self._pushed_at = now

    def silence(self) -> None:
        """The policy produced no target: stop streaming until the next push."""
        self._start = self._goal = self._last = None

    def sample(self, now: float) -> StreamSample | None:
        """The pose to publish at `now`, or None (nothing to publish: let the watchdog hold)."""
        if self._goal is None or self._start is None:
            return None
        if now - self._pushed_at > self.hold_s:  # the policy stalled without saying so
            self.silence()
            return None
        self._last = interpolate(self._start, self._goal, now)
        if now > self._last.stamp:
            # Holding the newest target: it is the pose for now, and is stamped so. The hold ends
            # `hold_s` after the push (above), so a stalled policy still stops the stream.
            self._last = StreamSample(now, self._last.T, self._last.q)
        return self._last
