"""The giver: a human-like hand that brings an object into the cell and lets go when the robot holds it.

Model (`add_giver`). A mocap body (the giver's hand frame, moved kinematically by `Giver.step`)
carries a Shadow-type hand: the kinematics and collision capsules/boxes of gymnasium-robotics'
Shadow MJCF (read from the installed package, never copied), dressed in skin-coloured human-like
visuals (capsule phalanges, the convex hull of the Shadow palm, a rounded wrist) because MediaPipe
does not recognise the bare Shadow meshes, plus a forearm capsule behind the wrist (tilted by a
30 deg wrist extension). The collision geoms make robot-giver contact real and detectable. Fingers
are rigid, joint-free bodies: their posture is written into `model.body_quat` (rest orientation
times the Shadow joint rotation), so the hand is perfectly rigid and the simulation deterministic.
The object is held by a weld equality (`<name>/hold`, hand -> object) whose relative pose is the
grasp; giver-object contacts are excluded, so only the weld carries the object and its force
measures exactly how much of the object's weight the giver bears. A left hand is the exact mirror
image (x -> -x in the hand frame: mirrored body poses, joint axes and hull meshes).

Hand frame (= mocap frame = MediaPipe WRIST keypoint): the Shadow palm frame at the base of the
palm. +z runs from the wrist to the fingers, -y is the palm normal (the palm faces -y), +x points
to the thumb side of a right hand (to the little-finger side of a left hand).

Grasp rule (`plan_grasp`). Objects whose smallest extent is <= 7.5 cm are *pinched*: the shortest
axis lies along the fingers (squeezed between the fingertips above and the thumb below), the
longest along the palm normal so that most of the object sticks out of the hand toward whoever
takes it, its near end 5 cm in front of the palm. Larger objects (mugs) get a *power* grasp: the
longest axis across the palm, resting 4 mm off it with the top just above the knuckles. Each
finger then closes like GraspIt's auto-grasp: MCP, PIP and DIP flex together and a joint stops
when a link it moves comes within 2 mm of the object (analytic signed distance of the object's
primitive geoms, oriented bounding boxes for meshes); in a pinch the ring and little fingers only
curl loosely. The thumb is placed by a grid search over its joints for the posture that touches
the object (0-4 mm) without penetrating, nearest to an opposition point (the face under the
fingertips). About 60 ms per object.

Release rule (`Giver.step`). While the weld is active its constraint force is read from
`data.efc_force`; the giver releases when the upward part of that force stays below
`support_fraction * m * g` for `confirm_s` (the robot bears the weight), or at `timeout_s` for
`rule: timeout`. With `rule: supported` a giver that is never relieved gives up at `timeout_s` and
withdraws with the object. After a release the hand opens (`open_s`) and withdraws along a
minimum-jerk path (`withdraw_s`, `withdraw_distance` back toward its start). The weld is as stiff
as MuJoCo allows (time constant 2 timesteps); a mocap body has no velocity for the weld's damping,
so the object trails the moving hand by about 2 * timestep * speed (6 mm at 2 ms and the 0.8 m/s
peak of a reach, < 2 mm while offering). The hand's acceleration is fed forward to the object's
velocity so that the weld force carries only the support share, not the inertia of following.

Note: the grasp posture and weld pose are written into the shared `MjModel` at `reset`/`step`; use
one Giver (and one model) per simulated episode stream.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from functools import cached_property, lru_cache
from typing import TYPE_CHECKING, Literal

import mujoco
import numpy as np
from scipy.spatial.transform import Rotation

from dexh2r_core.hand_landmarks import LANDMARK_NAMES
from dexh2r_core.robot.assets import resolve_asset
from dexh2r_sim.motion import GiverTrajectory, Pose, min_jerk, min_jerk_pose, rotvec_between, withdraw_target

if TYPE_CHECKING:
    from dexh2r_sim.scenario import Scenario

Side = Literal["right", "left"]

SKIN_RGBA: tuple[float, float, float, float] = (0.87, 0.69, 0.56, 1.0)
FOREARM_RGBA: tuple[float, float, float, float] = (0.87, 0.69, 0.56, 1.0)
GIVER_VISUAL_GROUP = 2  # rendered by default (MuJoCo shows geom groups 0-2)
GIVER_COLLISION_GROUP = 5  # hidden by default; collides with the robot
GIVER_SITE_GROUP = 5

_SHADOW_MJCF = "package://gymnasium_robotics/envs/assets/hand/reach.xml"
_SRC = "robot0:"
_WRIST_TO_PALM = 0.034  # Shadow wrist joint (WRJ2) -> palm frame (WRJ1), along +z

# MediaPipe Hands landmark order: (name, link, offset in the link frame). Tips are the Shadow
# fingertip sites; MCP/PIP/DIP are the joint centres (link origins). Thumb: CMC = thbase (THJ5/4),
# MCP = thhub (THJ3/2), IP = thdistal (THJ1).
KEYPOINT_NAMES = LANDMARK_NAMES  # the stack-wide convention (dexh2r_core.hand_landmarks)
KEYPOINT_LINKS: tuple[tuple[str | None, tuple[float, float, float]], ...] = (
    (None, (0.0, 0.0, 0.0)),
    ("thbase", (0.0, 0.0, 0.0)),
    ("thhub", (0.0, 0.0, 0.0)),
    ("thdistal", (0.0, 0.0, 0.0)),
    ("thdistal", (0.0, 0.0, 0.0275)),
    ("ffproximal", (0.0, 0.0, 0.0)),
    ("ffmiddle", (0.0, 0.0, 0.0)),
    ("ffdistal", (0.0, 0.0, 0.0)),
    ("ffdistal", (0.0, 0.0, 0.026)),
    ("mfproximal", (0.0, 0.0, 0.0)),
    ("mfmiddle", (0.0, 0.0, 0.0)),
    ("mfdistal", (0.0, 0.0, 0.0)),
    ("mfdistal", (0.0, 0.0, 0.026)),
    ("rfproximal", (0.0, 0.0, 0.0)),
    ("rfmiddle", (0.0, 0.0, 0.0)),
    ("rfdistal", (0.0, 0.0, 0.0)),
    ("rfdistal", (0.0, 0.0, 0.026)),
    ("lfproximal", (0.0, 0.0, 0.0)),
    ("lfmiddle", (0.0, 0.0, 0.0)),
    ("lfdistal", (0.0, 0.0, 0.0)),
    ("lfdistal", (0.0, 0.0, 0.026)),
)
# 21-point skeleton edges (MediaPipe HAND_CONNECTIONS), for bone-length checks and drawing.
HAND_BONES: tuple[tuple[int, int], ...] = (
    (0, 1), (1, 2), (2, 3), (3, 4),
    (0, 5), (5, 6), (6, 7), (7, 8),
    (0, 9), (9, 10), (10, 11), (11, 12),
    (0, 13), (13, 14), (14, 15), (15, 16),
    (0, 17), (17, 18), (18, 19), (19, 20),
)  # fmt: skip

# Closing joints per finger (Shadow standard names, J1 = distal) with relative closing rates.
_CLOSE: dict[str, tuple[tuple[str, float], ...]] = {
    "ff": (("FFJ3", 1.0), ("FFJ2", 1.0), ("FFJ1", 0.8)),
    "mf": (("MFJ3", 1.0), ("MFJ2", 1.0), ("MFJ1", 0.8)),
    "rf": (("RFJ3", 1.0), ("RFJ2", 1.0), ("RFJ1", 0.8)),
    "lf": (("LFJ3", 1.0), ("LFJ2", 1.0), ("LFJ1", 0.8)),
}
# Thumb search grid (the thumb opposes: it is placed, not closed, see `_thumb_search`).
_THUMB_GRID: dict[str, np.ndarray] = {
    "THJ5": np.linspace(0.0, 1.047, 9),
    "THJ4": np.linspace(0.0, 1.222, 9),
    "THJ3": np.linspace(-0.2, 0.2, 3),
    "THJ2": np.linspace(-0.524, 0.524, 5),
    "THJ1": np.linspace(-1.2, 0.0, 6),
}
_THUMB_NATURAL: dict[str, float] = {"THJ5": 0.7, "THJ4": 0.9, "THJ3": 0.0, "THJ2": 0.1, "THJ1": -0.3}
# Joints that keep a fixed value while closing (finger spread, thumb opposition, palm cup).
_GRASP_FIXED: dict[str, float] = {
    "FFJ4": 0.06,
    "MFJ4": 0.0,
    "RFJ4": -0.06,
    "LFJ4": -0.12,
    "LFJ5": 0.25,
}
# Relaxed, slightly flexed open hand (before the grasp is formed and after the release).
OPEN_HAND: dict[str, float] = {
    "FFJ4": 0.1, "FFJ3": 0.15, "FFJ2": 0.15, "FFJ1": 0.1,
    "MFJ4": 0.0, "MFJ3": 0.15, "MFJ2": 0.15, "MFJ1": 0.1,
    "RFJ4": -0.1, "RFJ3": 0.15, "RFJ2": 0.15, "RFJ1": 0.1,
    "LFJ5": 0.1, "LFJ4": -0.2, "LFJ3": 0.15, "LFJ2": 0.15, "LFJ1": 0.1,
    "THJ5": 0.3, "THJ4": 0.3, "THJ3": 0.0, "THJ2": 0.0, "THJ1": -0.1,
}  # fmt: skip
_CONTACT_MARGIN = 0.002  # m: fingers stop this far off the object surface


# --- Shadow reference (read once from the installed MJCF) --------------------------------------


@dataclass(frozen=True)
class _LinkRef:
    name: str  # short Shadow link name, e.g. "ffproximal"
    parent: str | None  # None: the palm (hand frame)
    pos: np.ndarray
    quat: np.ndarray  # wxyz, rest orientation in the parent frame
    joint: str | None  # standard Shadow joint name (J1 = distal), e.g. "FFJ3"
    axis: np.ndarray | None
    range: tuple[float, float] | None


@dataclass(frozen=True)
class _GeomRef:
    link: str | None  # None: on the palm / hand frame
    name: str
    type: int
    size: np.ndarray
    pos: np.ndarray
    quat: np.ndarray
    mesh: str | None = None
    condim: int = 3


@dataclass(frozen=True)
class _ShadowRef:
    links: tuple[_LinkRef, ...]
    visuals: tuple[_GeomRef, ...]
    collisions: tuple[_GeomRef, ...]
    meshes: Mapping[str, tuple[str, np.ndarray]]  # short mesh name -> (file, scale)


def _std_joint(src: str) -> str:
    """gymnasium 0-based joint name (robot0:FFJ3) -> Shadow standard (FFJ4)."""
    base = src[len(_SRC) :]
    return f"{base[:-1]}{int(base[-1]) + 1}"


@lru_cache(maxsize=1)
def _shadow_reference() -> _ShadowRef:
    path = resolve_asset(_SHADOW_MJCF)
    spec = mujoco.MjSpec.from_file(str(path))
    model = spec.compile()
    palm = model.body(_SRC + "palm").id
    wrist = model.body(_SRC + "wrist").id

    def short(name: str) -> str:
        return name[len(_SRC) :]

    links = []
    for b in range(model.nbody):
        if model.body_parentid[b] in (0,) or b in (palm, wrist) or not _descends(model, b, palm):
            continue
        parent = model.body_parentid[b]
        jnt = model.body_jntadr[b] if model.body_jntnum[b] == 1 else -1
        links.append(
            _LinkRef(
                name=short(model.body(b).name),
                parent=None if parent == palm else short(model.body(parent).name),
                pos=model.body_pos[b].copy(),
                quat=model.body_quat[b].copy(),
                joint=_std_joint(model.joint(jnt).name) if jnt >= 0 else None,
                axis=model.jnt_axis[jnt].copy() if jnt >= 0 else None,
                range=tuple(model.jnt_range[jnt]) if jnt >= 0 else None,
            )
        )
    link_names = {ln.name for ln in links}
    visuals, collisions = [], []
    meshes: dict[str, tuple[str, np.ndarray]] = {}
    meshdir = path.parent / spec.meshdir
    for m in spec.meshes:
        meshes[short(m.name)] = (str((meshdir / m.file).resolve()), np.array(m.scale, dtype=float))
    for g in spec.geoms:
        body = g.parent.name
        if body == _SRC + "palm" or body == _SRC + "wrist":
            link = None
        elif short(body) in link_names:
            link = short(body)
        else:
            continue
        if g.alt.type != mujoco.mjtOrientation.mjORIENTATION_QUAT:
            continue  # only the forearm geoms use Euler angles; the forearm is replaced
        pos = np.array(g.pos, dtype=float)
        if body == _SRC + "wrist":
            pos = pos + np.array([0.0, 0.0, -_WRIST_TO_PALM])
        quat = np.array(g.quat, dtype=float)
        quat /= np.linalg.norm(quat)
        ref = _GeomRef(
            link=link,
            name=short(g.name),
            type=int(g.type),
            size=np.array(g.size, dtype=float),
            pos=pos,
            quat=quat,
            mesh=short(g.meshname) if g.meshname else None,
            condim=int(g.condim),
        )
        if g.name.startswith(_SRC + "V_") and g.type == mujoco.mjtGeom.mjGEOM_MESH:
            visuals.append(ref)
        elif g.name.startswith(_SRC + "C_"):
            collisions.append(ref)
    return _ShadowRef(tuple(links), tuple(visuals), tuple(collisions), meshes)


def _descends(model: mujoco.MjModel, body: int, ancestor: int) -> bool:
    while body > 0:
        if body == ancestor:
            return True
        body = model.body_parentid[body]
    return False


# --- mirroring (left hand = right hand reflected through the hand's y-z plane) -------------------

_M = np.diag([-1.0, 1.0, 1.0])


def _mirror_pos(p: np.ndarray) -> np.ndarray:
    return _M @ np.asarray(p, dtype=float)


def _mirror_quat_wxyz(q: np.ndarray) -> np.ndarray:
    """Quaternion of M R M for the reflection M = diag(-1, 1, 1)."""
    w, x, y, z = q
    return np.array([w, x, -y, -z], dtype=float)


def _mirror_axis(a: np.ndarray) -> np.ndarray:
    """Hinge axis in the mirrored hand: M Rot(a, q) M = Rot(-M a, q)."""
    return -(_M @ np.asarray(a, dtype=float))


def mirror_transform(T: np.ndarray) -> np.ndarray:
    """M T M: a right-hand-frame pose as the corresponding left-hand-frame pose."""
    M4 = np.diag([-1.0, 1.0, 1.0, 1.0])
    return M4 @ np.asarray(T, dtype=float) @ M4


# --- handles -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class FingerLink:
    """A rigid finger body of the giver and how a Shadow joint angle turns it."""

    body: str
    link: str
    rest_quat: np.ndarray  # wxyz in the parent frame
    joint: str | None
    axis: np.ndarray | None


@dataclass(frozen=True)
class GiverHandles:
    """Names of everything `add_giver` created (resolved to ids by `Giver`)."""

    name: str
    side: Side
    mocap_body: str
    prefix: str
    bodies: tuple[str, ...]
    links: tuple[FingerLink, ...]
    keypoint_sites: tuple[str, ...]
    weld: str | None
    object_body: str | None
    visual_group: int = GIVER_VISUAL_GROUP
    collision_group: int = GIVER_COLLISION_GROUP


# Skin visuals: (link, fromto start z, end z, radius) capsules along each phalanx's z axis. The
# distal capsules end at the fingertip keypoint (0.026 / 0.0275 from the DIP / IP joint).
_SKIN_CAPSULES: tuple[tuple[str, float, float, float], ...] = (
    *(
        (f"{f}proximal", 0.0, 0.045, r)
        for f, r in (("ff", 0.0105), ("mf", 0.0108), ("rf", 0.0102), ("lf", 0.0095))
    ),
    *(
        (f"{f}middle", 0.0, 0.025, r)
        for f, r in (("ff", 0.0095), ("mf", 0.0097), ("rf", 0.0093), ("lf", 0.0085))
    ),
    *(
        (f"{f}distal", 0.0, 0.026 - r, r)
        for f, r in (("ff", 0.0085), ("mf", 0.0087), ("rf", 0.0083), ("lf", 0.0077))
    ),
    ("thproximal", 0.0, 0.038, 0.0125),
    ("thmiddle", 0.0, 0.032, 0.0105),
    ("thdistal", 0.0, 0.0275 - 0.0092, 0.0092),
)
_HULL_MESHES = ("palm", "lfmetacarpal")


@lru_cache(maxsize=4)
def _hull(mesh_name: str, mirror: bool) -> tuple[np.ndarray, np.ndarray]:
    """Convex hull (vertices, faces) of a Shadow mesh in its geom frame, mirrored in x if asked."""
    import trimesh

    file, scale = _shadow_reference().meshes[mesh_name]
    mesh = trimesh.load(file, force="mesh")
    mesh.apply_scale(scale)
    hull = mesh.convex_hull
    verts, faces = np.asarray(hull.vertices, dtype=float), np.asarray(hull.faces, dtype=int)
    if mirror:
        verts = verts * [-1.0, 1.0, 1.0]
        faces = faces[:, ::-1]  # keep the outward winding after the reflection
    return verts, faces


def _add_skin_visuals(bodies, prefix: str, material: str, ref: _ShadowRef, mpos, mquat) -> None:
    """Human-like visual geometry on the Shadow kinematics (see add_giver)."""

    def visual(body, name: str, **kw) -> mujoco.MjsGeom:
        geom = body.add_geom(name=f"{prefix}{name}", **kw)
        geom.material = material
        geom.group = GIVER_VISUAL_GROUP
        geom.contype = geom.conaffinity = 0
        geom.mass = 0.0
        return geom

    for link, z0, z1, r in _SKIN_CAPSULES:
        g = visual(bodies[link], f"V_{link}", type=mujoco.mjtGeom.mjGEOM_CAPSULE)
        g.fromto = [0.0, 0.0, z0, 0.0, 0.0, z1]
        g.size = [r, 0.0, 0.0]
    for v in ref.visuals:
        if v.mesh in _HULL_MESHES:
            visual(
                bodies[v.link],
                f"V_{v.name[2:]}",
                type=mujoco.mjtGeom.mjGEOM_MESH,
                meshname=f"{prefix}hull_{v.mesh}",
                pos=list(mpos(v.pos)),
                quat=list(mquat(v.quat)),
            )
    wrist = visual(
        bodies[None], "V_wrist", type=mujoco.mjtGeom.mjGEOM_ELLIPSOID, pos=list(mpos([0.0, -0.004, -0.022]))
    )
    wrist.size = [0.033, 0.018, 0.034]


def add_giver(
    spec: mujoco.MjSpec,
    side: Side = "right",
    name: str = "giver",
    *,
    object_body: str | None = "object",
    skin_rgba: Sequence[float] = SKIN_RGBA,
    forearm_rgba: Sequence[float] = FOREARM_RGBA,
    forearm_length: float = 0.24,
    forearm_radius: float = 0.026,
    wrist_extension_deg: float = 30.0,
    parked_pos: Sequence[float] = (1.6, 0.0, 0.4),
    visual_style: Literal["skin", "shadow"] = "skin",
) -> GiverHandles:
    """Add the giver's hand (mocap wrist + rigid Shadow-type fingers + forearm) to `spec`.

    `object_body` names the body the giver holds (it may be added to the spec later, before
    compiling): a weld equality `<name>/hold` and giver–object contact exclusions are created for
    it. Pass None for a giver without an object. Visual geoms go to group 2 (skin material),
    collision geoms to group 5; every giver geom, body and site name starts with `<name>/`.

    `visual_style="skin"` (default) dresses the Shadow kinematics in human-like skin: capsule
    phalanges a little thicker than Shadow's collision capsules, the convex hull of the Shadow palm
    and a rounded wrist; MediaPipe finds this far more reliably than the Shadow meshes with their
    mechanical gaps and wrist ring (`"shadow"`: the original meshes in skin colour).
    """
    if side not in ("right", "left"):
        raise ValueError(f"side must be 'right' or 'left', got {side!r}")
    ref = _shadow_reference()
    mirror = side == "left"
    prefix = f"{name}/"
    mpos = _mirror_pos if mirror else (lambda p: np.asarray(p, dtype=float))
    mquat = _mirror_quat_wxyz if mirror else (lambda q: np.asarray(q, dtype=float))

    skin = spec.add_material(name=f"{prefix}skin")
    skin.rgba = list(skin_rgba)
    skin.specular = 0.15
    skin.shininess = 0.2
    sleeve = spec.add_material(name=f"{prefix}forearm")
    sleeve.rgba = list(forearm_rgba)
    sleeve.specular = 0.1
    if visual_style == "shadow":
        for mesh_name, (file, scale) in ref.meshes.items():
            if not any(v.mesh == mesh_name for v in ref.visuals):
                continue
            mesh = spec.add_mesh(name=f"{prefix}{mesh_name}", file=file)
            mesh.scale = list(_M @ scale if mirror else scale)
    else:
        for mesh_name in _HULL_MESHES:
            verts, faces = _hull(mesh_name, mirror)
            spec.add_mesh(
                name=f"{prefix}hull_{mesh_name}",
                uservert=verts.ravel().tolist(),
                userface=faces.ravel().tolist(),
            )

    hand = spec.worldbody.add_body(name=name, mocap=True, pos=list(parked_pos))
    bodies: dict[str | None, mujoco.MjsBody] = {None: hand}
    links: list[FingerLink] = []
    for ln in ref.links:
        parent = bodies[ln.parent]
        quat = mquat(ln.quat)
        body = parent.add_body(name=f"{prefix}{ln.name}", pos=list(mpos(ln.pos)), quat=list(quat))
        bodies[ln.name] = body
        axis = None if ln.axis is None else (_mirror_axis(ln.axis) if mirror else ln.axis.copy())
        links.append(FingerLink(body.name, ln.name, quat, ln.joint, axis))

    def add(ref_geom: _GeomRef, visual: bool) -> None:
        body = bodies[ref_geom.link]
        geom = body.add_geom(
            name=f"{prefix}{ref_geom.name}",
            type=mujoco.mjtGeom(ref_geom.type),
            pos=list(mpos(ref_geom.pos)),
            quat=list(mquat(ref_geom.quat)),
        )
        geom.size = list(ref_geom.size)
        if visual:
            geom.meshname = f"{prefix}{ref_geom.mesh}"
            geom.material = skin.name
            geom.group = GIVER_VISUAL_GROUP
            geom.contype = 0
            geom.conaffinity = 0
        else:
            geom.group = GIVER_COLLISION_GROUP
            geom.contype = 1
            geom.conaffinity = 1
            geom.condim = ref_geom.condim
            geom.rgba = [0.9, 0.5, 0.4, 0.3]
        geom.mass = 0.0  # kinematic body: inertia is irrelevant

    if visual_style == "shadow":
        for g in ref.visuals:
            add(g, visual=True)
    else:
        _add_skin_visuals(bodies, prefix, skin.name, ref, mpos, mquat)
    for g in ref.collisions:
        add(g, visual=False)

    # Forearm: a capsule from the wrist back along -z, tilted toward the back of the hand by the
    # wrist extension (people offer with the hand bent back, forearm about level).
    ext = np.deg2rad(wrist_extension_deg)
    axis = np.array([0.0, np.sin(ext), -np.cos(ext)])
    pivot = np.array([0.0, 0.0, -0.025])
    fromto = [*(pivot + 0.012 * axis), *(pivot + (0.012 + forearm_length) * axis)]
    for suffix, visual in (("V_forearm", True), ("C_forearm", False)):
        geom = hand.add_geom(name=f"{prefix}{suffix}", type=mujoco.mjtGeom.mjGEOM_CAPSULE)
        geom.fromto = fromto
        geom.size = [forearm_radius, 0.0, 0.0]
        geom.mass = 0.0
        if visual:
            geom.material = sleeve.name
            geom.group = GIVER_VISUAL_GROUP
            geom.contype = geom.conaffinity = 0
        else:
            geom.group = GIVER_COLLISION_GROUP
            geom.contype = geom.conaffinity = 1
            geom.rgba = [0.9, 0.5, 0.4, 0.3]

    sites = []
    for i, (kp_name, (link, offset)) in enumerate(zip(KEYPOINT_NAMES, KEYPOINT_LINKS, strict=True)):
        site = bodies[link].add_site(
            name=f"{prefix}kp{i:02d}_{kp_name.lower()}", pos=list(mpos(offset)), size=[0.004, 0, 0]
        )
        site.group = GIVER_SITE_GROUP
        site.rgba = [0.1, 0.9, 0.1, 1.0]
        sites.append(site.name)

    weld = None
    if object_body is not None:
        eq = spec.add_equality(
            name=f"{prefix}hold",
            type=mujoco.mjtEq.mjEQ_WELD,
            objtype=mujoco.mjtObj.mjOBJ_BODY,
            name1=name,
            name2=object_body,
        )
        data = np.zeros(len(eq.data))
        data[3:10] = [0.0, -0.06, 0.08, 1.0, 0.0, 0.0, 0.0]  # placeholder grasp, set by Giver.reset
        data[10] = 1.0  # torquescale
        eq.data = data.tolist()
        eq.solref = [0.001, 1.0]  # MuJoCo raises the time constant to 2 * timestep (refsafe)
        weld = eq.name
        for body in bodies.values():
            spec.add_exclude(name=f"{body.name}|{object_body}", bodyname1=body.name, bodyname2=object_body)

    return GiverHandles(
        name=name,
        side=side,
        mocap_body=name,
        prefix=prefix,
        bodies=tuple(b.name for b in bodies.values()),
        links=tuple(links),
        keypoint_sites=tuple(sites),
        weld=weld,
        object_body=object_body,
    )


# --- object shape and grasp planning -----------------------------------------------------------


@dataclass(frozen=True)
class Primitive:
    """An analytic solid in the object frame (MuJoCo geom type and size semantics)."""

    kind: Literal["box", "sphere", "cylinder", "capsule", "ellipsoid"]
    size: tuple[float, float, float]
    pos: tuple[float, float, float] = (0.0, 0.0, 0.0)
    quat: tuple[float, float, float, float] = (1.0, 0.0, 0.0, 0.0)  # wxyz

    @cached_property
    def _frame(self) -> tuple[np.ndarray, np.ndarray]:
        R = Rotation.from_quat(np.roll(np.asarray(self.quat, dtype=float), -1)).as_matrix()
        return R, np.asarray(self.pos, dtype=float)

    def sdf(self, points: np.ndarray) -> np.ndarray:
        """Signed distance (m, negative inside) of object-frame points [N, 3]."""
        R, origin = self._frame
        p = (np.asarray(points) - origin) @ R
        s = np.asarray(self.size, dtype=float)
        if self.kind == "box":
            q = np.abs(p) - s
            return np.linalg.norm(np.maximum(q, 0.0), axis=1) + np.minimum(q.max(axis=1), 0.0)
        if self.kind == "sphere":
            return np.linalg.norm(p, axis=1) - s[0]
        if self.kind == "cylinder":
            d = np.stack([np.linalg.norm(p[:, :2], axis=1) - s[0], np.abs(p[:, 2]) - s[1]], axis=1)
            return np.linalg.norm(np.maximum(d, 0.0), axis=1) + np.minimum(d.max(axis=1), 0.0)
        if self.kind == "capsule":
            c = np.clip(p[:, 2], -s[1], s[1])
            return np.linalg.norm(p - np.stack([0 * c, 0 * c, c], axis=1), axis=1) - s[0]
        k0 = np.linalg.norm(p / s, axis=1)  # ellipsoid (first-order approximation)
        k1 = np.linalg.norm(p / s**2, axis=1)
        return k0 * (k0 - 1.0) / np.maximum(k1, 1e-12)


@dataclass(frozen=True)
class ObjectShape:
    """What the grasp planner knows of the object: its bounding box and solid primitives (object frame)."""

    extents: tuple[float, float, float]
    center: tuple[float, float, float] = (0.0, 0.0, 0.0)
    primitives: tuple[Primitive, ...] = ()

    @classmethod
    def from_extents(cls, extents: Sequence[float], center: Sequence[float] = (0.0, 0.0, 0.0)) -> ObjectShape:
        """A box of the given full extents centred at `center` (object frame).

        For a library object pass `center=sim_object.bounds.mean(axis=0)`: its frame is at the
        centre of mass, not the box centre. `object_shape_from_model` (Giver.reset's default) is
        more exact still: it uses the object's collision primitives.
        """
        e = tuple(float(v) for v in extents)
        c = tuple(float(v) for v in center)
        return cls(e, c, (Primitive("box", tuple(v / 2 for v in e), c),))

    def sdf(self, points: np.ndarray) -> np.ndarray:
        prims = self.primitives or ObjectShape.from_extents(self.extents, self.center).primitives
        return np.min([p.sdf(points) for p in prims], axis=0)

    def mirrored(self) -> ObjectShape:
        """The shape reflected through the object frame's y-z plane (for left-hand planning)."""
        prims = tuple(
            dataclasses.replace(
                p, pos=tuple(_mirror_pos(p.pos)), quat=tuple(_mirror_quat_wxyz(np.asarray(p.quat)))
            )
            for p in self.primitives
        )
        return ObjectShape(self.extents, tuple(_mirror_pos(self.center)), prims)


_PRIMS = {
    mujoco.mjtGeom.mjGEOM_BOX: "box",
    mujoco.mjtGeom.mjGEOM_SPHERE: "sphere",
    mujoco.mjtGeom.mjGEOM_CYLINDER: "cylinder",
    mujoco.mjtGeom.mjGEOM_CAPSULE: "capsule",
    mujoco.mjtGeom.mjGEOM_ELLIPSOID: "ellipsoid",
}


def object_shape_from_model(model: mujoco.MjModel, body: int | str) -> ObjectShape:
    """Bounding box and primitives of a body's geoms (collision geoms if any), in the body frame.

    Mesh and other non-primitive geoms enter as their (oriented) bounding boxes.
    """
    bid = model.body(body).id
    geoms = [g for g in range(model.ngeom) if model.geom_bodyid[g] == bid]
    colliding = [g for g in geoms if model.geom_contype[g] or model.geom_conaffinity[g]]
    geoms = colliding or geoms
    if not geoms:
        raise ValueError(f"body '{model.body(bid).name}' has no geoms")
    corners, prims = [], []
    signs = np.array([[sx, sy, sz] for sx in (-1, 1) for sy in (-1, 1) for sz in (-1, 1)], dtype=float)
    for g in geoms:
        R = np.zeros(9)
        mujoco.mju_quat2Mat(R, model.geom_quat[g])
        R = R.reshape(3, 3)
        center, half = model.geom_aabb[g][:3], model.geom_aabb[g][3:]
        corners.append((center + signs * half) @ R.T + model.geom_pos[g])
        kind = _PRIMS.get(mujoco.mjtGeom(model.geom_type[g]))
        if kind is not None:
            prims.append(
                Primitive(
                    kind, tuple(model.geom_size[g]), tuple(model.geom_pos[g]), tuple(model.geom_quat[g])
                )
            )
        else:
            box_pos = model.geom_pos[g] + R @ center
            prims.append(Primitive("box", tuple(half), tuple(box_pos), tuple(model.geom_quat[g])))
    pts = np.concatenate(corners)
    lo, hi = pts.min(axis=0), pts.max(axis=0)
    return ObjectShape(tuple(hi - lo), tuple((hi + lo) / 2), tuple(prims))


class _HandFK:
    """Forward kinematics of the (right) Shadow finger tree in the hand frame, for planning."""

    def __init__(self) -> None:
        ref = _shadow_reference()
        self.links = ref.links
        self.by_name = {ln.name: ln for ln in ref.links}
        self.rest = {ln.name: Rotation.from_quat(np.roll(ln.quat, -1)).as_matrix() for ln in ref.links}
        self.caps: dict[str, tuple[float, float, float]] = {}  # link -> (z0, z1, radius)
        for g in ref.collisions:
            if g.link is not None and g.type == mujoco.mjtGeom.mjGEOM_CAPSULE:
                self.caps[g.link] = (g.pos[2] - g.size[1], g.pos[2] + g.size[1], g.size[0])

    def pose(self, link: str, angles: Mapping[str, float]) -> tuple[np.ndarray, np.ndarray]:
        """(R, p) of one link in the hand frame."""
        chain = []
        name: str | None = link
        while name is not None:
            chain.append(self.by_name[name])
            name = self.by_name[name].parent
        R, p = np.eye(3), np.zeros(3)
        for ln in reversed(chain):
            p = p + R @ ln.pos
            R = R @ self.rest[ln.name]
            if ln.joint is not None:
                R = R @ _rodrigues(ln.axis, np.array([angles.get(ln.joint, 0.0)]))[0]
        return R, p

    def poses(self, angles: Mapping[str, float]) -> dict[str | None, tuple[np.ndarray, np.ndarray]]:
        return {None: (np.eye(3), np.zeros(3))} | {ln.name: self.pose(ln.name, angles) for ln in self.links}

    def link_clearance(
        self, angles: Mapping[str, float], links: Sequence[str], sdf, T_oh: np.ndarray
    ) -> float:
        """Smallest distance (m) between the given links' capsules and the object surface."""
        pts, radii = [], []
        for name in links:
            if name not in self.caps:
                continue
            z0, z1, r = self.caps[name]
            R, p = self.pose(name, angles)
            zs = np.linspace(z0, z1, 6)
            pts.append(p + np.outer(zs, R[:, 2]))
            radii.append(np.full(len(zs), r))
        if not pts:
            return np.inf
        P = np.concatenate(pts)
        P_obj = P @ T_oh[:3, :3].T + T_oh[:3, 3]
        return float(np.min(sdf(P_obj) - np.concatenate(radii)))


@lru_cache(maxsize=1)
def _fk() -> _HandFK:
    return _HandFK()


@dataclass(frozen=True)
class Grasp:
    """A giver grasp: Shadow joint angles (standard names) and the object pose in the hand frame."""

    angles: Mapping[str, float]
    T_hand_object: np.ndarray
    contacts: tuple[str, ...] = ()  # fingers that reached the object surface
    style: str = "pinch"


def _finger_links(finger: str) -> dict[str, tuple[str, ...]]:
    """Joint -> links it moves (itself and everything distal), for one finger."""
    return {
        f"{finger.upper()}J3": (f"{finger}proximal", f"{finger}middle", f"{finger}distal"),
        f"{finger.upper()}J2": (f"{finger}middle", f"{finger}distal"),
        f"{finger.upper()}J1": (f"{finger}distal",),
    }


def _rodrigues(axis: np.ndarray, angles: np.ndarray) -> np.ndarray:
    """[N, 3, 3] rotations about a unit axis by N angles."""
    K = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    s, c = np.sin(angles)[:, None, None], np.cos(angles)[:, None, None]
    return np.eye(3) + s * K + (1.0 - c) * (K @ K)


def _thumb_search(sdf, T_oh: np.ndarray, target: np.ndarray) -> tuple[dict[str, float], bool]:
    """Thumb opposition: the grid posture touching the object (distal link within 0-4 mm, no link
    inside it) whose tip is closest to `target`, with a small pull toward a natural posture.

    Falls back to the non-penetrating posture that comes closest to the object when none touches.
    """
    fk = _fk()
    chain = [ln for ln in fk.links if ln.name.startswith("th")]  # thbase .. thdistal, parents first
    grids = np.meshgrid(*_THUMB_GRID.values(), indexing="ij")
    q = {j: g.ravel() for j, g in zip(_THUMB_GRID, grids, strict=True)}
    n = len(next(iter(q.values())))
    R = np.broadcast_to(np.eye(3), (n, 3, 3)).copy()
    p = np.zeros((n, 3))
    frames: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for ln in chain:
        p = p + R @ ln.pos
        R = R @ fk.rest[ln.name]
        angles = q.get(ln.joint, np.full(n, _GRASP_FIXED.get(ln.joint or "", 0.0)))
        if ln.axis is not None:
            R = R @ _rodrigues(ln.axis, angles)
        frames[ln.name] = (R, p)
    clearances = {}
    for name in ("thproximal", "thmiddle", "thdistal"):
        z0, z1, r = fk.caps[name]
        Rl, pl = frames[name]
        zs = np.linspace(z0, z1, 6)
        pts = pl[:, None, :] + zs[None, :, None] * Rl[:, None, :, 2]
        obj = pts.reshape(-1, 3) @ T_oh[:3, :3].T + T_oh[:3, 3]
        clearances[name] = (sdf(obj).reshape(n, len(zs)) - r).min(axis=1)
    Rd, pd = frames["thdistal"]
    tip = pd + 0.0275 * Rd[:, :, 2]
    free = np.all([clearances[k] >= 0.0 for k in clearances], axis=0)
    touching = free & (clearances["thdistal"] <= 0.004)
    natural = sum((q[j] - v) ** 2 for j, v in _THUMB_NATURAL.items())
    if touching.any():
        score = np.linalg.norm(tip - target, axis=1) + 0.01 * natural
        score[~touching] = np.inf
        touched = True
    else:
        score = clearances["thdistal"] + 0.001 * natural
        score[~free] = np.inf
        touched = False
    best = int(np.argmin(score))
    if not np.isfinite(score[best]):
        return {**_THUMB_NATURAL, "THJ5": 0.2, "THJ4": 0.2}, False
    return {j: float(q[j][best]) for j in q}, touched


GraspStyle = Literal["pinch", "power"]
PINCH_MAX_WIDTH = 0.075  # m: objects thinner than this are pinched at the fingertips


def grasp_style(shape: ObjectShape) -> GraspStyle:
    """Pinch objects whose smallest extent fits between thumb and fingertips; hold larger ones
    against the palm."""
    return "pinch" if min(shape.extents) <= PINCH_MAX_WIDTH else "power"


def _axes_rotation(extents: np.ndarray, rows: tuple[str, str, str]) -> np.ndarray:
    """R (hand <- object) mapping the object's long/mid/short axes to hand x/y/z as `rows` says."""
    order = np.argsort(-np.asarray(extents), kind="stable")
    axis = {"long": order[0], "mid": order[1], "short": order[2]}
    R = np.zeros((3, 3))
    for row, which in enumerate(rows):
        R[row, axis[which]] = 1.0
    if np.linalg.det(R) < 0:
        R[0] *= -1.0
    return R


def object_placement(shape: ObjectShape, style: GraspStyle | None = None) -> np.ndarray:
    """T_hand_object (right hand) of the grasp rule (see the module docstring).

    pinch: shortest axis along the fingers (hand z, squeezed between thumb and fingertips), longest
    axis along the palm normal so the object sticks out of the hand, its near end 5 cm off the
    palm. power: longest axis across the palm (hand x), shortest along the palm normal, resting
    4 mm off the palm with its top just above the knuckles, shifted toward the thumb.
    """
    style = style or grasp_style(shape)
    e = np.asarray(shape.extents, dtype=float)
    long_, mid, short = np.sort(e)[::-1]
    if style == "pinch":
        R = _axes_rotation(e, ("mid", "long", "short"))
        center = np.array([0.02, -(0.05 + long_ / 2), 0.12])
    else:
        R = _axes_rotation(e, ("long", "short", "mid"))
        center = np.array(
            [max(0.0, long_ / 2 - 0.04), -(0.024 + 0.004 + short / 2), max(0.107 - mid / 2, mid / 2 - 0.03)]
        )
    T_ho = np.eye(4)
    T_ho[:3, :3] = R
    T_ho[:3, 3] = center - R @ np.asarray(shape.center, dtype=float)
    return T_ho


def _close_finger(
    angles: dict[str, float],
    joints: tuple[tuple[str, float], ...],
    moves: Mapping[str, tuple[str, ...]],
    clearance,
    ranges: Mapping[str, tuple[float, float]],
    step: float,
    cap: float,
) -> bool:
    """GraspIt-style auto-grasp of one finger: all joints flex together at their rates; a joint
    stops at its limit (or `cap`) or when a link it moves would come within the contact margin."""
    active = {j: True for j, _ in joints}
    touched = False
    for _ in range(400):
        moved = False
        for joint, rate in joints:
            if not active[joint]:
                continue
            lo, hi = ranges[joint]
            new = float(np.clip(angles[joint] + step * rate, lo, min(hi, cap)))
            if abs(new - angles[joint]) < 1e-9:
                active[joint] = False
                continue
            if clearance({**angles, joint: new}, moves[joint]) < _CONTACT_MARGIN:
                active[joint] = False
                touched = True
                continue
            angles[joint] = new
            moved = True
        if not moved:
            break
    return touched


def plan_grasp(
    shape: ObjectShape, side: Side = "right", style: GraspStyle | None = None, step: float = 0.03
) -> Grasp:
    """The giver's grasp for an object: placement rule + per-finger close-until-contact + thumb search."""
    style = style or grasp_style(shape)
    planning_shape = shape.mirrored() if side == "left" else shape
    T_ho = object_placement(planning_shape, style)
    T_oh = np.linalg.inv(T_ho)
    fk = _fk()
    ranges = {ln.joint: ln.range for ln in fk.links if ln.joint}
    angles: dict[str, float] = {j: 0.0 for j in ranges}
    angles.update(_GRASP_FIXED)

    def clearance(trial: Mapping[str, float], links: Sequence[str]) -> float:
        return fk.link_clearance(trial, links, planning_shape.sdf, T_oh)

    touched = []
    for finger, joints in _CLOSE.items():
        # In a pinch the ring and little fingers only curl loosely; they do not hold the object.
        cap = 0.9 if style == "pinch" and finger in ("rf", "lf") else np.inf
        if _close_finger(angles, joints, _finger_links(finger), clearance, ranges, step, cap):
            touched.append(finger)
    # Thumb: opposes the fingers on the face below them (pinch) or in front of the palm (power).
    c = T_ho[:3, :3] @ np.asarray(planning_shape.center) + T_ho[:3, 3]
    half = np.abs(T_ho[:3, :3]) @ (np.asarray(planning_shape.extents) / 2)
    if style == "pinch":
        target = np.array([c[0], c[1] + half[1] - 0.02, c[2] - half[2]])
    else:
        target = np.array([c[0], c[1] - half[1], c[2] - 0.01])
    thumb, touched_thumb = _thumb_search(planning_shape.sdf, T_oh, target)
    angles.update(thumb)
    if touched_thumb:
        touched.append("th")
    if side == "left":
        T_ho = mirror_transform(T_ho)
    return Grasp(angles=angles, T_hand_object=T_ho, contacts=tuple(touched), style=style)


# --- runtime -----------------------------------------------------------------------------------


class GiverState(StrEnum):
    APPROACHING = "approaching"
    OFFERING = "offering"
    RELEASING = "releasing"
    WITHDRAWING = "withdrawing"
    WITHDRAWN = "withdrawn"


@dataclass(frozen=True)
class GiverContact:
    """A contact between a giver geom and another geom (normal force in N)."""

    giver_geom: str
    other_geom: str
    position: np.ndarray
    normal: np.ndarray
    normal_force: float


@dataclass
class _ReleaseParams:
    rule: str = "supported"
    support_fraction: float = 0.3
    confirm_s: float = 0.3
    timeout_s: float = 10.0
    open_s: float = 0.4
    withdraw_s: float = 1.0
    withdraw_distance: float = 0.3


def _axis_quat(axis: np.ndarray, angle: float) -> np.ndarray:
    h = 0.5 * angle
    return np.concatenate([[np.cos(h)], np.sin(h) * np.asarray(axis)])


def _quat_mul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    out = np.zeros(4)
    mujoco.mju_mulQuat(out, a, b)
    return out


@dataclass
class Giver:
    """The giver's runtime: moves the mocap wrist along the scenario trajectory, holds and releases.

    Usage per episode: `giver.reset(data, scenario)` once, then `giver.step(model, data)` before
    every `mj_step` (episode time = `data.time` minus the time at reset, unless `t` is given).
    """

    model: mujoco.MjModel
    handles: GiverHandles
    state: GiverState = field(default=GiverState.APPROACHING, init=False)
    released_at: float | None = field(default=None, init=False)
    gave_up: bool = field(default=False, init=False)
    grasp: Grasp | None = field(default=None, init=False)
    trajectory: GiverTrajectory | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        m, h = self.model, self.handles
        body = m.body(h.mocap_body)
        self.mocap_id = int(m.body_mocapid[body.id])
        if self.mocap_id < 0:
            raise ValueError(f"giver body '{h.mocap_body}' is not a mocap body")
        self.body_ids = np.array([m.body(b).id for b in h.bodies])
        self.link_ids = {ln.link: m.body(ln.body).id for ln in h.links}
        self.site_ids = np.array([m.site(s).id for s in h.keypoint_sites])
        body_set = set(self.body_ids.tolist())
        self.geom_ids = np.array([g for g in range(m.ngeom) if m.geom_bodyid[g] in body_set])
        self._is_giver_geom = np.zeros(m.ngeom, dtype=bool)
        self._is_giver_geom[self.geom_ids] = True
        self._geom_names = [m.geom(g).name for g in range(m.ngeom)]
        self.eq_id = m.equality(h.weld).id if h.weld else -1
        self.object_id = m.body(h.object_body).id if h.object_body else -1
        self._obj_qpos = self._obj_dof = -1
        if self.object_id >= 0 and m.body_jntnum[self.object_id] >= 1:
            j = m.body_jntadr[self.object_id]
            if m.jnt_type[j] == mujoco.mjtJoint.mjJNT_FREE:
                self._obj_qpos, self._obj_dof = int(m.jnt_qposadr[j]), int(m.jnt_dofadr[j])
        self._release = _ReleaseParams()
        gravity = np.asarray(m.opt.gravity, dtype=float)
        g = float(np.linalg.norm(gravity))
        self._up = -gravity / g if g > 0 else np.array([0.0, 0.0, 1.0])
        self._weight = self.object_mass() * g
        self._t0 = 0.0
        self._supported_since: float | None = None
        self._hand_angles: dict[str, float] = dict(OPEN_HAND)
        self._release_pose: Pose | None = None
        self._withdraw_pose: Pose | None = None
        self._release_t: float | None = None
        self._ff_v = np.zeros(3)
        self._ff_w = np.zeros(3)
        self._pose_cache: dict[tuple[GiverState, float], Pose] = {}
        self.last_load: float | None = None
        self.set_hand_angles(OPEN_HAND)

    # -- hand posture --

    def set_hand_angles(self, angles: Mapping[str, float]) -> None:
        """Pose the rigid fingers: body_quat = rest * Rot(axis, angle) for every finger link."""
        full = {**OPEN_HAND, **angles}
        for ln in self.handles.links:
            q = ln.rest_quat
            if ln.joint is not None:
                q = _quat_mul(q, _axis_quat(ln.axis, full.get(ln.joint, 0.0)))
            self.model.body_quat[self.link_ids[ln.link]] = q
        self._hand_angles = full

    @property
    def hand_angles(self) -> dict[str, float]:
        return dict(self._hand_angles)

    # -- episode --

    @property
    def holding(self) -> bool:
        """True while the weld holds the object (until the release; also after giving up)."""
        return self.eq_id >= 0 and self.grasp is not None and self.released_at is None

    def object_mass(self) -> float:
        return float(self.model.body_subtreemass[self.object_id]) if self.object_id >= 0 else 0.0

    def reset(
        self,
        data: mujoco.MjData,
        scenario: Scenario,
        *,
        object_shape: ObjectShape | None = None,
        trajectory: GiverTrajectory | None = None,
    ) -> None:
        """Start an episode: trajectory from the scenario, grasp from the object, object in the hand.

        `object_shape` defaults to the object's geoms in the model (`object_shape_from_model`);
        pass `ObjectShape.from_extents(sim_object.extents)` to plan from a library object instead.
        """
        if scenario.giver_side != self.handles.side:
            raise ValueError(
                f"scenario '{scenario.name}' wants a {scenario.giver_side} giver hand but the model was "
                f"built with add_giver(side='{self.handles.side}')"
            )
        self.trajectory = trajectory or scenario.trajectory()
        r = scenario.release
        self._release = _ReleaseParams(
            r.rule, r.support_fraction, r.confirm_s, r.timeout_s, r.open_s, r.withdraw_s, r.withdraw_distance
        )
        self.state = GiverState.APPROACHING
        self.released_at = None
        self.gave_up = False
        self._supported_since = None
        self._release_pose = self._withdraw_pose = None
        self._release_t = None
        self._ff_v = np.zeros(3)
        self._ff_w = np.zeros(3)
        self._pose_cache = {}
        self.last_load = None
        self._t0 = float(data.time)
        if self.object_id >= 0:
            shape = object_shape or object_shape_from_model(self.model, self.object_id)
            self.grasp = plan_grasp(shape, self.handles.side)
            self.set_hand_angles(self.grasp.angles)
        else:
            self.grasp = None
            self.set_hand_angles(OPEN_HAND)
        pose = self.trajectory.pose(0.0)
        self._set_mocap(data, pose)
        if self.eq_id >= 0 and self.grasp is not None:
            T = self.grasp.T_hand_object
            q = np.zeros(4)
            mujoco.mju_mat2Quat(q, T[:3, :3].flatten())
            self.model.eq_data[self.eq_id, 3:6] = T[:3, 3]
            self.model.eq_data[self.eq_id, 6:10] = q
            data.eq_active[self.eq_id] = 1
            if self._obj_qpos >= 0:
                T_wo = pose.matrix() @ T
                mujoco.mju_mat2Quat(q, T_wo[:3, :3].flatten())
                data.qpos[self._obj_qpos : self._obj_qpos + 3] = T_wo[:3, 3]
                data.qpos[self._obj_qpos + 3 : self._obj_qpos + 7] = q
                data.qvel[self._obj_dof : self._obj_dof + 6] = 0.0
        mujoco.mj_forward(self.model, data)

    def _set_mocap(self, data: mujoco.MjData, pose: Pose) -> None:
        q = pose.quat
        data.mocap_pos[self.mocap_id] = pose.position
        data.mocap_quat[self.mocap_id] = (q[3], q[0], q[1], q[2])

    def episode_time(self, data: mujoco.MjData, t: float | None = None) -> float:
        return (float(data.time) if t is None else float(t)) - self._t0

    def hold_force(self, data: mujoco.MjData) -> np.ndarray | None:
        """The force of the giver's hold on the object, world frame, in units of its weight m*g
        [3] (None: not holding). Its upward part is `support_load`; the rest is how hard the
        giver and whoever else holds the object pull at it sideways.

        The weld's three translational rows in `data.efc_force` are the world-frame constraint
        force (solved in the last `mj_step`/`mj_forward`); with body1 = hand and body2 = object its
        negative acts on the object.
        """
        if self.eq_id < 0 or not data.eq_active[self.eq_id] or self._weight <= 0:
            return None
        # Equality rows come first in MuJoCo's constraint list: search only that prefix.
        n = min(int(data.nefc), 6 * self.model.neq)
        rows = np.flatnonzero(
            (data.efc_type[:n] == mujoco.mjtConstraint.mjCNSTR_EQUALITY) & (data.efc_id[:n] == self.eq_id)
        )
        if len(rows) < 3:
            return None
        return -data.efc_force[rows[:3]] / self._weight

    def hold_force_row(self, data: mujoco.MjData) -> list[float] | None:
        """`hold_force` as the trace rows and `/sim/state` keep it (rounded, JSON-ready)."""
        force = self.hold_force(data)
        return None if force is None else [round(float(f), 2) for f in force]

    def support_load(self, data: mujoco.MjData) -> float | None:
        """Fraction of the object's weight m*g that the weld carries upward (None: not measured)."""
        force = self.hold_force(data)
        return None if force is None else float(force @ self._up)

    def step(self, model: mujoco.MjModel, data: mujoco.MjData, t: float | None = None) -> GiverState:
        """Advance the giver to episode time t (call before each `mj_step`).

        Decides the release from the weld force of the last physics step, then sets the mocap
        pose, the finger posture (opening after a release) and, while holding, feeds the hand's
        velocity change forward to the object: a mocap body has no velocity in MuJoCo, so without
        this the weld's damping would drag the object ~1 cm behind a hand moving at 1 m/s.
        """
        if self.trajectory is None:
            raise RuntimeError("Giver.step called before reset")
        tau = self.episode_time(data, t)
        rel = self._release
        if self.state in (GiverState.APPROACHING, GiverState.OFFERING):
            if tau >= self.trajectory.reach_end_s:
                self.state = GiverState.OFFERING
            pose = self._pose_at(tau)
            load = self.support_load(data)
            self.last_load = load
            if rel.rule == "timeout":
                if tau >= rel.timeout_s:
                    self._start_release(data, tau, pose)
            else:
                if load is not None and load < rel.support_fraction:
                    if self._supported_since is None:
                        self._supported_since = tau
                    elif tau - self._supported_since >= rel.confirm_s:
                        self._start_release(data, tau, pose)
                else:
                    self._supported_since = None
                if self.state is not GiverState.RELEASING and tau >= rel.timeout_s:
                    self.gave_up = True  # nobody took it: withdraw with the object
                    self._start_withdraw(tau, pose)
        if self.state is GiverState.RELEASING:
            s = float(min_jerk((tau - self._release_t) / max(rel.open_s, 1e-6)))
            grasp = self.grasp.angles if self.grasp else OPEN_HAND
            self.set_hand_angles({j: (1 - s) * grasp.get(j, 0.0) + s * v for j, v in OPEN_HAND.items()})
            if tau - self._release_t >= rel.open_s:
                self._start_withdraw(tau, self._release_pose)
        if self.state is GiverState.WITHDRAWING and tau - self._release_t >= rel.withdraw_s:
            self.state = GiverState.WITHDRAWN
        pose = self._pose_at(tau)
        self._set_mocap(data, pose)
        if self.holding:
            self._feed_forward(data, tau, pose)
        return self.state

    def _pose_at(self, tau: float) -> Pose:
        """Commanded wrist pose of the current phase at episode time tau (last two cached)."""
        key = (self.state, tau)
        cached = self._pose_cache.get(key)
        if cached is not None:
            return cached
        if self.state in (GiverState.APPROACHING, GiverState.OFFERING):
            pose = self.trajectory.pose(tau)
        elif self.state is GiverState.RELEASING:
            pose = self._release_pose
        else:
            pose = min_jerk_pose(
                self._release_pose, self._withdraw_pose, tau - self._release_t, self._release.withdraw_s
            )
        if len(self._pose_cache) > 2:
            self._pose_cache.clear()
        self._pose_cache[key] = pose
        return pose

    def _feed_forward(self, data: mujoco.MjData, tau: float, pose: Pose) -> None:
        """Add the change of the hand-imposed object velocity (rigid-body transport) to its qvel.

        The hand's velocity over the coming step is the forward difference to its pose one
        timestep later (where `step` will put the mocap next).
        """
        if self._obj_dof < 0:
            return
        h = float(self.model.opt.timestep)
        ahead = self._pose_at(tau + h)
        v = (ahead.position - pose.position) / h
        w = rotvec_between(pose.quat, ahead.quat) / h
        r = data.xpos[self.object_id] - pose.position
        v_obj = v + np.array(
            [w[1] * r[2] - w[2] * r[1], w[2] * r[0] - w[0] * r[2], w[0] * r[1] - w[1] * r[0]]
        )
        dof = self._obj_dof
        data.qvel[dof : dof + 3] += v_obj - self._ff_v
        R_obj = data.xmat[self.object_id].reshape(3, 3)
        data.qvel[dof + 3 : dof + 6] += R_obj.T @ (w - self._ff_w)  # free-joint angular velocity: body frame
        self._ff_v, self._ff_w = v_obj, w

    def _start_release(self, data: mujoco.MjData, tau: float, pose: Pose) -> None:
        if self.eq_id >= 0:
            data.eq_active[self.eq_id] = 0
        self.released_at = tau
        self._release_t = tau
        self._release_pose = pose
        self.state = GiverState.RELEASING

    def _start_withdraw(self, tau: float, pose: Pose) -> None:
        self._release_t = tau
        self._release_pose = pose
        self._withdraw_pose = withdraw_target(pose, self.trajectory.start, self._release.withdraw_distance)
        self.state = GiverState.WITHDRAWING

    # -- observations --

    def wrist_pose(self, data: mujoco.MjData) -> np.ndarray:
        """4x4 world pose of the giver's hand frame (mocap; origin = WRIST keypoint)."""
        T = np.eye(4)
        T[:3, 3] = data.mocap_pos[self.mocap_id]
        R = np.zeros(9)
        mujoco.mju_quat2Mat(R, data.mocap_quat[self.mocap_id])
        T[:3, :3] = R.reshape(3, 3)
        return T

    def keypoints(self, model: mujoco.MjModel, data: mujoco.MjData) -> np.ndarray:
        """[21, 3] world positions in MediaPipe order (valid after mj_forward/mj_step)."""
        return data.site_xpos[self.site_ids].copy()

    def contacts_with(
        self,
        model: mujoco.MjModel,
        data: mujoco.MjData,
        geom_prefixes: Sequence[str] | str | None = None,
    ) -> list[GiverContact]:
        """Contacts between giver geoms and geoms whose names start with any of `geom_prefixes`.

        None or an empty list matches every non-giver geom.
        """
        if isinstance(geom_prefixes, str):
            geom_prefixes = (geom_prefixes,)
        prefixes = tuple(geom_prefixes or ())
        out = []
        force = np.zeros(6)
        for i in range(data.ncon):
            c = data.contact[i]
            g1, g2 = int(c.geom1), int(c.geom2)
            a, b = self._is_giver_geom[g1], self._is_giver_geom[g2]
            if a == b:
                continue
            giver, other = (g1, g2) if a else (g2, g1)
            name = self._geom_names[other]
            if prefixes and not name.startswith(prefixes):
                continue
            mujoco.mj_contactForce(model, data, i, force)
            out.append(
                GiverContact(
                    giver_geom=self._geom_names[giver],
                    other_geom=name,
                    position=c.pos.copy(),
                    normal=c.frame[:3].copy(),
                    normal_force=float(force[0]),
                )
            )
        return out

    def info(self, data: mujoco.MjData) -> dict[str, object]:
        """Ground-truth summary for logs: state, release time, weld load."""
        return {
            "state": self.state.value,
            "released_at": self.released_at,
            "gave_up": self.gave_up,
            "support_load": self.support_load(data),
        }


def hand_keypoints_from_angles(angles: Mapping[str, float], side: Side = "right") -> np.ndarray:
    """[21, 3] keypoints in the hand frame for a posture (no MuJoCo needed; for tests and tools)."""
    poses = _fk().poses({**OPEN_HAND, **angles})
    pts = []
    for link, offset in KEYPOINT_LINKS:
        R, p = poses[link]
        pts.append(p + R @ np.asarray(offset))
    P = np.array(pts)
    return P @ _M.T if side == "left" else P
