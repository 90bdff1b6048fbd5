"""TargetStream: 10 Hz policy targets -> a 30 Hz stream (held or interpolated); no extrapolation;
silent on silence."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from dexh2r_policy.target_stream import StreamSample, TargetStream, interpolate


def pose(x: float, yaw_deg: float) -> np.ndarray:
    T = np.eye(4)
    T[:3, :3] = Rotation.from_euler("z", yaw_deg, degrees=True).as_matrix()
    T[:3, 3] = [x, 0.2, 0.3]
    return T


def yaw_deg(T: np.ndarray) -> float:
    return float(Rotation.from_matrix(T[:3, :3]).as_euler("xyz", degrees=True)[2])


def test_interpolates_along_the_stamps_between_the_last_sample_and_the_newest_target() -> None:
    stream = TargetStream(hold_s=0.2, interpolate=True)
    stream.push(now=10.0, stamp=10.0, T=pose(0.0, 0.0), q=np.zeros(3))
    first = stream.sample(10.0)
    assert first is not None and first.stamp == 10.0 and first.T[0, 3] == 0.0
    stream.push(now=10.05, stamp=10.1, T=pose(0.1, 30.0), q=np.full(3, 1.0))
    for now, frac in ((10.05, 0.5), (10.075, 0.75), (10.1, 1.0)):
        s = stream.sample(now)
        assert s is not None
        assert s.stamp == pytest.approx(now)  # stamped with the time its pose is for
        assert s.T[0, 3] == pytest.approx(0.1 * frac)  # lerp
        assert yaw_deg(s.T) == pytest.approx(30.0 * frac)  # slerp
        assert s.q == pytest.approx(np.full(3, frac))  # linear
        assert np.allclose(s.T[:3, :3].T @ s.T[:3, :3], np.eye(3))


def test_never_extrapolates_past_the_newest_target() -> None:
    stream = TargetStream(hold_s=0.2, interpolate=True)
    stream.push(now=0.0, stamp=0.0, T=pose(0.0, 0.0), q=np.zeros(2))
    stream.sample(0.0)
    stream.push(now=0.0, stamp=0.1, T=pose(0.1, 20.0), q=np.ones(2))
    for now in (0.1, 0.13, 0.19):  # past the target's stamp, the policy not yet stepped again
        s = stream.sample(now)
        # held, not extrapolated: the newest target's pose, stamped as the pose for now
        assert s is not None and s.stamp == pytest.approx(now)
        assert np.allclose(s.T, pose(0.1, 20.0)) and s.q == pytest.approx(np.ones(2))


def test_a_new_target_continues_from_the_last_sample_without_a_jump() -> None:
    stream = TargetStream(hold_s=0.2, interpolate=True)
    stream.push(now=0.0, stamp=0.0, T=pose(0.0, 0.0), q=np.zeros(1))
    stream.sample(0.0)
    stream.push(now=0.0, stamp=0.1, T=pose(0.1, 0.0), q=np.ones(1))
    mid = stream.sample(0.05)
    assert mid is not None and mid.T[0, 3] == pytest.approx(0.05)
    # The policy changes its mind before reaching the target: from x=0.05 at 0.05 to x=-0.05 at 0.15.
    stream.push(now=0.05, stamp=0.15, T=pose(-0.05, 0.0), q=np.zeros(1))
    s = stream.sample(0.05)
    assert s is not None and s.T[0, 3] == pytest.approx(0.05)
    s = stream.sample(0.1)
    assert s is not None and s.T[0, 3] == pytest.approx(0.0) and s.q == pytest.approx([0.25])


def test_a_target_already_due_is_published_as_is() -> None:
    stream = TargetStream(hold_s=0.2, interpolate=True)
    stream.push(now=1.0, stamp=1.0, T=pose(0.0, 0.0), q=np.zeros(1))
    stream.sample(1.0)
    stream.push(now=1.2, stamp=1.15, T=pose(0.2, 10.0), q=np.ones(1))  # latency > frame_dt
    s = stream.sample(1.2)
    assert s is not None and s.stamp == pytest.approx(1.2) and np.allclose(s.T, pose(0.2, 10.0))


def test_stops_when_the_policy_goes_silent_and_restarts_at_the_next_target() -> None:
    stream = TargetStream(hold_s=0.2, interpolate=True)
    assert stream.sample(0.0) is None  # nothing before the first target
    stream.push(now=0.0, stamp=0.1, T=pose(0.1, 0.0), q=np.zeros(1))
    assert stream.sample(0.03) is not None
    stream.silence()  # stale or bad observation: no target this step
    assert not stream.active
    assert all(stream.sample(t) is None for t in (0.05, 0.1, 0.5, 5.0))
    # Back: the first target is published as is, not interpolated from the pre-silence pose.
    stream.push(now=6.0, stamp=6.1, T=pose(0.3, 0.0), q=np.ones(1))
    s = stream.sample(6.0)
    assert s is not None and s.T[0, 3] == pytest.approx(0.3)


def test_stops_when_no_new_target_arrives_within_hold_s() -> None:
    stream = TargetStream(hold_s=0.2)
    stream.push(now=0.0, stamp=0.1, T=pose(0.1, 0.0), q=np.zeros(1))
    assert stream.sample(0.2) is not None
    assert stream.sample(0.21) is None  # the policy stalled: do not keep streaming an old target
    assert stream.sample(0.22) is None


def test_a_stamp_far_ahead_is_clamped_to_one_hold_period() -> None:
    stream = TargetStream(hold_s=0.2, interpolate=True)
    stream.push(now=0.0, stamp=0.0, T=pose(0.0, 0.0), q=np.zeros(1))
    stream.sample(0.0)
    stream.push(now=0.0, stamp=100.0, T=pose(0.2, 0.0), q=np.zeros(1))  # clock offset
    s = stream.sample(0.1)
    assert s is not None and s.T[0, 3] == pytest.approx(0.1)


def test_interpolate_clamps_before_the_start_and_rejects_bad_hold() -> None:
    a = StreamSample(1.0, pose(0.0, 0.0), np.zeros(1))
    b = StreamSample(2.0, pose(1.0, 90.0), np.ones(1))
    assert np.allclose(interpolate(a, b, 0.0).T, a.T)
    assert interpolate(a, b, 3.0) is b
    assert yaw_deg(interpolate(a, b, 1.5).T) == pytest.approx(45.0)
    with pytest.raises(ValueError, match="hold_s"):
        TargetStream(hold_s=0.0)


def test_by_default_each_target_is_handed_over_at_once_and_held_until_the_next() -> None:
    """The default (the closed loop and dynamic_grasp_node): no interpolation lag."""
    stream = TargetStream(hold_s=0.2)
    stream.push(now=0.0, stamp=0.1, T=pose(0.0, 0.0), q=np.zeros(1))
    stream.sample(0.0)
    stream.push(now=0.07, stamp=0.2, T=pose(0.1, 30.0), q=np.ones(1))  # due at 0.2, here at 0.07
    for now in (0.07, 0.1, 0.2, 0.25):
        s = stream.sample(now)
        assert s is not None and np.allclose(s.T, pose(0.1, 30.0)) and s.q == pytest.approx([1.0])
        assert s.stamp == pytest.approx(max(now, 0.2))  # for its time, or for now once past it
    assert stream.sample(0.28) is None  # hold_s after the push: the policy stalled
