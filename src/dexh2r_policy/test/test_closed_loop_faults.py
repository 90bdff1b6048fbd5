"""Fault tests through the whole in-process closed loop (`run_episode(..., faults=Faults(...))`):
truth perception, `easy_can_right` (succeeds in about 4.5 s of sim time), the real DynamicGrasp
with the committed MotionNet checkpoint, the controller's safety filter and the sim cell.
docs/closed_loop.md, "Fault tests"."""

from __future__ import annotations

import json
import os

os.environ.setdefault("MUJOCO_GL", "egl")

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from dexh2r_control.safety import SafetyConfig
from dexh2r_policy.closed_loop import LEAD_FRAMES, LIFT_M, LIFT_S, POLICY_HZ, Faults, run_episode

# Whole closed-loop episodes (physics, MotionNet, the full pools): on the replay tests' xdist
# worker, so that they never starve a real-time replay gate running beside them.
pytestmark = pytest.mark.xdist_group("replay")

SCENARIO = "easy_can_right"
STALE_AFTER_S = 0.3  # run_episode's default: a lost object still drives the policy this long
WATCHDOG_S = SafetyConfig().watchdog_timeout_s
BRAKE_S = 0.15  # generous: the arm brakes from its (slow) speeds at a_max in a few ticks


@pytest.fixture(scope="module")
def loop(tmp_path_factory):
    """(cell, make_policy, scenario, full_pool): one cell for the module, a fresh policy per
    episode; full_pool: the data/pools pool (with it the fault-free episode succeeds)."""
    import torch

    from dexh2r_core.config import from_dict
    from dexh2r_core.paths import config_path
    from dexh2r_policy.dynamic_grasp import DynamicGrasp, MotionNetPlanner, PoolLibrary
    from dexh2r_policy.motionnet import load_motionnet
    from dexh2r_policy.train import TrainConfig, resolve_data_path
    from dexh2r_sim.cell import CellConfig, HandoverCell
    from dexh2r_sim.scenario import load_scenarios

    torch.set_num_threads(1)
    model, ckpt = load_motionnet(resolve_data_path("checkpoints/motionnet_small.pt"))
    cfg = from_dict(TrainConfig, ckpt["config"], source="motionnet_small.pt:config")
    scenario = {s.name: s for s in load_scenarios(config_path("config/scenarios/easy.yaml"))}[SCENARIO]
    # The committed data/pools (a user may have removed or remade them): a small pinch pool when absent.
    pool_dir = resolve_data_path(cfg.data.pools)
    full_pool = (Path(pool_dir) / "prim__cylinder_can.pinch.npz").exists()
    if not full_pool:
        from dexh2r_policy.datagen import main as datagen

        pool_dir = tmp_path_factory.mktemp("pools")
        args = ["grasps", "--objects", scenario.object_id, "--family", "pinch", "--candidates", "10"]
        assert datagen([*args, "--out", str(pool_dir)]) == 0
    pool = PoolLibrary(pool_dir, cfg.data.stable_only).get(scenario.object_id)
    policy_config = replace(  # as `dexh2r eval closed-loop` runs it (its defaults)
        cfg.policy,
        mode="easy",
        align_style="pregrasp",
        lift_height_m=LIFT_M,
        lift_frames=max(1, round(LIFT_S * POLICY_HZ)),
        lead_frames=LEAD_FRAMES,
    )
    planner = MotionNetPlanner(model)
    cell = HandoverCell(CellConfig(cameras=True))  # the trackers want the calibration; no rendering
    yield cell, (lambda: DynamicGrasp(planner, pool, policy_config)), scenario, full_pool
    cell.close()


def _run(loop, faults: Faults | None, time_limit_s: float | None = None) -> dict:
    from dexh2r_sim.scripted import ScriptConfig

    cell, make_policy, scenario, _ = loop
    if time_limit_s is not None:  # a shorter episode (the giver's trajectory is the same)
        scenario = replace(scenario, time_limit_s=time_limit_s)
    return run_episode(
        cell,
        scenario,
        make_policy(),
        cell.robot,
        perception="truth",
        reach_speeds=ScriptConfig().arm_speed,
        faults=faults,
    )


def _phase_at(row: dict, t: float) -> str:
    return next(s["phase"] for s in row["trace"] if abs(s["t"] - round(t, 3)) < 1e-9)


def _no_faults_in_commands(row: dict) -> None:
    assert row["limit_violations"] == 0
    assert row["faults"]["nonfinite_commands"] == 0


def test_empty_faults_change_nothing(loop):
    """`Faults()` injects nothing: the same episode as without the hook, step for step."""
    plain = _run(loop, None)
    empty = _run(loop, Faults())
    assert "faults" not in plain
    # wall-clock figures differ
    timing = ("perception_ms_p95", "policy_ms_p95", "perception_ms_p50", "policy_ms_p50", "render_ms_p50")
    timing = (*timing, "faults")

    def same(row: dict) -> str:  # as JSON: the trace's NaN (no IK yet) compares equal
        return json.dumps({k: v for k, v in row.items() if k not in timing}, sort_keys=True)

    assert same(empty) == same(plain)
    assert empty["faults"]["rejected_targets"] == 0 and empty["faults"]["estop_s"] is None


def test_perception_stop_mid_approach_the_robot_holds_then_retreats(loop):
    """Perception goes dark during the approach: the last object drives the policy until it is
    stale, then no target comes and the controller's watchdog brakes the command to a hold,
    which it keeps until the object has been lost for `object_lost_s`; then the hand retreats
    straight up by `retreat_up_m` (PolicyHandover) and holds there."""
    from dexh2r_control.state_machine import HandoverConfig, PolicyHandover

    row = _run(loop, Faults(perception_stop_s=0.6), time_limit_s=3.5)
    f = row["faults"]
    assert f["perception_stopped_s"] == pytest.approx(0.6, abs=0.04)
    assert _phase_at(row, f["last_target_s"]) == "approach"  # mid-approach
    assert f["last_target_s"] <= f["perception_stopped_s"] + STALE_AFTER_S + 1e-6
    assert f["watchdog_stopped_s"] is not None, "the command never came to a hold"
    assert f["watchdog_stopped_s"] - f["last_target_s"] <= WATCHDOG_S + BRAKE_S
    assert f["watchdog_stopped_s"] - f["perception_stopped_s"] <= STALE_AFTER_S + WATCHDOG_S + BRAKE_S
    assert f["motion_after_watchdog_stop_rad"] < 1e-6  # held until the retreat
    lost_s = HandoverConfig().object_lost_s
    assert f["retreat_s"] is not None, "the hand never retreated"
    last_seen = f["perception_stopped_s"] - 1.0 / 30.0  # the last frame perception saw
    assert last_seen + lost_s <= f["retreat_s"] <= last_seen + lost_s + 0.05
    assert f["retreat_rise_m"] == pytest.approx(PolicyHandover().retreat_up_m, abs=0.02)
    assert row["outcome"] != "hit-human"
    _no_faults_in_commands(row)


def test_nan_target_is_rejected_counted_and_the_episode_goes_on(loop):
    """One policy target arrives as NaN during the alignment: the controller rejects it and keeps
    the previous target; no NaN is ever commanded and the handover ends as without the fault."""
    baseline = _run(loop, None)
    row = _run(loop, Faults(nan_target_at_s=1.5))
    f = row["faults"]
    assert f["nan_target_s"] is not None and f["rejected_targets"] == 1
    assert f["rejected_kept_previous"] is True
    _no_faults_in_commands(row)
    assert f["last_target_s"] > f["nan_target_s"] + 1.0  # the loop went on
    assert all(np.isfinite(s["palm_to_target_m"]) for s in row["trace"])
    assert row["outcome"] == baseline["outcome"]
    if loop[3]:  # with the full pool: still a handover
        assert row["outcome"] == "success"


def test_estop_during_the_close_freezes_the_command(loop):
    """An e-stop at the first close step: the command brakes to a hold within the brake time and
    never moves again, although the policy goes on sending targets; the cell's outcome is the
    safety stop the controller reports."""
    row = _run(loop, Faults(estop_at_phase="close", estop_report_after_s=1.0))
    f = row["faults"]
    assert f["estop_s"] is not None and _phase_at(row, f["estop_s"]) == "close"
    assert f["estop_stopped_s"] is not None, "the command never came to a hold"
    assert f["estop_stopped_s"] - f["estop_s"] <= BRAKE_S
    assert f["motion_after_estop_stop_rad"] < 1e-3
    assert f["last_target_s"] > f["estop_s"] + 0.5  # targets kept coming: the latch held
    assert row["outcome"] == "safety-stop"
    _no_faults_in_commands(row)


@pytest.mark.parametrize("at_s", [1.5, 2.6], ids=["during-align", "during-close"])
def test_object_jerked_away_does_not_hit_the_giver(loop, at_s):
    """The giver yanks the object 25 cm away from the robot (in 0.15 s) while the hand aligns to
    it / closes on it: the loop may lose or drop it, but must not hit the giver."""
    row = _run(loop, Faults(object_jerk_at_s=at_s, object_jerk_m=0.25), time_limit_s=6.0)
    f = row["faults"]
    assert f["object_jerk_s"] == at_s
    assert f["object_jerk_moved_m"] is not None and f["object_jerk_moved_m"] > 0.1, "no yank"
    assert row["outcome"] != "hit-human", row["detail"]
    _no_faults_in_commands(row)
