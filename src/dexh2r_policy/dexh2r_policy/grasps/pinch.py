"""Fingertip pinch grasps for the pools: the handover grasp on the object's free part (ROS-free).

    gen = PinchGenerator(robot)                     # 25 approach directions x 8 headings
    T_obj_hand, finger_q = gen.generate(obj, 200)   # object frame, hand root, wrist joints 0
    pool = generate_pool(robot, obj, 200, generator=gen)   # + the paper's stability test

Why: the paper's pool (`grasps/pool.py`) holds whole-hand grasps. In a handover the giver's
fingers hold the lower part of the object, so those grasps collide with the giver, and the
privileged expert that records the training episodes (`dexh2r_sim.scripted`) takes the object
with a three-finger pinch from above instead. Without pinches in the pool, a policy that
imitates the expert approaches a grasp that is not in its pool: the offline benchmark's switch
(hand within 10 cm of a pool grasp) fires late, after the fingers have touched the object
(docs/policy_motionnet.md, "Grasp families").

How: each candidate is the expert's own pinch optimisation (`scripted.plan_pinch`: thumb, index
and middle tips on the surface `depth` below the top along the approach, antipodal where the
surface allows, every other hand part clear, the palm facing the approach), solved with the real
arm from above for the object turned so that the candidate's approach direction (object frame)
points up at a reachable spot in front of the robot. There is no giver: the pinch sits on the
object's top part whatever holds the rest, and the run-time giver filter picks among them. The
grasp is stored as the pools store grasps: the hand root pose with the hand's wrist joints at 0
that puts the palm where the pinch put it (the pinch also uses the two wrist joints), and the
contact posture of the 22 finger joints.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy.spatial.transform import Rotation

from dexh2r_core.robot.description import RobotDescription
from dexh2r_policy.grasps.pool import _frame_from_z, fibonacci_sphere, subset_indices
from dexh2r_policy.grasps.stability import finger_joint_names

UP = np.array([0.0, 0.0, 1.0])


@dataclass(frozen=True)
class PinchConfig:
    n_directions: int = 25  # approach directions in the object frame (Fibonacci lattice)
    # The object turned about the approach: every palm heading, 45 deg apart (a pinch is not
    # symmetric under a half turn: thumb and fingers swap), so that some pinch of every
    # direction needs at most a 22.5 deg turn of the arm's wrist from where it comes.
    yaws_deg: tuple[float, ...] = (0.0, 45.0, 90.0, 135.0, 180.0, 225.0, 270.0, 315.0)
    # Where the pinch section's centre is placed (arm base frame, m): in front of the robot at
    # the giver's offer height of the scenario sets, where the arm reaches down comfortably.
    position: tuple[float, float, float] = (0.60, 0.0, 0.35)
    script: dict = field(default_factory=dict)  # `dexh2r_sim.scripted.ScriptConfig` overrides
    seed: int = 0

    def __post_init__(self) -> None:
        if self.n_directions < 1 or not self.yaws_deg:
            raise ValueError("n_directions must be >= 1 and yaws_deg non-empty")

    @property
    def n_candidates(self) -> int:
        return self.n_directions * len(self.yaws_deg)


class PinchGenerator:
    """Pinch candidates for an object; `generate_pool(..., generator=PinchGenerator(robot))`
    adds the stability test. `last_costs`: the pinch optimisation's final cost per candidate
    (0: every constraint met; the expert accepts < `ScriptConfig.max_plan_cost`)."""

    name = "pinch"

    def __init__(self, robot: RobotDescription, config: PinchConfig | None = None, stability=None) -> None:
        from dexh2r_control.ik import ArmIk, IkConfig
        from dexh2r_policy.episodes import root_to_palm_at_zero
        from dexh2r_policy.grasps.stability import StabilityConfig
        from dexh2r_sim.scripted import RobotGeometry, ScriptConfig

        self.robot = robot
        self.config = config or PinchConfig()
        self.stability = stability or StabilityConfig()
        self.script = ScriptConfig(**self.config.script)
        self.fingers = finger_joint_names(robot)
        self.finger_idx = np.array([robot.hand_joint_names.index(n) for n in self.fingers])
        self.geo = RobotGeometry(robot)
        self.ik = ArmIk(robot, robot.config.hand.palm_link, IkConfig(max_iterations=100))
        self.T_palm_root = np.linalg.inv(root_to_palm_at_zero(robot))
        home = robot.home()
        self.geo.set(home)
        a = self.geo.palm_pose()[:3, :3] @ self.geo.seed_axis  # the seed pinch's axis at home ...
        a -= (a @ UP) * UP
        self.axis = a / np.linalg.norm(a)  # ... made horizontal: the arm keeps its wrist turn
        self.home = home
        self.last_candidates: np.ndarray = np.zeros(0, dtype=int)
        self.last_costs: np.ndarray = np.zeros(0)

    def testbed(self, obj):
        from dexh2r_policy.grasps.stability import GraspTestbed

        return GraspTestbed(self.robot, obj, self.stability)

    def candidates(self) -> list[tuple[np.ndarray, float]]:
        """(approach direction in the object frame, yaw deg), row = direction * n_yaws + yaw."""
        c = self.config
        return [(d, yaw) for d in fibonacci_sphere(c.n_directions) for yaw in c.yaws_deg]

    def object_pose(self, obj, sdf, u_obj: np.ndarray, yaw_deg: float) -> np.ndarray:
        """World pose of the object with u_obj pointing up, turned by yaw about it, the centre of
        its pinch section (`depth` below the top) at `position`."""
        R = Rotation.from_rotvec(np.deg2rad(yaw_deg) * UP).as_matrix() @ _frame_from_z(u_obj).T
        _, centroid = sdf.section(np.asarray(u_obj, float), self.script.depth)
        T = np.eye(4)
        T[:3, :3] = R
        T[:3, 3] = np.asarray(self.config.position, float) - R @ centroid
        return T

    def plan(self, obj, sdf, u_obj: np.ndarray, yaw_deg: float) -> tuple[np.ndarray, np.ndarray, float]:
        """One pinch: (T_obj_hand root pose, finger joints, optimisation cost); cost inf when the
        arm cannot reach the seed pose."""
        from dexh2r_sim.scripted import plan_pinch, seed_palm_pose

        T_obj = self.object_pose(obj, sdf, u_obj, yaw_deg)
        T_seed = seed_palm_pose(self.geo, UP, self.axis, np.asarray(self.config.position, float))
        result = self.ik.solve(T_seed, self.home)
        if not result.success:
            return np.full((4, 4), np.nan), np.full(len(self.fingers), np.nan), float("inf")
        q = result.q_arm
        grasp = plan_pinch(self.geo, sdf, T_obj, UP, self.axis, UP, None, q, q, self.script)
        T_obj_hand = grasp.T_obj_palm @ self.T_palm_root
        return T_obj_hand, grasp.q_contact[self.finger_idx], float(grasp.cost)

    def generate(self, obj, n: int, bed=None, progress=None) -> tuple[np.ndarray, np.ndarray]:
        """(T_obj_hand [n, 4, 4], finger_q [n, F]), n spread over the direction x yaw grid.
        Candidates the arm cannot reach are dropped (`last_candidates` names the rest)."""
        from dexh2r_sim.scripted import ObjectSdf

        sdf = ObjectSdf(obj)
        grid = self.candidates()
        idx = subset_indices(len(grid), n)
        T_all, q_all, costs, kept = [], [], [], []
        for i in idx:
            T, q, cost = self.plan(obj, sdf, *grid[i])
            if np.isfinite(cost):
                T_all.append(T)
                q_all.append(q)
                costs.append(cost)
                kept.append(i)
            if progress is not None:
                progress(1)
        self.last_candidates = np.asarray(kept, dtype=int)
        self.last_costs = np.asarray(costs, dtype=float)
        F = len(self.fingers)
        return np.asarray(T_all).reshape(-1, 4, 4), np.asarray(q_all).reshape(-1, F)

    def full_q(self, finger_q: np.ndarray) -> np.ndarray:
        """Finger joints -> all hand joints (wrist joints 0, couplings applied)."""
        q = np.zeros((*np.shape(finger_q)[:-1], self.robot.n_hand))
        q[..., self.finger_idx] = finger_q
        return self.robot.apply_couplings(q)
