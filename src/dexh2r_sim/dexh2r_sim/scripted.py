"""Scripted, privileged handover controllers for the sim cell (tests, demos, expert upper bound).

They read ground truth (the object's pose and collision shape, the giver's wrist pose, hand
keypoints and release) and command the robot only through the JointTrajectory interface a real
controller uses (`cell.command_arm` / `cell.command_hand`, the same JTC semantics as
`/arm_controller/joint_trajectory`). Modes:

- `grasp`: take the object with a fingertip pinch and carry it away (below);
- `ram`: approach like `grasp`, but with the grasp shifted onto (and past) the giver's wrist,
  beside the object (exercises `hit-human`);
- `drop`: grasp like `grasp`, then open the hand after the release (exercises `drop`).

Grasp design (Shadow hand on the UR5). The giver offers palm up, the lower part of the object in
its fingers, so the free part is the top. The robot comes from above (axis `u`, vertical by
default) and pinches the object `depth` below its top between the tips of its thumb and of its
index and middle fingers, across a horizontal axis `a`. `plan_pinch` optimises the 6 arm joints
and the 13 pinch joints (hand wrist, thumb, index, middle) together (least squares on the
robot's forward kinematics against the object's signed distance): the three tip spheres touch
the surface, thumb -> fingers along `a`, their surface normals facing along it where possible,
index and middle side by side, contacts in the middle of the object's cross-section; no other
hand geom within `margin` of the object or within `giver_clearance` of the giver's finger bones
(from its keypoints); the palm faces down; no two arm links (or hand and arm) closer than
`self_clearance`; the arm moves as little as it can (its wrist joints are slow). Candidate axes
`a` (yaws about `u`) and palm rolls about `a` seed it; the one whose arm motion is shortest and
feasible wins. The grasp lives in the object frame, so a moving giver (whose fingers are fixed on
the object) does not invalidate it. Two more hand postures at the same palm pose: `open` (tips
`pre_open / 2` off the surface, clear of it all along the descent) and `squeeze` (tips
`squeeze / 2` inside it: the position servos' error is the grip force).

Sequence: plan when the giver's reach is about to end; pre-shape and move (one joint-space move,
on the branch the planner checked) to the pre-grasp `approach_clearance` above the grasp; once
there, descend (the offset along `u` runs down to 0), close, let the grip settle, then raise the
palm slowly: the giver's weld is stiff, so the lift becomes an upward pull through the compliant
fingers until the giver feels the weight taken and lets go; then carry the object up and back
toward the robot at once (the giver's fingers open right after the release). From the pre-grasp
on, the palm target is re-planned every `replan_s` from the giver's hand pose extrapolated with
its measured velocity (the object is welded to it) and tracked with the arm and the hand's own
wrist joints together (`WristIk`): this arm's wrist joints saturate near 0.35 rad/s, the hand's
wrist is fast and absorbs quick turns while the arm catches up.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import mujoco
import numpy as np
from scipy.optimize import least_squares
from scipy.spatial import ConvexHull
from scipy.spatial.transform import Rotation, Slerp

from dexh2r_control.ik import ArmIk, IkConfig
from dexh2r_core.trajectory import JointTrajectory, TrajectoryPoint
from dexh2r_sim.giver import HAND_BONES

Mode = Literal["grasp", "ram", "drop", "idle"]

# Joints the pinch moves (Shadow standard names): the hand's wrist (two more degrees of freedom
# for the arm, whose own wrist folds into itself), thumb, index and middle; every other hand
# joint stays at 0 (ring and little fingers straight in the palm plane, away from the object).
PINCH_JOINTS: tuple[str, ...] = (
    "rh_WRJ2", "rh_WRJ1",
    "rh_THJ5", "rh_THJ4", "rh_THJ3", "rh_THJ2", "rh_THJ1",
    "rh_FFJ4", "rh_FFJ3", "rh_FFJ2", "rh_MFJ4", "rh_MFJ3", "rh_MFJ2",
)  # fmt: skip
N_WRIST = 2  # the first pinch joints are the hand's wrist
# Solver seed: wrist straight, thumb opposed under the palm, index and middle curled toward it.
PINCH_SEED = np.array([0.0, 0.0, 0.6, 1.1, -0.15, 0.5, -0.05, -0.34, 0.9, 0.25, -0.34, 1.1, 0.25])
# The digits' distal collision capsules, whose far end spheres are the pinch contacts.
TIP_GEOMS: dict[str, str] = {"thumb": "rh_C_thdistal", "index": "rh_C_ffdistal", "middle": "rh_C_mfdistal"}


@dataclass(frozen=True)
class ScriptConfig:
    lead_s: float = 0.1  # plan and start the approach this long before the giver's reach ends
    approach_clearance: float = 0.05  # pre-grasp: this far above the grasp along u
    approach_tilt: float = 0.0  # approach axis u: 0 = vertical, 1 = the giver's palm normal
    # Candidate pinch axes: yaws (deg, about u) from the axis that keeps the palm as it is, and
    # palm rolls (deg, about the pinch axis) away from facing straight down.
    yaw_candidates: tuple[float, ...] = (45.0, 30.0, 60.0, 15.0, 75.0, 0.0, 90.0)
    roll_candidates: tuple[float, ...] = (0.0, -20.0, 20.0)
    max_plans: int = 3  # optimise at most this many candidates
    max_plan_cost: float = 0.2  # least-squares cost of an acceptable pinch
    approach_s: float = 1.0
    descend_s: float = 0.45
    approach_tolerance: tuple[float, float] = (0.01, 4.0)  # (m, deg): descend once this close
    grasp_tolerance: tuple[float, float] = (0.004, 3.0)  # (m, deg): close once this close
    arrive_timeout_s: float = 2.0  # ... or this long after the move should have ended
    close_s: float = 0.3
    settle_s: float = 0.15
    lift: float = 0.01  # then raise the palm up to this much, slowly: a pull while the giver holds on
    lift_speed: float = 0.005  # m/s
    retreat: tuple[float, float, float] = (-0.04, 0.0, 0.08)  # world offset to carry it away, fast:
    retreat_s: float = 0.5  # the giver's fingers open right after its release
    ram_depth: float = 0.03  # ram mode: the pinch aims this far past the giver's hand ...
    ram_keypoints: tuple[int, ...] = (0,)  # ... at these keypoints' mean (MediaPipe ids: the wrist)
    replan_s: float = 0.1
    depth: float = 0.03  # pinch contacts at least this far below the object's top along u ...
    depth_range: float = 0.015  # ... and at most this much further (where the surface is better)
    normal_weight: float = 0.5  # weight of the surface normals facing along the pinch axis
    max_normal_up: float = 0.35  # contact normals' component along u at most this (~20 deg) ...
    normal_up_weight: float = 1.0  # ... with this weight
    margin: float = 0.004  # other hand geoms at least this far from the object
    giver_clearance: float = 0.03  # hand geoms at least this far from the giver's finger bones
    self_clearance: float = 0.004  # m, between arm links (and hand vs arm)
    pre_open: float = 0.03  # open posture: tips this much farther apart than the object
    squeeze: float = 0.025  # squeeze posture: tips this much closer than the object
    # Joint speeds (rad/s) for ranking arm motions: the wrists are slow here (damping 80 against
    # 28 N m of effort caps them near 0.35 rad/s).
    arm_speed: tuple[float, ...] = (1.2, 1.2, 1.2, 0.3, 0.3, 0.3)
    # Tracking IK weights (cost of moving): 6 arm joints (the wrists slow), then the hand's wrist.
    track_weights: tuple[float, ...] = (1.0, 1.0, 1.0, 4.0, 4.0, 4.0, 0.3, 0.3)
    waypoints: int = 4  # IK points per straight arm move
    max_joint_step: float = 0.5  # rad: an IK jump larger than this between waypoints is refused
    servo_lag_s: float = 0.04  # arm position servo lag (joint damping / kp): aim this far ahead
    predict_max_s: float = 0.3  # extrapolate the giver's motion at most this far ahead
    velocity_filter: float = 0.3  # low-pass factor of the giver velocity estimate per update


# ---- geometry ----------------------------------------------------------------------------------


class ObjectSdf:
    """Signed distance (m, negative inside) of object-frame points to a SimObject's collision parts.

    Primitives are evaluated in batches per kind (a mug is 20 of them); a convex mesh part is the
    max over its face planes (exact inside, a lower bound outside).
    """

    def __init__(self, sim_object) -> None:
        self.vertices = np.asarray(sim_object.mesh.vertices, dtype=float)  # for extents along any axis
        groups: dict[str, list[tuple[np.ndarray, np.ndarray, np.ndarray]]] = {}
        self.hulls: list[np.ndarray] = []
        for part in sim_object.collision:
            if hasattr(part, "kind"):  # a Primitive
                R = Rotation.from_quat(part.quat_wxyz, scalar_first=True).as_matrix()
                groups.setdefault(part.kind, []).append(
                    (np.asarray(part.size, float), R, np.asarray(part.pos, float))
                )
            else:
                self.hulls.append(ConvexHull(np.asarray(part.vertices)).equations)
        # kind -> (sizes [K, s], rotations [K, 3, 3], origins [K, 3])
        self.groups = {
            k: (
                np.stack([np.resize(s, 3) for s, _, _ in v]),
                np.stack([R for _, R, _ in v]),
                np.stack([o for _, _, o in v]),
            )
            for k, v in groups.items()
        }

    def __call__(self, p: np.ndarray) -> np.ndarray:
        out = np.full(len(p), np.inf)
        for kind, (s, R, o) in self.groups.items():
            q = np.einsum("knj,kji->kni", p[None] - o[:, None], R)  # [K, N, 3] in each part's frame
            s = s[:, None, :]
            if kind == "box":
                e = np.abs(q) - s
                d = np.linalg.norm(np.maximum(e, 0.0), axis=2) + np.minimum(e.max(axis=2), 0.0)
            elif kind == "sphere":
                d = np.linalg.norm(q, axis=2) - s[..., 0]
            elif kind == "cylinder":
                e = np.stack(
                    [np.linalg.norm(q[..., :2], axis=2) - s[..., 0], np.abs(q[..., 2]) - s[..., 1]], axis=2
                )
                d = np.linalg.norm(np.maximum(e, 0.0), axis=2) + np.minimum(e.max(axis=2), 0.0)
            elif kind == "capsule":
                c = np.clip(q[..., 2], -s[..., 1], s[..., 1])
                d = np.sqrt(q[..., 0] ** 2 + q[..., 1] ** 2 + (q[..., 2] - c) ** 2) - s[..., 0]
            else:  # ellipsoid, first-order approximation
                k0 = np.linalg.norm(q / s, axis=2)
                k1 = np.linalg.norm(q / s**2, axis=2)
                d = k0 * (k0 - 1.0) / np.maximum(k1, 1e-12)
            out = np.minimum(out, d.min(axis=0))
        for eq in self.hulls:
            out = np.minimum(out, (p @ eq[:, :3].T + eq[:, 3]).max(axis=1))
        return out

    def normal(self, p: np.ndarray, eps: float = 1e-4) -> np.ndarray:
        """Outward unit normals (the SDF's gradient) at points [N, 3]."""
        steps = np.concatenate([np.eye(3), -np.eye(3)]) * eps
        d = self((p[None] + steps[:, None]).reshape(-1, 3)).reshape(6, len(p))
        g = (d[:3] - d[3:]).T / (2 * eps)
        return g / np.maximum(np.linalg.norm(g, axis=1, keepdims=True), 1e-9)

    def section(self, u: np.ndarray, depth: float) -> tuple[float, np.ndarray]:
        """(height, centroid): the object's cross-section `depth` below its top along unit u.

        Height is along u from the object origin; the centroid (object frame) is that of the
        section's area, on a 2 mm grid over the object's extent.
        """
        e1 = np.cross(u, [1.0, 0.0, 0.0] if abs(u[0]) < 0.9 else [0.0, 1.0, 0.0])
        e1 /= np.linalg.norm(e1)
        e2 = np.cross(u, e1)
        h = float((self.vertices @ u).max()) - depth
        lo = (self.vertices @ np.column_stack([e1, e2])).min(axis=0)
        hi = (self.vertices @ np.column_stack([e1, e2])).max(axis=0)
        A, B = (
            m.ravel() for m in np.meshgrid(np.arange(lo[0], hi[0], 0.002), np.arange(lo[1], hi[1], 0.002))
        )
        plane = A[:, None] * e1 + B[:, None] * e2 + h * u
        inside = self(plane) < 0.0
        return h, (plane[inside].mean(axis=0) if inside.any() else h * u)


class RobotGeometry:
    """Forward kinematics of the whole robot on its description's MuJoCo model (own MjData):
    the palm pose, the hand's collision geoms as swept spheres, and the arm's self-clearance.

    Spheres: 5 along each capsule's axis; for boxes a grid of spheres of the box's smallest
    half-size on its mid-plane. Self-clearance: the smallest distance between arm links (and hand
    vs arm) that are not parent and child; the UR5's convex hulls of forearm and wrist 3 meet when
    the wrist folds a little further than at home, and a configuration there stalls the arm.
    """

    def __init__(self, robot) -> None:
        self.robot = robot
        m = self.model = robot.mujoco_model()
        self.data = mujoco.MjData(m)
        self.qadr = robot.mujoco_qpos_index(m)
        self.n_arm = robot.n_arm
        self.palm = m.body(robot.config.hand.palm_link).id
        self.var_idx = np.array([robot.joint_names.index(n) for n in PINCH_JOINTS])
        self.lower = robot.lower[self.var_idx]
        self.upper = robot.upper[self.var_idx]
        root = m.body(robot._hand_root_name()).id
        hand = {root}
        for b in range(root + 1, m.nbody):
            if m.body_parentid[b] in hand:
                hand.add(b)
        tip_geoms = {m.geom(g).id: k for k, g in TIP_GEOMS.items()}
        body, local, radius, digit, tip = [], [], [], [], []
        colliding = [g for g in range(m.ngeom) if m.geom_contype[g] or m.geom_conaffinity[g]]
        for g in colliding:
            if m.geom_bodyid[g] not in hand:
                continue
            size, pos = m.geom_size[g], m.geom_pos[g]
            R = np.zeros(9)
            mujoco.mju_quat2Mat(R, m.geom_quat[g])
            R = R.reshape(3, 3)
            if m.geom_type[g] == mujoco.mjtGeom.mjGEOM_CAPSULE:
                for s in np.linspace(-1.0, 1.0, 5):
                    body.append(m.geom_bodyid[g])
                    local.append(pos + R[:, 2] * s * size[1])
                    radius.append(size[0])
                    digit.append(tip_geoms.get(g))
                    tip.append(s == 1.0 and g in tip_geoms)
            elif m.geom_type[g] == mujoco.mjtGeom.mjGEOM_BOX and size.max() > 0.003:
                ax = int(np.argmin(size))
                o0, o1 = (i for i in range(3) if i != ax)
                n0 = max(2, int(np.ceil(size[o0] / size[ax])) + 1)
                n1 = max(2, int(np.ceil(size[o1] / size[ax])) + 1)
                for s0 in np.linspace(-1.0, 1.0, n0):
                    for s1 in np.linspace(-1.0, 1.0, n1):
                        p = np.zeros(3)
                        p[o0] = s0 * (size[o0] - size[ax])
                        p[o1] = s1 * (size[o1] - size[ax])
                        body.append(m.geom_bodyid[g])
                        local.append(pos + R @ p)
                        radius.append(size[ax])
                        digit.append(None)
                        tip.append(False)
        self.body = np.array(body)
        self.local = np.array(local)
        self.radius = np.array(radius)
        self.on_distal = np.array([d is not None for d in digit])
        self.tips = np.array(
            [
                next(i for i, (d, t) in enumerate(zip(digit, tip, strict=True)) if d == k and t)
                for k in TIP_GEOMS
            ]
        )
        arm = [g for g in colliding if m.geom_bodyid[g] not in hand]
        hand_geoms = [g for g in colliding if m.geom_bodyid[g] in hand and m.geom_bodyid[g] != root]

        def related(g1: int, g2: int) -> bool:  # same or parent-child bodies never count
            b1, b2 = int(m.geom_bodyid[g1]), int(m.geom_bodyid[g2])
            return b1 == b2 or m.body_parentid[b1] == b2 or m.body_parentid[b2] == b1

        pairs = [(g1, g2) for i, g1 in enumerate(arm) for g2 in arm[i + 1 :] if not related(g1, g2)]
        pairs += [(g1, g2) for g1 in hand_geoms for g2 in arm if not related(g1, g2)]
        self.pairs = pairs
        self._force = np.zeros(6)
        P = self.palm_points(np.clip(PINCH_SEED, self.lower, self.upper))
        axis = 0.5 * (P[self.tips[1]] + P[self.tips[2]]) - P[self.tips[0]]
        self.seed_axis = axis / np.linalg.norm(axis)  # thumb -> fingers of the seed, palm frame
        self.seed_centre = 0.5 * (P[self.tips[0]] + 0.5 * (P[self.tips[1]] + P[self.tips[2]]))

    def full_q(self, q_arm: np.ndarray, x: np.ndarray) -> np.ndarray:
        """Whole-robot joint vector: arm joints, pinch joints x, other hand joints 0, coupled."""
        q = np.zeros(len(self.robot.joint_names))
        q[: self.n_arm] = q_arm
        q[self.var_idx] = x
        return self.robot.apply_couplings(q)

    def hand_q(self, x: np.ndarray) -> np.ndarray:
        return self.full_q(np.zeros(self.n_arm), x)[self.n_arm :]

    def set(self, q: np.ndarray) -> None:
        self.data.qpos[self.qadr] = q
        mujoco.mj_kinematics(self.model, self.data)

    def palm_pose(self) -> np.ndarray:
        T = np.eye(4)
        T[:3, :3] = self.data.xmat[self.palm].reshape(3, 3)
        T[:3, 3] = self.data.xpos[self.palm]
        return T

    def points(self) -> np.ndarray:
        """World positions of the hand's sphere centres (after `set`)."""
        d = self.data
        R = d.xmat[self.body].reshape(-1, 3, 3)
        return d.xpos[self.body] + np.einsum("nij,nj->ni", R, self.local)

    def palm_points(self, x: np.ndarray) -> np.ndarray:
        """Sphere centres in the palm frame for pinch joints x."""
        self.set(self.full_q(self.robot.home()[: self.n_arm], x))
        T = self.palm_pose()
        return (self.points() - T[:3, 3]) @ T[:3, :3]

    def clearance(self, cutoff: float = 0.02) -> float:
        """Self-clearance (after `set`)."""
        m, d = self.model, self.data
        return min(mujoco.mj_geomDistance(m, d, g1, g2, cutoff, self._force) for g1, g2 in self.pairs)

    def clearance_at(self, q: np.ndarray) -> float:
        self.set(q)
        return self.clearance()


class WristIk:
    """Palm-pose IK over the arm joints and the hand's two wrist joints, weighted damped least
    squares: slow joints cost more, the hand wrist less, and a null-space pull brings the hand
    wrist back toward given angles (so it only buffers fast motions)."""

    def __init__(self, ik: ArmIk, robot, weights: np.ndarray, pull: float = 0.1) -> None:
        self.ik = ik
        self.robot = robot
        m = ik.model
        self.wrist_names = list(PINCH_JOINTS[:N_WRIST])
        self.v_idx = np.concatenate(
            [ik.arm_v_idx, [m.joints[m.getJointId(n)].idx_v for n in self.wrist_names]]
        ).astype(int)
        names = robot.joint_names
        self.q_idx = np.array(
            [names.index(n) for n in robot.arm_joint_names] + [names.index(n) for n in self.wrist_names]
        )
        self.lower = robot.lower[self.q_idx]
        self.upper = robot.upper[self.q_idx]
        self.w_inv = 1.0 / np.asarray(weights, dtype=float)
        self.pull = pull

    def solve(
        self, target: np.ndarray, q: np.ndarray, wrist_nominal: np.ndarray, iterations: int = 20
    ) -> np.ndarray:
        """Whole-robot joint vector q with its arm and hand-wrist joints moved to reach target."""
        import pinocchio as pin  # as ArmIk: only where IK runs

        model, data = self.ik.model, self.ik.data
        q = q.copy()
        target_se3 = pin.SE3(target[:3, :3], target[:3, 3])
        rw = self.ik.config.rotation_weight
        wvec = np.array([1.0, 1.0, 1.0, rw, rw, rw])
        n_arm = self.robot.n_arm
        for _ in range(iterations):
            qp = self.robot.pinocchio_q(model, q)
            pin.framesForwardKinematics(model, data, qp)
            err = pin.log6(data.oMf[self.ik.frame_id].actInv(target_se3)).vector * wvec
            J = (
                pin.computeFrameJacobian(model, data, qp, self.ik.frame_id, pin.LOCAL)[:, self.v_idx]
                * wvec[:, None]
            )
            JW = J * self.w_inv[None, :]
            dq = JW.T @ np.linalg.solve(J @ JW.T + 1e-4 * np.eye(6), err)
            # Null space (in the weighted metric): the hand wrist drifts back to its nominal.
            N = np.eye(len(dq)) - JW.T @ np.linalg.solve(J @ JW.T + 1e-4 * np.eye(6), J)
            bias = np.zeros(len(dq))
            bias[n_arm:] = self.pull * (wrist_nominal - q[self.q_idx[n_arm:]])
            dq = np.clip(dq + N @ bias, -0.2, 0.2)
            q[self.q_idx] = np.clip(q[self.q_idx] + dq, self.lower, self.upper)
            if np.linalg.norm(err) < 1e-4:
                break
        return q


def _min_jerk(s: float) -> float:
    return s**3 * (10.0 - 15.0 * s + 6.0 * s * s)


def _angle(A: np.ndarray, B: np.ndarray) -> float:
    """Rotation angle between the orientations of two 4x4 poses."""
    return float(Rotation.from_matrix(A[:3, :3] @ B[:3, :3].T).magnitude())


def _interpolate(A: np.ndarray, B: np.ndarray, s: float) -> np.ndarray:
    """Pose a fraction s of the way from A to B (straight line, slerp)."""
    rots = Rotation.from_matrix(np.stack([A[:3, :3], B[:3, :3]]))
    T = np.eye(4)
    T[:3, :3] = Slerp([0.0, 1.0], rots)(s).as_matrix()
    T[:3, 3] = (1.0 - s) * A[:3, 3] + s * B[:3, 3]
    return T


def _segment_distance(p: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Distance of each point [N, 3] to the nearest of the segments a[k] -> b[k]."""
    ab = b - a  # [K, 3]
    ap = p[:, None, :] - a[None]  # [N, K, 3]
    t = np.clip(np.einsum("nkj,kj->nk", ap, ab) / np.maximum(np.einsum("kj,kj->k", ab, ab), 1e-12), 0.0, 1.0)
    diff = ap - t[..., None] * ab[None]
    return np.sqrt(np.einsum("nkj,nkj->nk", diff, diff).min(axis=1))


def seed_palm_pose(geo: RobotGeometry, back: np.ndarray, a: np.ndarray, centre: np.ndarray) -> np.ndarray:
    """Palm pose (world) holding the seed pinch: its tips' axis along a, the back of the hand
    toward `back` (palm facing -back), the tips' midpoint on `centre`."""
    ax = geo.seed_axis
    n = np.array([0.0, -1.0, 0.0]) + ax[1] * ax  # palm normal made orthogonal to the axis
    n /= np.linalg.norm(n)
    A = np.column_stack([ax, n, np.cross(ax, n)])
    B = np.column_stack([a, -back, np.cross(a, -back)])
    T = np.eye(4)
    T[:3, :3] = B @ A.T
    T[:3, 3] = centre - T[:3, :3] @ geo.seed_centre
    return T


@dataclass(frozen=True)
class PinchGrasp:
    """A planned pinch: arm joints and palm pose (in the object frame) and three hand postures."""

    q_arm: np.ndarray  # arm joints at the grasp (for the object pose it was planned for)
    T_obj_palm: np.ndarray
    q_open: np.ndarray  # hand joint vectors (robot.hand_joint_names order, couplings applied)
    q_contact: np.ndarray
    q_squeeze: np.ndarray
    cost: float  # final least-squares cost (0: every constraint met)
    clearance: float  # arm self-clearance at the grasp (m)
    u: np.ndarray  # approach-out axis, world
    u_obj: np.ndarray  # approach-out axis, object frame


def plan_pinch(
    geo: RobotGeometry,
    sdf: ObjectSdf,
    T_obj: np.ndarray,
    u: np.ndarray,
    a: np.ndarray,
    back: np.ndarray,
    giver_keypoints: np.ndarray | None,
    q_arm_seed: np.ndarray,
    q_arm_now: np.ndarray,
    config: ScriptConfig,
) -> PinchGrasp:
    """Optimise the pinch (6 arm + 13 hand joints) on the object; see the module docstring.

    u: approach axis (out of the object), a: pinch axis (thumb -> fingers), back: where the back
    of the hand should face (u, or u turned about a), all world; q_arm_seed: arm joints to start
    from (IK of a seed palm pose); q_arm_now: where the arm is (motion is penalised).
    """
    Ti = np.linalg.inv(T_obj)
    R_o, p_o = Ti[:3, :3], Ti[:3, 3]
    u_o, a_o = R_o @ u, R_o @ a
    if giver_keypoints is not None:
        bone_a = np.array([giver_keypoints[i] for i, _ in HAND_BONES])
        bone_b = np.array([giver_keypoints[j] for _, j in HAND_BONES])
    target_h, centroid = sdf.section(u_o, config.depth)
    b_o = np.cross(u_o, a_o)
    tips = geo.tips
    tip_r = geo.radius[tips]
    others = np.ones(len(geo.radius), dtype=bool)
    others[tips] = False
    # Distal capsules may lie flat on the surface (more contact); the rest keeps a margin.
    keep_off = np.where(geo.on_distal, -0.001, config.margin)[others]
    x_seed = np.clip(PINCH_SEED, geo.lower + 1e-6, geo.upper - 1e-6)
    n = geo.n_arm
    travel_w = 0.02 / np.asarray(config.arm_speed)
    signs = np.array([-1.0, 1.0, 1.0])[:, None]  # thumb opens along -a, fingers along +a

    def giver_terms(Pw: np.ndarray) -> np.ndarray:
        if giver_keypoints is None:
            return np.zeros(0)
        gap = _segment_distance(Pw, bone_a, bone_b) - geo.radius - config.giver_clearance
        return 100.0 * np.minimum(gap, 0.0)

    def residual(v: np.ndarray) -> np.ndarray:
        geo.set(geo.full_q(v[:n], v[n:]))
        Pw = geo.points()
        T = geo.palm_pose()
        Po = Pw @ R_o.T + p_o
        d = sdf(Po)
        st, sf = Po[tips[0]], 0.5 * (Po[tips[1]] + Po[tips[2]])
        axis = (sf - st) / max(float(np.linalg.norm(sf - st)), 1e-9)
        normals = sdf.normal(Po[tips])
        h = 0.5 * (st + sf) @ u_o
        return np.concatenate(
            [
                100.0 * (d[tips] - tip_r),  # tips touch
                100.0 * np.minimum(d[others] - geo.radius[others] - keep_off, 0.0),  # nothing else
                3.0 * (axis - a_o),  # thumb -> fingers along a
                # on surfaces facing along the pinch (not its rounded top): an antipodal grip
                config.normal_weight * (a_o - signs * normals).ravel(),
                # and never on a surface facing up much: squeezing there pushes the object down
                config.normal_up_weight * np.maximum(normals @ u_o - config.max_normal_up, 0.0),
                [100.0 * (Po[tips[1]] - Po[tips[2]]) @ a_o],  # index and middle on one side
                # at the pinch height, or deeper (down to depth_max) where the surface is better
                [30.0 * max(h - target_h, 0.0) + 30.0 * min(h - (target_h - config.depth_range), 0.0)],
                [30.0 * (0.5 * (st + sf) - centroid) @ b_o],  # across the middle of the section
                giver_terms(Pw),
                0.5 * (T[:3, 1] - back),  # palm (its -y) faces -back
                [300.0 * min(geo.clearance() - config.self_clearance - 0.002, 0.0)],
                travel_w * (v[:n] - q_arm_now),
                0.05 * (v[n:] - x_seed),
            ]
        )

    lo = np.r_[geo.robot.lower[:n], geo.lower]
    hi = np.r_[geo.robot.upper[:n], geo.upper]
    v0 = np.r_[np.clip(q_arm_seed, lo[:n], hi[:n]), x_seed]
    sol = least_squares(residual, v0, bounds=(lo, hi), max_nfev=200, x_scale="jac")
    q_arm, x_contact = sol.x[:n], sol.x[n:]
    geo.set(geo.full_q(q_arm, x_contact))
    T_palm = geo.palm_pose()
    clearance = geo.clearance()
    tip_contact = geo.points()[tips]

    def posture(offset: float, clear: bool) -> np.ndarray:
        """Hand posture at the same arm and hand-wrist joints (the same palm pose) with the tips
        moved `offset` out along +-a."""
        goal = tip_contact + offset * signs * a
        outs = (0.0, 0.02, 0.04, config.approach_clearance) if clear else ()
        k = N_WRIST

        def res(y: np.ndarray) -> np.ndarray:
            x = np.r_[x_contact[:k], y]
            geo.set(geo.full_q(q_arm, x))
            Pw = geo.points()
            terms = [100.0 * (Pw[tips] - goal).ravel(), 0.05 * (y - x_contact[k:])]
            for out in outs:  # clear of the object at the grasp pose and along the descent
                Po = (Pw + out * u) @ R_o.T + p_o
                terms.append(100.0 * np.minimum(sdf(Po) - geo.radius - config.margin, 0.0))
            terms.append(giver_terms(Pw))  # a digit that misses the object must not reach the giver
            return np.concatenate(terms)

        bounds = (geo.lower[k:], geo.upper[k:])
        y = least_squares(res, x_contact[k:], bounds=bounds, max_nfev=100, x_scale="jac").x
        return np.r_[x_contact[:k], y]

    x_open = posture(config.pre_open / 2.0, True)
    x_squeeze = posture(-config.squeeze / 2.0, False)
    return PinchGrasp(
        q_arm=q_arm,
        T_obj_palm=Ti @ T_palm,
        q_open=geo.hand_q(x_open),
        q_contact=geo.hand_q(x_contact),
        q_squeeze=geo.hand_q(x_squeeze),
        cost=float(sol.cost),
        clearance=clearance,
        u=u,
        u_obj=u_o,
    )


# ---- the controller ------------------------------------------------------------------------------


class ScriptedHandover:
    def __init__(self, cell, mode: Mode = "grasp", config: ScriptConfig | None = None) -> None:
        self.cell = cell
        self.mode = mode
        self.config = config or ScriptConfig()
        self.robot = cell.robot
        self.palm_link = self.robot.config.hand.palm_link
        self.ik = ArmIk(self.robot, self.palm_link, IkConfig(max_iterations=100))
        self.phase = "wait"
        self.grasp: PinchGrasp | None = None
        self.plan_log: list[tuple] = []  # (yaw, roll, score, feasible, cost) per optimised candidate
        self._phase_t = 0.0
        self._next_plan = 0.0
        self._last_wrist: tuple[float, np.ndarray] | None = None
        self._wrist_v = np.zeros(3)
        self._wrist_w = np.zeros(3)
        self._T_wrist_obj = np.eye(4)
        self._out_profile = (0.0, 0.0, 0.0, 1.0)  # (t0, from, to, duration) of the offset along u
        self._lift_t0: float | None = None
        self._ram_offset = np.zeros(3)
        self._geo: RobotGeometry | None = None
        self._sdf: ObjectSdf | None = None
        self._q_goal: np.ndarray | None = None  # arm joints of the last joint-space goal
        self._wrist_ik = WristIk(self.ik, self.robot, np.asarray(self.config.track_weights))
        hand_names = self.robot.hand_joint_names
        self._wrist_idx = np.array([hand_names.index(n) for n in PINCH_JOINTS[:N_WRIST]])
        self._wrist_nominal = np.zeros(N_WRIST)
        self._hand_profile = (0.0, np.zeros(self.robot.n_hand), np.zeros(self.robot.n_hand), 1.0)

    # ---- state ---------------------------------------------------------------------------------
    def _q(self) -> np.ndarray:
        t = self.cell.time
        return np.concatenate([self.cell.arm.position(t), self.cell.hand.position(t)])

    def _track_giver(self) -> None:
        """Low-pass estimate of the giver's hand velocity (linear and angular), for extrapolation.

        The giver's hand, not the object: the object also moves with the robot's own contact
        forces, and feeding that back into the arm targets makes the grasp oscillate.
        """
        t = self.cell.time
        T = self.cell.giver.wrist_pose(self.cell.data)
        if self._last_wrist is not None:
            t0, T0 = self._last_wrist
            dt = t - t0
            if dt > 1e-6:
                v = (T[:3, 3] - T0[:3, 3]) / dt
                w = Rotation.from_matrix(T[:3, :3] @ T0[:3, :3].T).as_rotvec() / dt
                k = self.config.velocity_filter
                self._wrist_v = (1 - k) * self._wrist_v + k * v
                self._wrist_w = (1 - k) * self._wrist_w + k * w
        self._last_wrist = (t, T)

    def _object_at(self, dt: float) -> np.ndarray:
        """Object pose dt ahead: the giver's hand extrapolated with its velocity, times the grasp.

        The giver holds the object rigidly (a weld), so object = wrist @ T_wrist_obj, measured
        when the grasp was planned.
        """
        dt = min(dt, self.config.predict_max_s)  # the giver turns and stops: look ahead only so far
        W = self.cell.giver.wrist_pose(self.cell.data)
        out = W.copy()
        out[:3, 3] += self._wrist_v * dt
        out[:3, :3] = Rotation.from_rotvec(self._wrist_w * dt).as_matrix() @ W[:3, :3]
        return out @ self._T_wrist_obj

    # ---- planning ------------------------------------------------------------------------------
    def _plan_grasp(self) -> PinchGrasp:
        """The pinch to use: candidate (yaw, roll) seeds ranked by the arm motion they need; the
        best few optimised; the first feasible one (or the least bad) wins."""
        c = self.config
        if self._geo is None:
            self._geo = RobotGeometry(self.robot)
            self._sdf = ObjectSdf(self.cell.sim_object)
        geo, sdf = self._geo, self._sdf
        T_obj = self.cell.object_pose()
        keypoints = self.cell.giver_keypoints()
        q_now = self._q()
        n = self.robot.n_arm
        # Approach axis: from above, tilted toward the giver's palm normal by `approach_tilt`.
        W = self.cell.giver.wrist_pose(self.cell.data)
        u = c.approach_tilt * -W[:3, 1] + (1.0 - c.approach_tilt) * np.array([0.0, 0.0, 1.0])
        u /= np.linalg.norm(u)
        # Pinch axis, yaw 0: the seed pinch's axis with the palm as it is now.
        a0 = self.cell.body_pose(self.palm_link)[:3, :3] @ geo.seed_axis
        a0 -= (a0 @ u) * u
        a0 /= np.linalg.norm(a0)
        _, centroid = sdf.section(T_obj[:3, :3].T @ u, c.depth)
        centre = T_obj[:3, :3] @ centroid + T_obj[:3, 3]
        ranked = []
        for yaw in c.yaw_candidates:
            a = Rotation.from_rotvec(np.deg2rad(yaw) * u).apply(a0)
            for roll in c.roll_candidates:
                back = Rotation.from_rotvec(np.deg2rad(roll) * a).apply(u)
                T = seed_palm_pose(geo, back, a, centre)
                q_arm = self._ik(T, q_now)
                if q_arm is None:
                    continue
                q = q_now.copy()
                q[:n] = q_arm
                score, _ = self._arm_cost(q, u, q_now)
                ranked.append((score, yaw, roll, a, back, q_arm))
        ranked.sort(key=lambda r: r[0])
        best: tuple[float, PinchGrasp] | None = None
        for _, yaw, roll, a, back, q_arm in ranked[: c.max_plans]:
            grasp = plan_pinch(geo, sdf, T_obj, u, a, back, keypoints, q_arm, q_now[:n], c)
            q = np.concatenate([grasp.q_arm, grasp.q_contact])
            score, ok = self._arm_cost(q, u, q_now)
            score += 10.0 * grasp.cost
            self.plan_log.append((yaw, roll, round(score, 3), ok, round(grasp.cost, 5)))
            if best is None or score < best[0]:
                best = (score, grasp)
            if ok and grasp.cost < c.max_plan_cost:
                break
        if best is None:  # nothing reachable: plan from where the arm is and hope
            back = u
            grasp = plan_pinch(geo, sdf, T_obj, u, a0, back, keypoints, q_now[:n], q_now[:n], c)
            self.plan_log.append((0.0, 0.0, float("inf"), False, round(grasp.cost, 5)))
            return grasp
        return best[1]

    def _arm_cost(self, q: np.ndarray, u: np.ndarray, q_now: np.ndarray) -> tuple[float, bool]:
        """(seconds to get there + penalties, feasible) for the grasp configuration q (whole
        robot): the pre-grasp above it by IK, the self-clearance along the joint-space move there
        and at the grasp, the time from the joint travel over per-joint speeds."""
        c = self.config
        geo = self._geo
        n = self.robot.n_arm
        geo.set(q)
        pre = geo.palm_pose()
        pre[:3, 3] += c.approach_clearance * u
        result = self.ik.solve(pre, q)
        if not result.success:
            return 100.0, False
        path = [q_now[:n] + s * (result.q_arm - q_now[:n]) for s in (0.25, 0.5, 0.75, 1.0)] + [q[:n]]
        clear = min(geo.clearance_at(np.concatenate([p, q[n:]])) for p in path)
        travel = float(np.max(np.abs(q[:n] - q_now[:n]) / np.asarray(c.arm_speed)))
        ok = clear >= c.self_clearance
        return travel + (0.0 if ok else 10.0 + 1000.0 * (c.self_clearance - clear)), ok

    def _ik(self, T: np.ndarray, q: np.ndarray) -> np.ndarray | None:
        """Arm joints for palm pose T: the solution nearest q's arm among a few seeds, or None."""
        n = self.robot.n_arm
        best = None
        for seed in (q[:n], self.robot.home()[:n]):
            trial = q.copy()
            trial[:n] = seed
            result = self.ik.solve(T, trial)
            if result.success:
                dist = float(np.abs(result.q_arm - q[:n]).max())
                if best is None or dist < best[0]:
                    best = (dist, result.q_arm)
        return None if best is None else best[1]

    def _palm_target(self, dt: float) -> np.ndarray:
        """Palm pose dt from now: the grasp on the extrapolated object, out along u, plus the lift."""
        T_obj = self._object_at(dt)
        T = T_obj @ self.grasp.T_obj_palm
        out = self._out_at(self.cell.time + dt)
        T[:3, 3] += out * (T_obj[:3, :3] @ self.grasp.u_obj) + self._lift(dt) + self._ram_offset
        return T

    def _out_at(self, t: float) -> float:
        """Offset out along u at time t: a minimum-jerk ramp (the descent) or a constant."""
        t0, start, end, duration = self._out_profile
        return start + (end - start) * _min_jerk(float(np.clip((t - t0) / duration, 0.0, 1.0)))

    def _lift(self, dt: float) -> np.ndarray:
        """Upward offset of the palm dt from now: a slow ramp (a gentle pull on the held object)."""
        if self._lift_t0 is None:
            return np.zeros(3)
        c = self.config
        h = min(c.lift, c.lift_speed * max(self.cell.time + dt - self._lift_t0, 0.0))
        return np.array([0.0, 0.0, h])

    # ---- commands ------------------------------------------------------------------------------
    def _solve(self, T: np.ndarray, seed: np.ndarray) -> np.ndarray:
        """Arm joints for palm pose T from `seed`, with the hand (its wrist) where it is going."""
        q = np.concatenate([seed, self._hand_profile[2]])
        return self.ik.solve(T, q).q_arm

    def _move_arm(self, pose_at, duration: float, straight: bool = True) -> None:
        """Track `pose_at(dt)` (palm pose dt from now): reach it in `duration`, then keep moving.

        straight: the palm moves along a straight line (slerp for the orientation) from where the
        arm is commanded to be now, through `waypoints` IK points on a minimum-jerk profile, so
        that a descent stays a descent; otherwise one joint-space move, IK seeded with the last
        goal (the branch the planner checked). One more point `replan_s` after the end carries
        the target's own velocity, so the reference keeps moving until the next plan replaces it.
        """
        c = self.config
        h = max(c.replan_s, 0.05)
        t = self.cell.time
        q = self.cell.arm.position(t)
        start = self.ik.frame_pose(np.concatenate([q, self.cell.hand.position(t)]))
        end = pose_at(duration + c.servo_lag_s)
        far = np.linalg.norm(end[:3, 3] - start[:3, 3]) > 0.01 or _angle(start, end) > np.deg2rad(3.0)
        n = c.waypoints if straight and far and duration > 2 * h else 1
        if not straight and self._q_goal is not None:
            q = self._q_goal
        points = []
        for k in range(1, n + 1):
            tk = duration * k / n
            target = pose_at(tk + c.servo_lag_s)
            if k < n:
                target = _interpolate(start, target, _min_jerk(k / n))
            q_new = self._solve(target, q)
            if straight and float(np.abs(q_new - q).max()) > c.max_joint_step:
                q_new = q  # the IK jumped to another branch: stop here rather than swing through
            q = q_new
            points.append(TrajectoryPoint(tk, q))
        self._q_goal = q
        q2 = self._solve(pose_at(duration + c.servo_lag_s + h), q)
        if float(np.abs(q2 - q).max()) > c.max_joint_step:
            q2 = q
        v = (q2 - q) / h
        if float(np.abs(v).max()) > 1e-3:
            points[-1] = TrajectoryPoint(duration, q, v)
            points.append(TrajectoryPoint(duration + h, q2, v))
        self.cell.command_arm(JointTrajectory(self.robot.arm_joint_names, points))

    def _move_hand(self, q_hand: np.ndarray, duration: float) -> None:
        """Move the hand to a posture (minimum-jerk in `_hand_at`, which `_track` re-sends)."""
        t = self.cell.time
        self._hand_profile = (t, self.cell.hand.position(t), np.asarray(q_hand, dtype=float), duration)
        point = TrajectoryPoint(duration, np.asarray(q_hand, dtype=float))
        self.cell.command_hand(JointTrajectory(self.robot.hand_joint_names, [point]))

    def _hand_at(self, t: float) -> np.ndarray:
        t0, start, end, duration = self._hand_profile
        return start + (end - start) * _min_jerk(float(np.clip((t - t0) / max(duration, 1e-6), 0.0, 1.0)))

    def _enter(self, phase: str) -> None:
        self.phase = phase
        self._phase_t = self.cell.time
        self._next_plan = self.cell.time + self.config.replan_s

    def _elapsed(self) -> float:
        return self.cell.time - self._phase_t

    def _remaining(self, total: float) -> float:
        return max(total - self._elapsed(), self.config.replan_s)

    def _palm_error(self) -> tuple[float, float]:
        P = self.cell.body_pose(self.palm_link)
        T = self._palm_target(0.0)
        return float(np.linalg.norm(P[:3, 3] - T[:3, 3])), _angle(P, T)

    def _arrived(self, duration: float, tolerance: tuple[float, float]) -> bool:
        """The move's time is up and the palm is within (metres, degrees) of its target, or the
        grace period after it is over (the arm's wrist is slow: go on only where it is)."""
        if self._elapsed() < duration:
            return False
        pos, rot = self._palm_error()
        ok = pos < tolerance[0] and rot < np.deg2rad(tolerance[1])
        return ok or self._elapsed() >= duration + self.config.arrive_timeout_s

    # ---- the script ----------------------------------------------------------------------------
    def update(self) -> None:
        """Call every control period (e.g. 100 Hz of sim time)."""
        if self.mode == "idle":
            return
        c = self.config
        cell = self.cell
        giver = cell.giver
        self._track_giver()
        replan = cell.time >= self._next_plan - 1e-9
        if replan:
            self._next_plan = cell.time + c.replan_s
        if self.phase == "wait":
            if giver.trajectory.reach_end_s - giver.episode_time(cell.data) > c.lead_s:
                return
            self._T_wrist_obj = np.linalg.inv(giver.wrist_pose(cell.data)) @ cell.object_pose()
            self.grasp = self._plan_grasp()
            self._q_goal = self.grasp.q_arm
            self._wrist_nominal = self.grasp.q_contact[self._wrist_idx]
            if self.mode == "ram":
                # Aim the pinch (between the open thumb and fingers) at the giver's wrist, past it.
                geo = self._geo
                geo.set(np.concatenate([self.grasp.q_arm, self.grasp.q_open]))
                P = geo.points()
                centre = 0.5 * (P[geo.tips[0]] + 0.5 * (P[geo.tips[1]] + P[geo.tips[2]]))
                aim = cell.giver_keypoints()[list(c.ram_keypoints)].mean(axis=0)
                self._ram_offset = aim - c.ram_depth * self.grasp.u - centre
            self._out_profile = (cell.time, c.approach_clearance, c.approach_clearance, 1.0)
            self._move_hand(self.grasp.q_open, c.approach_s)
            self._enter("approach")
            self._move_arm(self._palm_target, c.approach_s, straight=False)
        elif self.phase == "approach":
            if replan:
                if self._elapsed() < c.approach_s - c.replan_s:  # travelling: one joint-space move
                    self._move_arm(self._palm_target, self._remaining(c.approach_s), straight=False)
                else:  # there or late: track the pre-grasp
                    self._track()
            if self._arrived(c.approach_s, c.approach_tolerance):
                # Descend: the offset along u runs down to 0 while the arm tracks the object.
                self._out_profile = (cell.time, c.approach_clearance, 0.0, c.descend_s)
                self._enter("ram" if self.mode == "ram" else "descend")
                self._track()
        elif self.phase in ("descend", "ram"):
            if replan:
                self._track()
            if self.phase == "descend" and self._arrived(c.descend_s, c.grasp_tolerance):
                self._move_hand(self.grasp.q_squeeze, c.close_s)
                self._enter("close")
        elif self.phase == "close":
            if replan:
                self._track()
            if self._elapsed() >= c.close_s + c.settle_s:
                self._lift_t0 = cell.time
                self._enter("lift")
                self._track()
        elif self.phase == "lift":
            if giver.released_at is not None:  # the giver let go: the object is ours
                if self.mode == "drop":
                    self._move_hand(np.zeros(self.robot.n_hand), 0.3)
                else:
                    T = self.ik.frame_pose(self._q())
                    T[:3, 3] += np.asarray(c.retreat)
                    self._move_arm(lambda dt: T, c.retreat_s)
                self._enter("done")
            elif replan:
                self._track()

    def _track(self) -> None:
        """Short move to where the palm target will be one re-plan period from now (and on).

        The arm's wrist is slow (it saturates near 0.35 rad/s here), so the palm is tracked with
        the arm and the hand's own (fast) wrist joints together, the hand wrist weighted cheap and
        pulled back toward its planned angles: it absorbs quick turns, the arm catches up.
        """
        c = self.config
        h = c.replan_s
        t = self.cell.time
        q = np.concatenate([self.cell.arm.position(t), self.cell.hand.position(t)])
        points_arm, points_hand = [], []
        for k in (1, 2):
            target = self._palm_target(k * h + c.servo_lag_s)
            q = self._wrist_ik.solve(target, q, self._wrist_nominal)
            hand = self._hand_at(t + k * h)
            hand[self._wrist_idx] = q[self.robot.n_arm + self._wrist_idx]
            points_arm.append(q[: self.robot.n_arm].copy())
            points_hand.append(hand)
        for joints, pts, names in (
            ("arm", points_arm, self.robot.arm_joint_names),
            ("hand", points_hand, self.robot.hand_joint_names),
        ):
            v = (pts[1] - pts[0]) / h
            if joints == "hand":
                v[np.setdiff1d(np.arange(len(v)), self._wrist_idx)] = 0.0  # fingers: their own profile
            traj = JointTrajectory(names, [TrajectoryPoint(h, pts[0], v), TrajectoryPoint(2 * h, pts[1], v)])
            (self.cell.command_arm if joints == "arm" else self.cell.command_hand)(traj)
