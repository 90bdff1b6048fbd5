"""The paper's grasp stability test in MuJoCo, on a floating hand (ROS-free).

    bed = GraspTestbed(robot, obj)                 # hand on a mocap root + the object as a free body
    q = bed.close(T_obj_hand, q_open, q_closed)    # synthesis: fingers close until they touch
    result = bed.test(T_obj_hand, q)               # succ6 / succ1 test
    result.stable                                  # [6] bool for +x, -x, +y, -y, +z, -z

The model is the hand of the robot description alone: its root body (the wrist mount, where the
hand's own wrist joints are zero) hangs on a mocap body placed at the grasp pose, the object is a
free body at the origin, so world = object frame. Gravity is off, as in the paper's IsaacGym test.

Test (DexGraspNet / DexH2R protocol, `test_grasp_quality/test_grasp.py`): the hand is placed at
the grasp; the fingers are pushed along the contact normals (the paper does one Adam step on the
hand surface points within 5 mm of the object; here one normalised gradient step of the same
objective in joint space, so the position servos' error is the grip force); the grip settles;
then a force of `force_per_volume` x object volume (500 N/m^3 in the paper) pushes the object
along each of +-x, +-y, +-z (object frame) for `push_s`; a direction passes if the object's
centre ends less than `max_move` (2 cm) from where the grasp put it. succ6: all six pass;
succ1: at least one.
"""

from __future__ import annotations

from dataclasses import dataclass

import mujoco
import numpy as np

from dexh2r_core.robot.description import RobotDescription
from dexh2r_sim.objects import add_object_body

DIRECTIONS: np.ndarray = np.array(
    [[1, 0, 0], [-1, 0, 0], [0, 1, 0], [0, -1, 0], [0, 0, 1], [0, 0, -1]], dtype=float
)
DIRECTION_NAMES: tuple[str, ...] = ("+x", "-x", "+y", "-y", "+z", "-z")
HAND_PREFIX = "hand__"


@dataclass(frozen=True)
class StabilityConfig:
    physics_hz: float = 500.0
    force_per_volume: float = 500.0  # N per m^3 of object volume (the paper's 500 x volume)
    push_s: float = 50 / 60  # the paper: 50 steps at 60 Hz
    settle_s: float = 0.3  # grip settles (object free) before the pushes
    max_move: float = 0.02  # m: a direction passes below this
    squeeze_rad: float = 0.05  # largest joint-target step of the push along the contact normals
    near: float = 0.005  # m: hand-object pairs this close count as contacts (the paper's 5 mm)
    # Object density override (kg/m^3; the paper uses 1000). None keeps the library's mass, which
    # is what the sim cell simulates.
    density: float | None = None
    close_s: float = 0.6  # synthesis: the fingers sweep from open to closed in this time
    close_settle_s: float = 0.1

    def __post_init__(self) -> None:
        if not 100.0 <= self.physics_hz <= 5000.0:
            raise ValueError(f"physics_hz: must be in [100, 5000], got {self.physics_hz}")
        for name in ("force_per_volume", "push_s", "max_move", "close_s"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name}: must be positive, got {getattr(self, name)}")


@dataclass
class StabilityResult:
    stable: np.ndarray  # [6] bool, DIRECTIONS order
    displacement: np.ndarray  # [6] m, object centre after each push vs the grasp placement
    contacts: int  # hand-object contacts at the start of the test

    @property
    def succ6(self) -> bool:
        return bool(self.stable.all())

    @property
    def succ1(self) -> bool:
        return bool(self.stable.any())


def wrist_joint_names(robot: RobotDescription) -> list[str]:
    """Hand joints that move the palm (on the hand's root or palm body): zero in every grasp."""
    m = robot.mujoco_model()
    root = robot._hand_root_name()
    palm = robot.config.hand.palm_link
    return [n for n in robot.hand_joint_names if m.body(int(m.joint(n).bodyid[0])).name in (root, palm)]


def finger_joint_names(robot: RobotDescription) -> list[str]:
    """The hand joints a grasp stores (22 for the Shadow hand), in the description's order."""
    wrist = set(wrist_joint_names(robot))
    return [n for n in robot.hand_joint_names if n not in wrist]


def build_hand_spec(robot: RobotDescription, physics_hz: float = 500.0) -> mujoco.MjSpec:
    """The robot's hand alone on a mocap body `hand_base`, gravity off.

    Element names carry the prefix `HAND_PREFIX` (`hand__rh_FFJ3`): attaching copies the hand's
    actuators, couplings and self-collision pairs, which refer to the elements by name.
    """
    source = robot.mujoco_spec()
    spec = mujoco.MjSpec()
    spec.modelname = f"{robot.config.name}_floating_hand"
    spec.compiler.degree = False
    spec.option.timestep = 1.0 / physics_hz
    spec.option.gravity = [0.0, 0.0, 0.0]
    # Same solver settings as the sim cell (dexh2r_sim.cell), so a grasp behaves the same there.
    spec.option.integrator = mujoco.mjtIntegrator.mjINT_IMPLICITFAST
    spec.option.cone = mujoco.mjtCone.mjCONE_ELLIPTIC
    spec.option.noslip_iterations = 2
    base = spec.worldbody.add_body(name="hand_base", mocap=True)
    base.add_frame().attach_body(source.body(robot._hand_root_name()), HAND_PREFIX, "")
    # The hand's wrist joints are left out (rigid at 0, as in every stored grasp): the contact
    # forces of a closing hand would otherwise bend the wrist and the grasp would not be the one tested.
    for name in wrist_joint_names(robot):
        for actuator in list(spec.actuators):
            if actuator.target == HAND_PREFIX + name:
                spec.delete(actuator)
        spec.delete(spec.joint(HAND_PREFIX + name))
    return spec


class GraspTestbed:
    """Floating hand + one free object; grasp closure (synthesis) and the stability test."""

    def __init__(self, robot: RobotDescription, obj, config: StabilityConfig | None = None) -> None:
        self.robot = robot
        self.obj = obj
        self.config = c = config or StabilityConfig()
        spec = build_hand_spec(robot, c.physics_hz)
        body = add_object_body(spec, obj, name="object")
        if c.density is not None:
            body.mass = c.density * obj.volume
            body.fullinertia = list(np.asarray(body.fullinertia) * c.density * obj.volume / obj.mass)
        for geom in body.geoms:
            if geom.contype or geom.conaffinity:
                # Pairs within `near` are reported (for the squeeze direction) but push only on contact.
                geom.margin = c.near
                geom.gap = c.near
        self.model = m = spec.compile()
        self.data = mujoco.MjData(m)
        # Hand joint vectors (q_hand) follow robot.hand_joint_names; the model has the finger joints.
        self.finger_names = finger_joint_names(robot)
        self.wrist_names = wrist_joint_names(robot)
        self.finger_idx = np.array([robot.hand_joint_names.index(n) for n in self.finger_names])
        self.names = self.finger_names
        jid = [m.joint(HAND_PREFIX + n).id for n in self.names]
        self.qadr = np.array([m.jnt_qposadr[j] for j in jid])
        self.dadr = np.array([m.jnt_dofadr[j] for j in jid])
        act = {m.joint(int(m.actuator_trnid[a, 0])).name[len(HAND_PREFIX) :]: a for a in range(m.nu)}
        self.act = np.array([act.get(n, -1) for n in self.names])
        self.ctrl_lo = np.array([m.actuator_ctrlrange[a, 0] if a >= 0 else -np.inf for a in self.act])
        self.ctrl_hi = np.array([m.actuator_ctrlrange[a, 1] if a >= 0 else np.inf for a in self.act])
        self.lower = np.array([m.jnt_range[j, 0] for j in jid])
        self.upper = np.array([m.jnt_range[j, 1] for j in jid])
        names = self.names
        self.couplings = [
            (names.index(cp.joint), names.index(cp.follows), cp.ratio) for cp in robot.config.hand.couplings
        ]
        self.base_mocap = m.body_mocapid[m.body("hand_base").id]
        self.object_body = m.body("object").id
        j = m.body_jntadr[self.object_body]
        self.object_qadr = int(m.jnt_qposadr[j])
        self.object_dadr = int(m.jnt_dofadr[j])
        self.object_geom = m.geom_bodyid == self.object_body
        hand_bodies = [b for b in range(m.nbody) if b not in (0, self.object_body)]
        self.hand_geom = np.isin(m.geom_bodyid, hand_bodies) & ((m.geom_contype | m.geom_conaffinity) > 0)
        # For closure: joint i stops once a body it moves (its own link or any link beyond it) touches.
        self.moved_bodies = [self._subtree(int(m.jnt_bodyid[j])) for j in jid]
        self.steps_per_s = 1.0 / m.opt.timestep
        self.force = c.force_per_volume * obj.volume

    def _subtree(self, root: int) -> np.ndarray:
        m = self.model
        out = [root]
        for b in range(root + 1, m.nbody):
            if m.body_parentid[b] in out:
                out.append(b)
        return np.array(out)

    # ---- state ---------------------------------------------------------------------------------
    def reset(self, T_obj_hand: np.ndarray, q_hand: np.ndarray) -> None:
        """Hand root at T_obj_hand (object frame = world), hand joints q_hand, object at rest at 0."""
        m, d = self.model, self.data
        mujoco.mj_resetData(m, d)
        d.mocap_pos[self.base_mocap] = T_obj_hand[:3, 3]
        quat = np.zeros(4)
        mujoco.mju_mat2Quat(quat, np.ascontiguousarray(T_obj_hand[:3, :3]).ravel())
        d.mocap_quat[self.base_mocap] = quat
        q = self.couple(np.asarray(q_hand, dtype=float)[self.finger_idx])
        d.qpos[self.qadr] = q
        d.qpos[self.object_qadr : self.object_qadr + 7] = [0, 0, 0, 1, 0, 0, 0]
        self.set_targets(q)
        mujoco.mj_forward(m, d)

    def full(self, q_fingers: np.ndarray) -> np.ndarray:
        """Finger joints -> the robot's hand joint vector (wrist joints 0)."""
        q = np.zeros(self.robot.n_hand)
        q[self.finger_idx] = q_fingers
        return q

    def couple(self, q_fingers: np.ndarray) -> np.ndarray:
        q = np.array(q_fingers, dtype=float, copy=True)
        for joint, follows, ratio in self.couplings:
            q[joint] = ratio * q[follows]
        return q

    def set_targets(self, q_fingers: np.ndarray) -> None:
        ok = self.act >= 0
        self.data.ctrl[self.act[ok]] = np.clip(q_fingers[ok], self.ctrl_lo[ok], self.ctrl_hi[ok])

    def hand_q(self) -> np.ndarray:
        """Finger joints now (`finger_names` order)."""
        return self.data.qpos[self.qadr].copy()

    def object_position(self) -> np.ndarray:
        return self.data.qpos[self.object_qadr : self.object_qadr + 3].copy()

    def contacts(self) -> list[tuple[int, np.ndarray, np.ndarray, float]]:
        """Hand-object pairs within `near`: (hand body, point, unit normal into the object, distance)."""
        m, d = self.model, self.data
        out = []
        for i in range(d.ncon):
            con = d.contact[i]
            g1, g2 = int(con.geom1), int(con.geom2)
            if self.hand_geom[g1] and self.object_geom[g2]:
                out.append((int(m.geom_bodyid[g1]), con.pos.copy(), con.frame[:3].copy(), float(con.dist)))
            elif self.hand_geom[g2] and self.object_geom[g1]:
                out.append((int(m.geom_bodyid[g2]), con.pos.copy(), -con.frame[:3].copy(), float(con.dist)))
        return out

    def touching(self, slack: float = 5e-4) -> set[int]:
        """Hand bodies touching the object now (distance below `slack`)."""
        return {b for b, _, _, dist in self.contacts() if dist < slack}

    def _hold_object(self) -> None:
        d = self.data
        d.qpos[self.object_qadr : self.object_qadr + 7] = [0, 0, 0, 1, 0, 0, 0]
        d.qvel[self.object_dadr : self.object_dadr + 6] = 0.0

    # ---- synthesis -----------------------------------------------------------------------------
    def close(
        self, T_obj_hand: np.ndarray, q_open: np.ndarray, q_closed: np.ndarray, duration: float | None = None
    ) -> np.ndarray:
        """Fingers from q_open toward q_closed around the pinned object; each joint stops where a
        link it moves touches the object. Returns the hand joints at contact (wrist joints 0)."""
        c = self.config
        duration = c.close_s if duration is None else duration
        self.reset(T_obj_hand, q_open)
        q_open = self.couple(np.asarray(q_open, dtype=float)[self.finger_idx])
        q_closed = self.couple(np.asarray(q_closed, dtype=float)[self.finger_idx])
        target = q_open.copy()
        moving = np.abs(q_closed - q_open) > 1e-9
        n = max(round(duration * self.steps_per_s), 1)
        rate = (q_closed - q_open) / n
        # Coupled followers are driven by the equality, not by a target: they stop with their leader.
        follower = np.zeros(len(self.names), dtype=bool)
        for joint, _, _ in self.couplings:
            follower[joint] = True
        for _ in range(n + int(c.close_settle_s * self.steps_per_s)):
            touched = self.touching()
            if touched:
                for i in np.flatnonzero(moving & ~follower):
                    if touched.intersection(self.moved_bodies[i].tolist()):
                        moving[i] = False
                        target[i] = self.data.qpos[self.qadr[i]]  # hold there: touch, no squeeze
            target[moving] += rate[moving]
            done = (rate > 0) & (target >= q_closed) | (rate < 0) & (target <= q_closed)
            target[done] = q_closed[done]
            self.set_targets(self.couple(target))
            self._hold_object()
            mujoco.mj_step(self.model, self.data)
        self._hold_object()
        mujoco.mj_forward(self.model, self.data)
        return self.full(self.hand_q())

    # ---- the test ------------------------------------------------------------------------------
    def squeeze_targets(self) -> np.ndarray:
        """Joint targets one step along the contact normals (into the object) from the current q."""
        m, d = self.model, self.data
        grad = np.zeros(m.nv)
        jacp = np.zeros((3, m.nv))
        for body, point, normal, _ in self.contacts():
            mujoco.mj_jac(m, d, jacp, None, point, body)
            grad += jacp.T @ normal
        g = grad[self.dadr]
        for joint, follows, ratio in self.couplings:  # a follower's pull acts on its leader
            g[follows] += ratio * g[joint]
            g[joint] = 0.0
        q = self.hand_q()
        scale = np.abs(g).max()
        if scale > 0:
            q = q + self.config.squeeze_rad * g / scale
        return self.couple(np.clip(q, self.lower, self.upper))

    def test(self, T_obj_hand: np.ndarray, q_hand: np.ndarray) -> StabilityResult:
        """The six-direction push test of one grasp (hand joints in `robot.hand_joint_names` order)."""
        c = self.config
        m, d = self.model, self.data
        self.reset(T_obj_hand, q_hand)
        n_contacts = len([1 for *_, dist in self.contacts() if dist < 1e-3])
        self.set_targets(self.squeeze_targets())
        for _ in range(round(c.settle_s * self.steps_per_s)):
            mujoco.mj_step(m, d)
        displacement = self.push(self.force, c.push_s)
        return StabilityResult(displacement < c.max_move, displacement, n_contacts)

    def push(self, force: float, duration_s: float) -> np.ndarray:
        """[6] m: from the current state, the object pushed with `force` (N) along each of
        `DIRECTIONS` (object frame) for `duration_s`, each from that same state; its centre's
        distance from where the grasp put it (the origin) after each."""
        m, d = self.model, self.data
        spec = mujoco.mjtState.mjSTATE_INTEGRATION
        state = np.zeros(mujoco.mj_stateSize(m, spec))
        mujoco.mj_getState(m, d, state, spec)
        steps = round(duration_s * self.steps_per_s)
        displacement = np.zeros(len(DIRECTIONS))
        for k, direction in enumerate(DIRECTIONS):
            mujoco.mj_setState(m, d, state, spec)
            d.xfrc_applied[self.object_body, :3] = force * direction
            for _ in range(steps):
                mujoco.mj_step(m, d)
            displacement[k] = np.linalg.norm(self.object_position())
            d.xfrc_applied[self.object_body] = 0.0
        return displacement
