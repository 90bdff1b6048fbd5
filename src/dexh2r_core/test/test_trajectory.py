"""JTC-style trajectory execution: interpolation, replacement, invalid input."""

import numpy as np
import pytest

from dexh2r_core.trajectory import JointTrajectory, TrajectoryError, TrajectoryFollower, TrajectoryPoint

NAMES = ["a", "b", "c"]


def _traj(points, names=NAMES, start=0.0):
    return JointTrajectory(
        joint_names=names,
        points=[TrajectoryPoint(t, np.asarray(q, float)) for t, q in points],
        start_time=start,
    )


def test_reaches_points_at_their_times_and_holds():
    f = TrajectoryFollower(NAMES, np.zeros(3))
    f.set_trajectory(_traj([(1.0, [1, 2, 3]), (2.0, [0, 0, 1])]), now=10.0)
    np.testing.assert_allclose(f.position(10.0), 0.0, atol=1e-12)
    np.testing.assert_allclose(f.position(11.0), [1, 2, 3], atol=1e-12)
    np.testing.assert_allclose(f.position(12.0), [0, 0, 1], atol=1e-12)
    np.testing.assert_allclose(f.position(50.0), [0, 0, 1])
    _q, v, _a = f.sample(12.0)
    np.testing.assert_allclose(v, 0.0)


def test_smooth_start_and_end():
    f = TrajectoryFollower(NAMES, np.zeros(3))
    f.set_trajectory(_traj([(1.0, [1, 1, 1])]), now=0.0)
    _, v0, a0 = f.sample(0.0)
    _, v1, _a1 = f.sample(1.0 - 1e-9)
    assert np.abs(v0).max() < 1e-9 and np.abs(a0).max() < 1e-9 and np.abs(v1).max() < 1e-6
    # Monotone and bounded for a single quintic rest-to-rest segment.
    qs = np.array([f.position(t)[0] for t in np.linspace(0, 1, 101)])
    assert np.all(np.diff(qs) >= -1e-12) and qs.max() <= 1.0 + 1e-12


def test_replacement_is_continuous():
    """A new trajectory mid-motion starts from the current command: no jump (chunk boundaries)."""
    f = TrajectoryFollower(NAMES, np.zeros(3))
    f.set_trajectory(_traj([(1.0, [1, 1, 1])]), now=0.0)
    q_before, v_before, _ = f.sample(0.5)
    f.set_trajectory(_traj([(1.0, [-1, 0, 2])]), now=0.5)
    q_after, v_after, _ = f.sample(0.5)
    np.testing.assert_allclose(q_after, q_before, atol=1e-12)
    np.testing.assert_allclose(v_after, v_before, atol=1e-12)
    np.testing.assert_allclose(f.position(1.5), [-1, 0, 2], atol=1e-12)


def test_partial_joint_sets_keep_the_others():
    f = TrajectoryFollower(NAMES, np.array([5.0, 6.0, 7.0]))
    f.set_trajectory(_traj([(0.5, [1.0])], names=["b"]), now=0.0)
    np.testing.assert_allclose(f.position(1.0), [5.0, 1.0, 7.0])


def test_future_start_time_waits():
    f = TrajectoryFollower(NAMES, np.zeros(3))
    f.set_trajectory(_traj([(1.0, [1, 1, 1])], start=5.0), now=0.0)
    np.testing.assert_allclose(f.position(4.0), 0.0)
    np.testing.assert_allclose(f.position(6.0), 1.0)


@pytest.mark.parametrize(
    ("traj", "reason"),
    [
        (_traj([(1.0, [np.nan, 0, 0])]), "NaN"),
        (_traj([(1.0, [0, 0])]), "2 positions for 3 joints"),
        (_traj([(1.0, [0, 0, 0])], names=["a", "b", "x"]), "not controlled"),
        (_traj([(1.0, [0, 0, 0]), (0.5, [0, 0, 0])]), "must increase"),
        (_traj([]), "no points"),
        (_traj([(1.0, [0, 0, 0])], names=["a", "a", "b"]), "duplicate"),
    ],
)
def test_invalid_trajectories_are_rejected_and_hold(traj, reason):
    f = TrajectoryFollower(NAMES, np.array([0.1, 0.2, 0.3]))
    f.set_trajectory(_traj([(1.0, [1, 1, 1])]), now=0.0)
    with pytest.raises(TrajectoryError, match=reason):
        f.set_trajectory(traj, now=0.5)
    np.testing.assert_allclose(f.position(2.0), [1, 1, 1])  # previous command unchanged
