"""URDF written from the compiled MuJoCo robot: the input of pinocchio and dex-retargeting.

Exporting from the compiled model (rather than converting the source assets separately) means
both consumers get exactly MuJoCo's kinematics: body frames, joint axes and ranges, inertias, and
the named sites as fixed frames. Coupled joints become URDF `<mimic>` joints, which
dex-retargeting honours; pinocchio treats them as ordinary joints and the description's
`apply_couplings` fills them in. Numbers are written with 17 significant digits so FK agrees to
machine precision.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET

import mujoco
import numpy as np

from dexh2r_core.robot.config import Coupling


def _fmt(values) -> str:
    return " ".join(f"{float(v):.17g}" for v in np.atleast_1d(values))


def quat_to_rpy(quat: np.ndarray) -> np.ndarray:
    """MuJoCo quaternion (w, x, y, z) -> URDF roll-pitch-yaw (fixed X, Y, Z)."""
    mat = np.zeros(9)
    mujoco.mju_quat2Mat(mat, np.asarray(quat, dtype=float))
    R = mat.reshape(3, 3)
    pitch = np.arcsin(np.clip(-R[2, 0], -1.0, 1.0))
    if abs(R[2, 0]) < 1.0 - 1e-12:
        roll = np.arctan2(R[2, 1], R[2, 2])
        yaw = np.arctan2(R[1, 0], R[0, 0])
    else:  # gimbal lock: put all of the rotation about z into yaw
        roll = 0.0
        yaw = np.arctan2(-R[0, 1], R[1, 1])
    return np.array([roll, pitch, yaw])


def _origin(parent: ET.Element, pos, quat) -> None:
    ET.SubElement(parent, "origin", xyz=_fmt(pos), rpy=_fmt(quat_to_rpy(quat)))


def _subtree(model: mujoco.MjModel, root: int) -> list[int]:
    out = [root]
    for b in range(root + 1, model.nbody):
        if model.body_parentid[b] in out:
            out.append(b)
    return out


def export_urdf(
    model: mujoco.MjModel,
    *,
    name: str,
    root_body: str = "world",
    couplings: list[Coupling] | tuple[Coupling, ...] = (),
    velocity_limits: dict[str, float] | None = None,
) -> str:
    """URDF text of the subtree at `root_body` (its own pose is dropped: it is the URDF root)."""
    root = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_BODY, root_body)
    if root < 0:
        raise KeyError(f"body '{root_body}' not in the model")
    mimic = {c.joint: c for c in couplings}
    velocity_limits = velocity_limits or {}
    robot = ET.Element("robot", name=name)
    bodies = _subtree(model, root)
    for b in bodies:
        link = ET.SubElement(robot, "link", name=model.body(b).name)
        if model.body_mass[b] > 0:
            inertial = ET.SubElement(link, "inertial")
            _origin(inertial, model.body_ipos[b], model.body_iquat[b])
            ET.SubElement(inertial, "mass", value=_fmt(model.body_mass[b]))
            ixx, iyy, izz = model.body_inertia[b]
            ET.SubElement(
                inertial, "inertia", ixx=_fmt(ixx), iyy=_fmt(iyy), izz=_fmt(izz), ixy="0", ixz="0", iyz="0"
            )
        if b == root:
            continue
        parent = model.body(model.body_parentid[b]).name
        njnt = model.body_jntnum[b]
        if njnt > 1:
            raise ValueError(f"body '{model.body(b).name}' has {njnt} joints; URDF allows one per link")
        if njnt == 0:
            joint = ET.SubElement(robot, "joint", name=f"{model.body(b).name}_fixed", type="fixed")
        else:
            j = model.body_jntadr[b]
            jtype = int(model.jnt_type[j])
            if jtype not in (int(mujoco.mjtJoint.mjJNT_HINGE), int(mujoco.mjtJoint.mjJNT_SLIDE)):
                raise ValueError(f"joint '{model.joint(j).name}': only hinge and slide joints export to URDF")
            if np.any(np.abs(model.jnt_pos[j]) > 1e-12):
                raise ValueError(
                    f"joint '{model.joint(j).name}' is offset from its body frame; not supported"
                )
            kind = "revolute" if jtype == int(mujoco.mjtJoint.mjJNT_HINGE) else "prismatic"
            jname = model.joint(j).name
            joint = ET.SubElement(robot, "joint", name=jname, type=kind)
        ET.SubElement(joint, "parent", link=parent)
        ET.SubElement(joint, "child", link=model.body(b).name)
        _origin(joint, model.body_pos[b], model.body_quat[b])
        if njnt == 1:
            ET.SubElement(joint, "axis", xyz=_fmt(model.jnt_axis[j]))
            lower, upper = model.jnt_range[j] if model.jnt_limited[j] else (-np.pi, np.pi)
            ET.SubElement(
                joint,
                "limit",
                lower=_fmt(lower),
                upper=_fmt(upper),
                effort="1000",
                velocity=_fmt(velocity_limits.get(jname, 10.0)),
            )
            if jname in mimic:
                c = mimic[jname]
                ET.SubElement(
                    joint, "mimic", joint=c.follows, multiplier=_fmt(c.ratio), offset=_fmt(c.offset)
                )
    # Sites are frames the stack names (flange, fingertips): fixed child links.
    for s in range(model.nsite):
        b = model.site_bodyid[s]
        if b not in bodies:
            continue
        site = model.site(s).name
        ET.SubElement(robot, "link", name=site)
        joint = ET.SubElement(robot, "joint", name=f"{site}_fixed", type="fixed")
        ET.SubElement(joint, "parent", link=model.body(b).name)
        ET.SubElement(joint, "child", link=site)
        _origin(joint, model.site_pos[s], model.site_quat[s])
    ET.indent(robot)
    header = (
        "<?xml version='1.0'?>\n"
        "<!-- Generated by dexh2r_core.robot from the compiled MuJoCo model. Do not edit. -->\n"
    )
    return header + ET.tostring(robot, encoding="unicode") + "\n"
