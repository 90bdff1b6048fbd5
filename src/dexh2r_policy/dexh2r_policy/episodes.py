"""Handover episodes from the sim cell in the DexH2R layout: training data for the motion policies.

    scenarios = episode_scenarios("scenarios/train.yaml", n=100, library=ObjectLibrary())
    recorder = EpisodeRecorder(EpisodeConfig(rate_hz=10.0))
    rec = recorder.run(scenarios[0])           # the privileged expert hands it over, recorded
    if rec.success:
        write_sequence(out, rec.sequence)      # dexh2r_policy.data.dexh2r_layout

The giver follows a scenario (easy: hold, hard: drift / arc / random walk) and the robot is driven
by the privileged scripted expert (`dexh2r_sim.scripted.ScriptedHandover`, mode `grasp`: it reads
the true object pose and shape and the giver's pose), exactly as `dexh2r sim --controller
scripted` runs it (expert update every `control_period_s` of sim time). Frames are taken every
1 / `rate_hz` s of sim time from t = 0 to the episode's outcome:

- `qpos` [T, 30]: the hand root pose in world + the 24 Shadow joints in the paper's order (the
  robot description's hand joint order, `rh_WRJ2, rh_WRJ1, rh_FFJ4 .. rh_THJ1`). The root frame is
  the hand's mount frame (`rh_wrist` body, where the hand bolts to the arm) *with the hand's own
  wrist joints folded in*: root = palm pose x inverse(palm pose in the mount frame at wrist 0), and
  the two wrist joints are written as 0 (the paper's learned models zero them). Forward kinematics
  of the stored 30 numbers therefore puts the palm and fingers exactly where they were, and the
  frame is the one the grasp pools use (`dexh2r_policy.grasps.pool`: wrist mount, wrist joints 0).
  The measured arm + hand joints (wrist included) are kept in `robot_joints.pt` [T, 30].
- `obj_pose` [T, 4, 4]: the true object pose (object frame = centre of mass, library axes).
- `real_obj_pcd_xyz` [T, N, 3]: the object cloud the runtime would see (`ObjectCloudRecorder`).
- `giver_keypoints` [T, 21, 3]: the giver's hand keypoints (world, MediaPipe order).
- `grasp_begin_frame_index`: the first frame at or after the moment the expert starts closing.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal

import numpy as np
from scipy.spatial.transform import Rotation

from dexh2r_policy.data.dexh2r_layout import DexH2RSequence, SequenceId

CloudSource = Literal["depth", "surface"]
# Per-frame origin of the cloud (counted in each episode's info).
OBSERVED, CARRIED, SURFACE = 0, 1, 2
SOURCE_NAMES = ("observed", "carried", "surface")


@dataclass(frozen=True)
class EpisodeConfig:
    # 10 Hz: MotionNet's 10 predicted frames then span 1 s and its 5 inputs 0.5 s, and the
    # paper's goal alignment (about 2 cm per frame when far) moves 20 cm/s, the speed range of
    # the Hard givers (5-25 cm/s). The paper's own frame rate is not published.
    rate_hz: float = 10.0
    control_period_s: float = 0.01  # expert update period (sim s), as `dexh2r sim`
    cloud: CloudSource = "depth"  # rendered depth (runtime path) or camera-facing surface samples
    n_points: int = 1024  # the object tracker's output size (MotionNet samples 1024)
    min_observed_points: int = 20  # fewer after segmentation: the frame's cloud is filled in
    robot: str = "ur5_shadow"
    physics_hz: float = 500.0
    keep_scale: bool = False  # False: objects at scale 1, the scale the grasp pools are made at
    n_subjects: int = 10  # giver "subjects": groups of motion seeds
    val_subjects: int = 1
    test_subjects: int = 1
    surface_points: int = 4096  # obj_surface_pcd_4096/<object>.ply

    def __post_init__(self) -> None:
        if not 0.0 < self.rate_hz <= 1.0 / self.control_period_s:
            raise ValueError(f"rate_hz: must be in (0, {1.0 / self.control_period_s:g}], got {self.rate_hz}")
        if self.cloud not in ("depth", "surface"):
            raise ValueError(f"cloud: must be 'depth' or 'surface', got {self.cloud!r}")
        if self.n_points < 1:
            raise ValueError(f"n_points: must be >= 1, got {self.n_points}")
        if self.n_subjects < 1 or self.val_subjects + self.test_subjects >= self.n_subjects:
            raise ValueError(
                "n_subjects must exceed val_subjects + test_subjects (at least one train subject)"
            )


# ---- names and splits ----------------------------------------------------------------------------


def object_name(object_id: str, scale: float = 1.0) -> str:
    """The layout's object folder name: `prim/mug` -> `prim__mug` (`@0.9` appended off scale 1),
    the stem of the object's grasp pool file (`dexh2r_policy.grasps.pool.pool_filename`)."""
    from dexh2r_policy.grasps.pool import pool_filename

    return pool_filename(object_id, scale)[: -len(".npz")]


def object_entry(object_id: str, scale: float, held_out: set[str], pools: str) -> dict:
    """An `objects.json` entry: library id, scale, split (test when held out), grasp pool file."""
    from dexh2r_policy.grasps.pool import pool_filename

    return {
        "object_id": object_id,
        "scale": scale,
        "split": "test" if object_id in held_out else "train",
        "pool_file": str(Path(pools) / pool_filename(object_id, scale)),
    }


def write_objects(
    root: Path, objects: dict[str, dict], pools: str, library, surface_points: int = 4096
) -> None:
    """A dataset root's object files: per object (`object_entry`s by layout name) its surface samples
    with normals (seed 0) and its mesh, each kept when already there; then `objects.json`."""
    import json

    from dexh2r_policy.data.dexh2r_layout import write_object_surface
    from dexh2r_sim.objects import sample_surface_points

    for name, o in objects.items():
        obj = library.get(o["object_id"], scale=o["scale"])
        if not (root / "obj_surface_pcd_4096" / f"{name}.ply").exists():
            points, normals = sample_surface_points(obj, n=surface_points, seed=0)
            write_object_surface(root, name, points, normals)
        mesh_path = root / "object_model" / f"{name}.obj"
        if not mesh_path.exists():
            mesh_path.parent.mkdir(parents=True, exist_ok=True)
            obj.mesh.export(mesh_path)
    (root / "objects.json").write_text(json.dumps({"pools": pools, "objects": objects}, indent=2))


def subject_names(config: EpisodeConfig) -> tuple[list[str], list[str], list[str]]:
    """(train, val, test) subject names: `giver00` ...; the last ones are val, then test."""
    names = [f"giver{k:02d}" for k in range(config.n_subjects)]
    n_tr = config.n_subjects - config.val_subjects - config.test_subjects
    return names[:n_tr], names[n_tr : n_tr + config.val_subjects], names[n_tr + config.val_subjects :]


def subject_of(scenario, config: EpisodeConfig) -> str:
    """A scenario's giver subject: its motion seed modulo the number of subjects (so a split by
    subject is a split by motion seed)."""
    return f"giver{scenario.seed % config.n_subjects:02d}"


def episode_scenarios(
    path: str | Path,
    n: int,
    library,
    held_out_fraction: float = 0.2,
    held_out_objects: list[str] | None = None,
    keep_scale: bool = False,
) -> list:
    """n scenarios for episodes from a scenario-set file.

    A generator file gives n - round(n * held_out_fraction) of its own scenarios plus the rest
    from the same generator with another seed (+1) and its objects replaced by `held_out_objects`
    (default: the object library's held-out primitives), named `<prefix>_heldout_<i>`. A list file
    gives its first n scenarios (its objects decide the split). Objects are put at scale 1 unless
    `keep_scale`.
    """
    from dexh2r_sim.scenario import generate_scenarios, load_scenario_set

    sset = load_scenario_set(path, split_objects=library.ids)
    if sset.generator is None:
        scenarios = list(sset.scenarios[:n])
    else:
        gen = sset.generator
        n_held = round(n * held_out_fraction) if held_out_objects != [] else 0
        ids = None if gen.split is None else list(library.ids(gen.split))
        scenarios = generate_scenarios(replace(gen, n=n - n_held), ids) if n > n_held else []
        if n_held:
            held = held_out_objects or [i for i in library.ids("test") if i.startswith("prim/")]
            prefix = f"{gen.name_prefix}_heldout"
            gen_held = replace(
                gen, n=n_held, seed=gen.seed + 1, name_prefix=prefix, object_ids=tuple(held), split=None
            )
            scenarios += generate_scenarios(gen_held)
    if not keep_scale:
        scenarios = [replace(s, object_scale=1.0) for s in scenarios]
    return scenarios


# ---- the object cloud ----------------------------------------------------------------------------


class ObjectCloudRecorder:
    """The object cloud of one frame, through the runtime's preprocessing with the true pose.

    `depth`: every camera's rendered depth (the cell's sensor noise model) is back-projected into
    world and fused around the object (`dexh2r_core.pointcloud.fuse_depth`), voxel-downsampled,
    the robot's and the giver hand's points removed, and the points within `output_inlier_m` of the
    posed object model kept, then sampled to exactly `n_points` by `pointcloud.sample_fixed`: the
    object tracker's steps and settings (`dexh2r_perception.object_tracking.TrackerConfig`), with
    the true pose in place of the registered one. A frame with fewer than `min_observed_points`
    left (the hands hide the object) is filled in: the last observed cloud carried along by the
    object's motion (as a tracker holds its last segment), or, before any, the model's surface
    samples facing a camera. `surface`: always the latter (no rendering).
    """

    def __init__(self, cell, config: EpisodeConfig) -> None:
        from dexh2r_core.pointcloud import DepthProjector
        from dexh2r_perception.object_tracking import RobotPointModel, TrackerConfig

        self.config = config
        self.tracker = TrackerConfig(n_points=config.n_points)
        self.cameras = [cam.T[:3, 3].copy() for cam in cell.calibration.cameras]
        self.projectors = []
        if config.cloud == "depth":
            for cam in cell.calibration.cameras:
                intr = cam.intrinsics
                self.projectors.append(
                    DepthProjector(intr.K, intr.width, intr.height, cam.T, cam.depth_scale_m)
                )
            self.robot_points = RobotPointModel(
                cell.robot, self.tracker.robot_point_spacing_m, self.tracker.seed
            )
        self.model = None

    def reset(self, sim_object) -> None:
        from dexh2r_perception.object_tracking import ObjectModel

        if self.model is None or self.model.object_id != sim_object.id or self._scale != sim_object.scale:
            self.model = ObjectModel.from_sim_object(sim_object, n=self.tracker.model_points)
            self._scale = sim_object.scale
        self._last: np.ndarray | None = None  # last observed cloud, object frame

    def __call__(self, cell, T: np.ndarray, keypoints: np.ndarray) -> tuple[np.ndarray, int]:
        """(points [n_points, 3] float32 world, source: OBSERVED / CARRIED / SURFACE) for the
        object at pose T with the giver's hand at `keypoints` (world)."""
        from dexh2r_core.pointcloud import sample_fixed

        cfg = self.tracker
        if self.config.cloud == "depth":
            obj = self._observed(cell, T, keypoints)
            if len(obj) >= self.config.min_observed_points:
                self._last = (obj - T[:3, 3]) @ T[:3, :3]
                return sample_fixed(obj, cfg.n_points, cfg.sample_method, cfg.sample_seed), OBSERVED
            if self._last is not None:
                pts = self._last @ T[:3, :3].T + T[:3, 3]
                return sample_fixed(pts, cfg.n_points, cfg.sample_method, cfg.sample_seed), CARRIED
        return sample_fixed(self._facing(T), cfg.n_points, cfg.sample_method, cfg.sample_seed), SURFACE

    def _observed(self, cell, T: np.ndarray, keypoints: np.ndarray) -> np.ndarray:
        from dexh2r_core.pointcloud import Box, fuse_depth, voxel_downsample
        from dexh2r_perception.object_tracking import hand_mask, robot_mask

        cfg = self.tracker
        frames = cell.render()
        c = T[:3, 3]
        r = self.model.radius + cfg.output_inlier_m
        box = Box(tuple(c - r), tuple(c + r))
        pts = voxel_downsample(fuse_depth(self.projectors, [f.depth_mm for f in frames], box), cfg.voxel_m)
        pts = pts.astype(np.float64)
        if len(pts):
            names, q = cell.joint_state()[:2]
            lo, hi = pts.min(axis=0) - cfg.robot_margin_m, pts.max(axis=0) + cfg.robot_margin_m
            robot_pts = self.robot_points.points_world(dict(zip(names, q.tolist(), strict=True)), lo, hi)
            if len(robot_pts):
                pts = pts[~robot_mask(pts, robot_pts, cfg.robot_margin_m)]
        if len(pts):
            pts = pts[~hand_mask(pts, keypoints, cfg)]
        if len(pts):
            d, _ = self.model.tree.query((pts - c) @ T[:3, :3], k=1)
            pts = pts[d <= cfg.output_inlier_m]
        return pts

    def _facing(self, T: np.ndarray) -> np.ndarray:
        return facing_points(self.model.points, self.model.normals, T, self.cameras)


def facing_points(points: np.ndarray, normals: np.ndarray, T: np.ndarray, cameras) -> np.ndarray:
    """Surface samples posed by T (world) whose normal faces at least one camera position (no
    occlusion); all of them when none does."""
    p = points @ T[:3, :3].T + T[:3, 3]
    n = normals @ T[:3, :3].T
    facing = np.zeros(len(p), bool)
    for eye in cameras:
        facing |= np.einsum("ij,ij->i", n, eye - p) > 0.0
    return p[facing] if facing.any() else p


# ---- recording -------------------------------------------------------------------------------------


@dataclass
class EpisodeRecord:
    scenario: object
    outcome: str
    detail: str
    time_s: float
    time_to_handover_s: float | None
    wall_s: float
    sequence: DexH2RSequence | None  # None for a failed episode (never written as training data)
    robot_joints: np.ndarray | None = None  # [T, 30] measured arm + hand joints
    close_time_s: float | None = None
    cloud_sources: dict[str, int] = field(default_factory=dict)

    @property
    def success(self) -> bool:
        return self.outcome == "success"


class EpisodeRecorder:
    """One sim cell (cameras on for `depth` clouds), the expert, and the per-frame recording."""

    def __init__(self, config: EpisodeConfig | None = None) -> None:
        os.environ.setdefault("MUJOCO_GL", "egl")
        from dexh2r_sim.cell import CellConfig, HandoverCell

        self.config = config or EpisodeConfig()
        c = self.config
        # Cameras are always built: the `surface` cloud still needs their positions.
        self.cell = HandoverCell(CellConfig(robot=c.robot, cameras=True, physics_hz=c.physics_hz))
        robot = self.cell.robot
        self.palm_link = robot.config.hand.palm_link
        self.n_arm = robot.n_arm
        self.wrist_idx = _wrist_indices(robot)
        self.T_palm_root = np.linalg.inv(root_to_palm_at_zero(robot))
        self.cloud = ObjectCloudRecorder(self.cell, c)
        self._scratch = None  # (model, MjData) for consistent forward kinematics

    def close(self) -> None:
        self.cell.close()

    def _snapshot(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(qpos [30]: root pose + 24 joints, wrist folded into the root; robot joints [6 + 24];
        object pose [4, 4]; giver keypoints [21, 3]), all of the current state.

        After mj_step the cell's body poses are those of the state before the step (2 ms old),
        its joint positions are new: forward kinematics on a scratch copy makes them agree,
        without touching the cell's data (which the expert reads).
        """
        import mujoco

        cell = self.cell
        m, d = cell.model, cell.data
        if self._scratch is None or self._scratch[0] is not m:
            self._scratch = (m, mujoco.MjData(m))
        k = self._scratch[1]
        k.qpos[:] = d.qpos
        k.mocap_pos[:] = d.mocap_pos
        k.mocap_quat[:] = d.mocap_quat
        mujoco.mj_kinematics(m, k)

        def pose(body: int) -> np.ndarray:
            T = np.eye(4)
            T[:3, :3] = k.xmat[body].reshape(3, 3)
            T[:3, 3] = k.xpos[body]
            return T

        q = k.qpos[cell.qpos_idx].copy()
        T_root = pose(m.body(self.palm_link).id) @ self.T_palm_root
        hand = q[self.n_arm :].copy()
        hand[self.wrist_idx] = 0.0
        root = np.concatenate([T_root[:3, 3], Rotation.from_matrix(T_root[:3, :3]).as_rotvec()])
        keypoints = cell.giver.keypoints(m, k)
        return np.concatenate([root, hand]), q, pose(cell.object_body), keypoints

    def run(self, scenario, subject: str = "giver00", seq: str | None = None) -> EpisodeRecord:
        """Run one expert episode, recording every 1 / rate_hz s; the sequence only on success."""
        from dexh2r_sim.scripted import ScriptedHandover

        c = self.config
        cell = self.cell
        t0 = time.perf_counter()
        cell.load_scenario(scenario)
        self.cloud.reset(cell.sim_object)
        expert = ScriptedHandover(cell, "grasp")
        period = 1.0 / c.rate_hz
        qpos, joints, poses, clouds, keypoints, sources = [], [], [], [], [], []
        close_t = None
        next_frame = 0.0
        while cell.outcome is None:
            if cell.time >= next_frame - 1e-9:
                q, j, T_obj, kp = self._snapshot()
                qpos.append(q)
                joints.append(j)
                poses.append(T_obj)
                keypoints.append(kp)
                pts, src = self.cloud(cell, T_obj, kp)
                clouds.append(pts)
                sources.append(src)
                next_frame += period
            expert.update()
            if close_t is None and expert.phase == "close":
                close_t = cell.time
            cell.step_until(cell.time + c.control_period_s)
        o = cell.outcome
        counts = {name: int(np.sum(np.asarray(sources) == k)) for k, name in enumerate(SOURCE_NAMES)}
        record = EpisodeRecord(
            scenario, o.outcome, o.detail, o.time_s, o.time_to_handover_s, 0.0, None, None, close_t, counts
        )
        if o.outcome == "success" and close_t is not None:
            begin = min(int(np.ceil(close_t * c.rate_hz - 1e-6)), len(qpos))
            record.sequence = DexH2RSequence(
                id=SequenceId(
                    subject, object_name(scenario.object_id, scenario.object_scale), seq or scenario.name
                ),
                qpos=np.asarray(qpos, np.float32),
                obj_pose=np.asarray(poses, np.float32),
                obj_pcd=np.asarray(clouds, np.float32),
                mano=None,
                mano_side=scenario.giver_side,
                grasp_begin_frame=begin,
                giver_keypoints=np.asarray(keypoints, np.float32),
            )
            record.robot_joints = np.asarray(joints, np.float32)
        elif o.outcome == "success":
            record.outcome, record.detail = "no-close", "success without the expert closing (not recorded)"
        record.wall_s = time.perf_counter() - t0
        return record


def _wrist_indices(robot) -> list[int]:
    from dexh2r_policy.grasps.stability import wrist_joint_names

    wrist = set(wrist_joint_names(robot))
    return [i for i, n in enumerate(robot.hand_joint_names) if n in wrist]


def root_to_palm_at_zero(robot) -> np.ndarray:
    """4x4 palm pose in the hand root (mount) frame with every hand joint at 0."""
    import mujoco

    m = robot.mujoco_model()
    d = mujoco.MjData(m)
    d.qpos[robot.mujoco_qpos_index(m)] = 0.0
    mujoco.mj_kinematics(m, d)

    def pose(body: str) -> np.ndarray:
        T = np.eye(4)
        T[:3, :3] = d.body(body).xmat.reshape(3, 3)
        T[:3, 3] = d.body(body).xpos
        return T

    return np.linalg.inv(pose(robot._hand_root_name())) @ pose(robot.config.hand.palm_link)
