"""MotionNet and the DynamicGrasp step: shapes, the hand-frame transforms, target selection,
goal alignment on a moving object, close and lift, feature caching, clear errors on bad input."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation

from dexh2r_policy.dynamic_grasp import (
    BadInputError,
    DynamicGrasp,
    DynamicGraspConfig,
    EmptyPoolError,
    HandState,
    MotionNetPlanner,
    ObjectGraspPool,
    PoolLibrary,
    select_target,
)
from dexh2r_policy.models.geometry import inverse, matrix_to_rot6d, rot6d_to_matrix
from dexh2r_policy.models.hand_surface import HandSurface
from dexh2r_policy.motionnet import (
    CheckpointError,
    MotionNet,
    MotionNetConfig,
    cloud_in_hand,
    compose,
    future_targets,
    hand_geometry,
    hand_history,
    load_motionnet,
    save_checkpoint,
)

TINY = MotionNetConfig(n_points=32, n_surface=16, point_dims=(8, 16), trunk=(32, 32, 32), block_inner=16)


def _pose(rotvec, t) -> np.ndarray:
    T = np.eye(4)
    T[:3, :3] = Rotation.from_rotvec(rotvec).as_matrix()
    T[:3, 3] = t
    return T


def _random_poses(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.stack([_pose(rng.normal(size=3), rng.normal(size=3)) for _ in range(n)])


@pytest.fixture(scope="module")
def hs() -> HandSurface:
    return HandSurface.for_robot("ur5_shadow", TINY.n_surface)


def test_model_shapes_and_cached_features_match() -> None:
    torch.manual_seed(0)
    c = TINY
    model = MotionNet(c).eval()
    B, P, F, J = 3, c.n_past, c.n_future, c.n_fingers
    hist = torch.randn(B, P, 9 + J)
    clouds = torch.randn(B, P, c.n_points, 3)
    geo = torch.randn(B, 3, c.n_surface, 3)
    out = model.forward_points(hist, clouds, geo)
    assert out.shape == (B, F, 9 + J)
    feats = torch.stack([model.encode_points(clouds[:, k]) for k in range(P)], dim=1)
    assert feats.shape == (B, P, c.feature_dim)
    torch.testing.assert_close(model(hist, feats, geo), out)
    assert MotionNetConfig.paper().input_dim == 7300  # the paper's input size


def test_rot6d_round_trip() -> None:
    R = Rotation.random(20, random_state=1).as_matrix()
    np.testing.assert_allclose(rot6d_to_matrix(matrix_to_rot6d(R)), R, atol=1e-12)
    assert np.allclose(matrix_to_rot6d(np.eye(3)), [1, 0, 0, 0, 1, 0])  # first two rows


def test_hand_frame_round_trip() -> None:
    T = _random_poses(11, 2)
    q = np.random.default_rng(3).normal(size=(11, 22))
    labels = future_targets(T[0], q[0], T[1:], q[1:])
    T_back, q_back = compose(T[0], q[0], labels)
    np.testing.assert_allclose(T_back, T[1:], atol=1e-5)
    np.testing.assert_allclose(q_back, q[1:], atol=1e-5)
    hist = hand_history(T[:5], q[:5])
    np.testing.assert_allclose(hist[-1, :9], [0, 0, 0, 1, 0, 0, 0, 1, 0], atol=1e-6)  # current = identity


def test_features_invariant_to_a_world_transform(hs: HandSurface) -> None:
    """Everything the network sees is in hand frames: moving the whole scene changes nothing."""
    T = _random_poses(5, 4)
    q = np.random.default_rng(5).uniform(0, 0.5, size=(5, 22))
    T_target = _random_poses(1, 6)[0]
    cloud = np.random.default_rng(7).normal(size=(32, 3))
    W = _pose([0.3, -1.0, 0.5], [1.0, 2.0, -0.5])
    pts = [hs.points(qq) for qq in q]
    f0 = (
        hand_history(T, q),
        hand_geometry(T[3], pts[3], T[4], pts[4], T_target, pts[0]),
        cloud_in_hand(T[4], cloud),
    )
    WT = W[None] @ T
    f1 = (
        hand_history(WT, q),
        hand_geometry(WT[3], pts[3], WT[4], pts[4], W @ T_target, pts[0]),
        cloud_in_hand(WT[4], cloud @ W[:3, :3].T + W[:3, 3]),
    )
    for a, b in zip(f0, f1, strict=True):
        np.testing.assert_allclose(a, b, atol=1e-5)


def test_select_target_translation_top_k_then_rotation() -> None:
    hand = np.eye(4)
    # 0: nearest (5 cm) but rotated 90 deg; 1: 8 cm, rotated 10 deg; 2: 30 cm, not rotated.
    pool = np.stack(
        [
            _pose([0, 0, np.pi / 2], [0.05, 0, 0]),
            _pose([0, 0, 0.17], [0.08, 0, 0]),
            _pose([0, 0, 0], [0.3, 0, 0]),
        ]
    )
    assert select_target(pool, hand, top_k=2) == 1  # smallest rotation among the 2 nearest
    assert select_target(pool, hand, top_k=1) == 0
    assert select_target(pool, hand, top_k=3) == 2
    # A giver hand right at grasp 1's points rules it out: the 2 nearest free ones are 0 and 2.
    pts = np.zeros((3, 4, 3))
    giver = np.array([[0.08, 0.0, 0.0]])
    assert select_target(pool, hand, top_k=2, pool_points=pts, giver=giver, clearance=0.02) == 2
    assert select_target(pool, hand, top_k=1, pool_points=pts, giver=giver, clearance=0.02) == 0
    # Every candidate blocked: the unfiltered choice stands.
    assert select_target(pool, hand, top_k=2, pool_points=pts, giver=giver, clearance=1.0) == 1


class _StillPlanner:
    """Plans 'stay where you are' (so only the alignment moves the hand)."""

    n_past = 5
    n_points = 32

    def observe(self, frame, cloud, hand) -> None:
        self.observed = getattr(self, "observed", 0) + 1

    def plan(self, frame, history, target, target_points):
        h = history[-1]
        return np.repeat(h.T_world_hand[None], 10, 0), np.repeat(h.finger_q[None], 10, 0)


def _pool() -> ObjectGraspPool:
    T = np.stack([_pose([0, 0, 0], [0.0, -0.08, 0.0]), _pose([0, 0, np.pi], [0.0, 0.08, 0.0])])
    return ObjectGraspPool(T, np.full((2, 22), 0.3), "two")


def _obj(k: int, moving: bool = True) -> np.ndarray:
    return _pose([0, 0, 0.02 * k if moving else 0.0], [0.01 * k if moving else 0.0, 0.0, 0.4])


def test_alignment_follows_a_moving_object_then_closes_and_lifts(hs: HandSurface) -> None:
    cfg = DynamicGraspConfig(
        mode="easy",
        align_after_frames=6,
        easy_radius_m=0.5,
        close_frames=3,
        lift_frames=4,
        lift_height_m=0.1,
        min_points=8,
    )
    policy = DynamicGrasp(_StillPlanner(), _pool(), cfg, n_points=32, hand_surface=hs)
    cloud = np.random.default_rng(0).normal(scale=0.03, size=(100, 3))
    hand = HandState(_pose([0.2, 0.1, 0], [0.3, -0.3, 0.5]), np.zeros(22))
    phases, dists = [], []
    for k in range(60):
        obj = _obj(k)
        tgt = policy.step(0.1 * k, obj, cloud + obj[:3, 3], None, hand)
        assert tgt.stamp == pytest.approx(0.1 * k + cfg.frame_dt_s)
        phases.append(tgt.phase)
        if tgt.phase == "align":
            dists.append(tgt.distance_m)
        if tgt.phase == "close" and phases.count("close") == 1:  # the snap: exactly the goal on the object
            goal = obj @ _pool().T_obj_hand[tgt.goal]
            np.testing.assert_allclose(tgt.T_world_hand, goal, atol=1e-9)
        hand = HandState(tgt.T_world_hand, tgt.finger_q)
    assert phases[:4] == ["warmup"] * 4 and "approach" in phases
    assert "align" in phases and phases[-1] == "done"
    assert dists[-1] < dists[0] and all(b < a + 0.03 for a, b in itertools.pairwise(dists))
    assert policy.planner.observed == phases.index("align")  # every approach frame seen once
    lift = [i for i, p in enumerate(phases) if p == "lift"]
    z0 = _obj(0)[2, 3]
    assert hand.T_world_hand[2, 3] > z0 - 0.2  # lifted relative to the closing pose
    assert len(lift) == cfg.lift_frames


def test_hard_mode_needs_a_moving_object(hs: HandSurface) -> None:
    cfg = DynamicGraspConfig(mode="hard", align_after_frames=0, hard_radius_m=0.5, min_points=8)
    cloud = np.random.default_rng(0).normal(scale=0.03, size=(50, 3))
    for moving, expect in ((False, False), (True, True)):
        policy = DynamicGrasp(_StillPlanner(), _pool(), cfg, n_points=32, hand_surface=hs)
        hand = HandState(_pose([0, 0, 0], [0.1, -0.1, 0.4]), np.zeros(22))
        phases = [policy.step(k, _obj(k, moving), cloud, None, hand).phase for k in range(8)]
        assert ("align" in phases or "close" in phases) is expect


def test_motionnet_planner_encodes_each_frame_once(hs: HandSurface) -> None:
    model = MotionNet(TINY).eval()
    calls = []
    planner = MotionNetPlanner(model, hand_surface=hs)
    planner.encoder.register_forward_hook(lambda module, args, out: calls.append(args[0].shape[0]))
    policy = DynamicGrasp(planner, _pool(), DynamicGraspConfig(align_after_frames=10**6, min_points=8))
    cloud = np.random.default_rng(0).normal(scale=0.03, size=(64, 3))
    hand = HandState(_pose([0, 0, 0], [0.2, 0, 0.4]), np.zeros(22))
    replans = 0
    for k in range(16):
        tgt = policy.step(k, _obj(k), cloud + _obj(k)[:3, 3], None, hand)
        replans += tgt.replanned
        assert np.isfinite(tgt.T_world_hand).all() and tgt.finger_q.shape == (22,)
        hand = HandState(tgt.T_world_hand, tgt.finger_q)
    assert calls == [1] * 16  # one cloud per frame, never re-encoded
    assert replans == 3  # frames 4, 9, 14: every 5 frames once 5 frames of history exist


def test_bad_inputs_raise_clear_errors(hs: HandSurface, tmp_path) -> None:
    policy = DynamicGrasp(
        _StillPlanner(), _pool(), DynamicGraspConfig(min_points=16), n_points=32, hand_surface=hs
    )
    hand = HandState(np.eye(4), np.zeros(22))
    cloud = np.random.default_rng(0).normal(size=(64, 3))
    bad = cloud.copy()
    bad[3, 1] = np.nan
    with pytest.raises(BadInputError, match="NaN"):
        policy.step(0.0, np.eye(4), bad, None, hand)
    with pytest.raises(BadInputError, match="has 5 points, need at least 16"):
        policy.step(0.0, np.eye(4), cloud[:5], None, hand)
    with pytest.raises(BadInputError, match="object pose"):
        policy.step(0.0, np.full((4, 4), np.nan), cloud, None, hand)
    with pytest.raises(BadInputError, match="giver keypoints"):
        policy.step(0.0, np.eye(4), cloud, np.zeros((20, 3)), hand)
    with pytest.raises(EmptyPoolError, match="empty"):
        ObjectGraspPool(np.zeros((0, 4, 4)), np.zeros((0, 22)), "cup")
    with pytest.raises(EmptyPoolError, match="no grasp pool for object 'cup'"):
        PoolLibrary(tmp_path).get("cup")
    with pytest.raises(CheckpointError, match="not found"):
        load_motionnet(tmp_path / "nope.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="cannot read"):
        load_motionnet(tmp_path / "junk.pt")
    torch.save({"format": "other"}, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="not a MotionNet checkpoint"):
        load_motionnet(tmp_path / "other.pt")


def test_checkpoint_round_trip(tmp_path) -> None:
    model = MotionNet(TINY)
    save_checkpoint(tmp_path / "m.pt", model, step=3)
    loaded, ckpt = load_motionnet(tmp_path / "m.pt")
    assert ckpt["step"] == 3 and loaded.config == TINY
    for a, b in zip(model.state_dict().values(), loaded.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b)


def test_inverse_matches_numpy() -> None:
    T = _random_poses(4, 9)
    np.testing.assert_allclose(inverse(T), np.linalg.inv(T), atol=1e-12)


def test_bf16_encoder_features_match_float32(hs: HandSurface) -> None:
    """The planner's bfloat16 encoder (fast on CPUs with native bf16) gives nearly the fp32 features."""
    torch.manual_seed(0)
    model = MotionNet(TINY).eval()
    fp32 = MotionNetPlanner(model, hand_surface=hs, encoder_dtype="float32")
    bf16 = MotionNetPlanner(model, hand_surface=hs, encoder_dtype="bfloat16")
    cloud = np.random.default_rng(1).normal(scale=0.05, size=(TINY.n_points, 3))
    hand = HandState(np.eye(4), np.zeros(22))
    fp32.observe(0, cloud, hand)
    bf16.observe(0, cloud, hand)
    a, b = fp32._features[-1][1], bf16._features[-1][1]
    assert b.dtype == torch.float32
    assert float((a - b).norm() / a.norm()) < 0.02


def test_a_symmetric_objects_spinning_pose_keeps_the_pool_still(hs: HandSurface) -> None:
    """A tracked can spins about its axis between frames (unobservable); with its library model
    the policy poses the pool on the equivalent pose nearest the last one, without it the goal
    spins too."""
    from dexh2r_sim.objects import ObjectLibrary

    can = ObjectLibrary().get("prim/cylinder_can")
    cfg = DynamicGraspConfig(align_after_frames=10**6, min_points=8)
    cloud = np.random.default_rng(0).normal(scale=0.03, size=(100, 3))
    hand = HandState(_pose([0, 0, 0], [0.3, 0.0, 0.5]), np.zeros(22))
    for model, max_turn in ((can, 1e-6), (None, 1.0)):
        policy = DynamicGrasp(_StillPlanner(), _pool(), cfg, n_points=32, hand_surface=hs)
        if model is not None:
            policy.set_object_model(model)
            assert policy.symmetry is not None and len(policy.symmetry.axes) == 1
        turns = []
        for k in range(8):
            obj = _pose([0.0, 0.0, 1.1 * k], [0.0, 0.0, 0.4])  # spins about z (the can's axis)
            policy.step(0.1 * k, obj, cloud + obj[:3, 3], None, hand)
            turns.append(np.degrees(Rotation.from_matrix(policy.state.prev_obj[:3, :3]).magnitude()))
        assert (max(turns) < max_turn) == (model is not None), turns
