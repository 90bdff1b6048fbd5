"""Cross-consumer consistency check of the robot description (`dexh2r robot check`).

Loads the description into MuJoCo, pinocchio and dex-retargeting and compares forward kinematics
of the named frames (flange, fingertips) over random configurations within the joint limits:
MuJoCo vs pinocchio in the world frame, MuJoCo vs dex-retargeting's robot in the hand root frame.
"""

from __future__ import annotations

import time

import mujoco
import numpy as np

from dexh2r_core.robot.description import RobotDescription


def check_robot(robot: RobotDescription, samples: int = 1000, seed: int = 0) -> dict:
    import pinocchio as pin

    timings = {}
    t0 = time.perf_counter()
    model = robot.mujoco_model()
    data = mujoco.MjData(model)
    timings["mujoco_load_s"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    pin_model = robot.pinocchio_model()
    pin_data = pin_model.createData()
    timings["pinocchio_load_s"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    retargeting = robot.retargeting("vector")
    timings["dex_retargeting_load_s"] = time.perf_counter() - t0
    rt_robot = retargeting.optimizer.robot

    frames = [robot.flange_frame, *robot.tip_frames]
    site_ids = [mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_SITE, f) for f in frames]
    pin_ids = [pin_model.getFrameId(f) for f in frames]
    rt_tip_ids = [rt_robot.get_link_index(f) for f in robot.tip_frames]
    rt_root = robot._hand_root_name()
    root_body = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_BODY, rt_root)
    rt_q_index = [robot.hand_joint_names.index(n) for n in rt_robot.dof_joint_names]
    qpos_index = robot.mujoco_qpos_index()

    configurations = robot.sample_configurations(samples, seed=seed)
    fk_err = 0.0
    rt_err = 0.0
    worst = ""
    for q in configurations:
        data.qpos[:] = 0.0
        data.qpos[qpos_index] = q
        mujoco.mj_kinematics(model, data)
        pin.framesForwardKinematics(pin_model, pin_data, robot.pinocchio_q(pin_model, q))
        for name, s, f in zip(frames, site_ids, pin_ids, strict=True):
            err = float(np.abs(pin_data.oMf[f].translation - data.site_xpos[s]).max())
            if err > fk_err:
                fk_err, worst = err, name
        # dex-retargeting works in the hand root frame.
        rt_robot.compute_forward_kinematics(q[robot.n_arm :][rt_q_index])
        R_root = data.xmat[root_body].reshape(3, 3)
        for s, link in zip(site_ids[1:], rt_tip_ids, strict=True):
            local = R_root.T @ (data.site_xpos[s] - data.xpos[root_body])
            rt_err = max(rt_err, float(np.abs(rt_robot.get_link_pose(link)[:3, 3] - local).max()))

    coupling_err = _coupling_error_in_simulation(robot)
    return {
        "robot": robot.config.name,
        "arm": robot.config.arm.name,
        "hand": robot.config.hand.name,
        "arm_joints": robot.n_arm,
        "hand_joints": robot.n_hand,
        "hand_actuated_joints": len(robot.hand_actuated_joint_names),
        "consumers": ["mujoco", "pinocchio", "dex-retargeting"],
        "frames": frames,
        "samples": samples,
        "fk_max_error_m": fk_err,
        "fk_worst_frame": worst,
        "retargeting_fk_max_error_m": rt_err,
        "coupling_sim_max_error_rad": coupling_err,
        "surface_points": len(robot.hand_surface_points.points),
        "timings": timings,
        "pass": fk_err <= 1e-6 and rt_err <= 1e-6,
    }


def _coupling_error_in_simulation(robot: RobotDescription, seconds: float = 1.0) -> float | None:
    """Drive the hand to a random pose in MuJoCo; how far are coupled joints from their rule?"""
    if not robot.config.hand.couplings:
        return None
    model = robot.mujoco_model()
    data = mujoco.MjData(model)
    model.opt.gravity[:] = 0.0  # a kinematic check of the coupling, not of the arm's gravity load
    try:
        q = robot.home()
        rng = np.random.default_rng(1)
        hand = robot.n_arm + np.arange(robot.n_hand)
        q[hand] = rng.uniform(robot.lower[hand], robot.upper[hand])
        q = robot.apply_couplings(q)
        qpos_index = robot.mujoco_qpos_index()
        data.qpos[qpos_index] = robot.home()
        for a in range(model.nu):
            joint = model.joint(model.actuator_trnid[a, 0]).name
            data.ctrl[a] = q[robot.joint_names.index(joint)]
        for _ in range(int(seconds / model.opt.timestep)):
            mujoco.mj_step(model, data)
        sim_q = data.qpos[qpos_index]
        return float(np.abs(robot.apply_couplings(sim_q) - sim_q).max())
    finally:
        model.opt.gravity[:] = [0.0, 0.0, -9.81]
