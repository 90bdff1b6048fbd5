"""3D human hand tracking from calibrated RGB-D cameras (ROS-free; `hand_tracker_node` wraps it).

    tracker = HandTracker(calibration)                        # dexh2r_core.calibration.CalibrationSet
    estimate = tracker.process(stamp, {"camera_0": (rgb, depth_mm), "camera_1": (rgb, depth_mm)})
    estimate.keypoints        # [21, 3] world (m), MediaPipe order; NaN where not valid
    estimate.wrist            # 4x4 world pose of the wrist frame (giver convention, see below)
    tracker.close()

Pipeline per frame (docs/perception_hand.md has the measurements behind every choice):

1. **2D landmarks per camera.** One MediaPipe Hands tracker (legacy `mp.solutions.hands`, bundled
   model, video mode) per camera runs on a square region of interest: the projection of the
   configured workspace box until the camera has seen the hand, then a square around its last
   landmarks (or around the projection of the last fused 3D hand when only another camera sees
   it). At 1.1 m a hand covers ~8 % of a D455 frame, too small for MediaPipe's palm detector on the
   full image. The square moves only when the hand leaves its middle (hysteresis), because
   MediaPipe's own frame-to-frame tracking works in the crop's normalised coordinates.
2. **Lift to 3D per camera.** Depth at each landmark = median of the valid aligned-depth pixels in
   a small window (~6 mm at the hand) that lie within `depth_band_m` of the window's near surface
   (rejects holes and the background behind finger edges). MediaPipe's landmarks are joint centres
   inside the hand while the camera measures the skin facing it, so each landmark's depth gets a
   per-landmark `SURFACE_OFFSET_M` (about half the thickness of a finger, palm or wrist) along
   the viewing ray. Landmarks whose depth is missing, or disagrees with the hand's shape, take a
   *model depth*: MediaPipe's metric, camera-aligned `multi_hand_world_landmarks` (relative 3D
   shape) anchored at the robust median depth of the landmarks that do have depth.
3. **Fuse cameras.** Each camera contributes, per landmark, its viewing ray (lateral sigma =
   pixel sigma * range / f) and, when it has one, a depth along the ray (measured: ~6 mm sigma,
   model: ~30 mm). The fused point is the information-weighted least-squares point, i.e. rays of
   two cameras triangulate and depths refine; this also works when a camera has no depth at all.
   The term with the largest normalised residual is dropped while the fit is inconsistent
   (a depth on the held object or the background, a finger confused in one view).
4. **Single-view frames: the remembered hand shape.** While two or more cameras see the hand,
   the tracker keeps its shape (the 21 fused points, rigidly aligned and blended over frames: a
   grasp does not change during an offer). When only one camera sees it (the other view is
   occluded, or MediaPipe loses the hand against a skin-coloured background), that camera alone
   places joints 4-5 cm off; instead the remembered shape is posed (6 DoF, robust least squares)
   to the camera's landmarks and accepted depths, and used if it fits (`shape_memory*` in the
   config; measured: single-view frames 38 -> 31 mm MPJPE).
5. **Temporal filter.** A One-Euro filter per coordinate (real timestamps; reset after a gap).
6. **Handedness.** MediaPipe's label is unreliable in oblique top-down views (it follows the
   viewpoint, see docs/giver_and_scenarios.md), so the reported `handedness` is geometric: the
   chirality of the 3D keypoints (flexed fingers and the thumb lie on the palm side of the
   index->pinky x wrist->middle frame), accumulated over frames. MediaPipe's vote is reported too.
7. **Wrist 6D pose** in the sim giver's hand-frame convention (so `Giver.wrist_pose` is directly
   comparable): origin at the WRIST keypoint, +z from the wrist toward the fingers (middle MCP),
   -y the palm normal, +x toward the thumb of a right hand (toward the little finger of a left
   hand). The rotation is the Kabsch fit of a palm template (WRIST and the index, middle and ring MCPs in
   that frame, mirrored for a left hand) to the filtered keypoints.

No hand in any camera -> `process` returns None: a hand is never invented.
"""

from __future__ import annotations

import dataclasses
import math
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

import numpy as np

from dexh2r_core.calibration import CalibrationSet, CameraCalibration, CameraIntrinsics
from dexh2r_core.hand_landmarks import NUM_LANDMARKS, WRIST
from dexh2r_core.transforms import invert, rotation_angle

Handedness = Literal["right", "left", "unknown"]

PALM = (0, 5, 9, 13)  # the rigid palm: the 4th/5th metacarpals cup (the pinky MCP moves ~6 mm)

# Depth of each landmark's joint centre behind the skin the camera sees (m): about half the
# thickness of an adult wrist (~40 mm), palm (~25 mm) and finger (~16-18 mm at the base, ~14 mm at
# the tip). The sim giver's capsule fingers (8-11 mm radius) and palm hull have these proportions.
SURFACE_OFFSET_M = np.array(
    [0.022, 0.012, 0.010, 0.009, 0.008]  # wrist, thumb CMC, MCP, IP, tip
    + [0.010, 0.009, 0.008, 0.007] * 4  # MCP, PIP, DIP, tip of each finger
)

# Relative 2D reliability of MediaPipe's landmarks (pixels at a ~40 px hand): measured on the
# cell's images, the wrist and MCPs are found within ~1-3 px, fingertips within ~5-8 px.
PIXEL_SIGMA_SCALE = np.array(
    [1.0, 1.5, 2.0, 2.5, 3.0]  # wrist, thumb
    + [1.3, 1.8, 2.2, 2.8] * 4  # MCP, PIP, DIP, tip of each finger
)

# Palm template of the wrist frame (right hand, metres): WRIST, INDEX/MIDDLE/RING MCP in the giver's
# hand frame (Shadow proportions, = dexh2r_sim.giver.hand_keypoints_from_angles({})[PALM]).
# A left hand uses the mirror image (x -> -x). Tested against the sim in test_hand_tracking.py.
PALM_TEMPLATE_RIGHT = np.array(
    [
        [0.0, 0.0, 0.0],
        [0.033, 0.0, 0.095],
        [0.011, 0.0, 0.099],
        [-0.011, 0.0, 0.095],
    ]
)
_MIRROR = np.diag([-1.0, 1.0, 1.0])


# ---------------------------------------------------------------------------------------------
# Configuration and results
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class OneEuroConfig:
    """One-Euro filter (Casiez et al. 2012): cutoff = min_cutoff_hz + beta * |speed (m/s)|."""

    min_cutoff_hz: float = 1.0
    beta: float = 20.0
    d_cutoff_hz: float = 1.0
    enabled: bool = True


@dataclass(frozen=True)
class HandTrackerConfig:
    # Region where a hand is expected (world, m): its projection is each camera's first crop. It
    # covers the giver's hand from the start of a reach (x ~1.1 m), so the object tracker gets
    # keypoints to cut the hand away from the held object from the first frames on.
    workspace_min: tuple[float, float, float] = (0.45, -0.40, 0.10)
    workspace_max: tuple[float, float, float] = (1.05, 0.40, 0.60)
    # The crop is kept while the hand (+ roi_margin x its size) is inside it and covers at least
    # min_hand_fraction of it; otherwise re-cut to roi_scale x the hand's bounding square.
    roi_scale: float = 3.0
    roi_margin: float = 0.25
    min_hand_fraction: float = 0.25
    min_roi_px: int = 64
    keep_roi_misses: int = 2  # frames the palm detector retries on the same crop after a miss
    input_size: int = 0  # resize every crop to this square before MediaPipe (0: as cropped)
    blur_sigma_px: float = 0.0  # Gaussian blur of the crop before MediaPipe (0: none)
    model_complexity: int = 1  # MediaPipe landmark model (0: ~2x faster, less accurate)
    min_detection_confidence: float = 0.5
    min_tracking_confidence: float = 0.5
    # Depth sampling: window half-size ~depth_window_m at the hand (1..4 px), near-surface band.
    depth_window_m: float = 0.006
    depth_band_m: float = 0.02
    surface_offset: bool = True
    hand_extent_m: float = 0.15  # a depth this far from the hand's median depth is background
    min_anchor_landmarks: int = 3
    # Fusion noise model.
    pixel_sigma_px: float = 1.5  # wrist; other landmarks x PIXEL_SIGMA_SCALE
    depth_sigma_m: float = 0.01  # sensor (~2 mm at 1 m) + where the joint centre lies under the skin
    model_depth_sigma_m: float = 0.04
    fusion_gate: float = 16.0  # chi-square of a ray against the triangulated point
    depth_gate: float = 6.0  # chi-square of a depth against the triangulated point
    max_sigma_m: float = 0.08  # a fused landmark less certain than this is not valid
    max_gap_s: float = 0.25  # filter reset and track loss after this long without a hand
    # Single-view frames (module doc, step 4): pose the shape remembered from multi-view frames.
    shape_memory: bool = True
    shape_memory_blend: float = 0.3  # weight of a new multi-view shape in the remembered one
    shape_memory_min_landmarks: int = 15  # landmarks with 2+ camera rays for a multi-view frame
    shape_memory_max_age_s: float = 10.0  # an offer's length: older shapes are not used
    # The fit is dropped when its median reprojection error exceeds this fraction of the hand's
    # size in the image, or when it turns the hand by more than this from the last frame.
    shape_memory_max_residual: float = 0.06
    shape_memory_max_turn_deg: float = 25.0
    one_euro: OneEuroConfig = field(default_factory=OneEuroConfig)
    handedness_memory: float = 0.85  # weight of the accumulated chirality per frame

    @property
    def workspace_center(self) -> tuple[float, float, float]:
        lo, hi = np.asarray(self.workspace_min), np.asarray(self.workspace_max)
        return tuple(float(v) for v in (lo + hi) / 2)


@dataclass
class Detection2D:
    """One camera's MediaPipe result in full-image pixel coordinates."""

    camera: str
    uv: np.ndarray  # [21, 2] pixels (ROS convention: pixel centres on integers)
    rel_xyz: np.ndarray  # [21, 3] MediaPipe world landmarks (metric, hand-centred; z: weak prior only)
    label: str  # MediaPipe's label as is ("Left"/"Right", assumes a mirrored selfie image)
    label_score: float
    roi: tuple[int, int, int]  # x0, y0, size of the crop it ran on


@dataclass
class CameraObservation:
    """One camera's 3D evidence per landmark (world frame)."""

    camera: str
    origin: np.ndarray  # [3] camera centre
    rays: np.ndarray  # [21, 3] unit viewing rays
    range_m: np.ndarray  # [21] distance along the ray (NaN: unknown)
    depth_kind: np.ndarray  # [21] 0 none, 1 model, 2 measured
    lateral_sigma_m: np.ndarray  # [21]
    depth_sigma_m: np.ndarray  # [21] (inf: no depth term)
    detection: Detection2D

    @property
    def points(self) -> np.ndarray:
        """[21, 3] world points of this camera alone (NaN where it has no depth)."""
        return self.origin + self.rays * self.range_m[:, None]


@dataclass
class HandEstimate:
    stamp: float
    keypoints: np.ndarray  # [21, 3] world (m), MediaPipe order; NaN where not valid
    valid: np.ndarray  # [21] bool
    confidence: np.ndarray  # [21] in [0, 1] (1 / (1 + (sigma / 1 cm)^2))
    sigma_m: np.ndarray  # [21] fused 1-sigma uncertainty (largest axis), before filtering
    wrist: np.ndarray  # 4x4 world pose of the wrist frame (NaN-filled when not computable)
    handedness: Handedness  # geometric (chirality of the 3D keypoints, accumulated)
    handedness_score: float  # 0.5 = undecided, 1 = certain
    handedness_mediapipe: Handedness  # MediaPipe's vote, un-mirrored (unreliable in oblique views)
    cameras_used: list[str]
    raw_keypoints: np.ndarray | None = None  # [21, 3] fused, before the temporal filter
    detections: dict[str, Detection2D] = field(default_factory=dict)
    from_shape_memory: bool = False  # a single view: the remembered shape posed to it (step 4)

    @property
    def wrist_valid(self) -> bool:
        return bool(np.all(np.isfinite(self.wrist)))


# ---------------------------------------------------------------------------------------------
# One-Euro filter
# ---------------------------------------------------------------------------------------------


class OneEuroFilter:
    """Element-wise One-Euro filter over arrays of a fixed shape, driven by real timestamps.

    NaN input entries keep their state and come out NaN; a time step <= 0 returns the last output.
    """

    def __init__(self, min_cutoff_hz: float = 1.0, beta: float = 0.0, d_cutoff_hz: float = 1.0):
        if min_cutoff_hz <= 0 or d_cutoff_hz <= 0 or beta < 0:
            raise ValueError("OneEuroFilter: cutoffs must be > 0 and beta >= 0")
        self.min_cutoff_hz = float(min_cutoff_hz)
        self.beta = float(beta)
        self.d_cutoff_hz = float(d_cutoff_hz)
        self.reset()

    @classmethod
    def from_config(cls, config: OneEuroConfig) -> OneEuroFilter:
        return cls(config.min_cutoff_hz, config.beta, config.d_cutoff_hz)

    def reset(self) -> None:
        self._t: float | None = None
        self._x: np.ndarray | None = None  # filtered value (NaN: no state yet)
        self._dx: np.ndarray | None = None

    @staticmethod
    def _alpha(cutoff_hz: np.ndarray | float, dt: float) -> np.ndarray | float:
        tau = 1.0 / (2.0 * math.pi * np.asarray(cutoff_hz))
        return 1.0 / (1.0 + tau / dt)

    def __call__(self, t: float, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=float)
        finite = np.isfinite(x)
        if self._x is None or self._t is None:
            self._x = np.where(finite, x, np.nan)
            self._dx = np.zeros_like(x)
            self._t = float(t)
            return self._x.copy()
        if self._x.shape != x.shape:
            raise ValueError(f"OneEuroFilter: shape changed from {self._x.shape} to {x.shape}")
        dt = float(t) - self._t
        if dt <= 0:
            return np.where(finite, self._x, np.nan)
        fresh = finite & ~np.isfinite(self._x)  # first value of an entry: take it as is
        prev = np.where(fresh | ~finite, x, self._x)
        dx = np.where(finite & ~fresh, (x - prev) / dt, 0.0)
        a_d = self._alpha(self.d_cutoff_hz, dt)
        dx_hat = np.where(finite, a_d * dx + (1 - a_d) * self._dx, self._dx)
        cutoff = self.min_cutoff_hz + self.beta * np.abs(dx_hat)
        a = self._alpha(cutoff, dt)
        x_hat = np.where(finite, a * x + (1 - a) * prev, self._x)
        x_hat = np.where(fresh, x, x_hat)
        self._x, self._dx, self._t = x_hat, dx_hat, float(t)
        return np.where(finite, x_hat, np.nan)


# ---------------------------------------------------------------------------------------------
# Geometry helpers
# ---------------------------------------------------------------------------------------------


def project(T_world_camera: np.ndarray, K: np.ndarray, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """World points [N, 3] -> (pixels [N, 2], z-depth [N]) for a pinhole camera (no distortion)."""
    T = invert(T_world_camera)
    pc = np.asarray(points, dtype=float) @ T[:3, :3].T + T[:3, 3]
    z = pc[:, 2]
    with np.errstate(divide="ignore", invalid="ignore"):
        uv = pc[:, :2] / z[:, None] * [K[0, 0], K[1, 1]] + [K[0, 2], K[1, 2]]
    return uv, z


def square_roi(
    center: np.ndarray, size: float, width: int, height: int, min_size: int = 1
) -> tuple[int, int, int]:
    """A square crop (x0, y0, size) of `size` px centred at `center`, shifted to lie in the image."""
    s = round(min(max(size, min_size), width, height))
    x0 = round(float(np.clip(center[0] - s / 2.0 + 0.5, 0, width - s)))
    y0 = round(float(np.clip(center[1] - s / 2.0 + 0.5, 0, height - s)))
    return x0, y0, s


def box_corners(lo: Sequence[float], hi: Sequence[float]) -> np.ndarray:
    return np.array([[x, y, z] for x in (lo[0], hi[0]) for y in (lo[1], hi[1]) for z in (lo[2], hi[2])])


def sample_depth(
    depth_m: np.ndarray, uv: np.ndarray, radius_px: int | np.ndarray, band_m: float = 0.02
) -> np.ndarray:
    """Robust depth (m) at each pixel of `uv` [N, 2]; NaN where the window has no valid pixel.

    Window of (2r+1)^2 pixels; invalid pixels (0, NaN, inf) are ignored. The window's near surface
    is its 25th-percentile depth; only pixels within `band_m` of it count and their median is
    returned: a landmark near an edge then measures the hand, not the background behind it.
    """
    depth_m = np.asarray(depth_m)
    h, w = depth_m.shape
    n = len(uv)
    r = np.broadcast_to(np.asarray(radius_px, dtype=int), (n,))
    rmax = int(r.max()) if n else 0
    offs = np.arange(-rmax, rmax + 1)
    du, dv = np.meshgrid(offs, offs)
    du, dv = du.ravel(), dv.ravel()
    inside = (np.abs(du)[None, :] <= r[:, None]) & (np.abs(dv)[None, :] <= r[:, None])
    with np.errstate(invalid="ignore"):
        ui = np.rint(uv[:, 0]).astype(int, copy=False) if n else np.zeros(0, int)
        vi = np.rint(uv[:, 1]).astype(int, copy=False) if n else np.zeros(0, int)
    finite_uv = np.all(np.isfinite(uv), axis=1)
    ui = np.where(finite_uv, ui, -(10**6))
    vi = np.where(finite_uv, vi, -(10**6))
    U = ui[:, None] + du[None, :]
    V = vi[:, None] + dv[None, :]
    ok = inside & (U >= 0) & (w > U) & (V >= 0) & (h > V)
    vals = np.full(U.shape, np.inf)
    vals[ok] = depth_m[V[ok], U[ok]]
    vals[~(np.isfinite(vals) & (vals > 0))] = np.inf
    # Sorting-based percentiles (np.nanpercentile along an axis is ~30x slower here).
    vals.sort(axis=1)
    count = np.isfinite(vals).sum(axis=1)
    out = np.full(n, np.nan)
    has = count > 0
    if not np.any(has):
        return out
    rows = np.flatnonzero(has)
    near = vals[rows, (0.25 * (count[rows] - 1)).astype(int)]
    v = vals[rows]
    keep = np.abs(v - near[:, None]) <= band_m  # inf entries never pass
    v = np.where(keep, v, np.inf)
    v.sort(axis=1)
    k = keep.sum(axis=1)  # >= 1: the near value itself is always kept
    lo = v[np.arange(len(rows)), (k - 1) // 2]
    hi = v[np.arange(len(rows)), k // 2]
    out[rows] = 0.5 * (lo + hi)
    return out


def depth_to_metres(depth: np.ndarray, depth_scale_m: float) -> np.ndarray:
    """uint16 sensor units (0 = invalid) or float metres (0/NaN = invalid) -> float32 metres, NaN invalid."""
    depth = np.asarray(depth)
    if depth.ndim != 2:
        raise ValueError(f"depth image must be 2-D, got shape {depth.shape}")
    if np.issubdtype(depth.dtype, np.integer):
        out = depth.astype(np.float32) * np.float32(depth_scale_m)
    else:
        out = depth.astype(np.float32, copy=True)
    out[~(np.isfinite(out) & (out > 0))] = np.nan
    return out


# ---------------------------------------------------------------------------------------------
# Hand geometry: handedness and the wrist frame
# ---------------------------------------------------------------------------------------------


def _unit(v: np.ndarray, eps: float = 1e-9) -> np.ndarray | None:
    n = float(np.linalg.norm(v))
    return v / n if np.isfinite(n) and n > eps else None


def _finite(*rows: np.ndarray) -> bool:
    return all(bool(np.all(np.isfinite(r))) for r in rows)


def _palm_z_and_back(keypoints: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """(z', back) from keypoints: z' = wrist -> centroid of the index/middle/ring MCPs (unit) and
    back = the fingers' mean curl (MCP -> mean of PIP/DIP/TIP) reversed, perpendicular to z' (m).
    Fingers flex toward the palm, so `back` points out of the back of the hand for either side."""
    k = np.asarray(keypoints, dtype=float)
    mcps = [k[i] for i in (5, 9, 13) if _finite(k[i])]
    if not _finite(k[WRIST]) or len(mcps) < 2:
        return None
    z = _unit(np.mean(mcps, axis=0) - k[WRIST])
    if z is None:
        return None
    curls = [
        np.mean(k[[m + 1, m + 2, m + 3]], axis=0) - k[m]
        for m in (5, 9, 13, 17)
        if _finite(k[m], k[m + 1], k[m + 2], k[m + 3])
    ]
    if not curls:
        return None
    back = -np.mean(curls, axis=0)
    return z, back - (back @ z) * z


def chirality(keypoints: np.ndarray) -> float:
    """Signed thumb offset (m) across the palm: > 0 for a right hand, < 0 for a left; NaN if unknown.

    With z' toward the fingers and y' out of the back of the hand (from the finger curl, which does
    not depend on the side), x' = y' x z' points to the thumb of a right hand and away from the
    thumb of a left one. The thumb is used rather than the index -> pinky MCP line because on
    small images MediaPipe's MCPs nearly coincide (measured: ~80 % of single frames correct
    with the thumb, ~60 % with the MCP line).
    """
    k = np.asarray(keypoints, dtype=float)
    axes = _palm_z_and_back(k)
    if axes is None:
        return float("nan")
    z, back = axes
    y = _unit(back)
    if y is None:
        return float("nan")
    x = np.cross(y, z)
    thumb = [k[i] - k[WRIST] for i in (1, 2, 3, 4) if _finite(k[i])]
    return float(np.mean(np.asarray(thumb) @ x)) if thumb else float("nan")


def palm_template(side: Handedness) -> np.ndarray:
    return PALM_TEMPLATE_RIGHT @ _MIRROR if side == "left" else PALM_TEMPLATE_RIGHT.copy()


def _kabsch(src: np.ndarray, dst: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Rotation R minimising sum w |R (src - mean) - (dst - mean)|^2 (weighted means)."""
    mu_s = (w[:, None] * src).sum(axis=0) / w.sum()
    mu_d = (w[:, None] * dst).sum(axis=0) / w.sum()
    H = ((src - mu_s) * w[:, None]).T @ (dst - mu_d)
    U, _, Vt = np.linalg.svd(H)
    d = np.sign(np.linalg.det(Vt.T @ U.T))
    return Vt.T @ np.diag([1.0, 1.0, d]) @ U.T


def wrist_pose_from_keypoints(
    keypoints: np.ndarray, side: Handedness, min_cue_m: float = 0.005
) -> np.ndarray:
    """4x4 wrist frame (giver convention) from [21, 3] keypoints; NaN-filled if not computable.

    Origin: the WRIST keypoint. Rotation: the Kabsch fit of the palm template (WRIST and the
    index/middle/ring MCPs in the hand frame, mirrored for a left hand; the rigid part of a hand)
    to the keypoints, with the WRIST weighted like the three MCPs together so that the fit turns
    about the wrist. A palm whose MCPs lie closer than `min_cue_m` to the wrist->MCP line (seen
    edge-on, or MediaPipe's MCPs collapsed onto one point) leaves the roll about that line
    undetermined: NaN. Planar palm points fit a right and a left template equally well; the
    fingers' curl (toward the palm for either side) picks the side when `side` contradicts it.
    """
    out = np.full((4, 4), np.nan)
    k = np.asarray(keypoints, dtype=float)
    idx = [i for i in PALM if _finite(k[i])]
    if WRIST not in idx or len(idx) < 3:
        return out
    template = palm_template("left" if side == "left" else "right")
    src = template[[PALM.index(i) for i in idx]]
    dst = k[idx]
    w = np.where(np.array(idx) == WRIST, len(idx) - 1.0, 1.0)
    axis = _unit(dst[1:].mean(axis=0) - dst[0])
    if axis is None:
        return out
    lateral = dst[1:] - dst[0]
    lateral = lateral - np.outer(lateral @ axis, axis)
    if float(np.max(np.linalg.norm(lateral, axis=1))) < min_cue_m:
        return out
    R = _kabsch(src, dst, w)
    # The palm points are nearly planar, so a right and a left template fit them equally well
    # (mirror ambiguity). The fingers curl toward the palm (-y) for either side: when they visibly
    # do and the fit's palm faces the other way, the hand is the other side's.
    axes = _palm_z_and_back(k)
    if axes is not None and float(np.linalg.norm(axes[1])) >= 2 * min_cue_m and R[:, 1] @ axes[1] < 0:
        other = palm_template("right" if side == "left" else "left")
        R = _kabsch(other[[PALM.index(i) for i in idx]], dst, w)
    out = np.eye(4)
    out[:3, :3] = R
    out[:3, 3] = k[WRIST]
    return out


# ---------------------------------------------------------------------------------------------
# Per-camera MediaPipe with a region of interest
# ---------------------------------------------------------------------------------------------


class LandmarkModel(Protocol):
    """What HandTracker needs from MediaPipe Hands (a fake can stand in for tests)."""

    def process(self, image: np.ndarray) -> Any: ...

    def close(self) -> None: ...


def mediapipe_hands_factory(config: HandTrackerConfig) -> Callable[[], LandmarkModel]:
    def make() -> LandmarkModel:
        import mediapipe as mp  # deferred: ~1 s import, and only the tracker needs it

        return mp.solutions.hands.Hands(
            static_image_mode=False,
            max_num_hands=1,
            model_complexity=config.model_complexity,
            min_detection_confidence=config.min_detection_confidence,
            min_tracking_confidence=config.min_tracking_confidence,
        )

    return make


class CameraHandDetector:
    """MediaPipe on one camera's colour images, on a crop that follows the hand (see module doc)."""

    def __init__(self, name: str, model: LandmarkModel, config: HandTrackerConfig):
        self.name = name
        self.model = model
        self.config = config
        self.roi: tuple[int, int, int] | None = None
        self.last_uv: np.ndarray | None = None
        self.misses = 0

    def choose_roi(
        self, width: int, height: int, workspace_uv: np.ndarray | None, hint_uv: np.ndarray | None
    ) -> tuple[int, int, int]:
        """The crop for the next frame (x0, y0, size).

        MediaPipe's video mode tracks the hand in the crop's normalised coordinates: a crop that
        jumps loses that track for a frame (measured: a crop re-cut around the hand every frame
        halves the detection rate). So the crop stays as it is while the hand (plus a margin) is
        inside it and not much smaller than it, and only then is re-cut around the hand.
        """
        cfg = self.config
        target = self.last_uv if self.last_uv is not None else hint_uv
        if target is not None:
            target = target[np.all(np.isfinite(target), axis=1)]
            if len(target) < 2:
                target = None
        # A miss: let the palm detector retry on the same crop, then every other frame look at the
        # whole workspace in case the hint (another camera's hand) is wrong.
        if (
            self.last_uv is None
            and self.misses > cfg.keep_roi_misses
            and (target is None or self.misses % 2 == 1)
        ):
            return self._workspace_roi(width, height, workspace_uv)
        if target is None:
            if self.roi is not None and self.misses <= cfg.keep_roi_misses:
                return self.roi
            return self._workspace_roi(width, height, workspace_uv)
        lo, hi = target.min(axis=0), target.max(axis=0)
        extent = float(np.max(hi - lo))
        if self.roi is not None:
            x0, y0, s = self.roi
            margin = cfg.roi_margin * extent
            inside = (
                (lo[0] - margin >= x0 or x0 == 0)
                and (lo[1] - margin >= y0 or y0 == 0)
                and (hi[0] + margin <= x0 + s or x0 + s == width)
                and (hi[1] + margin <= y0 + s or y0 + s == height)
            )
            if inside and extent >= cfg.min_hand_fraction * s:
                return self.roi
        want = min(max(cfg.roi_scale * extent, cfg.min_roi_px), width, height)
        return square_roi((lo + hi) / 2, want, width, height, cfg.min_roi_px)

    def _workspace_roi(
        self, width: int, height: int, workspace_uv: np.ndarray | None
    ) -> tuple[int, int, int]:
        if workspace_uv is not None and len(workspace_uv) and np.all(np.isfinite(workspace_uv)):
            lo, hi = workspace_uv.min(axis=0), workspace_uv.max(axis=0)
            lo, hi = np.maximum(lo, 0), np.minimum(hi, [width - 1, height - 1])
            if np.all(hi > lo):
                size = max(hi[0] - lo[0], hi[1] - lo[1])
                return square_roi((lo + hi) / 2, size, width, height, self.config.min_roi_px)
        return square_roi((width / 2, height / 2), min(width, height), width, height)

    def detect(
        self, rgb: np.ndarray, workspace_uv: np.ndarray | None, hint_uv: np.ndarray | None = None
    ) -> Detection2D | None:
        height, width = rgb.shape[:2]
        roi = self.choose_roi(width, height, workspace_uv, hint_uv)
        self.roi = roi
        x0, y0, s = roi
        crop = np.ascontiguousarray(rgb[y0 : y0 + s, x0 : x0 + s, :3])
        if self.config.blur_sigma_px > 0:
            import cv2

            crop = cv2.GaussianBlur(crop, (0, 0), self.config.blur_sigma_px)
        if self.config.input_size > 0 and s != self.config.input_size:
            import cv2

            crop = cv2.resize(crop, (self.config.input_size,) * 2, interpolation=cv2.INTER_LINEAR)
        result = self.model.process(crop)
        hands = getattr(result, "multi_hand_landmarks", None)
        if not hands:
            self.last_uv = None
            self.misses += 1
            return None
        lm = np.array([[p.x, p.y, p.z] for p in hands[0].landmark], dtype=float)
        # Normalised crop coordinates (pixel centres at (i + 0.5) / s) -> full-image ROS pixels.
        uv = lm[:, :2] * s + [x0 - 0.5, y0 - 0.5]
        world = getattr(result, "multi_hand_world_landmarks", None)
        if world:
            rel = np.array([[p.x, p.y, p.z] for p in world[0].landmark], dtype=float)
        else:
            rel = np.full((NUM_LANDMARKS, 3), np.nan)
        label, score = "", 0.0
        handed = getattr(result, "multi_handedness", None)
        if handed:
            c = handed[0].classification[0]
            label, score = str(c.label), float(c.score)
        self.last_uv = uv
        self.misses = 0
        return Detection2D(self.name, uv, rel, label, score, roi)

    def close(self) -> None:
        self.model.close()


# ---------------------------------------------------------------------------------------------
# Lifting and fusion
# ---------------------------------------------------------------------------------------------


def normalized_rays(intr: CameraIntrinsics, uv: np.ndarray) -> np.ndarray:
    """Pixels [N, 2] -> normalised image coordinates [N, 2] (x/z, y/z), undistorting if needed."""
    if intr.D and any(abs(float(v)) > 0 for v in intr.D) and intr.distortion_model == "plumb_bob":
        import cv2

        pts = cv2.undistortPoints(
            np.asarray(uv, dtype=np.float64).reshape(-1, 1, 2), intr.K, np.asarray(intr.D, float)
        )
        return pts.reshape(-1, 2)
    return (np.asarray(uv, dtype=float) - [intr.cx, intr.cy]) / [intr.fx, intr.fy]


def lift_detection(
    detection: Detection2D,
    depth_m: np.ndarray,
    camera: CameraCalibration,
    intrinsics: CameraIntrinsics,
    config: HandTrackerConfig,
) -> CameraObservation:
    """3D evidence of one camera's detection: viewing rays plus a depth per landmark where possible.

    Measured depth = robust window depth + the landmark's surface offset. Samples farther than
    `hand_extent_m` from the hand's median depth (background seen past a finger) are dropped.
    Landmarks without a measured depth get a *model depth* (kind 1): MediaPipe's relative landmark
    depth (world landmarks, metric) anchored at the median offset of the measured ones. It is a
    weak prior (`model_depth_sigma_m`), used by the fusion only where a single camera sees the
    landmark: on the cell's rendered hand MediaPipe's 3D shape is off by 3-4 cm. Without any
    measured depth the camera gives rays only.
    """
    uv = detection.uv
    xy = normalized_rays(intrinsics, uv)
    f = 0.5 * (intrinsics.fx + intrinsics.fy)
    T = camera.T
    R, origin = T[:3, :3], T[:3, 3]
    d_cam = np.column_stack([xy, np.ones(len(xy))])
    ray_norm = np.linalg.norm(d_cam, axis=1)
    rays = (d_cam / ray_norm[:, None]) @ R.T

    measured = np.full(NUM_LANDMARKS, np.nan)
    coarse = sample_depth(depth_m, uv, 1, config.depth_band_m)
    if np.any(np.isfinite(coarse)):
        z_hand = float(np.nanmedian(coarse))
        radius = int(np.clip(round(f * config.depth_window_m / z_hand), 1, 4))
        measured = coarse if radius == 1 else sample_depth(depth_m, uv, radius, config.depth_band_m)
        with np.errstate(invalid="ignore"):
            measured[np.abs(measured - z_hand) > config.hand_extent_m] = np.nan
        if config.surface_offset:
            # The offset is along the viewing ray; as z-depth it is offset x cos(angle off axis).
            measured = measured + SURFACE_OFFSET_M / ray_norm

    kind = np.where(np.isfinite(measured), 2, 0)
    z = measured.copy()
    depth_sigma = np.where(kind == 2, config.depth_sigma_m, np.inf)
    rel_z = detection.rel_xyz[:, 2]
    have = kind == 2
    if np.all(np.isfinite(rel_z)) and have.sum() >= config.min_anchor_landmarks and not have.all():
        anchor = float(np.median(measured[have] - rel_z[have]))
        z = np.where(have, measured, anchor + rel_z)
        kind = np.where(have, 2, 1)
        depth_sigma = np.where(have, config.depth_sigma_m, config.model_depth_sigma_m)

    range_m = z * ray_norm  # z-depth -> distance along the ray
    typical = float(np.nanmedian(range_m)) if np.any(np.isfinite(range_m)) else np.nan
    if not np.isfinite(typical):  # no depth at all: the workspace centre's distance sizes the rays
        typical = float(np.linalg.norm(origin - np.asarray(config.workspace_center)))
    rng = np.where(np.isfinite(range_m), range_m, typical)
    lateral = config.pixel_sigma_px * PIXEL_SIGMA_SCALE * rng / f
    return CameraObservation(
        camera=camera.name,
        origin=origin.copy(),
        rays=rays,
        range_m=range_m,
        depth_kind=kind,
        lateral_sigma_m=lateral,
        depth_sigma_m=depth_sigma,
        detection=detection,
    )


@dataclass
class FusedPoints:
    points: np.ndarray  # [21, 3] (NaN where not valid)
    valid: np.ndarray  # [21]
    sigma_m: np.ndarray  # [21]
    used: np.ndarray  # [C, 21] camera contributed (lateral term kept)


def _solve(
    info_ray: np.ndarray, info_dep: np.ndarray, q: np.ndarray, ray_on: np.ndarray, depth_on: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Least-squares points [n, 3], information matrices [n, 3, 3] and smallest eigenvalues [n]."""
    A = info_ray * ray_on[..., None, None] + info_dep * (depth_on & ray_on)[..., None, None]
    A_sum = A.sum(axis=0)
    b = np.einsum("cnij,cnj->ni", A, q)
    eig = np.linalg.eigvalsh(A_sum)[:, 0]
    p = np.full(b.shape, np.nan)
    ok = eig > 1e-9
    if ok.any():
        p[ok] = np.linalg.solve(A_sum[ok], b[ok][..., None])[..., 0]
    return p, A_sum, eig


def fuse_observations(observations: Sequence[CameraObservation], config: HandTrackerConfig) -> FusedPoints:
    """Per-landmark information-weighted least squares over rays and depths, with outlier rejection.

    Camera c constrains landmark i by its ray (information (I - r r^T) / lateral^2) and, if known,
    a depth along it (r r^T / depth^2) around q = origin + range * r.

    1. Landmarks seen by two or more cameras are first triangulated from the rays alone. Rays
       that disagree beyond `fusion_gate` (a finger confused in one view) lose the camera whose
       own depth point fits the other rays worse (or, without depths, the less precise ray).
    2. Each depth is then checked against that triangulation (its along-ray uncertainty plus the
       depth's): a depth on an occluding finger, the held object or the background is dropped.
       Depth is the failure-prone measurement here: a grasping hand hides most of its joints
       behind other parts of itself.
    3. The final point fuses the rays and the accepted depths. A landmark seen by a single camera
       takes that camera's depth (measured, else the model depth) as is.
    """
    C = len(observations)
    n = NUM_LANDMARKS
    points = np.full((n, 3), np.nan)
    sigma = np.full(n, np.inf)
    if C == 0:
        return FusedPoints(points, np.zeros(n, dtype=bool), sigma, np.zeros((0, n), dtype=bool))
    r = np.stack([ob.rays for ob in observations])  # [C, n, 3]
    o = np.stack([np.broadcast_to(ob.origin, (n, 3)) for ob in observations])
    rng = np.stack([ob.range_m for ob in observations])
    lat = np.stack([ob.lateral_sigma_m for ob in observations])
    dep = np.stack([ob.depth_sigma_m for ob in observations])
    kind = np.stack([ob.depth_kind for ob in observations])
    has_depth = np.isfinite(rng) & np.isfinite(dep)
    q = o + r * np.where(has_depth, rng, 0.0)[..., None]
    rr = r[..., :, None] * r[..., None, :]
    info_ray = (np.eye(3) - rr) / (lat**2)[..., None, None]
    info_dep = rr / (np.where(has_depth, dep, np.inf) ** 2)[..., None, None]
    ray_on = np.ones((C, n), dtype=bool)
    depth_on = has_depth.copy()

    if C >= 2:
        depth_on &= kind != 1  # model depths are a single-view prior only
        p_ray, A_ray, eig_ray = _solve(info_ray, info_dep, q, ray_on, np.zeros_like(depth_on))
        tri = eig_ray > 1.0 / config.max_sigma_m**2
        # 1. Rays that disagree: drop one camera's ray for that landmark.
        d = p_ray[None] - q
        along = np.einsum("cni,cni->cn", d, r)
        chi_ray = np.nan_to_num((np.einsum("cni,cni->cn", d, d) - along**2) / lat**2)
        conflict = tri & (chi_ray.max(axis=0) > config.fusion_gate)
        for i in np.flatnonzero(conflict):
            score = np.full(C, np.inf)  # lower = better supported
            for c in range(C):
                if depth_on[c, i]:
                    pc = q[c, i]
                    others = [k for k in range(C) if k != c]
                    e = pc[None] - o[others, i]
                    al = np.einsum("ki,ki->k", e, r[others, i])
                    score[c] = float(np.sum((np.einsum("ki,ki->k", e, e) - al**2) / lat[others, i] ** 2))
            if np.all(np.isinf(score)):
                score = lat[:, i].copy()  # no depth to arbitrate: keep the more precise rays
                worst = int(np.argmax(score))
            else:
                worst = int(np.argmax(np.where(np.isinf(score), np.inf, score)))
            ray_on[worst, i] = False
            depth_on[worst, i] = False
        if conflict.any():
            p_ray, A_ray, eig_ray = _solve(info_ray, info_dep, q, ray_on, np.zeros_like(depth_on))
            tri = eig_ray > 1.0 / config.max_sigma_m**2
        # 2. Depths checked against the triangulation.
        cov = np.full((n, 3, 3), np.nan)
        if tri.any():
            cov[tri] = np.linalg.inv(A_ray[tri])
        delta = rng - np.einsum("cni,cni->cn", p_ray[None] - o, r)
        var_along = np.einsum("cni,nij,cnj->cn", r, cov, r) + np.where(has_depth, dep, 0.0) ** 2
        with np.errstate(invalid="ignore"):
            agree = delta**2 <= config.depth_gate * var_along
        depth_on &= np.where(tri[None, :], agree, True)
    p, _, eig = _solve(info_ray, info_dep, q, ray_on, depth_on)
    valid = (eig > 1.0 / config.max_sigma_m**2) & np.all(np.isfinite(p), axis=1)
    points[valid] = p[valid]
    sigma[valid] = 1.0 / np.sqrt(eig[valid])
    return FusedPoints(points, valid, sigma, ray_on & valid[None, :])


def rigid_fit(
    src: np.ndarray, dst: np.ndarray, weights: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """R, t minimising sum w |R src + t - dst|^2 (Kabsch; rows with NaN ignored)."""
    ok = np.all(np.isfinite(src), axis=1) & np.all(np.isfinite(dst), axis=1)
    w = np.ones(len(src)) if weights is None else np.asarray(weights, dtype=float)
    w = np.where(ok, w, 0.0)
    if np.count_nonzero(w) < 3:
        raise ValueError("rigid_fit: fewer than 3 point pairs")
    src0, dst0 = np.where(ok[:, None], src, 0.0), np.where(ok[:, None], dst, 0.0)
    R = _kabsch(src0, dst0, w)  # about the weighted means
    cs, cd = (w[:, None] * src0).sum(0) / w.sum(), (w[:, None] * dst0).sum(0) / w.sum()
    return R, cd - R @ cs


def _skew(v: np.ndarray) -> np.ndarray:
    """[N, 3] -> [N, 3, 3] cross-product matrices."""
    z = np.zeros(len(v))
    return np.stack(
        [
            np.stack([z, -v[:, 2], v[:, 1]], 1),
            np.stack([v[:, 2], z, -v[:, 0]], 1),
            np.stack([-v[:, 1], v[:, 0], z], 1),
        ],
        1,
    )


def pose_shape_to_view(
    shape: np.ndarray,
    observation: CameraObservation,
    intrinsics: CameraIntrinsics,
    T_world_camera: np.ndarray,
    config: HandTrackerConfig,
    iterations: int = 15,
    init: tuple[np.ndarray, np.ndarray] | None = None,
) -> tuple[np.ndarray, float] | None:
    """The rigid pose of a remembered hand `shape` [21, 3] that best explains one camera's view.

    Residuals: each landmark's reprojection error (the fusion's pixel sigma) and, where the camera
    measured it, its depth along the ray (`depth_sigma_m`). Gauss-Newton with a Cauchy robust
    weight (iteratively reweighted), so an occluded landmark or a depth on the held object does
    not drag the hand; analytic Jacobian (~1 ms). Starts from `init` (R, t: shape -> world, e.g.
    the last frame's pose of the shape), else from the Kabsch fit of the shape to the camera's own
    3D points. Returns (posed shape, median reprojection error px), or None when the
    view has too little to fit to.
    """
    from scipy.spatial.transform import Rotation

    if init is not None:
        R, t = init
    else:
        try:
            R, t = rigid_fit(shape, observation.points)
        except ValueError:
            return None
    uv = observation.detection.uv
    c = shape.mean(axis=0)
    local = shape - c
    p = R @ c + t  # posed centroid: X = R local + p
    sigma_px = config.pixel_sigma_px * PIXEL_SIGMA_SCALE
    has_depth = np.isfinite(observation.range_m) & (observation.depth_kind == 2)
    rng = np.where(has_depth, observation.range_m, 0.0)
    R_cw = T_world_camera[:3, :3].T  # world -> camera rotation
    o_cam = T_world_camera[:3, 3]
    fx, fy, cx, cy = intrinsics.fx, intrinsics.fy, intrinsics.cx, intrinsics.cy
    n = len(shape)
    for _ in range(iterations):
        arm = local @ R.T
        X = arm + p
        Xc = (X - o_cam) @ R_cw.T
        z = Xc[:, 2]
        if np.any(z < 0.05):
            return None
        u = np.column_stack([fx * Xc[:, 0] / z + cx, fy * Xc[:, 1] / z + cy])
        r_px = (u - uv) / sigma_px[:, None]  # [n, 2]
        along = np.einsum("ij,ij->i", X - observation.origin, observation.rays)
        r_d = np.where(has_depth, (along - rng) / config.depth_sigma_m, 0.0)
        # d u / d X (world) = d u / d Xc @ R_cw; d X / d(dtheta, dp) = [-[arm]x, I]
        du_dXc = np.zeros((n, 2, 3))
        du_dXc[:, 0, 0] = fx / z
        du_dXc[:, 0, 2] = -fx * Xc[:, 0] / z**2
        du_dXc[:, 1, 1] = fy / z
        du_dXc[:, 1, 2] = -fy * Xc[:, 1] / z**2
        du_dX = du_dXc @ R_cw / sigma_px[:, None, None]
        dX = np.concatenate([-_skew(arm), np.broadcast_to(np.eye(3), (n, 3, 3))], axis=2)  # [n, 3, 6]
        J_px = (du_dX @ dX).reshape(2 * n, 6)
        J_d = np.einsum("ij,ijk->ik", observation.rays, dX) / config.depth_sigma_m
        J_d[~has_depth] = 0.0
        J = np.vstack([J_px, J_d])
        r = np.concatenate([r_px.ravel(), r_d])
        # Cauchy weights: a landmark's pixel pair shares one weight.
        w_px = np.repeat(1.0 / (1.0 + np.sum(r_px**2, axis=1)), 2)
        w_d = np.where(has_depth, 1.0 / (1.0 + r_d**2), 0.0)
        w = np.concatenate([w_px, w_d])
        A = J.T @ (w[:, None] * J) + 1e-6 * np.eye(6)
        step = -np.linalg.solve(A, J.T @ (w * r))
        R = Rotation.from_rotvec(step[:3]).as_matrix() @ R
        p = p + step[3:]
        if np.linalg.norm(step[:3]) < 1e-6 and np.linalg.norm(step[3:]) < 1e-6:
            break
    X = local @ R.T + p
    proj, _ = project(T_world_camera, intrinsics.K, X)
    return X, float(np.median(np.linalg.norm(proj - uv, axis=1)))


# ---------------------------------------------------------------------------------------------
# The tracker
# ---------------------------------------------------------------------------------------------


def _mediapipe_label_to_side(label: str) -> Handedness:
    # MediaPipe assumes a mirrored (selfie) image: "Left" on an unmirrored camera image = right hand.
    return {"Left": "right", "Right": "left"}.get(label, "unknown")


class HandTracker:
    """Multi-camera 3D hand tracker: 2D landmarks -> depth lifting -> fusion -> filter -> wrist pose."""

    def __init__(
        self,
        calibration: CalibrationSet,
        config: HandTrackerConfig | None = None,
        *,
        model_factory: Callable[[], LandmarkModel] | None = None,
        cameras: Sequence[str] | None = None,
    ):
        self.calibration = calibration
        self.config = config or HandTrackerConfig()
        names = list(cameras) if cameras is not None else calibration.names
        if not names:
            raise ValueError("HandTracker: the calibration has no cameras")
        self.cameras = {name: calibration.camera(name) for name in names}
        factory = model_factory or mediapipe_hands_factory(self.config)
        self.detectors = {name: CameraHandDetector(name, factory(), self.config) for name in names}
        self._workspace = box_corners(self.config.workspace_min, self.config.workspace_max)
        self._intrinsics: dict[tuple[str, int, int], CameraIntrinsics] = {}
        self._filter = OneEuroFilter.from_config(self.config.one_euro)
        self._last: HandEstimate | None = None
        self._last_seen: float | None = None
        self._chirality = 0.0
        self._shape: np.ndarray | None = None  # remembered multi-view hand shape [21, 3] (world)
        self._shape_stamp = -math.inf
        self._lock = threading.Lock()

    # -- helpers --------------------------------------------------------------------------------
    def intrinsics_for(self, name: str, width: int, height: int) -> CameraIntrinsics:
        """Calibrated intrinsics rescaled to the incoming image size (same field of view)."""
        key = (name, width, height)
        if key not in self._intrinsics:
            intr = self.cameras[name].intrinsics
            if (intr.width, intr.height) != (width, height):
                intr = intr.scaled(width, height)
            self._intrinsics[key] = intr
        return self._intrinsics[key]

    def _project(self, name: str, intr: CameraIntrinsics, points: np.ndarray) -> np.ndarray | None:
        uv, z = project(self.cameras[name].T, intr.K, points)
        uv = uv[np.isfinite(z) & (z > 0.05)]
        return uv if len(uv) else None

    def reset(self) -> None:
        """Forget the track (a new episode): filters, crops and handedness start over."""
        self._filter.reset()
        self._last = None
        self._last_seen = None
        self._chirality = 0.0
        self._shape = None
        self._shape_stamp = -math.inf
        for det in self.detectors.values():
            det.last_uv = None
            det.roi = None
            det.misses = 0

    # -- main entry -----------------------------------------------------------------------------
    def process(
        self, stamp: float, frames: Mapping[str, tuple[np.ndarray, np.ndarray | None]]
    ) -> HandEstimate | None:
        """One multi-camera frame: {camera: (rgb uint8 [H, W, 3], depth [H, W] or None)} -> estimate.

        Depth is uint16 in the camera's `depth_scale_m` units (0 = invalid) or float metres
        (0/NaN = invalid), aligned to the colour image. Cameras not in `frames` are skipped.
        Returns None when no camera sees a hand or nothing could be placed in 3D.
        """
        with self._lock:
            return self._process(float(stamp), frames)

    def _process(
        self, stamp: float, frames: Mapping[str, tuple[np.ndarray, np.ndarray | None]]
    ) -> HandEstimate | None:
        cfg = self.config
        if self._last_seen is not None and stamp - self._last_seen > cfg.max_gap_s:
            # A gap (or a new person): forget the motion state and the accumulated handedness.
            self._filter.reset()
            self._last = None
            self._chirality = 0.0
            self._shape = None
        observations: list[CameraObservation] = []
        view_intrinsics: dict[str, CameraIntrinsics] = {}
        detections: dict[str, Detection2D] = {}
        for name, (rgb, depth) in frames.items():
            if name not in self.detectors:
                continue
            if rgb is None or rgb.ndim != 3 or rgb.shape[2] < 3:
                raise ValueError(f"{name}: colour image must be [H, W, 3], got {getattr(rgb, 'shape', None)}")
            h, w = rgb.shape[:2]
            intr = self.intrinsics_for(name, w, h)
            workspace_uv = self._project(name, intr, self._workspace)
            hint = None
            if self._last is not None:
                hint = self._project(name, intr, self._last.keypoints[self._last.valid])
            det = self.detectors[name].detect(rgb, workspace_uv, hint)
            if det is None:
                continue
            detections[name] = det
            if depth is None:
                depth_m = np.full((h, w), np.nan, dtype=np.float32)
            else:
                depth_m = depth_to_metres(depth, self.cameras[name].depth_scale_m)
                if depth_m.shape != (h, w):
                    raise ValueError(f"{name}: depth {depth_m.shape} is not aligned to colour {(h, w)}")
            observations.append(lift_detection(det, depth_m, self.cameras[name], intr, cfg))
            view_intrinsics[name] = intr
        if not observations:
            return None
        fused = fuse_observations(observations, cfg)
        if not fused.valid.any():
            return None
        self._last_seen = stamp
        from_memory = False
        if cfg.shape_memory:
            from_memory = self._apply_shape_memory(stamp, fused, observations, view_intrinsics)
        raw = fused.points.copy()
        kp = self._filter(stamp, raw) if cfg.one_euro.enabled else raw.copy()
        kp[~fused.valid] = np.nan

        side, side_score = self._update_handedness(kp)
        votes = [_mediapipe_label_to_side(d.label) for d in detections.values()]
        mp_side: Handedness = "unknown"
        if votes:
            rights = votes.count("right")
            lefts = votes.count("left")
            mp_side = "right" if rights > lefts else "left" if lefts > rights else "unknown"
        frame_side: Handedness = side if side != "unknown" else mp_side
        conf = 1.0 / (1.0 + (fused.sigma_m / 0.01) ** 2)
        conf[~fused.valid] = 0.0
        wrist = wrist_pose_from_keypoints(kp, frame_side)
        used_names = [ob.camera for ob, u in zip(observations, fused.used, strict=True) if u.any()]
        estimate = HandEstimate(
            stamp=stamp,
            keypoints=kp,
            valid=fused.valid.copy(),
            confidence=conf,
            sigma_m=fused.sigma_m,
            wrist=wrist,
            handedness=side,
            handedness_score=side_score,
            handedness_mediapipe=mp_side,
            cameras_used=used_names,
            raw_keypoints=raw,
            detections=detections,
            from_shape_memory=from_memory,
        )
        self._last = estimate
        return estimate

    def _apply_shape_memory(
        self,
        stamp: float,
        fused: FusedPoints,
        observations: Sequence[CameraObservation],
        intrinsics: Mapping[str, CameraIntrinsics],
    ) -> bool:
        """Remember the shape of multi-view frames; pose it in single-view frames (module doc, 4).

        Updates `fused` in place when the remembered shape replaces a single view's points.
        """
        cfg = self.config
        views_per_landmark = fused.used.sum(axis=0)
        if fused.valid.all() and np.count_nonzero(views_per_landmark >= 2) >= cfg.shape_memory_min_landmarks:
            points = fused.points
            if self._shape is None:
                self._shape = points.copy()
            else:
                R, t = rigid_fit(self._shape, points)
                a = cfg.shape_memory_blend
                self._shape = (1.0 - a) * (self._shape @ R.T + t) + a * points
            self._shape_stamp = stamp
            return False
        contributing = [ob for ob, u in zip(observations, fused.used, strict=True) if u.any()]
        if (
            self._shape is None
            or len(contributing) != 1
            or stamp - self._shape_stamp > cfg.shape_memory_max_age_s
        ):
            return False
        ob = contributing[0]
        init = None
        last = self._last.raw_keypoints if self._last is not None else None
        if last is not None and np.count_nonzero(np.all(np.isfinite(last), axis=1)) >= 3:
            init = rigid_fit(self._shape, last)  # the hand moved little since the last frame
        fit = pose_shape_to_view(
            self._shape, ob, intrinsics[ob.camera], self.cameras[ob.camera].T, cfg, init=init
        )
        if fit is None or not np.all(np.isfinite(fit[0])):
            return False
        uv = ob.detection.uv
        hand_px = float(np.max(np.ptp(uv, axis=0)))
        if fit[1] > cfg.shape_memory_max_residual * hand_px:
            return False
        if init is not None:
            R_fit, _ = rigid_fit(self._shape, fit[0])
            turn = math.degrees(rotation_angle(init[0], R_fit))
            if turn > cfg.shape_memory_max_turn_deg:
                return False
        fused.points[:] = fit[0]
        worst = float(np.max(fused.sigma_m[fused.valid]))
        fused.sigma_m[~fused.valid] = worst
        fused.valid[:] = True
        return True

    def _update_handedness(self, keypoints: np.ndarray) -> tuple[Handedness, float]:
        c = chirality(keypoints)
        if np.isfinite(c):
            # Normalise by ~1 cm (a clearly flexed hand gives 1-3 cm), clip so one bad frame can't flip it.
            evidence = float(np.clip(c / 0.01, -1.0, 1.0))
            m = self.config.handedness_memory
            self._chirality = m * self._chirality + (1 - m) * evidence
        s = self._chirality
        if abs(s) < 0.05:
            return "unknown", 0.5
        return ("right" if s > 0 else "left"), float(0.5 + 0.5 * min(abs(s), 1.0))

    def close(self) -> None:
        for det in self.detectors.values():
            det.close()

    def __enter__(self) -> HandTracker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def config_with(config: HandTrackerConfig, **changes: Any) -> HandTrackerConfig:
    """A copy of `config` with top-level fields changed (one_euro accepts a dict of its fields)."""
    if isinstance(changes.get("one_euro"), Mapping):
        changes["one_euro"] = dataclasses.replace(config.one_euro, **changes["one_euro"])
    return dataclasses.replace(config, **changes)
