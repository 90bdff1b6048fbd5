"""Replay gate: a committed sim bag played into the real object_tracker_node.

The bag (tests/replay/bags/sim_easy_box, made by make_bags.py) holds both cameras' depth, joint
states, /clock and the sim's ground truth while the giver reaches in with a box. `dexh2r replay`
plays it with original timing; the giver's ground-truth hand keypoints are remapped onto
/perception/human_hand/keypoints (what hand_tracker_node publishes live). Asserted: the tracker
answers (nearly) every frame set at the camera rate, its latency, and its pose vs the recorded
ground-truth object pose at the same stamp while the object moves.

The bag plays at half speed by default (DEXH2R_REPLAY_RATE=1 for real time): the suite runs on
2 shared cores next to other tests, and a starved tracker that skips frames of a fast-moving object
would make the gate flaky. Rates are checked against the replayed rate (30 Hz x factor).
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np
import pytest

from dexh2r_core.testing import wait_for_topic_match
from dexh2r_teleop import recorder as rec
from dexh2r_teleop import replay

# One replay at a time: each replays a bag in real time into separate node processes.
pytestmark = [pytest.mark.ros, pytest.mark.xdist_group("replay")]

BAG = Path(__file__).resolve().parent / "bags" / "sim_easy_box"
DEPTH = [f"/camera_{i}/aligned_depth_to_color/image_raw" for i in range(2)]
KEYPOINTS_IN_BAG, KEYPOINTS = "/sim/giver/keypoints", "/perception/human_hand/keypoints"
RATE = float(os.environ.get("DEXH2R_REPLAY_RATE", "0.5"))
INIT_FRAMES = 6  # frame sets (0.2 s of bag time) allowed for the tracker's first registration
REQUIRED = [*DEPTH, "/joint_states", KEYPOINTS_IN_BAG, "/sim/object/pose", "/clock"]


def ground_truth(info: rec.BagInfo) -> dict[int, np.ndarray]:
    """stamp (ns) -> recorded object position (m)."""
    out = {}
    for m in rec.iter_messages(info, ["/sim/object/pose"]):
        msg = rec.deserialize(m.data, m.type)
        p = msg.pose.position
        out[msg.header.stamp.sec * 10**9 + msg.header.stamp.nanosec] = np.array([p.x, p.y, p.z])
    return out


def test_bag_is_valid_and_small():
    info = rec.open_bag(BAG, require=REQUIRED)
    assert info.status == rec.COMPLETE and info.episode["object"]
    assert sum(f.stat().st_size for f in BAG.iterdir()) < 6e6
    counts = rec.check_bag(BAG)["counts"]
    assert counts[DEPTH[0]] == counts[DEPTH[1]] >= 28


def test_replay_into_object_tracker(tmp_path, ros_node, node_launcher):
    from geometry_msgs.msg import PoseStamped
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from std_msgs.msg import String

    info = rec.open_bag(BAG, require=REQUIRED)
    truth = ground_truth(info)
    tracker = node_launcher.start(
        "dexh2r_perception.object_tracker_node:main",
        params={"object_id": info.episode["object"], "calibration": "calibration/sim_two_cameras.yaml"},
    )
    tracker.wait_for_log("object tracker ready", timeout=60)
    # The tracker's own subscriptions first (the test's depth subscriptions below would satisfy
    # the replay's --wait-for on their own).
    for topic in [*DEPTH, KEYPOINTS]:
        wait_for_topic_match(ros_node, topic, "subscriber", timeout=20, processes=[tracker])

    poses: list[tuple[int, float, np.ndarray]] = []

    def on_pose(msg: PoseStamped, msg_info) -> None:
        stamp = msg.header.stamp.sec * 10**9 + msg.header.stamp.nanosec
        p = msg.pose.position
        poses.append((stamp, msg_info["received_timestamp"] * 1e-9, np.array([p.x, p.y, p.z])))

    statuses: dict[int, str] = {}  # every processed frame set gets one, tracked or not

    def on_status(msg: String) -> None:
        status = json.loads(msg.data)
        statuses[round(status["stamp"] * 1e9)] = status["status"]

    ros_node.create_subscription(
        String,
        "/perception/object/status",
        on_status,
        QoSProfile(depth=50, reliability=ReliabilityPolicy.RELIABLE),
    )
    ros_node.create_subscription(
        PoseStamped,
        "/perception/object/pose",
        on_pose,
        QoSProfile(depth=50, reliability=ReliabilityPolicy.RELIABLE),
    )
    report_path = tmp_path / "replay.json"
    player = node_launcher.start(
        "dexh2r_teleop.replay:main",
        str(BAG),
        "--remap", f"{KEYPOINTS_IN_BAG}:={KEYPOINTS}",
        "--wait-for", *DEPTH, KEYPOINTS,
        "--delay", "0.5",
        "--rate", str(RATE),
        "--json", str(report_path),
    )  # fmt: skip
    executor = SingleThreadedExecutor(context=ros_node.context)
    executor.add_node(ros_node)
    try:
        deadline = time.monotonic() + 60
        while player.alive() and time.monotonic() < deadline:
            executor.spin_once(timeout_sec=0.02)
        settle = time.monotonic() + 1.0  # the tracker's answer to the last frame set
        while time.monotonic() < settle:
            executor.spin_once(timeout_sec=0.02)
    finally:
        executor.remove_node(ros_node)
        executor.shutdown(timeout_sec=1.0)
    assert player.returncode == 0, player.log_tail()
    assert tracker.alive(), tracker.log_tail()
    report = json.loads(report_path.read_text())
    assert report["published"][DEPTH[0]] == info.counts[DEPTH[0]] and report["clock"] == "bag"
    print("replay report:", json.dumps(report))
    assert report["late_ms_p95"] < 100, report  # 2 shared cores: the tracker competes for CPU
    assert report["wall_s"] == pytest.approx(report["bag_s"] / RATE, abs=0.1)

    # When each frame set was complete on the wire: the later of its two depth images, at the
    # replay's schedule (bag log time mapped to the wall clock; the test does not subscribe to the
    # images itself, which would cost the tracker CPU on a small machine).
    depth_rx: dict[int, float] = {}
    for m in rec.iter_messages(info, DEPTH):
        stamp = rec.header_stamp_ns(m.data, m.type)
        at = report["start_unix_ns"] * 1e-9 + (m.log_time_ns - report["bag_t0_ns"]) * 1e-9 / RATE
        depth_rx[stamp] = max(depth_rx.get(stamp, 0.0), at)
    frame_sets = sorted(truth)  # one ground-truth pose per rendered frame set
    stamps = [s for s, _, _ in poses]
    assert set(stamps) <= set(depth_rx), "every output carries the stamp of a replayed depth frame"
    # Rate: the tracker keeps only the newest frame set, so a slow frame may skip one.
    processed = len(set(statuses) & set(frame_sets)) / len(frame_sets)
    # Tracked: once the tracker has initialised on the object (the giver starts outside the
    # workspace; the first registration is a multi-start search that can take a few frames, during
    # which the tracker keeps only the newest frame set), poses for (nearly) every frame set.
    first = min(stamps)
    steady = [f for f in frame_sets if f >= first][INIT_FRAMES:]
    tracked = len(set(stamps) & set(steady)) / len(steady)
    span = (poses[-1][1] - poses[0][1]) if len(poses) > 1 else 0.0
    rate_hz = (len(poses) - 1) / span if span > 0 else 0.0
    latency_ms = np.array([(rx - depth_rx[s]) * 1e3 for s, rx, _ in poses])
    errors_mm = np.array([np.linalg.norm(p - truth[s]) * 1e3 for s, _, p in poses if s in truth])
    moved_mm = np.linalg.norm(truth[frame_sets[-1]] - truth[frame_sets[0]]) * 1e3
    summary = {
        "rate": RATE,
        "frame_sets": len(frame_sets),
        "processed": round(processed, 3),
        "tracked_steady": round(tracked, 3),
        "first_tracked_frame": frame_sets.index(first) if first in frame_sets else None,
        "rate_hz": round(rate_hz, 1),
        "latency_ms_p50": round(float(np.median(latency_ms)), 1),
        "latency_ms_p95": round(float(np.percentile(latency_ms, 95)), 1),
        "error_mm_median": round(float(np.median(errors_mm)), 2),
        "error_mm_p95": round(float(np.percentile(errors_mm, 95)), 2),
        "error_mm_max": round(float(errors_mm.max()), 2),
        "object_moved_mm": round(float(moved_mm), 1),
        "unanswered": [i for i, s in enumerate(frame_sets) if s not in set(stamps)],
    }
    print("replay gate:", json.dumps(summary))
    assert moved_mm > 50, "the bag should cover the giver's reach (a moving object)"
    assert processed >= 0.7 and tracked >= 0.9, summary
    assert rate_hz >= 0.66 * 30 * RATE, summary
    # A gate against a tracker that falls behind, not a speed figure (the perception bench has
    # those): beside the rest of the suite on 2 cores its p95 reached 171 ms (session 10).
    assert summary["latency_ms_p95"] < 250, summary
    # A frame right after skipped ones (starved CPU) may be off by a centimetre or two.
    assert summary["error_mm_median"] < 5 and summary["error_mm_p95"] < 15 and summary["error_mm_max"] < 50, (
        summary
    )


def test_bad_bags_are_refused_with_bag_topic_and_time(tmp_path, capsys):
    assert replay.main([str(BAG), "--check", "--require", "/camera_0/color/image_raw"]) == 2
    assert "/camera_0/color/image_raw" in capsys.readouterr().err
    cut = tmp_path / "cut"
    cut.mkdir()
    for f in BAG.iterdir():
        data = f.read_bytes()
        (cut / f.name).write_bytes(data[: len(data) * 2 // 3] if f.suffix == ".mcap" else data)
    assert replay.main([str(cut), "--check"]) == 2
    assert f"bag {cut}" in capsys.readouterr().err
