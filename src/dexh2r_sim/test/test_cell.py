"""The handover cell: commands, determinism, outcomes without a controller, bad input."""

import numpy as np
import pytest

from dexh2r_core.trajectory import JointTrajectory, TrajectoryError, TrajectoryPoint
from dexh2r_sim.cell import CellConfig, HandoverCell
from dexh2r_sim.objects import UnknownObjectError
from dexh2r_sim.scenario import load_scenarios


@pytest.fixture(scope="module")
def easy():
    return load_scenarios("config/scenarios/easy.yaml")


@pytest.fixture(scope="module")
def hard():
    return load_scenarios("config/scenarios/hard.yaml")


def _run(cell, scenario, goal, seconds):
    cell.load_scenario(scenario)
    names = cell.robot.arm_joint_names
    cell.step_until(0.2)
    cell.command_arm(JointTrajectory(names, [TrajectoryPoint(1.0, goal)]))
    cell.step_until(seconds)
    return cell.data.qpos.copy(), cell.data.qvel.copy(), cell.object_pose()


def test_arm_reaches_commanded_goal_within_a_milliradian(easy):
    cell = HandoverCell(CellConfig(cameras=False))
    cell.load_scenario(easy[0])
    goal = cell.robot.home()[:6] + np.array([0.1, -0.05, 0.05, 0.1, -0.1, 0.2])
    _, q, _, _ = cell.joint_state()
    cell.command_arm(JointTrajectory(cell.robot.arm_joint_names, [TrajectoryPoint(1.0, goal)]))
    cell.step_until(2.0)
    _, q, qd, _ = cell.joint_state()
    assert np.abs(q[:6] - goal).max() < 1e-3
    assert np.abs(qd[:6]).max() < 1e-2


def test_actuation_delay_makes_commands_act_late(easy):
    """The measured compute latency of the stack is applied as actuation delay: the whole command
    stream acts exactly `delay` later, also when a controller streams one short trajectory per
    tick (each replacing the last, as the closed loop and controller_node do)."""
    dt, delay = 1.0 / 90.0, 0.08
    ctrl = {}
    for d in (0.0, delay):
        cell = HandoverCell(CellConfig(cameras=False))
        cell.load_scenario(easy[0])
        cell.set_actuation_delay(d)
        names = cell.robot.arm_joint_names
        arm_act = [cell.act_idx[n] for n in names]
        q0 = cell.joint_state()[1][:6]
        v = np.array([0.2, -0.1, 0.1, 0.0, 0.2, -0.2])
        ctrl[d] = []
        for k in range(60):  # a 0.2 rad/s ramp streamed at 90 Hz, then held
            q = q0 + v * min(k + 1, 45) * dt
            cell.command_arm(JointTrajectory(names, [TrajectoryPoint(dt, q, v if k < 44 else 0 * v)]))
            cell.step_until((k + 1) * dt)
            ctrl[d].append(cell.data.ctrl[arm_act].copy())
    lag = round(delay / dt)  # 0.08 s = 7.2 ticks: compare on whole ticks around it
    late, now = np.array(ctrl[delay]), np.array(ctrl[0.0])
    err = [float(np.abs(late[k] - now[k - lag]).max()) for k in range(lag + 1, 60)]
    assert max(err) < 0.2 * 0.3 * dt * 2  # within a third of a tick's motion at 0.2 rad/s (x2)
    assert float(np.abs(late[lag + 5] - now[lag + 5]).max()) > 0.01  # and really late
    cell.command_arm(JointTrajectory(names, [TrajectoryPoint(1.0, q0)]))  # back to the start ...
    held = cell.joint_state()[1][:6].copy()
    cell.hold_position()  # ... but a stop acts at once: commands on their way are dropped
    cell.step_until(cell.time + 0.2)
    assert np.allclose(cell.data.ctrl[arm_act], held) and not np.allclose(held, q0, atol=0.05)
    for bad in (-0.01, float("nan"), 2.0):
        with pytest.raises(ValueError, match="actuation delay"):
            cell.set_actuation_delay(bad)


def test_drive_servos_follow_the_commanded_speed_where_damped_ones_saturate(easy):
    """`arm_servo="drive"`: the damping inside the effort-limited servo, the commanded velocity
    fed forward: the wrists follow 1 rad/s within 0.01 rad; the default damped servos saturate at
    effort / damping (28 / 80 = 0.35 rad/s) and fall 0.3 rad behind."""
    lag = {}
    for servo in ("damped", "drive"):
        cell = HandoverCell(CellConfig(cameras=False, arm_servo=servo))
        cell.load_scenario(easy[0])
        q0 = cell.joint_state()[1][:6]
        v = np.array([0.5, -0.5, 0.5, -1.0, 1.0, 1.0])  # rad/s for 0.5 s
        pts = [TrajectoryPoint(k * 0.01, q0 + v * k * 0.01, v if k < 50 else 0 * v) for k in range(1, 51)]
        cell.command_arm(JointTrajectory(cell.robot.arm_joint_names, pts, start_time=cell.time))
        t0, worst = cell.time, 0.0
        for i in range(100):
            cell.step_until(t0 + (i + 1) * 0.01)
            worst = max(worst, float(np.abs(cell.joint_state()[1][:6] - cell.arm.position(cell.time)).max()))
        lag[servo] = worst
        assert np.abs(cell.joint_state()[1][:6] - (q0 + 0.5 * v)).max() < (1e-3 if servo == "drive" else 0.5)
    assert lag["drive"] < 0.01 < 0.25 < lag["damped"]
    with pytest.raises(ValueError, match="arm_servo"):
        CellConfig(arm_servo="velocity")


def test_same_scenario_and_commands_give_the_same_trajectory_bit_for_bit(hard):
    goal = np.array([0.6, -1.2, 1.1, 0.2, -2.3, 0.1])
    a = _run(HandoverCell(CellConfig(cameras=False)), hard[0], goal, 3.0)
    b = _run(HandoverCell(CellConfig(cameras=False)), hard[0], goal, 3.0)
    for x, y in zip(a, b, strict=True):
        assert np.array_equal(x, y)
    c = _run(HandoverCell(CellConfig(cameras=False)), hard[0], goal + 0.01, 3.0)
    assert not np.array_equal(a[0], c[0])


def test_idle_robot_times_out_and_giver_withdraws(easy):
    cell = HandoverCell(CellConfig(cameras=False))
    scenario = easy[0]
    cell.load_scenario(scenario)
    while cell.outcome is None:
        cell.step(50)
    assert cell.outcome.outcome == "timeout"
    assert cell.outcome.time_s == pytest.approx(scenario.time_limit_s, abs=0.01)


def test_bad_trajectories_are_rejected_and_the_robot_holds(easy):
    cell = HandoverCell(CellConfig(cameras=False))
    cell.load_scenario(easy[0])
    names = cell.robot.arm_joint_names
    cell.step_until(0.5)
    _, q_before, _, _ = cell.joint_state()
    with pytest.raises(TrajectoryError, match="NaN"):
        cell.command_arm(JointTrajectory(names, [TrajectoryPoint(1.0, np.full(6, np.nan))]))
    with pytest.raises(TrajectoryError, match="not controlled"):
        cell.command_arm(JointTrajectory(["elbow_joint", "wrong_joint"], [TrajectoryPoint(1.0, np.zeros(2))]))
    with pytest.raises(TrajectoryError, match="positions for"):
        cell.command_hand(JointTrajectory(cell.robot.hand_joint_names, [TrajectoryPoint(1.0, np.zeros(3))]))
    cell.hold_position()
    cell.step_until(1.5)
    _, q_after, _, _ = cell.joint_state()
    assert np.abs(q_after[:6] - q_before[:6]).max() < 1e-3


def test_unknown_object_id_is_a_clear_error(easy):
    from dataclasses import replace

    cell = HandoverCell(CellConfig(cameras=False))
    with pytest.raises(UnknownObjectError, match="prim/box_smal"):
        cell.load_scenario(replace(easy[0], object_id="prim/box_smal"))


def test_safety_stop_is_an_outcome(easy):
    cell = HandoverCell(CellConfig(cameras=False))
    cell.load_scenario(easy[0])
    cell.step_until(0.3)
    cell.report_safety_stop("e-stop pressed")
    cell.step()
    assert cell.outcome.outcome == "safety-stop" and "e-stop" in cell.outcome.detail


def test_cameras_render_the_cell(easy):
    cell = HandoverCell(CellConfig(cameras=True))
    try:
        cell.load_scenario(easy[0])
        cell.step_until(1.5)
        frames = cell.render()
        assert len(frames) == 2
        for frame in frames:
            assert frame.rgb.shape == (240, 424, 3) and frame.depth_mm.dtype == np.uint16
            valid = frame.depth_mm[frame.depth_mm > 0]
            assert valid.size > 0.5 * frame.depth_mm.size
            assert 400 <= np.median(valid) <= 3000  # the workspace is 0.4-3 m away
    finally:
        cell.close()


def test_robot_giver_contact_is_detected_and_reported(easy):
    """Drive the palm into the giver's wrist: contacts are reported and the outcome is hit-human."""
    from dexh2r_control.ik import ArmIk

    cell = HandoverCell(CellConfig(cameras=False))
    cell.load_scenario(easy[0])
    cell.step_until(cell.giver.trajectory.reach_end_s)
    ik = ArmIk(cell.robot, "rh_palm")
    target = ik.frame_pose(cell.robot.home())
    target[:3, 3] = cell.giver.wrist_pose(cell.data)[:3, 3]
    q_arm = ik.solve(target, cell.robot.home()).q_arm
    cell.command_arm(JointTrajectory(cell.robot.arm_joint_names, [TrajectoryPoint(1.5, q_arm)]))
    seen = []
    while cell.outcome is None and cell.time < 8.0:
        cell.step(5)
        seen += cell.robot_giver_contacts()
    assert cell.outcome is not None and cell.outcome.outcome == "hit-human"
    assert seen and all(c["giver_geom"].startswith("giver/") for c in seen)


def test_wrist_force_reads_the_hands_weight_and_a_push_on_it(easy):
    """The wrist force-torque reading (force part, world frame): the hand's weight while it holds
    still, and a push on the hand is felt at the wrist as the arm's reaction to it."""
    cell = HandoverCell(CellConfig(cameras=False))
    cell.load_scenario(easy[0])
    cell.step_until(0.5)
    hand_weight = cell.model.body_subtreemass[cell.hand_root_body] * 9.81
    np.testing.assert_allclose(cell.wrist_force(), [0.0, 0.0, hand_weight], atol=0.05 * hand_weight)
    cell.data.xfrc_applied[cell.hand_root_body, :3] = [5.0, 0.0, -3.0]
    cell.step_until(1.5)  # the arm's servos settle against the push
    np.testing.assert_allclose(cell.wrist_force(), [-5.0, 0.0, hand_weight + 3.0], atol=0.5)
