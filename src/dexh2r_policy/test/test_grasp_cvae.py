"""Grasp CVAE (dexh2r_policy.grasps.cvae, cvae_train), the giver filter, `eval grasps --generator cvae`."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from dexh2r_policy.grasps.cvae import (
    CVAEInputError,
    GraspCVAEConfig,
    HandSurfaceTorch,
    LossWeights,
    bench_cvae,
    build_model,
    cvae_losses,
    load_cvae,
    principal_axis,
    save_checkpoint,
)
from dexh2r_policy.models.hand_surface import HandSurface

TINY = GraspCVAEConfig(
    latent=4, n_points=48, n_surface=48, point_dims=(8, 16), encoder=(16,), decoder=(16,), min_points=16
)
TINY_SET = [
    "model.latent=4",
    "model.n_points=48",
    "model.n_surface=48",
    "model.point_dims=[8, 16]",
    "model.encoder=[16]",
    "model.decoder=[16]",
    "run.batch_size=4",
    "run.val_every=2",
    "run.log_every=1",
    "run.ckpt_every=2",
    "run.threads=1",
]
GRASP_CENTRE = np.array([0.01, -0.011, 0.105])  # hand root frame (PoolConfig.grasp_centre)


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _sphere(n: int, radius: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    v = np.random.default_rng(seed).normal(size=(n, 3))
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    return radius * v, v


def _tiny_model(seed: int = 0):
    torch.manual_seed(seed)
    model = build_model(TINY)
    # bounds centred where the hand's grasp centre sits on the object centre (a penetrating start)
    model.set_translation_bounds(-GRASP_CENTRE - 0.05, -GRASP_CENTRE + 0.05)
    return model


def _batch(model, B: int = 4, radius: float = 0.05, seed: int = 0) -> dict[str, torch.Tensor]:
    """Canonical-frame batch of grasps around a sphere (hand grasp centre near the centre)."""
    from scipy.spatial.transform import Rotation

    rng = np.random.default_rng(seed)
    pts, nrm = _sphere(model.config.n_points, radius, seed)
    R = Rotation.random(B, random_state=seed).as_matrix()
    t = -GRASP_CENTRE + rng.normal(scale=0.01, size=(B, 3))  # canonical t' (already R^T (t - c))
    q = rng.uniform(0.1, 0.6, size=(B, 22))
    kin = model.kinematics()
    with torch.no_grad():
        hand = kin(torch.tensor(q, dtype=torch.float32)) + torch.tensor(t, dtype=torch.float32)[:, None]
    f = torch.float32
    return {
        "obj": torch.tensor(np.einsum("nj,bjk->bnk", pts, R), dtype=f),
        "normals": torch.tensor(np.einsum("nj,bjk->bnk", nrm, R), dtype=f),
        "hand": hand,
        "x": model.normalise(torch.tensor(t, dtype=f), torch.tensor(q, dtype=f)),
    }


# ---- kinematics, shapes, losses ----------------------------------------------------------------


def test_torch_hand_surface_matches_mujoco_forward_kinematics():
    hs = HandSurface.for_robot("ur5_shadow", 64, 0)
    kin = HandSurfaceTorch(hs)
    rng = np.random.default_rng(1)
    q = rng.uniform(-0.3, 1.5, size=(5, hs.n_fingers))
    expected = hs.points_batch(q)
    got = kin(torch.tensor(q, dtype=torch.float32)).numpy()
    assert got.shape == (5, 64, 3)
    assert np.abs(got - expected).max() < 1e-5
    assert 0 < len(kin.contact_index) < 64  # finger pads only


def test_forward_and_sampling_shapes():
    model = _tiny_model()
    b = _batch(model)
    x_hat, mu, logvar = model(b["obj"], b["hand"])
    assert x_hat.shape == (4, 25) and mu.shape == (4, 4) and logvar.shape == (4, 4)
    t, q = model.sample_canonical(b["obj"])
    assert t.shape == (4, 3) and q.shape == (4, 22)
    assert torch.all(q >= model.q_lo) and torch.all(q <= model.q_hi)
    t2, q2 = model.denormalise(model.normalise(t, q))
    assert torch.allclose(t2, t, atol=1e-6) and torch.allclose(q2, q, atol=1e-5)
    assert GraspCVAEConfig.paper().latent == 128


def test_loss_terms_finite_and_each_decreases_when_optimised():
    base = _tiny_model()
    b = _batch(base)
    torch.manual_seed(0)
    _, parts = cvae_losses(base, b["obj"], b["normals"], b["hand"], b["x"])
    assert set(parts) == {"pose", "surface", "pen", "contact", "kl"}
    for name, value in parts.items():
        assert torch.isfinite(value), name
        assert float(value.detach()) > 0, f"{name} is 0 at the start: the test batch does not exercise it"
    for term in parts:
        model = _tiny_model()
        opt = torch.optim.Adam(model.parameters(), lr=3e-3)
        only = LossWeights(
            **{k: (1.0 if k == term else 0.0) for k in ("pose", "surface", "pen", "contact", "kl")}
        )

        def value(m=model, t=term, w=only) -> float:
            torch.manual_seed(1)
            with torch.no_grad():
                return float(cvae_losses(m, b["obj"], b["normals"], b["hand"], b["x"], w)[1][t])

        before = value()
        for _ in range(15):
            torch.manual_seed(2)
            loss, _ = cvae_losses(model, b["obj"], b["normals"], b["hand"], b["x"], only)
            opt.zero_grad()
            loss.backward()
            opt.step()
        assert value() < before, f"{term} did not decrease ({before} -> {value()})"


# ---- sample_pool -------------------------------------------------------------------------------


def test_sample_pool_format_and_unrotation(tmp_path, monkeypatch):
    from dexh2r_policy.dynamic_grasp import ObjectGraspPool
    from dexh2r_policy.grasps.pool import GraspPool
    from dexh2r_policy.models.geometry import is_rigid

    model = _tiny_model().eval()
    pts, _ = _sphere(300, 0.04)
    pts = pts * np.array([1.0, 1.0, 2.0]) + np.array([0.1, -0.2, 0.3])  # long along z, off-centre
    pool = model.sample_pool(pts, 7, object_id="prim/test")
    assert len(pool) == 7 and pool.finger_q.shape == (7, 22) and len(pool.finger_joint_names) == 22
    assert all(is_rigid(T) for T in pool.T_obj_hand)
    assert np.all(pool.finger_q >= model.q_lo.numpy() - 1e-6) and np.all(
        pool.finger_q <= model.q_hi.numpy() + 1e-6
    )
    names = list(pool.finger_joint_names)
    assert np.allclose(pool.finger_q[:, names.index("rh_FFJ1")], pool.finger_q[:, names.index("rh_FFJ2")])
    assert pool.info["tested"] is False and not pool.stable.any()
    path = pool.save(tmp_path / "prim__test.npz")
    back = GraspPool.load(path)
    assert np.allclose(back.T_obj_hand, pool.T_obj_hand, atol=1e-6)
    assert len(ObjectGraspPool.from_grasp_pool(back)) == 7  # DynamicGrasp takes it unchanged
    assert len(model.sample_pool(pts, 600)) == 600  # more than the 500-rotation grid: cycles
    assert np.allclose(principal_axis(pts - pts.mean(0)), [0, 0, 1], atol=0.2)

    # Un-rotation: canonical t' comes back as T = [R | R t' + c].
    fixed = torch.tensor([0.01, 0.02, -0.1])
    monkeypatch.setattr(
        type(model),
        "sample_canonical",
        lambda self, clouds, g=None: (fixed.expand(len(clouds), 3), torch.zeros(len(clouds), 22)),
    )
    pool = model.sample_pool(pts, 5)
    c = pts.mean(axis=0)
    for T in pool.T_obj_hand:
        assert np.allclose(T[:3, :3].T @ (T[:3, 3] - c), fixed.numpy(), atol=1e-6)


def test_sample_pool_rejects_bad_clouds():
    model = _tiny_model()
    pts, _ = _sphere(100, 0.04)
    bad = pts.copy()
    bad[7] = np.nan
    with pytest.raises(CVAEInputError, match=r"NaN or inf.*row 7"):
        model.sample_pool(bad, 5)
    with pytest.raises(CVAEInputError, match="needs at least 16"):
        model.sample_pool(pts[:10], 5)
    with pytest.raises(CVAEInputError, match=r"shape \[M, 3\]"):
        model.sample_pool(pts[:, :2], 5)
    with pytest.raises(CVAEInputError, match="coincide"):
        model.sample_pool(np.zeros((50, 3)), 5)
    with pytest.raises(CVAEInputError, match="at least one grasp"):
        model.sample_pool(pts, 0)


def test_checkpoint_round_trip_and_bench(tmp_path):
    from dexh2r_policy.motionnet import CheckpointError

    model = _tiny_model()
    path = save_checkpoint(tmp_path / "m.pt", model, step=3)
    back, ckpt = load_cvae(path)
    assert ckpt["step"] == 3 and back.config == TINY
    assert torch.equal(back.t_lo, model.t_lo)
    torch.save({"format": "dexh2r-motionnet"}, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="not a grasp CVAE checkpoint"):
        load_cvae(tmp_path / "other.pt")
    r = bench_cvae(path, n=20, repeats=2, cloud_points=200)
    assert r["cvae_pool_ms_p95"] >= r["cvae_pool_ms_p50"] > 0 and r["cvae_pool_grasps"] == 20


# ---- giver filter ------------------------------------------------------------------------------


def _giver_keypoints(centre: np.ndarray) -> np.ndarray:
    """A flat open hand (21 MediaPipe keypoints) of ~9 cm fingers around `centre`."""
    kp = np.zeros((21, 3))
    kp[0] = [0.0, -0.05, 0.0]
    for f, x in enumerate((-0.035, -0.012, 0.012, 0.035)):  # index..little, MCP + 3 joints
        base = 1 + 4 * (f + 1)
        for j in range(4):
            kp[base + j] = [x, 0.02 + 0.025 * j, 0.0]
    for j in range(4):  # thumb
        kp[1 + j] = [-0.04 - 0.015 * j, -0.03 + 0.01 * j, 0.0]
    return kp + centre


def test_giver_filter_drops_a_grasp_inside_the_givers_hand_and_keeps_a_far_one():
    from dexh2r_policy.grasps.giver_filter import (
        GiverHandModel,
        filter_pool,
        giver_free_mask,
        grasp_clearance,
    )
    from dexh2r_policy.models.synthetic import synthetic_pool

    pool = synthetic_pool("ball", n_grasps=2, seed=0)
    T_world_obj = np.eye(4)
    T_world_obj[:3, 3] = [0.4, 0.0, 0.3]
    hs = HandSurface.for_robot("ur5_shadow", 128, 0)
    # giver hand through the robot palm of grasp 0; grasp 1 moved 1 m away
    T_hand0 = T_world_obj @ pool.T_obj_hand[0]
    palm = T_hand0[:3, :3] @ np.array([0.0, 0.0, 0.07]) + T_hand0[:3, 3]
    pool.T_obj_hand[1, :3, 3] += [1.0, 0.0, 0.0]
    kp = _giver_keypoints(palm)
    gap = grasp_clearance(pool.T_obj_hand, pool.finger_q, T_world_obj, kp, hand_surface=hs)
    assert gap[0] < 0 and gap[1] > 0.5
    strict = GiverHandModel(min_keep=0)
    assert giver_free_mask(pool.T_obj_hand, pool.finger_q, T_world_obj, kp, strict, hs).tolist() == [
        False,
        True,
    ]
    out = filter_pool(pool, T_world_obj, kp, strict, hs)
    assert len(out) == 1 and np.allclose(out.T_obj_hand[0], pool.T_obj_hand[1])
    assert out.info["giver_filter"] == {"kept": 1, "dropped": 1}
    # min_keep: the clearest grasps stay when too few survive
    both_bad = pool.select(np.array([True, True]))
    both_bad.T_obj_hand[1] = both_bad.T_obj_hand[0]
    both_bad.T_obj_hand[1, :3, 3] += [0.0, 0.0, 0.005]
    keep = giver_free_mask(
        both_bad.T_obj_hand, both_bad.finger_q, T_world_obj, kp, GiverHandModel(min_keep=1), hs
    )
    assert keep.sum() == 1
    with pytest.raises(ValueError, match=r"\[21, 3\]"):
        grasp_clearance(pool.T_obj_hand, pool.finger_q, T_world_obj, kp[:20], hand_surface=hs)


# ---- end to end --------------------------------------------------------------------------------


def test_train_resume_and_eval_end_to_end(tmp_path, capsys):
    """`dexh2r train` (dispatch on method: grasp_cvae) on a tiny synthetic DexH2R layout, resume,
    then `dexh2r eval grasps --generator cvae` on 2 grasps of a held-out library object."""
    from dexh2r_policy import eval_grasps
    from dexh2r_policy.models.synthetic import write_synthetic_handovers
    from dexh2r_policy.train import main as train_main

    root, pools = tmp_path / "data", tmp_path / "pools"
    write_synthetic_handovers(root, pools, T=12, grasp_begin=8, n_cloud=16)
    out = tmp_path / "run"
    args = ["--config", "config/policy/grasp_cvae_small.yaml", "--data", str(root), "--pools", str(pools)]
    args += ["--out", str(out), "--no-progress"] + [a for s in TINY_SET for a in ("--set", s)]
    assert train_main([*args, "--steps", "2"]) == 0
    assert train_main([*args, "--steps", "4", "--resume"]) == 0
    rows = (out / "log.csv").read_text().splitlines()
    assert rows[0].startswith("step,epoch,train_loss,pose,surface,pen,contact,kl,val_loss,heldout_loss")
    assert [r.split(",")[0] for r in rows[1:]] == ["1", "2", "3", "4"]
    assert all(np.isfinite(float(r.split(",")[2])) for r in rows[1:])
    assert np.isfinite(float(rows[2].split(",")[9]))  # held-out objects (cup, duck) are scored
    ckpt = torch.load(out / "last.pt", weights_only=False)
    assert ckpt["step"] == 4 and len(ckpt["data_hash"]) == 40 and ckpt["config"]["method"] == "grasp_cvae"
    assert train_main([*args, "--steps", "5", "--resume", "--set", "model.latent=5"]) == 2

    result_path = tmp_path / "cvae.json"
    argv = ["--generator", "cvae", "--checkpoint", str(out / "model.pt"), "--objects", "prim/sphere_small"]
    assert eval_grasps.main([*argv, "--grasps", "2", "--json", str(result_path)]) == 0
    r = json.loads(result_path.read_text())
    assert r["generator"] == "cvae" and r["grasps"] == 2 and r["objects"] == 1
    for key in ("succ6", "succ1", "pen_depth_mm"):
        assert 0.0 <= r[key] < float("inf")
    assert (
        eval_grasps.main([*argv[:2], "--checkpoint", str(tmp_path / "none.pt"), "--json", str(result_path)])
        == 2
    )
    assert "checkpoint not found" in capsys.readouterr().err


def test_pool_file_metrics_is_the_eval_table_of_tested_pools():
    from dexh2r_policy.eval_grasps import pool_file_metrics
    from dexh2r_policy.models.synthetic import synthetic_pool

    a, b = synthetic_pool("a", n_grasps=4, seed=0), synthetic_pool("b", n_grasps=4, seed=1)
    a.stable[0] = False  # one grasp of a fails every direction
    b.stable[1, 2] = False  # one grasp of b fails one direction
    a.pen_depth[:] = 0.001
    r = pool_file_metrics([a, b])
    assert r["grasps"] == 8 and r["objects"] == 2
    assert r["succ6"] == pytest.approx(6 / 8) and r["succ1"] == pytest.approx(7 / 8)
    assert r["pen_depth_mm"] == pytest.approx(0.5)
    div_a = np.std(a.finger_q[1:], axis=0).mean()
    div_b = np.std(b.finger_q[[0, 2, 3]], axis=0).mean()
    assert r["diversity"] == pytest.approx((div_a + div_b) / 2)
