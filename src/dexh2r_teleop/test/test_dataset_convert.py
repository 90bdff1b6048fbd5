"""`dexh2r dataset convert`, ROS-free, on small bags written in-test with the recorder's BagWriter:
alignment and resampling of a good episode, and the bad-input paths (missing required topic,
truncated file, corrupt message, a gap, an incomplete episode): a clear error naming the bag, the
topic and the time, and no output folder (nor a half-written one) left behind."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from dexh2r_teleop import dataset_convert as dc
from dexh2r_teleop import recorder as rec

TS = rec.typestore()
T0 = 100  # s: header stamps (sim time) of the first message
LOG0 = 1_700_000_000 * 10**9  # receive times of the bag


@pytest.fixture(scope="module")
def robot():
    from dexh2r_core.robot.description import RobotDescription

    return RobotDescription.load("ur5_shadow")


def _header(t: float):
    sec, nsec = divmod(round(t * 1e9), 10**9)
    return TS.types["std_msgs/msg/Header"](
        stamp=TS.types["builtin_interfaces/msg/Time"](sec=int(sec), nanosec=int(nsec)), frame_id="world"
    )


def _point(x, y, z):
    return TS.types["geometry_msgs/msg/Point"](x=float(x), y=float(y), z=float(z))


def joint_state(t: float, names: list[str], q: np.ndarray) -> bytes:
    msg = TS.types["sensor_msgs/msg/JointState"](
        header=_header(t),
        name=list(names),
        position=np.asarray(q, float),
        velocity=np.zeros(0),
        effort=np.zeros(0),
    )
    return bytes(TS.serialize_cdr(msg, "sensor_msgs/msg/JointState"))


def object_pose(t: float) -> bytes:
    """The object drifts along +x at 10 cm/s, turning about z at 0.5 rad/s."""
    from scipy.spatial.transform import Rotation

    q = Rotation.from_rotvec([0.0, 0.0, 0.5 * (t - T0)]).as_quat()
    msg = TS.types["geometry_msgs/msg/PoseStamped"](
        header=_header(t),
        pose=TS.types["geometry_msgs/msg/Pose"](
            position=_point(0.6 + 0.1 * (t - T0), 0.0, 0.35),
            orientation=TS.types["geometry_msgs/msg/Quaternion"](x=q[0], y=q[1], z=q[2], w=q[3]),
        ),
    )
    return bytes(TS.serialize_cdr(msg, "geometry_msgs/msg/PoseStamped"))


def keypoints(t: float) -> bytes:
    base = np.array([0.6 + 0.1 * (t - T0), 0.05, 0.3])
    pts = base + np.linspace(0.0, 0.1, 21)[:, None] * np.array([0.0, 1.0, 0.5])
    msg = TS.types["geometry_msgs/msg/PoseArray"](
        header=_header(t),
        poses=[
            TS.types["geometry_msgs/msg/Pose"](
                position=_point(*p), orientation=TS.types["geometry_msgs/msg/Quaternion"](x=0, y=0, z=0, w=1)
            )
            for p in pts
        ],
    )
    return bytes(TS.serialize_cdr(msg, "geometry_msgs/msg/PoseArray"))


CUBE = np.stack(np.meshgrid(*[np.linspace(-0.02, 0.02, 4)] * 3), axis=-1).reshape(-1, 3)  # object frame


def object_points(t: float) -> bytes:
    """The CUBE grid posed like `object_pose(t)`, as a PointCloud2 (float32 x, y, z)."""
    from scipy.spatial.transform import Rotation

    R = Rotation.from_rotvec([0.0, 0.0, 0.5 * (t - T0)]).as_matrix()
    pts = (CUBE @ R.T + [0.6 + 0.1 * (t - T0), 0.0, 0.35]).astype("<f4")
    field = TS.types["sensor_msgs/msg/PointField"]
    msg = TS.types["sensor_msgs/msg/PointCloud2"](
        header=_header(t),
        height=1,
        width=len(pts),
        fields=[field(name=n, offset=4 * i, datatype=7, count=1) for i, n in enumerate("xyz")],
        is_bigendian=False,
        point_step=12,
        row_step=12 * len(pts),
        data=np.frombuffer(pts.tobytes(), np.uint8),
        is_dense=True,
    )
    return bytes(TS.serialize_cdr(msg, "sensor_msgs/msg/PointCloud2"))


def make_bag(
    path: Path,
    robot,
    seconds: float = 2.0,
    *,
    topics: tuple[str, ...] = ("/joint_states", "/sim/object/pose", "/sim/giver/keypoints"),
    corrupt_at: float | None = None,
    silent: tuple[float, float] | None = None,
    status: str = rec.COMPLETE,
    chunk_bytes: int = 4 * 1024 * 1024,
) -> Path:
    """A teleop-like episode: joint states at 50 Hz (the first arm joint ramps), object pose and
    giver keypoints at 30 Hz; `silent` = (from, to) s with no object pose; `corrupt_at` = the time
    (s) of a joint state whose bytes are cut."""
    w = rec.BagWriter(
        path, episode={"operator": "ana", "object": "prim/box_small"}, threaded=False, chunk_bytes=chunk_bytes
    )
    types = {
        "/joint_states": "sensor_msgs/msg/JointState",
        "/sim/object/pose": "geometry_msgs/msg/PoseStamped",
        "/sim/giver/keypoints": "geometry_msgs/msg/PoseArray",
        "/perception/object/points": "sensor_msgs/msg/PointCloud2",
        "/handover/state": "std_msgs/msg/String",
    }
    for topic in topics:
        w.add_topic(topic, types[topic], [rec.qos_dict("reliable")])
    home = robot.home()
    events = []
    for i in range(int(seconds * 50) + 1):
        events.append((i / 50, "/joint_states"))
    for i in range(int(seconds * 30) + 1):
        events += [(i / 30, "/sim/object/pose"), (i / 30, "/sim/giver/keypoints")]
    for i in range(int(seconds * 7) + 1):  # the tracker's cloud: slower than the frames
        events.append((i / 7, "/perception/object/points"))
    for i in range(int(seconds * 10) + 1):  # the controller's state: 'close' from 1.25 s
        events.append((i / 10 + 0.05, "/handover/state"))
    for s, topic in sorted(events):
        if topic not in topics or (silent and topic == "/sim/object/pose" and silent[0] < s < silent[1]):
            continue
        t = T0 + s
        if topic == "/joint_states":
            q = home.copy()
            q[0] += 0.1 * s
            data = joint_state(t, robot.joint_names, q)
            if corrupt_at is not None and abs(s - corrupt_at) < 1e-6:
                data = data[:4] + b"\xff\xff\xff\x7f" + data[8:14]  # cut, with a huge string length
        elif topic == "/sim/object/pose":
            data = object_pose(t)
        elif topic == "/perception/object/points":
            data = object_points(t)
        elif topic == "/handover/state":
            state = "close" if s >= 1.25 else "approach"
            data = bytes(
                TS.serialize_cdr(
                    TS.types["std_msgs/msg/String"](data=json.dumps({"state": state})), "std_msgs/msg/String"
                )
            )
        else:
            data = keypoints(t)
        w.write(topic, data, LOG0 + round(s * 1e9) + 5_000_000)
    w.close(status)
    return path


def _left_behind(root: Path) -> list[str]:
    return sorted(p.name for p in root.iterdir() if p.name.startswith(".out") or p.name == "out")


def test_good_episode_is_aligned_resampled_and_readable(tmp_path, robot):
    from scipy.spatial.transform import Rotation

    from dexh2r_control.ik import ArmIk
    from dexh2r_policy.data.dexh2r_layout import DexH2RDataset
    from dexh2r_policy.episodes import root_to_palm_at_zero

    bag = make_bag(tmp_path / "ep_a", robot)
    out = tmp_path / "out"
    report = dc.convert([tmp_path / "ep_a"], out, dc.ConvertOptions(n_points=64))
    assert report["ok"] and report["written"] == 1
    row = report["episodes"][0]
    assert row["topics"] == {
        "joints": "/joint_states",
        "object_pose": "/sim/object/pose",
        "giver_keypoints": "/sim/giver/keypoints",
    }
    assert row["cloud"] == {"points": 0, "surface": 21} and row["frames"] == 21  # 2 s at 10 Hz
    ds = DexH2RDataset(out)
    (sid,) = ds.sequence_ids("motionnet_train")
    assert str(sid) == "ana/prim__box_small/ep_a" == row["sequence"]
    seq = ds.load(sid)
    assert seq.qpos.shape == (21, 30) and seq.obj_pcd.shape == (21, 64, 3)
    assert seq.giver_keypoints.shape == (21, 21, 3) and seq.grasp_begin_frame == 21
    # Resampled at 10 Hz on the header stamps: frame k is t = k / 10 s.
    t = np.arange(21) / 10
    np.testing.assert_allclose(seq.obj_pose[:, 0, 3], 0.6 + 0.1 * t, atol=1e-5)
    yaw = Rotation.from_matrix(seq.obj_pose[:, :3, :3]).as_rotvec()[:, 2]
    np.testing.assert_allclose(yaw, 0.5 * t, atol=1e-4)
    np.testing.assert_allclose(seq.giver_keypoints[:, 0, 0], 0.6 + 0.1 * t, atol=1e-5)
    # qpos: the hand root of the layout (FK of the measured joints), the wrist joints zeroed.
    q = robot.home().copy()
    q[0] += 0.1 * 1.0
    T_root = ArmIk(robot, robot.config.hand.palm_link).frame_pose(q) @ np.linalg.inv(
        root_to_palm_at_zero(robot)
    )
    np.testing.assert_allclose(seq.qpos[10, :3], T_root[:3, 3], atol=1e-5)
    np.testing.assert_allclose(seq.qpos[10, 3:6], Rotation.from_matrix(T_root[:3, :3]).as_rotvec(), atol=1e-4)
    assert np.all(seq.qpos[:, 6:8] == 0.0)
    np.testing.assert_allclose(seq.qpos[10, 8:], q[robot.n_arm + 2 :], atol=1e-6)
    # The cloud is the object's surface (posed): every point within the box's reach of its centre.
    d = np.linalg.norm(seq.obj_pcd - seq.obj_pose[:, None, :3, 3], axis=-1)
    assert d.max() < 0.1
    assert ds.objects()["prim__box_small"]["object_id"] == "prim/box_small"
    assert (out / "obj_surface_pcd_4096" / "prim__box_small.ply").exists()
    saved = json.loads((out / "convert_report.json").read_text())
    assert saved["episodes"][0]["sequence"] == row["sequence"]
    assert ds.sequence_info(sid)["bag"] == str(bag)
    assert _left_behind(tmp_path) == ["out"]


def test_recorded_cloud_is_carried_by_the_object_motion_and_close_starts_the_grasp(tmp_path, robot):
    topics = ("/joint_states", "/sim/object/pose", "/sim/giver/keypoints", "/perception/object/points")
    make_bag(tmp_path / "ep", robot, 2.0, topics=(*topics, "/handover/state"))
    report = dc.convert([tmp_path / "ep"], tmp_path / "out", dc.ConvertOptions(n_points=32))
    row = report["episodes"][0]
    assert row["topics"]["object_points"] == "/perception/object/points"
    assert row["cloud"] == {"points": 21, "surface": 0}
    # /handover/state has no stamp: its receive time is put on the stamp clock through
    # /joint_states. The first 'close' (1.25 s) -> the first frame at or after it: 13 (1.3 s).
    assert row["grasp_begin_frame_index"] == 13 and "/handover/state 'close'" in row["grasp_begin_source"]
    from dexh2r_policy.data.dexh2r_layout import DexH2RDataset

    ds = DexH2RDataset(tmp_path / "out")
    seq = ds.load(ds.sequence_ids()[0])
    # Clouds at 7 Hz carried to the 10 Hz frames: in the object frame they stay on the CUBE grid.
    local = np.einsum(
        "tij,tnj->tni", np.linalg.inv(seq.obj_pose[:, :3, :3]), seq.obj_pcd - seq.obj_pose[:, None, :3, 3]
    )
    assert np.abs(local).max() < 0.02 + 1e-4
    assert (
        np.abs(local - CUBE[np.argmin(np.linalg.norm(local[..., None, :] - CUBE, axis=-1), axis=-1)]).max()
        < 1e-4
    )


def _fails(tmp_path: Path, bag: Path, match: str, **opts) -> str:
    out = tmp_path / "out"
    with pytest.raises(rec.BagError, match=match) as info:
        dc.convert([bag], out, dc.ConvertOptions(n_points=32, **opts))
    assert _left_behind(tmp_path) == [], "no output (or partial output) may be left"
    message = str(info.value)
    assert f"bag {bag}" in message
    return message


def test_missing_required_topic_is_refused(tmp_path, robot):
    bag = make_bag(tmp_path / "ep", robot, 0.5, topics=("/joint_states", "/sim/object/pose"))
    message = _fails(tmp_path, bag, "required topic missing for giver_keypoints")
    assert "/perception/human_hand/keypoints" in message and "/sim/giver/keypoints" in message


def test_truncated_bag_is_refused(tmp_path, robot):
    bag = make_bag(tmp_path / "ep", robot, 2.0, chunk_bytes=8192)
    mcap = bag / "ep_0.mcap"
    data = mcap.read_bytes()
    mcap.write_bytes(data[: len(data) // 2])  # as if the recorder died half-way
    _fails(tmp_path, bag, r"ep_0.mcap is truncated .*dexh2r record --recover")


def test_corrupt_message_is_refused_with_topic_and_time(tmp_path, robot):
    bag = make_bag(tmp_path / "ep", robot, 1.0, corrupt_at=0.5)
    message = _fails(tmp_path, bag, "corrupt message on /joint_states")
    assert "(0.500 s into the bag" in message  # log time of the cut message (the bag starts at 0)


def test_gap_longer_than_max_gap_is_refused(tmp_path, robot):
    bag = make_bag(tmp_path / "ep", robot, 2.0, silent=(0.5, 1.4))
    message = _fails(tmp_path, bag, r"gap of 0\.9\d+ s on /sim/object/pose")
    assert "stamps 100.500 s and 101.400 s" in message and "--max-gap 0.5 s" in message
    # A longer limit takes it (the pose is interpolated over the gap).
    report = dc.convert([bag], tmp_path / "out", dc.ConvertOptions(n_points=32, max_gap_s=1.0))
    assert report["episodes"][0]["max_gap_s"]["/sim/object/pose"] == pytest.approx(0.9, abs=0.04)


def test_incomplete_episode_needs_allow_incomplete(tmp_path, robot, capsys):
    bag = make_bag(tmp_path / "ep", robot, 0.6, status=rec.INCOMPLETE)
    _fails(tmp_path, bag, "episode status is 'incomplete', not 'complete'")
    # The command line: exit code 2, the message on stderr, the report written where asked.
    report = tmp_path / "report" / "convert.json"
    code = dc.main(
        ["convert", str(bag), "-o", str(tmp_path / "out"), "--points", "32", "--report", str(report)]
    )
    assert code == 2
    assert "dexh2r dataset convert: bag" in capsys.readouterr().err
    saved = json.loads(report.read_text())
    assert not saved["ok"] and "incomplete" in saved["episodes"][0]["error"]
    assert _left_behind(tmp_path) == []
    code = dc.main(
        ["convert", str(tmp_path), "-o", str(tmp_path / "out"), "--points", "32", "--allow-incomplete"]
    )
    assert code == 0 and (tmp_path / "out" / "ana" / "prim__box_small" / "ep" / "qpos.pt").exists()


def test_skip_bad_keeps_the_good_episodes_and_reports_the_rest(tmp_path, robot):
    make_bag(tmp_path / "bags" / "good", robot, 0.6)
    make_bag(tmp_path / "bags" / "bad", robot, 0.6, topics=("/joint_states", "/sim/object/pose"))
    with pytest.raises(rec.BagError, match="bad: required topic missing"):
        dc.convert([tmp_path / "bags"], tmp_path / "out", dc.ConvertOptions(n_points=32))
    assert _left_behind(tmp_path) == []
    report = dc.convert([tmp_path / "bags"], tmp_path / "out", dc.ConvertOptions(n_points=32), skip_bad=True)
    assert report["written"] == 1 and report["failed"] == 1
    assert [e["ok"] for e in report["episodes"]] == [False, True]
