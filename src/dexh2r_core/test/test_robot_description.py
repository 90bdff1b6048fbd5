"""The one robot description: MuJoCo, pinocchio and dex-retargeting agree; Allegro by config only."""

import json
import subprocess
import sys

import mujoco
import numpy as np
import pytest

from dexh2r_core.config import ConfigError
from dexh2r_core.robot.check import check_robot
from dexh2r_core.robot.config import load_robot_config
from dexh2r_core.robot.description import RobotDescription

SHADOW_JOINTS = (
    ["rh_WRJ2", "rh_WRJ1"]
    + [f"rh_{f}J{i}" for f in ("FF", "MF", "RF") for i in (4, 3, 2, 1)]
    + [f"rh_LFJ{i}" for i in (5, 4, 3, 2, 1)]
    + [f"rh_THJ{i}" for i in (5, 4, 3, 2, 1)]
)


@pytest.fixture(scope="module")
def shadow() -> RobotDescription:
    return RobotDescription.load("ur5_shadow")


@pytest.fixture(scope="module")
def allegro() -> RobotDescription:
    return RobotDescription(load_robot_config("ur5_shadow", hand="allegro"))


def test_shadow_has_standard_joint_names(shadow):
    assert shadow.n_arm == 6 and shadow.n_hand == 24
    assert shadow.hand_joint_names == SHADOW_JOINTS
    assert len(shadow.hand_actuated_joint_names) == 20  # four distal joints follow J2
    model = shadow.mujoco_model()
    assert model.nu == 6 + 20 and model.neq == 4


def test_limits_come_from_the_assets(shadow):
    i = shadow.joint_names.index("elbow_joint")
    assert shadow.lower[i] == pytest.approx(-np.pi) and shadow.velocity_limits[i] == pytest.approx(3.15)
    j = shadow.joint_names.index("rh_FFJ3")
    assert (shadow.lower[j], shadow.upper[j]) == pytest.approx((0.0, 1.571))
    assert np.all(shadow.velocity_limits > 0) and np.all(shadow.acceleration_limits > 0)
    assert np.all(shadow.lower < shadow.upper)


def test_out_of_limits_by_position_velocity_and_joint_names(shadow):
    q = shadow.home()
    assert not shadow.out_of_limits(q, np.zeros_like(q))
    i = shadow.joint_names.index("rh_FFJ3")
    bad = q.copy()
    bad[i] = shadow.upper[i] + 1e-6
    assert shadow.out_of_limits(bad)
    v = np.zeros_like(q)
    v[i] = 1.01 * shadow.velocity_limits[i]
    assert shadow.out_of_limits(q, v) and not shadow.out_of_limits(q)
    names = ["rh_FFJ3", "elbow_joint"]  # a subset, by name and in any order
    assert shadow.out_of_limits([bad[i], 0.0], None, names)
    assert not shadow.out_of_limits([q[i], 0.0], [0.0, 3.0], names)  # elbow's limit is 3.15 rad/s


def test_couplings_round_trip(shadow):
    rng = np.random.default_rng(0)
    q_act = rng.uniform(0, 1.5, size=(7, len(shadow.hand_actuated_joint_names)))
    q = shadow.expand_hand(q_act)
    ff1, ff2 = shadow.hand_joint_names.index("rh_FFJ1"), shadow.hand_joint_names.index("rh_FFJ2")
    np.testing.assert_allclose(q[:, ff1], q[:, ff2])
    np.testing.assert_allclose(shadow.apply_couplings(q), q)  # idempotent
    idx = [shadow.hand_joint_names.index(n) for n in shadow.hand_actuated_joint_names]
    np.testing.assert_allclose(q[:, idx], q_act)
    with pytest.raises(ValueError, match="expected 30"):
        shadow.apply_couplings(np.zeros(5))


@pytest.mark.parametrize("hand", [None, "allegro"])
def test_consumers_agree(hand):
    robot = RobotDescription(load_robot_config("ur5_shadow", hand=hand))
    report = check_robot(robot, samples=200, seed=3)
    assert report["fk_max_error_m"] <= 1e-6
    assert report["retargeting_fk_max_error_m"] <= 1e-6
    assert report["pass"] is True


def test_pinocchio_fk_detects_a_wrong_model(shadow):
    """The FK comparison is not vacuous: a perturbed joint vector gives a large error."""
    import pinocchio as pin

    model, data = shadow.mujoco_model(), mujoco.MjData(shadow.mujoco_model())
    pm = shadow.pinocchio_model()
    pd = pm.createData()
    q = shadow.home()
    data.qpos[shadow.mujoco_qpos_index()] = q
    mujoco.mj_kinematics(model, data)
    q_wrong = q.copy()
    q_wrong[1] += 0.1
    pin.framesForwardKinematics(pm, pd, shadow.pinocchio_q(pm, q_wrong))
    flange = data.site("flange").xpos
    assert np.abs(pd.oMf[pm.getFrameId("flange")].translation - flange).max() > 0.01


def test_coupling_holds_in_simulation(shadow):
    report = check_robot(shadow, samples=1)
    assert report["coupling_sim_max_error_rad"] < 0.01


def test_allegro_by_config_only(allegro):
    assert allegro.n_arm == 6 and allegro.n_hand == 16
    assert allegro.tip_frames == ["thumb_tip", "index_tip", "middle_tip", "ring_tip"]
    assert allegro.velocity_limits[-1] == pytest.approx(7.0)
    retargeting = allegro.retargeting("vector")
    assert len(retargeting.optimizer.target_joint_names) == 16


def _vectors(wrapper, origins, tasks) -> np.ndarray:
    pose = wrapper.get_link_pose
    return np.array([pose(t)[:3, 3] - pose(o)[:3, 3] for o, t in zip(origins, tasks, strict=True)])


@pytest.mark.parametrize("hand", [None, "allegro"])
def test_retargeting_round_trip(hand):
    """Human vectors made from a known robot pose (undoing the scaling) are reproduced by retargeting."""
    robot = RobotDescription(load_robot_config("ur5_shadow", hand=hand))
    retargeting = robot.retargeting("vector")
    opt = retargeting.optimizer
    wrapper = opt.robot
    origins = [wrapper.get_link_index(n) for n in opt.origin_link_names]
    tasks = [wrapper.get_link_index(n) for n in opt.task_link_names]
    scaling = robot.config.hand.retarget_scaling
    rng = np.random.default_rng(0)
    lower, upper = wrapper.joint_limits.T
    errors = []
    for _ in range(3):
        retargeting.reset()
        # A mid-range pose: away from limits, where the vector objective has a unique optimum.
        q_true = lower + (upper - lower) * rng.uniform(0.3, 0.7, size=len(lower))
        q_true = (
            retargeting.optimizer.adaptor.forward_qpos(q_true) if retargeting.optimizer.adaptor else q_true
        )
        wrapper.compute_forward_kinematics(q_true)
        target = _vectors(wrapper, origins, tasks)
        for _ in range(20):  # the low-pass filter converges over a few frames
            q_out = retargeting.retarget(target / scaling)
        wrapper.compute_forward_kinematics(q_out)
        got = _vectors(wrapper, origins, tasks)
        errors.append(np.linalg.norm(got - target, axis=1).max())
        assert np.all(q_out >= lower - 1e-6) and np.all(q_out <= upper + 1e-6)
    assert max(errors) < 0.01, errors


def test_surface_points_are_on_hand_links(shadow):
    sp = shadow.hand_surface_points
    assert sp.points.shape == (2048, 3) and sp.normals.shape == (2048, 3)
    assert set(sp.links) <= {shadow.mujoco_model().body(b).name for b in shadow._hand_bodies()}
    assert "rh_palm" in sp.links and "rh_ffdistal" in sp.links
    np.testing.assert_allclose(np.linalg.norm(sp.normals, axis=1), 1.0, atol=1e-6)
    again = RobotDescription.load("ur5_shadow").hand_surface_points
    np.testing.assert_array_equal(sp.points, again.points)  # deterministic for a seed


def test_bad_robot_config_names_the_key(tmp_path):
    path = tmp_path / "robot.yaml"
    path.write_text(
        "name: x\narm: ur5\nhand: shadow_right\nmount: {xyz: [0, 0, 0], rpy: [0, 0, 0]}\nsurfce: {}\n"
    )
    with pytest.raises(ConfigError, match=r"surfce: unknown key \(did you mean 'surface'\?\)"):
        load_robot_config(path)
    path.write_text("name: x\narm: ur5\nhand: shadow_right\nmount: {xyz: [0, 0], rpy: [0, 0, 0]}\n")
    with pytest.raises(ConfigError, match=r"mount.xyz: expected 3 items"):
        load_robot_config(path)
    with pytest.raises(FileNotFoundError, match="available"):
        load_robot_config("ur5_shadow", hand="no_such_hand")


def test_bad_hand_mapping_is_reported(tmp_path):
    from dexh2r_core.paths import config_path

    text = (config_path("robot/hands/shadow_right.yaml")).read_text().replace('"robot0:THJ0": rh_THJ1\n', "")
    hand = tmp_path / "hand.yaml"
    hand.write_text(text)
    with pytest.raises(KeyError, match=r"robot0:THJ0"):
        RobotDescription(load_robot_config("ur5_shadow", hand=str(hand)))


def test_robot_check_cli_writes_json(tmp_path):
    out = tmp_path / "check.json"
    cmd = [sys.executable, "-m", "dexh2r_core.cli", "robot", "check", "--samples", "50", "--json", str(out)]
    subprocess.run(cmd, check=True, capture_output=True, timeout=120)
    report = json.loads(out.read_text())
    assert report["arm_joints"] == 6 and report["hand_joints"] == 24
    assert report["consumers"] == ["mujoco", "pinocchio", "dex-retargeting"]
    assert report["fk_max_error_m"] <= 1e-6
