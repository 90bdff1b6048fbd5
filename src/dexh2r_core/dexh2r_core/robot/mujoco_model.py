"""The robot (arm + hand) as a MuJoCo `MjSpec`: the first consumer of the robot description.

The arm comes from its URDF, the hand from its MJCF or URDF; the hand is attached to the arm's
flange through the configured mount transform, renamed to standard names, given position
actuators (one per independent joint) and joint-equality constraints for coupled joints. Named
sites mark the frames the rest of the stack uses (`flange`, `<finger>_tip`). The URDF for
pinocchio and dex-retargeting is exported from the compiled model (see `urdf_export`), so every
consumer sees the same kinematics.
"""

from __future__ import annotations

from pathlib import Path

import mujoco
import numpy as np

from dexh2r_core.robot.assets import resolve_asset, urdf_effort_limits, urdf_for_mujoco
from dexh2r_core.robot.config import HandConfig, Pose, RobotConfig

FLANGE_SITE = "flange"
_ATTACH_PREFIX = "hand__"


def tip_site(finger: str) -> str:
    return f"{finger}_tip"


def rpy_to_quat(rpy: tuple[float, float, float] | list[float]) -> np.ndarray:
    """URDF roll-pitch-yaw (fixed axes X, Y, Z) -> MuJoCo quaternion (w, x, y, z)."""
    r, p, y = (float(a) for a in rpy)
    cr, sr, cp, sp, cy, sy = (
        np.cos(r / 2),
        np.sin(r / 2),
        np.cos(p / 2),
        np.sin(p / 2),
        np.cos(y / 2),
        np.sin(y / 2),
    )
    return np.array(
        [
            cr * cp * cy + sr * sp * sy,
            sr * cp * cy - cr * sp * sy,
            cr * sp * cy + sr * cp * sy,
            cr * cp * sy - sr * sp * cy,
        ]
    )


def _load_hand_spec(hand: HandConfig) -> mujoco.MjSpec:
    path = resolve_asset(hand.file)
    if hand.format == "mjcf":
        spec = mujoco.MjSpec.from_file(str(path))
    else:
        spec = mujoco.MjSpec.from_string(urdf_for_mujoco(path, hand.drop_links))
    # The asset's own actuators, tendons, sensors and contact pairs are replaced by ours: they
    # encode one benchmark's control scheme and would fight the configured coupling.
    for group in (spec.actuators, spec.sensors, spec.tendons, spec.equalities):
        for element in list(group):
            spec.delete(element)
    return spec


def _rename_hand(spec: mujoco.MjSpec, hand: HandConfig) -> dict[str, str]:
    """Standard names for joints (explicit map) and bodies/geoms (prefix rewrite); returns geom renames."""
    old, new = hand.body_prefix
    root = spec.body(hand.root_body)
    if root is None:
        raise KeyError(f"hand.root_body '{hand.root_body}' is not a body of {hand.file.path}")
    subtree_joints = [j for j in spec.joints if _in_subtree(j.parent, root)]
    missing = [j.name for j in subtree_joints if j.name not in hand.joints]
    if missing:
        raise KeyError(f"hand.joints has no standard name for source joint(s) {missing}")
    unknown = sorted(set(hand.joints) - {j.name for j in subtree_joints})
    if unknown:
        raise KeyError(f"hand.joints names source joint(s) {unknown} that are not in the hand model")
    for joint in subtree_joints:
        joint.name = hand.joints[joint.name]
    geom_renames = {}
    for element in [*spec.bodies, *spec.geoms, *spec.sites]:
        if old and element.name.startswith(old):
            renamed = new + element.name[len(old) :]
            if isinstance(element, mujoco.MjsGeom):
                geom_renames[element.name] = renamed
            element.name = renamed
    # Sites of the asset (touch pads, benchmark markers) are not part of the description.
    for site in list(spec.sites):
        spec.delete(site)
    return geom_renames


def _in_subtree(body: mujoco.MjsBody, root: mujoco.MjsBody) -> bool:
    while body is not None:
        if body.name == root.name:
            return True
        parent = body.parent
        if parent is None or parent.name == body.name:
            return False
        body = parent
    return False


def build_robot_spec(config: RobotConfig) -> mujoco.MjSpec:
    """Arm + mounted hand with actuators, couplings and named frames; no scene around it."""
    arm_urdf = resolve_asset(config.arm.urdf)
    spec = mujoco.MjSpec.from_string(urdf_for_mujoco(arm_urdf, config.arm.drop_links))
    spec.modelname = config.name
    spec.compiler.degree = False
    arm_joint_names = [j.name for j in spec.joints]
    flange = spec.body(config.arm.flange_link)
    if flange is None:
        raise KeyError(f"arm.flange_link '{config.arm.flange_link}' is not a link of {config.arm.urdf.path}")
    flange.add_site(name=FLANGE_SITE, size=[0.005, 0.005, 0.005], group=3)

    hand_cfg = config.hand
    hand = _load_hand_spec(hand_cfg)
    pairs = [(p.geomname1, p.geomname2, p.condim) for p in hand.pairs]
    for pair in list(hand.pairs):
        hand.delete(pair)
    geom_renames = _rename_hand(hand, hand_cfg)
    old, new = hand_cfg.body_prefix
    root_name = (
        new + hand_cfg.root_body[len(old) :]
        if old and hand_cfg.root_body.startswith(old)
        else hand_cfg.root_body
    )
    pos, quat = compose_poses(config.mount, hand_cfg.root_offset)
    mount = flange.add_frame(pos=list(pos), quat=list(quat))
    # Solver and size settings are the cell's, not the hand asset's.
    hand.option.iterations = spec.option.iterations
    for attr in (
        "njmax",
        "nconmax",
        "nuser_jnt",
        "nuser_site",
        "nuser_tendon",
        "nuser_actuator",
        "nuser_sensor",
    ):
        setattr(hand, attr, getattr(spec, attr))
    # MuJoCo warns about attaching without a prefix; attach with one, then strip it from the kinematic
    # elements so that the hand keeps its standard names (assets keep the prefix: no clashes).
    # The root keeps no pose from the asset (e.g. the wrist's offset inside the Shadow forearm):
    # where it sits is exactly mount * root_offset.
    root = hand.body(root_name)
    root.pos = [0.0, 0.0, 0.0]
    root.quat = [1.0, 0.0, 0.0, 0.0]
    mount.attach_body(root, _ATTACH_PREFIX, "")
    for element in [*spec.bodies, *spec.joints, *spec.geoms, *spec.sites]:
        if element.name.startswith(_ATTACH_PREFIX):
            element.name = element.name[len(_ATTACH_PREFIX) :]
    # Self-collision pairs of the asset, re-declared under the standard names.
    for g1, g2, condim in pairs:
        spec.add_pair(geomname1=geom_renames.get(g1, g1), geomname2=geom_renames.get(g2, g2), condim=condim)

    for finger, tip in hand_cfg.fingertips.items():
        body = spec.body(tip.link)
        if body is None:
            raise KeyError(f"hand.fingertips.{finger}.link '{tip.link}' is not a body of the hand")
        body.add_site(name=tip_site(finger), pos=list(tip.offset), size=[0.004, 0.004, 0.004], group=3)

    efforts = urdf_effort_limits(arm_urdf)
    for name in arm_joint_names:
        joint = spec.joint(name)
        joint.armature = config.arm.armature
        joint.damping[0] = config.arm.damping
        _add_position_actuator(
            spec, name, config.arm.kp, joint.range if joint.limited else None, efforts.get(name)
        )
    followers = {c.joint for c in hand_cfg.couplings}
    for name in hand_cfg.joints.values():
        if name in followers:
            continue
        _add_position_actuator(spec, name, hand_cfg.kp, spec.joint(name).range)
    for name in hand_cfg.joints.values():
        joint = spec.joint(name)
        joint.damping[0] = hand_cfg.damping
        joint.armature = max(joint.armature, 1e-3)  # URDF hands carry none; tiny links need it to be stable
    for c in hand_cfg.couplings:
        # MuJoCo joint equality: q_joint = c0 + c1 * q_follows (about the reference pose, qpos0 = 0).
        eq = spec.add_equality(type=mujoco.mjtEq.mjEQ_JOINT, name1=c.joint, name2=c.follows)
        eq.name = f"couple_{c.joint}"
        eq.data[:5] = [c.offset, c.ratio, 0.0, 0.0, 0.0]
    # Real arm and hand controllers compensate gravity; without it a position servo sags by
    # torque / kp (several centiradians at the UR5 shoulder with a Shadow hand on it).
    for body in spec.bodies:
        if body.name != "world":
            body.gravcomp = 1.0
    return spec


def _add_position_actuator(
    spec: mujoco.MjSpec, joint: str, kp: float, ctrlrange, effort: float | None = None
) -> None:
    act = spec.add_actuator(name=f"act_{joint}", target=joint, trntype=mujoco.mjtTrn.mjTRN_JOINT)
    act.set_to_position(kp=kp)
    if effort:
        act.forcelimited = True
        act.forcerange = [-effort, effort]
    if ctrlrange is not None:
        act.ctrllimited = True
        act.ctrlrange = list(ctrlrange)


def compile_robot(config: RobotConfig) -> mujoco.MjModel:
    return build_robot_spec(config).compile()


def compose_poses(a: Pose, b: Pose) -> tuple[np.ndarray, np.ndarray]:
    """a * b as (position, MuJoCo quaternion)."""
    qa, qb = rpy_to_quat(a.rpy), rpy_to_quat(b.rpy)
    rotated = np.zeros(3)
    mujoco.mju_rotVecQuat(rotated, np.asarray(b.xyz, dtype=float), qa)
    quat = np.zeros(4)
    mujoco.mju_mulQuat(quat, qa, qb)
    return np.asarray(a.xyz, dtype=float) + rotated, quat


def spec_source_files(config: RobotConfig) -> list[Path]:
    """Files whose content defines the model (for cache keys)."""
    files = [resolve_asset(config.arm.urdf), resolve_asset(config.hand.file)]
    if config.hand.format == "mjcf":
        files += sorted(resolve_asset(config.hand.file).parent.glob("*.xml"))
    return files
