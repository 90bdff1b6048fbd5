"""MotionNet training on tiny synthetic DexH2R-layout data: windows, loss going down, checkpoints
that resume, clear config errors, and 2-process DDP (gloo on CPU)."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from dexh2r_policy.data.dexh2r_layout import DexH2RDataset
from dexh2r_policy.dynamic_grasp import DynamicGraspConfig, PoolLibrary
from dexh2r_policy.models.synthetic import write_synthetic_handovers
from dexh2r_policy.motionnet import MotionNetConfig, read_checkpoint
from dexh2r_policy.train import DataConfig, MotionWindows, main

TINY_MODEL = {
    "n_points": 32,
    "n_surface": 16,
    "point_dims": [16, 32],
    "trunk": [64, 64, 64],
    "block_inner": 32,
}


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("dexh2r")
    write_synthetic_handovers(
        root / "data", root / "pools", seqs_per_pair=2, T=30, grasp_begin=22, n_cloud=64
    )
    return root


def _config(data: Path, out: Path, steps: int = 30) -> Path:
    cfg = {
        "name": "tiny",
        "model": TINY_MODEL,
        "data": {"root": str(data / "data"), "pools": str(data / "pools")},
        "run": {
            "steps": steps,
            "batch_size": 16,
            "lr": 0.003,
            "val_every": 10,
            "ckpt_every": 10,
            "log_every": 5,
            "threads": 1,
            "out": str(out),
        },
        "policy": {"cloud_sample": "random"},
    }
    path = out.parent / f"{out.name}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def _log(out: Path) -> list[dict]:
    with (out / "log.csv").open() as f:
        return list(csv.DictReader(f))


def test_windows_shapes(data: Path) -> None:
    ds = DexH2RDataset(data / "data")
    ids = ds.sequence_ids("motionnet_train")
    model = MotionNetConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in TINY_MODEL.items()})
    windows = MotionWindows(
        ds,
        ids,
        model,
        DataConfig(),
        DynamicGraspConfig(cloud_sample="random"),
        PoolLibrary(data / "pools"),
        progress=False,
    )
    assert len(windows) == len(ids) * (22 - 4)  # current frames 4..21 of the approach
    item = windows[0]
    assert item["hist"].shape == (5, 31) and item["clouds"].shape == (5, 32, 3)
    assert item["geo"].shape == (3, 16, 3) and item["future"].shape == (10, 31)
    assert all(v.dtype == torch.float32 for k, v in item.items() if k != "frames")
    assert item["frames"].tolist() == [0, 1, 2, 3, 4]  # global frame ids of the 5 clouds


def test_train_lowers_loss_writes_checkpoint_and_resumes(data: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    assert main(["--config", str(_config(data, out, steps=30)), "--no-progress"]) == 0
    rows = _log(out)
    losses = [float(r["train_loss"]) for r in rows]
    assert losses[-1] < 0.8 * losses[0], losses
    assert any(r["val_loss"] != "nan" for r in rows)
    ckpt = read_checkpoint(out / "last.pt")
    assert ckpt["step"] == 30 and ckpt["config"]["name"] == "tiny" and len(ckpt["data_hash"]) == 40
    assert (out / "best.pt").exists() and (out / "config.yaml").exists()
    # Resume to 40 steps: continues at 30, appends to the log.
    assert main(["--config", str(_config(data, out, steps=40)), "--resume", "--no-progress"]) == 0
    assert read_checkpoint(out / "last.pt")["step"] == 40
    steps = [int(r["step"]) for r in _log(out)]
    assert steps[: len(rows)] == [int(r["step"]) for r in rows] and steps[-1] == 40
    # ... to the same weights as 40 steps in one go (the batch order is a function of seed and epoch).
    straight = tmp_path / "straight"
    assert main(["--config", str(_config(data, straight, steps=40)), "--no-progress"]) == 0
    a, b = read_checkpoint(out / "last.pt")["model"], read_checkpoint(straight / "last.pt")["model"]
    for key in a:
        torch.testing.assert_close(a[key], b[key], msg=key)


def test_resume_refuses_other_data_and_bad_config(data: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "run"
    cfg = _config(data, out, steps=2)
    assert main(["--config", str(cfg), "--resume", "--no-progress"]) == 2
    assert "checkpoint not found" in capsys.readouterr().err
    assert main(["--config", str(cfg), "--set", "model.n_pointz=3"]) == 2
    assert "model.n_pointz: unknown key (did you mean 'n_points'?)" in capsys.readouterr().err
    assert main(["--config", str(cfg), "--data", str(tmp_path / "missing")]) == 2
    assert "dataset root is not a directory" in capsys.readouterr().err


def test_ddp_two_cpu_processes(data: Path, tmp_path: Path) -> None:
    out = tmp_path / "ddp"
    cfg = _config(data, out, steps=2)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node=2",
        "-m",
        "dexh2r_policy.train",
        "--config",
        str(cfg),
        "--no-progress",
    ]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert read_checkpoint(out / "last.pt")["step"] == 2
    assert "2 steps" in proc.stdout


def test_export_keeps_the_model_and_drops_the_training_state(data: Path, tmp_path: Path, capsys) -> None:
    from dexh2r_policy.motionnet import load_motionnet

    out = tmp_path / "run"
    assert main(["--config", str(_config(data, out, steps=2)), "--no-progress"]) == 0
    small = tmp_path / "deploy" / "model.pt"
    assert main(["--export", str(out / "last.pt"), str(small)]) == 0
    full = read_checkpoint(out / "last.pt")
    exported = read_checkpoint(small)
    assert "optimizer" not in exported and exported["data_hash"] == full["data_hash"]
    assert exported["step"] == 2 and small.stat().st_size < 0.5 * (out / "last.pt").stat().st_size
    model, _ = load_motionnet(small)
    for key, value in model.state_dict().items():
        assert value.dtype == full["model"][key].dtype
        torch.testing.assert_close(value, full["model"][key], rtol=1e-3, atol=1e-3, msg=key)
    assert main(["--export", str(tmp_path / "nope.pt"), str(small)]) == 2
    assert "checkpoint not found" in capsys.readouterr().err


def test_train_dispatch_rejects_an_unknown_method(tmp_path, capsys) -> None:
    from dexh2r_policy.train import main

    cfg = tmp_path / "bad.yaml"
    cfg.write_text("name: x\nmethod: transformer\n")
    assert main(["--config", str(cfg)]) == 2
    err = capsys.readouterr().err
    assert "unknown method 'transformer'" in err and "motionnet" in err


def test_train_dispatch_defaults_to_motionnet() -> None:
    from dexh2r_policy.train import config_method

    assert config_method("policy/motionnet_small.yaml") == "motionnet"
