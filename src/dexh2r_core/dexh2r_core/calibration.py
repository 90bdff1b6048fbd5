"""Camera calibration store: intrinsics and world poses of N RGB-D cameras, as YAML.

One format serves the simulated cell (virtual cameras are placed from it) and the perception
calibration tool (`dexh2r calibrate` writes it), so a real rig and the sim are configured alike.

Conventions:
- `T_world_camera` maps points in the camera's colour *optical* frame to `world` (robot base,
  z up). Optical frame (REP-103): z forward along the optical axis, x right, y down in the image.
- Pixel coordinates follow ROS/OpenCV: the centre of pixel (0, 0) is at (0, 0), so the image spans
  [-0.5, width - 0.5] and the exact image centre is ((width - 1) / 2, (height - 1) / 2).
- Depth images are aligned to colour and store z-depth along the optical axis in units of
  `depth_scale_m` (RealSense: uint16 millimetres, 0 = invalid).

Example file::

    frame: world
    created: '2025-01-01T12:00:00+00:00'
    source: look_at (simulation)
    cameras:
    - name: camera_0
      serial: ''
      frame_id: camera_0_color_optical_frame
      intrinsics: {width: 424, height: 240, fx: 212.0, fy: 212.0, cx: 211.5, cy: 119.5,
                   distortion_model: plumb_bob, D: [0.0, 0.0, 0.0, 0.0, 0.0]}
      T_world_camera: {xyz: [1.2, 0.6, 0.9], quat_xyzw: [...]}
      depth_scale_m: 0.001
      reprojection_error_px: null
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from scipy.spatial.transform import Rotation

from dexh2r_core.config import ConfigError, from_dict, load_yaml, to_dict

# D455 colour imager (OV9782): 1280x800 native, nominal FOV 90 x 65 deg (H x V, datasheet).
# fx = 640 / tan(45 deg) = 640 px at 1280x800; lower resolutions are a centred crop to the requested
# aspect ratio scaled to the requested size (how RealSense derives 16:9 and 4:3 modes).
D455_COLOR_NATIVE = (1280, 800)
D455_COLOR_FX_NATIVE = 640.0
_QUAT_NORM_TOL = 1e-3
_DISTORTION_MODELS = ("plumb_bob", "rational_polynomial", "equidistant")


@dataclass(frozen=True)
class CameraIntrinsics:
    """Pinhole intrinsics of one colour stream (pixels), with ROS distortion parameters."""

    width: int
    height: int
    fx: float
    fy: float
    cx: float
    cy: float
    distortion_model: str = "plumb_bob"
    D: list[float] = field(default_factory=lambda: [0.0] * 5)

    @property
    def K(self) -> np.ndarray:  # noqa: N802 (the usual name of the camera matrix)
        """3x3 camera matrix (row-major like sensor_msgs/CameraInfo.k)."""
        return np.array([[self.fx, 0.0, self.cx], [0.0, self.fy, self.cy], [0.0, 0.0, 1.0]])

    def scaled(self, width: int, height: int) -> CameraIntrinsics:
        """The same optics resampled to `width` x `height` (pixel-centre convention kept).

        Scales each axis independently, i.e. assumes the new image covers the same field of view;
        for a different aspect ratio with a sensor crop use `d455_intrinsics` instead.
        """
        sx, sy = width / self.width, height / self.height
        out = dataclasses.replace(
            self,
            width=int(width),
            height=int(height),
            fx=self.fx * sx,
            fy=self.fy * sy,
            cx=(self.cx + 0.5) * sx - 0.5,
            cy=(self.cy + 0.5) * sy - 0.5,
            D=list(self.D),
        )
        out.validate()
        return out

    def problems(self) -> list[tuple[str, str]]:
        """(key, reason) for every unusable value; empty when valid."""
        out: list[tuple[str, str]] = []
        for key in ("width", "height"):
            value = getattr(self, key)
            if value <= 0:
                out.append((key, f"must be a positive pixel count, got {value}"))
        for key in ("fx", "fy"):
            value = getattr(self, key)
            if not math.isfinite(value) or value <= 0:
                out.append((key, f"focal length must be a positive finite number of pixels, got {value}"))
        for key in ("cx", "cy"):
            value = getattr(self, key)
            if not math.isfinite(value):
                out.append((key, f"principal point must be finite, got {value}"))
        if self.distortion_model not in _DISTORTION_MODELS:
            choices = ", ".join(_DISTORTION_MODELS)
            out.append(("distortion_model", f"must be one of {choices}, got {self.distortion_model!r}"))
        if not all(math.isfinite(d) for d in self.D):
            out.append(("D", f"distortion coefficients must be finite, got {self.D}"))
        return out

    def validate(self, where: str = "intrinsics") -> None:
        """Raise ConfigError naming `where.<key>` for the first unusable value."""
        problems = self.problems()
        if problems:
            key, reason = problems[0]
            raise ConfigError(f"{where}.{key}: {reason}")


@dataclass(frozen=True)
class CameraPose:
    """A rigid pose: translation (m) and unit quaternion (x, y, z, w)."""

    xyz: tuple[float, float, float] = (0.0, 0.0, 0.0)
    quat_xyzw: tuple[float, float, float, float] = (0.0, 0.0, 0.0, 1.0)

    def as_matrix(self) -> np.ndarray:
        """4x4 homogeneous matrix (the quaternion is normalised)."""
        T = np.eye(4)
        T[:3, :3] = Rotation.from_quat(np.asarray(self.quat_xyzw, dtype=float)).as_matrix()
        T[:3, 3] = self.xyz
        return T

    @classmethod
    def from_matrix(cls, T: np.ndarray) -> CameraPose:
        """From a 4x4 whose rotation block is orthonormal (checked)."""
        T = np.asarray(T, dtype=float)
        if T.shape != (4, 4) or not np.all(np.isfinite(T)):
            raise ValueError("pose must be a finite 4x4 matrix")
        R = T[:3, :3]
        if not np.allclose(R.T @ R, np.eye(3), atol=1e-6) or abs(np.linalg.det(R) - 1.0) > 1e-6:
            raise ValueError("rotation block is not orthonormal with det +1")
        q = Rotation.from_matrix(R).as_quat()
        if q[3] < 0:  # canonical sign: w >= 0, so files are stable across tools
            q = -q
        return cls(
            xyz=tuple(float(v) for v in T[:3, 3]),  # type: ignore[arg-type]
            quat_xyzw=tuple(float(v) for v in q),  # type: ignore[arg-type]
        )

    def problems(self) -> list[tuple[str, str]]:
        """(key, reason) for a NaN/inf translation or a non-unit quaternion (non-orthonormal rotation)."""
        out: list[tuple[str, str]] = []
        if not all(math.isfinite(v) for v in self.xyz):
            out.append(("xyz", f"must be finite, got {list(self.xyz)}"))
        if not all(math.isfinite(v) for v in self.quat_xyzw):
            out.append(("quat_xyzw", f"must be finite, got {list(self.quat_xyzw)}"))
        else:
            norm = math.sqrt(sum(v * v for v in self.quat_xyzw))
            if abs(norm - 1.0) > _QUAT_NORM_TOL:
                out.append(
                    (
                        "quat_xyzw",
                        f"must be a unit quaternion (x, y, z, w), norm is {norm:.6g}: "
                        "the rotation would not be orthonormal",
                    )
                )
        return out


@dataclass(frozen=True)
class CameraCalibration:
    """One RGB-D camera: identity, colour intrinsics and the pose of its colour optical frame."""

    name: str = "camera_0"
    serial: str = ""
    frame_id: str = ""
    intrinsics: CameraIntrinsics = field(default_factory=lambda: d455_intrinsics(424, 240))
    T_world_camera: CameraPose = field(default_factory=CameraPose)
    depth_scale_m: float = 0.001
    reprojection_error_px: float | None = None

    def __post_init__(self) -> None:
        if not self.frame_id:
            object.__setattr__(self, "frame_id", f"{self.name}_color_optical_frame")
        where = f"camera '{self.name}'"
        if not self.name:
            raise ConfigError(f"{where}: name: must not be empty")
        self.intrinsics.validate(f"{where}: intrinsics")
        for key, reason in self.T_world_camera.problems():
            raise ConfigError(f"{where}: T_world_camera.{key}: {reason}")
        if not math.isfinite(self.depth_scale_m) or self.depth_scale_m <= 0:
            raise ConfigError(f"{where}: depth_scale_m: must be positive, got {self.depth_scale_m}")
        err = self.reprojection_error_px
        if err is not None and (not math.isfinite(err) or err < 0):
            raise ConfigError(f"{where}: reprojection_error_px: must be >= 0 or null, got {err}")

    @property
    def T(self) -> np.ndarray:  # noqa: N802 (T_world_camera as a matrix)
        """T_world_camera as a 4x4 (optical frame -> world)."""
        return self.T_world_camera.as_matrix()


@dataclass(frozen=True)
class CalibrationSet:
    """All cameras of a rig, expressed in one reference frame (`world` = robot base)."""

    frame: str = "world"
    cameras: list[CameraCalibration] = field(default_factory=list)
    created: str = ""
    source: str = ""

    def __post_init__(self) -> None:
        seen: set[str] = set()
        for i, cam in enumerate(self.cameras):
            if cam.name in seen:
                raise ConfigError(f"cameras[{i}].name: duplicate camera name '{cam.name}'")
            seen.add(cam.name)

    def camera(self, name: str) -> CameraCalibration:
        """The camera called `name` (KeyError listing the known names otherwise)."""
        for cam in self.cameras:
            if cam.name == name:
                return cam
        raise KeyError(f"no camera '{name}' in calibration (cameras: {[c.name for c in self.cameras]})")

    @property
    def names(self) -> list[str]:
        return [c.name for c in self.cameras]


def load_calibration(path: str | Path) -> CalibrationSet:
    """Read and validate a calibration YAML; ConfigError names the file, camera and key."""
    data = load_yaml(path)
    return from_dict(CalibrationSet, data, source=str(path))


def load_camera_rig(name_or_path: str | Path) -> CalibrationSet:
    """A node's `calibration` parameter (absolute, or relative to config/) -> a calibration with at
    least one camera. FileNotFoundError / ConfigError name the file (the nodes exit with them)."""
    from dexh2r_core.paths import config_path

    path = config_path(str(name_or_path))
    if not path.exists():
        raise FileNotFoundError(f"calibration file not found: {name_or_path} (looked at {path})")
    calibration = load_calibration(path)
    if not calibration.cameras:
        raise ConfigError(f"{path}: cameras: no cameras in the calibration")
    return calibration


def calibration_to_dict(calibration: CalibrationSet) -> dict[str, Any]:
    """Plain data of a calibration set (what `save_calibration` writes)."""
    return to_dict(calibration)


def save_calibration(calibration: CalibrationSet, path: str | Path) -> Path:
    """Write `calibration` as YAML; `load_calibration` reads back an equal object (floats exact)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = yaml.safe_dump(calibration_to_dict(calibration), sort_keys=False, default_flow_style=None)
    path.write_text(text)
    return path


def d455_intrinsics(width: int = 424, height: int = 240) -> CameraIntrinsics:
    """Approximate RealSense D455 colour intrinsics at a streaming resolution.

    Source: the datasheet FOV of the D455 colour imager (90 x 65 deg at 1280x800, i.e. fx = fy =
    640 px), with each mode being a centred crop of the native sensor to the requested aspect,
    scaled to the requested size. Gives 640x480: fx = fy = 384 (4:3 crop), 424x240 and 1280x720:
    the full width (fx = 212.0 and 640). Real factory calibrations differ by ~1-2 % in focal
    length and a few pixels in principal point; the principal point here is the exact centre.
    """
    if width <= 0 or height <= 0:
        raise ConfigError(f"intrinsics: width/height must be positive, got {width}x{height}")
    nw, nh = D455_COLOR_NATIVE
    crop_w = min(float(nw), nh * width / height)
    f = D455_COLOR_FX_NATIVE * width / crop_w
    out = CameraIntrinsics(
        width=int(width), height=int(height), fx=f, fy=f, cx=(width - 1) / 2.0, cy=(height - 1) / 2.0
    )
    out.validate()
    return out


def look_at(
    eye: tuple[float, float, float] | np.ndarray,
    target: tuple[float, float, float] | np.ndarray,
    up: tuple[float, float, float] | np.ndarray = (0.0, 0.0, 1.0),
) -> np.ndarray:
    """T_world_camera (4x4) of an optical frame at `eye` whose z axis points at `target`.

    Image x goes to the right and image y down, with `up` appearing upward in the image.
    """
    eye = np.asarray(eye, dtype=float)
    z = np.asarray(target, dtype=float) - eye
    if np.linalg.norm(z) < 1e-9:
        raise ValueError("look_at: eye and target coincide")
    z /= np.linalg.norm(z)
    x = np.cross(z, np.asarray(up, dtype=float))
    if np.linalg.norm(x) < 1e-9:
        raise ValueError("look_at: viewing direction is parallel to `up`; choose another up vector")
    x /= np.linalg.norm(x)
    y = np.cross(z, x)
    T = np.eye(4)
    T[:3, :3] = np.column_stack([x, y, z])
    T[:3, 3] = eye
    return T
