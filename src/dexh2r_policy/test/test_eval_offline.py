"""The offline benchmark (`dexh2r eval offline`) on tiny synthetic DexH2R-layout data: one
MotionNet episode end to end, the expert upper bound, the metrics, and clear errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from dexh2r_core.config import to_dict
from dexh2r_policy.eval_cli import SUBCOMMANDS
from dexh2r_policy.eval_offline import Penetration, main, summarize
from dexh2r_policy.models.hand_surface import HandSurface
from dexh2r_policy.models.synthetic import write_synthetic_handovers
from dexh2r_policy.motionnet import MotionNet, save_checkpoint
from dexh2r_policy.train import TrainConfig, load_train_config

KEYS = {"success", "safety", "pen_depth_mm", "pen_frames", "frames_to_grasp", "episodes"}


@pytest.fixture(scope="module")
def setup(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("offline")
    write_synthetic_handovers(
        root / "data", root / "pools", seqs_per_pair=1, T=30, grasp_begin=20, n_cloud=64
    )
    cfg_data = {
        "name": "tiny",
        "model": {
            "n_points": 32,
            "n_surface": 16,
            "point_dims": [16, 32],
            "trunk": [32, 32, 32],
            "block_inner": 16,
        },
        "data": {"root": str(root / "data"), "pools": str(root / "pools")},
        "policy": {"cloud_sample": "random", "align_after_frames": 8},
    }
    (root / "tiny.yaml").write_text(yaml.safe_dump(cfg_data))
    cfg: TrainConfig = load_train_config(root / "tiny.yaml")
    save_checkpoint(root / "tiny.pt", MotionNet(cfg.model), config=to_dict(cfg), data_hash="x", step=0)
    return {"root": root, "config": root / "tiny.yaml", "ckpt": root / "tiny.pt"}


def test_registered() -> None:
    assert SUBCOMMANDS["offline"][0] == "dexh2r_policy.eval_offline:main"


def test_one_motionnet_episode(setup: dict, tmp_path: Path) -> None:
    out = tmp_path / "mn.json"
    args = [
        "--policy",
        "motionnet",
        "--mode",
        "easy",
        "--split",
        "test",
        "--json",
        str(out),
        "--checkpoint",
        str(setup["ckpt"]),
        "--limit",
        "1",
    ]
    assert main(args) == 0
    result = json.loads(out.read_text())
    assert set(result) >= KEYS and result["episodes"] == 1
    assert 0.0 <= result["safety"] <= 1.0 and result["frames_to_grasp"] > 0
    rows = (tmp_path / "mn" / "episodes.jsonl").read_text().splitlines()
    assert len(rows) == 1
    assert summarize(tmp_path / "mn") == result  # the metrics are a function of the folder


def test_expert_upper_bound_reaches_the_grasp(setup: dict, tmp_path: Path) -> None:
    out = tmp_path / "expert.json"
    args = [
        "--policy",
        "expert",
        "--mode",
        "easy",
        "--split",
        "test",
        "--json",
        str(out),
        "--config",
        str(setup["config"]),
    ]
    assert main(args) == 0
    result = json.loads(out.read_text())
    assert result["episodes"] >= 5 and result["success"] == 1.0 and result["reached"] == 1.0
    assert result["frames_to_grasp"] < 25  # snapped before the end of the 30-frame sequences
    hard = tmp_path / "expert_hard.json"
    assert main([*args[:3], "hard", *args[4:6], "--json", str(hard), "--config", str(setup["config"])]) == 0
    # Hard mode switches only while the object moves: the synthetic static sequences never do.
    assert json.loads(hard.read_text())["success"] < 1.0


def test_errors(setup: dict, tmp_path: Path, capsys) -> None:
    args = ["--policy", "motionnet", "--json", str(tmp_path / "x.json")]
    assert main([*args, "--checkpoint", str(tmp_path / "nope.pt")]) == 2
    assert "checkpoint not found" in capsys.readouterr().err
    assert main([*args, "--checkpoint", str(setup["ckpt"]), "--pools", str(tmp_path)]) == 2
    assert "no grasp pool for object" in capsys.readouterr().err
    assert main([*args, "--checkpoint", str(setup["ckpt"]), "--split", "nosuch"]) == 2
    assert "unknown split" in capsys.readouterr().err
    assert main([*args, "--checkpoint", str(setup["ckpt"]), "--pool-families", "power,fist"]) == 2
    assert "grasp families ['fist']" in capsys.readouterr().err
    assert main([*args, "--checkpoint", str(setup["ckpt"]), "--data", str(tmp_path / "none")]) == 2
    assert "no dataset there" in (err := capsys.readouterr().err) and "dexh2r datagen episodes" in err


def test_guard_margin_and_pool_families_are_recorded(setup: dict, tmp_path: Path) -> None:
    """`--guard-margin M` turns the collision guard on (0: off, whatever the checkpoint says); the
    run's config records it and the pool families used."""
    base = ["--policy", "motionnet", "--checkpoint", str(setup["ckpt"]), "--limit", "1", "--split", "test"]
    for margin, on in (("0.01", True), ("0", False)):
        out = tmp_path / f"g{margin}.json"
        assert main([*base, "--guard-margin", margin, "--pool-families", "power", "--json", str(out)]) == 0
        config = json.loads((tmp_path / f"g{margin}" / "config.json").read_text())
        assert config["policy_config"]["collision_guard"] is on
        assert config["pool_families"] == ["power"]


def test_penetration_depth() -> None:
    """A hand point 1 cm inside a sphere counts 1 cm deep (normal test of the official code)."""
    rng = np.random.default_rng(0)
    v = rng.normal(size=(4000, 3))
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    hs = HandSurface.for_robot("ur5_shadow", 16)
    pen = Penetration(0.05 * v, v, hs)
    q = np.zeros(22)
    pts = hs.points(q)
    T = np.eye(4)
    T[:3, 3] = -pts[0] + np.array([0.0, 0.0, 0.04])  # point 0 at 4 cm from the centre of a 5 cm sphere
    far = np.eye(4)
    far[:3, 3] = [1.0, 0.0, 0.0]
    obj = np.eye(4)
    depth = pen.depth(T, q, obj)
    assert depth >= 0.009
    assert pen.depth(T, q, far) == 0.0  # the object 1 m away: nothing inside


def test_collision_guard_moves_a_hand_out_of_the_object_and_keeps_its_posture():
    from dexh2r_policy.models.hand_surface import HandSurface
    from dexh2r_policy.models.penetration import CollisionGuard, Penetration

    rng = np.random.default_rng(0)
    v = rng.normal(size=(2000, 3))
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    sphere, normals = 0.05 * v, v  # a 5 cm ball
    hs = HandSurface.for_robot("ur5_shadow", 225)
    q = np.zeros(hs.n_fingers)
    T_obj = np.eye(4)
    T_obj[:3, 3] = [0.6, 0.0, 0.3]
    T_hand = np.eye(4)
    T_hand[:3, 3] = T_obj[:3, 3] + [0.0, 0.0, 0.02]  # the hand's root inside the ball
    metric = Penetration(sphere, normals, HandSurface.for_robot("ur5_shadow", None))
    assert metric.depth(T_hand, q, T_obj) > 0.01
    guard = CollisionGuard(sphere[::2], normals[::2], hs, margin_m=0.01)
    T_out, moved = guard.apply(T_hand, q, T_obj)
    assert metric.depth(T_out, q, T_obj) == 0.0 and 0.0 < moved < guard.max_push_m
    assert np.allclose(T_out[:3, :3], T_hand[:3, :3])  # rotation kept
    out_dir = (T_out[:3, 3] - T_obj[:3, 3]) / np.linalg.norm(T_out[:3, 3] - T_obj[:3, 3])
    assert out_dir[2] > 0.99  # pushed away from the centre, along the approach ray
    far = T_hand.copy()
    far[:3, 3] += [0.0, 0.0, 0.5]
    assert guard.apply(far, q, T_obj)[1] == 0.0  # a clear target is left alone
