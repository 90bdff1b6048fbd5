"""The simulated handover cell (ROS-free): robot, table, giver, object, cameras, outcome.

    cell = HandoverCell(CellConfig())
    cell.load_scenario(scenario)               # builds the MuJoCo model for its object and hand side
    cell.command_arm(trajectory)               # JTC semantics (dexh2r_core.trajectory)
    cell.step_until(cell.time + 0.1)           # physics at `physics_hz`; giver and outcome update
    frames = cell.render()                     # RGB-D of every virtual camera
    cell.outcome                               # None while running, then an EpisodeOutcome

The robot model comes from the robot description (`dexh2r_core.robot`); scene elements are added to
its spec. The robot follows JointTrajectory commands like ros2_control's joint_trajectory_controller
over position actuators (gravity compensated, effort-limited); the giver moves along its scenario
trajectory and releases when the robot bears the object's weight. Outcomes:

- `hit-human`: a robot geom touches a giver geom with more than `hit_force_n`;
- `drop`: after the release the object touches the table or the floor, or falls below the table top;
- `success`: after the release the robot alone holds the object (touching the hand, nothing else)
  for `hold_s`;
- `timeout`: the scenario's time limit passes first; `safety-stop`: reported by the controller.

Ground truth (object pose, giver keypoints, contacts) is for evaluation and tests only; the stack
never reads it to decide. Same scenario, seed and commands give the same trajectory bit for bit.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Literal

import mujoco
import numpy as np

from dexh2r_core.calibration import CalibrationSet, load_calibration
from dexh2r_core.config import from_dict
from dexh2r_core.delay_line import DelayLine
from dexh2r_core.paths import config_path
from dexh2r_core.robot.config import load_robot_config
from dexh2r_core.robot.description import RobotDescription
from dexh2r_core.trajectory import JointTrajectory, TrajectoryFollower, validate
from dexh2r_sim.cameras import DepthNoise, RgbdFrame, RgbdRenderer, add_cameras
from dexh2r_sim.giver import Giver, GiverState, add_giver
from dexh2r_sim.objects import ObjectLibrary, SimObject, add_object_body
from dexh2r_sim.scenario import Scenario

Outcome = Literal["success", "hit-human", "drop", "timeout", "safety-stop"]
OUTCOMES: tuple[str, ...] = ("success", "hit-human", "drop", "timeout", "safety-stop")


@dataclass(frozen=True)
class TableConfig:
    """A table whose top is the plane z = top_z; the robot base stands on it."""

    top_z: float = 0.0
    center_xy: tuple[float, float] = (0.45, 0.0)
    size_xy: tuple[float, float] = (1.1, 1.0)
    thickness: float = 0.05
    rgba: tuple[float, float, float, float] = (0.35, 0.3, 0.27, 1.0)


@dataclass(frozen=True)
class OutcomeConfig:
    hold_s: float = 1.0
    hit_force_n: float = 1.0
    drop_margin_m: float = 0.02


@dataclass(frozen=True)
class CellConfig:
    robot: str = "ur5_shadow"
    hand: str | None = None
    physics_hz: float = 500.0
    camera_hz: float = 30.0
    cameras: bool = True
    calibration: str = "calibration/sim_two_cameras.yaml"
    resolution: tuple[int, int] | None = None  # (width, height); None: as calibrated
    depth_noise: DepthNoise = field(default_factory=DepthNoise)
    table: TableConfig = field(default_factory=TableConfig)
    outcome: OutcomeConfig = field(default_factory=OutcomeConfig)
    # Multi-sample anti-aliasing of the camera images. MediaPipe finds the giver in 95 % instead of
    # 88 % of frames with it; the price is half the camera throughput on a CPU renderer (two 424x240
    # cameras no longer keep up with real time on 2 cores) and a depth bias of about -2 mm at 1 m.
    antialias: bool = False
    # Gaussian blur (sigma, px) of the colour images: the optics of a real camera (see RgbdRenderer).
    rgb_blur_px: float = 0.0
    # Measured compute latency of the stack, applied as actuation delay (commands act this late).
    actuation_delay_s: float = 0.0
    # The arm's servos. "drive": as a joint drive, inside its effort limit, the servo's damping
    # acting on the velocity error (the commanded velocity fed forward), so the arm moves at the
    # speeds its description allows. "damped": position servos on joints with passive damping,
    # which caps each joint at effort / damping (the UR5 wrists: 28 / 80 = 0.35 rad/s against
    # the real arm's 3.2 rad/s).
    arm_servo: Literal["damped", "drive"] = "damped"

    def __post_init__(self) -> None:
        if not 100.0 <= self.physics_hz <= 5000.0:
            raise ValueError(f"physics_hz: must be in [100, 5000], got {self.physics_hz}")
        if self.camera_hz <= 0 or self.camera_hz > self.physics_hz:
            raise ValueError(f"camera_hz: must be in (0, physics_hz], got {self.camera_hz}")
        if self.arm_servo not in ("drive", "damped"):
            raise ValueError(f"arm_servo: must be 'drive' or 'damped', got {self.arm_servo!r}")


@dataclass
class EpisodeOutcome:
    outcome: Outcome
    time_s: float  # episode time at which it was decided
    time_to_handover_s: float | None  # release time minus the end of the giver's reach
    released_at_s: float | None
    detail: str = ""


class HandoverCell:
    def __init__(
        self,
        config: CellConfig | None = None,
        *,
        robot: RobotDescription | None = None,
        objects: ObjectLibrary | None = None,
    ) -> None:
        self.config = config or CellConfig()
        # Commands act this late (s): `config.actuation_delay_s`, or what `set_actuation_delay` says.
        self.actuation_delay_s = float(self.config.actuation_delay_s)
        self.robot = robot or RobotDescription(load_robot_config(self.config.robot, hand=self.config.hand))
        self.objects = objects or ObjectLibrary()
        self.calibration: CalibrationSet | None = None
        if self.config.cameras:
            self.calibration = load_calibration(config_path(self.config.calibration))
            if self.config.resolution is not None:
                self.calibration = _with_resolution(self.calibration, *self.config.resolution)
        self.model: mujoco.MjModel | None = None
        self.data: mujoco.MjData | None = None
        self.scenario: Scenario | None = None
        self.sim_object: SimObject | None = None
        self.giver: Giver | None = None
        self._renderer: RgbdRenderer | None = None
        self._model_key: tuple | None = None
        self.outcome: EpisodeOutcome | None = None
        self.frame_index = 0

    # ---- building ----------------------------------------------------------------------------
    def _build(self, scenario: Scenario) -> None:
        obj = self.objects.get(scenario.object_id, scale=scenario.object_scale)
        spec = self.robot.mujoco_spec()
        spec.option.timestep = 1.0 / self.config.physics_hz
        spec.option.integrator = mujoco.mjtIntegrator.mjINT_IMPLICITFAST
        spec.option.cone = mujoco.mjtCone.mjCONE_ELLIPTIC
        spec.option.noslip_iterations = 2  # grasped objects creep without it
        world = spec.worldbody
        t = self.config.table
        world.add_geom(
            name="floor",
            type=mujoco.mjtGeom.mjGEOM_PLANE,
            size=[3, 3, 0.1],
            pos=[0, 0, t.top_z - 0.75],
            rgba=[0.2, 0.2, 0.22, 1],
        )
        world.add_geom(
            name="table",
            type=mujoco.mjtGeom.mjGEOM_BOX,
            size=[t.size_xy[0] / 2, t.size_xy[1] / 2, t.thickness / 2],
            pos=[t.center_xy[0], t.center_xy[1], t.top_z - t.thickness / 2 - 1e-3],
            rgba=list(t.rgba),
        )
        # One light from above and a dim head light: side or brighter lights wash the giver's skin out
        # on one side and MediaPipe stops finding the hand (measured per camera, see docs/).
        world.add_light(
            name="top",
            pos=[0.6, 0.0, 2.5],
            dir=[0.0, 0.0, -1.0],
            type=mujoco.mjtLightType.mjLIGHT_DIRECTIONAL,
            castshadow=0,
            diffuse=[0.6, 0.6, 0.6],
        )
        spec.visual.headlight.ambient = [0.35, 0.35, 0.35]
        spec.visual.headlight.diffuse = [0.4, 0.4, 0.4]
        add_object_body(spec, obj, name="object", pos=(1.6, 0.5, 0.3))
        handles = add_giver(spec, side=scenario.giver_side, name="giver", object_body="object")
        if self.calibration is not None:
            add_cameras(spec, self.calibration, offsamples=4 if self.config.antialias else 0)
        model = spec.compile()
        if self._renderer is not None:
            self._renderer.close()
            self._renderer = None
        self.model = model
        self.data = mujoco.MjData(model)
        self.sim_object = obj
        self.giver = Giver(model, handles)
        self._index_model(handles)

    def _index_model(self, handles) -> None:
        m = self.model
        robot = self.robot
        self.qpos_idx = robot.mujoco_qpos_index(m)
        self.qvel_idx = np.array(
            [m.jnt_dofadr[mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_JOINT, n)] for n in robot.joint_names]
        )
        self.act_idx = {m.joint(m.actuator_trnid[a, 0]).name: a for a in range(m.nu)}
        # "drive" servos: the joint's damping becomes the actuator's velocity gain (inside its
        # force limit); the position target leads by kv / kp x the commanded velocity.
        self.arm_ff_s = np.zeros(robot.n_arm)
        if self.config.arm_servo == "drive":
            for i, n in enumerate(robot.arm_joint_names):
                a, dof = self.act_idx.get(n), self.qvel_idx[i]
                if a is None or m.actuator_gainprm[a, 0] <= 0:
                    continue
                kv = float(m.dof_damping[dof])
                m.dof_damping[dof] = 0.0
                m.actuator_biasprm[a, 2] = -kv
                self.arm_ff_s[i] = kv / m.actuator_gainprm[a, 0]
        base = mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_BODY, robot.config.arm.base_link)
        hand_root = mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_BODY, robot._hand_root_name())
        self.hand_root_body = hand_root
        robot_bodies = _subtree(m, base)
        hand_bodies = _subtree(m, hand_root)
        self.robot_geom = np.isin(m.geom_bodyid, robot_bodies)
        self.hand_geom = np.isin(m.geom_bodyid, hand_bodies)
        self.giver_geom = np.zeros(m.ngeom, dtype=bool)
        self.giver_geom[self.giver.geom_ids] = True
        self.object_body = mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_BODY, "object")
        self.object_geom = m.geom_bodyid == self.object_body
        self.env_geom = np.isin(np.arange(m.ngeom), [m.geom("floor").id, m.geom("table").id])
        j = m.body_jntadr[self.object_body]
        self.object_qpos = int(m.jnt_qposadr[j])
        self.object_dof = int(m.jnt_dofadr[j])

    # ---- episodes ----------------------------------------------------------------------------
    def load_scenario(self, scenario: Scenario) -> None:
        """Prepare an episode: rebuild the model when the object or the giver's hand changes."""
        key = (scenario.object_id, scenario.object_scale, scenario.giver_side)
        if key != self._model_key:
            self._build(scenario)
            self._model_key = key
        self.scenario = scenario
        self.reset()

    def reset(self) -> None:
        if self.scenario is None:
            raise RuntimeError("load_scenario first")
        m, d = self.model, self.data
        mujoco.mj_resetData(m, d)
        q0 = self.robot.home()
        d.qpos[self.qpos_idx] = q0
        self._pending = DelayLine()  # commands on their way (actuation_delay_s)
        self.arm = TrajectoryFollower(self.robot.arm_joint_names, q0[: self.robot.n_arm])
        self.hand = TrajectoryFollower(self.robot.hand_joint_names, q0[self.robot.n_arm :])
        # The giver plans its grasp on the object's geoms in the model (exact shapes, not a box).
        self.giver.reset(d, self.scenario)
        self._apply_ctrl(0.0)
        mujoco.mj_forward(m, d)
        self.outcome = None
        self._held_since: float | None = None
        self._safety_stop: str | None = None
        self.frame_index = 0
        self.contacts_robot_giver: list[tuple[str, str, float]] = []

    @property
    def time(self) -> float:
        return float(self.data.time)

    @property
    def dt(self) -> float:
        return float(self.model.opt.timestep)

    # ---- commands ----------------------------------------------------------------------------
    def command_arm(self, trajectory: JointTrajectory) -> None:
        """JTC semantics; raises TrajectoryError (and keeps the previous command) on bad input."""
        self._command(self.arm, trajectory)

    def command_hand(self, trajectory: JointTrajectory) -> None:
        self._command(self.hand, trajectory)

    def _command(self, follower: TrajectoryFollower, trajectory: JointTrajectory) -> None:
        """The command reaches its follower `actuation_delay_s` after now: the whole command
        stream acts that late, a controller streaming a trajectory per tick included (its
        trajectories start on receipt; each replaces the last)."""
        delay = self.actuation_delay_s
        if delay > 0.0 or len(self._pending):
            validate(trajectory, follower.joint_names)  # bad input is refused now, not on arrival
        if delay > 0.0 and trajectory.start_time > 0:
            trajectory = replace(trajectory, start_time=trajectory.start_time + delay)
        self._pending.post(
            self.time + delay, self.time, lambda at: follower.set_trajectory(trajectory, now=at)
        )

    def set_actuation_delay(self, seconds: float) -> None:
        """Commands act `seconds` late from now on (the stack's measured compute latency)."""
        if not (np.isfinite(seconds) and 0.0 <= seconds <= 1.0):
            raise ValueError(f"actuation delay: must be in [0, 1] s, got {seconds}")
        self.actuation_delay_s = float(seconds)

    def hold_position(self) -> None:
        """Stop where the robot is (e-stop, bad input): both controllers hold the current joints."""
        q = self.data.qpos[self.qpos_idx]
        self._pending.clear()  # commands still on their way are not carried out either
        self.arm.hold(q[: self.robot.n_arm])
        self.hand.hold(q[self.robot.n_arm :])

    def report_safety_stop(self, reason: str) -> None:
        """The controller's safety layer stopped the robot: ends the episode as `safety-stop`."""
        self._safety_stop = reason
        self.hold_position()

    def _apply_ctrl(self, t: float) -> None:
        self._pending.deliver(t)
        q_arm, v_arm, _ = self.arm.sample(t)
        q = np.concatenate([q_arm + self.arm_ff_s * v_arm, self.robot.apply_couplings(self.hand.position(t))])
        for name, value in zip(self.robot.joint_names, q, strict=True):
            a = self.act_idx.get(name)
            if a is not None:
                self.data.ctrl[a] = value

    # ---- stepping ----------------------------------------------------------------------------
    def step(self, n: int = 1) -> None:
        m, d = self.model, self.data
        for _ in range(n):
            if self.outcome is not None and self.giver.state is GiverState.WITHDRAWN:
                pass  # keep simulating: a finished episode still shows the robot holding
            self._apply_ctrl(d.time)
            self.giver.step(m, d)
            mujoco.mj_step(m, d)
            if self.outcome is None:
                self._update_outcome()

    def step_until(self, t: float) -> None:
        n = int(np.floor((t - self.time) / self.dt + 1e-9))
        if n > 0:
            self.step(n)

    def _update_outcome(self) -> None:
        m, d = self.model, self.data
        cfg = self.config.outcome
        tau = self.giver.episode_time(d)
        object_touches = {"hand": False, "robot_other": False, "env": False, "giver": False}
        for i in range(d.ncon):
            c = d.contact[i]
            g1, g2 = int(c.geom1), int(c.geom2)
            if (self.robot_geom[g1] and self.giver_geom[g2]) or (self.robot_geom[g2] and self.giver_geom[g1]):
                force = np.zeros(6)
                mujoco.mj_contactForce(m, d, i, force)
                if force[0] > cfg.hit_force_n:
                    self._finish(
                        "hit-human",
                        tau,
                        f"robot geom {m.geom(g1).name} / {m.geom(g2).name}: {force[0]:.1f} N",
                    )
                    return
            if self.object_geom[g1] or self.object_geom[g2]:
                other = g2 if self.object_geom[g1] else g1
                if self.hand_geom[other]:
                    object_touches["hand"] = True
                elif self.robot_geom[other]:
                    object_touches["robot_other"] = True
                elif self.env_geom[other]:
                    object_touches["env"] = True
                elif self.giver_geom[other]:
                    object_touches["giver"] = True
        if self._safety_stop is not None:
            self._finish("safety-stop", tau, self._safety_stop)
            return
        released = self.giver.released_at is not None
        if released:
            z = d.xpos[self.object_body][2]
            low = z < self.config.table.top_z + cfg.drop_margin_m
            if object_touches["env"] or low:
                self._finish("drop", tau, "object on the table/floor after the release")
                return
            alone = object_touches["hand"] and not object_touches["giver"]
            if alone:
                if self._held_since is None:
                    self._held_since = tau
                elif tau - self._held_since >= cfg.hold_s:
                    self._finish("success", tau, "robot holds the object")
                    return
            else:
                self._held_since = None
        if tau >= self.scenario.time_limit_s:
            self._finish("timeout", tau, "time limit reached")

    def _finish(self, outcome: Outcome, tau: float, detail: str) -> None:
        released = self.giver.released_at
        tth = None if released is None else released - self.giver.trajectory.reach_end_s
        self.outcome = EpisodeOutcome(outcome, tau, tth, released, detail)

    def episode_record(self, episode: int, **extra) -> dict:
        """The results-folder record of the finished episode (one line of episodes.jsonl)."""
        if self.outcome is None:
            raise RuntimeError("the episode has no outcome yet")
        s, o = self.scenario, self.outcome
        return {
            "episode": episode,
            "scenario": s.name,
            "object_id": s.object_id,
            "difficulty": s.difficulty,
            "seed": s.seed,
            "outcome": o.outcome,
            "time_s": o.time_s,
            "time_to_handover_s": o.time_to_handover_s,
            "released_at_s": o.released_at_s,
            "detail": o.detail,
            **extra,
        }

    # ---- observations --------------------------------------------------------------------------
    def joint_state(self) -> tuple[list[str], np.ndarray, np.ndarray, np.ndarray]:
        d = self.data
        effort = np.array(
            [d.actuator_force[self.act_idx[n]] if n in self.act_idx else 0.0 for n in self.robot.joint_names]
        )
        return self.robot.joint_names, d.qpos[self.qpos_idx].copy(), d.qvel[self.qvel_idx].copy(), effort

    def object_pose(self) -> np.ndarray:
        """Ground truth: 4x4 world pose of the object frame (centre of mass)."""
        T = np.eye(4)
        T[:3, :3] = self.data.xmat[self.object_body].reshape(3, 3)
        T[:3, 3] = self.data.xpos[self.object_body]
        return T

    def wrist_force(self) -> np.ndarray:
        """The force the arm exerts on the hand at the wrist, world frame (N) [3]: what a
        force-torque sensor between the arm's flange and the hand reads (its force part, turned
        into the world frame), the hand's own weight and inertia included. Holding nothing
        still, it is the hand's weight, upward."""
        mujoco.mj_rnePostConstraint(self.model, self.data)  # fills cfrc_int (not computed by mj_step)
        # cfrc_int: the spatial force from the parent body, [torque, force]; its force part is in
        # world orientation whatever the reference point.
        return self.data.cfrc_int[self.hand_root_body, 3:].copy()

    def robot_giver_contacts(self) -> list[dict]:
        """Ground truth: every contact between a robot geom and a giver geom now (name, force)."""
        m, d = self.model, self.data
        out = []
        force = np.zeros(6)
        for i in range(d.ncon):
            c = d.contact[i]
            g1, g2 = int(c.geom1), int(c.geom2)
            if (self.robot_geom[g1] and self.giver_geom[g2]) or (self.robot_geom[g2] and self.giver_geom[g1]):
                robot, giver = (g1, g2) if self.robot_geom[g1] else (g2, g1)
                mujoco.mj_contactForce(m, d, i, force)
                out.append(
                    {
                        "robot_geom": m.geom(robot).name or f"geom{robot}",
                        "robot_body": m.body(m.geom_bodyid[robot]).name,
                        "giver_geom": m.geom(giver).name,
                        "normal_force_n": float(force[0]),
                        "position": c.pos.tolist(),
                    }
                )
        return out

    def giver_keypoints(self) -> np.ndarray:
        return self.giver.keypoints(self.model, self.data)

    def frame_pose(self, site: str) -> np.ndarray:
        """4x4 world pose of a named site of the robot (e.g. `flange`, `index_tip`)."""
        s = self.data.site(site)
        T = np.eye(4)
        T[:3, :3] = s.xmat.reshape(3, 3)
        T[:3, 3] = s.xpos
        return T

    def body_pose(self, body: str) -> np.ndarray:
        b = self.data.body(body)
        T = np.eye(4)
        T[:3, :3] = b.xmat.reshape(3, 3)
        T[:3, 3] = b.xpos
        return T

    # ---- cameras -------------------------------------------------------------------------------
    def render(self) -> list[RgbdFrame]:
        """RGB-D of every camera now (creates the GL context on first use, in this thread)."""
        if self.calibration is None:
            raise RuntimeError("cameras are disabled in this cell (CellConfig.cameras = false)")
        if self._renderer is None:
            self._renderer = RgbdRenderer(
                self.model, self.calibration, self.config.depth_noise, rgb_blur_px=self.config.rgb_blur_px
            )
        frames = self._renderer.render(self.data, frame_index=self.frame_index)
        self.frame_index += 1
        return frames

    def close(self) -> None:
        if self._renderer is not None:
            self._renderer.close()
            self._renderer = None


def _subtree(model: mujoco.MjModel, root: int) -> list[int]:
    out = [root]
    for b in range(root + 1, model.nbody):
        if model.body_parentid[b] in out:
            out.append(b)
    return out


def _with_resolution(calibration: CalibrationSet, width: int, height: int) -> CalibrationSet:
    from dataclasses import replace

    cams = [replace(c, intrinsics=c.intrinsics.scaled(width, height)) for c in calibration.cameras]
    return replace(calibration, cameras=cams)


def cell_config_from_dict(data: dict) -> CellConfig:
    return from_dict(CellConfig, data, source="cell config")
