"""Object 6D tracking from fused multi-camera depth (ROS-free; `object_tracker_node` wraps it).

Per camera frame set (`ObjectTrackingPipeline.process`; docs/perception_object.md has the why):

1. **Fuse + crop**: every camera's depth is back-projected straight into `world` and cropped to the
   workspace box grown by the object's radius (`dexh2r_core.pointcloud`), then voxel-downsampled.
   The workspace bounds the object's *centre*: outside it the object is reported lost.
2. **Remove the robot**: points on the robot's visible geometry, sampled once in link frames
   (`RobotPointModel`, every rendered geom of the robot description's MuJoCo model) and placed by
   forward kinematics of the current `/joint_states`; cloud points within `robot_margin_m` go.
   FK runs on the description's own compiled MuJoCo model rather than pinocchio: pinocchio's URDF
   is exported from that model (they agree to ~1e-11 m, `dexh2r robot check`), and the model
   already holds the visual geometry the cameras see.
3. **Remove the giver's hand**: points within `hand_bone_radius_m` of the 21 keypoints' bones,
   within `hand_palm_radius_m` of the palm triangles, and the forearm: everything more than
   `forearm_behind_wrist_m` behind the wrist (along wrist -> middle MCP) within `forearm_length_m`.
   An offered object is held in front of the wrist, never behind it.
4. **Track** (a pose from the last `max_gap_s`): the constant-velocity prediction is the initial
   guess; only the points within the predicted bounding sphere (+ `gate_margin_m`) are cleaned and
   registered to the model's surface samples by point-to-plane ICP (`icp_point_to_plane`).
   Accepted when fitness, inlier RMSE and the free-space check (`free_space_violation`: the posed
   model must not sit where a camera sees through it) pass.
5. **(Re)localise** when there is no recent pose or tracking failed: connected components of the
   cleaned cloud, object-sized candidates near the giver's hand first, each registered globally
   (`global_registration`: FPFH + RANSAC from open3d, plus a batched multi-start ICP from the 24
   cube-group rotations; primitives give FPFH little to match, so the multi-start usually wins
   there). A new track must also be consistent with the hand (`hand_consistency`: in front of the
   wrist, not around its bones) and, while the last pose is recent, lie near its prediction
   (`relocalize_gate_m`), so that a bad frame cannot hop the track onto hand remnants. Otherwise
   the object is *lost*: no pose rather than a wrong one. When nothing registers, a second pass
   removes the hand with wider radii and accepts larger clusters (finger remnants joined to the
   object by keypoint error; `relocalize_hand_scale`), under the same checks.
6. **Output**: the pose (`T_world_object`, object frame = centre of mass as in the object
   library) and the observed points within `output_inlier_m` of the posed model, sampled to exactly
   `n_points` by `pointcloud.sample_fixed` (the training code path).
7. **Giver surface** (`giver_surface`): the cloud's points near the keypoints' skeleton, off the
   robot and the object: the giver's hand as the depth sees it, for the policy's goal clearance.

Unknown objects (no model): the cluster nearest the last centroid (else the best candidate) is the
object; the output is that cluster (fixed N) and a *centroid pose*: identity rotation at the
cluster's centroid (status `centroid_only`). A partial view's centroid lies toward the cameras
from the true centre of mass (~2 cm on the library objects).

Symmetric objects may be reported in any of their symmetric poses; evaluation uses ADD-S.
Arrays: clouds [N, 3] float64 inside (float32 at the output), poses 4x4 homogeneous.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Literal

import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from scipy.spatial import cKDTree
from scipy.spatial.transform import Rotation

from dexh2r_core.pointcloud import (
    Box,
    DepthProjector,
    as_cloud,
    depth_to_metres,
    fuse_depth,
    sample_fixed,
    voxel_downsample,
)
from dexh2r_perception.symmetry import Symmetry, near_symmetry_axes, rotation_error_deg

if TYPE_CHECKING:
    from dexh2r_core.calibration import CalibrationSet
    from dexh2r_core.robot.description import RobotDescription
    from dexh2r_sim.objects import SimObject

Status = Literal["tracking", "lost", "centroid_only"]
STATUSES: tuple[str, ...] = ("tracking", "lost", "centroid_only")

# MediaPipe hand skeleton: (parent, child) keypoint pairs, and the palm as triangles.
HAND_BONES: tuple[tuple[int, int], ...] = (
    (0, 1), (1, 2), (2, 3), (3, 4),
    (0, 5), (5, 6), (6, 7), (7, 8),
    (5, 9), (9, 10), (10, 11), (11, 12),
    (9, 13), (13, 14), (14, 15), (15, 16),
    (13, 17), (17, 18), (18, 19), (19, 20), (0, 17),
)  # fmt: skip
PALM_TRIANGLES: tuple[tuple[int, int, int], ...] = ((0, 5, 9), (0, 9, 13), (0, 13, 17), (0, 1, 5), (1, 2, 5))
WRIST, MIDDLE_MCP = 0, 9
UNKNOWN_OBJECT_RADIUS_M = 0.1  # crop margin for objects without a model (library max extent 20 cm)


@dataclass(frozen=True)
class TrackerConfig:
    """Every tunable of the object tracker (node parameters map onto these names)."""

    workspace_min: tuple[float, float, float] = (0.30, -0.45, 0.03)  # above the table top (z = 0)
    workspace_max: tuple[float, float, float] = (1.00, 0.45, 0.80)
    voxel_m: float = 0.004
    n_points: int = 1024
    sample_method: Literal["fps", "random"] = "fps"
    sample_seed: int = 0
    # Robot removal.
    robot_margin_m: float = 0.02
    robot_point_spacing_m: float = 0.008
    # Giver hand removal: skin capsules are <= 11 mm in radius, plus depth noise and the hand
    # tracker's keypoint error (MPJPE ~25-30 mm on the cell, docs/perception_hand.md). With 18/25 mm
    # (enough for ground-truth keypoints) hand remnants stay and registration fails.
    hand_bone_radius_m: float = 0.03
    hand_palm_radius_m: float = 0.035
    forearm_length_m: float = 0.45
    forearm_behind_wrist_m: float = 0.02
    # Segmentation.
    cluster_radius_m: float = 0.012
    min_object_points: int = 20
    offer_radius_m: float = 0.20  # clusters this close to the giver's hand are preferred
    max_unknown_extent_m: float = 0.35
    # Model and tracking.
    model_points: int = 3000
    gate_margin_m: float = 0.03
    icp_max_corr_m: tuple[float, ...] = (0.02, 0.01, 0.006)
    icp_iterations: int = 5  # per correspondence gate
    icp_damping: float = 0.01  # see icp_point_to_plane
    icp_max_points: int = 300  # scene points per ICP iteration (fitness uses all)
    inlier_dist_m: float = 0.006
    min_fitness: float = 0.55
    max_rmse_m: float = 0.0045
    max_free_space_violation: float = 0.25  # see free_space_violation
    # A new track must be cleaner: right poses score <= 0.05, registrations onto hand remnants
    # (hand keypoints off by 2-3 cm) 0.15-0.25.
    relocalize_max_free_space_violation: float = 0.12
    # Hand consistency (see hand_consistency): the centre at least this far in front of the wrist,
    # the hand's bones at most this deep inside the object (tolerates keypoint errors of ~2 cm).
    min_front_of_wrist_m: float = 0.0
    max_hand_penetration_m: float = 0.03
    max_gap_s: float = 0.25  # the motion prior is used only when the last pose is this recent
    velocity_smoothing: float = 0.5  # weight of the newest velocity measurement
    max_speed_m_s: float = 2.0
    max_angular_speed_rad_s: float = 8.0
    # Global registration.
    global_voxel_m: float = 0.005
    ransac_iterations: int = 4000
    ransac_confidence: float = 0.999
    multistart: bool = True
    max_candidates: int = 3
    # After a failed global registration, wait this long before the next (frames in between are
    # reported lost at tracking cost, so a scene without the object does not stall the node).
    relocalize_interval_s: float = 0.1
    # While the last pose is recent (max_gap_s), relocalisation accepts only poses within this gate
    # of the constant-velocity prediction: gate_m + speed_m_s * time since the last pose.
    relocalize_gate_m: float = 0.03
    relocalize_gate_speed_m_s: float = 0.5
    # When no cluster registers, relocalisation tries once more with the hand mask's radii times
    # `relocalize_hand_scale` and clusters up to `relocalize_extent_scale` times the object-sized
    # extent: the giver's fingers touch the object, and with keypoints 3 cm off their remnants
    # join it into one cluster too big to be the object (at 640x360 the sim cell's box was lost
    # for seconds so). The fitness, free-space, hand and gate checks still decide (0: off).
    relocalize_hand_scale: float = 1.5
    relocalize_extent_scale: float = 1.5
    output_inlier_m: float = 0.01
    # The giver's hand as measured (`ObjectEstimate.giver_points`, `giver_surface`): cloud points
    # within `giver_surface_radius_m` of the keypoints' bones or palm (the keypoints are off by a
    # median 3-5 cm where the fingers wrap the object, docs/closed_loop.md), not on the robot and
    # more than `giver_surface_object_m` from the posed object model, voxelised to
    # `giver_surface_voxel_m`. The policy checks its goals' clearance against them (0: off).
    giver_surface_radius_m: float = 0.06
    giver_surface_object_m: float = 0.012
    giver_surface_voxel_m: float = 0.01
    # An object symmetric about an axis but for a small part (a mug's handle, `near_symmetry_axes`)
    # shows its turn about that axis only through that part, and tracking ICP stays in a wrong
    # turn of the body (the cell's mug: 40-50 deg off for a whole handover, fitness 1-2 % below
    # the right one). Every `roll_search_every` tracked frames (0: off) ICP (on
    # `roll_search_points` points) also starts from the pose turned `roll_search_steps` ways about
    # the axis; a turn whose fitness beats the tracked one by `roll_search_min_gain` in
    # `roll_search_confirm` searches in a row replaces it.
    roll_search_every: int = 2
    roll_search_steps: int = 12
    roll_search_points: int = 150
    roll_search_min_gain: float = 0.005
    # With `roll_search_part_gain` > 0 the turns are told apart by the part that breaks the
    # symmetry instead (`asymmetric_part`): a turn whose fitness is at most
    # `roll_search_fit_tolerance` below the tracked one's and which shows that part better by
    # `roll_search_part_gain` replaces it; shown = that part's points with a scene point within
    # `inlier_dist_m`, less those a camera saw through (`free_space_violation`), as shares. The
    # fitness counts scene points, and the handle's few fit a wrong turn of the body about as
    # well: in the closed loop the cell's mug was tracked 45-54 deg off for 2-4 s of the
    # alignment at equal fitness (0.77 and 0.77) while the handle's score told the turns apart
    # (0.30-0.40 against 0.50-0.59), and the fitness rule turned a right track 52 deg off
    # (docs/closed_loop.md, session 23). 0: the fitness rule.
    roll_search_part_gain: float = 0.1
    roll_search_fit_tolerance: float = 0.01
    roll_search_confirm: int = 2
    # An object that turning about an axis leaves unchanged (a ball about any, a can about its
    # own: `Symmetry.axes`) shows no turn about it: the tracked turn keeps the predicted one
    # there (`Symmetry.nearest`), so ICP's noise does not wander it. Without this the closed
    # loop's ball turned 50-110 deg in 4 s while held still, its grasps (object frame) swung
    # with it, and the alignment re-chose its goal and chased them (docs/closed_loop.md,
    # session 23). False: the turn as registered.
    pin_symmetric_turn: bool = True
    roll_search_max_robot_points: int = 20  # robot points around the object above which it pauses
    seed: int = 0

    def __post_init__(self) -> None:
        Box(self.workspace_min, self.workspace_max)  # validates
        if self.n_points <= 0:
            raise ValueError(f"n_points: must be positive, got {self.n_points}")
        if self.sample_method not in ("fps", "random"):
            raise ValueError(f"sample_method: must be 'fps' or 'random', got {self.sample_method!r}")
        for key in ("voxel_m", "robot_margin_m", "cluster_radius_m", "inlier_dist_m", "global_voxel_m"):
            if not getattr(self, key) > 0:
                raise ValueError(f"{key}: must be positive, got {getattr(self, key)}")
        if self.roll_search_every < 0:
            raise ValueError(f"roll_search_every: must be >= 0 (0: off), got {self.roll_search_every}")
        if self.roll_search_every > 0:
            for key, low in (("roll_search_steps", 2), ("roll_search_points", 3), ("roll_search_confirm", 1)):
                if int(getattr(self, key)) < low:
                    got = getattr(self, key)
                    raise ValueError(f"{key}: must be >= {low} with the roll search on, got {got}")
            if not self.roll_search_min_gain >= 0 or self.roll_search_max_robot_points < 0:
                raise ValueError("roll_search_min_gain and roll_search_max_robot_points: must be >= 0")
            for key in ("roll_search_part_gain", "roll_search_fit_tolerance"):
                if not getattr(self, key) >= 0:
                    raise ValueError(f"{key}: must be >= 0, got {getattr(self, key)}")

    @property
    def workspace(self) -> Box:
        """Where the object's centre may be; outside it the object is reported lost."""
        return Box(self.workspace_min, self.workspace_max)

    def crop_box(self, object_radius_m: float) -> Box:
        """The cloud crop: the workspace grown by the object's radius (sideways and up, not down
        into the table), so an object whose centre is inside is never cut by the crop."""
        lo, hi = np.asarray(self.workspace_min), np.asarray(self.workspace_max)
        grow = object_radius_m + 0.01
        return Box(
            (float(lo[0] - grow), float(lo[1] - grow), float(lo[2])),
            (float(hi[0] + grow), float(hi[1] + grow), float(hi[2] + grow)),
        )


@dataclass
class ObjectEstimate:
    """One frame's result. `points`: [N, 3] float32 world (N = n_points), [0, 3] when lost."""

    stamp: float
    status: Status
    pose: np.ndarray | None  # 4x4 T_world_object; None when lost (never invented)
    points: np.ndarray
    fitness: float = 0.0  # fraction of the gated observed points on the model surface
    rmse_m: float = math.nan  # inlier point-to-model distance RMS
    n_observed: int = 0  # segmented object points before fixed-N sampling
    relocalized: bool = False  # global registration ran this frame
    compute_ms: float = 0.0
    detail: str = ""
    # [G, 3] float32 world: the giver's hand and forearm surface seen this frame (`giver_surface`;
    # [0, 3] without a pose or keypoints).
    giver_points: np.ndarray = field(default_factory=lambda: np.zeros((0, 3), np.float32))


# ---------------------------------------------------------------------------------------------
# Robot removal
# ---------------------------------------------------------------------------------------------


class RobotPointModel:
    """Points on the robot's rendered geometry, fixed in link frames, placed by MuJoCo FK.

    Sampled once, area-weighted at ~2 points per `spacing_m`^2 over every geom of the robot
    description's MuJoCo model in the rendered groups 0-2 (what a camera sees).
    """

    def __init__(self, robot: RobotDescription, spacing_m: float = 0.008, seed: int = 0) -> None:
        import mujoco
        import trimesh

        # The robot description's geom -> mesh conversion (primitives tessellated, meshes as compiled).
        from dexh2r_core.robot.surface import _geom_mesh

        self.robot = robot
        self.model = robot.mujoco_model()
        self.data = mujoco.MjData(self.model)
        m = self.model
        self._mj_kinematics = mujoco.mj_kinematics
        rng = np.random.default_rng(seed)
        bodies, points = [], []
        for g in range(m.ngeom):
            body = int(m.geom_bodyid[g])
            if body == 0 or int(m.geom_group[g]) > 2 or m.geom_rgba[g][3] == 0:
                continue
            mesh = _geom_mesh(m, g)
            if mesh is None or mesh.area <= 0:
                continue
            n = max(8, math.ceil(2.0 * mesh.area / spacing_m**2))
            pts, _ = trimesh.sample.sample_surface(mesh, n, seed=int(rng.integers(2**31)))
            R = np.zeros(9)
            mujoco.mju_quat2Mat(R, m.geom_quat[g])
            points.append(pts @ R.reshape(3, 3).T + m.geom_pos[g])  # geom -> body frame
            bodies.append(np.full(len(pts), body))
        body_of = np.concatenate(bodies)
        order = np.argsort(body_of, kind="stable")
        self.body_of = body_of[order]  # [P]
        self.points_body = np.concatenate(points)[order]  # [P, 3] in the body frame
        # Per body: its contiguous slice and a bounding sphere (body frame), to place only the bodies
        # near the region of interest.
        self._bodies = []
        for b, s, e in zip(*_runs(self.body_of), strict=True):
            pts = self.points_body[s:e]
            centre = 0.5 * (pts.min(axis=0) + pts.max(axis=0))
            radius = float(np.linalg.norm(pts - centre, axis=1).max())
            self._bodies.append((int(b), slice(int(s), int(e)), centre, radius))
        self.qpos_index = dict(zip(robot.joint_names, robot.mujoco_qpos_index(m).tolist(), strict=True))
        self.data.qpos[:] = 0.0
        self.data.qpos[list(self.qpos_index.values())] = robot.home()
        self._fk_key: bytes | None = None

    def __len__(self) -> int:
        return len(self.points_body)

    def _kinematics(self, joint_positions: Mapping[str, float]) -> None:
        qpos = self.data.qpos
        for name, value in joint_positions.items():
            i = self.qpos_index.get(name)
            if i is not None and math.isfinite(value):
                qpos[i] = value
        key = qpos.tobytes()
        if key != self._fk_key:  # an idle robot costs nothing after the first frame
            self._mj_kinematics(self.model, self.data)
            self._fk_key = key

    def points_world(
        self,
        joint_positions: Mapping[str, float],
        lo: np.ndarray | None = None,
        hi: np.ndarray | None = None,
    ) -> np.ndarray:
        """World points [P', 3] for these joint positions (unknown names ignored, missing joints keep
        their last value); with `lo`/`hi` [3] only the bodies whose bounding sphere meets that box."""
        self._kinematics(joint_positions)
        xpos, xmat = self.data.xpos, self.data.xmat
        parts = []
        for body, sl, centre, radius in self._bodies:
            R = xmat[body].reshape(3, 3)
            if lo is not None and hi is not None:
                c = R @ centre + xpos[body]
                gap = np.maximum(np.maximum(lo - c, c - hi), 0.0)  # sphere-box distance
                if gap @ gap > radius * radius:
                    continue
            parts.append(self.points_body[sl] @ R.T + xpos[body])
        return np.concatenate(parts) if parts else np.zeros((0, 3))


def _runs(values: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(value, start, end) of each run of equal values in a sorted 1-D array."""
    start = np.flatnonzero(np.r_[True, values[1:] != values[:-1]])
    end = np.r_[start[1:], len(values)]
    return values[start], start, end


def robot_mask(points: np.ndarray, robot_points: np.ndarray, margin_m: float) -> np.ndarray:
    """[N] bool: True where a cloud point lies within `margin_m` of a robot point."""
    out = np.zeros(len(points), bool)
    if len(points) == 0 or len(robot_points) == 0:
        return out
    lo, hi = points.min(axis=0) - margin_m, points.max(axis=0) + margin_m
    near = np.all((robot_points >= lo) & (robot_points <= hi), axis=1)  # robot parts in view only
    if not near.any():
        return out
    rp = robot_points[near]
    cand = np.all((points >= rp.min(axis=0) - margin_m) & (points <= rp.max(axis=0) + margin_m), axis=1)
    idx = np.flatnonzero(cand)
    if len(idx):
        d, _ = cKDTree(rp).query(points[idx], k=1, distance_upper_bound=margin_m)
        out[idx[np.isfinite(d)]] = True
    return out


# ---------------------------------------------------------------------------------------------
# Giver hand removal
# ---------------------------------------------------------------------------------------------


_BONE_A = np.array([a for a, _ in HAND_BONES])
_BONE_B = np.array([b for _, b in HAND_BONES])
_PALM = np.array(PALM_TRIANGLES)
_n = 10
_u, _v = np.meshgrid(np.linspace(0.0, 1.0, _n), np.linspace(0.0, 1.0, _n))
_keep = (_u + _v) <= 1.0 + 1e-9
_PALM_UV = np.stack([_u[_keep], _v[_keep]], axis=1)  # [55, 2] barycentric samples of a triangle


def _valid_keypoints(keypoints: np.ndarray | None) -> np.ndarray | None:
    """[21, 3] float64 with NaN rows for missing landmarks, or None when nothing is usable.

    A hand tracker reports NaN for landmarks it could not place; the hand is still removed with
    the bones and palm triangles whose keypoints are all valid.
    """
    if keypoints is None:
        return None
    kp = np.asarray(keypoints, dtype=np.float64)
    if kp.shape != (21, 3) or not np.isfinite(kp).all(axis=1).any():
        return None
    return kp


def palm_points(keypoints: np.ndarray) -> np.ndarray:
    """Samples [T * 55, 3] over the palm triangles of 21 keypoints [21, 3] whose corners are valid."""
    kp = np.asarray(keypoints, dtype=np.float64)
    a, b, c = kp[_PALM[:, 0]], kp[_PALM[:, 1]], kp[_PALM[:, 2]]  # [5, 3] each
    ok = np.isfinite(a).all(axis=1) & np.isfinite(b).all(axis=1) & np.isfinite(c).all(axis=1)
    a, b, c = a[ok], b[ok], c[ok]
    u, v = _PALM_UV[:, 0][None, :, None], _PALM_UV[:, 1][None, :, None]
    return (a[:, None] + u * (b - a)[:, None] + v * (c - a)[:, None]).reshape(-1, 3)


def _bones(kp: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Start and end points [B, 3] of the bones whose two keypoints are valid."""
    a, b = kp[_BONE_A], kp[_BONE_B]
    ok = np.isfinite(a).all(axis=1) & np.isfinite(b).all(axis=1)
    return a[ok], b[ok]


def bone_distances(points: np.ndarray, keypoints: np.ndarray) -> np.ndarray:
    """[K] distance of each point [K, 3] to the nearest valid bone segment of 21 keypoints [21, 3]
    (inf when no bone is valid)."""
    a, b = _bones(np.asarray(keypoints, dtype=np.float64))
    if not len(a):
        return np.full(len(points), np.inf)
    ab = b - a
    t = np.einsum("kbj,bj->kb", points[:, None, :] - a[None], ab) / np.maximum(
        np.einsum("bj,bj->b", ab, ab), 1e-12
    )
    closest = a[None] + np.clip(t, 0.0, 1.0)[..., None] * ab[None]  # [K, B, 3]
    diff = points[:, None, :] - closest
    return np.sqrt(np.einsum("kbj,kbj->kb", diff, diff).min(axis=1))


def _hand_axis(kp: np.ndarray) -> np.ndarray | None:
    """Unit wrist -> middle MCP direction [3], None if either keypoint is missing."""
    axis = kp[MIDDLE_MCP] - kp[WRIST]
    norm = float(np.linalg.norm(axis)) if np.isfinite(axis).all() else 0.0
    return axis / norm if norm > 1e-6 else None


def hand_mask(points: np.ndarray, keypoints: np.ndarray | None, config: TrackerConfig) -> np.ndarray:
    """[N] bool: True for cloud points on the giver's hand or forearm (see module doc)."""
    out = np.zeros(len(points), bool)
    kp = _valid_keypoints(keypoints)
    if kp is None or len(points) == 0:
        return out
    axis = _hand_axis(kp)
    if axis is not None:
        rel = points - kp[WRIST]
        behind = rel @ axis < -config.forearm_behind_wrist_m
        out |= behind & (np.einsum("ij,ij->i", rel, rel) < config.forearm_length_m**2)
    reach = max(config.hand_bone_radius_m, config.hand_palm_radius_m)
    lo, hi = np.nanmin(kp, axis=0) - reach, np.nanmax(kp, axis=0) + reach
    idx = np.flatnonzero(np.all((points >= lo) & (points <= hi), axis=1) & ~out)
    if len(idx):
        q = points[idx]
        hit = bone_distances(q, kp) <= config.hand_bone_radius_m
        palm = palm_points(kp)
        if len(palm):
            d_palm, _ = cKDTree(palm).query(q, k=1, distance_upper_bound=config.hand_palm_radius_m)
            hit |= np.isfinite(d_palm)
        out[idx[hit]] = True
    return out


_BONE_T = np.linspace(0.0, 1.0, 8)[None, :, None]


def hand_skeleton(keypoints: np.ndarray) -> np.ndarray:
    """Samples [B * 8 + T * 55, 3] along the valid bones and over the valid palm triangles."""
    a, b = _bones(np.asarray(keypoints, dtype=np.float64))
    bones = (a[:, None] + _BONE_T * (b - a)[:, None]).reshape(-1, 3)
    return np.concatenate([bones, palm_points(keypoints)])


def hand_consistency(
    T_world_object: np.ndarray, model: ObjectModel, keypoints: np.ndarray | None
) -> tuple[float, float]:
    """(offset of the object's centre in front of the wrist along wrist -> middle MCP (m), deepest
    penetration of the hand skeleton into the posed object (m)); (inf, 0) without keypoints.

    A held object is in front of the wrist and the hand's bones are outside it; a pose that puts
    the object around the wrist or the palm is a registration onto hand remnants (seen with hand
    keypoints biased by 2-3 cm), whatever its fitness. Penetration is signed by the nearest model
    sample's outward normal, so cavities (a mug's inside) count as outside.
    """
    kp = _valid_keypoints(keypoints)
    if kp is None:
        return math.inf, 0.0
    axis = _hand_axis(kp)
    front = math.inf if axis is None else float((T_world_object[:3, 3] - kp[WRIST]) @ axis)
    R, t = T_world_object[:3, :3], T_world_object[:3, 3]
    q = (hand_skeleton(kp) - t) @ R  # world -> object frame
    near = np.einsum("ij,ij->i", q, q) <= (model.radius + 0.01) ** 2
    if not near.any():
        return front, 0.0
    _, j = model.tree.query(q[near], k=1)
    signed = np.einsum("ij,ij->i", q[near] - model.points[j], model.normals[j])
    return front, float(max(0.0, -signed.min()))


# ---------------------------------------------------------------------------------------------
# Object model
# ---------------------------------------------------------------------------------------------


@dataclass
class ObjectModel:
    """An object's surface samples in its own frame (origin = centre of mass), ready for registration.

    `points`/`normals`: [M, 3] (outward unit normals), `radius`: largest distance of a surface point
    from the origin.
    """

    object_id: str
    points: np.ndarray
    normals: np.ndarray
    tree: cKDTree = field(repr=False)
    radius: float = 0.0
    extents: np.ndarray = field(default_factory=lambda: np.zeros(3))
    _fpfh: tuple | None = field(default=None, repr=False)

    @classmethod
    def from_points(cls, object_id: str, points: np.ndarray, normals: np.ndarray) -> ObjectModel:
        p = np.asarray(points, dtype=np.float64)
        n = np.asarray(normals, dtype=np.float64)
        n = n / np.maximum(np.linalg.norm(n, axis=1, keepdims=True), 1e-12)
        return cls(
            object_id=object_id,
            points=p,
            normals=n,
            tree=cKDTree(p),
            radius=float(np.linalg.norm(p, axis=1).max()),
            extents=p.max(axis=0) - p.min(axis=0),
        )

    @classmethod
    def from_sim_object(cls, obj: SimObject, n: int = 3000, seed: int = 0) -> ObjectModel:
        from dexh2r_sim.objects import sample_surface_points

        points, normals = sample_surface_points(obj, n=n, seed=seed)
        return cls.from_points(obj.id, points, normals)

    @classmethod
    def from_library(cls, object_id: str, scale: float = 1.0, n: int = 3000, seed: int = 0) -> ObjectModel:
        """The model of a library object (`dexh2r_sim.objects`); UnknownObjectError for unknown ids."""
        from dexh2r_sim.objects import ObjectLibrary

        return cls.from_sim_object(ObjectLibrary().get(object_id, scale=scale), n=n, seed=seed)

    @property
    def diameter(self) -> float:
        return float(np.linalg.norm(self.extents))

    def fpfh(self, voxel_m: float):
        """(open3d cloud, FPFH feature) of the model at `voxel_m`, cached."""
        if self._fpfh is None or self._fpfh[0] != voxel_m:
            import open3d as o3d

            # RANSAC warns "too few correspondences" on featureless primitives: expected, not news.
            o3d.utility.set_verbosity_level(o3d.utility.VerbosityLevel.Error)

            cloud = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(self.points))
            cloud.normals = o3d.utility.Vector3dVector(self.normals)
            down = cloud.voxel_down_sample(voxel_m)
            down.normalize_normals()
            feature = o3d.pipelines.registration.compute_fpfh_feature(
                down, o3d.geometry.KDTreeSearchParamHybrid(radius=5 * voxel_m, max_nn=100)
            )
            self._fpfh = (voxel_m, down, feature)
        return self._fpfh[1], self._fpfh[2]


# ---------------------------------------------------------------------------------------------
# Registration
# ---------------------------------------------------------------------------------------------


def _se3_exp(xi: np.ndarray) -> np.ndarray:
    """[H, 4, 4] of small twists [H, 6] (omega, v): Rodrigues rotation, first-order translation."""
    w = xi[:, :3]
    theta = np.linalg.norm(w, axis=1)
    K = np.zeros((len(xi), 3, 3))
    K[:, 0, 1], K[:, 0, 2], K[:, 1, 2] = -w[:, 2], w[:, 1], -w[:, 0]
    K[:, 1, 0], K[:, 2, 0], K[:, 2, 1] = w[:, 2], -w[:, 1], w[:, 0]
    safe = np.maximum(theta, 1e-12)
    a = np.where(theta < 1e-9, 1.0, np.sin(theta) / safe)[:, None, None]
    b = np.where(theta < 1e-9, 0.5, (1.0 - np.cos(theta)) / safe**2)[:, None, None]
    T = np.zeros((len(xi), 4, 4))
    T[:, :3, :3] = np.eye(3) + a * K + b * (K @ K)
    T[:, :3, 3] = xi[:, 3:]
    T[:, 3, 3] = 1.0
    return T


def _subsample(points: np.ndarray, n: int) -> np.ndarray:
    """At most n rows, evenly strided (deterministic; keeps the cloud's spatial spread)."""
    if len(points) <= n:
        return points
    return points[np.linspace(0, len(points) - 1, n).astype(np.int64)]


def icp_point_to_plane(
    scene: np.ndarray,
    T_object_world: np.ndarray,
    model: ObjectModel,
    max_corr_m: Sequence[float] = (0.02, 0.01, 0.006),
    iterations: int = 8,
    damping: float = 0.01,
    max_points: int = 300,
) -> np.ndarray:
    """Refine T_object_world so that scene points [K, 3] (world) lie on the model surface.

    `T_object_world` is one 4x4 or a batch [H, 4, 4] of hypotheses refined together (one KD-tree
    query and one batched 6x6 solve per iteration: the multi-start costs little more than one ICP);
    the result has the same shape. Gauss-Newton on point-to-plane residuals n . (T p - m) with
    Tukey weights (c = the gate), one stage per correspondence gate in `max_corr_m`, over at most
    `max_points` scene points. The Levenberg damping is in physical units per unit of weight: a
    rotation step costs like moving a point at a 1 cm lever arm, a translation step `damping` of a
    point's own cost; unobservable directions (a can's spin, sliding along a face) then stay where
    they start, i.e. at the motion prior.
    """
    single = np.ndim(T_object_world) == 2
    T = np.array(T_object_world, dtype=np.float64).reshape(-1, 4, 4)
    p = _subsample(np.asarray(scene, dtype=np.float64), max_points)
    if len(p) < 6:
        return T[0] if single else T
    nh, k = len(T), len(p)
    damp = np.diag([1e-4, 1e-4, 1e-4, damping, damping, damping])
    for gate in max_corr_m:
        for _ in range(iterations):
            q = np.einsum("hij,kj->hki", T[:, :3, :3], p) + T[:, None, :3, 3]  # [H, K, 3]
            dist, j = model.tree.query(q.reshape(-1, 3), k=1, distance_upper_bound=gate)
            ok = (dist < gate).reshape(nh, k)
            j = np.where(ok.reshape(-1), j, 0).reshape(nh, k)
            m, n = model.points[j], model.normals[j]  # [H, K, 3]
            r = np.einsum("hkj,hkj->hk", q - m, n)
            w = np.clip(1.0 - (r / gate) ** 2, 0.0, None) ** 2 * ok  # Tukey biweight
            J = np.empty((nh, k, 6))
            J[..., 0] = q[..., 1] * n[..., 2] - q[..., 2] * n[..., 1]  # q x n: d r / d omega
            J[..., 1] = q[..., 2] * n[..., 0] - q[..., 0] * n[..., 2]
            J[..., 2] = q[..., 0] * n[..., 1] - q[..., 1] * n[..., 0]
            J[..., 3:] = n
            Jw = J * w[..., None]
            H = np.einsum("hki,hkj->hij", Jw, J) + np.maximum(w.sum(axis=1), 1.0)[:, None, None] * damp
            xi = -np.linalg.solve(H, np.einsum("hki,hk->hi", Jw, r)[..., None])[..., 0]
            xi[ok.sum(axis=1) < 6] = 0.0  # too few correspondences: leave that hypothesis alone
            T = _se3_exp(xi) @ T
            if np.abs(xi).max() < 3e-4:  # 0.3 mm and 0.02 deg: converged for our purposes
                break
    return T[0] if single else T


@dataclass(frozen=True)
class DepthView:
    """One camera's depth for the free-space check: K [3, 3], T_camera_world [4, 4], depth [H, W] metres
    (0 = invalid)."""

    K: np.ndarray
    T_camera_world: np.ndarray
    depth_m: np.ndarray


def free_space_violation(
    T_world_object: np.ndarray,
    model: ObjectModel,
    views: Sequence[DepthView] | None,
    margin_m: float = 0.015,
    n: int = 256,
) -> float:
    """Fraction of the posed model's camera-facing surface samples that a camera should have seen but
    saw through: projected onto a valid depth pixel that is more than `margin_m` *behind* them.

    A right pose has ~0 (occluders such as the giver's hand are in front, not behind); a pose that
    puts, say, a mug's handle where a camera sees the table scores high. 0 without views.
    """
    if not views:
        return 0.0
    pts = _subsample(model.points, n)
    nrm = _subsample(model.normals, n)
    pw = pts @ T_world_object[:3, :3].T + T_world_object[:3, 3]
    nw = nrm @ T_world_object[:3, :3].T
    checked = violated = 0
    for view in views:
        T = view.T_camera_world
        pc = pw @ T[:3, :3].T + T[:3, 3]
        nc = nw @ T[:3, :3].T
        z = pc[:, 2]
        facing = (np.einsum("ij,ij->i", nc, pc) < -0.2 * np.linalg.norm(pc, axis=1)) & (z > 0.05)
        if not facing.any():
            continue
        h, w = view.depth_m.shape
        u = np.round(view.K[0, 0] * pc[facing, 0] / z[facing] + view.K[0, 2]).astype(np.int64)
        v = np.round(view.K[1, 1] * pc[facing, 1] / z[facing] + view.K[1, 2]).astype(np.int64)
        inside = (u >= 0) & (u < w) & (v >= 0) & (v < h)
        measured = view.depth_m[v[inside], u[inside]]
        valid = measured > 0
        checked += int(valid.sum())
        violated += int((measured[valid] > z[facing][inside][valid] + margin_m).sum())
    return violated / checked if checked else 0.0


def asymmetric_part(model: ObjectModel, axis: np.ndarray, turns_deg=(30.0, 60.0)) -> ObjectModel | None:
    """The model's points off its own surface turned about `axis` (object frame) by +-`turns_deg`:
    the part that breaks a near-symmetry (a mug's handle, about 5 % of its surface; None if
    fewer than 10 points). Off = farther than twice the surface's sampling gap."""
    pts = model.points
    gap = float(np.percentile(cKDTree(pts[::2]).query(pts[1::2], k=1)[0], 90))
    off = np.full(len(pts), np.inf)
    for a in turns_deg:
        for sign in (1.0, -1.0):
            R = Rotation.from_rotvec(sign * np.radians(a) * np.asarray(axis, np.float64)).as_matrix()
            off = np.minimum(off, model.tree.query(pts @ R.T, k=1)[0])
    keep = off > 2.0 * gap
    if keep.sum() < 10:
        return None
    return ObjectModel(
        f"{model.object_id}#asymmetric", pts[keep], model.normals[keep], cKDTree(pts[keep]), model.radius
    )


def registration_quality(
    scene: np.ndarray, T_object_world: np.ndarray, model: ObjectModel, inlier_dist_m: float
) -> tuple[float, float, np.ndarray]:
    """(fitness, inlier RMSE, distances [K]) of scene points [K, 3] to the posed model surface."""
    if len(scene) == 0:
        return 0.0, math.nan, np.zeros(0)
    q = np.asarray(scene, dtype=np.float64) @ T_object_world[:3, :3].T + T_object_world[:3, 3]
    d, _ = model.tree.query(q, k=1)
    inl = d < inlier_dist_m
    rmse = float(np.sqrt(np.mean(d[inl] ** 2))) if inl.any() else math.nan
    return float(inl.mean()), rmse, d


def _orient_normals(points: np.ndarray, normals: np.ndarray, viewpoints: np.ndarray | None) -> np.ndarray:
    """Flip scene normals to face the cameras (sum of unit view directions), else away from the centroid."""
    if viewpoints is not None and len(viewpoints):
        view = np.zeros_like(points)
        for c in viewpoints:
            v = c - points
            view += v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-9)
    else:
        view = points - points.mean(axis=0)
    flip = np.einsum("ij,ij->i", normals, view) < 0
    out = normals.copy()
    out[flip] *= -1
    return out


def ransac_fpfh(
    scene: np.ndarray, model: ObjectModel, config: TrackerConfig, viewpoints: np.ndarray | None
) -> np.ndarray | None:
    """T_object_world from FPFH features + RANSAC (open3d), or None when it finds nothing."""
    import open3d as o3d

    reg = o3d.pipelines.registration
    voxel = config.global_voxel_m
    src = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(np.asarray(scene, dtype=np.float64)))
    src = src.voxel_down_sample(voxel)
    if len(src.points) < 10:
        return None
    src.estimate_normals(o3d.geometry.KDTreeSearchParamHybrid(radius=2.5 * voxel, max_nn=30))
    pts = np.asarray(src.points)
    src.normals = o3d.utility.Vector3dVector(_orient_normals(pts, np.asarray(src.normals), viewpoints))
    src_f = reg.compute_fpfh_feature(src, o3d.geometry.KDTreeSearchParamHybrid(radius=5 * voxel, max_nn=100))
    tgt, tgt_f = model.fpfh(voxel)
    o3d.utility.random.seed(config.seed)  # RANSAC draws from open3d's global generator
    result = reg.registration_ransac_based_on_feature_matching(
        src,
        tgt,
        src_f,
        tgt_f,
        True,
        1.5 * voxel,
        reg.TransformationEstimationPointToPoint(False),
        3,
        [
            reg.CorrespondenceCheckerBasedOnEdgeLength(0.9),
            reg.CorrespondenceCheckerBasedOnDistance(1.5 * voxel),
        ],
        reg.RANSACConvergenceCriteria(config.ransac_iterations, config.ransac_confidence),
    )
    if result.fitness <= 0:
        return None
    return np.asarray(result.transformation, dtype=np.float64)


_CUBE_GROUP = Rotation.create_group("O").as_matrix()  # [24, 3, 3]


def global_registration(
    scene: np.ndarray,
    model: ObjectModel,
    config: TrackerConfig,
    viewpoints: np.ndarray | None = None,
    views: Sequence[DepthView] | None = None,
    hand_keypoints: np.ndarray | None = None,
) -> tuple[np.ndarray, float, float, float]:
    """Best (T_object_world, fitness, rmse, free-space violation) over FPFH+RANSAC and multi-start
    ICP hypotheses, scored by fitness minus free-space violation; hypotheses inconsistent with the
    giver's hand (`hand_consistency`) rank last."""
    scene = np.asarray(scene, dtype=np.float64)
    centroid = scene.mean(axis=0)
    # A partial view's centroid lies toward the cameras: start the centre ~r/3 further away.
    centre = centroid.copy()
    if viewpoints is not None and len(viewpoints):
        away = centroid - np.mean(viewpoints, axis=0)
        centre += away / max(np.linalg.norm(away), 1e-9) * model.radius / 3.0
    hypotheses: list[np.ndarray] = []
    ransac = ransac_fpfh(scene, model, config, viewpoints)
    if ransac is not None:
        hypotheses.append(ransac)
    if config.multistart:
        for R in _CUBE_GROUP:  # T_world_object = (R, centre) -> T_object_world
            T = np.eye(4)
            T[:3, :3] = R.T
            T[:3, 3] = -R.T @ centre
            hypotheses.append(T)

    def score(T: np.ndarray, inlier: float) -> tuple[float, float, float, float]:
        fit, rmse, _ = registration_quality(scene, T, model, inlier)
        pose = _inverse(T)
        violation = free_space_violation(pose, model, views)
        rmse_key = rmse if math.isfinite(rmse) else 1.0
        front, depth = hand_consistency(pose, model, hand_keypoints)
        plausible = front >= config.min_front_of_wrist_m and depth <= config.max_hand_penetration_m
        return fit - violation - (0.0 if plausible else 10.0), -rmse_key, fit, violation

    coarse = (0.03, 0.015)
    # Coarse: a few batched iterations on 100 points are enough to rank the hypotheses.
    refined = icp_point_to_plane(scene, np.stack(hypotheses), model, coarse, 4, config.icp_damping, 100)
    scored = sorted(
        ((score(T, 2 * config.inlier_dist_m), k, T) for k, T in enumerate(refined)),
        key=lambda s: s[0][:2],
        reverse=True,
    )
    best = None
    top = icp_point_to_plane(
        scene, np.stack([T for _, _, T in scored[:3]]), model, config.icp_max_corr_m, config.icp_iterations,
        config.icp_damping,
    )  # fmt: skip
    for T in top:  # the three best coarse hypotheses, refined fully
        key = score(T, config.inlier_dist_m)
        if best is None or key[:2] > best[0][:2]:
            best = (key, T)
    assert best is not None
    (_, _, fit, violation), T = best
    _, rmse, _ = registration_quality(scene, T, model, config.inlier_dist_m)
    return T, fit, rmse, violation


# ---------------------------------------------------------------------------------------------
# Segmentation
# ---------------------------------------------------------------------------------------------


def cluster_points(points: np.ndarray, radius_m: float) -> np.ndarray:
    """Connected-component labels [N] (points closer than `radius_m` are connected)."""
    n = len(points)
    if n == 0:
        return np.zeros(0, np.int64)
    pairs = cKDTree(points).query_pairs(radius_m, output_type="ndarray")
    graph = coo_matrix((np.ones(len(pairs)), (pairs[:, 0], pairs[:, 1])), shape=(n, n))
    _, labels = connected_components(graph, directed=False)
    return labels


def candidate_clusters(
    points: np.ndarray,
    config: TrackerConfig,
    max_extent_m: float,
    hand_keypoints: np.ndarray | None,
) -> list[np.ndarray]:
    """Index arrays of plausible object clusters, best first: near the giver's hand, then largest."""
    labels = cluster_points(points, config.cluster_radius_m)
    if len(labels) == 0:
        return []
    counts = np.bincount(labels)
    out = []
    hand = None
    kp = _valid_keypoints(hand_keypoints)
    if kp is not None:
        hand = cKDTree(kp[np.isfinite(kp).all(axis=1)])
    for label in np.flatnonzero(counts >= config.min_object_points):
        idx = np.flatnonzero(labels == label)
        pts = points[idx]
        extent = float(np.linalg.norm(pts.max(axis=0) - pts.min(axis=0)))
        if extent > max_extent_m:
            continue
        near = 0
        if hand is not None:
            d, _ = hand.query(pts.mean(axis=0))
            near = int(d <= config.offer_radius_m)
        out.append((near, len(idx), idx))
    out.sort(key=lambda c: (c[0], c[1]), reverse=True)
    return [c[2] for c in out]


# ---------------------------------------------------------------------------------------------
# The tracker
# ---------------------------------------------------------------------------------------------


def _velocity(T_prev: np.ndarray, T_new: np.ndarray, dt: float) -> np.ndarray:
    """Twist [6] (omega world, v) that takes T_prev to T_new in dt (T_world_object poses)."""
    omega = Rotation.from_matrix(T_new[:3, :3] @ T_prev[:3, :3].T).as_rotvec() / dt
    v = (T_new[:3, 3] - T_prev[:3, 3]) / dt
    return np.concatenate([omega, v])


def _predict(T: np.ndarray, twist: np.ndarray, dt: float) -> np.ndarray:
    out = np.eye(4)
    out[:3, :3] = Rotation.from_rotvec(twist[:3] * dt).as_matrix() @ T[:3, :3]
    out[:3, 3] = T[:3, 3] + twist[3:] * dt
    return out


def _inverse(T: np.ndarray) -> np.ndarray:
    out = np.eye(4)
    out[:3, :3] = T[:3, :3].T
    out[:3, 3] = -T[:3, :3].T @ T[:3, 3]
    return out


class ObjectTracker:
    """Segments, registers and tracks one object in world clouds (see the module doc).

    `model=None` tracks an unknown object: segmented cloud + centroid pose (`centroid_only`).
    `robot=None` skips robot removal (e.g. no robot in view); `viewpoints` [C, 3] are the camera
    centres (world), used to orient normals and to place global hypotheses.
    """

    def __init__(
        self,
        config: TrackerConfig | None = None,
        model: ObjectModel | None = None,
        robot: RobotPointModel | None = None,
        viewpoints: np.ndarray | None = None,
    ) -> None:
        self.config = config or TrackerConfig()
        self.model = model
        self.robot = robot
        self.viewpoints = None if viewpoints is None else np.asarray(viewpoints, dtype=np.float64)
        self._failed_at: float | None = None  # stamp of the last failed global registration
        self._roll_axis: np.ndarray | None = None  # object frame (see TrackerConfig.roll_search_every)
        self._roll_part: ObjectModel | None = None  # the part that breaks that symmetry (a handle)
        self._symmetry: Symmetry | None = None  # with continuous axes (TrackerConfig.pin_symmetric_turn)
        if model is not None:
            model.fpfh(self.config.global_voxel_m)  # imports open3d now, not on the first frame
            if self.config.pin_symmetric_turn:
                symmetry = Symmetry(model.points[::2], model.points[1::2])
                self._symmetry = symmetry if symmetry.axes else None
            if self.config.roll_search_every > 0:
                axes = near_symmetry_axes(model.points[::2], model.points[1::2])
                self._roll_axis = axes[0] if axes else None
                if self._roll_axis is not None:
                    self._roll_part = asymmetric_part(model, self._roll_axis)
        self.reset()

    def reset(self) -> None:
        """Forget the track (the next frame relocalises)."""
        self._last_pose: np.ndarray | None = None  # T_world_object of the last success
        self._last_stamp: float | None = None
        self._twist = np.zeros(6)
        self._tracked_frames = 0
        self._roll_pending: tuple[np.ndarray, int] | None = None  # (turn, searches that found it)

    # ---- steps -----------------------------------------------------------------------------------
    def _remove_robot_and_hand(
        self,
        pts: np.ndarray,
        joint_positions: Mapping[str, float] | None,
        hand_keypoints: np.ndarray | None,
    ) -> tuple[np.ndarray, int]:
        """(`pts` [K, 3] without the points on the robot and on the giver's hand, how many were
        on the robot)."""
        cfg = self.config
        removed = 0
        if len(pts) and self.robot is not None and joint_positions is not None:
            lo, hi = pts.min(axis=0) - cfg.robot_margin_m, pts.max(axis=0) + cfg.robot_margin_m
            robot_pts = self.robot.points_world(joint_positions, lo, hi)
            if len(robot_pts):
                on_robot = robot_mask(pts, robot_pts, cfg.robot_margin_m)
                removed = int(on_robot.sum())
                pts = pts[~on_robot]
        if len(pts) and hand_keypoints is not None:
            pts = pts[~hand_mask(pts, hand_keypoints, cfg)]
        return pts, removed

    def _prediction(self, stamp: float) -> np.ndarray | None:
        """Constant-velocity prediction of T_world_object at `stamp` (None without a recent pose)."""
        if self._last_pose is None or self._last_stamp is None:
            return None
        dt = stamp - self._last_stamp
        if dt < 0 or dt > self.config.max_gap_s:
            return None
        return _predict(self._last_pose, self._twist, dt)

    def _accept(self, stamp: float, pose: np.ndarray, new_track: bool = False) -> None:
        cfg = self.config
        dt = None if (self._last_stamp is None or new_track) else stamp - self._last_stamp
        if self._last_pose is not None and dt is not None and 1e-4 < dt <= cfg.max_gap_s:
            measured = _velocity(self._last_pose, pose, dt)
            a = cfg.velocity_smoothing  # exponential smoothing: one noisy frame does not fling the prior
            twist = a * measured + (1 - a) * self._twist
            speed = np.linalg.norm(twist[3:])
            if speed > cfg.max_speed_m_s:
                twist[3:] *= cfg.max_speed_m_s / speed
            spin = np.linalg.norm(twist[:3])
            if spin > cfg.max_angular_speed_rad_s:
                twist[:3] *= cfg.max_angular_speed_rad_s / spin
            self._twist = twist
        else:
            self._twist = np.zeros(6)
        self._last_pose, self._last_stamp = pose, stamp

    def _lost(self, stamp: float, detail: str, relocalized: bool = False, fitness: float = 0.0):
        return ObjectEstimate(
            stamp, "lost", None, np.zeros((0, 3), np.float32), fitness, math.nan, 0, relocalized, 0.0, detail
        )

    def _good(self, fit: float, rmse: float, violation: float) -> bool:
        cfg = self.config
        return (
            fit >= cfg.min_fitness
            and math.isfinite(rmse)
            and rmse <= cfg.max_rmse_m
            and violation <= cfg.max_free_space_violation
        )

    def _hand_ok(self, pose: np.ndarray, hand_keypoints: np.ndarray | None) -> bool:
        assert self.model is not None
        front, depth = hand_consistency(pose, self.model, hand_keypoints)
        cfg = self.config
        return front >= cfg.min_front_of_wrist_m and depth <= cfg.max_hand_penetration_m

    def _estimate(self, stamp, pose, obj_pts, fit, rmse, violation, relocalized) -> ObjectEstimate:
        cfg = self.config
        if not cfg.workspace.contains(pose[None, :3, 3])[0]:
            self.reset()
            self._failed_at = stamp  # outside: no new global registration for a while either
            return self._lost(stamp, "the object's centre is outside the workspace", relocalized, fit)
        if len(obj_pts) == 0:
            return self._lost(stamp, "no observed points on the object", relocalized, fit)
        points = sample_fixed(obj_pts, cfg.n_points, cfg.sample_method, cfg.sample_seed)
        detail = f"free-space violation {violation:.2f}"
        n = len(obj_pts)
        return ObjectEstimate(stamp, "tracking", pose, points, fit, rmse, n, relocalized, 0.0, detail)

    # ---- main entry --------------------------------------------------------------------------------
    def update(
        self,
        stamp: float,
        cloud: np.ndarray,
        joint_positions: Mapping[str, float] | None = None,
        hand_keypoints: np.ndarray | None = None,
        views: Sequence[DepthView] | None = None,
    ) -> ObjectEstimate:
        """One frame -> estimate.

        `cloud` [M, 3] world, already cropped to the workspace; `joint_positions` by joint name
        (None: no robot removal); `hand_keypoints` [21, 3] world, the giver's hand (None: no hand
        removal); `views`: the frame's depth images for the free-space check (None: skipped).
        """
        t0 = time.perf_counter()
        cloud = as_cloud(cloud)
        est = self._update(stamp, cloud, joint_positions, hand_keypoints, views)
        if est.pose is not None and self.config.giver_surface_radius_m > 0:
            est.giver_points = self.giver_surface(
                cloud, joint_positions, hand_keypoints, est.pose, est.points
            )
        est.compute_ms = (time.perf_counter() - t0) * 1e3
        return est

    def giver_surface(
        self,
        cloud: np.ndarray,
        joint_positions: Mapping[str, float] | None,
        hand_keypoints: np.ndarray | None,
        T_world_object: np.ndarray,
        object_points: np.ndarray | None = None,
    ) -> np.ndarray:
        """[G, 3] float32 world: the points of `cloud` on the giver's hand (see
        `TrackerConfig.giver_surface_radius_m`): near its keypoints' skeleton, off the robot and
        off the object: the model posed at `T_world_object`, or for an unknown object (no
        model) its segmented `object_points`. The keypoints place the hand, the depth its
        surface: fingers that wrap an object are tracked centimetres short of where they are."""
        cfg = self.config
        kp = _valid_keypoints(hand_keypoints)
        empty = np.zeros((0, 3), np.float32)
        if kp is None or len(cloud) == 0:
            return empty
        r = cfg.giver_surface_radius_m
        lo, hi = np.nanmin(kp, axis=0) - r, np.nanmax(kp, axis=0) + r
        pts = cloud[np.all((cloud >= lo) & (cloud <= hi), axis=1)]
        if not len(pts):
            return empty
        pts = voxel_downsample(pts, cfg.giver_surface_voxel_m).astype(np.float64)
        d, _ = cKDTree(hand_skeleton(kp)).query(pts, k=1, distance_upper_bound=r)
        pts = pts[np.isfinite(d)]
        if len(pts) and self.robot is not None and joint_positions is not None:
            robot_pts = self.robot.points_world(joint_positions, pts.min(axis=0), pts.max(axis=0))
            pts = pts[~robot_mask(pts, robot_pts, cfg.robot_margin_m)]
        if self.model is not None:
            on_object = self.model.points @ T_world_object[:3, :3].T + T_world_object[:3, 3]
        else:
            on_object = np.zeros((0, 3)) if object_points is None else np.asarray(object_points, np.float64)
        if len(pts) and len(on_object):
            d, _ = cKDTree(on_object).query(pts, k=1, distance_upper_bound=cfg.giver_surface_object_m)
            pts = pts[~np.isfinite(d)]
        return pts.astype(np.float32)

    def _update(self, stamp, cloud, joint_positions, hand_keypoints, views) -> ObjectEstimate:
        cfg = self.config
        if len(cloud) == 0:
            return self._lost(stamp, "no valid depth in the workspace")
        pts = voxel_downsample(cloud, cfg.voxel_m).astype(np.float64)
        if self.model is None:
            clean, _ = self._remove_robot_and_hand(pts, joint_positions, hand_keypoints)
            return self._update_unknown(stamp, clean, hand_keypoints)
        model = self.model
        predicted = self._prediction(stamp)
        if predicted is not None:
            # Tracking: only the points around the predicted object need cleaning and registering.
            gate = model.radius + cfg.gate_margin_m
            c = predicted[:3, 3]
            near = np.einsum("ij,ij->i", pts - c, pts - c) <= gate**2
            scene, robot_removed = self._remove_robot_and_hand(pts[near], joint_positions, hand_keypoints)
            if len(scene) >= cfg.min_object_points:
                T_ow = icp_point_to_plane(
                    scene,
                    _inverse(predicted),
                    model,
                    cfg.icp_max_corr_m,
                    cfg.icp_iterations,
                    cfg.icp_damping,
                    cfg.icp_max_points,
                )
                fit, rmse, d = registration_quality(scene, T_ow, model, cfg.inlier_dist_m)
                rolled = False
                self._tracked_frames += 1
                # Not once the robot's hand is at the object: it hides the object's far side and
                # its own fingers cut the cloud (the cell's mug turned wrongly during the pull).
                if (
                    self._roll_axis is not None
                    and self._tracked_frames % cfg.roll_search_every == 0
                    and robot_removed <= cfg.roll_search_max_robot_points
                ):
                    T_ow, fit, rmse, d, rolled = self._roll_check(scene, T_ow, fit, rmse, d, views)
                pose = _inverse(T_ow)
                if self._symmetry is not None and not rolled:
                    pose[:3, :3] = self._symmetry.nearest(predicted[:3, :3], pose[:3, :3])
                violation = free_space_violation(pose, model, views)
                # No hand check here: a track started right is more reliable than keypoints that
                # may be off by centimetres (a biased hand would make a correct pose "penetrate").
                if self._good(fit, rmse, violation):
                    self._accept(stamp, pose, new_track=rolled)  # a new turn is no motion
                    obj_pts = scene[d <= cfg.output_inlier_m]
                    return self._estimate(stamp, pose, obj_pts, fit, rmse, violation, False)
        clean, _ = self._remove_robot_and_hand(pts, joint_positions, hand_keypoints)
        if len(clean) < cfg.min_object_points:
            return self._lost(stamp, "too few points left after removing the robot and the hand")
        return self._relocalize(stamp, clean, hand_keypoints, views, predicted)

    def _roll_search(self, scene, T_ow, fit, views=None):
        """The best registration of ICP started from the tracked one (`T_ow`, fitness `fit`)
        turned about the near-symmetry axis, as (T_object_world, fitness, rmse, distances), if it
        fits better by `roll_search_min_gain` or, with `roll_search_part_gain`, fits about as
        well and shows the asymmetric part better by that much; else None (see
        TrackerConfig.roll_search_every)."""
        cfg, model = self.config, self.model
        assert model is not None and self._roll_axis is not None
        k = np.arange(1, cfg.roll_search_steps)
        turns = Rotation.from_rotvec(np.outer(2 * np.pi * k / cfg.roll_search_steps, self._roll_axis))
        H = np.tile(np.eye(4), (len(k), 1, 1))
        H[:, :3, :3] = turns.as_matrix().transpose(0, 2, 1)  # the object frame turned, T_obj'_obj
        hyps = icp_point_to_plane(
            scene, H @ T_ow, model, cfg.icp_max_corr_m, cfg.icp_iterations, cfg.icp_damping,
            cfg.roll_search_points,
        )  # fmt: skip
        part = self._roll_part if cfg.roll_search_part_gain > 0 else None
        tree = cKDTree(scene) if part is not None else None
        part_now = None if part is None else self._part_score(part, tree, T_ow, views)
        best, best_key = None, -np.inf
        for T in hyps:
            f, r, dist = registration_quality(scene, T, model, cfg.inlier_dist_m)
            if not math.isfinite(r) or f < fit - cfg.roll_search_fit_tolerance:
                continue
            key, better = f, f >= fit + cfg.roll_search_min_gain
            if part is not None:
                score = self._part_score(part, tree, T, views)
                key, better = f + score, score >= part_now + cfg.roll_search_part_gain
            if better and key > best_key:
                best, best_key = (T, f, r, dist), key
        return best

    def _part_score(self, part, tree, T_ow, views) -> float:
        """How well the scene shows the asymmetric part posed by `T_ow`: its points with a
        scene point within `inlier_dist_m`, less those a camera saw through (shares)."""
        T_wo = _inverse(T_ow)
        seen = tree.query(part.points @ T_wo[:3, :3].T + T_wo[:3, 3], k=1)[0] <= self.config.inlier_dist_m
        return float(seen.mean()) - free_space_violation(T_wo, part, views, n=len(part.points))

    def _roll_check(self, scene, T_ow, fit, rmse, d, views=None):
        """(T_object_world, fitness, rmse, distances, turned?): the tracked registration, or a
        turn about the near-symmetry axis that `_roll_search` found better in
        `roll_search_confirm` searches in a row (one noisy frame does not turn the track)."""
        best = self._roll_search(scene, T_ow, fit, views)
        if best is None:
            self._roll_pending = None
            return T_ow, fit, rmse, d, False
        turn = best[0][:3, :3] @ T_ow[:3, :3].T  # the turn relative to the tracked pose
        pending = self._roll_pending
        same = pending is not None and rotation_error_deg(pending[0], turn) <= 20.0
        count = pending[1] + 1 if same else 1
        if count < self.config.roll_search_confirm:
            self._roll_pending = (turn, count)
            return T_ow, fit, rmse, d, False
        self._roll_pending = None
        return (*best, True)

    def _relocalize(self, stamp, pts, hand_keypoints, views, predicted) -> ObjectEstimate:
        cfg = self.config
        model = self.model
        assert model is not None
        if self._failed_at is not None and 0 <= stamp - self._failed_at < cfg.relocalize_interval_s:
            return self._lost(stamp, "lost; waiting to retry global registration")
        max_extent = model.diameter + 2 * cfg.cluster_radius_m + 0.02
        gate = None
        if predicted is not None:
            # Continuity: a track lost a moment ago is looked for near where it should be, so a
            # failed frame cannot hop the track onto hand remnants a hand-width away.
            dt = max(0.0, stamp - float(self._last_stamp))  # type: ignore[arg-type]
            gate = cfg.relocalize_gate_m + cfg.relocalize_gate_speed_m_s * dt

        def passes():
            yield pts, max_extent
            # Only when the first pass found nothing that registers (see TrackerConfig).
            if _valid_keypoints(hand_keypoints) is None:
                return
            if cfg.relocalize_hand_scale <= 0 or cfg.relocalize_extent_scale <= 0:
                return
            wide = replace(
                cfg,
                hand_bone_radius_m=cfg.hand_bone_radius_m * cfg.relocalize_hand_scale,
                hand_palm_radius_m=cfg.hand_palm_radius_m * cfg.relocalize_hand_scale,
            )
            yield pts[~hand_mask(pts, hand_keypoints, wide)], max_extent * cfg.relocalize_extent_scale

        best = None
        tried = False
        for scene, extent in passes():
            candidates = self._candidates(scene, hand_keypoints, predicted, gate, extent)
            if not candidates:
                continue
            tried = True
            for idx in candidates:  # best first: stop at the first that registers well
                T_ow, fit, rmse, violation = global_registration(
                    scene[idx], model, cfg, self.viewpoints, views, hand_keypoints
                )
                pose = _inverse(T_ow)
                near = gate is None or np.linalg.norm(pose[:3, 3] - predicted[:3, 3]) <= gate
                ok = (
                    self._good(fit, rmse, violation)
                    and violation <= cfg.relocalize_max_free_space_violation
                    and self._hand_ok(pose, hand_keypoints)
                    and near
                )
                if best is None or (ok, fit - violation) > (best[0], best[2] - best[4]):
                    best = (ok, T_ow, fit, rmse, violation, scene)
                if ok:
                    break
            if best is not None and best[0]:
                break
        if not tried:
            return self._lost(stamp, "no object-sized cluster in the workspace")
        self._failed_at = stamp  # cleared below on success
        assert best is not None
        ok, T_ow, fit, rmse, violation, scene = best
        if not ok:
            why = f"global registration failed (fitness {fit:.2f}, free-space {violation:.2f})"
            return self._lost(stamp, why, True, fit)
        pose = _inverse(T_ow)
        self._failed_at = None
        self._accept(stamp, pose, new_track=predicted is None)
        return self._estimate(stamp, pose, self._output_points(scene, pose), fit, rmse, violation, True)

    def _candidates(self, pts, hand_keypoints, predicted, gate, max_extent) -> list[np.ndarray]:
        """Index arrays into `pts` of the clusters to register, best first (`candidate_clusters`,
        centres inside the workspace, near the prediction while the track is recent)."""
        cfg, model = self.config, self.model
        assert model is not None
        # A partial view's centroid is within ~r/2 of the centre: the centre must be in the workspace.
        region = cfg.workspace.grown(0.5 * model.radius)
        candidates = [
            idx
            for idx in candidate_clusters(pts, cfg, max_extent, hand_keypoints)
            if region.contains(pts[idx].mean(axis=0)[None])[0]
        ]
        if predicted is not None:
            c = predicted[:3, 3]
            candidates = [
                idx for idx in candidates if np.linalg.norm(pts[idx].mean(axis=0) - c) <= gate + model.radius
            ]
            if not candidates:
                # The object is still joined to hand remnants (keypoints a few cm off): register
                # the points around its predicted centre; the fitness, free-space, hand and gate
                # checks below still decide.
                near = np.flatnonzero(np.linalg.norm(pts - c, axis=1) <= model.radius + gate)
                if len(near) >= cfg.min_object_points:
                    candidates = [near]
        return candidates[: cfg.max_candidates]

    def _output_points(self, pts: np.ndarray, pose: np.ndarray) -> np.ndarray:
        """Observed points [K, 3] within `output_inlier_m` of the posed model surface."""
        assert self.model is not None
        T_ow = _inverse(pose)
        c = pose[:3, 3]
        reach = self.model.radius + self.config.output_inlier_m
        cand = pts[np.einsum("ij,ij->i", pts - c, pts - c) <= reach**2]
        if not len(cand):
            return cand
        d, _ = self.model.tree.query(cand @ T_ow[:3, :3].T + T_ow[:3, 3], k=1)
        return cand[d <= self.config.output_inlier_m]

    def _update_unknown(
        self, stamp: float, pts: np.ndarray, hand_keypoints: np.ndarray | None
    ) -> ObjectEstimate:
        cfg = self.config
        labels = cluster_points(pts, cfg.cluster_radius_m)
        chosen = None
        predicted = self._prediction(stamp)
        if predicted is not None and len(labels):  # follow the cluster nearest the predicted centroid
            counts = np.bincount(labels)
            best_d = cfg.gate_margin_m + 0.05
            for label in np.flatnonzero(counts >= cfg.min_object_points):
                idx = np.flatnonzero(labels == label)
                d = float(np.linalg.norm(pts[idx].mean(axis=0) - predicted[:3, 3]))
                extent = float(np.linalg.norm(pts[idx].max(axis=0) - pts[idx].min(axis=0)))
                if d < best_d and extent <= cfg.max_unknown_extent_m:
                    best_d, chosen = d, idx
        if chosen is None:
            candidates = candidate_clusters(pts, cfg, cfg.max_unknown_extent_m, hand_keypoints)
            if not candidates:
                self.reset()
                return self._lost(stamp, "no object-sized cluster in the workspace")
            chosen = candidates[0]
        obj = pts[chosen]
        pose = np.eye(4)
        pose[:3, 3] = obj.mean(axis=0)
        if not cfg.workspace.contains(pose[None, :3, 3])[0]:
            self.reset()
            return self._lost(stamp, "the object's centroid is outside the workspace")
        self._accept(stamp, pose)
        points = sample_fixed(obj, cfg.n_points, cfg.sample_method, cfg.sample_seed)
        return ObjectEstimate(stamp, "centroid_only", pose, points, 1.0, math.nan, len(obj), False)


# ---------------------------------------------------------------------------------------------
# Depth images -> estimate
# ---------------------------------------------------------------------------------------------


class ObjectTrackingPipeline:
    """Calibrated depth images of N cameras -> `ObjectEstimate` (what the node and the bench run).

    `object_id` "" or None tracks an unknown object (centroid only); a `model` overrides the
    library. `robot` None skips robot removal.
    """

    def __init__(
        self,
        calibration: CalibrationSet,
        config: TrackerConfig | None = None,
        object_id: str | None = None,
        object_scale: float = 1.0,
        robot: RobotDescription | None = None,
        model: ObjectModel | None = None,
    ) -> None:
        self.config = config or TrackerConfig()
        self.calibration = calibration
        self.projectors: dict[tuple[str, int, int], tuple[DepthProjector, np.ndarray]] = {}
        if model is None and object_id:
            model = ObjectModel.from_library(object_id, object_scale, n=self.config.model_points)
        self.model = model
        robot_points = (
            RobotPointModel(robot, self.config.robot_point_spacing_m, self.config.seed) if robot else None
        )
        viewpoints = np.array([cam.T[:3, 3] for cam in calibration.cameras])
        self.tracker = ObjectTracker(self.config, model, robot_points, viewpoints)
        self._crop = self.config.crop_box(model.radius if model is not None else UNKNOWN_OBJECT_RADIUS_M)

    def projector(self, index: int, width: int, height: int) -> tuple[DepthProjector, np.ndarray]:
        """(projector, K) of camera `index` for images of `width` x `height` (intrinsics rescaled
        when the stream's size differs from the calibrated one)."""
        cam = self.calibration.cameras[index]
        key = (cam.name, int(width), int(height))
        if key not in self.projectors:
            intr = cam.intrinsics
            if (intr.width, intr.height) != (width, height):
                intr = intr.scaled(width, height)
            proj = DepthProjector(intr.K, width, height, cam.T, cam.depth_scale_m)
            self.projectors[key] = (proj, intr.K)
        return self.projectors[key]

    def fuse(self, depths: Sequence[np.ndarray | None]) -> tuple[np.ndarray, list[DepthView]]:
        """(world cloud [M, 3] cropped to the workspace, depth views) of one depth image per
        calibrated camera (None or an empty image = camera missing this frame)."""
        if len(depths) != len(self.calibration.cameras):
            raise ValueError(f"{len(depths)} depth images for {len(self.calibration.cameras)} cameras")
        projectors, images, views = [], [], []
        for i, depth in enumerate(depths):
            if depth is None or np.asarray(depth).ndim != 2 or np.asarray(depth).size == 0:
                continue
            h, w = np.asarray(depth).shape
            proj, K = self.projector(i, w, h)
            projectors.append(proj)
            images.append(depth)
            cam = self.calibration.cameras[i]
            views.append(DepthView(K, _inverse(cam.T), depth_to_metres(depth, cam.depth_scale_m)))
        return fuse_depth(projectors, images, self._crop), views

    def process(
        self,
        stamp: float,
        depths: Sequence[np.ndarray | None],
        joint_positions: Mapping[str, float] | None = None,
        hand_keypoints: np.ndarray | None = None,
    ) -> ObjectEstimate:
        """One synchronised frame set -> estimate (compute_ms covers fusion too)."""
        t0 = time.perf_counter()
        cloud, views = self.fuse(depths)
        est = self.tracker.update(stamp, cloud, joint_positions, hand_keypoints, views)
        est.compute_ms = (time.perf_counter() - t0) * 1e3
        return est
