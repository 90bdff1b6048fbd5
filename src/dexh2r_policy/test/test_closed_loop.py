"""The in-process closed loop: rendered cameras -> trackers -> DynamicGrasp -> controller -> cell."""

from __future__ import annotations

import json
import os

os.environ.setdefault("MUJOCO_GL", "egl")

import pytest

from dexh2r_policy.closed_loop import main, summarize

OUTCOMES = {"success", "hit-human", "drop", "timeout", "safety-stop"}


@pytest.mark.xdist_group("replay")  # rendering + MediaPipe: never beside a real-time replay gate
def test_one_episode_runs_the_whole_stack_and_the_cell_decides(tmp_path):
    from dexh2r_policy.datagen import main as datagen

    # A small pool for the first easy scenario's object (the full pools are data, made by command).
    pools = tmp_path / "pools"
    assert datagen(["grasps", "--objects", "prim/box_small", "--candidates", "20", "--out", str(pools)]) == 0
    out = tmp_path / "cl.json"
    args = ["--scenarios", "config/scenarios/easy.yaml", "--episodes", "1", "--pools", str(pools)]
    # 424x240: this checks that the stack runs; the 640x360 default's rendering and MediaPipe cost
    # starved the real-time replay tests on the other worker of a 2-core run.
    assert main([*args, "--resolution", "424x240", "--json", str(out)]) == 0
    summary = json.loads(out.read_text())
    assert summary["episodes"] == 1 and summary["limit_violations"] == 0
    assert sum(summary[f"{k.replace('-', '_')}_rate"] for k in OUTCOMES) == pytest.approx(1.0)
    row = json.loads((tmp_path / "cl" / "episodes.jsonl").read_text().splitlines()[0])
    assert row["outcome"] in OUTCOMES
    assert row["last_phase"] is not None, "the policy produced targets from tracked perception"
    assert row["perception_ms_p95"] is not None and row["policy_ms_p95"] < 100
    assert row["render_ms_p50"] > 0 and row["perception_ms_p50"] > 0  # what the delay is made of


def test_the_dp3_baseline_runs_the_loop(tmp_path, capsys):
    """`--policy dp3`: the committed DP3 checkpoint as DynamicGrasp's planner (receding horizon),
    everything else as with MotionNet; `--ros` refuses it (dynamic_grasp_node runs MotionNet)."""
    from dexh2r_policy.datagen import main as datagen

    pools = tmp_path / "pools"
    assert datagen(["grasps", "--objects", "prim/box_small", "--candidates", "20", "--out", str(pools)]) == 0
    args = ["--scenarios", "config/scenarios/easy.yaml", "--episodes", "1", "--pools", str(pools)]
    out = tmp_path / "dp3.json"
    assert main([*args, "--policy", "dp3", "--perception", "truth", "--json", str(out)]) == 0
    summary = json.loads(out.read_text())
    assert summary["policy"] == "dp3" and summary["checkpoint"] == "checkpoints/dp3_small.pt"
    assert summary["limit_violations"] == 0 and summary["episodes"] == 1
    row = json.loads((tmp_path / "dp3" / "episodes.jsonl").read_text().splitlines()[0])
    assert row["last_phase"] is not None and row["policy_ms_p95"] is not None
    assert main([*args, "--policy", "dp3", "--ros", "--json", str(out)]) == 2
    assert "MotionNet" in capsys.readouterr().err


def test_summary_rates_and_bad_checkpoint(tmp_path, capsys):
    rows = [
        {"scenario": "a", "outcome": "success", "time_to_handover_s": 2.0, "limit_violations": 0},
        {"scenario": "b", "outcome": "hit-human", "time_to_handover_s": None, "limit_violations": 0},
        {"scenario": "a", "outcome": "hit-human", "time_to_handover_s": None, "limit_violations": 0},
        {"scenario": "b", "outcome": "success", "time_to_handover_s": 4.0, "limit_violations": 0},
    ]
    rows[1]["last_phase"] = "align"  # in-process rows name the phase; --ros rows do not
    rows[2]["time_to_handover_s"] = 3.5  # the giver had let go when the robot touched it
    s = summarize(rows)
    assert s["success_rate"] == 0.5 and s["hit_human_rate"] == 0.5 and s["time_to_handover_s_median"] == 3.0
    assert list(s["per_scenario"]) == ["a", "b"]
    assert s["per_scenario"]["a"] == {
        "success": 1,
        "hit-human": 1,
        "drop": 0,
        "timeout": 0,
        "safety-stop": 0,
        "error": 0,
    }
    assert s["hit_human_by_phase"] == {"align": 1, "unknown": 1}
    assert s["hit_human_after_release"] == 1  # counted in hit_human_rate all the same
    assert s["time_to_handover_s_median"] == 3.0  # successes only
    lo, hi = s["ci95"]["success_rate"]  # 2 of 4: a Wilson interval, wide
    assert lo == pytest.approx(0.150, abs=1e-3) and hi == pytest.approx(0.850, abs=1e-3)
    assert s["ci95"]["time_to_handover_s_median"] is None  # 2 successes cannot bound a median
    args = ["--checkpoint", str(tmp_path / "none.pt"), "--json", str(tmp_path / "x.json")]
    assert main(args) == 2
    assert "checkpoint not found" in capsys.readouterr().err
    assert main(["--actuation-delay", "soon", "--json", str(tmp_path / "x.json")]) == 2
    assert "--actuation-delay" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:  # a bag per episode is for the node graph only
        main(["--record", "--json", str(tmp_path / "x.json")])
    assert exc.value.code == 2 and "--record: only with --ros" in capsys.readouterr().err


# ---- the physical goal alignment (DynamicGraspConfig.align_style = "pregrasp") ------------------

import numpy as np  # noqa: E402
from scipy.spatial.transform import Rotation  # noqa: E402

from dexh2r_policy.dynamic_grasp import (  # noqa: E402
    DynamicGrasp,
    DynamicGraspConfig,
    HandState,
    ObjectGraspPool,
    inverse,
)


def _pose(rotvec, t) -> np.ndarray:
    T = np.eye(4)
    T[:3, :3] = Rotation.from_rotvec(rotvec).as_matrix()
    T[:3, 3] = t
    return T


class _StillPlanner:
    """Plans 'stay where you are' (only the alignment moves the hand)."""

    n_past = 5
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


def _run(policy, steps, obj_fn, hand0, follow=True, giver=None):
    cloud = np.random.default_rng(0).normal(scale=0.03, size=(64, 3))
    hand, out = hand0, []
    for k in range(steps):
        obj = obj_fn(k)
        tgt = policy.step(0.1 * k, obj, cloud + obj[:3, 3], giver, hand)
        out.append((obj, tgt, hand))
        if follow:
            hand = HandState(tgt.T_world_hand, tgt.finger_q)
    return out


def _cfg(style: str, **kw) -> DynamicGraspConfig:
    base = dict(
        mode="easy", align_after_frames=6, easy_radius_m=0.5, min_points=8, close_frames=3, lift_frames=3
    )
    return DynamicGraspConfig(align_style=style, **{**base, **kw})


def test_pregrasp_alignment_commits_to_one_goal_where_the_paper_rule_switches(hs):
    """The object turns under the hand: re-selecting every frame (the paper's alignment) hops
    between ring grasps (the goal oscillation the closed-loop traces showed); the pregrasp
    alignment keeps the goal it committed to (in the object frame, so it turns with the object)."""

    def obj(k):
        return _pose([0, 0, 0.12 * k], [0.0, 0.0, 0.4])

    hand0 = HandState(_pose([0, 0, 0.3], [0.25, 0.05, 0.42]), np.zeros(22))
    goals = {}
    for style in ("paper", "pregrasp"):
        policy = DynamicGrasp(_StillPlanner(), _ring_pool(), _cfg(style), n_points=32, hand_surface=hs)
        run = _run(policy, 40, obj, hand0)
        goals[style] = {t.goal for _, t, _ in run if t.phase in ("align", "close")}
        assert run[-1][1].phase == "done", style
    assert len(goals["paper"]) > 1
    assert len(goals["pregrasp"]) == 1


def test_pregrasp_alignment_opens_goes_to_the_pregrasp_then_in_then_closes(hs):
    cfg = _cfg("pregrasp")
    pool = _ring_pool()
    policy = DynamicGrasp(_StillPlanner(), pool, cfg, n_points=32, hand_surface=hs)

    def obj(k):  # drifting object: waypoints live in its frame
        return _pose([0, 0, 0.01 * k], [0.005 * k, 0.0, 0.4])

    run = _run(policy, 60, obj, HandState(_pose([0, 0, 0.2], [0.3, 0.1, 0.45]), np.zeros(22)))
    g = {t.goal for _, t, _ in run if t.phase == "align"}.pop()
    sq = policy.squeeze_idx
    q_grasp = pool.finger_q[g]
    q_open = policy.open_hand(q_grasp)
    assert np.all(q_open[sq] < q_grasp[sq])  # open: the squeeze joints back by open_rad
    in_obj = [(inverse(o) @ t.T_world_hand, t) for o, t, _ in run if t.phase == "align"]
    pre = policy.pregrasp(g)
    assert np.linalg.norm(pre[:3, 3]) == pytest.approx(
        np.linalg.norm(pool.T_obj_hand[g][:3, 3]) + cfg.pregrasp_m
    )
    i_pre = next(i for i, (T, _) in enumerate(in_obj) if np.allclose(T, pre, atol=1e-9))
    assert np.allclose(in_obj[-1][0], pool.T_obj_hand[g], atol=1e-9)  # straight in to the grasp
    for T, _ in in_obj[i_pre:]:  # from the pre-grasp on: on the radial line, rotation as the grasp
        np.testing.assert_allclose(T[:3, :3], pre[:3, :3], atol=1e-9)
        assert np.linalg.norm(np.cross(T[:3, 3], pre[:3, 3])) < 1e-9
    for _, t in in_obj[i_pre:]:
        np.testing.assert_allclose(t.finger_q, q_open, atol=1e-9)  # open until the close
    close = [t for _, t, _ in run if t.phase == "close"]
    lift = [t for _, t, _ in run if t.phase == "lift"]
    assert len(close) == cfg.close_frames
    q_final = np.clip(q_grasp + np.isin(np.arange(22), sq) * cfg.squeeze_rad, policy.q_lower, policy.q_upper)
    np.testing.assert_allclose(close[0].finger_q, q_open, atol=1e-9)  # closing starts open ...
    for t in lift:  # ... and ends on the squeezed grasp, kept while lifting
        np.testing.assert_allclose(t.finger_q, q_final, atol=1e-9)
    o, _, hand = next((o, t, h) for o, t, h in run if t.phase == "close")
    err = inverse(o) @ hand.T_world_hand
    assert np.linalg.norm(err[:3, 3] - pool.T_obj_hand[g][:3, 3]) <= cfg.arrive_m  # closes on arrival


def test_pregrasp_alignment_waits_for_the_measured_hand(hs):
    """The measured hand does not follow (a slow arm): the waypoint stays at the pre-grasp and
    the stage ends only `arrive_frames` after it was commanded, not when the plan says so."""
    cfg = _cfg("pregrasp", arrive_frames=6)
    policy = DynamicGrasp(_StillPlanner(), _ring_pool(), cfg, n_points=32, hand_surface=hs)

    def obj(k):
        return _pose([0, 0, 0], [0.0, 0.0, 0.4])

    run = _run(policy, 40, obj, HandState(_pose([0, 0, 0.2], [0.3, 0.1, 0.45]), np.zeros(22)), follow=False)
    align = [t for _, t, _ in run if t.phase == "align"]
    g = align[0].goal
    pre_world = obj(0) @ policy.pregrasp(g)
    at_pre = [np.allclose(t.T_world_hand, pre_world, atol=1e-9) for t in align]
    first = at_pre.index(True)
    assert all(at_pre[first : first + cfg.arrive_frames + 1])  # held there while waiting
    assert not at_pre[first + cfg.arrive_frames + 1]  # then on to the grasp


def test_committed_goal_avoids_the_giver_side_and_uses_the_reach_cost(hs):
    """Giver keypoints on the -y side of the object: the goal is on the far (+y) side; a robot
    reach cost (e.g. the arm's joint travel time) ranks the candidates instead of rotation."""
    cfg = _cfg("pregrasp", align_clearance_m=0.0)
    pool = _ring_pool()
    obj = _pose([0, 0, 0], [0.5, 0.0, 0.4])
    kp = (
        obj[:3, 3] + np.array([0.0, -0.09, -0.02]) + np.random.default_rng(1).normal(scale=0.01, size=(21, 3))
    )
    from dexh2r_policy.dynamic_grasp import giver_points

    hand = HandState(_pose([0, 0, 0], [0.5, -0.2, 0.45]), np.zeros(22))  # on the giver's side
    policy = DynamicGrasp(_StillPlanner(), pool, cfg, n_points=32, hand_surface=hs)
    pool_world = obj[None] @ pool.T_obj_hand
    g = policy._select_committed(obj, pool_world, giver_points(kp), hand)
    assert pool.T_obj_hand[g][1, 3] > 0.05  # far side, although the hand is on the giver's side
    calls = []

    def cost(T):  # prefers the hand furthest along +y
        calls.append(len(T))
        return -T[:, 1, 3]

    policy.reach_cost = cost
    g2 = policy._select_committed(obj, pool_world, giver_points(kp), hand)
    assert calls and g2 == 3  # the ring grasp at +90 deg: y = +0.12


def test_committed_goal_is_one_whose_close_holds_the_object(hs):
    """With `require_close_hold` (the closed loop's setting) the alignment commits only to pool
    grasps whose own close holds the object (`ObjectGraspPool.holds`, `grasps.close_hold`): the
    reach cost's favourite is skipped when it does not hold; all grasps when none holds, when the
    pool was not tested, or with the rule off (the paper's pool)."""
    from dataclasses import replace

    from dexh2r_policy.closed_loop import loop_policy_config
    from dexh2r_policy.dynamic_grasp import giver_points

    obj = _pose([0, 0, 0], [0.5, 0.0, 0.4])
    kp = (
        obj[:3, 3] + np.array([0.0, -0.09, -0.02]) + np.random.default_rng(1).normal(scale=0.01, size=(21, 3))
    )
    hand = HandState(_pose([0, 0, 0], [0.5, 0.2, 0.45]), np.zeros(22))
    ring = _ring_pool()

    def choose(holds, **kw):
        pool = ObjectGraspPool(ring.T_obj_hand, ring.finger_q, "ring", holds=holds)
        cfg = _cfg("pregrasp", align_clearance_m=0.0, **kw)
        policy = DynamicGrasp(_StillPlanner(), pool, cfg, n_points=32, hand_surface=hs)
        policy.reach_cost = lambda T: -T[:, 1, 3]  # prefers the hand furthest along +y: grasp 3
        return policy._select_committed(obj, obj[None] @ pool.T_obj_hand, giver_points(kp), hand)

    holds = np.ones(12, bool)
    holds[3] = False
    assert choose(None, require_close_hold=True) == 3
    assert choose(holds, require_close_hold=False) == 3
    g = choose(holds, require_close_hold=True)
    assert g != 3 and g in (2, 4)  # the next along +y that holds
    assert choose(np.zeros(12, bool), require_close_hold=True) == 3  # none holds: the rule steps aside
    sym = ObjectGraspPool(ring.T_obj_hand, ring.finger_q, "ring", holds=holds).symmetrized(
        np.stack([np.eye(3), Rotation.from_rotvec([np.pi, 0, 0]).as_matrix()])
    )
    assert np.array_equal(sym.holds, np.tile(holds, 2))  # a symmetric copy holds as its original
    assert not DynamicGraspConfig().require_close_hold
    assert loop_policy_config(replace(DynamicGraspConfig()), "hard").require_close_hold


def test_giver_points_extend_the_tracked_fingertips_and_the_loop_uses_it():
    """The tracked tips of fingers that wrap an object are 2-4 cm short: the closed loop treats
    each finger as up to 3 cm longer, along its last bone; the paper's rule (0) does not."""
    from dexh2r_core.hand_landmarks import FINGERTIPS
    from dexh2r_policy.closed_loop import GIVER_TIP_EXTENSION_M, loop_policy_config
    from dexh2r_policy.dynamic_grasp import giver_points

    kp = np.random.default_rng(3).normal(scale=0.05, size=(21, 3))
    plain = giver_points(kp)
    assert plain.shape == (41, 3) and np.array_equal(giver_points(kp, 0.0), plain)
    longer = giver_points(kp, 0.03)
    assert longer.shape == (56, 3) and np.array_equal(longer[:41], plain)
    for i, (a, b) in enumerate((tip - 1, tip) for tip in FINGERTIPS):
        u = (kp[b] - kp[a]) / np.linalg.norm(kp[b] - kp[a])
        ext = longer[41 + 3 * i : 44 + 3 * i] - kp[b]
        assert np.allclose(ext @ u, [0.01, 0.02, 0.03]) and np.allclose(np.cross(ext, u), 0.0, atol=1e-12)
    assert DynamicGraspConfig().giver_tip_extension_m == 0.0
    assert loop_policy_config(DynamicGraspConfig(), "easy").giver_tip_extension_m == GIVER_TIP_EXTENSION_M > 0


@pytest.mark.parametrize("mode", ["easy", "hard"])
def test_the_loop_turns_its_alignment_faster_than_the_policy_default(mode):
    """The loop's waypoints turn ALIGN_STEP_RAD a frame (the arm at a real UR5's speed keeps up);
    a --set still overrides it."""
    from dexh2r_policy.closed_loop import ALIGN_STEP_RAD, loop_policy_config

    assert loop_policy_config(DynamicGraspConfig(), mode).align_step_rad == ALIGN_STEP_RAD
    assert DynamicGraspConfig().align_step_rad < ALIGN_STEP_RAD
    over = loop_policy_config(DynamicGraspConfig(), mode, overrides={"align_step_rad": 0.05})
    assert over.align_step_rad == 0.05


def test_grasp_phase_rule_and_zone():
    from dexh2r_control.state_machine import HandoverConfig
    from dexh2r_control.state_machine import policy_grasp_phase as grasp_phase
    from dexh2r_policy.closed_loop import GRASP_ZONE_M

    assert HandoverConfig().grasp_zone_m == GRASP_ZONE_M
    assert not grasp_phase("warmup", 0.05, GRASP_ZONE_M)
    assert not grasp_phase("approach", 0.40, GRASP_ZONE_M)
    assert grasp_phase("approach", 0.20, GRASP_ZONE_M)
    assert not grasp_phase("approach", 0.20, 0.0)
    assert all(grasp_phase(p, 1.0, GRASP_ZONE_M) for p in ("align", "close", "lift", "done"))


def test_truth_perception_episode_traces_the_loop(tmp_path):
    """`--perception truth` (no cameras): the whole loop runs and the trace carries the
    controller's side (IK, following error, separation) per policy step."""
    from dexh2r_policy.datagen import main as datagen

    pools = tmp_path / "pools"
    assert datagen(["grasps", "--objects", "prim/box_small", "--candidates", "20", "--out", str(pools)]) == 0
    out = tmp_path / "t.json"
    args = ["--scenarios", "config/scenarios/easy.yaml", "--episodes", "1", "--pools", str(pools)]
    assert main([*args, "--perception", "truth", "--json", str(out)]) == 0
    summary = json.loads(out.read_text())
    assert summary["perception"] == "truth" and summary["align"] == "pregrasp"
    assert summary["arm_servo"] == "drive" and summary["lead_frames"] == 1.5  # the loop's, recorded
    assert summary["limit_violations"] == 0
    # The default: the loop's own measured compute (here the policy steps) delays the commands.
    assert summary["actuation_delay"] == "measured" and 0.0 < summary["actuation_delay_s_median"] < 0.25
    row = json.loads((tmp_path / "t" / "episodes.jsonl").read_text().splitlines()[0])
    steps = [s for s in row["trace"] if s["phase"] != "warmup"]
    assert steps and {"ik_ok", "command_to_measured_rad", "separation_m", "goal"} <= set(steps[0])
    # The giver's hold in weights: all of the weight and no tug while nobody touches the object.
    np.testing.assert_allclose(steps[0]["giver_force"], [0.0, 0.0, 1.0], atol=0.05)
    assert steps[0]["giver_force"][2] == pytest.approx(steps[0]["giver_support"], abs=0.01)
    # The wrist reading while the hand touches nothing: about the hand's weight, upward.
    assert all(len(s["wrist_force"]) == 3 for s in steps)
    assert 5.0 < steps[0]["wrist_force"][2] < 15.0 and abs(steps[0]["wrist_force"][0]) < 3.0  # 0.9 kg
    assert max(s["command_to_measured_rad"] for s in row["trace"]) < 0.2  # the following-error bound


def _alignment_goals(policy, clearance, on_commit, frames: int) -> tuple[list[int], int]:
    """Step `policy` on a still object until `frames` frames after it commits to a goal, with
    `clearance(idx, obj_pose, giver, k, committed)` standing in for the giver clearance and
    `on_commit(k)` called at the commit; (the goals of the align frames, the committed goal)."""
    state = {"k": 0, "committed": None}
    real = policy._clearance
    policy._clearance = lambda idx, o, g, T=None: clearance(idx, o, g, state["k"], state["committed"], real)
    obj = _pose([0, 0, 0], [0.5, 0.0, 0.4])
    giver = obj[:3, 3] + np.array([0.0, -0.3, 0.0]) + np.zeros((21, 3))  # far: nothing blocked
    cloud = np.random.default_rng(0).normal(scale=0.03, size=(64, 3)) + obj[:3, 3]
    hand = HandState(_pose([0, 0, 0.2], [0.8, 0.1, 0.45]), np.zeros(22))
    goals, first = [], None
    for k in range(60):
        state["k"] = k
        tgt = policy.step(0.1 * k, obj, cloud, giver, hand)
        if tgt.phase == "align":
            if state["committed"] is None:
                state["committed"], first = tgt.goal, k
                on_commit(k)
            goals.append(tgt.goal)
        hand = HandState(tgt.T_world_hand, tgt.finger_q)
        if first is not None and k >= first + frames:
            break
    return goals, state["committed"]


def test_committed_goal_survives_keypoint_noise_but_not_a_blocking_hand(hs):
    """A goal blocked by the giver's hand for fewer than `blocked_frames` frames in a row (noise
    in tracked keypoints) is kept; blocked for longer (the pre-grasp stage), it is replaced by a
    clear one: from a clear goal (the average starts at `giver_clearance_m + blocked_margin_m`)
    after 4 frames at 0."""
    cfg = _cfg("pregrasp", align_clearance_m=0.01, blocked_frames=3, align_step_rad=0.01, step_m=0.005)
    policy = DynamicGrasp(_StillPlanner(), _ring_pool(), cfg, n_points=32, hand_surface=hs)
    blocked_on: set[int] = set()

    def clearance(idx, obj_pose, giver, k, committed, real):
        gap = real(idx, obj_pose, giver)
        if k in blocked_on and committed is not None:
            gap = np.where(idx == committed, 0.0, np.maximum(gap, 0.05))
        return gap

    def on_commit(first: int) -> None:
        blocked_on.update({first + 2, first + 3, first + 5, first + 6})  # 2 in a row, twice
        blocked_on.update({first + 9, first + 10, first + 11, first + 12})  # then 4 in a row

    goals, committed = _alignment_goals(policy, clearance, on_commit, frames=13)
    assert goals[: 9 + 1] == [committed] * 10  # noise: kept
    assert goals[-1] != committed  # blocked for 4 frames: replaced


@pytest.mark.parametrize("smoothing, margin", [(0.5, 0.01), (1.0, 0.0)])
def test_keypoint_noise_around_the_clearance_does_not_block_a_goal(hs, smoothing, margin):
    """Every goal of a held object clears the giver by about `giver_clearance_m` (2 cm). Frames
    that read the committed goal at 1.2-1.4 cm and the others at 3 cm are noise, not a block
    (with one frame against 2 cm, the rule before, the goal changed and the way in restarted);
    the giver's hand closing in on it (0 cm) is a block."""
    cfg = _cfg(
        "pregrasp",
        align_clearance_m=0.03,
        giver_clearance_m=0.02,
        blocked_frames=3,
        blocked_smoothing=smoothing,
        blocked_margin_m=margin,
        align_step_rad=0.01,
        step_m=0.005,
    )
    policy = DynamicGrasp(_StillPlanner(), _ring_pool(), cfg, n_points=32, hand_surface=hs)
    noise: dict[int, float] = {}
    block: set[int] = set()

    def clearance(idx, obj_pose, giver, k, committed, real):
        if committed is not None and k in noise:
            return np.where(idx == committed, noise[k], 0.03)
        if committed is not None and k in block:
            return np.where(idx == committed, 0.0, 0.05)
        return np.full(len(idx), 0.02)

    def on_commit(first: int) -> None:
        noisy = [0.012, 0.014, 0.013, 0.012, 0.014, 0.013]
        noise.update({first + 2 + i: v for i, v in enumerate(noisy)})  # 6 noisy frames in a row
        block.update(range(first + 9, first + 12))  # then 3 blocked ones

    goals, committed = _alignment_goals(policy, clearance, on_commit, frames=12)
    kept_through_noise = goals[:9] == [committed] * 9
    assert kept_through_noise == (smoothing < 1.0)
    assert goals[-1] != committed  # the giver's hand came to block it: replaced


def test_goal_clearance_checks_the_open_hand_where_it_closes(hs):
    """The hand goes in open and closes at the grasp: a giver point next to the open hand there
    (but clear of the closed hand at the grasp and of the open hand at the pre-grasp) makes the
    grasp a blocked goal."""
    from dexh2r_policy.dynamic_grasp import from_frame

    cfg = _cfg("pregrasp")
    policy = DynamicGrasp(_StillPlanner(), _ring_pool(), cfg, n_points=32, hand_surface=hs)
    obj, g = _pose([0, 0, 0], [0.5, 0.0, 0.4]), 0
    policy._clearance(np.array([g]), obj, np.zeros((1, 3)) + 10.0)  # builds the open hand's points
    at = obj @ policy.pool.T_obj_hand[g]
    closed = from_frame(at[None], policy.pool_points[[g]])[0]
    open_at_grasp = from_frame(at[None], policy.pool_points_open[[g]])[0]
    open_at_pre = from_frame((obj @ policy.pregrasp(g))[None], policy.pool_points_open[[g]])[0]
    others = np.concatenate([closed, open_at_pre])
    far = np.linalg.norm(open_at_grasp[:, None] - others[None], axis=-1).min(axis=1)
    k = int(np.argmax(far))
    assert far[k] > 0.02  # the open fingers reach where neither other hand is
    giver = open_at_grasp[k][None] + np.array([[0.0, 0.0, 0.002]])
    assert policy._clearance(np.array([g]), obj, giver)[0] < 0.005


def test_measured_giver_surface_counts_in_the_goal_clearance(hs):
    """The giver's hand as the depth sees it (`step(giver_surface=...)`): a surface point next to
    a grasp's hand lowers that grasp's clearance to its distance plus `giver_surface_depth_m`
    (a bone centre a finger's radius inside); keypoints far away alone leave it clear. Bad
    surface points are bad input; without keypoints the surface is not used."""
    from dexh2r_policy.dynamic_grasp import BadInputError, from_frame, giver_points

    cfg = _cfg("pregrasp")
    policy = DynamicGrasp(_StillPlanner(), _ring_pool(), cfg, n_points=32, hand_surface=hs)
    obj, g = _pose([0, 0, 0], [0.5, 0.0, 0.4]), 0
    kp = np.tile(obj[:3, 3] + np.array([0.0, 0.0, 0.5]), (21, 1))  # 0.5 m above: far from every hand
    giver = giver_points(kp)
    alone = policy._clearance(np.array([g]), obj, giver)[0]
    assert alone > 0.2
    closed = from_frame((obj @ policy.pool.T_obj_hand[g])[None], policy.pool_points[[g]])[0]
    surface = closed[:1] + np.array([[0.0, 0.0, 0.004]])  # 4 mm from the closed hand's first point
    policy.state.giver_surface = surface
    gap = policy._clearance(np.array([g]), obj, giver)[0]
    assert gap == pytest.approx(0.004 + cfg.giver_surface_depth_m, abs=1e-6)
    policy.state.giver_surface = None

    hand = HandState(_pose([0, 0, 0], [0.5, -0.2, 0.45]), np.zeros(22))
    pts = np.random.default_rng(0).normal(scale=0.03, size=(64, 3)) + obj[:3, 3]
    policy.step(0.0, obj, pts, kp, hand, giver_surface=surface)
    np.testing.assert_array_equal(policy.state.giver_surface, surface)
    policy.step(0.1, obj, pts, None, hand, giver_surface=surface)
    assert policy.state.giver_surface is None  # no keypoints: no giver at all
    with pytest.raises(BadInputError, match="giver surface"):
        policy.step(0.2, obj, pts, kp, hand, giver_surface=np.full((3, 3), np.nan))
    with pytest.raises(BadInputError, match="giver surface"):
        policy.step(0.3, obj, pts, kp, hand, giver_surface=np.zeros((3, 2)))


def test_goal_clearance_can_check_the_way_to_the_pregrasp(hs):
    """With `align_path_samples` the selection's clearance also checks the open hand on the way
    from the hand's pose to the pre-grasp: a giver point half way there (clear of the grasp and
    the pre-grasp) lowers it; without the samples, or without the hand's pose, it does not."""
    from dataclasses import replace

    from dexh2r_policy.dynamic_grasp import from_frame, giver_points, interpolate_pose, inverse

    policy = DynamicGrasp(_StillPlanner(), _ring_pool(), _cfg("pregrasp"), n_points=32, hand_surface=hs)
    obj, g = _pose([0, 0, 0], [0.5, 0.0, 0.4]), 0
    far = giver_points(np.tile(obj[:3, 3] + np.array([0.0, 0.0, 0.6]), (21, 1)))
    policy._clearance(np.array([g]), obj, far)  # builds the open hand's points
    T_now = inverse(obj) @ _pose([0, 0, 0], [0.5, 0.0, 0.8])  # the hand 40 cm above the object
    half = interpolate_pose(T_now, policy.pregrasp(g), 0.5)
    point = from_frame((obj @ half)[None], policy.pool_points_open[[g]])[0].mean(axis=0)
    giver = np.concatenate([far, point[None]])
    assert policy._clearance(np.array([g]), obj, giver, T_now)[0] > 0.05  # off: the ends only
    policy.config = replace(policy.config, align_path_samples=3)
    assert policy._clearance(np.array([g]), obj, giver)[0] > 0.05  # no hand pose: the ends only
    assert policy._clearance(np.array([g]), obj, giver, T_now)[0] < 0.03
    from dexh2r_policy.closed_loop import loop_policy_config

    assert DynamicGraspConfig().align_path_samples == 0  # the paper's selection: off
    assert loop_policy_config(DynamicGraspConfig(), "hard").align_path_samples == 3  # the loop's


@pytest.mark.parametrize(
    "soft, weight, gap_near, chosen",
    [
        (0.0, 100.0, 0.028, "far"),  # the hard cut: 2 mm short is out
        (0.01, 100.0, 0.028, "near"),  # in the band: 1.1 s + 0.2 s beats 3.3 s
        (0.01, 100.0, 0.022, "near"),  # 1.1 + 0.8
        (0.01, 300.0, 0.022, "far"),  # 1.1 + 2.4 > 3.3: the weight decides
        (0.01, 100.0, 0.018, "far"),  # below the band: out
    ],
)
def test_soft_goal_clearance_weighs_a_shortfall_against_the_reach_cost(hs, soft, weight, gap_near, chosen):
    """`align_clearance_soft_m`: a goal that clears the giver by a little less than
    `align_clearance_m` stays a candidate, its reach cost raised by `align_clearance_cost` per
    metre short; below the band it is out, as every shortfall is without the band."""
    from dexh2r_policy.dynamic_grasp import giver_points

    cfg = _cfg("pregrasp", align_clearance_m=0.03, align_clearance_soft_m=soft, align_clearance_cost=weight)
    policy = DynamicGrasp(_StillPlanner(), _ring_pool(), cfg, n_points=32, hand_surface=hs)
    obj = _pose([0, 0, 0], [0.5, 0.0, 0.4])
    pool_world = obj[None] @ policy.pool.T_obj_hand
    giver = giver_points(np.tile(obj[:3, 3] + np.array([0.15, 0.0, 0.0]), (21, 1)))  # on the +x side
    near, far = 5, 6  # both on the far side from the giver (150 and 180 deg round the ring)
    gaps, costs = {near: gap_near, far: 0.045}, {near: 1.1, far: 3.3}

    def index(T):
        return int(np.argmin(np.linalg.norm(pool_world[:, :3, 3] - T[:3, 3], axis=1)))

    policy._clearance = lambda idx, *a, **k: np.array([gaps.get(int(i), 0.0) for i in idx])
    policy.reach_cost = lambda poses: np.array([costs.get(index(T), 0.5) for T in poses])
    hand = HandState(_pose([0, 0, 0], [0.2, 0.0, 0.4]), np.zeros(22))
    g = policy._select_committed(obj, pool_world, giver, hand)
    assert g == {"near": near, "far": far}[chosen]


@pytest.mark.parametrize("tries, blocked, chosen", [(5, set(), 5), (5, {5}, 6), (0, {5}, 5), (1, {5}, 5)])
def test_goal_ranking_skips_goals_the_arm_cannot_follow_the_way_to(hs, tries, blocked, chosen):
    """With a `reach_path` the ranked goals are tried in order and the first whose way (hand ->
    pre-grasp -> grasp) the arm can follow is committed to; within `reach_path_tries` none: the
    best, as without it. The way asked about starts at the hand and goes through the goal's
    pre-grasp to the goal."""
    from dexh2r_policy.dynamic_grasp import giver_points

    cfg = _cfg("pregrasp", align_clearance_m=0.03, reach_path_tries=tries)
    policy = DynamicGrasp(_StillPlanner(), _ring_pool(), cfg, n_points=32, hand_surface=hs)
    obj = _pose([0, 0, 0], [0.5, 0.0, 0.4])
    pool_world = obj[None] @ policy.pool.T_obj_hand
    giver = giver_points(np.tile(obj[:3, 3] + np.array([0.15, 0.0, 0.0]), (21, 1)))
    costs = {5: 1.0, 6: 2.0}  # 5 ranks first
    asked = []

    def index(T):
        return int(np.argmin(np.linalg.norm(pool_world[:, :3, 3] - T[:3, 3], axis=1)))

    def reach_path(T_now, poses):
        asked.append((T_now, poses))
        return index(poses[-1]) not in blocked

    policy._clearance = lambda idx, *a, **k: np.array([0.05 if int(i) in costs else 0.0 for i in idx])
    policy.reach_cost = lambda poses: np.array([costs.get(index(T), 9.0) for T in poses])
    policy.reach_path = reach_path
    hand = HandState(_pose([0, 0, 0], [0.2, 0.0, 0.4]), np.zeros(22))
    assert policy._select_committed(obj, pool_world, giver, hand) == chosen
    if tries:
        T_now, (pre, goal) = asked[0]
        np.testing.assert_allclose(T_now, hand.T_world_hand)
        np.testing.assert_allclose(pre, obj @ policy.pregrasp(5))
        np.testing.assert_allclose(goal, pool_world[5])
    else:
        assert not asked


def test_arm_reach_path_follows_the_controllers_ik_and_its_jump_bound():
    """`arm_reach_path`: a short move from the home pose is followable; a pose out of reach is
    not; nor is a move whose IK steps exceed the controller's `ik_max_jump_rad`."""
    from dataclasses import replace

    from dexh2r_control.controller import WRIST_IK_OPTIONS, ControllerConfig
    from dexh2r_core.robot.description import RobotDescription
    from dexh2r_policy.closed_loop import arm_reach_path
    from dexh2r_policy.dynamic_grasp import inverse
    from dexh2r_policy.episodes import root_to_palm_at_zero

    robot = RobotDescription.load("ur5_shadow")
    T_root_palm = root_to_palm_at_zero(robot)
    cfg = ControllerConfig(**WRIST_IK_OPTIONS)
    measured = [robot.home()]
    from dexh2r_control.ik import ArmIk

    T_hand = ArmIk(robot, robot.config.hand.palm_link).frame_pose(robot.home()) @ inverse(T_root_palm)
    near = T_hand.copy()
    near[:3, 3] += [0.05, 0.05, -0.05]
    far = T_hand.copy()
    far[:3, 3] += [2.0, 0.0, 0.0]
    follows = arm_reach_path(robot, T_root_palm, measured, cfg)
    assert follows(T_hand, [near])
    assert not follows(T_hand, [near, far])
    tight = arm_reach_path(robot, T_root_palm, measured, replace(cfg, ik_max_jump_rad=1e-3))
    assert not tight(T_hand, [near])


def test_soft_goal_clearance_is_validated():
    with pytest.raises(ValueError, match="align_clearance_soft_m"):
        DynamicGraspConfig(align_clearance_m=0.03, align_clearance_soft_m=0.04)
    with pytest.raises(ValueError, match="align_clearance_cost"):
        DynamicGraspConfig(align_clearance_cost=-1.0)
    assert DynamicGraspConfig().align_clearance_soft_m == 0.0  # the paper's selection: the cut


class _StraightPlanner(_StillPlanner):
    """Plans a straight line to the goal's position, 3 cm a frame, never turning the hand
    (MotionNet's approach gets the position right but not the turn)."""

    def plan(self, frame, history, target, target_points):
        h = history[-1]
        T = np.repeat(h.T_world_hand[None], 10, 0)
        way = target.T_world_hand[:3, 3] - h.T_world_hand[:3, 3]
        steps = np.minimum(0.03 * np.arange(1, 11) / max(np.linalg.norm(way), 1e-9), 1.0)
        T[:, :3, 3] = h.T_world_hand[:3, 3] + steps[:, None] * way
        return T, np.repeat(h.finger_q[None], 10, 0)


def test_approach_turn_brings_the_hand_in_turned_for_its_goal(hs):
    """With `approach_turn_m` the approach's targets keep the planner's positions and turn
    toward their goal's rotation as they near it: none at `approach_turn_m` and beyond, all of
    it within `approach_turn_full_m`. Off (the paper's), and in the paper style, they do not."""
    from dexh2r_policy.dynamic_grasp import rotation_angles

    pool = _ring_pool()
    obj = _pose([0, 0, 0], [0.5, 0.0, 0.4])
    hand0 = HandState(_pose([np.pi / 2, 0.0, 0.0], [0.5, -0.5, 0.4]), np.zeros(22))  # turned from every goal
    for style, turn_m in (("pregrasp", 0.3), ("pregrasp", 0.0), ("paper", 0.3)):
        cfg = _cfg(style, align_after_frames=10**6, approach_turn_m=turn_m, approach_turn_full_m=0.15)
        policy = DynamicGrasp(_StraightPlanner(), pool, cfg, n_points=32, hand_surface=hs)
        rows = [(tgt, o) for o, tgt, _ in _run(policy, 25, lambda k: obj, hand0) if tgt.phase == "approach"]
        assert len(rows) > 10
        for tgt, o in rows:
            goal = o @ pool.T_obj_hand[tgt.goal]
            d = float(np.linalg.norm(tgt.T_world_hand[:3, 3] - goal[:3, 3]))
            to_goal = float(rotation_angles(tgt.T_world_hand[None, :3, :3], goal[None, :3, :3])[0])
            kept = float(rotation_angles(tgt.T_world_hand[None, :3, :3], hand0.T_world_hand[None, :3, :3])[0])
            if style == "pregrasp" and turn_m > 0 and d <= 0.15:
                assert to_goal < 1e-6, (d, to_goal)
            elif style == "pregrasp" and turn_m > 0 and d < turn_m:
                assert kept > 1e-3 and to_goal > 1e-3, (d, kept, to_goal)  # part of the way
            else:
                assert kept < 1e-6, (style, turn_m, d, kept)
        nearest = min(np.linalg.norm((t.T_world_hand - o @ pool.T_obj_hand[t.goal])[:3, 3]) for t, o in rows)
        assert nearest < 0.1  # the approach got there
    with pytest.raises(ValueError, match="approach_turn_full_m"):
        DynamicGraspConfig(approach_turn_m=0.1, approach_turn_full_m=0.2)
    from dexh2r_policy.closed_loop import loop_policy_config

    assert DynamicGraspConfig().approach_turn_m == 0.0  # the paper's approach: off
    for mode in ("easy", "hard"):  # the loop's: off (a 0.12 s delay changed box_center's goal)
        assert loop_policy_config(DynamicGraspConfig(), mode).approach_turn_m == 0.0


# ---- the pregrasp style's stall switch and jam back-out (DynamicGraspConfig.stall_*, jam_*) ----


def _rules_cfg(style: str, **kw) -> DynamicGraspConfig:
    base = dict(mode="easy", align_after_frames=6, min_points=8, close_frames=3, lift_frames=30)
    return DynamicGraspConfig(align_style=style, **{**base, **kw})


def test_stall_and_jam_rules_are_on_in_the_pregrasp_style():
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
        cfg = _rules_cfg(style, easy_radius_m=0.05, stall_radius_m=0.10, stall_frames=5)
        policy = DynamicGrasp(_StillPlanner(), _ring_pool(), cfg, n_points=32, hand_surface=hs)
        phases[style] = [t.phase for _, t, _ in _run(policy, 30, obj, hand0, follow=False)]
    assert "align" not in phases["paper"]
    first = phases["pregrasp"].index("align")
    assert first == cfg.align_after_frames + cfg.stall_frames  # the first checked frame + the wait
    # Beyond the stall radius it never switches.
    cfg = _rules_cfg("pregrasp", easy_radius_m=0.05, stall_radius_m=0.07, stall_frames=5)
    policy = DynamicGrasp(_StillPlanner(), _ring_pool(), cfg, n_points=32, hand_surface=hs)
    assert "align" not in [t.phase for _, t, _ in _run(policy, 30, obj, hand0, follow=False)]


def test_the_loop_ends_an_approach_that_hovers_out_of_reach(hs):
    """The closed loop's config (loop_policy_config), easy set: an approach held 25 cm from
    the nearest grasp (MotionNet's over DDS on the low box) switches to align after
    `stall_frames`; with the stall radius before (10 cm) it hovers on. The hard set keeps the
    checkpoint's radius."""
    from dexh2r_policy.closed_loop import loop_policy_config

    def obj(k):
        return _pose([0, 0, 0], [0.0, 0.0, 0.4])

    hand0 = HandState(_pose([0, 0, 0], [0.37, 0.0, 0.4]), np.zeros(22))  # ring grasp at x = 0.12
    phases = {}
    for name, over in (("loop", {}), ("before", {"stall_radius_m": 0.10})):
        cfg = loop_policy_config(_rules_cfg("pregrasp", easy_radius_m=0.05), "easy", overrides=over)
        policy = DynamicGrasp(_StillPlanner(), _ring_pool(), cfg, n_points=32, hand_surface=hs)
        phases[name] = [t.phase for _, t, _ in _run(policy, 30, obj, hand0, follow=False)]
    assert phases["loop"].index("align") == cfg.align_after_frames + cfg.stall_frames
    assert "align" not in phases["before"]
    base = _rules_cfg("pregrasp")
    assert loop_policy_config(base, "hard").stall_radius_m == base.stall_radius_m


def test_stall_counts_progress_from_the_best_distance(hs):
    cfg = _rules_cfg("pregrasp", stall_radius_m=0.10, stall_frames=3, stall_progress_m=0.01)
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
    cfg = _rules_cfg(
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
    cfg0 = _rules_cfg("pregrasp", easy_radius_m=0.5, jam_m=0.0, arrive_frames=2, grasp_arrive_frames=2)
    policy = DynamicGrasp(_StillPlanner(), _ring_pool(), cfg0, n_points=32, hand_surface=hs)
    run = _run(policy, 80, obj, HandState(_pose([0, 0, 0.2], [0.3, 0.1, 0.45]), np.zeros(22)), follow=False)
    assert len({t.goal for _, t, _ in run if t.phase in ("align", "close", "lift")}) == 1


def test_a_hand_that_lags_a_fast_object_does_not_close_until_it_keeps_up(hs):
    """The object rises 1.5 cm a frame for 4 s (across the ring grasps' way in), then stops; the
    hand reaches each target 3 frames late (4.5 cm behind while the object moves). With
    `close_max_lag_m` the close waits, going back to the pre-grasp and in again, until the object
    stops and the hand keeps up; without it the fingers close on a hand 4.5 cm behind."""

    def first_close(lag_m: float) -> int:
        cfg = _rules_cfg(
            "pregrasp",
            easy_radius_m=0.5,
            arrive_frames=2,
            grasp_arrive_frames=2,
            jam_m=0.0,  # the jam back-out off: the lag rule alone
            close_max_lag_m=lag_m,
        )
        policy = DynamicGrasp(_StillPlanner(), _ring_pool(), cfg, n_points=32, hand_surface=hs)
        cloud = np.random.default_rng(0).normal(scale=0.03, size=(64, 3))
        sent = [HandState(_pose([0, 0, 0.2], [0.3, 0.1, 0.45]), np.zeros(22))] * 3
        for k in range(90):
            obj = _pose([0, 0, 0], [0.0, 0.0, 0.4 + 0.015 * min(k, 40)])
            t = policy.step(0.1 * k, obj, cloud + obj[:3, 3], None, sent[-3])
            if t.phase == "close":
                return k
            sent.append(HandState(t.T_world_hand, t.finger_q))
        return -1

    assert 0 < first_close(0.0) < 40  # off: closes while the object moves and the hand lags
    assert 40 < first_close(0.035) < 60  # on: once the object has stopped and the hand caught up


def test_the_sim_launch_file_runs_the_in_process_loop_settings():
    """`--ros` and the demo run launch/handover_sim.launch.xml: its nodes must be set up as the
    in-process loop is (the values themselves live in closed_loop / controller)."""
    from dexh2r_core.launch.parser import load_launch
    from dexh2r_policy.closed_loop import ARM_SERVO, CONTROL_HZ, GRASP_ZONE_M
    from dexh2r_sim.stack_launch import launch_file

    desc = load_launch(launch_file(), {"scenario": "easy_can_right", "object_id": "prim/cylinder_can"})
    params = {
        n.label: {k: v for item in n.params if isinstance(item, dict) for k, v in item.items()}
        for n in desc.nodes
    }
    assert set(params) == {"sim", "hand_tracker", "object_tracker", "dynamic_grasp", "controller"}
    ctrl = params["controller"]
    assert ctrl["rate_hz"] == CONTROL_HZ and ctrl["wrist_ik"] is True and ctrl["follow_measured"] is True
    assert ctrl["handover"] == "policy" and ctrl["grasp_zone_m"] == GRASP_ZONE_M
    assert (
        params["dynamic_grasp"]["style"] == "closed_loop"
        and params["dynamic_grasp"]["reach_cost"] == "sim_arm"
    )
    sim = params["sim"]
    assert sim["antialias"] is True and sim["rgb_blur_px"] == 1.0  # closed_loop.main's CellConfig
    assert (sim["width"], sim["height"]) == (640, 360) and sim["cameras"] is True
    assert all(p.get("use_sim_time") is True for label, p in params.items() if label != "sim")
    assert sim["arm_servo"] == ARM_SERVO == "drive"  # closed_loop.main's default (--arm-servo)
    truth = load_launch(launch_file(), {"scenario": "x", "object_id": "y", "perception": "truth"})
    assert {n.label for n in truth.nodes} == {"sim", "dynamic_grasp", "controller"}


def test_set_reaches_the_policy_node_over_ros(tmp_path, monkeypatch, capsys):
    """`--set` with `--ros`: the overrides, checked before any launch, go to every episode's
    dynamic_grasp_node (`policy_set`), and both paths' summaries record them."""
    import dexh2r_policy.closed_loop_ros as closed_loop_ros
    from dexh2r_core.paths import config_path
    from dexh2r_sim.scenario import load_scenarios
    from dexh2r_sim.stack_launch import episode_launch

    launched = []

    def fake_episode(scenario, **kw):
        launched.append(kw["policy_set"])
        return {
            "scenario": scenario.name,
            "outcome": "timeout",
            "time_to_handover_s": None,
            "limit_violations": 0,
            "detail": "fake",
        }

    monkeypatch.setattr(closed_loop_ros, "run_episode_ros", fake_episode)
    out = tmp_path / "summary.json"
    base = ["--ros", "--episodes", "2", "--out", str(tmp_path / "run"), "--json", str(out)]
    sets = ["--set", "stall_radius_m=0.3", "--set", "lift_frames=5"]
    assert main([*base, *sets]) == 0
    assert launched == ["stall_radius_m=0.3,lift_frames=5"] * 2
    assert json.loads(out.read_text())["set"] == ["stall_radius_m=0.3", "lift_frames=5"]
    assert main([*base, "--set", "no_such_key=1"]) == 2  # checked before launching anything
    assert "no_such_key: unknown key" in capsys.readouterr().err and len(launched) == 2
    # The node's policy_set is comma-separated: a list value cannot go through it.
    assert main([*base, "--set", "squeeze_joints=[rh_FFJ3, rh_MFJ3]"]) == 2
    assert "may not contain ','" in capsys.readouterr().err and len(launched) == 2
    scenario = load_scenarios(config_path("scenarios/easy.yaml"))[0]
    runner, _ = episode_launch(
        scenario, scenarios_file="scenarios/easy.yaml", mode="easy", policy_set="stall_radius_m=0.3"
    )
    (node,) = [n for n in runner.desc.nodes if n.label == "dynamic_grasp"]
    params = {k: v for item in node.params if isinstance(item, dict) for k, v in item.items()}
    assert params["policy_set"] == "stall_radius_m=0.3"


def test_ros_episodes_run_the_servos_asked_for():
    """`--arm-servo drive --ros`: the episode's launch gives sim_node the drive servos."""
    from dexh2r_core.paths import config_path
    from dexh2r_sim.scenario import load_scenarios
    from dexh2r_sim.stack_launch import episode_launch

    scenario = load_scenarios(config_path("scenarios/easy.yaml"))[0]
    for servo in ("damped", "drive"):
        runner, _ = episode_launch(
            scenario, scenarios_file="scenarios/easy.yaml", mode="easy", arm_servo=servo
        )
        (sim,) = [n for n in runner.desc.nodes if n.label == "sim"]
        params = {k: v for item in sim.params if isinstance(item, dict) for k, v in item.items()}
        assert params["arm_servo"] == servo


def test_symmetric_pool_takes_the_same_grasp_whichever_end_the_tracker_calls_up(hs):
    """A can tracked end for end (the tracker cannot tell its ends apart) must not change the
    grasp: with `symmetric_pool` the pool holds every grasp's flipped copy, and the committed goal
    is the same grasp in the world for the true and the flipped pose; without, they differ."""
    from dexh2r_sim.objects import ObjectLibrary

    can = ObjectLibrary().get("prim/cylinder_can")
    # Grasps only around the can's +z end: the flipped pose puts them at the other end.
    pool = _ring_pool()
    pool.T_obj_hand[:, 2, 3] = 0.05
    true_pose = _pose([0.4, 0.0, 0.0], [0.0, 0.0, 0.4])
    flipped = true_pose @ _pose([np.pi, 0.0, 0.0], [0.0, 0.0, 0.0])
    hand0 = HandState(_pose([0, 0, 0.3], [0.25, 0.05, 0.5]), np.zeros(22))
    chosen = {}
    for sym in (False, True):
        for name, T in (("true", true_pose), ("flipped", flipped)):
            policy = DynamicGrasp(_StillPlanner(), pool, _cfg("pregrasp", symmetric_pool=sym), 32, hs)
            policy.set_object_model(can)
            assert len(policy.pool) == (2 * len(pool) if sym else len(pool))
            run = _run(policy, 12, lambda k, T=T: T, hand0, follow=False)
            goal = next(t.goal for _, t, _ in run if t.phase == "align")
            chosen[sym, name] = T @ policy.pool.T_obj_hand[goal]
    np.testing.assert_allclose(chosen[True, "true"], chosen[True, "flipped"], atol=1e-9)
    assert np.linalg.norm(chosen[False, "true"][:3, 3] - chosen[False, "flipped"][:3, 3]) > 0.05
    from dexh2r_policy.closed_loop import loop_policy_config

    assert loop_policy_config(DynamicGraspConfig(), "easy").symmetric_pool  # the closed loop's


def test_pose_gate_keeps_the_last_pose_through_a_tracking_jump(hs):
    """From the alignment on, a pose that jumps (a half-hidden object's tracking error) is replaced
    by the last one used for up to `pose_gate_frames` frames: the pull's targets do not yank; a
    pose that stays where it jumped to is taken after that; off, the targets follow the jump."""
    still = _pose([0, 0, 0], [0.0, 0.0, 0.4])
    jumped = _pose([0, 0, 2.0], [0.03, 0.0, 0.4])  # 115 deg about z and 3 cm

    def obj(k, start, length):
        return jumped if start <= k < start + length else still

    def targets(gate_m, start, length):
        cfg = _cfg("pregrasp", pose_gate_m=gate_m, pose_gate_rad=0.35, pose_gate_frames=4, lift_frames=30)
        policy = DynamicGrasp(_StillPlanner(), _ring_pool(), cfg, n_points=32, hand_surface=hs)
        hand0 = HandState(_pose([0, 0, 0.2], [0.3, 0.1, 0.45]), np.zeros(22))
        run = _run(policy, 60, lambda k: obj(k, start, length), hand0)
        return run, next(i for i, (_, t, _) in enumerate(run) if t.phase == "lift")

    run, lift = targets(0.02, 0, 0)  # where the lift begins
    start = lift + 5
    base = [t.T_world_hand for _, t, _ in run]
    for gate_m, length in ((0.02, 3), (0.0, 3), (0.02, 20)):
        run, _ = targets(gate_m, start, length)
        moved = [np.linalg.norm(t.T_world_hand[:3, 3] - base[k][:3, 3]) for k, (_, t, _) in enumerate(run)]
        jump = moved[start : start + length]
        if gate_m > 0 and length <= 4:
            assert max(jump) < 1e-9  # gated: the targets are those without the jump
        elif gate_m > 0:
            assert max(jump[:4]) < 1e-9 and min(jump[5:]) > 0.02  # held 4 frames, then taken
        else:
            assert min(jump) > 0.02  # off: the targets jump with the pose
    from dexh2r_policy.closed_loop import loop_policy_config

    assert loop_policy_config(DynamicGraspConfig(), "hard").pose_gate_m > 0  # on in the closed loop


def test_held_gate_keeps_the_pull_on_the_grasp_through_a_long_tracking_error(hs):
    """During the pull the object sits in the closed hand: with `held_gate_rad` a tracked pose
    turned away from where the grasp (from the measured hand) puts it is kept out for as long as
    it lasts, past `pose_gate_frames`; off, the pull follows it once the pose gate gives up. An
    object that moves with the hand (the giver's pull, hard) is followed as without the gate."""
    still = _pose([0, 0, 0], [0.0, 0.0, 0.4])
    turned = _pose([0, 0, 1.6], [0.005, 0.0, 0.4])  # 92 deg about z, its position right to 5 mm

    def targets(held_rad, obj_fn):
        cfg = _cfg(
            "pregrasp",
            pose_gate_m=0.05,
            pose_gate_rad=0.35,
            pose_gate_frames=4,
            lift_frames=40,
            lift_height_m=0.015,
            held_gate_rad=held_rad,  # the closed loop's slow 1.5 cm pull
        )
        policy = DynamicGrasp(_StillPlanner(), _ring_pool(), cfg, n_points=32, hand_surface=hs)
        hand0 = HandState(_pose([0, 0, 0.2], [0.3, 0.1, 0.45]), np.zeros(22))
        return policy, _run(policy, 70, obj_fn, hand0)

    _, run = targets(0.0, lambda k: still)
    lift = next(i for i, (_, t, _) in enumerate(run) if t.phase == "lift")
    base = [t.T_world_hand for _, t, _ in run]
    start, length = lift + 3, 20
    for held_rad in (0.35, 0.0):
        policy, run = targets(held_rad, lambda k: turned if start <= k < start + length else still)
        moved = [np.linalg.norm(t.T_world_hand[:3, 3] - base[k][:3, 3]) for k, (_, t, _) in enumerate(run)]
        if held_rad > 0:
            assert max(moved) < 1e-9 and policy.state.held_gated > 0  # held through it (both gates)
        else:
            assert max(moved[start + 5 : start + length]) > 0.05  # taken after 4 frames: a yank

    def moving(k):  # the giver carries the held object on, 1 cm a frame, from the lift on
        return _pose([0, 0, 0], [0.0, 0.01 * max(0, k - lift), 0.4])

    (_, a), (policy, b) = targets(0.0, moving), targets(0.35, moving)
    assert policy.state.held_gated == 0
    assert all(
        np.allclose(ta.T_world_hand, tb.T_world_hand) for (_, ta, _), (_, tb, _) in zip(a, b, strict=True)
    )
    with pytest.raises(ValueError, match="held_gate_rad"):
        DynamicGraspConfig(held_gate_rad=-0.1)
    from dexh2r_policy.closed_loop import loop_policy_config

    assert DynamicGraspConfig().held_gate_rad == 0.0  # the paper's: off
    assert all(loop_policy_config(DynamicGraspConfig(), m).held_gate_rad > 0 for m in ("easy", "hard"))


@pytest.mark.parametrize("follow", ["pose", "position", "none"])
def test_pull_follows_what_pull_follow_says(hs, follow):
    """`pull_follow`: during the pull a tracked turn of the held object (a few degrees, under
    every gate: a tracking error the hand would otherwise chase) moves the targets only with
    "pose"; the object carried on by the giver moves them with "pose" and "position", not with
    "none" (then the pull rises still in the world)."""
    base = np.array([0.0, 0.0, 0.4])

    def run(obj_fn):
        cfg = _cfg("pregrasp", lift_frames=40, lift_height_m=0.015, pull_follow=follow)
        policy = DynamicGrasp(_StillPlanner(), _ring_pool(), cfg, n_points=32, hand_surface=hs)
        hand0 = HandState(_pose([0, 0, 0.2], [0.3, 0.1, 0.45]), np.zeros(22))
        out = _run(policy, 60, obj_fn, hand0)
        lift = [k for k, (_, t, _) in enumerate(out) if t.phase == "lift"]
        return out, lift

    still, lift = run(lambda k: _pose([0, 0, 0], base))
    k0 = lift[0] + 5

    def turning(k):
        return _pose([0, 0, 0.14 if k >= k0 else 0.0], base)  # 8 deg, held

    def carried(k):
        return _pose([0, 0, 0], base + np.array([0.0, 0.005 * max(0, k - k0), 0.0]))

    for obj_fn, follows in ((turning, follow == "pose"), (carried, follow != "none")):
        out, _ = run(obj_fn)
        moved = max(
            np.linalg.norm(t.T_world_hand[:3, 3] - still[k][1].T_world_hand[:3, 3])
            for k, (_, t, _) in enumerate(out)
            if k in lift
        )
        assert (moved > 0.01) == follows, (obj_fn.__name__, moved)
    if follow != "pose":  # a tracking error in the close's last frame: the pull rises from the hand
        out, _ = run(lambda k: _pose([0, 0, 0.14 if k == lift[0] else 0.0], base))
        moved = [
            np.linalg.norm(out[k][1].T_world_hand[:3, 3] - still[k][1].T_world_hand[:3, 3]) for k in lift[1:]
        ]
        assert max(moved) < 1e-9
    with pytest.raises(ValueError, match="pull_follow"):
        DynamicGraspConfig(pull_follow="object")
    from dexh2r_policy.closed_loop import loop_policy_config

    # The loop's: still where the giver holds still, the grasp on the object where it moves.
    follows = [loop_policy_config(DynamicGraspConfig(), m).pull_follow for m in ("easy", "hard")]
    assert follows == ["none", "pose"]


@pytest.mark.parametrize("held_rad", [0.35, 0.0])
def test_close_keeps_a_tracking_jump_out_and_never_extrapolates_one(hs, held_rad):
    """In the close the hand sits at the grasp: with `held_gate_rad` a tracked pose turned away
    from where the grasp puts it is kept out past the pose gate's frames. Without it the pose
    gate takes the jump after `pose_gate_frames`, and the close's target then sits on the grasp
    of the jumped pose, not extrapolated beyond it by the lead (a jump is not motion)."""
    still = _pose([0, 0, 0], [0.0, 0.0, 0.4])
    turned = _pose([0, 0, 0.7], [0.006, 0.0, 0.4])  # 40 deg, 6 mm: a mug tracked turned

    def run(obj_fn):
        cfg = _cfg(
            "pregrasp",
            close_frames=12,
            pose_gate_m=0.05,
            pose_gate_rad=0.35,
            pose_gate_frames=2,
            lead_frames=2.0,
            held_gate_rad=held_rad,
        )
        policy = DynamicGrasp(_StillPlanner(), _ring_pool(), cfg, n_points=32, hand_surface=hs)
        hand0 = HandState(_pose([0, 0, 0.2], [0.3, 0.1, 0.45]), np.zeros(22))
        return policy, _run(policy, 45, obj_fn, hand0)

    _, base = run(lambda k: still)
    close = [k for k, (_, t, _) in enumerate(base) if t.phase == "close"]
    start = close[1]
    policy, out = run(lambda k: turned if k >= start else still)
    moved = [np.linalg.norm(out[k][1].T_world_hand[:3, 3] - base[k][1].T_world_hand[:3, 3]) for k in close]
    if held_rad > 0:
        assert max(moved) < 1e-9
    else:
        taken = start + 2  # held 2 frames, then taken
        assert max(moved[: close.index(taken)]) < 1e-9
        goal = out[taken][1].goal
        np.testing.assert_allclose(
            out[taken][1].T_world_hand, turned @ policy.pool.T_obj_hand[goal], atol=1e-9
        )


def test_pose_smoothing_calms_a_still_objects_jitter_and_follows_a_moving_one(hs):
    """From the close on, a still object's tracked pose (jittering by mm and degrees) moves the
    pull's targets less with `pose_smoothing`; an object moving more than `pose_smoothing_m` a
    frame is followed exactly as without it."""
    rng = np.random.default_rng(3)
    noise = [(rng.normal(scale=0.03, size=3), rng.normal(scale=0.002, size=3)) for _ in range(80)]
    base = np.array([0.0, 0.0, 0.4])

    def still(k):
        w, t = noise[k]
        return _pose(w, base + t)

    def moving(k):
        return _pose([0, 0, 0], base + np.array([0.0, 0.02 * k, 0.0]))

    def targets(smoothing, obj_fn):
        cfg = _cfg("pregrasp", pose_smoothing=smoothing, lift_frames=40, pose_gate_m=0.0)
        policy = DynamicGrasp(_StillPlanner(), _ring_pool(), cfg, n_points=32, hand_surface=hs)
        hand0 = HandState(_pose([0, 0, 0.2], [0.3, 0.1, 0.45]), np.zeros(22))
        return _run(policy, 80, obj_fn, hand0)

    def jitter(run):  # mean frame-to-frame target motion (m) during the pull
        T = [t.T_world_hand[:3, 3] for _, t, _ in run if t.phase == "lift"]
        return float(np.mean(np.linalg.norm(np.diff(T, axis=0), axis=1)))

    raw, smooth = jitter(targets(1.0, still)), jitter(targets(0.5, still))
    assert smooth < 0.7 * raw, (smooth, raw)
    a, b = targets(1.0, moving), targets(0.5, moving)
    assert [t.phase for _, t, _ in a] == [t.phase for _, t, _ in b]
    assert all(
        np.allclose(ta.T_world_hand, tb.T_world_hand) for (_, ta, _), (_, tb, _) in zip(a, b, strict=True)
    )
    from dexh2r_policy.closed_loop import loop_policy_config

    # On in the closed loop, stronger where the giver holds still (easy) than where it moves.
    easy, hard = (loop_policy_config(DynamicGraspConfig(), m).pose_smoothing for m in ("easy", "hard"))
    assert easy < hard < 1.0
    with pytest.raises(ValueError, match="mode"):
        loop_policy_config(DynamicGraspConfig(), "medium")


def test_faults_are_injected_without_a_delay():
    from dexh2r_policy.closed_loop import Faults, run_episode

    with pytest.raises(ValueError, match="without an actuation delay"):
        run_episode(None, None, None, None, faults=Faults(), actuation_delay="measured")


def test_the_lead_on_a_moving_object_also_covers_the_compute_latency(hs):
    """Targets on a moving object lead it by `lead_frames` (the arm's lag) plus the caller's
    `latency_s` (its target acts that long after the observation): an object moving 1 cm a frame
    is met 1 cm further on per 0.1 s of latency."""

    def first_align_target(latency_s: float) -> np.ndarray:
        cfg = _rules_cfg("pregrasp", easy_radius_m=0.5, lead_frames=2.0)
        policy = DynamicGrasp(_StillPlanner(), _ring_pool(), cfg, n_points=32, hand_surface=hs)
        policy.latency_s = latency_s
        cloud = np.random.default_rng(0).normal(scale=0.03, size=(64, 3))
        hand = HandState(_pose([0, 0, 0.2], [0.3, 0.1, 0.45]), np.zeros(22))
        for k in range(20):
            obj = _pose([0, 0, 0], [0.01 * k, 0.0, 0.4])
            t = policy.step(0.1 * k, obj, cloud + obj[:3, 3], None, hand)
            if t.phase == "align":
                return t.T_world_hand[:3, 3]
        raise AssertionError("never aligned")

    shift = first_align_target(0.2) - first_align_target(0.0)
    assert np.allclose(shift, [0.02, 0.0, 0.0], atol=1e-6)


class _SlowingPolicy:
    """Holds the hand where it is; its steps take `slow_s` of wall time from `slow_from` on, so the
    loop's measured compute delay grows by several control ticks mid-episode."""

    def __init__(self, slow_from: int, slow_s: float) -> None:
        self.slow_from, self.slow_s, self.n = slow_from, slow_s, 0

    def reset(self) -> None:
        self.n = 0

    def step(self, stamp, obj_pose, obj_points, keypoints, hand, giver_surface=None):
        import time

        from dexh2r_policy.dynamic_grasp import HandTarget

        self.n += 1
        if self.n >= self.slow_from:
            time.sleep(self.slow_s)
        return HandTarget(stamp + 0.1, hand.T_world_hand, hand.finger_q, "approach", self.n)


def test_targets_stream_to_the_controller_through_a_growing_delay():
    """As dynamic_grasp_node publishes them (`TargetStream`, 30 Hz): when the measured compute
    delay grows mid-episode, the controller still gets a target within its watchdog timeout.
    Handed over at the policy's 10 Hz, a delay that grew by two ticks left a gap longer than the
    100 ms watchdog, which braked the arm."""
    from dataclasses import replace

    from dexh2r_core.paths import config_path
    from dexh2r_policy.closed_loop import run_episode
    from dexh2r_sim.cell import CellConfig, HandoverCell
    from dexh2r_sim.scenario import load_scenarios

    scenario = replace(load_scenarios(config_path("config/scenarios/easy.yaml"))[0], time_limit_s=3.0)
    cell = HandoverCell(CellConfig(cameras=True))  # the trackers want the calibration; no rendering
    try:
        row = run_episode(
            cell,
            scenario,
            _SlowingPolicy(slow_from=8, slow_s=0.06),
            cell.robot,
            perception="truth",
            actuation_delay="measured",
        )
    finally:
        cell.close()
    delays = [s["delay_s"] for s in row["trace"]]
    assert max(delays) - min(delays) >= 0.04, "the measured delay grew by several ticks"
    assert row["watchdog_ticks"] == 0
    assert row["limit_violations"] == 0


@pytest.mark.parametrize("camera_latency_s", [0.04, 0.12])
def test_measured_delay_counts_the_camera_latency_not_the_sims_rendering(camera_latency_s, monkeypatch):
    """With cameras the measured delay is the camera's latency plus the trackers' and the
    policy's time: rendering the sim cameras is the machine's cost, not the stack's.

    The render is made 0.5 s slow on the loop's clock (not by sleeping: a real sleep leaves
    MediaPipe's threads cold and doubles the trackers' time on a 2-core machine), and the
    0.25 s cap is lifted so that a counted render would show instead of being clipped."""
    import types
    from dataclasses import replace

    from dexh2r_core.paths import config_path
    from dexh2r_policy import closed_loop
    from dexh2r_policy.closed_loop import run_episode
    from dexh2r_sim.cell import CellConfig, HandoverCell
    from dexh2r_sim.scenario import load_scenarios

    render_s = 0.5  # more than the trackers' first frame (MediaPipe's start, 0.3 s here)
    clock_offset = [0.0]
    real_perf_counter = closed_loop.time.perf_counter
    monkeypatch.setattr(
        closed_loop, "time", types.SimpleNamespace(perf_counter=lambda: real_perf_counter() + clock_offset[0])
    )
    monkeypatch.setattr(closed_loop, "MAX_ACTUATION_DELAY_S", 1.0)
    scenario = replace(load_scenarios(config_path("config/scenarios/easy.yaml"))[0], time_limit_s=1.0)
    cell = HandoverCell(CellConfig(cameras=True, resolution=(424, 240)))
    render = cell.render

    def slow_render():
        clock_offset[0] += render_s
        return render()

    cell.render = slow_render
    try:
        row = run_episode(
            cell,
            scenario,
            _SlowingPolicy(slow_from=10**9, slow_s=0.0),
            cell.robot,
            perception="cameras",
            actuation_delay="measured",
            camera_latency_s=camera_latency_s,
        )
    finally:
        cell.close()
    assert row["render_ms_p50"] >= render_s * 1e3
    delays = [s["delay_s"] for s in row["trace"]]
    assert delays and min(delays) >= camera_latency_s
    # Counted, the render alone would put every delay past camera latency + 0.5 s.
    assert max(delays) < camera_latency_s + render_s, (max(delays), row["perception_ms_p50"])
