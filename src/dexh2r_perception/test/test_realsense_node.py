"""realsense_node as a separate process over DDS, playing librealsense recordings via rs.pipeline."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

pytest.importorskip("pyrealsense2")
pytestmark = pytest.mark.ros

W, H = 424, 240
NODE = "dexh2r_perception.realsense_node:main"


@pytest.fixture(scope="module")
def recordings(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[Path]]:
    """Two 60-frameset recordings (seeds 0, 1) and a 120 + 15 pair (seeds 2, 3).

    The node plays them `paced` (its default): librealsense reads them losslessly and the node
    spaces framesets by device time, so they need no wall-clock pacing when written.
    """
    from dexh2r_perception.capture import write_test_recordings

    folder = tmp_path_factory.mktemp("realsense")
    paths = [folder / name for name in ("a0.db3", "a1.db3", "b0.db3", "b1.db3")]
    write_test_recordings(paths, [60, 60, 120, 15], W, H, 30, seed=0, pace=False)
    return {"full": paths[:2], "stops": paths[2:]}


def test_node_publishes_every_frame_of_two_cameras(node_launcher, ros_node, recordings, tmp_path):
    from dexh2r_core.testing import wait_for_topic_match
    from dexh2r_perception.realsense_node import (
        CameraTopicCollector,
        camera_topics,
        collect,
        write_file_config,
    )

    config = write_file_config(tmp_path / "realsense.yaml", recordings["full"])
    proc = node_launcher.start(
        NODE,
        name="realsense_node",
        params={"config": str(config), "exit_on_end": True, "wait_for_subscribers": 1},
    )
    cameras = {"camera_0": 0, "camera_1": 1}
    expected = {"camera_0": 60, "camera_1": 60}
    # Publishers known before subscribing: our readers match them at creation, so the node's
    # wait_for_subscribers releases playback only once both ends are matched (frame 0 included).
    for name in cameras:
        for topic in camera_topics(name).values():
            wait_for_topic_match(ros_node, topic, "publisher", timeout=30.0, processes=[proc])
    collector = CameraTopicCollector(ros_node, cameras, W, H)
    collect(ros_node, collector, expected, proc, timeout=60.0)
    summary = collector.summary(expected)
    per_topic = {
        t: (v["received"], v["invalid"], v["first_invalid"]) for t, v in summary["per_topic"].items()
    }
    assert len(per_topic) == 8
    assert summary["capture_delivered_fraction"] >= 0.999, per_topic
    assert summary["content_ok"], (per_topic, summary["colour_depth_stamp_mismatches"])
    # Recordings made together share device time: both cameras' frame i carry (nearly) one stamp.
    assert summary["stamp_skew_ms_max"] < 20.0, summary["stamp_skew_ms_max"]
    # exit_on_end: the node leaves by itself, cleanly, once both recordings have ended.
    assert proc.popen.wait(timeout=30) == 0, proc.log_tail()
    assert "all recordings ended" in proc.log_text()


def test_camera_that_stops_is_reported_while_the_other_keeps_publishing(
    node_launcher, ros_node, recordings, tmp_path
):
    from diagnostic_msgs.msg import DiagnosticArray
    from rclpy.executors import SingleThreadedExecutor

    from dexh2r_core.testing import wait_for_topic_match
    from dexh2r_perception.realsense_node import CameraTopicCollector, camera_topics, write_file_config

    config = write_file_config(tmp_path / "realsense.yaml", recordings["stops"])
    proc = node_launcher.start(
        NODE, name="realsense_node", params={"config": str(config), "wait_for_subscribers": 1}
    )
    cameras = {"camera_0": 2, "camera_1": 3}
    for name in cameras:
        for topic in camera_topics(name).values():
            wait_for_topic_match(ros_node, topic, "publisher", timeout=30.0, processes=[proc])
    diagnostics: list[DiagnosticArray] = []
    ros_node.create_subscription(DiagnosticArray, "/diagnostics", diagnostics.append, 10)
    collector = CameraTopicCollector(ros_node, cameras, W, H)
    executor = SingleThreadedExecutor(context=ros_node.context)
    executor.add_node(ros_node)

    def statuses() -> dict[str, tuple[int, str]]:
        if not diagnostics:
            return {}
        return {s.name: (s.level[0], s.message) for s in diagnostics[-1].status}

    image0 = camera_topics("camera_0")["image"]
    deadline = time.monotonic() + 30.0
    reported_at = None
    try:
        while time.monotonic() < deadline:
            executor.spin_once(timeout_sec=0.05)
            assert proc.alive(), proc.log_tail()
            st = statuses()
            if reported_at is None and st.get("realsense: camera_1", (0, ""))[0] == 2:
                assert st["realsense: camera_0"][0] == 0, st  # the other camera is fine
                reported_at = collector.counts()[image0]
            if reported_at is not None and collector.counts()[image0] >= reported_at + 10:
                break
    finally:
        executor.remove_node(ros_node)
        executor.shutdown(timeout_sec=1.0)
    assert reported_at is not None, f"camera_1 never reported as stopped; last diagnostics: {statuses()}"
    assert collector.counts()[image0] >= reported_at + 10, "camera_0 stopped publishing too"
    st = statuses()
    level, message = st["realsense: camera_1"]
    assert level == 2 and "camera_1 stopped" in message and "15 framesets" in message, message
    assert st["realsense: cameras"][0] == 2 and "camera_1" in st["realsense: cameras"][1]
    assert "camera_0" not in st["realsense: cameras"][1]
    assert collector.counts()[camera_topics("camera_1")["image"]] == 15
    # SIGINT: clean shutdown with exit code 0.
    assert proc.stop() == 0, proc.log_tail()


@pytest.mark.parametrize("case", ["config", "calibration", "recording"])
def test_missing_file_exits_at_start_naming_it(node_launcher, recordings, tmp_path, case):
    from dexh2r_perception.realsense_node import write_file_config

    missing = tmp_path / f"missing_{case}.yaml"
    params: dict[str, object] = {"config": str(missing)}
    if case == "calibration":
        params["config"] = str(write_file_config(tmp_path / "ok.yaml", recordings["full"]))
        params["calibration"] = str(missing)
    elif case == "recording":
        missing = tmp_path / "missing_recording.db3"
        params["config"] = str(write_file_config(tmp_path / "ok.yaml", [recordings["full"][0], missing]))
    proc = node_launcher.start(NODE, name=f"realsense_node_{case}", params=params)
    assert proc.popen.wait(timeout=30) == 2, proc.log_tail()
    log = proc.log_text()
    assert str(missing) in log and "not found" in log, log
