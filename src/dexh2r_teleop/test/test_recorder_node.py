"""recorder_node as a separate process: start/stop/discard services, the per-topic report, QoS
adaptation (best-effort and reliable publishers), and crash safety under SIGKILL."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from pathlib import Path

import pytest

from dexh2r_core.testing import wait_for_topic_match
from dexh2r_teleop import recorder as rec

pytestmark = pytest.mark.ros

NODE = "dexh2r_teleop.recorder_node:main"
JS, IMG = "/rec_test/joint_states", "/rec_test/image"


def write_config(tmp_path: Path, flush_period_s: float = 1.0) -> Path:
    cfg = tmp_path / "record.yaml"
    cfg.write_text(
        f"flush_period_s: {flush_period_s}\n"
        "topics:\n"
        f"  - {{name: {JS}, rate_hz: 100}}\n"
        f"  - {{name: {IMG}, type: sensor_msgs/msg/Image, rate_hz: 30}}\n"
        "  - {name: /rec_test/never, type: std_msgs/msg/String, required: false}\n"
    )
    return cfg


class Publisher:
    """JointState at 100 Hz (reliable) and a small Image at 30 Hz (best effort) from the test."""

    def __init__(self, node):
        from rclpy.qos import QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
        from sensor_msgs.msg import Image, JointState

        self.node = node
        self.js_pub = node.create_publisher(
            JointState, JS, QoSProfile(depth=50, reliability=ReliabilityPolicy.RELIABLE)
        )
        self.img_pub = node.create_publisher(Image, IMG, qos_profile_sensor_data)
        self.JointState, self.Image = JointState, Image
        self.sent = {JS: 0, IMG: 0}

    def run(self, seconds: float) -> None:
        start = time.monotonic()
        i = 0
        while (now := time.monotonic()) - start < seconds:
            stamp = time.time_ns()
            msg = self.JointState(name=["a"], position=[float(i)])
            msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(stamp, 10**9)
            self.js_pub.publish(msg)
            self.sent[JS] += 1
            if i % 3 == 0 and i // 3 < 10**6:  # ~33 Hz: close enough to the configured 30 Hz
                img = self.Image(height=8, width=8, encoding="mono8", step=8, data=bytes(64))
                img.header.stamp = msg.header.stamp
                self.img_pub.publish(img)
                self.sent[IMG] += 1
            i += 1
            time.sleep(max(0.0, start + i * 0.01 - now))


def spin_until(node, done, timeout: float, proc=None) -> bool:
    """Run `node`'s callbacks (in its own context) until done() or the timeout."""
    from rclpy.executors import SingleThreadedExecutor

    executor = SingleThreadedExecutor(context=node.context)
    executor.add_node(node)
    try:
        deadline = time.monotonic() + timeout
        while not done():
            if time.monotonic() > deadline:
                return False
            if proc is not None:
                assert proc.alive(), proc.log_tail()
            executor.spin_once(timeout_sec=0.05)
        return True
    finally:
        executor.remove_node(node)
        executor.shutdown(timeout_sec=1.0)


def call(node, name: str, timeout: float = 15.0):
    from std_srvs.srv import Trigger

    client = node.create_client(Trigger, name)
    try:
        assert client.wait_for_service(timeout_sec=timeout), f"service {name} not available"
        future = client.call_async(Trigger.Request())
        assert spin_until(node, future.done, timeout), f"{name} did not answer"
        return future.result()
    finally:
        node.destroy_client(client)


def wait_counts(node, proc, want: dict[str, int], timeout: float = 15.0) -> dict:
    """Spin `node` on /recorder/status until the recorded counts reach `want`."""
    from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
    from std_msgs.msg import String

    latest: dict = {}
    qos = QoSProfile(
        depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL
    )
    sub = node.create_subscription(
        String, "/recorder/status", lambda m: latest.update(json.loads(m.data)), qos
    )
    try:

        def reached() -> bool:
            counts = latest.get("counts", {})
            return all(counts.get(k, 0) >= v for k, v in want.items())

        assert spin_until(node, reached, timeout, proc), (
            f"recorder counts {latest.get('counts')} never reached {want}"
        )
        return latest
    finally:
        node.destroy_subscription(sub)


def test_services_report_and_discard(tmp_path, ros_node, node_launcher):
    out = tmp_path / "episodes"
    proc = node_launcher.start(
        NODE,
        params={
            "config": str(write_config(tmp_path)),
            "output_dir": str(out),
            "operator": "alice",
            "status_period_s": 0.2,
        },
    )
    pub = Publisher(ros_node)
    for topic in (JS, IMG):
        wait_for_topic_match(ros_node, topic, "subscriber", timeout=20, processes=[proc])

    res = call(ros_node, "/recorder/stop")
    assert not res.success and "no episode" in res.message
    res = call(ros_node, "/recorder/start")
    assert res.success, res.message
    bag = Path(res.message)
    assert rec.bag_info(bag).status == rec.RECORDING
    pub.run(1.5)
    wait_counts(ros_node, proc, pub.sent)
    res = call(ros_node, "/recorder/stop")
    assert res.success, res.message
    summary = json.loads(res.message)
    assert summary["status"] == rec.COMPLETE and summary["bag"] == str(bag)
    side = json.loads((bag / rec.SIDECAR).read_text())
    assert side["episode"]["operator"] == "alice"
    topics = side["report"]["topics"]
    # Every message sent during the episode is in the bag and the report.
    assert topics[JS]["received"] == pub.sent[JS] and topics[IMG]["received"] == pub.sent[IMG]
    assert topics[JS]["kept_fraction"] >= 0.97 and topics[JS]["stamp_source"] == "header"
    assert topics["/rec_test/never"]["received"] == 0 and topics["/rec_test/never"]["ok"]
    assert rec.check_bag(bag)["counts"] == {JS: pub.sent[JS], IMG: pub.sent[IMG]}
    qos = rec.bag_info(bag).qos
    assert qos[JS][0]["reliability"] == "reliable" and qos[IMG][0]["reliability"] == "best_effort"
    assert "kept" in proc.log_text() and JS in proc.log_text()  # the report table is logged

    res = call(ros_node, "/recorder/start")
    assert res.success
    second = Path(res.message)
    res = call(ros_node, "/recorder/discard")
    assert res.success and not second.exists()
    assert sorted(p.name for p in out.iterdir()) == [bag.name]


def test_sigkill_leaves_a_readable_bag_marked_incomplete(tmp_path, ros_node, node_launcher):
    from mcap.stream_reader import StreamReader
    from rosbags.rosbag2 import Reader

    out = tmp_path / "episodes"
    proc = node_launcher.start(
        NODE,
        params={
            "config": str(write_config(tmp_path, flush_period_s=0.2)),
            "output_dir": str(out),
            "autostart": True,
            "status_period_s": 0.2,
        },
    )
    pub = Publisher(ros_node)
    wait_for_topic_match(ros_node, JS, "subscriber", timeout=20, processes=[proc])
    proc.wait_for_log("episode started", timeout=20)

    def flushed_messages() -> int:
        """Messages an MCAP stream reader gets from the file as it is on disk now."""
        n = 0
        with next(out.glob("*/*.mcap")).open("rb") as f:
            try:
                for record in StreamReader(f).records:
                    n += type(record).__name__ == "Message"
            except Exception:  # the file ends inside a record: it is still being written
                pass
        return n

    # Kill it mid-episode, while messages are still coming in.
    thread = threading.Thread(target=pub.run, args=(3.0,))
    thread.start()
    deadline = time.monotonic() + 10
    while (before := flushed_messages()) < 100:  # the writer's 0.2 s flushes reach the disk
        assert time.monotonic() < deadline and thread.is_alive(), "no flushed chunk on disk"
        time.sleep(0.05)  # polling the file
    os.killpg(proc.pid, signal.SIGKILL)
    proc.popen.wait(5)
    thread.join()
    (bag,) = list(out.iterdir())
    assert json.loads((bag / rec.SIDECAR).read_text())["status"] == rec.RECORDING  # never "complete"
    # The raw file after the kill: readable up to the last flushed chunk.
    assert before <= flushed_messages() < sum(pub.sent.values())
    with pytest.raises(rec.BagError, match="truncated"):
        rec.open_bag(bag)
    # A restarted recorder indexes it (status incomplete); rosbags then reads it.
    proc2 = node_launcher.start(NODE, params={"config": str(write_config(tmp_path)), "output_dir": str(out)})
    proc2.wait_for_log("recovered unfinished episode", timeout=20)
    info = rec.bag_info(bag)
    assert info.status == rec.INCOMPLETE and info.complete_file
    with Reader(bag) as reader:
        assert before <= reader.message_count < sum(pub.sent.values())
    assert json.loads((bag / rec.SIDECAR).read_text())["status"] == rec.INCOMPLETE


def test_sigint_closes_an_open_episode_as_interrupted(tmp_path, ros_node, node_launcher):
    out = tmp_path / "episodes"
    proc = node_launcher.start(
        NODE,
        params={
            "config": str(write_config(tmp_path)),
            "output_dir": str(out),
            "autostart": True,
            "wait_for_topics_s": 0.3,
        },
    )
    proc.wait_for_log("episode started", timeout=20)
    assert proc.stop() == 0
    (bag,) = list(out.iterdir())
    info = rec.bag_info(bag)
    assert info.complete_file and info.status == rec.INTERRUPTED


def test_stop_takes_the_messages_still_queued_before_closing(tmp_path, ros_node, node_launcher):
    """A stop that arrives right behind a burst still records the whole burst (the demo's race)."""
    from std_srvs.srv import Trigger

    out = tmp_path / "episodes"
    proc = node_launcher.start(NODE, params={"config": str(write_config(tmp_path)), "output_dir": str(out)})
    pub = Publisher(ros_node)
    wait_for_topic_match(ros_node, JS, "subscriber", timeout=20, processes=[proc])
    assert call(ros_node, "/recorder/start").success
    stop = ros_node.create_client(Trigger, "/recorder/stop")
    assert stop.wait_for_service(timeout_sec=15)
    burst = 40  # within both queues' depth (50 / 100): DDS keeps them all
    for i in range(burst):
        msg = pub.JointState(name=["a"], position=[float(i)])
        msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(time.time_ns(), 10**9)
        pub.js_pub.publish(msg)
    future = stop.call_async(Trigger.Request())
    assert spin_until(ros_node, future.done, 15), "/recorder/stop did not answer"
    summary = json.loads(future.result().message)
    # Without the drain the executor runs the stop after one message per subscription.
    assert summary["topics"][JS]["received"] == burst
