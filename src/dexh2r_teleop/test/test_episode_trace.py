"""The per-step trace of a recorded sim handover (`dexh2r record --trace`, episode_trace).

A synthetic episode bag with known truth: the object still at x = 0.6, its tracked pose 5 mm
off along y and 10 deg off about z from 1 s on; the palm closing in on it at 10 cm/s; the policy
in approach, then align from 1.0 s (its state placed in sim time through the sim's log times,
which run at half the sim's speed, as at rtf 0.5); the giver carrying the object until 1.5 s,
then released; a 3 N contact at 1.2 s only.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from dexh2r_teleop import recorder as rec
from dexh2r_teleop.episode_trace import episode_outcome, episode_trace, format_trace
from dexh2r_teleop.recorder_node import cli

TS = rec.typestore()
LOG0 = 1_700_000_000 * 10**9
RTF = 0.5


def _log(t: float) -> int:
    return LOG0 + round(t / RTF * 1e9)


def _pose(t: float, xyz, yaw: float = 0.0) -> bytes:
    sec, nsec = divmod(round(t * 1e9), 10**9)
    q = Rotation.from_rotvec([0.0, 0.0, yaw]).as_quat()
    msg = TS.types["geometry_msgs/msg/PoseStamped"](
        header=TS.types["std_msgs/msg/Header"](
            stamp=TS.types["builtin_interfaces/msg/Time"](sec=int(sec), nanosec=int(nsec)), frame_id="world"
        ),
        pose=TS.types["geometry_msgs/msg/Pose"](
            position=TS.types["geometry_msgs/msg/Point"](x=float(xyz[0]), y=float(xyz[1]), z=float(xyz[2])),
            orientation=TS.types["geometry_msgs/msg/Quaternion"](x=q[0], y=q[1], z=q[2], w=q[3]),
        ),
    )
    return bytes(TS.serialize_cdr(msg, "geometry_msgs/msg/PoseStamped"))


def _string(data: dict) -> bytes:
    msg = TS.types["std_msgs/msg/String"](data=json.dumps(data))
    return bytes(TS.serialize_cdr(msg, "std_msgs/msg/String"))


def make_episode(path, *, topics=None):
    w = rec.BagWriter(path, threaded=False)
    types = {
        "/sim/object/pose": "geometry_msgs/msg/PoseStamped",
        "/perception/object/pose": "geometry_msgs/msg/PoseStamped",
        "/sim/robot/palm": "geometry_msgs/msg/PoseStamped",
        "/policy/hand_target/wrist": "geometry_msgs/msg/PoseStamped",
        "/policy/state": "std_msgs/msg/String",
        "/sim/state": "std_msgs/msg/String",
        "/sim/contacts": "std_msgs/msg/String",
        "/sim/outcome": "std_msgs/msg/String",
    }
    topics = topics or list(types)
    for topic in topics:
        w.add_topic(topic, types[topic], [rec.qos_dict("reliable")])
    events = []
    for i in range(61):  # 30 Hz for 2 s
        t = i / 30
        events.append((t, "/sim/object/pose", _pose(t, (0.6, 0.0, 0.3))))
        off = (0.005, 0.175) if t >= 1.0 else (0.0, 0.0)
        events.append((t + 0.01, "/perception/object/pose", _pose(t, (0.6, off[0], 0.3), off[1])))
        events.append((t, "/sim/robot/palm", _pose(t, (0.6 - 0.3 + 0.1 * t, 0.0, 0.3))))
        events.append((t, "/policy/hand_target/wrist", _pose(t, (0.6 - 0.3 + 0.1 * t + 0.02, 0.0, 0.3))))
        support = 1.0 if t < 1.5 else None
        giver = "offering" if t < 1.5 else "releasing"
        force = [3.0, -4.0, 1.0] if t < 1.5 else None
        state = {"giver": giver, "giver_support": support, "giver_force": force, "time": t}
        events.append((t, "/sim/state", _string(state)))
        if abs(t - 1.2) < 1e-6:
            contact = {"robot_geom": "rh_C_thdistal", "giver_geom": "giver/C_ffdistal", "normal_force_n": 3.0}
            events.append((t, "/sim/contacts", _string({"time": t, "contacts": [contact]})))
    for i in range(20):  # the policy at 10 Hz: no header stamp, placed by its log time
        t = i / 10 + 0.02
        state = {"phase": "align" if t >= 1.0 else "approach", "goal": 7}
        events.append((t, "/policy/state", _string(state)))
    outcome = {
        "outcome": "hit-human",
        "time_s": 2.01,
        "detail": "robot geom rh_C_thdistal / giver/C_thdistal: 1.3 N",
    }
    events.append((2.01, "/sim/outcome", _string(outcome)))
    for t, topic, data in sorted(events, key=lambda e: e[0]):
        if topic in topics:
            w.write(topic, data, _log(t))
    w.close()
    return path


def test_trace_rows_measure_tracking_error_palm_target_phase_support_and_contact(tmp_path):
    rows = episode_trace(make_episode(tmp_path / "ep"), every_s=0.1)
    by_t = {round(r["t"], 1): r for r in rows}
    assert len(rows) == 21 and by_t[0.0]["t"] == 0.0 and by_t[2.0]["t"] == 2.0
    early, late = by_t[0.5], by_t[1.3]
    assert early["object_error_m"] == pytest.approx(0.0, abs=1e-9)
    assert late["object_error_m"] == pytest.approx(0.005, abs=1e-6)
    assert late["object_error_deg"] == pytest.approx(np.degrees(0.175), abs=1e-3)
    assert early["palm_to_object_m"] == pytest.approx(0.3 - 0.05, abs=1e-6)
    assert early["palm_to_target_m"] == pytest.approx(0.02, abs=1e-6)
    # The policy's state comes from its log time mapped to sim time (rtf 0.5 here).
    assert early["phase"] == "approach" and late["phase"] == "align" and late["goal"] == 7
    assert by_t[1.4]["giver_support"] == 1.0 and by_t[1.6]["giver_support"] is None
    assert by_t[1.6]["giver"] == "releasing"
    assert by_t[1.4]["giver_force"] == [3.0, -4.0, 1.0] and by_t[1.6]["giver_force"] is None
    assert by_t[1.2]["contact_n"] == 3.0 and by_t[1.1]["contact_n"] == 0.0 and by_t[1.3]["contact_n"] == 0.0
    table = format_trace(rows)
    assert table.splitlines()[0].split()[:3] == ["t", "phase", "goal"] and len(table.splitlines()) == 22
    assert table.splitlines()[0].split()[-3:] == ["tug", "contact", "N"]
    assert table.splitlines()[15].split()[-2] == "5.0"  # t = 1.4: the horizontal size of (3, -4)
    assert table.splitlines()[17].split()[-2] == "-"  # released


def test_trace_without_perception_or_policy_topics_leaves_their_columns_empty(tmp_path):
    bag = make_episode(tmp_path / "ep", topics=["/sim/object/pose", "/sim/robot/palm", "/sim/state"])
    rows = episode_trace(bag)
    assert rows and all(r["object_error_m"] is None and r["phase"] is None for r in rows)
    assert all(r["palm_to_target_m"] is None for r in rows)
    assert episode_outcome(bag) is None


def test_trace_of_a_bag_without_the_sim_truth_names_the_missing_topics(tmp_path, capsys):
    bag = make_episode(tmp_path / "ep", topics=["/perception/object/pose", "/policy/state"])
    with pytest.raises(rec.BagError, match=r"/sim/object/pose.*config/record/demo.yaml"):
        episode_trace(bag)
    assert cli(["--trace", str(bag)]) == 1
    assert "/sim/robot/palm" in capsys.readouterr().err


def test_record_trace_cli_prints_the_table_and_writes_json(tmp_path, capsys):
    bag = make_episode(tmp_path / "ep")
    out = tmp_path / "trace.json"
    assert cli(["--trace", str(bag), "--every", "0.5", "--json", str(out)]) == 0
    rows = json.loads(out.read_text())
    assert [r["t"] for r in rows] == [0.0, 0.5, 1.0, 1.5, 2.0]
    out = capsys.readouterr().out
    assert "contact N" in out
    # the contact that ended the episode came after the last frame: the outcome line names it
    assert (
        out.rstrip().splitlines()[-1]
        == "outcome at 2.01 s: hit-human (robot geom rh_C_thdistal / giver/C_thdistal: 1.3 N)"
    )
    assert episode_outcome(bag)["outcome"] == "hit-human"
