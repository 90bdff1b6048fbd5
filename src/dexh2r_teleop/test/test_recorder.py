"""Episode writer and reports, ROS-free: rosbag2 MCAP round trip (rosbags and mcap readers),
metadata.yaml, the per-topic report, truncated/corrupt bags and their recovery."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml

from dexh2r_core.config import ConfigError
from dexh2r_teleop import recorder as rec
from dexh2r_teleop import replay

TS = rec.typestore()


def joint_state(i: int, hz: float = 100.0) -> bytes:
    t = i / hz
    msg = TS.types["sensor_msgs/msg/JointState"](
        header=TS.types["std_msgs/msg/Header"](
            stamp=TS.types["builtin_interfaces/msg/Time"](sec=int(t), nanosec=round((t % 1) * 1e9)),
            frame_id="world",
        ),
        name=["j1", "j2"],
        position=np.array([i, -i], dtype=np.float64),
        velocity=np.zeros(0),
        effort=np.zeros(0),
    )
    return bytes(TS.serialize_cdr(msg, "sensor_msgs/msg/JointState"))


def string(text: str) -> bytes:
    return bytes(TS.serialize_cdr(TS.types["std_msgs/msg/String"](data=text), "std_msgs/msg/String"))


def write_bag(path: Path, n: int = 200, skip: range = range(0), corrupt: int | None = None) -> Path:
    """JointState at 100 Hz (log time = stamp + 1000 s) and a String every 10th message."""
    # Small chunks: a cut file keeps most of its complete chunks.
    w = rec.BagWriter(path, episode={"operator": "test", "object": "cube"}, threaded=False, chunk_bytes=16384)
    w.add_topic("/joint_states", "sensor_msgs/msg/JointState", [rec.qos_dict("reliable")])
    w.add_topic("/handover/state", "std_msgs/String", [rec.qos_dict("reliable", "transient_local", 1)])
    for i in range(n):
        if i in skip:
            continue
        t_ns = 1000 * 10**9 + i * 10**7
        data = joint_state(i)
        if corrupt == i:
            data = data[:4] + b"\xff\xff\xff\x7f" + data[8:14]  # cut, with a huge string length
        w.write("/joint_states", data, t_ns, t_ns - 1000)
        if i % 10 == 0:
            w.write("/handover/state", string(json.dumps({"i": i})), t_ns + 1)
    w.close()
    return path


def test_round_trip_rosbags_mcap_and_metadata(tmp_path):
    from mcap.reader import make_reader
    from mcap_ros2.decoder import DecoderFactory
    from rosbags.rosbag2 import Reader

    bag = write_bag(tmp_path / "ep")
    meta = yaml.safe_load((bag / "metadata.yaml").read_text())["rosbag2_bagfile_information"]
    assert meta["version"] == 9 and meta["storage_identifier"] == "mcap"
    assert meta["relative_file_paths"] == ["ep_0.mcap"] and meta["message_count"] == 220
    counts = {t["topic_metadata"]["name"]: t["message_count"] for t in meta["topics_with_message_count"]}
    assert counts == {"/joint_states": 200, "/handover/state": 20}
    assert meta["custom_data"][rec.STATUS_KEY] == rec.COMPLETE
    assert json.loads(meta["custom_data"][rec.EPISODE_KEY])["object"] == "cube"
    with Reader(bag) as reader:
        assert reader.message_count == 220
        types = {c.topic: c.msgtype for c in reader.connections}
        assert types["/joint_states"] == "sensor_msgs/msg/JointState"
        digests = {c.topic: c.digest for c in reader.connections}
        assert digests["/joint_states"] == rec.message_definition("sensor_msgs/msg/JointState")[1]
        positions = [
            TS.deserialize_cdr(raw, c.msgtype).position[0]
            for c, _t, raw in reader.messages()
            if c.topic == "/joint_states"
        ]
    assert positions == list(range(200))
    # The MCAP file alone: schemas (ros2msg), channels (cdr, QoS metadata), zstd chunks.
    with (bag / "ep_0.mcap").open("rb") as f:
        reader = make_reader(f)
        summary = reader.get_summary()
        assert reader.get_header().profile == "ros2"
        assert {s.encoding for s in summary.schemas.values()} == {"ros2msg"}
        assert all(c.message_encoding == "cdr" for c in summary.channels.values())
        assert all("offered_qos_profiles" in c.metadata for c in summary.channels.values())
        assert {i.compression for i in summary.chunk_indexes} == {"zstd"}
        assert [m.name for m in reader.iter_metadata()] == ["rosbag2"]
    with (bag / "ep_0.mcap").open("rb") as f:
        reader = make_reader(f, decoder_factories=[DecoderFactory()])
        decoded = [m.data for *_, m in reader.iter_decoded_messages(topics=["/handover/state"])]
    assert json.loads(decoded[-1]) == {"i": 190}


def test_header_stamp_from_cdr_bytes():
    assert rec.header_stamp_ns(joint_state(150), "sensor_msgs/msg/JointState") == 1_500_000_000
    assert rec.header_stamp_ns(string("x"), "std_msgs/msg/String") is None


def test_report_counts_gaps_and_missing_topics():
    stats = {
        "/cam": rec.TopicStats("/cam", "sensor_msgs/msg/Image", rate_hz=30.0),
        "/never": rec.TopicStats("/never", "std_msgs/msg/String", rate_hz=0.0, required=True),
        "/optional": rec.TopicStats("/optional", "std_msgs/msg/String", required=False),
    }
    period = 10**9 // 30
    kept = [i for i in range(90) if not 40 <= i < 50]  # 10 frames lost in one gap
    for i in kept:
        stats["/cam"].add(5 * 10**9 + i * period, i * period, 100)
    report = rec.episode_report(stats, (5 * 10**9, 5 * 10**9 + 89 * period), 0.99)
    cam = report["topics"]["/cam"]
    assert cam["received"] == 80 and cam["expected"] == 90
    assert cam["gap_count"] == 1 and cam["missing_in_gaps"] == 10
    assert cam["kept_fraction"] == pytest.approx(80 / 90, abs=1e-4)
    assert cam["measured_hz"] == pytest.approx(79 / (89 / 30), rel=1e-3)
    assert not cam["ok"] and "kept" in cam["problems"][0]
    assert report["topics"]["/never"]["problems"] == ["no message received"]
    assert report["topics"]["/optional"]["ok"]
    assert not report["ok"]
    table = rec.format_report(report)
    assert "/cam" in table and "no message received" in table


def test_record_config_errors_name_the_key(tmp_path):
    cfg = rec.load_record_config(Path(__file__).resolve().parents[3] / "config/record/default.yaml")
    assert cfg.topic("/joint_states").rate_hz == 250
    bad = tmp_path / "bad.yaml"
    bad.write_text("topics:\n  - {name: /a, rate: 30}\n")
    with pytest.raises(ConfigError, match=r"topics\[0\]\.rate: unknown key \(did you mean 'rate_hz'\?\)"):
        rec.load_record_config(bad)
    bad.write_text("topics:\n  - {name: a}\n")
    with pytest.raises(ConfigError, match="absolute"):
        rec.load_record_config(bad)


def test_episode_recorder_sidecar_and_discard(tmp_path):
    cfg = rec.RecordConfig(
        topics=[rec.TopicSpec("/joint_states", rate_hz=100.0), rec.TopicSpec("/missing", required=False)]
    )
    now = [10**12]
    recorder = rec.EpisodeRecorder(cfg, tmp_path, {"operator": "bob"}, clock=lambda: now[0], threaded=False)
    recorder.set_topic("/joint_states", "sensor_msgs/JointState")
    path = recorder.start(scenario="s1")
    assert json.loads((path / rec.SIDECAR).read_text())["status"] == rec.RECORDING
    for i in range(100):
        now[0] += 10**7
        recorder.on_message("/joint_states", joint_state(i), now[0])
    recorder.annotate(outcome="success")
    result = recorder.stop()
    side = json.loads((path / rec.SIDECAR).read_text())
    assert side["status"] == result["status"] == rec.COMPLETE
    assert side["episode"]["operator"] == "bob" and side["episode"]["outcome"] == "success"
    assert side["report"]["topics"]["/joint_states"]["received"] == 100
    assert side["report"]["topics"]["/joint_states"]["kept_fraction"] == 1.0
    assert rec.bag_info(path).episode["scenario"] == "s1"
    second = recorder.start()
    assert second != path and second.exists()
    assert recorder.discard() == second and not second.exists()
    with pytest.raises(rec.BagError, match="no episode"):
        recorder.stop()


def test_truncated_bag_error_then_recover(tmp_path):
    from rosbags.rosbag2 import Reader

    bag = write_bag(tmp_path / "ep", n=2000)
    mcap = bag / "ep_0.mcap"
    data = mcap.read_bytes()
    mcap.write_bytes(data[: len(data) // 2])  # as if the recorder died half-way
    with pytest.raises(rec.BagError, match=r"bag .*ep: ep_0.mcap is truncated .*dexh2r record --recover"):
        rec.open_bag(bag)
    assert replay.main([str(bag), "--check"]) == 2
    result = rec.recover_bag(bag)
    assert result["recovered"] and result["status"] == rec.INCOMPLETE
    kept = result["counts"]["/joint_states"]
    assert 0 < kept < 2000
    with Reader(bag) as reader:  # indexed again: rosbags reads it
        assert reader.message_count == sum(result["counts"].values())
    with pytest.raises(rec.BagError, match="status is 'incomplete', not 'complete'"):
        rec.open_bag(bag)
    assert rec.check_bag(bag, allow_incomplete=True)["counts"]["/joint_states"] == kept


def test_missing_topic_and_corrupt_message_errors(tmp_path, capsys):
    bag = write_bag(tmp_path / "ep", corrupt=57)
    assert replay.main([str(bag), "--check", "--require", "/camera_0/color/image_raw"]) == 2
    err = capsys.readouterr().err
    assert "ep" in err and "/camera_0/color/image_raw" in err and "not in the bag" in err
    assert replay.main([str(bag), "--check", "--topics", "/nope"]) == 2
    assert "no topic(s) ['/nope']" in capsys.readouterr().err
    assert replay.main([str(bag), "--check"]) == 2
    err = capsys.readouterr().err
    # bag, topic and time of the bad message (message 57: log time 1000.57 s)
    assert f"bag {bag}" in err and "corrupt message on /joint_states" in err and "0.570 s into the bag" in err


def test_damaged_chunk_error_names_bag_and_time(tmp_path):
    bag = write_bag(tmp_path / "ep", n=3000)
    mcap = bag / "ep_0.mcap"
    data = bytearray(mcap.read_bytes())
    for at in range(len(data) // 3, len(data) // 2, 2048):
        data[at : at + 16] = bytes(16)  # zero stretches of the middle chunks
    mcap.write_bytes(bytes(data))
    with pytest.raises(rec.BagError, match=r"bag .*ep: (unreadable data|corrupt message)"):
        rec.check_bag(bag)


def test_find_unfinished(tmp_path):
    w = rec.BagWriter(tmp_path / "dead", threaded=False)
    w.add_topic("/joint_states", "sensor_msgs/msg/JointState")
    w.write("/joint_states", joint_state(0), 10**9)
    w.abort()
    write_bag(tmp_path / "fine")
    assert rec.find_unfinished(tmp_path) == [tmp_path / "dead"]
    assert rec.bag_info(tmp_path / "dead").status == rec.RECORDING
    shutil.rmtree(tmp_path / "fine")


def test_record_cli_recover_check_info(tmp_path, capsys):
    from dexh2r_teleop.recorder_node import cli

    bag = write_bag(tmp_path / "ep", n=2000)
    mcap = bag / "ep_0.mcap"
    mcap.write_bytes(mcap.read_bytes()[:-5000])
    assert cli(["--check", str(bag)]) == 1
    assert "truncated" in capsys.readouterr().err
    assert cli(["--recover", str(bag)]) == 0
    assert json.loads(capsys.readouterr().out)["status"] == rec.INCOMPLETE
    assert cli(["--check", str(bag)]) == 0
    assert cli(["--info", str(bag)]) == 0
    out = capsys.readouterr().out
    assert "status incomplete" in out and "/joint_states" in out


def test_replay_schedule_window_rate_and_generated_clock(tmp_path):
    bag = write_bag(tmp_path / "ep", n=100)  # 1 s of joint states, no /clock in the bag
    info = rec.open_bag(bag)
    opts = replay.ReplayOptions(bag=bag, topics=["/joint_states"], rate=2.0, start_s=0.2, duration_s=0.5)
    topics = replay.selected_topics(info, opts)
    assert topics == ["/joint_states"]
    items = list(replay.schedule(info, opts, topics))
    msgs = [(t, m) for t, m in items if isinstance(m, rec.RawMessage)]
    ticks = [(t, c) for t, c in items if isinstance(c, int)]
    assert len(msgs) == 51  # 0.2 s .. 0.7 s at 100 Hz, both ends
    assert msgs[0][0] == 0.0 and msgs[-1][0] == pytest.approx(0.25)  # 0.5 s of bag at 2x
    assert [t for t, _ in items] == sorted(t for t, _ in items)
    assert ticks[0][1] == info.start_ns + 200_000_000 and len(ticks) == 51  # 100 Hz bag-time clock
    with pytest.raises(ValueError, match="rate"):
        replay.ReplayOptions(bag=bag, rate=0.0)
