"""numpy <-> message conversion round trips and malformed-message errors."""

import numpy as np
import pytest
from rclpy.serialization import deserialize_message, serialize_message
from sensor_msgs.msg import Image
from trajectory_msgs.msg import JointTrajectory as JointTrajectoryMsg

from dexh2r_core.msgs import (
    MessageError,
    camera_info_msg,
    from_time,
    image_array,
    image_msg,
    joint_trajectory,
    joint_trajectory_msg,
    pose_matrix,
    pose_stamped_msg,
    to_time,
)
from dexh2r_core.transforms import make_transform


def test_images_round_trip_through_serialisation():
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 255, size=(24, 42, 3), dtype=np.uint8)
    depth = rng.integers(0, 6000, size=(24, 42), dtype=np.uint16)
    metres = rng.uniform(0.3, 3.0, size=(24, 42)).astype(np.float32)
    metres[3, 5] = np.nan  # REP 118: no measurement
    for array, encoding in ((rgb, "rgb8"), (depth, "16UC1"), (metres, "32FC1")):
        msg = image_msg(array, encoding, 12.5, "camera_0_color_optical_frame")
        again = deserialize_message(serialize_message(msg), Image)
        np.testing.assert_array_equal(image_array(again), array)
        assert from_time(again.header.stamp) == pytest.approx(12.5)


def test_malformed_images_raise():
    msg = image_msg(np.zeros((4, 4), np.uint16), "16UC1", 0.0, "f")
    msg.data = msg.data[:-2]
    with pytest.raises(MessageError, match="bytes"):
        image_array(msg)
    msg.encoding = "yuv422"
    with pytest.raises(MessageError, match="not supported"):
        image_array(msg)


def test_poses_and_nan():
    T = make_transform([0.1, 0.2, 0.3], [0.0, 0.0, np.sin(0.3), np.cos(0.3)])
    np.testing.assert_allclose(pose_matrix(pose_stamped_msg(T, 1.0).pose), T, atol=1e-12)
    msg = pose_stamped_msg(T, 1.0)
    msg.pose.position.x = float("nan")
    with pytest.raises(MessageError, match="NaN"):
        pose_matrix(msg.pose)
    msg = pose_stamped_msg(T, 1.0)
    msg.pose.orientation.w = msg.pose.orientation.z = 0.0
    with pytest.raises(MessageError, match="zero quaternion"):
        pose_matrix(msg.pose)


def test_trajectory_round_trip():
    msg = joint_trajectory_msg(["a", "b"], [0.5, 1.25], [[1, 2], [3, 4]], stamp_s=3.0)
    msg = deserialize_message(serialize_message(msg), JointTrajectoryMsg)
    traj = joint_trajectory(msg)
    assert traj.joint_names == ["a", "b"] and traj.start_time == pytest.approx(3.0)
    assert [p.time_from_start for p in traj.points] == pytest.approx([0.5, 1.25])
    np.testing.assert_allclose(traj.points[1].positions, [3, 4])


def test_time_conversion():
    for t in (0.0, 1.999999999, 12345.000000001):
        assert from_time(to_time(t)) == pytest.approx(t, abs=1e-9)


def test_camera_info():
    info = {"frame_id": "c", "width": 4, "height": 3, "k": [1, 0, 2, 0, 1, 1.5, 0, 0, 1], "p": [0] * 12}
    msg = camera_info_msg(info, 2.0)
    assert msg.width == 4 and list(msg.k)[2] == 2.0 and msg.header.frame_id == "c"
