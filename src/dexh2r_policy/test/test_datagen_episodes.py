"""`dexh2r datagen episodes`: expert handovers recorded in the DexH2R layout, end to end.

One short CLI run (3 generated scenarios: two on train objects, one on a held-out object) is shared
by the tests; the cheapest settings (10 Hz, 256 points per frame).
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import mujoco
import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation

from dexh2r_policy import datagen
from dexh2r_policy.data.dexh2r_layout import DexH2RDataset
from dexh2r_policy.episodes import EpisodeConfig, EpisodeRecorder, episode_scenarios, object_name
from dexh2r_sim.objects import ObjectLibrary

POINTS = 256


@pytest.fixture(scope="module")
def library() -> ObjectLibrary:
    return ObjectLibrary()


@pytest.fixture(scope="module")
def run(tmp_path_factory, library) -> Path:
    out = tmp_path_factory.mktemp("episodes")
    argv = ["episodes", "--episodes", "3", "--held-out-fraction", "0.34", "--out", str(out)]
    assert datagen.main([*argv, "--points", str(POINTS), "--pools", "data/pools"]) == 0
    return out


def _records(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "episodes.jsonl").read_text().splitlines() if line.strip()]


def test_scenarios_hold_out_objects(library) -> None:
    scenarios = episode_scenarios("scenarios/train.yaml", 10, library, held_out_fraction=0.3)
    held = set(library.ids("test"))
    assert len(scenarios) == 10 and len({s.name for s in scenarios}) == 10
    assert sum(s.object_id in held for s in scenarios) == 3  # the held-out share, by construction
    assert all(s.object_scale == 1.0 for s in scenarios)  # the grasp pools' scale
    assert {s.difficulty for s in scenarios} <= {"easy", "hard"}


def test_layout_loads_with_consistent_shapes(run: Path) -> None:
    ds = DexH2RDataset(run)
    ids = ds.all_sequence_ids()
    written = [r for r in _records(run) if r["sequence"]]
    assert written and sorted(str(i) for i in ids) == sorted(r["sequence"] for r in written)
    for seq_id in ids:
        seq = ds.load(seq_id)
        T = seq.n_frames
        assert seq.qpos.shape == (T, 30) and seq.obj_pose.shape == (T, 4, 4)
        assert seq.obj_pcd.shape == (T, POINTS, 3) and seq.giver_keypoints.shape == (T, 21, 3)
        assert seq.mano is None and seq.mano_side in ("left", "right")
        assert 0 < seq.grasp_begin_frame < T
        np.testing.assert_array_equal(seq.hand_joints[:, :2], 0.0)  # wrist folded into the root
        info = ds.sequence_info(seq_id)
        assert info["frames"] == T and info["rate_hz"] == 10.0 and info["outcome"] == "success"
        # About one frame per 0.1 s of the episode, which ends at the outcome.
        assert abs(T - info["time_s"] * 10.0) <= 1.5
        assert torch.load(seq_id.path(run) / "robot_joints.pt").shape == (T, 30)
        # Surface samples of every object, for the offline metrics.
        points, normals = ds.object_surface_points(seq_id.object)
        assert points.shape == (4096, 3) and normals is not None


def test_qpos_reproduces_the_robot_hand(run: Path) -> None:
    """The floating hand at qpos (root pose, wrist 0) puts every finger link where the robot's
    measured joints put it."""
    from dexh2r_core.robot.description import RobotDescription
    from dexh2r_policy.grasps.stability import HAND_PREFIX, build_hand_spec

    robot = RobotDescription.load("ur5_shadow")
    ds = DexH2RDataset(run)
    seq_id = ds.all_sequence_ids()[0]
    seq = ds.load(seq_id)
    joints = torch.load(seq_id.path(run) / "robot_joints.pt").numpy().astype(float)
    full = robot.mujoco_model()
    fd = mujoco.MjData(full)
    hand = build_hand_spec(robot).compile()
    hd = mujoco.MjData(hand)
    links = ["rh_palm", "rh_ffdistal", "rh_mfdistal", "rh_thdistal", "rh_lfdistal"]
    for t in (0, seq.grasp_begin_frame, seq.n_frames - 1):
        fd.qpos[robot.mujoco_qpos_index(full)] = joints[t]
        mujoco.mj_kinematics(full, fd)
        hd.mocap_pos[0] = seq.qpos[t, :3]
        hd.mocap_quat[0] = Rotation.from_rotvec(seq.qpos[t, 3:6]).as_quat(scalar_first=True)
        for name, value in zip(robot.hand_joint_names, seq.qpos[t, 6:], strict=True):
            j = mujoco.mj_name2id(hand, mujoco.mjtObj.mjOBJ_JOINT, HAND_PREFIX + name)
            if j >= 0:
                hd.qpos[hand.jnt_qposadr[j]] = value
        mujoco.mj_kinematics(hand, hd)
        for link in links:
            np.testing.assert_allclose(hd.body(HAND_PREFIX + link).xpos, fd.body(link).xpos, atol=1e-4)


def test_cloud_lies_on_the_object(run: Path, library) -> None:
    from dexh2r_perception.object_tracking import ObjectModel

    ds = DexH2RDataset(run)
    seq_id = ds.all_sequence_ids()[0]
    seq = ds.load(seq_id)
    info = json.loads((seq_id.path(run) / "episode_info.json").read_text())
    assert info["cloud_sources"]["observed"] > seq.n_frames // 2  # mostly seen by the cameras
    model = ObjectModel.from_library(info["object_id"], info["object_scale"])
    for t in (0, seq.grasp_begin_frame):
        T = seq.obj_pose[t].astype(float)
        local = (seq.obj_pcd[t] - T[:3, 3]) @ T[:3, :3]
        d, _ = model.tree.query(local)
        assert np.median(d) < 0.006 and d.max() < 0.02


def test_split_is_by_object_with_held_out_objects(run: Path, library) -> None:
    ds = DexH2RDataset(run)
    held = {object_name(o) for o in library.ids("test")}
    split = ds.split
    assert split["test_obj"] and set(split["test_obj"]) <= held
    assert not set(split["train_obj"]) & held
    assert len(split["train_sub_names"]) == 8 and split["val_sub_names"] and split["test_sub_names"]
    train = {str(s) for s in ds.sequence_ids("motionnet_train")}
    for seq_id in ds.all_sequence_ids():
        if seq_id.object in held:
            assert str(seq_id) not in train and str(seq_id) in {
                str(s) for s in ds.sequence_ids("motionnet_test")
            }
    objects = ds.objects()
    assert set(objects) == set(split["train_obj"]) | set(split["test_obj"])
    assert all(o["pool_file"] == f"data/pools/{n}.npz" for n, o in objects.items())


def test_summary_counts_every_episode(run: Path) -> None:
    records = _records(run)
    summary = json.loads((run / "summary.json").read_text())
    assert len(records) == summary["episodes"] == 3
    ok = sum(r["outcome"] == "success" for r in records)
    assert summary["expert"]["all"]["success"] == ok == summary["written_sequences"]
    assert summary["seconds_per_episode"] > 0
    for r in records:
        assert (r["sequence"] is not None) == (r["outcome"] == "success")
    # A second run with the same settings resumes: nothing is run again.
    before = (run / "episodes.jsonl").read_text()
    assert (
        datagen.main(["episodes", "--episodes", "3", "--held-out-fraction", "0.34", "--out", str(run)]) == 0
    )
    assert (run / "episodes.jsonl").read_text() == before


def test_failed_expert_episode_is_not_written(tmp_path: Path, library) -> None:
    scenario = episode_scenarios("scenarios/train.yaml", 1, library, held_out_fraction=0.0)[0]
    short = replace(scenario, name="too_short", time_limit_s=1.0)  # over before the expert can grasp
    datagen._episode_init(EpisodeConfig(n_points=64))
    try:
        row = datagen._episode_worker((0, short, "giver00", str(tmp_path), "data/pools/x.npz"))
    finally:
        datagen._RECORDER.close()
        datagen._RECORDER = None
    assert row["outcome"] == "timeout" and row["sequence"] is None
    assert not any(tmp_path.iterdir())


def test_bad_arguments(tmp_path: Path, capsys) -> None:
    assert datagen.main(["episodes", "--episodes", "0", "--out", str(tmp_path)]) == 2
    assert datagen.main(["episodes", "--out", str(tmp_path), "--held-out-objects", "prim/nope"]) == 2
    assert "prim/nope" in capsys.readouterr().err
    with pytest.raises(ValueError, match="rate_hz"):
        EpisodeConfig(rate_hz=500.0)
    with pytest.raises(ValueError, match="cloud"):
        EpisodeRecorder(EpisodeConfig(cloud="lidar"))  # type: ignore[arg-type]
