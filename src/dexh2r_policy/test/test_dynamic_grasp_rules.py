"""DynamicGrasp's closed-loop rules (align_style="pregrasp"): the stalled approach and the jammed
way in. The offline benchmark's "paper" style does not use them."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from dexh2r_policy.dynamic_grasp import DynamicGrasp, DynamicGraspConfig, HandState, ObjectGraspPool


def _pose(rotvec, t) -> np.ndarray:
    T = np.eye(4)
    T[:3, :3] = Rotation.from_rotvec(rotvec).as_matrix()
    T[:3, 3] = t
    return T


class _StillPlanner:
    """Plans 'stay where you are' (only the alignment moves the hand)."""

    n_past = 2
    n_points = 32

    def observe(self, frame, cloud, hand) -> None:
        pass

    def plan(self, frame, history, target, target_points):
        h = history[-1]
        return np.repeat(h.T_world_hand[None], 10, 0), np.repeat(h.finger_q[None], 10, 0)


def _ring_pool(n: int = 12, r: float = 0.12) -> ObjectGraspPool:
    """n grasps on a horizontal ring around the object, each facing its centre."""
    T = np.stack(
        [_pose([0, 0, a], [r * np.cos(a), r * np.sin(a), 0.0]) for a in np.linspace(0, 2 * np.pi, n, False)]
    )
    return ObjectGraspPool(T, np.full((n, 22), 0.6), "ring")


@pytest.fixture(scope="module")
def hs():
    from dexh2r_policy.models.hand_surface import HandSurface

    return HandSurface.for_robot("ur5_shadow", 64)


def _cfg(style: str, **kw) -> DynamicGraspConfig:
    base = dict(mode="easy", align_after_frames=6, min_points=8, close_frames=3, lift_frames=30)
    return DynamicGraspConfig(align_style=style, **{**base, **kw})


def _run(policy, steps, obj_fn, hand0, follow=True, giver_fn=None):
    cloud = np.random.default_rng(0).normal(scale=0.03, size=(64, 3))
    hand, out = hand0, []
    for k in range(steps):
        obj = obj_fn(k)
        giver = None if giver_fn is None else giver_fn(k, obj)
        tgt = policy.step(0.1 * k, obj, cloud + obj[:3, 3], giver, hand)
        out.append((obj, tgt, hand))
        if follow:
            hand = HandState(tgt.T_world_hand, tgt.finger_q)
    return out


def test_defaults():
    """The stall switch and the jam back-out are on (they act in the pregrasp style only: the
    offline benchmark's "paper" style is untouched)."""
    c = DynamicGraspConfig()
    assert c.align_style == "paper"
    assert c.stall_radius_m > 0 and c.jam_m > 0


def test_stalled_approach_switches_in_the_pregrasp_style_only(hs):
    """The planner holds the hand 8 cm from the nearest grasp (outside the 5 cm switch): the
    pregrasp style switches to align after `stall_frames` without progress; the paper style
    never does."""

    def obj(k):
        return _pose([0, 0, 0], [0.0, 0.0, 0.4])

    hand0 = HandState(_pose([0, 0, 0], [0.20, 0.0, 0.4]), np.zeros(22))  # ring grasp at x = 0.12
    phases = {}
    for style in ("paper", "pregrasp"):
        cfg = _cfg(style, easy_radius_m=0.05, stall_radius_m=0.10, stall_frames=5)
        policy = DynamicGrasp(_StillPlanner(), _ring_pool(), cfg, n_points=32, hand_surface=hs)
        phases[style] = [t.phase for _, t, _ in _run(policy, 30, obj, hand0, follow=False)]
    assert "align" not in phases["paper"]
    first = phases["pregrasp"].index("align")
    assert first == cfg.align_after_frames + cfg.stall_frames  # the first checked frame + the wait
    # Beyond the stall radius it never switches.
    cfg = _cfg("pregrasp", easy_radius_m=0.05, stall_radius_m=0.07, stall_frames=5)
    policy = DynamicGrasp(_StillPlanner(), _ring_pool(), cfg, n_points=32, hand_surface=hs)
    assert "align" not in [t.phase for _, t, _ in _run(policy, 30, obj, hand0, follow=False)]


def test_stall_counts_progress_from_the_best_distance(hs):
    cfg = _cfg("pregrasp", stall_radius_m=0.10, stall_frames=3, stall_progress_m=0.01)
    policy = DynamicGrasp(_StillPlanner(), _ring_pool(), cfg, n_points=32, hand_surface=hs)
    policy.state.phase = "approach"
    seen = []
    for f, d in enumerate([0.09, 0.075, 0.085, 0.06, 0.07, 0.065, 0.062, 0.08]):
        policy.state.frame = f
        seen.append(policy._stalled(d))
    # new bests (by 1 cm) at frames 0, 1 and 3; stalled 3 frames after the last one
    assert seen == [False, False, False, False, False, False, True, True]


def test_a_jammed_way_in_backs_out_and_takes_another_goal(hs):
    """The measured hand never gets in (stuck at the pre-grasp): it does not close there but backs
    out and commits to another goal (once: `jam_retries`), then closes where it is."""
    cfg = _cfg(
        "pregrasp", easy_radius_m=0.5, jam_m=0.03, jam_retries=1, arrive_frames=2, grasp_arrive_frames=2
    )
    policy = DynamicGrasp(_StillPlanner(), _ring_pool(), cfg, n_points=32, hand_surface=hs)

    def obj(k):
        return _pose([0, 0, 0], [0.0, 0.0, 0.4])

    run = _run(policy, 80, obj, HandState(_pose([0, 0, 0.2], [0.3, 0.1, 0.45]), np.zeros(22)), follow=False)
    stages = []
    for _, t, _ in run:
        if t.phase == "align" and (not stages or stages[-1][1] != t.goal):
            stages.append((t.phase, t.goal))
    goals = [g for _, g in stages]
    assert len(set(goals)) == 2, goals
    assert policy.state.tried == {goals[0]}
    assert run[-1][1].phase in ("close", "lift", "done")  # the retry budget spent: it closes
    # never closes on the first goal
    assert all(t.goal != goals[0] for _, t, _ in run if t.phase in ("close", "lift"))
    # off: the first goal closes where the hand is
    cfg0 = _cfg("pregrasp", easy_radius_m=0.5, jam_m=0.0, arrive_frames=2, grasp_arrive_frames=2)
    policy = DynamicGrasp(_StillPlanner(), _ring_pool(), cfg0, n_points=32, hand_surface=hs)
    run = _run(policy, 80, obj, HandState(_pose([0, 0, 0.2], [0.3, 0.1, 0.45]), np.zeros(22)), follow=False)
    assert len({t.goal for _, t, _ in run if t.phase in ("align", "close", "lift")}) == 1


def _giver(k, obj, away_from=None):
    """21 keypoints 8 cm on the -x side of the object (the giver's hand), moving 1 cm per frame
    further away from frame `away_from` on (its hand opens and withdraws)."""
    kp = obj[:3, 3] + np.array([-0.08, 0.0, 0.0]) + np.random.default_rng(0).normal(scale=0.01, size=(21, 3))
    if away_from is not None and k >= away_from:
        kp = kp + np.array([-0.01 * (k - away_from + 1), 0.0, 0.0])
    return kp


def _to_lift(hs, **kw):
    cfg = _cfg("pregrasp", easy_radius_m=0.5, align_clearance_m=0.0, giver_opposite_cos=-1.0, **kw)
    return DynamicGrasp(_StillPlanner(), _ring_pool(), cfg, n_points=32, hand_surface=hs)
