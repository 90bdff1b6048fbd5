"""The DexH2R layout reader/writer: round trip on small synthetic files, split rules, clear errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from dexh2r_policy.data.dexh2r_layout import (
    DatasetError,
    DexH2RDataset,
    DexH2RSequence,
    SequenceId,
    in_split,
    read_sequence,
    write_object_surface,
    write_sequence,
    write_split,
)

SPLIT = {
    "train_sub_names": ["s1"],
    "val_sub_names": ["s2"],
    "test_sub_names": ["s3"],
    "train_obj": ["cup"],
    "val_obj": ["ball"],
    "test_obj": ["duck"],
}


def _sequence(subject: str = "s1", obj: str = "cup", seq: str = "0", T: int = 6) -> DexH2RSequence:
    rng = np.random.default_rng(hash((subject, obj, seq)) % 2**32)
    pose = np.repeat(np.eye(4, dtype=np.float32)[None], T, axis=0)
    pose[:, :3, 3] = rng.normal(size=(T, 3))
    return DexH2RSequence(
        id=SequenceId(subject, obj, seq),
        qpos=rng.normal(size=(T, 30)).astype(np.float32),
        obj_pose=pose,
        obj_pcd=rng.normal(size=(T, 32, 3)).astype(np.float32),
        mano=rng.normal(size=(T, 61)).astype(np.float32),
        mano_side="left",
        grasp_begin_frame=4,
    )


@pytest.fixture
def root(tmp_path: Path) -> Path:
    write_split(tmp_path, SPLIT)
    for subject in ("s1", "s2", "s3"):
        for obj in ("cup", "ball", "duck"):
            write_sequence(tmp_path, _sequence(subject, obj))
    write_sequence(tmp_path, _sequence("s1", "cup", "10"))
    return tmp_path


def test_round_trip(root: Path) -> None:
    ds = DexH2RDataset(root)
    ids = ds.all_sequence_ids()
    assert len(ids) == 10
    assert [str(i) for i in ids[:2]] == ["s1/ball/0", "s1/cup/0"]
    assert str(ids[2]) == "s1/cup/10"
    want = _sequence("s1", "cup", "0")
    got = ds.load("s1/cup/0")
    for name in ("qpos", "obj_pose", "obj_pcd", "mano"):
        np.testing.assert_array_equal(getattr(got, name), getattr(want, name))
    assert got.mano_side == "left" and got.grasp_begin_frame == 4 and got.n_frames == 6
    assert got.giver_keypoints is None and ds.sequence_info("s1/cup/0") == {} and ds.objects() == {}
    assert got.hand_joints.shape == (6, 24) and got.approach() == slice(0, 4)


def test_extra_point_channels_are_dropped(tmp_path: Path) -> None:
    seq = _sequence()
    write_sequence(tmp_path, seq, pcd_extra=np.ones((6, 32, 3), np.float32))
    assert torch.load(tmp_path / "s1/cup/0/real_obj_pcd_xyz.pt").shape == (6, 32, 6)
    np.testing.assert_array_equal(read_sequence(tmp_path / "s1/cup/0").obj_pcd, seq.obj_pcd)


def test_split_rules(root: Path) -> None:
    ds = DexH2RDataset(root)
    names = lambda split: {f"{s.subject}/{s.object}" for s in ds.sequence_ids(split)}  # noqa: E731
    assert names("motionnet_train") == {"s1/cup"}
    assert names("motionnet_test") == {"s1/duck", "s3/cup", "s2/ball", "s2/duck", "s3/ball", "s3/duck"}
    assert names("dp_val") == {"s2/ball", "s1/ball", "s2/cup"}
    assert names("dp_test") == {"s3/cup", "s3/ball", "s3/duck", "s1/duck", "s2/duck"}
    assert names("cvae_train") == {"s1/cup", "s2/cup", "s3/cup"}
    assert names("cvae_test") == names("all") - names("cvae_train")
    assert not in_split(SPLIT, "s1", "cup", "dp_val")


def test_surface_points(tmp_path: Path) -> None:
    pts = np.random.default_rng(0).normal(size=(16, 3)).astype(np.float32)
    normals = pts / np.linalg.norm(pts, axis=1, keepdims=True)
    write_split(tmp_path, SPLIT)
    write_object_surface(tmp_path, "cup", pts, normals)
    p, n = DexH2RDataset(tmp_path).object_surface_points("cup")
    np.testing.assert_allclose(p, pts, atol=1e-5)
    np.testing.assert_allclose(n, normals, atol=1e-5)
    with pytest.raises(DatasetError, match=r"ball\.ply: missing file"):
        DexH2RDataset(tmp_path).object_surface_points("ball")


def _break(folder: Path, name: str, value) -> None:
    torch.save(torch.as_tensor(value), folder / name)


@pytest.mark.parametrize(
    ("action", "match"),
    [
        (lambda f: (f / "qpos.pt").unlink(), r"qpos.pt: missing file"),
        (lambda f: (f / "motion_info.yaml").unlink(), r"motion_info.yaml: missing file"),
        (lambda f: (f / "left_mano.pt").unlink(), r"right_mano.pt: missing file"),
        (lambda f: _break(f, "qpos.pt", np.zeros((6, 28), np.float32)), r"qpos.pt: wrong shape \[6, 28\]"),
        (lambda f: _break(f, "obj_pose.pt", np.zeros((5, 4, 4), np.float32)), r"obj_pose.pt: wrong shape"),
        (lambda f: _break(f, "real_obj_pcd_xyz.pt", np.zeros((6, 8, 2), np.float32)), r"pcd_xyz.pt: wrong"),
        (lambda f: _break(f, "left_mano.pt", np.full((6, 61), np.nan, np.float32)), r"mano.pt: contains NaN"),
        (lambda f: (f / "motion_info.yaml").write_text("grasp_begin_frame_index: 9\n"), r"outside \[0, 6\]"),
        (lambda f: (f / "motion_info.yaml").write_text("other: 1\n"), r"must be an integer"),
        (lambda f: (f / "qpos.pt").write_bytes(b"junk"), r"qpos.pt: cannot read"),
    ],
    ids=["no-qpos", "no-info", "no-mano", "qpos", "pose", "pcd", "nan", "grasp", "key", "junk"],
)
def test_errors_name_file_and_problem(tmp_path: Path, action, match: str) -> None:
    folder = write_sequence(tmp_path, _sequence())
    action(folder)
    with pytest.raises(DatasetError, match=match) as info:
        read_sequence(folder)
    assert str(folder) in str(info.value)


def test_bad_split_file(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match=r"dataset_split\.json: missing file"):
        DexH2RDataset(tmp_path)
    (tmp_path / "dataset_split.json").write_text(json.dumps({"train_obj": []}))
    with pytest.raises(DatasetError, match=r"missing key\(s\)"):
        DexH2RDataset(tmp_path)


def test_writer_refuses_bad_records(tmp_path: Path) -> None:
    seq = _sequence()
    seq.qpos[0, 0] = np.nan
    with pytest.raises(DatasetError, match="NaN"):
        write_sequence(tmp_path, seq)


def _keypoint_sequence(T: int = 6, side: str | None = "right") -> DexH2RSequence:
    """A sim-episode record: giver keypoints instead of MANO parameters."""
    seq = _sequence(T=T)
    seq.giver_keypoints = np.random.default_rng(1).normal(size=(T, 21, 3)).astype(np.float32)
    seq.mano, seq.mano_side = None, side
    return seq


def test_giver_keypoints_replace_mano(tmp_path: Path) -> None:
    seq = _keypoint_sequence()
    folder = write_sequence(tmp_path, seq)
    assert not (folder / "left_mano.pt").exists() and not (folder / "right_mano.pt").exists()
    got = read_sequence(folder)
    assert got.mano is None and got.mano_side == "right"
    np.testing.assert_array_equal(got.giver_keypoints, seq.giver_keypoints)
    np.testing.assert_array_equal(got.qpos, seq.qpos)
    # The side is optional without MANO; a MANO sequence may carry keypoints too.
    assert read_sequence(write_sequence(tmp_path, _keypoint_sequence(side=None))).mano_side is None
    both = _sequence()
    both.giver_keypoints = seq.giver_keypoints
    got = read_sequence(write_sequence(tmp_path, both))
    assert got.mano_side == "left" and got.mano is not None and got.giver_keypoints is not None
    # Rewriting a keypoint sequence over a MANO one leaves no stale MANO file behind.
    assert read_sequence(write_sequence(tmp_path, _keypoint_sequence())).mano is None


@pytest.mark.parametrize(
    ("action", "match"),
    [
        (
            lambda f: (f / "giver_keypoints.pt").unlink(),
            r"right_mano.pt: missing file \(and no giver_keypoints",
        ),
        (
            lambda f: _break(f, "giver_keypoints.pt", np.zeros((6, 20, 3), np.float32)),
            r"wrong shape \[6, 20, 3\]",
        ),
        (
            lambda f: _break(f, "giver_keypoints.pt", np.zeros((5, 21, 3), np.float32)),
            r"keypoints.pt: wrong shape",
        ),
        (
            lambda f: (f / "motion_info.yaml").write_text("grasp_begin_frame_index: 4\ngiver_side: up\n"),
            r"giver_side must be left or right",
        ),
    ],
    ids=["no-giver", "keypoints", "frames", "side"],
)
def test_keypoint_sequence_errors(tmp_path: Path, action, match: str) -> None:
    folder = write_sequence(tmp_path, _keypoint_sequence())
    action(folder)
    with pytest.raises(DatasetError, match=match) as info:
        read_sequence(folder)
    assert str(folder) in str(info.value)


def test_writer_needs_a_giver_hand(tmp_path: Path) -> None:
    seq = _keypoint_sequence()
    seq.giver_keypoints = None
    with pytest.raises(DatasetError, match="no giver hand"):
        write_sequence(tmp_path, seq)
