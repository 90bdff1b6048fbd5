"""DynamicGrasp, one step at a time (ROS-free): target-grasp selection, MotionNet re-planning,
goal-pose alignment that follows the moving object, then an explicit close and lift.

    policy = DynamicGrasp(MotionNetPlanner(model), pool, DynamicGraspConfig(mode="easy"))
    target = policy.step(stamp, obj_pose, obj_points, giver_keypoints, HandState(T_world_hand, finger_q))
    target.T_world_hand, target.finger_q, target.stamp, target.phase

Per step (method doc §3.2-3.3; frame = one call):
1. Inputs are checked (`BadInputError`: NaN / too few cloud points, a non-rigid pose, bad shapes;
   `EmptyPoolError`). The object cloud goes through `sample_fixed` (the training preprocessing).
2. The object-frame pool is posed by the current object pose (`pool_t = T_world_obj · T_obj_hand`).
3. *approach*: the planner sees every frame (MotionNet encodes each new cloud once); every
   `replan_every` frames (the paper: 5) it re-plans from the last P hand states towards the target
   grasp (`select_target`: top-40 by translation, then the smallest rotation angle; grasps whose
   hand would touch the giver's hand keypoints are skipped when keypoints are given), and the
   plan's poses are executed one per frame. Until P frames of history exist the hand holds still.
4. *switch* (checked once the trajectory has more than `align_after_frames` frames; the paper:
   50): d = translation to the nearest pool grasp; easy: d < 10 cm; hard: d < 5 cm and the object
   moved since the previous frame. The switch is one-way.
5. *align*, every frame: re-select the goal from pool_t (the goal follows the object and may
   change), n = floor(d / 2 cm); step 1/(n+1) of the way (slerp rotation, lerp translation and
   fingers); when n <= 1, snap to the goal (`reached`).
6. *close* (not in the paper): `close_frames` frames on the goal (still following the object)
   while the flexion joints squeeze `squeeze_rad` past the grasp; *lift*: `lift_height_m` up
   (world +z) over `lift_frames`; then *done* (hold).

`align_style="pregrasp"` (the closed loop's, `dexh2r eval closed-loop`; the default "paper" is
steps 5-6 above, which the offline benchmark keeps) replaces 5-6 for a physical robot: at the
switch it commits to one goal (grasps on the far side of the object from the giver's hand, whose
hand clears the giver by `align_clearance_m` at the grasp and, opened, at the pre-grasp and at
the grasp, where it arrives open; ranked
by `reach_cost` when the caller gives one, else by rotation) and keeps it unless the giver's hand
comes to block it; the fingers open (`open_rad`); the hand goes to a pre-grasp `pregrasp_m`
further out from the object's centre, then straight in, on waypoints in the object frame that
advance `step_m` / `align_step_rad` per frame from the previous waypoint (not from the measured
hand, which lags); each stage ends when the measured hand is there (or `arrive_frames` later);
the close then ramps the fingers from open to the squeezed grasp; from the alignment on, object
poses that jump beyond `pose_gate_m` are held out for a few frames. With `approach_turn_m` the
approach's targets turn toward their goal's rotation as they near it (MotionNet's positions), so
the hand arrives turned for the pre-grasp. With `symmetric_pool` and the
object model, an axisymmetric object's pool also holds its grasps turned end for end (the tracker
cannot tell the ends apart). docs/closed_loop.md says why.

Targets are stamped `stamp + frame_dt_s`: the pose is for the next frame.
"""

from __future__ import annotations

import math
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Literal, Protocol

import numpy as np
import torch
from scipy.spatial import cKDTree

from dexh2r_core.hand_landmarks import FINGERTIPS
from dexh2r_policy.models.geometry import (
    from_frame,
    interpolate_pose,
    inverse,
    is_rigid,
    rotation_angles,
    to_frame,
)

Phase = Literal["warmup", "approach", "align", "close", "lift", "done"]
DEFAULT_SQUEEZE_JOINTS = (*(f"rh_{f}J{j}" for f in ("FF", "MF", "RF", "LF") for j in (3, 2)), "rh_THJ2")


class DynamicGraspError(ValueError):
    """Base of the policy's input errors: no target is produced for this step."""


class BadInputError(DynamicGraspError):
    """An observation that cannot be used (NaN, too few points, a non-rigid pose, a bad shape)."""


class EmptyPoolError(DynamicGraspError):
    """No grasp to aim at."""


@dataclass(frozen=True)
class DynamicGraspConfig:
    mode: Literal["easy", "hard"] = "easy"
    replan_every: int = 5  # k: frames between MotionNet plans (the paper: 5)
    top_k: int = 40  # selection: nearest by translation, then the smallest rotation among these
    easy_radius_m: float = 0.10
    hard_radius_m: float = 0.05
    align_after_frames: int = 50  # the switch is checked once the trajectory is longer than this
    step_m: float = 0.02  # alignment: n = floor(d / step_m) interpolation steps
    snap_steps: int = 1  # snap to the goal when n <= this
    moved_m: float = 1e-4  # hard mode: the object "moved" since the previous frame (translation ...
    moved_rad: float = 1e-3  # ... or rotation above these)
    min_points: int = 32  # fewer finite object points is bad input
    giver_clearance_m: float = 0.02  # skip grasps with hand points this close to giver keypoints (0: off)
    # The giver's fingers as if up to this much longer than the tracked tips (`giver_points`):
    # MediaPipe places the tips of fingers that wrap an object 2-4 cm short. 0: the paper's rule.
    giver_tip_extension_m: float = 0.0
    # With the giver's measured surface (`step(giver_surface=...)`): the goal clearances count
    # each surface point as a bone centre this far inside it (the keypoints' points are bone
    # centres; a finger's radius is about 1 cm), so one threshold serves both.
    giver_surface_depth_m: float = 0.01
    # Approach frames: the network's hand target is moved out of the object (at its predicted
    # next pose) until every hand point is this far outside (models/penetration.py), when the
    # object's surface is known (`set_object_surface`). Off by default: it trades success for
    # safety (docs/policy_motionnet.md, "Collision guard"); off = the paper's protocol.
    collision_guard: bool = False
    collision_margin_m: float = 0.010
    close_frames: int = 5
    squeeze_rad: float = 0.15
    squeeze_joints: tuple[str, ...] = DEFAULT_SQUEEZE_JOINTS
    # Pinch grasps (`grasps.pinch`): index and middle flex and the thumb swings in (THJ5) to
    # squeeze; to open, the fingers extend and the thumb swings back and out.
    pinch_squeeze_joints: tuple[str, ...] = ("rh_FFJ3", "rh_FFJ2", "rh_MFJ3", "rh_MFJ2", "rh_THJ5")
    pinch_thumb_open: tuple[tuple[str, float], ...] = (("rh_THJ5", -0.4), ("rh_THJ4", -0.3))
    lift_frames: int = 10
    lift_height_m: float = 0.10
    # Pregrasp style, from the close on (close, pull, hold): while the object moves less than
    # `pose_smoothing_m` and `pose_smoothing_rad` in a frame, the pose used moves only
    # `pose_smoothing` of the way to the tracked one (an exponential low pass; 1: off). A held
    # object's tracked pose jitters by mm and degrees, and grasp targets that follow it press and
    # turn the hand against the object in the giver's hand; a moving object is followed as
    # measured. Not during the alignment: there it cost the ball's way in (closed loop, cameras).
    pose_smoothing: float = 1.0
    pose_smoothing_m: float = 0.01
    pose_smoothing_rad: float = 0.15
    # Goal alignment on a physical robot (`align_style="pregrasp"`; "paper" = the paper's
    # interpolation from the measured hand, re-selecting the goal every frame):
    # commit to one goal, open the fingers, go to a pre-grasp `pregrasp_m` out from the object
    # (radially, from its centre through the grasp's hand root), then straight in, then close.
    align_style: Literal["paper", "pregrasp"] = "paper"
    pregrasp_m: float = 0.06
    open_rad: float = 0.6  # the squeeze joints open this much from the grasp until the close
    align_step_rad: float = 0.05  # per frame, with step_m: the rotation / translation speed
    align_clearance_m: float = 0.03  # goal and pre-grasp (open hand) this far from the giver
    # A soft band below `align_clearance_m`: grasps that clear the giver by less, down to
    # `align_clearance_m - align_clearance_soft_m`, stay candidates, their rank cost (reach cost,
    # or rotation without one) raised by `align_clearance_cost` per metre short. Tracked
    # keypoints move by millimetres with the robot hand's occlusion of the giver, and a hard cut
    # decided the easy box's goal on a few of them (docs/closed_loop.md, session 21). 0: the cut.
    align_clearance_soft_m: float = 0.0
    align_clearance_cost: float = 100.0
    # With a `reach_path` (the caller's): the goal ranking's best this many goals are checked in
    # order, the first whose way (the hand now -> pre-grasp -> grasp) the arm can follow is
    # committed to (none: the best). A goal the arm's IK reaches from where it is may still lie
    # past a joint flip on the way: the controller (no IK jumps near the wrist singularity)
    # stopped short of the held-high mug's pre-grasp for 2-4 s in every failed easy mug
    # episode, and in the hard set's arcing mug (session 22). 0: off.
    reach_path_tries: int = 0
    # The selection's clearance also checks the open hand at this many poses on the way from the
    # hand's pose to the pre-grasp (object frame; 0: the goal and the pre-grasp only).
    align_path_samples: int = 0
    # Pregrasp style: the approach's targets turn toward their goal's rotation as they near it
    # (slerp weight 0 at `approach_turn_m` from the goal, 1 at `approach_turn_full_m`), so the
    # hand arrives turned for the pre-grasp. MotionNet's approach brings the hand's position to
    # the goal but not its turn: the alignment then turned it 40-60 deg at the giver's hand, at a
    # quarter of the arm's speed (separation monitoring), 1.5-2 s of every handover. 0: off.
    approach_turn_m: float = 0.0
    approach_turn_full_m: float = 0.15
    giver_opposite_cos: float = 0.5  # the hand on the far side of the object from the giver
    max_goal_rotation_rad: float = 1.75  # goals that turn the hand further are not candidates
    # Pregrasp style: commit only to grasps whose own close (open -> squeezed, as the alignment
    # closes) holds the object's weight (the pool's `holds`, `grasps.close_hold`, written by
    # `dexh2r datagen hold`); all grasps when the pool has no results or none holds. Off: the
    # paper's pool as it is. The closed loop turns it on (docs/closed_loop.md, session 17).
    require_close_hold: bool = False
    # With the object model (`set_object_model`) of an axisymmetric object (a can): the pool also
    # holds every grasp turned end for end, which a tracker cannot tell apart. A can tracked upside
    # down otherwise offers other grasps than the true pose does: with cameras the loop chose a
    # pinch with its index on the can's top rim, pressing it into the giver's hand, where the true
    # pose chose one on the side (docs/closed_loop.md). A box's discrete symmetries are left out:
    # closed under all 8, the goal ranking chose grasps that dropped or touched the giver.
    # False: the pool as generated (the paper's).
    symmetric_pool: bool = False
    # Pregrasp style, from the alignment on: an object pose that jumps more than this from the
    # last one used (m, rad per frame) is taken for a tracking error and the last one is kept,
    # for at most `pose_gate_frames` frames in a row (then the new pose is accepted). Held by two
    # hands the object is half hidden: the tracker's pose of a box jumped 4 cm / 110 deg for a
    # few frames and the pull, which follows the object, yanked it out of the robot's fingers.
    # 0: off.
    pose_gate_m: float = 0.0
    pose_gate_rad: float = 0.35
    pose_gate_frames: int = 5
    # Pregrasp style, during the close and the pull (lift): the hand is at the grasp (the close
    # starts once it arrives), so the grasp says where the object is. A tracked pose turned more
    # than `held_gate_rad` (or moved more than `held_gate_m`) from where the grasp puts it, from
    # the measured hand, is a tracking error: the last pose used is kept, for as long as the two
    # disagree (no frame limit, unlike `pose_gate_frames`). Held by two hands a box is half
    # hidden: its tracked pose turned by 50-120 deg for seconds (its position right to a
    # centimetre), the pull followed it and drove the hand 11 cm down into the giver's fingers
    # (easy_box_left_low); the easy mug's turned 41-45 deg in the close (docs/closed_loop.md,
    # session 22). 0: off.
    held_gate_rad: float = 0.0
    held_gate_m: float = 0.05
    # Pregrasp style, what the pull (lift) follows: "pose": the grasp on the tracked object (a
    # giver who moves it on, hard); "position": the object's tracked position, from where the
    # close ended, not its turn; "none": nothing, it rises from where the close ended, still in
    # the world (a giver who holds still, easy). Once the hand holds the object, its tracked pose
    # moves with the hand: a few degrees of error in the tracked turn move the targets (10-15 cm
    # out at the hand), the hand, and so the object, and the pull walks it away. Followed, the
    # easy box walked 8 cm sideways in the pull, pressing the giver's fingers (session 22).
    pull_follow: Literal["pose", "position", "none"] = "pose"
    blocked_frames: int = 3  # re-select only after the goal was blocked this many frames in a row
    # ... where blocked means: the committed goal's clearance from the giver's keypoints (capped
    # at `giver_clearance_m` plus `blocked_margin_m`: clear is clear), averaged over frames (an
    # exponential average, this weight on the newest frame), below `giver_clearance_m` less
    # `blocked_margin_m`. With cameras one frame's clearance of a goal on a held object swings by
    # +-7 mm around 2 cm (MediaPipe; the goal ranking's best): blocked on single frames below 2 cm
    # and re-selected among equals, the way in restarted again and again (hard_drift_slow_box: 5
    # goals in 8 s; docs/closed_loop.md, session 14). A hand that closes in on the goal (0 cm)
    # blocks it within 4 frames. 1.0 and 0: one frame against `giver_clearance_m` (the rule before).
    blocked_smoothing: float = 0.5
    blocked_margin_m: float = 0.01
    arrive_m: float = 0.015  # the measured hand within this (and arrive_rad) of a waypoint ...
    arrive_rad: float = 0.15
    arrive_frames: int = 10  # ... or this many frames after the waypoint was commanded
    lead_frames: float = 0.0  # pregrasp style: targets on the object this many frames ahead ...
    lead_min_step_m: float = 0.003  # ... when it moved more than this in the last frame (not tremor)
    # The same for the grasp itself (the close starts there). Tighter (5 mm, 0.06 rad, 20) let
    # the expert's pinch close more precisely but kept the hand longer near a moving giver: more
    # contacts in the hard set (docs/closed_loop.md).
    grasp_arrive_m: float = 0.015
    grasp_arrive_rad: float = 0.15
    grasp_arrive_frames: int = 10
    # Pregrasp style only: the approach also ends when it stalls: the nearest grasp within
    # `stall_radius_m` and the approach no closer (by `stall_progress_m`) than `stall_frames`
    # frames ago (0: off). MotionNet's approach can hover 6-15 cm from every pool grasp (it heads
    # for poses unlike the pools', e.g. the expert's pinch) and never reach the switch radius;
    # the pregrasp alignment plans its own way in from there (docs/closed_loop.md).
    stall_radius_m: float = 0.10
    stall_frames: int = 10
    stall_progress_m: float = 0.01
    # Pregrasp style only: a hand still this far (m) from the grasp when the way in times out is
    # jammed (on the object or the giver's fingers): it does not close there but backs out to the
    # pre-grasp and commits to another goal, at most `jam_retries` times (0: off, close anyway).
    jam_m: float = 0.03
    jam_retries: int = 1
    # Pregrasp style only: the close also needs the measured hand within this (m) of the target
    # it was sent the frame before (0: off, the default, also in the closed loop). A hand that
    # lags its targets by more is not keeping up with the object (a fast arc, a random walk: 4-20
    # cm against 2-3 cm for a can drifting at 15 cm/s); it goes back to the pre-grasp and in again
    # instead. In-process (hard, 0.035) it turned 2 contacts and 2 drops of 50 into timeouts at
    # equal success; over DDS it held closes back (an easy ball's by 7 s; the measured hand
    # trails the policy's targets more behind the 30 Hz stream), so it is off
    # (docs/closed_loop.md, session 9).
    close_max_lag_m: float = 0.0
    frame_dt_s: float = 0.1  # time between frames (target stamps)
    cloud_sample: Literal["fps", "random"] = "random"  # object cloud sampling (sample_fixed), as in training
    cloud_seed: int = 0

    def __post_init__(self) -> None:
        for name in ("replan_every", "top_k", "min_points"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name}: must be >= 1, got {getattr(self, name)}")
        for name in ("easy_radius_m", "hard_radius_m", "step_m", "frame_dt_s"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name}: must be positive, got {getattr(self, name)}")
        if not 0.0 < self.blocked_smoothing <= 1.0:
            raise ValueError(f"blocked_smoothing: must be in (0, 1], got {self.blocked_smoothing}")
        for name in ("close_frames", "lift_frames", "align_after_frames", "snap_steps"):
            if int(getattr(self, name)) < 0:
                raise ValueError(f"{name}: must be >= 0, got {getattr(self, name)}")
        if self.pull_follow not in ("pose", "position", "none"):
            raise ValueError(f"pull_follow: 'pose', 'position' or 'none', got {self.pull_follow!r}")
        if int(self.reach_path_tries) < 0:
            raise ValueError(f"reach_path_tries: must be >= 0, got {self.reach_path_tries}")
        for name in ("held_gate_rad", "held_gate_m"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name}: must be >= 0, got {getattr(self, name)}")
        if not 0.0 <= self.align_clearance_soft_m <= self.align_clearance_m:
            raise ValueError(
                f"align_clearance_soft_m: must be in [0, align_clearance_m = {self.align_clearance_m}], "
                f"got {self.align_clearance_soft_m}"
            )
        if self.align_clearance_cost < 0:
            raise ValueError(f"align_clearance_cost: must be >= 0, got {self.align_clearance_cost}")
        if self.approach_turn_m > 0 and not 0 <= self.approach_turn_full_m < self.approach_turn_m:
            raise ValueError(
                f"approach_turn_full_m: must be in [0, approach_turn_m = {self.approach_turn_m}), "
                f"got {self.approach_turn_full_m}"
            )

    @property
    def radius_m(self) -> float:
        return self.easy_radius_m if self.mode == "easy" else self.hard_radius_m


@dataclass
class HandState:
    T_world_hand: np.ndarray  # [4, 4] hand root frame in world
    finger_q: np.ndarray  # [22]


@dataclass
class HandTarget:
    stamp: float  # s: when the hand should be there (observation stamp + frame_dt_s)
    T_world_hand: np.ndarray  # [4, 4]
    finger_q: np.ndarray  # [22]
    phase: Phase
    frame: int  # step counter (0 = first observation)
    goal: int | None = None  # pool index aimed at (selection / alignment), if any
    distance_m: float | None = None  # translation to that grasp
    replanned: bool = False
    from_network: bool = False  # a planner (MotionNet) pose, not warm-up / interpolation / close


@dataclass
class ObjectGraspPool:
    """Grasps in the object frame: T_obj_hand [G, 4, 4], finger_q [G, 22] (finger_joint_names order),
    which are fingertip pinches (`pinch` [G] bool, `grasps.pinch`: they open and squeeze
    other joints than the whole-hand grasps), and which hold the object's weight when the closed
    loop closes them (`holds` [G] bool, `grasps.close_hold`; None: not tested)."""

    T_obj_hand: np.ndarray
    finger_q: np.ndarray
    name: str = ""
    pinch: np.ndarray | None = None
    holds: np.ndarray | None = None

    def __post_init__(self) -> None:
        self.T_obj_hand = np.asarray(self.T_obj_hand, dtype=np.float64).reshape(-1, 4, 4)
        if len(self.T_obj_hand) == 0:
            raise EmptyPoolError(f"grasp pool {self.name or '(unnamed)'} is empty")
        self.finger_q = np.asarray(self.finger_q, dtype=np.float64).reshape(len(self.T_obj_hand), -1)
        n = len(self.T_obj_hand)
        self.pinch = np.zeros(n, bool) if self.pinch is None else np.asarray(self.pinch, bool).reshape(n)
        if self.holds is not None:
            self.holds = np.asarray(self.holds, bool).reshape(n)
        if not (np.isfinite(self.T_obj_hand).all() and np.isfinite(self.finger_q).all()):
            raise BadInputError(f"grasp pool {self.name or '(unnamed)'} contains NaN or inf")

    def __len__(self) -> int:
        return len(self.T_obj_hand)

    @classmethod
    def from_grasp_pool(cls, pool, stable_only: bool = True) -> ObjectGraspPool:
        """From a `grasps.pool.GraspPool` (its succ6 grasps when `stable_only` and there are any)."""
        if len(pool) == 0:
            raise EmptyPoolError(f"grasp pool of {pool.object_id} is empty")
        return cls.from_grasp_pools([pool], stable_only, pool.object_id)

    @classmethod
    def from_grasp_pools(
        cls, pools: list, stable_only: bool = True, name: str = "", holds: list | None = None
    ) -> ObjectGraspPool:
        """One pool from an object's `GraspPool` files (one per grasp family): the succ6 grasps of
        every family when `stable_only` and any is stable, else every candidate. `holds`: per
        file its close-hold flags ([N] bool, `grasps.close_hold.load_holds`) or None; the pool
        has `holds` only when every file has them."""
        keep = [g.succ6 for g in pools]
        if not stable_only or not any(k.any() for k in keep):
            keep = [np.ones(len(g), bool) for g in pools]
        rows = list(zip(pools, keep, strict=True))
        tested = holds is not None and all(h is not None for h in holds)
        return cls(
            np.concatenate([g.T_obj_hand[k] for g, k in rows]),
            np.concatenate([g.finger_q[k] for g, k in rows]),
            name,
            np.concatenate([np.full(int(k.sum()), g.info.get("family") == "pinch") for g, k in rows]),
            np.concatenate([h[k] for h, k in zip(holds, keep, strict=True)]) if tested else None,
        )

    def symmetrized(self, rotations: np.ndarray) -> ObjectGraspPool:
        """The pool and its copies turned by each object-frame rotation S ([S, 3, 3], the
        object's symmetries, identity first): grasp g's copy is `S @ T_obj_hand[g]`, the same
        grasp on the object as seen in a pose that differs by S."""
        rotations = np.asarray(rotations, np.float64).reshape(-1, 3, 3)
        S = np.tile(np.eye(4), (len(rotations), 1, 1))
        S[:, :3, :3] = rotations
        return ObjectGraspPool(
            (S[:, None] @ self.T_obj_hand[None]).reshape(-1, 4, 4),
            np.tile(self.finger_q, (len(rotations), 1)),
            self.name,
            np.tile(self.pinch, len(rotations)),
            None if self.holds is None else np.tile(self.holds, len(rotations)),  # the object's symmetry
        )

    @classmethod
    def load(cls, path, stable_only: bool = True) -> ObjectGraspPool:
        """One pool file, with its close-hold results where they exist (`PoolLibrary` joins an
        object's files)."""
        from dexh2r_policy.grasps.close_hold import load_holds
        from dexh2r_policy.grasps.pool import GraspPool

        pool = GraspPool.load(path)
        return cls.from_grasp_pools([pool], stable_only, pool.object_id, [load_holds(path, pool)])


# ---- selection ---------------------------------------------------------------------------------


def giver_points(keypoints: np.ndarray, tip_extension_m: float = 0.0) -> np.ndarray:
    """The giver hand as points: 21 MediaPipe keypoints plus the midpoint of every bone [41, 3];
    with `tip_extension_m` > 0 also 3 points per finger beyond its tip, along its last bone, up
    to that far [56, 3] (the hand tracker places the tips of fingers that wrap an object 2-4 cm
    short, docs/perception_hand.md)."""
    bones = [
        (0, 1),
        (1, 2),
        (2, 3),
        (3, 4),
        (0, 5),
        (5, 6),
        (6, 7),
        (7, 8),
        (0, 9),
        (9, 10),
        (10, 11),
        (11, 12),
        (0, 13),
        (13, 14),
        (14, 15),
        (15, 16),
        (0, 17),
        (17, 18),
        (18, 19),
        (19, 20),
    ]
    kp = np.asarray(keypoints, dtype=np.float64)
    mids = np.array([(kp[a] + kp[b]) / 2 for a, b in bones])
    if tip_extension_m <= 0.0:
        return np.concatenate([kp, mids])
    out = []
    for b in FINGERTIPS:  # each tip's bone from the joint before it (DIP, the thumb's IP)
        u = kp[b] - kp[b - 1]
        u = u / max(float(np.linalg.norm(u)), 1e-9)
        out.extend(kp[b] + f * tip_extension_m * u for f in (1 / 3, 2 / 3, 1.0))
    return np.concatenate([kp, mids, np.array(out)])


def select_target(
    pool_world: np.ndarray,
    T_world_hand: np.ndarray,
    top_k: int = 40,
    pool_points: np.ndarray | None = None,
    giver: np.ndarray | None = None,
    clearance: float = 0.0,
) -> int:
    """Index of the target grasp: among the `top_k` nearest by translation (L2), the smallest
    geodesic rotation angle (the official `find_nearest_final_qpose_using_fourty_trans_top_rotation`).

    pool_world [G, 4, 4]; with `giver` points [K, 3], `pool_points` [G, S, 3] (hand root frame)
    and `clearance` > 0, grasps whose posed points come within `clearance` of the giver are skipped
    (among the 2 top_k nearest); if that leaves none, the unfiltered choice stands.
    """
    d = np.linalg.norm(pool_world[:, :3, 3] - T_world_hand[:3, 3], axis=1)
    order = np.argsort(d, kind="stable")
    cand = order[:top_k]
    if giver is not None and pool_points is not None and clearance > 0:
        wide = order[: 2 * top_k]
        P = from_frame(pool_world[wide], pool_points[wide])  # [C, S, 3]
        gap = np.sqrt(((P[:, :, None, :] - giver[None, None]) ** 2).sum(-1)).min(axis=(1, 2))
        free = wide[gap >= clearance][:top_k]
        if len(free):
            cand = free
    ang = rotation_angles(T_world_hand[None, :3, :3], pool_world[cand, :3, :3])
    return int(cand[int(np.argmin(ang))])


# ---- planners ------------------------------------------------------------------------------------


class MotionPlanner(Protocol):
    """What DynamicGrasp asks for future poses (MotionNet; the recorded expert; later DP/DP3)."""

    n_past: int

    def observe(self, frame: int, cloud_world: np.ndarray, hand: HandState) -> None:
        """Every frame's sampled object cloud [N, 3] (world) with the hand state of that frame."""

    def plan(
        self, frame: int, history: list[HandState], target: HandState, target_points: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """Future poses (T_world_hand [F, 4, 4], finger_q [F, 22]); F >= replan_every."""


def bf16_is_fast() -> bool:
    """True where the CPU has native bfloat16 matrix instructions (oneDNN reports support)."""
    try:
        return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


class MotionNetPlanner:
    """MotionNet behind the planner interface, with per-frame cloud features cached.

    threads: torch intra-op threads (process-wide; None leaves torch's setting). One thread is the
    default: batch-1 inference gains little from more, and on a shared 2-core machine a second
    spinning thread made a 0.1 ms PointNet take 50 ms.
    encoder_dtype: the point encoder's inference precision; "auto" = bfloat16 for wide encoders
    (feature >= 512) on CPUs with native bf16 (AVX512-BF16 / AMX: the paper-size encoder takes
    2.6-5 ms instead of 16-22 ms on 1024 points), else float32. Features go back to float32
    before the trunk (which stays float32).
    """

    def __init__(
        self,
        model,
        hand_surface=None,
        threads: int | None = 1,
        encoder_dtype: Literal["auto", "float32", "bfloat16"] = "auto",
    ) -> None:
        import copy

        from dexh2r_policy.models.hand_surface import HandSurface

        self.model = model.eval()
        c = self.config = model.config
        self.n_past = c.n_past
        self.n_points = c.n_points
        self.hand_surface = hand_surface or HandSurface.for_robot(c.robot, c.n_surface, c.surface_seed)
        self._features: deque[tuple[int, torch.Tensor]] = deque(maxlen=c.n_past)
        if threads is not None:
            torch.set_num_threads(threads)
        device = next(model.parameters()).device
        use_bf16 = encoder_dtype == "bfloat16" or (
            encoder_dtype == "auto" and device.type == "cpu" and c.feature_dim >= 512 and bf16_is_fast()
        )  # a small encoder gains nothing (0.10 vs 0.12 ms for 256 points, 128-d)
        self.encoder_dtype = torch.bfloat16 if use_bf16 else torch.float32
        self.encoder = (
            copy.deepcopy(model.encoder).to(self.encoder_dtype).eval() if use_bf16 else model.encoder
        )

    def reset(self) -> None:
        self._features.clear()

    def hand_points(self, finger_q: np.ndarray) -> np.ndarray:
        return self.hand_surface.points(finger_q)

    @torch.inference_mode()
    def observe(self, frame: int, cloud_world: np.ndarray, hand: HandState) -> None:
        from dexh2r_policy.motionnet import cloud_in_hand

        local = torch.from_numpy(cloud_in_hand(hand.T_world_hand, cloud_world))[None]
        self._features.append((frame, self.encoder(local.to(self.encoder_dtype))[0].float()))

    @torch.inference_mode()
    def plan(
        self, frame: int, history: list[HandState], target: HandState, target_points: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        from dexh2r_policy.motionnet import compose, hand_geometry, hand_history

        P = self.n_past
        hist = history[-P:]
        feats = [f for _, f in self._features][-P:]
        if len(hist) < P or len(feats) < P:
            raise RuntimeError(f"MotionNet needs {P} frames of history, has {len(hist)} / {len(feats)}")
        T = np.stack([h.T_world_hand for h in hist])
        q = np.stack([h.finger_q for h in hist])
        prev, cur = hist[-2], hist[-1]
        geo = hand_geometry(
            prev.T_world_hand,
            self.hand_points(prev.finger_q),
            cur.T_world_hand,
            self.hand_points(cur.finger_q),
            target.T_world_hand,
            target_points,
        )
        out = self.model(
            torch.from_numpy(hand_history(T, q))[None], torch.stack(feats)[None], torch.from_numpy(geo)[None]
        )[0].numpy()
        return compose(cur.T_world_hand, cur.finger_q, out)


class ReplayPlanner:
    """The recorded expert hand as the planner (the offline benchmark's upper bound): the plan at
    frame t is the recording's frames t+1 .. t+F (the last frame repeated past the end)."""

    def __init__(
        self, T_world_hand: np.ndarray, finger_q: np.ndarray, n_past: int = 5, horizon: int = 10
    ) -> None:
        self.T, self.q = np.asarray(T_world_hand), np.asarray(finger_q)
        self.n_past, self.horizon = n_past, horizon

    def observe(self, frame: int, cloud_world: np.ndarray, hand: HandState) -> None:
        pass

    def reset(self) -> None:
        pass

    def plan(
        self, frame: int, history: list[HandState], target: HandState, target_points: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        idx = np.minimum(np.arange(frame + 1, frame + 1 + self.horizon), len(self.T) - 1)
        return self.T[idx], self.q[idx]


# ---- the step ----------------------------------------------------------------------------------


@dataclass
class _State:
    frame: int = -1
    phase: Phase = "warmup"
    history: deque = field(default_factory=lambda: deque(maxlen=8))
    plan: tuple[np.ndarray, np.ndarray] | None = None
    plan_frame: int = -1
    prev_obj: np.ndarray | None = None
    goal: int | None = None
    phase_frame: int = 0
    T_lift0: np.ndarray | None = None
    q_closed: np.ndarray | None = None
    # pregrasp alignment: segment (object frame) from -> to, progress in [0, 1], stage, open hand
    stage: str = ""
    seg_from: np.ndarray | None = None
    q_from: np.ndarray | None = None
    progress: float = 0.0
    at_end: int = 0  # frames since the segment's end was commanded
    blocked: int = 0  # consecutive frames the committed goal was blocked by the giver's hand
    gap_avg: float = 0.0  # the committed goal's giver clearance, averaged (blocked_smoothing)
    q_open: np.ndarray | None = None
    T_hold: np.ndarray | None = None  # pregrasp style: where the hand holds after the pull
    T_sent: np.ndarray | None = None  # pregrasp style: the alignment's last target (world)
    d_best: float | None = None  # the approach's best nearest-grasp distance (stall) ...
    d_best_frame: int = 0  # ... and the frame it was reached
    tried: set = field(default_factory=set)  # pregrasp style: goals abandoned (jammed)
    gated: int = 0  # consecutive frames the object pose was gated out (pose_gate_m)
    held_gated: int = 0  # frames of the close and pull the object pose was gated out (held_gate_rad)
    jump_taken: bool = False  # this frame's pose jumped beyond the pose gate and was taken
    obj_lift0: np.ndarray | None = None  # pregrasp style: the object pose where the close ended
    giver_surface: np.ndarray | None = None  # this frame's measured giver hand points [G, 3]


def _beyond(T_a: np.ndarray, T_b: np.ndarray, max_m: float, max_rad: float) -> bool:
    """Are two poses more than `max_m` apart or turned more than `max_rad` from each other?"""
    return bool(
        np.linalg.norm(T_a[:3, 3] - T_b[:3, 3]) > max_m
        or float(rotation_angles(T_a[:3, :3], T_b[:3, :3])) > max_rad
    )


def predict_pose(T_now: np.ndarray, T_prev: np.ndarray | None, frames: float = 1.0) -> np.ndarray:
    """The object `frames` frames ahead at constant velocity (one: where a target for the next
    frame meets it); `T_now` when there is no previous pose."""
    T = np.array(T_now, dtype=np.float64, copy=True)
    if T_prev is not None and frames != 0.0:
        from scipy.spatial.transform import Rotation

        step = Rotation.from_matrix(T_now[:3, :3] @ T_prev[:3, :3].T).as_rotvec()
        T[:3, :3] = Rotation.from_rotvec(frames * step).as_matrix() @ T_now[:3, :3]
        T[:3, 3] = T_now[:3, 3] + frames * (T_now[:3, 3] - T_prev[:3, 3])
    return T


class DynamicGrasp:
    """The ROS-free DynamicGrasp step (see the module docstring)."""

    def __init__(
        self,
        planner,
        pool: ObjectGraspPool | None,
        config: DynamicGraspConfig | None = None,
        n_points: int | None = None,
        hand_surface=None,
    ) -> None:
        self.planner = planner
        self.config = config or DynamicGraspConfig()
        self.n_points = n_points or getattr(planner, "n_points", 256)
        hs = hand_surface or getattr(planner, "hand_surface", None)
        if hs is None:
            from dexh2r_policy.models.hand_surface import HandSurface

            hs = HandSurface.for_robot("ur5_shadow", 64)
        self.hand_surface = hs
        names = hs.finger_names

        def idx(joints) -> np.ndarray:
            return np.array([names.index(n) for n in joints if n in names], dtype=int)

        c = self.config
        self.squeeze_idx = idx(c.squeeze_joints)
        self.pinch_squeeze_idx = idx(c.pinch_squeeze_joints)
        self.pinch_open_idx = idx(j for j in c.squeeze_joints if "TH" not in j)
        self.pinch_thumb_idx = idx(n for n, _ in c.pinch_thumb_open)
        self.pinch_thumb_delta = np.array([d for n, d in c.pinch_thumb_open if n in names])
        lo, hi = hs.model.jnt_range[:, 0], hs.model.jnt_range[:, 1]
        self.q_lower, self.q_upper = lo[: len(names)], hi[: len(names)]
        self.pool: ObjectGraspPool | None = None
        self.pool_points: np.ndarray | None = None
        # align_style="pregrasp": an optional robot-aware cost of reaching hand-root poses
        # ([C, 4, 4] world -> [C], lower is better, inf = unreachable; e.g. the arm's joint travel
        # time by IK) that ranks the goal candidates instead of their rotation angle.
        self.reach_cost = None
        # Optional, with reach_cost (pregrasp style): (T_world_hand now, [world hand poses]) ->
        # can the arm follow the hand through those poses in turn (e.g. the controller's IK along
        # the way, no joint jump)? The ranked goals are tried in order (`reach_path_tries`).
        self.reach_path = None
        self.collision_guard = None  # set_object_surface
        self.symmetry = None  # set_object_model
        self._obj_lead = np.eye(4)  # the object `lead_frames` ahead (pregrasp-style targets)
        # How long (s) after the observation its target acts on the robot (the stack's compute,
        # as the caller measures it): the lead also covers it. 0: as if no compute time.
        self.latency_s = 0.0
        if pool is not None:
            self.set_pool(pool)
        self.state = _State()

    def set_object_surface(self, points: np.ndarray, normals: np.ndarray, hand_surface=None) -> None:
        """The object's surface sample with outward normals (object frame): enables the collision
        guard of approach targets (`collision_guard`). `hand_surface`: the hand points it keeps
        outside (default: 225 points of this robot's hand)."""
        from dexh2r_policy.models.penetration import CollisionGuard

        points, normals = np.asarray(points, np.float64), np.asarray(normals, np.float64)
        if points.ndim != 2 or points.shape[1] != 3 or normals.shape != points.shape or len(points) < 10:
            raise BadInputError(
                f"object surface: points and normals [N>=10, 3], got {points.shape} / {normals.shape}"
            )
        if not (np.isfinite(points).all() and np.isfinite(normals).all()):
            raise BadInputError("object surface: NaN or inf in the points or normals")
        if hand_surface is None:
            from dexh2r_policy.models.hand_surface import HandSurface

            hand_surface = HandSurface.for_robot(self.hand_surface.robot.config.name, 225)
        self.collision_guard = CollisionGuard(points, normals, hand_surface, self.config.collision_margin_m)

    def set_object_model(self, sim_object, n_points: int = 2048) -> None:
        """The object's library model (`dexh2r_sim.objects`): its rotational symmetries, so that
        a tracked pose that jumps between symmetric equivalents (or spins about a can's axis)
        keeps the pool still (`dexh2r_perception.symmetry`); and, when the config turns the guard
        on, the guard's surface (the mesh sampled with normals, deterministic)."""
        from dexh2r_perception.symmetry import Symmetry

        symmetry = Symmetry.of_object(sim_object)
        # A ball's pose is frozen too (every rotation is a symmetry; a tracker's estimate of its
        # rotation drifts at random). With true poses the giver's hand turning the ball carried
        # the committed grasp away from its fingers, frozen it does not (closed loop, true poses:
        # one easy and one hard episode lost); the tracked giver's hand could stand in for it.
        self.symmetry = None if symmetry.trivial else symmetry
        if self.pool is not None:
            self._apply_symmetry()
        if not self.config.collision_guard:
            return
        from dexh2r_sim.objects import sample_surface_points

        self.set_object_surface(*sample_surface_points(sim_object, n=n_points, seed=0))

    def set_pool(self, pool: ObjectGraspPool) -> None:
        """A new object's pool (its hand surface points are computed once here)."""
        if pool is None or len(pool) == 0:
            raise EmptyPoolError("grasp pool is empty")
        self._base_pool = pool
        self._base_points = self.hand_surface.points_batch(pool.finger_q)
        self._apply_symmetry()

    def _apply_symmetry(self) -> None:
        """`pool`: the base pool, or with `symmetric_pool` and an axisymmetric object model also
        its grasps turned end for end (their hand points are the base's: same fingers)."""
        pool, points = self._base_pool, self._base_points
        sym = self.symmetry
        if self.config.symmetric_pool and sym is not None and len(sym.axes) == 1:
            rotations = sym.distinct_rotations()
            pool, points = pool.symmetrized(rotations), np.tile(points, (len(rotations), 1, 1))
        self.pool, self.pool_points = pool, points
        self.pool_points_open = None  # the open hand's points, computed on first use (pregrasp)

    def reset(self) -> None:
        self.state = _State()
        if hasattr(self.planner, "reset"):
            self.planner.reset()

    @property
    def phase(self) -> Phase:
        return self.state.phase

    # -- checks --
    def _check(self, obj_pose, obj_points, giver_keypoints, hand) -> tuple[np.ndarray, np.ndarray]:
        if self.pool is None or len(self.pool) == 0:
            raise EmptyPoolError("no grasp pool: call set_pool() with the object's grasps first")
        obj_pose = np.asarray(obj_pose, dtype=np.float64)
        if not is_rigid(obj_pose):
            raise BadInputError(
                f"object pose must be a finite rigid 4x4 transform, got shape {obj_pose.shape}"
            )
        pts = np.asarray(obj_points, dtype=np.float64)
        if pts.ndim != 2 or pts.shape[1] != 3:
            raise BadInputError(f"object points must be [N, 3], got shape {list(pts.shape)}")
        finite = np.isfinite(pts).all(axis=1)
        if not finite.all():
            raise BadInputError(
                f"object point cloud contains NaN/inf in {int((~finite).sum())} of {len(pts)} points"
            )
        if len(pts) < self.config.min_points:
            raise BadInputError(
                f"object point cloud has {len(pts)} points, need at least {self.config.min_points}"
            )
        if giver_keypoints is not None:
            kp = np.asarray(giver_keypoints, dtype=np.float64)
            if kp.shape != (21, 3) or not np.isfinite(kp).all():
                raise BadInputError(
                    f"giver keypoints must be a finite [21, 3] array, got shape {list(kp.shape)}"
                )
        if not is_rigid(np.asarray(hand.T_world_hand, dtype=np.float64)):
            raise BadInputError("hand pose must be a finite rigid 4x4 transform")
        q = np.asarray(hand.finger_q, dtype=np.float64)
        if q.shape != (self.hand_surface.n_fingers,) or not np.isfinite(q).all():
            raise BadInputError(f"finger joints must be a finite [{self.hand_surface.n_fingers}] vector")
        return obj_pose, pts

    @staticmethod
    def _check_surface(giver_surface: np.ndarray | None) -> np.ndarray | None:
        if giver_surface is None:
            return None
        g = np.asarray(giver_surface, dtype=np.float64)
        if g.ndim != 2 or g.shape[1] != 3 or not np.isfinite(g).all():
            raise BadInputError(f"giver surface must be a finite [G, 3] array, got shape {list(g.shape)}")
        return g if len(g) else None

    # -- the step --
    def step(
        self,
        stamp: float,
        obj_pose: np.ndarray,
        obj_points: np.ndarray,
        giver_keypoints: np.ndarray | None,
        hand: HandState,
        giver_surface: np.ndarray | None = None,
    ) -> HandTarget:
        """One frame: observation in, the hand target for the next frame out (see module doc).
        `giver_surface` [G, 3] world (optional, with keypoints): the giver's hand as the depth
        cameras see it (`ObjectEstimate.giver_points`); the pregrasp style's goal clearance
        then also keeps from these points (the keypoints place fingers that wrap an object
        centimetres short)."""
        from dexh2r_core.pointcloud import sample_fixed

        c, s = self.config, self.state
        obj_pose, pts = self._check(obj_pose, obj_points, giver_keypoints, hand)
        s.giver_surface = self._check_surface(giver_surface) if giver_keypoints is not None else None
        if self.symmetry is not None and s.prev_obj is not None:
            obj_pose = obj_pose.copy()
            obj_pose[:3, :3] = self.symmetry.nearest(s.prev_obj[:3, :3], obj_pose[:3, :3])
        committed = c.align_style == "pregrasp" and s.phase in ("align", "close", "lift", "done")
        s.jump_taken = False
        if c.pose_gate_m > 0 and committed:
            obj_pose = self._gate_pose(obj_pose)
        if c.held_gate_rad > 0 and s.phase in ("close", "lift") and c.align_style == "pregrasp":
            obj_pose = self._gate_held(obj_pose, hand)
        if c.pose_smoothing < 1.0 and s.phase in ("close", "lift", "done") and c.align_style == "pregrasp":
            obj_pose = self._smooth_pose(obj_pose)
        hand = HandState(np.asarray(hand.T_world_hand, np.float64), np.asarray(hand.finger_q, np.float64))
        s.frame += 1
        s.history.append(hand)
        moved = s.prev_obj is not None and _beyond(obj_pose, s.prev_obj, c.moved_m, c.moved_rad)
        prev_obj, s.prev_obj = s.prev_obj, obj_pose
        pool_world = obj_pose[None] @ self.pool.T_obj_hand
        giver = None if giver_keypoints is None else giver_points(giver_keypoints, c.giver_tip_extension_m)
        out_stamp = float(stamp) + c.frame_dt_s

        def target(T, q, **kw) -> HandTarget:
            return HandTarget(out_stamp, np.asarray(T), np.asarray(q), s.phase, s.frame, **kw)

        if s.phase in ("warmup", "approach"):
            if s.frame + 1 > c.align_after_frames:  # trajectory length = frame + 1
                d_min = float(np.linalg.norm(pool_world[:, :3, 3] - hand.T_world_hand[:3, 3], axis=1).min())
                if (d_min < c.radius_m or self._stalled(d_min)) and (c.mode == "easy" or moved):
                    s.phase = "align"
            if s.phase != "align":  # each frame's cloud is sampled and encoded once
                cloud = sample_fixed(pts, self.n_points, c.cloud_sample, c.cloud_seed)
                self.planner.observe(s.frame, cloud, hand)
        if s.phase == "warmup" and len(s.history) >= self.planner.n_past:
            s.phase = "approach"
        if s.phase == "warmup":
            return target(hand.T_world_hand, hand.finger_q)
        if s.phase == "approach":
            replanned = False
            if s.plan is None or s.frame - s.plan_frame >= c.replan_every:
                g = select_target(
                    pool_world, hand.T_world_hand, c.top_k, self.pool_points, giver, c.giver_clearance_m
                )
                s.goal = g
                goal = HandState(pool_world[g], self.pool.finger_q[g])
                s.plan = self.planner.plan(s.frame, list(s.history), goal, self.pool_points[g])
                s.plan_frame, replanned = s.frame, True
            i = min(s.frame - s.plan_frame, len(s.plan[0]) - 1)
            d = float(np.linalg.norm(pool_world[s.goal, :3, 3] - hand.T_world_hand[:3, 3]))
            T_next = s.plan[0][i]
            if c.align_style == "pregrasp" and c.approach_turn_m > 0:
                T_next = self._turned(T_next, pool_world[s.goal])
            if c.collision_guard and self.collision_guard is not None:
                T_next, _ = self.collision_guard.apply(T_next, s.plan[1][i], predict_pose(obj_pose, prev_obj))
            return target(
                T_next, s.plan[1][i], goal=s.goal, distance_m=d, replanned=replanned, from_network=True
            )
        # Where the pregrasp style's targets meet the moving object: `lead_frames` ahead, for
        # the arm's lag (the privileged expert extrapolates the giver's motion the same way).
        # A pose the gate let through after holding it out is a tracking jump, not motion: not
        # extrapolated (the easy mug's 41 deg jump became 103 deg at the close).
        moving = (
            prev_obj is not None
            and np.linalg.norm(obj_pose[:3, 3] - prev_obj[:3, 3]) > c.lead_min_step_m
            and not s.jump_taken
        )
        pregrasp = c.align_style == "pregrasp"  # the offline benchmark's "paper" style does not use it
        lead = c.lead_frames + self.latency_s / c.frame_dt_s
        self._obj_lead = predict_pose(obj_pose, prev_obj, lead) if pregrasp and moving else obj_pose
        if c.align_style == "pregrasp" and s.phase in ("align", "close"):
            return self._align_pregrasp(obj_pose, pool_world, giver, hand, target)
        if s.phase == "align":
            g = select_target(
                pool_world, hand.T_world_hand, c.top_k, self.pool_points, giver, c.giver_clearance_m
            )
            s.goal = g
            d = float(np.linalg.norm(pool_world[g, :3, 3] - hand.T_world_hand[:3, 3]))
            n = math.floor(d / c.step_m)
            if n <= c.snap_steps:
                s.phase, s.phase_frame = "close", s.frame
                s.q_closed = self.pool.finger_q[g].copy()
                return target(pool_world[g], self.pool.finger_q[g], goal=g, distance_m=d)
            frac = 1.0 / (n + 1)
            T = interpolate_pose(hand.T_world_hand, pool_world[g], frac)
            q = hand.finger_q + frac * (self.pool.finger_q[g] - hand.finger_q)
            return target(T, q, goal=g, distance_m=d)
        if s.phase == "close":
            k = s.frame - s.phase_frame
            ramp = min(1.0, k / max(c.close_frames, 1))
            q = s.q_closed + ramp * (self.squeezed(s.goal) - s.q_closed)
            T = pool_world[s.goal]
            if k >= c.close_frames:
                s.phase, s.phase_frame, s.T_lift0 = "lift", s.frame, T.copy()
                s.q_closed = q
            return target(T, q, goal=s.goal)
        if s.phase == "lift":
            k = s.frame - s.phase_frame
            up = c.lift_height_m * min(1.0, k / max(c.lift_frames, 1))
            if c.align_style == "pregrasp":
                # On a robot the giver may still move (hard): the pull follows the grasp on the
                # object; once it ends the hand holds still in the world (after the giver lets
                # go the object moves with the hand, and following it would chase itself up).
                if c.pull_follow == "pose":
                    T = self._obj_lead @ self.pool.T_obj_hand[s.goal]
                else:
                    T = s.T_lift0.copy()
                    if c.pull_follow == "position" and s.obj_lift0 is not None:
                        T[:3, 3] += self._obj_lead[:3, 3] - s.obj_lift0[:3, 3]
                T[2, 3] += up
                if k >= c.lift_frames:
                    s.phase, s.T_hold = "done", T.copy()
                return target(T, s.q_closed, goal=s.goal)
            T = s.T_lift0.copy()
            T[2, 3] += up
            if k >= c.lift_frames:
                s.phase = "done"
            return target(T, s.q_closed, goal=s.goal)
        if s.T_hold is not None:
            return target(s.T_hold.copy(), s.q_closed, goal=s.goal)
        T = s.T_lift0.copy() if s.T_lift0 is not None else hand.T_world_hand
        T[2, 3] = s.T_lift0[2, 3] + c.lift_height_m if s.T_lift0 is not None else T[2, 3]
        return target(T, s.q_closed if s.q_closed is not None else hand.finger_q, goal=s.goal)

    def _smooth_pose(self, obj_pose: np.ndarray) -> np.ndarray:
        """The object pose smoothed while it is (nearly) still (see `pose_smoothing`)."""
        c, s = self.config, self.state
        last = s.prev_obj
        if last is None:
            return obj_pose
        if _beyond(obj_pose, last, c.pose_smoothing_m, c.pose_smoothing_rad):
            return obj_pose  # moving: followed as measured (the lead extrapolates it)
        return interpolate_pose(last, obj_pose, c.pose_smoothing)

    def _gate_pose(self, obj_pose: np.ndarray) -> np.ndarray:
        """The last pose used instead of one that jumps beyond the gate (see the config)."""
        c, s = self.config, self.state
        if s.prev_obj is None:
            return obj_pose
        jump = _beyond(obj_pose, s.prev_obj, c.pose_gate_m, c.pose_gate_rad)
        if jump and s.gated < c.pose_gate_frames:
            s.gated += 1
            return s.prev_obj.copy()
        s.gated, s.jump_taken = 0, jump
        return obj_pose

    def _gate_held(self, obj_pose: np.ndarray, hand: HandState) -> np.ndarray:
        """The last pose used instead of one that disagrees with the grasp the object is held
        in (see `held_gate_rad`)."""
        c, s = self.config, self.state
        if s.prev_obj is None or s.goal is None:
            return obj_pose
        held = np.asarray(hand.T_world_hand, np.float64) @ inverse(self.pool.T_obj_hand[s.goal])
        if not _beyond(obj_pose, held, c.held_gate_m, c.held_gate_rad):
            return obj_pose
        s.held_gated += 1
        return s.prev_obj.copy()

    def _stalled(self, d_min: float) -> bool:
        """Pregrasp style: has the approach stalled within `stall_radius_m` of a grasp: its best
        distance no better by `stall_progress_m` for `stall_frames` frames (the best so far, not
        frame to frame: tracked poses and MotionNet's re-plans make the distance jitter)?"""
        c, s = self.config, self.state
        if c.align_style != "pregrasp" or c.stall_radius_m <= 0 or s.phase != "approach":
            return False
        if s.d_best is None or d_min < s.d_best - c.stall_progress_m:
            s.d_best, s.d_best_frame = d_min, s.frame
        return d_min < c.stall_radius_m and s.frame - s.d_best_frame >= c.stall_frames

    # -- goal alignment on a physical robot (align_style="pregrasp") --
    def open_hand(self, finger_q: np.ndarray, pinch=False) -> np.ndarray:
        """The grasp posture opened (clipped to limits): a whole-hand grasp's squeeze joints by
        `open_rad`; a pinch's fingers likewise and its thumb swung back (`pinch_thumb_open`):
        opening the thumb's flexion instead drives a pinch's thumb tip 15-30 mm into the object.
        finger_q [..., F], pinch bool or [...]."""
        q = np.array(finger_q, dtype=np.float64, copy=True)
        power = q.copy()
        power[..., self.squeeze_idx] -= self.config.open_rad
        pin = q.copy()
        pin[..., self.pinch_open_idx] -= self.config.open_rad
        pin[..., self.pinch_thumb_idx] += self.pinch_thumb_delta
        out = np.where(np.asarray(pinch, bool)[..., None], pin, power)
        return np.clip(out, self.q_lower, self.q_upper)

    def squeezed(self, g: int) -> np.ndarray:
        """Pool grasp g's fingers squeezed `squeeze_rad` past contact (the grip's servo error):
        the flexion joints of a whole-hand grasp; a pinch's index, middle and thumb toward each
        other (`pinch_squeeze_joints`)."""
        q = self.pool.finger_q[g].copy()
        q[self.pinch_squeeze_idx if self.pool.pinch[g] else self.squeeze_idx] += self.config.squeeze_rad
        return np.clip(q, self.q_lower, self.q_upper)

    def _turned(self, T_next: np.ndarray, T_goal: np.ndarray) -> np.ndarray:
        """The approach target `T_next` (world) with its rotation slerped toward the goal's by
        how near it is to the goal (`approach_turn_m` -> `approach_turn_full_m`); its position
        is MotionNet's."""
        c = self.config
        d = float(np.linalg.norm(T_next[:3, 3] - T_goal[:3, 3]))
        span = max(c.approach_turn_m - c.approach_turn_full_m, 1e-9)
        w = float(np.clip((c.approach_turn_m - d) / span, 0.0, 1.0))
        if w <= 0.0:
            return T_next
        T = interpolate_pose(T_next, T_goal, w)
        T[:3, 3] = T_next[:3, 3]
        return T

    def pregrasp(self, g: int) -> np.ndarray:
        """Pre-grasp of pool grasp g in the object frame: its hand root `pregrasp_m` further out
        from the object's centre (the object frame's origin), the same rotation."""
        T = self.pool.T_obj_hand[g].copy()
        t = T[:3, 3]
        T[:3, 3] = t + self.config.pregrasp_m * t / max(float(np.linalg.norm(t)), 1e-9)
        return T

    def _clearance(
        self,
        idx: np.ndarray,
        obj_pose: np.ndarray,
        giver: np.ndarray,
        T_obj_hand_now: np.ndarray | None = None,
    ) -> np.ndarray:
        """Smallest distance (m) from grasp idx's hand (closed, at the grasp) and open hand (at
        the pre-grasp, and at the grasp, where it arrives open and closes) to the giver points
        and, when given, the measured giver surface (`state.giver_surface`, counted
        `giver_surface_depth_m` further); with `T_obj_hand_now` (the hand, object frame) and
        `align_path_samples` > 0 also the open hand on the way from there to the pre-grasp."""
        if self.pool_points_open is None:
            self.pool_points_open = self.hand_surface.points_batch(
                self.open_hand(self.pool.finger_q, self.pool.pinch)
            )
        pre = np.stack([self.pregrasp(int(g)) for g in idx])
        surface = self.state.giver_surface
        tree = None if surface is None else cKDTree(surface)
        out = np.full(len(idx), np.inf)
        poses = [
            (self.pool.T_obj_hand[idx], self.pool_points[idx]),
            (pre, self.pool_points_open[idx]),
            (self.pool.T_obj_hand[idx], self.pool_points_open[idx]),
        ]
        n = self.config.align_path_samples
        if n > 0 and T_obj_hand_now is not None:  # the way there, open (interpolate_pose, batched)
            from scipy.spatial.transform import Rotation

            R0 = T_obj_hand_now[:3, :3]
            turn = Rotation.from_matrix(R0.T[None] @ pre[:, :3, :3]).as_rotvec()  # [C, 3]
            for f in np.arange(1, n + 1) / (n + 1):
                way = np.tile(np.eye(4), (len(idx), 1, 1))
                way[:, :3, :3] = R0[None] @ Rotation.from_rotvec(f * turn).as_matrix()
                way[:, :3, 3] = (1.0 - f) * T_obj_hand_now[:3, 3] + f * pre[:, :3, 3]
                poses.append((way, self.pool_points_open[idx]))
        for T, P in poses:
            W = from_frame(obj_pose[None] @ T, P)  # [C, S, 3]
            gap = np.sqrt(((W[:, :, None, :] - giver[None, None]) ** 2).sum(-1)).min(axis=(1, 2))
            if tree is not None:  # the measured surface, as if bone centres a finger's radius in
                d = tree.query(W.reshape(-1, 3), k=1)[0].reshape(W.shape[:2]).min(axis=1)
                gap = np.minimum(gap, d + self.config.giver_surface_depth_m)
            out = np.minimum(out, gap)
        return out

    def _select_committed(self, obj_pose, pool_world, giver, hand: HandState) -> int:
        """The alignment goal. With giver points: grasps whose hand sits on the far side of the
        object from the giver's hand (the cosine between object centre -> hand root and object
        centre -> giver centroid at most -`giver_opposite_cos`) and that turn the hand at most
        `max_goal_rotation_rad` (all if none), the 2 top_k nearest of those by translation, the
        ones whose hand (closed at the grasp, open at the pre-grasp and at the grasp) clears the giver by
        `align_clearance_m` (also on the way to the pre-grasp with `align_path_samples`; none: those
        within 5 mm of the largest clearance), then the lowest
        `reach_cost` if given, else the smallest rotation. Without keypoints the run-time rule
        (`select_target`). Either way never a goal abandoned before (`tried`: jammed). With
        `require_close_hold`, of those candidates the ones whose close holds the object
        (`ObjectGraspPool.holds`); if none does, the same selection among the grasps that hold
        (if any does). So the goal changes only where the old one would not hold."""
        c = self.config
        allowed = np.ones(len(pool_world), bool)
        allowed[list(self.state.tried)] = False
        holds = self.pool.holds if c.require_close_hold and self.pool is not None else None
        if giver is None:
            if holds is not None and (holds & allowed).any():
                allowed &= holds
            keep = np.flatnonzero(allowed) if allowed.any() else np.arange(len(pool_world))
            return int(keep[select_target(pool_world[keep], hand.T_world_hand, c.top_k)])
        free, short = self._candidates(obj_pose, pool_world, giver, hand, allowed)
        if holds is not None and not holds[free].any() and (holds & allowed).any():
            free, short = self._candidates(obj_pose, pool_world, giver, hand, allowed & holds)
        if holds is not None and holds[free].any():
            free, short = free[holds[free]], short[holds[free]]
        penalty = c.align_clearance_cost * short
        if self.reach_cost is not None:
            cost = np.asarray(self.reach_cost(pool_world[free]), dtype=np.float64)
            if np.isfinite(cost).any():
                score = cost + penalty
                if self.reach_path is not None and c.reach_path_tries > 0:
                    for i in np.argsort(score, kind="stable")[: c.reach_path_tries]:
                        if not np.isfinite(score[i]):
                            break
                        g = int(free[i])
                        if self.reach_path(hand.T_world_hand, [obj_pose @ self.pregrasp(g), pool_world[g]]):
                            return g
                return int(free[int(np.argmin(score))])
        ang = rotation_angles(hand.T_world_hand[None, :3, :3], pool_world[free, :3, :3])
        return int(free[int(np.argmin(ang + penalty))])

    def _candidates(
        self, obj_pose, pool_world, giver, hand: HandState, allowed: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """`_select_committed`'s candidates among the `allowed` grasps, before the ranking, and
        how far (m) each falls short of `align_clearance_m` (within the soft band; 0 when none
        is in the band and the fallback keeps those that clear the giver most)."""
        c = self.config
        centre = obj_pose[:3, 3]
        to_hand = pool_world[:, :3, 3] - centre
        to_hand /= np.maximum(np.linalg.norm(to_hand, axis=1, keepdims=True), 1e-9)
        to_giver = giver.mean(axis=0) - centre
        to_giver /= max(float(np.linalg.norm(to_giver)), 1e-9)
        ok = to_hand @ to_giver <= -c.giver_opposite_cos
        ok &= (
            rotation_angles(hand.T_world_hand[None, :3, :3], pool_world[:, :3, :3]) <= c.max_goal_rotation_rad
        )
        cand = np.flatnonzero(ok & allowed)
        if not len(cand):
            cand = np.flatnonzero(allowed) if allowed.any() else np.arange(len(pool_world))
        d = np.linalg.norm(pool_world[cand, :3, 3] - hand.T_world_hand[:3, 3], axis=1)
        wide = cand[np.argsort(d, kind="stable")[: 2 * c.top_k]]
        gap = self._clearance(wide, obj_pose, giver, inverse(obj_pose) @ hand.T_world_hand)
        ok = gap >= c.align_clearance_m - c.align_clearance_soft_m
        free, short = wide[ok][: c.top_k], np.maximum(c.align_clearance_m - gap[ok], 0.0)[: c.top_k]
        if not len(free):  # none clears the giver by the margin: those that clear it most
            free = wide[gap >= gap.max() - 0.005][: c.top_k]
            short = np.zeros(len(free))
        return free, short

    def _commit(self, g: int, obj_pose: np.ndarray, giver: np.ndarray | None) -> None:
        """Aim the alignment at pool grasp g: its open hand, and its giver clearance now."""
        s = self.state
        s.goal = g
        s.q_open = self.open_hand(self.pool.finger_q[g], self.pool.pinch[g])
        gap = float(self._clearance(np.array([g]), obj_pose, giver)[0]) if giver is not None else np.inf
        s.gap_avg = min(gap, self._clear_gap)

    @property
    def _clear_gap(self) -> float:
        """A giver clearance that counts as clear (the cap of the blocked average)."""
        return self.config.giver_clearance_m + self.config.blocked_margin_m

    def _lag(self, hand: HandState) -> float:
        """How far (m) the measured hand is from the alignment's last target (0: none yet)."""
        if self.state.T_sent is None:
            return 0.0
        return float(np.linalg.norm(hand.T_world_hand[:3, 3] - self.state.T_sent[:3, 3]))

    def _segment(self, stage: str, T_obj_from: np.ndarray, q_from: np.ndarray) -> None:
        s = self.state
        s.stage, s.seg_from, s.q_from, s.progress, s.at_end = stage, T_obj_from, q_from, 0.0, 0

    def _align_pregrasp(self, obj_pose, pool_world, giver, hand: HandState, target) -> HandTarget:
        """align: committed goal, open hand to the pre-grasp, straight in, then close (see config).

        Waypoints live in the object frame (they follow the moving object) and advance at
        `step_m` / `align_step_rad` per frame from the previous waypoint, not from the measured
        hand (which lags the command); a stage ends when the measured hand is within `arrive_m`
        / `arrive_rad` of its end or `arrive_frames` after the end was commanded."""
        c, s = self.config, self.state
        T_obj_hand_now = inverse(obj_pose) @ hand.T_world_hand
        if s.phase == "align":
            new = None
            if not s.stage:
                new = self._select_committed(obj_pose, pool_world, giver, hand)
            elif giver is not None and s.stage == "pre":
                # The committed goal stays unless the giver's hand blocks it for `blocked_frames`
                # frames in a row (tracked keypoints are noisy at the centimetre level), and
                # never once the hand goes in.
                gap = float(self._clearance(np.array([s.goal]), obj_pose, giver)[0])
                w = c.blocked_smoothing
                s.gap_avg = w * min(gap, self._clear_gap) + (1.0 - w) * s.gap_avg
                blocked = s.gap_avg < c.giver_clearance_m - c.blocked_margin_m
                s.blocked = s.blocked + 1 if blocked else 0
                if s.blocked >= c.blocked_frames:
                    s.blocked = 0
                    g = self._select_committed(obj_pose, pool_world, giver, hand)
                    if g != s.goal and self._clearance(np.array([g]), obj_pose, giver)[0] > gap + 0.01:
                        new = g
            if new is not None:
                self._commit(new, obj_pose, giver)
                self._segment("pre", T_obj_hand_now, hand.finger_q)
            g = s.goal
            end = self.pregrasp(g) if s.stage in ("pre", "out") else self.pool.T_obj_hand[g]
            dist = float(np.linalg.norm(end[:3, 3] - s.seg_from[:3, 3]))
            ang = float(rotation_angles(s.seg_from[:3, :3], end[:3, :3]))
            n = max(1, math.ceil(max(dist / c.step_m, ang / c.align_step_rad)))
            s.progress = min(1.0, s.progress + 1.0 / n)
            T_obj = interpolate_pose(s.seg_from, end, s.progress)
            q = s.q_from + s.progress * (s.q_open - s.q_from)
            d = float(np.linalg.norm(pool_world[g, :3, 3] - hand.T_world_hand[:3, 3]))
            if s.progress >= 1.0:
                err = float(np.linalg.norm(T_obj_hand_now[:3, 3] - end[:3, 3]))
                err_rad = float(rotation_angles(T_obj_hand_now[:3, :3], end[:3, :3]))
                s.at_end += 1
                tol_m, tol_rad, wait = (
                    (c.arrive_m, c.arrive_rad, c.arrive_frames)
                    if s.stage in ("pre", "out")
                    else (c.grasp_arrive_m, c.grasp_arrive_rad, c.grasp_arrive_frames)
                )
                if (err <= tol_m and err_rad <= tol_rad) or s.at_end > wait:
                    if s.stage == "out":  # backed out of a jam: commit to another goal
                        s.tried.add(g)
                        g = self._select_committed(obj_pose, pool_world, giver, hand)
                        self._commit(g, obj_pose, giver)
                        self._segment("pre", T_obj_hand_now, hand.finger_q)
                    elif s.stage == "pre":
                        self._segment("in", end, s.q_open)
                    elif c.jam_m > 0 and err > c.jam_m and len(s.tried) < c.jam_retries:
                        self._segment("out", T_obj_hand_now, s.q_open)
                    elif c.close_max_lag_m > 0 and self._lag(hand) > c.close_max_lag_m:
                        self._segment("pre", T_obj_hand_now, hand.finger_q)  # back out, in again
                    else:
                        s.phase, s.phase_frame = "close", s.frame
                        s.q_closed = self.squeezed(g)
            s.T_sent = self._obj_lead @ T_obj
            return target(s.T_sent, q, goal=g, distance_m=d)
        # close: on the goal (following the object), the fingers from open to the squeezed grasp
        k = s.frame - s.phase_frame
        ramp = min(1.0, k / max(c.close_frames, 1))
        T = self._obj_lead @ self.pool.T_obj_hand[s.goal]
        q = s.q_open + ramp * (s.q_closed - s.q_open)
        if k >= c.close_frames:
            # A pull that does not follow the object's pose rises from where the hand closed
            # (measured): this frame's target may carry a tracking error (the easy mug's jumped
            # by 41 deg at the close's last frame, and the pull then held the hand there).
            start = T if c.pull_follow == "pose" else hand.T_world_hand
            s.phase, s.phase_frame, s.T_lift0 = "lift", s.frame, np.array(start, dtype=np.float64)
            s.obj_lift0 = self._obj_lead.copy()
        return target(T, q, goal=s.goal)


def bench_step(
    model,
    config: DynamicGraspConfig | None = None,
    steps: int = 200,
    seed: int = 0,
    pool_size: int = 500,
    cloud_points: int = 4096,
    guard: bool = False,
) -> dict[str, float]:
    """Step latency (ms) of DynamicGrasp with `model` on a synthetic moving object: every step
    (cloud sampling + encoding, selection, network at re-plan frames, alignment switch check;
    with `guard`, the collision guard of every approach target against a 4 cm sphere's 2048-point
    surface, as `set_object_model` gives it). Returns p50 / p95 / max and the re-plan-step p95
    (`plan_p95`)."""
    from dataclasses import replace

    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    c = config or DynamicGraspConfig(align_after_frames=10**9)
    if guard:
        c = replace(c, collision_guard=True, collision_margin_m=0.010)
    planner = MotionNetPlanner(model)
    pool = synthetic_pool(rng, seed, pool_size, planner.hand_surface.n_fingers)
    policy = DynamicGrasp(planner, pool, c)
    if guard:
        normals = rng.normal(size=(2048, 3))
        normals /= np.linalg.norm(normals, axis=1, keepdims=True)
        policy.set_object_surface(0.04 * normals, normals)
    cloud = rng.normal(scale=0.04, size=(cloud_points, 3))
    hand = HandState(np.eye(4), np.zeros(planner.hand_surface.n_fingers))
    hand.T_world_hand[:3, 3] = [0.5, 0.0, 0.3]
    return bench_loop(policy, cloud, hand, steps, c.frame_dt_s, lambda i: [0.0, 0.01 * np.sin(i / 10), 0.3])


def synthetic_pool(rng: np.random.Generator, seed: int, pool_size: int, n_fingers: int) -> ObjectGraspPool:
    """A random grasp pool for the latency benches."""
    from scipy.spatial.transform import Rotation

    T_pool = np.repeat(np.eye(4)[None], pool_size, axis=0)
    T_pool[:, :3, :3] = Rotation.random(pool_size, random_state=seed).as_matrix()
    T_pool[:, :3, 3] = rng.normal(scale=0.08, size=(pool_size, 3))
    return ObjectGraspPool(T_pool, rng.uniform(0, 0.5, size=(pool_size, n_fingers)))


def bench_loop(policy, cloud, hand, steps, frame_dt_s, obj_at, follow=None) -> dict[str, float]:
    """Times `steps` policy steps on an object moving to `obj_at(i)` (xyz) with `cloud` around it;
    the kinematic hand takes each target (`follow(target)` when given). The first 10 steps warm up.
    Returns step p50 / p95 / max and the re-plan steps' p95 (ms), and the torch thread count."""
    times, plan_times = [], []
    for i in range(steps):
        obj = np.eye(4)
        obj[:3, 3] = obj_at(i)
        t0 = time.perf_counter()
        tgt = policy.step(i * frame_dt_s, obj, cloud + obj[:3, 3], None, hand)
        dt = (time.perf_counter() - t0) * 1000.0
        hand = follow(tgt) if follow is not None else HandState(tgt.T_world_hand, tgt.finger_q)
        if i >= 10:
            times.append(dt)
            if tgt.replanned:
                plan_times.append(dt)
    t = np.array(times)
    return {
        "step_ms_p50": float(np.percentile(t, 50)),
        "step_ms_p95": float(np.percentile(t, 95)),
        "step_ms_max": float(t.max()),
        "plan_ms_p95": float(np.percentile(plan_times, 95)) if plan_times else float("nan"),
        "threads": torch.get_num_threads(),
    }


__all__ = [
    "BadInputError",
    "DynamicGrasp",
    "DynamicGraspConfig",
    "DynamicGraspError",
    "EmptyPoolError",
    "HandState",
    "HandTarget",
    "MotionNetPlanner",
    "ObjectGraspPool",
    "ReplayPlanner",
    "bench_step",
    "inverse",
    "select_target",
    "to_frame",
]


class PoolLibrary:
    """Object-frame grasp pools by object name, for training and the offline benchmark.

    Looks for `<folder>/<object>.npz` (a `GraspPool` file; `/` in ids written as `__`, as
    `pool_filename`) and the object's other grasp families next to it (`<object>.pinch.npz`),
    and joins them into one pool; `families` restricts which (default: every family found), with
    their close-hold results where `dexh2r datagen hold` wrote them (`<pool>.hold.npz`;
    DynamicGraspError when they belong to other grasps). Else, per sequence, the real dataset's
    `model_final_qpose_cvae.pt` ([T, 500, 30] world-frame grasps, brought to the object frame
    with the first frame's object pose; zero rows, the MANO filter's padding, are dropped)."""

    def __init__(self, folder, stable_only: bool = True, families: tuple[str, ...] | None = None) -> None:
        from pathlib import Path

        from dexh2r_policy.grasps.pool import FAMILIES

        self.folder = Path(folder) if folder else None
        self.stable_only = stable_only
        unknown = sorted(set(families or ()) - set(FAMILIES))
        if unknown:
            raise ValueError(f"grasp families {unknown}: expected some of {', '.join(FAMILIES)}")
        self.families = tuple(families) if families else FAMILIES
        self._cache: dict[str, ObjectGraspPool] = {}

    def paths(self, object_name: str, scale: float = 1.0) -> list:
        """The object's pool files at `scale`, one per family found (power first)."""
        from dexh2r_policy.grasps.pool import pool_filename

        if self.folder is None:
            return []
        out = []
        for family in self.families:
            for stem in (object_name, object_name.replace("/", "__")):
                p = self.folder / pool_filename(stem, scale, family=family)
                if p.exists():
                    out.append(p)
                    break
        return out

    def path(self, object_name: str):
        """The object's first pool file (None when there is none)."""
        paths = self.paths(object_name)
        return paths[0] if paths else None

    def get(
        self,
        object_name: str,
        sequence_folder=None,
        obj_pose0: np.ndarray | None = None,
        scale: float = 1.0,
    ) -> ObjectGraspPool:
        """The object's pool; `scale`: the object's scale (a scaled object's own pools, made by
        `dexh2r datagen grasps --scale`; without them the scale-1 pools, with a warning: their
        grasps are for the larger or smaller object)."""
        key = object_name if scale == 1.0 else f"{object_name}@{scale:g}"
        if key in self._cache:
            return self._cache[key]
        paths = self.paths(object_name, scale)
        if not paths and scale != 1.0:
            import warnings

            paths = self.paths(object_name)
            if paths:
                warnings.warn(
                    f"no grasp pool for '{object_name}' at scale {scale:g} in {self.folder}: using its "
                    f"scale-1 pool (make one: dexh2r datagen grasps --objects {object_name} "
                    f"--scale {scale:g})",
                    stacklevel=2,
                )
        if paths:
            from dexh2r_policy.grasps.close_hold import load_holds
            from dexh2r_policy.grasps.pool import GraspPool

            files = [GraspPool.load(p) for p in paths]
            try:
                holds = [load_holds(p, g) for p, g in zip(paths, files, strict=True)]
            except ValueError as exc:
                raise DynamicGraspError(str(exc)) from exc
            pool = ObjectGraspPool.from_grasp_pools(files, self.stable_only, object_name, holds)
            self._cache[key] = pool
            return pool
        if sequence_folder is not None:
            from pathlib import Path

            f = Path(sequence_folder) / "model_final_qpose_cvae.pt"
            if f.exists() and obj_pose0 is not None:
                from dexh2r_policy.models.geometry import qpos_to_poses

                g = torch.load(f, map_location="cpu", weights_only=True)[0].float().numpy()
                g = g[np.abs(g).sum(axis=1) > 0]
                if len(g) == 0:
                    raise EmptyPoolError(f"{f}: every grasp row is zero")
                T, q = qpos_to_poses(g)
                return ObjectGraspPool(inverse(obj_pose0)[None] @ T, q, object_name)
        where = self.folder if self.folder is not None else "(no pool folder given)"
        raise EmptyPoolError(
            f"no grasp pool for object '{object_name}': looked for "
            f"{where}/{object_name.replace('/', '__')}.npz"
            " and the sequence's model_final_qpose_cvae.pt (make pools with `dexh2r datagen grasps`)"
        )
