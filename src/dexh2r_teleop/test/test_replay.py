"""dexh2r replay as a separate process: original timing at a rate factor, topic filter, /clock
(generated from log time, or the bag's own), remapping."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest

from dexh2r_teleop import recorder as rec

pytestmark = pytest.mark.ros

REPLAY = "dexh2r_teleop.replay:main"
TS = rec.typestore()


def pose(i: int) -> bytes:
    msg = TS.types["geometry_msgs/msg/PoseStamped"](
        header=TS.types["std_msgs/msg/Header"](
            stamp=TS.types["builtin_interfaces/msg/Time"](sec=7, nanosec=i * 1000), frame_id="world"
        ),
        pose=TS.types["geometry_msgs/msg/Pose"](
            position=TS.types["geometry_msgs/msg/Point"](x=float(i), y=0.0, z=0.0),
            orientation=TS.types["geometry_msgs/msg/Quaternion"](x=0.0, y=0.0, z=0.0, w=1.0),
        ),
    )
    return bytes(TS.serialize_cdr(msg, "geometry_msgs/msg/PoseStamped"))


def string(text: str) -> bytes:
    return bytes(TS.serialize_cdr(TS.types["std_msgs/msg/String"](data=text), "std_msgs/msg/String"))


def make_bag(path, irregular: list[float]) -> None:
    """/replay_test/pose at the given log times (s), /replay_test/other every 0.1 s; no /clock."""
    w = rec.BagWriter(path, threaded=False)
    w.add_topic("/replay_test/pose", "geometry_msgs/msg/PoseStamped", [rec.qos_dict("reliable", depth=10)])
    w.add_topic("/replay_test/other", "std_msgs/msg/String", [rec.qos_dict("reliable", depth=10)])
    t0 = 5_000 * 10**9
    for i, t in enumerate(irregular):
        w.write("/replay_test/pose", pose(i), t0 + int(t * 1e9))
    for i in range(int(irregular[-1] * 10)):
        w.write("/replay_test/other", string(str(i)), t0 + i * 10**8 + 1)
    w.close()


def collect(node, topics: dict[str, type], until, timeout: float, proc) -> dict[str, list]:
    """(DDS reception time in s, message) per topic until until(got) or the timeout (reception time:
    the executor's own delays do not count)."""
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.qos import QoSProfile, ReliabilityPolicy

    got: dict[str, list] = {t: [] for t in topics}
    qos = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE)
    for topic, cls in topics.items():
        node.create_subscription(
            cls, topic, lambda m, info, t=topic: got[t].append((info["received_timestamp"] * 1e-9, m)), qos
        )
    executor = SingleThreadedExecutor(context=node.context)
    executor.add_node(node)
    deadline = time.monotonic() + timeout
    try:
        while not until(got) and time.monotonic() < deadline:
            executor.spin_once(timeout_sec=0.02)
        # a few more callbacks after the replay ended
        end = time.monotonic() + 0.3
        while time.monotonic() < end:
            executor.spin_once(timeout_sec=0.02)
    finally:
        executor.remove_node(node)
        executor.shutdown(timeout_sec=1.0)
    return got


def test_replay_timing_rate_filter_clock_and_remap(tmp_path, ros_node, node_launcher):
    from geometry_msgs.msg import PoseStamped
    from rosgraph_msgs.msg import Clock
    from std_msgs.msg import String

    times = [0.0, 0.1, 0.15, 0.5, 0.55, 0.9, 1.2]  # irregular on purpose
    bag = tmp_path / "bag"
    make_bag(bag, times)
    json_out = tmp_path / "replay.json"
    proc = node_launcher.start(
        REPLAY,
        str(bag),
        "--rate", "2",
        "--topics", "/replay_test/pose",
        "--remap", "/replay_test/pose:=/replay_test/pose_out",
        "--wait-for", "/replay_test/pose_out", "--delay", "0.3",
        "--json", str(json_out),
    )  # fmt: skip
    got = collect(
        ros_node,
        {"/replay_test/pose_out": PoseStamped, "/replay_test/other": String, "/clock": Clock},
        lambda g: len(g["/replay_test/pose_out"]) == len(times),
        timeout=20,
        proc=proc,
    )
    proc.popen.wait(10)
    assert proc.returncode == 0, proc.log_tail()
    poses = got["/replay_test/pose_out"]
    assert [m.pose.position.x for _, m in poses] == list(range(len(times)))
    assert not got["/replay_test/other"]  # filtered out
    # Original spacing divided by the rate (2x), within scheduling jitter. The first sample on a new
    # DDS connection can take ~50 ms longer (transport set-up), so spacing is checked from it on.
    arrivals = np.array([t for t, _ in poses])
    np.testing.assert_allclose(arrivals[2:] - arrivals[1], (np.array(times[2:]) - times[1]) / 2, atol=0.02)
    assert arrivals[1] - arrivals[0] < (times[1] - times[0]) / 2 + 0.1
    # Generated clock: bag log time, 100 Hz, monotonic.
    clock = [c.clock.sec + c.clock.nanosec * 1e-9 for _, c in got["/clock"]]
    assert len(clock) > 30 and all(np.diff(clock) > 0)
    assert clock[0] >= 5000.0 and clock[-1] <= 5000.0 + times[-1] + 1e-6
    report = json.loads(json_out.read_text())
    assert report["published"] == {"/replay_test/pose": len(times)} and report["clock"] == "generated"
    assert report["late_ms_p95"] < 50  # schedule lateness; 2 shared cores


def test_replay_refuses_a_truncated_bag_naming_it(tmp_path, node_launcher):
    bag = tmp_path / "cut"
    make_bag(bag, [0.0, 0.1])
    mcap = bag / "cut_0.mcap"
    mcap.write_bytes(mcap.read_bytes()[:-40])
    proc = node_launcher.start(REPLAY, str(bag))
    proc.popen.wait(20)
    assert proc.returncode == 2
    assert f"bag {bag}: cut_0.mcap is truncated" in proc.log_text()
