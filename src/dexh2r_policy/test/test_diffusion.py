"""The diffusion baselines (`dexh2r_policy.diffusion`): scheduler round trip, UNet and encoder
shapes, the depth renderer, the auxiliary losses, tiny DP3 and DP runs end to end on synthetic
DexH2R-layout data (train, resume, export, one offline episode), and bad input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from dexh2r_policy.diffusion.encoders import DepthCNN, DP3Encoder, VirtualCamera, render_depth
from dexh2r_policy.diffusion.model import (
    AuxLossConfig,
    DiffusionModelConfig,
    DiffusionPolicyModel,
    load_diffusion,
    read_checkpoint,
    rotvec_to_matrix_torch,
)
from dexh2r_policy.diffusion.planner import agent_pos, bench_diffusion, diffusion_policy, pos_to_poses
from dexh2r_policy.diffusion.scheduler import NoiseScheduler
from dexh2r_policy.diffusion.unet import ConditionalUnet1D
from dexh2r_policy.dynamic_grasp import BadInputError, DynamicGraspConfig, HandState, ObjectGraspPool
from dexh2r_policy.eval_offline import main as eval_main
from dexh2r_policy.models.synthetic import write_synthetic_handovers
from dexh2r_policy.train import main as train_main

TINY = {
    "dp3": {
        "horizon": 8,
        "n_obs": 3,
        "n_action": 2,
        "n_points": 32,
        "point_dims": [16, 32],
        "point_out": 16,
        "state_dims": [16, 16],
        "down_dims": [16, 32],
        "n_groups": 4,
        "step_embed": 16,
        "num_inference_steps": 4,
        "n_surface": 16,
    },
    "dp": {
        "horizon": 8,
        "n_obs": 2,
        "n_action": 4,
        "n_points": 64,
        "render_hand_points": 32,
        "camera": {"width": 32, "height": 24},
        "cnn_channels": [8, 8],
        "image_feature": 16,
        "down_dims": [16, 32],
        "n_groups": 4,
        "step_embed": 16,
        "scheduler": "ddpm",
        "num_inference_steps": 10,
    },
}


# ---- scheduler, networks -----------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["ddim", "ddpm"])
@pytest.mark.parametrize("prediction", ["sample", "epsilon"])
def test_scheduler_round_trip_with_the_true_prediction(kind: str, prediction: str) -> None:
    """Noise x0 fully, then denoise with an oracle that outputs the true x0 / epsilon of the
    current x_t: every scheduler must land on x0 (DDPM's added noise is cancelled by the oracle)."""
    torch.manual_seed(0)
    s = NoiseScheduler(100, prediction_type=prediction, kind=kind)
    x0 = torch.rand(3, 8, 28) * 1.8 - 0.9
    g = torch.Generator().manual_seed(1)
    steps = 10 if kind == "ddim" else 100
    ts = s.timesteps(steps)
    x = s.add_noise(x0, torch.randn_like(x0), torch.full((3,), ts[0]))
    for t in ts:
        ac = float(s.alphas_cumprod[t])
        eps = (x - ac**0.5 * x0) / (1 - ac) ** 0.5
        x = s.step(x0 if prediction == "sample" else eps, t, x, steps, g)
    assert torch.allclose(x, x0, atol=1e-4)
    assert s.timesteps(10) == list(range(90, -1, -10))
    with pytest.raises(ValueError):
        s.timesteps(0)


def test_unet_shapes() -> None:
    for H, dims in ((8, (16, 32, 64)), (16, (16, 32, 64)), (4, (16, 32))):
        net = ConditionalUnet1D(28, 40, dims, kernel_size=5, n_groups=4, step_embed=16)
        out = net(torch.randn(2, H, 28), torch.tensor([3, 70]), torch.randn(2, 40))
        assert out.shape == (2, H, 28)
        assert net(torch.randn(1, H, 28), 5, torch.randn(1, 40)).shape == (1, H, 28)  # scalar step
    with pytest.raises(ValueError, match="divisible"):
        ConditionalUnet1D(28, 40, (16, 32, 64), n_groups=4)(torch.randn(1, 6, 28), 0, torch.randn(1, 40))
    with pytest.raises(ValueError, match="exceeds horizon"):
        DiffusionModelConfig(horizon=8, n_obs=5, n_action=8)


def test_encoders_and_renderer() -> None:
    assert DP3Encoder((16, 32), 8)(torch.randn(5, 50, 3)).shape == (5, 8)
    assert DepthCNN(2, 24, 32, (8, 8), 16)(torch.randn(3, 2, 24, 32)).shape == (3, 16)
    cam = VirtualCamera(width=32, height=24)
    target = np.asarray(cam.target)
    eye = np.asarray(cam.eye)
    toward = (eye - target) / np.linalg.norm(eye - target)
    rng = np.random.default_rng(0)
    obj = target + 0.03 * rng.normal(size=(200, 3))
    hand = target + 0.3 * toward + 0.03 * rng.normal(size=(200, 3))  # between camera and object
    img = render_depth(obj, hand, cam)
    assert img.shape == (2, 24, 32) and img.dtype == np.float32
    assert img.min() >= 0.0 and img.max() <= 1.0
    centre = img[:, 10:14, 14:18]
    assert centre[1].max() == 0.0  # the hand hides the object at the centre
    only_obj = render_depth(obj, np.zeros((0, 3)), cam)
    assert only_obj[1, 10:14, 14:18].min() == 1.0 and only_obj[0, 10:14, 14:18].min() > 0
    assert img[0, 10:14, 14:18].mean() > only_obj[0, 10:14, 14:18].mean()  # nearer is brighter


def test_pose_conversions_and_rodrigues() -> None:
    from scipy.spatial.transform import Rotation

    R = Rotation.random(4, random_state=0)
    T = np.repeat(np.eye(4)[None], 4, axis=0)
    T[:, :3, :3] = R.as_matrix()
    T[:, :3, 3] = np.arange(12).reshape(4, 3)
    q = np.random.default_rng(0).uniform(0, 1, (4, 22))
    pos = agent_pos(T, q)
    assert pos.shape == (4, 28)
    T2, q2 = pos_to_poses(pos)
    assert np.allclose(T2, T) and np.allclose(q2, q)
    Rt = rotvec_to_matrix_torch(torch.as_tensor(R.as_rotvec()))
    assert np.allclose(Rt.numpy(), R.as_matrix(), atol=1e-6)


def test_penetration_loss_sees_a_hand_inside_the_object() -> None:
    from dexh2r_policy.models.hand_surface import HandSurface

    cfg = DiffusionModelConfig(**{**TINY["dp3"], "n_surface": 16})
    model = DiffusionPolicyModel(cfg, "dp3", AuxLossConfig(object_points=500))
    rng = np.random.default_rng(0)
    v = rng.normal(size=(500, 3))
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    model.set_aux_objects((0.05 * v)[None], v[None])
    hs = HandSurface.for_robot("ur5_shadow", 16)
    centre = hs.points(np.zeros(22)).mean(axis=0)  # the hand's point cloud centre at the origin
    pos = torch.zeros(1, 2, 28)
    pos[..., :3] = torch.as_tensor(-centre, dtype=torch.float32)
    pos[..., 3] = 1e-3
    pos.requires_grad_(True)
    obj_pose = torch.eye(4).expand(1, 2, 4, 4)
    pen, dis = model.aux_losses(pos, obj_pose, torch.zeros(1, dtype=torch.long))
    assert pen > 0.005 and dis > 0
    pen.backward()
    assert pos.grad[..., :3].abs().sum() > 0  # the gradient reaches the root translation
    far = pos.detach().clone()
    far[..., 0] += 1.0
    pen_far, dis_far = model.aux_losses(far, obj_pose, torch.zeros(1, dtype=torch.long))
    assert pen_far == 0 and dis_far == 0  # nothing inside, nothing within 0.2 m


# ---- end to end on tiny synthetic data ---------------------------------------------------------


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("diffusion")
    write_synthetic_handovers(
        root / "data", root / "pools", seqs_per_pair=1, T=30, grasp_begin=20, n_cloud=64
    )
    return root


def _config(data: Path, method: str, out: Path, steps: int) -> Path:
    cfg = {
        "name": f"tiny_{method}",
        "method": method,
        "model": TINY[method],
        "data": {"root": str(data / "data"), "pools": str(data / "pools")},
        "aux": {"object_points": 64},
        "optim": {"warmup_steps": 2, "val_sample_batches": 1},
        "run": {
            "steps": steps,
            "batch_size": 8,
            "lr": 0.001,
            "val_every": 3,
            "val_batches": 1,
            "ckpt_every": 3,
            "log_every": 1,
            "threads": 1,
            "out": str(out),
        },
        "policy": {"align_after_frames": 8},
    }
    path = out.parent / f"{out.name}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


@pytest.mark.parametrize("method", ["dp3", "dp"])
def test_train_export_and_one_offline_episode(data: Path, tmp_path: Path, method: str) -> None:
    out = tmp_path / "run"
    cfg = _config(data, method, out, steps=4)
    exported = tmp_path / f"{method}.pt"
    assert train_main(["--config", str(cfg), "--no-progress", "--export-to", str(exported)]) == 0
    rows = (out / "log.csv").read_text().splitlines()
    assert rows[0].startswith("step,epoch,train_loss,mse") and len(rows) == 5
    assert all(np.isfinite(float(r.split(",")[2])) for r in rows[1:])
    ckpt = read_checkpoint(out / "last.pt", method)
    assert ckpt["step"] == 4 and ckpt["data_hash"] and ckpt["config"]["method"] == method
    model, small = load_diffusion(exported, method)
    assert "optimizer" not in small and small["model"]["pos_lo"].dtype == torch.float16
    assert model.method == method and float((model.pos_hi - model.pos_lo).max()) > 0  # fitted normaliser
    result = tmp_path / "offline.json"
    args = [
        "--policy",
        method,
        "--checkpoint",
        str(exported),
        "--split",
        "test",
        "--json",
        str(result),
        "--limit",
        "1",
    ]
    assert eval_main(args) == 0
    r = json.loads(result.read_text())
    assert r["episodes"] == 1 and r["frames_to_grasp"] > 0 and 0.0 <= r["safety"] <= 1.0
    assert r["policy"] == method
    # Reproducible: the sampling generator is seeded per episode.
    assert eval_main([*args[:-4], "--json", str(tmp_path / "again.json"), "--limit", "1"]) == 0
    again = json.loads((tmp_path / "again.json").read_text())
    assert {k: again[k] for k in ("pen_depth_mm", "frames_to_grasp")} == {
        k: r[k] for k in ("pen_depth_mm", "frames_to_grasp")
    }


def test_resume_is_exact(data: Path, tmp_path: Path) -> None:
    """3 + 3 resumed steps = 6 in one go (constant lr after the warm-up: the cosine decay depends
    on run.steps, which the first half changes)."""
    flat = ["--no-progress", "--set", "optim.cosine=false"]
    one = tmp_path / "one"
    assert train_main(["--config", str(_config(data, "dp3", one, 6)), *flat]) == 0
    two = tmp_path / "two"
    cfg = _config(data, "dp3", two, 6)
    assert train_main(["--config", str(cfg), *flat, "--steps", "3"]) == 0
    assert train_main(["--config", str(cfg), *flat, "--resume"]) == 0
    a, b = torch.load(one / "last.pt", weights_only=False), torch.load(two / "last.pt", weights_only=False)
    assert b["step"] == 6
    for k, v in a["raw_model"].items():
        assert torch.allclose(v, b["raw_model"][k], atol=1e-6), k
    for k, v in a["model"].items():  # the EMA weights too
        assert torch.allclose(v, b["model"][k], atol=1e-6), k


def test_checkpoint_errors(data: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "r"
    assert train_main(["--config", str(_config(data, "dp3", out, 1)), "--no-progress"]) == 0
    capsys.readouterr()
    base = ["--json", str(tmp_path / "x.json"), "--limit", "1"]
    assert eval_main(["--policy", "dp", "--checkpoint", str(out / "last.pt"), *base]) == 2
    assert "a dp3 checkpoint, not dp" in capsys.readouterr().err
    assert eval_main(["--policy", "dp3", "--checkpoint", str(tmp_path / "nope.pt"), *base]) == 2
    assert "checkpoint not found" in capsys.readouterr().err
    from dexh2r_policy.motionnet import MotionNet, MotionNetConfig, save_checkpoint

    mn = save_checkpoint(tmp_path / "mn.pt", MotionNet(MotionNetConfig()), config={})
    assert eval_main(["--policy", "dp3", "--checkpoint", str(mn), *base]) == 2
    assert "not a DP/DP3 checkpoint (a MotionNet checkpoint)" in capsys.readouterr().err
    assert (
        train_main(
            ["--config", str(_config(data, "dp", tmp_path / "dp", 1)), "--resume", str(out / "last.pt")]
        )
        == 2
    )
    assert "a dp3 checkpoint, not dp" in capsys.readouterr().err


def _tiny_model(method: str) -> DiffusionPolicyModel:
    from dexh2r_core.config import from_dict

    return DiffusionPolicyModel(from_dict(DiffusionModelConfig, TINY[method]), method).eval()


@pytest.mark.parametrize("method", ["dp3", "dp"])
def test_bad_input_gives_a_clear_error_and_no_target(method: str) -> None:
    pool = ObjectGraspPool(np.eye(4)[None], np.zeros((1, 22)))
    policy = diffusion_policy(_tiny_model(method), pool, DynamicGraspConfig())
    obj = np.eye(4)
    hand = HandState(np.eye(4), np.zeros(22))
    cloud = np.random.default_rng(0).normal(scale=0.03, size=(100, 3))
    bad = cloud.copy()
    bad[3] = np.nan
    with pytest.raises(BadInputError, match="NaN"):
        policy.step(0.0, obj, bad, None, hand)
    with pytest.raises(BadInputError, match="points, need at least"):
        policy.step(0.0, obj, cloud[:5], None, hand)
    assert policy.state.frame == -1  # no step was taken
    target = policy.step(0.0, obj, cloud, None, hand)  # good input still works afterwards
    assert target.phase == "warmup"


def test_planner_plans_n_action_steps_and_bench() -> None:
    r = bench_diffusion(_tiny_model("dp3"), steps=24)
    assert r["step_ms_p95"] > 0 and np.isfinite(r["plan_ms_p95"])
