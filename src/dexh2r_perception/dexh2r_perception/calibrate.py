"""`dexh2r calibrate`: camera extrinsics in the robot `world` frame from views of a ChArUco board.

The board's pose in `world` is known for every view: either the board is fixed (one pose, measured
once, e.g. on a jig) or the robot holds it (a pose per view: flange pose by forward kinematics of
the recorded joint positions times the known flange->board mount). Every detected ChArUco corner is
then a known point in `world`, and each camera's `T_world_camera` is the PnP solution over all
corners of all its views at once (world points from differently placed boards are not coplanar,
which pins down depth and rotation much better than one view). The result is the calibration YAML
the rest of the stack reads (`dexh2r_core.calibration`), with the per-camera reprojection RMS.
Corners are refined by fitting the whole board image to each picture (`refine_corners`), which is
what makes 424x240 images good to a few 0.01 mm in the sim. docs/calibration.md has the how-to
and the measured accuracy.

    dexh2r calibrate --images views.yaml --intrinsics config/calibration/rig.yaml \\
        --board config/calibration/charuco_board.yaml --out config/calibration/rig.yaml
    dexh2r calibrate --images DIR --board-pose "x y z qx qy qz qw" --intrinsics ... --out ...
    dexh2r calibrate --sim --json calib.json      # render the board in the sim cell, check vs truth

Board frame (OpenCV >= 4.6 ChArUco convention, `legacy_pattern: false`): origin at the outer
corner of the squares next to the first row/column of the printed image (top-left of
`CharucoBoard.generateImage`), x along the `squares_x` direction (right in the image), y along
`squares_y` (down in the image), z = x cross y, i.e. pointing *into* the board: the printed face
looks along -z. Chessboard corner (i, j) is at ((i + 1) * square, (j + 1) * square, 0).

Views file (`--images views.yaml`), image paths relative to the file::

    frame: world
    T_flange_board: {xyz: [...], quat_xyzw: [...]}   # only for views given by flange_pose / arm_joints
    robot: ur5_shadow                                # only for views given by arm_joints
    views:
    - name: view_00
      board_pose: {xyz: [0.6, 0.1, 0.5], quat_xyzw: [...]}   # T_world_board, or:
      # flange_pose: {xyz: ..., quat_xyzw: ...}                # T_world_flange (robot-held board)
      # arm_joints: [q1, ..., q6]                              # forward kinematics to the flange
      images: {camera_0: view_00/camera_0.png, camera_1: view_00/camera_1.png}

Image directory (`--images DIR`, fixed board): `DIR/<camera>/*.png|jpg` or `DIR/<camera>.png`;
every image is a view of the same fixed board pose (`fixed_pose` in the board file or
`--board-pose`).
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as _dt
import json
import math
import os
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import cv2
import numpy as np
import yaml
from scipy.spatial.transform import Rotation

from dexh2r_core.calibration import (
    CalibrationSet,
    CameraCalibration,
    CameraIntrinsics,
    CameraPose,
    d455_intrinsics,
    load_calibration,
    save_calibration,
)
from dexh2r_core.config import ConfigError, from_dict, load_config, load_yaml
from dexh2r_core.transforms import invert, rotation_angle, transform_points

SOURCE = "dexh2r calibrate"
_SUPERSAMPLE = 8  # board images are drawn this much finer, then area-averaged (exact, anti-aliased)
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")


class CalibrationError(RuntimeError):
    """Calibration cannot be done with these inputs; the message names the camera/view/image."""


# ---- configuration -------------------------------------------------------------------------------


def _aruco_dictionary_names() -> list[str]:
    return sorted(n for n in dir(cv2.aruco) if n.startswith("DICT_"))


@dataclass(frozen=True)
class BoardConfig:
    """A printed ChArUco board (OpenCV `CharucoBoard`)."""

    squares_x: int
    squares_y: int
    square_length_m: float
    marker_length_m: float
    dictionary: str = "DICT_5X5_100"
    # OpenCV < 4.6 boards with an even number of rows start with a marker in the other corner.
    legacy_pattern: bool = False
    # White border around the squares on the print; only used to render/print the board.
    margin_m: float = 0.02

    def __post_init__(self) -> None:
        for key in ("squares_x", "squares_y"):
            if getattr(self, key) < 2:
                raise ConfigError(f"{key}: must be >= 2, got {getattr(self, key)}")
        for key in ("square_length_m", "marker_length_m"):
            value = getattr(self, key)
            if not math.isfinite(value) or value <= 0:
                raise ConfigError(f"{key}: must be a positive length in metres, got {value}")
        if self.marker_length_m >= self.square_length_m:
            raise ConfigError(
                f"marker_length_m: must be smaller than square_length_m ({self.square_length_m}), "
                f"got {self.marker_length_m}"
            )
        if self.margin_m < 0:
            raise ConfigError(f"margin_m: must be >= 0, got {self.margin_m}")
        names = _aruco_dictionary_names()
        if self.dictionary not in names:
            raise ConfigError(f"dictionary: unknown ArUco dictionary {self.dictionary!r} (one of {names})")
        size = cv2.aruco.getPredefinedDictionary(getattr(cv2.aruco, self.dictionary)).bytesList.shape[0]
        needed = (self.squares_x * self.squares_y) // 2
        if needed > size:
            raise ConfigError(f"dictionary: {self.dictionary} has {size} markers, the board needs {needed}")

    @property
    def size_m(self) -> tuple[float, float]:
        """Extent of the squares (without margin) along board x and y."""
        return self.squares_x * self.square_length_m, self.squares_y * self.square_length_m


@dataclass(frozen=True)
class CalibrateConfig:
    """`--board` file: the board, where it is when fixed, and the acceptance rules for views."""

    board: BoardConfig
    # T_world_board of a board that does not move (image-directory mode); views files carry their own.
    fixed_pose: CameraPose | None = None
    # Fewer ChArUco corners than this in an image: the view is rejected for that camera.
    min_corners: int = 6
    # A view whose corners miss the joint solution by more than this RMS is dropped as inconsistent
    # (wrong board pose in the views file, board moved during capture, motion blur).
    max_view_rms_px: float = 2.0
    # "direct": fit the whole board image to the picture (accurate at low resolution, see
    # refine_corners); "ecc": the same with OpenCV's findTransformECC (slightly biased);
    # "opencv": the CharucoDetector's own corner refinement only.
    corner_refinement: Literal["direct", "ecc", "opencv"] = "direct"

    def __post_init__(self) -> None:
        if self.fixed_pose is not None:
            for key, reason in self.fixed_pose.problems():
                raise ConfigError(f"fixed_pose.{key}: {reason}")
        if self.min_corners < 4:
            raise ConfigError(f"min_corners: PnP needs at least 4 corners, got {self.min_corners}")
        if not self.max_view_rms_px > 0:
            raise ConfigError(f"max_view_rms_px: must be positive, got {self.max_view_rms_px}")


def load_board_config(path: str | Path) -> CalibrateConfig:
    """Read a `--board` YAML; ConfigError names the file and the (dotted) key."""
    try:
        return load_config(CalibrateConfig, path)
    except ConfigError as exc:
        # Top-level checks in __post_init__ come back under "<root>"; their message names the key.
        raise ConfigError(str(exc).replace(": <root>: ", ": ", 1)) from None


@dataclass(frozen=True)
class ViewEntry:
    """One entry of a views file: where the board was, and each camera's image of it."""

    images: dict[str, str]
    name: str = ""
    board_pose: CameraPose | None = None  # T_world_board
    flange_pose: CameraPose | None = None  # T_world_flange (robot-held board), with T_flange_board
    arm_joints: list[float] | None = None  # arm joint positions (FK to the flange), with robot


@dataclass(frozen=True)
class ViewsFile:
    views: list[ViewEntry]
    frame: str = "world"
    T_flange_board: CameraPose | None = None
    robot: str = ""


# ---- board model and detection -------------------------------------------------------------------


@dataclass
class Detection:
    """ChArUco corners found in one image."""

    camera: str
    view: str
    image: str
    ids: np.ndarray  # int [N]
    corners_px: np.ndarray  # float [N, 2], OpenCV/ROS pixel-centre convention
    board_points: np.ndarray  # float [N, 3] in the board frame


class Board:
    """OpenCV objects for one `BoardConfig`: detector, corner model and printable image."""

    def __init__(self, config: BoardConfig):
        self.config = config
        self.dictionary = cv2.aruco.getPredefinedDictionary(getattr(cv2.aruco, config.dictionary))
        self.board = cv2.aruco.CharucoBoard(
            (config.squares_x, config.squares_y),
            config.square_length_m,
            config.marker_length_m,
            self.dictionary,
        )
        self.board.setLegacyPattern(config.legacy_pattern)
        detector_params = cv2.aruco.DetectorParameters()
        # Sub-pixel marker corners give a better homography for the ChArUco corner interpolation.
        detector_params.cornerRefinementMethod = cv2.aruco.CORNER_REFINE_SUBPIX
        charuco_params = cv2.aruco.CharucoParameters()
        charuco_params.tryRefineMarkers = True  # recover markers missed at low resolution
        self.detector = cv2.aruco.CharucoDetector(self.board, charuco_params, detector_params)
        self.corners_3d = np.asarray(self.board.getChessboardCorners(), dtype=float).reshape(-1, 3)
        self._templates: dict[tuple[int, int], np.ndarray] = {}

    @property
    def n_corners(self) -> int:
        return len(self.corners_3d)

    def detect(self, gray: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(ids [N], corners [N, 2]) of the ChArUco corners in a grey image (N may be 0)."""
        corners, ids, _, _ = self.detector.detectBoard(gray)
        if ids is None or len(ids) == 0:
            return np.zeros(0, int), np.zeros((0, 2))
        return ids.reshape(-1).astype(int), corners.reshape(-1, 2).astype(float)

    def collinear(self, ids: np.ndarray) -> bool:
        """True when the corners lie on one line (no pose from them)."""
        return bool(self.board.checkCharucoCornersCollinear(ids.reshape(-1, 1).astype(np.int32)))

    def template(self, px_per_square: int, margin_px: int) -> np.ndarray:
        """The board (uint8 grey) at `px_per_square`, `margin_px` of white around, anti-aliased.

        Drawn `_SUPERSAMPLE` times finer and area-averaged, so marker edges sit at their true
        sub-pixel places (OpenCV snaps them to whole pixels of the drawing). Cached.
        """
        key = (px_per_square, margin_px)
        if key not in self._templates:
            cfg, ss = self.config, _SUPERSAMPLE
            size = (
                cfg.squares_x * px_per_square + 2 * margin_px,
                cfg.squares_y * px_per_square + 2 * margin_px,
            )
            big = self.board.generateImage(
                (size[0] * ss, size[1] * ss), marginSize=margin_px * ss, borderBits=1
            )
            self._templates[key] = cv2.resize(big, size, interpolation=cv2.INTER_AREA)
        return self._templates[key]

    def print_image(self, dpi: float = 300.0) -> tuple[np.ndarray, float]:
        """Printable board (uint8 grey, white margin included) and its printed square size (m).

        Squares are whole pixels, so at `dpi` a square prints at round(square * dpi) / dpi, which
        can differ from `square_length_m` by up to half a pixel (returned): measure the print and
        put the measured lengths in the board file.
        """
        cfg = self.config
        px_per_square = max(8, round(cfg.square_length_m / 0.0254 * dpi))
        margin_px = round(cfg.margin_m / 0.0254 * dpi)
        size = (cfg.squares_x * px_per_square + 2 * margin_px, cfg.squares_y * px_per_square + 2 * margin_px)
        image = self.board.generateImage(size, marginSize=margin_px, borderBits=1)
        return image, px_per_square / dpi * 0.0254


def read_gray(path: str | Path) -> np.ndarray:
    image = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
    if image is None:
        raise CalibrationError(f"{path}: cannot read image (missing file or unknown format)")
    return image


def detect_in_image(
    board: Board, path: str | Path, camera: str, view: str, gray: np.ndarray | None = None
) -> Detection:
    ids, corners = board.detect(read_gray(path) if gray is None else gray)
    return Detection(
        camera=camera,
        view=view,
        image=str(path),
        ids=ids,
        corners_px=corners,
        board_points=board.corners_3d[ids] if len(ids) else np.zeros((0, 3)),
    )


# ---- sub-pixel refinement -----------------------------------------------------------------------


def _undistort_image(gray: np.ndarray, intr: CameraIntrinsics) -> np.ndarray:
    """The image as an ideal pinhole camera with the same K would see it (no-op without distortion)."""
    if not any(intr.D):
        return gray
    K = intr.K
    if intr.distortion_model == "equidistant":
        D = np.asarray(intr.D[:4], dtype=float)
        return cv2.fisheye.undistortImage(gray, K, D, Knew=K)
    return cv2.undistort(gray, K, np.asarray(intr.D, dtype=float))


def _undistort_points(px: np.ndarray, intr: CameraIntrinsics) -> np.ndarray:
    """Raw pixels -> ideal pinhole pixels with the same K."""
    if not any(intr.D) or len(px) == 0:
        return px.copy()
    K = intr.K
    pts = px.reshape(-1, 1, 2).astype(float)
    if intr.distortion_model == "equidistant":
        out = cv2.fisheye.undistortPoints(pts, K, np.asarray(intr.D[:4], dtype=float), P=K)
    else:
        criteria = (cv2.TERM_CRITERIA_COUNT | cv2.TERM_CRITERIA_EPS, 50, 1e-10)
        out = cv2.undistortPoints(pts, K, np.asarray(intr.D, dtype=float), R=None, P=K, criteria=criteria)
    return out.reshape(-1, 2)


def _distort_points(ideal: np.ndarray, intr: CameraIntrinsics) -> np.ndarray:
    """Ideal pinhole pixels -> raw pixels (inverse of `_undistort_points`)."""
    if not any(intr.D) or len(ideal) == 0:
        return ideal.copy()
    K = intr.K
    norm = (ideal - [intr.cx, intr.cy]) / [intr.fx, intr.fy]
    if intr.distortion_model == "equidistant":
        out = cv2.fisheye.distortPoints(norm.reshape(-1, 1, 2), K, np.asarray(intr.D[:4], dtype=float))
        return out.reshape(-1, 2)
    pts = np.c_[norm, np.ones(len(norm))].reshape(-1, 1, 3)
    out, _ = cv2.projectPoints(pts, np.zeros(3), np.zeros(3), K, np.asarray(intr.D, dtype=float))
    return out.reshape(-1, 2)


def _sample(image: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Bilinear samples of a float32 image at (x, y) (pixel centres on integers)."""
    n = len(x)
    cols = 1024  # cv2.remap maps must stay below 32767 per side
    rows = max(1, -(-n // cols))
    mx = np.zeros(rows * cols, np.float32)
    my = np.zeros(rows * cols, np.float32)
    mx[:n], my[:n] = x, y
    out = cv2.remap(
        image,
        mx.reshape(rows, cols),
        my.reshape(rows, cols),
        cv2.INTER_LINEAR,
        borderMode=cv2.BORDER_REPLICATE,
    )
    return out.ravel()[:n].astype(np.float64)


def _blurred(template: np.ndarray, sigma: float) -> tuple[np.ndarray, ...]:
    """Template blurred by sigma, its gradient (central differences) and its Laplacian."""
    t = cv2.GaussianBlur(template, (0, 0), sigma)
    tx = cv2.Sobel(t, cv2.CV_32F, 1, 0, ksize=1) * 0.5
    ty = cv2.Sobel(t, cv2.CV_32F, 0, 1, ksize=1) * 0.5
    return t, tx, ty, cv2.Laplacian(t, cv2.CV_32F, ksize=1)


def _align_homography(
    template: np.ndarray,
    image: np.ndarray,
    G0: np.ndarray,
    mask: np.ndarray,
    sigma0: float,
    iterations: int = 50,
    max_pixels: int = 40000,
) -> tuple[np.ndarray, float, float, float] | None:
    """Gauss-Newton fit of image(u) ~ a * (template * g_sigma)(G u) + b(u); G: image px -> template px.

    The residual lives on the image's own pixels and the (sharp, oversampled) template is blurred
    and interpolated, not the image: interpolating the image instead (OpenCV's findTransformECC)
    biases sub-pixel homographies (measured: boards 0.03 % too small, 0.03-0.05 px shifts). The
    blur sigma (template px) is fitted too, via d/dsigma g_sigma = sigma * Laplacian(g_sigma): a
    wrong fixed blur shifts the fit by a few 0.01 px (the pattern is not symmetric). b(u) is a
    plane, for uneven light; Huber weights keep occluded or glaring pixels from pulling the fit.
    Returns (G, residual RMS, contrast a, sigma) or None.
    """
    if not mask.any():
        return None
    # Only pixels near edges carry position information; flat ones (1 in 8 kept) only set a, b.
    # Cuts the work 3-5x with no measurable change in the result.
    grad = np.abs(cv2.Sobel(image, cv2.CV_32F, 1, 0, ksize=1)) + np.abs(
        cv2.Sobel(image, cv2.CV_32F, 0, 1, ksize=1)
    )
    edges = cv2.dilate((grad > 0.04 * float(np.ptp(image[mask]))).astype(np.uint8), np.ones((5, 5), np.uint8))
    keep = mask & (
        (edges > 0) | (np.add.outer(np.arange(image.shape[0]), np.arange(image.shape[1])) % 8 == 0)
    )
    vs, us = np.nonzero(keep)
    if len(us) < 100:
        return None
    if len(us) > max_pixels:  # a board filling a 1280x720 image: ~150k pixels, 40k are plenty
        step = -(-len(us) // max_pixels)
        vs, us = vs[::step], us[::step]
    intensity = image[vs, us].astype(np.float64)
    h, w = image.shape
    centre, scale = np.array([w / 2.0, h / 2.0]), max(w, h) / 2.0
    N = np.array([[1 / scale, 0, -centre[0] / scale], [0, 1 / scale, -centre[1] / scale], [0, 0, 1]])
    un, vn = (us - centre[0]) / scale, (vs - centre[1]) / scale  # conditioning
    G = G0 @ np.linalg.inv(N)
    G = G / G[2, 2]
    th, tw = template.shape
    sigma, sigma_used = sigma0, sigma0
    t, tx, ty, lap = _blurred(template, sigma)
    photo = None
    rms = float("inf")
    for _ in range(iterations):
        if sigma != sigma_used:  # the blur must follow sigma exactly, or GN keeps pushing it
            sigma_used = sigma
            t, tx, ty, lap = _blurred(template, sigma)
        nx = G[0, 0] * un + G[0, 1] * vn + G[0, 2]
        ny = G[1, 0] * un + G[1, 1] * vn + G[1, 2]
        d = G[2, 0] * un + G[2, 1] * vn + 1.0
        x, y = nx / d, ny / d
        ok = (x >= 0) & (x <= tw - 1) & (y >= 0) & (y <= th - 1)
        if ok.sum() < 100:
            return None
        x, y = x[ok], y[ok]
        T = _sample(t, x, y)
        basis = np.c_[T, np.ones(len(T)), un[ok], vn[ok]]
        if photo is None:
            photo = np.linalg.lstsq(basis, intensity[ok], rcond=None)[0]
        r = intensity[ok] - basis @ photo
        rms = float(np.sqrt(np.mean(r**2)))
        a = photo[0]
        gx, gy = a * _sample(tx, x, y), a * _sample(ty, x, y)
        u_, v_, d_ = un[ok], vn[ok], d[ok]
        J = np.empty((len(r), 13))  # d(model)/d(params); r = data - model
        J[:, 0], J[:, 1], J[:, 2] = gx * u_ / d_, gx * v_ / d_, gx / d_
        J[:, 3], J[:, 4], J[:, 5] = gy * u_ / d_, gy * v_ / d_, gy / d_
        J[:, 6] = -(gx * x + gy * y) * u_ / d_
        J[:, 7] = -(gx * x + gy * y) * v_ / d_
        J[:, 8] = a * sigma_used * _sample(lap, x, y)
        J[:, 9:] = basis
        # Huber weights (IRLS): a finger, cable or glare over part of the board must not pull it.
        spread = 1.4826 * float(np.median(np.abs(r))) + 1e-6
        weights = np.minimum(1.0, 3.0 * spread / np.maximum(np.abs(r), 1e-12))
        JtW = J.T * weights
        JtJ = JtW @ J
        try:
            delta = np.linalg.solve(JtJ + 1e-9 * np.diag(np.diag(JtJ)), JtW @ r)
        except np.linalg.LinAlgError:
            return None
        G = G + np.array([[*delta[0:3]], [*delta[3:6]], [delta[6], delta[7], 0.0]])
        # The template's sampling/interpolation blur is part of sigma: keep it in a sane range.
        sigma = float(np.clip(sigma + delta[8], 0.3, 4.0 * sigma0))
        photo = photo + delta[9:]
        # Converged when the board moves by < 1e-3 template px (|un|, |vn| <= 1; ~1e-4 image px).
        moved = np.max(np.abs(delta[:6])) + np.max(np.abs(delta[6:8])) * max(tw, th)
        if moved < 1e-3 and abs(delta[8]) < 2e-3 * sigma:
            break
    return G @ N, rms, float(photo[0]), sigma


def refine_corners(
    board: Board,
    gray: np.ndarray,
    det: Detection,
    intr: CameraIntrinsics,
    *,
    method: str = "direct",
    max_shift_px: float = 1.0,
) -> np.ndarray | None:
    """Corners from aligning the whole board image to the picture (a homography); None if it fails.

    Why: at 424x240 a square is 12-25 px wide and the marker leaves only ~2 px of white around the
    chessboard corner, so corner-local refinement (cornerSubPix) has too few clean pixels (0.2-1 px
    errors, some > 2 px, measured in sim). Fitting the plane-to-image homography to every square
    and marker edge near the detected corners gives 0.001-0.01 px on rendered boards. `method`:
    "direct" (own robust Gauss-Newton on the image's pixels, no measurable bias) or "ecc" (OpenCV
    findTransformECC, slightly biased, see `_align_homography`). The mask keeps the fit to the
    part of the board whose corners were found, so a gripper or the image border over the rest
    does not pull it. Works in undistorted pixels (a plane maps by a homography only without
    distortion); returns raw pixels.
    Refined corners a median of more than `max_shift_px` from the detected ones mean a wrong
    alignment: None (keep the detected corners).
    """
    cfg = board.config
    if len(det.ids) < 4:
        return None
    ideal = _undistort_points(det.corners_px, intr)
    image = _undistort_image(gray, intr).astype(np.float32)
    xy = det.board_points[:, :2]
    H_img_board, _ = cv2.findHomography(xy, ideal, 0)
    if H_img_board is None:
        return None
    step = np.linalg.norm(np.diff(ideal, axis=0), axis=1)
    step = step[step > 0]
    sq_px = float(np.median(step)) if len(step) else 10.0  # a square's size in the image
    # Template ~4x finer than the image, so interpolating it is accurate; a few sizes only (cached).
    per_square = int(np.clip(16 * round(4.0 * sq_px / 16), 32, 128))
    ppm = per_square / cfg.square_length_m
    # Only half the white margin: the print's outer edge may be cut or mounted differently.
    margin_px = round(min(cfg.margin_m, cfg.square_length_m) / 2.0 * ppm)
    margin_m = margin_px / ppm
    template = board.template(per_square, margin_px).astype(np.float32)
    # Template pixel (i, j) (centre convention) -> board metres.
    A = np.array([[1 / ppm, 0, 0.5 / ppm - margin_m], [0, 1 / ppm, 0.5 / ppm - margin_m], [0, 0, 1]])
    # Mask: the detected corners' squares, in image pixels.
    offsets = np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]]) * (cfg.square_length_m + margin_m)
    hull_board = cv2.convexHull((xy[:, None, :] + offsets[None]).reshape(-1, 2).astype(np.float32))
    hull_img = cv2.perspectiveTransform(hull_board.reshape(-1, 1, 2).astype(float), H_img_board)
    mask = np.zeros(image.shape[:2], np.uint8)
    cv2.fillConvexPoly(mask, np.rint(hull_img.reshape(-1, 2)).astype(np.int32), 255)
    H_img_template = H_img_board @ A
    if method == "ecc":
        try:
            _, warp = cv2.findTransformECC(
                template,
                image,
                H_img_template.astype(np.float32),
                cv2.MOTION_HOMOGRAPHY,
                (cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, 200, 1e-7),
                mask,
                1,
            )
        except cv2.error:
            return None  # did not converge
        H_img_template = warp.astype(float)
    else:
        # The camera blurs the print (optics, pixel area): start at ~0.5 image px, fitted.
        fit = _align_homography(
            template, image, np.linalg.inv(H_img_template), mask > 0, 0.5 * per_square / sq_px
        )
        if fit is None or fit[2] <= 0:  # no fit, or a negative print
            return None
        H_img_template = np.linalg.inv(fit[0])
    H = H_img_template @ np.linalg.inv(A)
    refined = cv2.perspectiveTransform(xy.reshape(-1, 1, 2).astype(float), H).reshape(-1, 2)
    if not np.all(np.isfinite(refined)):
        return None
    # Median: the detector's own corners can be >2 px off at low resolution (measured); the fit's are not.
    if float(np.median(np.linalg.norm(refined - ideal, axis=1))) > max_shift_px:
        return None
    return _distort_points(refined, intr)


# ---- intrinsics ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class CameraIdentity:
    """What the output file keeps of each camera besides its pose."""

    intrinsics: CameraIntrinsics
    serial: str = ""
    frame_id: str = ""
    depth_scale_m: float = 0.001


def _intrinsics_from_camera_info(data: dict[str, Any], source: str) -> CameraIntrinsics:
    """ROS camera_info YAML (camera_calibration_parsers) or a CameraInfo message dump -> intrinsics."""
    try:
        if "camera_matrix" in data:  # camera_calibration_parsers format (camera_info_url files)
            width, height = int(data["image_width"]), int(data["image_height"])
            k = [float(v) for v in data["camera_matrix"]["data"]]
            d = [float(v) for v in (data.get("distortion_coefficients") or {}).get("data", [])]
        else:  # sensor_msgs/CameraInfo fields (`ros2 topic echo --once .../camera_info`)
            width, height = int(data["width"]), int(data["height"])
            k = [float(v) for v in data["k"]]
            d = [float(v) for v in data.get("d", [])]
        model = str(data.get("distortion_model") or "plumb_bob")
    except (KeyError, TypeError, ValueError) as exc:
        raise ConfigError(
            f"{source}: not a camera_info file (need image_width/image_height/camera_matrix or "
            f"width/height/k): {exc!r}"
        ) from exc
    if len(k) != 9:
        raise ConfigError(f"{source}: camera matrix must have 9 values, got {len(k)}")
    if model == "plumb_bob" and not d:
        d = [0.0] * 5
    intr = CameraIntrinsics(
        width=width, height=height, fx=k[0], fy=k[4], cx=k[2], cy=k[5], distortion_model=model, D=d
    )
    intr.validate(f"{source}: intrinsics")
    return intr


def load_intrinsics(specs: Sequence[str]) -> dict[str, CameraIdentity]:
    """Intrinsics per camera name from `--intrinsics` arguments.

    Each argument is a calibration YAML (`cameras:` list; poses ignored, name/serial/frame_id kept)
    or `NAME=PATH` with PATH a ROS camera_info YAML or a CameraInfo message dump.
    """
    out: dict[str, CameraIdentity] = {}
    for spec in specs:
        name, sep, path_text = spec.partition("=")
        path = Path(path_text if sep else spec)
        if not path.exists():
            raise ConfigError(f"intrinsics file not found: {path}")
        if sep:
            data = load_yaml(path)
            if not isinstance(data, dict):
                raise ConfigError(f"{path}: expected a camera_info mapping")
            out[name] = CameraIdentity(intrinsics=_intrinsics_from_camera_info(data, str(path)))
            continue
        calibration = load_calibration(path)
        for cam in calibration.cameras:
            out[cam.name] = CameraIdentity(cam.intrinsics, cam.serial, cam.frame_id, cam.depth_scale_m)
    if not out:
        raise ConfigError("no intrinsics given: pass --intrinsics CALIBRATION.yaml or NAME=camera_info.yaml")
    return out


# ---- views ---------------------------------------------------------------------------------------


@dataclass
class View:
    """A board pose in world and the image of it from each camera that took one."""

    name: str
    T_world_board: np.ndarray
    images: dict[str, Path]


def _pose_matrix(pose: CameraPose, where: str) -> np.ndarray:
    for key, reason in pose.problems():
        raise ConfigError(f"{where}.{key}: {reason}")
    return pose.as_matrix()


def _flange_fk(robot: str, joints: list[list[float]], source: str) -> list[np.ndarray]:
    """T_world_flange for arm joint vectors, by the robot description's MuJoCo model."""
    import mujoco

    from dexh2r_core.robot.description import RobotDescription

    desc = RobotDescription.load(robot)
    model = desc.mujoco_model()
    data = mujoco.MjData(model)
    qadr = desc.mujoco_qpos_index(model)[: desc.n_arm]
    site = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_SITE, desc.flange_frame)
    out = []
    for i, q in enumerate(joints):
        if len(q) != desc.n_arm:
            raise ConfigError(
                f"{source}: views[{i}].arm_joints: {robot} has {desc.n_arm} arm joints, got {len(q)}"
            )
        data.qpos[:] = 0.0
        data.qpos[qadr] = q
        mujoco.mj_kinematics(model, data)
        T = np.eye(4)
        T[:3, :3] = data.site_xmat[site].reshape(3, 3)
        T[:3, 3] = data.site_xpos[site]
        out.append(T)
    return out


def load_views(path: str | Path) -> list[View]:
    """Views file -> views with T_world_board (FK done here for `arm_joints` views)."""
    path = Path(path)
    data = load_yaml(path)
    spec = from_dict(ViewsFile, data, source=str(path))
    if spec.frame != "world":
        raise ConfigError(f"{path}: frame: poses must be in 'world' (the robot base), got {spec.frame!r}")
    if not spec.views:
        raise ConfigError(f"{path}: views: no views")
    T_flange_board = (
        _pose_matrix(spec.T_flange_board, f"{path}: T_flange_board") if spec.T_flange_board else None
    )
    fk_index = [i for i, v in enumerate(spec.views) if v.arm_joints is not None]
    fk: dict[int, np.ndarray] = {}
    if fk_index:
        if not spec.robot:
            raise ConfigError(f"{path}: robot: required for views given by arm_joints (e.g. ur5_shadow)")
        poses = _flange_fk(spec.robot, [list(spec.views[i].arm_joints or []) for i in fk_index], str(path))
        fk = dict(zip(fk_index, poses, strict=True))
    views = []
    for i, entry in enumerate(spec.views):
        where = f"{path}: views[{i}]"
        given = [k for k in ("board_pose", "flange_pose", "arm_joints") if getattr(entry, k) is not None]
        if len(given) != 1:
            raise ConfigError(
                f"{where}: give exactly one of board_pose, flange_pose, arm_joints (got {given})"
            )
        if entry.board_pose is not None:
            T = _pose_matrix(entry.board_pose, f"{where}.board_pose")
        else:
            if T_flange_board is None:
                raise ConfigError(f"{path}: T_flange_board: required for views given by {given[0]}")
            T_flange = fk[i] if i in fk else _pose_matrix(entry.flange_pose, f"{where}.flange_pose")
            T = T_flange @ T_flange_board
        if not entry.images:
            raise ConfigError(f"{where}.images: no images")
        images = {cam: (path.parent / rel) for cam, rel in entry.images.items()}
        views.append(View(name=entry.name or f"view_{i:02d}", T_world_board=T, images=images))
    return views


def views_from_directory(directory: str | Path, T_world_board: np.ndarray) -> list[View]:
    """`DIR/<camera>/*.png` or `DIR/<camera>.png`, all of one fixed board pose."""
    directory = Path(directory)
    per_camera: dict[str, list[Path]] = {}
    for entry in sorted(directory.iterdir()):
        if entry.is_dir():
            files = sorted(p for p in entry.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
            if files:
                per_camera[entry.name] = files
        elif entry.suffix.lower() in IMAGE_SUFFIXES:
            per_camera.setdefault(entry.stem, []).append(entry)
    if not per_camera:
        raise CalibrationError(f"{directory}: no images (expected <camera>/*.png or <camera>.png)")
    views = []
    for k in range(max(len(v) for v in per_camera.values())):
        images = {cam: files[k] for cam, files in per_camera.items() if k < len(files)}
        views.append(View(name=f"image_{k:02d}", T_world_board=T_world_board, images=images))
    return views


# ---- pose estimation -----------------------------------------------------------------------------


@dataclass
class CameraResult:
    """The solution for one camera, with what went into it."""

    name: str
    T_world_camera: np.ndarray
    rms_px: float
    corners: int
    views_used: list[str]
    view_rms_px: dict[str, float]
    rejected: dict[str, str]  # view -> reason
    # 1-sigma of the pose: leave-one-view-out spread with >= 3 views (includes board-pose errors),
    # else from the reprojection residuals.
    position_std_mm: float
    rotation_std_deg: float


def _ideal_pixels(intr: CameraIntrinsics, px: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(pixels, K, D) for OpenCV PnP: fisheye points are undistorted first (OpenCV PnP is pinhole)."""
    K = intr.K
    if intr.distortion_model == "equidistant":
        D = np.asarray(intr.D[:4], dtype=float).reshape(4, 1)
        ideal = cv2.fisheye.undistortPoints(px.reshape(-1, 1, 2), K, D, P=K).reshape(-1, 2)
        return ideal, K, np.zeros(5)
    return px, K, np.asarray(intr.D, dtype=float)


def _project(T_cam_world: np.ndarray, points: np.ndarray, K: np.ndarray, D: np.ndarray) -> np.ndarray:
    rvec, _ = cv2.Rodrigues(T_cam_world[:3, :3])
    uv, _ = cv2.projectPoints(points.reshape(-1, 1, 3), rvec, T_cam_world[:3, 3], K, D)
    return uv.reshape(-1, 2)


def _pose_from_rt(rvec: np.ndarray, tvec: np.ndarray) -> np.ndarray:
    T = np.eye(4)
    T[:3, :3] = cv2.Rodrigues(np.asarray(rvec, dtype=float).reshape(3))[0]
    T[:3, 3] = np.asarray(tvec, dtype=float).reshape(3)
    return T


def _pnp_refine(T_cam_world: np.ndarray, points: np.ndarray, px: np.ndarray, K: np.ndarray, D: np.ndarray):
    """Levenberg-Marquardt refinement of a pose over all points (OpenCV's solvePnPRefineLM)."""
    rvec, _ = cv2.Rodrigues(T_cam_world[:3, :3])
    tvec = T_cam_world[:3, 3].reshape(3, 1).copy()
    criteria = (cv2.TERM_CRITERIA_EPS + cv2.TERM_CRITERIA_COUNT, 100, 1e-12)
    rvec, tvec = cv2.solvePnPRefineLM(
        points.reshape(-1, 1, 3), px.reshape(-1, 1, 2), K, D, rvec, tvec, criteria=criteria
    )
    return _pose_from_rt(rvec, tvec)


def _pose_std(
    T_world_camera: np.ndarray, points: np.ndarray, px: np.ndarray, K: np.ndarray, D: np.ndarray
) -> tuple[float, float]:
    """1-sigma camera position (mm) and rotation (deg) from the Gauss-Newton covariance.

    Parameters are world-frame perturbations of the camera (rotation vector, centre), so the
    numbers read directly as uncertainty of T_world_camera; sigma^2 from the residuals.
    """
    n = len(points)
    if n <= 3:
        return float("inf"), float("inf")

    def residual(delta: np.ndarray) -> np.ndarray:
        T = T_world_camera.copy()
        T[:3, :3] = Rotation.from_rotvec(delta[:3]).as_matrix() @ T[:3, :3]
        T[:3, 3] = T[:3, 3] + delta[3:]
        return (_project(invert(T), points, K, D) - px).ravel()

    r0 = residual(np.zeros(6))
    J = np.zeros((r0.size, 6))
    eps = 1e-6
    for k in range(6):
        d = np.zeros(6)
        d[k] = eps
        J[:, k] = (residual(d) - residual(-d)) / (2 * eps)
    sigma2 = float(r0 @ r0) / max(r0.size - 6, 1)
    try:
        cov = sigma2 * np.linalg.inv(J.T @ J)
    except np.linalg.LinAlgError:
        return float("inf"), float("inf")
    rot = math.sqrt(max(np.trace(cov[:3, :3]), 0.0))
    pos = math.sqrt(max(np.trace(cov[3:, 3:]), 0.0))
    return pos * 1000.0, math.degrees(rot)


def solve_camera(
    name: str,
    intr: CameraIntrinsics,
    detections: list[Detection],
    board_poses: dict[str, np.ndarray],
    *,
    max_view_rms_px: float = 2.0,
) -> CameraResult:
    """T_world_camera from the detections of one camera (each with its view's T_world_board).

    Start: single-view PnP (IPPE, exact for a plane) of every view, mapped to world; the candidate
    with the lowest reprojection error over *all* views wins (robust to one bad view). Then LM over
    the corners of all views in world coordinates; views whose own RMS exceeds `max_view_rms_px`
    are dropped and the solve repeated.
    """
    obs = []
    K, D = intr.K, np.zeros(5)
    for det in detections:
        px, K, D = _ideal_pixels(intr, det.corners_px)
        world = transform_points(board_poses[det.view], det.board_points)
        obs.append((det, world, px))
    all_world = np.concatenate([o[1] for o in obs])
    all_px = np.concatenate([o[2] for o in obs])

    candidates = []
    for det, _, px in obs:
        ok, rvec, tvec = cv2.solvePnP(
            det.board_points.reshape(-1, 1, 3), px.reshape(-1, 1, 2), K, D, flags=cv2.SOLVEPNP_IPPE
        )
        if ok:
            T_cam_board = _pose_from_rt(rvec, tvec)
            candidates.append(board_poses[det.view] @ invert(T_cam_board))
    if not candidates:
        raise CalibrationError(f"camera '{name}': PnP failed on every view")

    def errors(T_world_cam: np.ndarray) -> np.ndarray:
        return np.linalg.norm(_project(invert(T_world_cam), all_world, K, D) - all_px, axis=1)

    # Median, not mean: a view with a wrong board pose must not steer the start.
    T = min(candidates, key=lambda c: float(np.median(errors(c))))

    def refine(T_start: np.ndarray, use: list[int]) -> np.ndarray:
        world = np.concatenate([obs[i][1] for i in use])
        px = np.concatenate([obs[i][2] for i in use])
        return invert(_pnp_refine(invert(T_start), world, px, K, D))

    def view_rms(T_world_cam: np.ndarray, i: int) -> float:
        err = _project(invert(T_world_cam), obs[i][1], K, D) - obs[i][2]
        return float(np.sqrt(np.mean(np.sum(err**2, axis=1))))

    rejected: dict[str, str] = {}
    use = list(range(len(obs)))
    while True:
        T = refine(T, use)
        rms = {i: view_rms(T, i) for i in use}
        bad = [i for i in use if rms[i] > max_view_rms_px]
        if not bad:
            break
        worst = max(bad, key=lambda i: rms[i])  # one at a time: a bad view also inflates the others
        rejected[obs[worst][0].view] = (
            f"reprojection RMS {rms[worst]:.2f} px > max_view_rms_px {max_view_rms_px} "
            "(its board pose does not agree with the other views)"
        )
        use.remove(worst)
        if not use:
            raise CalibrationError(f"camera '{name}': no two views agree: {rejected}")
    world = np.concatenate([obs[i][1] for i in use])
    px = np.concatenate([obs[i][2] for i in use])
    err = np.linalg.norm(_project(invert(T), world, K, D) - px, axis=1)
    if len(use) >= 3:
        pos_std, rot_std = _jackknife_std(T, [refine(T, [j for j in use if j != i]) for i in use])
    else:
        pos_std, rot_std = _pose_std(T, world, px, K, D)
    return CameraResult(
        name=name,
        T_world_camera=T,
        rms_px=float(np.sqrt(np.mean(err**2))),
        corners=len(world),
        views_used=[obs[i][0].view for i in use],
        view_rms_px={obs[i][0].view: rms[i] for i in use},
        rejected=rejected,
        position_std_mm=pos_std,
        rotation_std_deg=rot_std,
    )


def _jackknife_std(T: np.ndarray, leave_one_out: list[np.ndarray]) -> tuple[float, float]:
    """1-sigma position (mm) and rotation (deg) from leave-one-view-out solutions.

    Why not only the Gauss-Newton covariance: the refined corners of one view come from one
    homography, so their errors are correlated and the residuals understate them; and errors in
    the board poses (robot FK, mount) show up only as disagreement between views.
    """
    n = len(leave_one_out)
    centres = np.array([Ti[:3, 3] for Ti in leave_one_out])
    rotvecs = np.array([Rotation.from_matrix(Ti[:3, :3] @ T[:3, :3].T).as_rotvec() for Ti in leave_one_out])
    scale = (n - 1) / n
    pos = math.sqrt(scale * float(np.sum((centres - centres.mean(axis=0)) ** 2)))
    rot = math.sqrt(scale * float(np.sum((rotvecs - rotvecs.mean(axis=0)) ** 2)))
    return pos * 1000.0, math.degrees(rot)


@dataclass
class CalibrationReport:
    calibration: CalibrationSet
    results: dict[str, CameraResult]
    rejected: dict[str, dict[str, str]] = field(default_factory=dict)  # camera -> view -> reason

    def summary(self) -> dict[str, Any]:
        return {
            "cameras": len(self.results),
            "reprojection_rms_px": {n: r.rms_px for n, r in self.results.items()},
            "corners": {n: r.corners for n, r in self.results.items()},
            "views_used": {n: len(r.views_used) for n, r in self.results.items()},
            "position_std_mm": {n: r.position_std_mm for n, r in self.results.items()},
            "rotation_std_deg": {n: r.rotation_std_deg for n, r in self.results.items()},
            "rejected_views": self.rejected,
        }


def calibrate(
    views: list[View],
    intrinsics: dict[str, CameraIdentity],
    config: CalibrateConfig,
    *,
    log: Any = None,
) -> CalibrationReport:
    """Detect the board in every image and solve every camera's T_world_camera.

    Raises CalibrationError naming the camera when a camera has no usable view, or naming the
    camera missing from the intrinsics.
    """
    board = Board(config.board)
    cameras: list[str] = []
    for view in views:
        cameras += [c for c in view.images if c not in cameras]
    unknown = [c for c in cameras if c not in intrinsics]
    if unknown:
        raise CalibrationError(
            f"camera(s) {unknown}: no intrinsics (have: {sorted(intrinsics)}); pass them with --intrinsics"
        )
    poses = {v.name: v.T_world_board for v in views}
    if len(poses) != len(views):
        raise CalibrationError("view names must be unique")
    rejected: dict[str, dict[str, str]] = {c: {} for c in cameras}
    detections: dict[str, list[Detection]] = {c: [] for c in cameras}
    for view in views:
        for cam, path in view.images.items():
            gray = read_gray(path)
            intr = intrinsics[cam].intrinsics
            if (gray.shape[1], gray.shape[0]) != (intr.width, intr.height):
                raise CalibrationError(
                    f"camera '{cam}': {path} is {gray.shape[1]}x{gray.shape[0]}, its intrinsics are "
                    f"{intr.width}x{intr.height}"
                )
            det = detect_in_image(board, path, cam, view.name, gray)
            n = len(det.ids)
            if n < config.min_corners:
                rejected[cam][view.name] = f"{n} ChArUco corners < min_corners {config.min_corners} ({path})"
                continue
            if board.collinear(det.ids):
                rejected[cam][view.name] = f"the {n} corners are collinear ({path})"
                continue
            if config.corner_refinement != "opencv":
                corners = refine_corners(board, gray, det, intr, method=config.corner_refinement)
                if corners is not None:
                    det.corners_px = corners
                else:
                    _log(
                        log,
                        f"camera '{cam}': view '{view.name}': board alignment failed, detector corners kept",
                    )
            detections[cam].append(det)
    results: dict[str, CameraResult] = {}
    for cam in cameras:
        for view_name, reason in rejected[cam].items():
            _log(log, f"camera '{cam}': view '{view_name}' rejected: {reason}")
        if not detections[cam]:
            reasons = "; ".join(f"{v}: {r}" for v, r in rejected[cam].items())
            raise CalibrationError(
                f"camera '{cam}': board not found in any view ({reasons}); the board must be seen with "
                f">= {config.min_corners} ChArUco corners"
            )
        res = solve_camera(
            cam, intrinsics[cam].intrinsics, detections[cam], poses, max_view_rms_px=config.max_view_rms_px
        )
        for view_name, reason in res.rejected.items():
            rejected[cam][view_name] = reason
            _log(log, f"camera '{cam}': view '{view_name}' rejected: {reason}")
        results[cam] = res
    created = _dt.datetime.now(_dt.UTC).replace(microsecond=0).isoformat()
    calibration = CalibrationSet(
        frame="world",
        cameras=[
            CameraCalibration(
                name=cam,
                serial=intrinsics[cam].serial,
                frame_id=intrinsics[cam].frame_id,
                intrinsics=intrinsics[cam].intrinsics,
                T_world_camera=CameraPose.from_matrix(results[cam].T_world_camera),
                depth_scale_m=intrinsics[cam].depth_scale_m,
                reprojection_error_px=round(results[cam].rms_px, 4),
            )
            for cam in cameras
        ],
        created=created,
        source=SOURCE,
    )
    return CalibrationReport(calibration=calibration, results=results, rejected=rejected)


def _log(log: Any, message: str) -> None:
    if log is not None:
        log(message)


def pose_errors(estimate: CalibrationSet, truth: CalibrationSet) -> dict[str, tuple[float, float]]:
    """Per camera: (translation error mm, rotation error deg) of T_world_camera vs `truth`."""
    out = {}
    for cam in estimate.cameras:
        ref = truth.camera(cam.name).T
        trans = float(np.linalg.norm(cam.T[:3, 3] - ref[:3, 3])) * 1000.0
        out[cam.name] = (trans, math.degrees(rotation_angle(cam.T[:3, :3], ref[:3, :3])))
    return out


# ---- simulated board views (test bench and demo) -------------------------------------------------

# The print is a thin textured box whose top face is the board plane; box frame -> board frame:
# x same, y and z flipped (the print looks along -z_board, the box's top face along +z_box).
# MuJoCo draws a 2D texture on every face of a box, so a plain backing box behind the print hides
# the mirrored copy on its bottom face (a real board's back is blank). The mapping (image top row
# at +y_box, columns along +x_box) is verified in test_calibrate.py by projecting the 3D corners.
_R_BOARD_BOX = np.diag([1.0, -1.0, -1.0])
PRINT_THICKNESS_M = 0.001
BACKING_THICKNESS_M = 0.004


def _board_box_pose(config: BoardConfig, depth_m: float, thickness_m: float) -> np.ndarray:
    """T_board_box: box on the squares' centre, `thickness_m` thick, front face `depth_m` behind the print."""
    sx, sy = config.size_m
    T = np.eye(4)
    T[:3, :3] = _R_BOARD_BOX
    T[:3, 3] = [sx / 2.0, sy / 2.0, depth_m + thickness_m / 2.0]  # +z_board is behind the print
    return T


def sim_texture(board: Board, px_per_square: int = 128, align: int = 64) -> tuple[np.ndarray, float]:
    """Board image for the sim texture (grey, squares centred) and its resolution in px per metre.

    Drawn `_SUPERSAMPLE` times finer and area-averaged: drawn directly at 128 px per square,
    OpenCV snaps every marker bit edge to whole pixels (up to 0.5 texel off), which biased the
    whole-board fit by ~0.05 px (measured). Width and height are multiples of `align` (white
    margin of at least `margin_m` padded up): the GPU's mipmaps halve odd sizes by dropping a
    texel, which stretched the print by up to 0.3 % at the mip levels a distant board is drawn
    from (measured: boards rendered 0.13 % too large, cameras placed 0.5-1 mm too close).
    """
    cfg = board.config
    ppm = px_per_square / cfg.square_length_m
    squares = board.template(px_per_square, 0)
    h, w = squares.shape
    pad = 2 * math.ceil(cfg.margin_m * ppm)

    def total(n: int) -> int:
        return -(-(n + pad) // align) * align

    px, py = (total(w) - w) // 2, (total(h) - h) // 2
    image = cv2.copyMakeBorder(squares, py, py, px, px, cv2.BORDER_CONSTANT, value=255)
    return image, ppm


def build_board_scene(calibration: CalibrationSet, config: BoardConfig, *, offsamples: int = 4):
    """(model, data) of a cell with the board on a mocap body (frame = board frame) and the cameras.

    The board image is an RGB texture on a thin box whose top face is the board at its physical
    size, white margin included. Even headlight, no specular: a matte print under diffuse light.
    The corners lie inside the texture, which the GPU filters (trilinear mipmaps); MSAA
    (`offsamples`) only smooths the board's outline and measurably does not move the corners.
    """
    import mujoco

    from dexh2r_sim.cameras import add_cameras

    image, ppm = sim_texture(Board(config))
    h_px, w_px = image.shape
    spec = mujoco.MjSpec()
    spec.visual.headlight.ambient = [0.55, 0.55, 0.55]
    spec.visual.headlight.diffuse = [0.45, 0.45, 0.45]
    spec.visual.headlight.specular = [0.0, 0.0, 0.0]
    tex = spec.add_texture(
        name="charuco", type=mujoco.mjtTexture.mjTEXTURE_2D, width=w_px, height=h_px, nchannel=3
    )
    tex.data = np.repeat(image[:, :, None], 3, axis=2).tobytes()
    mat = spec.add_material(name="charuco")
    mat.textures[mujoco.mjtTextureRole.mjTEXROLE_RGB] = "charuco"
    mat.texuniform = False  # stretch the image once over the face (texrepeat 1 1), not per metre
    mat.texrepeat = [1.0, 1.0]
    mat.specular = 0.0
    mat.shininess = 0.0
    mat.reflectance = 0.0
    spec.add_material(name="backing", rgba=[0.6, 0.6, 0.6, 1.0], specular=0.0)
    spec.add_material(name="floor", rgba=[0.35, 0.35, 0.38, 1.0], specular=0.0)
    spec.worldbody.add_geom(
        type=mujoco.mjtGeom.mjGEOM_PLANE, size=[3.0, 3.0, 0.1], material="floor", contype=0, conaffinity=0
    )
    body = spec.worldbody.add_body(name="board", mocap=True)
    # Half extents from the texture's pixel size, so the print maps 1:1 to the box face.
    half = [w_px / ppm / 2.0, h_px / ppm / 2.0]
    for name, material, depth, thickness in (
        ("board_print", "charuco", 0.0, PRINT_THICKNESS_M),
        ("board_backing", "backing", PRINT_THICKNESS_M, BACKING_THICKNESS_M),
    ):
        T = _board_box_pose(config, depth, thickness)
        q = Rotation.from_matrix(T[:3, :3]).as_quat()
        body.add_geom(
            name=name,
            type=mujoco.mjtGeom.mjGEOM_BOX,
            size=[*half, thickness / 2.0],
            pos=T[:3, 3].tolist(),
            quat=[q[3], q[0], q[1], q[2]],
            material=material,
            contype=0,
            conaffinity=0,
        )
    add_cameras(spec, calibration, offsamples=offsamples)
    model = spec.compile()
    return model, mujoco.MjData(model)


def _common_target(calibration: CalibrationSet) -> np.ndarray:
    """The point closest (least squares) to every camera's optical axis: where the cameras look."""
    A = np.zeros((3, 3))
    b = np.zeros(3)
    for cam in calibration.cameras:
        T = cam.T
        d = T[:3, 2]
        P = np.eye(3) - np.outer(d, d)
        A += P
        b += P @ T[:3, 3]
    if len(calibration.cameras) == 1 or abs(np.linalg.det(A)) < 1e-9:
        T = calibration.cameras[0].T
        return T[:3, 3] + T[:3, 2] * 1.0
    return np.linalg.solve(A, b)


def _board_outline(config: BoardConfig) -> np.ndarray:
    """The board's four outer corners (margin included) in the board frame."""
    sx, sy = config.size_m
    m = config.margin_m
    return np.array([[-m, -m, 0.0], [sx + m, -m, 0.0], [sx + m, sy + m, 0.0], [-m, sy + m, 0.0]])


def board_visible(
    cam: CameraCalibration, T_world_board: np.ndarray, config: BoardConfig, max_angle_deg: float
) -> bool:
    """True when `cam` sees the printed face at <= `max_angle_deg` and the whole board is in the image."""
    T = cam.T
    centre = T_world_board @ np.array([*(np.array(config.size_m) / 2.0), 0.0, 1.0])
    to_cam = T[:3, 3] - centre[:3]
    normal = -T_world_board[:3, 2]  # the print looks along -z_board
    cos = float(normal @ to_cam / np.linalg.norm(to_cam))
    if cos < math.cos(math.radians(max_angle_deg)):
        return False
    p = transform_points(invert(T) @ T_world_board, _board_outline(config))
    if np.any(p[:, 2] <= 0.05):
        return False
    intr = cam.intrinsics
    uv = (p[:, :2] / p[:, 2:]) * [intr.fx, intr.fy] + [intr.cx, intr.cy]
    margin = 0.03 * intr.width
    return bool(
        np.all(uv[:, 0] >= margin)
        and np.all(uv[:, 0] <= intr.width - 1 - margin)
        and np.all(uv[:, 1] >= margin)
        and np.all(uv[:, 1] <= intr.height - 1 - margin)
    )


def _image_area(cam: CameraCalibration, T_world_board: np.ndarray, config: BoardConfig) -> float:
    """Area (px^2) of the board's outline in `cam`'s image (pinhole)."""
    p = transform_points(invert(cam.T) @ T_world_board, _board_outline(config))
    intr = cam.intrinsics
    uv = (p[:, :2] / p[:, 2:]) * [intr.fx, intr.fy]
    return float(abs(cv2.contourArea(uv.astype(np.float32))))


def sim_board_poses(
    calibration: CalibrationSet,
    n_views: int,
    config: BoardConfig,
    seed: int = 0,
    *,
    shared: bool = False,
    max_angle_deg: float = 50.0,
) -> list[np.ndarray]:
    """T_world_board of `n_views` board placements a robot could present to the cameras.

    Default: view i is meant for camera i mod N (cameras that face each other cannot all see one
    board square-on): the centre lies 0.25-0.5 of the way from the cameras' common target towards
    that camera (about 0.55-0.85 m from it in the sim cell), spread +-15 cm, and the print faces
    the camera, pulled up to 40 % towards the other cameras, with +-15 deg of tilt and +-30 deg of
    roll about its normal; kept if that camera sees the whole print within `max_angle_deg` of its
    normal (other cameras use the view when they see the board too).
    `shared` (a fixed board seen by all cameras at once): the centre is between the common
    target and the cameras, the print faces the cameras' mean position, every camera must see it
    whole within `max_angle_deg` + 15 deg, and of 50 such candidates per view the one whose
    smallest image (over the cameras) is largest is kept. Deterministic for a seed.
    """
    rng = np.random.default_rng(seed)
    target = _common_target(calibration)
    centres = np.array([c.T[:3, 3] for c in calibration.cameras])
    sx, sy = config.size_m
    poses: list[np.ndarray] = []
    candidates: list[tuple[float, np.ndarray]] = []
    for _ in range(200 * n_views):
        if len(poses) == n_views:
            break
        k = len(poses) % len(centres)
        if shared:
            centre = (
                target + rng.uniform(0.0, 0.6) * (centres.mean(axis=0) - target) + rng.uniform(-0.1, 0.1, 3)
            )
            look = centres.mean(axis=0)
        else:
            centre = target + rng.uniform(0.25, 0.5) * (centres[k] - target) + rng.uniform(-0.15, 0.15, 3)
            look = centres[k] + rng.uniform(0.0, 0.4) * (centres.mean(axis=0) - centres[k])
        normal = look - centre
        normal /= np.linalg.norm(normal)
        tilt = Rotation.from_rotvec(rng.uniform(-1, 1, 3) * math.radians(15) / math.sqrt(3))
        z_board = -tilt.apply(normal)  # the print looks along -z_board
        x_board = np.cross([0.0, 0.0, 1.0], z_board)
        if np.linalg.norm(x_board) < 1e-6:
            x_board = np.array([1.0, 0.0, 0.0])
        x_board /= np.linalg.norm(x_board)
        R = np.column_stack([x_board, np.cross(z_board, x_board), z_board])
        R = R @ Rotation.from_rotvec([0.0, 0.0, rng.uniform(-1, 1) * math.radians(30)]).as_matrix()
        T = np.eye(4)
        T[:3, :3] = R
        T[:3, 3] = centre - R @ np.array([sx / 2.0, sy / 2.0, 0.0])  # board origin is its corner
        if shared:
            if all(board_visible(c, T, config, max_angle_deg + 15.0) for c in calibration.cameras):
                candidates.append((min(_image_area(c, T, config) for c in calibration.cameras), T))
            if len(candidates) == 50:
                poses.append(max(candidates, key=lambda c: c[0])[1])
                candidates = []
        elif board_visible(calibration.cameras[k], T, config, max_angle_deg):
            poses.append(T)
    if len(poses) < n_views:
        raise CalibrationError(
            f"found only {len(poses)} of {n_views} board placements that the cameras see whole; "
            "is the board too large for the cameras' view?"
        )
    return poses


def render_board_views(
    calibration: CalibrationSet,
    config: BoardConfig,
    poses: list[np.ndarray],
    out_dir: str | Path,
    *,
    image_noise: float = 0.0,
    seed: int = 0,
    offsamples: int = 4,
) -> Path:
    """Render the board at each pose in every camera; write PNGs and a views file (returned).

    `image_noise`: std of additive Gaussian noise per pixel (8-bit levels), as a sensor adds.
    """
    import mujoco

    from dexh2r_sim.cameras import DepthNoise, RgbdRenderer

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    model, data = build_board_scene(calibration, config, offsamples=offsamples)
    rng = np.random.default_rng(seed)
    entries = []
    with RgbdRenderer(model, calibration, DepthNoise(enabled=False)) as renderer:
        for i, T in enumerate(poses):
            data.mocap_pos[0] = T[:3, 3]
            q = Rotation.from_matrix(T[:3, :3]).as_quat()
            data.mocap_quat[0] = [q[3], q[0], q[1], q[2]]
            mujoco.mj_forward(model, data)
            name = f"view_{i:02d}"
            images = {}
            for frame in renderer.render(data, frame_index=i):
                rgb = frame.rgb.astype(np.float32)
                if image_noise > 0:
                    rgb += rng.normal(0.0, image_noise, rgb.shape).astype(np.float32)
                rel = f"{name}/{frame.name}.png"
                (out_dir / name).mkdir(exist_ok=True)
                cv2.imwrite(str(out_dir / rel), np.clip(np.rint(rgb), 0, 255).astype(np.uint8)[:, :, ::-1])
                images[frame.name] = rel
            pose = CameraPose.from_matrix(T)
            entries.append(
                {
                    "name": name,
                    "board_pose": {"xyz": list(pose.xyz), "quat_xyzw": list(pose.quat_xyzw)},
                    "images": images,
                }
            )
    path = out_dir / "views.yaml"
    header = "# Simulated ChArUco views (dexh2r calibrate --sim): board_pose = T_world_board, exact.\n"
    path.write_text(header + yaml.safe_dump({"frame": "world", "views": entries}, sort_keys=False))
    return path


def with_resolution(calibration: CalibrationSet, resolution: tuple[int, int] | None) -> CalibrationSet:
    """The same camera poses with D455 intrinsics at `resolution` (None: unchanged)."""
    if resolution is None:
        return calibration
    intr = d455_intrinsics(*resolution)
    return dataclasses.replace(
        calibration, cameras=[dataclasses.replace(c, intrinsics=intr) for c in calibration.cameras]
    )


def perturb_views_file(path: Path, trans_mm: float, rot_deg: float, seed: int = 0) -> None:
    """Add Gaussian errors to every board pose of a views file (std per axis), in place.

    Models what a real robot-held board adds: FK and mount errors (the images stay exact).
    """
    rng = np.random.default_rng([seed, 7])
    data = yaml.safe_load(path.read_text())
    for view in data["views"]:
        pose = view["board_pose"]
        T = CameraPose(xyz=tuple(pose["xyz"]), quat_xyzw=tuple(pose["quat_xyzw"])).as_matrix()
        dR = Rotation.from_rotvec(rng.normal(0.0, math.radians(rot_deg), 3)).as_matrix()
        T[:3, :3] = dR @ T[:3, :3]
        T[:3, 3] += rng.normal(0.0, trans_mm / 1000.0, 3)
        p = CameraPose.from_matrix(T)
        view["board_pose"] = {"xyz": list(p.xyz), "quat_xyzw": list(p.quat_xyzw)}
    path.write_text(yaml.safe_dump(data, sort_keys=False))


def run_sim(
    truth: CalibrationSet,
    config: CalibrateConfig,
    work_dir: str | Path,
    *,
    n_views: int = 8,
    seed: int = 0,
    fixed: bool = False,
    image_noise: float = 2.0,
    board_pose_noise: tuple[float, float] = (0.0, 0.0),
    log: Any = None,
) -> tuple[CalibrationReport, dict[str, Any]]:
    """Render board views in the cameras of `truth`, calibrate from the written images, compare.

    `fixed`: one board pose seen by all cameras (the fixed-board workflow); otherwise `n_views`
    robot-held poses. `board_pose_noise` (mm, deg; std per axis) perturbs the board poses the
    calibration is given, as robot FK / mount errors would. Returns the report and the summary
    with errors vs truth.
    """
    poses = sim_board_poses(truth, 1 if fixed else n_views, config.board, seed=seed, shared=fixed)
    views_file = render_board_views(truth, config.board, poses, work_dir, image_noise=image_noise, seed=seed)
    if any(board_pose_noise):
        perturb_views_file(views_file, *board_pose_noise, seed=seed)
    intrinsics = {
        c.name: CameraIdentity(c.intrinsics, c.serial, c.frame_id, c.depth_scale_m) for c in truth.cameras
    }
    report = calibrate(load_views(views_file), intrinsics, config, log=log)
    errors = pose_errors(report.calibration, truth)
    summary = {
        "cameras": len(report.results),
        "calibration_trans_mm": max(e[0] for e in errors.values()),
        "calibration_rot_deg": max(e[1] for e in errors.values()),
        "trans_mm": {n: e[0] for n, e in errors.items()},
        "rot_deg": {n: e[1] for n, e in errors.items()},
        "resolution": {c.name: [c.intrinsics.width, c.intrinsics.height] for c in truth.cameras},
        "views": len(poses),
        "image_noise": image_noise,
        "board_pose_noise_mm_deg": list(board_pose_noise),
        **report.summary(),
    }
    return report, summary


# ---- command line --------------------------------------------------------------------------------


def _parse_pose(text: str) -> np.ndarray:
    values = [float(v) for v in text.replace(",", " ").split()]
    if len(values) != 7:
        raise ConfigError(f"--board-pose: expected 7 numbers 'x y z qx qy qz qw', got {len(values)}")
    pose = CameraPose(xyz=tuple(values[:3]), quat_xyzw=tuple(values[3:]))  # type: ignore[arg-type]
    return _pose_matrix(pose, "--board-pose")


def _parse_resolution(text: str) -> tuple[int, int]:
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected WIDTHxHEIGHT, got {text!r}") from exc
    return w, h


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="dexh2r calibrate",
        description="Extrinsics of every camera in the robot world frame from views of a ChArUco board.",
    )
    p.add_argument(
        "--images", help="views YAML (board pose per view) or a directory <camera>/*.png (fixed board)"
    )
    p.add_argument(
        "--intrinsics",
        nargs="+",
        default=[],
        help="calibration YAML with the cameras' intrinsics, or NAME=camera_info.yaml per camera",
    )
    p.add_argument("--board", default="calibration/charuco_board.yaml", help="board config YAML")
    p.add_argument(
        "--board-pose", help="fixed board T_world_board 'x y z qx qy qz qw' (overrides fixed_pose)"
    )
    p.add_argument("--out", help="calibration YAML to write")
    p.add_argument("--json", help="write a JSON summary here")
    p.add_argument("--print-board", metavar="PNG", help="write the board as a printable image and exit")
    p.add_argument("--dpi", type=float, default=300.0, help="--print-board: printer resolution")
    sim = p.add_argument_group("simulation (test bench and demo)")
    sim.add_argument(
        "--sim", action="store_true", help="render the board in the sim cell's cameras, check vs truth"
    )
    sim.add_argument(
        "--calibration", default="calibration/sim_two_cameras.yaml", help="--sim: the true camera rig"
    )
    sim.add_argument(
        "--resolution", type=_parse_resolution, help="--sim: D455 mode WIDTHxHEIGHT for all cameras"
    )
    sim.add_argument("--views", type=int, default=8, help="--sim: number of board poses (robot-held)")
    sim.add_argument("--fixed", action="store_true", help="--sim: one fixed board pose instead")
    sim.add_argument("--seed", type=int, default=0, help="--sim: board poses and image noise")
    sim.add_argument("--image-noise", type=float, default=2.0, help="--sim: pixel noise std (8-bit levels)")
    sim.add_argument(
        "--board-pose-noise",
        nargs=2,
        type=float,
        default=[0.0, 0.0],
        metavar=("MM", "DEG"),
        help="--sim: std per axis of errors added to the board poses (robot FK / mount)",
    )
    sim.add_argument("--save-images", help="--sim: keep the rendered images and views.yaml here")
    return p


def _print_results(report: CalibrationReport, errors: dict[str, tuple[float, float]] | None = None) -> None:
    for name, res in report.results.items():
        x, y, z = res.T_world_camera[:3, 3]
        line = (
            f"{name}: xyz ({x:.4f}, {y:.4f}, {z:.4f}) m, reprojection RMS {res.rms_px:.3f} px, "
            f"{res.corners} corners in {len(res.views_used)} views, 1-sigma {res.position_std_mm:.2f} mm / "
            f"{res.rotation_std_deg:.3f} deg"
        )
        if errors is not None:
            t, r = errors[name]
            line += f" | error vs truth {t:.2f} mm / {r:.3f} deg"
        print(line)


def _log_stderr(message: str) -> None:
    print(f"dexh2r calibrate: {message}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    log = _log_stderr
    from dexh2r_core.paths import config_path

    try:
        config = load_board_config(config_path(args.board))
        if args.print_board:
            image, square_m = Board(config.board).print_image(args.dpi)
            Path(args.print_board).parent.mkdir(parents=True, exist_ok=True)
            if not cv2.imwrite(args.print_board, image):
                raise ConfigError(f"--print-board: cannot write {args.print_board}")
            w_mm, h_mm = (n / args.dpi * 25.4 for n in image.shape[::-1])
            print(
                f"wrote {args.print_board}: {image.shape[1]}x{image.shape[0]} px = "
                f"{w_mm:.1f} x {h_mm:.1f} mm "
                f"at {args.dpi:g} dpi, squares {square_m * 1000:.2f} mm. Print at 100 % (no fit-to-page), "
                "measure squares and markers, and put the measured lengths in the board file."
            )
            return 0
        if args.sim:
            os.environ.setdefault("MUJOCO_GL", "egl")
            truth = with_resolution(load_calibration(config_path(args.calibration)), args.resolution)
            with tempfile.TemporaryDirectory(prefix="dexh2r-calib-") as tmp:
                work = Path(args.save_images) if args.save_images else Path(tmp)
                report, summary = run_sim(
                    truth,
                    config,
                    work,
                    n_views=args.views,
                    seed=args.seed,
                    fixed=args.fixed,
                    image_noise=args.image_noise,
                    board_pose_noise=(args.board_pose_noise[0], args.board_pose_noise[1]),
                    log=log,
                )
            _print_results(report, pose_errors(report.calibration, truth))
            print(
                f"max error vs truth: {summary['calibration_trans_mm']:.2f} mm, "
                f"{summary['calibration_rot_deg']:.3f} deg"
            )
        else:
            if not args.images:
                raise ConfigError("--images: required (views YAML or image directory), or use --sim")
            images = Path(args.images)
            if not images.exists():
                raise ConfigError(f"--images: {images} does not exist")
            intrinsics = load_intrinsics(args.intrinsics)
            if images.is_dir():
                if args.board_pose:
                    T = _parse_pose(args.board_pose)
                elif config.fixed_pose is not None:
                    T = config.fixed_pose.as_matrix()
                else:
                    raise ConfigError(
                        f"{args.board}: fixed_pose: an image directory needs the fixed board pose "
                        "(fixed_pose in the board file or --board-pose); a robot-held board needs a "
                        "views YAML"
                    )
                views = views_from_directory(images, T)
            else:
                views = load_views(images)
            report = calibrate(views, intrinsics, config, log=log)
            _print_results(report)
            summary = {"cameras": len(report.results), **report.summary()}
        if args.out:
            save_calibration(report.calibration, args.out)
            print(f"wrote {args.out}")
        if args.json:
            Path(args.json).parent.mkdir(parents=True, exist_ok=True)
            Path(args.json).write_text(json.dumps(summary, indent=2))
    except (ConfigError, CalibrationError) as exc:
        print(f"dexh2r calibrate: {exc}", file=sys.stderr)
        return 2
    return 0


__all__ = [
    "Board",
    "BoardConfig",
    "CalibrateConfig",
    "CalibrationError",
    "CalibrationReport",
    "CameraIdentity",
    "CameraResult",
    "Detection",
    "View",
    "build_board_scene",
    "calibrate",
    "load_board_config",
    "load_intrinsics",
    "load_views",
    "main",
    "perturb_views_file",
    "pose_errors",
    "refine_corners",
    "render_board_views",
    "run_sim",
    "sim_board_poses",
    "solve_camera",
    "views_from_directory",
    "with_resolution",
]
